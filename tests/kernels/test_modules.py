"""QPartLinear / QPartConv2d: conversion, forward, state_dict, payload, model swap."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from helpers import ALL_BITS
from qpart_kernels.nn import QPartConv2d, QPartLinear, payload_bytes, quantize_model


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("group_size", [None, 32])
def test_linear_from_float_matches_dequantized_float(bits, group_size):
    lin = nn.Linear(64, 19)
    q = QPartLinear.from_float(lin, bits, group_size)
    x = torch.randn(2, 5, 64)
    expected = nn.functional.linear(x, q.dequantized_weight(), lin.bias)
    torch.testing.assert_close(q(x), expected, atol=1e-4, rtol=1e-4)
    err = (q.dequantized_weight() - lin.weight).abs().max()
    assert err <= q.scales.float().max() * (1 + 1e-6)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_linear_payload_is_exact(bits):
    n, k = 10, 50
    q = QPartLinear.from_float(nn.Linear(k, n), bits)
    weight_bytes = n * math.ceil(bits * k / 8)
    assert weight_bytes - math.ceil(bits * n * k / 8) < n  # <= one padding byte per row
    assert (
        q.payload_bytes() == weight_bytes + n * 2 + n * 1 + n * 4
    )  # + fp16 scale, zero, fp32 bias
    q_grouped = QPartLinear.from_float(nn.Linear(64, n, bias=False), bits, 32)
    assert q_grouped.payload_bytes() == n * math.ceil(bits * 64 / 8) + n * 2 * 3


def test_linear_state_dict_round_trip(tmp_path):
    lin = nn.Linear(40, 7)
    q = QPartLinear.from_float(lin, 3)
    path = tmp_path / "layer.pt"
    torch.save(q.state_dict(), path)
    fresh = QPartLinear(40, 7, bits=3)
    fresh.load_state_dict(torch.load(path))
    x = torch.randn(4, 40)
    assert torch.equal(fresh(x), q(x))
    assert set(q.state_dict()) == {"packed_weight", "scales", "zeros", "bias"}
    with pytest.raises(RuntimeError, match="size mismatch"):
        QPartLinear(40, 7, bits=5).load_state_dict(q.state_dict())


def test_extra_repr_shows_bits_and_grouping():
    assert "bits=4, per-channel" in repr(QPartLinear.from_float(nn.Linear(64, 8), 4))
    assert "bits=2, group_size=32" in repr(QPartLinear.from_float(nn.Linear(64, 8), 2, 32))
    assert "bits=6" in repr(QPartConv2d.from_float(nn.Conv2d(3, 4, 3), 6))


@pytest.mark.parametrize("bits", [1, 3, 4, 7, 8])
@pytest.mark.parametrize(
    "conv",
    [
        lambda: nn.Conv2d(3, 8, 3, padding=1),
        lambda: nn.Conv2d(4, 6, (3, 1), stride=2, padding=(1, 0), dilation=(2, 1), groups=2),
        lambda: nn.Conv2d(32, 8, 3, padding="same", bias=False),
        lambda: nn.Conv2d(6, 6, 3, padding="valid", groups=6),
    ],
)
def test_conv_from_float_matches_dequantized_float(bits, conv):
    conv = conv()
    q = QPartConv2d.from_float(conv, bits)
    x = torch.randn(2, conv.in_channels, 9, 10)
    expected = nn.functional.conv2d(
        x, q.dequantized_weight(), conv.bias, conv.stride, q.padding, conv.dilation, conv.groups
    )
    torch.testing.assert_close(q(x), expected, atol=1e-4, rtol=1e-4)
    assert q(x).shape == conv(x).shape


def test_conv_unbatched_input_and_grouped_quantization():
    conv = nn.Conv2d(32, 4, 3, padding=1)
    q = QPartConv2d.from_float(conv, 4, group_size=96)
    assert q.scales.shape == (4, 3)
    x = torch.randn(32, 5, 5)
    torch.testing.assert_close(q(x), q(x.unsqueeze(0)).squeeze(0))


def test_conv_rejects_unsupported_padding():
    with pytest.raises(ValueError, match="padding_mode"):
        QPartConv2d.from_float(nn.Conv2d(3, 4, 3, padding_mode="reflect"), 4)
    with pytest.raises(ValueError, match="asymmetric"):
        QPartConv2d.from_float(nn.Conv2d(3, 4, 2, padding="same"), 4)


def test_linear_module_rejects_wrong_input_width():
    q = QPartLinear.from_float(nn.Linear(63, 4), 4)  # 63 * 4 bits: same byte count as 64
    with pytest.raises(ValueError, match="in_features=63"):
        q(torch.randn(2, 64))


def mlp():
    return nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)
    )


def test_quantize_model_swaps_every_layer():
    model = mlp()
    x = torch.randn(3, 20)
    reference_out = model(x)
    quantize_model(model, 8)
    assert all(isinstance(model[i], QPartLinear) for i in (0, 2, 4))
    torch.testing.assert_close(model(x), reference_out, atol=5e-2, rtol=5e-2)


def test_quantize_model_per_layer_bits_keeps_others_float():
    model = quantize_model(mlp(), {"0": 2, "4": 6})
    assert isinstance(model[0], QPartLinear) and model[0].bits == 2
    assert isinstance(model[2], nn.Linear)
    assert isinstance(model[4], QPartLinear) and model[4].bits == 6


def test_quantize_model_errors_name_the_layer():
    with pytest.raises(KeyError, match="nope"):
        quantize_model(mlp(), {"nope": 4})
    with pytest.raises(TypeError, match="not nn.Linear"):
        quantize_model(mlp(), {"1": 4})
    with pytest.raises(ValueError, match="layer '0'"):
        quantize_model(mlp(), 4, group_size=32)  # 20 input features: no group of 32
    with pytest.raises(ValueError, match="bits must be in 1..8"):
        quantize_model(mlp(), 0)


def test_quantize_model_root_module_and_group_dict():
    q = quantize_model(nn.Linear(64, 3), 4)
    assert isinstance(q, QPartLinear)
    model = quantize_model(mlp(), 4, group_size={"2": 32})
    assert model[2].group_size == 32 and model[0].group_size == 20


def test_model_payload_counts_quantized_and_float_tensors():
    model = mlp()
    float_bytes = payload_bytes(model)
    assert float_bytes == sum(p.numel() * 4 for p in model.parameters())
    quantize_model(model, {"0": 4})
    expected = model[0].payload_bytes() + sum(p.numel() * 4 for p in model[2:].parameters())
    assert payload_bytes(model) == expected < float_bytes


def test_quantized_model_survives_torch_save(tmp_path):
    model = quantize_model(mlp(), 5)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = quantize_model(mlp(), 5)
    fresh.load_state_dict(torch.load(buffer))
    x = torch.randn(2, 20)
    assert torch.equal(fresh(x), model(x))
