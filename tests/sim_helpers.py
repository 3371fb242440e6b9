"""A tiny trained MLP with its profile, calibration and pattern table, shared by the
simulation tests (built once per process, ~1-2 s)."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from qpart.core.profile import profile
from qpart.planning.calibration import calibrate
from qpart.simulation import SimulationSetup
from qpart.workloads.models import train_classifier

LEVELS = (0.01, 0.02, 0.05)


def blobs(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 16, generator=torch.Generator().manual_seed(123)) * 1.2
    y = torch.randint(0, 4, (n,), generator=gen)
    x = centers[y] + torch.randn(n, 16, generator=gen)
    return x.relu(), y  # non-negative inputs like pixels


@lru_cache(maxsize=1)
def tiny_setup() -> SimulationSetup:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    x_tr, y_tr = blobs(1200, 1)
    x_te, y_te = blobs(600, 2)
    train_classifier(model, x_tr, y_tr, epochs=15, batch_size=64, lr=1e-2, seed=0, progress=False)
    prof = profile(model, x_te[:2])
    x_sel = blobs(400, 4)[0]  # selection inputs (calibration, refinement; not trained on)
    x_acc = blobs(600, 3)[0]  # held-out acceptance inputs, disjoint from both
    calib = calibrate(model, x_sel, prof=prof, levels=LEVELS, seed=0, progress=False)
    return SimulationSetup(model, prof, calib, x_te, y_te, x_sel, x_accept=x_acc)
