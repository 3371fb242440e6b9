"""Partition search, the offline pattern table (paper Algorithm 1) and the online lookup
(Algorithm 2).

A *pattern* is a partition point ``p``, widths for layers ``1..p`` and for the cut
activation, computed offline for one accuracy level. The objective of any request is linear
in four per-pattern features ``(M_dev, M_srv, D_w bits, D_a bits)`` (see
:func:`qpart.costs.cost_coefficients`), so the table stores a ``(K, 4)`` feature matrix and a
request is one matrix-vector product, two masks and an ``argmin`` (microseconds).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .allocation import InfeasibleError, allocate_bits
from .calibration import Calibration
from .costs import (ChannelState, CostBreakdown, DeviceProfile, ObjectiveWeights,
                    ServerProfile, cost_coefficients, evaluate_costs)
from .profile import ModelProfile

if TYPE_CHECKING:
    from .refinement import MeasuredRefiner

TABLE_FORMAT = "qpart-pattern-table"
TABLE_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """A partition point and bit widths with every predicted term.

    ``bits``: widths of the device layers ``layer_names`` (``1..p``); ``activation_bits``:
    width of the cut activation (``None`` at ``p = L``); payloads are exact bytes (overheads
    included); ``memory_bytes``: weights plus peak float activations on the device;
    ``predicted_noise``: ``D = sum p e^(-alpha b)/t``; ``predicted_loss``: the accuracy loss
    the calibration maps ``D`` to; ``costs``: the objective terms for the request;
    ``measured_flip_rate``: the flip rate on the acceptance inputs when the widths were
    refined by measurement (:mod:`qpart.refinement`), else ``None``.
    """

    partition_point: int
    layer_names: tuple[str, ...]
    bits: tuple[int, ...]
    activation_bits: int | None
    accuracy_budget: float
    predicted_noise: float
    predicted_loss: float
    weight_payload_bytes: int
    activation_payload_bytes: int
    memory_bytes: int
    device_macs: int
    server_macs: int
    costs: CostBreakdown | None = None
    measured_flip_rate: float | None = None


def default_bit_costs(
    prof: ModelProfile, device: DeviceProfile | None = None, server: ServerProfile | None = None,
    channel: ChannelState | None = None, weights: ObjectiveWeights | None = None,
) -> np.ndarray:
    """Cost coefficients (per MAC / per bit) of a request, Table II defaults."""
    return cost_coefficients(device or DeviceProfile(), server or ServerProfile(),
                             channel or ChannelState(), weights or ObjectiveWeights())


def solve_partition(
    prof: ModelProfile, calib: Calibration, p: int, budget: float, coefficients: np.ndarray,
    memory_bytes: float | None = None,
):
    """Integer widths for partition point ``p`` under noise budget ``C = budget``.

    Variables: layers ``1..p`` (cost per bit ``W_i * coefficients[2]``) and the cut
    activation (``A_p * coefficients[3]``). ``memory_bytes`` bounds weights + peak
    activations (``ceil`` rounding of packed rows is covered by one byte per row).
    Returns ``(bits, activation_bits, allocation)``; raises :class:`InfeasibleError`.
    """
    prof.check_point(p)
    layers = prof.layers[:p]
    g = [calib.layers[i].g for i in range(p)]
    alpha = [calib.layers[i].alpha for i in range(p)]
    c = [layer.weight_count * coefficients[2] for layer in layers]
    mem = [layer.weight_count / 8.0 for layer in layers]
    has_act = p < prof.num_layers
    if has_act:
        act = calib.activations[p]
        g.append(act.g)
        alpha.append(act.alpha)
        c.append(prof.activation_elems(p) * coefficients[3])
        mem.append(0.0)
    mem_budget = None
    if memory_bytes is not None and math.isfinite(memory_bytes):
        const = prof.device_memory_bytes(p, [0] * p) + sum(layer.rows for layer in layers)
        mem_budget = memory_bytes - const
        if mem_budget < 0:
            raise InfeasibleError("memory", f"device memory {memory_bytes:.0f} B is below the "
                                            f"fixed footprint {const} B of partition point {p}")
    alloc = allocate_bits(g, alpha, c, budget, memory_per_bit=mem if mem_budget is not None else None,
                          memory_budget=mem_budget)
    bits = [int(b) for b in alloc.bits[:p]]
    b_a = int(alloc.bits[p]) if has_act else None
    return bits, b_a, alloc


def predicted_noise(prof: ModelProfile, calib: Calibration, p: int, bits: Sequence[int],
                    b_a: int | None) -> float:
    """The noise model's ``D = sum_i p_i e^(-alpha_i b_i) / t_i`` of a configuration."""
    d = sum(calib.layers[i].g * math.exp(-calib.layers[i].alpha * b) for i, b in enumerate(bits))
    if b_a is not None and p < prof.num_layers:
        act = calib.activations[p]
        d += act.g * math.exp(-act.alpha * b_a)
    return float(d)


