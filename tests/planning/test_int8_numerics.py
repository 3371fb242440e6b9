"""The integer-activation path planned for: the planner's probe measures with exactly the
numerics the device's integer kernels run (up to float rounding), calibrations remember
their numerics, and a served model ships segments whose layers run on int8 activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import qpart_kernels
from qpart.core.profile import profile
from qpart.core.split import quantized_segments, quantized_split_model, run_split
from qpart.planning.calibration import cached_calibration, calibrate
from qpart.planning.heldout import HeldOutAcceptance
from qpart.planning.noise_model import Calibration
from qpart.planning.probe import Probe, quantized_weight
from qpart.serving.registry import ModelSpec, entry_from_spec
from qpart.serving.segment import decode_segment
from user_models import functional_net


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),  # one input channel: the probe's rewritten conv
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    ).eval()


CASES = [
    (_cnn, (1, 10, 10)),
    (functional_net, (3, 12, 12)),
]


def _plans(prof):
    """A few plans at every valid point (mixed widths, cut activation quantized)."""
    for p in prof.valid_points:
        for bits in (3, 6):
            yield p, [bits + (i % 2) for i in range(p)], None if p == prof.num_layers else 6


@pytest.mark.parametrize("act_int8", [False, True])
@pytest.mark.parametrize("make,shape", CASES)
def test_probe_measures_the_device_kernels_numerics(make, shape, act_int8):
    model = make()
    x = torch.randn(48, *shape, generator=torch.Generator().manual_seed(2))
    prof = profile(model, x[:2])
    probe = Probe(prof, x, act_int8=act_int8)

    def weight(name, b):
        return quantized_weight(probe.modules[name].weight, b)

    for p, bits, b_a in _plans(prof):
        got = probe.plan_outputs(p, bits, b_a, weight)
        with torch.inference_mode():
            device = quantized_split_model(prof, p, bits, b_a, act_int8)(x)
        # same values up to float rounding (accumulation order); one activation code step
        # can flip on a rounding tie, so compare loosely but far below the int8 noise
        scale = device.abs().max()
        assert (got - device).abs().max() <= 1e-3 * scale + 1e-5, (p, bits)
    # the probe's numerics are the requested ones: int8 inputs change the outputs
    p = max(prof.valid_points)
    bits = [8] * p
    b_a = None if p == prof.num_layers else 8
    other = Probe(prof, x, act_int8=not act_int8)
    diff = probe.plan_outputs(p, bits, b_a, weight) - other.plan_outputs(p, bits, b_a, weight)
    assert diff.abs().max() > 1e-4


def test_probe_int8_hooks_are_off_outside_a_plan():
    model = _cnn()
    x = torch.randn(16, 1, 10, 10, generator=torch.Generator().manual_seed(3))
    prof = profile(model, x[:2])
    probe = Probe(prof, x, act_int8=True)
    probe.plan_outputs(2, [4, 4], 4)
    assert not probe._int8_active
    with torch.inference_mode():
        torch.testing.assert_close(probe.gm(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act_int8", [False, True])
def test_held_out_probe_and_exact_kernels_agree(act_int8):
    model = _cnn()
    x = torch.randn(200, 1, 10, 10, generator=torch.Generator().manual_seed(4))
    prof = profile(model, x[:2])
    fast = HeldOutAcceptance(prof, x, act_int8=act_int8)
    exact = HeldOutAcceptance(prof, x, act_int8=act_int8, exact_kernels=True)
    for p, bits, b_a in _plans(prof):
        a, b = fast.measure(p, bits, b_a), exact.measure(p, bits, b_a)
        # only samples within float rounding of a tie can differ
        assert abs(a.disagreements - b.disagreements) <= 2, (p, bits, a, b)


def test_calibration_records_its_numerics(tmp_path):
    model = _cnn()
    x = torch.randn(120, 1, 10, 10, generator=torch.Generator().manual_seed(5))
    prof = profile(model, x[:2])
    calib = calibrate(model, x, prof=prof, levels=(0.02, 0.05), progress=False, act_int8=True)
    assert calib.act_int8
    calib.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json").act_int8
    _, path, hit = cached_calibration(model, x, prof, tmp_path, "m", act_int8=True)
    assert "_int8_" in path.name and not hit
    _, float_path, _ = cached_calibration(model, x, prof, tmp_path, "m")
    assert float_path != path and not Calibration.load(float_path).act_int8


def test_a_model_served_on_int8_activations_ships_int8_segments(tmp_path):
    model = _cnn()
    x = torch.randn(600, 1, 10, 10, generator=torch.Generator().manual_seed(6))
    spec = ModelSpec(model, x[:2], x, "int8 cnn", int8_activations=True)
    entry = entry_from_spec("cnn-int8", spec, tmp_path)
    assert entry.act_int8 and entry.calibration.act_int8
    float_entry = entry_from_spec("cnn-int8", ModelSpec(model, x[:2], x, "float"), tmp_path)
    assert not float_entry.act_int8
    assert set(entry.plans).isdisjoint(float_entry.plans)  # plan ids name the numerics
    served = next(sp for sp in entry.plans.values() if sp.pattern.partition_point > 0)
    decoded = decode_segment(served.encoded.data, served.encoded.segment_id).module
    layers = [m for m in decoded.modules() if hasattr(m, "act_int8")]
    assert layers and all(m.act_int8 for m in layers)
    p, bits = served.key
    ref = quantized_split_model(entry.profile, p, bits, served.pattern.activation_bits, True)
    out = run_split(decoded, served.server, x[:32], served.pattern.activation_bits)
    torch.testing.assert_close(out, ref(x[:32]), rtol=0, atol=0)


def test_model_spec_checks_the_flag():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="int8_activations"):
        ModelSpec(nn.Linear(3, 2), x[:2], x, int8_activations="yes")


def test_quantized_segments_set_every_layer():
    model = functional_net()
    prof = profile(model, torch.randn(2, 3, 12, 12))
    p = max(prof.valid_points)
    seg = quantized_segments(prof, p, [4] * p, act_int8=True)
    quantized = [
        m
        for m in seg.device.modules()
        if isinstance(m, (qpart_kernels.QPartLinear, qpart_kernels.QPartConv2d))
    ]
    assert len(quantized) == p and all(m.act_int8 for m in quantized)
