"""``qpart simulate``: random requests served by QPART and every baseline on a built-in
workload (the MNIST MLP by default); writes ``requests.csv`` and ``summary.json`` and prints
the per-scheme summary, where the partition points land, and where QPART puts them for four
reference device classes."""

from __future__ import annotations

import argparse
import sys
import time

from ..simulation.baselines import registered_schemes
from ..simulation.device_classes import partition_points
from ..simulation.requests import RequestDistribution
from ..simulation.simulator import SimulationSetup, simulate
from .experiment import mnist_experiment, torch_threads


def scheme_names() -> tuple[str, ...]:
    """The schemes ``--schemes`` accepts: every registered one (built-ins first)."""
    return registered_schemes()


def run_simulate(args: argparse.Namespace) -> int:
    """Runs ``qpart simulate`` for parsed CLI ``args``; returns the exit status."""
    with torch_threads(args.threads):
        return _simulate(args, time.time())


def _simulate(args: argparse.Namespace, t0: float) -> int:
    model_id = getattr(args, "model", "mnist-mlp")
    exp = mnist_experiment(args.seed, args.cache_dir, args.calib_samples, args.progress, model_id)
    calib = exp.calib
    if min(args.budgets) < min(calib.budgets):
        print(
            f"qpart simulate: error: budgets must be >= {min(calib.budgets):.3%}, the "
            f"smallest calibrated level",
            file=sys.stderr,
        )
        return 2
    setup = SimulationSetup(
        exp.model,
        exp.prof,
        calib,
        exp.data.x_test,
        exp.data.y_test,
        exp.x_cal,
        x_accept=exp.x_accept,
    )
    memory = None if args.memory_kib is None else tuple(1024.0 * m for m in args.memory_kib)
    dist = RequestDistribution(budgets=args.budgets, memory_bytes=memory)
    _, perf = simulate(
        setup,
        args.requests,
        args.seed,
        dist,
        args.schemes,
        args.out,
        args.progress,
        held_weights=args.held_weights,
    )
    print(
        f"qpart simulate: {model_id}, {args.requests} requests, seed {args.seed}, float accuracy "
        f"{setup.float_accuracy:.2%}; {time.time() - t0:.1f} s; wrote {args.out}/requests.csv "
        f"and {args.out}/summary.json"
    )
    print(
        f"{'scheme':<12} {'mean J':>10} {'time ms':>9} {'energy mJ':>10} {'payload B':>10} "
        f"{'loss':>7} {'in budget':>9} {'lowest J':>8}"
    )
    for name, v in perf.summary().items():
        print(
            f"{name:<12} {v['objective']:>10.4g} {1e3 * v['total_time_s']:>9.3f} "
            f"{1e3 * v['total_energy_j']:>10.4f} {v['payload_bytes']:>10.0f} "
            f"{v['accuracy_loss']:>7.2%} {v['within_budget']:>9.1%} {v['lowest_objective']:>8.1%}"
        )
    print(f"\npartition points chosen (p: requests; L = {exp.prof.num_layers}):")
    for name, v in perf.summary().items():
        points = ", ".join(f"{p}: {n}" for p, n in v["partition_points"].items())
        print(f"  {name:<12} {points}")
    budgets = sorted(set(args.budgets))
    print("\nQPART's partition point per device class and budget:")
    print(f"  {'device class':<52}" + "".join(f"{a:>8.1%}" for a in budgets))
    for name, row in partition_points(setup.table, budgets).items():
        cells = "".join(f"{'-' if row[a] is None else row[a]:>8}" for a in budgets)
        print(f"  {name:<52}{cells}")
    return 0
