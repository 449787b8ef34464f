"""The normalization of every norm of the model, one option: ``--norm {layernorm,rmsnorm,dyt}``.

``layernorm`` (default)
    fairseq's ``LayerNorm``: y = (x − mean(x)) / sqrt(var(x) + eps) ⊙ γ + β, exactly what fairseq builds
    (fairseq_admin/schemes/base.py, ``ResidualScheme.build_norm``; nothing of this module is used).

``rmsnorm`` (Zhang & Sennrich, NeurIPS 2019, "Root Mean Square Layer Normalization"): :class:`RMSNorm`
    y = x / sqrt(mean(x²) + eps) ⊙ g       no mean subtracted, no bias; g starts at ones.

``dyt`` (Zhu et al., CVPR 2025, "Transformers without Normalization"): :class:`DyT`
    y = γ ⊙ tanh(α · x) + β                α a learnable scalar, γ ones, β zeros (per channel); no statistics.

Every norm of the model follows ``--norm``: each sublayer's norm (Pre-LN or Post-LN), Peri-LN's output norms, the
stacks' final norms, the embedding norm and ResiDual's LN_f. Each is built for a *role* (schemes/base.py,
``NORM_ROLES``); DyT's initial α depends on it (:func:`dyt_alpha_init`).

RMSNorm: eps and dtypes
    eps is the one fairseq's LayerNorm gets at the same place (1e-5; ResiDual's LN_f 1e-7), inside the square root
    as in ``torch.nn.RMSNorm``, LLaMA and CTranslate2's ``rms_norm`` layers (src/cpu/kernels.cc ``rms_norm``:
    ``1.f / std::sqrt(sum_squares / depth + epsilon)``), so an RMSNorm model converts to CTranslate2 exactly
    (fairseq_admin/cli/ct2_peri_ln.py). The paper's own code (bzhangGo/rmsnorm, read at 2e726f1, rmsnorm_torch.py:47-48)
    adds eps to the RMS instead, ``x / (rms_x + eps)`` with eps 1e-8: the two differ by a relative
    eps / (2·mean(x²)), 5e-6 for unit-scale activations (a row of README's deviations table). eps is always passed:
    ``torch.nn.RMSNorm``'s own default (eps=None) is a machine epsilon, which would make fp16 and fp32 models compute
    different functions in some torch versions.
    fp16/bf16 inputs are normalized in float32 and rounded once to the input's dtype, as fairseq's ``LayerNorm``
    (``torch.nn.LayerNorm``, whose CPU and CUDA kernels accumulate and scale in float32) and its ``Fp32LayerNorm``
    (fairseq/modules/layer_norm.py: ``F.layer_norm(input.float(), ...).type_as(input)``) do.

DyT: the official rule
    ``DynamicTanh`` of jiachenzhu/DyT (read at aab5dde), dynamic_tanh.py:6-23: ``alpha = ones(1) * alpha_init_value``
    (:13, default 0.5 at :7), ``weight = ones`` (:14), ``bias = zeros`` (:15), forward ``x = tanh(alpha * x)`` (:18)
    then, channels last, ``x * weight + bias`` (:20), in that order; ``convert_ln_to_dyt`` (:29-36) replaces every
    ``nn.LayerNorm`` of the model, final norms included. Parameter names are theirs (alpha, weight, bias).
    Their LLaMA code (other_tasks/LLaMA/fms_fsdp/models/llama.py:32-49, ``LayerNormParameterized``) is the variant
    ``weight * tanh(alpha * x)`` with no bias (it replaces LLaMA's bias-free RMSNorm), and sets α's initial value per
    norm: ``attn_alpha_init_value`` for each block's attention norm (:85-88), ``ffn_alpha_init_value`` for its FFN
    norm (:89-92), ``dec_alpha_init_value`` for the final norm (:245-248); config defaults 1.0 (:73-75), the README's
    runs 0.8/0.2/0.2 (7B) to 0.2/0.05/0.05 (34B, 70B) (other_tasks/LLaMA/README.md). Here: the bias of
    dynamic_tanh.py always (our norms replace LayerNorms, which have one; a row of README's deviations table), and α's
    initial values as options: ``--dyt-alpha-init`` for every norm, ``--dyt-alpha-init-attn`` / ``-ffn`` / ``-final``
    for the LLaMA code's three groups (:data:`DYT_ALPHA_GROUPS`). The LLaMA code's learnable embedding scale
    (llama.py:208-209) is not part of DyT and is not taken.
    fp16/bf16 inputs: computed in float32 and rounded once, as the official training does under autocast (its α, γ, β
    are float32 parameters, so ``alpha * x`` and what follows run in float32) and as :class:`RMSNorm` above. α itself
    stays float32 under ``model.half()`` / ``.bfloat16()`` (as Admin's ω, schemes/admin.py): its gradient is a sum
    over every token *and* channel, d times larger than a LayerNorm gain's, and in fp16 it is the model's largest
    (tests/test_norms.py: about 3.5e4 of fp16's 6.55e4 at loss scale 128 in a d = 32 toy model), so a 16-bit α would
    overflow first and pull fairseq's loss scale down for every other gradient.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_admin.errors import OptionError

NORMS = ("layernorm", "rmsnorm", "dyt")
#: DyT's default initial α (jiachenzhu/DyT dynamic_tanh.py:7, ``alpha_init_value=0.5``)
DYT_ALPHA_INIT = 0.5
#: the role of each norm (schemes/base.py NORM_ROLES) -> its group of the LLaMA code's separate α inits: the norms of
#: an attention sublayer (self or cross, its input or Peri-LN output norm), of an FFN sublayer, a stack's final norm;
#: None: the embedding norm, which the LLaMA code does not have (it takes --dyt-alpha-init)
DYT_ALPHA_GROUPS = {"self_attn": "attn", "cross_attn": "attn", "self_attn_output": "attn",
                    "cross_attn_output": "attn", "ffn": "ffn", "ffn_output": "ffn", "final": "final",
                    "embedding": None}
#: the --dyt-alpha-init* options: the common one first, then one per group
DYT_ALPHA_OPTIONS = {"dyt_alpha_init": "--dyt-alpha-init", "dyt_alpha_init_attn": "--dyt-alpha-init-attn",
                     "dyt_alpha_init_ffn": "--dyt-alpha-init-ffn", "dyt_alpha_init_final": "--dyt-alpha-init-final"}
_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


class RMSNorm(nn.RMSNorm):
    """y = x / sqrt(mean(x²) + eps) ⊙ g over the last dimension; g (``weight``) starts at ones; no bias.

    ``torch.nn.RMSNorm`` with an explicit ``eps`` and float32 arithmetic for fp16/bf16 inputs (the module docstring).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in _REDUCED_PRECISION:
            return F.rms_norm(x.float(), self.normalized_shape, self.weight.float(), self.eps).to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)


