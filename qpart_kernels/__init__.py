"""QPART kernels: low-bit quantization ops for PyTorch (``torch.ops.qpart.*``) and the
drop-in modules :class:`QPartLinear` / :class:`QPartConv2d` built on them."""

from . import ops
from ._extension import extension_loaded, output_pool_cap_bytes, output_pool_free_bytes
from .nn import QPartConv2d, QPartLinear, fuse_epilogues, quantize_model
from .ops import (
    QuantizedTensor,
    conv2d,
    dequantize_activation,
    dequantize_weight,
    linear,
    quantize_activation,
    quantize_weight,
)

__version__ = "0.1.0"

__all__ = [
    "QPartConv2d",
    "QPartLinear",
    "QuantizedTensor",
    "conv2d",
    "dequantize_activation",
    "dequantize_weight",
    "extension_loaded",
    "fuse_epilogues",
    "linear",
    "output_pool_cap_bytes",
    "output_pool_free_bytes",
    "ops",
    "quantize_activation",
    "quantize_model",
    "quantize_weight",
]
