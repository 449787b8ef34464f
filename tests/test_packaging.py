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
VENV_COMMANDS = Path(sys.executable).parent  # the environment running the tests: its console scripts
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
    for name in ("fairseq_admin", "scripts", "data-prep"):  # the package and the tools setup.py ships in it
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
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


# ---- what the wheel and the sdist carry, and the installed commands ------------------------------------------------
SHIPPED_FILES = ["scripts/quickstart.sh", "scripts/train.sh", "scripts/evaluate.sh", "data-prep/lib.sh",
                 "data-prep/prepare-multi30k.sh", "data-prep/prepare-iwslt14deen.sh", "data-prep/prepare-wmt14en2de.sh",
                 "data-prep/prepare-wmt14en2fr.sh", "data-prep/iwslt14.py"]
COMMANDS = ["fairseq-admin-quickstart", "fairseq-admin-train", "fairseq-admin-data-prep", "fairseq-admin-options"]
NOT_IN_A_SOURCE_TREE = {".git", ".venv", ".venv-ci", ".pytest_cache", "build", "dist", "checkpoints", "quickstart",
                        "data", "work", "__pycache__"}


@pytest.fixture(scope="module")
def distributions(tmp_path_factory):
    """sdist of a copy of the source tree (``setup.py sdist``: MANIFEST.in decides), then the wheel built from the
    unpacked sdist, as a user's pip builds it: {"sdist": names in the tarball, "tree": unpacked folder, "wheel": path}."""
    import tarfile

    work = tmp_path_factory.mktemp("distributions")
    tree = work / "tree"
    shutil.copytree(ROOT, tree, ignore=lambda folder, names: [n for n in names if n in NOT_IN_A_SOURCE_TREE
                                                                or n.endswith(".egg-info")])
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", work / "dist"], cwd=tree, check=True,
                   capture_output=True, env=offline_pip_env())
    (sdist,) = (work / "dist").glob("fairseq_admin-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]
        tar.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
                    "--wheel-dir", work / "dist", unpacked], check=True, capture_output=True, env=offline_pip_env())
    (wheel,) = (work / "dist").glob("fairseq_admin-*.whl")
    return {"sdist": set(names), "tree": unpacked, "wheel": wheel}


def test_sdist_holds_the_tools_and_what_its_tests_need(distributions):
    names = distributions["sdist"]
    assert set(SHIPPED_FILES) <= names
    assert {"tests/conftest.py", "tests/helpers.py", "tests/reference.py", "tests/fixtures/v050.json",
            "constraints.txt", "MANIFEST.in", "scripts/setup_env.sh", "benchmarks/depth_grid.py"} <= names
    tests = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*.py")}
    assert tests - names == set(), "tests missing from the sdist"
    assert not [n for n in names if n.startswith("benchmarks/results/") or "__pycache__" in n]


