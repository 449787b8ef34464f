"""Safe loading of fairseq checkpoints with torch >= 2.6 (``weights_only=True``).

Since torch 2.6, ``torch.load`` only unpickles tensors, containers and primitive types unless more globals are
allow-listed. fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` calls plain ``torch.load(f, map_location=cpu)``,
so it refuses every fairseq checkpoint (``cfg.model`` is an ``argparse.Namespace``). :func:`install` allow-lists
exactly the globals that fairseq 0.12.3 checkpoints contain, and nothing else; loading stays with torch's safe
(weights-only) unpickler; no loader here ever turns it off.

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

Every loader here passes ``weights_only=True`` explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (which only
changes torch's *default*) cannot switch the safe unpickler off; when it is set, the first load says once that it is
ignored. fairseq's ``load_checkpoint_to_cpu`` and ``load_ema_from_checkpoint`` are replaced by versions that read the
file this way and then do exactly fairseq's post-processing. A checkpoint that cannot be used is reported in one line
naming the file and what is wrong (:class:`CheckpointError`); fairseq's tools print that line, not a traceback.

Every checkpoint read here then passes :func:`fairseq_admin.config_validation.check_checkpoint_config` before
fairseq builds anything from it: fairseq evaluates some config strings as Python (``xformers_att_config``,
``adaptive_softmax_cutoff``, ...), which no unpickler sees; a model outside the Transformer family or such a field
that is no plain literal is refused in one line naming the field (:class:`UnsafeConfigError`).

No omegaconf classes (``DictConfig``, ``ListConfig``, ``ContainerMetadata``, nodes), ``typing.Any``,
``collections.defaultdict`` or numpy scalars appear in such checkpoints (``collections.OrderedDict`` is allowed by
torch already), so none is allow-listed. A checkpoint that needs any other global is refused with a
:class:`UnsafeCheckpointError` that names the global.
"""
from __future__ import annotations

import argparse
import collections
import collections.abc
import contextlib
import os
import pickle
import re
import sys
import zipfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from fairseq_admin import config_validation
from fairseq_admin.errors import CheckpointError  # defined there: commands catch it before importing torch

__all__ = [
    "CheckpointError",
    "MismatchedCheckpointError",
    "UnreadableCheckpointError",
    "UnsafeCheckpointError",
    "UnsafeConfigError",
    "model_signature",
    "allowed_global_names",
    "install",
    "is_installed",
    "load_checkpoint",
    "safe_globals",
]


def safe_globals() -> List[Any]:
    """The allow-list, as ``torch.serialization.add_safe_globals`` takes it: objects only, keyed by torch under
    ``f"{obj.__module__}.{obj.__name__}"`` (torch 2.4-2.6; ``__qualname__`` later). Not ``(object, name)`` pairs: torch
    2.4 and 2.5 read every entry as an object (``_get_user_allowed_globals`` in torch/_weights_only_unpickler.py at
    v2.4.0 and v2.5.0; pairs from v2.6.0 on), so a second name of a function is an object of its own (:func:`_alias`).

    numpy's array pickles name ``_reconstruct`` after the numpy that wrote them: ``numpy.core.multiarray`` (1.x) or
    ``numpy._core.multiarray`` (2.x); both names are allowed whatever numpy is installed. The dtype classes are this
    numpy's own: ``numpy.dtypes.Int64DType`` from numpy 1.25 on, ``numpy.dtype[int64]`` in numpy 1.24 (a class that
    only a checkpoint written under the same naming can name; scripts/check_floors.sh trains and resumes under both).
    Neither ``np._core``/``np.core`` nor ``np.dtypes`` is read: numpy 1.26's ``np._core`` has no ``multiarray``
    attribute until that is imported, and numpy 1.24 has no ``np.dtypes``."""
    reconstruct = np.zeros(0).__reduce__()[0]  # the function this numpy's array pickles call
    entries: List[Any] = [argparse.Namespace]
    for name in ("numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct"):
        entries.append(reconstruct if name == f"{reconstruct.__module__}.{reconstruct.__name__}"
                       else _alias(reconstruct, name))
    return entries + [np.ndarray, np.dtype, type(np.dtype(np.int64)), type(np.dtype(np.float64))]


_ALIASES: Dict[str, Any] = {}


