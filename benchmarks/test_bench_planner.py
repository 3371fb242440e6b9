"""Planner benchmarks: online lookup latency, offline table build (MNIST MLP and a
ResNet-18-shaped profile), closed form vs exact solver gap, payload at 1 % vs uniform widths.

    python -m pytest benchmarks/test_bench_planner.py -p benchmark \
        --benchmark-json=benchmarks/results/cpu-planner.json

Derived numbers (gap, payloads, median / p99 lookup latency) go into ``extra_info``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from qpart.core.costs import ChannelState, DeviceProfile, cost_coefficients
from qpart.core.profile import profile
from qpart.planning.allocation import allocate_bits, exact_allocation, noise_of
from qpart.planning.calibration import calibrate
from qpart.planning.noise_model import Calibration, NoiseModel
from qpart.planning.table import PatternTable, Request
from qpart.planning.validation import validate
from qpart.workloads.data import load_mnist
from qpart.workloads.models import trained_mnist_mlp


class _Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = (
            nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        )

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(y + (x if self.short is None else self.short(x)))


def resnet18_shaped() -> nn.Module:
    """ResNet-18's layer shapes (BatchNorm folded away), 224x224 input."""
    blocks, cin = [], 64
    for cout, stride in [
        (64, 1),
        (64, 1),
        (128, 2),
        (128, 1),
        (256, 2),
        (256, 1),
        (512, 2),
        (512, 1),
    ]:
        blocks.append(_Basic(cin, cout, stride))
        cin = cout
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        *blocks,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(512, 1000),
    )


def _synthetic_calibration(prof, seed=0):
    rng = np.random.default_rng(seed)
    layers = [
        NoiseModel(float(10 ** rng.uniform(1, 3)), float(rng.uniform(1.2, 1.6)), 1.0)
        for _ in prof.layers
    ]
    acts = {p: NoiseModel(float(10 ** rng.uniform(0, 2)), 1.5, 1.0) for p in prof.cuts}
    levels = (0.001, 0.0025, 0.005, 0.01, 0.02)
    return Calibration(
        [l.name for l in prof.layers],
        layers,
        acts,
        {lv: 0.02 * (lv / 0.001) ** 1.5 for lv in levels},
        0.01,
        1.0,
        1.0,
        0,
        (2, 4, 6),
        0.5,
    )


@pytest.fixture(scope="module")
def mnist():
    data = load_mnist(seed=0)
    model = trained_mnist_mlp(seed=0, progress=False)
    prof = profile(model, data.x_test[:2])
    t = time.perf_counter()
    calib = calibrate(model, data.x_train[:2000], prof=prof, seed=0, progress=False)
    return data, model, prof, calib, time.perf_counter() - t


def test_mnist_table_build(benchmark, mnist):
    _, _, prof, calib, calib_s = mnist
    benchmark.group = "table build"
    table = benchmark(PatternTable.build, prof, calib)
    benchmark.extra_info.update(patterns=len(table), calibration_s=calib_s)


def test_resnet18_shaped_table_build(benchmark):
    prof = profile(resnet18_shaped().eval(), torch.zeros(1, 3, 224, 224))
    calib = _synthetic_calibration(prof)
    benchmark.group = "table build"
    table = benchmark(PatternTable.build, prof, calib)
    benchmark.extra_info.update(
        patterns=len(table), layers=prof.num_layers, valid_points=len(prof.valid_points)
    )


@pytest.mark.parametrize("which", ["mnist", "resnet18"])
def test_online_lookup(benchmark, mnist, which):
    if which == "mnist":
        table = PatternTable.build(mnist[2], mnist[3])
    else:
        prof = profile(resnet18_shaped().eval(), torch.zeros(1, 3, 224, 224))
        table = PatternTable.build(prof, _synthetic_calibration(prof))
    req = Request(
        0.01, device=DeviceProfile(memory_bytes=5e7), channel=ChannelState.from_capacity(2e7)
    )
    coef = cost_coefficients(req.device, req.server, req.channel, req.weights)
    # hot path (coefficients + index) and the full lookup (with cost breakdown)
    samples = []
    for _ in range(2000):
        t = time.perf_counter_ns()
        table.lookup(req)
        samples.append(time.perf_counter_ns() - t)
    benchmark.group = "online lookup"
    benchmark.extra_info.update(
        patterns=len(table),
        full_lookup_median_us=float(np.median(samples)) / 1e3,
        full_lookup_p99_us=float(np.percentile(samples, 99)) / 1e3,
    )
    benchmark(table.lookup_index, coef, 0.01, 5e7)


def test_closed_form_vs_exact_gap(benchmark):
    rng = np.random.default_rng(0)
    problems = []
    for _ in range(200):
        n = int(rng.integers(3, 9))
        g, a, c = 10 ** rng.uniform(-1, 3, n), rng.uniform(0.8, 1.8, n), 10 ** rng.uniform(-2, 1, n)
        problems.append((g, a, c, noise_of(g, a, np.full(n, rng.uniform(2, 7)))))
    gaps = [allocate_bits(*p).cost / exact_allocation(*p).cost - 1 for p in problems]
    benchmark.group = "allocation"
    benchmark.extra_info.update(
        mean_gap=float(np.mean(gaps)),
        p95_gap=float(np.percentile(gaps, 95)),
        max_gap=float(np.max(gaps)),
        optimal_fraction=float(np.mean(np.array(gaps) < 1e-9)),
    )
    benchmark(allocate_bits, *problems[0])


def test_payload_at_1pct_vs_uniform(benchmark, mnist):
    data, model, prof, calib, _ = mnist
    table = PatternTable.build(prof, calib)
    rows = {}
    for p in prof.valid_points:
        if p == 0:
            continue
        plan = next(
            pl for pl in table.patterns if pl.partition_point == p and pl.accuracy_budget == 0.01
        )
        loss = validate(model, plan, data.x_test, data.y_test, prof).accuracy_loss
        # smallest uniform width (weights and activation) with measured loss <= adaptive's
        uniform = None
        for b in range(1, 9):
            pl_u = type(plan)(
                **{
                    **{k: getattr(plan, k) for k in plan.__dataclass_fields__},
                    "bits": (b,) * p,
                    "activation_bits": None if plan.activation_bits is None else b,
                }
            )
            if (
                validate(model, pl_u, data.x_test, data.y_test, prof).accuracy_loss
                <= max(loss, 0) + 1e-9
            ):
                uniform = (
                    b,
                    prof.weight_payload_bytes(p, [b] * p)
                    + prof.activation_payload_bytes(p, b if p < prof.num_layers else None),
                )
                break
        adaptive = plan.weight_payload_bytes + plan.activation_payload_bytes
        fp32 = prof.weight_payload_bytes(p, [None] * p) + prof.activation_payload_bytes(p, None)
        rows[p] = dict(
            adaptive_bytes=adaptive,
            measured_loss=loss,
            uniform_bits=uniform[0],
            uniform_bytes=uniform[1],
            saving_vs_uniform=1 - adaptive / uniform[1],
            pct_of_fp32=adaptive / fp32,
        )
    benchmark.group = "payload"
    benchmark.extra_info.update({str(k): v for k, v in rows.items()})
    print(rows)
    benchmark(lambda: None)
