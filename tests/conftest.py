"""Shared fixtures: deterministic seeds; the ops are registered by importing the package."""

from __future__ import annotations

import os

import torch

# Without a GPU, Triton kernels run on CPU tensors through the interpreter; the flag must be
# set before any Triton kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import qpart_kernels  # noqa: E402  (registers the ops)
from qpart_kernels import cpu_isa  # noqa: E402

CPU_ISAS = list(cpu_isa.available_cpu_isas()) if qpart_kernels.extension_loaded() else []


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=CPU_ISAS)
def isa(request):
    """Runs a test once per CPU kernel path this machine has (scalar, avx2, avx512, amx, neon)."""
    with cpu_isa.cpu_isa(request.param):
        yield request.param


@pytest.fixture(params=[1, 2])
def threads(request):
    """Runs a test with 1 and with 2 torch threads."""
    saved = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(saved)
