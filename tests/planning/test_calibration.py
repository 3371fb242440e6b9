"""Calibration (qpart.planning.calibration) and the probe it measures with, on a tiny trained
MLP: the fitted noise curves bound every measurement, the closed loop meets its rule at every
calibrated level, the probe's partial re-runs equal full runs of the real split model, and
bad arguments are refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from qpart.core.metrics import flip_rate, predictions
from qpart.core.profile import profile
from qpart.core.split import quantized_split_model
from qpart.planning import calibration
from qpart.planning.allocation import InfeasibleError
from qpart.planning.calibration import adversarial_margins, cached_calibration, calibrate
from qpart.planning.noise_model import Calibration
from qpart.planning.probe import Probe, quantized_weight
from qpart.planning.solve import default_bit_costs, solve_partition
from sim_helpers import LEVELS, tiny_setup


@pytest.fixture(scope="module")
def s():
    return tiny_setup()


def test_adversarial_margin_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.5, 2.5]])
    torch.testing.assert_close(
        adversarial_margins(logits), torch.tensor([2.0, 2.0]) / math.sqrt(2.0)
    )


def test_noise_curves_upper_bound_every_measurement(s):
    calib = s.calib
    sources = list(calib.layers) + list(calib.activations.values())
    assert len(calib.layers) == s.prof.num_layers
    assert set(calib.activations) == set(s.prof.cuts)
    for nm in sources:
        assert nm.measured and set(nm.measured) == set(calib.widths)
        assert nm.t > 0 and 0.2 <= nm.alpha <= 3.0
        for bits, energy in nm.measured.items():
            assert nm.energy(bits) >= energy * (1 - 1e-9), (nm, bits)


def test_closed_loop_meets_its_rule_at_every_level_and_point(s):
    """C(a) is shrunk until the planned widths at every valid point flip at most safety * a
    of the calibration inputs: re-measure that with an independent probe."""
    calib, prof = s.calib, s.prof
    probe = Probe(prof, s.x_train)
    coef = default_bit_costs(prof)
    for level in LEVELS:
        for p in prof.valid_points:
            try:
                bits, b_a, _ = solve_partition(prof, calib, p, calib.budget(level), coef)
            except InfeasibleError:
                continue
            assert probe.with_plan(p, bits, b_a)[1] <= calib.safety * level + 1e-9, (level, p)


def test_probe_partial_rerun_equals_the_real_split_model(s):
    prof, x = s.prof, s.x_train
    probe = Probe(prof, x)
    reference = predictions(prof.graph_module, x)
    for p in prof.valid_points:
        bits = [2 + (i % 3) for i in range(p)]
        b_a = 3 if p < prof.num_layers else None
        split = quantized_split_model(prof, p, bits, b_a)
        with torch.inference_mode():
            expected = flip_rate(split(x), reference)
        assert probe.with_plan(p, bits, b_a)[1] == pytest.approx(expected, abs=2 / x.shape[0])
    assert probe.with_plan(0, [], None) == (0.0, 0.0)  # nothing quantized: nothing measured


def test_quantized_weight_is_the_kernels_round_trip(s):
    w = s.prof.graph_module.get_submodule(s.prof.layers[0].name).weight
    for bits in (1, 4, 8):
        q = quantized_weight(w, bits)
        assert q.shape == w.reshape(w.shape[0], -1).shape
        levels = [torch.unique(row).numel() for row in q]
        assert max(levels) <= 2**bits
    assert (quantized_weight(w, 8) - w).abs().max() < (quantized_weight(w, 2) - w).abs().max()


def test_calibrate_refuses_bad_arguments(s):
    with pytest.raises(ValueError, match="fractions"):
        calibrate(s.model, s.x_train[:32], prof=s.prof, levels=(0.0,), progress=False)
    with pytest.raises(ValueError, match="fractions"):
        calibrate(s.model, s.x_train[:32], prof=s.prof, levels=(), progress=False)
    with pytest.raises(ValueError, match="two widths"):
        calibrate(s.model, s.x_train[:32], prof=s.prof, widths=(4,), progress=False)


def test_calibration_restores_the_thread_count(s):
    before = torch.get_num_threads()
    calibrate(s.model, s.x_train[:64], prof=s.prof, levels=(0.05,), threads=1, progress=False)
    assert torch.get_num_threads() == before


def test_calibration_freezes_the_collector_only_while_it_runs(s, monkeypatch):
    """Full collections skip the objects alive on entry while calibrating; on return the
    collector is as it was - also when the caller had frozen objects itself."""
    import gc

    seen = []
    monkeypatch.setattr(
        calibration, "_calibrate", lambda *a, **k: seen.append(gc.get_freeze_count()) or 0
    )
    assert gc.get_freeze_count() == 0
    calibrate(s.model, s.x_train[:8], prof=s.prof, progress=False)
    assert seen[-1] > 0 and gc.get_freeze_count() == 0
    gc.freeze()
    try:
        # The caller's freeze is left alone: no freeze / unfreeze of calibrate's own. (The
        # frozen count itself may drop meanwhile: frozen objects that die leave it.)
        calls = []
        monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
        monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
        calibrate(s.model, s.x_train[:8], prof=s.prof, progress=False)
        assert calls == [] and seen[-1] > 0 and gc.get_freeze_count() > 0
    finally:
        monkeypatch.undo()
        gc.unfreeze()


def test_the_closed_loops_breadth_first_order_changes_the_work_not_the_budgets(s, monkeypatch):
    """The closed loop measures its plans one chunk of inputs at a time across all points;
    measuring each plan to the end before the next (the order before) gives the same
    budgets, with at least as many rows measured."""
    rows = []
    original = Probe.plan_disagreements

    def recorded(self, *args, **kwargs):
        start = kwargs.get("resume", (0, 0))[1]
        count, seen = original(self, *args, **kwargs)
        rows.append(seen - start)
        return count, seen

    monkeypatch.setattr(Probe, "plan_disagreements", recorded)
    levels = (0.01, 0.02, 0.05)
    x = s.x_train[:300]
    breadth = calibrate(s.model, x, prof=s.prof, levels=levels, progress=False).budgets
    breadth_rows = sum(rows)
    rows.clear()

    def whole_plans(self, *args, max_chunks=None, **kwargs):
        return recorded(self, *args, **kwargs)

    monkeypatch.setattr(Probe, "plan_disagreements", whole_plans)
    depth = calibrate(s.model, x, prof=s.prof, levels=levels, progress=False).budgets
    assert breadth == depth
    assert breadth_rows <= sum(rows)


class _ChunkedProbe:
    """A probe stand-in: 4 chunks of 2 rows; ``flips[plan][c]`` disagreements in chunk c."""

    n = 8

    def __init__(self, flips):
        self.flips, self.calls = flips, []

    def plan_disagreements(self, p, bits, b_a, weight, limit, resume=(0, 0), max_chunks=None):
        count, seen = resume
        for _ in range(max_chunks or 4):
            if seen == self.n or count > limit:
                break
            self.calls.append((p, seen // 2))
            count += self.flips[(p, bits, b_a)][seen // 2]
            seen += 2
        return count, seen


def test_first_failing_plan_measures_breadth_first_and_passes_only_on_all_rows():
    a, b, c = (1, (4,), 8), (2, (4, 4), 8), (3, (4, 4, 4), 8)
    probe = _ChunkedProbe({a: [0, 0, 0, 0], b: [0, 0, 0, 2], c: [2, 0, 0, 0]})
    measured = {}
    # c fails in its first chunk: a and b were measured one chunk each, not to the end
    assert calibration.first_failing_plan(probe, [a, b, c], 1, None, measured) == c
    assert probe.calls == [(1, 0), (2, 0), (3, 0)]
    # without c: b fails only in its last chunk - a pass needs every row of every plan
    probe.calls.clear()
    assert calibration.first_failing_plan(probe, [a, b], 1, None, measured) == b
    assert probe.calls == [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (2, 3)]
    assert measured[a] == (0, 8) and measured[b] == (2, 8)
    # everything cached: nothing measured again; a alone passes
    probe.calls.clear()
    assert calibration.first_failing_plan(probe, [a], 1, None, measured) is None
    assert calibration.first_failing_plan(probe, [b, a], 1, None, measured) == b
    assert probe.calls == []
    # the plans are read only as far as needed: a failing first plan ends the first round
    read = []

    def plans():
        for plan in (c, a, b):
            read.append(plan)
            yield plan

    probe.calls.clear()
    assert calibration.first_failing_plan(probe, plans(), 1, None, {}) == c
    assert read == [c] and probe.calls == [(3, 0)]


def test_budgets_never_decrease_with_the_level(s, monkeypatch):
    """A level's C never drops below a lower level's: that C passed a limit no higher than
    this level's. Here every level gets the same limit (as 0.001 and 0.0025 do on a few
    hundred inputs), so each loop's own first passing C, from its own start, is in no
    particular order."""
    monkeypatch.setattr(calibration, "allowed_disagreements", lambda rate, n: 1)
    levels = (0.001, 0.002, 0.003, 0.005, 0.007, 0.01, 0.014, 0.02, 0.03, 0.05)
    calib = calibrate(s.model, s.x_train[:400], prof=s.prof, levels=levels, progress=False)
    budgets = [calib.budgets[lv] for lv in levels]
    assert budgets == sorted(budgets)


def test_cached_calibration_hits_after_a_miss(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    x = torch.randn(64, 8)
    prof = profile(model, x[:2])
    a, path, hit = cached_calibration(model, x, prof, tmp_path, "tiny", progress=False)
    assert not hit and path.is_file()
    b, path_b, hit_b = cached_calibration(model, x, prof, tmp_path, "tiny", progress=False)
    assert hit_b and path_b == path and b.to_dict() == a.to_dict()
    assert Calibration.load(path).to_dict() == a.to_dict()
    with torch.no_grad():
        model[0].weight.add_(0.1)  # other weights: another cache file
    _, path_c, hit_c = cached_calibration(model, x, prof, tmp_path, "tiny", progress=False)
    assert not hit_c and path_c != path
