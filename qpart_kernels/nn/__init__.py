"""Drop-in quantized modules and model conversion."""

from .conv import QPartConv2d
from .linear import QPartLinear
from .swap import payload_bytes, quantize_model

__all__ = ["QPartConv2d", "QPartLinear", "payload_bytes", "quantize_model"]
