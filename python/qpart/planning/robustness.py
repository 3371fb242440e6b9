"""The robustness ``t`` of a noise source: the output-noise energy at the smallest scale of a
fixed (seeded) noise pattern whose disagreement rate reaches the reference drop.

The scale is searched on ``[2^-14, 2^3]`` (relative to the per-row range) until the bracket
``[lo, hi]`` (``lo`` below the target rate, ``hi`` at or above it) is within a factor
``2^tol``; ``t`` is the energy interpolated (log-log) between the two measurements at the
crossing (the top-1 prediction from ``lo``, clamped to the bracket; else its geometric
middle). With the top-1 metric each measurement
also predicts, per sample, the scale at which its arg-max would change if the outputs moved
linearly with the scale (:func:`top1_flip_scales`); the ``m``-th smallest of these
(``m`` the number of disagreements the target needs) is the next guess, and two scales
``2^(+-tol/2)`` around it are measured in one stacked pass. That usually closes the bracket
in two or three passes; without a prediction (other metrics, or a guess outside the
bracket) the bracket is bisected in log scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

#: The searched scale range (log2 of the noise step relative to the range).
LOG2_LO, LOG2_HI = -14.0, 3.0
#: Bracket width (log2) at which the search stops.
TOLERANCE_LOG2 = 1.0 / 8.0

#: ``measure(scales) -> [(energy, disagreement rate, outputs)]``, one per scale.
Measure = Callable[[Sequence[float]], list[tuple[float, float, torch.Tensor]]]


def needed_disagreements(target: float, n: int) -> int:
    """The smallest count ``m`` of disagreements among ``n`` with ``m / n >= target``."""
    m = max(0, math.floor(target * n) - 1)
    while m / n < target:
        m += 1
    return m


def allowed_disagreements(rate: float, n: int) -> int:
    """The largest count ``k`` of disagreements among ``n`` with ``k / n <= rate``."""
    k = max(-1, math.floor(rate * n) + 1)
    while k >= 0 and k / n > rate:
        k -= 1
    return k


def top1_flip_scales(reference: torch.Tensor, outputs: torch.Tensor, scale: float) -> torch.Tensor:
    """Per sample, the scale at which the arg-max of ``reference + s * r`` leaves the
    reference's class, with ``r = (outputs - reference) / scale`` (``inf`` if never)."""
    n = reference.shape[0]
    ref = reference.reshape(n, -1).double()
    r = (outputs.reshape(n, -1).double() - ref) / scale
    k = ref.argmax(-1, keepdim=True)
    gap = ref.gather(1, k) - ref
    closing = r - r.gather(1, k)
    s = torch.where(closing > 0, gap / closing.clamp_min(1e-300), torch.inf)
    s.scatter_(1, k, torch.inf)
    return s.amin(-1)


def first_guess(
    reference: torch.Tensor | None,
    outputs: Sequence[torch.Tensor],
    scales: Sequence[float],
    rates: Sequence[float],
    target: float,
    default: float = 2.0**-6,
) -> float:
    """A starting scale for :func:`robustness` from measurements with other noise of known
    equivalent scales (e.g. ``b``-bit quantization, a uniform step of ``1 / (2^b - 1)`` of the
    range): the top-1 prediction from the noisiest one still below ``target`` (else the
    least noisy one); ``default`` without the top-1 rule or a finite prediction."""
    if reference is None or not outputs:
        return default
    below = [i for i, r in enumerate(rates) if r < target]
    i = (
        max(below, key=lambda j: scales[j])
        if below
        else min(range(len(scales)), key=lambda j: scales[j])
    )
    m = needed_disagreements(target, reference.shape[0])
    if not 1 <= m <= reference.shape[0]:
        return default
    guess = float(top1_flip_scales(reference, outputs[i], scales[i]).kthvalue(m).values)
    return guess if math.isfinite(guess) and guess > 0 else default


def robustness(
    measure: Measure,
    target: float,
    n: int,
    *,
    reference: torch.Tensor | None = None,
    start: float = 2.0**-6,
    tol: float = TOLERANCE_LOG2,
    max_passes: int = 16,
) -> float:
    """``t`` of one source (see the module docstring). ``measure`` evaluates noise scales;
    ``target``: the reference disagreement rate; ``n``: the number of inputs;
    ``reference``: the float outputs, to predict with the top-1 rule (``None``: bisection
    only); ``start``: the first scale tried."""
    lo_bound, hi_bound = 2.0**LOG2_LO, 2.0**LOG2_HI
    lo: tuple[float, float] | None = None  # (scale, energy) with rate < target
    hi: tuple[float, float] | None = None  # (scale, energy) with rate >= target
    m = needed_disagreements(target, n)
    latest: tuple[float, torch.Tensor] = (0.0, torch.empty(0))
    scales = [min(max(start, lo_bound), hi_bound)]
    lo_out = None
    for step in range(max_passes):
        for s, (energy, rate, out) in zip(scales, measure(scales)):
            if rate >= target:
                if hi is None or s < hi[0]:
                    hi = (s, energy)
            elif lo is None or s > lo[0]:
                lo, lo_out = (s, energy), out
            latest = (s, out)
        if hi is not None and hi[0] <= lo_bound:
            return hi[1]
        if hi is not None and lo is not None and hi[0] <= lo[0] * 2.0**tol:
            cross = math.sqrt(lo[0] * hi[0])
            if reference is not None and 1 <= m <= n:
                flips = top1_flip_scales(reference, lo_out, lo[0])
                cross = min(max(float(flips.kthvalue(m).values), lo[0]), hi[0])
            return _log_interpolate(lo, hi, cross)
        if hi is None and lo is not None and lo[0] >= hi_bound:
            return lo[1]  # never reaches the target rate inside the range
        scales = []
        if reference is not None and 1 <= m <= n and (step < 3 or step % 2 == 1):
            flips = top1_flip_scales(reference, latest[1], latest[0])
            scales = _around(float(flips.kthvalue(m).values), lo, hi, lo_bound, hi_bound, tol)
        if not scales:  # bisection in log scale
            if hi is None:
                scales = [hi_bound]
            elif lo is None:
                scales = [lo_bound]
            else:
                scales = [math.sqrt(lo[0] * hi[0])]
    if hi is not None:
        return hi[1]
    return lo[1] if lo is not None else 0.0


def _log_interpolate(lo: tuple[float, float], hi: tuple[float, float], scale: float) -> float:
    """The energy at ``scale`` interpolated log-log between ``lo`` and ``hi`` (``(scale,
    energy)`` pairs)."""
    if lo[1] <= 0 or hi[1] <= 0 or hi[0] <= lo[0]:
        return hi[1]
    f = (math.log(scale) - math.log(lo[0])) / (math.log(hi[0]) - math.log(lo[0]))
    return math.exp(math.log(lo[1]) + f * (math.log(hi[1]) - math.log(lo[1])))


def _around(guess, lo, hi, lo_bound, hi_bound, tol) -> list[float]:
    """The scales ``guess * 2^(+-tol/2)`` inside the open bracket (the range's end when the
    guess lies beyond it and that end is unmeasured); ``[]`` when none."""
    if not math.isfinite(guess) or guess >= hi_bound:
        return [hi_bound] if hi is None and (lo is None or lo[0] < hi_bound) else []
    if guess <= lo_bound:
        return [lo_bound] if lo is None else []
    lower = lo[0] if lo else 0.0
    upper = hi[0] if hi else math.inf
    pair = (guess * 2.0 ** (-tol / 2), guess * 2.0 ** (tol / 2))
    return [min(max(s, lo_bound), hi_bound) for s in pair if lower < s < upper]
