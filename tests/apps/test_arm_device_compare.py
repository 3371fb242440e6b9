"""The verdict of scripts/arm_device_compare.py (the ARM device check) on synthetic records,
and scripts/arm_device_run.py's integer probe on this machine (no qemu, no server)."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


compare_mod = _load("arm_device_compare")


def _record(machine: str = "x86_64") -> dict:
    run = {
        "model": "m",
        "budget": 0.02,
        "input": 0,
        "input_sha": "i",
        "plan_id": "p",
        "partition_point": 1,
        "bits": [3],
        "activation_bits": 4,
        "cut": [1.0, -2.0, 3.5],
        "body_sha": "b",
        "output": [0.1, 0.9],
        "prediction": 1,
    }
    probe = [{"bits": 3, "batch": 1, "weight_sha": "w", "input_sha": "x", "output": [10.0]}]
    return {"machine": machine, "cpu_isa": "isa", "torch": "t", "extension": True,
            "runs": [run], "int8_probe": probe}  # fmt: skip


def test_identical_records_agree():
    ref = _record()
    assert compare_mod.compare(ref, copy.deepcopy(ref), exact=True) == []


def test_float_reassociation_is_within_tolerance_but_not_exact():
    ref, other = _record(), _record("aarch64")
    other["runs"][0]["cut"][2] += 2e-5
    other["int8_probe"][0]["output"][0] += 2e-6
    assert compare_mod.compare(ref, other, exact=False) == []
    assert compare_mod.compare(ref, other, exact=True)


@pytest.mark.parametrize(
    "path, value",
    [
        (("runs", 0, "plan_id"), "other-plan"),
        (("runs", 0, "output"), [0.1, 0.8]),  # same packed activation, different answer
        (("runs", 0, "cut"), [1.0, -2.0, 3.6]),
        (("int8_probe", 0, "output"), [10.01]),
        (("int8_probe", 0, "input_sha"), "y"),
    ],
)
def test_disagreements_are_reported(path, value):
    ref, other = _record(), _record("aarch64")
    node = other
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert compare_mod.compare(ref, other, exact=False)


def test_int8_probe_runs_here():
    run_mod = _load("arm_device_run")
    probe = run_mod.int8_probe(0)
    assert [(p["bits"], p["batch"]) for p in probe] == [(3, 1), (3, 5), (4, 1), (4, 5)]
    assert probe == run_mod.int8_probe(0)  # seeded: the same weights and inputs every time
