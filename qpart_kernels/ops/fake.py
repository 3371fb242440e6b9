"""Fake (meta) kernels: output shapes and dtypes of every ``qpart`` op, for tracing."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import checks
from .library import qualified


def _quantized_outputs(
    like: torch.Tensor, rows: int, k: int, groups: int, bits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        like.new_empty((rows, checks.packed_row_bytes(k, bits)), dtype=torch.uint8),
        like.new_empty((rows, groups), dtype=torch.float16),
        like.new_empty((rows, groups), dtype=torch.uint8),
    )


@torch.library.register_fake(qualified("quantize_weight"))
def _quantize_weight(weight: torch.Tensor, bits: int, group_size: int):
    checks.check_weight("quantize_weight", weight, bits, group_size)
    n, k = weight.shape
    return _quantized_outputs(weight, n, k, k // group_size, bits)


@torch.library.register_fake(qualified("dequantize_weight"))
def _dequantize_weight(packed, scales, zeros, bits: int, in_features: int):
    checks.check_packed("dequantize_weight", packed, scales, zeros, bits, in_features)
    return packed.new_empty((packed.shape[0], in_features), dtype=torch.float32)


@torch.library.register_fake(qualified("linear"))
def _linear(
    input, packed, scales, zeros, bias, bits: int, in_features: int, int8_activations: bool = False
):
    checks.check_linear(input, packed, scales, zeros, bias, bits, in_features, int8_activations)
    return input.new_empty((*input.shape[:-1], packed.shape[0]))


@torch.library.register_fake(qualified("conv2d"))
def _conv2d(
    input,
    packed,
    scales,
    zeros,
    bias,
    bits: int,
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    int8_activations: bool = False,
    residual=None,
    relu: bool = False,
):
    ho, wo = checks.check_conv2d(
        input,
        packed,
        scales,
        zeros,
        bias,
        bits,
        weight_shape,
        stride,
        padding,
        dilation,
        groups,
        int8_activations,
        residual,
    )
    return input.new_empty((input.shape[0], packed.shape[0], ho, wo))


@torch.library.register_fake(qualified("quantize_activation"))
def _quantize_activation(input, bits: int, per_token: bool):
    from .reference import activation_rows

    checks.check_bits("quantize_activation", bits)
    checks.check_float("quantize_activation", "input", input)
    checks.check_nonempty("quantize_activation", "input", input)
    rows, k = activation_rows(input, per_token)
    return _quantized_outputs(input, rows, k, 1, bits)


@torch.library.register_fake(qualified("dequantize_activation"))
def _dequantize_activation(packed, scales, zeros, bits: int, shape: Sequence[int], dtype):
    checks.check_output_dtype("dequantize_activation", dtype)
    checks.check_activation_packed(packed, scales, zeros, bits, shape)
    return packed.new_empty(list(shape), dtype=dtype)


@torch.library.register_fake(qualified("max_pool2d"))
def _max_pool2d(input, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int]):
    ho, wo = checks.check_max_pool2d(input, kernel_size, stride, padding)
    return input.new_empty((input.shape[0], input.shape[1], ho, wo))
