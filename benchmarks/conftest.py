"""Benchmark fixtures. Run with: python -m pytest benchmarks -p benchmark --benchmark-json=..."""

from __future__ import annotations

import pytest
import torch

import qpart_kernels  # noqa: F401  (registers the ops)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
