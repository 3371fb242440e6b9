"""The compiled extension is loaded and provides the CPU kernels of every op."""

from __future__ import annotations

import os

import pytest

import qpart_kernels
from qpart_kernels.ops import PACKED_OPS, SCHEMAS, has_native_kernel

REQUIRED = os.environ.get("QPART_REQUIRE_EXTENSION") == "1"


@pytest.mark.skipif(not REQUIRED, reason="QPART_REQUIRE_EXTENSION=1 not set (pure-Python run)")
@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_native_cpu_kernel_registered(op):
    assert qpart_kernels.extension_loaded()
    assert has_native_kernel(op, "CPU"), f"qpart::{op} has no native CPU kernel"


@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_reference_is_the_fallback(op):
    assert has_native_kernel(op, "CompositeExplicitAutograd")


def test_cuda_key_gets_the_configured_backend(monkeypatch):
    from qpart_kernels.ops import CUDA_BACKEND, backends

    if CUDA_BACKEND == "triton":  # max_pool2d runs its reference (ATen) off the CPU
        assert all(has_native_kernel(op, "CUDA") for op in PACKED_OPS)
    monkeypatch.setenv("QPART_CUDA_BACKEND", "tpu")
    with pytest.raises(ValueError, match="QPART_CUDA_BACKEND must be one of"):
        backends.cuda_backend()


def test_package_works_without_triton():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, qpart_kernels as qk\n"
        "assert qk.ops.CUDA_BACKEND == 'reference', qk.ops.CUDA_BACKEND\n"
        "q = qk.quantize_weight(torch.randn(4, 16), 3)\n"
        "print(qk.linear(torch.randn(2, 16), *q, 3).shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch.Size([2, 4])" in result.stdout
