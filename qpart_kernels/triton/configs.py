"""Tile configurations of the Triton matmul kernels, chosen per problem and device.

Kept as plain functions (not ``triton.autotune``) so the choice is deterministic, cheap and
cached by Triton's compile cache per (BITS, tile) specialization; the GPU benchmark script
is where the tables get tuned. Interpreter runs (CPU tensors) use large tiles so that few
programs run, which keeps the interpreter fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class TileConfig:
    """Block sizes of one launch and whether to use ``tl.dot`` (GEMM) or a GEMV reduction."""

    block_m: int
    block_n: int
    block_k: int
    use_dot: bool


@lru_cache(maxsize=None)
def _gpu_generation(device_index: int) -> int:
    major, _ = torch.cuda.get_device_capability(device_index)
    return major


def linear_config(m: int, n: int, k: int, device: torch.device) -> TileConfig:
    """Tiles for ``qpart.linear`` with an ``(m, k)`` input and ``n`` outputs."""
    if device.type != "cuda":  # interpreter: few, large programs
        return TileConfig(block_m=min(16, max(1, 1 << (m - 1).bit_length())), block_n=64,
                          block_k=64, use_dot=False)
    if m < 16:  # GEMV regime: memory bound on the packed weight
        block_n = 64 if _gpu_generation(device.index or 0) >= 9 else 32
        return TileConfig(block_m=max(1, 1 << (m - 1).bit_length()), block_n=block_n,
                          block_k=128, use_dot=False)
    block_m = 64 if m >= 64 else 16
    return TileConfig(block_m=block_m, block_n=64, block_k=64, use_dot=True)


def conv2d_config(m: int, n: int, k: int, device: torch.device) -> TileConfig:
    """Tiles for the implicit-GEMM ``qpart.conv2d`` (m output pixels, n channels per group)."""
    if device.type != "cuda":
        return TileConfig(block_m=32, block_n=32, block_k=32, use_dot=False)
    return TileConfig(block_m=64, block_n=32, block_k=32, use_dot=m >= 16 and n >= 16 and k >= 16)
