"""Host wrappers of the Triton kernels: validation, output allocation, grids, launches.

Each function mirrors the schema of the ``qpart`` op of the same name (docs/OPS.md) and
works on any device Triton can target; on CPU tensors it runs under the Triton
interpreter (``TRITON_INTERPRET=1``), which is how the CPU-only CI tests these kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import triton
from torch.library import triton_op, wrap_triton

from ..ops import checks
from ..ops.library import SCHEMAS
from . import kernels
from .configs import (
    batch_bucket,
    conv2d_config,
    interpreter_linear_config,
    linear_autotune_configs,
    prune_linear_configs,
)

#: Namespace of the ``triton_op`` versions of the ops, which torch.compile traces into.
TRITON_NAMESPACE = "qpart_triton"

_ELEMENT_BLOCK = 256


def _quantize_rows(x2d: torch.Tensor, bits: int, group_size: int, op: str):
    """Quantizes a contiguous 2-D float tensor in row groups: (packed, scales, zeros)."""
    x = x2d.contiguous()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"qpart.{op}: input contains NaN or Inf values")
    rows, k = x.shape
    n_groups = rows * (k // group_size)
    qmax = float(2**bits - 1)
    scales = torch.empty(rows, k // group_size, dtype=torch.float16, device=x.device)
    zeros = torch.empty_like(scales, dtype=torch.uint8)
    block = min(1024, triton.next_power_of_2(group_size))
    kernels.group_params_kernel[(n_groups,)](
        x, scales.view(torch.int16), zeros, group_size, qmax, BLOCK=block
    )
    if bool(torch.isinf(scales).any()):
        raise ValueError(
            f"qpart.{op}: a group's value range is too wide for a float16 scale at {bits} bits"
        )
    codes = torch.empty(rows, k, dtype=torch.uint8, device=x.device)
    grid = (n_groups, triton.cdiv(group_size, _ELEMENT_BLOCK))
    kernels.quantize_codes_kernel[grid](
        x, scales, zeros, codes, group_size, qmax, BLOCK=_ELEMENT_BLOCK
    )
    row_bytes = checks.packed_row_bytes(k, bits)
    packed = torch.empty(rows, row_bytes, dtype=torch.uint8, device=x.device)
    kernels.pack_kernel[(rows, triton.cdiv(row_bytes, 64))](
        codes, packed, k, row_bytes, BITS=bits, BLOCK=64
    )
    return packed, scales, zeros


def _dequantize_rows(packed, scales, zeros, bits: int, k: int) -> torch.Tensor:
    rows, groups = scales.shape
    out = torch.empty(rows, k, dtype=torch.float32, device=packed.device)
    grid = (rows, triton.cdiv(k, _ELEMENT_BLOCK))
    wrap_triton(kernels.dequantize_kernel)[grid](
        packed.contiguous(),
        scales.contiguous(),
        zeros.contiguous(),
        out,
        k,
        packed.shape[1],
        k // groups,
        groups,
        BITS=bits,
        BLOCK=_ELEMENT_BLOCK,
    )
    return out


def quantize_weight(weight: torch.Tensor, bits: int, group_size: int):
    """Triton ``qpart.quantize_weight``."""
    checks.check_weight("quantize_weight", weight, bits, group_size)
    return _quantize_rows(weight.to(torch.float32), bits, group_size, "quantize_weight")


def dequantize_weight(
    packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int, in_features: int
) -> torch.Tensor:
    """Triton ``qpart.dequantize_weight``."""
    checks.check_packed("dequantize_weight", packed, scales, zeros, bits, in_features)
    return _dequantize_rows(packed, scales, zeros, bits, in_features)


@functools.cache
def _tuned_linear_kernel(capability_major: int):
    return triton.autotune(
        configs=linear_autotune_configs(capability_major),
        key=["M_BUCKET", "N", "K", "BITS"],
        prune_configs_by={"early_config_prune": prune_linear_configs},
        reset_to_zero=["y_ptr"],
        cache_results=True,
    )(kernels.linear_kernel)


def linear(
    input: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    in_features: int,
    int8_activations: bool = False,
) -> torch.Tensor:
    """Triton ``qpart.linear``: GEMV tiles (optionally split-K) for small batches, ``tl.dot``
    GEMM tiles otherwise; autotuned on GPU. ``int8_activations=True`` is not implemented
    here (``qpart_kernels.linear`` emulates it for non-CPU inputs)."""
    checks.check_linear(input, packed, scales, zeros, bias, bits, in_features, int8_activations)
    if int8_activations:
        raise NotImplementedError(
            "qpart.linear: int8_activations=True has native kernels on CPU only; use "
            "qpart_kernels.linear(..., int8_activations=True), which emulates it elsewhere"
        )
    k, n = in_features, packed.shape[0]
    x = input.reshape(-1, k).contiguous()
    m = x.shape[0]
    # Split-K configs accumulate atomically, so the output starts at zero on GPU.
    y = (torch.zeros if input.is_cuda else torch.empty)(
        m, n, dtype=torch.float32, device=input.device
    )
    if m > 0:
        b = bias.contiguous() if bias is not None else y
        args = (
            x,
            packed.contiguous(),
            scales.contiguous(),
            zeros.contiguous(),
            b,
            y,
            m,
            n,
            k,
            packed.shape[1],
            k // scales.shape[1],
            scales.shape[1],
            batch_bucket(m),
        )
        if input.is_cuda:
            kernel = _tuned_linear_kernel(torch.cuda.get_device_capability(input.device)[0])

            def grid(meta):
                return (
                    triton.cdiv(m, meta["BLOCK_M"]),
                    triton.cdiv(n, meta["BLOCK_N"]),
                    meta["SPLIT_K"],
                )

            wrap_triton(kernel)[grid](*args, BITS=bits, HAS_BIAS=bias is not None)
        else:
            cfg = interpreter_linear_config(m)
            grid = (triton.cdiv(m, cfg.block_m), triton.cdiv(n, cfg.block_n), cfg.split_k)
            wrap_triton(kernels.linear_kernel)[grid](
                *args,
                BITS=bits,
                HAS_BIAS=bias is not None,
                USE_DOT=cfg.use_dot,
                BLOCK_M=cfg.block_m,
                BLOCK_N=cfg.block_n,
                BLOCK_K=cfg.block_k,
                SPLIT_K=cfg.split_k,
            )
    return y.reshape(*input.shape[:-1], n).to(input.dtype)


def conv2d(
    input: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    int8_activations: bool = False,
) -> torch.Tensor:
    """Triton ``qpart.conv2d`` as an implicit GEMM over the packed weight.
    ``int8_activations=True`` is not implemented here (``qpart_kernels.conv2d`` emulates it
    for non-CPU inputs)."""
    ho, wo = checks.check_conv2d(
        input, packed, scales, zeros, bias, bits, weight_shape, stride, padding, dilation, groups
    )
    if int8_activations:
        raise NotImplementedError(
            "qpart.conv2d: int8_activations=True has native kernels on CPU only; use "
            "qpart_kernels.conv2d(..., int8_activations=True), which emulates it elsewhere"
        )
    c_out, c_per_group, kh, kw = (int(v) for v in weight_shape)
    batch, c_in, h, w = input.shape
    x = input.contiguous()
    y = torch.empty(batch, c_out, ho, wo, dtype=torch.float32, device=input.device)
    m, k, out_per_group = batch * ho * wo, c_per_group * kh * kw, c_out // groups
    cfg = conv2d_config(m, out_per_group, k, input.device)
    grid = (triton.cdiv(m, cfg.block_m), triton.cdiv(out_per_group, cfg.block_n), groups)
    b = bias.contiguous() if bias is not None else y
    wrap_triton(kernels.conv2d_kernel)[grid](
        x,
        packed.contiguous(),
        scales.contiguous(),
        zeros.contiguous(),
        b,
        y,
        c_in,
        h,
        w,
        c_out,
        ho,
        wo,
        m,
        c_per_group,
        out_per_group,
        k,
        packed.shape[1],
        k // scales.shape[1],
        scales.shape[1],
        KH=kh,
        KW=kw,
        stride_h=stride[0],
        stride_w=stride[1],
        pad_h=padding[0],
        pad_w=padding[1],
        dil_h=dilation[0],
        dil_w=dilation[1],
        BITS=bits,
        HAS_BIAS=bias is not None,
        USE_DOT=cfg.use_dot,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k,
    )
    return y.to(input.dtype)


def quantize_activation(input: torch.Tensor, bits: int, per_token: bool):
    """Triton ``qpart.quantize_activation``."""
    from ..ops.reference import activation_rows

    op = "quantize_activation"
    checks.check_bits(op, bits)
    checks.check_float(op, "input", input)
    checks.check_nonempty(op, "input", input)
    rows, k = activation_rows(input, per_token)
    return _quantize_rows(input.reshape(rows, k).to(torch.float32), bits, k, op)


def dequantize_activation(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    shape: Sequence[int],
    dtype: torch.dtype,
) -> torch.Tensor:
    """Triton ``qpart.dequantize_activation``."""
    checks.check_output_dtype("dequantize_activation", dtype)
    k = checks.check_activation_packed(packed, scales, zeros, bits, shape)
    return _dequantize_rows(packed, scales, zeros, bits, k).reshape(list(shape)).to(dtype)


def _as_triton_op(name: str, fn):
    schema = "(" + SCHEMAS[name].split("(", 1)[1]
    return triton_op(f"{TRITON_NAMESPACE}::{name}", fn, mutates_args=(), schema=schema)


# The forward-path ops as ``triton_op``s: torch.compile sees the Triton kernels inside them
# (the quantizers check their input for NaN on the host, so they stay plain functions).
linear_op = _as_triton_op("linear", linear)
conv2d_op = _as_triton_op("conv2d", conv2d)
dequantize_weight_op = _as_triton_op("dequantize_weight", dequantize_weight)
dequantize_activation_op = _as_triton_op("dequantize_activation", dequantize_activation)
