"""Native ``qpart::max_pool2d`` vs the strided-slice pool vs ATen vs PyTorch's quantized pool.

Wall-clock time of one float NCHW max pool on CPU, every case timed once per round and the
rounds interleaved in ONE process (the machine's speed varies a lot between processes, so
only numbers from the same run are compared):

* ``native``: ``torch.ops.qpart.max_pool2d`` (what ``max_pool2d_slices``, i.e. the device
  runtime's ``fuse_epilogues``, now calls on CPU NCHW float tensors);
* ``slices``: the previous path, the maximum of strided slices (``kh + kw`` ``torch.maximum``
  passes, first along the width, then along the height);
* ``aten``: ``F.max_pool2d`` on the NCHW float tensor;
* ``quint8`` / ``quint8cl``: ``F.max_pool2d`` on a ``quint8`` (``quantize_per_tensor``)
  tensor, NCHW / channels-last: PyTorch's quantized max pool, for reference (the float input's
  quantization not included; its fast kernel is the channels-last one).

Shapes: ResNet-18's stem pool (1x64x112x112, 3x3 stride 2 pad 1) and an MNIST CNN's pool at
batch 32 (32x32x28x28, 2x2 stride 2). Reports the minimum and median time of each case and
the median of the paired per-round ratios ``case / native``.

    .venv/bin/python benchmarks/cpu_time_max_pool.py [--rounds 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F  # noqa: N812

import qpart_kernels  # noqa: F401  (registers the ops)
from qpart_kernels import cpu_isa
from qpart_kernels.nn.fuse import max_pool2d_strided_slices

SHAPES = [
    ("resnet18 stem 1x64x112x112 3x3/2 p1", (1, 64, 112, 112), 3, 2, 1),
    ("mnist cnn 32x32x28x28 2x2/2", (32, 32, 28, 28), 2, 2, 0),
]


def _cases(x: torch.Tensor, k: int, s: int, p: int) -> dict:
    q = torch.quantize_per_tensor(x, float(x.abs().max()) / 127, 128, torch.quint8)
    q_cl = q.contiguous(memory_format=torch.channels_last)
    return {
        "native": lambda: torch.ops.qpart.max_pool2d(x, [k, k], [s, s], [p, p]),
        "slices": lambda: max_pool2d_strided_slices(x, (k, k), (s, s), (p, p)),
        "aten": lambda: F.max_pool2d(x, k, s, p),
        "quint8": lambda: F.max_pool2d(q, k, s, p),
        "quint8cl": lambda: F.max_pool2d(q_cl, k, s, p),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
    print(f"torch {torch.__version__}, {args.threads} threads, ISA {cpu_isa.get_cpu_isa()}")
    for name, shape, k, s, p in SHAPES:
        x = torch.relu(torch.randn(shape))
        cases = _cases(x, k, s, p)
        want = F.max_pool2d(x, k, s, p)
        assert torch.equal(cases["native"](), want) and torch.equal(cases["slices"](), want)
        times: dict[str, list[float]] = {c: [] for c in cases}
        with torch.inference_mode():
            for _ in range(10):  # warm-up
                for fn in cases.values():
                    fn()
            for _ in range(args.rounds):
                for case, fn in cases.items():
                    t0 = time.perf_counter()
                    fn()
                    times[case].append(time.perf_counter() - t0)
        print(f"\n{name}")
        print(f"{'case':9} {'min ms':>8} {'median ms':>10} {'median x native':>16}")
        for case, ts in times.items():
            ratio = statistics.median(t / n for t, n in zip(ts, times["native"]))
            print(
                f"{case:8} {min(ts) * 1e3:8.3f} {statistics.median(ts) * 1e3:10.3f} {ratio:16.2f}"
            )


if __name__ == "__main__":
    main()
