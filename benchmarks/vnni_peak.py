"""The measured compute roof of the integer conv benchmarks on x86: products per second of one
thread running independent zmm ``vpdpbusd`` back to back (vnni_peak.c, compiled on first use
with the system C compiler into a temporary folder and loaded with ctypes). ``None`` where
there is no C compiler or no AVX512-VNNI (the benchmark then omits the column).
"""

from __future__ import annotations

import ctypes
import pathlib
import time

import c_library

from qpart_kernels import cpu_isa

_SRC = pathlib.Path(__file__).resolve().parent / "vnni_peak.c"


def kernel():
    """The C loop ``f(rounds) -> products`` (12 zmm ``vpdpbusd`` per round), or None where
    it cannot be built or run: no C compiler, or a CPU without QPART's ``avx512`` row (which
    needs AVX512-VNNI; the ``amx`` row includes it)."""
    if "avx512" not in cpu_isa.available_cpu_isas():
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
    fn = kernel()
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
