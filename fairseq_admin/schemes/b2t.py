"""B2T connection (Takase et al., ACL Findings 2023): a bottom-to-top shortcut in every Post-LN layer.

    encoder:  h  = LN(x + SelfAttn(x));                              out = LN(x + h  + FFN(h))
    decoder:  h1 = LN(x + SelfAttn(x));  h2 = LN(h1 + CrossAttn(h1)); out = LN(x + h2 + FFN(h2))

The layer input x skips the inner LayerNorms and joins the input of the layer's last LN, which keeps gradients from
vanishing through a deep stack of LNs.

Initialization, as the official code (a fairseq 0.9 fork, 2023 version) does it: fc1/fc2 start from fairseq 0.9's
``Linear`` (Xavier-uniform weights, zero biases; ``--b2t-ffn-init fairseq`` keeps fairseq main's ``nn.Linear``
default instead), then every weight matrix of a layer, LayerNorms excepted, is multiplied by L^-0.5, L being the
number of layers of that stack (``--no-b2t-init-scale`` skips this).
"""
from torch import Tensor, nn

from .base import FFN_INIT_CHOICES, ResidualScheme, xavier_ffn_


class B2T(ResidualScheme):
    """Post-LN plus the layer input added before the last LayerNorm: out = LN(x + h + FFN(h))."""

    name = "b2t"
    paper = "Takase et al. 2023"
    formula = "out = LN(x + h + FFN(h)), h the output of the attention sublayer(s)"

    def __init__(self, cfg, sublayers, num_layers, embed_dim):
        super().__init__(cfg, sublayers, num_layers, embed_dim)
        self.init_scale = not getattr(cfg, "no_b2t_init_scale", False)
        self.ffn_init = getattr(cfg, "b2t_ffn_init", "xavier")

    @staticmethod
    def add_args(parser):
        parser.add_argument("--no-b2t-init-scale", action="store_true",
                            help="b2t: keep fairseq's initialization instead of the official code's L^-0.5 "
                                 "scaling of every non-LayerNorm weight matrix (L = layers in the stack)")
        parser.add_argument("--b2t-ffn-init", choices=FFN_INIT_CHOICES,
                            help="b2t: fc1/fc2 initialization before the L^-0.5 scaling. 'xavier' (default): "
                                 "Xavier-uniform weights and zero biases, as the official code (fairseq 0.9's "
                                 "Linear); 'fairseq': fairseq main's nn.Linear default")

    @classmethod
    def check_args(cls, args):
        if getattr(args, "b2t_ffn_init", "xavier") not in FFN_INIT_CHOICES:
            raise ValueError(f"unknown --b2t-ffn-init {args.b2t_ffn_init!r}; "
                             f"choose one of {', '.join(FFN_INIT_CHOICES)}")

    def combine(self, sublayer: int, branch: Tensor, shortcut: Tensor) -> Tensor:
        out = shortcut + branch
        if sublayer == len(self.sublayers) - 1:  # the FFN: its LN is the layer's last one
            out = out + self.layer_input
        return out

    def init_layer(self, layer: nn.Module) -> None:
        if self.ffn_init == "xavier":  # the official code's fc1/fc2, drawn before its scaling
            xavier_ffn_(layer)
        if not self.init_scale:
            return
        scale = self.num_layers ** -0.5
        for module in layer.modules():
            if isinstance(module, nn.Linear):  # attention projections, fc1, fc2; LayerNorms are not Linear
                module.weight.data.mul_(scale)
