"""The simulator: seeded request distributions, the three modules, determinism, output."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from qpart.cli import COMMANDS, build_parser
from qpart.core.costs import ChannelState, ServerProfile, evaluate_costs
from qpart.planning.table import Request
from qpart.simulation import ROW_FIELDS, RequestDistribution, Simulator, simulate
from sim_helpers import tiny_setup

SCHEMES_FAST = ("qpart", "closed_form", "uniform", "pruning", "no_opt")


def test_request_distribution_seeded_and_in_range():
    dist = RequestDistribution()
    a = dist.sample(300, seed=5, n_digits=50)
    b = dist.sample(300, seed=5, n_digits=50)
    c = dist.sample(300, seed=6, n_digits=50)
    assert a == b
    assert a != c
    clocks = np.array([r.device.clock_hz for r in a])
    assert clocks.min() >= 100e6 and clocks.max() <= 1e9
    # log-uniform: about half the draws below the geometric mean
    assert 0.35 < np.mean(clocks < math.sqrt(100e6 * 1e9)) < 0.65
    assert {r.budget for r in a} == set(dist.budgets)
    assert {r.bandwidth_hz for r in a} == set(dist.bandwidths_hz)
    assert all(0.05 <= r.distance_km <= 0.5 and 0 <= r.digit < 50 for r in a)
    assert abs(np.mean([r.fading_gain for r in a]) - 1.0) < 0.2  # Exp(1)
    with pytest.raises(ValueError):
        dist.sample(0, seed=1)


@pytest.mark.slow
def test_simulation_is_deterministic_for_a_seed(tmp_path):
    setup = tiny_setup()
    dist = RequestDistribution(budgets=(0.01, 0.02))
    runs = []
    for i, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"run{i}"
        _, perf = simulate(setup, 25, seed, dist, SCHEMES_FAST, out, progress=False)
        runs.append((out / "requests.csv").read_text())
        summary = json.loads((out / "summary.json").read_text())
        assert set(summary["summary"]) == set(SCHEMES_FAST)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    rows = list(csv.DictReader(runs[0].splitlines()))
    assert len(rows) == 25 * len(SCHEMES_FAST)
    assert tuple(rows[0]) == ROW_FIELDS


def test_modules_match_cost_model_and_qpart_uses_the_table():
    setup = tiny_setup()
    sim = Simulator(setup, schemes=SCHEMES_FAST, levels=(0.01, 0.02), progress=False)
    reqs = RequestDistribution(budgets=(0.01, 0.02)).sample(20, 1, setup.x_eval.shape[0])
    perf = sim.run(reqs)
    rows = {(r["request"], r["scheme"]): r for r in perf.rows}
    for req in reqs:
        ch = sim.communication.channel(req)
        assert ch == ChannelState.rayleigh(
            req.distance_km,
            req.bandwidth_hz,
            req.device.tx_power_w,
            10.0,
            fading_gain=req.fading_gain,
        )
        q = rows[(req.index, "qpart")]
        plan = setup.table.lookup(Request(req.budget, req.device, ch, req.weights))
        assert q["partition_point"] == plan.partition_point
        assert q["objective"] == pytest.approx(plan.costs.objective, rel=1e-9)
        for scheme in SCHEMES_FAST:
            r = rows[(req.index, scheme)]
            cfg = sim.config_for(scheme, req, ch)
            ref = evaluate_costs(
                cfg.device_macs,
                cfg.server_macs,
                8 * cfg.weight_payload_bytes,
                8 * cfg.activation_payload_bytes,
                req.device,
                ServerProfile(),
                ch,
                req.weights,
            )
            assert r["objective"] == pytest.approx(ref.objective, rel=1e-12)
            assert r["total_time_s"] == pytest.approx(ref.total_time_s, rel=1e-12)
            # each baseline picks its cheapest partition point for the request
            if scheme != "qpart":
                level = sim.level_for(req.budget)
                per = sim.configs[scheme]
                cands = per[0.0] if 0.0 in per else per[level]
                best = min(perf.evaluate(c, req, ch)["objective"] for c in cands)
                assert r["objective"] == pytest.approx(best, rel=1e-12)
            # accuracy is measured by running the real model
            assert r["accuracy"] == pytest.approx(sim.executing.accuracy(cfg))
    summ = perf.summary()
    assert summ["no_opt"]["accuracy_loss"] == 0
    assert summ["qpart"]["objective"] <= summ["no_opt"]["objective"]
    assert summ["qpart"]["within_budget"] == 1.0
    assert sum(v["lowest_objective"] for v in summ.values()) >= 1.0


def test_cli_registers_simulate_and_reproduce():
    names = [f.__name__ for f in COMMANDS]
    assert "_add_simulate" in names and "_add_reproduce" in names
    p = build_parser()
    args = p.parse_args(
        [
            "simulate",
            "--requests",
            "7",
            "--budgets",
            "0.01,0.02",
            "--schemes",
            "qpart,no_opt",
            "--seed",
            "2",
        ]
    )
    assert (args.requests, args.budgets, args.schemes, args.seed) == (
        7,
        (0.01, 0.02),
        ("qpart", "no_opt"),
        2,
    )
    with pytest.raises(SystemExit):
        p.parse_args(["simulate", "--schemes", "magic"])
    with pytest.raises(SystemExit):
        p.parse_args(["simulate", "--budgets", "1.5"])
    args = p.parse_args(["reproduce", "--quick", "--out", "x"])
    assert args.quick and args.out == "x"


def test_held_weights_and_device_memory():
    setup = tiny_setup()
    sim = Simulator(setup, schemes=SCHEMES_FAST, levels=(0.01, 0.02), progress=False)
    base = RequestDistribution(budgets=(0.01, 0.02))
    mem = (2 * 1024.0, 64 * 1024.0)
    dist = RequestDistribution(budgets=(0.01, 0.02), memory_bytes=mem)
    reqs = dist.sample(30, 2, setup.x_eval.shape[0])
    # the memory comes from its own stream: every other quantity is unchanged
    for a, b in zip(base.sample(30, 2, setup.x_eval.shape[0]), reqs):
        assert (a.device.clock_hz, a.digit, a.fading_gain) == (
            b.device.clock_hz,
            b.digit,
            b.fading_gain,
        )
        assert math.isinf(a.device.memory_bytes) and mem[0] <= b.device.memory_bytes <= mem[1]
    held = sim.with_held_weights()
    perf = held.run(reqs)
    rows = {(r["request"], r["scheme"]): r for r in perf.rows}
    for req in reqs:
        ch = held.communication.channel(req)
        for scheme in SCHEMES_FAST:
            cfg = held.config_for(scheme, req, ch)
            assert cfg.memory_bytes <= req.device.memory_bytes or cfg.p == 0
            r = rows[(req.index, scheme)]
            ref = evaluate_costs(
                cfg.device_macs,
                cfg.server_macs,
                0,
                8 * cfg.activation_payload_bytes,
                req.device,
                ServerProfile(),
                ch,
                req.weights,
            )
            assert r["objective"] == pytest.approx(ref.objective, rel=1e-12)
            assert r["payload_bytes"] == cfg.activation_payload_bytes
        # QPART: the cheapest fitting pattern with the download term dropped
        q = rows[(req.index, "qpart")]
        fits = [
            pl
            for pl in setup.table.patterns
            if pl.loss_upper_bound <= req.budget + 1e-9
            and pl.memory_bytes <= req.device.memory_bytes
        ]
        best = min(
            evaluate_costs(
                pl.device_macs,
                pl.server_macs,
                0,
                8 * pl.activation_payload_bytes,
                req.device,
                ServerProfile(),
                ch,
                req.weights,
            ).objective
            for pl in fits
        )
        assert q["objective"] == pytest.approx(best, rel=1e-9)
    # the original simulator still downloads the weights
    assert not sim.communication.held_weights


def test_a_registered_scheme_is_prepared_and_served():
    """The scheme registry: a new scheme (here: the float model with an 8-bit cut) is built at
    every partition point by its builder and competes per request like the built-ins."""
    from qpart.simulation import register_scheme, registered_schemes, unregister_scheme
    from qpart.simulation.baselines import quantized_config, scheme_builder

    s = tiny_setup()

    @register_scheme("float_8bit_cut")
    def _float_8bit_cut(ctx, p):
        return {
            lv: quantized_config(ctx.prof, "float_8bit_cut", p, [8] * p, 8) for lv in ctx.levels
        }

    try:
        assert registered_schemes()[-1] == "float_8bit_cut"
        with pytest.raises(ValueError, match="already registered"):
            register_scheme("float_8bit_cut")(_float_8bit_cut)
        sim = Simulator(
            s, schemes=("no_opt", "float_8bit_cut"), levels=(0.01, 0.02), progress=False
        )
        sim.prepare()
        per = sim.configs["float_8bit_cut"]
        assert set(per) == {0.01, 0.02}
        assert [c.p for c in per[0.01]] == list(s.prof.valid_points)
        reqs = RequestDistribution(budgets=(0.01, 0.02)).sample(
            5, seed=1, n_digits=s.x_eval.shape[0]
        )
        rows = sim.run(reqs).rows
        assert {r["scheme"] for r in rows} == {"no_opt", "float_8bit_cut"}
    finally:
        unregister_scheme("float_8bit_cut")
    assert "float_8bit_cut" not in registered_schemes()
    with pytest.raises(ValueError, match="unknown scheme"):
        scheme_builder("float_8bit_cut")
    with pytest.raises(ValueError, match="unknown schemes"):
        Simulator(s, schemes=("float_8bit_cut",), progress=False)
