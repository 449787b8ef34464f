"""Safe loading of fairseq checkpoints with torch >= 2.6 (``weights_only=True``).

Since torch 2.6, ``torch.load`` only unpickles tensors, containers and primitive types unless more globals are
allow-listed. fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` calls plain ``torch.load(f, map_location=cpu)``,
so it refuses every fairseq checkpoint (``cfg.model`` is an ``argparse.Namespace``). :func:`install` allow-lists
exactly the globals that fairseq 0.12.3 checkpoints contain, and nothing else; loading stays with torch's safe
(weights-only) unpickler. We never pass ``weights_only=False``.

How the list was derived (``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints written by the real
``fairseq-train``, translation task, ``--arch transformer``, adam + inverse_sqrt, with ``--save-interval-updates``
(``checkpoint_E_U.pt``), epoch checkpoints, ``checkpoint_best/last.pt``, ``--store-ema``):

- ``argparse.Namespace``: always. fairseq saves ``cfg`` as a plain dict (``OmegaConf.to_container``) but the
  ``cfg["model"]`` of argparse-registered architectures (``transformer``, ``admin_transformer*``) is a Namespace;
  pre-0.10 checkpoints keep the whole config in ``args`` (also a Namespace).
- with ``--eval-bleu`` the translation task logs ``_bleu_counts``/``_bleu_totals`` as numpy arrays, which end up in
  ``extra_state["metrics"]``: ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` and the dtype
  class of the array: ``numpy.dtypes.Int64DType`` (single process: integer counts) or ``numpy.dtypes.Float64DType``
  (distributed training sums logging outputs as float64 tensors before ``np.array``). Checkpoints written under
  numpy 1.x name the reconstruct function ``numpy.core.multiarray._reconstruct``; the same function is registered
  under that name too.

No omegaconf classes (``DictConfig``, ``ListConfig``, ``ContainerMetadata``, nodes), ``typing.Any``,
``collections.defaultdict`` or numpy scalars appear in such checkpoints (``collections.OrderedDict`` is allowed by
torch already), so none is allow-listed. A checkpoint that needs any other global is refused with a
:class:`UnsafeCheckpointError` that names the global.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "UnsafeCheckpointError",
    "allowed_global_names",
    "install",
    "is_installed",
    "load_checkpoint",
    "safe_globals",
]


def safe_globals() -> List[Any]:
    """The allow-list, in the form ``torch.serialization.add_safe_globals`` takes (objects or (object, name))."""
    core = getattr(np, "_core", None) or np.core  # numpy >= 2 / 1.x
    reconstruct = core.multiarray._reconstruct
    return [
        argparse.Namespace,
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),  # same function, as pickled under numpy 1.x
        np.ndarray,
        np.dtype,
        np.dtypes.Int64DType,
        np.dtypes.Float64DType,
    ]


def _name_of(entry: Any) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


def allowed_global_names() -> List[str]:
    """The fully qualified names that :func:`install` allow-lists, e.g. ``argparse.Namespace``."""
    return [_name_of(e) for e in safe_globals()]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint was refused because its pickle needs globals outside the allow-list."""

    def __init__(self, path: str, globals_: Sequence[str], detail: str = ""):
        self.path = str(path)
        self.globals = list(globals_)
        names = ", ".join(self.globals) if self.globals else "<unknown>"
        msg = (
            f"refused to load checkpoint {self.path}: its pickle needs the global(s) {names}, which are not on the "
            f"fairseq_admin allow-list of safe globals ({', '.join(allowed_global_names())}). torch's weights-only "
            f"loader would have to import and call them to unpickle the file, which can run arbitrary code, so the "
            f"file was refused and nothing in it was executed. Only if you trust the file's origin, re-save it "
            f"without these objects."
        )
        if detail:
            msg += f" (torch said: {detail})"
        super().__init__(msg)


_GLOBAL_PATTERNS = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"Unsupported global: GLOBAL (\S+)"),
    re.compile(r"but got <class '([^']+)'>"),
    re.compile(r"Trying to call reduce for callable (\S+)"),
    re.compile(r"Unsupported class (\S+)"),
)


