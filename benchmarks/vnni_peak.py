"""The measured compute roof of the integer conv benchmarks on x86: products per second of one
thread running independent zmm ``vpdpbusd`` back to back (vnni_peak.c, compiled on first use
with the system C compiler into a temporary folder and loaded with ctypes). ``None`` where
there is no C compiler, no x86-64 or no AVX512-VNNI (the benchmark then omits the column).
"""

from __future__ import annotations

import ctypes
import pathlib
import platform
import time

import c_library

_SRC = pathlib.Path(__file__).resolve().parent / "vnni_peak.c"


def _has_vnni() -> bool:
    try:
        flags = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_vnni" in flags and " avx512f" in flags


def _build():
    if platform.machine() not in ("x86_64", "AMD64") or not _has_vnni():
        return None
    lib = c_library.build(_SRC, ["-mavx512f", "-mavx512vnni"])
    if lib is None:
        return None
    fn = lib.qpart_vnni_peak
    fn.argtypes = [ctypes.c_uint64]
    fn.restype = ctypes.c_uint64
    return fn


def products_per_second(seconds: float = 0.2, repeats: int = 5) -> float | None:
    """The best of `repeats` timings of about `seconds` each: u8 x s8 products per second of
    one thread at the vpdpbusd rate (None where it cannot be measured)."""
    fn = _build()
    if fn is None:
        return None
    iters = 1 << 16
    while True:  # calibrate to about `seconds`
        t0 = time.perf_counter()
        fn(iters)
        if time.perf_counter() - t0 > seconds / 4:
            break
        iters *= 2
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn(iters * 4)
        best = max(best, n / (time.perf_counter() - t0))
    return best
