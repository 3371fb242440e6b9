"""The integer path of qpart.conv2d (``int8_activations=True``): every CPU ISA, width and
geometry bit-identical to the reference (which reproduces the integer arithmetic exactly),
1 and 2 threads, opcheck, torch.compile, the modules' ``act_int8`` flag, and bad input."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qpart_kernels as qk
from helpers import ALL_BITS, conv2d_int8_reference
from qpart_kernels.ops import reference

pytestmark = pytest.mark.skipif(not qk.extension_loaded(), reason="needs the compiled extension")

# (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups, group_size)
GEOMETRIES = [
    (1, 3, 9, 11, 5, (3, 3), 1, 1, 1, 1, None),  # odd channels, pixel tails
    (2, 8, 12, 10, 9, (3, 3), 2, 1, 1, 1, None),  # stride 2, two images
    (1, 6, 13, 14, 7, (3, 2), (1, 2), (2, 0), (2, 1), 1, None),  # asymmetric, dilation
    (1, 12, 9, 9, 6, (3, 3), 1, 1, 1, 3, None),  # groups
    (1, 10, 11, 9, 10, (3, 3), 1, 1, 1, 10, None),  # depthwise
    (1, 7, 6, 20, 13, (1, 1), 1, 0, 1, 1, None),  # 1x1
    (1, 5, 17, 7, 4, (5, 3), (3, 1), (2, 1), (1, 3), 1, None),  # stride 3, 5x3
    (1, 64, 7, 7, 6, (3, 3), 1, 1, 1, 1, 288),  # grouped weights, direct kernel
    (1, 32, 5, 5, 3, (3, 3), 1, 1, 1, 1, 32),  # grouped weights, patch matrix (im2col)
    (2, 4, 4, 9, 8, (2, 1), (1, 2), (2, 1), (3, 2), 2, None),  # kw 1, stride_w 2 (fuzz case)
    (1, 3, 30, 27, 6, (7, 7), 2, 3, 1, 1, None),  # 3-channel stem: patch matrix
    (1, 64, 7, 9, 5, (3, 3), 1, 1, 1, 1, 96),  # group 96 of 576 codes: patch matrix
    (2, 6, 9, 8, 4, (3, 3), (1, 2), (1, 0), (2, 1), 2, None),  # 3 channels per group
    (1, 8, 11, 13, 5, (3, 4), 1, (1, 2), 1, 1, 32),  # patch matrix, rows split over units
    (1, 32, 9, 40, 6, (3, 3), (1, 2), 1, 1, 1, 96),  # patch matrix, SIMD rows, stride_w 2
    (2, 32, 5, 37, 4, (3, 3), 1, 1, (1, 2), 1, 32),  # patch matrix, SIMD rows, stride_w 1
    # >= 32 input channels, one group, per channel: the AMX tile on the amx ISA
    (2, 64, 9, 8, 40, (3, 3), 2, 1, 1, 1, None),  # 16 channel blocks, channel tail, /2
    (1, 100, 7, 9, 33, (3, 3), 1, 1, 1, 1, None),  # 25 blocks: overlapping last chunk
    (1, 48, 8, 12, 70, (3, 2), (1, 2), (2, 0), (2, 1), 1, None),  # dilation, asymmetric
]


def _case(geometry, bits, seed):
    n, cin, h, w, cout, ks, stride, pad, dil, groups, gs = geometry
    torch.manual_seed(seed)
    weight = torch.randn(cout, cin // groups, *ks) * 0.3
    x = torch.randn(n, cin, h, w)
    q = qk.quantize_weight(weight.reshape(cout, -1), bits, gs)
    bias = torch.randn(cout) if seed % 2 else None
    kwargs = dict(bias=bias, stride=stride, padding=pad, dilation=dil, groups=groups)
    return x, weight, q, kwargs


_reference = conv2d_int8_reference


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("geometry", range(len(GEOMETRIES)))
def test_bit_identical_to_reference(isa, threads, bits, geometry):
    x, weight, q, kwargs = _case(GEOMETRIES[geometry], bits, 10 * bits + geometry)
    got = qk.conv2d(x, *q, bits, weight.shape, int8_activations=True, **kwargs)
    want = _reference(x, weight, q, bits, kwargs)
    assert torch.equal(got, want), float((got - want).abs().max())
    # It is the float convolution of the int8-rounded image, up to float rounding.
    qx, sx = reference.quantize_images_int8(x)
    wd = qk.dequantize_weight(*q, bits, weight[0].numel()).reshape(weight.shape)
    b = kwargs.pop("bias")
    approx = F.conv2d(qx * sx.reshape(-1, 1, 1, 1), wd, b, **kwargs)
    torch.testing.assert_close(got, approx, rtol=1e-4, atol=1e-4)


def test_resnet_shapes_and_threads():
    torch.manual_seed(7)
    w = torch.randn(64, 64, 3, 3) * 0.05
    x = torch.randn(1, 64, 28, 28)
    q = qk.quantize_weight(w.reshape(64, -1), 4, None)
    saved = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(qk.conv2d(x, *q, 4, w.shape, None, 1, 1, int8_activations=True))
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(outs[0], outs[1])
    want = reference.conv2d(x, *q, None, 4, list(w.shape), [1, 1], [1, 1], [1, 1], 1, True)
    assert torch.equal(outs[0], want)
    # The int path really quantizes the activations: it differs from the float path.
    assert not torch.equal(outs[0], qk.conv2d(x, *q, 4, w.shape, None, 1, 1))


@pytest.mark.parametrize("where", ["first", "last"])
def test_large_single_image_scale_is_split_over_threads(where):
    # One image of 4 x 130 x 130 values: its max |x| is taken in chunks by both threads; the
    # largest |x| sits in the first or the last chunk, and a zero image stays all zero.
    torch.manual_seed(8)
    w = torch.randn(5, 4, 3, 3) * 0.1
    x = torch.randn(1, 4, 130, 130)
    x.view(-1)[0 if where == "first" else -1] = -9.0
    q = qk.quantize_weight(w.reshape(5, -1), 3, None)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        got = qk.conv2d(x, *q, 3, w.shape, None, 1, 1, int8_activations=True)
        zero = qk.conv2d(torch.zeros_like(x), *q, 3, w.shape, None, 1, 1, int8_activations=True)
    finally:
        torch.set_num_threads(saved)
    want = reference.conv2d(x, *q, None, 3, list(w.shape), [1, 1], [1, 1], [1, 1], 1, True)
    assert torch.equal(got, want)
    assert not zero.any()


def test_dtypes_zero_images_and_empty_batch():
    torch.manual_seed(4)
    w = torch.randn(6, 4, 3, 3)
    q = qk.quantize_weight(w.reshape(6, -1), 5, None)
    x = torch.randn(3, 4, 8, 8)
    x[1] = 0.0  # scale 0: the output is the bias
    bias = torch.randn(6)
    got = qk.conv2d(x, *q, 5, w.shape, bias, padding=1, int8_activations=True)
    assert torch.equal(got[1], bias.reshape(6, 1, 1).expand(6, 8, 8))
    for dtype in (torch.float16, torch.bfloat16):
        low = qk.conv2d(x.to(dtype), *q, 5, w.shape, bias, padding=1, int8_activations=True)
        want = reference.conv2d(
            x.to(dtype), *q, bias, 5, list(w.shape), [1, 1], [1, 1], [1, 1], 1, True
        )
        assert low.dtype == dtype and torch.equal(low, want)
    empty = qk.conv2d(x[:0], *q, 5, w.shape, bias, padding=1, int8_activations=True)
    assert empty.shape == (0, 6, 8, 8)


def test_opcheck_and_compile():
    torch.manual_seed(5)
    w = torch.randn(8, 3, 3, 3)
    q = qk.quantize_weight(w.reshape(8, -1), 4, None)
    x = torch.randn(2, 3, 9, 9)
    args = (x, *q, torch.randn(8), 4, [8, 3, 3, 3], [1, 1], [1, 1], [1, 1], 1, True)
    torch.library.opcheck(torch.ops.qpart.conv2d.default, args)

    def fn(t):
        return torch.relu(qk.conv2d(t, *q, 4, w.shape, None, 1, 1, int8_activations=True))

    compiled = torch.compile(fn, fullgraph=True)
    assert torch.equal(compiled(x), fn(x))


def test_modules_and_quantize_model():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2))
    x = torch.randn(2, 3, 12, 12)
    flt = qk.quantize_model(copy.deepcopy(model), 4)
    i8 = qk.quantize_model(copy.deepcopy(model), 4, act_int8=True)
    assert all(m.act_int8 for m in i8.modules() if isinstance(m, qk.QPartConv2d))
    assert "act_int8=True" in repr(i8)
    y_f, y_i = flt(x), i8(x)
    assert not torch.equal(y_f, y_i)
    torch.testing.assert_close(y_i, y_f, rtol=0.1, atol=0.1)
    partial = qk.quantize_model(copy.deepcopy(model), 4, act_int8={"2": True})
    assert partial[2].act_int8 and not partial[0].act_int8
    assert set(i8.state_dict()) == set(flt.state_dict())  # the flag is not in the payload
    layer = qk.QPartConv2d.from_float(model[0], 3, act_int8=True)
    want = reference.conv2d(
        x, layer.packed_weight, layer.scales, layer.zeros, layer.bias, 3, [8, 3, 3, 3],
        [1, 1], [1, 1], [1, 1], 1, True,
    )  # fmt: skip
    assert torch.equal(layer(x), want)
    assert layer(x[0]).shape == (8, 12, 12)  # unbatched input


def test_rejects_bad_input():
    w = qk.quantize_weight(torch.randn(4, 27), 4, None)
    x = torch.randn(2, 3, 6, 6)
    x[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        qk.conv2d(x, *w, 4, (4, 3, 3, 3), int8_activations=True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        reference.conv2d(x, *w, None, 4, [4, 3, 3, 3], [1, 1], [0, 0], [1, 1], 1, True)
    x[1, 0, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        torch.ops.qpart.conv2d(x, *w, None, 4, [4, 3, 3, 3], [1, 1], [0, 0], [1, 1], 1, True)
    assert not bool(torch.isfinite(qk.conv2d(x, *w, 4, (4, 3, 3, 3))).all())  # float path
    with pytest.raises(TypeError, match="must be a bool"):
        qk.conv2d(x, *w, 4, (4, 3, 3, 3), int8_activations=1)
    bad = w.scales.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite weight scales"):
        qk.conv2d(torch.randn(1, 3, 6, 6), w.packed, bad, w.zeros, 4, (4, 3, 3, 3),
                  int8_activations=True)  # fmt: skip
    big = 3 * 150 * 150  # one group of 67500 codes > 65536
    wb = qk.quantize_weight(torch.randn(1, big), 2, None)
    xb = torch.randn(1, 3, 150, 150)
    for fn in (
        lambda: qk.conv2d(xb, *wb, 2, (1, 3, 150, 150), int8_activations=True),
        lambda: reference.conv2d(
            xb, *wb, None, 2, [1, 3, 150, 150], [1, 1], [0, 0], [1, 1], 1, True
        ),
    ):
        with pytest.raises(ValueError, match="at most 65536"):
            fn()


@pytest.mark.parametrize("c_in", [8, 40], ids=["direct", "amx-sized"])
def test_weight_panel_cache_is_verified_by_content(c_in):
    """The glue caches unpacked weight panels; a hit must equal a rebuild (docs/OPS.md). With
    >= 32 input channels the amx row's panel folds the zero points in (where every code -
    zero fits int8), so zero points changed in place must not hit the old panel either."""
    torch.manual_seed(8)
    w1, w2 = torch.randn(16, c_in, 3, 3), torch.randn(16, c_in, 3, 3)
    x = torch.randn(1, c_in, 10, 10)
    q1 = qk.quantize_weight(w1.reshape(16, -1), 4, None)
    q2 = qk.quantize_weight(w2.reshape(16, -1), 4, None)

    def both(q):
        got = qk.conv2d(x, *q, 4, w1.shape, None, 1, 1, int8_activations=True)
        want = reference.conv2d(x, *q, None, 4, [16, c_in, 3, 3], [1, 1], [1, 1], [1, 1], 1, True)
        return got, want

    for q in (q1, q2, q1, q2):  # same geometry, other weights: never mixed up
        got, want = both(q)
        assert torch.equal(got, want)
    packed = q1.packed.clone()
    q3 = qk.QuantizedTensor(packed, q1.scales, q1.zeros)
    assert torch.equal(*both(q3))
    packed[3].bitwise_xor_(0x5A)  # the same tensor (pointer) updated in place
    got, want = both(q3)
    assert torch.equal(got, want)
    assert not torch.equal(got, both(q1)[0])
    zeros = q1.zeros.clone()
    q4 = qk.QuantizedTensor(q1.packed, q1.scales, zeros)
    before = both(q4)[0]
    for new_zero in (3, 200, 128):  # in place: folded, then too large to fold, then folded
        zeros[5] = new_zero
        got, want = both(q4)
        assert torch.equal(got, want), new_zero
        assert not torch.equal(got, before), new_zero


def test_without_the_panel_cache(tmp_path):
    script = tmp_path / "nocache.py"
    script.write_text(
        "import torch, qpart_kernels as qk\n"
        "from qpart_kernels.ops import reference\n"
        "w = torch.randn(8, 4, 3, 3); x = torch.randn(1, 4, 9, 9)\n"
        "q = qk.quantize_weight(w.reshape(8, -1), 3, None)\n"
        "for _ in range(2):\n"
        "    got = qk.conv2d(x, *q, 3, w.shape, None, 1, 1, int8_activations=True)\n"
        "    one = [1, 1]\n"
        "    want = reference.conv2d(x, *q, None, 3, [8, 4, 3, 3], one, one, one, 1, True)\n"
        "    assert torch.equal(got, want)\n"
    )
    env = {**os.environ, "QPART_CONV_I8_CACHE_MB": "0"}
    subprocess.run([sys.executable, "-P", str(script)], check=True, env=env, timeout=300)
