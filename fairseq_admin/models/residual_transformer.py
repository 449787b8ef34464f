"""``residual_transformer``: fairseq's Transformer with a pluggable residual scheme per layer.

Everything of fairseq's ``transformer`` model stays (options, shared embeddings, incremental decoding, hub
interface); the encoder and decoder build :mod:`fairseq_admin.modules.layers` layers, whose residual connection is
the scheme chosen by ``--residual-scheme`` (or by the architecture name, ``<scheme>_transformer_wmt_en_de``...).
"""
import torch
from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerDecoderBase, TransformerEncoderBase, TransformerModel
from fairseq.models.transformer import transformer_legacy as fairseq_archs
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from fairseq_admin.modules import SchemeDecoderLayer, SchemeEncoderLayer
from fairseq_admin.schemes import SCHEMES, get_scheme


def _wrap_layer(layer, cfg):
    """fairseq's own activation checkpointing and FSDP wrapping, as its build_*_layer does."""
    if cfg.checkpoint_activations:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    return fsdp_wrap(layer, min_num_params=cfg.min_params_to_wrap if not cfg.checkpoint_activations else 0)


class SchemeTransformerEncoder(TransformerEncoderBase):
    def build_encoder_layer(self, cfg):
        return _wrap_layer(SchemeEncoderLayer(cfg, return_fc=self.return_fc), cfg)


class SchemeTransformerDecoder(TransformerDecoderBase):
    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return _wrap_layer(SchemeDecoderLayer(cfg, no_encoder_attn), cfg)


@register_model("residual_transformer")
class ResidualTransformerModel(TransformerModel):
    """fairseq's Transformer whose residual connections follow ``--residual-scheme``.

    When the scheme must be profiled before training (Admin with ``--admin-init profile``), the model carries a
    ``omega_ready`` buffer, saved in checkpoints: False until ω is set, so a resumed run never profiles again and a
    run that would train with ω = 1 stops at its first training batch with an error naming the task to use.
    """

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        if get_scheme(args.residual_scheme).requires_profiling(args):
            self.register_buffer("omega_ready", torch.tensor(False))
        self.profiling = False  # set by fairseq_admin.profiling during its forward pass

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument("--residual-scheme", choices=tuple(SCHEMES),
                            help="how each sublayer's output joins its shortcut: " + "; ".join(
                                f"{name}: {s.formula} ({s.paper})" for name, s in SCHEMES.items()))
        for scheme in SCHEMES.values():
            scheme.add_args(parser)

    @classmethod
    def build_model(cls, args, task):
        scheme = get_scheme(getattr(args, "residual_scheme", None) or "postln")
        args.residual_scheme = scheme.name
        scheme.check_args(args)
        if scheme.normalize_before:
            args.encoder_normalize_before = args.decoder_normalize_before = True
        elif getattr(args, "encoder_normalize_before", False) or getattr(args, "decoder_normalize_before", False):
            raise ValueError(f"--residual-scheme {scheme.name} is a Post-LN scheme: remove --encoder-normalize-before/"
                             "--decoder-normalize-before, or use --residual-scheme preln")
        return super().build_model(args, task)

    @classmethod
    def build_encoder(cls, cfg, src_dict, embed_tokens):
        return SchemeTransformerEncoder(cfg, src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, cfg, tgt_dict, embed_tokens):
        return SchemeTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)

    def forward(self, *args, **kwargs):
        if self.training and not self.profiling and self.needs_profiling():
            raise RuntimeError(
                "this admin model's ω has not been initialized (--admin-init profile) and training would run with "
                "ω = 1. Train with --task admin_translation, which profiles ω on the first batch, or give "
                "--admin-profile-load PATH (same task), or choose a closed form with --admin-init O(logn)|O(1)|O(n).")
        return super().forward(*args, **kwargs)

    def needs_profiling(self) -> bool:
        return hasattr(self, "omega_ready") and not bool(self.omega_ready)

    def scheme_layers(self, stack: str):
        """The ``ResidualScheme`` modules of the encoder's or decoder's layers, bottom to top."""
        layers = self.encoder.layers if stack == "encoder" else self.decoder.layers
        return [layer.residual for layer in layers]


# ---- architectures: <scheme>_<fairseq arch> for every scheme, the dimensions being fairseq's -----------------------
FAIRSEQ_ARCHS = {
    "transformer": fairseq_archs.base_architecture,
    "transformer_iwslt_de_en": fairseq_archs.transformer_iwslt_de_en,
    "transformer_wmt_en_de": fairseq_archs.transformer_wmt_en_de,
    "transformer_vaswani_wmt_en_de_big": fairseq_archs.transformer_vaswani_wmt_en_de_big,
    "transformer_vaswani_wmt_en_fr_big": fairseq_archs.transformer_vaswani_wmt_en_fr_big,
    "transformer_wmt_en_de_big": fairseq_archs.transformer_wmt_en_de_big,
}


def _register_architecture(scheme: str, fairseq_arch: str, set_dimensions):
    def architecture(args):
        given = getattr(args, "residual_scheme", None)
        if given not in (None, scheme):
            raise ValueError(f"--arch {scheme}_{fairseq_arch} sets --residual-scheme {scheme}, but "
                             f"--residual-scheme {given} was given; use --arch {given}_{fairseq_arch}")
        args.residual_scheme = scheme
        set_dimensions(args)

    register_model_architecture("residual_transformer", f"{scheme}_{fairseq_arch}")(architecture)


@register_model_architecture("residual_transformer", "residual_transformer")
def residual_transformer(args):
    """Base architecture: fairseq's `transformer` dimensions, the scheme from --residual-scheme (default postln)."""
    args.residual_scheme = getattr(args, "residual_scheme", None) or "postln"
    fairseq_archs.base_architecture(args)


for _scheme in SCHEMES:
    for _arch, _set_dimensions in FAIRSEQ_ARCHS.items():
        _register_architecture(_scheme, _arch, _set_dimensions)
