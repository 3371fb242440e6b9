"""Each baseline of qpart.baselines, checked on a tiny trained MLP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qpart.core.metrics import accuracy
from qpart.planning.solve import allocation_problem, default_bit_costs
from qpart.simulation.baselines import (
    autoencoder_config,
    closed_form_config,
    no_opt_config,
    pick_uniform,
    pruning_config,
    qpart_config,
    uniform_sweep,
)
from sim_helpers import tiny_setup


@pytest.fixture(scope="module")
def s():
    return tiny_setup()


def test_no_opt_is_the_float_model(s):
    for p in s.prof.valid_points:
        cfg = no_opt_config(s.prof, p)
        assert accuracy(cfg.module, s.x_eval, s.y_eval) == s.float_accuracy
        assert cfg.weight_payload_bytes == 4 * sum(
            l.weight_count + l.bias_count for l in s.prof.layers[:p]
        )
        assert cfg.activation_payload_bytes == 4 * s.prof.activation_elems(p)


def test_closed_form_is_never_cheaper_than_qpart(s):
    coef = default_bit_costs(s.prof)
    for p in s.prof.valid_points:
        for lv in (0.01, 0.02):
            q = qpart_config(s.prof, s.calib, p, lv, coef)
            cf = closed_form_config(s.prof, s.calib, p, lv, coef)
            g, alpha, c = allocation_problem(s.prof, s.calib, p, coef)
            qb = np.array(list(q.bits) + ([q.activation_bits] if q.activation_bits else []))
            cb = np.array(list(cf.bits) + ([cf.activation_bits] if cf.activation_bits else []))
            assert c @ qb <= c @ cb + 1e-12
            # one-shot: the continuous widths rounded up, so the predicted budget holds
            cont = np.array(cf.detail["continuous_bits"])
            assert np.all(cb >= np.floor(cont)) and np.all(cb <= np.ceil(cont + 1e-3))
            assert cf.detail["predicted_noise"] <= s.calib.budget(lv) * (1 + 1e-9)


def test_uniform_is_the_smallest_width_meeting_the_target(s):
    p = s.prof.num_layers
    sweep = uniform_sweep(s.prof, p, s.x_eval, s.y_eval)
    assert sorted(sweep) == list(range(1, 9))
    for target in (0.0, 0.01, 0.05):
        cfg, acc = pick_uniform(sweep, s.float_accuracy, target)
        b = cfg.detail["width"]
        assert s.float_accuracy - acc <= target + 1e-9
        assert all(s.float_accuracy - sweep[w][1] > target for w in range(1, b))
        assert cfg.bits == (b,) * p
        assert cfg.weight_payload_bytes == s.prof.weight_payload_bytes(p, [b] * p)
    assert sweep[1][0].weight_payload_bytes < sweep[8][0].weight_payload_bytes


def test_pruning_meets_its_target_and_shrinks_the_payload(s):
    p = s.prof.num_layers
    cfg = pruning_config(s.prof, p, s.x_eval, s.y_eval, 0.02, s.float_accuracy)
    sp = cfg.detail["sparsity"]
    assert sp >= 0.5
    assert s.float_accuracy - accuracy(cfg.module, s.x_eval, s.y_eval) <= 0.02 + 1e-9
    mods = dict(cfg.module.named_modules())
    for layer in s.prof.layers:
        zeros = float((mods[layer.name].weight == 0).float().mean())
        assert zeros == pytest.approx(sp, abs=0.02)
    assert cfg.weight_payload_bytes < cfg.fp32_weight_bytes
    assert cfg.activation_payload_bytes == 0  # p = L sends nothing back
    strict = pruning_config(s.prof, 1, s.x_eval, s.y_eval, -1.0, s.float_accuracy)
    assert strict.detail["sparsity"] == 0.0  # impossible target: nothing pruned
    # the original model is untouched
    assert (
        float(
            (dict(s.prof.graph_module.named_modules())[s.prof.layers[0].name].weight == 0)
            .float()
            .mean()
        )
        == 0.0
    )


@pytest.mark.slow
def test_autoencoder_compresses_the_cut_activation(s):
    p = 1
    a = s.prof.activation_elems(p)
    cfg = autoencoder_config(s.prof, p, s.x_train, ratio=2, steps=200, seed=0)
    code = cfg.detail["code"]
    assert code == min(a, max(16, math.ceil(a / 2)))
    assert cfg.detail["relative_mse"] < 0.3
    assert cfg.activation_payload_bytes == 4 * code < 4 * a
    assert cfg.device_macs == s.prof.device_macs(p) + a * code
    assert cfg.server_macs == s.prof.server_macs(p) + code * a
    assert cfg.weight_payload_bytes == cfg.fp32_weight_bytes + 4 * (a * code + code)
    acc = accuracy(cfg.module, s.x_eval, s.y_eval)
    assert acc > s.float_accuracy - 0.1
    with torch.no_grad():
        assert cfg.module(s.x_eval[:3]).shape == (3, 4)
    full = autoencoder_config(s.prof, s.prof.num_layers, s.x_train, steps=1)
    assert full.activation_payload_bytes == 0 and full.detail == {}
