"""The simulation platform (paper §V): request distributions (:mod:`.requests`), the
executing / communication / performance modules (:mod:`.platform`), the offloading schemes
(:mod:`.baselines`, a registry) and the simulator (:mod:`.simulator`). Imports
:mod:`qpart.planning` and :mod:`qpart.core`, never :mod:`qpart.serving`."""

from .baselines import SCHEMES, SchemeConfig, register_scheme, registered_schemes, unregister_scheme
from .platform import ROW_FIELDS, CommunicationModule, ExecutingModule, PerformanceModule
from .requests import RequestDistribution, SimRequest
from .simulator import SimulationSetup, Simulator, build_table, simulate

__all__ = [
    "ROW_FIELDS",
    "SCHEMES",
    "CommunicationModule",
    "ExecutingModule",
    "PerformanceModule",
    "RequestDistribution",
    "SchemeConfig",
    "SimRequest",
    "SimulationSetup",
    "Simulator",
    "build_table",
    "register_scheme",
    "registered_schemes",
    "simulate",
    "unregister_scheme",
]
