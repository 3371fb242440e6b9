"""Selection of the CUDA implementation of the qpart ops.

``QPART_CUDA_BACKEND`` (read at import) chooses what CUDA tensors run on:

* ``triton`` (default when Triton is installed) - the Triton kernels of
  ``qpart_kernels.triton``;
* ``reference`` - the pure-PyTorch reference (always available);
* ``cuda`` - the CUDA C++ kernels of the compiled extension, when it was built with them
  (they register themselves for the CUDA key; nothing is registered from Python).

The Triton module is imported lazily, on the first call on a CUDA tensor, so importing
``qpart_kernels`` never pays for importing Triton.
"""

from __future__ import annotations

import importlib
import os

from .library import LIBRARY, SCHEMAS

BACKENDS = ("triton", "reference", "cuda")


def cuda_backend() -> str:
    """The configured CUDA backend name (validated)."""
    from ..triton import available

    default = "triton" if available() else "reference"
    name = os.environ.get("QPART_CUDA_BACKEND", default).strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"QPART_CUDA_BACKEND must be one of {BACKENDS}, got {name!r}")
    if name == "triton" and not available():
        raise ImportError("QPART_CUDA_BACKEND=triton but Triton is not installed")
    return name


def _lazy_triton(name: str):
    def kernel(*args):
        impl = getattr(importlib.import_module("qpart_kernels.triton.ops"), name)
        return impl(*args)

    kernel.__name__ = f"triton_{name}"
    kernel.__doc__ = f"Triton implementation of qpart.{name} (imported on first use)."
    return kernel


def register_cuda_backend() -> str:
    """Registers the chosen CUDA implementation for every op; returns the backend name."""
    name = cuda_backend()
    if name == "triton":
        for op in SCHEMAS:
            LIBRARY.impl(op, _lazy_triton(op), "CUDA")
    return name
