"""ReZero (Bachlechner et al., UAI 2021, "ReZero is All You Need: Fast Convergence at Large Depth").

No normalization anywhere; each layer l scales its sublayers' outputs by one learnable scalar α_l, initialized to 0,
so that every layer starts as the identity:

    x_{i+1} = x_i + α_l · f_i(x_i)       every sublayer i of layer l (self-attention, cross-attention, FFN)

Official code (majumderb/rezero at e2c94a8, ``rezero/transformer/rztx.py``):

* one α per layer, shared by its sublayers, 0 at init: ``self.resweight = nn.Parameter(torch.Tensor([0]))``, once
  in the encoder layer (:47) and once in the decoder layer (:115);
* encoder: ``src2 = src2 * self.resweight; src = src + self.dropout1(src2)`` after the self-attention (:74-75) and
  the same after the FFN (:80-81);
* decoder: ``tgt = tgt + self.dropout1(tgt2) * self.resweight`` after the self-attention (:139), the
  cross-attention (:142, ``dropout2``) and the FFN (:148, ``dropout3``): the cross-attention is scaled too;
* no norm: neither layer builds one, and the README (:54) says to leave the ``norm`` of PyTorch's
  ``nn.TransformerEncoder``/``nn.TransformerDecoder`` as None, so no stack has a final norm;
* initialization: rztx.py sets nothing but α; its layers are PyTorch's ``nn.MultiheadAttention`` and ``nn.Linear``
  (:40-44, :105-110) with their own defaults, which ``--layer-init pytorch`` reproduces (our default here,
  fairseq_admin/modules/layer_init.py).

Where the dropout sits: the encoder scales before its dropout, dropout(α·f), the decoder after, α·dropout(f). The
value is the same (dropout multiplies each entry by a mask value and 1/(1 − p); a scalar commutes with that), only
the rounding of one product may differ. fairseq drops a sublayer's output out before ``residual_connection``, so
ours is α·dropout(f) in both stacks, the decoder's order.

Hyperparameters of the official layers that are fairseq options here: its one ``dropout`` is also the attention
dropout (``nn.MultiheadAttention(..., dropout=dropout)``, :40, :105-106) and the FFN's inner dropout (:43, :79,
:145); ``--attention-dropout P --activation-dropout P`` beside ``--dropout P`` give that (fairseq's defaults are 0).

Ours: ``build_norm`` is ``nn.Identity`` for every role, and the layers are Post-LN (``pre_norm`` False), so fairseq
builds no final norm and its norm slots hold identities; ``--layernorm-embedding`` and a ``--norm`` other than
layernorm are refused at start-up, as are ``--encoder/decoder-normalize-before`` (for every Post-LN scheme). α is one
``nn.Parameter`` on the layer's scheme (``layer.residual``), so one per layer: its state-dict key is
``{encoder,decoder}.layers.<l>.residual.alpha``. It is 0-dimensional (the official one has shape (1,)) so that
α·f keeps the activations' dtype under ``--fp16``/``--bf16``; the parameter itself stays float32 there, as Admin's ω
does (see :meth:`ReZero._apply`). fairseq's optimizers apply ``--weight-decay`` to every parameter, α included (so
does a torch optimizer on the official model unless given parameter groups): decay pulls α towards 0, the identity.
The join is one ``torch.addcmul``.
"""
import torch
from torch import Tensor, nn

from fairseq_admin.errors import OptionError

from .base import ResidualScheme


class ReZero(ResidualScheme):
    """x_{i+1} = x_i + α_l·f_i(x_i), one learnable α per layer (0 at init), no normalization."""

    name = "rezero"
    paper = "Bachlechner et al. 2021"
    formula = "x_{i+1} = x_i + alpha_l * f_i(x_i), alpha_l learned per layer from 0, no LayerNorm"
    official_layer_init = "pytorch"  # rztx.py builds PyTorch's nn.MultiheadAttention and nn.Linear

    def __init__(self, cfg, sublayers, num_layers, embed_dim, **position):
        super().__init__(cfg, sublayers, num_layers, embed_dim, **position)
        self.alpha = nn.Parameter(torch.zeros(()))  # α_l, shared by the layer's sublayers (rztx.py:47, :115)

    @classmethod
    def check_args(cls, args):
        if getattr(args, "layernorm_embedding", False):
            raise OptionError("rezero has no normalization (majumderb/rezero: no LayerNorm in its layers, README: "
                              "norm=None); remove --layernorm-embedding")
        norm = getattr(args, "norm", None)
        if norm not in (None, "layernorm"):
            raise OptionError(f"rezero has no normalization to replace; remove --norm {norm}")

    @classmethod
    def build_norm(cls, cfg, dim, role, eps=1e-5):
        return nn.Identity()

    def combine(self, sublayer: int, branch: Tensor, shortcut: Tensor) -> Tensor:
        return torch.addcmul(shortcut, branch, self.alpha)  # x + α·f, in the activations' dtype

    def branch_term(self, sublayer: int, branch: Tensor) -> Tensor:
        return branch * self.alpha.detach()  # what the join adds: β is of α·f (0 at init: each layer starts as the identity)

    def _apply(self, fn, *args, **kwargs):
        """``model.half()`` / ``.bfloat16()`` / ``.to(dtype)`` leave α in float32: with ``--memory-efficient-*``
        (no float32 master copy) a 16-bit α would lose every update smaller than its rounding step (2^-8 of α in
        bf16). Device moves and float64 casts apply as usual."""
        kept = self.alpha.detach().clone()
        result = super()._apply(fn, *args, **kwargs)
        if self.alpha.dtype in (torch.float16, torch.bfloat16):
            self.alpha.data = kept.to(device=self.alpha.device, dtype=torch.float32)
        return result


__all__ = ["ReZero"]
