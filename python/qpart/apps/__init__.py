"""The applications behind the CLI: ``sweep``, ``demo``, ``serve``, ``device``, ``simulate``
and ``reproduce``. May import every other wing; only :mod:`qpart.cli` imports them."""
