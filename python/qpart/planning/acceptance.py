"""The selection rule the measured refinement uses on its *selection* inputs: a
configuration is selectable at accuracy level ``a`` when its measured loss against the float
model there is at most ``safety * a``. The measured loss is the disagreement rate against the
float model's own outputs (:class:`qpart.core.metrics.Agreement`, top-1 by default), which
bounds the accuracy loss on those inputs.

Serving does not rely on this rule: every table pattern is measured again on a separate
acceptance split and served only by its held-out upper bound (:mod:`.heldout`).
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
