"""The seam every stabilization scheme plugs into.

fairseq's Transformer layers call ``residual_connection(x, residual)`` once per sublayer, right before the Post-LN
LayerNorm (or, with ``normalize_before``, as the whole residual step). A scheme decides what that call returns:

    Post-LN (Vaswani et al. 2017):  x_{i+1} = LN(x_i + f_i(x_i))

Subclasses override :meth:`combine` (the math), :meth:`init_layer` (initialization changes) and, when they have
options, :meth:`add_args` / :meth:`check_args`. Nothing else of fairseq's layer is forked.
"""
import argparse
from typing import ClassVar, Dict, Optional, Sequence

import torch
from torch import Tensor, nn


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


class ResidualScheme(nn.Module):
    """How one Transformer layer joins each sublayer's branch ``f(x)`` to its shortcut ``x``.

    One instance lives in every layer (``layer.residual``). ``sublayers`` names the layer's residual sublayers in
    order: ``("self_attn", "ffn")`` in the encoder, ``("self_attn", "cross_attn", "ffn")`` in the decoder.
    """

    name: ClassVar[str] = "postln"
    paper: ClassVar[str] = "Vaswani et al. 2017 (fairseq's default)"
    formula: ClassVar[str] = "x_{i+1} = LN(x_i + f_i(x_i))"
    #: Pre-LN puts the LayerNorm inside the branch; fairseq builds that (and the final LN) from this flag.
    normalize_before: ClassVar[bool] = False
    #: the ``--layer-init`` this scheme's official code used (fairseq_admin/modules/layer_init.py), its default
    official_layer_init: ClassVar[str] = "fairseq"

    def __init__(self, cfg, sublayers: Sequence[str], num_layers: int, embed_dim: int):
        super().__init__()
        self.sublayers = tuple(sublayers)
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self._all_sublayers = tuple(range(len(self.sublayers)))
        self._forward = _ForwardState()

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

    # ---- the math ------------------------------------------------------------------------------------------------
    def combine(self, sublayer: int, branch: Tensor, shortcut: Tensor) -> Tensor:
        """Return what the sublayer's LayerNorm receives (Post-LN) or the sublayer's output (Pre-LN)."""
        return shortcut + branch

    def init_layer(self, layer: nn.Module) -> None:
        """Change the freshly built layer's initialization, after ``--layer-init`` (default: nothing more)."""

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
        return f"{self.name}, sublayers={self.sublayers}, num_layers={self.num_layers}"
