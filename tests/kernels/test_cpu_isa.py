"""Every available CPU ISA path of the native kernels (scalar, AVX2, AVX-512, NEON) through the ops,
against the pure-PyTorch reference, with 1 and 2 threads; plus the ISA selection API."""

from __future__ import annotations

import pytest
import torch

import qpart_kernels as qk
from helpers import ALL_BITS
from qpart_kernels import cpu_isa
from qpart_kernels.ops import reference

pytestmark = pytest.mark.skipif(not qk.extension_loaded(), reason="needs the compiled extension")


def _tol(out: torch.Tensor) -> dict[str, float]:
    return {"atol": 2e-4 * (1.0 + float(out.abs().max())), "rtol": 1e-4}


def test_api():
    isas = cpu_isa.available_cpu_isas()
    assert isas[-1] == "scalar"
    assert cpu_isa.get_cpu_isa() in isas
    with cpu_isa.cpu_isa("scalar"):
        assert cpu_isa.get_cpu_isa() == "scalar"
        with cpu_isa.cpu_isa("auto"):
            assert cpu_isa.get_cpu_isa() == isas[0]
        assert cpu_isa.get_cpu_isa() == "scalar"
    with pytest.raises(ValueError, match="unknown CPU ISA"):
        cpu_isa.set_cpu_isa("sse9")
    missing = [name for name in ("avx2", "avx512", "amx", "neon") if name not in isas]
    for name in missing:
        with pytest.raises(ValueError, match="not supported"):
            cpu_isa.set_cpu_isa(name)


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize(
    "m,k,n,group",
    [
        (1, 100, 37, None),  # per-channel, k not a multiple of 8
        (2, 256, 33, 128),
        (3, 64, 1, 32),  # n = 1
        (4, 1030, 19, None),  # GEMM path, several K blocks, k tail
        (9, 384, 50, 128),
        (1, 784, 512, None),  # MNIST MLP first layer
    ],
)
def test_linear_every_isa(isa, threads, bits, m, k, n, group):
    w = torch.randn(n, k)
    x = torch.randn(m, k)
    bias = torch.randn(n)
    q = qk.quantize_weight(w, bits, group)
    out = qk.linear(x, *q, bits, bias)
    expected = reference.linear(x, *q, bias, bits, k)
    torch.testing.assert_close(out, expected, **_tol(expected))


@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_linear_results_independent_of_threads(isa, bits):
    q = qk.quantize_weight(torch.randn(67, 320), bits, 64)
    x = torch.randn(5, 320)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = qk.linear(x, *q, bits)
        torch.set_num_threads(2)
        two = qk.linear(x, *q, bits)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, two)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_conv2d_every_isa(isa, threads, bits):
    x = torch.randn(2, 8, 9, 9)
    w = torch.randn(12, 4, 3, 3)
    bias = torch.randn(12)
    q = qk.quantize_weight(w.reshape(12, -1), bits)
    args = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=2)
    out = qk.conv2d(x, *q, bits, tuple(w.shape), bias, **args)
    expected = reference.conv2d(
        x,
        *q,
        bias,
        bits,
        tuple(w.shape),
        args["stride"],
        args["padding"],
        args["dilation"],
        args["groups"],
    )
    torch.testing.assert_close(out, expected, **_tol(expected))
