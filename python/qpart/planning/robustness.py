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

:func:`robustness_on_subset` runs the same search on the inputs of smallest margin and
verifies its bracket once on all inputs (falling back to the search on all inputs when
the verification fails), so that the bracket ``t`` comes from is always valid for all
inputs.
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


def predicted_flips(
    reference: torch.Tensor | None,
    outputs: Sequence[torch.Tensor],
    scales: Sequence[float],
    rates: Sequence[float],
    target: float,
) -> tuple[torch.Tensor | None, int]:
    """Per sample, the scale at which its top-1 class is predicted to change
    (:func:`top1_flip_scales`) from the noisiest measurement still below ``target`` (else
    the least noisy one), of measurements with other noise of known equivalent scales; and
    the index of that measurement. ``(None, -1)`` without a reference or measurements."""
    if reference is None or not outputs:
        return None, -1
    below = [i for i, r in enumerate(rates) if r < target]
    i = (
        max(below, key=lambda j: scales[j])
        if below
        else min(range(len(scales)), key=lambda j: scales[j])
    )
    return top1_flip_scales(reference, outputs[i], scales[i]), i


def first_guess(
    reference: torch.Tensor | None,
    outputs: Sequence[torch.Tensor],
    scales: Sequence[float],
    rates: Sequence[float],
    target: float,
    default: float = 2.0**-6,
    n: int | None = None,
) -> float:
    """A starting scale for :func:`robustness` from measurements with other noise of known
    equivalent scales (e.g. ``b``-bit quantization, a uniform step of ``1 / (2^b - 1)`` of the
    range): the top-1 prediction (:func:`predicted_flips`) of the ``m``-th flip, ``m`` the
    disagreements ``target`` needs among ``n`` inputs (default: the rows of ``reference``;
    fewer rows - the lowest-margin ones - predict the first flips of all ``n``); ``default``
    without the top-1 rule or a finite prediction."""
    flips, _ = predicted_flips(reference, outputs, scales, rates, target)
    if flips is None:
        return default
    m = needed_disagreements(target, reference.shape[0] if n is None else n)
    if not 1 <= m <= reference.shape[0]:
        return default
    guess = float(flips.kthvalue(m).values)
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
    end = _search(measure, target, n, reference, start, tol, max_passes)
    if end.kind == "bracket":
        assert end.lo is not None and end.hi is not None
        return _log_interpolate(end.lo[:2], end.hi[:2], end.crossing(reference, n, target))
    return end.energy()


class _End:
    """Where a search stopped: ``kind`` ``"bracket"`` (``lo``, ``hi`` within the tolerance),
    ``"low"`` (``hi`` at the range's low end), ``"never"`` (``lo`` at its high end, no
    ``hi``) or ``"passes"`` (out of passes). ``lo``, ``hi``: ``(scale, energy, outputs)``."""

    def __init__(self, kind, lo, hi):
        self.kind, self.lo, self.hi = kind, lo, hi

    def energy(self) -> float:
        """The energy an end other than a bracket returns."""
        if self.kind == "low" or (self.kind == "passes" and self.hi is not None):
            return self.hi[1]
        return self.lo[1] if self.lo is not None else 0.0

    def crossing(self, reference, n, target) -> float:
        """The predicted crossing inside a bracket: the top-1 prediction from ``lo``,
        clamped to the bracket; else its geometric middle."""
        lo, hi = self.lo, self.hi
        m = needed_disagreements(target, n)
        if reference is not None and 1 <= m <= reference.shape[0]:
            flips = top1_flip_scales(reference, lo[2], lo[0])
            return min(max(float(flips.kthvalue(m).values), lo[0]), hi[0])
        return math.sqrt(lo[0] * hi[0])


def _search(measure, target, n, reference, start, tol, max_passes) -> _End:
    lo_bound, hi_bound = 2.0**LOG2_LO, 2.0**LOG2_HI
    lo = hi = None  # (scale, energy, outputs): rate < target / rate >= target
    m = needed_disagreements(target, n)
    predict = reference is not None and 1 <= m <= min(n, reference.shape[0])
    latest: tuple[float, torch.Tensor] = (0.0, torch.empty(0))
    scales = [min(max(start, lo_bound), hi_bound)]
    for step in range(max_passes):
        for s, (energy, rate, out) in zip(scales, measure(scales)):
            if rate >= target:
                if hi is None or s < hi[0]:
                    hi = (s, energy, out)
            elif lo is None or s > lo[0]:
                lo = (s, energy, out)
            latest = (s, out)
        if hi is not None and hi[0] <= lo_bound:
            return _End("low", lo, hi)
        if hi is not None and lo is not None and hi[0] <= lo[0] * 2.0**tol:
            return _End("bracket", lo, hi)
        if hi is None and lo is not None and lo[0] >= hi_bound:
            return _End("never", lo, hi)  # never reaches the target rate inside the range
        scales = []
        if predict and (step < 3 or step % 2 == 1):
            flips = top1_flip_scales(reference, latest[1], latest[0])
            scales = _around(float(flips.kthvalue(m).values), lo, hi, lo_bound, hi_bound, tol)
        if not scales:  # bisection in log scale
            if hi is None:
                scales = [hi_bound]
            elif lo is None:
                scales = [lo_bound]
            else:
                scales = [math.sqrt(lo[0] * hi[0])]
    return _End("passes", lo, hi)


