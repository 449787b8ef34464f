"""``admin_translation``: fairseq's ``translation`` task plus ``--log-stability N``.

Admin's ω no longer needs this task: the model profiles (or loads) ω itself at its first training forward under any
task (fairseq_admin/profiling.py, ``initialize_omega``), with ``--admin-profile-save/-load`` as model options. What the
task still adds is the stability log, which needs the gradients of a training step after its backward and the
trainer's sample size and loss scale, which only a task's ``train_step`` sees. Commands and checkpoints of earlier
versions that name this task keep working.
"""
import logging
from dataclasses import dataclass, field

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from fairseq_admin.diagnostics import log_stability, loss_scale, record_residuals
from fairseq_admin.profiling import unwrap_model

logger = logging.getLogger(__name__)


@dataclass
class AdminTranslationConfig(TranslationConfig):
    log_stability: int = field(
        default=0, metadata={"help": "every N updates (from the first), log per-layer weight-gradient norms, the "
                                     "residual dependency beta and ω statistics (stab_* keys; see "
                                     "fairseq_admin/diagnostics.py); 0 = off"})


@register_task("admin_translation", dataclass=AdminTranslationConfig)
class AdminTranslationTask(TranslationTask):
    """Translation, plus the stability log of ``--log-stability N``."""

    def __init__(self, cfg, src_dict, tgt_dict):
        if cfg.log_stability < 0:
            raise ValueError(f"--log-stability must be >= 0, got {cfg.log_stability}")
        super().__init__(cfg, src_dict, tgt_dict)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if not (self.cfg.log_stability and update_num % self.cfg.log_stability == 0 and not ignore_grad):
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        core = unwrap_model(model)
        with record_residuals(core) as residuals:  # β from this step's forward
            loss, sample_size, logging_output = super().train_step(
                sample, model, criterion, optimizer, update_num, ignore_grad)
        # the grads of this step's backward, per token as the trainer will apply them
        log_stability(core, residuals, grad_scale=max(sample_size, 1) * loss_scale(optimizer))
        return loss, sample_size, logging_output
