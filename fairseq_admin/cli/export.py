"""Export a model trained with this plugin as fairseq's own ``transformer`` (``fairseq-admin-export``).

    fairseq-admin-export --checkpoint checkpoints/checkpoint_best.pt --out export/model.pt \\
        [--data data-bin] [--sentencepiece-model spm.model]

The output is a checkpoint of fairseq's ``transformer`` model under the ``translation`` task, with no option of this
plugin left in its config, whose outputs equal the plugin model's. Stock fairseq reads it with torch's safe loader left
on (``weights_only=True``) in a Python that never imports ``fairseq_admin``: ``fairseq-generate DATA --path OUT.pt``,
``TransformerModel.from_pretrained`` and CTranslate2's ``ct2-fairseq-converter`` work on it.

What each scheme becomes
------------------------
* ``postln``, ``preln``: already fairseq's Transformer (``preln`` = ``--encoder/decoder-normalize-before``): the
  tensors are copied, only the config changes. So is ``ds_init``: Post-LN whose only difference is its initial values
  (fairseq_admin/schemes/ds_init.py).
* ``admin`` (x_{i+1} = LN(x_i·ω_i + f_i(x_i)), ω scalar or per dimension) and ``deepnorm`` (the same with the scalar
  ω_i = α of its stack) have every shortcut weight folded into the weights. The input x_i of sublayer i is the output
  LN_{i-1}(·) = γ⊙n + β of the LayerNorm before it. With x'_i = x_i·ω_i written into that LayerNorm's affine
  (γ' = γ·ω_i, β' = β·ω_i) the shortcut is plain x'_i, and the branch reads x'_i/ω_i by dividing the input columns of
  every projection that reads x_i: q, k and v of a self-attention, only q of a cross-attention (k, v read the encoder
  output, which no ω touches), fc1 of an FFN: W' = W·diag(1/ω_i), so W'x'_i = W x_i. Exact in real arithmetic; in
  float32 each folded product is rounded once (computed in float64), a relative change of at most 2^-24 per weight.
  For DeepNorm this folds LN(α·x + f) exactly, with LayerNorm's ε untouched, which the other route
  LN(α·x + f) = LN(x + f/α) (scaling fc2/out_proj by 1/α) cannot: that one is LN computed with ε/α² in place of ε,
  |Δ| ≤ |γ|·|n|·ε·(1 − 1/α²) / (2(σ² + ε)) per LayerNorm, σ² the variance of x + f/α, so it is not used.
  A zero entry of ω cannot be folded and is refused.
* The first sublayer of each stack reads the embedding sum x_1 = s·E[token] + P[position] (s = sqrt(d) or 1), which no
  LayerNorm produces. With ω_1 = 1 (always so for the encoder and decoder of a profiled *scalar* Admin, whose ω_1 is
  a fixed 1; for vector ω after training, closed forms and DeepNorm it is not) nothing is folded and nothing costs.
  Otherwise x_1·ω_1 is built with stock options, exactly: with ``--layernorm-embedding`` ω_1 goes into that
  LayerNorm's affine (free); otherwise the token table becomes E·diag(ω_1) (the decoder's ``project_in_dim`` rows
  instead, when it has one) and the position table P·diag(ω_1), sinusoidal positions becoming a learned table
  (``--encoder/decoder-learned-pos``) holding the same values times ω_1 for positions up to
  ``--max-source/target-positions``, as many as fairseq's sinusoidal embedding serves. Size cost: the scaled table
  can no longer be shared: ``--share-all-embeddings`` with the encoder scaled costs one V×d table, with the decoder
  scaled two (encoder, decoder input and output projection become three tables);
  ``--share-decoder-input-output-embed`` with the decoder scaled costs one; plus (max positions + pad + 1)×d for each
  stack whose positions were sinusoidal. The command prints the figure.
* ``b2t``: out = LN(x + h + FFN(h)) has no stock equivalent (fairseq's layer cannot add its input before the last
  LayerNorm); it is refused. Its tensor names equal fairseq's, so a renamed B2T checkpoint would load into fairseq's
  Transformer and translate wrongly without an error: never rename one by hand.
* ``rezero``: x + α·f(x) with no LayerNorm. α alone would fold (x + α·(W h + b) = x + (αW) h + αb in out_proj and
  fc2), but every stock fairseq layer normalizes (after the join in Post-LN, before the branch and at the end of the
  stack in Pre-LN), and a LayerNorm is not the identity: refused.
* ``t_fixup``: x + f(x) with no LayerNorm at all (its constants live in the initial weights only, so there is
  nothing to fold); refused for the same reason as ``rezero``.
* any scheme trained with ``--norm rmsnorm`` or ``dyt`` (fairseq_admin/modules/norms.py): refused, every norm of
  fairseq's Transformer is a LayerNorm (an RMSNorm ``preln``/``peri_ln`` model goes to CTranslate2 through
  fairseq_admin/cli/ct2_peri_ln.py).
* ``lns``, ``resi_dual``, ``mix_ln``, ``peri_ln``: see fairseq_admin/cli/export_field_schemes.py (LayerNorm Scaling's
  1/√l folded into each pre-norm's γ and β gives stock Pre-LN exactly; the other three are refused).

The config is stored so the safe loader reads it without the plugin: ``args`` is None and ``cfg`` holds plain dicts
and primitives; ``cfg["model"]`` is a ``collections.OrderedDict`` carrying the same values as items (what fairseq's
``load_checkpoint_to_cpu`` turns into its config) and as attributes (CTranslate2's converter does
``checkpoint["cfg"]["model"].data = ...``), a type torch's weights-only unpickler builds with its attributes.
Its keys are exactly those fairseq's own parser knows for ``--task translation --arch <the fairseq arch>`` and the
checkpoint's stock optimizer, criterion, scheduler, bpe and tokenizer: every option a plugin adds is dropped, whatever
its name, and a stock option missing from the checkpoint gets fairseq's default. The other groups of ``cfg`` keep only
the fields of fairseq's dataclasses (a stock optimizer, criterion, ...: its entry's dataclass); a group naming a
registry entry of a plugin (``--optimizer radam``) becomes None. The config is built from these lists, never copied,
and every field fairseq evaluates as Python is validated again in the output (fairseq_admin/config_validation.py;
the input was validated when it was read).

Settings kept: dimensions, shared embeddings (unless the fold must untie them, above), normalize-before flags,
positions, dictionaries (``--data`` records where they are; its dict.*.txt must match the embedding sizes and the
symbols the checkpoint was trained on, see :func:`check_dictionaries`),
``--sentencepiece-model`` (recorded as ``--bpe sentencepiece``). The optimizer state is dropped. The file is written
atomically and byte for byte the same for the same input (the archive is written in memory, so no temporary name ends
up in it).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fairseq_admin import config_validation, dictionary_checksum, output_safety
from fairseq_admin._lazy import LazyModule
from fairseq_admin.errors import CheckpointError

torch = LazyModule("torch")  # imported on first use: --help and argument errors come at once
checkpoint_safety = LazyModule("fairseq_admin.checkpoint_safety")  # these two import torch
export_field_schemes = LazyModule("fairseq_admin.cli.export_field_schemes")

SUBLAYERS = {"encoder": ("self_attn", "ffn"), "decoder": ("self_attn", "cross_attn", "ffn")}
#: the LayerNorm after each sublayer (Post-LN), whose output the next sublayer reads
OUTPUT_LAYER_NORM = {"self_attn": "self_attn_layer_norm", "cross_attn": "encoder_attn_layer_norm",
                     "ffn": "final_layer_norm"}
#: the projections that read a sublayer's input x (the shortcut's stream)
INPUT_READERS = {"self_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                 "cross_attn": ("encoder_attn.q_proj",), "ffn": ("fc1",)}
FOLDABLE = ("postln", "preln", "admin", "deepnorm", "lns", "ds_init")
PRIMITIVES = (type(None), bool, int, float, str)


class ExportError(RuntimeError):
    """A clear, user-facing error of the export tool (printed in one line)."""


# ---- which shortcut weight each sublayer has -------------------------------------------------------------------------
def scheme_of(model_cfg: Dict[str, Any]) -> str:
    scheme = model_cfg.get("residual_scheme") or ("preln" if model_cfg.get("encoder_normalize_before") else "postln")
    norm = model_cfg.get("norm") or "layernorm"
    if norm != "layernorm":  # fairseq_admin/modules/norms.py
        raise ExportError(f"a --norm {norm} model cannot be exported: every norm of fairseq's Transformer is a "
                          f"LayerNorm" + ("; a preln or peri_ln model converts to CTranslate2's rms_norm layers "
                                          "with python -m fairseq_admin.cli.ct2_peri_ln" if norm == "rmsnorm" else ""))
    if scheme == "b2t":
        raise ExportError("b2t cannot be exported: its bottom-to-top shortcut out = LN(x + h + FFN(h)) has no "
                          "equivalent in fairseq's Transformer (and renaming its tensors would load and translate "
                          "wrongly)")
    if scheme == "rezero":
        raise ExportError("rezero cannot be exported: fairseq's Transformer has a LayerNorm at every sublayer "
                          "(Post-LN or Pre-LN) and ReZero has none; its alpha would fold into out_proj and fc2 "
                          "(x + alpha*(Wh + b) = x + (alpha*W)h + alpha*b), the missing norms cannot")
    if scheme == "t_fixup":
        raise ExportError("t_fixup cannot be exported: it has no LayerNorm, and every stock fairseq Transformer "
                          "layer normalizes (after the join in Post-LN, before the branch in Pre-LN); a LayerNorm is "
                          "not the identity, so no renaming or folding gives the same outputs")
    if export_field_schemes.refusal(scheme):
        raise ExportError(export_field_schemes.refusal(scheme))
    if scheme not in FOLDABLE:
        raise ExportError(f"unknown residual scheme {scheme!r} in the checkpoint; can export {', '.join(FOLDABLE)}")
    return scheme


def shortcut_weights(scheme: str, model_cfg: Dict[str, Any], weights: Dict[str, torch.Tensor], stack: str,
                     num_layers: int, dim: int) -> List[Dict[str, torch.Tensor]]:
    """ω of every sublayer, ``[layer][sublayer name]`` -> float64 vector of size ``dim`` (all ones: nothing to fold)."""
    ones = torch.ones(dim, dtype=torch.float64)
    if scheme in ("postln", "preln", "lns", "ds_init"):  # lns: its constants folded by export_field_schemes.fold
        return [{name: ones for name in SUBLAYERS[stack]} for _ in range(num_layers)]
    if scheme == "deepnorm":
        from fairseq_admin.schemes.deepnorm import deepnorm_constants

        alpha, _ = deepnorm_constants(model_cfg["encoder_layers"], model_cfg["decoder_layers"], stack)
        return [{name: ones * alpha for name in SUBLAYERS[stack]} for _ in range(num_layers)]
    scales = []
    for layer in range(num_layers):
        key = f"{stack}.layers.{layer}.residual.omega"
        if key not in weights:
            raise ExportError(f"the checkpoint is an admin model without {key}: not a checkpoint of this plugin's "
                              f"admin_transformer")
        omega = weights[key].double()
        if omega.dim() == 1:  # scalar ω per sublayer
            omega = omega[:, None].expand(-1, dim)
        if not torch.all(omega != 0):
            raise ExportError(f"{key} has a zero entry: a zero shortcut weight cannot be folded into the weights")
        scales.append({name: omega[i] for i, name in enumerate(SUBLAYERS[stack])})
    return scales


# ---- folding ---------------------------------------------------------------------------------------------------------
def _scaled(tensor: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """A new tensor ``tensor * factor`` computed in float64 and rounded once to the tensor's dtype."""
    return (tensor.double() * factor).to(tensor.dtype)


