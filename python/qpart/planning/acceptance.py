"""The acceptance rule every measured selection uses (QPART's refinement and the uniform and
pruning baselines alike): a configuration is accepted at accuracy level ``a`` when its
measured loss against the float model on the acceptance inputs is at most ``safety * a``.

The measured loss is the prediction-flip rate against the float model's own predictions
(:func:`qpart.core.metrics.flip_rate`), which bounds the accuracy loss on those inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Slack for floating-point rounding only (a flip rate is a multiple of ``1/n``).
TOLERANCE = 1e-9


def within(measured_loss: float, limit: float) -> bool:
    """``measured_loss <= limit`` up to floating-point rounding: THE comparison of the rule."""
    return measured_loss <= limit + TOLERANCE


@dataclass(frozen=True)
class AcceptanceRule:
    """Accept at level ``a`` when the measured loss is ``<= safety * a``."""

    safety: float = 0.5

    def limit(self, level: float) -> float:
        """Largest accepted measured loss at ``level``."""
        return self.safety * level

    def accepts(self, measured_loss: float, level: float) -> bool:
        """Whether a configuration measured at ``measured_loss`` is accepted at ``level``."""
        return within(measured_loss, self.limit(level))
