"""The MNIST experiment that ``qpart simulate`` and ``qpart reproduce`` share: a built-in
workload (the MLP by default; the CNN or the residual CNN) trained without the held-out
digits, its profile, its calibration on the first ``calib_samples`` held-out digits (the
*selection* split; cached on disk), and the last :data:`ACCEPTANCE` held-out digits as the
separate *acceptance* split."""

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
from ..workloads.data import MnistSplit, holdout_split, load_mnist
from ..workloads.models import HOLDOUT, default_cache_dir, mnist_mlp_holdout
from ..workloads.zoo import RECIPES, builtin_model

#: Held-out digits kept for acceptance only (the last ones of the hold-out). 600 samples
#: can certify a 0.5 % budget at 95 % (zero disagreements bound the rate at 0.498 %).
ACCEPTANCE = 600
#: Held-out digits for calibration and refinement (the rest).
SELECTION = HOLDOUT - ACCEPTANCE


@dataclass(frozen=True)
class MnistExperiment:
    """The trained MLP, the data split (its test digits evaluate only), the held-out
    selection digits ``x_cal`` (calibration and refinement), the disjoint held-out
    acceptance digits ``x_accept`` (never used to choose anything), the profile and the
    calibration; ``calibration_cached`` says whether the calibration was read from the
    cache."""

    model: nn.Module
    data: MnistSplit
    x_cal: torch.Tensor
    prof: ModelProfile
    calib: Calibration
    calibration_cached: bool
    x_accept: torch.Tensor


def mnist_experiment(
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    calib_samples: int = SELECTION,
    progress: bool = False,
    model_id: str = "mnist-mlp",
) -> MnistExperiment:
    """Trains (or loads) the held-out built-in ``model_id`` and calibrates it (or loads the
    calibration) on the first ``calib_samples`` held-out digits (at most ``HOLDOUT -
    ACCEPTANCE``); the last :data:`ACCEPTANCE` held-out digits are the acceptance split.
    Image models get image-shaped digits in ``data``, ``x_cal`` and ``x_accept``."""
    if not 0 < calib_samples <= SELECTION:
        raise ValueError(
            f"calib_samples must be in 1..{SELECTION} (the held-out digits not in the "
            f"{ACCEPTANCE}-digit acceptance split), got {calib_samples}"
        )
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
        x_hold = holdout_split(flat, HOLDOUT, seed)[1]  # the same held-out digits
    else:
        raise KeyError(f"unknown workload {model_id!r}; built-in: {', '.join(RECIPES)}")
    prof = profile(model, data.x_test[:2])
    calib, _, hit = cached_calibration(model, x_cal, prof, cache, name, seed, progress)
    x_accept = x_hold[SELECTION:].reshape(-1, *x_cal.shape[1:])
    return MnistExperiment(model, data, x_cal, prof, calib, hit, x_accept)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Runs the block with ``n`` torch intra-op threads, restoring the previous count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
