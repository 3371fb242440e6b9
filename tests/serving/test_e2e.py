"""End to end over loopback against a real ``qpart serve`` process: outputs equal the
in-process split model, bytes on the wire equal the planner's payloads, cached segments are
not resent, every bad input gets its 4xx (and the server keeps serving), and a bounded load
test completes without errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from qpart.apps.serve import MNIST_MODEL_ID, mnist_entry
from qpart.core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from qpart.core.split import run_split
from qpart.serving.device import DeviceClient, ServerError
from qpart.serving.server import free_port
from qpart.serving.wire import ACTIVATION_HEADER_BYTES, encode_activation
from qpart.workloads.data import load_mnist
from serving_helpers import mlp_cache, wait_for_health

pytestmark = pytest.mark.slow  # a real server process + a small calibration (~25 s setup)

TOKEN = "test-token"
CALIB = 200  # small calibration: these tests check the serving path, not the planner
MAX_BODY = 64 * 1024
MODEL = MNIST_MODEL_ID
GATEWAY = dict(
    profile=DeviceProfile(cycles_per_mac=1, clock_hz=1e9), weights=ObjectiveWeights(1, 1, 1000)
)  # -> all layers on the device at ANY_LOSS
#: At a 100 % budget every stored pattern is servable, so the cheapest is a uniform 1-bit
#: pattern and which point wins follows from the cost model and the architecture alone, not
#: from the trained weights (at tighter budgets it depends on which patterns pass the held-out
#: bound, which differs by machine): the default request splits at the input, GATEWAY runs
#: every layer on the device.
ANY_LOSS = 1.0
PHONE = dict(profile=DeviceProfile(clock_hz=2e9), weights=ObjectiveWeights(1, 1, 100))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache with the trained MLP and a small calibration: the server starts in seconds."""
    return mlp_cache(tmp_path_factory.mktemp("qpart-serving"), CALIB)


@pytest.fixture(scope="module")
def entry(cache):
    """The same model entry the server builds (deterministic), for in-process references."""
    return mnist_entry(cache, 0, CALIB)


@pytest.fixture(scope="module")
def server(cache):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qpart.cli",
            "serve",
            "--port",
            str(port),
            "--cache-dir",
            str(cache),
            "--calib-samples",
            str(CALIB),
            "--token",
            TOKEN,
            "--max-body-bytes",
            str(MAX_BODY),
            "--max-concurrency",
            "4",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_health(url, proc, 60)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def digits():
    data = load_mnist(seed=0)
    return data.x_test[:16], data.y_test[:16]


def _client(url, **kw) -> DeviceClient:
    return DeviceClient(url, token=TOKEN, **kw)


def _auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def _valid_plan(url, budget: float = ANY_LOSS) -> dict:
    r = httpx.post(
        f"{url}/v1/plan", json={"model": MODEL, "accuracy_budget": budget}, headers=_auth()
    )
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(
    "budget,kw",
    [
        (0.01, {}),
        (0.02, PHONE),
        (ANY_LOSS, GATEWAY),
        (0.005, {"channel": ChannelState(1e6, 1e6)}),
    ],
)
def test_end_to_end_matches_in_process_split_and_predicted_bytes(server, entry, digits, budget, kw):
    x, _ = digits
    with _client(server, **kw) as dev:
        res = dev.run(x[:3], MODEL, budget)
    plan = res.plan
    served = entry.plans[plan["plan_id"]]
    ref = run_split(served.device_module(), served.server, x[:3], plan["activation_bits"]).reshape(
        3, -1
    )
    torch.testing.assert_close(res.output, ref, rtol=1e-4, atol=1e-4)
    # bytes on the wire = the planner's payloads (+ fixed headers)
    assert res.segment_tensor_bytes == plan["weight_payload_bytes"]
    assert res.segment_bytes == plan["segment_bytes"]
    assert 0 < res.segment_bytes - plan["weight_payload_bytes"] < 8192
    if plan["activation_bits"] is None:
        assert plan["partition_point"] == plan["num_layers"] and res.activation_bytes == 0
    else:
        assert (
            res.activation_bytes == ACTIVATION_HEADER_BYTES + 3 * plan["activation_payload_bytes"]
        )
    if kw is GATEWAY:
        assert plan["partition_point"] == plan["num_layers"]


