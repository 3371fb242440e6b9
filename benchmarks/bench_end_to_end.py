"""Whole networks at batch 1 and 32: fp32, PyTorch FX static int8 and QPART, same run.

    .venv/bin/python benchmarks/bench_end_to_end.py [--models mnist-resnet,resnet18]
        [--batches 1,32] [--bits 4] [--rounds 7] [--threads 2] [--json out.json] [--per-layer]

Networks: the ``mnist-resnet`` workload (the residual CNN of the real-models issue: basic
blocks with BatchNorm, trained on the digits, from the QPART cache) and an
11.7 M-parameter ResNet-18-shaped CNN with random weights on 224x224 inputs. Variants:

* ``fp32``: the float network (oneDNN);
* ``fx-int8``: PyTorch FX post-training static quantization, x86 backend (FBGEMM/oneDNN
  int8 kernels, per-channel weights, quantize of the input and dequantize of the output
  included), calibrated on the same inputs;
* ``qpart-f32``: every Conv2d / Linear as a ``QPartConv2d`` / ``QPartLinear`` at ``--bits``
  (per-channel), float activations (what ``quantize_model`` does by default);
* ``qpart-i8``: the same on the integer path (``act_int8=True``: int8 activations).

Both QPART variants run the graph the device runtime runs: ``qpart_kernels.fuse_epilogues``
(ReLU and residual add fused into the convolutions, max pool on strided slices); with
``--unfused`` the integer path is also timed without it (``qpart-i8-unfused``). ``--switch
NAME`` (repeatable) also times the integer path with the kernel switch ``NAME=0`` set during
its forwards (``qpart-i8 NAME=0``, e.g. ``QPART_CONV_I8_LANES``: the pixel tile instead of
the lanes tile), in the same interleaved rounds.

Timing: interleaved rounds (every variant once per round, in turn), wall clock, ``--threads``
torch threads; each figure is the min and median over rounds, and the ratios are paired per
round (``fx-int8 time / qpart time`` in the same round; > 1: QPART is faster). Agreement:
top-1 agreement of each variant with the fp32 network on held-out inputs (the test digits;
random inputs for the random-weight ResNet). Not a test: numbers depend on the machine's
load.

``--per-layer`` also prints, per batch, the median time of every leaf module of ``fx-int8``
and ``qpart-i8`` inside the network (forward hooks, ``--rounds`` forwards each): the peer's
convolutions there read and write quint8 activations, which a single-layer benchmark with
its quantize / dequantize around one conv does not show.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import qpart_kernels

ROOT = Path(__file__).resolve().parents[1]


def _resnet18_shaped() -> nn.Module:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from test_bench_planner import resnet18_shaped

    torch.manual_seed(0)
    return resnet18_shaped().eval()


def workload(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(float model, calibration inputs, held-out inputs)`` of a network."""
    if name == "mnist-resnet":
        from qpart.workloads.zoo import builtin_model

        b = builtin_model("mnist-resnet", progress=True)
        return b.model.eval(), b.calibration[:256], b.x_test[:1000]
    if name == "resnet18":
        gen = torch.Generator().manual_seed(1)
        return (
            _resnet18_shaped(),
            torch.randn(16, 3, 224, 224, generator=gen),
            torch.randn(64, 3, 224, 224, generator=gen),
        )
    raise SystemExit(f"unknown model {name!r}: mnist-resnet or resnet18")


