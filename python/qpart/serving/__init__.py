"""Serving: request/response schemas, the wire formats (segment container, cut activation),
the registry of served models, the FastAPI routes and server, and the device runtime.
Imports :mod:`qpart.planning` and :mod:`qpart.core`, never :mod:`qpart.simulation`."""
