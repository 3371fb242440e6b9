"""QPART planning and serving package (partition point + bit-width planning, serving)."""

__version__ = "0.1.0"
