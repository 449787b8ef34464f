"""Refuse a checkpoint whose configuration fairseq would run as Python.

fairseq passes some configuration strings to ``eval`` while it builds a model, a task or an optimizer
(``utils.eval_str_list``, ``utils.eval_str_dict``, ``utils.eval_bool`` and bare ``eval``), so a checkpoint holding
nothing but an ``argparse.Namespace`` and strings runs code without any pickle trick. :func:`check_checkpoint_config`
runs on every checkpoint the plugin reads (fairseq_admin/checkpoint_safety.py, before fairseq builds anything from
it) and on the configurations that ``fairseq-admin-export`` and ``fairseq-admin-average`` write. It refuses, in one
line naming the field:

1. a model (``_name`` or ``arch`` of ``cfg.model`` or ``args``) outside the Transformer family the plugin builds:
   fairseq's ``transformer`` architectures (``transformer``, ``transformer_wmt_en_de``, ...: what the export writes)
   and this plugin's ``residual_transformer`` (``<scheme>_transformer*``). Every other architecture evaluates fields
   of its own (fconv ``encoder_layers``, ...), so it is not loaded at all;
2. any field of the table below, wherever it sits (``args``, every section of ``cfg``, nested ``encoder``/``decoder``
   groups, items and attributes alike), whose value is neither None nor a plain literal of the shape fairseq expects.
   A string must parse with ``ast.literal_eval`` (which builds literals and calls nothing); for such a string,
   fairseq's ``eval`` computes the same value, so nothing runs.

The table: every call site of ``eval(``, ``exec(``, ``eval_str_list``, ``eval_str_dict`` and ``eval_bool`` in fairseq
0.12.3 and fairseq_cli (the ``fairseq/examples`` tree aside: fairseq's tools never import it), file:line; the test
tests/test_hostile_config.py greps the installed fairseq and fails on a call site missing from it.

Evaluated fields (shape): where
- ``xformers_att_config``, ``encoder_xformers_att_config``, ``decoder_xformers_att_config`` (dict):
  fairseq/modules/multihead_attention.py:96 (every attention layer of the Transformer)
- ``adaptive_softmax_cutoff`` (ints): fairseq/models/transformer/transformer_decoder.py:147, fairseq/models/lstm.py:183,
  fairseq/models/lstm_lm.py:112, fairseq/models/fconv_lm.py:86, fairseq/models/lightconv.py:560,
  fairseq/model_parallel/models/pipeline_parallel_transformer/layers.py:234
- ``adaptive_input_cutoff`` (ints): fairseq/models/transformer_lm.py:295, fairseq/models/lightconv_lm.py:228
- ``left_pad_source``, ``left_pad_target`` (bool): fairseq/tasks/multilingual_translation.py:127,
  fairseq/tasks/multilingual_translation.py:128, fairseq/tasks/online_backtranslation.py:198,
  fairseq/tasks/online_backtranslation.py:199, fairseq/data/multilingual/multilingual_data_manager.py:337,
  fairseq/data/multilingual/multilingual_data_manager.py:338 (task set-up: the hub interface sets up the
  checkpoint's own task)
- ``adam_betas`` (numbers): fairseq/optim/adam.py:91, fairseq/optim/cpu_adam.py:78; ``adamax_betas`` (numbers):
  fairseq/optim/adamax.py:42; ``lamb_betas`` (numbers): fairseq/optim/fused_lamb.py:44; ``adafactor_eps`` (numbers):
  fairseq/optim/adafactor.py:55
- ``wer_args`` (literal): fairseq/criterions/ctc.py:94
- ``pipeline_balance`` (ints): fairseq/distributed/utils.py:204,
  fairseq/model_parallel/models/pipeline_parallel_transformer/model.py:326; ``pipeline_devices`` (ints):
  fairseq/distributed/utils.py:206, fairseq/model_parallel/models/pipeline_parallel_transformer/model.py:327;
  ``pipeline_encoder_balance`` (ints): fairseq/model_parallel/models/pipeline_parallel_transformer/model.py:491;
  ``pipeline_encoder_devices`` (ints): fairseq/distributed/utils.py:209,
  fairseq/model_parallel/models/pipeline_parallel_transformer/model.py:494; ``pipeline_decoder_balance`` (ints):
  fairseq/model_parallel/models/pipeline_parallel_transformer/model.py:641; ``pipeline_decoder_devices`` (ints):
  fairseq/distributed/utils.py:212, fairseq/model_parallel/models/pipeline_parallel_transformer/model.py:644
- ``feature_encoder_spec`` (literal): fairseq/data/audio/raw_audio_dataset.py:65
- ``extra_data``, ``extra_lang_pairs``, ``langtoks``, ``sampling_weights`` (dict), argparse types:
  fairseq/data/multilingual/multilingual_data_manager.py:219,
  fairseq/data/multilingual/multilingual_data_manager.py:226,
  fairseq/data/multilingual/multilingual_data_manager.py:250,
  fairseq/data/multilingual/multilingual_data_manager.py:266
- ``model_overrides`` (dict), read from the command line: fairseq_cli/validate.py:57, fairseq_cli/eval_lm.py:255
- fields of refused architectures, checked as well: ``encoder_layers``, ``decoder_layers`` (int: the Transformer's
  meaning): fairseq/models/fconv.py:123, fairseq/models/fconv_self_att.py:140, fairseq/models/fconv.py:131,
  fairseq/models/fconv_lm.py:78, fairseq/models/fconv_self_att.py:150; ``decoder_attention`` (literal):
  fairseq/models/fconv.py:133, fairseq/models/fconv_lm.py:80, fairseq/models/fconv_self_att.py:152,
  fairseq/models/lstm.py:178; ``encoder_attention``, ``self_attention``, ``project_input``, ``gated_attention``,
  ``downsample``, ``pretrained`` (literal): fairseq/models/fconv_self_att.py:143, fairseq/models/fconv_self_att.py:155,
  fairseq/models/fconv_self_att.py:158, fairseq/models/fconv_self_att.py:159, fairseq/models/fconv_self_att.py:160,
  fairseq/models/fconv_self_att.py:115; ``character_filters`` (literal): fairseq/models/transformer_lm.py:283,
  fairseq/models/lightconv_lm.py:216; ``conv_feature_layers`` (literal): fairseq/models/hubert/hubert.py:258,
  fairseq/models/multires_hubert/multires_hubert.py:296, fairseq/models/wav2vec/wav2vec.py:185,
  fairseq/models/wav2vec/wav2vec2.py:314, fairseq/models/wav2vec/wav2vec2.py:587,
  fairseq/models/speech_to_text/s2t_wav_transformer.py:176, fairseq/models/speech_to_text/s2t_wav_transformer.py:181;
  ``conv_aggregator_layers`` (literal): fairseq/models/wav2vec/wav2vec.py:243; ``override_encoder_layers``
  (literal): fairseq/models/multires_hubert/multires_hubert.py:328; ``encoder_kernel_size_list``,
  ``decoder_kernel_size_list`` (ints), argparse types: fairseq/models/lightconv.py:221, fairseq/models/lightconv.py:226,
  fairseq/models/lightconv_lm.py:180; ``encoder_glu``, ``decoder_glu``, ``weight_softmax`` (bool), argparse types:
  fairseq/models/lightconv.py:230, fairseq/models/lightconv.py:233, fairseq/models/lightconv_lm.py:184,
  fairseq/models/lightconv.py:249, fairseq/models/lightconv_lm.py:193

Call sites that evaluate no checkpoint field: the definitions fairseq/utils.py:787, fairseq/utils.py:791,
fairseq/utils.py:798, fairseq/utils.py:802, fairseq/utils.py:806, fairseq/utils.py:810 and
fairseq/dataclass/utils.py:25 (``ast.literal_eval``, safe), whose callers are listed above; the imports
fairseq/options.py:28 and fairseq/data/multilingual/multilingual_data_manager.py:38; the argparse types of dataclass
list fields fairseq/dataclass/utils.py:111, fairseq/dataclass/utils.py:113, fairseq/dataclass/utils.py:115
(``ast.literal_eval``); and fairseq/data/codedataset.py:160, which evaluates the lines of a speech data manifest (a
data file, not the checkpoint).

Shapes: ints = an int or a list/tuple of ints; numbers = a list/tuple of ints and floats; bool = a bool or an int;
int = an int; dict = a dict of plain literals; literal = None, bool, int, float, str, or a list, tuple or dict of them.
"""
from __future__ import annotations

