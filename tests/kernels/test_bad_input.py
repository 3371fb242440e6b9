"""Bad input gives a clear Python exception naming the problem, on every implementation."""

from __future__ import annotations

import pytest
import torch

import qpart_kernels as qk
from qpart_kernels.ops import reference

W = torch.randn(4, 64)


def good(bits: int = 4, group: int | None = None):
    return qk.quantize_weight(W, bits, group)


# Each case: (callable running the public API, expected exception, message fragment).
CASES = {
    "bits 0": (lambda: qk.quantize_weight(W, 0), ValueError, "bits must be in 1..8"),
    "bits 9": (lambda: qk.quantize_weight(W, 9), ValueError, "bits must be in 1..8"),
    "bits float": (lambda: qk.quantize_weight(W, 4.0), TypeError, "bits must be an int"),
    "group not dividing": (
        lambda: qk.quantize_weight(W, 4, 48),
        ValueError,
        "divide the reduction size 64",
    ),
    "group not multiple of 32": (
        lambda: qk.quantize_weight(torch.randn(2, 48), 4, 16),
        ValueError,
        "multiple of 32",
    ),
    "integer weight": (
        lambda: qk.quantize_weight(torch.ones(4, 64, dtype=torch.int32), 4),
        TypeError,
        "float32, float16 or bfloat16",
    ),
    "1-D weight": (lambda: qk.quantize_weight(torch.randn(64), 4, 64), ValueError, "must be 2-D"),
    "empty weight": (lambda: qk.quantize_weight(torch.randn(0, 64), 4), ValueError, "empty"),
    "NaN weight": (
        lambda: qk.quantize_weight(torch.tensor([[1.0, float("nan")]]), 4),
        ValueError,
        "NaN or Inf",
    ),
    "Inf weight": (
        lambda: qk.quantize_weight(torch.tensor([[1.0, float("inf")]]), 4),
        ValueError,
        "NaN or Inf",
    ),
    "range too wide": (
        lambda: qk.quantize_weight(torch.tensor([[-1e30, 1e30]]), 4),
        ValueError,
        "too wide",
    ),
    "linear wrong K": (
        lambda: qk.linear(torch.randn(2, 63), *good(), 4, in_features=64),
        ValueError,
        "in_features=64",
    ),
    "linear wrong K packed": (
        lambda: qk.linear(torch.randn(2, 60), *good(), 4),
        ValueError,
        "bytes per row",
    ),
    "linear wrong bits": (
        lambda: qk.linear(torch.randn(2, 64), *good(4), 3),
        ValueError,
        "bytes per row",
    ),
    "linear int input": (
        lambda: qk.linear(torch.ones(2, 64, dtype=torch.long), *good(), 4),
        TypeError,
        "input must be float32",
    ),
    "linear bad bias": (
        lambda: qk.linear(torch.randn(2, 64), *good(), 4, torch.randn(5)),
        ValueError,
        "bias must have shape (4,)",
    ),
    "linear scales dtype": (
        lambda: qk.linear(
            torch.randn(2, 64), good().packed, good().scales.float(), good().zeros, 4
        ),
        TypeError,
        "scales must be float16",
    ),
    "linear scale rows": (
        lambda: qk.linear(
            torch.randn(2, 64), good().packed, good().scales[:3], good().zeros[:3], 4
        ),
        ValueError,
        "scales",
    ),
    "linear device": (
        lambda: qk.linear(torch.randn(2, 64, device="meta"), *good(), 4),
        ValueError,
        "one device",
    ),
    "conv 3-D input": (
        lambda: qk.conv2d(
            torch.randn(3, 5, 5), *qk.quantize_weight(torch.randn(2, 27), 4), 4, (2, 3, 3, 3)
        ),
        ValueError,
        "must be 4-D",
    ),
    "conv channel mismatch": (
        lambda: qk.conv2d(
            torch.randn(1, 4, 5, 5), *qk.quantize_weight(torch.randn(2, 27), 4), 4, (2, 3, 3, 3)
        ),
        ValueError,
        "weight expects 3 per group",
    ),
    "conv shape vs packed": (
        lambda: qk.conv2d(
            torch.randn(1, 3, 5, 5), *qk.quantize_weight(torch.randn(2, 27), 4), 4, (2, 3, 2, 2)
        ),
        ValueError,
        "bytes per row",
    ),
    "conv bad groups": (
        lambda: qk.conv2d(
            torch.randn(1, 3, 5, 5),
            *qk.quantize_weight(torch.randn(2, 9), 4),
            4,
            (2, 1, 3, 3),
            groups=2,
        ),
        ValueError,
        "groups 2",
    ),
    "conv too small": (
        lambda: qk.conv2d(
            torch.randn(1, 3, 2, 2), *qk.quantize_weight(torch.randn(2, 27), 4), 4, (2, 3, 3, 3)
        ),
        ValueError,
        "too small",
    ),
    "conv bad stride": (
        lambda: qk.conv2d(
            torch.randn(1, 3, 5, 5),
            *qk.quantize_weight(torch.randn(2, 27), 4),
            4,
            (2, 3, 3, 3),
            stride=0,
        ),
        ValueError,
        "stride",
    ),
    "activation empty": (lambda: qk.quantize_activation(torch.randn(0, 3), 4), ValueError, "empty"),
    "activation NaN": (
        lambda: qk.quantize_activation(torch.tensor([0.0, float("nan")]), 4),
        ValueError,
        "NaN or Inf",
    ),
    "activation bits": (
        lambda: qk.quantize_activation(torch.randn(3), 12),
        ValueError,
        "bits must be in 1..8",
    ),
    "activation shape": (
        lambda: qk.dequantize_activation(
            *qk.quantize_activation(torch.randn(3, 4), 4, True), 4, [5, 4]
        ),
        ValueError,
        "rows do not divide",
    ),
    "activation dtype": (
        lambda: qk.dequantize_activation(
            *qk.quantize_activation(torch.randn(3, 4), 4), 4, [3, 4], torch.int32
        ),
        TypeError,
        "dtype must be",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_public_api_rejects(case):
    call, exc, fragment = CASES[case]
    with pytest.raises(exc, match=None) as info:
        call()
    assert fragment in str(info.value), str(info.value)


REFERENCE_CASES = {
    "bits 9": (lambda: reference.quantize_weight(W, 9, 64), ValueError),
    "NaN weight": (
        lambda: reference.quantize_weight(torch.tensor([[float("nan"), 1.0]]), 4, 2),
        ValueError,
    ),
    "group": (lambda: reference.quantize_weight(W, 4, 48), ValueError),
    "linear K": (lambda: reference.linear(torch.randn(2, 60), *good(), None, 4, 64), ValueError),
    "conv groups": (
        lambda: reference.conv2d(
            torch.randn(1, 3, 5, 5),
            *qk.quantize_weight(torch.randn(2, 9), 4),
            None,
            4,
            [2, 1, 3, 3],
            [1, 1],
            [0, 0],
            [1, 1],
            2,
        ),
        ValueError,
    ),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_reference_rejects(case):
    call, exc = REFERENCE_CASES[case]
    with pytest.raises(exc):
        call()


def test_direct_op_calls_raise_instead_of_crashing():
    # Skipping the Python wrappers must still be safe: the kernels validate too.
    p, s, z = good()
    with pytest.raises(ValueError, match="bits must be in 1..8"):
        torch.ops.qpart.linear(torch.randn(2, 64), p, s, z, None, 0, 64)
    with pytest.raises(ValueError, match="bytes per row"):
        torch.ops.qpart.linear(torch.randn(2, 64), p[:, :5], s, z, None, 4, 64)
    with pytest.raises(ValueError, match="in_features=64"):
        torch.ops.qpart.linear(torch.randn(2, 63), p, s, z, None, 4, 64)
    with pytest.raises(ValueError, match="in_features=64"):
        torch.ops.qpart.linear(torch.randn(2, 63), p, s, z, None, 4, 64, True)
    with pytest.raises(ValueError, match="bits must be in 1..8"):
        torch.ops.qpart.linear(torch.randn(2, 64), p, s, z, None, 9, 64, True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        torch.ops.qpart.linear(torch.full((2, 64), float("nan")), p, s, z, None, 4, 64, True)
    with pytest.raises(ValueError, match="group_size"):
        torch.ops.qpart.quantize_weight(W, 4, 0)
    with pytest.raises(ValueError, match="groups per row"):
        torch.ops.qpart.dequantize_weight(p, s[:, :0], z[:, :0], 4, 64)
    with pytest.raises(ValueError, match="empty"):
        torch.ops.qpart.dequantize_activation(p, s, z, 4, [0, 64], torch.float32)
