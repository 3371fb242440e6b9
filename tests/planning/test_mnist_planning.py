"""Calibration on the real MNIST digits: plans at 0.5 %, 1 % and 2 % must have a measured
accuracy loss (real kernels, held-out test digits) within budget at every partition point."""

from __future__ import annotations

import pytest

from qpart.core.profile import profile
from qpart.planning.calibration import calibrate
from qpart.planning.noise_model import Calibration
from qpart.planning.table import PatternTable, Request
from qpart.planning.validation import validate
from qpart.workloads.data import load_mnist
from qpart.workloads.models import trained_mnist_mlp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup():
    data = load_mnist(seed=0)
    model = trained_mnist_mlp(seed=0, progress=False)
    prof = profile(model, data.x_test[:2])
    calib = calibrate(model, data.x_train[:2000], prof=prof, seed=0, progress=False)
    return data, model, prof, calib, PatternTable.build(prof, calib)


@pytest.mark.parametrize("budget", [0.005, 0.01, 0.02])
def test_plans_within_budget_at_every_partition_point(setup, budget):
    data, model, prof, calib, table = setup
    pats = [pl for pl in table.patterns if pl.accuracy_budget == budget]
    assert {pl.partition_point for pl in pats} == set(prof.valid_points)
    for pl in pats:
        res = validate(model, pl, data.x_test, data.y_test, prof)
        assert res.within_budget, (pl, res)
        assert res.measured_weight_payload_bytes == pl.weight_payload_bytes


def test_adaptive_bits_below_8_and_calibration_is_monotone(setup):
    _, _, prof, calib, table = setup
    levels = sorted(calib.budgets)
    cs = [calib.budgets[lv] for lv in levels]
    assert cs == sorted(cs)  # higher a -> higher C
    full = [
        pl
        for pl in table.patterns
        if pl.partition_point == prof.num_layers and pl.accuracy_budget == 0.01
    ][0]
    bits_per_weight = 8 * full.weight_payload_bytes / sum(l.weight_count for l in prof.layers)
    assert bits_per_weight < 6.5  # well below 8-bit (and 32-bit) payload
    plan = table.lookup(Request(0.01))
    assert plan.accuracy_budget <= 0.01


def test_calibration_deterministic_and_saved(setup, tmp_path):
    data, model, prof, _, _ = setup
    kw = dict(prof=prof, levels=(0.02,), seed=3, progress=False)
    a = calibrate(model, data.x_train[:400], **kw)
    b = calibrate(model, data.x_train[:400], **kw)
    assert a.to_dict() == b.to_dict()
    a.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json").to_dict() == a.to_dict()
