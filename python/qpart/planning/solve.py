"""Widths at one partition point: the allocation problem of ``p`` (closed form + integer
refinement of :mod:`qpart.planning.allocation`), the :class:`Plan` with every predicted term,
and the direct search over all points (:func:`plan_request`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.costs import (
    ChannelState,
    CostBreakdown,
    DeviceProfile,
    ObjectiveWeights,
    ServerProfile,
    cost_coefficients,
    evaluate_costs,
)
from ..core.profile import ModelProfile
from .allocation import InfeasibleError, allocate_bits
from .noise_model import Calibration

#: Time cap (seconds) of the exact branch and bound per allocation problem.
EXACT_TIME_LIMIT_S = 0.05


@dataclass(frozen=True)
class Plan:
    """A partition point and bit widths with every predicted term.

    ``bits``: widths of the device layers ``layer_names`` (``1..p``); ``activation_bits``:
    width of the cut activation (``None`` at ``p = L``); payloads are exact bytes (overheads
    included); ``memory_bytes``: weights plus peak float activations on the device;
    ``predicted_noise``: ``D = sum p e^(-alpha b)/t``; ``predicted_loss``: the accuracy loss
    the calibration maps ``D`` to; ``costs``: the objective terms for the request;
    ``selection_loss``: the disagreement rate on the *selection* inputs when the widths were
    refined by measurement there (:mod:`qpart.planning.refinement`; optimistic, since the
    widths were chosen on those inputs), else ``None``.

    Held-out acceptance (:mod:`qpart.planning.heldout`; ``None`` when the table was built
    without acceptance data): ``measured_loss`` is the disagreement rate with the float
    model on ``acceptance_n`` acceptance inputs the widths were never chosen on,
    ``loss_upper_bound`` its one-sided Clopper-Pearson upper bound at ``confidence``, and
    ``measured_accuracy_loss`` the measured accuracy loss there when labels were given.
    ``allocation_gap``: for the noise model's widths, ``0`` when they are its proven integer
    optimum (branch and bound), else the greedy's relative gap to the continuous lower
    bound (the time cap was hit); ``None`` when unknown (e.g. measured refinement).
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
    selection_loss: float | None = None
    measured_loss: float | None = None
    acceptance_n: int | None = None
    loss_upper_bound: float | None = None
    confidence: float | None = None
    measured_accuracy_loss: float | None = None
    allocation_gap: float | None = None

    @property
    def accepted(self) -> bool:
        """Whether the plan carries a held-out acceptance measurement."""
        return self.loss_upper_bound is not None


def default_bit_costs(
    prof: ModelProfile,
    device: DeviceProfile | None = None,
    server: ServerProfile | None = None,
    channel: ChannelState | None = None,
    weights: ObjectiveWeights | None = None,
) -> np.ndarray:
    """Cost coefficients (per MAC / per bit) of a request, Table II defaults."""
    return cost_coefficients(
        device or DeviceProfile(),
        server or ServerProfile(),
        channel or ChannelState(),
        weights or ObjectiveWeights(),
    )


