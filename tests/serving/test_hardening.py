"""Hardening of the server (issue 18): no request reaches a 500, every status is in the
OpenAPI with the bearer scheme, auth comes before body validation, activation bodies are
checked to the last byte, and slow or excess clients cannot lock anyone out.

Liveness bounds are generous (seconds): these are not timing benchmarks.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from qpart.core.costs import DeviceProfile
from qpart.core.profile import profile
from qpart.planning.calibration import calibrate
from qpart.serving.deps import ServerSettings
from qpart.serving.registry import ModelEntry
from qpart.serving.server import LimitMiddleware, ServerThread, create_app
from qpart.serving.wire import (
    ACTIVATION_HEADER_BYTES,
    WireFormatError,
    decode_activation,
    encode_activation,
)

MODEL = "tiny-mlp"
TOKEN = "secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    """A 16-24-4 MLP, calibrated on 200 random inputs at two levels (~1 s)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 4)).eval()
    x = torch.randn(200, 16, generator=gen)
    prof = profile(model, x[:2])
    calib = calibrate(model, x, prof=prof, levels=(0.01, 0.02), progress=False)
    return ModelEntry.create(MODEL, model, x[:2], calib, description="16-24-4 MLP")


@pytest.fixture(scope="module")
def secured(entry):
    with TestClient(create_app({MODEL: entry}, ServerSettings(token=TOKEN))) as c:
        yield c


# ----------------------------------------------------------------------------- POST /v1/plan


@pytest.mark.parametrize(
    "extra",
    [
        {"device": {"clock_hz": 1e200}},  # the reproducer (OverflowError -> 500)
        {"device": {"clock_hz": 1.7e308}},
        {"device": {"cycles_per_mac": 1e308}},
        {"device": {"cycles_per_mac": 1e-300}},
        {"device": {"kappa_j_per_cycle_hz2": 1e300}},
        {"device": {"tx_power_w": 1e308}},
        {"channel": {"uplink_bps": 1e-300}},
        {"channel": {"downlink_bps": 1e308}},
        {"weights": {"time": 1e308}},
        {"weights": {"energy": 1e308, "cost": 1e308}},
        {"memory_bytes": 1e308},
        {"memory_bytes": 1e-300},
    ],
)
def test_plan_out_of_range_numbers_are_422_never_500(secured, extra):
    r = secured.post(
        "/v1/plan", json={"model": MODEL, "accuracy_budget": 0.01, **extra}, headers=AUTH
    )
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], str)


