"""CPU ISA selection of the native kernels (see docs/OPS.md, "CPU kernels and ISA dispatch").

The compiled kernels pick AMX (AVX-512 plus the AMX-INT8 conv tile), AVX-512 (F/BW/VL/VNNI/VBMI)
or AVX2+FMA (x86-64) or NEON (aarch64) at run time, falling back to the portable scalar code.
``QPART_CPU_ISA=scalar|avx2|avx512|amx|neon|auto`` (read at the first kernel call) or
:func:`set_cpu_isa` forces a path, e.g. to test or benchmark every path. Without the
compiled extension every function here reports ``"reference"`` and setting raises.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from ._extension import load_extension


def _native():
    if not load_extension():
        return None
    return importlib.import_module("qpart_kernels._C")


def get_cpu_isa() -> str:
    """The ISA the CPU kernels use now: ``"amx"``, ``"avx512"``, ``"avx2"``, ``"neon"`` or
    ``"scalar"``."""
    mod = _native()
    return "reference" if mod is None else mod._cpu_isa()


def available_cpu_isas() -> tuple[str, ...]:
    """ISAs this CPU and build support, fastest first (always ends with ``"scalar"``)."""
    mod = _native()
    return () if mod is None else tuple(mod._cpu_isas())


def set_cpu_isa(name: str) -> str:
    """Forces ``name`` (``scalar``, ``avx2``, ``avx512``, ``amx``, ``neon`` or ``auto``) for
    later kernel calls and returns the previous ISA. Raises ``ValueError`` if unknown or
    unsupported, and ``RuntimeError`` without the compiled extension. Switch only between op
    calls."""
    mod = _native()
    if mod is None:
        raise RuntimeError("qpart_kernels: the compiled extension is not loaded")
    return mod._set_cpu_isa(name)


@contextlib.contextmanager
def cpu_isa(name: str) -> Iterator[str]:
    """Context manager running its body with ISA ``name``; restores the previous one."""
    previous = set_cpu_isa(name)
    try:
        yield name
    finally:
        set_cpu_isa(previous)
