"""Selection of the CUDA implementation of the qpart ops.

``QPART_CUDA_BACKEND`` (read at import) chooses what CUDA tensors run on:

* ``cuda`` (default when the compiled extension has CUDA kernels and every visible GPU is
  sm_80 or newer) - the CUDA C++ kernels of the extension (csrc/cuda/); they register
  themselves for the CUDA key, nothing is registered from Python;
* ``triton`` (default otherwise, when Triton is installed) - the Triton kernels of
  ``qpart_kernels.triton``;
* ``reference`` - the pure-PyTorch reference (always available).

Choosing ``triton`` or ``reference`` while the extension has CUDA kernels registers that
implementation for the CUDA key over the C++ one. This covers the packed-format ops
(``PACKED_OPS``); ``max_pool2d`` runs its reference (ATen) on every device but the CPU.

With the Triton backend on a machine with a GPU, the forward-path ops are also available as
``torch.ops.qpart_triton.*`` ``triton_op``s, which the public wrappers use for CUDA tensors
so that ``torch.compile`` sees the Triton kernels inside them. On a machine without a GPU
the Triton module is only imported on first use.
"""

from __future__ import annotations

import importlib
import os

from .library import LIBRARY, PACKED_OPS

BACKENDS = ("triton", "reference", "cuda")

#: True when ``torch.ops.qpart_triton.*`` exist and the wrappers route CUDA inputs to them.
TRITON_OPS_LOADED = False


_NATIVE_CUDA: list[bool] = []  # cached: must be read before Python registers CUDA kernels

#: Smallest GPU compute capability (major) the CUDA C++ kernels support.
MIN_CUDA_CAPABILITY = 8


def native_cuda_kernels() -> bool:
    """Whether the compiled extension registered CUDA C++ kernels for every qpart op."""
    if not _NATIVE_CUDA:
        from .library import has_native_kernel

        _NATIVE_CUDA.append(all(has_native_kernel(op, "CUDA") for op in PACKED_OPS))
    return _NATIVE_CUDA[0]


def _unsupported_gpus() -> list[str]:
    """Visible GPUs below sm_80, which the CUDA C++ kernels do not support."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        if major < MIN_CUDA_CAPABILITY:
            out.append(f"cuda:{i} ({torch.cuda.get_device_name(i)}, sm_{major}{minor})")
    return out


def cuda_backend() -> str:
    """The configured CUDA backend name (validated)."""
    from ..triton import available

    native = native_cuda_kernels()
    if native and not _unsupported_gpus():
        default = "cuda"
    else:
        default = "triton" if available() else "reference"
    name = os.environ.get("QPART_CUDA_BACKEND", default).strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"QPART_CUDA_BACKEND must be one of {BACKENDS}, got {name!r}")
    if name == "triton" and not available():
        raise ImportError("QPART_CUDA_BACKEND=triton but Triton is not installed")
    if name == "cuda":
        if not native:
            raise ImportError(
                "QPART_CUDA_BACKEND=cuda but the compiled extension has no CUDA kernels "
                "(build it against a CUDA build of torch with nvcc on the PATH)"
            )
        bad = _unsupported_gpus()
        if bad:
            raise ImportError(
                "QPART_CUDA_BACKEND=cuda but the QPART CUDA kernels need compute capability "
                f"{MIN_CUDA_CAPABILITY}.0 or newer (sm_80+); unsupported: {', '.join(bad)}. "
                "Use QPART_CUDA_BACKEND=triton or reference"
            )
    return name


def _override_cuda_key(op: str, fn) -> None:
    """Registers ``fn`` for the CUDA key, over a C++ kernel if the extension has one."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Overriding a previously registered kernel"
        LIBRARY.impl(op, fn, "CUDA")


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
    if name == "reference" and native_cuda_kernels():
        from . import reference

        for op in PACKED_OPS:
            _override_cuda_key(op, getattr(reference, op))
    if name == "triton":
        for op in PACKED_OPS:
            _override_cuda_key(op, _lazy_triton(op))
        import torch

        if torch.cuda.is_available():
            importlib.import_module("qpart_kernels.triton.ops")
            TRITON_OPS_LOADED = True
    return name