import argparse
import ast
import collections.abc
from typing import Any, Callable, Dict, Iterator, List, Tuple

__all__ = ["ConfigError", "EVALUATED_FIELDS", "OTHER_CALL_SITES", "TRANSFORMER_FAMILY", "check_checkpoint_config",
           "check_config", "in_transformer_family"]

#: the models whose architectures the plugin loads: fairseq's own and this plugin's Transformer
TRANSFORMER_FAMILY = ("transformer", "residual_transformer")
MAX_LITERAL_CHARS = 10_000  # far above any real value; bounds the parser's work on a hostile string
MAX_DEPTH = 20


class ConfigError(ValueError):
    """A configuration value fairseq would evaluate as Python and that is no plain literal of the expected shape (or
    a model outside the Transformer family), said in one line that names the field."""

    one_line = True

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(message)


# ---- shapes ----------------------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_literal(value: Any, depth: int = 0) -> bool:
    """None, bool, int, float, str, or a list, tuple or dict (primitive keys) of them, nested at most MAX_DEPTH."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if depth >= MAX_DEPTH:
        return False
    if type(value) in (list, tuple):
        return all(_is_literal(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(_is_literal(k, MAX_DEPTH) and _is_literal(v, depth + 1) for k, v in value.items())
    return False


SHAPES: Dict[str, Tuple[str, Callable[[Any], bool]]] = {
    "ints": ("an int or a list of ints", lambda v: _is_int(v) or (type(v) in (list, tuple) and all(map(_is_int, v)))),
    "numbers": ("a list of numbers", lambda v: type(v) in (list, tuple) and all(map(_is_number, v))),
    "bool": ("a bool", lambda v: isinstance(v, int)),
    "int": ("an int", _is_int),
    "dict": ("a dict of plain literals", lambda v: type(v) is dict and _is_literal(v)),
    "literal": ("a plain literal", _is_literal),
}

_PIPELINE = "fairseq/model_parallel/models/pipeline_parallel_transformer/model.py"
_MDM = "fairseq/data/multilingual/multilingual_data_manager.py"
_FCONV_SA = "fairseq/models/fconv_self_att.py"

#: field -> (shape, the fairseq file:line that evaluates it; the first is the one an error message quotes)
EVALUATED_FIELDS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "xformers_att_config": ("dict", ("fairseq/modules/multihead_attention.py:96",)),
    "encoder_xformers_att_config": ("dict", ("fairseq/modules/multihead_attention.py:96",)),
    "decoder_xformers_att_config": ("dict", ("fairseq/modules/multihead_attention.py:96",)),
    "adaptive_softmax_cutoff": ("ints", ("fairseq/models/transformer/transformer_decoder.py:147",
                                         "fairseq/models/lstm.py:183", "fairseq/models/lstm_lm.py:112",
                                         "fairseq/models/fconv_lm.py:86", "fairseq/models/lightconv.py:560",
                                         "fairseq/model_parallel/models/pipeline_parallel_transformer/layers.py:234")),
    "adaptive_input_cutoff": ("ints", ("fairseq/models/transformer_lm.py:295", "fairseq/models/lightconv_lm.py:228")),
    "left_pad_source": ("bool", ("fairseq/tasks/multilingual_translation.py:127",
                                 "fairseq/tasks/online_backtranslation.py:198", f"{_MDM}:337")),
    "left_pad_target": ("bool", ("fairseq/tasks/multilingual_translation.py:128",
                                 "fairseq/tasks/online_backtranslation.py:199", f"{_MDM}:338")),
    "adam_betas": ("numbers", ("fairseq/optim/adam.py:91", "fairseq/optim/cpu_adam.py:78")),
    "adamax_betas": ("numbers", ("fairseq/optim/adamax.py:42",)),
    "lamb_betas": ("numbers", ("fairseq/optim/fused_lamb.py:44",)),
    "adafactor_eps": ("numbers", ("fairseq/optim/adafactor.py:55",)),
    "wer_args": ("literal", ("fairseq/criterions/ctc.py:94",)),
    "pipeline_balance": ("ints", ("fairseq/distributed/utils.py:204", f"{_PIPELINE}:326")),
    "pipeline_devices": ("ints", ("fairseq/distributed/utils.py:206", f"{_PIPELINE}:327")),
    "pipeline_encoder_balance": ("ints", (f"{_PIPELINE}:491",)),
    "pipeline_encoder_devices": ("ints", ("fairseq/distributed/utils.py:209", f"{_PIPELINE}:494")),
    "pipeline_decoder_balance": ("ints", (f"{_PIPELINE}:641",)),
    "pipeline_decoder_devices": ("ints", ("fairseq/distributed/utils.py:212", f"{_PIPELINE}:644")),
    "feature_encoder_spec": ("literal", ("fairseq/data/audio/raw_audio_dataset.py:65",)),
    "extra_data": ("dict", (f"{_MDM}:219",)),
    "extra_lang_pairs": ("dict", (f"{_MDM}:226",)),
    "langtoks": ("dict", (f"{_MDM}:250",)),
    "sampling_weights": ("dict", (f"{_MDM}:266",)),
    "model_overrides": ("dict", ("fairseq_cli/validate.py:57", "fairseq_cli/eval_lm.py:255")),
    # fields of architectures outside the family (refused anyway), checked by name as well
    "encoder_layers": ("int", ("fairseq/models/fconv.py:123", f"{_FCONV_SA}:140")),
    "decoder_layers": ("int", ("fairseq/models/fconv.py:131", "fairseq/models/fconv_lm.py:78", f"{_FCONV_SA}:150")),
    "decoder_attention": ("literal", ("fairseq/models/fconv.py:133", "fairseq/models/fconv_lm.py:80",
                                      f"{_FCONV_SA}:152", "fairseq/models/lstm.py:178")),
    "encoder_attention": ("literal", (f"{_FCONV_SA}:143",)),
    "self_attention": ("literal", (f"{_FCONV_SA}:155",)),
    "project_input": ("literal", (f"{_FCONV_SA}:158",)),
    "gated_attention": ("literal", (f"{_FCONV_SA}:159",)),
    "downsample": ("literal", (f"{_FCONV_SA}:160",)),
    "pretrained": ("literal", (f"{_FCONV_SA}:115",)),
    "character_filters": ("literal", ("fairseq/models/transformer_lm.py:283", "fairseq/models/lightconv_lm.py:216")),
    "conv_feature_layers": ("literal", ("fairseq/models/hubert/hubert.py:258",
                                        "fairseq/models/multires_hubert/multires_hubert.py:296",
                                        "fairseq/models/wav2vec/wav2vec.py:185",
                                        "fairseq/models/wav2vec/wav2vec2.py:314",
                                        "fairseq/models/wav2vec/wav2vec2.py:587",
                                        "fairseq/models/speech_to_text/s2t_wav_transformer.py:176",
                                        "fairseq/models/speech_to_text/s2t_wav_transformer.py:181")),
    "conv_aggregator_layers": ("literal", ("fairseq/models/wav2vec/wav2vec.py:243",)),
    "override_encoder_layers": ("literal", ("fairseq/models/multires_hubert/multires_hubert.py:328",)),
    "encoder_kernel_size_list": ("ints", ("fairseq/models/lightconv.py:221",)),
    "decoder_kernel_size_list": ("ints", ("fairseq/models/lightconv.py:226", "fairseq/models/lightconv_lm.py:180")),
    "encoder_glu": ("bool", ("fairseq/models/lightconv.py:230",)),
    "decoder_glu": ("bool", ("fairseq/models/lightconv.py:233", "fairseq/models/lightconv_lm.py:184")),
    "weight_softmax": ("bool", ("fairseq/models/lightconv.py:249", "fairseq/models/lightconv_lm.py:193")),
}

#: call sites that evaluate no checkpoint field (see the module docstring)
OTHER_CALL_SITES = ("fairseq/utils.py:787", "fairseq/utils.py:791", "fairseq/utils.py:798", "fairseq/utils.py:802",
                    "fairseq/utils.py:806", "fairseq/utils.py:810", "fairseq/dataclass/utils.py:25",
                    "fairseq/options.py:28", f"{_MDM}:38", "fairseq/dataclass/utils.py:111",
                    "fairseq/dataclass/utils.py:113", "fairseq/dataclass/utils.py:115",
                    "fairseq/data/codedataset.py:160")


def known_call_sites() -> List[str]:
    """Every ``file:line`` of the audit: the evaluated fields' and the others."""
    sites = {site for _, fields in EVALUATED_FIELDS.values() for site in fields} | set(OTHER_CALL_SITES)
    return sorted(sites)


