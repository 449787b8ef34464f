from .residual_transformer import ResidualTransformerModel

__all__ = ["ResidualTransformerModel"]
