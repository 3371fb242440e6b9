"""The robustness search on a low-margin subset with one verification on all inputs
(``robustness_on_subset``), the probe's row sets, resumed plan measurements and the
pre-round-trip plan prefixes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from qpart.core.profile import profile
from qpart.planning import sources
from qpart.planning.calibration import adversarial_margins, calibrate
from qpart.planning.probe import Probe, quantized_weight
from qpart.planning.robustness import (
    TOLERANCE_LOG2,
    needed_disagreements,
    robustness,
    robustness_on_subset,
)
from qpart.planning.sources import subset_size
from qpart.planning.subgraph import Subgraph


def _synthetic(n=400, classes=10, flipping=40, late=None, seed=0):
    """Logits ``ref + s * direction``: the first ``flipping`` rows have small margins, the
    others margins too large to flip in the searched range (``late``: one of those rows
    gets a direction that flips it at a small scale instead)."""
    gen = torch.Generator().manual_seed(seed)
    # float64: the output changes of the 1e6-margin rows keep their precision
    ref = torch.randn(n, classes, generator=gen, dtype=torch.float64)
    ref[flipping:, 0] += 1e6  # class 0 by a margin no scale in [2^-14, 8] overcomes
    direction = torch.randn(n, classes, generator=gen, dtype=torch.float64)
    direction[flipping:] = direction[flipping:].clamp(-1.0, 1.0)
    if late is not None:
        ref[late] = torch.zeros(classes)
        ref[late, 0] = 1e-4
        direction[late] = torch.zeros(classes)
        direction[late, 1] = 1.0
    rows_seen = []

    def outputs(s, rows):
        return ref[rows] + s * direction[rows]

    def full(scales):
        rows_seen.append(n * len(scales))
        res = []
        for s in scales:
            out = ref + s * direction
            e = float(((out - ref) ** 2).sum(-1).mean())
            rate = int((out.argmax(-1) != ref.argmax(-1)).sum()) / n
            res.append((e, rate, out))
        return res

    return ref, outputs, full, rows_seen


def _parts(ref, outputs, order, k, rows_seen):
    subset, rest = order[:k], order[k:]

    def measure(scales, part):
        rows = subset if part == "subset" else rest
        rows_seen.append(rows.numel() * len(scales))
        res = []
        for s in scales:
            out = outputs(s, rows)
            e = float(((out - ref[rows]) ** 2).sum())
            res.append((e, int((out.argmax(-1) != ref[rows].argmax(-1)).sum()), out))
        return res

    return measure, subset, rest


def test_subset_search_equals_the_full_search_when_the_rest_cannot_flip():
    ref, outputs, full, rows_seen = _synthetic()
    n = ref.shape[0]
    order = torch.argsort(adversarial_margins(ref), stable=True)
    measure, subset, rest = _parts(ref, outputs, order, 40, rows_seen)
    t_full = robustness(full, 0.01, n, reference=ref)
    full_rows = sum(rows_seen)
    rows_seen.clear()
    t, verified = robustness_on_subset(measure, full, 0.01, n, subset, rest, reference=ref)
    assert verified
    assert t == pytest.approx(t_full, rel=1e-5)
    assert sum(rows_seen) < full_rows  # the search itself ran on the subset


def test_a_flip_outside_the_subset_fails_verification_and_falls_back():
    """A row outside the subset that flips below the subset's crossing makes the subset's
    ``lo`` wrong for all inputs: the verification catches it and the result is the full
    search's."""
    ref, outputs, full, rows_seen = _synthetic(late=300)
    n = ref.shape[0]
    order = torch.arange(n)  # the late row is in the rest
    measure, subset, rest = _parts(ref, outputs, order, 40, rows_seen)
    t_full = robustness(full, 0.01, n, reference=ref)
    t, verified = robustness_on_subset(measure, full, 0.01, n, subset, rest, reference=ref)
    assert not verified
    assert t == t_full
    # the same rows as the subset but with the late row inside: verified again
    inside = torch.cat([torch.tensor([300]), order[order != 300]])
    measure, subset, rest = _parts(ref, outputs, inside, 41, rows_seen)
    t2, verified2 = robustness_on_subset(measure, full, 0.01, n, subset, rest, reference=ref)
    assert verified2 and t2 == pytest.approx(t_full, rel=1e-5)