class Folder:
    """Folds the shortcut weights of one checkpoint into a copy of its tensors; records what it changed."""

    def __init__(self, weights: Dict[str, torch.Tensor], model_cfg: Dict[str, Any]):
        self.weights = dict(weights)  # new tensors replace entries; the input's tensors are never written to
        self.cfg = model_cfg
        self.config_changes: Dict[str, Any] = {}
        self.added_parameters = 0
        self.notes: List[str] = []

    def fold_stack(self, stack: str, scales: List[Dict[str, torch.Tensor]]) -> None:
        has_cross = f"{stack}.layers.0.encoder_attn.q_proj.weight" in self.weights
        active = [s for s in SUBLAYERS[stack] if s != "cross_attn" or has_cross]
        producer = None  # the LayerNorm whose output the next sublayer reads; None: the embedding sum
        for layer, layer_scales in enumerate(scales):
            for name in active:
                omega = layer_scales[name]
                if not torch.all(omega == 1):
                    prefix = f"{stack}.layers.{layer}"
                    for reader in INPUT_READERS[name]:
                        key = f"{prefix}.{reader}.weight"
                        self.weights[key] = _scaled(self.weights[key], 1 / omega[None, :])
                    if producer is None:
                        self.fold_into_embedding(stack, omega)
                    else:
                        for part in ("weight", "bias"):
                            self.weights[f"{producer}.{part}"] = _scaled(self.weights[f"{producer}.{part}"], omega)
                producer = f"{stack}.layers.{layer}.{OUTPUT_LAYER_NORM[name]}"

    def fold_into_embedding(self, stack: str, omega: torch.Tensor) -> None:
        """x_1·ω_1 for the embedding sum x_1 = s·E[token] + P[position] (see the module docstring)."""
        if self.cfg.get("layernorm_embedding"):
            for part in ("weight", "bias"):
                key = f"{stack}.layernorm_embedding.{part}"
                self.weights[key] = _scaled(self.weights[key], omega)
            self.notes.append(f"{stack}: ω_1 folded into --layernorm-embedding")
            return
        project_in = f"{stack}.project_in_dim.weight"
        if project_in in self.weights:
            self.weights[project_in] = _scaled(self.weights[project_in], omega[:, None])
        else:
            self._scale_token_table(stack, omega)
        if not self.cfg.get("no_token_positional_embeddings"):
            self._scale_positions(stack, omega)

    def _scale_token_table(self, stack: str, omega: torch.Tensor) -> None:
        """E·diag(ω_1) as the stack's own table: untied from what it was shared with (counted in
        :func:`token_tables`)."""
        key = f"{stack}.embed_tokens.weight"
        table = self.weights[key]
        if self.cfg.get("share_all_embeddings"):
            self.config_changes["share_all_embeddings"] = False
            self.config_changes.setdefault("share_decoder_input_output_embed", True)
        if stack == "decoder":
            self.weights.setdefault("decoder.output_projection.weight", table)
            self.config_changes["share_decoder_input_output_embed"] = False
        self.weights[key] = _scaled(table, omega[None, :])
        self.notes.append(f"{stack}: ω_1 folded into the token embedding table")

    def _scale_positions(self, stack: str, omega: torch.Tensor) -> None:
        key = f"{stack}.embed_positions.weight"
        if key in self.weights:  # learned positions: scale the table
            self.weights[key] = _scaled(self.weights[key], omega[None, :])
            return
        from fairseq.modules import SinusoidalPositionalEmbedding

        side = "source" if stack == "encoder" else "target"
        max_positions = self.cfg.get(f"max_{side}_positions") or 1024
        pad = 1  # fairseq's Dictionary pad index, the positions' padding_idx
        dim = self.weights[f"{stack}.embed_tokens.weight"].size(1)
        table = SinusoidalPositionalEmbedding.get_embedding(max_positions + pad + 1, dim, pad)
        self.weights[key] = _scaled(table, omega[None, :])
        self.config_changes[f"{stack}_learned_pos"] = True
        self.added_parameters += table.numel()
        self.notes.append(f"{stack}: sinusoidal positions × ω_1 stored as a learned table ({table.size(0)} rows)")


