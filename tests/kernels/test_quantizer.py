"""Quantizer accuracy: error within one step, MSE near delta^2/12, degenerate groups."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qpart_kernels as qk
from helpers import ALL_BITS
from qpart_kernels.ops import reference

IMPLEMENTATIONS = {
    "native": lambda w, b, g: qk.quantize_weight(w, b, g),
    "reference": lambda w, b, g: reference.quantize_weight(w, b, g),
}


def grouped(t: torch.Tensor, group: int) -> torch.Tensor:
    return t.reshape(t.shape[0], -1, group)


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("group", [64, 256])
def test_error_within_one_step(impl, bits, group):
    w = torch.randn(16, 256) * 0.1 + 0.02
    packed, scales, zeros = IMPLEMENTATIONS[impl](w, bits, group)
    deq = qk.dequantize_weight(packed, scales, zeros, bits, 256)
    err = grouped((w - deq).abs(), group).amax(-1)
    assert torch.all(err <= scales.float() * (1 + 1e-6))
    assert torch.all(zeros.int() <= 2**bits - 1)
    lo = grouped(w, group).amin(-1).clamp(max=0)
    hi = grouped(w, group).amax(-1).clamp(min=0)
    assert torch.all(scales.float() >= (hi - lo) / (2**bits - 1))


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_mse_near_uniform_noise(bits):
    # uniform data spanning zero: rounding error is uniform on [-delta/2, delta/2]
    w = torch.rand(64, 4096) * 2 - 1
    packed, scales, zeros = qk.quantize_weight(w, bits)
    deq = qk.dequantize_weight(packed, scales, zeros, bits, 4096)
    mse = ((w - deq) ** 2).mean(dim=1)
    expected = scales.float().squeeze(1) ** 2 / 12
    ratio = mse / expected
    assert torch.all((ratio > 0.8) & (ratio < 1.2)), ratio


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("bits", ALL_BITS)
def test_degenerate_groups(impl, bits):
    w = torch.zeros(4, 64)
    w[1] = 0.75  # constant positive
    w[2] = -3.0  # constant negative
    w[3, :32] = 1e-3  # one zero group, one tiny-constant group
    w[3, 32:] = 0.0
    packed, scales, zeros = IMPLEMENTATIONS[impl](w, bits, 32)
    deq = qk.dequantize_weight(packed, scales, zeros, bits, 64)
    assert torch.equal(deq[0], torch.zeros(64))
    assert scales[0].float().eq(0).all() and zeros[0].eq(0).all()
    assert torch.equal(deq[3, 32:], torch.zeros(32))
    assert torch.all(
        (w - deq).abs() <= grouped(scales.float().repeat_interleave(32, 1), 1).squeeze(-1)
    )
    # A constant group is exactly representable up to fp16 rounding of its scale.
    torch.testing.assert_close(deq[1], w[1], rtol=2e-3, atol=0)
    torch.testing.assert_close(deq[2], w[2], rtol=2e-3, atol=0)


@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(1, 8),
    n=st.integers(1, 5),
    k=st.integers(1, 90),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(-2, 2),
    seed=st.integers(0, 2**16),
)
def test_error_bound_property(bits, n, k, scale, shift, seed):
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, k, generator=gen) + shift) * scale
    packed, scales, zeros = qk.quantize_weight(w, bits)
    deq = qk.dequantize_weight(packed, scales, zeros, bits, k)
    assert torch.all((w - deq).abs() <= scales.float() * (1 + 1e-6))


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("bits", [1, 4, 8])
def test_subnormal_group_gets_smallest_scale(impl, bits):
    w = torch.tensor([[1.4e-45, 0.0, 0.0, -2.8e-45]])
    packed, scales, zeros = IMPLEMENTATIONS[impl](w, bits, 4)
    assert scales.item() == 2.0**-24
    deq = qk.dequantize_weight(packed, scales, zeros, bits, 4)
    assert torch.all((deq - w).abs() <= 2.0**-24)


def test_native_and_reference_agree_on_extreme_ranges():
    w = torch.tensor([[1e-30, -3e-41, 5e-39, 0.0], [6e4, -1.0, 0.5, 2.0], [1e-8, 2e-8, 0.0, 3e-8]])
    for bits in (1, 8):
        for a, b in zip(qk.quantize_weight(w, bits, 4), reference.quantize_weight(w, bits, 4)):
            assert torch.equal(a, b)