def _alias(function: Any, full_name: str) -> Any:
    """``function`` under the importable name ``full_name``: a wrapper that only calls it, whose ``__module__``,
    ``__name__`` and ``__qualname__`` spell ``full_name``; one object per name, so that registering it again adds
    nothing."""
    if full_name not in _ALIASES:
        def alias(*args, **kwargs):
            return function(*args, **kwargs)

        alias.__module__, alias.__name__ = full_name.rsplit(".", 1)
        alias.__qualname__ = alias.__name__
        _ALIASES[full_name] = alias
    return _ALIASES[full_name]


def _name_of(entry: Any) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


def allowed_global_names() -> List[str]:
    """The fully qualified names that :func:`install` allow-lists, e.g. ``argparse.Namespace``."""
    return [_name_of(e) for e in safe_globals()]


class UnsafeCheckpointError(CheckpointError):
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


class UnreadableCheckpointError(CheckpointError):
    """The file is missing, empty, truncated or not a torch checkpoint; ``what`` says which."""

    def __init__(self, path: str, what: str):
        self.path, self.what = str(path), what
        super().__init__(f"cannot read checkpoint {self.path}: {what}")


class MismatchedCheckpointError(CheckpointError):
    """A checkpoint of another residual scheme or other dimensions than the model it is loaded into or averaged with."""


class UnsafeConfigError(CheckpointError):
    """A checkpoint whose configuration fairseq would run as Python (:mod:`fairseq_admin.config_validation`)."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        super().__init__(f"refused to load checkpoint {self.path}: {reason}")


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


def _clip(text: str, limit: int, keep: str = "start") -> str:
    """``text`` cut to at most ``limit`` characters at a space, never mid-word (``keep``: which end to keep)."""
    if len(text) <= limit:
        return text
    if keep == "start":
        return text[:limit].rsplit(" ", 1)[0] + " ..."
    return "... " + text[-limit:].split(" ", 1)[-1]


def _torch_detail(message: str) -> str:
    """The informative part of torch's message (without its advice to retry with the safe loader switched off)."""
    text = " ".join(message.split())
    keep = [
        s.strip()
        for s in re.split(r"(?<=[.!?])\s+", text)
        if re.search(r"GLOBAL|global|got <class|Unsupported|blocked|reduce", s) and "weights_only" not in s
    ]
    return _clip(" ".join(keep), 400) if keep else _clip(text, 300, keep="end")


