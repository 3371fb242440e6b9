"""Weight quantizer throughput (qpart.quantize_weight, fp32 input bytes per second), scalar vs
AVX2, single thread, thread CPU time, minimum over rounds (the machine is shared; see
cpu_time_linear.py).

    OMP_NUM_THREADS=1 python benchmarks/cpu_time_quantize.py [--rounds 5] [--shape 4096x4096]
"""

from __future__ import annotations

import argparse
import time

import torch

import qpart_kernels as qk
from qpart_kernels import cpu_isa


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shape", default="4096x4096")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n, k = map(int, args.shape.split("x"))
    w = torch.randn(n, k)
    print(
        f"Single thread, {n}x{k} fp32 ({w.numel() * 4 / 2**20:.0f} MiB), thread CPU time, "
        f"min of {args.rounds} rounds\n"
    )
    print("| ISA | bits | group | ms | GB/s of fp32 input |")
    print("|---|---:|---|---:|---:|")
    for isa in cpu_isa.available_cpu_isas():
        with cpu_isa.cpu_isa(isa):
            for bits in (2, 4, 8):
                for group in (None, 128):
                    best = float("inf")
                    for _ in range(args.rounds):
                        t0 = time.thread_time()
                        qk.quantize_weight(w, bits, group)
                        best = min(best, time.thread_time() - t0)
                    print(
                        f"| {isa} | {bits} | {group or 'channel'} | {best * 1e3:.1f} | "
                        f"{w.numel() * 4 / best / 1e9:.2f} |"
                    )


if __name__ == "__main__":
    main()
