"""Bit allocation for a fixed partition point (DESIGN.md §3, paper Eqs. 23-40).

Problem, for variables ``i`` (the device layers' weights and the cut activation)::

    minimize    sum_i c_i b_i
    subject to  sum_i g_i exp(-alpha_i b_i) <= C          (accuracy; g_i = p_i / t_i)
                sum_i m_i b_i <= M                        (device memory, optional)
                lo <= b_i <= hi, b_i integer

* :func:`continuous_allocation` - the KKT closed form (reverse water-filling) with the
  bounds handled by iterated clipping (active set); a bisection on the multiplier is the
  fallback should the active set ever cycle. The memory constraint enters through a second
  multiplier ``nu``: costs become ``c + nu m`` and ``nu`` is found by bisection.
* :func:`allocate_bits` - integer widths: round the continuous solution up (never breaks the
  accuracy budget), then greedily lower the widths with the best cost saving per unit of
  added noise while the budget holds, then a pairwise-exchange pass. Its cost is provably
  at most ``sum_i c_i`` above the continuous optimum, hence above the integer optimum.
* :func:`exact_allocation` - branch and bound with a Lagrangian bound (integer per-variable
  minima over a grid of multipliers, exact at the root's multiplier up to the grid):
  the integer optimum, optionally seeded with an incumbent and stopped at a time cap.
* ``allocate_bits(method="auto")`` (what the planner uses) - the greedy solution as the
  incumbent, then branch and bound within ``time_limit_s``: the integer optimum when it
  finishes, else the greedy widths with their gap to the continuous lower bound reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

MIN_BITS = 1
MAX_BITS = 8
_REL_TOL = 1e-9


class InfeasibleError(ValueError):
    """No allocation meets the constraints. ``constraint`` is ``"accuracy"`` or ``"memory"``."""

    def __init__(self, constraint: str, message: str):
        super().__init__(message)
        self.constraint = constraint


@dataclass(frozen=True)
class Allocation:
    """Bit widths (``bits``, int array) with their predicted noise ``sum g e^(-alpha b)``,
    linear cost ``sum c b`` and, when computed, the continuous solution. ``optimal``: the
    widths are the proven integer optimum (``None``: not known); ``gap``: relative gap
    ``(cost - lower bound) / cost`` to the best proven lower bound (``0`` when optimal)."""

    bits: np.ndarray
    noise: float
    cost: float
    continuous: np.ndarray | None = None
    optimal: bool | None = None
    gap: float | None = None


def _arrays(g, alpha, c):
    g = np.asarray(g, dtype=np.float64).ravel()
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), g.shape).copy()
    c = np.asarray(c, dtype=np.float64).ravel()
    if not (g.shape == c.shape):
        raise ValueError(f"g and c must have the same length, got {g.shape} and {c.shape}")
    if np.any(~np.isfinite(g)) or np.any(g < 0):
        raise ValueError("noise coefficients g must be finite and >= 0")
    if np.any(~np.isfinite(alpha)) or np.any(alpha <= 0):
        raise ValueError("alpha must be finite and > 0")
    if np.any(~np.isfinite(c)) or np.any(c < 0):
        raise ValueError("costs c must be finite and >= 0")
    return g, alpha, c


def noise_of(g, alpha, bits) -> float:
    """Predicted noise ``sum_i g_i exp(-alpha_i b_i)``."""
    g, alpha = np.asarray(g, float), np.asarray(alpha, float)
    return float(np.sum(g * np.exp(-alpha * np.asarray(bits, float))))


def _unclipped(g, alpha, c, inv_lam):
    """Stationary widths for multiplier ``1/lambda``: ``g e^(-alpha b) = inv_lam * c / alpha``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        target = inv_lam * c / alpha
        b = np.where(g <= 0, -np.inf, np.where(target <= 0, np.inf, np.log(g / target) / alpha))
    return b


