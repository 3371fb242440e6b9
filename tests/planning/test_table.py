"""Partition search, pattern table build / lookup / save / load, monotonicity, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qpart.core.costs import ChannelState, DeviceProfile, ObjectiveWeights, ServerProfile
from qpart.core.profile import profile
from qpart.planning.allocation import InfeasibleError
from qpart.planning.noise_model import Calibration, NoiseModel
from qpart.planning.solve import plan_request
from qpart.planning.table import PatternTable, Request
from qpart.workloads.models import mnist_mlp

LEVELS = (0.001, 0.0025, 0.005, 0.01, 0.02)


@pytest.fixture(scope="module")
def prof():
    torch.manual_seed(0)
    return profile(mnist_mlp(), torch.zeros(1, 784))


@pytest.fixture(scope="module")
def calib(prof):
    rng = np.random.default_rng(0)
    layers = [
        NoiseModel(float(10 ** rng.uniform(1, 3)), float(rng.uniform(1.2, 1.6)), 1.0)
        for _ in prof.layers
    ]
    acts = {p: NoiseModel(float(10 ** rng.uniform(0, 2)), 1.5, 1.0) for p in prof.cuts}
    budgets = {lv: 0.02 * (lv / 0.001) ** 1.5 for lv in LEVELS}
    return Calibration(
        [l.name for l in prof.layers], layers, acts, budgets, 0.01, 1.0, 1.0, 0, (2, 4, 6), 0.5
    )


@pytest.fixture(scope="module")
def table(prof, calib):
    return PatternTable.build(prof, calib)


def _brute(table, req):
    best = None
    for pl in table.patterns:
        if pl.accuracy_budget > req.accuracy_budget or pl.memory_bytes > req.device.memory_bytes:
            continue
        from qpart.core.costs import evaluate_costs

        j = evaluate_costs(
            pl.device_macs,
            pl.server_macs,
            8 * pl.weight_payload_bytes,
            8 * pl.activation_payload_bytes,
            req.device,
            req.server,
            req.channel,
            req.weights,
        ).objective
        if best is None or j < best[0]:
            best = (j, pl)
    return best


def test_table_has_every_point_and_level(table, prof):
    keys = {(pl.partition_point, pl.accuracy_budget) for pl in table.patterns}
    assert len(keys) == len(table.patterns) <= len(LEVELS) * len(prof.valid_points)
    assert {lv for _, lv in keys} == set(LEVELS)
    for pl in table.patterns:
        assert len(pl.bits) == pl.partition_point
        assert all(1 <= b <= 8 for b in pl.bits)
        assert (pl.activation_bits is None) == (pl.partition_point == prof.num_layers)
        assert pl.predicted_noise <= table.calibration.budget(pl.accuracy_budget) * (1 + 1e-9)


def test_looser_level_needs_no_more_payload(table, prof):
    for p in prof.valid_points:
        pats = sorted(
            (pl for pl in table.patterns if pl.partition_point == p),
            key=lambda pl: pl.accuracy_budget,
        )
        costs = [pl.weight_payload_bytes + pl.activation_payload_bytes for pl in pats]
        assert costs == sorted(costs, reverse=True)


@pytest.mark.parametrize("seed", range(25))
def test_lookup_equals_brute_force(table, seed):
    rng = np.random.default_rng(seed)
    req = Request(
        accuracy_budget=float(rng.choice([0.001, 0.004, 0.01, 0.05])),
        device=DeviceProfile(
            clock_hz=float(10 ** rng.uniform(8, 10)), memory_bytes=float(10 ** rng.uniform(5.5, 7))
        ),
        channel=ChannelState(float(10 ** rng.uniform(5, 9)), float(10 ** rng.uniform(5, 9))),
        weights=ObjectiveWeights(*rng.uniform(0, 2, 3)),
        server=ServerProfile(price_per_s=float(10 ** rng.uniform(-1, 4))),
    )
    try:
        expected = _brute(table, req)
    except InfeasibleError:
        expected = None
    if expected is None:
        with pytest.raises(InfeasibleError):
            table.lookup(req)
        return
    plan = table.lookup(req)
    assert plan.costs.objective == pytest.approx(expected[0], rel=1e-9)


def test_better_channel_moves_partition_toward_device(table):
    # A server so expensive that device compute is competitive, so the optimum moves.
    server = ServerProfile(price_per_s=2000.0)
    last_p, last_payload = -1, -1
    chosen = set()
    for cap in np.logspace(5, 10, 30):
        plan = table.lookup(Request(0.01, channel=ChannelState.from_capacity(cap), server=server))
        payload = plan.weight_payload_bytes + 2 * plan.activation_payload_bytes
        assert plan.partition_point >= last_p
        assert payload >= last_payload  # lower envelope of lines in 1/R: slope grows
        last_p, last_payload = plan.partition_point, payload
        chosen.add(plan.partition_point)
    assert len(chosen) >= 2


def test_table_agrees_with_direct_search_at_default_request(table, prof, calib):
    direct = plan_request(prof, calib, 0.01)
    looked = table.lookup(Request(0.01))
    assert looked.accuracy_budget == 0.01
    assert looked.costs.objective == pytest.approx(direct.costs.objective, rel=1e-9)


def test_infeasible_requests_say_which_constraint(table, prof, calib):
    with pytest.raises(InfeasibleError, match="accuracy") as info:
        table.lookup(Request(0.0005))
    assert info.value.constraint == "accuracy"
    with pytest.raises(InfeasibleError, match="memory") as info:
        table.lookup(Request(0.01, device=DeviceProfile(memory_bytes=100.0)))
    assert info.value.constraint == "memory"
    with pytest.raises(InfeasibleError, match="memory") as info:
        plan_request(prof, calib, 0.01, device=DeviceProfile(memory_bytes=100.0))
    assert info.value.constraint == "memory"
    with pytest.raises(InfeasibleError, match="below the smallest calibrated level") as info:
        plan_request(prof, calib, 0.0005)
    assert info.value.constraint == "accuracy"


def test_memory_limit_is_respected_by_direct_search(prof, calib):
    # Weight transfer free of cost (no time weight, no receive power): all 8 bits unless
    # memory forbids it.
    w = ObjectiveWeights(time=0.0, energy=1.0, cost=1.0)
    free = plan_request(prof, calib, 0.01, points=[6], weights=w)
    assert free.bits == (8,) * 6
    limit = free.memory_bytes - 100_000
    tight = plan_request(
        prof, calib, 0.01, points=[6], weights=w, device=DeviceProfile(memory_bytes=limit)
    )
    assert tight.memory_bytes <= limit
    assert sum(tight.bits) < sum(free.bits)
    assert tight.predicted_noise <= calib.budget(0.01) * (1 + 1e-9)


def test_save_load_round_trip(table, prof, tmp_path):
    path = tmp_path / "table.json"
    table.save(path)
    loaded = PatternTable.load(path)
    assert loaded.patterns == [
        type(p)(**{**{k: getattr(p, k) for k in p.__dataclass_fields__}, "costs": None})
        for p in table.patterns
    ]
    np.testing.assert_array_equal(loaded.features, table.features)
    assert loaded.calibration.to_dict() == table.calibration.to_dict()
    assert loaded.profile.to_dict() == prof.to_dict()
    req = Request(0.01, channel=ChannelState.from_capacity(1e7))
    assert loaded.lookup(req) == table.lookup(req)
    PatternTable.load(path, prof)  # matching profile accepted
    other = profile(torch.nn.Sequential(torch.nn.Linear(784, 10)), torch.zeros(1, 784))
    with pytest.raises(ValueError, match="does not match"):
        PatternTable.load(path, other)
    path.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="qpart-pattern-table"):
        PatternTable.load(path)


def test_calibration_json_round_trip(calib, tmp_path):
    path = tmp_path / "calib.json"
    calib.save(path)
    assert Calibration.load(path).to_dict() == calib.to_dict()
    assert calib.budget(0.012) == calib.budgets[0.01]
    assert calib.predicted_loss(calib.budgets[0.005]) == pytest.approx(0.005)
