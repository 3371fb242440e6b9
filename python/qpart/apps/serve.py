"""``qpart serve``: the MNIST MLP entry (trained or loaded, calibrated, cached on disk) served
by the FastAPI app with uvicorn."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..core.profile import profile
from ..planning.calibration import cached_calibration
from ..planning.heldout import HeldOutAcceptance
from ..planning.table import PatternTable
from ..serving.registry import ModelEntry
from ..serving.server import ServerSettings, serve
from ..workloads.data import load_mnist
from ..workloads.models import default_cache_dir, trained_mnist_mlp

MNIST_MODEL_ID = "mnist-mlp"


def mnist_entry(
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    calib_samples: int = 2000,
    progress: bool = False,
) -> ModelEntry:
    """The default served model: the six-layer MNIST MLP (trained or loaded from the cache),
    calibrated on ``calib_samples`` training digits (cached on disk); its table's patterns
    are accepted on the 1000 test digits (trained and calibrated without them): each plan
    carries its held-out measured loss and 95 % upper bound, and serves a budget only when
    the bound meets it (docs/PLANNING.md §4.4)."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    data = load_mnist(seed=seed)
    model = trained_mnist_mlp(cache_dir=cache, seed=seed, progress=progress)
    prof = profile(model, data.x_test[:2])
    calib, _, _ = cached_calibration(
        model, data.x_train[:calib_samples], prof, cache, f"mnist_mlp_seed{seed}", seed, progress
    )
    table = PatternTable.build(prof, calib, acceptance=HeldOutAcceptance(prof, data.x_test))
    return ModelEntry.create(
        MNIST_MODEL_ID,
        model,
        data.x_test[:2],
        calib,
        table=table,
        description="six-layer MNIST MLP (784-512-256-128-64-32-10)",
    )


def run_serve(args: argparse.Namespace) -> int:
    """Runs ``qpart serve`` for parsed CLI ``args`` (blocks until the server stops)."""
    torch.set_num_threads(args.threads)
    entry = mnist_entry(args.cache_dir, args.seed, args.calib_samples, args.progress)
    settings = ServerSettings(
        max_body_bytes=args.max_body_bytes,
        max_concurrency=args.max_concurrency,
        token=args.token or os.environ.get("QPART_TOKEN") or None,
    )
    print(
        f"qpart serve: model {entry.model_id!r} ({len(entry.table)} patterns) on "
        f"http://{args.host}:{args.port}" + (" (bearer token required)" if settings.token else ""),
        flush=True,
    )
    serve({entry.model_id: entry}, args.host, args.port, settings, args.log_level)
    return 0
