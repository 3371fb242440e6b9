"""``qpart serve``: the models named by ``--model`` / ``--config`` (default: the MNIST MLP),
each captured, calibrated and tabulated (cached on disk under the weights' digest), served
by the FastAPI app with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from ..core.errors import ProfileError
from ..core.profile import profile
from ..planning.calibration import cached_calibration
from ..planning.heldout import HeldOutAcceptance
from ..planning.table import PatternTable
from ..serving.errors import WireFormatError
from ..serving.registry import ModelEntry, entry_from_spec
from ..serving.server import ServerSettings, serve
from ..workloads.data import load_mnist
from ..workloads.models import default_cache_dir, trained_mnist_mlp
from .model_specs import ModelSource, SpecError, load_spec, parse_config, parse_model_arg

MNIST_MODEL_ID = "mnist-mlp"


def mnist_entry(
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    calib_samples: int = 2000,
    progress: bool = False,
    int8_activations: bool = False,
) -> ModelEntry:
    """The default served model: the six-layer MNIST MLP (trained or loaded from the cache),
    calibrated on ``calib_samples`` training digits (cached on disk); its table's patterns
    are accepted on the 1000 test digits (trained and calibrated without them): each plan
    carries its held-out measured loss and 95 % upper bound, and serves a budget only when
    the bound meets it (docs/PLANNING.md §4.4). ``int8_activations``: the device layers run
    on int8 activations (calibrated and accepted so)."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    data = load_mnist(seed=seed)
    model = trained_mnist_mlp(cache_dir=cache, seed=seed, progress=progress)
    prof = profile(model, data.x_test[:2])
    calib, _, _ = cached_calibration(
        model,
        data.x_train[:calib_samples],
        prof,
        cache,
        f"mnist_mlp_seed{seed}",
        seed,
        progress,
        act_int8=int8_activations,
    )
    acceptance = HeldOutAcceptance(prof, data.x_test, act_int8=int8_activations)
    table = PatternTable.build(prof, calib, acceptance=acceptance)
    return ModelEntry.create(
        MNIST_MODEL_ID,
        model,
        data.x_test[:2],
        calib,
        table=table,
        description="six-layer MNIST MLP (784-512-256-128-64-32-10)",
        prof=prof,
    )


def model_sources(args: argparse.Namespace) -> list[ModelSource]:
    """The models ``qpart serve`` registers: ``--config`` tables, then ``--model``
    arguments; the MNIST MLP when neither is given. Ids must be unique."""
    sources: list[ModelSource] = []
    if getattr(args, "config", None):
        sources += parse_config(args.config)
    sources += [parse_model_arg(m) for m in getattr(args, "model", None) or []]
    seen: set[str] = set()
    for s in sources:
        if s.model_id in seen:
            raise SpecError(f"model id {s.model_id!r} is given twice")
        seen.add(s.model_id)
    return sources


def build_entries(args: argparse.Namespace, quiet: bool = False) -> dict[str, ModelEntry]:
    """Registers every model of ``args`` (progress on stderr, one line per model, unless
    ``quiet``)."""
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    sources = model_sources(args)
    if not sources:
        entry = mnist_entry(
            cache,
            args.seed,
            args.calib_samples,
            args.progress,
            getattr(args, "int8_activations", False),
        )
        return {entry.model_id: entry}
    entries: dict[str, ModelEntry] = {}
    for source in sources:
        start = time.perf_counter()
        if not quiet:
            print(f"qpart serve: registering {source.model_id!r} ...", file=sys.stderr, flush=True)
        spec = load_spec(source, cache, args.seed, args.progress, args.calib_samples)
        if source.int8_activations is None and getattr(args, "int8_activations", False):
            spec.int8_activations = True
        entries[source.model_id] = entry_from_spec(
            source.model_id, spec, cache, args.seed, args.progress
        )
        entry = entries[source.model_id]
        if quiet:
            continue
        print(
            f"qpart serve: {source.model_id!r}: {entry.profile.num_layers} layers, valid "
            f"points {list(entry.profile.valid_points)}, {len(entry.table)} patterns "
            f"({time.perf_counter() - start:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    return entries


#: What a bad model or model argument raises at registration.
REGISTRATION_ERRORS = (SpecError, ProfileError, WireFormatError, KeyError)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The server limits and token of parsed ``qpart serve`` arguments."""
    return ServerSettings(
        max_body_bytes=args.max_body_bytes,
        max_concurrency=args.max_concurrency,
        queue_timeout_s=getattr(args, "queue_timeout_s", 0.5),
        body_timeout_s=getattr(args, "body_timeout_s", 10.0),
        max_uploads=getattr(args, "max_uploads", None),
        token=args.token or os.environ.get("QPART_TOKEN") or None,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Runs ``qpart serve`` for parsed CLI ``args`` (blocks until the server stops)."""
    torch.set_num_threads(args.threads)
    try:
        entries = build_entries(args)
    except REGISTRATION_ERRORS as exc:
        print(f"qpart serve: error: {exc}", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    listing = ", ".join(f"{e.model_id!r} ({len(e.table)} patterns)" for e in entries.values())
    print(
        f"qpart serve: {listing} on http://{args.host}:{args.port}"
        + (" (bearer token required)" if settings.token else ""),
        flush=True,
    )
    serve(entries, args.host, args.port, settings, args.log_level)
    return 0
