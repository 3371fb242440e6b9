"""The MNIST experiment that ``qpart simulate`` and ``qpart reproduce`` share: the MLP
trained without the held-out digits, its profile, and its calibration on the first
``calib_samples`` held-out digits (cached on disk)."""

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
from ..workloads.data import MnistSplit
from ..workloads.models import HOLDOUT, default_cache_dir, mnist_mlp_holdout


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
) -> MnistExperiment:
    """Trains (or loads) the held-out MLP and calibrates it (or loads the calibration)."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    model, data, x_hold, _ = mnist_mlp_holdout(seed, cache, progress)
    prof = profile(model, data.x_test[:2])
    x_cal = x_hold[:calib_samples]
    calib, _, hit = cached_calibration(
        model, x_cal, prof, cache, f"mnist_mlp_seed{seed}_holdout{HOLDOUT}", seed, progress
    )
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