def fx_static_int8(model: nn.Module, calib: torch.Tensor) -> nn.Module:
    """PyTorch FX post-training static int8 (x86 backend), calibrated on ``calib``."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), calib[:2])
    with torch.inference_mode():
        for chunk in calib.split(16):
            prepared(chunk)
    return convert_fx(prepared).eval()


def qpart_model(
    model: nn.Module,
    example: torch.Tensor,
    bits: int,
    act_int8: bool,
    group_size: int | None,
    fuse: bool = True,
) -> nn.Module:
    """Every Conv2d / Linear of a copy of ``model`` at ``bits`` (BatchNorm folded first by
    capturing the network, as the server does); ``group_size`` where it divides a layer's
    row length, else per channel; ``fuse``: the device runtime's graph rewrite."""
    from qpart.core.profile import profile

    gm = profile(model, example).graph_module
    layers = {n: m for n, m in gm.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    groups = {
        n: group_size if group_size and m.weight[0].numel() % group_size == 0 else None
        for n, m in layers.items()
    }
    quantized = qpart_kernels.quantize_model(
        copy.deepcopy(gm),
        dict.fromkeys(layers, bits),
        groups,
        act_int8=act_int8,
    ).eval()
    return qpart_kernels.fuse_epilogues(quantized) if fuse else quantized


class WithSwitchOff(nn.Module):
    """``model`` run with the environment variable ``name`` set to 0 during each forward."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = os.environ.get(self.name)
        os.environ[self.name] = "0"
        try:
            return self.model(x)
        finally:
            if before is None:
                del os.environ[self.name]
            else:
                os.environ[self.name] = before


def agreement(model: nn.Module, ref: torch.Tensor, x: torch.Tensor) -> float:
    """Top-1 agreement of ``model`` with the float outputs ``ref`` on ``x``."""
    with torch.inference_mode():
        out = torch.cat([model(c) for c in x.split(32)])
    return float((out.argmax(-1) == ref.argmax(-1)).float().mean())


def time_rounds(variants: dict, x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Seconds per forward of every variant, interleaved (each round runs all in turn)."""
    reps = max(1, int(0.2 / max(1e-4, _one(variants["fp32"], x))))
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for m in variants.values():
            m(x)  # warm up (weight repacks, oneDNN primitives)
        for _ in range(rounds):
            for name, m in variants.items():
                t = time.perf_counter()
                for _ in range(reps):
                    m(x)
                times[name].append((time.perf_counter() - t) / reps)
    return times


def module_times(model: nn.Module, x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median seconds of every leaf module of ``model`` over ``rounds`` forwards of ``x``
    (forward hooks, removed afterwards)."""
    spans: dict[str, list[float]] = {}
    handles = []
    for name, mod in model.named_modules():
        if name and not any(True for _ in mod.children()):

            def pre(_m, _a, name=name):
                spans.setdefault(name, []).append(-time.perf_counter())

            def post(_m, _a, _o, name=name):
                spans[name][-1] += time.perf_counter()

            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        with torch.inference_mode():
            model(x)
            spans.clear()
            for _ in range(rounds):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {name: statistics.median(ts) for name, ts in spans.items()}


def print_module_times(variants: dict, x: torch.Tensor, rounds: int) -> None:
    """The per-layer table of ``--per-layer``: fx-int8 and qpart-i8 side by side."""
    fx, qp = (module_times(variants[k], x, rounds) for k in ("fx-int8", "qpart-i8"))
    print("\n| module (FX name / QPART name) | fx-int8 ms | qpart-i8 ms |\n|---|---:|---:|")
    for name in dict.fromkeys([*fx, *qp]):
        f = f"{1e3 * fx[name]:.3f}" if name in fx else ""
        q = f"{1e3 * qp[name]:.3f}" if name in qp else ""
        print(f"| {name} | {f} | {q} |")
    print(f"| sum | {1e3 * sum(fx.values()):.3f} | {1e3 * sum(qp.values()):.3f} |")


def _one(model: nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        model(x)
        t = time.perf_counter()
        model(x)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mnist-resnet,resnet18")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=None, help="default: per channel")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--unfused", action="store_true", help="also time the integer path without the rewrite"
    )
    ap.add_argument(
        "--switch",
        action="append",
        default=[],
        help="also time the integer path with this kernel switch set to 0 (repeatable)",
    )
    ap.add_argument(
        "--per-layer", action="store_true", help="also time every module inside the networks"
    )
    args = ap.parse_args()
    # FX quantization's deprecation notes (it points users to torchao's pt2e flow)
    warnings.filterwarnings("ignore", message=r"(?s).*(torchao|quantize_per_tensor)")
    torch.set_num_threads(args.threads)
    report = []
    groups = f"group size {args.group_size}" if args.group_size else "per channel"
    print(
        f"# end to end, {args.threads} threads, {args.bits}-bit QPART ({groups}), "
        f"{args.rounds} rounds"
    )
    for name in args.models.split(","):
        model, calib, held = workload(name)
        with torch.inference_mode():
            ref = torch.cat([model(c) for c in held.split(32)])
        variants = {
            "fp32": model,
            "fx-int8": fx_static_int8(model, calib),
            "qpart-f32": qpart_model(model, calib[:2], args.bits, False, args.group_size),
            "qpart-i8": qpart_model(model, calib[:2], args.bits, True, args.group_size),
        }
        if args.unfused:
            variants["qpart-i8-unfused"] = qpart_model(
                model, calib[:2], args.bits, True, args.group_size, fuse=False
            )
        for switch in args.switch:
            variants[f"qpart-i8 {switch}=0"] = WithSwitchOff(variants["qpart-i8"], switch)
        agree = {k: agreement(m, ref, held) for k, m in variants.items()}
        for batch in (int(b) for b in args.batches.split(",")):
            x = held[:batch] if held.shape[0] >= batch else held.repeat(batch, 1, 1, 1)[:batch]
            times = time_rounds(variants, x, args.rounds)
            print(f"\n## {name}, batch {batch} (held-out agreement with fp32 on {held.shape[0]})")
            print("| variant | min ms | median ms | fx-int8 / variant (min, median) | agreement |")
            print("|---|---|---|---|---|")
            row = {"model": name, "batch": batch, "variants": {}}
            for k, ts in times.items():
                paired = [f / t for f, t in zip(times["fx-int8"], ts)]
                print(
                    f"| {k} | {1e3 * min(ts):.3f} | {1e3 * statistics.median(ts):.3f} | "
                    f"{min(paired):.2f}x, {statistics.median(paired):.2f}x | {agree[k]:.4f} |"
                )
                row["variants"][k] = {
                    "min_s": min(ts),
                    "median_s": statistics.median(ts),
                    "fx_over_variant_min": min(paired),
                    "fx_over_variant_median": statistics.median(paired),
                    "agreement": agree[k],
                }
            report.append(row)
            if args.per_layer:
                print_module_times(variants, x, args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
