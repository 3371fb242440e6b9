"""The ``qpart`` op library: every schema is defined here, once, with ``bits`` an argument.

``bits`` is a ``Scalar`` rather than an ``int`` in the schemas: the dispatcher converts a
Python bool given for an ``int`` to 1 or 0 before any kernel runs, while a ``Scalar`` keeps
its type, so every implementation (native, reference, fake) can reject ``bits=True`` (and
``4.0``) with a ``TypeError``. Valid calls pass a Python int as before.

Implementations are attached per dispatch key: the pure-PyTorch reference as
``CompositeExplicitAutograd`` (the fallback on any device), fake kernels for tracing, and
native kernels registered by the compiled extension (``qpart_kernels._C``) for CPU.

``max_pool2d`` is not a packed-format op: it is ATen's float max pool (dilation 1, floor mode)
with a native CPU kernel for the device runtime (``qpart_kernels.nn.fuse_epilogues``); its
reference is ATen's own ``max_pool2d``.
"""

from __future__ import annotations

import torch

NAMESPACE = "qpart"

SCHEMAS = {
    "quantize_weight": (
        "quantize_weight(Tensor weight, Scalar bits, int group_size) -> (Tensor, Tensor, Tensor)"
    ),
    "dequantize_weight": (
        "dequantize_weight(Tensor packed, Tensor scales, Tensor zeros, Scalar bits, "
        "int in_features) -> Tensor"
    ),
    "linear": (
        "linear(Tensor input, Tensor packed, Tensor scales, Tensor zeros, Tensor? bias, "
        "Scalar bits, int in_features, bool int8_activations=False) -> Tensor"
    ),
    "conv2d": (
        "conv2d(Tensor input, Tensor packed, Tensor scales, Tensor zeros, Tensor? bias, "
        "Scalar bits, int[4] weight_shape, int[2] stride, int[2] padding, int[2] dilation, "
        "int groups, bool int8_activations=False, Tensor? residual=None, bool relu=False) "
        "-> Tensor"
    ),
    "quantize_activation": (
        "quantize_activation(Tensor input, Scalar bits, bool per_token) -> (Tensor, Tensor, Tensor)"
    ),
    "dequantize_activation": (
        "dequantize_activation(Tensor packed, Tensor scales, Tensor zeros, Scalar bits, "
        "int[] shape, ScalarType dtype) -> Tensor"
    ),
    "max_pool2d": (
        "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding) -> Tensor"
    ),
}

#: Ops whose only native kernel is the CPU one: on any other device the reference (ATen) runs
#: them, so the CUDA backends (C++ and Triton) leave them alone.
CPU_NATIVE_ONLY = frozenset({"max_pool2d"})

#: The packed-format ops, which every backend implements.
PACKED_OPS = tuple(op for op in SCHEMAS if op not in CPU_NATIVE_ONLY)

LIBRARY = torch.library.Library(NAMESPACE, "DEF")
for _schema in SCHEMAS.values():
    LIBRARY.define(_schema)


def qualified(name: str) -> str:
    """``qpart::name`` for an op of this library."""
    return f"{NAMESPACE}::{name}"


def has_native_kernel(name: str, dispatch_key: str = "CPU") -> bool:
    """Whether a native (non-reference) kernel is registered for ``name`` on a dispatch key."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(qualified(name), dispatch_key)
