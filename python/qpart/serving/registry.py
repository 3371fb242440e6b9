"""Models a server holds: each with its profile, calibration, pattern table and the
quantized device segments of every pattern (encoded once, keyed by content hash).

A *plan id* names a pattern's configuration ``(model, p, bits, activation bits)``: 16 hex
digits of a sha256, deterministic, so it survives server restarts and the set of ids is
bounded by the table size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.profile import ModelProfile, profile
from ..core.split import SplitSegments, fp32_weight_bytes, quantized_segments
from ..planning.noise_model import Calibration
from ..planning.table import PatternTable, Plan, Request
from .wire import EncodedSegment, encode_segment


@dataclass
class ServedPlan:
    """One pattern as served: its id, segments (quantized device half + float server half)
    and the encoded device segment."""

    plan_id: str
    model_id: str
    pattern: Plan
    segments: SplitSegments
    encoded: EncodedSegment
    fp32_weight_bytes: int


def make_plan_id(model_id: str, p: int, bits, activation_bits) -> str:
    """Deterministic 16-hex-digit id of a configuration."""
    key = f"{model_id}|{p}|{','.join(map(str, bits))}|{activation_bits}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class ModelEntry:
    """A registered model. Build with :meth:`create`; serves :meth:`plan` lookups."""

    model_id: str
    description: str
    model: nn.Module
    profile: ModelProfile
    calibration: Calibration
    table: PatternTable
    plans: dict[str, ServedPlan] = field(default_factory=dict)
    by_segment: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        model_id: str,
        model: nn.Module,
        example: torch.Tensor,
        calibration: Calibration,
        table: PatternTable | None = None,
        description: str = "",
    ) -> ModelEntry:
        """Profiles ``model``, builds the table (unless given) and encodes the segment of
        every pattern (identical segments are encoded once)."""
        model = model.eval()
        prof = profile(model, example)
        table = table or PatternTable.build(prof, calibration)
        entry = cls(model_id, description, model, prof, calibration, table)
        encoded: dict[tuple[int, tuple[int, ...]], tuple[SplitSegments, EncodedSegment]] = {}
        for pl in table.patterns:
            key = (pl.partition_point, tuple(pl.bits))
            if key not in encoded:
                seg = quantized_segments(prof, pl.partition_point, pl.bits)
                out = seg.cut_shape if seg.cut_shape is not None else seg.output_shape
                enc = encode_segment(
                    seg.device,
                    seg.input_shape,
                    out,
                    {"model": model_id, "partition_point": pl.partition_point},
                )
                encoded[key] = (seg, enc)
                entry.by_segment[enc.segment_id] = key
            seg, enc = encoded[key]
            pid = make_plan_id(model_id, pl.partition_point, pl.bits, pl.activation_bits)
            entry.plans[pid] = ServedPlan(
                pid, model_id, pl, seg, enc, fp32_weight_bytes(prof, pl.partition_point)
            )
        return entry

    def plan(self, request: Request, held_segment: str | None = None) -> tuple[Plan, ServedPlan]:
        """Table lookup (a held segment known to this model is free); returns the plan with
        its cost terms and the served pattern."""
        held = self.by_segment.get(held_segment) if held_segment else None
        if held is not None:
            request = Request(**{**request.__dict__, "held_segment": held})
        plan = self.table.lookup(request)
        pid = make_plan_id(self.model_id, plan.partition_point, plan.bits, plan.activation_bits)
        return plan, self.plans[pid]
