"""The blocked integer GEMM (``int8_activations=True``, batches beyond the GEMV path): its
outputs must be *bit-identical* to the AVX2 kernels before the packed-panel rework.

``data/linear_i8_avx2_gemm_golden.json`` holds SHA-256 prefixes of ``qk.linear`` outputs
(every width 1..8; odd shapes; per-channel and grouped weights, groups of one to eight
32-code vectors and groups longer than one 16-bit accumulation; batches 4..100; bias)
computed by the AVX2 kernels of the commit before the rework, with 1 and 2 threads (equal
then too). The AVX2 path must reproduce every one with 1 and 2 threads; every ISA this
machine has must match the reference within float rounding and agree across thread counts.
Regenerate (only when the numerics are meant to change) with
``python tests/kernels/test_linear_int8_gemm.py --write``.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import pytest
import torch

import qpart_kernels as qk
from qpart_kernels import cpu_isa
from qpart_kernels.ops import reference

pytestmark = pytest.mark.skipif(not qk.extension_loaded(), reason="needs the compiled extension")

DATA = pathlib.Path(__file__).parent / "data" / "linear_i8_avx2_gemm_golden.json"
# (n, k, group): per-channel with k tails, group 128, short groups (32, 64, 96), groups longer
# than one s16 window at high widths (256), one group of k codes with a tail (417).
SHAPES = [
    (37, 256, 128),
    (29, 384, None),
    (64, 129, None),
    (45, 320, 64),
    (19, 1024, 128),
    (50, 512, 256),
    (13, 288, 96),
    (24, 417, 417),
    (7, 96, 32),
]
BATCHES = (4, 9, 16, 31, 64, 67, 97, 100)


def _inputs(bits, n, k, gs, m):
    g = torch.Generator().manual_seed(bits * 1000003 + n * 1009 + k * 31 + (gs or 0) * 7 + m)
    w = torch.randn(n, k, generator=g)
    x = torch.randn(m, k, generator=g) * 2
    b = torch.randn(n, generator=g)
    return x, qk.quantize_weight(w, bits, gs), b


def _output(bits, n, k, gs, m, threads):
    x, q, b = _inputs(bits, n, k, gs, m)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return qk.linear(x, *q, bits, bias=b, int8_activations=True)
    finally:
        torch.set_num_threads(before)


def _digest(y: torch.Tensor) -> str:
    return hashlib.sha256(y.contiguous().numpy().tobytes()).hexdigest()[:16]


def _key(bits, n, k, gs, m):
    return ",".join(map(str, [bits, n, k, gs or 0, m]))


@pytest.mark.parametrize("bits", range(1, 9))
def test_avx2_gemm_matches_the_kernels_before_the_rework(bits):
    if "avx2" not in cpu_isa.available_cpu_isas():
        pytest.skip("no AVX2 on this CPU")
    golden = json.loads(DATA.read_text())
    wrong = []
    with cpu_isa.cpu_isa("avx2"):
        for n, k, gs in SHAPES:
            for m in BATCHES:
                key = _key(bits, n, k, gs, m)
                for threads in (1, 2):
                    if _digest(_output(bits, n, k, gs, m, threads)) != golden[key]:
                        wrong.append((key, threads))
    assert not wrong, f"outputs changed: {wrong}"


@pytest.mark.parametrize("bits", range(1, 9))
def test_gemm_matches_reference_and_thread_counts(isa, bits):
    for n, k, gs in SHAPES:
        for m in (9, 64):
            x, q, b = _inputs(bits, n, k, gs, m)
            y1 = _output(bits, n, k, gs, m, 1)
            y2 = _output(bits, n, k, gs, m, 2)
            assert torch.equal(y1, y2), (isa, bits, n, k, gs, m)
            want = reference.linear(x, *q, b, bits, k, True)
            wd = qk.dequantize_weight(*q, bits, k)
            bound = reference.int8_fake_quant(x).abs() @ wd.abs().t() + b.abs()
            err = (y1 - want).abs()
            assert bool((err <= 2e-6 * bound + 1e-6).all()), (isa, bits, n, k, gs, m)


def _write() -> None:
    out = {}
    with cpu_isa.cpu_isa("avx2"):
        for bits in range(1, 9):
            for n, k, gs in SHAPES:
                for m in BATCHES:
                    d1 = _digest(_output(bits, n, k, gs, m, 1))
                    d2 = _digest(_output(bits, n, k, gs, m, 2))
                    assert d1 == d2, (bits, n, k, gs, m)
                    out[_key(bits, n, k, gs, m)] = d1
    DATA.write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        _write()
