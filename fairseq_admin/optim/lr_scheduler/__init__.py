from .inverse_sqrt_nowarmup import InverseSqrtNoWarmupSchedule  # noqa: F401  (registers inverse_sqrt_nowarmup)
