"""Native CPU kernels vs the pure-PyTorch reference, for every op and width."""

from __future__ import annotations

import pytest
import torch

import qpart_kernels as qk
from helpers import ALL_BITS, tolerance
from qpart_kernels.ops import reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def quantized(n: int, k: int, bits: int, group: int | None):
    w = torch.randn(n, k) * 0.2
    return qk.quantize_weight(w, bits, group)


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("n,k,group", [(1, 7, None), (9, 45, None), (16, 64, 32), (5, 256, 128)])
def test_dequantize_weight(bits, n, k, group):
    q = quantized(n, k, bits, group)
    native = qk.dequantize_weight(*q, bits, k)
    assert torch.equal(native, reference.dequantize_weight(*q, bits, k))


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 45), (3, 45), (2, 3, 45)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_per_channel(bits, dtype, shape, with_bias):
    q = quantized(11, 45, bits, None)
    x = torch.randn(shape).to(dtype)
    bias = torch.randn(11).to(dtype) if with_bias else None
    out = qk.linear(x, *q, bits, bias)
    expected = reference.linear(x, *q, bias, bits, 45)
    assert out.dtype == dtype and out.shape == (*shape[:-1], 11)
    torch.testing.assert_close(out, expected, **tolerance(dtype))


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("batch", [1, 17])
@pytest.mark.parametrize("group", [32, 128])
def test_linear_grouped(bits, batch, group):
    q = quantized(33, 256, bits, group)
    x = torch.randn(batch, 256)
    bias = torch.randn(33)
    torch.testing.assert_close(
        qk.linear(x, *q, bits, bias),
        reference.linear(x, *q, bias, bits, 256),
        **tolerance(torch.float32),
    )


def test_linear_noncontiguous_input_and_empty_batch():
    q = quantized(8, 64, 4, None)
    x = torch.randn(64, 5).t()  # (5, 64), transposed strides
    torch.testing.assert_close(qk.linear(x, *q, 4), reference.linear(x, *q, None, 4, 64))
    empty = qk.linear(torch.randn(0, 64), *q, 4)
    assert empty.shape == (0, 8)


CONV_CASES = [
    # (c_in, c_out, kernel, stride, padding, dilation, groups, hw)
    (3, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, (9, 11)),
    (4, 6, (3, 3), (2, 2), (1, 1), (2, 2), 2, (13, 10)),
    (8, 16, (1, 1), (1, 1), (0, 0), (1, 1), 1, (7, 7)),
    (6, 6, (3, 1), (1, 2), (2, 0), (1, 1), 6, (8, 9)),  # depthwise, rectangular kernel
    (32, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, (6, 5)),  # k = 288: grouped quantization possible
]


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d(bits, case):
    c_in, c_out, kernel, stride, padding, dilation, groups, hw = case
    k = c_in // groups * kernel[0] * kernel[1]
    group = 32 if k % 32 == 0 else None
    q = quantized(c_out, k, bits, group)
    x = torch.randn(2, c_in, *hw)
    bias = torch.randn(c_out)
    shape = (c_out, c_in // groups, *kernel)
    out = qk.conv2d(x, *q, bits, shape, bias, stride, padding, dilation, groups)
    expected = reference.conv2d(x, *q, bias, bits, shape, stride, padding, dilation, groups)
    torch.testing.assert_close(out, expected, **tolerance(torch.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_dtypes(dtype):
    q = quantized(4, 27, 5, None)
    x = torch.randn(1, 3, 6, 6).to(dtype)
    out = qk.conv2d(x, *q, 5, (4, 3, 3, 3), padding=1)
    expected = reference.conv2d(x, *q, None, 5, [4, 3, 3, 3], [1, 1], [1, 1], [1, 1], 1)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, **tolerance(dtype))


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("shape", [(1, 10), (3, 7), (2, 4, 5, 3)])
def test_activation_round_trip(bits, per_token, shape):
    x = torch.relu(torch.randn(shape))
    native = qk.quantize_activation(x, bits, per_token)
    ref = reference.quantize_activation(x, bits, per_token)
    for a, b in zip(native, ref):
        assert torch.equal(a, b)
    rows = x.numel() // shape[-1] if per_token else 1
    assert native.packed.shape == (rows, ((x.numel() // rows) * bits + 7) // 8)
    restored = qk.dequantize_activation(*native, bits, shape)
    assert torch.equal(restored, reference.dequantize_activation(*ref, bits, shape, torch.float32))
    err = (restored - x).abs().reshape(rows, -1).amax(-1)
    assert torch.all(err <= native.scales.float().squeeze(1) * (1 + 1e-6))


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_dtypes(dtype):
    x = torch.randn(4, 16).to(dtype)
    q = qk.quantize_activation(x, 8)
    restored = qk.dequantize_activation(*q, 8, x.shape, dtype)
    assert restored.dtype == dtype
    torch.testing.assert_close(
        restored.float(), x.float(), atol=float(q.scales.float().max()) + 1e-2, rtol=0
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_results_do_not_depend_on_thread_count(threads):
    q = quantized(64, 128, 3, 32)
    x = torch.randn(4, 128)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        out = qk.linear(x, *q, 3)
        again = qk.quantize_weight(torch.ones(64, 128).cumsum(1), 3, 32)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(out, qk.linear(x, *q, 3))
    assert torch.equal(
        again.packed, reference.quantize_weight(torch.ones(64, 128).cumsum(1), 3, 32)[0]
    )
