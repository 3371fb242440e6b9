"""The CPU ops' output pool (csrc/torch/output_pool.h): large outputs reuse freed blocks
instead of fresh pages, never share memory while alive, stay resizable, and the pool keeps at
most ``QPART_OUTPUT_POOL_MB`` free bytes (0: off)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import qpart_kernels as qk

pytestmark = pytest.mark.skipif(not qk.extension_loaded(), reason="needs the compiled extension")


def _free_bytes() -> int:
    return qk.output_pool_free_bytes()


def _conv(x: torch.Tensor, q, w_shape) -> torch.Tensor:
    return qk.conv2d(x, *q, 4, w_shape, None, 1, 1, int8_activations=True)


@pytest.fixture()
def layer():
    torch.manual_seed(0)
    w = torch.randn(32, 16, 3, 3)
    x = torch.randn(4, 16, 48, 48)  # a 1.2 MB output: pooled (>= 1 MiB)
    return x, qk.quantize_weight(w.reshape(32, -1), 4, None), w.shape


def test_freed_outputs_are_reused_and_live_ones_never_shared(layer):
    x, q, shape = layer
    want = _conv(x, q, shape).clone()
    a = _conv(x, q, shape)
    free = _free_bytes()
    del a
    assert _free_bytes() >= free + want.numel() * 4  # kept for the next output
    b, c = _conv(x, q, shape), _conv(x, q, shape)
    assert b.data_ptr() != c.data_ptr()
    b.add_(1.0)  # writing one must not change the other
    assert torch.equal(c, want) and torch.equal(b, want + 1.0)


def test_pooled_outputs_resize_and_work_as_tensors(layer):
    x, q, shape = layer
    y = _conv(x, q, shape)
    want = y.clone()
    y.resize_(8, 32, 48, 48)  # grows: a new block, the old values kept
    assert torch.equal(y[:4], want)
    assert torch.equal(torch.relu(_conv(x, q, shape)), torch.relu(want))


@pytest.mark.parametrize("cap_mb,kept", [("0", False), ("1", False), ("64", True)])
def test_pool_cap_from_the_environment(cap_mb, kept):
    script = (
        "import torch, qpart_kernels as qk\n"
        "w = torch.randn(32, 16, 3, 3); x = torch.randn(4, 16, 48, 48)\n"
        "q = qk.quantize_weight(w.reshape(32, -1), 4, None)\n"
        "y = qk.conv2d(x, *q, 4, w.shape, None, 1, 1, int8_activations=True)\n"
        "ref = y.clone(); del y\n"
        "y = qk.conv2d(x, *q, 4, w.shape, None, 1, 1, int8_activations=True)\n"
        "assert torch.equal(y, ref)\n"
        "del y\n"
        "print(qk.output_pool_free_bytes())\n"
    )
    env = {**os.environ, "QPART_OUTPUT_POOL_MB": cap_mb}
    out = subprocess.run(
        [sys.executable, "-P", "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    free = int(out.stdout.strip().splitlines()[-1])
    assert (free >= 32 * 48 * 48 * 4 * 4) == kept, free


@pytest.mark.parametrize("cap_mb", [None, "0", "300"])
def test_pool_cap_default_follows_the_machine_memory(cap_mb):
    """Without QPART_OUTPUT_POOL_MB the cap is a sixteenth of physical memory within
    256 MiB .. 1 GiB; the variable overrides it."""
    env = {k: v for k, v in os.environ.items() if k != "QPART_OUTPUT_POOL_MB"}
    if cap_mb is not None:
        env["QPART_OUTPUT_POOL_MB"] = cap_mb
    out = subprocess.run(
        [
            sys.executable,
            "-P",
            "-c",
            "import qpart_kernels as qk; print(qk.output_pool_cap_bytes())",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    cap = int(out.stdout.strip().splitlines()[-1])
    if cap_mb is not None:
        assert cap == int(cap_mb) << 20
        return
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    want_mb = min(max(int(ram / 16 / 2**20), 256), 1024)
    assert cap == want_mb << 20
