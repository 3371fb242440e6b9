"""Planning: per-layer bit widths and the partition point. In import order:
:mod:`.allocation` (KKT closed form + integer widths), :mod:`.acceptance` (the measured
acceptance rule), :mod:`.probe` (re-runs the float graph with swapped weights / cut),
:mod:`.noise_model` (calibration data + JSON), :mod:`.solve` (widths at one point; ``Plan``),
:mod:`.sources` (noise curves and robustness per source), :mod:`.calibration`,
:mod:`.refinement`, :mod:`.validation`, :mod:`.table` (pattern table).
Imports :mod:`qpart.core` only."""
