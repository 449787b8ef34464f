"""fairseq_admin: deep-Transformer stabilization schemes for fairseq.

``fairseq-train --user-dir fairseq_admin`` imports this package, which registers the ``residual_transformer`` model
and its ``<scheme>_transformer*`` architectures, the ``admin_translation`` task, and the allow-list that lets
torch's safe loader (``weights_only=True``) read fairseq checkpoints.
"""
from . import checkpoint_safety, models, tasks  # noqa: F401  (registration side effects)

checkpoint_safety.install()
