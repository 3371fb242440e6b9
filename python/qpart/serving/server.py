"""The QPART server (``qpart serve``): FastAPI app with versioned endpoints.

``GET /v1/health``, ``GET /v1/models``, ``POST /v1/plan``, ``GET /v1/segment/{plan_id}``,
``POST /v1/infer/{plan_id}``; the generated OpenAPI schema is at ``/openapi.json`` and
``/docs``. Every bad input gets a 4xx with ``{"detail": "<message>"}``. A bearer token is
required on every endpoint but ``/v1/health`` when ``token`` is set (401, checked first);
request bodies are bounded in size (413) and time (408); in-flight requests are bounded
(``max_concurrency``; a request waits at most ``queue_timeout_s`` for a slot, then 503 with
``Retry-After``); ``/v1/health`` is outside every limit (:class:`LimitMiddleware`).

The pieces: :mod:`.schemas` (pydantic request/response models), :mod:`.deps` (settings and
state on ``app.state``, typed dependencies, the token check), :mod:`.routes` (the routers);
this module assembles them in :func:`create_app` and runs the app (:func:`serve`,
:class:`ServerThread`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .._version import __version__
from . import routes
from .deps import ServerSettings, ServingState
from .registry import ModelEntry
from .schemas import PLAN_ID_PATTERN, SEGMENT_ID_HEADER

__all__ = [
    "PLAN_ID_PATTERN",
    "SEGMENT_ID_HEADER",
    "LimitMiddleware",
    "ServerSettings",
    "ServerThread",
    "create_app",
    "free_port",
    "serve",
    "validation_error_handler",
]


# ----------------------------------------------------------------------------- middleware


async def _within(awaitable, seconds: float):
    """``await awaitable`` or raise ``asyncio.TimeoutError`` after ``seconds``
    (``asyncio.timeout`` where there is one: it needs no extra task per call)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


#: Paths outside every limit and the token: liveness must answer while the server is loaded.
UNLIMITED_PATHS = frozenset({"/v1/health"})


class LimitMiddleware:
    """ASGI middleware that keeps the server up for everyone (docs/SERVING.md, "Limits").

    In order, before the app sees a request:

    1. ``/v1/health`` passes straight through (no token, no slot, no queue);
    2. the bearer token of every other ``/v1`` route is checked (401) before any body byte
       is read or a slot is taken, so unauthenticated clients cannot hold resources;
    3. a declared ``Content-Length`` over ``max_bytes`` gets 413;
    4. a request with a body takes one of ``upload_slots`` (503 at once when none is free)
       and must deliver the whole body within ``body_timeout_s`` (408) and ``max_bytes``
       (413, also for chunked bodies) - a stalled upload never holds a request slot;
    5. it waits at most ``queue_timeout_s`` for one of ``max_concurrency`` request slots,
       else 503 with ``Retry-After`` (load is shed quickly instead of queued).
    """

    def __init__(self, app, settings: ServerSettings):
        self.app = app
        self.settings = settings
        self.max_bytes = settings.max_body_bytes
        self._sem: asyncio.Semaphore | None = None
        self._uploads: asyncio.Semaphore | None = None

    async def _reject(self, send, status: int, message: str, headers=()) -> None:
        body = json.dumps({"detail": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _busy(self, send, what: str) -> None:
        retry = str(self.settings.retry_after_s).encode()
        await self._reject(
            send, 503, f"server busy: {what}; retry later", [(b"retry-after", retry)]
        )

    async def _read_body(self, receive) -> bytes | int:
        """The whole body, or the status to answer (408 too slow, 413 too large, 0 gone)."""
        try:
            return await _within(self._receive_body(receive), self.settings.body_timeout_s)
        except asyncio.TimeoutError:
            return 408

    async def _receive_body(self, receive) -> bytes | int:
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 0
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return 413
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _acquire_slot(self) -> bool:
        """Takes a request slot, waiting at most ``queue_timeout_s``; False when none freed."""
        if not self._sem.locked():  # the common case: no task, no timer
            await self._sem.acquire()
            return True
        try:
            await asyncio.wait_for(self._sem.acquire(), self.settings.queue_timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in UNLIMITED_PATHS:
            return await self.app(scope, receive, send)
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.settings.max_concurrency)
            self._uploads = asyncio.Semaphore(self.settings.upload_slots)
        headers = dict(scope.get("headers") or [])
        if scope.get("path", "").startswith("/v1/") and not self.settings.token_ok(
            headers.get(b"authorization", b"").decode("latin-1")
        ):
            return await self._reject(
                send, 401, "missing or invalid bearer token", [(b"www-authenticate", b"Bearer")]
            )
        length = headers.get(b"content-length")
        declared = 0
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await self._reject(send, 400, "invalid Content-Length header")
            if declared > self.max_bytes:
                return await self._reject(
                    send,
                    413,
                    f"request body of {declared} bytes exceeds the limit of {self.max_bytes} bytes",
                )
        body = b""
        if declared > 0 or b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            if self._uploads.locked():
                return await self._busy(send, "too many uploads in progress")
            async with self._uploads:
                got = await self._read_body(receive)
            if isinstance(got, int):
                if got == 408:
                    timeout = self.settings.body_timeout_s
                    return await self._reject(
                        send, 408, f"request body not received within {timeout} s"
                    )
                if got == 413:
                    return await self._reject(
                        send, 413, f"request body exceeds the limit of {self.max_bytes} bytes"
                    )
                return None  # the client went away
            body = got
        if not await self._acquire_slot():
            return await self._busy(send, "too many concurrent requests")
        try:
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
    """(status, message) of a validation error: 400 for a body that is not JSON, 422 for
    values that break the schema (each as ``"<location>: <message>"``)."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed JSON body: " + "; ".join(
            str(e.get("ctx", {}).get("error", e.get("msg"))) for e in errors
        )
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg')}")
    return 422, "invalid request: " + "; ".join(parts)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Request validation errors as ``{"detail": "<message>"}`` (400 or 422)."""
    status, message = _validation_message(exc)
    return JSONResponse({"detail": message}, status_code=status)


def create_app(models: Mapping[str, ModelEntry], settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app serving ``models`` (id -> :class:`ModelEntry`): the state on
    ``app.state`` (:class:`ServingState`), the routers of :mod:`.routes`, the limits
    middleware and the validation-error handler."""
    state = ServingState.build(models, settings)
    app = FastAPI(
        title="QPART server",
        version=__version__,
        description="Quantized partitioning for edge inference: plans, quantized "
        "device segments (safetensors) and the server half of the "
        "model. Wire formats: docs/SERVING.md.",
    )
    state.install(app)
    app.include_router(routes.meta)
    app.include_router(routes.serving)
    app.add_middleware(LimitMiddleware, settings=state.settings)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    return app


def serve(
    models: Mapping[str, ModelEntry],
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServerSettings | None = None,
    log_level: str = "warning",
) -> None:
    """Runs the app with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(
        create_app(models, settings),
        host=host,
        port=port,
        log_level=log_level,
        access_log=log_level in ("info", "debug"),
        lifespan="off",
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host``."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving :func:`create_app` in a background thread (loopback demo/tests).
    Use as a context manager; ``url`` is the base URL once started."""

    def __init__(
        self,
        models: Mapping[str, ModelEntry],
        settings: ServerSettings | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(
            create_app(models, settings),
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> ServerThread:
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

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
