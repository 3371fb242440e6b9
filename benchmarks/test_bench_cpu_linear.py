"""Packed linear on the CPU kernels vs fp32 ``F.linear`` and PyTorch dynamic int8 linear,
measured in the same run (issue 8).

    OMP_NUM_THREADS=2 python -m pytest benchmarks/test_bench_cpu_linear.py -p benchmark \
        --benchmark-min-rounds=5 --benchmark-max-time=0.3 --benchmark-warmup=on \
        --benchmark-json=benchmarks/results/cpu-linear.json
    python benchmarks/make_results.py benchmarks/results/cpu-linear.json > benchmarks/RESULTS.md

Shapes (out x in): 4096x4096, 11008x4096 and the MNIST MLP layers (784-512-256-128-64-32-10);
batch 1, 8 and 64; widths 1..8, per channel and group 128 (where 128 divides in_features);
float activations and the opt-in int8 activations (``int8_activations=True``).
``cache=hot`` reuses one weight; ``cache=cold`` (large shapes, batch 1 and 8) rotates
through copies totalling ``read_roof.cold_bytes()`` (>= 256 MiB and twice the last-level
cache) so each call reads its weight from DRAM.
Every case records ``weight_bytes`` (packed codes + scales + zeros, or the fp32 / int8
weight) so make_results.py can derive GB/s and the roofline fraction.
``QPART_BENCH_QUICK=1`` keeps only 4096x4096 and widths 2, 4, 8 (for a quick look).
"""

from __future__ import annotations

import itertools
import os
import pathlib
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import qpart_kernels as qk
from qpart_kernels import cpu_isa

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from read_roof import cold_bytes  # noqa: E402

COLD_BYTES = cold_bytes()
QUICK = os.environ.get("QPART_BENCH_QUICK") == "1"
BIG = [(4096, 4096)] if QUICK else [(4096, 4096), (11008, 4096)]
MNIST = [] if QUICK else [(512, 784), (256, 512), (128, 256), (64, 128), (32, 64), (10, 32)]
BITS = [2, 4, 8] if QUICK else list(range(1, 9))
BATCHES = [1, 8, 64]

_cache: dict = {}


def _weight(n, k):
    key = ("w", n, k)
    if key not in _cache:
        _cache[key] = torch.randn(n, k) / k**0.5
    return _cache[key]


def _copies(nbytes: int, cache: str) -> int:
    return 1 if cache == "hot" else max(2, -(-COLD_BYTES // nbytes))


def _rotating(fn, items):
    it = itertools.cycle(items)
    return lambda x: fn(x, next(it))


def _cases():
    for n, k in BIG:
        for batch in BATCHES:
            for cache in ("hot", "cold") if batch in (1, 8) else ("hot",):
                yield n, k, batch, cache
    for n, k in MNIST:
        for batch in BATCHES:
            yield n, k, batch, "hot"


CASES = list(_cases())
IDS = [f"{n}x{k}-b{b}-{c}" for n, k, b, c in CASES]


def _group(benchmark, n, k, batch, cache):
    benchmark.group = f"linear {n}x{k} batch {batch} {cache}"
    torch.set_num_threads(int(os.environ.get("QPART_BENCH_THREADS", "2")))


@pytest.mark.parametrize("n,k,batch,cache", CASES, ids=IDS)
def test_fp32(benchmark, n, k, batch, cache):
    _group(benchmark, n, k, batch, cache)
    w = _weight(n, k)
    ws = [w] + [w.clone() for _ in range(_copies(w.numel() * 4, cache) - 1)]
    x = torch.randn(batch, k)
    benchmark.extra_info.update(
        kind="fp32", weight_bytes=w.numel() * 4, n=n, k=k, batch=batch, cache=cache, copies=len(ws)
    )
    benchmark(_rotating(lambda x, w: F.linear(x, w), ws), x)


@pytest.mark.parametrize("n,k,batch,cache", CASES, ids=IDS)
def test_int8_dynamic(benchmark, n, k, batch, cache):
    _group(benchmark, n, k, batch, cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        lin = torch.nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.copy_(_weight(n, k))
        mods = [
            quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
            for _ in range(_copies(n * k, cache))
        ]
    x = torch.randn(batch, k)
    benchmark.extra_info.update(
        kind="int8 dynamic (torch)",
        weight_bytes=n * k,
        n=n,
        k=k,
        batch=batch,
        cache=cache,
        copies=len(mods),
    )
    benchmark(_rotating(lambda x, m: m(x), mods), x)


@pytest.mark.parametrize("act", ["float", "int8"])
@pytest.mark.parametrize("group", [None, 128], ids=["perchannel", "g128"])
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("n,k,batch,cache", CASES, ids=IDS)
def test_qpart(benchmark, n, k, batch, cache, bits, group, act):
    if group is not None and k % group:
        pytest.skip(f"group {group} does not divide {k}")
    _group(benchmark, n, k, batch, cache)
    key = ("q", n, k, bits, group)
    q = _cache.get(key)
    if q is None:
        q = _cache[key] = qk.quantize_weight(_weight(n, k), bits, group)
    nbytes = q.payload_bytes()
    qs = [q] + [type(q)(*(t.clone() for t in q)) for _ in range(_copies(nbytes, cache) - 1)]
    x = torch.randn(batch, k)
    int8 = act == "int8"
    kind = f"qpart {bits}-bit" + (" int8-act" if int8 else "")
    benchmark.extra_info.update(
        kind=kind,
        bits=bits,
        group=group or k,
        weight_bytes=nbytes,
        n=n,
        k=k,
        batch=batch,
        cache=cache,
        copies=len(qs),
        isa=cpu_isa.get_cpu_isa(),
    )
    benchmark(_rotating(lambda x, q: qk.linear(x, *q, bits, int8_activations=int8), qs), x)
