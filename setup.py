"""fairseq_admin: Admin, B2T, Pre-LN, Post-LN and DeepNorm Transformers for fairseq.

Installs beside the user's own torch and fairseq (README.md, "Installing into your own environment"; docs/tools.md,
"Installation"):
- install_requires holds compatible lower bounds only, so pip keeps a torch or numpy that is already there; each floor
  is one that was checked (docs/tools.md, "Dependency floors": numpy by scripts/check_floors.sh, torch from its
  source);
- fairseq is not a requirement at all: any distribution that provides the ``fairseq`` package (an editable clone,
  ``fairseq``, ``fairseq-fixed``, ``ve-fairseq``) serves, and importing fairseq_admin without one stops with a clear
  error (fairseq_admin/_dependencies.py). ``pip install 'fairseq_admin[fairseq]'`` pulls ``ve-fairseq``, a prebuilt
  wheel of upstream fairseq main for CPython 3.11/3.12 (the official fairseq 0.12.2 fails at import on Python 3.11).
  ve-fairseq requires torchaudio, whose newest release requires torch >= 2.11: to keep an older torch, name it in the
  same command (``pip install 'fairseq_admin[fairseq]' torch==2.5.1``), and pip takes the torchaudio built for it;
- optional pieces are extras: ``[plots]`` (matplotlib, for fairseq-admin-diagnose --plot-dir), ``[tensorboard]``
  (tensorboardX, for --tensorboard-logdir), ``[deploy]`` (ctranslate2), ``[test]`` (pytest);
- the wheel carries the shell tools the README leads with (scripts/quickstart.sh, train.sh, evaluate.sh, data-prep/),
  copied into fairseq_admin/shipped/ at build time, and the commands that run them in the installed environment:
  ``fairseq-admin-quickstart``, ``fairseq-admin-train`` (the recipes), ``fairseq-admin-data-prep``; the sdist also
  holds the tests, their fixtures and the benchmarks they read (MANIFEST.in), so that it runs its own tests.
The exact versions we test are pinned in constraints.txt, which scripts/setup_env.sh and CI install with ``-c``.
"""
import glob
import os
import re
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# The repository's shell tools that an installed copy carries, as (folder, file patterns): fairseq_admin/cli/shipped.py
# runs them from fairseq_admin/shipped/FOLDER/ (scripts/setup_env.sh and test.sh build the repository's .venv: not
# shipped; an installed copy uses the environment it is installed in).
SHIPPED = (("scripts", ("quickstart.sh", "train.sh", "evaluate.sh")), ("data-prep", ("*.sh", "*.py")))


def read_version() -> str:
    """``__version__`` from fairseq_admin/__init__.py, read as text (importing the package needs fairseq)."""
    with open("fairseq_admin/__init__.py", encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


class BuildPyWithShippedTools(build_py):
    """build_py, then the SHIPPED files copied into the built package (fairseq_admin/shipped/FOLDER/), keeping their
    names and modes. An editable install builds nothing here: it runs the tools where they are."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, patterns in SHIPPED:
            target = os.path.join(self.build_lib, "fairseq_admin", "shipped", folder)
            os.makedirs(target, exist_ok=True)
            for pattern in patterns:
                found = sorted(glob.glob(os.path.join(folder, pattern)))
                if not found:
                    raise SystemExit(f"setup.py: error: no {folder}/{pattern} to ship (an incomplete source tree?)")
                for path in found:
                    shutil.copy2(path, target)


setup(
    name="fairseq_admin",
    version=read_version(),
    description="Stable deep Transformers for fairseq: Admin, B2T connection, Pre-LN, Post-LN, DeepNorm",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    # 3.10: the [fairseq] extra's ve-fairseq has wheels for CPython 3.11 and 3.12 only (`pip download --no-deps
    # ve-fairseq==0.12.3 --python-version 3.10 --only-binary=:all:` finds none), the official fairseq 0.12.2 has no
    # 3.10 wheel either (its sdist compiles C++ against the torch at hand), and no CPU torch for 3.10 could be tested
    # here: nothing would show that the plugin works there.
    python_requires=">=3.11",
    packages=find_packages(include=["fairseq_admin", "fairseq_admin.*"]),
    package_data={"fairseq_admin": ["configs/*.yaml"]},  # fairseq-hydra-train configs (fairseq_admin/recipe_configs.py)
    cmdclass={"build_py": BuildPyWithShippedTools},
    install_requires=[
        # torch.serialization.add_safe_globals (fairseq_admin/checkpoint_safety.py) exists from 2.4; the allow-list
        # is objects only, as torch 2.4 and 2.5 read it (checked in torch's source, not run: docs/tools.md)
        "torch>=2.4",
        "numpy>=1.24",  # scripts/check_floors.sh: 1.24.4 and 1.26.4 train, resume, generate and export
        "sentencepiece>=0.1.99",
        "sacrebleu>=2.0",
        "sacremoses>=0.0.53",
    ],
    extras_require={
        "fairseq": ["ve-fairseq>=0.12.3"],
        "plots": ["matplotlib>=3.5"],
        "tensorboard": ["tensorboardX>=2.6"],
        "deploy": ["ctranslate2>=4.0"],  # ct2-fairseq-converter on fairseq-admin-export's output
        "test": ["pytest>=7", "pytest-xdist>=3"],  # scripts/test.sh runs the files on every core (at most 4)
    },
    entry_points={
        "console_scripts": [
            "fairseq-admin-average=fairseq_admin.cli.average_checkpoints:cli_main",
            "fairseq-admin-evaluate=fairseq_admin.cli.evaluate:cli_main",
            "fairseq-admin-prepare=fairseq_admin.cli.prepare:cli_main",
            "fairseq-admin-diagnose=fairseq_admin.cli.diagnose:cli_main",
            "fairseq-admin-options=fairseq_admin.cli.options:cli_main",
            "fairseq-admin-export=fairseq_admin.cli.export:cli_main",
            "fairseq-admin-train=fairseq_admin.recipes:cli_main",
            "fairseq-admin-quickstart=fairseq_admin.cli.shipped:quickstart",
            "fairseq-admin-data-prep=fairseq_admin.cli.shipped:data_prep",
        ]
    },
)