def make_plan(
    prof: ModelProfile, calib: Calibration, p: int, bits: Sequence[int], b_a: int | None,
    accuracy_budget: float, noise: float, device=None, server=None, channel=None, weights=None,
    measured_flip_rate: float | None = None,
) -> Plan:
    """A :class:`Plan` with exact payloads and (for the given request) the cost terms."""
    w_bytes = prof.weight_payload_bytes(p, bits)
    a_bytes = prof.activation_payload_bytes(p, b_a)
    costs = evaluate_costs(prof.device_macs(p), prof.server_macs(p), 8 * w_bytes, 8 * a_bytes,
                           device or DeviceProfile(), server or ServerProfile(),
                           channel or ChannelState(), weights or ObjectiveWeights())
    return Plan(p, tuple(layer.name for layer in prof.layers[:p]), tuple(int(b) for b in bits),
                b_a, accuracy_budget, noise, calib.predicted_loss(noise), w_bytes, a_bytes,
                prof.device_memory_bytes(p, bits), prof.device_macs(p), prof.server_macs(p), costs,
                measured_flip_rate)


def plan_request(
    prof: ModelProfile, calib: Calibration, accuracy_budget: float, *,
    device: DeviceProfile | None = None, server: ServerProfile | None = None,
    channel: ChannelState | None = None, weights: ObjectiveWeights | None = None,
    points: Sequence[int] | None = None,
) -> Plan:
    """Direct optimisation (no table): solves the widths at every valid partition point for
    this request's costs and memory and returns the cheapest plan. Raises
    :class:`InfeasibleError` naming the constraint when no point is feasible."""
    device, server = device or DeviceProfile(), server or ServerProfile()
    channel, weights = channel or ChannelState(), weights or ObjectiveWeights()
    coef = cost_coefficients(device, server, channel, weights)
    budget = calib.budget(accuracy_budget)
    best: Plan | None = None
    failures: dict[str, int] = {}
    for p in points if points is not None else prof.valid_points:
        try:
            bits, b_a, alloc = solve_partition(prof, calib, p, budget, coef, device.memory_bytes)
        except InfeasibleError as exc:
            failures[exc.constraint] = failures.get(exc.constraint, 0) + 1
            continue
        plan = make_plan(prof, calib, p, bits, b_a, accuracy_budget, alloc.noise, device,
                         server, channel, weights)
        if best is None or plan.costs.objective < best.costs.objective:
            best = plan
    if best is None:
        which = "memory" if failures.get("memory") else "accuracy"
        raise InfeasibleError(which, f"no partition point meets the {which} constraint "
                                     f"(accuracy budget {accuracy_budget:.3%}, device memory "
                                     f"{device.memory_bytes} B); failures: {failures}")
    return best


@dataclass(frozen=True)
class Request:
    """An online request: accuracy budget (fraction), device, channel and weights.

    ``held_segment``: ``(partition_point, bits)`` of a device segment the device already
    holds; patterns with that segment need no weight download (``D_w`` counts as 0)."""

    accuracy_budget: float
    device: DeviceProfile = DeviceProfile()
    channel: ChannelState = ChannelState()
    weights: ObjectiveWeights = ObjectiveWeights()
    server: ServerProfile = ServerProfile()
    held_segment: tuple[int, tuple[int, ...]] | None = None