#: ``measure(scales, part)``: per scale ``(energy summed over the rows, disagreements,
#: outputs)`` on the rows of ``part`` - ``"subset"`` or ``"rest"`` (see
#: :func:`robustness_on_subset`).
PartMeasure = Callable[[Sequence[float], str], list[tuple[float, int, torch.Tensor]]]


def robustness_on_subset(
    measure: PartMeasure,
    full_measure: Measure,
    target: float,
    n: int,
    subset: torch.Tensor,
    rest: torch.Tensor,
    *,
    reference: torch.Tensor,
    start: float = 2.0**-6,
    tol: float = TOLERANCE_LOG2,
    max_passes: int = 16,
    rest_sample: tuple[torch.Tensor, float] | None = None,
) -> tuple[float, bool]:
    """:func:`robustness` with the top-1 rule, searched on a subset of the inputs and
    verified once on all of them. Returns ``(t, verified)``. ``rest_sample``:
    ``(positions, weight)`` - the energies are then the stratified estimate of the mean
    over all inputs from the whole subset and the rest's rows at ``positions`` (each
    counted ``weight`` times), the rows the noise curves were measured on.

    ``subset``, ``rest``: the row indices (a partition of ``range(n)``) that
    ``measure(scales, "subset")`` / ``measure(scales, "rest")`` evaluate, in that order
    (the subset: the inputs of lowest top-1 margin); ``full_measure``: :data:`Measure` on
    all rows, for the fallback. A subset's disagreements never exceed those of all inputs,
    so the search on the subset (which counts the disagreements the target needs among all
    ``n``) ends with a valid upper end ``hi``. The rest is then measured once, at the
    bracket's lower end ``lo``: if ``lo`` stays below the target on all inputs, the bracket
    is valid for all inputs and ``t`` is computed as :func:`robustness` computes it from a
    bracket - all inputs' energy at ``lo``, the crossing predicted from all inputs' outputs
    at ``lo`` - except that the rest's energy at ``hi`` is extrapolated from its energy at
    ``lo`` along the subset's log-log slope between the ends (exact when both grow alike,
    e.g. as ``s^2`` where the outputs follow the noise linearly; otherwise off by at most
    the slopes' difference times the bracket's width, ``2^tol``, in the interpolated
    energy). Otherwise (an input outside the subset flips below the subset's crossing) the
    search is repeated on all inputs from the same start: ``verified`` is then ``False``
    and ``t`` is :func:`robustness`'s."""

    def on_all_inputs() -> float:
        return robustness(
            full_measure,
            target,
            n,
            reference=reference,
            start=start,
            tol=tol,
            max_passes=max_passes,
        )

    m = needed_disagreements(target, n)
    if not 1 <= m <= subset.numel() or subset.numel() + rest.numel() != n or rest.numel() == 0:
        return on_all_inputs(), True
    ref_s, ref_r = reference[subset], reference[rest]
    seen: dict[float, tuple[float, int]] = {}

    def on_subset(scales):
        res = measure(scales, "subset")
        for s, (e_sum, count, _) in zip(scales, res):
            seen[s] = (e_sum, count)
        return [(e_sum, count / n, out) for e_sum, count, out in res]

    end = _search(on_subset, target, n, ref_s, start, tol, max_passes)
    lo, hi = end.lo, end.hi
    # The rest at one end only - lo, or hi without lo: lo's count decides validity and its
    # outputs the crossing.
    one = lo if lo is not None else hi
    ((e_rest, c_rest, out_rest),) = measure([one[0]], "rest")
    e_one, c_one = seen[one[0]]
    if lo is not None and c_one + c_rest >= m:  # an input outside the subset flips below lo
        return on_all_inputs(), False
    one_all = (one[0], (e_one + e_rest) / n, torch.cat([one[2], out_rest]))
    if rest_sample is not None:  # the rest's energy from its sampled rows, weighted
        positions, weight = rest_sample
        diff = (out_rest.index_select(0, positions) - ref_r.index_select(0, positions)).double()
        e_rest = weight * float((diff**2).sum())
        one_all = (one[0], (e_one + e_rest) / n, one_all[2])
    lo_all = one_all if lo is not None else None
    hi_all = one_all if lo is None else None
    if lo is not None and hi is not None:
        hi_all = (hi[0], (seen[hi[0]][0] + _rest_energy_at(hi[0], lo[0], e_rest, seen)) / n, None)
    on_all = _End(end.kind, lo_all, hi_all)
    if end.kind == "bracket":
        cross = on_all.crossing(torch.cat([ref_s, ref_r]), n, target)
        return _log_interpolate(on_all.lo[:2], on_all.hi[:2], cross), True
    return on_all.energy(), True


def _rest_energy_at(scale: float, lo: float, e_rest: float, seen) -> float:
    """The rest's energy sum at ``scale`` from its sum ``e_rest`` at ``lo``, along the
    subset's log-log slope between the two scales (2, that of noise the outputs follow
    linearly, when a subset energy is 0)."""
    e_lo, e_hi = seen[lo][0], seen[scale][0]
    slope = math.log(e_hi / e_lo) / math.log(scale / lo) if e_lo > 0 and e_hi > 0 else 2.0
    return e_rest * (scale / lo) ** slope


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
