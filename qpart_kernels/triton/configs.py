"""Launch configurations of the Triton matmul kernels.

On a GPU, ``qpart.linear`` is autotuned over :func:`linear_autotune_configs` - a short list
on Jetson-class parts (sm_87 and other < sm_90) and a longer one on Hopper and newer -
keyed on (batch bucket, N, K, bits), so one model compiles a handful of variants, not one
per batch size; tuning results are cached on disk by Triton (``cache_results``). Configs
that do not fit the batch bucket (``tl.dot`` needs 16 rows; GEMV tiles are for small
batches) are pruned before timing. Interpreter runs (CPU tensors) use one fixed config
with large tiles so that few programs run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton


@dataclass(frozen=True)
class TileConfig:
    """Block sizes of one launch and whether to use ``tl.dot`` (GEMM) or a GEMV reduction."""

    block_m: int
    block_n: int
    block_k: int
    use_dot: bool
    split_k: int = 1


def batch_bucket(m: int) -> int:
    """The autotuning key for a batch of ``m`` rows: next power of two, capped at 128."""
    return min(128, 1 << max(0, (m - 1).bit_length()))


def _gemv(block_m: int, block_n: int, block_k: int, split_k: int, warps: int) -> triton.Config:
    return triton.Config(
        dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, USE_DOT=False, SPLIT_K=split_k),
        num_warps=warps,
        num_stages=2,
    )


def _gemm(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, USE_DOT=True, SPLIT_K=1),
        num_warps=warps,
        num_stages=stages,
    )


def linear_autotune_configs(capability_major: int) -> list[triton.Config]:
    """Candidate configs for ``linear_kernel`` on a GPU of the given compute capability."""
    configs = []
    for bm in (1, 2, 4, 8):
        configs += [_gemv(bm, 32, 128, 1, 4), _gemv(bm, 64, 128, 1, 4), _gemv(bm, 32, 256, 4, 4)]
    configs += [_gemm(16, 64, 64, 4, 3), _gemm(64, 64, 64, 4, 3), _gemm(128, 128, 32, 8, 3)]
    if capability_major >= 9:  # Hopper: more SMs and bandwidth, a wider search pays off
        for bm in (1, 2, 4, 8):
            configs += [
                _gemv(bm, 128, 128, 1, 4),
                _gemv(bm, 64, 256, 2, 8),
                _gemv(bm, 64, 128, 8, 4),
            ]
        configs += [_gemm(32, 128, 64, 4, 4), _gemm(128, 64, 64, 8, 4), _gemm(128, 256, 64, 8, 3)]
    return configs


def prune_linear_configs(configs, named_args, **kwargs):
    """Keeps GEMV configs whose block_m matches the batch bucket (< 16), GEMM ones otherwise."""
    bucket = named_args["M_BUCKET"]
    if bucket < 16:
        kept = [
            c for c in configs if not c.kwargs["USE_DOT"] and c.kwargs["BLOCK_M"] == min(bucket, 8)
        ]
    else:
        kept = [c for c in configs if c.kwargs["USE_DOT"] and c.kwargs["BLOCK_M"] <= bucket]
    return kept or configs[:1]


def interpreter_linear_config(m: int) -> TileConfig:
    """The single config used on CPU tensors (Triton interpreter)."""
    return TileConfig(block_m=min(16, batch_bucket(m)), block_n=64, block_k=64, use_dot=False)


def conv2d_config(m: int, n: int, k: int, device: torch.device) -> TileConfig:
    """Tiles for the implicit-GEMM ``qpart.conv2d`` (m output pixels, n channels per group)."""
    if device.type != "cuda":
        return TileConfig(block_m=32, block_n=32, block_k=32, use_dot=False)
    return TileConfig(block_m=64, block_n=32, block_k=32, use_dot=m >= 16 and n >= 16 and k >= 16)
