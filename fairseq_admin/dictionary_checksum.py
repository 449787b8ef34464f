"""Which dictionaries a checkpoint was trained on: a SHA-256 of each dictionary's symbols, in index order.

Row i of an embedding table means the i-th symbol of the dictionary the model was trained with. Two dictionaries of
the same size but other symbols (another data-bin, or the same corpus prepared again) give the rows other meanings,
and every size check passes: averaging such checkpoints, or translating with another data-bin's dictionary, yields
nonsense without an error. The checksum is sha256 of the symbols joined by newlines (``Dictionary.symbols``: the
special symbols first, then the file's lines; counts do not matter, they change no index).

Recorded at training time: :func:`install` wraps fairseq's ``Trainer.state_dict``, so every checkpoint that
``fairseq-train`` writes with this plugin loaded carries ``state["fairseq_admin_dictionaries"]`` =
``{"source": <hex>, "target": <hex>}`` (None for a task without that dictionary). A checkpoint written without the
plugin (or by an older version of it) has none; :func:`of_checkpoint` then falls back to the dictionaries in the
data-bin the checkpoint records (``cfg.task.data``), when that directory still exists, and says so; otherwise nothing
can be compared.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Optional, Tuple

KEY = "fairseq_admin_dictionaries"
SIDES = ("source", "target")


def checksum(symbols) -> str:
    """sha256 (hex) of ``symbols`` joined by newlines: equal exactly when every index means the same symbol."""
    return hashlib.sha256("\n".join(symbols).encode("utf-8")).hexdigest()


def of_task(task: Any) -> Dict[str, Optional[str]]:
    """The checksums of a task's source and target dictionaries (None where the task has none)."""
    out: Dict[str, Optional[str]] = {}
    for side in SIDES:
        try:
            dictionary = getattr(task, f"{side}_dictionary")
        except (NotImplementedError, AttributeError):
            dictionary = None
        out[side] = checksum(dictionary.symbols) if dictionary is not None else None
    return out


def dictionary_files(data: str, langs: Tuple[Optional[str], Optional[str]]) -> Optional[Dict[str, str]]:
    """``{"source": data/dict.SRC.txt, "target": data/dict.TGT.txt}`` when both exist, else None. Languages the
    checkpoint does not name are inferred from the data-bin's file names, as fairseq's translation task does."""
    if not data or not os.path.isdir(data):
        return None
    if None in langs:
        from fairseq.data.data_utils import infer_language_pair

        langs = tuple(infer_language_pair(data))
        if None in langs:
            return None
    files = {side: os.path.join(data, f"dict.{lang}.txt") for side, lang in zip(SIDES, langs)}
    return files if all(os.path.isfile(f) for f in files.values()) else None


def of_data_bin(data: str, langs: Tuple[Optional[str], Optional[str]]) -> Optional[Dict[str, str]]:
    """The checksums of a data-bin's dict.SRC.txt and dict.TGT.txt as fairseq's translation task loads them."""
    from fairseq.data import Dictionary

    files = dictionary_files(data, langs)
    if files is None:
        return None
    return {side: checksum(Dictionary.load(path).symbols) for side, path in files.items()}


def _get(node: Any, key: str) -> Any:
    if node is None:
        return None
    if isinstance(node, dict):
        return node.get(key)
    return getattr(node, key, None)


def training_data(state: Dict[str, Any]) -> Tuple[Optional[str], Tuple[Optional[str], Optional[str]]]:
    """(data-bin path, (source lang, target lang)) a checkpoint records (``cfg.task``, else ``args``)."""
    cfg = state.get("cfg")
    task = _get(cfg, "task") or state.get("args")
    model = _get(cfg, "model") or state.get("args")
    data = _get(task, "data") or _get(model, "data")
    if isinstance(data, (list, tuple)):
        data = data[0] if data else None
    if isinstance(data, str):
        data = data.split(os.pathsep)[0]  # fairseq's sharded data: the first shard holds the dictionaries
    langs = tuple(_get(task, f"{side}_lang") or _get(model, f"{side}_lang") for side in SIDES)
    return (data if isinstance(data, str) else None), langs


def recorded(state: Dict[str, Any]) -> Optional[Dict[str, Optional[str]]]:
    """The checksums stored at training time, or None."""
    stored = state.get(KEY)
    if isinstance(stored, dict) and all(isinstance(stored.get(s), (str, type(None))) for s in SIDES):
        return {s: stored.get(s) for s in SIDES}
    return None


def of_checkpoint(state: Dict[str, Any]) -> Tuple[Optional[Dict[str, Optional[str]]], str]:
    """(checksums, where they come from): those recorded at training time, else those of the data-bin the checkpoint
    names if it still exists, else (None, why not)."""
    stored = recorded(state)
    if stored is not None:
        return stored, "recorded at training time"
    data, langs = training_data(state)
    from_data = of_data_bin(data, langs) if data else None
    if from_data is not None:
        return from_data, f"no checksum recorded; from its training data-bin {data}"
    return None, (f"no checksum recorded and its training data-bin {data} is gone" if data else
                  "no checksum recorded and no training data-bin named")


def differences(a: Dict[str, Optional[str]], b: Dict[str, Optional[str]]) -> list:
    """The sides (source, target) whose checksums are both known and differ."""
    return [s for s in SIDES if a.get(s) and b.get(s) and a[s] != b[s]]


def install() -> None:
    """Make fairseq's trainer record the checksums of its task's dictionaries in every checkpoint it saves.
    Idempotent."""
    try:
        from fairseq.trainer import Trainer
    except ImportError:
        return
    original = Trainer.state_dict
    if getattr(original, "_fairseq_admin_dictionaries", False):
        return

    def state_dict(self):
        state = original(self)
        state[KEY] = of_task(self.task)
        return state

    state_dict._fairseq_admin_dictionaries = True
    state_dict.__wrapped__ = original
    Trainer.state_dict = state_dict
