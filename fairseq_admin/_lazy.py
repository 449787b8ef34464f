"""A module imported on its first use, so that a ``fairseq-admin-*`` command answers ``--help`` and refuses a bad
argument at once instead of after importing torch and fairseq (4-5 s)."""
import importlib


class LazyModule:
    """Stands for module ``name``: the first attribute read imports it (``importlib.import_module``, cached by
    Python after that); ``torch = LazyModule("torch")`` then ``torch.zeros(3)`` is ``import torch; torch.zeros(3)``."""

    def __init__(self, name: str):
        object.__setattr__(self, "_lazy_name", name)

    def __getattr__(self, attribute: str):  # called for every name the proxy itself does not have
        module = importlib.import_module(object.__getattribute__(self, "_lazy_name"))
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<LazyModule {object.__getattribute__(self, '_lazy_name')!r}>"
