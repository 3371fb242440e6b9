"""The MNIST experiment that ``qpart simulate`` and ``qpart reproduce`` share: the MLP
trained without the held-out digits, its profile, its calibration on the first
``calib_samples`` held-out digits (the *selection* split; cached on disk), and the last
:data:`ACCEPTANCE` held-out digits as the separate *acceptance* split."""

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
) -> MnistExperiment:
    """Trains (or loads) the held-out MLP and calibrates it (or loads the calibration) on
    the first ``calib_samples`` held-out digits (at most ``HOLDOUT - ACCEPTANCE``); the
    last :data:`ACCEPTANCE` held-out digits are the acceptance split."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    model, data, x_hold, _ = mnist_mlp_holdout(seed, cache, progress)
    prof = profile(model, data.x_test[:2])
    n_select = x_hold.shape[0] - ACCEPTANCE
    if not 0 < calib_samples <= n_select:
        raise ValueError(
            f"calib_samples must be in 1..{n_select} (the held-out digits not in the "
            f"{ACCEPTANCE}-digit acceptance split), got {calib_samples}"
        )
    x_cal = x_hold[:calib_samples]
    x_accept = x_hold[n_select:]
    calib, _, hit = cached_calibration(
        model, x_cal, prof, cache, f"mnist_mlp_seed{seed}_holdout{HOLDOUT}", seed, progress
    )
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
