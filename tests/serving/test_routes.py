"""The routes in process (``fastapi.testclient``, no sockets) on a tiny MLP: every endpoint's
answers and error statuses, auth, the body limit, and the typed dependencies on their own
(called directly and swapped with ``app.dependency_overrides``)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import torch
from fastapi import HTTPException
from fastapi.testclient import TestClient
from starlette.requests import Request

from qpart.core.split import roundtrip_activation
from qpart.serving import deps
from qpart.serving.deps import (
    ServerSettings,
    ServingState,
    get_models,
    get_served_plan,
    get_settings,
    require_token,
)
from qpart.serving.registry import ModelEntry
from qpart.serving.schemas import PLAN_ID_PATTERN
from qpart.serving.server import SEGMENT_ID_HEADER, create_app
from qpart.serving.wire import ACTIVATION_HEADER_BYTES, encode_activation
from serving_helpers import tiny_mlp_entry

MODEL = "tiny-mlp"
TOKEN = "secret"
MAX_BODY = 4096
OTHER = "0" * 16  # well-formed, unknown plan id


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    """A 16-24-4 MLP, calibrated on 200 random inputs at two levels (~1 s)."""
    return tiny_mlp_entry(MODEL)


@pytest.fixture(scope="module")
def client(entry):
    with TestClient(create_app({MODEL: entry}, ServerSettings(max_body_bytes=MAX_BODY))) as c:
        yield c


@pytest.fixture(scope="module")
def secured(entry):
    with TestClient(create_app({MODEL: entry}, ServerSettings(token=TOKEN))) as c:
        yield c


def _split_plan(entry: ModelEntry):
    """A served plan with both halves non-empty (0 < p < L): (plan id, served plan)."""
    for pid, sp in entry.plans.items():
        if 0 < sp.pattern.partition_point < entry.profile.num_layers:
            return pid, sp
    raise AssertionError("the tiny model has no split pattern")


def _device_only_plan(entry: ModelEntry):
    """A served plan at p = L (no activation, nothing for the server)."""
    for pid, sp in entry.plans.items():
        if sp.pattern.activation_bits is None:
            return pid, sp
    raise AssertionError("the tiny model has no p = L pattern")


def _body(sp, x: torch.Tensor, plan_id: str | None = None) -> tuple[bytes, torch.Tensor]:
    """The infer body for inputs ``x`` under ``sp`` and the cut activation it packs."""
    with torch.no_grad():
        cut = sp.device_module()(x)
    return encode_activation(cut, sp.pattern.activation_bits, plan_id or sp.plan_id), cut


def _detail(r) -> str:
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail, r.text
    return detail


# ----------------------------------------------------------------------------- meta


def test_health_needs_no_token(client, secured):
    for c in (client, secured):
        r = c.get("/v1/health")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok" and body["models"] == [MODEL] and body["version"]


def test_models_lists_the_entry(client, entry):
    r = client.get("/v1/models")
    assert r.status_code == 200
    (info,) = r.json()
    assert info["id"] == MODEL and info["description"] == "16-24-4 MLP"
    assert info["num_layers"] == entry.profile.num_layers == 2
    assert info["valid_points"] == list(entry.profile.valid_points)
    assert info["accuracy_levels"] == [0.01, 0.02]
    assert info["patterns"] == len(entry.table) and info["input_shape"] == [16]


# ----------------------------------------------------------------------------- plan


def test_plan_happy_path_matches_the_registry(client, entry):
    r = client.post("/v1/plan", json={"model": MODEL, "accuracy_budget": 0.02})
    assert r.status_code == 200, r.text
    plan = r.json()
    served = entry.plans[plan["plan_id"]]
    assert plan["model"] == MODEL and plan["num_layers"] == 2
    assert plan["partition_point"] == served.pattern.partition_point
    assert plan["bits"] == list(served.pattern.bits)
    assert plan["activation_bits"] == served.pattern.activation_bits
    assert plan["segment_id"] == served.encoded.segment_id
    assert plan["segment_bytes"] == len(served.encoded.data)
    assert plan["input_shape"] == [16] and plan["output_shape"] == [4]
    assert not plan["segment_held"]
    assert plan["accuracy_level"] <= 0.02
    terms = plan["predicted"]
    assert terms["total_time_s"] > 0 and terms["objective"] > 0
    # naming the segment it holds: the same answer, now marked held
    again = client.post(
        "/v1/plan",
        json={"model": MODEL, "accuracy_budget": 0.02, "held_segment": plan["segment_id"]},
    ).json()
    assert again["segment_held"] and again["segment_id"] == plan["segment_id"]


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"model": "nope", "accuracy_budget": 0.01}, 404, "unknown model"),
        ({"model": MODEL, "accuracy_budget": 2}, 422, "accuracy_budget"),
        ({"model": MODEL, "accuracy_budget": 0.01, "clock": 1}, 422, "clock"),
        ({"model": MODEL, "accuracy_budget": 0.01, "device": {"clock_hz": -1}}, 422, "clock_hz"),
        (
            {"model": MODEL, "accuracy_budget": 0.01, "channel": {"uplink_bps": 0}},
            422,
            "uplink_bps",
        ),
        ({"model": MODEL}, 422, "accuracy_budget"),
        ({"model": MODEL, "accuracy_budget": 0.01, "held_segment": "xyz"}, 422, "held_segment"),
        ({"model": MODEL, "accuracy_budget": 1e-6}, 422, "infeasible request (accuracy)"),
    ],
)
def test_plan_errors(client, body, status, needle):
    r = client.post("/v1/plan", json=body)
    assert r.status_code == status, r.text
    assert needle in _detail(r)


def test_plan_malformed_json_is_400(client):
    r = client.post("/v1/plan", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and _detail(r).startswith("malformed JSON body")


# ----------------------------------------------------------------------------- segment


def test_segment_bytes_and_conditional_get(client, entry):
    pid, sp = _split_plan(entry)
    sid = sp.encoded.segment_id
    r = client.get(f"/v1/segment/{pid}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content == sp.encoded.data and hashlib.sha256(r.content).hexdigest() == sid
    assert r.headers["etag"] == f'"{sid}"' and r.headers[SEGMENT_ID_HEADER] == sid
    for held in (f'"{sid}"', sid, f'"{"a" * 64}", "{sid}"'):
        r = client.get(f"/v1/segment/{pid}", headers={"If-None-Match": held})
        assert r.status_code == 304 and r.content == b"", held
        assert r.headers[SEGMENT_ID_HEADER] == sid
    r = client.get(f"/v1/segment/{pid}", headers={"If-None-Match": f'"{"a" * 64}"'})
    assert r.status_code == 200 and r.content == sp.encoded.data


@pytest.mark.parametrize(
    "plan_id,status", [(OTHER, 404), ("xyz", 422), ("F37265591C07F7D2", 422), ("0" * 17, 422)]
)
def test_segment_bad_plan_ids(client, plan_id, status):
    r = client.get(f"/v1/segment/{plan_id}")
    assert r.status_code == status, r.text
    detail = _detail(r)
    assert ("unknown plan id" in detail) if status == 404 else ("plan_id" in detail)


# ----------------------------------------------------------------------------- infer


def test_infer_round_trip_equals_the_server_segment(client, entry):
    pid, sp = _split_plan(entry)
    x = torch.randn(5, 16)
    body, cut = _body(sp, x)
    assert len(body) == ACTIVATION_HEADER_BYTES + 5 * sp.pattern.activation_payload_bytes
    r = client.post(
        f"/v1/infer/{pid}", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 200, r.text
    res = r.json()
    with torch.no_grad():
        ref = sp.server(roundtrip_activation(cut, sp.pattern.activation_bits))
    out = torch.tensor(res["output"])
    torch.testing.assert_close(out, ref.reshape(5, -1), rtol=1e-5, atol=1e-5)
    assert res["plan_id"] == pid and res["batch"] == 5
    assert res["predictions"] == ref.reshape(5, -1).argmax(-1).tolist()
    assert res["bytes_received"] == len(body) and res["server_time_s"] >= 0


def test_infer_errors(client, entry):
    pid, sp = _split_plan(entry)
    full_pid, _ = _device_only_plan(entry)
    body, _ = _body(sp, torch.randn(1, 16))
    foreign, _ = _body(sp, torch.randn(1, 16), plan_id=OTHER)
    cases = [
        ("wrong plan id in body", pid, foreign, 400, "activation body is for plan"),
        ("truncated body", pid, body[:-3], 400, "bad activation body"),
        ("padded body", pid, body + b"\0", 400, "bad activation body"),
        ("empty body", pid, b"", 400, "bad activation body"),
        ("unknown plan", OTHER, body, 404, "unknown plan id"),
        ("malformed plan id", "xyz", body, 422, "plan_id"),
        ("p = L plan", full_pid, body, 409, "runs entirely on the device"),
        ("over the body limit", pid, b"\0" * (MAX_BODY + 1), 413, "exceeds the limit"),
    ]
    for name, plan_id, content, status, needle in cases:
        r = client.post(f"/v1/infer/{plan_id}", content=content)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert needle in _detail(r), (name, r.text)


def test_chunked_body_over_the_limit_is_413(client, entry):
    pid, _ = _split_plan(entry)
    r = client.post(f"/v1/infer/{pid}", content=iter([b"\0" * 3000, b"\0" * 3000]))
    assert r.status_code == 413 and "exceeds the limit" in _detail(r)


# ----------------------------------------------------------------------------- auth


def test_auth_guards_every_route_but_health(secured, entry):
    pid, sp = _split_plan(entry)
    body, _ = _body(sp, torch.randn(1, 16))
    calls = {
        "models": lambda **kw: secured.get("/v1/models", **kw),
        "plan": lambda **kw: secured.post(
            "/v1/plan", json={"model": MODEL, "accuracy_budget": 0.01}, **kw
        ),
        "segment": lambda **kw: secured.get(f"/v1/segment/{pid}", **kw),
        "infer": lambda **kw: secured.post(f"/v1/infer/{pid}", content=body, **kw),
    }
    for name, call in calls.items():
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = call(headers=headers)
            assert r.status_code == 401, (name, headers, r.text)
            assert _detail(r) == "missing or invalid bearer token"
            assert r.headers["www-authenticate"] == "Bearer"
        r = call(headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, (name, r.text)
    # the token is checked before the plan id is looked up
    assert secured.get(f"/v1/segment/{OTHER}").status_code == 401
    assert (
        secured.get(
            f"/v1/segment/{OTHER}", headers={"Authorization": f"Bearer {TOKEN}"}
        ).status_code
        == 404
    )


# ----------------------------------------------------------------------------- dependencies


def test_state_lives_on_app_state(entry):
    app = create_app({MODEL: entry})
    state = app.state.qpart
    assert isinstance(state, ServingState) and state.settings == ServerSettings()
    assert dict(state.models) == {MODEL: entry}
    assert dict(state.plans) == entry.plans
    with pytest.raises(TypeError):
        state.models["x"] = entry  # read-only views


def test_served_plan_and_token_dependencies_called_directly(entry):
    pid, sp = _split_plan(entry)
    assert asyncio.run(get_served_plan(pid, entry.plans)) is sp
    with pytest.raises(HTTPException) as info:
        asyncio.run(get_served_plan(OTHER, entry.plans))
    assert info.value.status_code == 404

    def request(auth: str | None) -> Request:
        headers = [] if auth is None else [(b"authorization", auth.encode())]
        return Request({"type": "http", "headers": headers})

    assert asyncio.run(require_token(request(None), ServerSettings())) is None
    assert (
        asyncio.run(require_token(request(f"Bearer {TOKEN}"), ServerSettings(token=TOKEN))) is None
    )
    for auth in (None, "Bearer nope", f"bearer {TOKEN}"):
        with pytest.raises(HTTPException) as info:
            asyncio.run(require_token(request(auth), ServerSettings(token=TOKEN)))
        assert info.value.status_code == 401


def _nothing() -> dict:
    """An empty registry / plan index (a dependency override takes no arguments)."""
    return {}


def test_dependency_overrides_swap_settings_and_models(entry):
    app = create_app({MODEL: entry})
    with TestClient(app) as c:
        assert c.get("/v1/models").status_code == 200
        app.dependency_overrides[get_settings] = lambda: ServerSettings(token=TOKEN)
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/v1/health").status_code == 200
        app.dependency_overrides.clear()
        app.dependency_overrides[get_models] = _nothing
        assert c.get("/v1/health").json()["models"] == []
        assert c.get("/v1/models").json() == []
        r = c.post("/v1/plan", json={"model": MODEL, "accuracy_budget": 0.01})
        assert r.status_code == 404 and "registered: []" in _detail(r)
        app.dependency_overrides.clear()
        app.dependency_overrides[deps.get_plans] = _nothing
        pid, _ = _split_plan(entry)
        assert c.get(f"/v1/segment/{pid}").status_code == 404


def test_openapi_metadata(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {
        "/v1/health",
        "/v1/models",
        "/v1/plan",
        "/v1/segment/{plan_id}",
        "/v1/infer/{plan_id}",
    }
    assert paths["/v1/health"]["get"]["tags"] == ["meta"]
    assert paths["/v1/models"]["get"]["tags"] == ["meta"]
    for path, method in (
        ("/v1/plan", "post"),
        ("/v1/segment/{plan_id}", "get"),
        ("/v1/infer/{plan_id}", "post"),
    ):
        op = paths[path][method]
        assert op["tags"] == ["serving"], path
        for status in ("400", "401", "404", "413", "422", "503"):
            assert op["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }, (path, status)
    assert "304" in paths["/v1/segment/{plan_id}"]["get"]["responses"]
    infer = paths["/v1/infer/{plan_id}"]["post"]
    assert infer["requestBody"]["content"]["application/octet-stream"]["schema"] == {
        "type": "string",
        "format": "binary",
    }
    (param,) = infer["parameters"]
    assert param["name"] == "plan_id" and param["in"] == "path"
    assert param["schema"]["pattern"] == PLAN_ID_PATTERN
    assert "PlanRequest" in schema["components"]["schemas"]
