"""The CUDA C++ backend (csrc/cuda/): a compile check that runs without a GPU, and GPU tests
of every op under QPART_CUDA_BACKEND=cuda against the reference (skipped, with the reason,
where there is no CUDA device or the extension was built without CUDA kernels)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import qpart_kernels as qk
from helpers import ALL_BITS, tolerance
from qpart_kernels.ops import backends, reference

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cuda_compile_check.sh"


def _nvcc() -> str | None:
    return shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    )


@pytest.mark.slow
@pytest.mark.skipif(_nvcc() is None, reason="nvcc is not installed on this machine")
def test_cuda_sources_compile():
    """Every .cu compiles for sm_87 and sm_90; the glue passes -fsyntax-only (minutes)."""
    env = dict(os.environ, PYTHON=sys.executable, NVCC=_nvcc())
    env.setdefault("JOBS", str(min(4, os.cpu_count() or 1)))
    proc = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all CUDA sources compile" in proc.stdout


def test_backend_selection_without_native_kernels(monkeypatch):
    """Asking for the CUDA C++ backend of an extension built without it is a clear error."""
    if backends.native_cuda_kernels():
        pytest.skip("this extension has CUDA kernels")
    monkeypatch.setenv("QPART_CUDA_BACKEND", "cuda")
    with pytest.raises(ImportError, match="has no CUDA kernels"):
        backends.cuda_backend()


def _skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device on this machine"
    if not backends.native_cuda_kernels():
        return "the extension was built without CUDA kernels (CPU-only torch or no nvcc)"
    if qk.ops.CUDA_BACKEND != "cuda":
        return f"QPART_CUDA_BACKEND is {qk.ops.CUDA_BACKEND!r}, not 'cuda'"
    return None


gpu = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

# (out, in, group): odd rows, k % 128 != 0 (GEMM tiles only), k % 128 == 0 (GEMV too).
SHAPES = [(37, 100, None), (96, 256, None), (96, 256, 128), (50, 384, 32), (130, 1024, 64)]


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(str(v) for v in s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_dequantize_bit_identical(bits, shape, dtype):
    n, k, group = shape
    w = (torch.randn(n, k) * 3).to(dtype)
    got = qk.quantize_weight(w.cuda(), bits, group)
    want = reference.quantize_weight(w, bits, group or k)
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)
    deq = qk.dequantize_weight(*got, bits, k)
    assert torch.equal(deq.cpu(), reference.dequantize_weight(*want, bits, k))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(str(v) for v in s))
@pytest.mark.parametrize("m", [1, 3, 16, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_linear_matches_reference(bits, shape, m, dtype):
    n, k, group = shape
    w = torch.randn(n, k)
    q = reference.quantize_weight(w, bits, group or k)
    bias = torch.randn(n)
    x = torch.randn(m, k).to(dtype)
    want = reference.linear(x, *q, bias, bits, k)
    got = qk.linear(x.cuda(), *(t.cuda() for t in q), bits, bias=bias.cuda(), in_features=k)
    assert got.dtype == dtype and got.shape == (m, n)
    torch.testing.assert_close(got.cpu(), want, **tolerance(dtype))


@gpu
@pytest.mark.gpu
def test_linear_batched_input_dims():
    q = reference.quantize_weight(torch.randn(40, 128), 4, 32)
    x = torch.randn(2, 3, 128)
    got = qk.linear(x.cuda(), *(t.cuda() for t in q), 4)
    torch.testing.assert_close(
        got.cpu(), reference.linear(x, *q, None, 4, 128), **tolerance(torch.float32)
    )


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "case",
    [
        # (batch, c_in, c_out, kernel, stride, padding, dilation, groups, hw)
        (2, 8, 16, 3, 2, 1, 1, 2, (15, 13)),
        (1, 6, 10, 1, 1, 0, 1, 1, (7, 9)),
        (3, 4, 4, 3, 1, 2, 2, 4, (11, 8)),
    ],
)
def test_conv2d_matches_reference(bits, dtype, case):
    batch, c_in, c_out, kernel, stride, padding, dilation, groups, hw = case
    w = torch.randn(c_out, c_in // groups, kernel, kernel)
    k = w[0].numel()
    q = reference.quantize_weight(w.reshape(c_out, k), bits, k)
    bias = torch.randn(c_out)
    x = torch.randn(batch, c_in, *hw).to(dtype)
    args = (bits, list(w.shape), [stride] * 2, [padding] * 2, [dilation] * 2, groups)
    want = reference.conv2d(x, *q, bias, *args)
    got = torch.ops.qpart.conv2d(x.cuda(), *(t.cuda() for t in q), bias.cuda(), *args)
    assert got.dtype == dtype and got.is_contiguous()
    torch.testing.assert_close(got.cpu(), want, **tolerance(dtype))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_activation_roundtrip_bit_identical(bits, per_token, dtype):
    x = torch.randn(3, 5, 37).to(dtype)
    got = qk.quantize_activation(x.cuda(), bits, per_token)
    want = reference.quantize_activation(x, bits, per_token)
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)
    back = qk.dequantize_activation(*got, bits, x.shape, dtype)
    assert torch.equal(
        back.cpu(), reference.dequantize_activation(*want, bits, list(x.shape), dtype)
    )


@gpu
@pytest.mark.gpu
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN or Inf"):
        qk.quantize_weight(torch.tensor([[1.0, float("nan")]], device="cuda"), 4)
    with pytest.raises(ValueError, match="too wide for a float16 scale"):
        qk.quantize_weight(torch.tensor([[-6e4, 6e4] * 16], device="cuda"), 8)
    q = qk.quantize_weight(torch.randn(8, 64, device="cuda"), 4, 32)
    with pytest.raises(ValueError, match="in_features"):
        torch.ops.qpart.linear(torch.randn(2, 32, device="cuda"), *q, None, 4, 64)
    with pytest.raises(ValueError, match="CUDA tensor"):
        torch.ops.qpart.linear(
            torch.randn(2, 64, device="cuda"), q.packed.cpu(), q.scales, q.zeros, None, 4, 64
        )


@gpu
@pytest.mark.gpu
def test_opcheck_every_op():
    w = torch.randn(24, 128, device="cuda")
    q = tuple(qk.quantize_weight(w, 3, 32))
    x16 = torch.randn(5, 128, device="cuda", dtype=torch.float16)
    ops = torch.ops.qpart
    torch.library.opcheck(ops.quantize_weight.default, (w, 3, 32))
    torch.library.opcheck(ops.dequantize_weight.default, (*q, 3, 128))
    torch.library.opcheck(ops.linear.default, (x16, *q, None, 3, 128))
    torch.library.opcheck(
        ops.linear.default,
        (torch.randn(1, 128, device="cuda"), *q, torch.randn(24, device="cuda"), 3, 128),
    )
    cq = tuple(reference.quantize_weight(torch.randn(8, 4 * 9), 5, 36))
    cq = tuple(t.cuda() for t in cq)
    torch.library.opcheck(
        ops.conv2d.default,
        (
            torch.randn(2, 4, 9, 9, device="cuda"),
            *cq,
            None,
            5,
            [8, 4, 3, 3],
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        ),
    )
    a = tuple(qk.quantize_activation(x16, 6, True))
    torch.library.opcheck(ops.quantize_activation.default, (x16, 6, True))
    torch.library.opcheck(ops.dequantize_activation.default, (*a, 6, [5, 128], torch.float16))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_compile_fullgraph(dtype):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    ).cuda()
    qk.quantize_model(model, 4)  # every layer packed: fp16 inputs stay fp16 throughout
    x = torch.randn(2, 3, 6, 6, device="cuda", dtype=dtype)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x), **tolerance(dtype))
