"""Shared fixtures: deterministic seeds; the ops are registered by importing the package."""

from __future__ import annotations

import os

import torch

# Without a GPU, Triton kernels run on CPU tensors through the interpreter; the flag must be
# set before any Triton kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import qpart_kernels  # noqa: E402,F401  (registers the ops)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
