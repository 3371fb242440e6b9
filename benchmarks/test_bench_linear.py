"""Packed linear vs fp32 F.linear (the baseline measured in the same run), batch 1 and 8.

    python -m pytest benchmarks/test_bench_linear.py -p benchmark \
        --benchmark-json=benchmarks/results/cpu-linear.json

Each case records the weight bytes it reads, so achieved GB/s and the roofline ratio
(32 / (bits + overhead bits per weight)) can be derived from the JSON.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import qpart_kernels as qk

SHAPES = [(1024, 1024), (4096, 4096)]
BITS = [2, 4, 8]


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("batch", [1, 8])
def test_fp32_linear(benchmark, n, k, batch):
    w = torch.randn(n, k)
    x = torch.randn(batch, k)
    benchmark.group = f"linear {n}x{k} batch {batch}"
    benchmark.extra_info.update(weight_bytes=w.numel() * 4, kind="fp32")
    benchmark(F.linear, x, w)


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("bits", BITS)
def test_qpart_linear(benchmark, n, k, batch, bits):
    q = qk.quantize_weight(torch.randn(n, k), bits)
    x = torch.randn(batch, k)
    benchmark.group = f"linear {n}x{k} batch {batch}"
    benchmark.extra_info.update(weight_bytes=q.payload_bytes(), kind=f"qpart {bits}-bit")
    benchmark(qk.linear, x, *q, bits)
