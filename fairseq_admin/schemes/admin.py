"""Admin (Liu et al., EMNLP 2020, "Understanding the Difficulty of Training Transformers").

Post-LN with a rescaled shortcut (their Eq. 7):

    x_{i+1} = LN(x_i · ω_i + f_i(x_i))

ω_i is a learnable per-dimension vector (the official ``--init-type adaptive``) or, as an option, a fixed scalar
buffer. Its initial value comes from one of:

* ``profile`` (default): Admin's profiling on a real training batch, done by the model at its first training
  forward under any task (see ``fairseq_admin/profiling.py``): ω_1 = 1, ω_{i+1} = sqrt(Var(x_i·ω_i) + Var(f_i(x_i))).
* a closed form from admin-torch's ``calculate_init(n, output_change_scale)``, n = residual sublayers in the stack
  (2N for an N-layer encoder, 3M for an M-layer decoder):
      O(logn):  ω = sqrt((n + 1) / ln(n + 1) − 1)    (admin-torch's default)
      O(1):     ω = sqrt(n)
      O(n):     ω = 1                                  (plain Post-LN)

Initialization: the official code (Transformer-Clinic) is a fairseq 0.9 fork, so the default ``--layer-init`` is
``fairseq-0.9`` (fairseq_admin/modules/layer_init.py): Xavier-uniform fc1/fc2 with zero biases and zero q/k/v/out_proj
biases. It is drawn before ω is profiled, so ω is profiled on it.
"""
import math

import torch
from torch import Tensor, nn

from fairseq_admin.errors import OptionError

from .base import ResidualScheme

CLOSED_FORMS = {
    "O(logn)": lambda n: math.sqrt((n + 1) / math.log(n + 1) - 1),
    "O(1)": lambda n: math.sqrt(n),
    "O(n)": lambda n: 1.0,
}
INIT_CHOICES = ("profile",) + tuple(CLOSED_FORMS)
PROFILE_TOKENS = ("real", "all")


def closed_form_omega(num_residual_sublayers: int, output_change: str) -> float:
    """admin-torch's ``calculate_init``: ω for a stack of ``num_residual_sublayers`` residual sublayers."""
    if output_change not in CLOSED_FORMS:
        raise OptionError(f"unknown --admin-init {output_change!r}; choose one of {', '.join(INIT_CHOICES)}")
    return CLOSED_FORMS[output_change](num_residual_sublayers)


