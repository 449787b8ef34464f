"""``--lr-scheduler inverse_sqrt_nowarmup``: T-Fixup's schedule, an inverse-square-root decay from the first update,
with no warm-up (Huang et al. 2020; layer6ai-labs/T-Fixup at b17e166,
fairseq/optim/lr_scheduler/inverse_sqrt_nowarmup_schedule.py:9-55):

    lr(n) = lr · sqrt(P / (P + n)),   n the number of updates done, P = ``--decay-period`` (default 4000)

so the first update runs at ``--lr`` and the rate has fallen by 1/√2 after P updates (:19, :41, :53).

fairseq main has no equivalent. Its ``inverse_sqrt`` cannot run with ``--warmup-updates 0`` (it divides by the
warm-up length: fairseq/optim/lr_scheduler/inverse_square_root_schedule.py:63, a ZeroDivisionError), and with
``--warmup-init-lr`` = ``--lr`` and W warm-up updates it gives lr for n < W, then lr·sqrt(W / n): constant for W
updates instead of decaying from the first, and the decay is in n, not P + n. No other stock scheduler has this
curve.
"""
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import List

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II

from fairseq_admin.errors import OptionError


@dataclass
class InverseSqrtNoWarmupConfig(FairseqDataclass):
    decay_period: int = field(
        default=4000,  # the official default (inverse_sqrt_nowarmup_schedule.py:40)
        metadata={"help": "decay period P: lr(n) = lr * sqrt(P / (P + n)), so the lr has fallen by 1/sqrt(2) after "
                          "P updates"},
    )
    lr: List[float] = II("optimization.lr")


def inverse_sqrt_nowarmup_lr(lr: float, decay_period: int, num_updates: int) -> float:
    """lr · sqrt(P / (P + n)), written as the official code does (inverse_sqrt_nowarmup_schedule.py:53)."""
    return lr * (decay_period / (decay_period + num_updates)) ** 0.5


@register_lr_scheduler("inverse_sqrt_nowarmup", dataclass=InverseSqrtNoWarmupConfig)
class InverseSqrtNoWarmupSchedule(FairseqLRScheduler):
    """Decay the lr as the inverse square root of (P + updates), starting at ``--lr`` with no warm-up."""

    def __init__(self, cfg: InverseSqrtNoWarmupConfig, optimizer):
        super().__init__(cfg, optimizer)
        lrs = list(cfg.lr) if isinstance(cfg.lr, Collection) else [cfg.lr]
        if len(lrs) != 1:  # the official refusal (:24-28), as one line
            raise OptionError("--lr-scheduler inverse_sqrt_nowarmup takes one --lr, not a schedule of several "
                              "(use --lr-scheduler fixed for that)")
        if isinstance(cfg.decay_period, bool) or not isinstance(cfg.decay_period, int) or cfg.decay_period < 1:
            raise OptionError(f"--decay-period must be a whole number >= 1, got {cfg.decay_period!r}")
        self.init_lr = lrs[0]
        self.decay_period = cfg.decay_period
        self.lr = self.init_lr  # the first update runs at --lr (:32-34)
        if optimizer is not None:
            self.optimizer.set_lr(self.lr)

    def step(self, epoch, val_loss=None):
        """At the end of an epoch: the lr follows the updates only."""
        super().step(epoch, val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        """After each update."""
        self.lr = inverse_sqrt_nowarmup_lr(self.init_lr, self.decay_period, num_updates)
        self.optimizer.set_lr(self.lr)
        return self.lr
