"""The small-batch (GEMV) packed matmul after its streaming rework (dynamic chunk hand-out,
one prefetch stream per thread, vpmovzxbd plane unpack): its outputs must be *bit-identical*
to the kernels before the rework.

``data/gemv_avx2_golden.json`` holds SHA-256 prefixes of ``qk.linear`` outputs (float and
int8-activation paths; odd shapes, every width 1..8, per-channel and grouped weights, batch
1..8; bias) computed by the AVX2 kernels of the commit before the rework, with 1 and 2
threads (equal then too). The AVX2 path must reproduce every one, with 1 and 2 threads; on
every ISA this machine has, 1 and 2 threads must agree bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import pytest
import torch

import qpart_kernels as qk
from qpart_kernels import cpu_isa

pytestmark = pytest.mark.skipif(not qk.extension_loaded(), reason="needs the compiled extension")

GOLDEN = json.loads((pathlib.Path(__file__).parent / "data" / "gemv_avx2_golden.json").read_text())
SHAPES = [
    (37, 256, 32),
    (29, 384, 128),
    (64, 129, None),
    (45, 320, 64),
    (19, 4096, None),
    (300, 1024, 128),
]
BATCHES = (1, 2, 3, 5, 8)


def _output(bits, n, k, gs, m, threads, i8):
    g = torch.Generator().manual_seed(bits * 1000003 + n * 1009 + k * 31 + (gs or 0) * 7 + m)
    w = torch.randn(n, k, generator=g)
    x = torch.randn(m, k, generator=g)
    b = torch.randn(n, generator=g)
    q = qk.quantize_weight(w, bits, gs)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return qk.linear(x, *q, bits, bias=b, int8_activations=i8)
    finally:
        torch.set_num_threads(before)


def _digest(y: torch.Tensor) -> str:
    return hashlib.sha256(y.contiguous().numpy().tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("i8", [False, True], ids=["f32", "i8"])
def test_avx2_matches_the_kernels_before_the_rework(bits, i8):
    if "avx2" not in cpu_isa.available_cpu_isas():
        pytest.skip("no AVX2 on this CPU")
    wrong = []
    with cpu_isa.cpu_isa("avx2"):
        for n, k, gs in SHAPES:
            for m in BATCHES:
                key = ",".join(map(str, [bits, n, k, gs or 0, m, int(i8)]))
                for threads in (1, 2):
                    if _digest(_output(bits, n, k, gs, m, threads, i8)) != GOLDEN[key]:
                        wrong.append((key, threads))
    assert not wrong, f"outputs changed: {wrong}"


@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_thread_count_does_not_change_bits(isa, bits):
    for n, k, gs in SHAPES:
        for m in (1, 3):
            for i8 in (False, True):
                y1 = _output(bits, n, k, gs, m, 1, i8)
                y2 = _output(bits, n, k, gs, m, 2, i8)
                assert torch.equal(y1, y2), (isa, bits, n, k, gs, m, i8)