def _check_accuracy_feasible(g, alpha, budget, hi):
    best = noise_of(g, alpha, np.full(g.shape, hi))
    if best > budget * (1 + _REL_TOL):
        raise InfeasibleError(
            "accuracy",
            f"accuracy budget cannot be met: even {hi} bits everywhere give predicted noise "
            f"{best:.4g} > budget C = {budget:.4g}",
        )


def _closed_form(g, alpha, c, budget, lo, hi):
    """Continuous optimum without the memory constraint (bounds by iterated clipping)."""
    n = g.size
    if noise_of(g, alpha, np.full(n, lo)) <= budget:
        return np.full(n, float(lo))
    state = np.zeros(n, dtype=np.int8)  # 0 free, -1 at lo, +1 at hi
    bounds = np.where(state > 0, hi, lo)
    for _ in range(3 * n + 3):
        free = state == 0
        fixed_noise = float(np.sum(g[~free] * np.exp(-alpha[~free] * bounds[~free])))
        remaining = budget - fixed_noise
        weight = float(np.sum(c[free] / alpha[free]))
        if not free.any() or remaining <= 0 or weight <= 0:
            break
        inv_lam = remaining / weight
        b = _unclipped(g, alpha, c, inv_lam)
        new_state = np.where(b > hi, 1, np.where(b < lo, -1, 0)).astype(np.int8)
        if np.array_equal(new_state, state):
            return np.clip(b, lo, hi)
        state = new_state
        bounds = np.where(state > 0, hi, lo)
    return _bisection(g, alpha, c, budget, lo, hi)


def _bisection(g, alpha, c, budget, lo, hi):
    """Fallback: the clipped stationary widths are monotone in the multiplier."""

    def noise(log_inv):
        return noise_of(g, alpha, np.clip(_unclipped(g, alpha, c, math.exp(log_inv)), lo, hi))

    a, b = -700.0, 700.0
    for _ in range(200):
        mid = 0.5 * (a + b)
        if noise(mid) > budget:
            b = mid
        else:
            a = mid
    return np.clip(_unclipped(g, alpha, c, math.exp(a)), lo, hi)


def continuous_allocation(
    g,
    alpha,
    c,
    budget: float,
    lo: float = MIN_BITS,
    hi: float = MAX_BITS,
    memory_per_bit=None,
    memory_budget: float | None = None,
) -> tuple[np.ndarray, float]:
    """Continuous KKT optimum ``b*`` and the memory multiplier ``nu`` (0 if memory is slack).

    Without bounds, ``b_i* = (1/alpha_i) ln(g_i sum_j(c_j/alpha_j) alpha_i / (C c_i))`` (with
    one ``alpha``: ``(1/alpha) ln(g_i sum_j c_j / (C c_i))``). Raises :class:`InfeasibleError`
    when the accuracy budget fails at ``hi`` bits or memory fails even at the
    memory-minimal allocation.
    """
    g, alpha, c = _arrays(g, alpha, c)
    if not budget > 0:
        raise InfeasibleError("accuracy", f"noise budget C must be > 0, got {budget}")
    _check_accuracy_feasible(g, alpha, budget, hi)
    b = _closed_form(g, alpha, c, budget, lo, hi)
    if memory_budget is None or memory_per_bit is None:
        return b, 0.0
    m = np.asarray(memory_per_bit, dtype=np.float64).ravel()
    if float(m @ b) <= memory_budget * (1 + _REL_TOL):
        return b, 0.0
    # Memory binds: bisection on nu (memory use decreases as nu grows).
    scale = float(np.max(c)) / max(float(np.max(m)), 1e-300) if np.max(c) > 0 else 1.0
    b_min = _closed_form(g, alpha, m, budget, lo, hi)
    if float(m @ b_min) > memory_budget * (1 + 1e-7):
        raise InfeasibleError(
            "memory",
            f"device memory is too small: the least memory meeting the accuracy budget is "
            f"{float(m @ b_min):.6g} > {memory_budget:.6g} (memory units)",
        )
    lo_nu, hi_nu = 0.0, scale
    while float(m @ _closed_form(g, alpha, c + hi_nu * m, budget, lo, hi)) > memory_budget:
        hi_nu *= 4.0
        if hi_nu > scale * 1e12:
            return b_min, hi_nu
    for _ in range(100):
        mid = 0.5 * (lo_nu + hi_nu)
        if float(m @ _closed_form(g, alpha, c + mid * m, budget, lo, hi)) > memory_budget:
            lo_nu = mid
        else:
            hi_nu = mid
    return _closed_form(g, alpha, c + hi_nu * m, budget, lo, hi), hi_nu


