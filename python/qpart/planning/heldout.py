"""Held-out acceptance (docs/PLANNING.md §4.4): every plan that enters the pattern table is
measured once on an *acceptance split* it was never chosen on, and carries its measured
disagreement rate ``measured_loss``, the sample count ``n`` and the one-sided
Clopper-Pearson upper confidence bound of its true disagreement rate. The table serves a
plan for budget ``a`` only if that bound is ``<= a``.

Because the widths were chosen on other data (the calibration / selection split), the
``n`` acceptance samples are independent of the plan, so for every plan and every
distribution the acceptance inputs are drawn from, ``P(bound < true rate) <= 1 -
confidence``.

A plan is measured with the device's numerics: its device layers' weights through the
kernels' quantizer and, with ``act_int8``, their inputs through the integer kernels' int8
quantizer (:class:`~qpart.planning.probe.Probe`, which runs the float graph on those values
and shares work between plans); ``exact_kernels=True`` runs each plan's device layers as the
``QPartLinear`` / ``QPartConv2d`` modules the device decodes instead
(:func:`qpart.core.split.quantized_split_model`; slower). The two differ only by float
rounding (tests/planning/test_int8_numerics.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.metrics import AgreementSpec, outputs
from ..core.profile import ModelProfile
from ..core.split import quantized_split_model
from .bounds import DEFAULT_CONFIDENCE, clopper_pearson_upper
from .probe import Probe, quantized_weight


@dataclass(frozen=True)
class Acceptance:
    """One plan measured on the acceptance split: ``disagreements`` of ``n`` samples
    (``measured_loss = disagreements / n``), the upper bound at ``confidence``, and, when
    labels were given, the measured accuracy loss ``float - quantized`` (else ``None``)."""

    disagreements: int
    n: int
    measured_loss: float
    upper_bound: float
    confidence: float
    accuracy_loss: float | None = None


class HeldOutAcceptance:
    """Measures configurations on acceptance inputs ``x`` (labels ``y`` optional: with
    them the true accuracy loss is reported beside the disagreement rate).

    ``confidence``: one-sided confidence of the bound (default 95 %); ``agreement``: what
    counts as the same answer as the float model (default top-1); ``act_int8``: the device
    layers run on int8 activations; ``exact_kernels``: measure with the device's modules
    (see the module docstring). Measurements are cached per configuration."""

    def __init__(
        self,
        prof: ModelProfile,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        confidence: float = DEFAULT_CONFIDENCE,
        agreement: AgreementSpec = None,
        act_int8: bool = False,
        exact_kernels: bool = False,
    ):
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if y is not None and y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} acceptance inputs but {y.shape[0]} labels")
        self.prof, self.confidence = prof, float(confidence)
        self.act_int8, self.exact_kernels = bool(act_int8), bool(exact_kernels)
        self.probe = Probe(prof, x, agreement, act_int8=act_int8)
        self.n = self.probe.n
        self.y = y
        self._float_correct = None
        if y is not None:
            self._float_correct = int((self.probe.ref.argmax(-1) == y).sum())
        self._cache: dict[tuple, Acceptance] = {}
        self._weights: dict[tuple[str, int], torch.Tensor] = {}

    def _weight(self, name: str, bits: int) -> torch.Tensor:
        if (name, bits) not in self._weights:
            self._weights[(name, bits)] = quantized_weight(self.probe.modules[name].weight, bits)
        return self._weights[(name, bits)]

    def measure(self, p: int, bits: Sequence[int], b_a: int | None) -> Acceptance:
        """The :class:`Acceptance` of layers ``1..p`` at ``bits`` and the cut at ``b_a``."""
        key = (int(p), tuple(int(b) for b in bits), None if b_a is None else int(b_a))
        if key not in self._cache:
            self._cache[key] = self._measure(*key)
        return self._cache[key]

    def plan_outputs(self, p: int, bits: Sequence[int], b_a: int | None) -> torch.Tensor:
        """Outputs of the plan on the acceptance inputs (see the module docstring)."""
        if not self.exact_kernels:
            return self.probe.plan_outputs(p, bits, b_a, self._weight)
        return outputs(quantized_split_model(self.prof, p, bits, b_a, self.act_int8), self.probe.x)

    def _measure(self, p, bits, b_a) -> Acceptance:
        return self._acceptance(self.plan_outputs(p, bits, b_a))

    def measure_model(self, model: torch.nn.Module) -> Acceptance:
        """The :class:`Acceptance` of any runnable ``model`` (input -> output) on the
        acceptance inputs, against the float model's outputs (used by the baselines)."""
        return self._acceptance(outputs(model, self.probe.x))

    def _acceptance(self, out: torch.Tensor) -> Acceptance:
        k = self.probe.agreement.disagreements(out, self.probe.ref)
        acc_loss = None
        if self.y is not None:
            correct = int((out.reshape(self.n, -1).argmax(-1) == self.y).sum())
            acc_loss = (self._float_correct - correct) / self.n
        return Acceptance(
            k,
            self.n,
            k / self.n,
            clopper_pearson_upper(k, self.n, self.confidence),
            self.confidence,
            acc_loss,
        )
