"""B2T connection (Takase et al., ACL Findings 2023): a bottom-to-top shortcut in every Post-LN layer.

    encoder:  h  = LN(x + SelfAttn(x));                              out = LN(x + h  + FFN(h))
    decoder:  h1 = LN(x + SelfAttn(x));  h2 = LN(h1 + CrossAttn(h1)); out = LN(x + h2 + FFN(h2))

The layer input x skips the inner LayerNorms and joins the input of the layer's last LN, which keeps gradients from
vanishing through a deep stack of LNs.

Initialization, as the official code (takase/b2t_connection, a fairseq fork after 0.9) does it: fairseq main's
build (``--layer-init fairseq``, the default: its ``build_fc1/build_fc2`` return plain ``nn.Linear``,
fairseq/modules/transformer_layer.py:59-63 and 219-223), then ``rescaling_init`` multiplies every parameter of the
layer whose name contains "weight" and not "layer_norm" by L^-0.5 (fairseq/modules/transformer_layer.py:401-405),
L being the number of layers of that stack (``--no-b2t-init-scale`` skips this). Biases stay as drawn.
"""
from torch import Tensor, nn

from .base import ResidualScheme


class B2T(ResidualScheme):
    """Post-LN plus the layer input added before the last LayerNorm: out = LN(x + h + FFN(h))."""

    name = "b2t"
    paper = "Takase et al. 2023"
    formula = "out = LN(x + h + FFN(h)), h the output of the attention sublayer(s)"

    def __init__(self, cfg, sublayers, num_layers, embed_dim, **position):
        super().__init__(cfg, sublayers, num_layers, embed_dim, **position)
        self.init_scale = not getattr(cfg, "no_b2t_init_scale", False)

    @staticmethod
    def add_args(parser):
        parser.add_argument("--no-b2t-init-scale", action="store_true",
                            help="b2t: keep fairseq's initialization instead of the official code's L^-0.5 "
                                 "scaling of every non-LayerNorm weight matrix (L = layers in the stack)")
        parser.add_argument("--b2t-ffn-init", choices=("xavier", "fairseq"),
                            help="deprecated, replaced by --layer-init (xavier: fairseq-0.9, fairseq: fairseq)")

    def combine(self, sublayer: int, branch: Tensor, shortcut: Tensor) -> Tensor:
        out = shortcut + branch
        if sublayer == len(self.sublayers) - 1:  # the FFN: its LN is the layer's last one
            out = out + self.layer_input
        return out

    def init_layer(self, layer: nn.Module) -> None:
        if not self.init_scale:
            return
        scale = self.num_layers ** -0.5
        for module in layer.modules():
            if isinstance(module, nn.Linear):  # attention projections, fc1, fc2; LayerNorms are not Linear
                module.weight.data.mul_(scale)  # weights only: "weight" in the name, biases untouched