def test_a_subset_too_small_for_the_target_searches_all_inputs():
    ref, outputs, full, rows_seen = _synthetic()
    n = ref.shape[0]
    order = torch.arange(n)
    m = needed_disagreements(0.01, n)
    measure, subset, rest = _parts(ref, outputs, order, m - 1, rows_seen)
    t, verified = robustness_on_subset(measure, full, 0.01, n, subset, rest, reference=ref)
    assert verified and t == robustness(full, 0.01, n, reference=ref)


def test_the_rest_is_measured_once_at_the_lower_end():
    """The verification measures the rest at one scale (the bracket's ``lo``), once."""
    ref, outputs, full, rows_seen = _synthetic()
    n = ref.shape[0]
    order = torch.argsort(adversarial_margins(ref), stable=True)
    measure, subset, rest = _parts(ref, outputs, order, 40, rows_seen)
    rest_calls = []

    def counted(scales, part):
        if part == "rest":
            rest_calls.append(list(scales))
        return measure(scales, part)

    t, verified = robustness_on_subset(counted, full, 0.01, n, subset, rest, reference=ref)
    assert verified and len(rest_calls) == 1 and len(rest_calls[0]) == 1


def test_the_rests_energy_at_hi_follows_the_subsets_slope():
    """When the rest's energy grows faster with the scale than the subset's, ``t`` still
    lies inside the band its bracket allows: the extrapolation error of the rest's energy
    over one bracket (a factor ``2^tol`` in scale) is bounded by the slopes' difference."""
    ref, _, _, rows_seen = _synthetic()
    n = ref.shape[0]
    gen = torch.Generator().manual_seed(3)
    direction = torch.randn(n, ref.shape[1], generator=gen, dtype=torch.float64)
    direction[40:] = direction[40:].clamp(-1.0, 1.0)

    def outputs(s, rows):  # the high-margin rows' change grows as s^2 (energy as s^4)
        lin = torch.zeros(n, 1, dtype=torch.float64)
        lin[:40] = 1.0
        factor = torch.where(lin[rows] > 0, s, s * s)
        return ref[rows] + factor * direction[rows]

    def full(scales):
        res = []
        for s in scales:
            out = outputs(s, torch.arange(n))
            e = float(((out - ref) ** 2).sum(-1).mean())
            res.append((e, int((out.argmax(-1) != ref.argmax(-1)).sum()) / n, out))
        return res

    order = torch.argsort(adversarial_margins(ref), stable=True)
    measure, subset, rest = _parts(ref, outputs, order, 40, rows_seen)
    t, verified = robustness_on_subset(measure, full, 0.01, n, subset, rest, reference=ref)
    t_full = robustness(full, 0.01, n, reference=ref)
    band = 2.0 ** ((4 - 2) * TOLERANCE_LOG2) * 1.01  # energy slopes 4 vs 2, over one bracket
    assert verified and t_full / band <= t <= t_full * band


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(20, 32), nn.Linear(32, 16), nn.Linear(16, 6)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = _Mlp().eval()
    x = torch.randn(800, 20)
    return model, x, profile(model, x[:2])


def test_subset_search_on_a_probe_keeps_a_bracket_valid_on_all_inputs(mlp):
    """On real network outputs the subset's result is a bracket verified on all inputs:
    within the bracket tolerance of the full search's ``t``."""
    _, x, prof = mlp
    probe = Probe(prof, x)
    order = torch.argsort(adversarial_margins(probe.ref), stable=True)
    size = subset_size(0.01, probe.n)
    band = 2.0 ** (2 * TOLERANCE_LOG2) * 1.01
    for i, layer in enumerate(prof.layers):
        idx = probe.layer_index[layer.name]
        w = probe.modules[layer.name].weight
        noise = sources._weight_noise(w, i)
        value_at = sources._Perturbed(
            probe, probe.cache[probe.nodes[idx]], probe.layer_output(layer.name, noise, bias=False)
        )
        full = sources._stacked_measure(probe, idx, value_at)
        parts = {"subset": probe.add_rows(order[:size]), "rest": probe.add_rows(order[size:])}
        t, _ = robustness_on_subset(
            sources._part_measure(probe, idx, value_at, parts),
            full,
            0.01,
            probe.n,
            probe.rows(parts["subset"]),
            probe.rows(parts["rest"]),
            reference=probe.ref,
        )
        probe.drop_rows(parts.values())
        t_full = robustness(full, 0.01, probe.n, reference=probe.ref)
        assert t_full / band <= t <= t_full * band


