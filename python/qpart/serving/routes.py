"""The v1 endpoints as two routers of plain functions over the typed dependencies of
:mod:`.deps`:

* ``meta``: ``GET /v1/health`` (no auth), ``GET /v1/models``;
* ``serving`` (token required on every route): ``POST /v1/plan``,
  ``GET /v1/segment/{plan_id}``, ``POST /v1/infer/{plan_id}``.

Every error is an :class:`HTTPException` whose body is ``{"detail": "<message>"}``.
"""

from __future__ import annotations

import math
import time

import torch
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from .._version import __version__
from ..core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from ..planning.allocation import InfeasibleError
from ..planning.solve import Plan
from ..planning.table import Request as PlanLookup
from .deps import ModelsDep, ServedPlanDep, SettingsDep, require_token
from .registry import ModelEntry, ServedPlan
from .schemas import (
    SEGMENT_ID_HEADER,
    CutInfo,
    ErrorBody,
    Health,
    InferResponse,
    LayerInfo,
    ModelInfo,
    PlanRequest,
    PlanResponse,
    PredictedTerms,
)
from .wire import WireFormatError, decode_activation

ERRORS = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    404: {"model": ErrorBody},
    408: {"model": ErrorBody, "description": "request body not received in time"},
    413: {"model": ErrorBody},
    422: {"model": ErrorBody},
    503: {"model": ErrorBody, "description": "server busy (see Retry-After)"},
}
"""The error answers every guarded route documents (body :class:`ErrorBody`)."""

meta = APIRouter(prefix="/v1", tags=["meta"])
serving = APIRouter(
    prefix="/v1", tags=["serving"], responses=ERRORS, dependencies=[Depends(require_token)]
)


# ----------------------------------------------------------------------------- meta


@meta.get("/health", response_model=Health)
async def health(models: ModelsDep) -> Health:
    """Liveness and the registered model ids (no auth)."""
    return Health(status="ok", version=__version__, models=sorted(models))


@meta.get(
    "/models",
    response_model=list[ModelInfo],
    responses=ERRORS,
    dependencies=[Depends(require_token)],
)
def list_models(models: ModelsDep) -> list[ModelInfo]:
    """The registered models: layers, valid partition points with their cut shapes, fp32
    bytes and the calibrated accuracy levels."""
    return [model_info(e) for e in models.values()]


