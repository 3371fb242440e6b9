"""Smoke test of the end-to-end benchmark's helpers (benchmarks/bench_end_to_end.py): the
PyTorch FX static int8 peer, the QPART variants and the agreement measure, on a tiny
residual CNN, so the benchmark cannot rot between runs."""

from __future__ import annotations

import pathlib
import sys
import warnings

import pytest
import torch
from torch import nn

import qpart_kernels as qk

BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.skipif(not qk.extension_loaded(), reason="needs the compiled extension")


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_variants_run_and_agree_with_float():
    from bench_end_to_end import agreement, fx_static_int8, qpart_model, time_rounds

    torch.manual_seed(0)
    model = _Tiny().eval()
    x = torch.randn(40, 3, 8, 8)
    with torch.inference_mode():
        ref = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fx = fx_static_int8(model, x[:16])
    variants = {
        "fp32": model,
        "fx-int8": fx,
        "qpart-f32": qpart_model(model, x[:2], 8, False, None),
        "qpart-i8": qpart_model(model, x[:2], 8, True, None),
    }
    assert agreement(model, ref, x) == 1.0
    for name, m in variants.items():
        assert 0.8 <= agreement(m, ref, x) <= 1.0, name
    layers = [m for m in variants["qpart-i8"].modules() if isinstance(m, qk.QPartConv2d)]
    assert layers and all(m.act_int8 for m in layers)
    times = time_rounds(variants, x[:4], rounds=2)
    assert all(len(t) == 2 and min(t) > 0 for t in times.values())


def test_module_times_cover_every_leaf_and_remove_their_hooks():
    from bench_end_to_end import module_times

    torch.manual_seed(0)
    model = _Tiny().eval()
    times = module_times(model, torch.randn(2, 3, 8, 8), rounds=3)
    assert set(times) == {"conv.0", "conv.1", "conv.2", "fc"}
    assert all(t >= 0 for t in times.values())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
