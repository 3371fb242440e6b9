"""Held-out acceptance (docs/PLANNING.md §4.4): the Clopper-Pearson bound, the serving rule,
and the guarantee itself checked statistically - never a number one machine's training
produced."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qpart.planning.allocation import InfeasibleError
from qpart.planning.bounds import (
    binomial_cdf,
    clopper_pearson_upper,
    max_events_within,
)
from qpart.planning.heldout import HeldOutAcceptance
from qpart.planning.table import PatternTable, Request
from qpart.simulation import build_table
from sim_helpers import LEVELS, blobs, tiny_setup


def _binom_quantile(r: int, p: float, tail: float) -> int:
    """Smallest ``m`` with ``P(Binomial(r, p) > m) <= tail``."""
    m = 0
    while 1.0 - binomial_cdf(m, r, p) > tail:
        m += 1
    return m


@pytest.mark.parametrize(
    "k,n", [(0, 1), (0, 600), (1, 600), (5, 600), (50, 600), (599, 600), (3, 10), (100, 10000)]
)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_bound_is_the_beta_quantile(k, n, confidence):
    stats = pytest.importorskip("scipy.stats")
    assert clopper_pearson_upper(k, n, confidence) == pytest.approx(
        stats.beta.ppf(confidence, k + 1, n - k), rel=1e-9, abs=1e-12
    )
    assert binomial_cdf(k, n, 0.01) == pytest.approx(stats.binom.cdf(k, n, 0.01), rel=1e-9)


def test_bound_edges_and_errors():
    assert clopper_pearson_upper(7, 7) == 1.0
    assert clopper_pearson_upper(0, 600) <= 0.005 < clopper_pearson_upper(0, 597)
    assert max_events_within(600, 0.005) == 0 and max_events_within(500, 0.005) == -1
    assert max_events_within(600, 0.01) == 1
    for bad in [(-1, 5), (6, 5), (0, 0)]:
        with pytest.raises(ValueError):
            clopper_pearson_upper(*bad)
    with pytest.raises(ValueError):
        clopper_pearson_upper(0, 10, 1.0)


@pytest.mark.parametrize("n,budget", [(600, 0.01), (300, 0.02), (2000, 0.005)])
def test_bound_rule_misses_at_most_the_stated_rate_where_the_point_estimate_does_not(n, budget):
    """A configuration whose true rate equals the budget - the worst case - is served by the
    bound rule in at most 5 % of independent acceptance draws (plus a binomial margin);
    serving on the point estimate (``k / n <= a``, the old rule's spirit) serves it in
    about half of them, so this test fails for a rule without the bound."""
    rng = np.random.default_rng(12345)
    draws = 4000
    ks = rng.binomial(n, budget, size=draws)
    served_bound = sum(clopper_pearson_upper(int(k), n) <= budget for k in ks)
    served_point = int((ks / n <= budget).sum())
    assert served_bound <= _binom_quantile(draws, 0.05, 1e-9)
    assert served_point > 0.4 * draws


def test_every_table_plan_carries_its_measurement_and_served_plans_meet_the_budget():
    s = tiny_setup()
    table = s.table
    assert table.accepted
    accept = HeldOutAcceptance(s.prof, s.x_accept)  # independent re-measurement
    for pl in table.patterns:
        m = accept.measure(pl.partition_point, pl.bits, pl.activation_bits)
        assert (pl.measured_loss, pl.acceptance_n, pl.confidence) == (m.measured_loss, 600, 0.95)
        k = round(pl.measured_loss * 600)
        assert pl.loss_upper_bound == pytest.approx(clopper_pearson_upper(k, 600), abs=1e-15)
    for budget in (*LEVELS, 0.1):
        try:
            pl = table.lookup(Request(budget))
        except InfeasibleError as exc:
            assert exc.constraint == "accuracy"
            assert np.all(table.bounds > budget)
            continue
        assert pl.loss_upper_bound <= budget + 1e-12
        servable = table.servable(budget)
        assert servable[table.patterns.index(pl)]
    # a budget no bound meets: refused with the smallest bound named, unless predicted-only
    with pytest.raises(InfeasibleError, match="held-out upper bound"):
        table.lookup(Request(0.0001))
    with pytest.raises(InfeasibleError, match="level"):
        table.lookup(Request(0.0001, predicted_only=True))
    pl = table.lookup(Request(min(LEVELS), predicted_only=True))
    assert pl.accuracy_budget <= min(LEVELS)


def test_table_round_trips_and_unaccepted_tables_serve_by_level(tmp_path):
    s = tiny_setup()
    s.table.save(tmp_path / "t.json")
    loaded = PatternTable.load(tmp_path / "t.json")
    assert loaded.accepted
    assert [p.loss_upper_bound for p in loaded.patterns] == [
        p.loss_upper_bound for p in s.table.patterns
    ]
    plain = PatternTable.build(s.prof, s.calib)
    assert not plain.accepted and all(not p.accepted for p in plain.patterns)
    pl = plain.lookup(Request(0.02))
    assert pl.accuracy_budget <= 0.02 and pl.loss_upper_bound is None
    # a version-1 document (old field name) still loads
    d = plain.to_dict()
    d["version"] = 1
    for p in d["patterns"]:
        p["measured_flip_rate"] = p.pop("selection_loss")
        for key in ("measured_loss", "acceptance_n", "loss_upper_bound", "confidence"):
            p.pop(key)
        p.pop("measured_accuracy_loss")
    assert len(PatternTable.from_dict(d)) == len(plain)


def test_labels_report_the_accuracy_loss_beside_the_disagreement():
    s = tiny_setup()
    x, y = s.x_eval, s.y_eval
    acc = HeldOutAcceptance(s.prof, x, y)
    L = s.prof.num_layers
    m = acc.measure(L, [2] * L, None)
    assert m.accuracy_loss is not None and m.accuracy_loss <= m.measured_loss + 1e-12
    assert acc.measure(0, [], None).measured_loss == 0.0  # nothing quantized
    with pytest.raises(ValueError, match="labels"):
        HeldOutAcceptance(s.prof, x, y[:-1])


def test_guarantee_holds_over_many_acceptance_draws_on_a_trained_network():
    """The method's promise on a real (tiny, trained) network: widths chosen on a selection
    split, then for many independent acceptance draws (with replacement) from a fixed
    population, each plan's bound falls below its true disagreement rate on that
    population in at most 5 % of the draws (plus a binomial margin). The true rates are
    exact (computed on the whole population), so nothing here depends on how the network
    trained on this machine."""
    s = tiny_setup()
    table = build_table(s.prof, s.calib, s.x_train)  # selection only: not accepted
    population = blobs(6000, 11)[0]
    truth = HeldOutAcceptance(s.prof, population)
    plans = {(p.partition_point, p.bits, p.activation_bits) for p in table.patterns}
    plans = sorted(plans)
    q = {key: truth.measure(*key).measured_loss for key in plans}
    assert max(q.values()) > 0.0  # the check has something to catch
    draws, n = 40, 300
    gen = torch.Generator().manual_seed(2024)
    misses = dict.fromkeys(plans, 0)
    for _ in range(draws):
        idx = torch.randint(0, population.shape[0], (n,), generator=gen)
        acc = HeldOutAcceptance(s.prof, population[idx])
        for key in plans:
            misses[key] += acc.measure(*key).upper_bound < q[key] - 1e-12
    limit = _binom_quantile(draws, 0.05, 1e-6 / len(plans))
    assert max(misses.values()) <= limit, misses
    # pooled over all (plan, draw) pairs the miss fraction stays near or below 5 %
    pooled = sum(misses.values()) / (draws * len(plans))
    assert pooled <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / draws)
