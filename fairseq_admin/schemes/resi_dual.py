"""ResiDual (Xie et al. 2023, "ResiDual: Transformer with Dual Residual Connections"): Post-LN plus a Pre-LN-like
second stream, joined at the top of each stack.

Per sublayer i, one branch output d_i = drop(f_i(x_i)) feeds two streams:

    x_{i+1}   = LN(x_i + d_i)                 the Post-LN stream (fairseq's Post-LN layer, unchanged)
    res_{i+1} = res_i + d_i                    the dual stream; res_1 = the stack's input (the embedding output)
    output    = α · x_N + LN_f(res_N)          in place of the stack's final LayerNorm; α = 1, LN_f's eps = 1e-7

As the official code (microsoft/ResiDual, a fairseq plugin, read at 8682f75) has it:
  * resi_dual/resi_dual_layers.py:35-39 and :49-51 (encoder), :134-136, :162-164, :175-177 (decoder): ``res = res +
    x * scale`` with x the sublayer output after ``dropout_module``, the same x then joins the Post-LN sum;
  * resi_dual/resi_dual.py:107 and :252: ``res = x * scale`` where x is the first layer's input (the embedding
    output, padding zeroed in the encoder, :77-78); :131 and :283: ``x = x * alpha + self.layer_norm(res)``;
    :24 and :157: ``self.layer_norm = LayerNorm(embed_dim, eps=1e-7)``, replacing fairseq's final LayerNorm;
  * :296-300: defaults enc_alpha = dec_alpha = 1.0 and enc/dec_res_input_norm_scale = 1.0 (the scale s above:
    ``x * 1.0`` is x exactly, so it is left out here). Neither is offered as an option.
The layers are fairseq main's (``--layer-init fairseq``, the default). The dual stream lives in the stack's
:class:`~fairseq_admin.schemes.base.StackCarry`; every position only ever adds to its own stream, so incremental
decoding (one position per step) computes exactly what the full forward computes.
"""
from torch import Tensor, nn

from fairseq_admin.errors import OptionError

from .base import ResidualScheme, StackCarry

FINAL_NORM_EPS = 1e-7  # resi_dual/resi_dual.py:24 and :157
ALPHA = 1.0  # resi_dual/resi_dual.py:296-297 (enc_alpha, dec_alpha)


class DualStreamOutput(nn.Module):
    """The stack's last step: α · x_N + LN_f(res_N), res_N the stack's dual stream (read, then released)."""

    def __init__(self, norm: nn.Module, carry: StackCarry, alpha: float = ALPHA):
        super().__init__()
        self.norm = norm
        self.carry = carry
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        res = self.carry.stream if self.carry.stream is not None else x  # no layer ran (LayerDrop): res = x_0 = x
        self.carry.stream = None
        return x * self.alpha + self.norm(res)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class ResiDual(ResidualScheme):
    """Post-LN layers; res += drop(f(x)) beside every join; stack output α·x_N + LN_f(res_N)."""

    name = "resi_dual"
    paper = "Xie et al. 2023"
    formula = "x_{i+1} = LN(x_i + f_i(x_i)), res_{i+1} = res_i + f_i(x_i); output x_N + LN_f(res_N)"

    @classmethod
    def check_args(cls, args):
        if getattr(args, "checkpoint_activations", False):
            raise OptionError("resi_dual: --checkpoint-activations recomputes a layer in the backward pass, after "
                             "the dual stream has moved on; it is not supported")
        if getattr(args, "no_decoder_final_norm", False):
            raise OptionError("resi_dual: the decoder's final step is ResiDual's x_N + LN_f(res_N); "
                             "--no-decoder-final-norm is not supported")

    @classmethod
    def new_carry(cls, cfg, stack):
        return StackCarry()

    @classmethod
    def build_stack_final(cls, cfg, stack, dim, carry, fairseq_final):
        return DualStreamOutput(cls.build_norm(cfg, dim, "final", eps=FINAL_NORM_EPS), carry)

    def combine(self, sublayer: int, branch: Tensor, shortcut: Tensor) -> Tensor:
        carry = self.carry
        res = carry.stream if carry.stream is not None else self.layer_input  # res_1: the first layer's input
        carry.stream = res + branch
        return shortcut + branch
