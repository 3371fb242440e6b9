"""Helpers shared by the serving and app tests: a tiny calibrated model entry, a cache
holding the trained MNIST MLP with a small calibration, and waiting for a server."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import torch
from torch import nn

from qpart.core.profile import profile
from qpart.planning.calibration import cached_calibration, calibrate
from qpart.serving.registry import ModelEntry
from qpart.workloads.data import load_mnist
from qpart.workloads.models import cached_model_path, default_cache_dir, trained_mnist_mlp


def tiny_mlp_entry(model_id: str = "tiny-mlp") -> ModelEntry:
    """A 16-24-4 MLP, calibrated on 200 random inputs at two levels (~1 s)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 4)).eval()
    x = torch.randn(200, 16, generator=gen)
    calib = calibrate(model, x, prof=profile(model, x[:2]), levels=(0.01, 0.02), progress=False)
    return ModelEntry.create(model_id, model, x[:2], calib, description="16-24-4 MLP")


def mlp_cache(root: Path, calib_samples: int) -> Path:
    """``root`` holding the trained MNIST MLP (copied from the user cache when there) and its
    calibration on ``calib_samples`` training digits, so a server starts in seconds."""
    src = cached_model_path(default_cache_dir(), 0)
    if src.is_file():
        shutil.copy(src, cached_model_path(root, 0))
    data = load_mnist(seed=0)
    model = trained_mnist_mlp(cache_dir=root, seed=0, progress=False)
    prof = profile(model, data.x_test[:2])
    cached_calibration(model, data.x_train[:calib_samples], prof, root, "mnist_mlp_seed0", 0)
    return root


def wait_for_health(
    url: str, proc: subprocess.Popen | None = None, timeout_s: float = 60.0
) -> None:
    """Waits until ``url/v1/health`` answers 200; raises if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"server exited: {out}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            raise RuntimeError(f"server did not start in {timeout_s:.0f} s")
        time.sleep(0.2)
