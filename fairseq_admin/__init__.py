"""fairseq_admin: deep-Transformer stabilization schemes for fairseq.

``fairseq-train --user-dir fairseq_admin`` imports this package, which registers the ``residual_transformer`` model
and its ``<scheme>_transformer*`` architectures, the ``admin_translation`` task, ``--optimizer radam``, the allow-list that lets
torch's safe loader (``weights_only=True``) read fairseq checkpoints, and an exit hook that stops fairseq's batch-loader
thread before the interpreter shuts down.
"""
__version__ = "0.5.0"  # one minor version per change of default: CHANGELOG.md

from . import _dependencies  # noqa: F401  (a clear error when torch or fairseq is missing)
from . import checkpoint_safety, clean_exit, models, optim, tasks  # noqa: F401  (registration side effects)

checkpoint_safety.install()
clean_exit.install()  # fairseq-train's batch-loader thread would abort the exit (status 134): clean_exit.py
