"""Where simulated requests come from: :class:`RequestDistribution` draws
:class:`SimRequest` s (device profile, distance, bandwidth, fading, budget, digit) with one
seeded ``numpy.random.Generator``, so equal seeds give identical requests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.costs import DeviceProfile, ObjectiveWeights


@dataclass(frozen=True)
class RequestDistribution:
    """Where requests come from (all independent, drawn in this order per request):

    * ``clock_hz``: log-uniform on the interval; ``cycles_per_mac``, ``tx_power_w``,
      ``distance_km``: uniform on their intervals;
    * ``bandwidths_hz``, ``budgets``: uniform choice;
    * fading gain ``g ~ Exp(1)`` (Rayleigh), giving the up/downlink capacities with
      ``server_tx_power_w`` for the downlink;
    * ``digit``: the evaluation sample the request classifies, uniform;
    * ``memory_bytes``: device memory, log-uniform on the interval, drawn from a second
      stream (``default_rng([seed, 1])``) so the other draws do not depend on it
      (``None``: unbounded).
    """

    clock_hz: tuple[float, float] = (100e6, 1e9)
    cycles_per_mac: tuple[float, float] = (2.0, 8.0)
    tx_power_w: tuple[float, float] = (0.1, 1.0)
    distance_km: tuple[float, float] = (0.05, 0.5)
    bandwidths_hz: tuple[float, ...] = (5e6, 10e6, 20e6)
    budgets: tuple[float, ...] = (0.005, 0.01, 0.02)
    server_tx_power_w: float = 10.0
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    memory_bytes: tuple[float, float] | None = None

    def sample(self, n: int, seed: int, n_digits: int = 1) -> list[SimRequest]:
        """``n`` requests drawn with ``numpy.random.default_rng(seed)``."""
        if n < 1:
            raise ValueError(f"need at least one request, got {n}")
        rng = np.random.default_rng(seed)
        mem_rng = np.random.default_rng([seed, 1])
        out = []
        for i in range(n):
            lo, hi = self.clock_hz
            clock = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            cpm = float(rng.uniform(*self.cycles_per_mac))
            ptx = float(rng.uniform(*self.tx_power_w))
            dist = float(rng.uniform(*self.distance_km))
            bw = float(self.bandwidths_hz[int(rng.integers(len(self.bandwidths_hz)))])
            budget = float(self.budgets[int(rng.integers(len(self.budgets)))])
            fading = float(rng.exponential(1.0))
            digit = int(rng.integers(n_digits))
            mem = math.inf
            if self.memory_bytes is not None:
                mlo, mhi = self.memory_bytes
                mem = float(math.exp(mem_rng.uniform(math.log(mlo), math.log(mhi))))
            out.append(
                SimRequest(
                    i,
                    DeviceProfile(cpm, clock, tx_power_w=ptx, memory_bytes=mem),
                    dist,
                    bw,
                    fading,
                    budget,
                    ObjectiveWeights(*self.weights),
                    digit,
                )
            )
        return out


@dataclass(frozen=True)
class SimRequest:
    """One simulated request (the channel follows from distance, bandwidth and fading)."""

    index: int
    device: DeviceProfile
    distance_km: float
    bandwidth_hz: float
    fading_gain: float
    budget: float
    weights: ObjectiveWeights
    digit: int