def _looks_like_torch_file(path: str) -> bool:
    """torch.save writes a zip archive (``PK``) or, in the legacy format, a pickle of protocol >= 2 (``\\x80``)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _what_is_wrong(path: str, exc: BaseException) -> str:
    """One phrase on why a file torch could not read is unusable: empty, truncated or damaged, or no checkpoint."""
    size = os.path.getsize(path)
    if size == 0:
        return "the file is empty (0 bytes), as an interrupted write leaves it"
    with open(path, "rb") as f:
        head = f.read(16)
    first = re.split(r"(?<=[.!?])\s", " ".join(str(exc).split()), maxsplit=1)[0]
    torch_says = _clip(first, 200) or type(exc).__name__
    if head.startswith(b"PK\x03\x04"):
        kind = "truncated or damaged zip archive" if not zipfile.is_zipfile(path) else "damaged torch archive"
    elif head[:1] == b"\x80":
        kind = "truncated or damaged pickle (torch's legacy format)"
    else:
        return f"not a torch checkpoint ({size} bytes, starting with {head!r})"
    return f"{kind} of {size} bytes, as an interrupted write leaves it (torch: {torch_says})"


def _translate(path: Optional[str], exc: BaseException) -> Optional[UnsafeCheckpointError]:
    """A readable :class:`UnsafeCheckpointError` for torch's weights-only failure, or None if ``exc`` is another error
    (or the file is no torch checkpoint at all, whose bytes the unpickler merely misread as opcodes)."""
    message = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) or "eights only load failed" not in message:
        return None
    if path is not None and not _looks_like_torch_file(path):
        return None
    return UnsafeCheckpointError(str(path), _offending_globals(path, message), _torch_detail(message))


def _register() -> None:
    torch.serialization.add_safe_globals(safe_globals())


_UNSAFE_SWITCH = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_switch_noted = False


def _note_unsafe_switch_ignored() -> None:
    """Say once per process that ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` has no effect here (we pass weights_only=True)."""
    global _switch_noted
    if not _switch_noted and os.getenv(_UNSAFE_SWITCH, "0").lower() in ("1", "y", "yes", "true"):
        _switch_noted = True
        print(f"fairseq_admin: warning: {_UNSAFE_SWITCH} is ignored: fairseq_admin always loads checkpoints with "
              f"weights_only=True and its allow-list, so a pickle in a checkpoint cannot run code", file=sys.stderr,
              flush=True)


def _read_state(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with the allow-list; every failure becomes a :class:`CheckpointError`
    naming ``path``."""
    _note_unsafe_switch_ignored()
    _register()
    if not os.path.isfile(path):
        raise UnreadableCheckpointError(path, "no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt data makes the unpickler fail in many ways (EOFError, KeyError, ...)
        err = _translate(path, exc)
        if err is not None:
            raise err from None
        raise UnreadableCheckpointError(path, _what_is_wrong(path, exc)) from None
    if not isinstance(state, dict):
        raise UnreadableCheckpointError(path, f"not a fairseq checkpoint (top level is {type(state).__name__}, "
                                              "not a dict)")
    try:  # before fairseq builds anything from the config: no field it evaluates may hold code
        config_validation.check_checkpoint_config(state)
    except config_validation.ConfigError as exc:
        raise UnsafeConfigError(path, str(exc)) from None
    return state


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a fairseq checkpoint with torch's weights-only unpickler and the fairseq allow-list.

    Returns the raw state dict (``cfg`` stays the plain dict that was saved, no upgrading). Raises
    :class:`UnsafeCheckpointError` naming the global when the file needs one outside the allow-list,
    ``FileNotFoundError`` when it is missing and :class:`UnreadableCheckpointError` (a ``RuntimeError``) naming the
    file and what is wrong with it when it is not a readable checkpoint.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return _read_state(path, map_location)


# ---- what must agree between checkpoints and models -----------------------------------------------------------------
DIMENSIONS = ("encoder_layers", "decoder_layers", "encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim",
              "decoder_ffn_embed_dim", "encoder_attention_heads", "decoder_attention_heads")


def _field(cfg: Any, name: str) -> Any:
    if isinstance(cfg, collections.abc.Mapping):
        try:
            return cfg.get(name)
        except Exception:  # an omegaconf struct config without the key
            return None
    return getattr(cfg, name, None)


def model_signature(model_cfg: Any) -> Optional[Dict[str, Any]]:
    """The residual scheme and dimensions of a model config (``cfg.model``/``args``: Namespace, dict or DictConfig),
    which must agree for two models' parameters to mean the same thing; None when ``model_cfg`` names no model.

    fairseq's own ``transformer`` has no ``residual_scheme``: it is ``preln`` with ``--encoder-normalize-before``,
    else ``postln``. Admin's ``--admin-omega`` (default ``vector``) is part of it: a per-dimension ω parameter and a
    scalar ω buffer are different tensors; it is None for the other schemes."""
    if model_cfg is None or _field(model_cfg, "arch") is None:
        return None
    scheme = _field(model_cfg, "residual_scheme") or ("preln" if _field(model_cfg, "encoder_normalize_before")
                                                      else "postln")
    admin_omega = (_field(model_cfg, "admin_omega") or "vector") if scheme == "admin" else None
    return {"residual_scheme": scheme, "admin_omega": admin_omega, **{k: _field(model_cfg, k) for k in DIMENSIONS}}


def save_atomically(state: Dict[str, Any], path: str) -> None:
    """``torch.save`` into a temporary file beside ``path``, then rename onto it: ``path`` is never half-written, and
    the temporary file is removed if saving fails. Saving through a file object names the archive ``archive`` (not
    after the temporary file), so the same state always gives the same bytes. The write is
    :func:`fairseq_admin.output_safety.atomic_write` (fsynced); check the path first with its ``check_output``."""
    from fairseq_admin.output_safety import atomic_write

    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def checkpoint_model_cfg(state: Dict[str, Any]) -> Any:
    """The model config a checkpoint was trained with: ``cfg["model"]``, or ``args`` (fairseq < 0.10)."""
    cfg = state.get("cfg")
    model = _field(cfg, "model") if cfg is not None else None
    return model if model is not None else state.get("args")


def signature_differences(a: Optional[Dict[str, Any]], b: Optional[Dict[str, Any]]) -> List[str]:
    """``["residual_scheme postln vs deepnorm", ...]`` for the fields where signatures ``a`` and ``b`` differ
    (``admin_omega`` only between two Admin models: the scheme's difference already says the rest)."""
    if a is None or b is None:
        return []
    return [f"{k} {a[k]} vs {b[k]}" for k in a
            if a[k] != b[k] and not (k == "admin_omega" and None in (a[k], b[k]))]


# ---- fairseq's loaders, reading the file safely ----------------------------------------------------------------------
_resuming_into: Optional[Any] = None  # model config of the trainer, while fairseq's load_checkpoint(cfg, trainer) runs
_LAST = re.compile(r"^checkpoint_last.*\.pt$")
_RESUMABLE = re.compile(r"^checkpoint(\d+|_\d+_\d+|_best)\.pt$")


def _warn(message: str) -> None:
    print(f"fairseq_admin: warning: {message}", file=sys.stderr, flush=True)


def _newest_readable_sibling(broken: UnreadableCheckpointError):
    """``(state, path)`` of the newest (by modification time) readable training checkpoint beside the broken
    ``checkpoint_last.pt``; raises ``broken``, extended, when there is none."""
    directory = os.path.dirname(broken.path) or "."
    names = [n for n in os.listdir(directory) if _RESUMABLE.match(n)]
    for path in sorted((os.path.join(directory, n) for n in names), key=os.path.getmtime, reverse=True):
        try:
            state = _read_state(path)
        except CheckpointError:
            continue
        if "optimizer_history" not in state or "fairseq_admin_averaged_from" in state:
            continue  # not a training checkpoint (e.g. an average)
        _warn(f"{broken.path} is unreadable ({broken.what}); resuming from {path}, the newest readable checkpoint "
              f"in {directory}")
        return state, path
    raise UnreadableCheckpointError(
        broken.path, f"{broken.what}; no other readable training checkpoint in {directory} to resume from: move "
                     f"the file away to train from scratch") from None


def _read_for_fairseq(path: str) -> Dict[str, Any]:
    """:func:`_read_state`; while fairseq resumes training, a broken ``checkpoint_last.pt`` is replaced by its newest
    readable sibling, and a checkpoint of another scheme or other dimensions than the trainer's model is refused."""
    into = _resuming_into
    try:
        state = _read_state(path)
    except UnreadableCheckpointError as exc:
        if into is None or not _LAST.match(os.path.basename(path)):
            raise
        state, path = _newest_readable_sibling(exc)
    if into is not None:
        diffs = signature_differences(model_signature(checkpoint_model_cfg(state)), model_signature(into))
        if diffs:
            raise MismatchedCheckpointError(
                f"refused to load checkpoint {path} into the model being trained (--arch {_field(into, 'arch')}): "
                f"{'; '.join(diffs)} (checkpoint vs this run). Train with the checkpoint's architecture and scheme, "
                f"or use another --save-dir")
    return state


def _fairseq_load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
    """fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` (fairseq/checkpoint_utils.py:306-369 in 0.12.3), the
    file being read by :func:`_read_state` (weights-only with the allow-list, whatever the environment says)."""
    from fairseq import checkpoint_utils
    from fairseq.dataclass.utils import overwrite_args_by_name
    from fairseq.file_io import PathManager
    from omegaconf import OmegaConf
    from omegaconf import __version__ as oc_version
    from omegaconf import _utils

    local_path = PathManager.get_local_path(path)
    if local_path != path and PathManager.path_requires_pathmanager(path):  # refresh a stale cached remote copy
        with contextlib.suppress(FileNotFoundError):
            os.remove(local_path)
        if load_on_all_ranks:
            torch.distributed.barrier()
        local_path = PathManager.get_local_path(path)

    state = _read_for_fairseq(local_path)

    if state.get("args") is not None and arg_overrides is not None:
        for arg_name, arg_val in arg_overrides.items():
            setattr(state["args"], arg_name, arg_val)
    if state.get("cfg") is not None:
        if oc_version < "2.2":
            old_primitive = _utils.is_primitive_type
            _utils.is_primitive_type = lambda _: True
            state["cfg"] = OmegaConf.create(state["cfg"])
            _utils.is_primitive_type = old_primitive
            OmegaConf.set_struct(state["cfg"], True)
        else:
            state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
        if arg_overrides is not None:
            overwrite_args_by_name(state["cfg"], arg_overrides)
    return checkpoint_utils._upgrade_state_dict(state)


def _fairseq_load_ema_from_checkpoint(fpath):
    """fairseq's ``checkpoint_utils.load_ema_from_checkpoint`` (fairseq/checkpoint_utils.py:893-940 in 0.12.3), the
    file being read by :func:`_read_state`."""
    from fairseq.file_io import PathManager

    state = _read_state(PathManager.get_local_path(fpath))
    params = collections.OrderedDict()
    for key, p in state["extra_state"]["ema"].items():
        if key in params:
            raise ValueError(f"Key {key} is repeated in EMA model params.")
        params[key] = (p.float() if isinstance(p, torch.HalfTensor) else p).clone()  # clone: shared parameters
    if not params:
        raise ValueError(f"Input checkpoint path '{fpath}' does not contain ema model weights, is this model trained "
                         "with EMA?")
    state["model"] = params
    return state


def _fairseq_resume(original):
    """fairseq's ``checkpoint_utils.load_checkpoint(cfg, trainer)``, with the trainer's model config made known to
    :func:`_read_for_fairseq` while it runs, and Admin's ``--admin-profile-load`` applied right after it."""

    def load_checkpoint(cfg, trainer, **passthrough_args):
        global _resuming_into
        _resuming_into = trainer.cfg.model
        try:
            result = original(cfg, trainer, **passthrough_args)
        finally:
            _resuming_into = None
        # Every fairseq-train run passes here once, after resuming (or finding nothing to resume) and before its
        # first update: a fresh Admin run reads its --admin-profile-load now, so a bad file stops it before training.
        from fairseq_admin.profiling import prepare_omega_before_training

        prepare_omega_before_training(trainer.model)
        return result

    return load_checkpoint


