"""``--optimizer radam``: RAdam (Liu et al., ICLR 2020), the optimizer of the official Admin recipes.

fairseq ships no RAdam; Transformer-Clinic registers its own (radam_fairseq/radam.py). This one is
``torch.optim.RAdam`` with the official code's two choices made explicit:

* weight decay is decoupled, p <- p · (1 − lr·wd) before the update (radam.py:114-115), i.e. torch's
  ``decoupled_weight_decay=True``;
* while the variance is not yet tractable (ρ_t < 5, the first 5 updates at β2 = 0.98 or 0.999) the official code
  moves the parameters by nothing but the weight decay: its un-rectified update is commented out (radam.py:122-124).
  ``torch.optim.RAdam`` takes a bias-corrected momentum step p <- p − lr · m_t / (1 − β1^t) there instead.
  ``--radam-unrectified skip`` (default) is the official rule, ``sgd`` is torch's.

From ρ_t > 5 on both apply p <- p − lr · r_t · sqrt(1 − β2^t) / (1 − β1^t) · m_t / (sqrt(v_t) + ε) (radam.py:117-120),
r_t = sqrt((ρ_t − 4)(ρ_t − 2)ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2)ρ_t)). At ρ_t exactly 5 the official code updates
(``N_sma >= 5``) and torch does not (``rho_t > 5``); ρ_t is never exactly 5 for the usual β2.
tests/test_radam.py checks both rules against a float64 transcription of radam.py.
"""
import ast
import math
from dataclasses import dataclass, field
from typing import Any, List, Tuple

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II, OmegaConf

from fairseq_admin.errors import OptionError

UNRECTIFIED = ChoiceEnum(["skip", "sgd"])


@dataclass
class FairseqRAdamConfig(FairseqDataclass):
    # the official defaults (radam_fairseq/radam.py:33-38)
    adam_betas: Any = field(default="(0.9, 0.999)", metadata={"help": "betas for RAdam"})
    adam_eps: float = field(default=1e-8, metadata={"help": "epsilon for RAdam"})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay, as the official RAdam"})
    radam_unrectified: UNRECTIFIED = field(
        default="skip", metadata={"help": "updates while rho_t <= 5: 'skip' (Transformer-Clinic's RAdam: weight decay "
                                          "only) or 'sgd' (torch.optim.RAdam: a bias-corrected momentum step)"})
    lr: List[float] = II("optimization.lr")
    memory_efficient_fp16: bool = II("common.memory_efficient_fp16")
    memory_efficient_bf16: bool = II("common.memory_efficient_bf16")


class ClinicRAdam(torch.optim.RAdam):
    """``torch.optim.RAdam`` (decoupled weight decay) that, with ``skip_unrectified``, leaves a parameter where the
    weight decay put it in the steps whose ρ_t is at most 5, as the official RAdam does."""

    def __init__(self, params, skip_unrectified: bool = True, **kwargs):
        super().__init__(params, decoupled_weight_decay=True, foreach=False, **kwargs)
        self.skip_unrectified = skip_unrectified

    @property
    def supports_memory_efficient_fp16(self):
        return False

    @property
    def supports_flat_params(self):
        return True

    @torch.no_grad()
    def step(self, closure=None):
        if not self.skip_unrectified:
            return super().step(closure)
        kept = []
        for group in self.param_groups:
            beta2 = group["betas"][1]
            rho_inf = 2 / (1 - beta2) - 1
            for p in group["params"]:
                if p.grad is None:
                    continue
                step = float(self.state[p]["step"]) + 1 if "step" in self.state[p] else 1.0
                rho_t = rho_inf - 2 * step * beta2 ** step / (1 - beta2 ** step)
                if rho_t <= 5:
                    kept.append((p, p.detach().clone(), group["lr"] * group["weight_decay"]))
        loss = super().step(closure)
        for p, before, decay in kept:  # undo the un-rectified step, keep the decoupled weight decay
            p.copy_(before.mul_(1 - decay))
        return loss


@register_optimizer("radam", dataclass=FairseqRAdamConfig)
class FairseqRAdam(FairseqOptimizer):
    def __init__(self, cfg: FairseqRAdamConfig, params):
        if getattr(cfg, "memory_efficient_fp16", False) or getattr(cfg, "memory_efficient_bf16", False):
            # torch.optim.RAdam would keep its moments in fp16/bf16 on fp16/bf16 parameters; the official RAdam
            # works on float32 copies instead (radam.py:85-100). --fp16 / --bf16 give RAdam float32 master weights.
            raise OptionError("--optimizer radam does not support --memory-efficient-fp16/--memory-efficient-bf16 "
                              "(its moments would be kept in 16 bits); use --fp16 or --bf16")
        super().__init__(cfg)
        self._optimizer = ClinicRAdam(params, skip_unrectified=cfg.radam_unrectified == "skip",
                                      **self.optimizer_config)

    @property
    def optimizer_config(self):
        """The options torch's RAdam takes, each checked first (a bad one is one ``OptionError`` line, raised when
        fairseq-train builds the optimizer, before the first update)."""
        lr = self.cfg.lr[0] if isinstance(self.cfg.lr, (list, tuple)) or OmegaConf.is_list(self.cfg.lr) else self.cfg.lr
        return {"lr": _non_negative("--lr", lr), "betas": parse_betas(self.cfg.adam_betas),
                "eps": _non_negative("--adam-eps", self.cfg.adam_eps),
                "weight_decay": _non_negative("--weight-decay", self.cfg.weight_decay)}


_BETAS_EXAMPLE = "two numbers in [0, 1) such as '(0.9, 0.98)'"


def parse_betas(value: Any) -> Tuple[float, float]:
    """``--adam-betas`` as (β1, β2). A string is read with ``ast.literal_eval`` (a literal, never code); each β is the
    decay rate of a running average, so it must be a finite number with 0 <= β < 1 (β2 = 1 would make
    ρ_∞ = 2/(1 − β2) − 1 infinite)."""
    shown = value if isinstance(value, str) else str(value)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise OptionError(f"--adam-betas {shown!r} is not {_BETAS_EXAMPLE}") from None
    elif OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    numbers = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) for b in value)
    if not numbers:
        raise OptionError(f"--adam-betas {shown!r} is not {_BETAS_EXAMPLE}")
    for i, beta in enumerate(value, start=1):
        if not 0 <= beta < 1:  # False for nan; compared before float() so a huge integer cannot overflow
            raise OptionError(f"--adam-betas {shown!r}: beta{i} = {beta} is outside [0, 1); give {_BETAS_EXAMPLE}")
    return float(value[0]), float(value[1])


def _non_negative(option: str, value: Any) -> float:
    """A finite number >= 0 (torch's RAdam refuses negative ones with a traceback; nan or inf would poison every
    parameter at the first update)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise OptionError(f"{option} must be a finite number >= 0 for --optimizer radam, got {value}")
    return float(value)
