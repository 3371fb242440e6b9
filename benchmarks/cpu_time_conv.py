"""Packed conv2d vs fp32 F.conv2d on ResNet-18-like layers at batch 1, single thread, timed
in thread CPU time (time.thread_time), interleaved round-robin, minimum over rounds (see
cpu_time_linear.py for why: the development machine is shared).

    OMP_NUM_THREADS=1 python benchmarks/cpu_time_conv.py [--rounds 10] [--bits 4]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import qpart_kernels as qk
from qpart_kernels import cpu_isa

# (name, c_in, c_out, kernel, stride, padding, input H=W) - ResNet-18 on 224x224 input
LAYERS = [
    ("layer1 3x3 64->64", 64, 64, 3, 1, 1, 56),
    ("layer2 3x3 128->128", 128, 128, 3, 1, 1, 28),
    ("layer3 3x3 256->256", 256, 256, 3, 1, 1, 14),
    ("layer4 3x3 512->512", 512, 512, 3, 1, 1, 7),
    ("layer2 1x1 64->128 /2", 64, 128, 1, 2, 0, 56),
    ("layer3 1x1 128->256 /2", 128, 256, 1, 2, 0, 28),
    ("layer4 1x1 256->512 /2", 256, 512, 1, 2, 0, 14),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--bits", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bits = args.bits
    print(f"Single thread, CPU ISA {cpu_isa.get_cpu_isa()}, batch 1, {bits}-bit per-channel "
          f"weights, thread CPU time, min of {args.rounds} rounds\n")
    print("| layer | fp32 F.conv2d ms | qpart ms | x fp32 |")
    print("|---|---:|---:|---:|")
    for name, cin, cout, ks, stride, pad, hw in LAYERS:
        torch.manual_seed(0)
        w = torch.randn(cout, cin, ks, ks) / (cin * ks * ks) ** 0.5
        x = torch.randn(1, cin, hw, hw)
        q = qk.quantize_weight(w.reshape(cout, -1), bits, None)
        cases = [
            lambda: F.conv2d(x, w, None, stride, pad),
            lambda: qk.conv2d(x, *q, bits, w.shape, None, stride, pad),
        ]
        best = [float("inf")] * len(cases)
        for _ in range(args.rounds):
            for i, fn in enumerate(cases):
                t0 = time.thread_time()
                fn()
                best[i] = min(best[i], time.thread_time() - t0)
        print(f"| {name} | {best[0] * 1e3:.3f} | {best[1] * 1e3:.3f} | {best[0] / best[1]:.2f} |")


if __name__ == "__main__":
    main()
