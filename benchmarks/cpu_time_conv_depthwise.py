"""Integer depthwise conv2d: the depthwise path vs the generic integer path, PyTorch static
int8 and fp32 ``F.conv2d``, on MobileNet-like 3x3 depthwise layers at batch 1.

Wall-clock time with two threads (torch.set_num_threads), every case of a layer timed once
per round, rounds interleaved, all in one process:

* ``fp32``: ``F.conv2d(..., groups=c)`` (oneDNN);
* ``int8 pt``: ``torch.ao.nn.quantized.Conv2d(..., groups=c)`` on the ``x86`` quantized engine
  (``fbgemm`` where ``x86`` is missing), per-channel qint8 weights, calibrated scales,
  *including* ``quantize_per_tensor`` of the float input and ``dequantize`` of the output;
* ``qpart dw``: ``qpart_kernels.conv2d(..., int8_activations=True)`` with the depthwise path
  (per-channel packed weights; float in, float out, the image quantized inside);
* ``qpart generic``: the same call with ``QPART_CONV_I8_DEPTHWISE=0`` (the generic direct
  kernels: each channel padded to a 4-channel block), set and cleared around each call.

Reports per layer the minimum time of each case and the paired ratios of each round (same
round, so both saw the same machine load) ``generic / dw`` and ``int8 pt / dw``: their minimum
and median (> 1: the depthwise path is faster).

    python benchmarks/cpu_time_conv_depthwise.py [--bits 4] [--rounds 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings

import cpu_time_conv_int8 as conv_int8
import torch
import torch.nn.functional as F

import qpart_kernels as qk
from qpart_kernels import cpu_isa

# (name, channels, stride, input H=W): MobileNet-v2-like 3x3 depthwise layers, padding 1
LAYERS = [
    ("32ch 112x112", 32, 1, 112),
    ("96ch 112x112 /2", 96, 2, 112),
    ("144ch 56x56", 144, 1, 56),
    ("192ch 28x28", 192, 1, 28),
    ("384ch 14x14", 384, 1, 14),
    ("960ch 7x7", 960, 1, 7),
]

SWITCH = "QPART_CONV_I8_DEPTHWISE"


def pytorch_int8(w: torch.Tensor, x: torch.Tensor, stride: int):
    """A calibrated static int8 depthwise conv with its input quantize and output dequantize."""
    return conv_int8.pytorch_int8(w, x, stride, groups=w.shape[0])


def generic(fn):
    """fn run with the depthwise path switched off (the generic integer kernels)."""

    def run():
        os.environ[SWITCH] = "0"
        try:
            return fn()
        finally:
            del os.environ[SWITCH]

    return run


def layer_cases(layer, bits: int) -> dict:
    _, c, stride, hw = layer
    torch.manual_seed(0)
    w = torch.randn(c, 1, 3, 3) / 3.0
    x = torch.randn(1, c, hw, hw)
    q = qk.quantize_weight(w.reshape(c, -1), bits, None)

    def dw():
        return qk.conv2d(x, *q, bits, w.shape, None, stride, 1, groups=c, int8_activations=True)

    cases = {
        "fp32": lambda: F.conv2d(x, w, None, stride, 1, groups=c),
        "int8 pt": pytorch_int8(w, x, stride),
        "qpart dw": dw,
        "qpart generic": generic(dw),
    }
    assert torch.equal(cases["qpart dw"](), cases["qpart generic"]())
    return cases


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.pop(SWITCH, None)
    warnings.filterwarnings("ignore")  # the deprecation notes of torch.ao quantized tensors
    torch.backends.quantized.engine = conv_int8.quantized_engine()
    torch.set_num_threads(args.threads)
    print(
        f"\nbatch 1, {args.threads} thread(s), wall clock, {args.bits}-bit per-channel weights, "
        f"{args.rounds} interleaved rounds; CPU ISA {cpu_isa.get_cpu_isa()}, PyTorch "
        f"{torch.__version__} quantized engine {torch.backends.quantized.engine}\n"
    )
    print(
        "| layer | fp32 ms | int8 pt ms | qpart generic ms | qpart dw ms | "
        "generic / dw (min, median) | int8 pt / dw (min, median) | fp32 / dw (min, median) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for layer in LAYERS:
        t = conv_int8.time_rounds(layer_cases(layer, args.bits), args.rounds)
        mine = t["qpart dw"]

        def ratio(name: str) -> str:
            r = [a / b for a, b in zip(t[name], mine)]
            return f"{min(r):.2f}, {statistics.median(r):.2f}"

        cells = " | ".join(
            f"{min(t[n]) * 1e3:.3f}" for n in ("fp32", "int8 pt", "qpart generic", "qpart dw")
        )
        print(
            f"| {layer[0]} | {cells} | {ratio('qpart generic')} | {ratio('int8 pt')} | "
            f"{ratio('fp32')} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
