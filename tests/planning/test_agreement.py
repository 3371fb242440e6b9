"""The pluggable agreement metric (docs/PLANNING.md §4.5): each definition, the spec parser,
and one metric flowing through calibration, refinement, acceptance and validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qpart.core.metrics import (
    TOP1,
    BinDistance,
    CallableAgreement,
    Tolerance,
    TopK,
    agreement,
)
from qpart.core.profile import profile
from qpart.planning.calibration import calibrate
from qpart.planning.heldout import HeldOutAcceptance
from qpart.planning.refinement import MeasuredRefiner
from qpart.planning.table import PatternTable, Request
from sim_helpers import blobs, tiny_setup

REF = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.5]])


def test_top_k():
    out = torch.tensor([[0.0, 1.0, 3.5, 3.0], [5.0, 0.0, 0.0, 0.0], [9.0, 0.0, 1.0, 2.0]])
    assert TOP1.agree(out, REF).tolist() == [False, True, False]
    assert TopK(2).agree(out, REF).tolist() == [True, True, False]
    assert TopK(3).agree(out, REF).tolist() == [True, True, True]
    assert TOP1.disagreements(out, REF) == 2
    assert TopK(2).disagreement_rate(out, REF) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        TopK(0)


def test_tolerance_and_bins():
    out = REF + torch.tensor([[0.05, 0, 0, 0], [0, 0, 0, 0.2], [0, 0, 0, 0]])
    assert Tolerance(atol=0.1).agree(out, REF).tolist() == [True, False, True]
    assert Tolerance(rtol=0.1).agree(out, REF).tolist() == [False, False, True]
    with pytest.raises(ValueError):
        Tolerance()
    bins = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])
    assert BinDistance(1).agree(bins, REF).tolist() == [False, True, True]
    assert BinDistance(3).agree(bins, REF).tolist() == [True, True, True]


def test_spec_parser_and_callables():
    assert agreement(None) is TOP1
    assert agreement("top5") == TopK(5) and agreement("top1") == TOP1
    assert agreement("bins<=2") == BinDistance(2)
    m = agreement(lambda out, ref: (out - ref).abs().amax(-1) < 1.0)
    assert isinstance(m, CallableAgreement)
    assert m.disagreements(REF + 0.5, REF) == 0 and m.disagreements(REF + 2, REF) == 3
    with pytest.raises(ValueError, match="unknown agreement"):
        agreement("nearly")
    with pytest.raises(TypeError):
        agreement(3)
    bad = agreement(lambda out, ref: torch.ones(out.shape[0]))  # not booleans
    with pytest.raises(ValueError, match="one boolean per sample"):
        bad.disagreements(REF, REF)
    with pytest.raises(ValueError, match="shape"):
        TOP1.disagreements(REF[:, :2], REF)


def test_a_looser_metric_never_counts_more_disagreements():
    s = tiny_setup()
    top1 = HeldOutAcceptance(s.prof, s.x_accept)
    top2 = HeldOutAcceptance(s.prof, s.x_accept, agreement="top2")
    L = s.prof.num_layers
    for b in (1, 2, 3):
        a1, a2 = top1.measure(L, [b] * L, None), top2.measure(L, [b] * L, None)
        assert a2.disagreements <= a1.disagreements
        assert a2.upper_bound <= a1.upper_bound


def test_a_regression_model_is_planned_with_a_tolerance():
    """No labels, no classes: a 16-32-3 regression MLP, 'the same answer' = every output
    within 0.05 of the float model's. Calibration, refinement and acceptance all use it, and
    the served plan's bound holds under that metric."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    x_sel, x_acc = blobs(300, 5)[0], blobs(600, 6)[0]
    prof = profile(model, x_sel[:2])
    tol = Tolerance(atol=0.05)
    calib = calibrate(model, x_sel, prof=prof, levels=(0.02, 0.05), progress=False, agreement=tol)
    refiner = MeasuredRefiner(prof, x_sel, agreement=tol)
    acceptance = HeldOutAcceptance(prof, x_acc, agreement=tol)
    table = PatternTable.build(prof, calib, refiner=refiner, acceptance=acceptance)
    assert table.accepted
    pl = table.lookup(Request(0.05))
    assert pl.loss_upper_bound <= 0.05
    # the stored measurement is the tolerance metric's, not top-1's
    probe_out = acceptance.probe.plan_outputs(pl.partition_point, pl.bits, pl.activation_bits)
    assert pl.measured_loss == tol.disagreement_rate(probe_out, acceptance.probe.ref)
