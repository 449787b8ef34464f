"""The interface every stabilization scheme plugs into: a few small hooks on fairseq's own Transformer.

fairseq's Transformer layer (fairseq/modules/transformer_layer.py) runs each residual sublayer i as

    residual = x
    if self.normalize_before: x = <norm of sublayer i>(x)       # Pre-LN: the norm is the sublayer's input transform
    x = dropout(f_i(x))
    x = self.residual_connection(x, residual)                   # the join: our ``combine``
    if not self.normalize_before: x = <norm of sublayer i>(x)   # Post-LN

and each stack (encoder, decoder) ends with ``self.layer_norm`` when fairseq builds one. A scheme is one subclass of
:class:`ResidualScheme`, one instance per layer (``layer.residual``), and says its rule through these hooks:

per layer (the scheme instance knows ``stack``, ``layer_index`` from 0, ``depth`` = layer_index + 1, ``num_layers``)
    ``pre_norm()``                   the layer's placement: True Pre-LN, False Post-LN (fairseq reads
                                     ``layer.normalize_before`` at forward time, so it can differ layer by layer)
    ``build_sublayer_norm(i)``       the module in the norm slot of sublayer i: the input transform of a Pre-LN
                                     sublayer (LayerNorm Scaling's LN(x)/√l), or the norm after a Post-LN join
    ``combine(i, branch, shortcut)`` the join, and any transform of the branch beside it (Admin's ω, DeepNorm's α,
                                     Peri-LN's output norm, ReZero's α, ResiDual's second stream)
    ``init_layer(layer)``            initialization after ``--layer-init`` (B2T's, DeepNorm's, DS-Init's, T-Fixup's)
    ``carry``                        the stack's :class:`StackCarry` (state handed from layer to layer), or None
per stack and model (class methods, before and after fairseq builds the model)
    ``configure(args)``              the fairseq options the scheme implies (Pre-LN's normalize_before)
    ``build_norm(cfg, dim, role)``   THE normalization module of every norm of the model: ``--norm``'s LayerNorm,
                                     RMSNorm or DyT (fairseq_admin/modules/norms.py); Identity for the norm-free
                                     schemes. A scheme that cannot honour a ``--norm`` refuses it in ``check_args``
    ``new_carry(cfg, stack)``        the state object a stack's layers share (ResiDual's dual stream), or None
    ``build_stack_final(...)``       the stack's last step, in place of fairseq's final LayerNorm (ResiDual's
                                     α·x_N + LN_f(res_N))
    ``init_model(model)``            model-wide initialization after everything is built (T-Fixup's embeddings)
options: ``add_args`` / ``check_args`` (refused in one line at start-up) / ``requires_profiling`` (Admin).

Nothing of fairseq's layer is forked: the layer classes (fairseq_admin/modules/layers.py) only route
``residual_connection`` to ``combine``, fill the norm slots from ``build_sublayer_norm`` and set the placement. The
hot path is ``connect`` (once per sublayer and decoding step): it is the same for every scheme, a scheme's extra
work lives in its own ``combine``, and the defaults of the other hooks run at build time only.
"""
import argparse
from typing import ClassVar, Dict, Optional, Sequence

import torch
from torch import Tensor, nn

#: the roles ``build_norm`` is asked for: a sublayer's own norm (named after the sublayer), a sublayer's output norm
#: ("<sublayer>_output", Peri-LN), a stack's final norm, the embedding norm (fairseq's --layernorm-embedding)
NORM_ROLES = ("self_attn", "cross_attn", "ffn", "self_attn_output", "cross_attn_output", "ffn_output", "final",
              "embedding")
#: fairseq's attribute holding each sublayer's norm
NORM_SLOTS = {"self_attn": "self_attn_layer_norm", "cross_attn": "encoder_attn_layer_norm", "ffn": "final_layer_norm"}


class _ForwardState:
    """What one layer forward remembers between its sublayers: its input, its padding mask, which sublayer is next.

    A plain object, not attributes of the scheme: ``nn.Module.__setattr__`` checks every assignment against the
    module's parameters, buffers and submodules, and these are assigned several times per layer and decoding step;
    that bookkeeping made an 18-18 beam search 1.7% slower than vanilla fairseq's (BENCHMARKS.md, "Cost").
    """

    __slots__ = ("active", "next", "layer_input", "padding_mask")

    def __init__(self):
        self.active: Sequence[int] = ()
        self.next = 0
        self.layer_input: Optional[Tensor] = None
        self.padding_mask: Optional[Tensor] = None


