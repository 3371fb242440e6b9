"""Schemathesis against the live app (issue 18, item 6): every operation of the OpenAPI,
``--checks all`` (server errors, schema conformance of every answer, status codes listed,
auth enforced, negative data rejected, schema-valid data accepted, stateful links), bounded
examples and a fixed seed, zero failures. ~15 s; the config file lists the two documented
by-design refusals of schema-valid data (tests/serving/schemathesis.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from qpart.core.profile import profile
from qpart.planning.calibration import calibrate
from qpart.serving.deps import ServerSettings
from qpart.serving.registry import ModelEntry
from qpart.serving.server import ServerThread

pytest.importorskip("schemathesis")

CONFIG = Path(__file__).with_name("schemathesis.toml")
TOKEN = "secret"
MAX_EXAMPLES = 30
SEED = 18


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    """A 16-24-4 MLP, calibrated on 200 random inputs at two levels (~1 s)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 4)).eval()
    x = torch.randn(200, 16, generator=gen)
    calib = calibrate(model, x, prof=profile(model, x[:2]), levels=(0.01, 0.02), progress=False)
    return ModelEntry.create("tiny-mlp", model, x[:2], calib, description="16-24-4 MLP")


def _schemathesis() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis")
    return [found] if found else [sys.executable, "-m", "schemathesis.cli"]


def test_schemathesis_checks_all_zero_failures(entry, tmp_path):
    settings = ServerSettings(token=TOKEN, max_body_bytes=64 * 1024)
    with ServerThread({"tiny-mlp": entry}, settings) as server:
        proc = subprocess.run(
            [
                *_schemathesis(),
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(SEED),
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            check=False,
        )
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert "generated" in proc.stdout
