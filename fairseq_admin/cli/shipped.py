"""The repository's shell tools as installed commands: ``fairseq-admin-quickstart`` (scripts/quickstart.sh) and
``fairseq-admin-data-prep DATASET`` (data-prep/prepare-*.sh). (The recipes are ``fairseq-admin-train``:
fairseq_admin/recipes.py, Python already.)

A wheel carries the scripts in ``fairseq_admin/shipped/`` (setup.py copies them there at build time); a repository
checkout (an editable install) runs them where they lie. Either way bash runs them in the Python environment of this
command: ``FAIRSEQ_ADMIN_PYTHON`` and ``PYTHON`` name this interpreter and its folder comes first on ``PATH`` (so
fairseq-train and fairseq-preprocess are this environment's), which tells scripts/quickstart.sh not to build the
repository's .venv and to write into the working directory.
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import List, Optional, Sequence

# fairseq-admin-data-prep's datasets: name -> script in data-prep/
DATA_PREP = {
    "multi30k": "prepare-multi30k.sh",
    "iwslt14-de-en": "prepare-iwslt14deen.sh",
    "wmt14-en-de": "prepare-wmt14en2de.sh",
    "wmt14-en-fr": "prepare-wmt14en2fr.sh",
}


class ShippedError(RuntimeError):
    """A tool that cannot be run, said in one line."""


def shipped_path(relative: str) -> str:
    """The file ``relative`` (e.g. ``scripts/quickstart.sh``) of an installed copy (fairseq_admin/shipped/), else of
    the repository checkout the package is imported from."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for base in (os.path.join(package, "shipped"), os.path.dirname(package)):
        path = os.path.join(base, relative)
        if os.path.isfile(path):
            return path
    raise ShippedError(f"{relative} is missing from this installation ({package}/shipped/): reinstall fairseq_admin")


def script_environment() -> dict:
    """The environment the scripts run in: this interpreter's, its folder first on PATH."""
    here = os.path.dirname(sys.executable)
    return dict(os.environ, FAIRSEQ_ADMIN_PYTHON=sys.executable, PYTHON=sys.executable,
                PATH=here + os.pathsep + os.environ.get("PATH", ""))


def run_script(prog: str, relative: str, argv: Sequence[str]) -> int:
    """Replace this process by ``bash SCRIPT ARGV...`` (its exit status is the command's); 2 with one line on error."""
    try:
        bash = shutil.which("bash")
        if bash is None:
            raise ShippedError("bash is not on PATH: the tool is a bash script")
        path = shipped_path(relative)
    except ShippedError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(bash, [bash, path, *argv], script_environment())
    return 0  # not reached


def quickstart(argv: Optional[Sequence[str]] = None) -> int:
    """``fairseq-admin-quickstart [ARGS]``: scripts/quickstart.sh (``--help`` for its options), into ./quickstart/."""
    return run_script("fairseq-admin-quickstart", "scripts/quickstart.sh", sys.argv[1:] if argv is None else argv)


def data_prep_usage() -> str:
    return ("usage: fairseq-admin-data-prep DATASET --out DIR [OPTIONS]   (fairseq-admin-data-prep DATASET --help)\n\n"
            "Downloads (or reads with --raw-dir) a corpus, cleans it, learns a joint sentencepiece model and "
            "binarizes it with fairseq-preprocess --joined-dictionary, in the environment of this command.\n"
            "DATASET:\n" + "\n".join(f"  {name:15s} data-prep/{script}" for name, script in DATA_PREP.items()))


def data_prep(argv: Optional[Sequence[str]] = None) -> int:
    """``fairseq-admin-data-prep DATASET [ARGS]``: data-prep/prepare-DATASET.sh."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(data_prep_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in DATA_PREP:
        print(f"fairseq-admin-data-prep: error: unknown DATASET {name!r}; choose one of {', '.join(DATA_PREP)}",
              file=sys.stderr)
        return 2
    return run_script("fairseq-admin-data-prep", f"data-prep/{DATA_PREP[name]}", rest)
