"""The two dependencies setup.py does not force a version of: a clear error, before anything imports them.

fairseq is deliberately not in ``install_requires`` (a user's own fairseq, e.g. an editable clone, must not get a
second distribution of the ``fairseq`` package beside it), so a missing fairseq is only found here.
"""
import importlib.util

_MISSING = [name for name in ("torch", "fairseq") if importlib.util.find_spec(name) is None]
if _MISSING:
    raise ImportError(
        f"fairseq_admin needs {' and '.join(_MISSING)}, not installed in this Python ({', '.join(_MISSING)} not "
        "importable). Install your own (fairseq >= 0.12, torch >= 2.4), or the tested versions: "
        "pip install 'fairseq_admin[fairseq]' -c constraints.txt (constraints.txt of the repository)")
