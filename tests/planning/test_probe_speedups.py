"""The pieces that make calibration fast: compiled sub-graphs (max_pool2d as strided-slice
maxima, one-channel convolutions), stacked probes equal one-at-a-time probes, plan prefixes
and early-exit chunks equal full measurements, and the predicted robustness search finds the
scale a plain bisection finds."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from qpart.core.profile import profile
from qpart.planning.calibration import calibrate, free_threads
from qpart.planning.probe import Probe, quantized_weight
from qpart.planning.robustness import (
    TOLERANCE_LOG2,
    allowed_disagreements,
    needed_disagreements,
    robustness,
    top1_flip_scales,
)
from qpart.planning.subgraph import conv2d, max_pool2d_slices
from sim_helpers import tiny_setup


class _Res(nn.Module):
    """One-channel input, max pooling and a residual add: every rewrite is exercised."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 6 * 6, 5)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.relu(x + self.c3(torch.relu(self.c2(x))))
        x = F.max_pool2d(x, 3, 2, 1)
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def res():
    torch.manual_seed(0)
    model = _Res().eval()
    x = torch.rand(48, 1, 24, 24)
    prof = profile(model, x[:2])
    return model, x, prof


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (3, 3, 0)])
def test_max_pool_slices_equal_aten(k, s, p):
    x = torch.randn(4, 3, 13, 11)
    expected = torch.ops.aten.max_pool2d(x, [k, k], [s, s], [p, p])
    assert torch.equal(max_pool2d_slices(x, [k, k], [s, s], [p, p]), expected)
    last = x.contiguous(memory_format=torch.channels_last)  # the separable path
    out = max_pool2d_slices(last, [k, k], [s, s], [p, p])
    assert torch.equal(out, expected) and out.is_contiguous(memory_format=torch.channels_last)


def test_one_channel_conv_equals_conv2d():
    x, w, b = torch.randn(8, 1, 12, 12), torch.randn(5, 1, 3, 3), torch.randn(5)
    torch.testing.assert_close(conv2d(x, w, b, 1, 1, 1, 1), F.conv2d(x, w, b, 1, 1))
    torch.testing.assert_close(conv2d(x, w, None, 2, 0, 1, 1), F.conv2d(x, w, None, 2))


def test_probe_reference_equals_the_model(res):
    model, x, prof = res
    probe = Probe(prof, x)
    with torch.inference_mode():
        torch.testing.assert_close(probe.ref, model(x), rtol=1e-4, atol=1e-5)


def test_stacked_probe_equals_one_at_a_time(res):
    """Several perturbations of one node in one stacked pass give the outputs of each
    perturbation alone, and those equal the whole graph run with the weight swapped in."""
    model, x, prof = res
    probe = Probe(prof, x)
    gen = torch.Generator().manual_seed(3)
    for layer in prof.layers:
        idx = probe.layer_index[layer.name]
        w = probe.modules[layer.name].weight
        weights = [w + 0.05 * torch.randn(w.shape, generator=gen) for _ in range(3)]
        values = [probe.layer_output(layer.name, v) for v in weights]
        stacked = probe.outputs_from(idx, values)
        alone = torch.cat([probe.outputs_from(idx, [v]) for v in values])
        torch.testing.assert_close(stacked, alone, rtol=1e-4, atol=1e-5)
        stats = probe.stats_many(stacked, 3)
        for v, st in zip(values, stats):
            assert st == pytest.approx(probe.stats(probe.outputs_from(idx, [v])), rel=1e-4)
        gm = prof.graph_module
        mod = gm.get_submodule(layer.name)
        old = mod.weight.data
        try:
            mod.weight.data = weights[1]
            with torch.inference_mode():
                full = gm(x)
        finally:
            mod.weight.data = old
        torch.testing.assert_close(stacked[x.shape[0] : 2 * x.shape[0]], full, rtol=1e-4, atol=1e-4)


def test_layer_noise_is_linear_in_the_scale(res):
    """The robustness search moves a layer's output as ``y + s * layer(noise)``: the same
    as the layer with weight ``w + s * noise``."""
    _, x, prof = res
    probe = Probe(prof, x)
    name = prof.layers[1].name
    w = probe.modules[name].weight
    noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(1))
    y0 = probe.cache[probe.nodes[probe.layer_index[name]]]
    delta = probe.layer_output(name, noise, bias=False)
    for s in (0.01, 0.3):
        torch.testing.assert_close(
            y0 + s * delta, probe.layer_output(name, w + s * noise), rtol=1e-4, atol=1e-5
        )


