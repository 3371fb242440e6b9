"""``qpart::max_pool2d``: the native CPU kernel against ATen's ``max_pool2d`` bit for bit (NaN,
+-Inf, ties of -0.0 and +0.0), every ISA and 1 and 2 threads, opcheck, bad input, and its use
by ``max_pool2d_slices`` (the device runtime's graph rewrite)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

import qpart_kernels as qk
from qpart_kernels.nn import max_pool2d_slices
from qpart_kernels.ops import has_native_kernel, reference

NAN, INF = float("nan"), float("inf")


def _values(shape, seed: int, nan: bool = True) -> torch.Tensor:
    """Small half-integers (many ties), a third of them zeros of either sign, some +-Inf and
    (``nan``) some NaN."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-6, 7, shape, generator=g).float() * 0.5
    u = torch.rand(shape, generator=g)
    x = torch.where(u < 0.3, torch.where(u < 0.15, -0.0, 0.0), x)
    x = torch.where((u > 0.95) & (u <= 0.98), torch.where(u > 0.965, INF, -INF), x)
    if nan:
        x = torch.where(u > 0.98, NAN, x)
    return x


def _assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    """ATen's values bit for bit; NaN where ATen gives NaN (its payload may differ)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    ints = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
    view = ints[want.dtype]
    assert torch.equal(got.contiguous().view(view)[~nan], want.contiguous().view(view)[~nan])


def _geometries(kernel: int):
    for kh, kw in ((kernel, kernel), (kernel, max(1, kernel - 2))):
        for stride in (1, 2, 3):
            for ph in range(kh // 2 + 1):
                for pw in range(kw // 2 + 1):
                    yield (kh, kw), (stride, 4 - stride), (ph, pw)


# One list of (input, kernel_size, stride, padding) for opcheck and the sample parity test
# (no NaN: opcheck compares outputs with assert_close, where NaN != NaN).
SAMPLES = [
    (_values((1, 8, 112, 112), 1, nan=False), [3, 3], [2, 2], [1, 1]),  # the ResNet stem's pool
    (_values((4, 6, 28, 28), 2, nan=False), [2, 2], [2, 2], [0, 0]),  # an MNIST CNN's pool
    (_values((2, 3, 11, 9), 3, nan=False), [3, 2], [1, 2], [1, 0]),
    (_values((2, 3, 17, 13), 4, nan=False).to(torch.float16), [3, 3], [2, 2], [1, 1]),
    (_values((2, 3, 17, 13), 5, nan=False).to(torch.bfloat16), [2, 3], [2, 1], [1, 1]),
    (  # channels-last input
        _values((2, 5, 13, 9), 6, nan=False).to(memory_format=torch.channels_last),
        [3, 3],
        [2, 2],
        [1, 1],
    ),
    (_values((3, 2, 19, 10), 7, nan=False)[:, :, ::2], [2, 2], [1, 1], [0, 1]),  # strided input
    (_values((0, 3, 9, 9), 8, nan=False), [3, 3], [2, 2], [1, 1]),  # empty batch
]


@pytest.mark.parametrize("args", SAMPLES, ids=lambda a: "x".join(map(str, a[0].shape)))
def test_opcheck(args):
    torch.library.opcheck(torch.ops.qpart.max_pool2d.default, args)


@pytest.mark.parametrize("args", SAMPLES, ids=lambda a: "x".join(map(str, a[0].shape)))
def test_samples_equal_aten(isa, threads, args):
    x, kernel, stride, padding = args
    got = torch.ops.qpart.max_pool2d(x, kernel, stride, padding)
    assert got.is_contiguous()
    _assert_same(got, F.max_pool2d(x, kernel, stride, padding))


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
def test_every_geometry_equals_aten(isa, threads, kernel):
    x = _values((3, 4, 23, 37), kernel)
    for kernel_size, stride, padding in _geometries(kernel):
        want = F.max_pool2d(x, kernel_size, stride, padding)
        _assert_same(qk.ops.max_pool2d(x, kernel_size, stride, padding), want)
        _assert_same(reference.max_pool2d(x, kernel_size, stride, padding), want)


def test_signed_zero_ties_follow_aten():
    # One window, row 0 = (-inf, +0), row 1 = (-0, -1): ATen keeps the first zero in row-major
    # order (+0); a column-major scan would give -0.
    for first in (0.0, -0.0):
        x = torch.tensor([[[[-INF, first], [-first, -1.0]]]])
        want = F.max_pool2d(x, 2)
        assert torch.equal(torch.signbit(want), torch.signbit(torch.tensor(first)).view(1, 1, 1, 1))
        _assert_same(qk.ops.max_pool2d(x, 2), want)
    x = torch.where(torch.rand(2, 16, 45, 45) < 0.5, 0.0, -0.0)  # nothing but ties
    _assert_same(qk.ops.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))


def test_all_minus_inf_and_nan_planes():
    x = torch.full((1, 2, 9, 10), -INF)
    x[0, 1] = NAN
    _assert_same(qk.ops.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))


def test_stride_defaults_to_kernel_and_ints_broadcast():
    x = torch.randn(2, 3, 12, 10)
    assert torch.equal(qk.ops.max_pool2d(x, 3), F.max_pool2d(x, 3))
    assert torch.equal(qk.ops.max_pool2d(x, (3, 2), 1, (1, 0)), F.max_pool2d(x, (3, 2), 1, (1, 0)))


@pytest.mark.parametrize("impl", ["native", "reference"])
def test_bad_input_raises_clear_errors(impl):
    op = torch.ops.qpart.max_pool2d if impl == "native" else reference.max_pool2d
    x = torch.randn(1, 2, 8, 8)
    cases = [
        ((x.to(torch.int32), [2, 2], [2, 2], [0, 0]), TypeError, "must be float32"),
        ((x.to(torch.float64), [2, 2], [2, 2], [0, 0]), TypeError, "must be float32"),
        ((x[0], [2, 2], [2, 2], [0, 0]), ValueError, "must be 4-D"),
        ((x, [0, 2], [2, 2], [0, 0]), ValueError, "kernel_size must be two ints"),
        ((x, [2, 2], [2, 0], [0, 0]), ValueError, "stride must be two ints"),
        ((x, [2, 2], [2, 2], [0, -1]), ValueError, "padding must be two ints"),
        ((x, [3, 3], [1, 1], [2, 1]), ValueError, "at most half the kernel size"),
        ((x, [9, 3], [1, 1], [0, 1]), ValueError, "too small"),
        ((x[:, :0], [2, 2], [2, 2], [0, 0]), ValueError, "non-empty channels and planes"),
        ((x, [2, 2], [2, 2], [2**40, 0]), ValueError, "padding must be two ints"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            op(*args)


def test_public_wrapper_rejects_bad_pairs():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(TypeError, match="qpart.max_pool2d: kernel_size must be an int"):
        qk.ops.max_pool2d(x, 2.0)
    with pytest.raises(ValueError, match="qpart.max_pool2d: stride must be an int or a pair"):
        qk.ops.max_pool2d(x, 2, (1, 1, 1))


@pytest.mark.skipif(not has_native_kernel("max_pool2d"), reason="no compiled extension")
def test_slices_run_the_native_op(monkeypatch):
    calls = []
    native = torch.ops.qpart.max_pool2d

    class Spy:
        def __call__(self, *args):
            calls.append(args[0].dtype)
            return native(*args)

    monkeypatch.setattr(torch.ops.qpart, "max_pool2d", Spy())
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = _values((2, 3, 15, 14), 11).to(dtype)
        _assert_same(max_pool2d_slices(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))
    assert calls == [torch.float32, torch.float16, torch.bfloat16]
    # float64, channels-last, ceil mode, dilation and gradients stay off the op.
    x = torch.randn(2, 3, 15, 14, dtype=torch.float64)
    assert torch.equal(max_pool2d_slices(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))
    x = torch.randn(2, 3, 15, 14).to(memory_format=torch.channels_last)
    assert torch.equal(max_pool2d_slices(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))
    x = torch.randn(2, 3, 15, 14)
    assert torch.equal(max_pool2d_slices(x, 3, 2, 1, 1, True), F.max_pool2d(x, 3, 2, 1, 1, True))
    assert torch.equal(max_pool2d_slices(x, 3, 1, 1, 2), F.max_pool2d(x, 3, 1, 1, 2))
    max_pool2d_slices(x.requires_grad_(), 3, 2, 1)
    assert len(calls) == 3
