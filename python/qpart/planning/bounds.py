"""One-sided confidence bounds of a binomial proportion (the measured disagreement rate of a
plan on ``n`` acceptance inputs). Pure Python: no network, no scipy at run time."""

from __future__ import annotations

import math

#: Default confidence of the acceptance bound (one-sided).
DEFAULT_CONFIDENCE = 0.95


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)`` (log-space sum, exact up to rounding)."""
    if n < 0 or k < 0:
        raise ValueError(f"binomial_cdf: need n >= 0 and k >= 0, got n={n}, k={k}")
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lg_n = math.lgamma(n + 1)
    terms = [
        lg_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def clopper_pearson_upper(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper confidence bound of a proportion after ``k`` events in
    ``n`` independent trials: the ``u`` with ``P(X <= k | n, u) = 1 - confidence``
    (``1.0`` when ``k = n``). For every true rate ``q``, ``P(bound < q) <= 1 - confidence``.
    Equals ``scipy.stats.beta.ppf(confidence, k + 1, n - k)``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n <= 0:
        raise ValueError(f"need at least one acceptance sample, got n={n}")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if k == n:
        return 1.0
    miss = 1.0 - confidence
    if k == 0:  # closed form: (1 - u)^n = miss
        return -math.expm1(math.log(miss) / n)
    lo, hi = k / n, 1.0  # the CDF falls in p; the bound lies above the point estimate
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if binomial_cdf(k, n, mid) > miss:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return hi


def max_events_within(n: int, budget: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """The largest ``k`` whose upper bound on ``n`` samples is ``<= budget`` (``-1``: none;
    e.g. ``n = 500`` cannot certify ``0.5 %`` at 95 %, zero events bound it at 0.6 %)."""
    k = -1
    while k + 1 <= n and clopper_pearson_upper(k + 1, n, confidence) <= budget:
        k += 1
    return k
