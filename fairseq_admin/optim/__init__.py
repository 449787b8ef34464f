from .radam import FairseqRAdam  # noqa: F401  (registers --optimizer radam)
