"""``residual_transformer``: fairseq's Transformer with a pluggable residual scheme per layer.

Everything of fairseq's ``transformer`` model stays (options, shared embeddings, incremental decoding, hub
interface); the encoder and decoder build :mod:`fairseq_admin.modules.layers` layers, whose residual connection is
the scheme chosen by ``--residual-scheme`` (or by the architecture name, ``<scheme>_transformer_wmt_en_de``...).
"""
import logging

import torch
from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerDecoderBase, TransformerEncoderBase, TransformerModel
from fairseq.models.transformer import transformer_legacy as fairseq_archs
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from fairseq_admin.diagnostics import install_stability_log
from fairseq_admin.modules import SchemeDecoderLayer, SchemeEncoderLayer
from fairseq_admin.modules import norms
from fairseq_admin.modules.layer_init import LAYER_INITS
from fairseq_admin.modules.word_dropout import DecoderWordDropout, word_dropout
from fairseq_admin.errors import OptionError
from fairseq_admin.models.hydra_config import is_hydra_config, namespace_from_config, one_line_errors_under_hydra, write_back
from fairseq_admin.profiling import check_profile_options, initialize_omega
from fairseq_admin.schemes import SCHEMES, get_scheme

logger = logging.getLogger(__name__)


def _wrap_layer(layer, cfg):
    """fairseq's own activation checkpointing and FSDP wrapping, as its build_*_layer does."""
    if cfg.checkpoint_activations:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    return fsdp_wrap(layer, min_num_params=cfg.min_params_to_wrap if not cfg.checkpoint_activations else 0)


def _install_stack_norms(stack, cfg, name: str, dim: int) -> None:
    """The stack's embedding norm (if fairseq built one) and final step from the scheme (schemes/base.py): the
    scheme's ``build_norm`` and ``build_stack_final`` in place of the LayerNorms fairseq built."""
    scheme = get_scheme(cfg.residual_scheme)
    if stack.layernorm_embedding is not None:
        stack.layernorm_embedding = scheme.build_norm(cfg, dim, "embedding")
    stack.layer_norm = scheme.build_stack_final(cfg, name, dim, stack.carry, stack.layer_norm is not None)


class SchemeTransformerEncoder(TransformerEncoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, return_fc=False):
        # set before fairseq's __init__ builds the layers: they share the stack's carried state and learn their index
        self.carry = get_scheme(cfg.residual_scheme).new_carry(cfg, "encoder")
        self._layers_built = 0
        super().__init__(cfg, dictionary, embed_tokens, return_fc=return_fc)
        _install_stack_norms(self, cfg, "encoder", embed_tokens.embedding_dim)
        self.word_dropout = getattr(cfg, "encoder_word_dropout", 0.0) or 0.0

    def build_encoder_layer(self, cfg):
        layer = SchemeEncoderLayer(cfg, return_fc=self.return_fc, layer_index=self._layers_built, carry=self.carry)
        self._layers_built += 1
        return _wrap_layer(layer, cfg)

    def forward_embedding(self, src_tokens, token_embedding=None):
        if self.carry is not None:  # a new stack forward starts here (fairseq's forward embeds first)
            self.carry.reset()
        if self.training and self.word_dropout > 0:
            if token_embedding is None:
                token_embedding = self.embed_tokens(src_tokens)
            token_embedding = word_dropout(token_embedding, self.word_dropout, keep_first=False)
        return super().forward_embedding(src_tokens, token_embedding)


class SchemeTransformerDecoder(TransformerDecoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None):
        self.carry = get_scheme(cfg.residual_scheme).new_carry(cfg, "decoder")  # see SchemeTransformerEncoder
        self._layers_built = 0
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn, output_projection)
        _install_stack_norms(self, cfg, "decoder", self.embed_dim)
        p = getattr(cfg, "decoder_word_dropout", 0.0) or 0.0
        self._word_dropout = DecoderWordDropout(p) if p > 0 else None
        if self._word_dropout is not None:
            self.embed_tokens.register_forward_hook(self._word_dropout)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        layer = SchemeDecoderLayer(cfg, no_encoder_attn, layer_index=self._layers_built, carry=self.carry)
        self._layers_built += 1
        return _wrap_layer(layer, cfg)

    def extract_features(self, *args, **kwargs):
        if self.carry is not None:
            self.carry.reset()
        if self._word_dropout is None:
            return super().extract_features(*args, **kwargs)
        self._word_dropout.active = self.training
        try:
            return super().extract_features(*args, **kwargs)
        finally:
            self._word_dropout.active = False


