"""Installing the plugin into a user's own environment keeps their torch, numpy and fairseq (issue: packaging).

Each test builds a fresh virtual environment, puts fake distributions into it (``.dist-info`` folders, as pip
leaves them), and asks that environment's pip what it would do: ``pip install --dry-run --report`` of a copy of
this project, offline (``--no-index``, pip's configuration files ignored), with a wheelhouse of fake wheels for
every version pinned in constraints.txt, so that a pin would be taken if setup.py asked for it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
FAIRSEQ_DISTRIBUTIONS = {"fairseq", "ve-fairseq", "fairseq-fixed"}  # each provides the `fairseq` package
TESTED_EXTRAS = "fairseq,plots,tensorboard,deploy,test"  # as scripts/setup_env.sh


def pins() -> dict:
    """{canonical name: version} of constraints.txt."""
    result = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            result[canonicalize_name(name)] = version
    return result


def metadata(name: str, version: str, requires=()) -> str:
    return "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"] +
                   [f"Requires-Dist: {r}\n" for r in requires])


def fake_wheel(folder: Path, name: str, version: str) -> None:
    stem = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{stem}.dist-info/METADATA", metadata(name, version))
        whl.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: fake\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n")
        whl.writestr(f"{stem}.dist-info/RECORD", "")


def fake_installed(site_packages: Path, name: str, version: str, package: str) -> None:
    """A distribution as pip leaves it installed: its .dist-info folder and an importable package."""
    info = site_packages / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(metadata(name, version))
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    (site_packages / package).mkdir()
    (site_packages / package / "__init__.py").write_text(f"__version__ = {version!r}\n")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheelhouse")
    for name, version in pins().items():
        if name not in ("pip", "setuptools"):
            fake_wheel(folder, name, version)
    return folder


@pytest.fixture(scope="module")
def project(tmp_path_factory, wheelhouse):
    """The plugin's wheel, built from a copy of what a source distribution holds (building writes metadata into
    the tree: not the repository's), put into the wheelhouse: the dry runs install ``fairseq_admin`` from it."""
    folder = tmp_path_factory.mktemp("project")
    for name in ("setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "fairseq_admin", folder / "fairseq_admin", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
                    "--wheel-dir", wheelhouse, folder], check=True, env=offline_pip_env(), capture_output=True)
    return folder


def offline_pip_env() -> dict:
    """The environment without pip's configuration (no index, find-links or constraints of this machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def new_env(path: Path) -> Path:
    """A fresh virtual environment with pip."""
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(path)
    python = path / "bin" / "python"
    pip_help = subprocess.run([python, "-m", "pip", "install", "--help"], capture_output=True, text=True).stdout
    if "--dry-run" not in pip_help or "--report" not in pip_help:
        pytest.skip("this pip has no install --dry-run/--report (pip >= 22.2 has)")
    return python


def site_packages(python: Path) -> Path:
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout
    return Path(out.strip())


def dry_run(python: Path, wheelhouse: Path, extras: str = "", *pip_args) -> dict:
    """{canonical name: version} of what ``pip install fairseq_admin[EXTRAS]`` would install, offline."""
    report = python.parent.parent / "report.json"
    target = "fairseq_admin" + (f"[{extras}]" if extras else "")
    result = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--report", report, "--quiet",
                             "--no-index", "--find-links", wheelhouse, *pip_args, target],
                            capture_output=True, text=True, env=offline_pip_env())
    assert result.returncode == 0, result.stderr
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


@pytest.mark.parametrize("their_fairseq", ["fairseq", "fairseq-fixed"])
def test_install_keeps_the_users_torch_numpy_and_fairseq(tmp_path, project, wheelhouse, their_fairseq):
    python = new_env(tmp_path / "env")
    lib = site_packages(python)
    fake_installed(lib, "torch", "2.5.1", "torch")
    fake_installed(lib, "numpy", "1.26.4", "numpy")
    fake_installed(lib, their_fairseq, "0.12.2", "fairseq")  # e.g. an editable clone of fairseq
    installs = dry_run(python, wheelhouse, "plots,tensorboard")
    assert "fairseq-admin" in installs
    assert not {"torch", "numpy"} & set(installs), f"would replace the user's: {installs}"
    assert not FAIRSEQ_DISTRIBUTIONS & set(installs), f"a second fairseq distribution: {installs}"


def test_fresh_environment_gets_the_tested_set(tmp_path, project, wheelhouse):
    """With constraints.txt (as scripts/setup_env.sh installs), an empty environment gets every pin and only pins,
    and each of setup.py's requirements admits the pinned version."""
    python = new_env(tmp_path / "env")
    installs = dry_run(python, wheelhouse, TESTED_EXTRAS, "-c", ROOT / "constraints.txt")
    pinned = pins()
    version = installs.pop("fairseq-admin")
    assert version == re.search(r'__version__ = "(.+)"', (ROOT / "fairseq_admin/__init__.py").read_text()).group(1)
    assert {n: v for n, v in installs.items() if pinned.get(n) != v} == {}
    assert {"torch", "ve-fairseq", "matplotlib", "tensorboardx", "ctranslate2", "pytest"} <= set(installs)  # extras
    report = json.loads((tmp_path / "env" / "report.json").read_text())
    ours = next(i for i in report["install"] if canonicalize_name(i["metadata"]["name"]) == "fairseq-admin")
    for line in ours["metadata"]["requires_dist"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} (setup.py) is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (line, pinned[name])


def test_importing_without_fairseq_says_what_to_install(tmp_path, project):
    """fairseq is no requirement of the package, so its absence must be one clear error at import."""
    venv.EnvBuilder(with_pip=False).create(tmp_path / "env")  # no pip needed: only Python and a fake torch
    python = tmp_path / "env" / "bin" / "python"
    fake_installed(site_packages(python), "torch", "2.5.1", "torch")
    result = subprocess.run([python, "-c", "import fairseq_admin"], cwd=project, capture_output=True, text=True)
    assert result.returncode != 0
    assert "ImportError: fairseq_admin needs fairseq" in result.stderr
    assert "fairseq_admin[fairseq]" in result.stderr


def test_plots_without_matplotlib_say_which_extra(monkeypatch, tmp_path):
    """matplotlib is the optional [plots] extra: --plot-dir without it is one clear error before any work."""
    import importlib.util

    from fairseq_admin.cli.diagnose import DiagnoseError, main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    with pytest.raises(DiagnoseError, match=re.escape("pip install 'fairseq_admin[plots]'")):
        main(["--schemes", "preln", "--layers", "2", "--plot-dir", str(tmp_path / "plots")])
    assert not (tmp_path / "plots").exists()
