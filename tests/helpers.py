"""Small utilities shared by the test modules."""

from __future__ import annotations

import torch

ALL_BITS = list(range(1, 9))


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """assert_close tolerances for a result computed in fp32 and cast to ``dtype``."""
    return {
        torch.float32: {"atol": 1e-4, "rtol": 1e-4},
        torch.float16: {"atol": 2e-2, "rtol": 2e-2},
        torch.bfloat16: {"atol": 1e-1, "rtol": 5e-2},
    }[dtype]
