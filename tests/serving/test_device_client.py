"""The device client under failure (issue 18, item 5): retries with backoff and a clear error
after the last try, a restart of the server in the middle, ``qpart device`` printing one line
when the server is unreachable, and the segment cache healing bad entries."""

from __future__ import annotations

import argparse
import os
import threading
import time
import types

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from qpart.apps import device as device_app
from qpart.core.profile import profile
from qpart.planning.calibration import calibrate
from qpart.serving.deps import ServerSettings
from qpart.serving.device import DeviceClient, ServerError, ServerUnreachable
from qpart.serving.registry import ModelEntry
from qpart.serving.server import ServerThread, create_app, free_port

MODEL = "tiny-mlp"


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


def _flaky_transport(failures: list, ok_json: dict) -> tuple[httpx.MockTransport, list]:
    """Answers with ``failures`` in order (an exception to raise or a status), then 200."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) <= len(failures):
            failure = failures[len(calls) - 1]
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, json={"detail": "busy"}, headers={"Retry-After": "0"})
        return httpx.Response(200, json=ok_json)

    return httpx.MockTransport(handler), calls


def test_idempotent_calls_are_retried_after_transport_errors_and_503():
    failures = [httpx.ConnectError("refused"), 503, httpx.ReadTimeout("slow")]
    transport, calls = _flaky_transport(failures, {"plan_id": "x"})
    client = DeviceClient("http://qpart.test", retries=4, backoff_s=0.001, transport=transport)
    assert client.plan(MODEL, 0.01) == {"plan_id": "x"}
    assert calls == ["/v1/plan"] * 4


def test_last_try_gives_a_clear_error():
    transport, calls = _flaky_transport([httpx.ConnectError("refused")] * 9, {})
    client = DeviceClient("http://qpart.test", retries=3, backoff_s=0.001, transport=transport)
    with pytest.raises(ServerUnreachable, match=r"cannot reach http://qpart.test .* after 3 tries"):
        client.plan(MODEL, 0.01)
    assert len(calls) == 3
    transport, calls = _flaky_transport([503] * 9, {})
    client = DeviceClient("http://qpart.test", retries=2, backoff_s=0.001, transport=transport)
    with pytest.raises(ServerError, match="HTTP 503"):
        client.plan(MODEL, 0.01)
    assert len(calls) == 2


def test_client_errors_are_not_retried():
    transport, calls = _flaky_transport([422] * 9, {})
    client = DeviceClient("http://qpart.test", retries=5, backoff_s=0.001, transport=transport)
    with pytest.raises(ServerError, match="HTTP 422"):
        client.plan(MODEL, 0.01)
    assert len(calls) == 1


def test_retry_after_a_server_restart(entry):
    """The server goes away between two inferences and comes back on the same port."""
    port = free_port()
    x = torch.randn(1, 16)
    with ServerThread({MODEL: entry}, ServerSettings(), port=port) as server:
        client = DeviceClient(server.url, retries=8, backoff_s=0.1)
        first = client.run(x, MODEL, 0.02)
    restarted: list[ServerThread] = []

    def restart() -> None:
        time.sleep(0.5)
        restarted.append(ServerThread({MODEL: entry}, ServerSettings(), port=port).start())

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        second = client.run(x, MODEL, 0.02)  # refused at first, then retried
    finally:
        thread.join()
        for s in restarted:
            s.stop()
        client.close()
    assert second.plan["plan_id"] == first.plan["plan_id"]
    torch.testing.assert_close(second.output, first.output)


def test_qpart_device_prints_one_line_when_unreachable(monkeypatch, capsys):
    data = types.SimpleNamespace(x_test=torch.randn(2, 1, 28, 28), y_test=torch.tensor([1, 2]))
    monkeypatch.setattr(device_app, "load_mnist", lambda seed=0: data)
    monkeypatch.setattr(DeviceClient, "retries", 2)
    monkeypatch.setattr(DeviceClient, "backoff_s", 0.01)
    args = argparse.Namespace(
        weights=(1.0, 1.0, 1.0),
        seed=0,
        digits=1,
        url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        cycles_per_mac=5.0,
        clock_hz=200e6,
        uplink_bps=200e6,
        downlink_bps=200e6,
        memory_bytes=None,
        token=None,
        segment_cache=None,
        model="mnist-mlp",
        budget=0.01,
    )
    assert device_app.run_device(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("qpart device: error: cannot reach http://127.0.0.1:"), err


@pytest.mark.parametrize("bad", ["directory", "dangling-symlink", "symlink-to-file", "corrupt"])
def test_segment_cache_heals_bad_entries(entry, tmp_path, bad):
    app = create_app({MODEL: entry})
    cache = tmp_path / "cache"
    with TestClient(app) as http:
        client = DeviceClient("http://testserver", cache_dir=str(cache))
        client.http = http
        plan = client.plan(MODEL, 0.02)
        path = cache / f"{plan['segment_id']}.safetensors"
        cache.mkdir()
        if bad == "directory":
            (path / "nested").mkdir(parents=True)
        elif bad == "dangling-symlink":
            os.symlink(tmp_path / "missing", path)
        elif bad == "symlink-to-file":
            (tmp_path / "other").write_bytes(b"not a segment")
            os.symlink(tmp_path / "other", path)
        else:
            path.write_bytes(b"\x00" * 64)
        seg, received = client.segment(plan)
        assert received > 0  # the bad entry was not used: fetched again
        assert path.is_file() and not path.is_symlink()
        # A fresh client (empty memory cache) now loads the healed entry from disk.
        fresh = DeviceClient("http://testserver", cache_dir=str(cache))
        fresh.http = http
        again, received = fresh.segment(plan)
        assert received == 0
        x = torch.randn(1, 16)
        torch.testing.assert_close(again.module(x), seg.module(x))
