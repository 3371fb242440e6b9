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


def conv2d_int8_reference(x, weight, q, bits: int, kwargs: dict) -> torch.Tensor:
    """``reference.conv2d(..., int8_activations=True)`` of a test case: ``q`` the packed
    weight triple, ``kwargs`` the ``qpart_kernels.conv2d`` keywords (bias, stride, padding,
    dilation, groups; ints or pairs)."""
    from qpart_kernels.ops import reference

    pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
    return reference.conv2d(
        x,
        *q,
        kwargs["bias"],
        bits,
        list(weight.shape),
        pair(kwargs["stride"]),
        pair(kwargs["padding"]),
        pair(kwargs["dilation"]),
        kwargs["groups"],
        True,
    )
