"""The measured DRAM read roof of the CPU benchmarks: `threads` threads read one buffer of
>= 256 MiB once per call (read_roof.c, compiled on first use with the system C compiler into
a temporary folder and loaded with ctypes: c_library.py). Without a C compiler it falls back
to torch's vectorized sum over the same buffer (which reads more slowly than the loop; the
fallback is named in the benchmark's output).
"""

from __future__ import annotations

import ctypes
import pathlib
import platform

import c_library
import torch

_SRC = pathlib.Path(__file__).resolve().parent / "read_roof.c"
MIN_COLD_BYTES = 256 * 2**20


def last_level_cache_bytes() -> int:
    """The largest CPU cache of cpu0 as sysfs reports it (0 where it says nothing)."""
    sizes = []
    for f in pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * unit)
    return max(sizes, default=0)


def cold_bytes() -> int:
    """Bytes a cache-cold case rotates through: >= 256 MiB and >= twice the last-level cache
    (a VM may report a large L3: 480 MiB was seen on an Intel Xeon VM)."""
    return max(MIN_COLD_BYTES, 2 * last_level_cache_bytes())


def _build():
    flags = ["-pthread"] + (["-mavx2"] if platform.machine() in ("x86_64", "AMD64") else [])
    lib = c_library.build(_SRC, flags)
    if lib is None:
        return None
    fn = lib.qpart_read_roof
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_uint64
    return fn


class ReadRoof:
    """Callable reading `nbytes` (64-byte aligned buffer) on `threads` threads per call."""

    def __init__(self, nbytes: int, threads: int):
        self.threads = threads
        self.buf = torch.ones(nbytes // 8 + 8, dtype=torch.int64)
        addr = self.buf.data_ptr()
        self.ptr = (addr + 63) // 64 * 64
        self.nbytes = (nbytes - (self.ptr - addr)) // 128 * 128
        self.fn = _build()
        self.name = "read roof (C loop)" if self.fn is not None else "read roof (torch sum)"

    def __call__(self):
        if self.fn is not None:
            return self.fn(self.ptr, self.nbytes, self.threads)
        return self.buf.sum()