def allocation_problem(
    prof: ModelProfile, calib: Calibration, p: int, coefficients: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(g, alpha, c)`` of the width allocation at partition point ``p``: per variable (layers
    ``1..p``, then the cut activation when ``p < L``) the normalised noise ``g = p/t``, the
    decay ``alpha`` and the cost per bit (``W_i * coefficients[2]``, ``A_p * coefficients[3]``)."""
    g = [calib.layers[i].g for i in range(p)]
    alpha = [calib.layers[i].alpha for i in range(p)]
    c = [layer.weight_count * coefficients[2] for layer in prof.layers[:p]]
    if p < prof.num_layers:
        act = calib.activations[p]
        g.append(act.g)
        alpha.append(act.alpha)
        c.append(prof.activation_elems(p) * coefficients[3])
    return np.array(g, np.float64), np.array(alpha, np.float64), np.array(c, np.float64)


def solve_partition(
    prof: ModelProfile,
    calib: Calibration,
    p: int,
    budget: float,
    coefficients: np.ndarray,
    memory_bytes: float | None = None,
    *,
    method: str = "auto",
    time_limit_s: float = EXACT_TIME_LIMIT_S,
):
    """Integer widths for partition point ``p`` under noise budget ``C = budget``.

    Variables: layers ``1..p`` (cost per bit ``W_i * coefficients[2]``) and the cut
    activation (``A_p * coefficients[3]``). ``memory_bytes`` bounds weights + peak
    activations (``ceil`` rounding of packed rows is covered by one byte per row).
    ``method``: see :func:`qpart.planning.allocation.allocate_bits` - by default
    ``"auto"``, the integer optimum of the model by branch and bound when it finishes within
    ``time_limit_s`` per problem, else the greedy widths (``allocation.optimal`` /
    ``allocation.gap`` say which). Returns ``(bits, activation_bits, allocation)``; raises
    :class:`InfeasibleError`.
    """
    prof.check_point(p)
    layers = prof.layers[:p]
    g, alpha, c = allocation_problem(prof, calib, p, coefficients)
    has_act = p < prof.num_layers
    mem = [layer.weight_count / 8.0 for layer in layers] + ([0.0] if has_act else [])
    mem_budget = None
    if memory_bytes is not None and math.isfinite(memory_bytes):
        const = prof.device_memory_bytes(p, [0] * p) + sum(layer.rows for layer in layers)
        mem_budget = memory_bytes - const
        if mem_budget < 0:
            raise InfeasibleError(
                "memory",
                f"device memory {memory_bytes:.0f} B is below the "
                f"fixed footprint {const} B of partition point {p}",
            )
    alloc = allocate_bits(
        g,
        alpha,
        c,
        budget,
        memory_per_bit=mem if mem_budget is not None else None,
        memory_budget=mem_budget,
        method=method,
        time_limit_s=time_limit_s,
    )
    bits = [int(b) for b in alloc.bits[:p]]
    b_a = int(alloc.bits[p]) if has_act else None
    return bits, b_a, alloc


def predicted_noise(
    prof: ModelProfile, calib: Calibration, p: int, bits: Sequence[int], b_a: int | None
) -> float:
    """The noise model's ``D = sum_i p_i e^(-alpha_i b_i) / t_i`` of a configuration."""
    d = sum(calib.layers[i].g * math.exp(-calib.layers[i].alpha * b) for i, b in enumerate(bits))
    if b_a is not None and p < prof.num_layers:
        act = calib.activations[p]
        d += act.g * math.exp(-act.alpha * b_a)
    return float(d)


def make_plan(
    prof: ModelProfile,
    calib: Calibration,
    p: int,
    bits: Sequence[int],
    b_a: int | None,
    accuracy_budget: float,
    noise: float,
    device=None,
    server=None,
    channel=None,
    weights=None,
    selection_loss: float | None = None,
    allocation_gap: float | None = None,
) -> Plan:
    """A :class:`Plan` with exact payloads and (for the given request) the cost terms."""
    w_bytes = prof.weight_payload_bytes(p, bits)
    a_bytes = prof.activation_payload_bytes(p, b_a)
    costs = evaluate_costs(
        prof.device_macs(p),
        prof.server_macs(p),
        8 * w_bytes,
        8 * a_bytes,
        device or DeviceProfile(),
        server or ServerProfile(),
        channel or ChannelState(),
        weights or ObjectiveWeights(),
    )
    return Plan(
        p,
        tuple(layer.name for layer in prof.layers[:p]),
        tuple(int(b) for b in bits),
        b_a,
        accuracy_budget,
        noise,
        calib.predicted_loss(noise),
        w_bytes,
        a_bytes,
        prof.device_memory_bytes(p, bits),
        prof.device_macs(p),
        prof.server_macs(p),
        costs,
        selection_loss,
        allocation_gap=allocation_gap,
    )


def plan_request(
    prof: ModelProfile,
    calib: Calibration,
    accuracy_budget: float,
    *,
    device: DeviceProfile | None = None,
    server: ServerProfile | None = None,
    channel: ChannelState | None = None,
    weights: ObjectiveWeights | None = None,
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
        plan = make_plan(
            prof,
            calib,
            p,
            bits,
            b_a,
            accuracy_budget,
            alloc.noise,
            device,
            server,
            channel,
            weights,
            allocation_gap=alloc.gap,
        )
        if best is None or plan.costs.objective < best.costs.objective:
            best = plan
    if best is None:
        which = "memory" if failures.get("memory") else "accuracy"
        raise InfeasibleError(
            which,
            f"no partition point meets the {which} constraint "
            f"(accuracy budget {accuracy_budget:.3%}, device memory "
            f"{device.memory_bytes} B); failures: {failures}",
        )
    return best