def token_tables(cfg: Dict[str, Any]) -> int:
    """How many distinct tables the encoder input, decoder input and decoder output embeddings are."""
    if cfg.get("share_all_embeddings"):
        return 1
    return 2 if cfg.get("share_decoder_input_output_embed") else 3


# ---- the stock config ------------------------------------------------------------------------------------------------
def _is_stock(registry: str, name: Any) -> bool:
    """True when ``name`` is an entry of fairseq's own registry (criterion, optimizer, ...), not a plugin's."""
    from fairseq.registry import REGISTRIES

    entry = REGISTRIES[registry]["registry"].get(name) if isinstance(name, str) else None
    return entry is not None and entry.__module__.startswith("fairseq.")


def stock_arch(arch: str, scheme: str) -> str:
    """fairseq's architecture behind ``<scheme>_<fairseq arch>`` (``transformer`` for ``residual_transformer``)."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    for candidate in (arch, arch[len(scheme) + 1:] if arch.startswith(scheme + "_") else None):
        if candidate and ARCH_MODEL_NAME_REGISTRY.get(candidate) == "transformer":
            return candidate
    return "transformer"


class _DictionariesOnly:
    """What a model's build_model reads from its task: two (empty) dictionaries."""

    def __init__(self):
        from fairseq.data import Dictionary

        self.source_dictionary = self.target_dictionary = Dictionary()


