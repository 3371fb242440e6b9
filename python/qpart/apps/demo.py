"""``qpart demo``: the end-to-end serving demo on loopback.

Loads (or trains) the MNIST MLP, calibrates it (cached), builds the pattern table, starts the
server in a background thread on a free loopback port and runs a few devices with different
profiles, channels and budgets; prints one row per device: the plan, payloads vs fp32 and
vs the planner's prediction, predicted vs measured accuracy loss, predicted terms and the
measured wall times.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import torch

from ..core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from ..core.metrics import accuracy
from ..core.profile import profile
from ..core.split import run_split
from ..planning.calibration import cached_calibration
from ..planning.heldout import HeldOutAcceptance
from ..planning.table import PatternTable
from ..serving.device import DeviceClient
from ..serving.registry import ModelEntry
from ..serving.server import ServerThread
from ..workloads.data import load_mnist
from ..workloads.models import cached_model_path, default_cache_dir, trained_mnist_mlp
from .serve import MNIST_MODEL_ID


@dataclass(frozen=True)
class DemoDevice:
    """One simulated device of the demo."""

    name: str
    budget: float
    profile: DeviceProfile
    channel: ChannelState
    weights: ObjectiveWeights = ObjectiveWeights()


DEVICES = (
    DemoDevice("mcu-200MHz", 0.01, DeviceProfile(), ChannelState(200e6, 200e6)),
    DemoDevice("narrowband", 0.005, DeviceProfile(), ChannelState(1e6, 1e6)),
    DemoDevice(
        "phone-2GHz",
        0.02,
        DeviceProfile(clock_hz=2e9),
        ChannelState(200e6, 200e6),
        ObjectiveWeights(1, 1, 100),
    ),
    DemoDevice(
        "gateway",
        0.01,
        DeviceProfile(cycles_per_mac=1, clock_hz=1e9),
        ChannelState(200e6, 200e6),
        ObjectiveWeights(1, 1, 1000),
    ),
)


@dataclass
class DemoRow:
    """Measured and predicted numbers of one device."""

    device: DemoDevice
    plan: dict
    requests: int
    correct: int
    segment_bytes: int
    activation_bytes: int
    predicted_activation_bytes: int
    measured_loss: float
    wall_ms: float
    device_ms: float
    server_ms: float


def _fmt_bits(bits: list[int], b_a: int | None) -> str:
    w = "".join(map(str, bits)) or "-"
    return f"{w}/{'-' if b_a is None else b_a}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def format_rows(rows: list[DemoRow]) -> str:
    """The demo table (one line per device) and a legend."""
    head = (
        f"{'device':<11} {'budget':>6} {'p':>2} {'bits w/a':>10} {'D_w (B)':>8} {'%fp32':>6} "
        f"{'seg B':>7} {'act B/req':>10} {'loss pred':>9} {'held':>6} {'bound':>6} {'n':>5} "
        f"{'meas':>6} {'T pred ms':>9} "
        f"{'E pred mJ':>9} {'cost':>8} {'wall ms':>8} {'dev ms':>6} {'srv ms':>6} {'ok':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        p = r.plan
        pct = (
            100.0 * p["weight_payload_bytes"] / p["fp32_weight_bytes"]
            if p["fp32_weight_bytes"]
            else 0.0
        )
        act = (
            f"{r.activation_bytes // r.requests}/{r.predicted_activation_bytes // r.requests + 32}"
            if r.activation_bytes
            else "0/0"
        )
        pr = p["predicted"]
        lines.append(
            f"{r.device.name:<11} {100 * r.device.budget:>5.1f}% {p['partition_point']:>2} "
            f"{_fmt_bits(p['bits'], p['activation_bits']):>10} {p['weight_payload_bytes']:>8,} "
            f"{pct:>5.1f}% {r.segment_bytes:>7,} {act:>10} {100 * p['predicted_loss']:>8.2f}% "
            f"{_pct(p.get('measured_loss')):>6} {_pct(p.get('loss_upper_bound')):>6} "
            f"{p.get('acceptance_n') or '-':>5} "
            f"{100 * r.measured_loss:>5.1f}% {1e3 * pr['total_time_s']:>9.3f} "
            f"{1e3 * pr['total_energy_j']:>9.3f} {pr['server_cost']:>8.1e} {r.wall_ms:>8.2f} "
            f"{r.device_ms:>6.2f} {r.server_ms:>6.2f} {r.correct:>2}/{r.requests:<2}"
        )
    lines += [
        "",
        "bits w/a: device layer widths / cut-activation width; D_w: segment tensor bytes "
        "(= planner's D_w exactly); seg B: container bytes received (D_w + safetensors header; "
        "0 once cached); act B/req: measured / predicted (D_a + 32-byte header) bytes sent per "
        "request; loss pred: the noise model's predicted loss; held / bound / n: the plan's "
        "measured disagreement with the float model on the n acceptance digits (the test "
        "digits) and its one-sided 95 % Clopper-Pearson upper bound - a plan is served for a "
        "budget only when that bound meets it; meas: measured accuracy loss on the test "
        "digits (same split path, real kernels); T/E/cost: planner predictions for the "
        "device profile; "
        "wall/dev/srv: measured mean per request (plan + segment + device + infer round trip).",
    ]
    return "\n".join(lines)


def run_demo(args: argparse.Namespace, out: TextIO | None = None) -> list[DemoRow]:
    """Runs the serving demo for parsed CLI ``args`` (``seed``, ``cache_dir``, ``progress``,
    ``digits``, ``calib_samples``); prints progress and the table; returns the rows."""
    out = sys.stdout if out is None else out

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    t_all = time.perf_counter()
    cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    data = load_mnist(seed=args.seed)
    cached = cached_model_path(cache, args.seed).is_file()
    t = time.perf_counter()
    model = trained_mnist_mlp(cache_dir=cache, seed=args.seed, progress=args.progress)
    say(
        f"[1/5] model: six-layer MNIST MLP, {'loaded from cache' if cached else 'trained'} "
        f"({time.perf_counter() - t:.1f} s); {data.n_test} held-out test digits"
    )
    t = time.perf_counter()
    prof = profile(model, data.x_test[:2])
    calib, path, hit = cached_calibration(
        model,
        data.x_train[: args.calib_samples],
        prof,
        cache,
        f"mnist_mlp_seed{args.seed}",
        args.seed,
        args.progress,
    )
    say(
        f"[2/5] calibration on {args.calib_samples} training digits: "
        + (
            f"loaded from {path}"
            if hit
            else f"done in {time.perf_counter() - t:.1f} s, cached at {path}"
        )
    )
    t = time.perf_counter()
    table = PatternTable.build(prof, calib, acceptance=HeldOutAcceptance(prof, data.x_test))
    entry = ModelEntry.create(
        MNIST_MODEL_ID, model, data.x_test[:2], calib, table, description="six-layer MNIST MLP"
    )
    say(
        f"[3/5] pattern table: {len(entry.table)} patterns accepted on the {data.n_test} test "
        f"digits (95 % upper bounds), {len(entry.segment_keys)} distinct device segments, "
        f"encoded on first request ({time.perf_counter() - t:.1f} s)"
    )
    float_acc = accuracy(model, data.x_test, data.y_test)
    rows: list[DemoRow] = []
    with ServerThread({entry.model_id: entry}) as server:
        say(f"[4/5] server listening on {server.url} (FastAPI + uvicorn, thread)")
        for i, dev in enumerate(DEVICES):
            xs = data.x_test[i * args.digits : (i + 1) * args.digits]
            ys = data.y_test[i * args.digits : (i + 1) * args.digits]
            results = []
            with DeviceClient(
                server.url, profile=dev.profile, channel=dev.channel, weights=dev.weights
            ) as client:
                for j in range(xs.shape[0]):
                    results.append(client.run(xs[j : j + 1], MNIST_MODEL_ID, dev.budget))
                plan = results[0].plan
                seg = client.segments[plan["segment_id"]]
            served = entry.plans[plan["plan_id"]]
            with torch.no_grad():
                split = run_split(
                    seg.module, served.server, data.x_test, plan["activation_bits"]
                ).reshape(data.x_test.shape[0], -1)
            q_acc = float((split.argmax(-1) == data.y_test).float().mean())
            n = len(results)
            rows.append(
                DemoRow(
                    dev,
                    plan,
                    n,
                    sum(int(r.predictions[0] == int(y)) for r, y in zip(results, ys)),
                    sum(r.segment_bytes for r in results),
                    sum(r.activation_bytes for r in results),
                    sum(r.predicted_activation_bytes for r in results),
                    float_acc - q_acc,
                    1e3 * sum(r.total_s for r in results) / n,
                    1e3 * sum(r.device_s for r in results) / n,
                    1e3 * sum(r.server_s for r in results) / n,
                )
            )
            say(
                f"[5/5] device {dev.name}: {n} digits, plan p={plan['partition_point']} "
                f"({plan['plan_id']})"
            )
    say("")
    say(
        f"QPART serving demo: float accuracy {100 * float_acc:.1f}% on {data.n_test} test "
        f"digits; {args.digits} digits per device over HTTP on loopback"
    )
    say(format_rows(rows))
    say(f"\ntotal {time.perf_counter() - t_all:.1f} s")
    return rows
