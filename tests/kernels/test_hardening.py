"""Hardening of the ops (issue 18): checked geometry, floor semantics, real-int ``bits``,
and the reference's IEEE semantics for NaN/Inf on every CPU ISA.

Every reproducer of the issue is a test: it crashed (SIGSEGV) or was silently accepted before.
Native and reference must accept exactly the same inputs and raise the same error type.
"""

from __future__ import annotations

import pytest
import torch

import qpart_kernels as qk
from qpart_kernels.ops import checks, reference

INF = float("inf")
NAN = float("nan")


def _both(native, ref):
    """(native outcome, reference outcome): a tensor or the exception type."""
    out = []
    for fn in (native, ref):
        try:
            out.append(fn())
        except (ValueError, TypeError, RuntimeError) as exc:
            out.append(type(exc))
    return out


def _conv_native_and_ref(x, q, bits, weight_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    def native():
        return torch.ops.qpart.conv2d(
            x, *q, None, bits, list(weight_shape), list(stride), list(padding), list(dilation), 1
        )

    def ref():
        return reference.conv2d(
            x, *q, None, bits, list(weight_shape), list(stride), list(padding), list(dilation), 1
        )

    return _both(native, ref)


# ---- item 1: checked geometry ---------------------------------------------------------------


def test_conv2d_dilation_overflow_is_rejected(isa):
    """Issue reproducer: ``dilation*(k-1)`` wrapped around int64 and crashed AVX2/AVX-512."""
    q = qk.quantize_weight(torch.randn(4, 8), 4)
    with pytest.raises(ValueError, match="at most 2147483647"):
        qk.conv2d(torch.randn(1, 2, 9, 10), *q, 4, (4, 2, 4, 1), dilation=(6148914691236517206, 1))


def test_conv2d_kernel_size_overflow_is_rejected(isa):
    """Issue reproducer: ``c*kh*kw`` wrapped (SIGSEGV on scalar, a wrong shape on AVX2)."""
    q = qk.quantize_weight(torch.randn(1, 2), 4)
    with pytest.raises(ValueError, match="overflows int64"):
        qk.conv2d(torch.randn(1, 1, 4, 4), *q, 4, (1, 1, 3, 6148914691236517206), dilation=(1, 3))


def test_conv2d_huge_dilation_on_small_input_is_rejected(isa):
    """A 5x5 kernel with dilation 2**62 on an 8x8 input was silently accepted."""
    q = qk.quantize_weight(torch.randn(2, 25), 4)
    native, ref = _conv_native_and_ref(
        torch.randn(1, 1, 8, 8), q, 4, (2, 1, 5, 5), dilation=(2**62, 1)
    )
    assert native is ValueError and ref is ValueError


@pytest.mark.parametrize("pad", [2**62, 2**62 - 1, 2**61])
def test_conv2d_padding_overflow_is_rejected(isa, pad):
    q = qk.quantize_weight(torch.randn(2, 9), 4)
    native, ref = _conv_native_and_ref(
        torch.randn(1, 1, 4, 4), q, 4, (2, 1, 3, 3), padding=(pad, 0)
    )
    assert native is ValueError and ref is ValueError


@pytest.mark.parametrize("big", [2**31, 2**62, 2**63 - 1])
def test_conv2d_parameters_over_int32_are_rejected_by_both(isa, big):
    """Found by the fuzzer: torch's own conv (the reference) fails on an int64-max stride
    while the native kernel gave one output row; both now reject any stride, padding or
    dilation over 2**31 - 1, and accept (with equal values) up to it."""
    q = qk.quantize_weight(torch.randn(2, 2), 4)
    x = torch.randn(2, 1, 4, 4)
    for kw in ("stride", "padding", "dilation"):
        geometry = {"stride": (1, 1), "padding": (1, 0), "dilation": (1, 1), kw: (big, 1)}
        native, ref = _conv_native_and_ref(x, q, 4, (2, 1, 1, 2), **geometry)
        assert native is ValueError and ref is ValueError, kw
    native, ref = _conv_native_and_ref(x, q, 4, (2, 1, 1, 2), (2**31 - 1, 2), (1, 0), (3, 2))
    assert native.shape == ref.shape == (2, 2, 1, 1)
    torch.testing.assert_close(native, ref, rtol=1e-4, atol=1e-4)


def test_conv2d_output_size_uses_floor_division(isa):
    """Issue reproducer: a truncating division accepted an input the reference rejects."""
    q = qk.quantize_weight(torch.randn(1, 3), 4)
    with pytest.raises(ValueError, match="too small"):
        qk.conv2d(torch.randn(1, 1, 1, 2), *q, 4, (1, 1, 1, 3), stride=(1, 2))
    native, ref = _conv_native_and_ref(torch.randn(1, 1, 1, 2), q, 4, (1, 1, 1, 3), stride=(1, 2))
    assert native is ValueError and ref is ValueError


@pytest.mark.parametrize(
    ("h", "kernel", "stride", "pad", "dil"),
    [
        (1, 3, 2, 0, 1),
        (2, 3, 5, 0, 1),
        (3, 3, 7, 0, 1),
        (4, 2, 3, 0, 3),
        (1, 5, 1, 1, 1),
        (5, 3, 4, 1, 2),
    ],
)
def test_conv2d_accepts_what_the_reference_accepts(isa, h, kernel, stride, pad, dil):
    q = qk.quantize_weight(torch.randn(2, kernel), 4)
    native, ref = _conv_native_and_ref(
        torch.randn(1, 1, 1, h), q, 4, (2, 1, 1, kernel), (1, stride), (0, pad), (1, dil)
    )
    if isinstance(ref, torch.Tensor):
        assert isinstance(native, torch.Tensor) and native.shape == ref.shape
        torch.testing.assert_close(native, ref, rtol=1e-4, atol=1e-4)
    else:
        assert native is ref


def test_dequantize_activation_shape_overflow_is_rejected():
    q = qk.quantize_activation(torch.randn(4, 8), 4)
    for fn in (torch.ops.qpart.dequantize_activation, reference.dequantize_activation):
        with pytest.raises(ValueError, match="overflows int64"):
            fn(*q, 4, [2**40, 2**40, 4], torch.float32)


def test_packed_row_bits_overflow_is_rejected():
    q = qk.quantize_weight(torch.randn(2, 8), 8)
    for fn in (torch.ops.qpart.dequantize_weight, reference.dequantize_weight):
        with pytest.raises(ValueError, match="overflows int64"):
            fn(*q, 8, 2**61)


def test_python_checks_mirror_the_int64_bounds():
    assert checks.conv_output_size("conv2d", 2, 3, 2, 0, 1) == 0  # floor, not truncation
    assert checks.conv_output_size("conv2d", 8, 3, 2, 1, 1) == 4
    with pytest.raises(ValueError, match="overflows int64"):
        checks.conv_output_size("conv2d", 8, 5, 1, 0, 2**62)
    with pytest.raises(ValueError, match="overflows int64"):
        checks.packed_row_bytes(2**61, 8)


# ---- item 2: bits is a real int in 1..8 -------------------------------------------------------


@pytest.mark.parametrize("bits", [True, False, 4.0, "4", None, 0, 9, -1])
def test_wrappers_reject_bits_that_are_not_ints_in_range(bits):
    w = torch.randn(2, 32)
    q = qk.quantize_weight(w, 4)
    x = torch.randn(1, 32)
    expected = ValueError if type(bits) is int else TypeError
    calls = [
        lambda: qk.quantize_weight(w, bits),
        lambda: qk.dequantize_weight(*q, bits, 32),
        lambda: qk.linear(x, *q, bits),
        lambda: qk.conv2d(torch.randn(1, 32, 1, 1), *q, bits, (2, 32, 1, 1)),
        lambda: qk.quantize_activation(x, bits),
        lambda: qk.dequantize_activation(*qk.quantize_activation(x, 4), bits, (1, 32)),
    ]
    for call in calls:
        with pytest.raises(expected):
            call()


@pytest.mark.parametrize("bits", [True, False, 4.0, 1.0])
def test_ops_reject_bits_that_are_not_ints(isa, bits):
    """Issue reproducer: ``torch.ops.qpart.*`` accepted ``bits=True`` as 1 (``Scalar bits``)."""
    w = torch.randn(2, 32)
    q = qk.quantize_weight(w, 4)
    x = torch.randn(1, 32)
    aq = qk.quantize_activation(x, 4)
    x4 = torch.randn(1, 32, 1, 1)
    for impl in (torch.ops.qpart, reference):
        calls = [
            (impl.quantize_weight, (w, bits, 32)),
            (impl.dequantize_weight, (*q, bits, 32)),
            (impl.linear, (x, *q, None, bits, 32)),
            (impl.conv2d, (x4, *q, None, bits, [2, 32, 1, 1], [1, 1], [0, 0], [1, 1], 1)),
            (impl.quantize_activation, (x, bits, False)),
            (impl.dequantize_activation, (*aq, bits, [1, 32], torch.float32)),
        ]
        for fn, args in calls:
            with pytest.raises(TypeError, match="bits must be an int"):
                fn(*args)


def test_ops_still_take_int_bits(isa):
    w = torch.randn(2, 32)
    for bits in range(1, 9):
        native = torch.ops.qpart.quantize_weight(w, bits, 32)
        ref = reference.quantize_weight(w, bits, 32)
        for a, b in zip(native, ref, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("value", [True, 2.0, "1"])
def test_conv2d_wrapper_rejects_non_int_geometry(value):
    q = qk.quantize_weight(torch.randn(2, 9), 4)
    x = torch.randn(1, 1, 5, 5)
    with pytest.raises(TypeError):
        qk.conv2d(x, *q, 4, (2, 1, 3, 3), stride=value)
    with pytest.raises(TypeError):
        qk.conv2d(x, *q, 4, (2, 1, 3, value))
    with pytest.raises(TypeError):
        qk.conv2d(x, *q, 4, (2, 1, 3, 3), groups=value)


# ---- item 2: IEEE semantics on every ISA ------------------------------------------------------


def _assert_same_ieee(native: torch.Tensor, ref: torch.Tensor) -> None:
    """Same NaN and +-Inf positions; finite values close."""
    assert torch.equal(torch.isnan(native), torch.isnan(ref)), (native, ref)
    assert torch.equal(torch.isposinf(native), torch.isposinf(ref)), (native, ref)
    assert torch.equal(torch.isneginf(native), torch.isneginf(ref)), (native, ref)
    fin = torch.isfinite(ref)
    torch.testing.assert_close(native[fin], ref[fin], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("value", [INF, -INF, NAN, 1e30])
@pytest.mark.parametrize(
    ("m", "k", "n", "group"), [(2, 8, 5, 8), (3, 64, 17, 32), (1, 256, 40, 64)]
)
def test_linear_non_finite_input_matches_reference(isa, value, m, k, n, group):
    """Issue reproducer: ``x[0,3]=inf`` gave all-NaN rows on AVX2/AVX-512 (zero-point folding)."""
    q = qk.quantize_weight(torch.randn(n, k), 4, group if group != k else None)
    x = torch.randn(m, k)
    x[0, 3] = value
    if m > 2:
        x[2, 5] = -value
    _assert_same_ieee(qk.linear(x, *q, 4), reference.linear(x, *q, None, 4, k))


def test_linear_non_finite_scales_match_reference(isa):
    q = qk.quantize_weight(torch.randn(6, 64), 4, 32)
    scales = q.scales.clone()
    scales[1, 0] = INF
    scales[3, 1] = NAN
    x = torch.randn(3, 64)
    _assert_same_ieee(
        qk.linear(x, q.packed, scales, q.zeros, 4),
        reference.linear(x, q.packed, scales, q.zeros, None, 4, 64),
    )
    with pytest.raises(ValueError, match="finite weight scales"):
        torch.ops.qpart.linear(x, q.packed, scales, q.zeros, None, 4, 64, True)
    with pytest.raises(ValueError, match="finite weight scales"):
        reference.linear(x, q.packed, scales, q.zeros, None, 4, 64, True)


@pytest.mark.parametrize("value", [INF, -INF, NAN])
def test_conv2d_non_finite_input_matches_reference(isa, value):
    q = qk.quantize_weight(torch.randn(8, 4 * 9), 4)
    x = torch.randn(2, 4, 7, 7)
    x[0, 1, 3, 3] = value
    x[1, 2, 0, 6] = -value
    native = qk.conv2d(x, *q, 4, (8, 4, 3, 3), padding=1)
    ref = reference.conv2d(x, *q, None, 4, (8, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    _assert_same_ieee(native, ref)
