"""Shared fixtures: deterministic seeds; the ops are registered by importing the package."""

from __future__ import annotations

import pytest
import torch

import qpart_kernels  # noqa: F401  (registers the ops)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
