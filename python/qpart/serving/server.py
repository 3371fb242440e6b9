"""The QPART server (``qpart serve``): FastAPI app with versioned endpoints.

``GET /v1/health``, ``GET /v1/models``, ``POST /v1/plan``, ``GET /v1/segment/{plan_id}``,
``POST /v1/infer/{plan_id}``; the generated OpenAPI schema is at ``/openapi.json`` and
``/docs``. Every bad input gets a 4xx with ``{"detail": "<message>"}``. Request bodies are
bounded (``max_body_bytes``, 413), in-flight requests are bounded (``max_concurrency``;
requests wait up to ``queue_timeout_s`` for a slot, then 503), and a bearer token is
required on every endpoint but ``/v1/health`` when ``token`` is set (401).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from .._version import __version__
from ..core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from ..planning.allocation import InfeasibleError
from ..planning.table import Request as PlanLookup
from .registry import ModelEntry, ServedPlan
from .wire import WireFormatError, decode_activation

SEGMENT_ID_HEADER = "X-QPART-Segment-Id"
PLAN_ID_PATTERN = r"^[0-9a-f]{16}$"


@dataclass(frozen=True)
class ServerSettings:
    """Limits and auth of a server instance."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_concurrency: int = 8
    queue_timeout_s: float = 30.0
    max_batch: int = 1024
    token: str | None = None


# ----------------------------------------------------------------------------- schemas

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class DeviceSpec(BaseModel):
    """The device's compute and radio profile (docs/PLANNING.md §2; Table II defaults)."""

    model_config = _STRICT
    cycles_per_mac: float = Field(5.0, gt=0, description="device cycles per MAC")
    clock_hz: float = Field(200e6, gt=0, description="device clock (Hz)")
    kappa_j_per_cycle_hz2: float = Field(1e-27, ge=0, description="energy coefficient")
    tx_power_w: float = Field(1.0, ge=0, description="transmit power (W)")
    rx_power_w: float = Field(0.0, ge=0, description="receive power (W)")


class ChannelSpec(BaseModel):
    """Link capacities in bit/s."""

    model_config = _STRICT
    uplink_bps: float = Field(200e6, gt=0)
    downlink_bps: float = Field(200e6, gt=0)


class WeightsSpec(BaseModel):
    """Objective weights ``J = w_t T + w_e E + w_c S``."""

    model_config = _STRICT
    time: float = Field(1.0, ge=0)
    energy: float = Field(1.0, ge=0)
    cost: float = Field(1.0, ge=0)


class PlanRequest(BaseModel):
    """A device's planning request."""

    model_config = _STRICT
    model: str = Field(..., min_length=1, max_length=128, description="registered model id")
    accuracy_budget: float = Field(..., gt=0, le=1, description="allowed accuracy loss (fraction)")
    device: DeviceSpec = DeviceSpec()
    channel: ChannelSpec = ChannelSpec()
    weights: WeightsSpec = WeightsSpec()
    memory_bytes: float | None = Field(None, gt=0, description="device memory; null = unbounded")
    held_segment: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                                     description="sha256 of a segment the device holds")


class PredictedTerms(BaseModel):
    """The planner's predicted objective terms for this request (s, J, cost units)."""

    device_time_s: float
    server_time_s: float
    tx_time_s: float
    total_time_s: float
    device_energy_j: float
    tx_energy_j: float
    total_energy_j: float
    server_cost: float
    objective: float


class PlanResponse(BaseModel):
    """The plan: partition point, widths, predicted terms, the segment to fetch."""

    plan_id: str
    model: str
    partition_point: int
    num_layers: int
    layer_names: list[str]
    bits: list[int]
    activation_bits: int | None
    accuracy_level: float = Field(description="calibrated level of the chosen pattern")
    predicted_loss: float
    weight_payload_bytes: int = Field(description="D_w: tensor bytes of the segment")
    activation_payload_bytes: int = Field(description="D_a per sample (0 when p = L)")
    fp32_weight_bytes: int
    memory_bytes: int
    device_macs: int
    server_macs: int
    input_shape: list[int]
    cut_shape: list[int] | None
    output_shape: list[int]
    segment_id: str
    segment_bytes: int = Field(description="container size (D_w + safetensors header)")
    segment_held: bool = Field(description="the device already holds this segment")
    predicted: PredictedTerms


class InferResponse(BaseModel):
    """Result of the server half."""

    plan_id: str
    batch: int
    output: list[list[float]]
    predictions: list[int]
    bytes_received: int
    server_time_s: float


class ModelInfo(BaseModel):
    id: str
    description: str
    num_layers: int
    valid_points: list[int]
    accuracy_levels: list[float]
    patterns: int
    input_shape: list[int]


class Health(BaseModel):
    status: str
    version: str
    models: list[str]


class ErrorBody(BaseModel):
    detail: str


# ----------------------------------------------------------------------------- middleware


