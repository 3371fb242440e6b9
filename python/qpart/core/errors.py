"""The error a model gets when QPART cannot capture or profile it."""

from __future__ import annotations


class ProfileError(ValueError):
    """The model cannot be captured or profiled (the message names the op and where)."""
