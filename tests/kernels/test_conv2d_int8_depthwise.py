"""The depthwise path of the integer conv2d (``groups == c_in``, ``int8_activations=True``):
bit-identical to the reference for every CPU ISA, width 1..8, channel multiplier, stride,
padding, dilation, odd sizes and pixel tails, 1 and 2 threads, batch > 1, with and without
bias and with the fused residual / ReLU epilogue; and equal to the generic integer kernels
(``QPART_CONV_I8_DEPTHWISE=0``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qpart_kernels as qk
from helpers import ALL_BITS, conv2d_int8_reference

pytestmark = pytest.mark.skipif(not qk.extension_loaded(), reason="needs the compiled extension")

# (N, C, H, W, multiplier, kernel, stride, padding, dilation, group_size)
GEOMETRIES = [
    (1, 5, 9, 11, 1, (3, 3), 1, 1, 1, None),  # odd sizes, pixel tails
    (2, 6, 13, 17, 2, (3, 3), 2, 1, 1, None),  # stride 2, multiplier 2, two images
    (1, 3, 12, 40, 3, (5, 3), (1, 2), (2, 1), (2, 1), None),  # asymmetric, dilation
    (1, 4, 7, 7, 1, (3, 3), (3, 1), (0, 2), (1, 3), None),  # stride 3, wide dilation
    (1, 2, 30, 70, 1, (3, 3), 2, 1, 2, None),  # stride 2 with dilation 2
    (1, 3, 9, 9, 2, (1, 1), 1, 0, 1, None),  # 1x1
    (1, 1, 28, 28, 8, (5, 5), 1, 2, 1, None),  # one input channel (groups == c_in == 1)
    (1, 4, 10, 21, 1, (2, 4), (1, 3), 1, 1, None),  # even kernel width, stride 3
    (1, 3, 12, 19, 2, (8, 8), 1, (3, 4), 1, 32),  # grouped weights: groups split kernel rows
    (1, 2, 12, 19, 1, (4, 16), (2, 1), (3, 4), 1, 32),  # grouped weights, stride_h 2
    (3, 8, 7, 7, 1, (3, 3), 1, 1, 1, None),  # MobileNet's last stage, batch 3
    (1, 6, 33, 45, 1, (3, 3), 1, 1, 1, None),  # 45 columns: 5 full vectors and a tail
]


def _case(geometry, bits, seed, bias=True):
    n, c, h, w, m, ks, stride, pad, dil, gs = geometry
    torch.manual_seed(seed)
    weight = torch.randn(c * m, 1, *ks) * 0.3
    x = torch.randn(n, c, h, w)
    q = qk.quantize_weight(weight.reshape(c * m, -1), bits, gs)
    kwargs = dict(
        bias=torch.randn(c * m) if bias else None,
        stride=stride,
        padding=pad,
        dilation=dil,
        groups=c,
    )
    return x, weight, q, kwargs


_reference = conv2d_int8_reference


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("geometry", range(len(GEOMETRIES)))
def test_bit_identical_to_reference(isa, threads, bits, geometry):
    x, weight, q, kwargs = _case(GEOMETRIES[geometry], bits, 10 * bits + geometry, geometry % 2)
    got = qk.conv2d(x, *q, bits, weight.shape, int8_activations=True, **kwargs)
    want = _reference(x, weight, q, bits, kwargs)
    assert torch.equal(got, want), float((got - want).abs().max())


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_equals_the_generic_kernels(isa, threads, bits, monkeypatch):
    for i, geometry in enumerate(GEOMETRIES):
        x, weight, q, kwargs = _case(geometry, bits, bits + i)
        fast = qk.conv2d(x, *q, bits, weight.shape, int8_activations=True, **kwargs)
        monkeypatch.setenv("QPART_CONV_I8_DEPTHWISE", "0")
        generic = qk.conv2d(x, *q, bits, weight.shape, int8_activations=True, **kwargs)
        monkeypatch.delenv("QPART_CONV_I8_DEPTHWISE")
        assert torch.equal(fast, generic), geometry


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_fused_epilogue(isa, threads, bits):
    for i, geometry in enumerate(GEOMETRIES):
        x, weight, q, kwargs = _case(geometry, bits, 7 * bits + i, i % 2)
        plain = _reference(x, weight, q, bits, kwargs)
        r = torch.randn_like(plain)
        r.view(-1)[:2] = torch.tensor([-0.0, -plain.view(-1)[1].item()])
        for residual, relu in ((r, False), (None, True), (r, True)):
            want = plain if residual is None else plain + residual
            want = torch.relu(want) if relu else want
            got = qk.conv2d(
                x,
                *q,
                bits,
                weight.shape,
                int8_activations=True,
                residual=residual,
                relu=relu,
                **kwargs,
            )
            assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (geometry, relu)


def test_zero_image_and_extreme_inputs(isa, threads):
    # An all-zero image (scale 0) next to one with a single huge value (others round to 0).
    x = torch.zeros(2, 4, 9, 10)
    x[1, 2, 3, 4] = 1e30
    x[1, 0, 0, 0] = -3.0
    weight = torch.randn(8, 1, 3, 3)
    for bits in ALL_BITS:
        q = qk.quantize_weight(weight.reshape(8, -1), bits, None)
        kwargs = dict(bias=torch.randn(8), stride=1, padding=1, dilation=1, groups=4)
        got = qk.conv2d(x, *q, bits, weight.shape, int8_activations=True, **kwargs)
        assert torch.equal(got, _reference(x, weight, q, bits, kwargs))


@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(1, 8),
    n=st.integers(1, 2),
    c=st.integers(1, 6),
    m=st.integers(1, 3),
    h=st.integers(1, 19),
    w=st.integers(1, 37),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dil=st.tuples(st.integers(1, 2), st.integers(1, 3)),
    seed=st.integers(0, 2**16),
)
def test_property_bit_identical(bits, n, c, m, h, w, kh, kw, stride, pad, dil, seed):
    h_out = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    if h_out < 1 or w_out < 1:
        return
    geometry = (n, c, h, w, m, (kh, kw), stride, pad, dil, None)
    x, weight, q, kwargs = _case(geometry, bits, seed, seed % 2)
    got = qk.conv2d(x, *q, bits, weight.shape, int8_activations=True, **kwargs)
    assert torch.equal(got, _reference(x, weight, q, bits, kwargs))
