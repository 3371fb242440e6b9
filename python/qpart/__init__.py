"""QPART planning and serving package (partition point + bit-width planning, serving).

Planning API (docs/PLANNING.md): :func:`profile` -> :func:`calibrate` ->
:class:`PatternTable` (offline) -> :meth:`PatternTable.lookup` (online); the building blocks
:func:`allocate_bits`, :func:`plan_request`, :func:`validate` and the cost model.
"""

__version__ = "0.1.0"

from .allocation import (Allocation, InfeasibleError, allocate_bits, continuous_allocation,
                         exact_allocation)
from .calibration import Calibration, NoiseModel, calibrate
from .costs import (ChannelState, CostBreakdown, DeviceProfile, ObjectiveWeights,
                    ServerProfile, cost_coefficients, evaluate_costs)
from .planner import PatternTable, Plan, Request, plan_request, solve_partition
from .profile import LayerProfile, ModelProfile, ProfileError, profile
from .validation import ValidationResult, validate

__all__ = [
    "Allocation", "Calibration", "ChannelState", "CostBreakdown", "DeviceProfile",
    "InfeasibleError", "LayerProfile", "ModelProfile", "NoiseModel", "ObjectiveWeights",
    "PatternTable", "Plan", "ProfileError", "Request", "ServerProfile", "ValidationResult",
    "allocate_bits", "calibrate", "continuous_allocation", "cost_coefficients",
    "evaluate_costs", "exact_allocation", "plan_request", "profile", "solve_partition",
    "validate",
]
