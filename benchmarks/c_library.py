"""Builds one C file of the benchmarks (read_roof.c, vnni_peak.c) into a shared library with
the system C compiler, in a temporary folder, and loads it with ctypes."""

from __future__ import annotations

import ctypes
import pathlib
import shutil
import subprocess
import tempfile


def build(src: pathlib.Path, flags: list[str]) -> ctypes.CDLL | None:
    """``src`` compiled with ``-O2 -shared -fPIC`` and ``flags``, loaded; None without a C
    compiler or when compiling or loading fails."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    out = pathlib.Path(tempfile.mkdtemp(prefix="qpart-bench-")) / f"lib{src.stem}.so"
    cmd = [cc, "-O2", "-shared", "-fPIC", *flags, str(src), "-o", str(out)]
    try:
        subprocess.run(cmd, check=True, capture_output=True)
        return ctypes.CDLL(str(out))
    except (subprocess.CalledProcessError, OSError):
        return None