@register_model("residual_transformer")
class ResidualTransformerModel(TransformerModel):
    """fairseq's Transformer whose residual connections follow ``--residual-scheme``.

    When the scheme must be profiled before training (Admin with ``--admin-init profile``), the model carries an
    ``omega_ready`` buffer, saved in checkpoints: False until ω is set. Its first training forward sets ω (profiling
    that batch, or ``--admin-profile-load``; fairseq_admin/profiling.py) under any fairseq task, then runs as usual;
    a resumed run finds ``omega_ready`` True in its checkpoint and never profiles again.
    """

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        if get_scheme(args.residual_scheme).requires_profiling(args):
            self.register_buffer("omega_ready", torch.tensor(False))
            check_profile_options(self)
        self.profiling = False  # set by fairseq_admin.profiling during its forward pass
        self._omega_seen_ready = False

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument("--residual-scheme", choices=tuple(SCHEMES),
                            help="how each sublayer's output joins its shortcut: " + "; ".join(
                                f"{name}: {s.formula} ({s.paper})" for name, s in SCHEMES.items()))
        parser.add_argument("--layer-init", choices=LAYER_INITS,
                            help="initialization of every layer before the scheme's own: 'fairseq' (fairseq main's, "
                                 "as fairseq's transformer), 'fairseq-0.9' (zero q/k/v/out_proj biases, "
                                 "Xavier-uniform fc1/fc2 with zero biases) or 'pytorch' (nn.MultiheadAttention's: "
                                 "zero q/k/v/out_proj biases, out_proj weight U(+-1/sqrt(d))). Default: the scheme's "
                                 "official code's (admin, ds_init: fairseq-0.9; rezero: pytorch; others: fairseq)")
        norms.add_args(parser)  # --norm and DyT's --dyt-alpha-init*
        parser.add_argument("--encoder-word-dropout", type=float, metavar="P",
                            help="in training, zero each source token embedding with probability P (before the "
                                 "sqrt(d) scaling, no rescaling; the B2T 18L recipe's 0.1). Default 0")
        parser.add_argument("--decoder-word-dropout", type=float, metavar="P",
                            help="the same for target token embeddings; position 0 is always kept. Default 0")
        parser.add_argument("--log-stability", type=int, metavar="N",
                            help="every N updates (from the first), log per-layer weight-gradient norms, the "
                                 "residual dependency beta and omega statistics (stab_* keys; "
                                 "fairseq_admin/diagnostics.py), under any task. Default 0: off")
        for scheme in SCHEMES.values():
            scheme.add_args(parser)

    @classmethod
    def build_model(cls, args, task):
        if not is_hydra_config(args):
            return cls._build_model(args, task)
        # fairseq-hydra-train, or a checkpoint it wrote: built from the Namespace the command line would give
        with one_line_errors_under_hydra():
            namespace = namespace_from_config(args, cls)
            model = cls._build_model(namespace, task)
        write_back(args, namespace, cls)
        return model

    @classmethod
    def _build_model(cls, args, task):
        scheme = get_scheme(getattr(args, "residual_scheme", None) or "postln")
        args.residual_scheme = scheme.name
        _check_common_args(args, scheme)
        scheme.check_args(args)
        if not scheme.normalize_before and (getattr(args, "encoder_normalize_before", False)
                                            or getattr(args, "decoder_normalize_before", False)):
            raise OptionError(f"--residual-scheme {scheme.name} is a Post-LN scheme: remove --encoder-normalize-before/"
                             "--decoder-normalize-before, or use --residual-scheme preln")
        scheme.configure(args)
        model = super().build_model(args, task)
        scheme.init_model(model)
        if task is not None and hasattr(task, "train_step"):  # also without --log-stability: diagnostics.py says why
            install_stability_log(task, getattr(args, "log_stability", None) or 0)
        return model

    @classmethod
    def build_encoder(cls, cfg, src_dict, embed_tokens):
        return SchemeTransformerEncoder(cfg, src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, cfg, tgt_dict, embed_tokens):
        return SchemeTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, **kwargs):
        if self.training and not self.profiling and self.needs_profiling():
            # Admin's ω, once, on the first training batch, under whatever task trains this model
            initialize_omega(self, dict(src_tokens=src_tokens, src_lengths=src_lengths,
                                        prev_output_tokens=prev_output_tokens, **kwargs))
        return super().forward(src_tokens, src_lengths, prev_output_tokens, **kwargs)

    def needs_profiling(self) -> bool:
        if not hasattr(self, "omega_ready") or self._omega_seen_ready:
            return False
        # reading the buffer waits for the device; once it is True it stays so (until a state dict is loaded)
        self._omega_seen_ready = bool(self.omega_ready)
        return not self._omega_seen_ready

    def load_state_dict(self, *args, **kwargs):
        self._omega_seen_ready = False  # the loaded omega_ready decides again
        return super().load_state_dict(*args, **kwargs)

    def scheme_layers(self, stack: str):
        """The ``ResidualScheme`` modules of the encoder's or decoder's layers, bottom to top."""
        layers = self.encoder.layers if stack == "encoder" else self.decoder.layers
        return [layer.residual for layer in layers]


