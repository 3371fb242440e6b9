"""Triton kernels for the qpart ops (added by the Triton backend work)."""
