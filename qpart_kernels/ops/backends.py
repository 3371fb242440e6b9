"""Selection of the CUDA implementation of the qpart ops.

``QPART_CUDA_BACKEND`` (read at import) chooses what CUDA tensors run on:

* ``triton`` (default when Triton is installed) - the Triton kernels of
  ``qpart_kernels.triton``;
* ``reference`` - the pure-PyTorch reference (always available);
* ``cuda`` - the CUDA C++ kernels of the compiled extension, when it was built with them
  (they register themselves for the CUDA key; nothing is registered from Python).

With the Triton backend on a machine with a GPU, the forward-path ops are also available as
``torch.ops.qpart_triton.*`` ``triton_op``s, which the public wrappers use for CUDA tensors
so that ``torch.compile`` sees the Triton kernels inside them. On a machine without a GPU
the Triton module is only imported on first use.
"""

from __future__ import annotations

import importlib
import os

from .library import LIBRARY, SCHEMAS

BACKENDS = ("triton", "reference", "cuda")

#: True when ``torch.ops.qpart_triton.*`` exist and the wrappers route CUDA inputs to them.
TRITON_OPS_LOADED = False


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
    global TRITON_OPS_LOADED
    name = cuda_backend()
    if name == "triton":
        for op in SCHEMAS:
            LIBRARY.impl(op, _lazy_triton(op), "CUDA")
        import torch

        if torch.cuda.is_available():
            importlib.import_module("qpart_kernels.triton.ops")
            TRITON_OPS_LOADED = True
    return name