class PatternTable:
    """Offline patterns (Algorithm 1) with a vectorised online lookup (Algorithm 2)."""

    def __init__(self, prof: ModelProfile, calib: Calibration, patterns: list[Plan]):
        self.profile = prof
        self.calibration = calib
        self.patterns = list(patterns)
        self.features = np.array([[pl.device_macs, pl.server_macs, 8 * pl.weight_payload_bytes,
                                   8 * pl.activation_payload_bytes] for pl in self.patterns],
                                 dtype=np.float64).reshape(-1, 4)
        self.levels = np.array([pl.accuracy_budget for pl in self.patterns], dtype=np.float64)
        self.memory = np.array([pl.memory_bytes for pl in self.patterns], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.patterns)

    @classmethod
    def build(
        cls, prof: ModelProfile, calib: Calibration, levels: Sequence[float] | None = None, *,
        device: DeviceProfile | None = None, server: ServerProfile | None = None,
        channel: ChannelState | None = None, weights: ObjectiveWeights | None = None,
        progress: bool = False, refiner: "MeasuredRefiner | None" = None,
    ) -> "PatternTable":
        """Algorithm 1: one pattern per (valid partition point, accuracy level), widths
        optimised for the given (default: Table II) request. Levels default to the
        calibrated ones; infeasible combinations are skipped.

        ``refiner``: a :class:`qpart.refinement.MeasuredRefiner` - each pattern's widths are
        then refined by measurement on its acceptance inputs (docs/PLANNING.md §4.3); a
        combination the noise model finds infeasible is kept if a measured candidate is
        accepted. Without it the widths are the model's (closed form + integer greedy)."""
        from tqdm.auto import tqdm

        levels = sorted(calib.budgets) if levels is None else sorted(levels)
        coef = default_bit_costs(prof, device, server, channel, weights)
        patterns: list[Plan] = []
        for level in tqdm(levels, desc="pattern table", disable=not progress, leave=False):
            budget = calib.budget(level)
            for p in prof.valid_points:
                try:
                    bits, b_a, _ = solve_partition(prof, calib, p, budget, coef)
                except InfeasibleError:
                    if refiner is None:
                        continue
                    bits = b_a = None
                flips = None
                if refiner is not None:
                    ref = refiner.refine(calib, p, float(level), coef, bits, b_a)
                    if not ref.accepted and bits is None:
                        continue
                    if ref.accepted:
                        bits, b_a, flips = ref.bits, ref.activation_bits, ref.flip_rate
                noise = predicted_noise(prof, calib, p, bits, b_a)
                patterns.append(make_plan(prof, calib, p, bits, b_a, float(level), noise,
                                          measured_flip_rate=flips))
        return cls(prof, calib, patterns)

    def lookup(self, request: Request) -> Plan:
        """Algorithm 2: the cheapest stored pattern meeting the request's accuracy budget and
        device memory, with its cost terms. Raises :class:`InfeasibleError` ("accuracy" if
        no pattern is accurate enough, "memory" if the accurate ones do not fit)."""
        coef = cost_coefficients(request.device, request.server, request.channel,
                                 request.weights)
        held = None
        if request.held_segment is not None:
            hp, hb = request.held_segment
            held = np.array([pl.partition_point == hp and pl.bits == tuple(hb)
                             for pl in self.patterns], dtype=bool)
        idx = self.lookup_index(coef, request.accuracy_budget, request.device.memory_bytes, held)
        pl = self.patterns[idx]
        download = 0 if held is not None and held[idx] else pl.weight_payload_bytes
        costs = evaluate_costs(pl.device_macs, pl.server_macs, 8 * download,
                               8 * pl.activation_payload_bytes, request.device, request.server,
                               request.channel, request.weights)
        return Plan(**{**{k: getattr(pl, k) for k in Plan.__dataclass_fields__}, "costs": costs})

    def lookup_index(self, coefficients: np.ndarray, accuracy_budget: float,
                     memory_bytes: float = math.inf, held: np.ndarray | None = None) -> int:
        """The hot path: index of the cheapest feasible pattern for cost ``coefficients``.
        ``held``: optional boolean mask of patterns whose segment the device already holds
        (their weight-download term is dropped)."""
        accurate = self.levels <= accuracy_budget * (1 + 1e-9)
        ok = accurate & (self.memory <= memory_bytes)
        if not ok.any():
            if not accurate.any():
                lo = float(self.levels.min()) if self.levels.size else float("nan")
                raise InfeasibleError("accuracy", f"accuracy budget {accuracy_budget:.3%} is "
                                                  f"tighter than every stored pattern (smallest "
                                                  f"level {lo:.3%})")
            need = float(self.memory[accurate].min())
            raise InfeasibleError("memory", f"device memory {memory_bytes:.0f} B is below every "
                                            f"pattern meeting the accuracy budget (smallest "
                                            f"needs {need:.0f} B)")
        scores = self.features @ coefficients
        if held is not None:
            scores[held] -= self.features[held, 2] * coefficients[2]
        scores[~ok] = np.inf
        return int(np.argmin(scores))

    def to_dict(self) -> dict:
        """JSON document (format in docs/PLANNING.md)."""
        pats = []
        for pl in self.patterns:
            d = asdict(pl)
            d.pop("costs")
            d["layer_names"] = list(pl.layer_names)
            d["bits"] = list(pl.bits)
            pats.append(d)
        return {"format": TABLE_FORMAT, "version": TABLE_VERSION,
                "profile": self.profile.to_dict(), "calibration": self.calibration.to_dict(),
                "patterns": pats}

    @classmethod
    def from_dict(cls, d: dict, prof: ModelProfile | None = None) -> "PatternTable":
        """Inverse of :meth:`to_dict`; pass ``prof`` to keep a traced graph for validation."""
        if d.get("format") != TABLE_FORMAT or d.get("version") != TABLE_VERSION:
            raise ValueError(f"not a {TABLE_FORMAT} v{TABLE_VERSION} document")
        stored = ModelProfile.from_dict(d["profile"])
        if prof is not None and prof.to_dict() != stored.to_dict():
            raise ValueError("the given profile does not match the table's")
        patterns = [Plan(**{**p, "layer_names": tuple(p["layer_names"]),
                            "bits": tuple(p["bits"])}) for p in d["patterns"]]
        return cls(prof or stored, Calibration.from_dict(d["calibration"]), patterns)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the table as JSON."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: str | os.PathLike[str], prof: ModelProfile | None = None) -> "PatternTable":
        """Reads a table written by :meth:`save`."""
        with open(path) as f:
            return cls.from_dict(json.load(f), prof)
