"""Validation of a plan with the real kernels: quantize the device segment and the cut
activation, run the split model, measure the accuracy loss against the float model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import qpart_kernels

from ..core.metrics import AgreementSpec, accuracy, outputs
from ..core.metrics import agreement as get_agreement
from ..core.profile import ModelProfile
from ..core.profile import profile as profile_model
from ..core.split import quantized_split_model
from .solve import Plan


@dataclass(frozen=True)
class ValidationResult:
    """Measured accuracies (fractions), the loss ``float - quantized``, whether it is within
    the plan's budget, the measured vs predicted weight payload in bytes, and the
    disagreement rate with the float model under the agreement metric."""

    float_accuracy: float
    quantized_accuracy: float
    accuracy_loss: float
    budget: float
    within_budget: bool
    measured_weight_payload_bytes: int
    predicted_weight_payload_bytes: int
    disagreement_rate: float | None = None


def validate(
    model: nn.Module,
    plan: Plan,
    x: torch.Tensor,
    y: torch.Tensor,
    prof: ModelProfile | None = None,
    agreement: AgreementSpec = None,
    act_int8: bool = False,
) -> ValidationResult:
    """Runs ``plan`` on ``(x, y)``: layers ``1..p`` as ``QPartLinear``/``QPartConv2d`` at the
    plan's widths, the cut activation quantized per sample at ``activation_bits``, the rest
    in float; compares with the float model. ``within_budget`` allows no slack beyond
    floating-point rounding (the loss is a multiple of ``1/len(y)``). ``agreement``: the
    metric of ``disagreement_rate`` (:func:`qpart.core.metrics.agreement`, top-1 default);
    ``act_int8``: the device layers run on int8 activations."""
    if prof is None or prof.graph_module is None:
        prof = profile_model(model, x[:2])
    if tuple(layer.name for layer in prof.layers[: plan.partition_point]) != plan.layer_names:
        raise ValueError("the plan's layer names do not match the model's profile")
    split = quantized_split_model(
        prof, plan.partition_point, plan.bits, plan.activation_bits, act_int8
    )
    float_acc = accuracy(model.eval(), x, y)
    quant_acc = accuracy(split, x, y)
    disagree = get_agreement(agreement).disagreement_rate(
        outputs(split, x), outputs(model.eval(), x)
    )
    loss = float_acc - quant_acc
    modules = dict(split.named_modules())
    measured = sum(
        modules[name].payload_bytes()
        for name in plan.layer_names
        if isinstance(modules[name], (qpart_kernels.QPartLinear, qpart_kernels.QPartConv2d))
    )
    return ValidationResult(
        float_acc,
        quant_acc,
        loss,
        plan.accuracy_budget,
        loss <= plan.accuracy_budget + 1e-9,
        measured,
        plan.weight_payload_bytes,
        disagree,
    )
