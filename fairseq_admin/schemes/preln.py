"""Pre-LN (Xiong et al., ICML 2020): x_{i+1} = x_i + f_i(LN(x_i)), plus a final LN after each stack.

fairseq implements this layout when ``normalize_before`` is set (the LN moves into the branch and the encoder and
decoder each get a final ``layer_norm``); the scheme only has to switch it on. The shortcut is the plain sum.
"""
from .base import ResidualScheme


class PreLN(ResidualScheme):
    """x_{i+1} = x_i + f_i(LN(x_i)); final LN after the last layer (Xiong et al. 2020, Fig. 1b)."""

    name = "preln"
    paper = "Xiong et al. 2020"
    formula = "x_{i+1} = x_i + f_i(LN(x_i)), final LN per stack"
    normalize_before = True