def test_row_sets_measure_their_rows(mlp):
    _, x, prof = mlp
    probe = Probe(prof, x)
    rows = torch.tensor([5, 3, 700, 0])
    chunk = probe.add_rows(rows, cache=False)
    idx = probe.layer_index[prof.layers[1].name]
    value = probe.cache[probe.nodes[idx]]
    out = probe.outputs_from(idx, [value.index_select(0, rows)], chunk=chunk)
    torch.testing.assert_close(out, probe.ref[rows])
    assert probe.sums_many(out, 1, chunk) == [(0.0, 0)]
    with pytest.raises(ValueError):
        probe.drop_rows([chunk - 1])
    probe.drop_rows([chunk])
    assert probe.num_chunks == 0


def test_resumed_plan_measurement_equals_a_fresh_one(mlp):
    _, x, prof = mlp
    probe = Probe(prof, x)
    order = torch.argsort(adversarial_margins(probe.ref), stable=True)
    probe.set_chunks(order, (0.125, 0.25, 0.5, 1.0))
    p = prof.num_layers - 1
    bits, b_a = [2] * p, 2
    count, seen = probe.plan_disagreements(p, bits, b_a)
    assert seen == probe.n and count > 0
    first = probe.plan_disagreements(p, bits, b_a, limit=0)
    assert first[1] < probe.n  # stopped early
    assert probe.plan_disagreements(p, bits, b_a, limit=count, resume=first) == (count, seen)


def test_plans_cut_later_reuse_the_prefix_before_the_round_trip(mlp, monkeypatch):
    """A plan cut after layer 1 keeps the values before its cut's round trip: a plan with
    the same first width cut later reads them (layer 1 is not run again), and equals a
    fresh probe's plan."""
    _, x, prof = mlp
    probe, fresh = Probe(prof, x), Probe(prof, x)
    probe.plan_outputs(1, [3], 4)
    runs = []
    orig = Subgraph.__call__

    def spy(self, values):
        runs.append(self)
        return orig(self, values)

    monkeypatch.setattr(Subgraph, "__call__", spy)
    later = probe.plan_outputs(2, [3, 5], 2)
    start = probe.layer_index[prof.layers[0].name]
    first_piece = next(v for k, v in probe._pieces.items() if k[0] == start)
    assert runs and first_piece not in runs
    monkeypatch.undo()
    torch.testing.assert_close(later, fresh.plan_outputs(2, [3, 5], 2))