# ---- the checks ------------------------------------------------------------------------------------------------------
def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _parsed(value: Any) -> Any:
    """The plain value a config string stands for, parsed without running anything; ValueError if it is no literal."""
    if not isinstance(value, str):
        return value
    if len(value) > MAX_LITERAL_CHARS:
        raise ValueError(f"longer than {MAX_LITERAL_CHARS} characters")
    try:
        return ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ValueError(type(exc).__name__) from None


def check_field(name: str, value: Any, where: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` of the evaluated field ``name`` is None or a plain literal of its
    shape (a string: one that ``ast.literal_eval`` turns into that shape)."""
    shape, sites = EVALUATED_FIELDS[name]
    description, fits = SHAPES[shape]
    try:
        ok = value is None or fits(_parsed(value))
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(where, f"{where} = {_clip(repr(value))} is not {description}: fairseq evaluates this field "
                                 f"as Python ({sites[0]}), so the checkpoint was refused before anything was built "
                                 f"from it")


def in_transformer_family(name: Any) -> bool:
    """True when ``name`` (an ``arch`` or a model ``_name``) is fairseq's transformer or this plugin's model."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    return isinstance(name, str) and (name in TRANSFORMER_FAMILY or
                                      ARCH_MODEL_NAME_REGISTRY.get(name) in TRANSFORMER_FAMILY)


def _entries(node: Any) -> Iterator[Tuple[str, Any]]:
    """(key, value) of a mapping's items and of an object's attributes (a Namespace; an OrderedDict may carry both,
    and fairseq reads the items while CTranslate2 reads the attributes)."""
    if isinstance(node, collections.abc.Mapping):
        yield from ((str(k), v) for k, v in node.items())
    attributes = getattr(node, "__dict__", None)
    if isinstance(attributes, dict):
        yield from ((str(k), v) for k, v in attributes.items())


def _walk(node: Any, where: str, seen: set) -> Iterator[Tuple[str, str, Any]]:
    """(field name, dotted path, value) of every entry of a config tree, each node visited once."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield from _walk(item, f"{where}[{i}]", seen)
        return
    if not isinstance(node, (collections.abc.Mapping, argparse.Namespace)) and not hasattr(node, "__dict__"):
        return
    for key, value in _entries(node):
        yield key, f"{where}.{key}", value
        yield from _walk(value, f"{where}.{key}", seen)


def check_model_family(model_cfg: Any, where: str) -> None:
    """Refuse a model config whose ``_name`` or ``arch`` names a model outside :data:`TRANSFORMER_FAMILY`."""
    if model_cfg is None:
        return
    for key, value in _entries(model_cfg):
        if key in ("_name", "arch") and value is not None and not in_transformer_family(value):
            raise ConfigError(f"{where}.{key}", f"{where}.{key} = {_clip(repr(value))} is not a model of the "
                                                f"Transformer family that fairseq_admin loads (fairseq's transformer "
                                                f"and this plugin's residual_transformer architectures): fairseq "
                                                f"evaluates config strings of other architectures as Python (e.g. "
                                                f"fconv's encoder_layers, fairseq/models/fconv.py:123), so the "
                                                f"checkpoint was refused before anything was built from it")


def check_config(config: Any, where: str) -> None:
    """Check every evaluated field anywhere in ``config`` (see the module docstring)."""
    for name, path, value in _walk(config, where, set()):
        if name in EVALUATED_FIELDS:
            check_field(name, value, path)


def check_checkpoint_config(state: Any) -> None:
    """Refuse (:class:`ConfigError`) a checkpoint state whose ``args`` or ``cfg`` names a model outside the
    Transformer family or holds an evaluated field that is no plain literal of its shape."""
    if not isinstance(state, collections.abc.Mapping):
        return
    args, cfg = state.get("args"), state.get("cfg")
    check_model_family(args, "args")
    if cfg is not None:
        for key, value in _entries(cfg):
            if key == "model":
                check_model_family(value, "cfg.model")
    check_config(args, "args")
    check_config(cfg, "cfg")
