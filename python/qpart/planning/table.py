"""The offline pattern table (paper Algorithm 1) and the online lookup (Algorithm 2).

A *pattern* is a partition point ``p``, widths for layers ``1..p`` and for the cut
activation, computed offline for one accuracy level. The objective of any request is linear
in four per-pattern features ``(M_dev, M_srv, D_w bits, D_a bits)`` (see
:func:`qpart.core.costs.cost_coefficients`), so the table stores a ``(K, 4)`` feature matrix and a
request is one matrix-vector product, two masks and an ``argmin`` (microseconds).

Which patterns may serve a budget ``a``: in a table built with acceptance data
(:mod:`qpart.planning.heldout`), those whose held-out upper bound is ``<= a``; with
``Request.predicted_only`` (or in a table without acceptance data), those whose design
level is ``<= a`` (the noise model's prediction only, no measured guarantee).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..core.costs import (
    ChannelState,
    DeviceProfile,
    ObjectiveWeights,
    ServerProfile,
    cost_coefficients,
    evaluate_costs,
)
from ..core.profile import ModelProfile
from .acceptance import TOLERANCE
from .allocation import MAX_BITS, MIN_BITS, InfeasibleError
from .heldout import HeldOutAcceptance
from .noise_model import Calibration
from .refinement import MeasuredRefiner
from .solve import Plan, default_bit_costs, make_plan, predicted_noise, solve_partition

TABLE_FORMAT = "qpart-pattern-table"
TABLE_VERSION = 2
#: Selection limits (fractions of ``safety * a``) refined per (point, level) when the table
#: is built with both a refiner and held-out acceptance.
SELECTION_FACTORS = (1.0, 0.5, 0.25, 0.0)


@dataclass(frozen=True)
class Request:
    """An online request: accuracy budget (fraction), device, channel and weights.

    ``held_segment``: ``(partition_point, bits)`` of a device segment the device already
    holds; patterns with that segment need no weight download (``D_w`` counts as 0).
    ``predicted_only``: serve by the noise model's predicted level instead of the held-out
    upper bound (no measured guarantee)."""

    accuracy_budget: float
    device: DeviceProfile = DeviceProfile()
    channel: ChannelState = ChannelState()
    weights: ObjectiveWeights = ObjectiveWeights()
    server: ServerProfile = ServerProfile()
    held_segment: tuple[int, tuple[int, ...]] | None = None
    predicted_only: bool = False


class PatternTable:
    """Offline patterns (Algorithm 1) with a vectorised online lookup (Algorithm 2)."""

    def __init__(self, prof: ModelProfile, calib: Calibration, patterns: list[Plan]):
        self.profile = prof
        self.calibration = calib
        self.patterns = list(patterns)
        self.features = np.array(
            [
                [
                    pl.device_macs,
                    pl.server_macs,
                    8 * pl.weight_payload_bytes,
                    8 * pl.activation_payload_bytes,
                ]
                for pl in self.patterns
            ],
            dtype=np.float64,
        ).reshape(-1, 4)
        self.levels = np.array([pl.accuracy_budget for pl in self.patterns], dtype=np.float64)
        self.memory = np.array([pl.memory_bytes for pl in self.patterns], dtype=np.float64)
        #: held-out upper bounds (``inf`` for a pattern without acceptance measurement)
        self.bounds = np.array(
            [math.inf if pl.loss_upper_bound is None else pl.loss_upper_bound for pl in patterns],
            dtype=np.float64,
        )

    @property
    def accepted(self) -> bool:
        """Whether the table was built with held-out acceptance (its patterns carry upper
        bounds); a table without serves by predicted levels only."""
        return bool(np.isfinite(self.bounds).any())

    def __len__(self) -> int:
        return len(self.patterns)

    @classmethod
    def build(
        cls,
        prof: ModelProfile,
        calib: Calibration,
        levels: Sequence[float] | None = None,
        *,
        device: DeviceProfile | None = None,
        server: ServerProfile | None = None,
        channel: ChannelState | None = None,
        weights: ObjectiveWeights | None = None,
        progress: bool = False,
        refiner: MeasuredRefiner | None = None,
        acceptance: HeldOutAcceptance | None = None,
        selection_factors: Sequence[float] = SELECTION_FACTORS,
    ) -> PatternTable:
        """Algorithm 1: one pattern per (valid partition point, accuracy level), widths
        optimised for the given (default: Table II) request. Levels default to the
        calibrated ones; infeasible combinations are skipped.

        ``refiner``: a :class:`qpart.planning.refinement.MeasuredRefiner` - each pattern's
        widths are then refined by measurement on its acceptance inputs (docs/PLANNING.md §4.3); a
        combination the noise model finds infeasible is kept if a measured candidate is
        accepted. Without it the widths are the model's (closed form + integer greedy).

        ``acceptance``: a :class:`qpart.planning.heldout.HeldOutAcceptance` on inputs the
        widths were not chosen on (neither calibration nor refinement inputs) - every
        pattern is then measured once there and carries its measured loss, ``n`` and upper
        bound; the uniform widths ``1..8`` at every point are added as fallback patterns
        (design level: the smallest level whose ``C(a)`` their predicted noise meets, else
        ``1.0``) so a point whose refined patterns fail acceptance still has candidates.
        With both ``refiner`` and ``acceptance``, every (point, level) is also refined to the
        tighter selection limits ``f * safety * a`` for ``f`` in ``selection_factors`` (the
        first factor, ``1``, gives the pattern of the plain refinement): the selection
        split's loss is optimistic, so stricter candidates are what pass the held-out bound;
        the cheapest that passes is served. The noise model's own widths at ``C(a) *
        2^(k/2)``, ``k = -4..0`` (not pushed to the edge of the selection split) are added
        as candidates too."""
        from tqdm.auto import tqdm

        levels = sorted(calib.budgets) if levels is None else sorted(levels)
        coef = default_bit_costs(prof, device, server, channel, weights)
        patterns: list[Plan] = []
        for level in tqdm(levels, desc="pattern table", disable=not progress, leave=False):
            budget = calib.budget(level)
            for p in prof.valid_points:
                gap = None
                try:
                    bits, b_a, alloc = solve_partition(prof, calib, p, budget, coef)
                    gap = alloc.gap
                except InfeasibleError:
                    if refiner is None:
                        continue
                    bits = b_a = None
                factors = (1.0,)
                if refiner is not None and acceptance is not None:
                    factors = tuple(selection_factors) or (1.0,)
                seen = set()
                for factor in factors:
                    pb, pa, flips, pgap = bits, b_a, None, gap
                    if refiner is not None:
                        limit = factor * refiner.limit(calib, float(level))
                        ref = refiner.refine(calib, p, float(level), coef, bits, b_a, limit)
                        if not ref.accepted and bits is None:
                            continue
                        if ref.accepted:
                            pb, pa, flips = ref.bits, ref.activation_bits, ref.flip_rate
                            pgap = None
                    key = (tuple(pb), pa)
                    if key in seen:
                        continue
                    seen.add(key)
                    noise = predicted_noise(prof, calib, p, pb, pa)
                    patterns.append(
                        make_plan(
                            prof,
                            calib,
                            p,
                            pb,
                            pa,
                            float(level),
                            noise,
                            selection_loss=flips,
                            allocation_gap=pgap,
                        )
                    )
        if acceptance is not None:
            if refiner is not None:
                patterns += _model_patterns(prof, calib, levels, coef, patterns)
            patterns += _uniform_patterns(prof, calib, levels)
            patterns = [_accepted(pl, acceptance) for pl in patterns]
        return cls(prof, calib, patterns)

    def lookup(self, request: Request) -> Plan:
        """Algorithm 2: the cheapest stored pattern meeting the request's accuracy budget and
        device memory, with its cost terms. Raises :class:`InfeasibleError` ("accuracy" if
        no pattern is accurate enough, "memory" if the accurate ones do not fit)."""
        coef = cost_coefficients(request.device, request.server, request.channel, request.weights)
        held = None
        if request.held_segment is not None:
            hp, hb = request.held_segment
            held = np.array(
                [pl.partition_point == hp and pl.bits == tuple(hb) for pl in self.patterns],
                dtype=bool,
            )
        idx = self.lookup_index(
            coef,
            request.accuracy_budget,
            request.device.memory_bytes,
            held,
            predicted_only=request.predicted_only,
        )
        pl = self.patterns[idx]
        download = 0 if held is not None and held[idx] else pl.weight_payload_bytes
        costs = evaluate_costs(
            pl.device_macs,
            pl.server_macs,
            8 * download,
            8 * pl.activation_payload_bytes,
            request.device,
            request.server,
            request.channel,
            request.weights,
        )
        return Plan(**{**{k: getattr(pl, k) for k in Plan.__dataclass_fields__}, "costs": costs})

    def lookup_index(
        self,
        coefficients: np.ndarray,
        accuracy_budget: float,
        memory_bytes: float = math.inf,
        held: np.ndarray | None = None,
        *,
        predicted_only: bool = False,
    ) -> int:
        """The hot path: index of the cheapest feasible pattern for cost ``coefficients``.
        ``held``: optional boolean mask of patterns whose segment the device already holds
        (their weight-download term is dropped); ``predicted_only``: see :class:`Request`."""
        accurate = self.servable(accuracy_budget, predicted_only)
        ok = accurate & (self.memory <= memory_bytes)
        if not ok.any():
            if not accurate.any():
                by_bound = self.accepted and not predicted_only
                values = self.bounds if by_bound else self.levels
                lo = float(values.min()) if values.size else float("nan")
                what = "held-out upper bound" if by_bound else "level"
                raise InfeasibleError(
                    "accuracy",
                    f"accuracy budget {accuracy_budget:.3%} is "
                    f"tighter than every stored pattern (smallest "
                    f"{what} {lo:.3%})",
                )
            need = float(self.memory[accurate].min())
            raise InfeasibleError(
                "memory",
                f"device memory {memory_bytes:.0f} B is below every "
                f"pattern meeting the accuracy budget (smallest "
                f"needs {need:.0f} B)",
            )
        scores = self.features @ coefficients
        if held is not None:
            scores[held] -= self.features[held, 2] * coefficients[2]
        scores[~ok] = np.inf
        return int(np.argmin(scores))

    def servable(self, accuracy_budget: float, predicted_only: bool = False) -> np.ndarray:
        """Boolean mask of the patterns that may serve ``accuracy_budget``: held-out upper
        bound ``<= budget`` (accepted table), else / with ``predicted_only`` design level
        ``<= budget``."""
        if predicted_only or not self.accepted:
            return self.levels <= accuracy_budget * (1 + 1e-9)
        return self.bounds <= accuracy_budget + TOLERANCE

    def to_dict(self) -> dict:
        """JSON document (format in docs/PLANNING.md)."""
        pats = []
        for pl in self.patterns:
            d = asdict(pl)
            d.pop("costs")
            d["layer_names"] = list(pl.layer_names)
            d["bits"] = list(pl.bits)
            pats.append(d)
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "profile": self.profile.to_dict(),
            "calibration": self.calibration.to_dict(),
            "patterns": pats,
        }

    @classmethod
    def from_dict(cls, d: dict, prof: ModelProfile | None = None) -> PatternTable:
        """Inverse of :meth:`to_dict`; pass ``prof`` to keep a traced graph for validation."""
        if d.get("format") != TABLE_FORMAT or d.get("version") not in (1, TABLE_VERSION):
            raise ValueError(f"not a {TABLE_FORMAT} v1/v{TABLE_VERSION} document")
        stored = ModelProfile.from_dict(d["profile"])
        if prof is not None and prof.to_dict() != stored.to_dict():
            raise ValueError("the given profile does not match the table's")
        patterns = []
        for p in d["patterns"]:
            p = dict(p)
            if "measured_flip_rate" in p:  # v1 name of the selection measurement
                p["selection_loss"] = p.pop("measured_flip_rate")
            patterns.append(
                Plan(**{**p, "layer_names": tuple(p["layer_names"]), "bits": tuple(p["bits"])})
            )
        return cls(prof or stored, Calibration.from_dict(d["calibration"]), patterns)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the table as JSON."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: str | os.PathLike[str], prof: ModelProfile | None = None) -> PatternTable:
        """Reads a table written by :meth:`save`."""
        with open(path) as f:
            return cls.from_dict(json.load(f), prof)


def _model_patterns(
    prof: ModelProfile,
    calib: Calibration,
    levels: Sequence[float],
    coef: np.ndarray,
    existing: Sequence[Plan],
) -> list[Plan]:
    """The noise model's integer widths at ``C(a) * 2^(k/2)``, ``k = -4..0``, for every
    valid point and level (design level ``a``), skipping configurations already present."""
    have = {(pl.partition_point, pl.bits, pl.activation_bits) for pl in existing}
    out = []
    for level in levels:
        for p in prof.valid_points:
            for k in range(-4, 1):
                try:
                    bits, b_a, alloc = solve_partition(
                        prof, calib, p, calib.budget(level) * 2 ** (k / 2), coef
                    )
                except InfeasibleError:
                    continue
                key = (p, tuple(bits), b_a)
                if key in have:
                    continue
                have.add(key)
                noise = predicted_noise(prof, calib, p, bits, b_a)
                out.append(
                    make_plan(
                        prof, calib, p, bits, b_a, float(level), noise, allocation_gap=alloc.gap
                    )
                )
    return out


def _uniform_patterns(
    prof: ModelProfile, calib: Calibration, levels: Sequence[float]
) -> list[Plan]:
    """Every uniform width ``MIN_BITS..MAX_BITS`` at every valid point (device layers and
    cut activation alike); design level: the smallest level whose ``C(a)`` the predicted
    noise meets (``1.0``, i.e. no predicted promise, if none)."""
    out = []
    for p in prof.valid_points:
        for b in range(MIN_BITS, MAX_BITS + 1):
            b_a = b if p < prof.num_layers else None
            noise = predicted_noise(prof, calib, p, [b] * p, b_a)
            meets = [lv for lv in sorted(levels) if noise <= calib.budget(lv) * (1 + 1e-12)]
            level = float(meets[0]) if meets else 1.0
            out.append(make_plan(prof, calib, p, [b] * p, b_a, level, noise))
    return out


def _accepted(pl: Plan, acceptance: HeldOutAcceptance) -> Plan:
    """``pl`` with its held-out acceptance measurement."""
    m = acceptance.measure(pl.partition_point, pl.bits, pl.activation_bits)
    return replace(
        pl,
        measured_loss=m.measured_loss,
        acceptance_n=m.n,
        loss_upper_bound=m.upper_bound,
        confidence=m.confidence,
        measured_accuracy_loss=m.accuracy_loss,
    )
