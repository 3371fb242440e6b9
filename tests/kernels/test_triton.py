"""Triton kernels vs the reference: every width, odd shapes, bit-identical packed bytes.

Without a GPU these run on CPU tensors through the Triton interpreter (conftest sets
TRITON_INTERPRET=1); sizes are kept small because the interpreter is slow.
"""

from __future__ import annotations

import pytest
import torch

from helpers import ALL_BITS, tolerance

triton_ops = pytest.importorskip("qpart_kernels.triton.ops", reason="Triton is not installed")
from qpart_kernels.ops import reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, device=DEVICE).to(dtype)


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("n,k,group", [(3, 37, 37), (4, 64, 32), (1, 9, 9)])
def test_quantize_and_dequantize_bit_identical(bits, n, k, group):
    w = randn(n, k)
    got = triton_ops.quantize_weight(w, bits, group)
    want = reference.quantize_weight(w, bits, group)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(
        triton_ops.dequantize_weight(*got, bits, k), reference.dequantize_weight(*want, bits, k)
    )


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("m", [1, 5, 18])
def test_linear(bits, m):
    q = reference.quantize_weight(randn(7, 64), bits, 32)
    x, bias = randn(m, 64), randn(7)
    torch.testing.assert_close(
        triton_ops.linear(x, *q, bias, bits, 64), reference.linear(x, *q, bias, bits, 64)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_half_inputs_and_batch_dims(dtype):
    q = reference.quantize_weight(randn(5, 45), 3, 45)
    x = randn(2, 3, 45, dtype=dtype)
    out = triton_ops.linear(x, *q, None, 3, 45)
    assert out.dtype == dtype and out.shape == (2, 3, 5)
    torch.testing.assert_close(out, reference.linear(x, *q, None, 3, 45), **tolerance(dtype))


@pytest.mark.parametrize("bits", [1, 4, 7])
@pytest.mark.parametrize(
    "case",
    [  # (c_in, c_out, kh, kw, stride, padding, dilation, groups, hw)
        (3, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, (6, 7)),
        (4, 6, 3, 1, (2, 1), (1, 0), (1, 2), 2, (7, 5)),
    ],
)
def test_conv2d(bits, case):
    c_in, c_out, kh, kw, stride, padding, dilation, groups, hw = case
    shape = [c_out, c_in // groups, kh, kw]
    q = reference.quantize_weight(
        randn(c_out, c_in // groups * kh * kw), bits, c_in // groups * kh * kw
    )
    x, bias = randn(2, c_in, *hw), randn(c_out)
    args = (bias, bits, shape, list(stride), list(padding), list(dilation), groups)
    torch.testing.assert_close(triton_ops.conv2d(x, *q, *args), reference.conv2d(x, *q, *args))


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("per_token", [False, True])
def test_activation_round_trip(bits, per_token):
    x = torch.relu(randn(3, 5, 7))
    got = triton_ops.quantize_activation(x, bits, per_token)
    want = reference.quantize_activation(x, bits, per_token)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert torch.equal(
        triton_ops.dequantize_activation(*got, bits, [3, 5, 7], torch.float16),
        reference.dequantize_activation(*want, bits, [3, 5, 7], torch.float16),
    )


def test_degenerate_and_bad_input():
    w = torch.zeros(2, 32, device=DEVICE)
    w[1] = 1.4e-45  # subnormal: smallest fp16 step, like every backend
    for a, b in zip(triton_ops.quantize_weight(w, 4, 32), reference.quantize_weight(w, 4, 32)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="NaN or Inf"):
        triton_ops.quantize_weight(torch.full((1, 4), float("nan"), device=DEVICE), 4, 4)
    with pytest.raises(ValueError, match="too wide"):
        triton_ops.quantize_weight(torch.tensor([[-1e30, 1e30]], device=DEVICE), 4, 2)
    with pytest.raises(ValueError, match="bits must be in 1..8"):
        triton_ops.linear(randn(1, 8), *reference.quantize_weight(randn(2, 8), 4, 8), None, 0, 8)


def test_triton_ops_are_registered_for_torch_compile():
    # The forward ops also exist as triton_ops (torch.compile traces into their kernels).
    q = reference.quantize_weight(randn(6, 40), 5, 40)
    x = randn(3, 40)
    torch.testing.assert_close(
        torch.ops.qpart_triton.linear(x, *q, None, 5, 40), reference.linear(x, *q, None, 5, 40)
    )
    a = reference.quantize_activation(randn(2, 9), 3, False)
    assert torch.equal(
        torch.ops.qpart_triton.dequantize_activation(*a, 3, [2, 9], torch.float32),
        reference.dequantize_activation(*a, 3, [2, 9], torch.float32),
    )


@pytest.mark.parametrize("split_k", [2, 3])
def test_split_k_gemv(split_k):
    import triton

    from qpart_kernels.triton import kernels

    q = reference.quantize_weight(randn(9, 160), 6, 32)
    x, bias = randn(2, 160), randn(9)
    y = torch.zeros(2, 9, device=DEVICE)
    grid = (1, triton.cdiv(9, 16), split_k)
    kernels.linear_kernel[grid](
        x,
        *q,
        bias,
        y,
        2,
        9,
        160,
        q[0].shape[1],
        32,
        5,
        2,
        BITS=6,
        HAS_BIAS=True,
        USE_DOT=False,
        BLOCK_M=2,
        BLOCK_N=16,
        BLOCK_K=32,
        SPLIT_K=split_k,
    )
    torch.testing.assert_close(y, reference.linear(x, *q, bias, 6, 160))


def test_autotune_pruning_matches_batch_bucket():
    from qpart_kernels.triton.configs import (
        batch_bucket,
        linear_autotune_configs,
        prune_linear_configs,
    )

    configs = linear_autotune_configs(9)
    assert len(configs) > len(linear_autotune_configs(8))  # Hopper searches wider than Orin
    for m in (1, 3, 8, 15, 64, 1000):
        kept = prune_linear_configs(configs, {"M_BUCKET": batch_bucket(m)})
        assert kept
        if m < 9:
            assert all(
                not c.kwargs["USE_DOT"] and c.kwargs["BLOCK_M"] == batch_bucket(m) for c in kept
            )
        else:
            assert all(c.kwargs["USE_DOT"] for c in kept)
