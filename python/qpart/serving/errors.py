"""The error every wire-format decoder raises."""

from __future__ import annotations


class WireFormatError(ValueError):
    """Bytes that do not follow the wire format (message says what is wrong)."""
