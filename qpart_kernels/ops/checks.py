"""Input validation shared by the reference and fake kernels and the public wrappers.

Every check raises ``ValueError`` (bad values or shapes) or ``TypeError`` (bad dtypes) with a
message that names the op and the offending argument, so bad input never reaches a kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MIN_BITS = 1
MAX_BITS = 8
GROUP_MULTIPLE = 32
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


#: Largest weight group the integer path (``int8_activations=True``) accepts (kMaxI8GroupSize).
MAX_INT8_GROUP_SIZE = 65536


def _is_int(value: object) -> bool:
    """True for Python ints and symbolic ints (traced sizes), false for bools."""
    return isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool)


#: Largest conv2d stride, padding or dilation (``op_checks::kMaxConvParam``): larger ones have
#: no use and torch's own convolution (oneDNN) fails on some, so native and reference reject them.
MAX_CONV_PARAM = 2**31 - 1

#: Bounds of the native ops' int64 sizes; every size computed from user input must fit.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def checked(op: str, what: str, value: int) -> int:
    """``value`` if it fits in int64, else the native ops' ``ValueError`` ("overflows int64").

    Python ints never overflow, so the reference applies the bounds of the C++ checks
    (csrc/torch/op_checks.h) explicitly: native and reference accept the same inputs.
    """
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"qpart.{op}: {what} ({value}) overflows int64")
    return value


def packed_row_bytes(k: int, bits: int, op: str = "packed_row_bytes") -> int:
    """Bytes of one packed row of ``k`` codes at ``bits`` bits: ``ceil(k * bits / 8)``."""
    return checked(op, "packed row bits", checked(op, "packed row bits", k * bits) + 7) // 8


def conv_output_size(op: str, size: int, kernel: int, stride: int, pad: int, dil: int) -> int:
    """Output size of one convolution dimension (floor semantics, int64-checked; 0: too small).

    Same as ``op_checks::conv_output_size``: the padded input must hold the dilated kernel.
    """
    padded = checked(op, "padded input size", size + checked(op, "padding", 2 * pad))
    span = checked(
        op, "dilated kernel size", checked(op, "dilated kernel size", dil * (kernel - 1)) + 1
    )
    if padded < span:
        return 0
    return (padded - span) // stride + 1


def check_bits(op: str, bits: int) -> None:
    """Bits must be an int in 1..8."""
    if not _is_int(bits):
        raise TypeError(f"qpart.{op}: bits must be an int in 1..8, got {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"qpart.{op}: bits must be in 1..8, got {bits}")


def check_float(op: str, name: str, t: torch.Tensor) -> None:
    """``t`` must be a float32/float16/bfloat16 tensor."""
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"qpart.{op}: {name} must be float32, float16 or bfloat16, got {t.dtype}")


def check_nonempty(op: str, name: str, t: torch.Tensor) -> None:
    """``t`` must have at least one element."""
    if t.numel() == 0:
        raise ValueError(f"qpart.{op}: {name} is empty (shape {tuple(t.shape)})")


def check_group_size(op: str, k: int, group_size: int) -> None:
    """A group size must divide ``k`` and be ``k`` itself or a multiple of 32."""
    if not _is_int(group_size):
        raise TypeError(f"qpart.{op}: group_size must be an int, got {group_size!r}")
    if group_size <= 0 or k % group_size != 0:
        raise ValueError(
            f"qpart.{op}: group_size {group_size} must be positive and divide the "
            f"reduction size {k}"
        )
    if group_size != k and group_size % GROUP_MULTIPLE != 0:
        raise ValueError(
            f"qpart.{op}: group_size {group_size} must be a multiple of {GROUP_MULTIPLE} "
            f"(or equal the reduction size {k} for one group per row)"
        )


def check_same_device(op: str, **tensors: torch.Tensor | None) -> None:
    """All given tensors must live on one device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"qpart.{op}: tensors must be on one device, got {listing}")


def check_packed(
    op: str,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    k: int,
) -> int:
    """Checks a packed weight of ``k`` columns; returns its group size."""
    check_bits(op, bits)
    check_same_device(op, packed=packed, scales=scales, zeros=zeros)
    if packed.dtype != torch.uint8:
        raise TypeError(f"qpart.{op}: packed weight must be uint8, got {packed.dtype}")
    if scales.dtype != torch.float16:
        raise TypeError(f"qpart.{op}: scales must be float16, got {scales.dtype}")
    if zeros.dtype != torch.uint8:
        raise TypeError(f"qpart.{op}: zeros must be uint8, got {zeros.dtype}")
    if packed.dim() != 2 or scales.dim() != 2 or zeros.dim() != 2:
        raise ValueError(
            f"qpart.{op}: packed weight, scales and zeros must be 2-D, got shapes "
            f"{tuple(packed.shape)}, {tuple(scales.shape)}, {tuple(zeros.shape)}"
        )
    check_nonempty(op, "packed weight", packed)
    if k <= 0:
        raise ValueError(f"qpart.{op}: the reduction size must be positive, got {k}")
    n = packed.shape[0]
    expected = packed_row_bytes(k, bits, op)
    if packed.shape[1] != expected:
        raise ValueError(
            f"qpart.{op}: packed weight has {packed.shape[1]} bytes per row but {k} "
            f"columns at {bits} bits need {expected}"
        )
    if scales.shape != zeros.shape or scales.shape[0] != n:
        raise ValueError(
            f"qpart.{op}: scales {tuple(scales.shape)} and zeros {tuple(zeros.shape)} must "
            f"both be ({n}, groups)"
        )
    groups = scales.shape[1]
    if groups <= 0 or k % groups != 0:
        raise ValueError(f"qpart.{op}: {groups} groups per row do not divide {k} columns")
    group_size = k // groups
    check_group_size(op, k, group_size)
    return group_size


