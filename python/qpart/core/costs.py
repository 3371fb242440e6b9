"""Device / server / channel profiles, objective weights and the cost terms of a plan
(DESIGN.md §3, paper Eqs. 3-17). Every quantity carries its unit in its name.

Defaults are the paper's Table II (c_dev = 5 cycles/MAC, c_srv = 1.25, f_dev = 200 MHz,
f_srv = 3 GHz, P_tx = 1 W, capacity 200 Mbit/s, omega_t = omega_e = 1). The paper's energy
coefficients were lost in extraction; we use:

* ``kappa = 1e-27 J/(cycle*Hz^2)`` (energy per cycle ``kappa * f^2``): at 200 MHz this is
  4e-11 J/cycle, i.e. a dynamic power ``kappa f^3`` of 8 mW - the order of a small
  microcontroller-class core. (MEC papers use 1e-28..1e-26.)
* ``mu = 1.0`` cost units per server-second with ``omega_c = 1``: a second of server time is
  priced like a second of latency (the paper leaves the currency free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Thermal noise density in dBm/Hz used by the Rayleigh channel model.
NOISE_DBM_PER_HZ = -174.0


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class DeviceProfile:
    """An edge device: compute speed, energy coefficient, radio power and memory."""

    cycles_per_mac: float = 5.0
    clock_hz: float = 200e6
    kappa_j_per_cycle_hz2: float = 1e-27
    tx_power_w: float = 1.0
    rx_power_w: float = 0.0
    memory_bytes: float = math.inf

    def __post_init__(self) -> None:
        _positive("DeviceProfile.cycles_per_mac", self.cycles_per_mac)
        _positive("DeviceProfile.clock_hz", self.clock_hz)
        _positive("DeviceProfile.kappa_j_per_cycle_hz2", self.kappa_j_per_cycle_hz2, True)
        _positive("DeviceProfile.tx_power_w", self.tx_power_w, True)
        _positive("DeviceProfile.rx_power_w", self.rx_power_w, True)
        if not (self.memory_bytes > 0):
            raise ValueError(f"DeviceProfile.memory_bytes must be > 0, got {self.memory_bytes!r}")

    @property
    def energy_per_mac_j(self) -> float:
        """Energy of one MAC: ``kappa * f^2 * c_dev`` joules."""
        # A product, not ``clock_hz**2``: float ``**`` raises OverflowError past 1e154 Hz.
        energy = self.kappa_j_per_cycle_hz2 * self.clock_hz * self.clock_hz * self.cycles_per_mac
        if not math.isfinite(energy):
            raise ValueError(
                f"DeviceProfile: energy per MAC overflows (clock_hz={self.clock_hz!r}, "
                f"kappa_j_per_cycle_hz2={self.kappa_j_per_cycle_hz2!r})"
            )
        return energy


@dataclass(frozen=True)
class ServerProfile:
    """The edge server: compute speed and price of its time."""

    cycles_per_mac: float = 1.25
    clock_hz: float = 3e9
    price_per_s: float = 1.0

    def __post_init__(self) -> None:
        _positive("ServerProfile.cycles_per_mac", self.cycles_per_mac)
        _positive("ServerProfile.clock_hz", self.clock_hz)
        _positive("ServerProfile.price_per_s", self.price_per_s, True)


@dataclass(frozen=True)
class ChannelState:
    """Up- and downlink capacities in bit/s (the paper uses one capacity for both)."""

    uplink_bps: float = 200e6
    downlink_bps: float = 200e6

    def __post_init__(self) -> None:
        _positive("ChannelState.uplink_bps", self.uplink_bps)
        _positive("ChannelState.downlink_bps", self.downlink_bps)

    @classmethod
    def from_capacity(cls, capacity_bps: float) -> ChannelState:
        """A symmetric channel with a measured capacity."""
        return cls(capacity_bps, capacity_bps)

    @classmethod
    def rayleigh(
        cls,
        distance_km: float,
        bandwidth_hz: float,
        device_tx_power_w: float = 1.0,
        server_tx_power_w: float = 1.0,
        fading_gain: float | None = None,
        seed: int | None = None,
        noise_dbm_per_hz: float = NOISE_DBM_PER_HZ,
    ) -> ChannelState:
        """Shannon capacity under Rayleigh fading with 3GPP-style path loss.

        ``h = g * 10^(-PL/10)``, ``PL(dB) = 128.1 + 37.6 log10(d_km)``, ``g ~ Exp(1)`` (drawn
        from ``seed`` unless ``fading_gain`` is given), ``SNR = P * h / (N0 * B)``,
        ``R = B log2(1 + SNR)``. Uplink uses the device's, downlink the server's power; the
        same fading draw applies to both (reciprocal channel within one coherence time).
        """
        _positive("distance_km", distance_km)
        _positive("bandwidth_hz", bandwidth_hz)
        _positive("device_tx_power_w", device_tx_power_w)
        _positive("server_tx_power_w", server_tx_power_w)
        g = (
            fading_gain
            if fading_gain is not None
            else float(np.random.default_rng(seed).exponential(1.0))
        )
        _positive("fading_gain", g)
        gain = g * channel_gain_path_loss(distance_km)
        n0_w_per_hz = 10 ** ((noise_dbm_per_hz - 30.0) / 10.0)
        noise_w = n0_w_per_hz * bandwidth_hz
        up = bandwidth_hz * math.log2(1.0 + device_tx_power_w * gain / noise_w)
        down = bandwidth_hz * math.log2(1.0 + server_tx_power_w * gain / noise_w)
        return cls(max(up, 1e-9), max(down, 1e-9))


def channel_gain_path_loss(distance_km: float) -> float:
    """Large-scale gain ``10^(-PL/10)`` with ``PL(dB) = 128.1 + 37.6 log10(d_km)``."""
    return 10 ** (-(128.1 + 37.6 * math.log10(distance_km)) / 10.0)


@dataclass(frozen=True)
class ObjectiveWeights:
    """``J = time * T + energy * E + cost * S`` (paper Eq. 17)."""

    time: float = 1.0
    energy: float = 1.0
    cost: float = 1.0

    def __post_init__(self) -> None:
        for name in ("time", "energy", "cost"):
            _positive(f"ObjectiveWeights.{name}", getattr(self, name), True)


@dataclass(frozen=True)
class CostBreakdown:
    """Every term of the objective for one plan (seconds, joules, cost units, bits)."""

    device_time_s: float
    server_time_s: float
    tx_time_s: float
    device_energy_j: float
    tx_energy_j: float
    server_cost: float
    weight_payload_bits: float
    activation_payload_bits: float
    objective: float

    @property
    def total_time_s(self) -> float:
        """``T_loc + T_tx + T_srv``."""
        return self.device_time_s + self.tx_time_s + self.server_time_s

    @property
    def total_energy_j(self) -> float:
        """``E_loc + E_tx`` (device side; server energy is not modelled, as in the paper)."""
        return self.device_energy_j + self.tx_energy_j


def cost_coefficients(
    device: DeviceProfile,
    server: ServerProfile,
    channel: ChannelState,
    weights: ObjectiveWeights,
) -> np.ndarray:
    """The objective is linear in ``(M_dev, M_srv, D_w bits, D_a bits)``: returns the four
    coefficients (objective units per MAC / per bit), so ``J = features @ coefficients``."""
    w = weights
    return np.array(
        [
            w.time * device.cycles_per_mac / device.clock_hz + w.energy * device.energy_per_mac_j,
            (w.time + w.cost * server.price_per_s) * server.cycles_per_mac / server.clock_hz,
            (w.time + w.energy * device.rx_power_w) / channel.downlink_bps,
            (w.time + w.energy * device.tx_power_w) / channel.uplink_bps,
        ],
        dtype=np.float64,
    )


def evaluate_costs(
    device_macs: float,
    server_macs: float,
    weight_payload_bits: float,
    activation_payload_bits: float,
    device: DeviceProfile,
    server: ServerProfile,
    channel: ChannelState,
    weights: ObjectiveWeights,
) -> CostBreakdown:
    """All cost terms of DESIGN.md §3 for given MAC counts and payload sizes.

    ``T_loc = c_dev M_dev / f_dev``, ``E_loc = kappa f_dev^2 c_dev M_dev``,
    ``T_srv = c_srv M_srv / f_srv``, ``S = mu T_srv``, ``T_tx = D_w/R_down + D_a/R_up``,
    ``E_tx = P_tx D_a / R_up + P_rx D_w / R_down``,
    ``J = w_t (T_loc + T_tx + T_srv) + w_e (E_loc + E_tx) + w_c S``.
    """
    t_loc = device.cycles_per_mac * device_macs / device.clock_hz
    e_loc = device.energy_per_mac_j * device_macs
    t_srv = server.cycles_per_mac * server_macs / server.clock_hz
    s = server.price_per_s * t_srv
    t_down = weight_payload_bits / channel.downlink_bps
    t_up = activation_payload_bits / channel.uplink_bps
    e_tx = device.tx_power_w * t_up + device.rx_power_w * t_down
    j = (
        weights.time * (t_loc + t_down + t_up + t_srv)
        + weights.energy * (e_loc + e_tx)
        + weights.cost * s
    )
    return CostBreakdown(
        t_loc,
        t_srv,
        t_down + t_up,
        e_loc,
        e_tx,
        s,
        float(weight_payload_bits),
        float(activation_payload_bits),
        j,
    )
