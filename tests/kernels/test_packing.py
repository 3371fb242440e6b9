"""Dense bit packing: exact sizes, documented byte order, bit-exact round trips."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qpart_kernels as qk
from helpers import ALL_BITS
from qpart_kernels.ops import reference


def random_codes(rows: int, k: int, bits: int) -> torch.Tensor:
    return torch.randint(0, 2**bits, (rows, k), dtype=torch.uint8)


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("rows,k", [(1, 1), (1, 7), (3, 9), (5, 33), (2, 100), (4, 128)])
def test_round_trip_is_bit_exact(bits, rows, k):
    codes = random_codes(rows, k, bits)
    packed = reference.pack_codes(codes, bits)
    assert packed.shape == (rows, (k * bits + 7) // 8)
    assert torch.equal(reference.unpack_codes(packed, bits, k), codes)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, 8), rows=st.integers(1, 6), k=st.integers(1, 70), seed=st.integers(0, 2**16)
)
def test_round_trip_property(bits, rows, k, seed):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (rows, k), dtype=torch.uint8, generator=gen)
    assert torch.equal(reference.unpack_codes(reference.pack_codes(codes, bits), bits, k), codes)


def test_documented_byte_order():
    # docs/FORMAT.md: code j occupies stream bits [3j, 3j+3), LSB first.
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 0]], dtype=torch.uint8)
    packed = reference.pack_codes(codes, 3)
    # stream (bit 0 first): 100 010 110 001 101 011 111 000
    assert packed.tolist() == [[0b11010001, 0b01011000, 0b00011111]]


@pytest.mark.parametrize("bits", ALL_BITS)
def test_padding_bits_are_zero(bits):
    k = 5  # 5 * bits is not a multiple of 8 for odd widths
    codes = torch.full((2, k), 2**bits - 1, dtype=torch.uint8)
    packed = reference.pack_codes(codes, bits)
    used = k * bits
    if used % 8:
        last = packed[:, -1]
        assert torch.all(last >> (used % 8) == 0)


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize(
    "n,k,group", [(1, 1, None), (7, 37, None), (3, 64, 32), (2, 96, 96), (5, 256, 128)]
)
def test_native_quantizer_matches_reference_bytes(bits, n, k, group):
    w = torch.randn(n, k)
    native = qk.quantize_weight(w, bits, group)
    ref = reference.quantize_weight(w, bits, group or k)
    for a, b in zip(native, ref):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_packed_size_is_dense(bits):
    n, k = 6, 50
    q = qk.quantize_weight(torch.randn(n, k), bits)
    assert q.packed.numel() == n * ((bits * k + 7) // 8)
    assert q.packed.numel() - (bits * n * k + 7) // 8 < n  # at most one byte of padding per row
    assert q.payload_bytes() == q.packed.numel() + 2 * n + n
