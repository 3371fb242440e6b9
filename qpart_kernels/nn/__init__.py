"""Drop-in quantized modules and model conversion."""

from .conv import QPartConv2d
from .fuse import fuse_epilogues, max_pool2d_slices
from .linear import QPartLinear
from .swap import payload_bytes, quantize_model

__all__ = [
    "QPartConv2d",
    "QPartLinear",
    "fuse_epilogues",
    "max_pool2d_slices",
    "payload_bytes",
    "quantize_model",
]
