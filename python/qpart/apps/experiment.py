"""The MNIST experiment that ``qpart simulate`` and ``qpart reproduce`` share: a built-in
workload (the MLP by default; the CNN or the residual CNN) trained without the held-out
digits, its profile, and its calibration on the first ``calib_samples`` held-out digits
(cached on disk)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.profile import ModelProfile, profile
from ..planning.calibration import cached_calibration
from ..planning.noise_model import Calibration
from ..workloads.data import MnistSplit, load_mnist
from ..workloads.models import HOLDOUT, default_cache_dir, mnist_mlp_holdout
from ..workloads.zoo import RECIPES, builtin_model


@dataclass(frozen=True)
class MnistExperiment:
    """The trained MLP, the data split (its test digits evaluate only), the held-out
    calibration / acceptance digits ``x_cal``, the profile and the calibration;
    ``calibration_cached`` says whether the calibration was read from the cache."""

    model: nn.Module
    data: MnistSplit
    x_cal: torch.Tensor
    prof: ModelProfile
    calib: Calibration
    calibration_cached: bool


def mnist_experiment(
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    calib_samples: int = HOLDOUT,
    progress: bool = False,
    model_id: str = "mnist-mlp",
) -> MnistExperiment:
    """Trains (or loads) the held-out built-in ``model_id`` and calibrates it (or loads the
    calibration). Image models get image-shaped digits in ``data`` and ``x_cal``."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if model_id == "mnist-mlp":
        model, data, x_hold, _ = mnist_mlp_holdout(seed, cache, progress)
        x_cal, name = x_hold[:calib_samples], f"mnist_mlp_seed{seed}_holdout{HOLDOUT}"
    elif model_id in RECIPES:
        b = builtin_model(model_id, cache, seed, progress, calibration_samples=calib_samples)
        model, x_cal, name = b.model, b.calibration, f"{model_id}_seed{seed}_holdout{HOLDOUT}"
        flat = load_mnist(seed=seed)
        shape = tuple(b.example.shape[1:])
        data = MnistSplit(flat.x_train.reshape(-1, *shape), flat.y_train, b.x_test, b.y_test)
    else:
        raise KeyError(f"unknown workload {model_id!r}; built-in: {', '.join(RECIPES)}")
    prof = profile(model, data.x_test[:2])
    calib, _, hit = cached_calibration(model, x_cal, prof, cache, name, seed, progress)
    return MnistExperiment(model, data, x_cal, prof, calib, hit)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Runs the block with ``n`` torch intra-op threads, restoring the previous count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
