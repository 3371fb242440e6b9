"""GPU tests: the CUDA implementation of every op (Triton or CUDA C++, per
QPART_CUDA_BACKEND) against the reference, opcheck and torch.compile. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import qpart_kernels as qk
from helpers import ALL_BITS, tolerance
from qpart_kernels.ops import reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("group", [None, 128])
@pytest.mark.parametrize("m", [1, 16, 64])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_linear_matches_reference(bits, group, m, dtype):
    w = torch.randn(96, 256, device="cuda")
    q = qk.quantize_weight(w, bits, group)
    ref_q = reference.quantize_weight(w.cpu(), bits, group or 256)
    for a, b in zip(q, ref_q):
        assert torch.equal(a.cpu(), b)
    x = torch.randn(m, 256, device="cuda").to(dtype)
    torch.testing.assert_close(
        qk.linear(x, *q, bits).cpu(),
        reference.linear(x.cpu(), *ref_q, None, bits, 256),
        **tolerance(dtype),
    )


@pytest.mark.parametrize("bits", ALL_BITS)
def test_conv2d_and_activation_match_reference(bits):
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2).cuda()
    q = qk.QPartConv2d.from_float(conv, bits)
    x = torch.randn(2, 8, 15, 13, device="cuda")
    expected = reference.conv2d(
        x.cpu(),
        q.packed_weight.cpu(),
        q.scales.cpu(),
        q.zeros.cpu(),
        q.bias.cpu(),
        bits,
        list(q.weight_shape),
        [2, 2],
        [1, 1],
        [1, 1],
        2,
    )
    torch.testing.assert_close(q(x).cpu(), expected, atol=1e-4, rtol=1e-4)
    a = qk.quantize_activation(x, bits, per_token=True)
    for got, want in zip(a, reference.quantize_activation(x.cpu(), bits, True)):
        assert torch.equal(got.cpu(), want)


def test_opcheck_on_cuda():
    q = tuple(qk.quantize_weight(torch.randn(32, 64, device="cuda"), 4, 32))
    torch.library.opcheck(
        torch.ops.qpart.linear.default,
        (torch.randn(3, 64, device="cuda", dtype=torch.float16), *q, None, 4, 64),
    )
    torch.library.opcheck(
        torch.ops.qpart.quantize_weight.default, (torch.randn(8, 64, device="cuda"), 3, 32)
    )


def test_compile_fullgraph_on_cuda():
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).cuda()
    qk.quantize_model(model, 4)
    x = torch.randn(4, 64, device="cuda")
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_triton_ops_opcheck_and_compile():
    if qk.ops.CUDA_BACKEND != "triton":
        pytest.skip("the Triton backend is not the active CUDA backend")
    q = tuple(qk.quantize_weight(torch.randn(48, 128, device="cuda"), 3, None))
    x = torch.randn(5, 128, device="cuda", dtype=torch.float16)
    torch.library.opcheck(torch.ops.qpart_triton.linear.default, (x, *q, None, 3, 128))

    def f(inp):
        return torch.relu(qk.linear(inp, *q, 3))

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x))
