from .layers import SchemeDecoderLayer, SchemeEncoderLayer

__all__ = ["SchemeEncoderLayer", "SchemeDecoderLayer"]
