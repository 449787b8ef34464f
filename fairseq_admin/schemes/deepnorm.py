"""DeepNorm (Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers").

Post-LN with an up-weighted shortcut and down-scaled initial weights (the paper's DeepNorm, §2.3 and Fig. 2):

    x_{i+1} = LN(α · x_i + f_i(x_i))

Initialization (Fig. 2 pseudo-code): Xavier-normal with gain β for the FFN (fc1, fc2), the value projection and the
output projection of every attention (self-attention, and the decoder's cross-attention); Xavier-normal with gain 1
for the query and key projections. Biases and LayerNorms keep fairseq's initialization (the pseudo-code names weight
matrices only): q/k/v biases keep ``nn.Linear``'s uniform(±1/sqrt(fan_in)), ``out_proj.bias`` stays 0 (fairseq's
``MultiheadAttention.reset_parameters``), fc1/fc2 biases keep ``nn.Linear``'s default.

Constants for an encoder-decoder with N encoder and M decoder layers (Fig. 2's table, derived in §4):

    encoder:  α = 0.81 · (N⁴M)^(1/16)      β = 0.87 · (N⁴M)^(-1/16)
    decoder:  α = (3M)^(1/4)               β = (12M)^(-1/4)

α is a constant, kept as a Python float (not a parameter, not a buffer): it is not learned, it is fully determined
by the configuration saved in every checkpoint (so nothing extra goes into the state dict, and old checkpoints load
unchanged), and ``.half()``/``.bfloat16()`` cannot touch it. ``tensor * python_float`` is computed by PyTorch in the
tensor's "opmath" type (float32 for fp16/bf16 tensors) with the scalar at full precision, then rounded once, so the
product α·x_i is the correctly rounded value of the exact product in every training precision.

Where torchscale (microsoft/torchscale, ``deepnorm=True``) differs: its ``MultiheadAttention.reset_parameters`` is never
called (torchscale/component/multihead_attention.py:61), so every projection keeps ``nn.Linear``'s default init (and
out_proj a nonzero bias); it then divides every parameter
whose name contains fc1, fc2, out_proj or v_proj — biases included — by a scale; on the encoder side of an
encoder-decoder that scale is (N⁴M)^(1/16) / 1.15, i.e. a factor 1.15·(N⁴M)^(-1/16) instead of the paper's
0.87·(N⁴M)^(-1/16) gain on a Xavier-normal init (torchscale/architecture/encoder.py:235-252); on the decoder side the
factor is (12M)^(-1/4), as in the paper, applied to the default init (decoder.py:286-298). α is the same. We follow the
paper; ``--layer-init fairseq-0.9`` gives Transformer-Clinic's ``--init-type deepnet`` (the paper, all biases zero).
"""
import math

from torch import Tensor, nn

from fairseq_admin.errors import OptionError

from .base import ResidualScheme


def deepnorm_constants(num_encoder_layers: int, num_decoder_layers: int, stack: str):
    """(α, β) of DeepNorm for an encoder-decoder with N encoder and M decoder layers, for ``stack``
    ("encoder" or "decoder")."""
    n, m = num_encoder_layers, num_decoder_layers
    if stack == "encoder":
        return 0.81 * (n ** 4 * m) ** (1 / 16), 0.87 * (n ** 4 * m) ** (-1 / 16)
    if stack == "decoder":
        return (3 * m) ** (1 / 4), (12 * m) ** (-1 / 4)
    raise OptionError(f"stack must be 'encoder' or 'decoder', not {stack!r}")


class DeepNorm(ResidualScheme):
    """x_{i+1} = LN(α·x_i + f_i(x_i)); fc1/fc2/v_proj/out_proj Xavier-normal with gain β, q/k with gain 1."""

    name = "deepnorm"
    paper = "Wang et al. 2022"
    formula = "x_{i+1} = LN(alpha * x_i + f_i(x_i)), Xavier-normal init with gain beta"

    def __init__(self, cfg, sublayers, num_layers, embed_dim, **position):
        super().__init__(cfg, sublayers, num_layers, embed_dim, **position)
        self.alpha, self.beta = deepnorm_constants(cfg.encoder.layers, cfg.decoder.layers, self.stack)

    @classmethod
    def check_args(cls, args):
        if getattr(args, "norm", None) == "dyt":
            raise OptionError("deepnorm cannot take --norm dyt: its alpha and beta (Wang et al. 2022, Sec. 4) bound "
                              "the model update because the norm of LN(alpha*x + f) divides the sum's scale back "
                              "out, as LayerNorm and RMSNorm do (N(c*v) = N(v)); DyT's tanh is not scale-invariant "
                              "and alpha*x would saturate it: use --norm layernorm or rmsnorm")
        if getattr(args, "no_cross_attention", False):
            raise OptionError("deepnorm: its constants are the encoder-decoder ones (Wang et al. 2022, Fig. 2); "
                             "--no-cross-attention is not supported")

    def combine(self, sublayer: int, branch: Tensor, shortcut: Tensor) -> Tensor:
        return shortcut * self.alpha + branch

    def init_layer(self, layer: nn.Module) -> None:
        attentions = [layer.self_attn, getattr(layer, "encoder_attn", None)]
        for attn in filter(None, attentions):
            nn.init.xavier_normal_(attn.q_proj.weight, gain=1.0)
            nn.init.xavier_normal_(attn.k_proj.weight, gain=1.0)
            nn.init.xavier_normal_(attn.v_proj.weight, gain=self.beta)
            nn.init.xavier_normal_(attn.out_proj.weight, gain=self.beta)
        nn.init.xavier_normal_(layer.fc1.weight, gain=self.beta)
        nn.init.xavier_normal_(layer.fc2.weight, gain=self.beta)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha:.6g}, beta={self.beta:.6g}"


__all__ = ["DeepNorm", "deepnorm_constants"]
