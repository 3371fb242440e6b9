"""Packed linear vs fp32 F.linear and PyTorch dynamic int8, interleaved round-robin (every
kernel once per round, so all see the same machine state), minimum over rounds. One thread
(default) is timed in *thread CPU time* (time.thread_time), which is less sensitive than wall
clock to other processes on a shared machine (it still sees their cache/DRAM traffic);
``--threads 2`` times wall clock (time.perf_counter) and needs a quiet machine.

    python benchmarks/cpu_time_linear.py [--rounds 15] [--threads 1] [--shape 4096x4096]
        [--bits 2,4,8] [--batches 1,8,64] [--groups channel,128] [--int8 also|only|off]

``--int8 also`` adds the integer path (``int8_activations=True``: int8 activations x codes)
next to the float path of every width; ``only`` times just the integer path.

Prints a markdown table per (batch, cache) with ms, speedup over fp32, GB/s of weight bytes
and the roofline fraction (see make_results.py).
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import torch
import torch.nn.functional as F

import qpart_kernels as qk
from qpart_kernels import cpu_isa

COLD_BYTES = 256 * 2**20


def copies(nbytes, cache):
    return 1 if cache == "hot" else max(2, -(-COLD_BYTES // nbytes))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--shape", default="4096x4096")
    ap.add_argument("--bits", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--groups", default="channel,128")
    ap.add_argument("--int8", choices=("off", "also", "only"), default="off")
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
    print(
        f"{args.threads} thread(s), CPU ISA {cpu_isa.get_cpu_isa()}, {n}x{k}, {clock_name}, "
        f"min of {args.rounds} interleaved rounds\n"
    )
    groups = [None if g == "channel" else int(g) for g in args.groups.split(",")]
    qs = {(b, g): qk.quantize_weight(w, b, g) for b in bits_list for g in groups}
    modes = {"off": (False,), "also": (False, True), "only": (True,)}[args.int8]
    for batch in [int(b) for b in args.batches.split(",")]:
        for cache in ("cold", "hot") if batch < 64 else ("hot",):
            x = torch.randn(batch, k)
            cases = []
            ws = [w] + [w.clone() for _ in range(copies(w.numel() * 4, cache) - 1)]
            cases.append(
                (
                    "fp32",
                    "",
                    w.numel() * 4,
                    1.0,
                    lambda it=itertools.cycle(ws): F.linear(x, next(it)),
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
            cases.append(
                (
                    "int8 dynamic (torch)",
                    "",
                    n * k,
                    4.0,
                    lambda it=itertools.cycle(mods): next(it)(x),
                )
            )
            for (b, g), q in qs.items():
                nb = q.payload_bytes()
                reps = [q] + [
                    type(q)(*(t.clone() for t in q)) for _ in range(copies(nb, cache) - 1)
                ]
                grp = g or k
                for i8 in modes:
                    cases.append(
                        (
                            f"qpart {b}-bit" + (" int8-act" if i8 else ""),
                            "channel" if g is None else str(g),
                            nb,
                            32.0 / (b + 24.0 / grp),
                            lambda it=itertools.cycle(reps), b=b, i8=i8: qk.linear(
                                x, *next(it), b, int8_activations=i8
                            ),
                        )
                    )
            best = [float("inf")] * len(cases)
            for _ in range(args.rounds):
                for i, c in enumerate(cases):
                    t0 = clock()
                    c[4]()
                    best[i] = min(best[i], clock() - t0)
            t32 = best[0]
            print(f"### batch {batch}, cache-{cache}\n")
            print("| kernel | group | ms | x fp32 | GB/s | roof % |")
            print("|---|---|---:|---:|---:|---:|")
            for c, t in zip(cases, best):
                sp = t32 / t
                print(
                    f"| {c[0]} | {c[1]} | {t * 1e3:.3f} | {sp:.2f} | {c[2] / t / 1e9:.1f} | "
                    f"{100 * sp / c[3]:.0f} |"
                )
            print()
            del cases, ws, mods


if __name__ == "__main__":
    main()
