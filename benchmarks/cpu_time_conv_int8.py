"""Integer conv2d (``int8_activations=True``) vs PyTorch static int8 conv and fp32 F.conv2d.

ResNet-18's 3x3 convolutions at batch 1 (224x224 input), wall-clock time with two threads
(torch.set_num_threads), every case of a layer timed once per round, rounds interleaved:

* ``fp32``: ``F.conv2d`` (oneDNN);
* ``int8 pt``: PyTorch static int8 conv, ``torch.ao.nn.quantized.Conv2d`` on the ``x86``
  quantized engine (FBGEMM kernels; ``fbgemm`` where ``x86`` is missing), per-channel qint8
  weights, calibrated scales, *including* ``quantize_per_tensor`` of the float input and
  ``dequantize`` of the output (what a float model pays around one such layer);
* ``int8 core``: the same conv alone on a quantized input, int8 in and int8 out (what each
  conv of a PyTorch FX int8 network costs; QPART's layers still take and give floats);
* ``qpart i8``: ``qpart_kernels.conv2d(..., int8_activations=True)`` at each width
  (per-channel packed weights; float in, float out, the image quantized inside);
* ``qpart f32``: the float-activation packed conv at the same width, for reference.

Reports per layer the minimum time of each case and the paired ratio
``int8 pt time / qpart i8 time`` of each round (same round, so both saw the same machine
load): its minimum and median (> 1: qpart is faster).

    python benchmarks/cpu_time_conv_int8.py [--bits 4] [--rounds 30] [--threads 2] [--clock wall]
        [--group-size 128]

``--clock cpu`` times one thread by its CPU time (time.thread_time; forces ``--threads 1``),
which other jobs on a shared machine disturb much less than wall-clock time.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import qpart_kernels as qk
from qpart_kernels import cpu_isa

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import vnni_peak  # noqa: E402

# (name, c_in, c_out, stride, input H=W): every 3x3 conv shape of ResNet-18 on 224x224
LAYERS = [
    ("layer1 64->64", 64, 64, 1, 56),
    ("layer2 64->128 /2", 64, 128, 2, 56),
    ("layer2 128->128", 128, 128, 1, 28),
    ("layer3 128->256 /2", 128, 256, 2, 28),
    ("layer3 256->256", 256, 256, 1, 14),
    ("layer4 256->512 /2", 256, 512, 2, 14),
    ("layer4 512->512", 512, 512, 1, 7),
]


def quantized_engine() -> str:
    """PyTorch's x86 quantized engine where it exists, else fbgemm."""
    engines = torch.backends.quantized.supported_engines
    return "x86" if "x86" in engines else "fbgemm"


