"""Models a server holds: each with its profile, calibration and pattern table; the device
segments of its patterns are encoded on first request and kept in a bounded cache.

A *plan id* names a pattern's configuration ``(model, p, bits, activation bits)``: 16 hex
digits of a sha256, deterministic, so it survives server restarts and the set of ids is
bounded by the table size. A *segment id* is the sha256 of an encoded segment.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn

import qpart_kernels

from ..core.profile import ModelProfile, profile
from ..core.split import fp32_weight_bytes, quantized_segments, split_model
from ..planning.calibration import cached_calibration
from ..planning.heldout import HeldOutAcceptance
from ..planning.noise_model import Calibration
from ..planning.table import PatternTable, Plan, Request
from .segment import EncodedSegment, describe_graph, encode_segment

#: Encoded segments a model keeps in memory (least recently used ones are dropped and
#: re-encoded, byte-identically, when asked for again).
DEFAULT_SEGMENT_CACHE = 32

SegmentKey = tuple[int, tuple[int, ...]]


def make_plan_id(model_id: str, p: int, bits, activation_bits, act_int8: bool = False) -> str:
    """Deterministic 16-hex-digit id of a configuration (``act_int8``: the device layers run
    on int8 activations)."""
    key = f"{model_id}|{p}|{','.join(map(str, bits))}|{activation_bits}"
    if act_int8:
        key += "|int8"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class ServedPlan:
    """One pattern as served: its id and configuration; the encoded device segment and the
    float server half come from the owning :class:`ModelEntry` (built on first use)."""

    plan_id: str
    model_id: str
    pattern: Plan
    fp32_weight_bytes: int
    entry: ModelEntry = field(repr=False, compare=False)

    @property
    def key(self) -> SegmentKey:
        """``(p, bits)``: plans that differ only in activation bits share a segment."""
        return (self.pattern.partition_point, tuple(self.pattern.bits))

    @property
    def encoded(self) -> EncodedSegment:
        """The device segment's container (encoded on first use, then cached)."""
        return self.entry.encoded_segment(self.key)

    def device_module(self) -> fx.GraphModule:
        """A fresh quantized device segment of this plan, in process (what the device
        rebuilds from :attr:`encoded`)."""
        p, bits = self.key
        device = quantized_segments(self.entry.profile, p, bits, self.entry.act_int8).device
        return qpart_kernels.fuse_epilogues(device)

    @property
    def server(self) -> nn.Module:
        """The float server half (cut activation -> model output)."""
        return self.entry.server_half(self.pattern.partition_point)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the model input."""
        return self.entry.profile.input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the model output."""
        return self.entry.profile.output_shape

    @property
    def cut_shape(self) -> tuple[int, ...] | None:
        """Per-sample shape of the cut activation (``None`` at ``p = L``)."""
        p = self.pattern.partition_point
        return None if p == self.entry.profile.num_layers else self.entry.profile.cuts[p].cut_shape


@dataclass(eq=False)
class ModelEntry:
    """A registered model. Build with :meth:`create`; serves :meth:`plan` lookups.
    ``act_int8``: its device segments run on int8 activations (as its calibration was
    measured)."""

    model_id: str
    description: str
    model: nn.Module
    profile: ModelProfile
    calibration: Calibration
    table: PatternTable
    segment_cache_size: int = DEFAULT_SEGMENT_CACHE
    act_int8: bool = False
    plans: dict[str, ServedPlan] = field(default_factory=dict)
    by_segment: dict[str, SegmentKey] = field(default_factory=dict)
    _segments: OrderedDict[SegmentKey, EncodedSegment] = field(default_factory=OrderedDict)
    _servers: dict[int, fx.GraphModule] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(
        cls,
        model_id: str,
        model: nn.Module,
        example: torch.Tensor,
        calibration: Calibration,
        table: PatternTable | None = None,
        description: str = "",
        prof: ModelProfile | None = None,
        segment_cache_size: int = DEFAULT_SEGMENT_CACHE,
    ) -> ModelEntry:
        """Profiles ``model`` (unless ``prof`` is given), checks that every part of its graph
        can be shipped in a device segment, and builds the table (unless given). The device
        layers run on int8 activations when the calibration was measured so
        (``calibration.act_int8``). Raises
        ``ProfileError`` / ``WireFormatError`` naming what is unsupported - at registration,
        never at request time. Segments are encoded lazily."""
        model = model.eval()
        prof = prof or profile(model, example)
        describe_graph(prof.graph_module, float_layers=True)
        table = table or PatternTable.build(prof, calibration)
        act_int8 = calibration.act_int8
        entry = cls(
            model_id,
            description,
            model,
            prof,
            calibration,
            table,
            int(segment_cache_size),
            act_int8,
        )
        for pl in table.patterns:
            pid = make_plan_id(model_id, pl.partition_point, pl.bits, pl.activation_bits, act_int8)
            entry.plans[pid] = ServedPlan(
                pid, model_id, pl, fp32_weight_bytes(prof, pl.partition_point), entry
            )
        return entry

    @property
    def segment_keys(self) -> set[SegmentKey]:
        """The distinct ``(p, bits)`` device segments of the table."""
        return {sp.key for sp in self.plans.values()}

    def is_encoded(self, key: SegmentKey) -> bool:
        """Whether segment ``key`` is in the cache now (then :meth:`encoded_segment` is a
        dictionary lookup)."""
        return key in self._segments

    def encoded_segment(self, key: SegmentKey) -> EncodedSegment:
        """The encoded device segment ``(p, bits)`` (from the bounded cache, or encoded)."""
        with self._lock:
            enc = self._segments.get(key)
            if enc is not None:
                self._segments.move_to_end(key)
                return enc
            p, bits = key
            seg = quantized_segments(self.profile, p, bits, self.act_int8)
            out = seg.cut_shape if seg.cut_shape is not None else seg.output_shape
            enc = encode_segment(
                seg.device, seg.input_shape, out, {"model": self.model_id, "partition_point": p}
            )
            self._segments[key] = enc
            self.by_segment[enc.segment_id] = key
            while len(self._segments) > max(1, self.segment_cache_size):
                self._segments.popitem(last=False)
            return enc

    def server_half(self, p: int) -> fx.GraphModule:
        """The float server segment at partition point ``p`` (built once per point)."""
        with self._lock:
            gm = self._servers.get(p)
            if gm is None:
                gm = self._servers[p] = split_model(self.profile, p).server
            return gm

    def plan(self, request: Request, held_segment: str | None = None) -> tuple[Plan, ServedPlan]:
        """Table lookup (a held segment this server has encoded is free); returns the plan
        with its cost terms and the served pattern."""
        held = self.by_segment.get(held_segment) if held_segment else None
        if held is not None:
            request = Request(**{**request.__dict__, "held_segment": held})
        plan = self.table.lookup(request)
        pid = make_plan_id(
            self.model_id, plan.partition_point, plan.bits, plan.activation_bits, self.act_int8
        )
        return plan, self.plans[pid]


