"""Cost and channel model checked by hand with the paper's Table II values."""

from __future__ import annotations

import math

import pytest
import torch

from qpart.core.costs import (
    ChannelState,
    DeviceProfile,
    ObjectiveWeights,
    ServerProfile,
    cost_coefficients,
    evaluate_costs,
)
from qpart.core.profile import profile
from qpart.planning.noise_model import Calibration, NoiseModel
from qpart.planning.solve import make_plan
from qpart.workloads.models import mnist_mlp


def _calib(prof):
    layers = [NoiseModel(100.0, math.log(4), 1.0) for _ in prof.layers]
    acts = {p: NoiseModel(10.0, math.log(4), 1.0) for p in prof.cuts}
    return Calibration(
        [l.name for l in prof.layers], layers, acts, {0.01: 1.0}, 0.01, 1.0, 1.0, 0, (2, 4, 6), 0.5
    )


def test_table_ii_defaults():
    d, s, c, w = DeviceProfile(), ServerProfile(), ChannelState(), ObjectiveWeights()
    assert (d.cycles_per_mac, d.clock_hz, d.tx_power_w) == (5, 200e6, 1.0)
    assert (s.cycles_per_mac, s.clock_hz) == (1.25, 3e9)
    assert (c.uplink_bps, c.downlink_bps) == (200e6, 200e6)
    assert (w.time, w.energy) == (1.0, 1.0)


def test_mlp_plan_costs_by_hand():
    prof = profile(mnist_mlp(), torch.zeros(1, 784))
    plan = make_plan(prof, _calib(prof), 3, [4, 4, 4], 8, 0.01, 0.0)
    # M_dev = 784*512 + 512*256 + 256*128 ; M_srv = 128*64 + 64*32 + 32*10
    assert (plan.device_macs, plan.server_macs) == (565248, 10560)
    # D_w = sum N*ceil(K*4/8) + 7N bytes; D_a = ceil(8*128/8) + 3 bytes
    assert plan.weight_payload_bytes == (512 * 392 + 7 * 512) + (256 * 256 + 7 * 256) + (
        128 * 128 + 7 * 128
    )
    assert plan.weight_payload_bytes == 288896
    assert plan.activation_payload_bytes == 131
    k = plan.costs
    assert k.device_time_s == pytest.approx(5 * 565248 / 200e6)  # 0.01413120 s
    assert k.device_energy_j == pytest.approx(1e-27 * (200e6) ** 2 * 5 * 565248)  # 1.130496e-4 J
    assert k.server_time_s == pytest.approx(1.25 * 10560 / 3e9)  # 4.4e-6 s
    assert k.server_cost == pytest.approx(1.0 * 4.4e-6)
    assert k.tx_time_s == pytest.approx(288896 * 8 / 200e6 + 131 * 8 / 200e6)
    assert k.tx_energy_j == pytest.approx(1.0 * 1048 / 200e6)
    expected = (0.0141312 + 0.01155584 + 5.24e-6 + 4.4e-6) + (1.130496e-4 + 5.24e-6) + 4.4e-6
    assert k.objective == pytest.approx(expected, rel=1e-9)
    # the linear form used by the online lookup gives the same objective
    coef = cost_coefficients(DeviceProfile(), ServerProfile(), ChannelState(), ObjectiveWeights())
    feats = [565248, 10560, 288896 * 8, 131 * 8]
    assert sum(f * c for f, c in zip(feats, coef)) == pytest.approx(expected, rel=1e-9)


def test_all_on_server_and_all_on_device():
    prof = profile(mnist_mlp(), torch.zeros(1, 784))
    p0 = make_plan(prof, _calib(prof), 0, [], 8, 0.01, 0.0)
    assert p0.weight_payload_bytes == 0 and p0.activation_payload_bytes == 784 + 3
    assert p0.costs.device_time_s == 0 and p0.costs.device_energy_j == 0
    p6 = make_plan(prof, _calib(prof), 6, [8] * 6, None, 0.01, 0.0)
    assert p6.activation_payload_bytes == 0 and p6.costs.server_cost == 0


def test_weights_and_receive_power():
    k = evaluate_costs(
        1e6,
        2e6,
        8e6,
        1e6,
        DeviceProfile(rx_power_w=0.5),
        ServerProfile(price_per_s=3.0),
        ChannelState(1e6, 4e6),
        ObjectiveWeights(time=2.0, energy=0.5, cost=10.0),
    )
    t_loc, t_srv = 5 * 1e6 / 200e6, 1.25 * 2e6 / 3e9
    t_tx = 8e6 / 4e6 + 1e6 / 1e6
    e_loc = 1e-27 * 4e16 * 5 * 1e6
    e_tx = 1.0 * 1.0 + 0.5 * 2.0
    assert k.objective == pytest.approx(
        2 * (t_loc + t_srv + t_tx) + 0.5 * (e_loc + e_tx) + 10 * 3.0 * t_srv
    )


def test_rayleigh_capacity_by_hand():
    ch = ChannelState.rayleigh(0.1, 1e6, fading_gain=1.0)
    pl_db = 128.1 + 37.6 * math.log10(0.1)  # 90.5 dB
    snr = 1.0 * 10 ** (-pl_db / 10) / (10 ** ((-174 - 30) / 10) * 1e6)
    assert ch.uplink_bps == pytest.approx(1e6 * math.log2(1 + snr))
    assert 17e6 < ch.uplink_bps < 18.5e6
    far = ChannelState.rayleigh(1.0, 1e6, fading_gain=1.0)
    assert far.uplink_bps < ch.uplink_bps
    weak = ChannelState.rayleigh(0.1, 1e6, device_tx_power_w=0.01, fading_gain=1.0)
    assert weak.uplink_bps < weak.downlink_bps
    a = ChannelState.rayleigh(0.1, 1e6, seed=3)
    assert a == ChannelState.rayleigh(0.1, 1e6, seed=3)  # seeded fading draw


@pytest.mark.parametrize(
    "bad",
    [
        lambda: DeviceProfile(clock_hz=0),
        lambda: DeviceProfile(cycles_per_mac=-1),
        lambda: DeviceProfile(memory_bytes=0),
        lambda: ServerProfile(clock_hz=float("nan")),
        lambda: ChannelState(uplink_bps=0),
        lambda: ObjectiveWeights(time=-1),
        lambda: ChannelState.rayleigh(-1, 1e6),
    ],
)
def test_validation(bad):
    with pytest.raises(ValueError):
        bad()
