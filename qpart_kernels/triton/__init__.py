"""Triton backend of the qpart ops (GPU, or CPU tensors under ``TRITON_INTERPRET=1``).

Importing this package requires Triton; use :func:`available` to check first. The rest
of ``qpart_kernels`` never needs Triton.
"""

from __future__ import annotations

import importlib.util


def available() -> bool:
    """Whether Triton is installed (the kernels can be imported)."""
    return importlib.util.find_spec("triton") is not None
