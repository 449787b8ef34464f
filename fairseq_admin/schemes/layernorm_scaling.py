"""LayerNorm Scaling (Sun et al. 2025, "The Curse of Depth in Large Language Models", arXiv 2502.05795): Pre-LN
whose norm output, before each sublayer of layer l, is scaled down by the square root of the layer's depth.

    x_{i+1} = x_i + f_i(LN(x_i) / √l),   l = 1, 2, ... the layer's 1-based index in its stack

with Pre-LN's final LayerNorm per stack. The official code (lmsdss/LayerNorm-Scaling, read at 3ac54dd,
peft_pretraining/modeling_llama.py, ``NORM_TYPE=LNS``): :429-433 ``hidden_states = self.input_layernorm(
hidden_states); scale_factor = 1 / math.sqrt(self.layer_index + 1); hidden_states = scale_factor * hidden_states``
before the attention, :446-450 the same with ``post_attention_layernorm`` before the MLP, :443 and :453 the residual
sums unchanged; the model's final norm is applied as in Pre-LN (:968, :1116). The scale is a Python float, so the
product is rounded once in the activations' dtype, as here. (At that commit the branch cannot be reached as written:
``NORM_TYPE`` is lower-cased (:265, :403) and then compared with 'LNS' (:292, :427); the rule is the one the branch
states, which is the paper's.) The initialization stays fairseq's: the official README advises against combining
LNS with a depth-scaled initialization.

Export: LN(x)·s = x̂·(sγ) + sβ, so the scale folds into each pre-norm's γ and β (fairseq_admin/cli/export.py) and the
model becomes stock fairseq's Pre-LN Transformer.
"""
import math

from torch import Tensor, nn

from .base import ResidualScheme


class ScaledNorm(nn.Module):
    """norm(x) · scale, ``scale`` a constant Python float (not a parameter: it is set by the layer's depth)."""

    def __init__(self, norm: nn.Module, scale: float):
        super().__init__()
        self.norm = norm
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}"


def lns_scale(depth: int) -> float:
    """1/√l as the official code computes it (modeling_llama.py:432): ``1 / math.sqrt(layer_index + 1)``."""
    return 1 / math.sqrt(depth)


class LayerNormScaling(ResidualScheme):
    """x_{i+1} = x_i + f_i(LN(x_i)/√l); final LN per stack."""

    name = "lns"
    paper = "Sun et al. 2025"
    formula = "x_{i+1} = x_i + f_i(LN(x_i) / sqrt(l)), l the layer's depth; final LN per stack"
    normalize_before = True

    def build_sublayer_norm(self, sublayer: int) -> nn.Module:
        return ScaledNorm(super().build_sublayer_norm(sublayer), lns_scale(self.depth))