class DyT(nn.Module):
    """y = γ ⊙ tanh(α · x) + β over the last dimension: α a learnable scalar (``alpha``), γ (``weight``) ones, β
    (``bias``) zeros; ``DynamicTanh`` of jiachenzhu/DyT dynamic_tanh.py:6-23 with ``channels_last=True``."""

    def __init__(self, dim: int, alpha_init: float = DYT_ALPHA_INIT):
        super().__init__()
        self.normalized_shape = (dim,)
        self.alpha_init = alpha_init
        self.alpha = nn.Parameter(torch.ones(1) * alpha_init)  # dynamic_tanh.py:13
        self.weight = nn.Parameter(torch.ones(dim))  # :14
        self.bias = nn.Parameter(torch.zeros(dim))  # :15

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in _REDUCED_PRECISION:
            return (torch.tanh(self.alpha.float() * x.float()) * self.weight.float() + self.bias.float()).to(x.dtype)
        return torch.tanh(self.alpha * x) * self.weight + self.bias  # dynamic_tanh.py:18, :20

    def _apply(self, fn, *args, **kwargs):
        """``.half()`` / ``.bfloat16()`` / ``.to(dtype)`` leave α in float32 (the module docstring says why); device
        moves and float64 casts apply as usual."""
        kept = self.alpha.detach().clone()
        result = super()._apply(fn, *args, **kwargs)
        if self.alpha.dtype in _REDUCED_PRECISION:
            self.alpha.data = kept.to(device=self.alpha.device, dtype=torch.float32)
        return result

    def extra_repr(self) -> str:
        return f"normalized_shape={self.normalized_shape}, alpha_init={self.alpha_init}"


