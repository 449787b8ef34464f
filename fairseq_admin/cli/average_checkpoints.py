"""Average the parameters of several fairseq checkpoints (``fairseq-admin-average``).

    fairseq-admin-average --inputs checkpoints/ --num-epoch-checkpoints 10 --output checkpoints/avg_last10.pt
    fairseq-admin-average --inputs a.pt b.pt c.pt --output avg.pt

Checkpoints are read with torch's weights-only loader and the fairseq_admin allow-list
(:mod:`fairseq_admin.checkpoint_safety`). Every floating-point tensor of ``model`` is averaged in float64 and cast back
to its dtype; non-floating tensors must be identical in all inputs. All inputs must be models of one residual scheme
and the same dimensions (``cfg.model``: ``residual_scheme``, layers, widths, heads), trained on the same
dictionaries (the checksums of their symbols: :func:`check_same_dictionaries` says what is compared). The output's
``cfg``/``args`` are rebuilt from the first checkpoint's, field by field from fairseq's own option lists and each
field fairseq evaluates validated again (:func:`rebuilt_config`), so ``fairseq-generate --path`` reads it and no
string the inputs carried beyond those lists reaches it; ``optimizer_history`` and ``extra_state``
(epoch, iterator position, best score) come from the newest input (the most updates), and the optimizer moments
(``last_optimizer_state``) are dropped: they belong to no averaged weights.

The output is written atomically (a temporary file in its directory, then renamed) and may be neither an input nor a
name fairseq-train writes or resumes from (``checkpoint_last.pt``, ``checkpoint_best.pt``, ``checkpoint<E>.pt``,
``checkpoint_<E>_<U>.pt``); it is checked before anything is read (:mod:`fairseq_admin.output_safety`).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_admin import config_validation, dictionary_checksum, output_safety
from fairseq_admin._lazy import LazyModule

torch = LazyModule("torch")  # imported on first use: --help and argument errors come at once
checkpoint_safety = LazyModule("fairseq_admin.checkpoint_safety")  # imports torch

EPOCH_RE = re.compile(r"^checkpoint(\d+)\.pt$")
UPDATE_RE = re.compile(r"^checkpoint_\d+_(\d+)\.pt$")


class AverageError(RuntimeError):
    """A clear, user-facing error of the averaging tool."""


def numbered_checkpoints(directory: str, kind: str) -> List[Tuple[int, str]]:
    """``(number, path)`` for ``checkpoint<E>.pt`` (kind ``epoch``) or ``checkpoint_<E>_<U>.pt`` (kind ``update``)
    in ``directory``, sorted by number, ascending."""
    if kind not in ("epoch", "update"):
        raise ValueError(f"kind must be 'epoch' or 'update', not {kind!r}")
    pattern = EPOCH_RE if kind == "epoch" else UPDATE_RE
    found = []
    for name in os.listdir(directory):
        m = pattern.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    return sorted(found)


def last_checkpoints(directory: str, num: int, kind: str, upper_bound: Optional[int] = None) -> List[str]:
    """The last ``num`` epoch/update checkpoints of ``directory`` (numbers <= ``upper_bound`` if given), oldest first.
    Raises :class:`AverageError` listing what was found when there are fewer."""
    if not os.path.isdir(directory):
        raise AverageError(f"not a directory: {directory}")
    if num < 1:
        raise AverageError(f"the number of checkpoints to average must be >= 1, got {num}")
    found = numbered_checkpoints(directory, kind)
    if upper_bound is not None:
        found = [(n, p) for n, p in found if n <= upper_bound]
    if len(found) < num:
        pattern = "checkpoint<EPOCH>.pt" if kind == "epoch" else "checkpoint_<EPOCH>_<UPDATE>.pt"
        bound = f" with {kind} <= {upper_bound}" if upper_bound is not None else ""
        listing = ", ".join(os.path.basename(p) for _, p in found) or "none"
        raise AverageError(
            f"asked to average the last {num} {kind} checkpoints ({pattern}) of {directory}{bound}, "
            f"but found only {len(found)}: {listing}"
        )
    return [p for _, p in found[-num:]]


def average_states(states: Sequence[Dict], names: Sequence[str]) -> "collections.OrderedDict[str, torch.Tensor]":
    """Average ``state["model"]`` over ``states`` (``names`` label them in errors)."""
    if not states:
        raise AverageError("no checkpoints to average")
    models = []
    for state, name in zip(states, names):
        model = state.get("model")
        if not isinstance(model, dict):
            raise AverageError(f"{name} has no 'model' state dict (keys: {sorted(state.keys())})")
        models.append(model)
    first, first_name = models[0], names[0]
    first_keys = list(first.keys())
    for model, name in zip(models[1:], names[1:]):
        if list(model.keys()) != first_keys:
            missing = [k for k in first_keys if k not in model]
            extra = [k for k in model.keys() if k not in first]
            if missing:
                key, where = missing[0], f"is in {first_name} but not in {name}"
            elif extra:
                key, where = extra[0], f"is in {name} but not in {first_name}"
            else:
                pos = next(i for i, (a, b) in enumerate(zip(first_keys, model.keys())) if a != b)
                key, where = first_keys[pos], f"is at a different position in {name} than in {first_name}"
            raise AverageError(
                f"model keys differ: {key!r} {where} ({len(missing)} missing, {len(extra)} extra); "
                f"checkpoints of different models cannot be averaged"
            )
    averaged = collections.OrderedDict()
    n = len(models)
    for key in first_keys:
        ref = first[key]
        if not torch.is_tensor(ref):
            raise AverageError(f"model entry {key!r} of {first_name} is a {type(ref).__name__}, not a tensor")
        for model, name in zip(models[1:], names[1:]):
            t = model[key]
            if not torch.is_tensor(t) or t.shape != ref.shape or t.dtype != ref.dtype:
                desc = f"{tuple(t.shape)} {t.dtype}" if torch.is_tensor(t) else type(t).__name__
                raise AverageError(
                    f"model entry {key!r} differs in shape/dtype: {tuple(ref.shape)} {ref.dtype} in {first_name}, "
                    f"{desc} in {name}"
                )
        if ref.is_floating_point() or ref.is_complex():
            acc_dtype = torch.complex128 if ref.is_complex() else torch.float64
            total = torch.zeros(ref.shape, dtype=acc_dtype)
            for model in models:
                total += model[key].detach().to("cpu", acc_dtype)
            averaged[key] = (total / n).to(ref.dtype)
        else:
            for model, name in zip(models[1:], names[1:]):
                if not torch.equal(model[key].cpu(), ref.cpu()):
                    raise AverageError(
                        f"non-floating model entry {key!r} ({ref.dtype}) differs between {first_name} and {name}; "
                        f"integer/bool tensors cannot be averaged"
                    )
            averaged[key] = ref.detach().cpu().clone()
    return averaged


def check_same_models(states: Sequence[Dict], names: Sequence[str]) -> None:
    """Refuse checkpoints of different residual schemes or dimensions (their parameter names can be identical)."""
    first = checkpoint_safety.model_signature(checkpoint_safety.checkpoint_model_cfg(states[0]))
    for state, name in zip(states[1:], names[1:]):
        other = checkpoint_safety.model_signature(checkpoint_safety.checkpoint_model_cfg(state))
        diffs = checkpoint_safety.signature_differences(first, other)
        if diffs:
            raise AverageError(f"{names[0]} and {name} are different models: {'; '.join(diffs)}; checkpoints of "
                               f"different schemes or dimensions cannot be averaged")


def check_same_dictionaries(states: Sequence[Dict], names: Sequence[str]) -> List[str]:
    """Refuse checkpoints trained on different dictionaries of the same size (every shape agrees, the rows mean other
    symbols). Each input's dictionaries are the checksums recorded at training time, else those of the data-bin it
    names, when that still exists (fairseq_admin/dictionary_checksum.py); returns a note for each input with neither,
    whose dictionaries could not be compared."""
    known, notes = [], []
    for state, name in zip(states, names):
        sums, origin = dictionary_checksum.of_checkpoint(state)
        if sums is None:
            notes.append(f"{name}: {origin}: its dictionaries cannot be compared with the other inputs'")
        else:
            known.append((name, sums, origin))
    for name, sums, origin in known[1:]:
        first, first_sums, first_origin = known[0]
        wrong = dictionary_checksum.differences(first_sums, sums)
        if wrong:
            raise AverageError(f"{first} and {name} were trained on different {' and '.join(wrong)} dictionaries of "
                               f"the same size (sha256 of the symbols: {first_origin}; {origin}): averaging them "
                               f"would mix rows that mean different tokens")
    return notes


def _known_model_options(model_cfg) -> set:
    """The option names fairseq's training parser defines for the checkpoint's task, architecture, criterion,
    optimizer and scheduler (this plugin's included, it is loaded), plus those the model's build_model adds."""
    from fairseq import options
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.registry import REGISTRIES
    from fairseq.tasks import TASK_REGISTRY

    from fairseq_admin.cli.export import stock_option_names

    get = (lambda k: model_cfg.get(k)) if isinstance(model_cfg, dict) else (lambda k: getattr(model_cfg, k, None))
    arch, task, data = get("arch") or get("_name"), get("task") or "translation", get("data")
    if arch not in ARCH_MODEL_REGISTRY or task not in TASK_REGISTRY:
        raise AverageError(f"the checkpoint's --arch {arch} or --task {task} is not registered in this process: its "
                           f"configuration cannot be rebuilt from fairseq's option lists")
    argv = [data if isinstance(data, str) and data else "DATA", "--task", task, "--arch", arch]
    for registry, entries in REGISTRIES.items():
        if isinstance(get(registry), str) and get(registry) in entries["registry"]:
            argv += [f"--{registry.replace('_', '-')}", get(registry)]
    parsed = vars(options.parse_args_and_arch(options.get_training_parser(), argv))
    return set(stock_option_names(arch, parsed)) | {"_name"}


def _group_fields(group: str, given) -> Optional[set]:
    """The field names of fairseq's dataclass for a ``cfg`` group (a task or registry group: its entry's), or None."""
    import dataclasses

    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.registry import REGISTRIES
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    name = given.get("_name") if isinstance(given, dict) else None
    if group == "task":
        dataclass = TASK_DATACLASS_REGISTRY.get(name)
    elif group in REGISTRIES:
        dataclass = REGISTRIES[group]["dataclass_registry"].get(name)
    else:
        dataclass = next((f.type for f in dataclasses.fields(FairseqConfig) if f.name == group), None)
    if dataclass is None or not dataclasses.is_dataclass(dataclass):
        return None
    return {f.name for f in dataclasses.fields(dataclass)} | {"_name"}


def rebuilt_config(state: Dict, name: str) -> Dict:
    """``{"args": ..., "cfg": ...}`` for the output, built field by field from ``state``'s (the first input's), never
    a copy of its containers: an ``argparse.Namespace`` group (``cfg.model``, ``args``, a legacy task) keeps the
    options fairseq's parser and the model's build_model define for the checkpoint's own choices
    (:func:`_known_model_options`); a dict group keeps the fields of its fairseq dataclass (a task or registry group:
    its entry's; an entry no dataclass describes becomes None); the top level keeps fairseq's groups. Every field
    fairseq evaluates as Python is validated again (fairseq_admin/config_validation.py)."""
    import copy
    import dataclasses

    from fairseq.dataclass.configs import FairseqConfig

    model_cfg = checkpoint_safety.checkpoint_model_cfg(state)
    known = _known_model_options(model_cfg) if model_cfg is not None else set()

    def kept(group: str, value):
        if isinstance(value, argparse.Namespace):
            return argparse.Namespace(**{k: copy.deepcopy(v) for k, v in vars(value).items() if k in known})
        if isinstance(value, dict):
            fields = known if group == "model" else _group_fields(group, value)
            return None if fields is None else {k: copy.deepcopy(v) for k, v in value.items() if k in fields}
        return copy.deepcopy(value) if value is None or isinstance(value, (bool, int, float, str)) else None

    out: Dict = {"args": kept("model", state.get("args"))}
    cfg = state.get("cfg")
    if isinstance(cfg, dict):
        groups = [f.name for f in dataclasses.fields(FairseqConfig)]
        out["cfg"] = {group: kept(group, cfg[group]) for group in groups if group in cfg}
    elif cfg is not None:
        raise AverageError(f"{name}: cfg is a {type(cfg).__name__}, not the dict fairseq writes")
    try:
        config_validation.check_checkpoint_config(out)
    except config_validation.ConfigError as exc:
        raise AverageError(f"{name}: {exc}") from None
    return out


def _num_updates(state: Dict) -> int:
    history = state.get("optimizer_history") or [{}]
    return int(history[-1].get("num_updates", -1))


def average_checkpoints(paths: Sequence[str]) -> Dict:
    """Load ``paths`` safely and return the first checkpoint's state with ``model`` replaced by the average,
    ``optimizer_history``/``extra_state`` taken from the newest input (most updates; the last listed on a tie)
    and the optimizer moments dropped."""
    if not paths:
        raise AverageError("no input checkpoints")
    if len(set(map(os.path.realpath, paths))) != len(paths):
        raise AverageError(f"the same checkpoint is listed twice: {list(paths)}")
    states = []
    for path in paths:
        try:
            states.append(checkpoint_safety.load_checkpoint(path))
        except FileNotFoundError as exc:
            raise AverageError(str(exc)) from None
        except RuntimeError as exc:  # includes UnsafeCheckpointError
            raise AverageError(str(exc)) from None
    check_same_models(states, list(paths))
    for note in check_same_dictionaries(states, list(paths)):
        print(f"[average] note: {note}", flush=True)
    new_state = dict(states[0])
    new_state.update(rebuilt_config(states[0], paths[0]))  # the config: fairseq's fields only, validated
    new_state["model"] = average_states(states, list(paths))
    newest = max(range(len(states)), key=lambda i: (_num_updates(states[i]), i))
    for key in ("optimizer_history", "extra_state"):
        if key in states[newest]:
            new_state[key] = states[newest][key]
        else:
            new_state.pop(key, None)
    # No input's optimizer moments belong to the averaged weights: drop them.
    new_state.pop("last_optimizer_state", None)
    new_state["fairseq_admin_averaged_from"] = [os.path.abspath(p) for p in paths]
    return new_state


def resolve_inputs(
    inputs: Sequence[str],
    num_epoch_checkpoints: Optional[int] = None,
    num_update_checkpoints: Optional[int] = None,
    upper_bound: Optional[int] = None,
) -> List[str]:
    """The checkpoint files selected by the command-line options."""
    if not inputs:
        raise AverageError("--inputs is empty")
    if num_epoch_checkpoints is not None and num_update_checkpoints is not None:
        raise AverageError("give --num-epoch-checkpoints or --num-update-checkpoints, not both")
    num = num_epoch_checkpoints if num_epoch_checkpoints is not None else num_update_checkpoints
    if num is not None:
        if len(inputs) != 1 or not os.path.isdir(inputs[0]):
            raise AverageError(
                "--num-epoch-checkpoints/--num-update-checkpoints need --inputs to be exactly one directory, got "
                f"{list(inputs)}"
            )
        kind = "epoch" if num_epoch_checkpoints is not None else "update"
        return last_checkpoints(inputs[0], num, kind, upper_bound)
    if upper_bound is not None:
        raise AverageError("--checkpoint-upper-bound needs --num-epoch-checkpoints or --num-update-checkpoints")
    if len(inputs) == 1 and os.path.isdir(inputs[0]):
        raise AverageError(
            f"--inputs {inputs[0]} is a directory: say how many checkpoints to average with "
            "--num-epoch-checkpoints N or --num-update-checkpoints N"
        )
    for path in inputs:
        if not os.path.exists(path):
            raise AverageError(f"checkpoint not found: {path}")
        if os.path.isdir(path):
            raise AverageError(f"{path} is a directory; give files, or exactly one directory with a --num-* option")
    return list(inputs)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairseq-admin-average",
        description="Average the model parameters of fairseq checkpoints (float64 accumulation, safe loading). "
                    "All inputs must have the same residual scheme and dimensions. The output keeps the first "
                    "input's cfg, takes optimizer_history and extra_state (epoch, iterator, best) from the newest "
                    "input (the most updates) and has no optimizer moments (last_optimizer_state is dropped).",
    )
    p.add_argument("--inputs", nargs="+", required=True, metavar="PATH",
                   help="checkpoint files, or one directory with --num-epoch-checkpoints/--num-update-checkpoints")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--num-epoch-checkpoints", type=int, metavar="N",
                   help="average the last N checkpoint<EPOCH>.pt of the --inputs directory")
    g.add_argument("--num-update-checkpoints", type=int, metavar="N",
                   help="average the last N checkpoint_<EPOCH>_<UPDATE>.pt of the --inputs directory")
    p.add_argument("--checkpoint-upper-bound", type=int, metavar="K",
                   help="ignore checkpoints numbered above K (epoch or update number)")
    p.add_argument("--output", required=True, metavar="FILE",
                   help="where to write the averaged checkpoint (atomically); neither an input nor a name "
                        "fairseq-train writes or resumes from (checkpoint_last.pt, checkpoint_best.pt, ...)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = get_parser().parse_args(argv)
    paths = resolve_inputs(args.inputs, args.num_epoch_checkpoints, args.num_update_checkpoints,
                           args.checkpoint_upper_bound)
    output_safety.check_output(args.output, paths, "--output")  # an input, a name fairseq-train resumes from, ...
    import fairseq_admin

    fairseq_admin.register()  # the plugin's architectures, to check checkpoints' configs (not at import: __init__.py)
    print(f"[average] averaging {len(paths)} checkpoint(s):", flush=True)
    for path in paths:
        print(f"[average]   {path}", flush=True)
    state = average_checkpoints(paths)
    checkpoint_safety.save_atomically(state, args.output)
    print(f"[average] wrote {args.output}", flush=True)
    return args.output


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        main(argv)
    except (AverageError, output_safety.OutputPathError) as exc:
        print(f"fairseq-admin-average: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