class Admin(ResidualScheme):
    """x_{i+1} = LN(x_i · ω_i + f_i(x_i)), ω_i profiled (or closed form) before training."""

    name = "admin"
    paper = "Liu et al. 2020"
    formula = "x_{i+1} = LN(x_i * omega_i + f_i(x_i))"
    official_layer_init = "fairseq-0.9"  # Transformer-Clinic is a fairseq 0.9 fork

    def __init__(self, cfg, sublayers, num_layers, embed_dim, **position):
        super().__init__(cfg, sublayers, num_layers, embed_dim, **position)
        init = getattr(cfg, "admin_init", "profile")
        value = 1.0 if init == "profile" else closed_form_omega(len(sublayers) * num_layers, init)
        if getattr(cfg, "admin_omega", "vector") == "vector":
            self.omega = nn.Parameter(torch.full((len(sublayers), embed_dim), value))
        else:
            self.register_buffer("omega", torch.full((len(sublayers),), value))
        self.profiler = None  # set by fairseq_admin.profiling while a profiling forward runs
        self.profile_tokens = getattr(cfg, "admin_profile_tokens", None) or "real"

    @staticmethod
    def add_args(parser):
        parser.add_argument("--admin-init", choices=INIT_CHOICES,
                            help="admin: how ω is initialized. 'profile' (default): Admin's profiling on the first "
                                 "training batch, omega_{i+1} = sqrt(Var(x_i*omega_i) + Var(f_i(x_i))), under any "
                                 "task. Closed forms (admin-torch), n = residual sublayers of "
                                 "the stack (2N encoder, 3M decoder): 'O(logn)': sqrt((n+1)/ln(n+1) - 1); "
                                 "'O(1)': sqrt(n); 'O(n)': 1")
        parser.add_argument("--admin-omega", choices=("vector", "scalar"),
                            help="admin: ω as a learnable per-dimension vector (default, the paper's) or a fixed "
                                 "scalar buffer per sublayer")
        parser.add_argument("--admin-profile-save", type=str, metavar="PATH",
                            help="admin: write the profiled ω in Transformer-Clinic's profile.ratio.init format")
        parser.add_argument("--admin-profile-load", type=str, metavar="PATH",
                            help="admin: initialize ω from a profile.ratio.init file (ours or Transformer-Clinic's) "
                                 "instead of profiling; only read when a run starts from scratch")
        parser.add_argument("--admin-profile-tokens", choices=PROFILE_TOKENS,
                            help="admin: which positions each profiled Var counts: 'real' (default) the real tokens; "
                                 "'all' padding too, as the official code's np.var over the whole tensor "
                                 "(Transformer-Clinic fairseq/fairseq/modules/transformer_layer.py:193-194)")
        parser.add_argument("--admin-ffn-init", choices=("xavier", "fairseq"),
                            help="deprecated, replaced by --layer-init (xavier: fairseq-0.9, fairseq: fairseq)")

    @classmethod
    def check_args(cls, args):
        if getattr(args, "encoder_normalize_before", False) or getattr(args, "decoder_normalize_before", False):
            raise OptionError("admin is defined for Post-LN only (Liu et al. 2020): remove "
                             "--encoder-normalize-before/--decoder-normalize-before, or use --residual-scheme preln")
        if getattr(args, "norm", None) == "dyt":
            raise OptionError("admin cannot take --norm dyt: Admin's omega (Liu et al. 2020, Sec. 4: profiled from "
                              "Var(x_i*omega_i) + Var(f_i)) up-weights the shortcut and relies on the norm after the "
                              "join to divide that scale back out, as LayerNorm and RMSNorm do (N(c*v) = N(v)); DyT's "
                              "tanh(alpha*x) is not scale-invariant and saturates instead: use --norm layernorm or "
                              "rmsnorm")
        init = getattr(args, "admin_init", "profile")
        if init not in INIT_CHOICES:
            raise OptionError(f"unknown --admin-init {init!r}; choose one of {', '.join(INIT_CHOICES)}")
        if getattr(args, "admin_omega", "vector") not in ("vector", "scalar"):
            raise OptionError(f"unknown --admin-omega {args.admin_omega!r}; choose 'vector' or 'scalar'")
        if getattr(args, "no_cross_attention", False):
            # Transformer-Clinic builds an Admin decoder layer only with its cross-attention (`assert not
            # no_encoder_attn`, fairseq/fairseq/modules/transformer_layer.py:366 and :425): the profile and the
            # closed forms count 3 residual sublayers per decoder layer
            raise OptionError("admin: --no-cross-attention is not supported (an Admin decoder layer has 3 residual "
                             "sublayers, cross-attention included, as in Transformer-Clinic); remove it")
        if init == "profile" and (getattr(args, "encoder_layerdrop", 0) or getattr(args, "decoder_layerdrop", 0)):
            raise OptionError("--admin-init profile walks every sublayer in order; it cannot run with "
                             "--encoder-layerdrop/--decoder-layerdrop. Use a closed form (--admin-init O(logn)).")

    @classmethod
    def requires_profiling(cls, args) -> bool:
        return getattr(args, "admin_init", "profile") == "profile"

    def combine(self, sublayer: int, branch: Tensor, shortcut: Tensor) -> Tensor:
        if self.profiler is not None:
            self.profiler.observe(self, sublayer, branch, shortcut)
        omega = self.omega[sublayer]
        if shortcut.dtype == branch.dtype == omega.dtype:
            return shortcut * omega + branch
        # Mixed precision: ω stays float32 (see _apply) while the activations are fp16/bf16. The product and the sum
        # run in float32 (or better) and are rounded once to the activations' dtype, which the LayerNorm expects.
        out_dtype = torch.promote_types(shortcut.dtype, branch.dtype)
        compute = torch.promote_types(out_dtype, omega.dtype)
        return (shortcut.to(compute) * omega.to(compute) + branch.to(compute)).to(out_dtype)

    def _apply(self, fn, *args, **kwargs):
        """``model.half()`` / ``.bfloat16()`` / ``.to(dtype)`` leave ω in float32: a rounded ω would rescale every
        residual stream by up to 2^-11 (fp16) or 2^-8 (bf16) of itself, and with ``--memory-efficient-*`` (no fp32
        master copy) updates smaller than that would be lost. Device moves and float64 casts apply as usual."""
        kept = self.omega.detach().clone()
        result = super()._apply(fn, *args, **kwargs)
        if self.omega.dtype in (torch.float16, torch.bfloat16):
            restored = kept.to(device=self.omega.device, dtype=torch.float32)
            if isinstance(self.omega, nn.Parameter):
                self.omega.data = restored
            else:
                self._buffers["omega"] = restored
        return result

    def set_omega(self, sublayer: int, value: float) -> None:
        with torch.no_grad():
            self.omega[sublayer].fill_(value)