def test_plan_at_the_bounds_gives_finite_numbers(secured):
    body = {
        "model": MODEL,
        "accuracy_budget": 1.0,
        "device": {
            "clock_hz": 1e12,
            "cycles_per_mac": 1e6,
            "kappa_j_per_cycle_hz2": 1e-15,
            "tx_power_w": 1e4,
            "rx_power_w": 1e4,
        },
        "channel": {"uplink_bps": 1.0, "downlink_bps": 1.0},
        "weights": {"time": 1e6, "energy": 1e6, "cost": 1e6},
        "memory_bytes": 1e18,
    }
    r = secured.post("/v1/plan", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    predicted = r.json()["predicted"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in predicted.values()), predicted


def test_cost_model_overflow_is_a_value_error():
    with pytest.raises(ValueError, match="overflows"):
        _ = DeviceProfile(clock_hz=1e200).energy_per_mac_j


# ----------------------------------------------------------------------------- OpenAPI and auth


def test_openapi_declares_bearer_and_every_status(secured):
    spec = secured.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`",
    }
    paths = spec["paths"]
    assert "security" not in paths["/v1/health"]["get"]
    for path, method in [
        ("/v1/models", "get"),
        ("/v1/plan", "post"),
        ("/v1/segment/{plan_id}", "get"),
        ("/v1/infer/{plan_id}", "post"),
    ]:
        op = paths[path][method]
        assert {"bearer": []} in op["security"], path
        assert {"200", "401", "408", "413", "503"} <= set(op["responses"]), (path, op["responses"])
    assert "409" in paths["/v1/infer/{plan_id}"]["post"]["responses"]
    assert "304" in paths["/v1/segment/{plan_id}"]["get"]["responses"]


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {"content-type": "application/json"}),
        (b'{"model": 3}', {"content-type": "application/json"}),
        (b"x" * (5 * 1024 * 1024), {"content-type": "application/json"}),
    ],
)
def test_unauthenticated_caller_gets_401_before_body_validation(secured, content, headers):
    for auth in ({}, {"Authorization": "Bearer wrong"}):
        r = secured.post("/v1/plan", content=content, headers={**headers, **auth})
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
    r = secured.post("/v1/plan", content=content, headers={**headers, **AUTH})
    assert r.status_code in (400, 413, 422), r.text


# ----------------------------------------------------------------------------- activation bodies


def _split_body(entry: ModelEntry) -> tuple[bytes, tuple[int, ...], int]:
    for sp in entry.plans.values():
        if sp.pattern.activation_bits is not None and sp.cut_shape:
            with torch.no_grad():
                cut = sp.device_module()(torch.randn(2, 16))
            bits = sp.pattern.activation_bits
            return encode_activation(cut, bits, sp.plan_id), tuple(sp.cut_shape), bits
    raise AssertionError("no split plan")


def test_activation_reserved_byte_must_be_zero(entry):
    body, shape, bits = _split_body(entry)
    decode_activation(body, shape, bits)  # the untouched body is fine
    tampered = bytearray(body)
    tampered[7] = 1  # the reserved header byte
    with pytest.raises(WireFormatError, match="reserved"):
        decode_activation(bytes(tampered), shape, bits)


@pytest.mark.parametrize("scale", [-1.0, -0.0, -65504.0])
def test_activation_negative_scale_is_rejected(entry, scale):
    body, shape, bits = _split_body(entry)
    tampered = bytearray(body)
    tampered[ACTIVATION_HEADER_BYTES : ACTIVATION_HEADER_BYTES + 2] = struct.pack("<e", scale)
    with pytest.raises(WireFormatError, match="non-negative"):
        decode_activation(bytes(tampered), shape, bits)


# ----------------------------------------------------------------------------- load, slow clients


def _stalled_upload(url: str, path: str) -> socket.socket:
    """A client that sends the headers and 10 of 1000 body bytes, then stalls."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode() + b"0123456789")
    return sock


def test_stalled_uploads_lock_nobody_out(entry):
    """As many stalled uploads as request slots (and more) leave health, authenticated calls
    and the shedding of further uploads working; the stalled ones get 408 in the end."""
    pid = next(iter(entry.plans))
    settings = ServerSettings(
        token=TOKEN, max_concurrency=2, max_uploads=3, body_timeout_s=3.0, queue_timeout_s=0.2
    )
    with ServerThread({MODEL: entry}, settings) as server:
        stalled = [_stalled_upload(server.url, f"/v1/infer/{pid}") for _ in range(3)]
        try:
            time.sleep(0.3)  # let the server start reading them
            with httpx.Client(base_url=server.url, timeout=10) as c:
                t0 = time.monotonic()
                assert c.get("/v1/health").status_code == 200
                assert time.monotonic() - t0 < 5.0  # the bound is 1 s; generous here
                assert c.get("/v1/models", headers=AUTH).status_code == 200
                r = c.post("/v1/plan", json={"model": MODEL, "accuracy_budget": 0.01}, headers=AUTH)
                assert r.status_code == 503, r.text  # upload slots full: shed at once
                assert r.headers["retry-after"] == "1"
                assert c.post("/v1/plan", json={}).status_code == 401
            for sock in stalled:  # each stalled upload ends with a 408, not a hang
                sock.settimeout(30)
                assert sock.recv(4096).startswith(b"HTTP/1.1 408")
            with httpx.Client(base_url=server.url, timeout=10) as c:
                r = c.post("/v1/plan", json={"model": MODEL, "accuracy_budget": 0.01}, headers=AUTH)
                assert r.status_code == 200, r.text
        finally:
            for sock in stalled:
                sock.close()


def test_excess_load_is_shed_with_retry_after_and_health_bypasses_it():
    """With every request slot busy, a request waits ``queue_timeout_s`` at most, then 503
    with ``Retry-After``; ``/v1/health`` answers meanwhile."""
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        if scope["path"] != "/v1/health":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    settings = ServerSettings(max_concurrency=1, queue_timeout_s=0.1, retry_after_s=7)
    app = LimitMiddleware(slow_app, settings)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            busy = asyncio.create_task(c.get("/v1/models"))
            await asyncio.sleep(0.05)
            shed = await asyncio.wait_for(c.get("/v1/models"), 10)
            health = await asyncio.wait_for(c.get("/v1/health"), 10)
            release.set()
            return (await busy).status_code, shed, health.status_code

    first, shed, health = asyncio.run(scenario())
    assert first == 200 and health == 200
    assert shed.status_code == 503 and shed.headers["retry-after"] == "7"
    assert "busy" in shed.json()["detail"]


def test_settings_are_validated():
    with pytest.raises(ValueError):
        ServerSettings(max_concurrency=0)
    with pytest.raises(ValueError):
        ServerSettings(body_timeout_s=0)
    assert ServerSettings(max_concurrency=3).upload_slots == 12
