"""Where a pattern table puts the reference device classes."""

from __future__ import annotations

from qpart.core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from qpart.simulation.device_classes import DEVICE_CLASSES, DeviceClass, partition_points
from sim_helpers import LEVELS, tiny_setup


def test_every_class_gets_a_valid_point_per_budget():
    setup = tiny_setup()
    points = partition_points(setup.table, LEVELS)
    assert list(points) == [dc.name for dc in DEVICE_CLASSES]
    for row in points.values():
        assert set(row) == set(LEVELS)
        assert all(p in setup.prof.valid_points for p in row.values())


def test_extreme_devices_go_to_the_ends():
    setup = tiny_setup()
    L = setup.prof.num_layers
    slow = DeviceClass("slow", DeviceProfile(cycles_per_mac=1e6, clock_hz=1e6), ChannelState())
    fast = DeviceClass(
        "fast",
        DeviceProfile(cycles_per_mac=1e-6, clock_hz=1e9, kappa_j_per_cycle_hz2=0.0),
        ChannelState(1e3, 1e3),
        ObjectiveWeights(1.0, 1.0, 1e9),
    )
    points = partition_points(setup.table, LEVELS, (slow, fast))
    assert set(points["slow"].values()) == {0}  # computing anything costs more than sending
    assert set(points["fast"].values()) == {L}  # sending anything costs more than computing
    assert partition_points(setup.table, [1e-9], (slow,))["slow"][1e-9] is None
