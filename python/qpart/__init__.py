"""QPART planning and serving package (partition point + bit-width planning, serving).

Planning API (docs/PLANNING.md): :func:`profile` -> :func:`calibrate` ->
:class:`PatternTable` (offline) -> :meth:`PatternTable.lookup` (online); the building blocks
:func:`allocate_bits`, :func:`plan_request`, :func:`validate` and the cost model.

The package is layered (docs/ARCHITECTURE.md): ``core`` -> ``planning`` -> ``serving`` /
``simulation`` -> ``apps`` -> ``cli``; ``workloads`` holds the demo data and networks.
"""

from ._version import __version__
from .core.costs import (
    ChannelState,
    CostBreakdown,
    DeviceProfile,
    ObjectiveWeights,
    ServerProfile,
    cost_coefficients,
    evaluate_costs,
)
from .core.profile import LayerProfile, ModelProfile, ProfileError, profile
from .planning.allocation import (
    Allocation,
    InfeasibleError,
    allocate_bits,
    continuous_allocation,
    exact_allocation,
)
from .planning.calibration import calibrate
from .planning.noise_model import Calibration, NoiseModel
from .planning.solve import Plan, plan_request, solve_partition
from .planning.table import PatternTable, Request
from .planning.validation import ValidationResult, validate
from .serving.registry import ModelSpec

__all__ = [
    "Allocation",
    "Calibration",
    "ChannelState",
    "CostBreakdown",
    "DeviceProfile",
    "InfeasibleError",
    "LayerProfile",
    "ModelProfile",
    "ModelSpec",
    "NoiseModel",
    "ObjectiveWeights",
    "PatternTable",
    "Plan",
    "ProfileError",
    "Request",
    "ServerProfile",
    "ValidationResult",
    "__version__",
    "allocate_bits",
    "calibrate",
    "continuous_allocation",
    "cost_coefficients",
    "evaluate_costs",
    "exact_allocation",
    "plan_request",
    "profile",
    "solve_partition",
    "validate",
]
