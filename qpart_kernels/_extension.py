"""Loads the compiled extension ``qpart_kernels._C``, whose import registers native kernels.

Without it every op still works through the pure-PyTorch reference. Set
``QPART_REQUIRE_EXTENSION=1`` to turn a missing or broken extension into an import error
(CI does, so a silently pure-Python build cannot pass).
"""

from __future__ import annotations

import importlib
import os
import warnings

_state: dict[str, object] = {"loaded": False, "error": None}


def load_extension() -> bool:
    """Imports ``qpart_kernels._C`` once; returns whether native kernels are available."""
    if _state["loaded"]:
        return True
    try:
        importlib.import_module("qpart_kernels._C")
    except ImportError as exc:
        _state["error"] = exc
        if os.environ.get("QPART_REQUIRE_EXTENSION") == "1":
            raise ImportError(
                "qpart_kernels: the compiled extension qpart_kernels._C is required "
                "(QPART_REQUIRE_EXTENSION=1) but could not be imported; rebuild with "
                "`pip install --no-build-isolation -e .`"
            ) from exc
        if "No module named" not in str(exc):
            warnings.warn(
                f"qpart_kernels: native extension failed to load ({exc}); using the "
                "pure-PyTorch reference kernels",
                RuntimeWarning,
                stacklevel=2,
            )
        return False
    _state["loaded"] = True
    return True


def extension_loaded() -> bool:
    """Whether the compiled extension (native CPU kernels) is loaded."""
    return bool(_state["loaded"])


def output_pool_free_bytes() -> int:
    """Bytes of freed op outputs the native CPU ops keep for reuse (their output pool:
    ``QPART_OUTPUT_POOL_MB``, docs/OPS.md); 0 without the extension."""
    if not load_extension():
        return 0
    return int(importlib.import_module("qpart_kernels._C")._output_pool_free_bytes())


def output_pool_cap_bytes() -> int:
    """The most freed bytes the output pool keeps: ``QPART_OUTPUT_POOL_MB`` MiB, by default a
    sixteenth of the machine's memory within 256 MiB .. 1 GiB; 0 without the extension."""
    if not load_extension():
        return 0
    return int(importlib.import_module("qpart_kernels._C")._output_pool_cap_bytes())