_DEPRECATED_INIT_OPTIONS = {"admin_ffn_init": "--admin-ffn-init", "b2t_ffn_init": "--b2t-ffn-init"}
_OLD_FFN_INIT_TO_LAYER_INIT = {"xavier": "fairseq-0.9", "fairseq": "fairseq"}


def _check_common_args(args, scheme) -> None:
    """Start-up checks of the options every scheme shares; resolves ``--layer-init`` to the value used (saved in
    the checkpoint's config)."""
    for stack in ("encoder", "decoder"):
        layers = getattr(args, f"{stack}_layers", 1)
        if not isinstance(layers, int) or layers < 1:
            raise OptionError(f"--{stack}-layers must be a positive integer, got {layers!r}")
        p = getattr(args, f"{stack}_word_dropout", None)
        if p is not None and not 0 <= p < 1:
            raise OptionError(f"--{stack}-word-dropout must be in [0, 1), got {p}")
    norms.check_args(args)
    every = getattr(args, "log_stability", None)
    if every is not None and (not isinstance(every, int) or every < 0):
        raise OptionError(f"--log-stability must be a whole number >= 0 (0: off), got {every!r}")
    for other in SCHEMES.values():
        if other is scheme:
            continue
        for option, dest in other.option_names().items():
            if dest in _DEPRECATED_INIT_OPTIONS or getattr(args, dest, None) in (None, False):
                continue
            raise OptionError(f"{option} is an option of --residual-scheme {other.name}, but this model is "
                             f"{scheme.name}: remove it (or use --arch {other.name}_transformer...)")
    layer_init = getattr(args, "layer_init", None)
    for dest, option in _DEPRECATED_INIT_OPTIONS.items():
        old = getattr(args, dest, None)
        if old is None:
            continue
        if not dest.startswith(scheme.name + "_"):
            raise OptionError(f"{option} is an option of another scheme (and deprecated): use --layer-init")
        replaced = _OLD_FFN_INIT_TO_LAYER_INIT[old]
        if layer_init is None:
            logger.warning(f"{option} {old} is deprecated: it is now --layer-init {replaced} (fairseq-0.9 also "
                           f"zeroes the attention biases); using that")
            layer_init = replaced
        elif layer_init != replaced:
            raise OptionError(f"{option} {old} contradicts --layer-init {layer_init}; give --layer-init only")
        setattr(args, dest, None)
    if layer_init is not None and layer_init not in LAYER_INITS:
        raise OptionError(f"unknown --layer-init {layer_init!r}; choose one of {', '.join(LAYER_INITS)}")
    args.layer_init = layer_init or scheme.official_layer_init


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
            raise OptionError(f"--arch {scheme}_{fairseq_arch} sets --residual-scheme {scheme}, but "
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