#: Share of the calibration inputs held out for acceptance when no acceptance set is given,
#: and the fewest inputs for which that split is made.
ACCEPTANCE_FRACTION = 0.6
MIN_SPLIT_INPUTS = 400


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:12]


@dataclass
class ModelSpec:
    """What a server needs to serve a model: the model (an ``nn.Module`` that
    ``torch.export`` captures, or an ``ExportedProgram``), an example input batch (batch
    first), calibration inputs drawn from the inputs it will see (a few hundred or more),
    a description, and optionally acceptance inputs: held-out samples the widths are never
    chosen on, on which every plan's loss is measured with a confidence bound
    (docs/PLANNING.md §4.4). Without them, :func:`entry_from_spec` holds out the last
    :data:`ACCEPTANCE_FRACTION` of the calibration inputs when there are at least
    :data:`MIN_SPLIT_INPUTS`; with fewer, plans are served on predicted loss only.

    ``int8_activations``: the device runs its quantized layers on int8 activations (the
    integer kernels); the planner then calibrates and measures with exactly those numerics."""

    model: nn.Module | torch.export.ExportedProgram
    example: torch.Tensor
    calibration: torch.Tensor
    description: str = ""
    acceptance: torch.Tensor | None = None
    int8_activations: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.int8_activations, bool):
            raise TypeError(
                f"ModelSpec.int8_activations must be a bool, got {self.int8_activations!r}"
            )
        names = ("example", "calibration") + (
            ("acceptance",) if self.acceptance is not None else ()
        )
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.dim() < 2 or value.shape[0] < 1:
                raise ValueError(
                    f"ModelSpec.{name} must be a batched tensor (batch first), got "
                    f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
                )
        for name in names[1:]:
            if tuple(self.example.shape[1:]) != tuple(getattr(self, name).shape[1:]):
                raise ValueError(
                    f"ModelSpec: {name} inputs {tuple(getattr(self, name).shape[1:])} and the "
                    f"example {tuple(self.example.shape[1:])} differ in per-sample shape"
                )

    def splits(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(calibration inputs, acceptance inputs or None)`` as registration uses them."""
        if self.acceptance is not None:
            return self.calibration, self.acceptance
        n = self.calibration.shape[0]
        if n < MIN_SPLIT_INPUTS:
            return self.calibration, None
        held = int(round(n * ACCEPTANCE_FRACTION))
        return self.calibration[: n - held], self.calibration[n - held :]


def entry_from_spec(
    model_id: str,
    spec: ModelSpec,
    cache_dir: str | os.PathLike[str],
    seed: int = 0,
    progress: bool = False,
    segment_cache_size: int = DEFAULT_SEGMENT_CACHE,
) -> ModelEntry:
    """Registers ``spec`` as ``model_id``: capture and profile (clear errors for anything
    unsupported), calibration on the selection inputs and the pattern table accepted on the
    held-out inputs (:meth:`ModelSpec.splits`), both from ``cache_dir`` when cached there
    under the weights' and inputs' digests (else computed and cached), segments encoded
    lazily."""
    prof = profile(spec.model, spec.example)
    model = spec.model if isinstance(spec.model, nn.Module) else prof.graph_module
    describe_graph(prof.graph_module, float_layers=True)
    x_select, x_accept = spec.splits()
    int8 = spec.int8_activations
    calib, path, _ = cached_calibration(
        model, x_select, prof, cache_dir, model_id, seed, progress, act_int8=int8
    )
    suffix = "predicted" if x_accept is None else f"accepted_{_digest(x_accept)}"
    table_path = Path(path).with_name(f"{Path(path).stem}_table_{suffix}.json")
    table = None
    if table_path.is_file():
        try:
            table = PatternTable.load(table_path, prof)
        except (ValueError, KeyError, TypeError, OSError):
            table = None  # stale or corrupt: rebuilt below
    if table is None:
        acceptance = None if x_accept is None else HeldOutAcceptance(prof, x_accept, act_int8=int8)
        table = PatternTable.build(prof, calib, acceptance=acceptance, progress=progress)
        tmp = table_path.with_suffix(f".{os.getpid()}.tmp")
        table.save(tmp)
        os.replace(tmp, table_path)
    return ModelEntry.create(
        model_id,
        model,
        spec.example,
        calib,
        table,
        spec.description,
        prof=prof,
        segment_cache_size=segment_cache_size,
    )
