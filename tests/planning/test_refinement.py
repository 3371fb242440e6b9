"""The measured integer refinement (qpart.refinement) on a tiny trained MLP: the acceptance
rule always holds, the result is never more expensive than the uniform baseline tuned with
the same rule and data, it is locally minimal, and it is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qpart.planning.probe import Probe
from qpart.planning.refinement import MeasuredRefiner
from qpart.planning.solve import default_bit_costs, solve_partition
from qpart.planning.table import PatternTable, Request
from qpart.simulation import build_table
from qpart.simulation.baselines import pick_uniform, uniform_sweep
from qpart.workloads.data import MnistSplit, holdout_split
from sim_helpers import LEVELS, tiny_setup


@pytest.fixture(scope="module")
def s():
    return tiny_setup()


@pytest.fixture(scope="module")
def refiner(s):
    return MeasuredRefiner(s.prof, s.x_train, s.calib.safety)


def _refined(s, refiner, p, level):
    coef = default_bit_costs(s.prof)
    bits, b_a, _ = solve_partition(s.prof, s.calib, p, s.calib.budget(level), coef)
    return refiner.refine(s.calib, p, level, coef, bits, b_a), coef


def test_refined_widths_always_meet_the_acceptance_rule(s, refiner):
    probe = Probe(s.prof, s.x_train)  # independent measurement
    for level in LEVELS:
        for p in s.prof.valid_points:
            r, _ = _refined(s, refiner, p, level)
            assert r.accepted
            limit = s.calib.safety * level
            assert r.flip_rate <= limit + 1e-12
            if p:
                assert probe.with_plan(p, r.bits, r.activation_bits)[1] == pytest.approx(
                    r.flip_rate, abs=1e-9
                )
    # every refined pattern of the simulator's table carries its selection measurement
    # within the selection rule (the tighter selection limits only lower it); the uniform
    # fallback patterns have none; every pattern carries its held-out measurement
    refined = [pl for pl in s.table.patterns if pl.selection_loss is not None]
    assert len(refined) >= len(LEVELS) * len(s.prof.valid_points)
    for pl in refined:
        assert pl.selection_loss <= s.calib.safety * pl.accuracy_budget + 1e-12
    uniform = [pl for pl in s.table.patterns if pl.selection_loss is None]
    assert len(uniform) >= 8 * len(s.prof.valid_points)
    assert all(pl.accepted and pl.acceptance_n == 600 for pl in s.table.patterns)


def test_refined_never_costs_more_than_uniform_with_the_same_rule(s, refiner):
    strictly_better = 0
    for p in s.prof.valid_points:
        sweep = uniform_sweep(s.prof, p, s.x_train, s.y_tune)
        for level in LEVELS:
            r, coef = _refined(s, refiner, p, level)
            u, _ = pick_uniform(sweep, 1.0, s.calib.safety * level)
            j_q = refiner.objective(p, r.bits, r.activation_bits, coef)
            j_u = refiner.objective(p, u.bits, u.activation_bits, coef)
            assert j_q <= j_u * (1 + 1e-12)
            strictly_better += j_q < j_u * (1 - 1e-9)
    assert strictly_better >= 1  # per-layer adaptation pays somewhere


def test_refined_is_locally_minimal(s, refiner):
    """No single width can be lowered by one bit and still be accepted."""
    p, level = s.prof.num_layers, 0.02
    r, coef = _refined(s, refiner, p, level)
    v = list(r.bits)
    for i in range(p):
        if v[i] > 1:
            w = v.copy()
            w[i] -= 1
            assert refiner.flip_rate(p, w, None) > s.calib.safety * level


def test_refinement_is_deterministic(s):
    a = build_table(s.prof, s.calib, s.x_train).to_dict()
    b = build_table(s.prof, s.calib, s.x_train).to_dict()
    assert a == b
    assert a["patterns"] == PatternTable.from_dict(a).to_dict()["patterns"]


def test_refined_table_keeps_the_fast_lookup_path(s, tmp_path):
    table = s.table
    table.save(tmp_path / "t.json")
    loaded = PatternTable.load(tmp_path / "t.json")
    assert [pl.selection_loss for pl in loaded.patterns] == [
        pl.selection_loss for pl in table.patterns
    ]
    for level in LEVELS:
        a = table.lookup(Request(level))
        b = loaded.lookup(Request(level))
        assert (a.partition_point, a.bits, a.activation_bits) == (
            b.partition_point,
            b.bits,
            b.activation_bits,
        )
        assert a.loss_upper_bound <= level + 1e-12
    unrefined = build_table(s.prof, s.calib, s.x_train, refine=False)
    assert all(pl.selection_loss is None for pl in unrefined.patterns)


def test_holdout_split_is_stratified_and_disjoint():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat(30)
    x = torch.rand(300, 4, generator=gen)
    split = MnistSplit(x, y, x[:5], y[:5])
    reduced, xh, yh = holdout_split(split, 60, seed=1)
    assert reduced.n_train == 240 and xh.shape == (60, 4)
    assert np.bincount(yh.numpy()).tolist() == [6] * 10
    rows = {tuple(r) for r in reduced.x_train.tolist()}
    assert not rows & {tuple(r) for r in xh.tolist()}
    again = holdout_split(split, 60, seed=1)
    assert torch.equal(again[1], xh)
    with pytest.raises(ValueError):
        holdout_split(split, 300)