def _greedy(g, alpha, cost, budget, bits, lo, hi):
    """Lower widths by best cost saving per added noise, then pairwise exchanges."""
    bits = bits.copy()
    level = g * np.exp(-alpha * bits)
    total = float(level.sum())
    limit = budget * (1 + _REL_TOL)
    while True:
        down = np.where(bits > lo, g * np.exp(-alpha * (bits - 1)), np.inf)
        added = down - level
        ok = (bits > lo) & (total + added <= limit) & (cost > 0)
        if not ok.any():
            break
        with np.errstate(divide="ignore"):
            score = np.where(ok, cost / np.maximum(added, 1e-300), -np.inf)
        i = int(np.argmax(score))
        bits[i] -= 1
        total += float(added[i])
        level[i] = down[i]
    # Exchange pass: lower i by one and raise j by one when that is cheaper and feasible.
    for _ in range(4 * bits.size * (hi - lo + 1)):
        down = np.where(bits > lo, g * np.exp(-alpha * (bits - 1)) - level, np.inf)
        up = np.where(bits < hi, g * np.exp(-alpha * (bits + 1)) - level, np.inf)
        gain = cost[:, None] - cost[None, :]  # lower i, raise j
        new_total = total + down[:, None] + up[None, :]
        ok = (gain > 1e-12 * max(float(cost.max()), 1e-300)) & (new_total <= limit)
        np.fill_diagonal(ok, False)
        if not ok.any():
            break
        i, j = np.unravel_index(int(np.argmax(np.where(ok, gain, -np.inf))), ok.shape)
        bits[i] -= 1
        bits[j] += 1
        level = g * np.exp(-alpha * bits)
        total = float(level.sum())
    return bits


def allocate_bits(
    g,
    alpha,
    c,
    budget: float,
    *,
    lo: int = MIN_BITS,
    hi: int = MAX_BITS,
    memory_per_bit=None,
    memory_budget: float | None = None,
    method: str = "greedy",
    time_limit_s: float = 0.05,
) -> Allocation:
    """Integer bit widths minimizing ``sum c b`` under the noise budget (and memory).

    ``method="greedy"`` (default; closed form + rounding + greedy, fast at any size),
    ``"exact"`` (:func:`exact_allocation`, for small problems) or ``"auto"`` (greedy as the
    incumbent, then branch and bound capped at ``time_limit_s`` seconds: the integer
    optimum when it finishes - ``optimal=True`` - else the greedy widths with ``gap``, their
    relative distance to the continuous lower bound).

    ``g``: per variable ``p_i / t_i`` (noise energy at 0 bits over robustness); ``alpha``:
    decay per bit (scalar or per variable); ``c``: cost per bit; ``budget``: ``C(a)``.
    ``memory_per_bit`` / ``memory_budget``: optional linear memory constraint
    ``sum m_i b_i <= M`` (constant overheads already subtracted from ``M``).
    Rounding goes up first, so the accuracy budget is never exceeded. Raises
    :class:`InfeasibleError` naming the failing constraint (``"accuracy"`` or ``"memory"``).
    """
    if method not in ("greedy", "exact", "auto"):
        raise ValueError(f"method must be 'greedy', 'exact' or 'auto', got {method!r}")
    g, alpha, c = _arrays(g, alpha, c)
    if g.size == 0:
        return Allocation(np.zeros(0, dtype=np.int64), 0.0, 0.0, np.zeros(0))
    if method == "exact":
        return exact_allocation(
            g,
            alpha,
            c,
            budget,
            lo=lo,
            hi=hi,
            memory_per_bit=memory_per_bit,
            memory_budget=memory_budget,
        )
    b_cont, nu = continuous_allocation(g, alpha, c, budget, lo, hi, memory_per_bit, memory_budget)
    start = np.clip(np.ceil(b_cont - 1e-9), lo, hi).astype(np.int64)
    m = None if memory_per_bit is None else np.asarray(memory_per_bit, np.float64).ravel()
    for _ in range(30):
        bits = _greedy(g, alpha, c + nu * (m if m is not None else 0.0), budget, start, lo, hi)
        if memory_budget is None or m is None or float(m @ bits) <= memory_budget * (1 + _REL_TOL):
            greedy = Allocation(bits, noise_of(g, alpha, bits), float(c @ bits), b_cont)
            if method == "greedy":
                return greedy
            return _improve(g, alpha, c, budget, lo, hi, m, memory_budget, greedy, time_limit_s)
        nu = max(nu * 2.0, float(np.max(c)) / max(float(np.max(m)), 1e-300))
    if g.size <= 10:
        return exact_allocation(
            g, alpha, c, budget, lo=lo, hi=hi, memory_per_bit=m, memory_budget=memory_budget
        )
    raise InfeasibleError(
        "memory",
        "device memory: no integer rounding of the continuous solution fits the memory limit",
    )


