"""The README's "serve your own model" flow as a user runs it: ``qpart serve --model
mynet=mymodels:make`` from the folder holding ``examples/mymodels.py`` in one process,
``qpart device --model mynet --input FILE`` in another; the device's outputs equal the local
quantized split model of the plan it got."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from qpart.core.split import quantized_split_model
from qpart.serving.registry import entry_from_spec
from qpart.serving.server import free_port

TESTS = Path(__file__).resolve().parents[1]
EXAMPLES = TESTS.parent / "examples"
CALIB = 96  # fewer calibration inputs than the example's 256: a quicker start-up


def _env() -> dict:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _qpart(*args: str) -> list[str]:
    return [sys.executable, "-m", "qpart.cli", *args]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    port = free_port()
    proc = subprocess.Popen(
        _qpart(
            "serve",
            "--model",
            "mine=mymodels:make",
            "--calib-samples",
            str(CALIB),
            "--port",
            str(port),
            "--cache-dir",
            str(cache),
            "--no-progress",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(),
        cwd=EXAMPLES,  # factories import from the current directory
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read().decode()}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start in 120 s")
        time.sleep(0.2)
    yield url, cache
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_device_runs_a_users_model_from_an_input_file(server, tmp_path):
    url, cache = server
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    np.save(tmp_path / "x.npy", x.numpy())
    out = subprocess.run(
        _qpart(
            "device",
            "--url",
            url,
            "--model",
            "mine",
            "--input",
            str(tmp_path / "x.npy"),
            "--budget",
            "0.05",
            "--print-output",
        ),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["input"] for line in lines] == [0, 1, 2]
    sys.path.insert(0, str(EXAMPLES))
    from mymodels import make

    spec = make()
    spec.calibration = spec.calibration[:CALIB]
    entry = entry_from_spec("mine", spec, cache)  # same cache: the server's table
    for i, line in enumerate(lines):
        ref = quantized_split_model(
            entry.profile, line["partition_point"], line["bits"], line["activation_bits"]
        )(x[i : i + 1])
        torch.testing.assert_close(torch.tensor(line["output"]), ref[0], rtol=1e-4, atol=1e-4)
        assert line["prediction"] == int(ref[0].argmax())


def test_device_refuses_inputs_of_the_wrong_shape(server, tmp_path):
    url, _ = server
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), dtype=np.float32))
    out = subprocess.run(
        _qpart("device", "--url", url, "--model", "mine", "--input", str(tmp_path / "bad.npy")),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert out.returncode == 2 and "takes (3, 32, 32)" in out.stderr


@pytest.mark.parametrize(
    "spec,message",
    [
        ("x=nonsense", "SPEC must be"),
        ("x=user_models:missing", "cannot load factory"),
        ("x=user_models:CalledTwice", "expected a qpart.ModelSpec"),
    ],
)
def test_serve_reports_bad_models_in_one_line(spec, message, tmp_path):
    out = subprocess.run(
        _qpart("serve", "--model", spec, "--cache-dir", str(tmp_path), "--no-progress"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert out.returncode == 2 and message in out.stderr
    assert "Traceback" not in out.stderr
