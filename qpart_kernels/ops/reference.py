"""Pure-PyTorch reference implementation of every ``qpart`` op.

This module is the test oracle for every backend and the fallback implementation on any
device without a native kernel. It follows docs/FORMAT.md literally and favours clarity
over speed; results of the quantizer and the packers are bit-exact with the C++ kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import checks

_ROW_CHUNK = 1024  # rows processed at once, to bound the temporaries of bit (un)packing


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Packs a ``(rows, k)`` uint8 code matrix into dense LSB-first rows of ``bits`` bits."""
    rows, k = codes.shape
    row_bytes = checks.packed_row_bytes(k, bits)
    out = torch.empty(rows, row_bytes, dtype=torch.uint8, device=codes.device)
    shifts = torch.arange(bits, dtype=torch.uint8, device=codes.device)
    for start in range(0, rows, _ROW_CHUNK):
        chunk = codes[start : start + _ROW_CHUNK]
        n = chunk.shape[0]
        stream = ((chunk.unsqueeze(-1) >> shifts) & 1).reshape(n, k * bits)
        stream = F.pad(stream, (0, row_bytes * 8 - k * bits)).reshape(n, row_bytes, 8)
        packed = torch.zeros(n, row_bytes, dtype=torch.uint8, device=codes.device)
        for i in range(8):
            packed |= stream[..., i] << i
        out[start : start + n] = packed
    return out