def _improve(g, alpha, c, budget, lo, hi, m, memory_budget, greedy, time_limit_s) -> Allocation:
    """``method="auto"``: branch and bound seeded with the greedy widths, capped in time."""
    try:
        exact = exact_allocation(
            g,
            alpha,
            c,
            budget,
            lo=lo,
            hi=hi,
            memory_per_bit=m,
            memory_budget=memory_budget,
            incumbent=greedy.bits,
            time_limit_s=time_limit_s,
        )
    except _TimeUp:
        lower = float(c @ greedy.continuous) if greedy.continuous is not None else 0.0
        gap = max(0.0, (greedy.cost - lower) / greedy.cost) if greedy.cost > 0 else 0.0
        return Allocation(greedy.bits, greedy.noise, greedy.cost, greedy.continuous, False, gap)
    return Allocation(exact.bits, exact.noise, exact.cost, greedy.continuous, True, 0.0)


class _TimeUp(Exception):
    """The branch and bound ran past its time cap."""


def _lagrangian_tables(g, alpha, c, lo, hi, points: int = 33):
    """Multipliers (geometric grid spanning every variable's stationary range) and, per
    multiplier, the suffix sums over variables ``k..n-1`` of ``h_i(lam) = min over integer
    b in [lo, hi] of (c_i b + lam g_i e^(-alpha_i b))`` (shape ``(points, n + 1)``)."""
    widths = np.arange(lo, hi + 1, dtype=np.float64)
    pos = g > 0
    if not pos.any():
        lam = np.zeros(1)
    else:
        with np.errstate(divide="ignore"):
            lo_l = c[pos] * np.exp(alpha[pos] * lo) / (alpha[pos] * g[pos])
            hi_l = c[pos] * np.exp(alpha[pos] * hi) / (alpha[pos] * g[pos])
        a = max(float(np.min(lo_l)), 1e-300)
        b = max(float(np.max(hi_l)), a)
        lam = np.concatenate([[0.0], np.geomspace(a, b, points)])
    # h[j, i] = min_b c_i b + lam_j g_i e^(-alpha_i b)
    terms = (
        c[None, :, None] * widths[None, None, :]
        + lam[:, None, None] * (g[:, None] * np.exp(-alpha[:, None] * widths[None, :]))[None]
    )
    h = terms.min(axis=2)
    suffix = np.concatenate([np.cumsum(h[:, ::-1], axis=1)[:, ::-1], np.zeros((lam.size, 1))], 1)
    return lam, suffix


