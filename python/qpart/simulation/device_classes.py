"""Four reference edge devices (an MCU, a phone, a Jetson-class board, a gateway), each with
its compute profile and typical link, and where a pattern table puts their partition points.

The figures are order-of-magnitude classes, not measurements of one product: effective
cycles per MAC fold in SIMD width (a Cortex-M MCU does well under one MAC per cycle, a
phone CPU several, a Jetson-class GPU hundreds), and the links are what such devices
typically have (BLE / narrowband IoT, LTE/5G, Wi-Fi, wired Ethernet)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from ..planning.allocation import InfeasibleError
from ..planning.table import PatternTable, Request


@dataclass(frozen=True)
class DeviceClass:
    """A named device with its link and how its operator prices the objective's terms."""

    name: str
    profile: DeviceProfile
    channel: ChannelState
    weights: ObjectiveWeights = ObjectiveWeights()


DEVICE_CLASSES: tuple[DeviceClass, ...] = (
    DeviceClass(
        "MCU (Cortex-M, 200 MHz, 1 Mbit/s)",
        DeviceProfile(cycles_per_mac=2.0, clock_hz=200e6, tx_power_w=0.05),
        ChannelState(1e6, 2e6),
    ),
    DeviceClass(
        "phone (2 GHz, 50 Mbit/s)",
        DeviceProfile(cycles_per_mac=0.25, clock_hz=2e9, tx_power_w=0.5),
        ChannelState(50e6, 200e6),
    ),
    DeviceClass(
        "Jetson-class (1.3 GHz GPU, 100 Mbit/s)",
        DeviceProfile(cycles_per_mac=0.005, clock_hz=1.3e9, tx_power_w=1.0),
        ChannelState(100e6, 300e6),
    ),
    DeviceClass(
        "gateway (3 GHz, 1 Gbit/s, server time priced 100x)",
        DeviceProfile(cycles_per_mac=0.1, clock_hz=3e9, tx_power_w=2.0),
        ChannelState(1e9, 1e9),
        ObjectiveWeights(1.0, 1.0, 100.0),
    ),
)


def partition_points(
    table: PatternTable, budgets, classes: tuple[DeviceClass, ...] = DEVICE_CLASSES
) -> dict[str, dict[float, int | None]]:
    """``{class name: {budget: partition point}}`` of ``table``'s lookup for each device
    class (``None`` where no stored pattern is accurate enough)."""
    out: dict[str, dict[float, int | None]] = {}
    for dc in classes:
        row: dict[float, int | None] = {}
        for a in budgets:
            try:
                plan = table.lookup(Request(a, dc.profile, channel=dc.channel, weights=dc.weights))
                row[a] = plan.partition_point
            except InfeasibleError:
                row[a] = None
        out[dc.name] = row
    return out
