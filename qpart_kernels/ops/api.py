"""Public Python API of the ``qpart`` ops: thin, documented wrappers over ``torch.ops.qpart``."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch

from . import backends, checks


class QuantizedTensor(NamedTuple):
    """Packed codes (uint8), fp16 scales and uint8 zero points of a quantized tensor."""

    packed: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor

    def payload_bytes(self) -> int:
        """Exact size in bytes of the packed codes, scales and zero points."""
        return (
            self.packed.numel()
            + self.scales.numel() * self.scales.element_size()
            + self.zeros.numel()
        )


def _int(value: object, name: str, op: str = "conv2d") -> int:
    """``value`` as an int if it is a real integer (not a bool, float, tensor), else TypeError."""
    if type(value) is int:  # the common case first: these run on every module call
        return value
    if checks._is_int(value):
        return value  # type: ignore[return-value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)  # numpy integers
    raise TypeError(f"qpart.{op}: {name} must be an int, got {value!r}")


def _pair(value: int | Sequence[int], name: str, op: str = "conv2d") -> list[int]:
    """``value`` as a list of two ints (an int stands for both), else TypeError / ValueError."""
    if type(value) is int:
        return [value, value]
    if type(value) in (tuple, list) and len(value) == 2 and all(type(v) is int for v in value):
        return list(value)
    if checks._is_int(value) or isinstance(value, numbers.Integral):
        return [_int(value, name, op)] * 2
    if isinstance(value, (bool, float, str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"qpart.{op}: {name} must be an int or a pair of ints, got {value!r}")
    pair = [_int(v, name, op) for v in value]
    if len(pair) != 2:
        raise ValueError(f"qpart.{op}: {name} must be an int or a pair, got {value!r}")
    return pair


def quantize_weight(
    weight: torch.Tensor, bits: int, group_size: int | None = None
) -> QuantizedTensor:
    """Quantizes a float ``(out, in)`` weight to ``bits`` bits (1..8), densely packed.

    ``group_size=None`` uses one (scale, zero) group per output row; otherwise groups of
    ``group_size`` consecutive input columns (a multiple of 32 that divides ``in``).
    """
    checks.check_bits("quantize_weight", bits)
    if group_size is not None:
        _int(group_size, "group_size", "quantize_weight")
    if group_size is None and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        group_size = weight.shape[1]
    return QuantizedTensor(*torch.ops.qpart.quantize_weight(weight, bits, group_size))


def dequantize_weight(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    in_features: int,
) -> torch.Tensor:
    """Returns the float32 ``(out, in_features)`` weight a packed weight represents."""
    checks.check_bits("dequantize_weight", bits)
    _int(in_features, "in_features", "dequantize_weight")
    return torch.ops.qpart.dequantize_weight(packed, scales, zeros, bits, in_features)


def linear(
    input: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    bias: torch.Tensor | None = None,
    in_features: int | None = None,
    int8_activations: bool = False,
) -> torch.Tensor:
    """``input @ W.T + bias`` with a packed ``(out, in_features)`` weight ``W``.

    ``input`` (any leading batch dims) may be float32, float16 or bfloat16; accumulation is
    fp32 and the result has the input's dtype. ``in_features`` defaults to
    ``input.shape[-1]``; pass it to have a mismatched input rejected (packed rows are
    byte-aligned, so their length alone cannot always tell).

    ``int8_activations=True`` (opt-in: it changes the numerics) quantizes each input row to
    int8 (symmetric, ``scale = max|x| / 127``, once per call) and runs integer dot products
    of the int8 activations with the low-bit codes (AVX2 ``vpmaddubsw``, NEON ``sdot``).
    The native integer kernels are CPU-only; on other devices this wrapper applies the same
    activation quantization and runs the float kernel.
    """
    checks.check_bits("linear", bits)
    checks.check_same_device(
        "linear", input=input, packed=packed, scales=scales, zeros=zeros, bias=bias
    )
    if in_features is None:
        in_features = input.shape[-1] if input.dim() >= 1 else 0
    _int(in_features, "in_features", "linear")
    if not isinstance(int8_activations, bool):
        raise TypeError(f"qpart.linear: int8_activations must be a bool, got {int8_activations!r}")
    if int8_activations and input.device.type != "cpu":
        # The CPU op (native or reference) checks the scales itself - in C++ without a pass
        # of torch ops over every scale (which cost as much as a grouped GEMV at batch 1).
        checks.check_int8_scales(scales)
        from .reference import int8_fake_quant

        input = int8_fake_quant(input).to(input.dtype)
        int8_activations = False
    if input.is_cuda and backends.TRITON_OPS_LOADED:
        return torch.ops.qpart_triton.linear(input, packed, scales, zeros, bias, bits, in_features)
    if int8_activations:
        return torch.ops.qpart.linear(input, packed, scales, zeros, bias, bits, in_features, True)
    return torch.ops.qpart.linear(input, packed, scales, zeros, bias, bits, in_features)


def conv2d(
    input: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    weight_shape: Sequence[int],
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    int8_activations: bool = False,
    residual: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """2-D convolution of NCHW ``input`` with a packed weight.

    ``weight_shape`` is the float weight's ``(out, in/groups, kh, kw)``; the packed weight
    holds ``out`` rows of ``in/groups * kh * kw`` codes.

    ``residual`` (a tensor of the output's shape and the input's dtype) is added to the
    output and ``relu=True`` clamps it at 0, in that order: the values of ``conv2d(...) +
    residual`` followed by ``torch.relu``, bit for bit, but applied to each output tile while
    it is in cache (no extra pass over memory, no extra tensor). A ResNet block's
    ``relu(conv2(...) + identity)`` is one call.

    ``int8_activations=True`` (opt-in: it changes the numerics) quantizes each image to int8
    (symmetric, ``scale = max|x[n]| / 127`` over the whole image, once per call) and runs an
    integer convolution of the int8 image with the low-bit codes (AVX2 ``vpmaddubsw``, NEON
    ``sdot``), bit-identical on every CPU ISA to the scalar kernel and to
    ``reference.conv2d(..., int8_activations=True)`` (docs/OPS.md). The native integer
    kernels are CPU-only; on other devices this wrapper applies the same activation
    quantization and runs the float kernel.
    """
    checks.check_bits("conv2d", bits)
    checks.check_same_device(
        "conv2d", input=input, packed=packed, scales=scales, zeros=zeros, bias=bias
    )
    if not isinstance(int8_activations, bool):
        raise TypeError(f"qpart.conv2d: int8_activations must be a bool, got {int8_activations!r}")
    if not isinstance(relu, bool):
        raise TypeError(f"qpart.conv2d: relu must be a bool, got {relu!r}")
    if residual is not None and not isinstance(residual, torch.Tensor):
        raise TypeError(f"qpart.conv2d: residual must be a tensor or None, got {residual!r}")
    if int8_activations and input.device.type != "cpu":
        if not torch.compiler.is_compiling():  # a value check; the CPU op makes it itself
            checks.check_int8_scales(scales, "conv2d")
        from .reference import int8_fake_quant_images

        if input.dim() == 4 and input.shape[0] > 0:
            input = int8_fake_quant_images(input).to(input.dtype)
        int8_activations = False
    args = (
        input,
        packed,
        scales,
        zeros,
        bias,
        bits,
        [_int(v, "weight_shape") for v in weight_shape],
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
        _int(groups, "groups"),
    )
    if input.is_cuda and backends.TRITON_OPS_LOADED:
        from .reference import conv2d_epilogue

        if residual is not None:
            checks.check_conv2d(*args, False, residual)
        return conv2d_epilogue(torch.ops.qpart_triton.conv2d(*args), residual, relu)
    if int8_activations or residual is not None or relu:
        return torch.ops.qpart.conv2d(*args, int8_activations, residual, relu)
    return torch.ops.qpart.conv2d(*args)


def max_pool2d(
    input: torch.Tensor,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
) -> torch.Tensor:
    """``F.max_pool2d(input, kernel_size, stride, padding)`` (dilation 1, floor mode) of an
    NCHW float tensor, with ATen's values bit for bit (NaN propagates; of equal values the
    first in the window's row-major order, so ``-0.0`` vs ``+0.0`` as ATen picks them).

    On CPU it runs QPART's native kernel (several times faster than ATen's NCHW kernel), on
    other devices ATen's. No autograd: use ``F.max_pool2d`` where gradients are needed.
    ``stride`` defaults to ``kernel_size``.
    """
    op = "max_pool2d"
    kernel = _pair(kernel_size, "kernel_size", op)
    strides = kernel if stride is None else _pair(stride, "stride", op)
    return torch.ops.qpart.max_pool2d(input, kernel, strides, _pair(padding, "padding", op))


def quantize_activation(input: torch.Tensor, bits: int, per_token: bool = False) -> QuantizedTensor:
    """Quantizes an activation for transfer: one group per tensor, or per row of the last dim."""
    checks.check_bits("quantize_activation", bits)
    if not isinstance(per_token, bool):
        raise TypeError(f"qpart.quantize_activation: per_token must be a bool, got {per_token!r}")
    return QuantizedTensor(*torch.ops.qpart.quantize_activation(input, bits, per_token))


def dequantize_activation(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Rebuilds an activation of ``shape`` and ``dtype`` from :func:`quantize_activation`."""
    checks.check_bits("dequantize_activation", bits)
    shape = [_int(v, "shape", "dequantize_activation") for v in shape]
    return torch.ops.qpart.dequantize_activation(packed, scales, zeros, bits, list(shape), dtype)
