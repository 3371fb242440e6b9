"""Measured integer refinement of a pattern's widths (docs/PLANNING.md §4.3).

The closed form (paper Eqs. 23-40) and :func:`qpart.planning.allocation.allocate_bits` choose widths
from the calibrated *additive noise model*, which is conservative by construction (upper
envelopes, a closed loop that shrinks ``C(a)`` until the worst partition point passes). This
module then works with *measurements* on the *selection* inputs (held-out digits the model
was not trained on, e.g. the calibration digits). Because the search keeps the cheapest of
many tries that pass on these inputs, their measured loss is optimistic; the table therefore
measures every refined pattern once more on a separate acceptance split
(:mod:`qpart.planning.heldout`) and serves it only by that held-out upper bound.

**Selection rule** (:mod:`qpart.planning.acceptance`). A configuration is selectable at
accuracy level ``a`` when its measured disagreement rate against the float model on the
selection inputs is ``<= safety * a`` (the calibration's ``safety``, 0.5 by default).

**Refinement** (:meth:`MeasuredRefiner.refine`), for partition point ``p`` and level ``a``:

1. *Start*: the candidates are the model's integer solution, the model's solutions for
   looser budgets ``C(a) * 2^(k/2)``, ``k = 1..16`` (its cost/noise curve: which widths to
   lower first), and every uniform width ``b = 1..8`` (all device layers and the cut
   activation at ``b``). The accepted candidate
   with the lowest objective (exact payload bytes under the table's cost coefficients) is the
   start. QPART's search space therefore contains the uniform baseline's configuration, and
   the result is never more expensive than it under the same rule and data.
2. *Descent*: repeatedly lower one width by one bit - trying the variables in order of
   objective saving per unit of *predicted* noise added (the noise model only orders the
   trials) - and keep the first change whose measured flip rate is still accepted.
3. *Exchange*: lower one width and raise another by one bit when that lowers the objective
   and stays accepted (largest saving first); after each exchange the descent runs again.

If no candidate is accepted, the candidate with the lowest measured flip rate is returned
(``accepted`` is then ``False``). Deterministic: the quantizer and the inputs are fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.metrics import AgreementSpec
from ..core.profile import ModelProfile
from .acceptance import AcceptanceRule, within
from .allocation import MAX_BITS, MIN_BITS, InfeasibleError
from .noise_model import Calibration
from .probe import Probe, quantized_weight
from .solve import allocation_problem, solve_partition


@dataclass(frozen=True)
class Refined:
    """Result of :meth:`MeasuredRefiner.refine`: widths of layers ``1..p``, activation
    width (``None`` at ``p = L``), the measured flip rate on the acceptance inputs, whether
    it meets the rule, where the search started (``"model"`` or ``"uniform b"``) and how
    many configurations were measured."""

    bits: tuple[int, ...]
    activation_bits: int | None
    flip_rate: float
    accepted: bool
    start: str
    evaluations: int


class MeasuredRefiner:
    """Measures configurations on acceptance inputs ``x`` (no labels: the float model's own
    predictions are the reference) and refines pattern widths (module docstring).

    ``safety``: the rule's factor (``None``: the calibration's own ``safety``);
    ``agreement``: what counts as the same answer (default top-1; the "flip rate" is
    that metric's disagreement rate); ``act_int8``: measure with the device layers on int8
    activations (:class:`~qpart.planning.probe.Probe`).
    Measurements are cached per configuration; dequantized weights per (layer, width).
    """

    def __init__(
        self,
        prof: ModelProfile,
        x: torch.Tensor,
        safety: float | None = None,
        *,
        lo: int = MIN_BITS,
        hi: int = MAX_BITS,
        max_exchanges: int = 8,
        agreement: AgreementSpec = None,
        act_int8: bool = False,
    ):
        self.prof, self.safety, self.lo, self.hi = prof, safety, lo, hi
        self.max_exchanges = max_exchanges
        self.probe = Probe(prof, x, agreement, act_int8=act_int8)
        self.n_samples = int(x.shape[0])
        self._weights: dict[tuple[str, int], torch.Tensor] = {}
        self._flips: dict[tuple, float] = {}

    # -- measuring ---------------------------------------------------------------------
    def rule(self, calib: Calibration) -> AcceptanceRule:
        """The acceptance rule: this refiner's ``safety``, else the calibration's."""
        return AcceptanceRule(calib.safety if self.safety is None else self.safety)

    def limit(self, calib: Calibration, level: float) -> float:
        """Largest accepted flip rate at ``level``: ``safety * level``."""
        return self.rule(calib).limit(level)

    def flip_rate(self, p: int, bits: Sequence[int], b_a: int | None) -> float:
        """Measured flip rate of layers ``1..p`` at ``bits`` (real quantizer, dequantized)
        and the cut activation at ``b_a`` (``None``: float)."""
        key = (p, tuple(int(b) for b in bits), b_a)
        if key not in self._flips:
            self._flips[key] = self._measure(*key)
        return self._flips[key]

    def _weight(self, name: str, bits: int) -> torch.Tensor:
        if (name, bits) not in self._weights:
            self._weights[(name, bits)] = quantized_weight(self.probe.modules[name].weight, bits)
        return self._weights[(name, bits)]

    def _measure(self, p: int, bits: tuple[int, ...], b_a: int | None) -> float:
        return self.probe.with_plan(p, bits, b_a, self._weight)[1]

    # -- objective ---------------------------------------------------------------------
    def objective(
        self, p: int, bits: Sequence[int], b_a: int | None, coefficients: np.ndarray
    ) -> float:
        """The width-dependent part of the objective: ``coef[2] * 8 D_w + coef[3] * 8 D_a``
        (exact payload bytes; the MAC terms are fixed at a given ``p``)."""
        return float(
            coefficients[2] * 8 * self.prof.weight_payload_bytes(p, list(bits))
            + coefficients[3] * 8 * self.prof.activation_payload_bytes(p, b_a)
        )

    # -- refining ----------------------------------------------------------------------
    def model_path(
        self, calib: Calibration, p: int, level: float, coefficients: np.ndarray
    ) -> list[tuple[str, np.ndarray]]:
        """The noise model's integer solutions at ``C(a) * 2^(k/2)``, ``k = 1..16``: its
        cost/noise trade-off curve, whose points differ in *which* widths drop first."""
        out = []
        base = calib.budget(level)
        for k in range(1, 17):
            try:
                bits, b_a, _ = solve_partition(
                    self.prof, calib, p, base * 2 ** (k / 2), coefficients
                )
            except InfeasibleError:
                continue
            v = list(bits) + ([b_a] if b_a is not None else [])
            out.append((f"model x{2 ** (k / 2):.3g}", np.array(v, np.int64)))
        return out

    def refine(
        self,
        calib: Calibration,
        p: int,
        level: float,
        coefficients: np.ndarray,
        bits: Sequence[int] | None,
        b_a: int | None,
        limit: float | None = None,
    ) -> Refined:
        """Refines the model's solution ``(bits, b_a)`` (``None`` if the model found none)
        at partition point ``p`` for accuracy level ``level``; see the module docstring.
        ``limit``: the largest selectable disagreement rate (default ``safety * level``)."""
        has_act = p < self.prof.num_layers
        limit = self.limit(calib, level) if limit is None else float(limit)
        g, alpha, _ = allocation_problem(self.prof, calib, p, coefficients)
        start_evals = len(self._flips)

        def split(v: np.ndarray) -> tuple[tuple[int, ...], int | None]:
            return tuple(int(b) for b in v[:p]), (int(v[p]) if has_act else None)

        def flips(v: np.ndarray) -> float:
            return self.flip_rate(p, *split(v))

        def cost(v: np.ndarray) -> float:
            return self.objective(p, *split(v), coefficients)

        cands: list[tuple[str, np.ndarray]] = []
        if bits is not None:
            cands.append(("model", np.array(list(bits) + ([b_a] if has_act else []), np.int64)))
        n = p + int(has_act)
        cands += [(f"uniform {b}", np.full(n, b, np.int64)) for b in range(self.lo, self.hi + 1)]
        if n:
            cands += self.model_path(calib, p, level, coefficients)
        ok = [(cost(v), i, name, v) for i, (name, v) in enumerate(cands) if within(flips(v), limit)]
        if not ok:
            name, v = min(cands, key=lambda c: (flips(c[1]), cost(c[1])))
            return Refined(*split(v), flips(v), False, name, len(self._flips) - start_evals)
        _, _, start, v = min(ok, key=lambda t: (t[0], t[1]))
        v = self._descend(v, g, alpha, flips, cost, limit)
        for _ in range(self.max_exchanges):
            w = self._exchange(v, flips, cost, limit)
            if w is None:
                break
            v = self._descend(w, g, alpha, flips, cost, limit)
        return Refined(*split(v), flips(v), True, start, len(self._flips) - start_evals)

    def _descend(self, v, g, alpha, flips, cost, limit) -> np.ndarray:
        """Lowers one width at a time (best saving per predicted noise first) while the
        measured flip rate stays accepted."""
        v = v.copy()
        while True:
            base = cost(v)
            trials = []
            for i in np.flatnonzero(v > self.lo):
                w = v.copy()
                w[i] -= 1
                saving = base - cost(w)
                if saving <= 0:
                    continue
                added = g[i] * (np.exp(-alpha[i] * w[i]) - np.exp(-alpha[i] * v[i]))
                trials.append((-saving / max(added, 1e-300), int(i), w))
            for _, _, w in sorted(trials, key=lambda t: (t[0], t[1])):
                if within(flips(w), limit):
                    v = w
                    break
            else:
                return v

    def _exchange(self, v, flips, cost, limit) -> np.ndarray | None:
        """One accepted (lower ``i``, raise ``j``) exchange that lowers the objective,
        largest saving first; ``None`` if there is none."""
        base = cost(v)
        trials = []
        for i in np.flatnonzero(v > self.lo):
            for j in np.flatnonzero(v < self.hi):
                if i == j:
                    continue
                w = v.copy()
                w[i] -= 1
                w[j] += 1
                saving = base - cost(w)
                if saving > 0:
                    trials.append((-saving, int(i), int(j), w))
        for *_, w in sorted(trials, key=lambda t: t[:3]):
            if within(flips(w), limit):
                return w
        return None
