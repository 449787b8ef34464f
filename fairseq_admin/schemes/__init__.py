"""The registry of residual schemes: ``--residual-scheme NAME`` picks ``SCHEMES[NAME]``.

Adding a scheme: write one module with a :class:`ResidualScheme` subclass and add it to the tuple below; the model
then registers its ``<name>_transformer*`` architectures and its options by itself.
"""
from fairseq_admin.errors import OptionError

from .admin import Admin
from .b2t import B2T
from .base import ResidualScheme
from .deepnorm import DeepNorm
from .ds_init import DSInit
from .layernorm_scaling import LayerNormScaling
from .mix_ln import MixLN
from .peri_ln import PeriLN
from .postln import PostLN
from .preln import PreLN
from .resi_dual import ResiDual
from .rezero import ReZero
from .t_fixup import TFixup

SCHEMES = {scheme.name: scheme for scheme in (PostLN, PreLN, Admin, B2T, DeepNorm, ResiDual, PeriLN,
                                              LayerNormScaling, MixLN, DSInit, ReZero, TFixup)}


def get_scheme(name: str) -> type:
    if name not in SCHEMES:
        raise OptionError(f"unknown --residual-scheme {name!r}; choose one of {', '.join(SCHEMES)}")
    return SCHEMES[name]


__all__ = ["SCHEMES", "ResidualScheme", "get_scheme"]
