"""Issue 18, item 6: a bounded, seeded fuzz test of every op on every CPU ISA.

Each ISA runs tests/kernels/fuzz_ops.py in a child process with ``QPART_CPU_ISA`` forced, so a
crash (SIGSEGV, abort) is counted instead of killing pytest; the child is restarted after the
crashing case. Asserts zero crashes and that native and reference agree on every case: both
accept (with the same values, NaN/Inf included) or both reject. ``QPART_FUZZ_CASES`` (default
600 per ISA, a few seconds each) and ``QPART_FUZZ_SEED`` scale it.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import qpart_kernels
from qpart_kernels import cpu_isa

FUZZER = Path(__file__).with_name("fuzz_ops.py")
CASES = int(os.environ.get("QPART_FUZZ_CASES", "600"))
SEED = int(os.environ.get("QPART_FUZZ_SEED", "18"))
ISAS = list(cpu_isa.available_cpu_isas()) if qpart_kernels.extension_loaded() else []


def _run_isa(isa: str) -> tuple[list[dict], list[int]]:
    """All case results and the indices of the cases that crashed the child."""
    results: list[dict] = []
    crashes: list[int] = []
    start = 0
    env = {**os.environ, "QPART_CPU_ISA": isa, "OMP_NUM_THREADS": "1"}
    while start < CASES:
        proc = subprocess.run(
            [sys.executable, str(FUZZER), str(SEED), str(CASES), str(start)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        last = None
        for line in proc.stdout.splitlines():
            record = json.loads(line)
            if "start" in record:
                last = record["start"]
            else:
                results.append(record)
        if proc.returncode == 0:
            break
        assert last is not None, f"fuzz child failed before any case:\n{proc.stderr[-2000:]}"
        crashes.append(last)
        start = last + 1
    return results, crashes


@pytest.mark.skipif(not ISAS, reason="needs the compiled extension")
@pytest.mark.parametrize("isa", ISAS)
def test_every_op_native_equals_reference(isa):
    results, crashes = _run_isa(isa)
    assert crashes == [], f"{isa}: cases {crashes} crashed the process (seed {SEED})"
    assert len(results) == CASES
    bad = [r for r in results if not r["agree"]]
    assert bad == [], f"{isa}: native and reference disagree: {bad[:5]}"
    accepted = collections.Counter(r["op"] for r in results if r["native"] == "ok")
    rejected = collections.Counter(r["op"] for r in results if r["native"] != "ok")
    for op in ("quantize_weight", "dequantize_weight", "linear", "conv2d"):
        assert accepted[op] > 0 and rejected[op] > 0, (op, accepted, rejected)


def test_a_crashing_case_is_counted_and_the_run_goes_on(monkeypatch, tmp_path):
    """The harness itself: a child that dies mid-case (SIGABRT) is recorded and restarted."""
    fake = tmp_path / "fuzz_crash.py"
    fake.write_text(
        "import json, os, sys\n"
        "seed, count, start = map(int, sys.argv[1:4])\n"
        "for i in range(start, count):\n"
        "    print(json.dumps({'start': i}), flush=True)\n"
        "    if i in (2, 5):\n"
        "        os.abort()\n"
        "    print(json.dumps({'case': i, 'op': 'linear', 'native': 'ok',"
        " 'reference': 'ok', 'agree': True}), flush=True)\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "FUZZER", fake)
    monkeypatch.setattr(sys.modules[__name__], "CASES", 8)
    results, crashes = _run_isa("scalar")
    assert crashes == [2, 5]
    assert [r["case"] for r in results] == [0, 1, 3, 4, 6, 7]
