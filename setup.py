"""fairseq_admin: Admin, B2T, Pre-LN, Post-LN and DeepNorm Transformers for fairseq.

Installs beside the user's own torch and fairseq (README.md, "Installing into your own environment"):
- install_requires holds compatible lower bounds only, so pip keeps a torch or numpy that is already there;
- fairseq is not a requirement at all: any distribution that provides the ``fairseq`` package (an editable clone,
  ``fairseq``, ``fairseq-fixed``, ``ve-fairseq``) serves, and importing fairseq_admin without one stops with a clear
  error (fairseq_admin/_dependencies.py). ``pip install 'fairseq_admin[fairseq]'`` pulls ``ve-fairseq``, a prebuilt
  wheel of upstream fairseq main for CPython 3.11/3.12 (the official fairseq 0.12.2 fails at import on Python 3.11);
- optional pieces are extras: ``[plots]`` (matplotlib, for fairseq-admin-diagnose --plot-dir), ``[tensorboard]``
  (tensorboardX, for --tensorboard-logdir), ``[deploy]`` (ctranslate2), ``[test]`` (pytest).
The exact versions we test are pinned in constraints.txt, which scripts/setup_env.sh and CI install with ``-c``.
"""
import re

from setuptools import find_packages, setup


def read_version() -> str:
    """``__version__`` from fairseq_admin/__init__.py, read as text (importing the package needs fairseq)."""
    with open("fairseq_admin/__init__.py", encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


setup(
    name="fairseq_admin",
    version=read_version(),
    description="Stable deep Transformers for fairseq: Admin, B2T connection, Pre-LN, Post-LN, DeepNorm",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["fairseq_admin", "fairseq_admin.*"]),
    install_requires=[
        "torch>=2.4",  # torch.serialization.add_safe_globals (fairseq_admin/checkpoint_safety.py)
        "numpy>=1.24",
        "sentencepiece>=0.1.99",
        "sacrebleu>=2.0",
        "sacremoses>=0.0.53",
    ],
    extras_require={
        "fairseq": ["ve-fairseq>=0.12.3"],
        "plots": ["matplotlib>=3.5"],
        "tensorboard": ["tensorboardX>=2.6"],
        "deploy": ["ctranslate2>=4.0"],  # ct2-fairseq-converter on fairseq-admin-export's output
        "test": ["pytest>=7"],
    },
    entry_points={
        "console_scripts": [
            "fairseq-admin-average=fairseq_admin.cli.average_checkpoints:cli_main",
            "fairseq-admin-evaluate=fairseq_admin.cli.evaluate:cli_main",
            "fairseq-admin-prepare=fairseq_admin.cli.prepare:cli_main",
            "fairseq-admin-diagnose=fairseq_admin.cli.diagnose:cli_main",
            "fairseq-admin-options=fairseq_admin.cli.options:cli_main",
            "fairseq-admin-export=fairseq_admin.cli.export:cli_main",
        ]
    },
)
