"""The package version (its own module, so lower layers never import the package face)."""

__version__ = "0.1.0"
