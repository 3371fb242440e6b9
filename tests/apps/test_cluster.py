"""``qpart serve --replicas``: the FastAPI app as a 2-replica Ray Serve application on a
local Ray instance (loopback). 16 concurrent devices x 50 requests, every answer checked;
one replica killed in the middle of the load loses no request and comes back; plan ids
survive the restart."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from qpart.apps.cluster import APP_NAME, DEPLOYMENT_NAME, ReplicaConfig, start, stop
from qpart.apps.serve import MNIST_MODEL_ID, mnist_entry
from qpart.core.split import quantized_split_model
from qpart.serving.deps import ServerSettings
from qpart.serving.device import DeviceClient
from qpart.serving.server import free_port
from qpart.workloads.data import load_mnist
from serving_helpers import mlp_cache, wait_for_health

pytestmark = pytest.mark.slow  # a local Ray instance (~30 s to start)

CALIB = 200
BUDGETS = (0.005, 0.01, 0.02)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return mlp_cache(tmp_path_factory.mktemp("qpart-cluster"), CALIB)


@pytest.fixture(scope="module")
def cluster(cache):
    port = free_port()
    config = ReplicaConfig((), None, str(cache), 0, CALIB, ServerSettings(max_concurrency=16))
    start(config, replicas=2, port=port)
    url = f"http://127.0.0.1:{port}"
    wait_for_health(url, None, 120)
    yield url
    stop()


@pytest.fixture(scope="module")
def reference(cache):
    """The entry every replica builds (deterministic), and the test digits."""
    entry = mnist_entry(cache, 0, CALIB)
    x = load_mnist(seed=0).x_test[:50]
    return entry, x


def _expected(entry, plan: dict, x: torch.Tensor) -> int:
    model = quantized_split_model(
        entry.profile, plan["partition_point"], plan["bits"], plan["activation_bits"]
    )
    with torch.no_grad():
        return int(model(x).argmax(-1)[0])


def _device(url: str, entry, x: torch.Tensor, device: int, n: int, retries: int = 6) -> int:
    checked = 0
    with DeviceClient(url, retries=retries, backoff_s=0.2) as dev:
        for j in range(n):
            i = (device * 7 + j) % x.shape[0]
            res = dev.run(x[i : i + 1], MNIST_MODEL_ID, BUDGETS[(device + j) % len(BUDGETS)])
            assert res.predictions[0] == _expected(entry, res.plan, x[i : i + 1])
            checked += 1
    return checked


def test_sixteen_devices_fifty_requests_each(cluster, reference):
    entry, x = reference
    with ThreadPoolExecutor(16) as pool:
        done = list(pool.map(lambda d: _device(cluster, entry, x, d, 50), range(16)))
    assert sum(done) == 16 * 50


def _replica_names() -> list[dict]:
    import ray

    return [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if DEPLOYMENT_NAME in a["name"] and "REPLICA" in a["name"]
    ]


def _running() -> int:
    from ray import serve

    app = serve.status().applications[APP_NAME]
    return app.deployments[DEPLOYMENT_NAME].replica_states.get("RUNNING", 0)


def test_a_killed_replica_loses_no_request_and_comes_back(cluster, reference):
    import ray

    entry, x = reference
    plan_before = httpx.post(
        f"{cluster}/v1/plan", json={"model": MNIST_MODEL_ID, "accuracy_budget": 0.01}
    ).json()["plan_id"]
    victims = _replica_names()
    assert len(victims) == 2 and _running() == 2
    results: list[int] = []

    def load():
        with ThreadPoolExecutor(8) as pool:
            results.extend(pool.map(lambda d: _device(cluster, entry, x, d, 25), range(8)))

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(2.0)  # in the middle of the load
    ray.kill(ray.get_actor(victims[0]["name"], namespace=victims[0]["namespace"]), no_restart=True)
    loader.join(timeout=300)
    assert not loader.is_alive() and sum(results) == 8 * 25
    deadline = time.monotonic() + 120
    time.sleep(1.0)
    while _running() < 2:  # the controller replaces the dead replica
        assert time.monotonic() < deadline, "the killed replica was not replaced"
        time.sleep(1.0)
    plan_after = httpx.post(
        f"{cluster}/v1/plan", json={"model": MNIST_MODEL_ID, "accuracy_budget": 0.01}
    ).json()["plan_id"]
    assert plan_after == plan_before