def test_wheel_carries_the_tools_and_their_commands(distributions):
    with zipfile.ZipFile(distributions["wheel"]) as whl:
        names = set(whl.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        commands = whl.read(entry_points).decode()
    assert {f"fairseq_admin/shipped/{f}" for f in SHIPPED_FILES} <= names
    configs = {f"fairseq_admin/configs/{p.name}" for p in (ROOT / "fairseq_admin" / "configs").glob("*.yaml")}
    assert configs and configs <= names  # fairseq-hydra-train's configs, one per recipe row
    for command in COMMANDS:
        assert f"{command} = " in commands


@pytest.fixture(scope="module")
def installed(tmp_path_factory, distributions):
    """A fresh environment with the wheel alone (no torch, no fairseq: --no-deps): its bin folder."""
    env = tmp_path_factory.mktemp("installed") / "env"
    venv.EnvBuilder(with_pip=True).create(env)
    subprocess.run([env / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    distributions["wheel"]], check=True, capture_output=True, env=offline_pip_env())
    return env / "bin"


@pytest.mark.parametrize("argv, expect", [
    (["fairseq-admin-quickstart", "--help"], "usage: bash scripts/quickstart.sh"),
    (["fairseq-admin-train", "--list"], "liu2020b"),
    (["fairseq-admin-train", "--pair", "en-de", "--scheme", "admin", "--layers", "18-18", "--dry-run"],
     "fairseq-train data/wmt14_en_de/data-bin --user-dir "),
    (["fairseq-admin-data-prep", "--help"], "wmt14-en-fr"),
    (["fairseq-admin-data-prep", "multi30k", "--help"], "prepare-multi30k.sh --out DIR"),
    (["fairseq-admin-options", "--user-dir"], "site-packages/fairseq_admin"),
    (["fairseq-admin-options", "--config-dir"], "site-packages/fairseq_admin/configs"),
])
def test_installed_commands_run_outside_the_repository(installed, tmp_path, argv, expect):
    """The commands of a pip-installed copy, run from another folder, in an environment without torch or fairseq:
    what needs neither imports neither (fairseq_admin/__init__.py)."""
    proc = subprocess.run([installed / argv[0], *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHON")})
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stdout
    if argv[-1] == "--config-dir":
        assert os.path.isfile(os.path.join(proc.stdout.strip(), "en-de_admin_6-6_liu2020.yaml"))
    if argv[0] == "fairseq-admin-train" and "--dry-run" in argv:
        user_dir = proc.stdout.split("--user-dir ")[1].split()[0]
        assert user_dir.startswith(str(installed.parent)) and os.path.isfile(os.path.join(user_dir, "__init__.py"))


def test_installed_command_errors_are_one_line(installed, tmp_path):
    proc = subprocess.run([installed / "fairseq-admin-data-prep", "nope"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("fairseq-admin-data-prep: error: unknown DATASET 'nope'")
    proc = subprocess.run([installed / "fairseq-admin-train", "--pair", "en-de", "--scheme", "admin", "--layers",
                           "7", "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("fairseq-admin-train: error: no published setting")


def test_commands_that_need_neither_torch_nor_fairseq_import_neither(tmp_path):
    """Every fairseq-admin-* command took 4-5 s, --help and `fairseq-admin-options --user-dir` included: importing
    the package registered the plugin with fairseq. PYTHONPROFILEIMPORTTIME lists every module a process imports."""
    for argv in (["fairseq-admin-options", "--user-dir"], ["fairseq-admin-prepare", "--help"],
                 ["fairseq-admin-evaluate", "--help"]):
        command = VENV_COMMANDS / argv[0]
        if not command.exists():
            pytest.skip(f"{command} is not installed (scripts/setup_env.sh)")
        proc = subprocess.run([command, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import")}
        assert "fairseq_admin" in imported and not {"torch", "fairseq"} & imported, argv


def fake_wheel_requiring(folder: Path, name: str, version: str, requires=()) -> None:
    stem = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{stem}.dist-info/METADATA", metadata(name, version, requires))
        whl.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: fake\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n")
        whl.writestr(f"{stem}.dist-info/RECORD", "")


def test_fairseq_extra_keeps_the_users_torch_when_named(tmp_path, project, wheelhouse):
    """ve-fairseq requires torchaudio, whose newest release requires torch >= 2.11 (torchaudio 2.11.1's metadata);
    each older torchaudio pins its torch exactly (2.5.1: torch==2.5.1). `pip install 'fairseq_admin[fairseq]'` would
    replace a torch 2.5.1 by the newest; naming the user's torch in the same command (setup.py, docs/tools.md) keeps
    it and takes the torchaudio built for it."""
    house = tmp_path / "house"
    shutil.copytree(wheelhouse, house)
    for old in house.iterdir():
        if old.name.startswith(("torch-", "torchaudio-", "ve_fairseq-")):
            old.unlink()
    fake_wheel_requiring(house, "torch", "2.5.1")
    fake_wheel_requiring(house, "torch", "2.14.1")
    fake_wheel_requiring(house, "torchaudio", "2.5.1", ["torch==2.5.1"])
    fake_wheel_requiring(house, "torchaudio", "2.11.1", ["torch>=2.11"])
    fake_wheel_requiring(house, "ve-fairseq", "0.12.3", ["torch>=1.13", "torchaudio>=0.8.0", "numpy>=1.21.3"])
    python = new_env(tmp_path / "env")
    fake_installed(site_packages(python), "torch", "2.5.1", "torch")
    plain = dry_run(python, house, "fairseq")
    assert plain.get("torch") == "2.14.1"  # the trap the documented command avoids
    kept = dry_run(python, house, "fairseq", "torch==2.5.1")
    assert "torch" not in kept and kept["torchaudio"] == "2.5.1" and "ve-fairseq" in kept


def test_check_floors_help_and_bad_arguments(tmp_path):
    """scripts/check_floors.sh (the floors, for real: minutes, not run here): --help, and a bad argument is one line
    before any work."""
    script = ROOT / "scripts" / "check_floors.sh"
    proc = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage: bash scripts/check_floors.sh" in proc.stdout
    for argv, message in ((["--numpy", "1.24"], "not a version like 1.24.4"), (["--frobnicate"], "unknown argument")):
        proc = subprocess.run(["bash", script, *argv, "--work", tmp_path / "w"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and proc.stderr.startswith("check_floors.sh: error:") and message in proc.stderr
        assert not (tmp_path / "w").exists()
