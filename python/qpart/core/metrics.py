"""Agreement metrics of a model's outputs: accuracy against labels and the prediction-flip
rate against a reference model's predictions (the quantity the acceptance rule bounds)."""

from __future__ import annotations

import torch
from torch import nn


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Arg-max class of ``model``'s logits for every row of ``x`` (evaluated in batches)."""
    if x.shape[0] == 0:
        raise ValueError("predictions: no samples")
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            out.append(model(x[start : start + batch_size]).argmax(dim=-1))
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