def stock_option_names(arch: str, stock: Dict[str, Any]) -> List[str]:
    """The names fairseq's own ``--arch ARCH`` model config holds: the parser's (``stock``) and those its
    ``build_model`` adds (``max_source_positions``...), found by building the model at a toy size."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    probe = argparse.Namespace(**stock)
    for key in ("encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads"):
        setattr(probe, key, 1)
    for key in ("encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim",
                "decoder_input_dim", "decoder_output_dim"):
        setattr(probe, key, 8)
    ARCH_MODEL_REGISTRY[arch].build_model(probe, _DictionariesOnly())
    return list(stock) + [key for key in vars(probe) if key not in stock]


def stock_model_cfg(model_cfg: Dict[str, Any], arch: str, data: str) -> Dict[str, Any]:
    """The checkpoint's model config restricted to the options fairseq's own ``--task translation --arch ARCH`` model
    config holds (with the checkpoint's stock registry choices); a parser option it lacks gets fairseq's default."""
    from fairseq import options
    from fairseq.registry import REGISTRIES

    argv = [data, "--task", "translation", "--arch", arch]
    for registry in REGISTRIES:
        if _is_stock(registry, model_cfg.get(registry)):
            argv += [f"--{registry.replace('_', '-')}", model_cfg[registry]]
    stock = vars(options.parse_args_and_arch(options.get_training_parser(), argv))
    out = {key: model_cfg[key] if key in model_cfg else stock[key] for key in stock_option_names(arch, stock)
           if key in model_cfg or key in stock}
    out.update({key: stock[key] for key in ("task", "arch", *REGISTRIES)})  # plugin choices -> fairseq's
    out["user_dir"] = None
    return out


def _dataclass_fields(dc) -> Dict[str, Any]:
    values = {}
    instance = dc()
    for f in dataclasses.fields(dc):
        values[f.name] = getattr(instance, f.name)
    return values


def _registry_fields(registry: str, given: Dict[str, Any]) -> Dict[str, Any]:
    """A registry group (``optimizer``, ``criterion``, ...) restricted to the fields of its entry's dataclass."""
    from fairseq.registry import REGISTRIES

    dataclass = REGISTRIES[registry]["dataclass_registry"].get(given["_name"])
    fields = _dataclass_fields(dataclass) if dataclass is not None else {}
    return {"_name": given["_name"], **{k: given.get(k, v) for k, v in fields.items()}}


def stock_cfg(cfg: Dict[str, Any], model: Dict[str, Any], data: str) -> Dict[str, Any]:
    """The top-level ``cfg`` with fairseq's own groups only: dataclass groups keep their dataclass's fields, the task
    becomes ``translation``, registry groups of a plugin's entry become None, ``model`` is ``model``."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.registry import REGISTRIES
    from fairseq.tasks.translation import TranslationConfig

    out: Dict[str, Any] = {}
    for f in dataclasses.fields(FairseqConfig):
        given = cfg.get(f.name)
        if f.name == "model":
            out["model"] = model
        elif f.name == "task":
            task = {k: (given or {}).get(k, v) for k, v in _dataclass_fields(TranslationConfig).items()}
            task["data"] = data
            out["task"] = {**task, "_name": "translation"}
        elif f.name in REGISTRIES:  # a stock entry keeps the fields of its dataclass only
            out[f.name] = _registry_fields(f.name, given) if given and _is_stock(f.name, given.get("_name")) else None
        elif dataclasses.is_dataclass(f.type) and isinstance(given, dict):
            fields = _dataclass_fields(f.type)
            out[f.name] = {k: given.get(k, v) for k, v in fields.items()}
        elif f.name != "_name" and given is not None:
            out[f.name] = given
    out["common"]["user_dir"] = None
    return out


def plugin_names() -> set:
    """Every name a plugin registered: tasks, models, architectures, criterion/optimizer/... entries."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
    from fairseq.registry import REGISTRIES
    from fairseq.tasks import TASK_REGISTRY

    registries = [TASK_REGISTRY, MODEL_REGISTRY, ARCH_MODEL_REGISTRY] + [r["registry"] for r in REGISTRIES.values()]
    return {name for registry in registries for name, cls in registry.items()
            if not getattr(cls, "__module__", "fairseq.").startswith("fairseq.")}


def check_stock(cfg: Dict[str, Any]) -> None:
    """The guard against a config that would need a plugin: no value names a plugin's task, model, architecture or
    registry entry, no user dir."""
    names = plugin_names()

    def walk(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "user_dir" and v is not None:
                    raise ExportError(f"internal error: {where}.user_dir is set in the exported config")
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif isinstance(value, str) and value in names:
            raise ExportError(f"internal error: the exported config's {where} names the plugin's {value!r}")

    walk(cfg, "cfg")


def _primitive_tree(value: Any, where: str) -> Any:
    """``value`` as plain containers and primitives (tuples become lists), or ExportError naming ``where``."""
    if isinstance(value, PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)):
        return [_primitive_tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _primitive_tree(v, f"{where}.{k}") for k, v in value.items()}
    if hasattr(value, "value") and isinstance(value.value, str):  # an Enum choice
        return value.value
    raise ExportError(f"config value {where} = {value!r} ({type(value).__name__}) cannot be stored for the safe loader")


def namespace_dict(values: Dict[str, Any]) -> "collections.OrderedDict":
    """An OrderedDict whose items are ``values`` and whose attributes are the same values (see the module docstring)."""
    out = collections.OrderedDict(values)
    out.__dict__.update(values)
    return out


def _model_cfg_dict(state: Dict[str, Any], path: str) -> Dict[str, Any]:
    model_cfg = checkpoint_safety.checkpoint_model_cfg(state)
    if isinstance(model_cfg, argparse.Namespace):
        return dict(vars(model_cfg))
    if isinstance(model_cfg, dict) and model_cfg.get("arch"):
        return dict(model_cfg)
    raise ExportError(f"{path} has no model config (cfg.model or args with an arch): not a fairseq checkpoint")


# ---- the export ------------------------------------------------------------------------------------------------------
def export_state(state: Dict[str, Any], path: str = "<checkpoint>", data: Optional[str] = None,
                 sentencepiece_model: Optional[str] = None) -> Tuple[Dict[str, Any], List[str]]:
    """(the stock checkpoint, lines describing what was done) for the plugin checkpoint ``state``."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    model_cfg = _model_cfg_dict(state, path)
    arch = model_cfg["arch"]
    if ARCH_MODEL_NAME_REGISTRY.get(arch) not in ("residual_transformer", "transformer"):
        raise ExportError(f"{path} is a model of --arch {arch}, not of residual_transformer or fairseq's transformer")
    scheme = scheme_of(model_cfg)
    if "model" not in state or not isinstance(state["model"], dict):
        raise ExportError(f"{path} has no model weights")
    if scheme in ("admin", "deepnorm"):
        for option in ("cross_self_attention", "adaptive_input", "encoder_layers_to_keep", "decoder_layers_to_keep"):
            if model_cfg.get(option):
                raise ExportError(f"--{option.replace('_', '-')} is not supported by the {scheme} fold")
    weights = export_field_schemes.fold(scheme, state["model"], model_cfg)

    folder = Folder(weights, model_cfg)
    for stack in ("encoder", "decoder"):
        dim, layers = model_cfg[f"{stack}_embed_dim"], model_cfg[f"{stack}_layers"]
        folder.fold_stack(stack, shortcut_weights(scheme, model_cfg, weights, stack, layers, dim))
    untied = token_tables({**model_cfg, **folder.config_changes}) - token_tables(model_cfg)
    folder.added_parameters += untied * weights["decoder.embed_tokens.weight"].numel()
    plugin_keys = [k for k in folder.weights if ".residual." in k or k == "omega_ready"]
    for key in plugin_keys:
        del folder.weights[key]

    data = os.path.abspath(data) if data else model_cfg.get("data")
    if isinstance(data, list):
        data = data[0] if data else None
    data = data or ""
    base = dict(model_cfg)
    if sentencepiece_model:
        base.update(bpe="sentencepiece", sentencepiece_model=os.path.abspath(sentencepiece_model))
    model = stock_model_cfg(base, stock_arch(arch, scheme), data)
    normalize_before = export_field_schemes.stock_layout(scheme) == "preln"
    model.update(encoder_normalize_before=normalize_before, decoder_normalize_before=normalize_before, data=data)
    model.update(folder.config_changes)
    model = namespace_dict(_primitive_tree(model, "cfg.model"))

    cfg = stock_cfg(state.get("cfg") or {}, model, data)
    if sentencepiece_model:
        cfg["bpe"] = {"_name": "sentencepiece", "sentencepiece_model": os.path.abspath(sentencepiece_model),
                      "sentencepiece_enable_sampling": False, "sentencepiece_alpha": None}
    cfg = {k: (v if k == "model" else _primitive_tree(v, f"cfg.{k}")) for k, v in cfg.items()}
    check_stock(cfg)
    try:  # every field fairseq evaluates, re-validated in what stock fairseq and CTranslate2 will read
        config_validation.check_checkpoint_config({"cfg": cfg})
    except config_validation.ConfigError as exc:
        raise ExportError(f"the exported config would not be safe to load: {exc}") from None

    last = (state.get("optimizer_history") or [{}])[-1]
    out = {
        "args": None,
        "cfg": cfg,
        "model": folder.weights,
        "optimizer_history": [{"criterion_name": str(last.get("criterion_name", "")),
                               "optimizer_name": str(last.get("optimizer_name", "")),
                               "lr_scheduler_state": {}, "num_updates": int(last.get("num_updates", 0) or 0)}],
        "extra_state": {"train_iterator": None},
        "fairseq_admin_export": {"residual_scheme": scheme, "added_parameters": folder.added_parameters},
    }
    total = sum(t.numel() for k, t in weights.items() if k not in plugin_keys and t.is_floating_point())
    lines = [f"{scheme} -> fairseq transformer (--arch {model.arch}, task translation)"]
    if scheme in ("admin", "deepnorm"):
        lines.append("shortcut weights folded into the LayerNorms and the q/k/v, q (cross-attention) and fc1 inputs")
    lines += export_field_schemes.notes(scheme) + folder.notes
    if folder.added_parameters:
        lines.append(f"size cost of the first sublayer's ω: +{folder.added_parameters:,} parameters "
                     f"(+{100 * folder.added_parameters / max(total, 1):.1f}%)")
    return out, lines


def check_dictionaries(data: str, model_cfg: Dict[str, Any], weights: Dict[str, torch.Tensor],
                       state: Optional[Dict[str, Any]] = None) -> List[str]:
    """``data`` holds dict.SRC.txt and dict.TGT.txt whose sizes match the embedding tables and whose symbols are those
    the checkpoint was trained on: their checksums (fairseq_admin/dictionary_checksum.py) against those recorded at
    training time, else against the dictionaries of the data-bin the checkpoint names, when it still exists. Without
    either only the sizes can be compared, and the returned line says so."""
    from fairseq.data import Dictionary

    if not os.path.isdir(data):
        raise ExportError(f"--data {data}: no such directory")
    langs = (model_cfg.get("source_lang"), model_cfg.get("target_lang"))
    if None in langs:  # the pair fairseq's translation task infers from the data-bin's file names
        from fairseq.data.data_utils import infer_language_pair

        langs = tuple(infer_language_pair(data))
    if None in langs:
        found = sorted(n[5:-4] for n in os.listdir(data) if n.startswith("dict.") and n.endswith(".txt"))
        if len(found) != 2:
            raise ExportError(f"--data {data}: the checkpoint names no languages and the directory does not hold "
                              f"exactly two dict.*.txt files (found {found})")
        langs = tuple(found)
    for lang, stack in zip(langs, ("encoder", "decoder")):
        path = os.path.join(data, f"dict.{lang}.txt")
        if not os.path.isfile(path):
            raise ExportError(f"--data {data}: {path} is missing")
        size = len(Dictionary.load(path))
        rows = weights[f"{stack}.embed_tokens.weight"].size(0)
        if size != rows:
            raise ExportError(f"--data {data}: {path} has {size} symbols but the {stack} embedding has {rows} "
                              f"rows: not this model's dictionaries")
    expected, origin = dictionary_checksum.of_checkpoint(state) if state is not None else (None, "no checkpoint")
    if expected is None:
        return [f"--data {data}: dictionaries compared by size only ({origin})"]
    wrong = dictionary_checksum.differences(expected, dictionary_checksum.of_data_bin(data, langs) or {})
    if wrong:
        raise ExportError(f"--data {data}: its {' and '.join(wrong)} dictionary has the right size but other symbols "
                          f"than the one the checkpoint was trained on (sha256 of the symbols, {origin}): not this "
                          f"model's dictionaries")
    return [f"--data {data}: dictionaries are the checkpoint's ({origin})"]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairseq-admin-export",
        description="Write a plugin checkpoint (postln, preln, admin, deepnorm, lns, ds_init) as a checkpoint of "
                    "fairseq's own transformer with the same outputs, loadable without --user-dir and by "
                    "ct2-fairseq-converter.")
    parser.add_argument("--checkpoint", required=True, metavar="IN.pt", help="checkpoint written by fairseq-train "
                                                                              "with this plugin")
    parser.add_argument("--out", required=True, metavar="OUT.pt",
                        help="the stock fairseq checkpoint to write (atomically; missing directories are created); "
                             "neither an input nor a name fairseq-train resumes from (checkpoint_last.pt, ...)")
    parser.add_argument("--data", metavar="DATA_BIN", help="data-bin with the model's dict.*.txt, recorded in the "
                                                           "config (default: the path the checkpoint was trained on)")
    parser.add_argument("--sentencepiece-model", metavar="SPM.model", help="recorded as --bpe sentencepiece")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    args = get_parser().parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        raise ExportError(f"--checkpoint {args.checkpoint}: no such file")
    if args.sentencepiece_model and not os.path.isfile(args.sentencepiece_model):
        raise ExportError(f"--sentencepiece-model {args.sentencepiece_model}: no such file")
    if args.data and not os.path.isdir(args.data):
        raise ExportError(f"--data {args.data}: no such directory")
    # an input (through any symbolic link), checkpoint_last.pt of a save dir, a directory, unwritable: refused now;
    # missing parent directories are created (output_safety)
    data_files = [os.path.join(args.data, name) for name in os.listdir(args.data)] if args.data else []
    output_safety.check_output(args.out, [args.checkpoint, args.sentencepiece_model, *data_files], "--out")

    import fairseq_admin

    fairseq_admin.register()  # the plugin model and the safe-loading allow-list (fairseq_admin/__init__.py: not at import)

    state = checkpoint_safety.load_checkpoint(args.checkpoint)
    model_cfg = _model_cfg_dict(state, args.checkpoint)
    scheme_of(model_cfg)  # b2t and unknown schemes are refused before any work
    checked = check_dictionaries(args.data, model_cfg, state.get("model", {}), state) if args.data else []
    out, lines = export_state(state, args.checkpoint, args.data, args.sentencepiece_model)
    lines += checked
    checkpoint_safety.save_atomically(out, args.out)
    lines.append(f"wrote {args.out}")
    return lines


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        lines = main(argv)
    except (ExportError, CheckpointError, output_safety.OutputPathError, FileNotFoundError) as exc:
        print(f"fairseq-admin-export: error: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(f"fairseq-admin-export: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