class LimitMiddleware:
    """ASGI middleware: rejects bodies over ``max_bytes`` (413, also for chunked bodies)
    and bounds in-flight requests with a semaphore (503 after ``queue_timeout_s``)."""

    def __init__(self, app, max_bytes: int, max_concurrency: int, queue_timeout_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.max_concurrency = max_concurrency
        self.queue_timeout_s = queue_timeout_s
        self._sem: asyncio.Semaphore | None = None

    async def _reject(self, send, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await self._reject(send, 400, "invalid Content-Length header")
            if declared > self.max_bytes:
                return await self._reject(send, 413, f"request body of {declared} bytes exceeds "
                                                     f"the limit of {self.max_bytes} bytes")
        # Take a slot first, so buffered bodies are bounded by max_concurrency * max_bytes.
        try:
            await asyncio.wait_for(self._sem.acquire(), self.queue_timeout_s)
        except asyncio.TimeoutError:
            return await self._reject(send, 503, "server busy: too many concurrent requests")
        try:
            # Buffer the body (bounded) so a chunked upload cannot exceed the limit either.
            chunks, total, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > self.max_bytes:
                    return await self._reject(send, 413, f"request body exceeds the limit of "
                                                         f"{self.max_bytes} bytes")
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self._sem.release()


# ----------------------------------------------------------------------------- app


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed JSON body: " + "; ".join(
            str(e.get("ctx", {}).get("error", e.get("msg"))) for e in errors)
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg')}")
    return 422, "invalid request: " + "; ".join(parts)


def _plan_response(entry: ModelEntry, plan, served: ServedPlan, held: bool) -> PlanResponse:
    c = plan.costs
    seg = served.segments
    return PlanResponse(
        plan_id=served.plan_id, model=entry.model_id, partition_point=plan.partition_point,
        num_layers=entry.profile.num_layers, layer_names=list(plan.layer_names),
        bits=list(plan.bits), activation_bits=plan.activation_bits,
        accuracy_level=plan.accuracy_budget, predicted_loss=plan.predicted_loss,
        weight_payload_bytes=plan.weight_payload_bytes,
        activation_payload_bytes=plan.activation_payload_bytes,
        fp32_weight_bytes=served.fp32_weight_bytes, memory_bytes=plan.memory_bytes,
        device_macs=plan.device_macs, server_macs=plan.server_macs,
        input_shape=list(seg.input_shape),
        cut_shape=None if seg.cut_shape is None else list(seg.cut_shape),
        output_shape=list(seg.output_shape), segment_id=served.encoded.segment_id,
        segment_bytes=len(served.encoded.data), segment_held=held,
        predicted=PredictedTerms(
            device_time_s=c.device_time_s, server_time_s=c.server_time_s,
            tx_time_s=c.tx_time_s, total_time_s=c.total_time_s,
            device_energy_j=c.device_energy_j, tx_energy_j=c.tx_energy_j,
            total_energy_j=c.total_energy_j, server_cost=c.server_cost,
            objective=c.objective))


def create_app(models: Mapping[str, ModelEntry], settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app serving ``models`` (id -> :class:`ModelEntry`)."""
    settings = settings or ServerSettings()
    models = dict(models)
    plans: dict[str, tuple[ModelEntry, ServedPlan]] = {
        pid: (entry, sp) for entry in models.values() for pid, sp in entry.plans.items()}
    errors = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody},
              413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}

    app = FastAPI(title="QPART server", version=__version__,
                  description="Quantized partitioning for edge inference: plans, quantized "
                              "device segments (safetensors) and the server half of the "
                              "model. Wire formats: docs/SERVING.md.")
    app.add_middleware(LimitMiddleware, max_bytes=settings.max_body_bytes,
                       max_concurrency=settings.max_concurrency,
                       queue_timeout_s=settings.queue_timeout_s)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, message = _validation_message(exc)
        return JSONResponse({"detail": message}, status_code=status)

    def auth(request: Request) -> None:
        if settings.token is None:
            return
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {settings.token}".encode()):
            raise HTTPException(401, "missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    def lookup_plan(plan_id: str) -> tuple[ModelEntry, ServedPlan]:
        if plan_id not in plans:
            raise HTTPException(404, f"unknown plan id {plan_id!r}: ask POST /v1/plan first")
        return plans[plan_id]

    @app.get("/v1/health", response_model=Health, tags=["meta"])
    def health() -> Health:
        """Liveness and the registered model ids (no auth)."""
        return Health(status="ok", version=__version__, models=sorted(models))

    @app.get("/v1/models", response_model=list[ModelInfo], responses=errors, tags=["meta"],
             dependencies=[Depends(auth)])
    def list_models() -> list[ModelInfo]:
        """The registered models with their partition points and calibrated levels."""
        return [ModelInfo(id=e.model_id, description=e.description,
                          num_layers=e.profile.num_layers,
                          valid_points=list(e.profile.valid_points),
                          accuracy_levels=sorted({p.accuracy_budget for p in e.table.patterns}),
                          patterns=len(e.table), input_shape=list(
                              next(iter(e.plans.values())).segments.input_shape))
                for e in models.values()]

    @app.post("/v1/plan", response_model=PlanResponse, responses=errors, tags=["serving"],
              dependencies=[Depends(auth)])
    def plan(req: PlanRequest) -> PlanResponse:
        """Table lookup (paper Algorithm 2) for the device's request. A held segment that
        one of the patterns uses counts as free (no weight download)."""
        entry = models.get(req.model)
        if entry is None:
            raise HTTPException(404, f"unknown model {req.model!r}; registered: {sorted(models)}")
        try:
            lookup = PlanLookup(
                req.accuracy_budget,
                device=DeviceProfile(**req.device.model_dump(),
                                     memory_bytes=math.inf if req.memory_bytes is None
                                     else req.memory_bytes),
                channel=ChannelState(**req.channel.model_dump()),
                weights=ObjectiveWeights(**req.weights.model_dump()))
            result, served = entry.plan(lookup, req.held_segment)
        except InfeasibleError as exc:
            raise HTTPException(422, f"infeasible request ({exc.constraint}): {exc}") from exc
        except ValueError as exc:
            raise HTTPException(422, f"invalid request: {exc}") from exc
        return _plan_response(entry, result, served,
                              req.held_segment == served.encoded.segment_id)

    @app.get("/v1/segment/{plan_id}", responses={
        200: {"content": {"application/octet-stream": {}},
              "description": "safetensors container of the quantized device segment"},
        304: {"description": "the device already holds this segment (If-None-Match)"},
        **errors}, tags=["serving"], dependencies=[Depends(auth)])
    def segment(request: Request, plan_id: str = Path(..., pattern=PLAN_ID_PATTERN)) -> Response:
        """The device segment of a plan. Sends ``ETag``/``X-QPART-Segment-Id`` = sha256 of
        the bytes; with ``If-None-Match`` naming that id the answer is an empty 304."""
        _, served = lookup_plan(plan_id)
        sid = served.encoded.segment_id
        headers = {"ETag": f'"{sid}"', SEGMENT_ID_HEADER: sid}
        held = {t.strip().strip('"') for t in request.headers.get("if-none-match", "").split(",")}
        if sid in held:
            return Response(status_code=304, headers=headers)
        return Response(served.encoded.data, media_type="application/octet-stream",
                        headers=headers)

    def _infer(served: ServedPlan, plan_id: str, body: bytes) -> InferResponse:
        start = time.perf_counter()
        pl = served.pattern
        try:
            head, x = decode_activation(body, served.segments.cut_shape, pl.activation_bits,
                                        settings.max_batch)
        except WireFormatError as exc:
            raise HTTPException(400, f"bad activation body: {exc}") from exc
        if head.plan_id != plan_id:
            raise HTTPException(400, f"activation body is for plan {head.plan_id!r}, not "
                                     f"{plan_id!r}")
        with torch.no_grad():
            out = served.segments.server(x)
        elapsed = time.perf_counter() - start
        out2 = out.reshape(out.shape[0], -1)
        return InferResponse(plan_id=plan_id, batch=int(out.shape[0]),
                             output=out2.tolist(), predictions=out2.argmax(-1).tolist(),
                             bytes_received=len(body), server_time_s=elapsed)

    @app.post("/v1/infer/{plan_id}", response_model=InferResponse, responses=errors,
              tags=["serving"], dependencies=[Depends(auth)], openapi_extra={
                  "requestBody": {"required": True, "content": {"application/octet-stream": {
                      "schema": {"type": "string", "format": "binary"}}},
                      "description": "cut activation: 32-byte header + per sample fp16 "
                                     "scale, uint8 zero, packed codes (docs/SERVING.md)"}})
    async def infer(request: Request,
                    plan_id: str = Path(..., pattern=PLAN_ID_PATTERN)) -> InferResponse:
        """Runs the server half of a plan on the device's packed cut activation."""
        _, served = lookup_plan(plan_id)
        if served.pattern.activation_bits is None:
            raise HTTPException(409, f"plan {plan_id} runs entirely on the device; there is "
                                     f"nothing to infer on the server")
        body = await request.body()
        return await run_in_threadpool(_infer, served, plan_id, body)

    return app


def serve(models: Mapping[str, ModelEntry], host: str = "127.0.0.1", port: int = 8000,
          settings: ServerSettings | None = None, log_level: str = "warning") -> None:
    """Runs the app with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(create_app(models, settings), host=host, port=port, log_level=log_level)


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host``."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving :func:`create_app` in a background thread (loopback demo/tests).
    Use as a context manager; ``url`` is the base URL once started."""

    def __init__(self, models: Mapping[str, ModelEntry], settings: ServerSettings | None = None,
                 host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(create_app(models, settings), host=self.host, port=self.port,
                                log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "ServerThread":
        import threading

        self.thread = threading.Thread(target=self.server.run, daemon=True, name="qpart-server")
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