def model_info(entry: ModelEntry) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model."""
    prof = entry.profile
    return ModelInfo(
        id=entry.model_id,
        description=entry.description,
        num_layers=prof.num_layers,
        valid_points=list(prof.valid_points),
        accuracy_levels=sorted({p.accuracy_budget for p in entry.table.patterns}),
        patterns=len(entry.table),
        segments=len(entry.segment_keys),
        input_shape=list(prof.input_shape),
        output_shape=list(prof.output_shape),
        fp32_weight_bytes=prof.weight_payload_bytes(prof.num_layers, [None] * prof.num_layers),
        layers=[
            LayerInfo(
                name=layer.name,
                kind=layer.kind,
                weights=layer.weight_count,
                macs=layer.macs,
                output_elems=layer.output_elems,
            )
            for layer in prof.layers
        ],
        cuts=[
            CutInfo(p=c.p, shape=list(c.cut_shape), elems=c.activation_elems)
            for c in sorted(prof.cuts.values(), key=lambda c: c.p)
        ],
    )


# ----------------------------------------------------------------------------- serving


def plan_response(
    entry: ModelEntry, plan: Plan, served: ServedPlan, held: bool, predicted_only: bool = False
) -> PlanResponse:
    """The :class:`PlanResponse` of a table lookup's ``plan`` (with this request's costs)
    and its served pattern; ``predicted_only``: the request asked to be served by the
    predicted level (a plan without held-out measurement is always predicted-only)."""
    return PlanResponse(
        plan_id=served.plan_id,
        model=entry.model_id,
        partition_point=plan.partition_point,
        num_layers=entry.profile.num_layers,
        layer_names=list(plan.layer_names),
        bits=list(plan.bits),
        activation_bits=plan.activation_bits,
        accuracy_level=plan.accuracy_budget,
        predicted_loss=plan.predicted_loss,
        measured_loss=plan.measured_loss,
        loss_upper_bound=plan.loss_upper_bound,
        acceptance_n=plan.acceptance_n,
        confidence=plan.confidence,
        predicted_only=predicted_only or not plan.accepted,
        weight_payload_bytes=plan.weight_payload_bytes,
        activation_payload_bytes=plan.activation_payload_bytes,
        fp32_weight_bytes=served.fp32_weight_bytes,
        memory_bytes=plan.memory_bytes,
        device_macs=plan.device_macs,
        server_macs=plan.server_macs,
        input_shape=list(served.input_shape),
        cut_shape=None if served.cut_shape is None else list(served.cut_shape),
        output_shape=list(served.output_shape),
        segment_id=served.encoded.segment_id,
        segment_bytes=len(served.encoded.data),
        segment_held=held,
        predicted=PredictedTerms.model_validate(plan.costs, from_attributes=True),
    )


@serving.post("/plan", response_model=PlanResponse)
async def plan(req: PlanRequest, models: ModelsDep) -> Response:
    """Table lookup (paper Algorithm 2) for the device's request. A held segment that
    one of the patterns uses counts as free (no weight download).

    Runs on the event loop (the lookup takes microseconds; a thread-pool hand-off would
    cost more than the work); only the first request for a segment, which encodes it,
    goes to the thread pool."""
    entry = models.get(req.model)
    if entry is None:
        raise HTTPException(404, f"unknown model {req.model!r}; registered: {sorted(models)}")
    try:
        lookup = PlanLookup(
            req.accuracy_budget,
            device=DeviceProfile(
                **req.device.model_dump(),
                memory_bytes=math.inf if req.memory_bytes is None else req.memory_bytes,
            ),
            channel=ChannelState(**req.channel.model_dump()),
            weights=ObjectiveWeights(**req.weights.model_dump()),
            predicted_only=req.predicted_only,
        )
        result, served = entry.plan(lookup, req.held_segment)
    except InfeasibleError as exc:
        raise HTTPException(422, f"infeasible request ({exc.constraint}): {exc}") from exc
    except ValueError as exc:
        raise HTTPException(422, f"invalid request: {exc}") from exc
    if not entry.is_encoded(served.key):
        await run_in_threadpool(entry.encoded_segment, served.key)
    held = req.held_segment == served.encoded.segment_id
    response = plan_response(entry, result, served, held, req.predicted_only)
    # Already a valid PlanResponse: skip FastAPI's second validation of the return value.
    return Response(response.model_dump_json(), media_type="application/json")


@serving.get(
    "/segment/{plan_id}",
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "safetensors container of the quantized device segment",
        },
        304: {"description": "the device already holds this segment (If-None-Match)"},
    },
)
def segment(request: Request, served: ServedPlanDep) -> Response:
    """The device segment of a plan. Sends ``ETag``/``X-QPART-Segment-Id`` = sha256 of
    the bytes; with ``If-None-Match`` naming that id the answer is an empty 304."""
    sid = served.encoded.segment_id
    headers = {"ETag": f'"{sid}"', SEGMENT_ID_HEADER: sid}
    held = {t.strip().strip('"') for t in request.headers.get("if-none-match", "").split(",")}
    if sid in held:
        return Response(status_code=304, headers=headers)
    return Response(served.encoded.data, media_type="application/octet-stream", headers=headers)


def run_server_half(served: ServedPlan, body: bytes, max_batch: int) -> InferResponse:
    """Decodes the activation ``body`` (400 when it is not this plan's) and runs the
    server segment on it (blocking; the route runs it in the thread pool)."""
    start = time.perf_counter()
    plan_id = served.plan_id
    try:
        head, x = decode_activation(
            body, served.cut_shape, served.pattern.activation_bits, max_batch
        )
    except WireFormatError as exc:
        raise HTTPException(400, f"bad activation body: {exc}") from exc
    if head.plan_id != plan_id:
        raise HTTPException(400, f"activation body is for plan {head.plan_id!r}, not {plan_id!r}")
    with torch.no_grad():
        out = served.server(x)
    elapsed = time.perf_counter() - start
    out2 = out.reshape(out.shape[0], -1)
    return InferResponse(
        plan_id=plan_id,
        batch=int(out.shape[0]),
        output=out2.tolist(),
        predictions=out2.argmax(-1).tolist(),
        bytes_received=len(body),
        server_time_s=elapsed,
    )


@serving.post(
    "/infer/{plan_id}",
    response_model=InferResponse,
    responses={409: {"model": ErrorBody, "description": "the plan runs entirely on the device"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "cut activation: 32-byte header + per sample fp16 "
            "scale, uint8 zero, packed codes (docs/SERVING.md)",
        }
    },
)
async def infer(request: Request, served: ServedPlanDep, settings: SettingsDep) -> InferResponse:
    """Runs the server half of a plan on the device's packed cut activation."""
    if served.pattern.activation_bits is None:
        raise HTTPException(
            409,
            f"plan {served.plan_id} runs entirely on the device; there "
            f"is nothing to infer on the server",
        )
    body = await request.body()
    return await run_in_threadpool(run_server_half, served, body, settings.max_batch)