def test_cached_segment_is_not_resent_and_counts_as_free(server, digits):
    x, _ = digits
    with _client(server, **PHONE) as dev:
        first = dev.run(x[:1], MODEL, 0.02)
        again = dev.run(x[1:2], MODEL, 0.02)
    assert first.segment_bytes > 0 and first.plan["partition_point"] > 0
    assert not first.plan["segment_held"]
    assert again.segment_bytes == 0 and again.segment_cached and again.plan["segment_held"]
    assert again.plan["plan_id"] == first.plan["plan_id"]
    # a held segment's download is free: less predicted transfer time
    assert again.plan["predicted"]["tx_time_s"] < first.plan["predicted"]["tx_time_s"]
    # conditional GET: 304 and no body when the device names the segment it holds
    sid, pid = first.plan["segment_id"], first.plan["plan_id"]
    r = httpx.get(f"{server}/v1/segment/{pid}", headers={**_auth(), "If-None-Match": f'"{sid}"'})
    assert r.status_code == 304 and r.content == b"" and r.headers["x-qpart-segment-id"] == sid
    r = httpx.get(f"{server}/v1/segment/{pid}", headers=_auth())
    assert r.status_code == 200 and r.headers["x-qpart-segment-id"] == sid


def _bad_requests(url: str, plan: dict, full_plan: dict):
    pid, bits = plan["plan_id"], plan["activation_bits"]
    body = encode_activation(torch.rand(1, *plan["cut_shape"]), bits, pid)
    other = "0" * 16
    ok = {"model": MODEL, "accuracy_budget": 0.01}
    a = _auth()
    return [
        (
            "malformed JSON",
            400,
            lambda: httpx.post(
                f"{url}/v1/plan",
                content=b"{not json",
                headers={**a, "Content-Type": "application/json"},
            ),
        ),
        (
            "unknown model",
            404,
            lambda: httpx.post(f"{url}/v1/plan", json={**ok, "model": "nope"}, headers=a),
        ),
        (
            "negative clock",
            422,
            lambda: httpx.post(
                f"{url}/v1/plan", json={**ok, "device": {"clock_hz": -1}}, headers=a
            ),
        ),
        (
            "zero bandwidth",
            422,
            lambda: httpx.post(
                f"{url}/v1/plan", json={**ok, "channel": {"uplink_bps": 0}}, headers=a
            ),
        ),
        (
            "budget above 1",
            422,
            lambda: httpx.post(f"{url}/v1/plan", json={**ok, "accuracy_budget": 2}, headers=a),
        ),
        (
            "unknown field",
            422,
            lambda: httpx.post(f"{url}/v1/plan", json={**ok, "clock": 1}, headers=a),
        ),
        (
            "impossible budget",
            422,
            lambda: httpx.post(f"{url}/v1/plan", json={**ok, "accuracy_budget": 1e-6}, headers=a),
        ),
        (
            "too little memory",
            422,
            lambda: httpx.post(f"{url}/v1/plan", json={**ok, "memory_bytes": 10}, headers=a),
        ),
        (
            "truncated activation",
            400,
            lambda: httpx.post(f"{url}/v1/infer/{pid}", content=body[:-5], headers=a),
        ),
        (
            "padded activation",
            400,
            lambda: httpx.post(f"{url}/v1/infer/{pid}", content=body + b"\0\0", headers=a),
        ),
        (
            "wrong-shaped activation",
            400,
            lambda: httpx.post(
                f"{url}/v1/infer/{pid}",
                content=encode_activation(torch.rand(1, 7), bits, pid),
                headers=a,
            ),
        ),
        (
            "wrong width",
            400,
            lambda: httpx.post(
                f"{url}/v1/infer/{pid}",
                content=encode_activation(
                    torch.rand(1, *plan["cut_shape"]), 8 if bits != 8 else 7, pid
                ),
                headers=a,
            ),
        ),
        ("empty body", 400, lambda: httpx.post(f"{url}/v1/infer/{pid}", content=b"", headers=a)),
        (
            "oversized body",
            413,
            lambda: httpx.post(f"{url}/v1/infer/{pid}", content=b"\0" * (MAX_BODY + 1), headers=a),
        ),
        (
            "oversized chunked body",
            413,
            lambda: httpx.post(
                f"{url}/v1/infer/{pid}", content=iter([b"\0" * 40000, b"\0" * 40000]), headers=a
            ),
        ),
        (
            "unknown plan id (infer)",
            404,
            lambda: httpx.post(f"{url}/v1/infer/{other}", content=body, headers=a),
        ),
        (
            "unknown plan id (segment)",
            404,
            lambda: httpx.get(f"{url}/v1/segment/{other}", headers=a),
        ),
        ("malformed plan id", 422, lambda: httpx.get(f"{url}/v1/segment/xyz", headers=a)),
        (
            "mismatched plan id",
            400,
            lambda: httpx.post(
                f"{url}/v1/infer/{pid}",
                content=encode_activation(
                    torch.rand(1, *plan["cut_shape"]), bits, full_plan["plan_id"]
                ),
                headers=a,
            ),
        ),
        (
            "infer on an all-device plan",
            409,
            lambda: httpx.post(f"{url}/v1/infer/{full_plan['plan_id']}", content=body, headers=a),
        ),
        ("missing token", 401, lambda: httpx.post(f"{url}/v1/plan", json=ok)),
        (
            "wrong token",
            401,
            lambda: httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}),
        ),
    ]