def unpack_codes(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: returns the ``(rows, k)`` uint8 codes."""
    rows = packed.shape[0]
    out = torch.empty(rows, k, dtype=torch.uint8, device=packed.device)
    byte_shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    for start in range(0, rows, _ROW_CHUNK):
        chunk = packed[start : start + _ROW_CHUNK]
        n = chunk.shape[0]
        stream = ((chunk.unsqueeze(-1) >> byte_shifts) & 1).reshape(n, -1)
        code_bits = stream[:, : k * bits].reshape(n, k, bits)
        codes = torch.zeros(n, k, dtype=torch.uint8, device=packed.device)
        for i in range(bits):
            codes |= code_bits[..., i] << i
        out[start : start + n] = codes
    return out


def _round_up_to_half(delta: torch.Tensor) -> torch.Tensor:
    """Smallest float16 value >= ``delta`` (float32, non-negative)."""
    half = delta.to(torch.float16)
    bump = (half.to(torch.float32) < delta).to(torch.int16)
    return (half.view(torch.int16) + bump).view(torch.float16)


def quantize_groups(
    x: torch.Tensor, bits: int, group_size: int, op: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantizes a 2-D float tensor in groups along its rows; returns (packed, scales, zeros)."""
    rows, k = x.shape
    x = x.to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"qpart.{op}: input contains NaN or Inf values")
    g = x.reshape(rows, k // group_size, group_size)
    lo = g.amin(dim=-1).clamp(max=0.0)
    hi = g.amax(dim=-1).clamp(min=0.0)
    qmax = float(2**bits - 1)
    all_zero = hi == lo
    scales = _round_up_to_half((hi - lo) / qmax)
    if bool((torch.isinf(scales) & ~all_zero).any()):
        raise ValueError(
            f"qpart.{op}: a group's value range is too wide for a float16 scale at {bits} bits"
        )
    # A non-zero group whose step underflows fp32 still gets the smallest fp16 step (2^-24).
    tiny = (scales == 0) & ~all_zero
    scales = torch.where(tiny, torch.full_like(scales, 2.0**-24), scales)
    scales = torch.where(all_zero, torch.zeros_like(scales), scales)
    safe = torch.where(all_zero, torch.ones_like(lo), scales.to(torch.float32))
    zeros = torch.round(-lo / safe).clamp(0.0, qmax)
    zeros = torch.where(all_zero, torch.zeros_like(zeros), zeros)
    codes = (torch.round(g / safe.unsqueeze(-1)) + zeros.unsqueeze(-1)).clamp(0.0, qmax)
    codes = torch.where(all_zero.unsqueeze(-1), torch.zeros_like(codes), codes)
    codes = codes.to(torch.uint8).reshape(rows, k)
    return pack_codes(codes, bits), scales, zeros.to(torch.uint8)


def dequantize_groups(
    packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int, k: int
) -> torch.Tensor:
    """Dequantizes packed rows to a float32 ``(rows, k)`` tensor."""
    rows, groups = scales.shape
    codes = unpack_codes(packed, bits, k).to(torch.float32).reshape(rows, groups, k // groups)
    values = (codes - zeros.to(torch.float32).unsqueeze(-1)) * scales.to(torch.float32).unsqueeze(
        -1
    )
    return values.reshape(rows, k)


def quantize_weight(
    weight: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference ``qpart.quantize_weight``."""
    checks.check_weight("quantize_weight", weight, bits, group_size)
    return quantize_groups(weight, bits, group_size, "quantize_weight")


def dequantize_weight(
    packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int, in_features: int
) -> torch.Tensor:
    """Reference ``qpart.dequantize_weight``."""
    checks.check_packed("dequantize_weight", packed, scales, zeros, bits, in_features)
    return dequantize_groups(packed, scales, zeros, bits, in_features)


def quantize_activations_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (last dim) symmetric int8 quantization of the integer linear path.

    Returns ``(q, scale)`` with ``scale = max|x| / 127`` per row (0 for an all-zero row,
    shape ``(..., 1)``) and ``q = clamp(round(x / scale), -127, 127)`` (round half to even,
    true division) as float32 integers - bit-exact with the C++ quantizer. Raises on NaN/Inf.
    """
    x = x.to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("qpart.linear: input contains NaN or Inf values (int8_activations=True)")
    scale = x.abs().amax(dim=-1, keepdim=True) / 127.0
    nonzero = scale > 0
    q = torch.round(x / torch.where(nonzero, scale, torch.ones_like(scale))).clamp(-127.0, 127.0)
    return torch.where(nonzero, q, torch.zeros_like(q)), scale


def int8_fake_quant(x: torch.Tensor) -> torch.Tensor:
    """``q * scale`` of :func:`quantize_activations_int8` (float32)."""
    q, scale = quantize_activations_int8(x)
    return q * scale


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
    """Reference ``qpart.linear``: dequantize, then an fp32 ``F.linear``.

    With ``int8_activations`` the input is first quantized per row to int8
    (:func:`quantize_activations_int8`), i.e. ``F.linear(q * scale_x, W)`` - the same value
    the integer kernels compute exactly in int32 per group, up to float rounding.
    """
    checks.check_linear(input, packed, scales, zeros, bias, bits, in_features, int8_activations)
    if int8_activations:
        checks.check_int8_scales(scales)
    weight = dequantize_groups(packed, scales, zeros, bits, in_features)
    b = None if bias is None else bias.to(torch.float32)
    x = int8_fake_quant(input) if int8_activations else input.to(torch.float32)
    return F.linear(x, weight, b).to(input.dtype)


def quantize_images_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image symmetric int8 quantization of the integer conv2d path.

    ``x`` is ``(N, ...)``; each image ``x[n]`` gets ``scale = max|x[n]| / 127`` (0 for an all-zero
    image, shape ``(N,)``) and ``q = clamp(round(x / scale), -127, 127)`` (round half to even,
    true division) as float32 integers - the per-row quantizer of the linear path applied to
    each flattened image, bit-exact with the C++ one. Raises on NaN/Inf.
    """
    x = x.to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("qpart.conv2d: input contains NaN or Inf values (int8_activations=True)")
    q, scale = quantize_activations_int8(x.reshape(x.shape[0], -1))
    return q.reshape(x.shape), scale.reshape(-1)


def int8_fake_quant_images(x: torch.Tensor) -> torch.Tensor:
    """``q * scale`` of :func:`quantize_images_int8` (float32, the shape of ``x``)."""
    q, scale = quantize_images_int8(x)
    return q * scale.reshape(-1, *([1] * (x.dim() - 1)))


def _conv2d_int8(
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
) -> torch.Tensor:
    """The integer conv2d, bit-exact with the native kernels (docs/OPS.md).

    Integer sums are formed in float64 (exact: every partial sum is an integer below 2^53),
    then the float32 epilogue runs in the kernels' order with one rounding per operation:
    ``a = 0; a = a + float32(d_g) * scale_w[g] for each group g; y = a * scale_x + bias``.
    """
    n = input.shape[0]
    c_out, cg, kh, kw = (int(v) for v in weight_shape)
    k = cg * kh * kw
    wg = scales.shape[1]
    gs, opg = k // wg, c_out // groups
    q, sx = quantize_images_int8(input)
    cols = F.unfold(
        q.to(torch.float64), (kh, kw), list(dilation), list(padding), list(stride)
    )  # (N, C * kh * kw, L) in (channel, r, s) order: the packed row order per group
    pixels = cols.shape[-1]
    cols = cols.reshape(n, groups, wg, gs, pixels)
    codes = unpack_codes(packed, bits, k).to(torch.float64).reshape(groups, opg, wg, gs)
    dot = torch.einsum("gows,ngwsl->ngowl", codes, cols)
    gsum = cols.sum(dim=3).unsqueeze(2)  # (N, groups, 1, wg, L)
    z = zeros.to(torch.float64).reshape(1, groups, opg, wg, 1)
    d = (dot - z * gsum).to(torch.float32)  # exact integers, rounded once to float32
    sw = scales.to(torch.float32).reshape(1, groups, opg, wg, 1)
    acc = torch.zeros(n, groups, opg, pixels, dtype=torch.float32, device=input.device)
    for g in range(wg):
        acc = acc + d[:, :, :, g] * sw[:, :, :, g]
    y = acc.reshape(n, c_out, pixels) * sx.reshape(n, 1, 1)
    b = torch.zeros(c_out, device=input.device) if bias is None else bias.to(torch.float32)
    y = y + b.reshape(1, c_out, 1)
    ho, wo = checks.conv2d_output_hw(
        input.shape[2], input.shape[3], (kh, kw), stride, padding, dilation
    )
    return y.reshape(n, c_out, ho, wo).to(input.dtype)


def conv2d_epilogue(out: torch.Tensor, residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """What ``qpart.conv2d`` does after the convolution: ``out + residual``, then ReLU - the
    same values as a separate add and ``torch.relu``."""
    if residual is not None:
        out = out + residual
    return torch.relu(out) if relu else out


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
    residual: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """Reference ``qpart.conv2d``: dequantize, then an fp32 ``F.conv2d``; then the epilogue
    (:func:`conv2d_epilogue`: ``+ residual``, ReLU).

    With ``int8_activations`` each image is quantized to int8 (:func:`quantize_images_int8`)
    and the integer arithmetic of the native kernels is reproduced bit for bit
    (:func:`_conv2d_int8`); its value is ``F.conv2d(q * scale_x, W)`` up to float rounding.
    """
    checks.check_conv2d(
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
    if int8_activations:
        checks.check_int8_scales(scales, "conv2d")
        if input.shape[0] == 0:
            ho, wo = checks.conv2d_output_hw(
                input.shape[2], input.shape[3], weight_shape[2:], stride, padding, dilation
            )
            return input.new_empty((0, packed.shape[0], ho, wo))
        out = _conv2d_int8(
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
        )
        return conv2d_epilogue(out, residual, relu)
    c_out, c_in_per_group, kh, kw = weight_shape
    k = c_in_per_group * kh * kw
    weight = dequantize_groups(packed, scales, zeros, bits, k).reshape(
        c_out, c_in_per_group, kh, kw
    )
    b = None if bias is None else bias.to(torch.float32)
    out = F.conv2d(
        input.to(torch.float32), weight, b, list(stride), list(padding), list(dilation), groups
    )
    return conv2d_epilogue(out.to(input.dtype), residual, relu)


def activation_rows(input: torch.Tensor, per_token: bool) -> tuple[int, int]:
    """(rows, row length) of the 2-D view an activation is quantized in."""
    if per_token and input.dim() >= 1:
        k = input.shape[-1]
        return input.numel() // k, k
    return 1, input.numel()


def quantize_activation(
    input: torch.Tensor, bits: int, per_token: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference ``qpart.quantize_activation`` (per tensor, or per row of the last dim)."""
    op = "quantize_activation"
    checks.check_bits(op, bits)
    checks.check_float(op, "input", input)
    checks.check_nonempty(op, "input", input)
    rows, k = activation_rows(input, per_token)
    return quantize_groups(input.reshape(rows, k), bits, k, op)


def dequantize_activation(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    shape: Sequence[int],
    dtype: torch.dtype,
) -> torch.Tensor:
    """Reference ``qpart.dequantize_activation``."""
    checks.check_output_dtype("dequantize_activation", dtype)
    k = checks.check_activation_packed(packed, scales, zeros, bits, shape)
    return dequantize_groups(packed, scales, zeros, bits, k).reshape(list(shape)).to(dtype)


def max_pool2d(
    input: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
) -> torch.Tensor:
    """ATen's ``max_pool2d`` (dilation 1, floor mode) after QPART's checks."""
    checks.check_max_pool2d(input, kernel_size, stride, padding)
    out = torch.ops.aten.max_pool2d(
        input, list(kernel_size), list(stride), list(padding), [1, 1], False
    )
    return out.contiguous()  # NCHW, as the native kernel and the fake kernel give it