def exact_allocation(
    g,
    alpha,
    c,
    budget: float,
    *,
    lo: int = MIN_BITS,
    hi: int = MAX_BITS,
    memory_per_bit=None,
    memory_budget: float | None = None,
    incumbent=None,
    time_limit_s: float | None = None,
) -> Allocation:
    """The integer optimum by branch and bound (Lagrangian lower bound, see ``bound``).
    Meant for small problems (up to ~12 variables); raises :class:`InfeasibleError`.
    ``incumbent``: a feasible integer solution to start from (prunes earlier; returned
    when nothing is cheaper); ``time_limit_s``: raise the internal time-up signal past
    this many seconds (used by ``allocate_bits(method="auto")``)."""
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    g, alpha, c = _arrays(g, alpha, c)
    n = g.size
    _check_accuracy_feasible(g, alpha, budget, hi)
    m = np.zeros(n) if memory_per_bit is None else np.asarray(memory_per_bit, np.float64).ravel()
    mem_limit = math.inf if memory_budget is None else memory_budget * (1 + _REL_TOL)
    if float(m.sum()) * lo > mem_limit:
        raise InfeasibleError("memory", "device memory is too small even at the lowest width")
    order = np.argsort(-c)
    g, alpha, c, m = g[order], alpha[order], c[order], m[order]
    limit = budget * (1 + _REL_TOL)
    min_noise_tail = np.concatenate([np.cumsum((g * np.exp(-alpha * hi))[::-1])[::-1], [0.0]])
    min_mem_tail = np.concatenate([np.cumsum((m * lo)[::-1])[::-1], [0.0]])
    best_cost = math.inf
    best_bits: np.ndarray | None = None
    if incumbent is not None:
        inc = np.asarray(incumbent, np.int64).ravel()[order]
        if (
            float(g @ np.exp(-alpha * inc)) <= limit
            and float(m @ inc) <= mem_limit
            and np.all((inc >= lo) & (inc <= hi))
        ):
            best_cost, best_bits = float(c @ inc), inc.copy()
    bits = np.zeros(n, dtype=np.int64)
    visits = 0

    lam, suffix = _lagrangian_tables(g, alpha, c, lo, hi)

    def bound(k, noise, cost):
        """Lagrangian lower bound of the best completion: for every multiplier ``lam`` and
        any feasible integer completion, ``sum c b >= sum_i h_i(lam) - lam * rest`` with
        ``h_i(lam) = min_b (c_i b + lam g_i e^(-alpha_i b))`` over the integer widths; the
        best of a geometric grid of multipliers is taken."""
        if k == n:
            return cost
        rest = budget - noise
        if rest <= 0:
            return math.inf
        return cost + float(np.max(suffix[:, k] - lam * rest))

    def dfs(k, noise, cost, mem):
        nonlocal best_cost, best_bits, visits
        visits += 1
        if deadline is not None and time.perf_counter() >= deadline:
            raise _TimeUp
        if k == n:
            if cost < best_cost:
                best_cost, best_bits = cost, bits.copy()
            return
        for b in range(lo, hi + 1):
            nz = noise + g[k] * math.exp(-alpha[k] * b)
            mm = mem + m[k] * b
            if nz + min_noise_tail[k + 1] > limit or mm + min_mem_tail[k + 1] > mem_limit:
                continue
            cc = cost + c[k] * b
            if bound(k + 1, nz, cc) >= best_cost - 1e-12 * max(abs(best_cost), 1.0):
                continue
            bits[k] = b
            dfs(k + 1, nz, cc, mm)

    dfs(0, 0.0, 0.0, 0.0)
    if best_bits is None:
        raise InfeasibleError(
            "memory", "no integer allocation meets both the accuracy budget and the device memory"
        )
    out = np.empty(n, dtype=np.int64)
    out[order] = best_bits
    g0 = np.empty(n)
    g0[order] = g
    a0 = np.empty(n)
    a0[order] = alpha
    c0 = np.empty(n)
    c0[order] = c
    return Allocation(out, noise_of(g0, a0, out), float(c0 @ out))