def check_bias(op: str, bias: torch.Tensor | None, n: int) -> None:
    """An optional bias must be a float vector of ``n`` elements."""
    if bias is None:
        return
    check_float(op, "bias", bias)
    if bias.dim() != 1 or bias.shape[0] != n:
        raise ValueError(f"qpart.{op}: bias must have shape ({n},), got {tuple(bias.shape)}")


def check_linear(
    input: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    in_features: int,
    int8_activations: bool = False,
) -> None:
    """Validates the arguments of ``qpart.linear``."""
    check_same_device("linear", input=input, packed=packed, scales=scales, zeros=zeros, bias=bias)
    check_float("linear", "input", input)
    if input.dim() < 1:
        raise ValueError("qpart.linear: input must have at least one dimension")
    if input.shape[-1] != in_features:
        raise ValueError(
            f"qpart.linear: input has {input.shape[-1]} features in its last dimension but "
            f"the weight has in_features={in_features}"
        )
    check_packed("linear", packed, scales, zeros, bits, in_features)
    check_bias("linear", bias, packed.shape[0])
    if int8_activations:
        check_int8_group_size("linear", in_features // scales.shape[1])


def check_int8_group_size(op: str, group_size: int) -> None:
    """The integer paths keep their group sums exact in int32: at most 65536 codes a group."""
    if group_size > MAX_INT8_GROUP_SIZE:
        raise ValueError(
            f"qpart.{op}: int8_activations=True needs groups of at most "
            f"{MAX_INT8_GROUP_SIZE} inputs (exact int32 group sums), got {group_size}; "
            "quantize the weight with a smaller group_size"
        )


def check_int8_scales(scales: torch.Tensor, op: str = "linear") -> None:
    """The integer path (``int8_activations=True``) needs finite weight scales.

    Its per-group folding ``scale_w * (sum q*code - zero * sum q)`` cannot give the
    reference's per-term Inf/NaN, so both reject such weights (a value check: not traced).
    """
    if not bool(torch.isfinite(scales).all()):
        raise ValueError(f"qpart.{op}: int8_activations=True needs finite weight scales")


def conv2d_output_hw(
    h: int,
    w: int,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, int]:
    """Output height and width of a 2-D convolution (0 where the input is too small)."""
    ho = conv_output_size("conv2d", h, kernel[0], stride[0], padding[0], dilation[0])
    wo = conv_output_size("conv2d", w, kernel[1], stride[1], padding[1], dilation[1])
    return ho, wo


def check_conv2d(
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
) -> tuple[int, int]:
    """Validates the arguments of ``qpart.conv2d``; returns the output (height, width)."""
    op = "conv2d"
    check_same_device(op, input=input, packed=packed, scales=scales, zeros=zeros, bias=bias)
    check_float(op, "input", input)
    if input.dim() != 4:
        raise ValueError(f"qpart.conv2d: input must be 4-D (N, C, H, W), got {tuple(input.shape)}")
    if len(weight_shape) != 4 or any(v < 1 for v in weight_shape):
        raise ValueError(
            f"qpart.conv2d: weight_shape must be 4 positive ints (out, in/groups, kh, kw), "
            f"got {list(weight_shape)}"
        )
    kernel_size = list(weight_shape[2:])
    for name, pair, low in (
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        if len(pair) != 2 or any(v < low for v in pair):
            raise ValueError(f"qpart.conv2d: {name} must be two ints >= {low}, got {list(pair)}")
    for pair in (stride, padding, dilation):
        if any(v > MAX_CONV_PARAM for v in pair):
            raise ValueError(
                f"qpart.conv2d: stride, padding and dilation must be at most {MAX_CONV_PARAM}, "
                f"got stride {list(stride)}, padding {list(padding)}, dilation {list(dilation)}"
            )
    c_in = input.shape[1]
    if groups < 1 or c_in % groups != 0:
        raise ValueError(
            f"qpart.conv2d: groups {groups} must be >= 1 and divide {c_in} input channels"
        )
    if c_in // groups != weight_shape[1]:
        raise ValueError(
            f"qpart.conv2d: input has {c_in} channels, so {c_in // groups} per group, but the "
            f"weight expects {weight_shape[1]} per group (weight_shape {list(weight_shape)})"
        )
    what = "weight row length"
    k = checked(op, what, checked(op, what, weight_shape[1] * kernel_size[0]) * kernel_size[1])
    check_packed(op, packed, scales, zeros, bits, k)
    c_out = packed.shape[0]
    if c_out != weight_shape[0]:
        raise ValueError(
            f"qpart.conv2d: packed weight has {c_out} rows but weight_shape says {weight_shape[0]}"
        )
    if c_out % groups != 0:
        raise ValueError(f"qpart.conv2d: groups {groups} must divide {c_out} output channels")
    check_bias(op, bias, c_out)
    if int8_activations:
        check_int8_group_size(op, k // scales.shape[1])
    ho, wo = conv2d_output_hw(
        input.shape[2], input.shape[3], kernel_size, stride, padding, dilation
    )
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"qpart.conv2d: input {tuple(input.shape[2:])} is too small for kernel "
            f"{list(kernel_size)} with padding {list(padding)} and dilation {list(dilation)}"
        )
    what = "output size"
    checked(op, what, checked(op, what, checked(op, what, input.shape[0] * c_out) * ho) * wo)
    if residual is not None:
        check_same_device(op, input=input, residual=residual)
        if residual.dtype != input.dtype:
            raise ValueError(
                f"qpart.conv2d: residual must have the input's dtype {input.dtype}, "
                f"got {residual.dtype}"
            )
        want = (input.shape[0], c_out, ho, wo)
        if tuple(residual.shape) != want:
            raise ValueError(
                f"qpart.conv2d: residual must have the output's shape {want}, "
                f"got {tuple(residual.shape)}"
            )
    return ho, wo


def check_max_pool2d(
    input: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
) -> tuple[int, int]:
    """Validates the arguments of ``qpart.max_pool2d``; returns the output (height, width).

    Accepts what ATen's ``max_pool2d`` accepts for a 4-D input (dilation 1, floor mode):
    kernel and stride >= 1, 0 <= padding <= kernel / 2, non-empty channels and planes (an
    empty batch is fine) and at least one output row and column.
    """
    op = "max_pool2d"
    check_float(op, "input", input)
    if input.dim() != 4:
        raise ValueError(
            f"qpart.max_pool2d: input must be 4-D (N, C, H, W), got {tuple(input.shape)}"
        )
    for name, pair, low in (
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
    ):
        if len(pair) != 2 or any(v < low or v > MAX_CONV_PARAM for v in pair):
            raise ValueError(
                f"qpart.max_pool2d: {name} must be two ints in {low}..{MAX_CONV_PARAM}, "
                f"got {list(pair)}"
            )
    if any(2 * p > k for p, k in zip(padding, kernel_size)):
        raise ValueError(
            f"qpart.max_pool2d: padding {list(padding)} must be at most half the kernel "
            f"size {list(kernel_size)}"
        )
    if any(v == 0 for v in input.shape[1:]):
        raise ValueError(
            f"qpart.max_pool2d: input must have non-empty channels and planes, "
            f"got {tuple(input.shape)}"
        )
    ho = conv_output_size(op, input.shape[2], kernel_size[0], stride[0], padding[0], 1)
    wo = conv_output_size(op, input.shape[3], kernel_size[1], stride[1], padding[1], 1)
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"qpart.max_pool2d: input {tuple(input.shape[2:])} is too small for kernel "
            f"{list(kernel_size)} with padding {list(padding)}"
        )
    return ho, wo


def check_weight(op: str, weight: torch.Tensor, bits: int, group_size: int) -> None:
    """Validates a float weight matrix to quantize (finiteness is checked by the kernels)."""
    check_bits(op, bits)
    check_float(op, "weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"qpart.{op}: weight must be 2-D (out, in), got {tuple(weight.shape)}")
    check_nonempty(op, "weight", weight)
    check_group_size(op, weight.shape[1], group_size)


def check_activation_packed(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    shape: Sequence[int],
) -> int:
    """Validates a packed activation against its original shape; returns its row length."""
    op = "dequantize_activation"
    numel = 1
    for d in shape:
        if d < 0:
            raise ValueError(f"qpart.{op}: shape {list(shape)} has a negative size")
        numel = checked(op, "shape size", numel * d)
    if numel == 0:
        raise ValueError(f"qpart.{op}: shape {list(shape)} is empty")
    if scales.dim() != 2 or scales.shape[1] != 1:
        raise ValueError(f"qpart.{op}: scales must have shape (rows, 1), got {tuple(scales.shape)}")
    rows = scales.shape[0]
    if rows <= 0 or numel % rows != 0:
        raise ValueError(
            f"qpart.{op}: {rows} rows do not divide the {numel} elements of {list(shape)}"
        )
    k = numel // rows
    check_packed(op, packed, scales, zeros, bits, k)
    return k


def check_output_dtype(op: str, dtype: torch.dtype) -> None:
    """An output dtype must be float32, float16 or bfloat16."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"qpart.{op}: dtype must be float32, float16 or bfloat16, got {dtype}")