class StackCarry:
    """State the layers of one stack hand to each other beside x, and that the stack's final step reads (ResiDual's
    second residual stream). One plain object per stack (for the reason of :class:`_ForwardState`), shared by the
    stack's layer schemes and its final step; emptied by :meth:`reset` when a stack forward starts, so nothing of an
    earlier forward (or decoding step) is seen, and by the final step once read, so no tensor outlives its forward."""

    __slots__ = ("stream",)

    def __init__(self):
        self.stream: Optional[Tensor] = None

    def reset(self) -> None:
        self.stream = None


class ResidualScheme(nn.Module):
    """How one Transformer layer joins each sublayer's branch ``f(x)`` to its shortcut ``x``.

    One instance lives in every layer (``layer.residual``). ``sublayers`` names the layer's residual sublayers in
    order: ``("self_attn", "ffn")`` in the encoder, ``("self_attn", "cross_attn", "ffn")`` in the decoder.
    """

    name: ClassVar[str] = "postln"
    paper: ClassVar[str] = "Vaswani et al. 2017 (fairseq's default)"
    formula: ClassVar[str] = "x_{i+1} = LN(x_i + f_i(x_i))"
    #: Pre-LN puts the LayerNorm inside the branch; fairseq builds that (and the final LN) from this flag. The
    #: default placement of every layer (see :meth:`pre_norm`).
    normalize_before: ClassVar[bool] = False
    #: the ``--layer-init`` this scheme's official code used (fairseq_admin/modules/layer_init.py), its default
    official_layer_init: ClassVar[str] = "fairseq"

    def __init__(self, cfg, sublayers: Sequence[str], num_layers: int, embed_dim: int, layer_index: int = 0,
                 carry: Optional[StackCarry] = None):
        super().__init__()
        self.cfg = cfg
        self.sublayers = tuple(sublayers)
        self.stack = "decoder" if "cross_attn" in self.sublayers else "encoder"
        self.num_layers = num_layers
        self.layer_index = layer_index
        self.embed_dim = embed_dim
        self.carry = carry
        self._all_sublayers = tuple(range(len(self.sublayers)))
        self._forward = _ForwardState()

    @property
    def depth(self) -> int:
        """l, the 1-based index of this layer in its stack (the l of DS-Init and LayerNorm Scaling)."""
        return self.layer_index + 1

    # ---- options -------------------------------------------------------------------------------------------------
    @staticmethod
    def add_args(parser) -> None:
        """Add this scheme's command-line options (called once for every registered scheme)."""

    @classmethod
    def option_names(cls) -> Dict[str, str]:
        """{"--option": "dest"} of the options :meth:`add_args` adds (to refuse them under another scheme)."""
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_args(parser)
        return {action.option_strings[0]: action.dest for action in parser._actions}

    @classmethod
    def check_args(cls, args) -> None:
        """Raise ValueError at start-up for option combinations this scheme cannot honour."""

    @classmethod
    def requires_profiling(cls, args) -> bool:
        """True when the model must be profiled on a training batch before its first update (Admin)."""
        return False

    @classmethod
    def configure(cls, args) -> None:
        """Set the fairseq options this scheme implies, before fairseq builds the model. Default: fairseq's
        ``--encoder/decoder-normalize-before`` from :attr:`normalize_before` (it builds each stack's final LN)."""
        if cls.normalize_before:
            args.encoder_normalize_before = args.decoder_normalize_before = True

    # ---- the normalization modules ---------------------------------------------------------------------------------
    @classmethod
    def build_norm(cls, cfg, dim: int, role: str, eps: float = 1e-5) -> nn.Module:
        """The normalization module for ``role`` (one of :data:`NORM_ROLES`), used for every norm of the model.
        Default: the model's ``--norm`` (fairseq_admin/modules/norms.py); with ``layernorm`` (the default) fairseq's
        ``LayerNorm`` (y = (x − mean) / sqrt(var + eps) · γ + β), exactly what fairseq builds."""
        if getattr(cfg, "norm", None) in (None, "layernorm"):
            from fairseq.modules import LayerNorm  # here: importing the schemes does not import fairseq

            return LayerNorm(dim, eps=eps, export=cfg.export)
        from fairseq_admin.modules import norms  # here too: fairseq_admin.modules imports the schemes

        return norms.build(cfg, dim, role, eps)

    def build_sublayer_norm(self, sublayer: int) -> nn.Module:
        """The module in fairseq's norm slot of ``sublayer``: applied to the sublayer's input under Pre-LN, to the
        join under Post-LN. Default: :meth:`build_norm` of the sublayer's role."""
        return self.build_norm(self.cfg, self.embed_dim, self.sublayers[sublayer])

    def pre_norm(self) -> bool:
        """This layer's placement: True for Pre-LN (the norm is the sublayer's input transform), False for Post-LN
        (the norm follows the join). Default: the scheme's :attr:`normalize_before` for every layer."""
        return self.normalize_before

    # ---- the math ------------------------------------------------------------------------------------------------
    def combine(self, sublayer: int, branch: Tensor, shortcut: Tensor) -> Tensor:
        """Return what the sublayer's LayerNorm receives (Post-LN) or the sublayer's output (Pre-LN)."""
        return shortcut + branch

    def branch_term(self, sublayer: int, branch: Tensor) -> Tensor:
        """f_i as :meth:`combine` adds it to the sum, read by the diagnostics' β = Var(f_i) / (Var(s_i) + Var(f_i))
        (fairseq_admin/diagnostics.py). Default: the branch itself; a scheme whose join scales the branch (ReZero's
        α·f) returns the scaled one."""
        return branch

    def init_layer(self, layer: nn.Module) -> None:
        """Change the freshly built layer's initialization, after ``--layer-init`` (default: nothing more)."""

    # ---- the stack and the model ----------------------------------------------------------------------------------
    @classmethod
    def new_carry(cls, cfg, stack: str) -> Optional[StackCarry]:
        """The state object the layers of ``stack`` share (see :class:`StackCarry`), or None (default: none)."""
        return None

    @classmethod
    def build_stack_final(cls, cfg, stack: str, dim: int, carry: Optional[StackCarry],
                          fairseq_final: bool) -> Optional[nn.Module]:
        """The stack's last step, applied to the last layer's output in place of fairseq's ``layer_norm``.
        ``fairseq_final``: whether fairseq built a final norm (Pre-LN, unless ``--no-decoder-final-norm``).
        Default: that norm, from :meth:`build_norm`, or nothing."""
        return cls.build_norm(cfg, dim, "final") if fairseq_final else None

    @classmethod
    def init_model(cls, model: nn.Module) -> None:
        """Model-wide initialization once the whole model is built (default: nothing)."""

    # ---- bookkeeping used by the layers --------------------------------------------------------------------------
    def begin(self, layer_input: Tensor, padding_mask: Optional[Tensor], skip: Sequence[str] = ()) -> None:
        """Called at the start of the layer's forward. ``padding_mask`` is (batch, time), True at padding."""
        state = self._forward
        state.active = tuple(i for i, s in enumerate(self.sublayers) if s not in skip) if skip else self._all_sublayers
        state.next = 0
        state.layer_input = layer_input
        state.padding_mask = padding_mask

    def connect(self, branch: Tensor, shortcut: Tensor) -> Tensor:
        """The layer's ``residual_connection``: routes the call to :meth:`combine` with the sublayer's index."""
        state = self._forward
        index = state.active[state.next]
        state.next += 1
        out = self.combine(index, branch, shortcut)
        if state.next == len(state.active):  # last sublayer: drop references to this forward's tensors
            state.layer_input = state.padding_mask = None
        return out

    @property
    def layer_input(self) -> Optional[Tensor]:
        """The current layer forward's input x (B2T's bottom-to-top connection adds it)."""
        return self._forward.layer_input

    @property
    def padding_mask(self) -> Optional[Tensor]:
        """The current layer forward's (batch, time) padding mask, True at padding."""
        return self._forward.padding_mask

    def token_mask(self, like: Tensor) -> Optional[Tensor]:
        """(time, batch, 1) boolean mask of real tokens for a (time, batch, dim) tensor, or None if no padding."""
        if self.padding_mask is None:
            return None
        return (~self.padding_mask.to(torch.bool)).transpose(0, 1).unsqueeze(-1).expand_as(like)

    def extra_repr(self) -> str:
        return f"{self.name}, sublayers={self.sublayers}, num_layers={self.num_layers}, layer_index={self.layer_index}"
