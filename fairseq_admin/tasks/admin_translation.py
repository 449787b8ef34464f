"""``admin_translation``: fairseq's ``translation`` task under an earlier name, kept so that the commands and
checkpoints of versions up to 0.3.0 keep working.

Nothing here is needed any more: the model profiles (or loads) Admin's ω itself at its first training forward under
any task (fairseq_admin/profiling.py, ``initialize_omega``), and ``--log-stability N`` is a model option that works
under any task (fairseq_admin/diagnostics.py, ``install_stability_log``). The config keeps its ``log_stability`` field
because checkpoints written by 0.3.0 store it in their task config.
"""
from dataclasses import dataclass, field

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask


@dataclass
class AdminTranslationConfig(TranslationConfig):
    log_stability: int = field(default=0, metadata={"help": "the model's --log-stability (residual_transformer)"})


@register_task("admin_translation", dataclass=AdminTranslationConfig)
class AdminTranslationTask(TranslationTask):
    """fairseq's translation task; ``--log-stability`` is the model's option (added with the model's arguments)."""

    @classmethod
    def add_args(cls, parser):
        gen_parser_from_dataclass(parser, TranslationConfig())  # not the field: the model adds --log-stability
