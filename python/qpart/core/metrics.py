"""Agreement metrics of a model's outputs: accuracy against labels, and THE definition of
"the same answer" as the float model (:class:`Agreement`) that calibration, refinement,
acceptance, validation, the baselines and the simulator all use. The disagreement rate
against the float model on some inputs bounds the accuracy loss on them (for top-1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Arg-max class of ``model``'s logits for every row of ``x`` (evaluated in batches)."""
    return outputs(model, x, batch_size).argmax(dim=-1)


def outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """``model``'s raw outputs for every row of ``x`` (evaluated in batches)."""
    if x.shape[0] == 0:
        raise ValueError("outputs: no samples")
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            out.append(model(x[start : start + batch_size]))
    return torch.cat(out)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction (0..1) of ``x`` that ``model`` classifies as ``y`` (arg-max of the logits)."""
    if x.shape[0] == 0:
        raise ValueError("accuracy: no samples")
    return int((predictions(model, x, batch_size) == y).sum()) / x.shape[0]


def flip_rate(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Fraction of rows whose arg-max differs from the ``reference`` predictions: an upper
    bound of the accuracy loss against the reference model on the same inputs."""
    return float((logits.argmax(-1) != reference).float().mean())


# ----------------------------------------------------------------------------- agreement


class Agreement:
    """What "the same answer" as the float model means: ``agree(output, reference)`` takes
    a batch of outputs of the quantized model and of the float model (same shape, one row
    per sample) and returns one boolean per sample. Subclasses below; any callable with
    that signature can be wrapped with :class:`CallableAgreement` (or passed to
    :func:`agreement`)."""

    name = "agreement"

    def agree(self, output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Boolean per sample: does ``output`` give the same answer as ``reference``?"""
        raise NotImplementedError

    def disagreements(self, output: torch.Tensor, reference: torch.Tensor) -> int:
        """How many samples disagree (exact count)."""
        if output.shape != reference.shape:
            raise ValueError(
                f"{self.name}: output shape {tuple(output.shape)} differs from the "
                f"reference {tuple(reference.shape)}"
            )
        ok = self.agree(output, reference)
        if ok.dtype != torch.bool or ok.shape != (output.shape[0],):
            raise ValueError(
                f"{self.name}: must return one boolean per sample, got {ok.dtype} {tuple(ok.shape)}"
            )
        return int((~ok).sum())

    def disagreement_rate(self, output: torch.Tensor, reference: torch.Tensor) -> float:
        """Fraction (0..1) of samples that disagree."""
        if output.shape[0] == 0:
            raise ValueError(f"{self.name}: no samples")
        return self.disagreements(output, reference) / output.shape[0]


@dataclass(frozen=True)
class TopK(Agreement):
    """The float model's top-1 class is among the ``k`` highest outputs (``k = 1``: the
    arg-max matches - the default metric)."""

    k: int = 1

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"top-k agreement needs k >= 1, got {self.k}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"top{self.k}"

    def agree(self, output, reference):
        ref = reference.reshape(reference.shape[0], -1).argmax(-1)
        out = output.reshape(output.shape[0], -1)
        if self.k == 1:
            return out.argmax(-1) == ref
        k = min(self.k, out.shape[1])
        return (out.topk(k, dim=-1).indices == ref[:, None]).any(-1)


@dataclass(frozen=True)
class Tolerance(Agreement):
    """Regression / dense outputs: every element within ``atol + rtol * |reference|``."""

    atol: float = 0.0
    rtol: float = 0.0

    def __post_init__(self):
        if self.atol < 0 or self.rtol < 0 or self.atol + self.rtol == 0:
            raise ValueError(
                f"tolerance agreement needs atol, rtol >= 0, not both 0 (got {self.atol}, "
                f"{self.rtol})"
            )

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"tolerance(atol={self.atol:g}, rtol={self.rtol:g})"

    def agree(self, output, reference):
        out = output.reshape(output.shape[0], -1).float()
        ref = reference.reshape(reference.shape[0], -1).float()
        return ((out - ref).abs() <= self.atol + self.rtol * ref.abs()).all(-1)


@dataclass(frozen=True)
class BinDistance(Agreement):
    """Ordered bins (e.g. an age or a distance class): the arg-max bin is within ``k``
    bins of the float model's arg-max bin."""

    k: int = 1

    def __post_init__(self):
        if self.k < 0:
            raise ValueError(f"bin-distance agreement needs k >= 0, got {self.k}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"bins<={self.k}"

    def agree(self, output, reference):
        out = output.reshape(output.shape[0], -1).argmax(-1)
        ref = reference.reshape(reference.shape[0], -1).argmax(-1)
        return (out - ref).abs() <= self.k


class CallableAgreement(Agreement):
    """A user function ``fn(output, reference) -> bool tensor (one per sample)``."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], name=None):
        if not callable(fn):
            raise TypeError(f"agreement function must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")

    def agree(self, output, reference):
        return torch.as_tensor(self.fn(output, reference))


#: What :func:`agreement` accepts: ``None`` (top-1), an :class:`Agreement`, a name
#: (``"top1"``, ``"top5"``, ``"bins<=2"``) or a callable ``(output, reference) -> bool``.
AgreementSpec = Agreement | str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None

#: The default metric: top-1 agreement with the float model.
TOP1 = TopK(1)


def agreement(spec: AgreementSpec = None) -> Agreement:
    """The :class:`Agreement` named by ``spec`` (see :data:`AgreementSpec`)."""
    if spec is None:
        return TOP1
    if isinstance(spec, Agreement):
        return spec
    if isinstance(spec, str):
        s = spec.strip().lower().replace(" ", "")
        try:
            if s.startswith("top"):
                return TopK(int(s[3:] or 1))
            if s.startswith("bins<="):
                return BinDistance(int(s[6:]))
        except ValueError:
            pass
        raise ValueError(f"unknown agreement {spec!r}; use 'top<k>', 'bins<=<k>' or a callable")
    if callable(spec):
        return CallableAgreement(spec)
    raise TypeError(f"not an agreement: {spec!r}")