def pytorch_int8(w: torch.Tensor, x: torch.Tensor, stride: int, groups: int = 1):
    """A calibrated static int8 conv (3x3, padding 1, ``groups``): with its input quantize
    and output dequantize, and alone on a quantized input (int8 in, int8 out: what one conv
    of a PyTorch FX int8 network costs)."""
    import torch.ao.nn.quantized as nnq

    cout, cin = w.shape[0], w.shape[1] * groups
    conv = nnq.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True)
    w_scale = (w.abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-8).double()
    qw = torch.quantize_per_channel(w, w_scale, torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
    conv.set_weight_bias(qw, torch.zeros(cout))
    ref = F.conv2d(x, w, None, stride, 1, groups=groups)
    lo, hi = float(ref.min()), float(ref.max())
    conv.scale, conv.zero_point = (hi - lo) / 255.0, int(round(-lo / ((hi - lo) / 255.0)))
    x_scale = float(x.abs().max()) / 127.5

    def run() -> torch.Tensor:
        return conv(torch.quantize_per_tensor(x, x_scale, 128, torch.quint8)).dequantize()

    xq = torch.quantize_per_tensor(x, x_scale, 128, torch.quint8)

    def run_core() -> torch.Tensor:
        return conv(xq)

    return run, run_core


def layer_cases(layer, bits_list, group_size=None):
    """Callables: fp32, PyTorch int8, then qpart i8 and qpart f32 per width (and qpart i8
    with weight groups of ``group_size`` codes where that divides the row)."""
    _, cin, cout, stride, hw = layer
    torch.manual_seed(0)
    w = torch.randn(cout, cin, 3, 3) / (cin * 9) ** 0.5
    x = torch.randn(1, cin, hw, hw)
    pt, pt_core = pytorch_int8(w, x, stride)
    cases = {"fp32": lambda: F.conv2d(x, w, None, stride, 1), "int8 pt": pt, "int8 core": pt_core}
    for bits in bits_list:
        q = qk.quantize_weight(w.reshape(cout, -1), bits, None)
        cases[f"qpart i8 {bits}b"] = lambda q=q, bits=bits: qk.conv2d(
            x, *q, bits, w.shape, None, stride, 1, int8_activations=True
        )
        cases[f"qpart f32 {bits}b"] = lambda q=q, bits=bits: qk.conv2d(
            x, *q, bits, w.shape, None, stride, 1
        )
        if group_size and (cin * 9) % group_size == 0:
            qg = qk.quantize_weight(w.reshape(cout, -1), bits, group_size)
            cases[f"qpart i8 {bits}b g"] = lambda q=qg, bits=bits: qk.conv2d(
                x, *q, bits, w.shape, None, stride, 1, int8_activations=True
            )
    return cases


def rate_cell(rate: float, peak: float | None) -> str:
    """G products per second, with its share of the vpdpbusd peak where that was measured."""
    return f"{rate / 1e9:.0f}" + (f" ({100 * rate / peak:.0f} %)" if peak else "")


def time_rounds(cases: dict, rounds: int, clock=time.perf_counter) -> dict[str, list[float]]:
    """Per-case times of `rounds` interleaved rounds (after two warm-up calls each)."""
    for fn in cases.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, nargs="+", default=[4])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="also time qpart i8 with weight groups of this many codes (where it divides a "
        "row) and report per-channel time / grouped time",
    )
    args = ap.parse_args()
    clock = time.perf_counter
    if args.clock == "cpu":
        args.threads, clock = 1, time.thread_time
    warnings.filterwarnings("ignore")  # the deprecation notes of torch.ao quantized tensors
    torch.backends.quantized.engine = quantized_engine()
    torch.set_num_threads(args.threads)
    print(
        f"\nbatch 1, {args.threads} thread(s), {args.clock} clock, min of {args.rounds} "
        "interleaved rounds; "
        f"CPU ISA {cpu_isa.get_cpu_isa()}, PyTorch {torch.__version__} quantized engine "
        f"{torch.backends.quantized.engine}\n"
    )
    peak = vnni_peak.products_per_second() if args.clock == "wall" else None
    if peak is not None:
        print(
            f"vpdpbusd peak (vnni_peak.c, one thread): {peak / 1e9:.0f} G products/s; "
            "rates below are products per second per thread and their % of it\n"
        )
    # A discarded pass over every layer first: on an AMX Xeon VM the first layer timed in a
    # process ran PyTorch's fp32 and int8 convs ~2x slower for all its rounds (0.56 against
    # 0.26 ms for int8, the same layer timed again later), which inflated its ratio.
    for layer in LAYERS:
        time_rounds(layer_cases(layer, args.bits[:1]), 20, clock)
    for bits in args.bits:
        print(
            f"| layer | fp32 ms | int8 pt ms | qpart i8 {bits}b ms | qpart f32 {bits}b ms | "
            "int8 pt / qpart i8 (min, median of paired rounds) | int8 core ms | "
            "int8 core / qpart i8 (median) | GMAC/s per thread: int8 core, qpart i8 |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        grouped_rows = []
        for layer in LAYERS:
            cases = layer_cases(layer, [bits], args.group_size)
            t = time_rounds(cases, args.rounds, clock)
            if f"qpart i8 {bits}b g" in t:
                g, pc = t[f"qpart i8 {bits}b g"], t[f"qpart i8 {bits}b"]
                r = [a / b for a, b in zip(pc, g)]
                grouped_rows.append(
                    f"| {layer[0]} | {min(pc) * 1e3:.3f} | {min(g) * 1e3:.3f} | "
                    f"{min(r):.2f}, {statistics.median(r):.2f} |"
                )
            mine = t[f"qpart i8 {bits}b"]
            ratios = [a / b for a, b in zip(t["int8 pt"], mine)]
            cells = " | ".join(
                f"{min(t[n]) * 1e3:.3f}"
                for n in ("fp32", "int8 pt", f"qpart i8 {bits}b", f"qpart f32 {bits}b")
            )
            core = [a / b for a, b in zip(t["int8 core"], mine)]
            macs = layer[2] * layer[1] * 9 * (layer[4] // layer[3]) ** 2
            rates = ", ".join(
                rate_cell(macs / min(t[n]) / args.threads, peak)
                for n in ("int8 core", f"qpart i8 {bits}b")
            )
            print(
                f"| {layer[0]} | {cells} | {min(ratios):.2f}, {statistics.median(ratios):.2f} | "
                f"{min(t['int8 core']) * 1e3:.3f} | {statistics.median(core):.2f} | {rates} |",
                flush=True,
            )
        if grouped_rows:
            print(
                f"\n| layer | qpart i8 {bits}b per channel ms | group {args.group_size} ms | "
                "per channel / grouped (min, median of paired rounds) |\n|---|---:|---:|---:|"
            )
            print("\n".join(grouped_rows), flush=True)


if __name__ == "__main__":
    main()
