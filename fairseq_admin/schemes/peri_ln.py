"""Peri-LN (Kim et al., ICML 2025, "Peri-LN: Revisiting Normalization Layer in the Transformer Architecture",
arXiv 2502.02732): a LayerNorm around every sublayer, on its input and on its output.

    x_{i+1} = x_i + LN_out(f_i(LN_in(x_i)))       every sublayer (the decoder's cross-attention too)
    x_0 = LN_emb(embedding),   output = LN_final(x_N)

the pattern of Sandwich-LN (CogView) and Gemma 2/3. With ``--peri-ln-output-only`` the input norm goes (OLMo 2's
and Swin v2's "res-post-norm"): x_{i+1} = x_i + LN_out(f_i(x_i)), and the embedding norm with it (neither model has
one; ``--layernorm-embedding`` adds it back); the final LN stays.

There is no official code (the ICML 2025 reproducibility card: "Open Source Code: No"), so this follows the paper's
equations. LN_in is fairseq's Pre-LN norm (``normalize_before``), LN_final fairseq's Pre-LN final norm, LN_emb
fairseq's ``--layernorm-embedding``; LN_out is one new norm per sublayer (``residual.output_norms``). fairseq
applies dropout to the sublayer output before the residual join, so the output norm sees the dropped-out output:
LN_out(drop(f)), as Sandwich-LN in CogView and Swin v2's res-post-norm place theirs (after the attention's output
dropout); the paper's LLMs have no dropout, so it does not say.
"""
from torch import Tensor, nn

from .base import ResidualScheme


class PeriLN(ResidualScheme):
    """x_{i+1} = x_i + LN_out(f_i(LN_in(x_i))); LN on the embedding and after the last layer."""

    name = "peri_ln"
    paper = "Kim et al. 2025"
    formula = "x_{i+1} = x_i + LN_out(f_i(LN_in(x_i))), embedding and final LN"
    normalize_before = True

    def __init__(self, cfg, sublayers, num_layers, embed_dim, **position):
        super().__init__(cfg, sublayers, num_layers, embed_dim, **position)
        self.output_only = bool(getattr(cfg, "peri_ln_output_only", False))
        self.output_norms = nn.ModuleList(self.build_norm(cfg, embed_dim, f"{s}_output") for s in self.sublayers)

    @staticmethod
    def add_args(parser):
        parser.add_argument("--peri-ln-output-only", action="store_true",
                            help="peri_ln: the output norm only, x + LN(f(x)) (OLMo 2, Swin v2), without the "
                                 "input norm and the embedding norm; the final norm stays")

    @classmethod
    def configure(cls, args):
        super().configure(args)
        if not getattr(args, "peri_ln_output_only", False):
            args.layernorm_embedding = True

    def build_sublayer_norm(self, sublayer: int) -> nn.Module:
        if self.output_only:  # nothing before the sublayer; the norm slot stays (fairseq calls it), as an identity
            return nn.Identity()
        return super().build_sublayer_norm(sublayer)

    def combine(self, sublayer: int, branch: Tensor, shortcut: Tensor) -> Tensor:
        return shortcut + self.output_norms[sublayer](branch)

    def branch_term(self, sublayer: int, branch: Tensor) -> Tensor:
        return self.output_norms[sublayer](branch)  # what the join adds: LN_out(f)