def test_plan_prefix_cache_and_chunks_equal_full_measurements(res):
    _, x, prof = res
    probe = Probe(prof, x)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    fresh = Probe(prof, x)
    for p in prof.valid_points:
        bits = [2 + (i % 2) for i in range(p)]
        b_a = 2 if p < prof.num_layers else None
        first = probe.plan_outputs(p, bits, b_a)
        again = probe.plan_outputs(p, bits, b_a)  # from the prefix cache
        assert torch.equal(first, again)
        torch.testing.assert_close(first, fresh.plan_outputs(p, bits, b_a))
        rate = probe.with_plan(p, bits, b_a)[1]
        probe.set_chunks(order, (0.25, 0.5, 1.0))
        count, seen = probe.plan_disagreements(p, bits, b_a)
        assert seen == x.shape[0] and count == round(rate * x.shape[0])
        if count > 0:
            c0, s0 = probe.plan_disagreements(p, bits, b_a, limit=0)
            assert c0 > 0 and s0 <= x.shape[0]
        probe.set_chunks(torch.arange(x.shape[0]), (1.0,))


def test_probe_quantized_plan_uses_the_given_weights(res):
    _, x, prof = res
    probe = Probe(prof, x)
    p = prof.valid_points[-1]
    calls = []

    def weight(name, b):
        calls.append((name, b))
        return quantized_weight(probe.modules[name].weight, b)

    probe.with_plan(p, [3] * p, None, weight)
    assert sorted(calls) == sorted((layer.name, 3) for layer in prof.layers)


def test_counts_of_rates():
    assert needed_disagreements(0.01, 2000) == 20
    assert needed_disagreements(0.01, 256) == 3
    assert needed_disagreements(0.0, 10) == 0
    assert allowed_disagreements(0.0005, 2000) == 1
    assert allowed_disagreements(0.0005, 1000) == 0
    assert allowed_disagreements(0.01 * 0.5, 400) == 2
    for n in (7, 100, 2000):
        for r in (0.0, 0.001, 0.0125, 0.3):
            k = allowed_disagreements(r, n)
            assert k / n <= r and (k + 1) / n > r


def _linear_measure(n: int = 500, classes: int = 10, seed: int = 0, curve: float = 0.0):
    gen = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, classes, generator=gen) * 3
    direction = torch.randn(n, classes, generator=gen)
    calls = []

    def measure(scales):
        calls.append(list(scales))
        out = []
        for s in scales:
            logits = ref + (s + curve * s * s) * direction
            diff = logits - ref
            rate = int((logits.argmax(-1) != ref.argmax(-1)).sum()) / n
            out.append((float((diff**2).sum(-1).mean()), rate, logits))
        return out

    return ref, measure, calls


def _brute_force(measure, target: float) -> float:
    scales = [2.0 ** (e / 256) for e in range(-14 * 256, 3 * 256 + 1)]
    lo, hi = 0, len(scales) - 1
    while lo < hi:  # smallest grid scale reaching the target (rates grow with the scale)
        mid = (lo + hi) // 2
        if measure([scales[mid]])[0][1] >= target:
            hi = mid
        else:
            lo = mid + 1
    return measure([scales[lo]])[0][0]


@pytest.mark.parametrize("curve", [0.0, 0.5])
def test_predicted_search_agrees_with_bisection(curve):
    ref, measure, calls = _linear_measure(curve=curve)
    truth = _brute_force(measure, 0.01)
    calls.clear()
    fast = robustness(measure, 0.01, ref.shape[0], reference=ref)
    passes = len(calls)
    plain = robustness(measure, 0.01, ref.shape[0])
    band = 2.0 ** (2 * TOLERANCE_LOG2) * 1.01  # the bracket's width in energy
    assert truth / band <= fast <= truth * band
    assert truth / band <= plain <= truth * band
    assert passes <= len(calls) - passes  # the prediction needs no more passes than bisection


def test_search_ends_at_the_range():
    ref, measure, _ = _linear_measure()
    never = robustness(lambda s: [(1.0, 0.0, ref) for _ in s], 0.01, ref.shape[0], reference=ref)
    assert never == 1.0
    always = robustness(lambda s: [(2.0, 1.0, ref) for _ in s], 0.01, ref.shape[0])
    assert always == 2.0


def test_top1_flip_scales_by_hand():
    ref = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # sample 0 ties at scale 1; sample 1 never
    s = top1_flip_scales(ref, out, 1.0)
    assert s[0] == pytest.approx(1.0) and math.isinf(s[1])


def test_free_threads_is_a_core_count():
    assert 1 <= free_threads() <= (os.cpu_count() or 1)
    assert free_threads(1) == 1


def test_calibration_is_deterministic_for_a_seed():
    s = tiny_setup()
    kw = {"prof": s.prof, "levels": (0.02, 0.05), "seed": 3, "progress": False, "threads": 1}
    a = calibrate(s.model, s.x_train[:200], **kw)
    b = calibrate(s.model, s.x_train[:200], **kw)
    assert a.to_dict() == b.to_dict()
