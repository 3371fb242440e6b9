"""Every Triton kernel compiles ahead of time for Jetson Orin (sm_87) and Hopper (sm_90).

Runs ``python -m qpart_kernels.triton.aot`` in a subprocess without TRITON_INTERPRET (the
test session itself runs Triton in interpreter mode when there is no GPU).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is not installed")


def test_all_kernels_compile_for_sm87_and_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run(
        [sys.executable, "-m", "qpart_kernels.triton.aot", "87", "90"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    from qpart_kernels.triton.aot import CASES  # import after: defines no kernels of its own

    compiled = [line for line in result.stdout.splitlines() if line.startswith("sm_")]
    assert len(compiled) == 2 * len(CASES)
