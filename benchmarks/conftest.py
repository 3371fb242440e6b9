"""Benchmark fixtures. Run with: python -m pytest benchmarks -p benchmark --benchmark-json=..."""

from __future__ import annotations

import pytest
import torch

import qpart_kernels  # noqa: F401  (registers the ops)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Drops the per-round timings from --benchmark-json: the summary statistics are what
    make_results.py reads, and the raw rounds of a full run are hundreds of MB."""
    for bench in output_json["benchmarks"]:
        bench["stats"].pop("data", None)