def norm_of(cfg) -> str:
    """The model's ``--norm``; checkpoints from before the option have none: ``layernorm``."""
    return getattr(cfg, "norm", None) or "layernorm"


def dyt_alpha_init(cfg, role: str) -> float:
    """DyT's initial α for a norm of ``role``: its group's ``--dyt-alpha-init-{attn,ffn,final}`` if given, else
    ``--dyt-alpha-init``, else :data:`DYT_ALPHA_INIT`."""
    group = DYT_ALPHA_GROUPS[role]
    for dest in ((f"dyt_alpha_init_{group}",) if group else ()) + ("dyt_alpha_init",):
        value = getattr(cfg, dest, None)
        if value is not None:
            return value
    return DYT_ALPHA_INIT


def build(cfg, dim: int, role: str, eps: float) -> nn.Module:
    """The ``--norm rmsnorm`` or ``--norm dyt`` module for a norm of ``role`` (``layernorm``: schemes/base.py)."""
    norm = norm_of(cfg)
    if norm == "rmsnorm":
        return RMSNorm(dim, eps)
    if norm == "dyt":
        return DyT(dim, dyt_alpha_init(cfg, role))
    raise OptionError(f"unknown --norm {norm!r}; choose one of {', '.join(NORMS)}")


def add_args(parser) -> None:
    parser.add_argument("--norm", choices=NORMS,
                        help="the normalization of every norm of the model (sublayer, output, final and embedding "
                             "norms): 'layernorm' (default, fairseq's), 'rmsnorm' (x / sqrt(mean(x^2) + eps) * g, no "
                             "mean, no bias), 'dyt' (gamma * tanh(alpha * x) + beta, a learnable scalar alpha; Zhu et "
                             "al. 2025). fairseq_admin/modules/norms.py")
    parser.add_argument("--dyt-alpha-init", type=float, metavar="A",
                        help=f"--norm dyt: the initial alpha of every DyT (default {DYT_ALPHA_INIT}, the official "
                             f"dynamic_tanh.py's)")
    for group, what in (("attn", "the attention sublayers' norms (self and cross, input and Peri-LN output)"),
                        ("ffn", "the FFN sublayers' norms"), ("final", "the stacks' final norms")):
        parser.add_argument(f"--dyt-alpha-init-{group}", type=float, metavar="A",
                            help=f"--norm dyt: the initial alpha of {what}, in place of --dyt-alpha-init (the "
                                 f"official LLaMA code's {'dec' if group == 'final' else group}_alpha_init_value)")


def check_args(args) -> None:
    """Refuse, in one line, DyT's options without ``--norm dyt`` and initial α values that are not positive."""
    norm = getattr(args, "norm", None)
    if norm is not None and norm not in NORMS:
        raise OptionError(f"unknown --norm {norm!r}; choose one of {', '.join(NORMS)}")
    for dest, option in DYT_ALPHA_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if norm != "dyt":
            raise OptionError(f"{option} is an option of --norm dyt, but this model's --norm is {norm_of(args)}: "
                              f"remove it or add --norm dyt")
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise OptionError(f"{option} must be a positive finite number (DyT's alpha scales tanh's input), got "
                              f"{value!r}")