def test_every_bad_input_gets_its_4xx_and_the_server_keeps_serving(server, digits):
    plan = _valid_plan(server)
    with _client(server, **GATEWAY) as dev:
        full = dev.plan(MODEL, ANY_LOSS)
    assert plan["activation_bits"] is not None and full["activation_bits"] is None
    for name, status, call in _bad_requests(server, plan, full):
        r = call()
        assert r.status_code == status, (name, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and len(detail) > 5, (name, detail)
        assert _valid_plan(server)["plan_id"] == plan["plan_id"], name
    x, _ = digits
    with _client(server) as dev:
        assert dev.run(x[:1], MODEL, 0.01).output.shape == (1, 10)


def test_client_reports_server_errors(server):
    with _client(server) as dev:
        with pytest.raises(ServerError) as info:
            dev.plan("nope", 0.01)
    assert info.value.status == 404 and "unknown model" in info.value.detail


def test_health_models_and_openapi(server):
    assert httpx.get(f"{server}/v1/health").json()["models"] == [MODEL]
    models = httpx.get(f"{server}/v1/models", headers=_auth()).json()
    assert models[0]["id"] == MODEL and models[0]["num_layers"] == 6
    schema = httpx.get(f"{server}/openapi.json").json()
    for path in (
        "/v1/health",
        "/v1/models",
        "/v1/plan",
        "/v1/segment/{plan_id}",
        "/v1/infer/{plan_id}",
    ):
        assert path in schema["paths"], path
    assert "PlanRequest" in schema["components"]["schemas"]


@pytest.mark.slow
def test_bounded_load_no_errors_no_lost_responses(server, entry, digits):
    """16 concurrent devices x 50 requests each (each checks its own answer)."""
    x, _ = digits
    n_clients, n_requests = 16, 50
    errors: list[str] = []
    answered = [0] * n_clients
    lock = threading.Lock()

    def device(i: int) -> None:
        kw = [{}, PHONE][i % 2]
        with _client(server, **kw) as dev:
            for j in range(n_requests):
                xi = x[(i + j) % 16 : (i + j) % 16 + 1]
                try:
                    res = dev.run(xi, MODEL, [0.01, 0.02][i % 2])
                    sp = entry.plans[res.plan["plan_id"]]
                    ref = run_split(
                        sp.device_module(), sp.server, xi, sp.pattern.activation_bits
                    ).reshape(1, -1)
                    if not torch.allclose(res.output, ref, rtol=1e-4, atol=1e-4):
                        raise AssertionError("output mismatch")
                    with lock:
                        answered[i] += 1
                except Exception as exc:  # collected, asserted below
                    with lock:
                        errors.append(f"client {i} request {j}: {exc!r}")

    with ThreadPoolExecutor(n_clients) as pool:
        list(pool.map(device, range(n_clients)))
    assert not errors, errors[:5]
    assert answered == [n_requests] * n_clients


def test_cli_demo_runs_end_to_end(cache, capsys):
    """``qpart demo`` on the test cache: four devices, one row each, bytes = prediction."""
    from qpart.cli import main

    assert (
        main(
            [
                "demo",
                "--cache-dir",
                str(cache),
                "--calib-samples",
                str(CALIB),
                "--digits",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = [
        line.split()
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("mcu-200MHz", "narrowband", "phone-2GHz", "gateway")
    ]
    rows = [r for r in rows if r[1].endswith("%")]
    assert len(rows) == 4, out
    for r in rows:
        measured, predicted = r[7].split("/")
        assert measured == predicted, r
        assert r[-1] == "1/1" or r[-1] == "0/1"
