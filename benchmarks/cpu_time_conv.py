"""Packed conv2d vs fp32 F.conv2d (oneDNN) on ResNet-18-like layers at batch 1.

Two measurements, each interleaved round-robin (fp32 baseline and every width in the same
round) and reported as the minimum over rounds, because the development machine is shared
(see cpu_time_linear.py):

* ``cpu1``: one thread, thread CPU time (time.thread_time) - insensitive to other load.
* ``wall2``: two threads (torch.set_num_threads(2)), wall-clock time (time.perf_counter) -
  what a caller sees; needs a quiet machine for stable numbers.

    python benchmarks/cpu_time_conv.py [--mode both|cpu1|wall2] [--bits 2 4 8] [--rounds 20]

Prints one markdown table per mode: fp32 ms, then qpart ms and x fp32 (fp32 time / qpart
time, > 1 is faster) per width; per-channel weights.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

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

MODES = {
    # name: (threads, clock, description)
    "cpu1": (1, time.thread_time, "one thread, thread CPU time"),
    "wall2": (2, time.perf_counter, "two threads, wall-clock time"),
}


def layer_cases(layer, bits_list) -> list[Callable[[], torch.Tensor]]:
    """fp32 F.conv2d first, then qpart.conv2d at each width, on the same input."""
    _, cin, cout, ks, stride, pad, hw = layer
    torch.manual_seed(0)
    w = torch.randn(cout, cin, ks, ks) / (cin * ks * ks) ** 0.5
    x = torch.randn(1, cin, hw, hw)
    cases = [lambda: F.conv2d(x, w, None, stride, pad)]
    for bits in bits_list:
        q = qk.quantize_weight(w.reshape(cout, -1), bits, None)
        cases.append(lambda q=q, bits=bits: qk.conv2d(x, *q, bits, w.shape, None, stride, pad))
    return cases


def time_min(cases, clock, rounds: int) -> list[float]:
    """Minimum time of each case over `rounds` interleaved rounds (after one warm-up)."""
    for fn in cases:
        fn()
    best = [float("inf")] * len(cases)
    for _ in range(rounds):
        for i, fn in enumerate(cases):
            t0 = clock()
            fn()
            best[i] = min(best[i], clock() - t0)
    return best


def run_mode(mode: str, bits_list, rounds: int) -> None:
    threads, clock, what = MODES[mode]
    torch.set_num_threads(threads)
    print(
        f"\n{what} ({mode}), CPU ISA {cpu_isa.get_cpu_isa()}, batch 1, per-channel weights, "
        f"min of {rounds} interleaved rounds\n"
    )
    head = "| layer | fp32 ms |" + "".join(f" {b}-bit ms | {b}-bit x fp32 |" for b in bits_list)
    print(head)
    print("|---|---:|" + "---:|---:|" * len(bits_list))
    for layer in LAYERS:
        best = time_min(layer_cases(layer, bits_list), clock, rounds)
        cells = "".join(f" {t * 1e3:.3f} | {best[0] / t:.2f} |" for t in best[1:])
        print(f"| {layer[0]} | {best[0] * 1e3:.3f} |{cells}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["both", *MODES], default="both")
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    for mode in MODES if args.mode == "both" else [args.mode]:
        run_mode(mode, args.bits, args.rounds)


if __name__ == "__main__":
    main()
