"""The ``qpart`` custom ops: schemas, reference and fake kernels, native extension, API."""

from . import fake, reference
from .library import LIBRARY, PACKED_OPS, SCHEMAS, has_native_kernel

for _name in SCHEMAS:
    LIBRARY.impl(_name, getattr(reference, _name), "CompositeExplicitAutograd")

from .._extension import load_extension  # noqa: E402  (schemas must exist first)

load_extension()

from .backends import register_cuda_backend  # noqa: E402

CUDA_BACKEND = register_cuda_backend()

from .api import (  # noqa: E402
    QuantizedTensor,
    conv2d,
    dequantize_activation,
    dequantize_weight,
    linear,
    max_pool2d,
    quantize_activation,
    quantize_weight,
)

__all__ = [
    "CUDA_BACKEND",
    "PACKED_OPS",
    "QuantizedTensor",
    "conv2d",
    "dequantize_activation",
    "dequantize_weight",
    "fake",
    "has_native_kernel",
    "linear",
    "max_pool2d",
    "quantize_activation",
    "quantize_weight",
    "reference",
]
