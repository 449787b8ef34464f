"""fairseq_admin: deep-Transformer stabilization schemes for fairseq.

``fairseq-train --user-dir fairseq_admin`` imports this package, which registers the ``residual_transformer`` model
and its ``<scheme>_transformer*`` architectures, the ``admin_translation`` task, ``--optimizer radam``, the allow-list that lets
torch's safe loader (``weights_only=True``) read fairseq checkpoints, and an exit hook that stops fairseq's batch-loader
thread before the interpreter shuts down.
"""
__version__ = "0.6.0"  # one minor version per change of default: CHANGELOG.md

import os as _os
import sys as _sys


def register() -> None:
    """Register everything above with fairseq (idempotent). Importing the package does it, except in the package's
    own ``fairseq-admin-*`` commands, which call this where they need it (see below)."""
    from . import _dependencies  # noqa: F401  (a clear error when torch or fairseq is missing)
    from . import checkpoint_safety, clean_exit, dictionary_checksum, models, optim, tasks  # noqa: F401  (registration)

    checkpoint_safety.install()
    dictionary_checksum.install()  # every checkpoint fairseq-train saves records its dictionaries' checksums
    clean_exit.install()  # fairseq-train's batch-loader thread would abort the exit (status 134): clean_exit.py


# A `fairseq-admin-*` console command imports this package before its own module: registering here would import
# torch and fairseq (4-5 s) for commands that need neither (`fairseq-admin-options --user-dir` prints a path). Those
# commands call register() themselves where they build or load models; fairseq's --user-dir, `import fairseq_admin`
# and `python -m fairseq_admin...` register here as before.
if not _os.path.basename((getattr(_sys, "argv", None) or [""])[0]).startswith("fairseq-admin-"):
    register()
