"""Post-LN (Vaswani et al. 2017), fairseq's default: x_{i+1} = LN(x_i + f_i(x_i))."""
from .base import ResidualScheme


class PostLN(ResidualScheme):
    """x_{i+1} = LN(x_i + f_i(x_i)): the LayerNorm sits on the residual path, after the sum."""

    name = "postln"
    paper = "Vaswani et al. 2017"
    formula = "x_{i+1} = LN(x_i + f_i(x_i))"