def _one_line_errors(previous):
    """A ``sys.excepthook`` that prints an uncaught :class:`CheckpointError` (or any exception whose class sets
    ``one_line = True``: a user-facing refusal) as ``<tool>: error: <message>``; others go to ``previous``."""

    def excepthook(exc_type, exc, tb):
        if getattr(exc_type, "one_line", False) is True:
            tool = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c", "-") else "python"
            print(f"{tool}: error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        else:
            previous(exc_type, exc, tb)

    excepthook._fairseq_admin_safe = True
    return excepthook


def _mark(replacement, original):
    replacement.__wrapped__ = original
    replacement._fairseq_admin_safe = True
    return replacement


def install() -> None:
    """Allow-list fairseq's checkpoint globals for torch's weights-only loader; replace fairseq's file loaders
    (``load_checkpoint_to_cpu``, ``load_ema_from_checkpoint``) by safe ones that pass ``weights_only=True`` and name
    the file in every error; make fairseq's resume (``load_checkpoint``) refuse a checkpoint of another scheme and
    survive a broken ``checkpoint_last.pt``; print uncaught checkpoint errors in one line. Idempotent; called by
    ``fairseq_admin/__init__.py`` so ``--user-dir fairseq_admin`` enables it."""
    _register()
    if not getattr(sys.excepthook, "_fairseq_admin_safe", False):
        sys.excepthook = _one_line_errors(sys.excepthook)
    try:
        from fairseq import checkpoint_utils
    except ImportError:  # torch-only use (our own tools) works without fairseq
        return
    for name, replacement in (("load_checkpoint_to_cpu", lambda original: _fairseq_load_checkpoint_to_cpu),
                              ("load_ema_from_checkpoint", lambda original: _fairseq_load_ema_from_checkpoint),
                              ("load_checkpoint", _fairseq_resume)):
        current = getattr(checkpoint_utils, name)
        if not getattr(current, "_fairseq_admin_safe", False):
            setattr(checkpoint_utils, name, _mark(replacement(current), current))


def is_installed() -> bool:
    """True when the allow-list is registered and fairseq's loaders are replaced."""
    registered = set(_name_of(g) for g in torch.serialization.get_safe_globals())
    if not set(allowed_global_names()) <= registered:
        return False
    try:
        from fairseq import checkpoint_utils
    except ImportError:
        return True
    return all(getattr(getattr(checkpoint_utils, name), "_fairseq_admin_safe", False)
               for name in ("load_checkpoint_to_cpu", "load_ema_from_checkpoint", "load_checkpoint"))
