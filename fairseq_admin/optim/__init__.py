from .radam import FairseqRAdam  # noqa: F401  (registers --optimizer radam)
from . import lr_scheduler  # noqa: F401  (registers --lr-scheduler inverse_sqrt_nowarmup)
