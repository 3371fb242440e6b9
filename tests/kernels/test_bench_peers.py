"""Smoke tests of the GEMV benchmark's helpers (benchmarks/): the read-roof loop, the ggml
peer's loader (skips with a reason when no ggml is there; with QPART_GGML_LIB set, a small
ggml matmul close to the float result) and one tiny hot run of cpu_time_linear.py."""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import pytest

import qpart_kernels as qk

BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.skipif(not qk.extension_loaded(), reason="needs the compiled extension")


@pytest.mark.parametrize("nbytes,threads", [(1 << 20, 2), ((1 << 20) + 5 * 128, 3), (256, 1)])
def test_read_roof_reads_the_buffer(nbytes, threads):
    from read_roof import ReadRoof

    roof = ReadRoof(nbytes, threads)
    out = roof()
    if roof.fn is not None:  # the C loop: sum of the int64 ones it read, each exactly once
        assert int(out) == roof.nbytes // 8
    assert roof.nbytes % 128 == 0 and roof.nbytes >= nbytes - 192


def test_vnni_peak_counts_its_products():
    import vnni_peak

    fn = vnni_peak.kernel()
    rate = vnni_peak.products_per_second(seconds=0.01, repeats=1)
    if fn is None:  # no C compiler, not x86-64 or no AVX512-VNNI: no roof, and it says so
        assert rate is None
        return
    assert fn(5) == 5 * 12 * 64  # 12 vpdpbusd of 64 products per round
    assert 1e9 < rate < 1e13  # products per second of one thread: plausible for any CPU


def test_ggml_peer_loads_or_says_why():
    import ggml_peer

    lib, where = ggml_peer.load()
    if lib is None:
        assert "ggml" in where
        if os.environ.get("QPART_GGML_LIB"):
            pytest.fail(where)
        pytest.skip(where)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32) / 16
    x = rng.standard_normal((1, 256)).astype(np.float32)
    mm = ggml_peer.GgmlMatmul(lib, w, x, "q8_0", copies=2, threads=2)
    try:
        mm()
        y = mm.result(0)
    finally:
        mm.close()
    ref = x @ w.T
    assert np.abs(y - ref).max() <= 0.02 * np.abs(ref).max()


def test_cpu_time_linear_runs(monkeypatch, capsys):
    import cpu_time_linear

    argv = ["cpu_time_linear.py", "--shape", "64x256", "--bits", "4", "--batches", "1"]
    argv += ["--caches", "hot", "--rounds", "2", "--int8", "also", "--ggml", "", "--no-roof"]
    monkeypatch.setattr(sys, "argv", argv)
    cpu_time_linear.main()
    out = capsys.readouterr().out
    assert "| qpart 4-bit int8-act | channel |" in out
    assert "int8 dynamic (torch)" in out
