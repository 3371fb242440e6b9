"""Segment and start-up benchmarks: capture / profile time, device-segment encode and decode
time and bytes for the residual MNIST CNN and an 11 M-parameter ResNet-18-shaped network
(random weights), and ``qpart serve`` start-up with and without a cached calibration.

    .venv/bin/python benchmarks/bench_segments.py [--rounds 5] [--threads 2] [--skip-serve]

Times are min / median over ``rounds``; bytes are exact. Not part of the test run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import torch
from torch import nn

from qpart.core.profile import profile
from qpart.core.split import quantized_segments
from qpart.serving.segment import decode_segment, encode_segment
from qpart.serving.server import free_port
from qpart.workloads.models import BasicBlock, mnist_resnet


class ResNet18(nn.Module):
    """ResNet-18 (basic blocks 2-2-2-2, 64..512 channels, 1000 classes): 11.7 M parameters,
    21 learnable layers after BatchNorm folding."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _times(fn, rounds: int) -> tuple[float, float, object]:
    out, ts = None, []
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts), out


def bench_model(name: str, model: nn.Module, example: torch.Tensor, rounds: int) -> None:
    model.eval()
    t_prof, _, prof = _times(lambda: profile(model, example), 1)
    params = sum(p.numel() for p in model.parameters())
    L = prof.num_layers
    print(
        f"\n## {name}: {params / 1e6:.2f} M parameters, {L} layers, valid points "
        f"{list(prof.valid_points)}; capture + profile {t_prof:.2f} s\n"
    )
    print(
        "| p | bits | D_w (B) | container (B) | header (B) | quantize (ms) | encode ms min/med "
        "| decode ms min/med |"
    )
    print("|---|---|---|---|---|---|---|---|")
    cuts = sorted(prof.cuts)
    for p in sorted({cuts[len(cuts) // 2], L}):
        for bits in (2, 4, 8):
            t_q, _, seg = _times(lambda p=p, b=bits: quantized_segments(prof, p, [b] * p), 1)
            out = seg.cut_shape or seg.output_shape
            e_min, e_med, enc = _times(
                lambda seg=seg, out=out: encode_segment(seg.device, seg.input_shape, out), rounds
            )
            d_min, d_med, _ = _times(
                lambda enc=enc: decode_segment(enc.data, enc.segment_id), rounds
            )
            assert enc.tensor_bytes == prof.weight_payload_bytes(p, [bits] * p)
            print(
                f"| {p} | {bits} | {enc.tensor_bytes:,} | {len(enc.data):,} | "
                f"{enc.overhead_bytes:,} | {1e3 * t_q:.0f} | {1e3 * e_min:.1f} / {1e3 * e_med:.1f} "
                f"| {1e3 * d_min:.1f} / {1e3 * d_med:.1f} |"
            )


def _serve_start(cache: str, threads: int) -> float:
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qpart.cli",
            "serve",
            "--model",
            "mnist-resnet",
            "--port",
            str(port),
            "--cache-dir",
            cache,
            "--no-progress",
            "--threads",
            str(threads),
            "--calib-samples",
            "512",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("qpart serve exited")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench_model(
        "residual MNIST CNN (mnist-resnet)", mnist_resnet(), torch.randn(2, 1, 28, 28), args.rounds
    )
    bench_model(
        "ResNet-18-shaped, 3x64x64 input", ResNet18(), torch.randn(2, 3, 64, 64), args.rounds
    )
    if not args.skip_serve:
        with tempfile.TemporaryDirectory() as cache:
            cold = _serve_start(cache, args.threads)
            warm = _serve_start(cache, args.threads)
        print(
            "\n## `qpart serve --model mnist-resnet --calib-samples 512` until /v1/health "
            f"answers\n\nempty cache (train + calibrate + table): {cold:.1f} s; cached: "
            f"{warm:.1f} s"
        )


if __name__ == "__main__":
    main()
