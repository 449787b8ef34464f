"""Mix-LN (Li et al., ICLR 2025, "Mix-LN: Unleashing the Power of Deeper Layers by Combining Pre-LN and Post-LN"):
the first ⌊αL⌋ layers of a stack are Post-LN, the others Pre-LN, and the stack ends with a final LayerNorm.

    layer l < ⌊αL⌋ (0-based):  x_{i+1} = LN(x_i + f_i(x_i))
    layer l ≥ ⌊αL⌋:            x_{i+1} = x_i + f_i(LN(x_i))
    output = LN_final(x_L)

As the official code (pixeli99/MixLN, read at ff45826, peft_pretraining/modeling_llama.py, ``NORM_TYPE=post_pre``)
has it: :268 ``self.max_post_norm_layer = int(os.getenv('POST_NUM', '1'))``; :327 and :566 ``if self.layer_index <
self.max_post_norm_layer``: Post-LN (:568-583), else Pre-LN (:585-601); the model's final norm always (:929,
:1077), after Post-LN layers too. POST_NUM is a count; the paper's α is the fraction, here per stack: ⌊α·N⌋ encoder
and ⌊α·M⌋ decoder layers Post-LN. Default α = 0.25: the official scripts' settings, POST_NUM=3 for the 12-layer
71M and 130M models and 6 for the 24-layer 250M and 1B models (README; configs/llama_*.json
``num_hidden_layers``), i.e. a quarter of the layers. The layers keep fairseq's initialization.
"""
import math

from fairseq_admin.errors import OptionError

from .base import ResidualScheme

DEFAULT_ALPHA = 0.25


def post_ln_layers(alpha: float, num_layers: int) -> int:
    """⌊α·L⌋, the number of Post-LN layers at the bottom of an L-layer stack."""
    return math.floor(alpha * num_layers)


class MixLN(ResidualScheme):
    """Post-LN for the first ⌊αL⌋ layers of each stack, Pre-LN above them, final LN per stack."""

    name = "mix_ln"
    paper = "Li et al. 2025"
    formula = "layers l < floor(alpha*L): x_{i+1} = LN(x_i + f_i(x_i)); others: x_{i+1} = x_i + f_i(LN(x_i)); final LN"
    normalize_before = True  # fairseq then builds each stack's final LayerNorm; the placement is per layer below

    @staticmethod
    def add_args(parser):
        parser.add_argument("--mix-ln-alpha", type=float, metavar="A",
                            help=f"mix_ln: the fraction of each stack's layers, counted from the bottom, that are "
                                 f"Post-LN: floor(A*layers) of them (default {DEFAULT_ALPHA}, the paper's)")

    @classmethod
    def check_args(cls, args):
        alpha = getattr(args, "mix_ln_alpha", None)
        if alpha is not None and not 0 <= alpha <= 1:
            raise OptionError(f"--mix-ln-alpha must be in [0, 1], got {alpha}")

    def pre_norm(self) -> bool:
        alpha = getattr(self.cfg, "mix_ln_alpha", None)
        return self.layer_index >= post_ln_layers(DEFAULT_ALPHA if alpha is None else alpha, self.num_layers)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {'Pre' if self.pre_norm() else 'Post'}-LN"