def test_calibration_with_subsets_keeps_every_robustness_in_the_bracket(mlp, monkeypatch):
    """Subsets change where the robustness search measures, not what it finds: every
    source's ``t`` lies within the bracket tolerance of the search on all inputs."""
    model, x, prof = mlp
    kw = {"prof": prof, "levels": (0.01, 0.02), "progress": False, "threads": 1}
    calls = []
    orig = sources.robustness_on_subset

    def counted(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(sources, "robustness_on_subset", counted)
    with_subsets = calibrate(model, x, **kw)
    assert calls  # the subset search ran
    monkeypatch.setattr(sources, "subset_size", lambda target, n: None)
    without = calibrate(model, x, **kw)
    band = 2.0 ** (2 * TOLERANCE_LOG2) * 1.01
    pairs = list(zip(with_subsets.layers, without.layers))
    pairs += [(with_subsets.activations[p], without.activations[p]) for p in without.activations]
    for a, b in pairs:
        assert b.t / band <= a.t <= b.t * band


def test_perturbed_values_stacked_equal_one_at_a_time(mlp):
    _, x, prof = mlp
    probe = Probe(prof, x)
    idx = probe.layer_index[prof.layers[1].name]
    y0 = probe.cache[probe.nodes[idx]]
    delta = torch.randn(y0.shape, generator=torch.Generator().manual_seed(2))
    value_at = sources._Perturbed(probe, y0, delta)
    chunk = probe.add_rows(torch.tensor([7, 1, 300]))
    for c in (0, chunk):
        scales = [0.01, 0.5, 2.0]
        stacked = value_at.stacked(scales, c)
        assert torch.equal(stacked, torch.cat([value_at(s, c) for s in scales]))
        rows = probe.rows(c)
        first = torch.add(y0, delta, alpha=0.01)
        assert torch.equal(
            stacked[: first.shape[0] if rows is None else 3], first if rows is None else first[rows]
        )


def test_the_energy_sample_is_stratified_and_unbiased():
    """All low-margin rows, a seeded share of the others, weights that sum to ``n``; the
    weighted mean of any per-row quantity is an unbiased estimate of its mean over all
    inputs (checked over many seeds, with a 4-standard-error margin)."""
    n, size = 1000, 125
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    sample = sources.energy_sample(order, size, seed=1)
    rest = order[size:]
    assert torch.equal(sample.rows[:size], order[:size])
    k = sample.rest_positions.numel()
    assert k == max(sources.ENERGY_SAMPLE_MIN, math.ceil(0.3 * (n - size)))
    assert torch.equal(sample.rows[size:], rest[sample.rest_positions])
    assert len(set(sample.rows.tolist())) == sample.rows.numel()
    assert float(sample.weights.sum()) == pytest.approx(n)
    assert torch.equal(sources.energy_sample(order, size, seed=1).rows, sample.rows)
    energy = torch.rand(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64) ** 4
    estimates = torch.tensor(
        [
            float((s.weights * energy[s.rows]).sum()) / n
            for s in (sources.energy_sample(order, size, seed=i) for i in range(300))
        ]
    )
    err = float(estimates.std()) / math.sqrt(estimates.numel())
    assert abs(float(estimates.mean()) - float(energy.mean())) < 4 * err
    # few other inputs: all of them
    small = sources.energy_sample(order[:80], 20, seed=0)
    assert small.rows.numel() == 80 and float(small.weights.max()) == 1.0


def test_a_rest_sample_of_every_row_gives_the_unsampled_t():
    ref, outputs, full, rows_seen = _synthetic()
    n = ref.shape[0]
    order = torch.argsort(adversarial_margins(ref), stable=True)
    measure, subset, rest = _parts(ref, outputs, order, 40, rows_seen)
    t, _ = robustness_on_subset(measure, full, 0.01, n, subset, rest, reference=ref)
    every = (torch.arange(rest.numel()), 1.0)
    t_all, _ = robustness_on_subset(
        measure, full, 0.01, n, subset, rest, reference=ref, rest_sample=every
    )
    assert t_all == pytest.approx(t, rel=1e-9)
    # half the rest, each counted twice: an estimate, not the exact value
    half = (torch.arange(0, rest.numel(), 2), 2.0)
    t_half, _ = robustness_on_subset(
        measure, full, 0.01, n, subset, rest, reference=ref, rest_sample=half
    )
    assert t_half != t and t_half == pytest.approx(t, rel=0.5)


def test_width_probe_on_a_sample_of_every_row_gives_the_full_energies(mlp):
    _, x, prof = mlp
    probe = Probe(prof, x)
    order = torch.argsort(adversarial_margins(probe.ref), stable=True)
    every = sources.EnergySample(order, torch.ones(probe.n, dtype=torch.float64), order[:0])
    for layer in prof.layers:
        idx = probe.layer_index[layer.name]
        w = probe.modules[layer.name].weight
        outs = [probe.layer_output(layer.name, quantized_weight(w, b)) for b in (2, 6)]
        full, _ = sources._width_probe(probe, idx, outs, (2, 6), probe.ref, 0.01)
        sampled, _ = sources._width_probe(probe, idx, outs, (2, 6), probe.ref, 0.01, every)
        assert sampled == pytest.approx(full, rel=1e-5)
