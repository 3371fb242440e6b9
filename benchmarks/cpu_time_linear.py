"""Packed linear vs its peers, interleaved round-robin: every kernel runs once per round, in
the same order, so all see the same machine state; min and median over rounds, and every
ratio *paired* (computed per round from the two times of that round, then min / median over
rounds). One thread (default) is timed in *thread CPU time* (time.thread_time), which is less
sensitive than wall clock to other processes on a shared machine (it still sees their
cache/DRAM traffic); ``--threads 2`` times wall clock (time.perf_counter).

    python benchmarks/cpu_time_linear.py [--rounds 15] [--threads 1] [--shape 4096x4096]
        [--bits 2,4,8] [--batches 1,8,64] [--groups channel,128] [--int8 also|only|off]
        [--caches cold,hot] [--ggml q4_0,q4_K,q8_0] [--no-roof]

Peers in the same rounds: fp32 ``F.linear``, PyTorch dynamic int8 (``quantize_dynamic`` ->
``torch.ao.nn.quantized.dynamic.Linear``, FBGEMM / x86), ggml's matmul on its own quantized
types (benchmarks/ggml_peer.py: a local ggml build via ``QPART_GGML_LIB`` or the ggml-python
package; skipped with a message when neither is there), and the **read roof**: a sum over a
buffer of ``read_roof.cold_bytes()`` on the same number of threads (benchmarks/read_roof.py:
a C loop of vector loads over four prefetched streams per thread, nothing but reads), as GB/s.

``--int8 also`` adds the integer path (``int8_activations=True``: int8 activations x codes)
next to the float path of every width; ``only`` times just the integer path.

Cache-cold cases rotate through weight copies totalling ``read_roof.cold_bytes()`` (>= 256
MiB and >= twice the last-level cache sysfs reports, so every call reads its weights from
DRAM). Per (batch, cache) a markdown table: ms min / median, GB/s of weight
bytes (from the min), "% roof" = this kernel's GB/s over the read roof's GB/s of the same
round (median over rounds, and the ratio of the minimum times), and the paired speedup over
the reference peer (``--vs``, default the first ggml type, else PyTorch dynamic int8).
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

import qpart_kernels as qk
from qpart_kernels import cpu_isa

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under python -P
from read_roof import ReadRoof, cold_bytes  # noqa: E402

COLD_BYTES = cold_bytes()


def copies(nbytes, cache):
    return 1 if cache == "hot" else max(2, -(-COLD_BYTES // nbytes))


class Case:
    """One timed kernel: label, group column, weight bytes per call, callable."""

    def __init__(self, name, group, nbytes, fn):
        self.name, self.group, self.nbytes, self.fn = name, group, nbytes, fn
        self.times: list[float] = []


def peer_cases(w, x, cache, ggml, ggml_types, threads, poll):
    """fp32 F.linear, PyTorch dynamic int8 and the ggml types (each in rotating copies)."""
    n, k = w.shape
    out = []
    ws = [w] + [w.clone() for _ in range(copies(w.numel() * 4, cache) - 1)]
    out.append(
        Case(
            "fp32 F.linear", "", w.numel() * 4, lambda it=itertools.cycle(ws): F.linear(x, next(it))
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        lin = torch.nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        mods = [
            quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
            for _ in range(copies(n * k, cache))
        ]
    out.append(
        Case("int8 dynamic (torch)", "channel", n * k, lambda it=itertools.cycle(mods): next(it)(x))
    )
    if ggml is not None:
        from ggml_peer import GgmlMatmul

        for t in ggml_types:
            probe = GgmlMatmul(ggml, w[:8].numpy(), x.numpy(), t, 1, threads, poll)
            row_bytes = probe.weight_bytes // 8
            probe.close()
            mm = GgmlMatmul(
                ggml, w.numpy(), x.numpy(), t, copies(n * row_bytes, cache), threads, poll
            )
            out.append(Case(f"ggml {t}", "", mm.weight_bytes, mm))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--shape", default="4096x4096")
    ap.add_argument("--bits", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--groups", default="channel,128")
    ap.add_argument("--int8", choices=("off", "also", "only"), default="off")
    ap.add_argument("--ggml", default="q4_0,q4_K,q8_0", help="ggml types to time ('' for none)")
    ap.add_argument("--ggml-poll", type=int, default=0, help="ggml thread-pool polling level")
    ap.add_argument("--vs", default=None, help="reference peer of the 'x peer' column")
    ap.add_argument("--caches", default="cold,hot", help="cache states of batches < 64")
    ap.add_argument("--no-roof", action="store_true", help="skip the read-roof case")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: thread CPU time; more: wall clock)",
    )
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    clock_name = "thread CPU time" if args.threads == 1 else "wall clock"
    n, k = map(int, args.shape.split("x"))
    w = torch.randn(n, k) / k**0.5
    bits_list = [int(b) for b in args.bits.split(",")]
    import ggml_peer

    ggml, ggml_types = None, [t for t in args.ggml.split(",") if t]
    if ggml_types:
        ggml, where = ggml_peer.load()
        print(f"ggml: {where}" if ggml is not None else f"ggml skipped: {where}")
    print(
        f"{args.threads} thread(s), CPU ISA {cpu_isa.get_cpu_isa()}, {n}x{k}, {clock_name}, "
        f"{args.rounds} interleaved rounds, cache-cold = {COLD_BYTES / 2**20:.0f} MiB\n"
    )
    roof = None if args.no_roof else ReadRoof(COLD_BYTES, args.threads)
    groups = [None if g == "channel" else int(g) for g in args.groups.split(",")]
    qs = {(b, g): qk.quantize_weight(w, b, g) for b in bits_list for g in groups}
    modes = {"off": (False,), "also": (False, True), "only": (True,)}[args.int8]
    for batch in [int(b) for b in args.batches.split(",")]:
        for cache in args.caches.split(",") if batch < 64 else ("hot",):
            x = torch.randn(batch, k)
            cases = peer_cases(
                w, x, cache, ggml, ggml_types if batch == 1 else [], args.threads, args.ggml_poll
            )
            if roof is not None:
                cases.append(Case(roof.name, "", roof.nbytes, roof))
            for (b, g), q in qs.items():
                nb = q.payload_bytes()
                reps = [q] + [
                    type(q)(*(t.clone() for t in q)) for _ in range(copies(nb, cache) - 1)
                ]
                for i8 in modes:
                    cases.append(
                        Case(
                            f"qpart {b}-bit" + (" int8-act" if i8 else ""),
                            "channel" if g is None else str(g),
                            nb,
                            lambda it=itertools.cycle(reps), b=b, i8=i8: qk.linear(
                                x, *next(it), b, int8_activations=i8
                            ),
                        )
                    )
            for c in cases:  # warm-up (first-call costs, thread pools)
                c.fn()
            for _ in range(args.rounds):
                for c in cases:
                    t0 = clock()
                    c.fn()
                    c.times.append(clock() - t0)
            report(cases, batch, cache, args.vs)
            for c in cases:
                if hasattr(c.fn, "close"):
                    c.fn.close()
            del cases


def report(cases, batch, cache, vs):
    """Prints the table of one (batch, cache)."""
    by_name = {c.name: c for c in cases}
    roof = next((c for c in cases if c.name.startswith("read roof")), None)
    ref = by_name.get(vs) if vs else None
    if ref is None:
        ref = next((c for c in cases if c.name.startswith("ggml")), by_name["int8 dynamic (torch)"])

    def rate(c, i):  # GB/s in round i
        return c.nbytes / c.times[i] / 1e9

    rounds = len(cases[0].times)
    print(f"### batch {batch}, cache-{cache}\n")
    if roof is not None:
        rr = [rate(roof, i) for i in range(rounds)]
        print(f"{roof.name}: {max(rr):.1f} GB/s best round, {statistics.median(rr):.1f} median\n")
    print(
        "| kernel | group | ms min | ms median | GB/s | % roof (median, of mins) | "
        f"x {ref.name} (median, min-max) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for c in cases:
        if c is roof:
            continue
        gbs = c.nbytes / min(c.times) / 1e9
        cell_roof = ""
        if roof is not None:
            paired = [rate(c, i) / rate(roof, i) for i in range(rounds)]
            roof_best = roof.nbytes / min(roof.times) / 1e9
            cell_roof = f"{100 * statistics.median(paired):.0f} ({100 * gbs / roof_best:.0f})"
        sp = np.array([ref.times[i] / c.times[i] for i in range(rounds)])
        print(
            f"| {c.name} | {c.group} | {min(c.times) * 1e3:.3f} | "
            f"{statistics.median(c.times) * 1e3:.3f} | {gbs:.1f} | {cell_roof} | "
            f"{np.median(sp):.2f} ({sp.min():.2f}-{sp.max():.2f}) |"
        )
    print()


if __name__ == "__main__":
    main()