def _offending_globals(path: Optional[str], message: str) -> List[str]:
    """Names of the globals that made the weights-only unpickler fail: every non-allowed global the file's pickle
    refers to (read from its opcodes, nothing is executed), else whatever torch's message names."""
    found: List[str] = []
    if path is not None:
        try:
            allowed = set(allowed_global_names())
            found = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
        except Exception:  # legacy (non-zip) format, unreadable file, ...
            found = []
    for pattern in _GLOBAL_PATTERNS:
        for name in pattern.findall(message):
            name = name.rstrip(".,;:")
            if name not in found:
                found.append(name)
    return found


def _torch_detail(message: str) -> str:
    """The informative part of torch's message (without its advice to retry with ``weights_only=False``)."""
    text = " ".join(message.split())
    keep = [
        s.strip()
        for s in re.split(r"(?<=[.!?])\s+", text)
        if re.search(r"GLOBAL|global|got <class|Unsupported|blocked|reduce", s) and "weights_only" not in s
    ]
    return " ".join(keep)[:400] if keep else text[-300:]


def _translate(path: Optional[str], exc: BaseException) -> Optional[UnsafeCheckpointError]:
    """A readable :class:`UnsafeCheckpointError` for torch's weights-only failure, or None if ``exc`` is another error."""
    message = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) or "eights only load failed" not in message:
        return None
    return UnsafeCheckpointError(str(path), _offending_globals(path, message), _torch_detail(message))


def _register() -> None:
    torch.serialization.add_safe_globals(safe_globals())


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a fairseq checkpoint with torch's weights-only unpickler and the fairseq allow-list.

    Returns the raw state dict (``cfg`` stays the plain dict that was saved, no upgrading). Raises
    :class:`UnsafeCheckpointError` naming the global when the file needs one outside the allow-list,
    ``FileNotFoundError`` when it is missing and ``RuntimeError`` naming the file when it is not a readable checkpoint.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    _register()
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        err = _translate(path, exc)
        if err is not None:
            raise err from None
        raise RuntimeError(f"cannot read checkpoint {path} (corrupt or not a torch checkpoint): {exc}") from exc
    except Exception as exc:  # corrupt data makes the unpickler fail in many ways (IndexError, EOFError, ...)
        raise RuntimeError(f"cannot read checkpoint {path} (corrupt or not a torch checkpoint): {exc}") from exc
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} is not a fairseq checkpoint (top level is {type(state).__name__}, not a dict)")
    return state


def _wrap_fairseq_loader(original):
    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        try:
            return original(path, arg_overrides=arg_overrides, load_on_all_ranks=load_on_all_ranks)
        except pickle.UnpicklingError as exc:
            local = path
            try:
                from fairseq.file_io import PathManager

                local = PathManager.get_local_path(path)
            except Exception:
                pass
            err = _translate(local if os.path.isfile(str(local)) else None, exc)
            if err is None:
                raise
            raise err from None

    load_checkpoint_to_cpu.__doc__ = original.__doc__
    load_checkpoint_to_cpu.__wrapped__ = original
    load_checkpoint_to_cpu._fairseq_admin_safe = True
    return load_checkpoint_to_cpu


def install() -> None:
    """Allow-list fairseq's checkpoint globals for torch's weights-only loader and make fairseq's loader's refusals
    readable. Idempotent; called by ``fairseq_admin/__init__.py`` so ``--user-dir fairseq_admin`` enables it."""
    _register()
    try:
        from fairseq import checkpoint_utils
    except ImportError:  # torch-only use (our own tools) works without fairseq
        return
    current = checkpoint_utils.load_checkpoint_to_cpu
    if not getattr(current, "_fairseq_admin_safe", False):
        checkpoint_utils.load_checkpoint_to_cpu = _wrap_fairseq_loader(current)


def is_installed() -> bool:
    """True when the allow-list is registered and fairseq's loader is wrapped."""
    registered = set(_name_of(g) for g in torch.serialization.get_safe_globals())
    if not set(allowed_global_names()) <= registered:
        return False
    try:
        from fairseq import checkpoint_utils
    except ImportError:
        return True
    return bool(getattr(checkpoint_utils.load_checkpoint_to_cpu, "_fairseq_admin_safe", False))
