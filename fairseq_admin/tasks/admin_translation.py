"""``admin_translation``: fairseq's ``translation`` task that initializes Admin's ω inside the training run.

At the start of a fresh run the task sets ω, once, before the first update:
  * ``--admin-profile-load PATH``: from a Transformer-Clinic ``profile.ratio.init`` (checked against the depth when
    the first epoch begins, before any training);
  * otherwise, with ``--admin-init profile``: by profiling the first training batch (fairseq_admin/profiling.py),
    then the normal training step runs on that same batch. ``--admin-profile-save PATH`` writes the result.
ω then lives in the model's parameters and its ``omega_ready`` buffer in every checkpoint, so resuming never
profiles again and generation needs no profile file. For every other scheme the task is plain ``translation``.
"""
import logging
from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from fairseq_admin.diagnostics import log_stability, loss_scale, record_residuals
from fairseq_admin.profiling import (apply_profile, profile_model, profile_sizes, rank, read_profile, unwrap_model,
                                     world_size, write_profile)

logger = logging.getLogger(__name__)


@dataclass
class AdminTranslationConfig(TranslationConfig):
    admin_profile_save: Optional[str] = field(
        default=None, metadata={"help": "write the profiled ω in Transformer-Clinic's profile.ratio.init format"})
    admin_profile_load: Optional[str] = field(
        default=None, metadata={"help": "initialize ω from a profile.ratio.init file (ours or Transformer-Clinic's) "
                                        "instead of profiling; only used when a run starts from scratch"})
    log_stability: int = field(
        default=0, metadata={"help": "every N updates (from the first), log per-layer weight-gradient norms, the "
                                     "residual dependency beta and ω statistics (stab_* keys; see "
                                     "fairseq_admin/diagnostics.py); 0 = off"})


@register_task("admin_translation", dataclass=AdminTranslationConfig)
class AdminTranslationTask(TranslationTask):
    """Translation, plus Admin's ω initialization at the start of a fresh training run."""

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if (self.cfg.admin_profile_load or self.cfg.admin_profile_save) and not hasattr(model, "omega_ready"):
            raise ValueError("--admin-profile-load/--admin-profile-save need an admin model with --admin-init "
                             "profile (e.g. --arch admin_transformer_wmt_en_de)")
        if self.cfg.admin_profile_load and self.cfg.admin_profile_save:
            raise ValueError("give --admin-profile-load or --admin-profile-save, not both")
        return model

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        core = unwrap_model(model)
        if self.cfg.admin_profile_load and _needs_profiling(core):
            encoder, decoder = read_profile(self.cfg.admin_profile_load, *profile_sizes(core))
            apply_profile(core, encoder, decoder)
            logger.info(f"admin: ω initialized from {self.cfg.admin_profile_load}")

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        core = unwrap_model(model)
        if _needs_profiling(core):
            encoder, decoder = profile_model(core, sample)
            workers = f" on this worker, identical on all {world_size()} workers" if world_size() > 1 else ""
            logger.info("admin: profiled ω on the first batch (%d tokens%s): encoder %s; decoder %s",
                        sample["ntokens"], workers, _summary(encoder), _summary(decoder))
            if self.cfg.admin_profile_save and rank() == 0:
                write_profile(self.cfg.admin_profile_save, encoder, decoder)
                logger.info(f"admin: profile written to {self.cfg.admin_profile_save}")
        if not (self.cfg.log_stability and update_num % self.cfg.log_stability == 0 and not ignore_grad):
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        with record_residuals(core) as residuals:  # β from this step's forward
            loss, sample_size, logging_output = super().train_step(
                sample, model, criterion, optimizer, update_num, ignore_grad)
        # the grads of this step's backward, per token as the trainer will apply them
        log_stability(core, residuals, grad_scale=max(sample_size, 1) * loss_scale(optimizer))
        return loss, sample_size, logging_output


def _summary(values):
    return f"{len(values)} sublayers, ω from {values[0]:.4g} to {values[-1]:.4g}"


def _needs_profiling(model) -> bool:
    """True for an admin model whose ω is still unset; False for every other model."""
    return getattr(model, "needs_profiling", lambda: False)()
