"""Segment extraction and the wire formats (no server): segments rebuild without pickle and
compute what the in-process split model computes; bytes equal the planner's payloads."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from qpart.core.profile import profile
from qpart.core.split import (
    quantized_segments,
    quantized_split_model,
    roundtrip_activation,
    run_split,
    split_model,
)
from qpart.serving import wire
from qpart.serving.segment import read_container


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(20, 16),
        nn.ReLU(),
        nn.Linear(16, 12),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(12, 5),
    ).eval()


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Identity(),
        nn.Linear(8, 4),
    ).eval()


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.a(x))
        return self.c(self.b(y) + y)


@pytest.mark.parametrize("act_int8", [False, True])
@pytest.mark.parametrize("make,shape", [(_mlp, (20,)), (_cnn, (3, 16, 16))])
def test_segments_rebuild_and_match_split_model_at_every_point(make, shape, act_int8):
    model = make()
    if isinstance(model[1], nn.BatchNorm2d):  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(6, *shape)
    prof = profile(model, x[:2])
    rng = random.Random(0)
    for p in prof.valid_points:
        bits = [rng.randint(2, 8) for _ in range(p)]
        b_a = None if p == prof.num_layers else rng.randint(2, 8)
        seg = quantized_segments(prof, p, bits, act_int8)
        enc = wire.encode_segment(seg.device, seg.input_shape, seg.cut_shape or seg.output_shape)
        assert enc.tensor_bytes == prof.weight_payload_bytes(p, bits)
        assert enc.overhead_bytes < 8192
        dec = wire.decode_segment(enc.data, enc.segment_id)
        assert all(not isinstance(m, (nn.Linear, nn.Conv2d)) for m in dec.module.modules())
        sent = [m.act_int8 for m in seg.device.modules() if hasattr(m, "act_int8")]
        got = [m.act_int8 for m in dec.module.modules() if hasattr(m, "act_int8")]
        assert sent == got and all(flag == act_int8 for flag in got)
        ref = quantized_split_model(prof, p, bits, b_a, act_int8)(x)
        out = run_split(dec.module, seg.server, x, b_a)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # deterministic: same segment -> same bytes -> same id
        assert (
            wire.encode_segment(
                seg.device, seg.input_shape, seg.cut_shape or seg.output_shape
            ).segment_id
            == enc.segment_id
        )


def test_float_activation_layers_carry_no_act_int8_key():
    model = _mlp()
    prof = profile(model, torch.randn(2, 20))
    for act_int8 in (False, True):
        seg = quantized_segments(prof, 3, [4, 4, 4], act_int8)
        enc = wire.encode_segment(seg.device, seg.input_shape, seg.output_shape)
        _, arch = read_container(enc.data)
        flags = [m["config"].get("act_int8") for m in arch["modules"]]
        assert flags == ([True] * 3 if act_int8 else [None] * 3)


def test_float_split_composes_to_the_model():
    model = _cnn()
    x = torch.randn(3, 3, 16, 16)
    prof = profile(model, x[:2])
    for p in prof.valid_points:
        seg = split_model(prof, p)
        torch.testing.assert_close(seg.server(seg.device(x)), model(x))


def test_residual_segment_ships_as_a_graph():
    model = _Residual().eval()
    x = torch.randn(4, 8)
    prof = profile(model, x[:2])
    seg = quantized_segments(prof, prof.num_layers, [4] * prof.num_layers)
    enc = wire.encode_segment(seg.device, (8,), (3,))
    dec = wire.decode_segment(enc.data, enc.segment_id)
    torch.testing.assert_close(dec.module(x), seg.device(x), rtol=0, atol=0)


def test_tampered_or_foreign_segments_are_rejected():
    model = _mlp()
    prof = profile(model, torch.randn(2, 20))
    seg = quantized_segments(prof, 2, [4, 4])
    enc = wire.encode_segment(seg.device, seg.input_shape, seg.cut_shape)
    bad = bytearray(enc.data)
    bad[-1] ^= 0xFF
    with pytest.raises(wire.WireFormatError, match="hash mismatch"):
        wire.decode_segment(bytes(bad), enc.segment_id)
    with pytest.raises(wire.WireFormatError, match="safetensors"):
        wire.decode_segment(b"not a container")
    from safetensors.torch import save

    foreign = save({"0.packed_weight": torch.zeros(3)}, metadata={"qpart": "{}"})
    with pytest.raises(wire.WireFormatError):
        wire.decode_segment(foreign)


@pytest.mark.parametrize(
    "shape,bits", [((1, 784), 3), ((5, 64), 8), ((2, 4, 3, 3), 1), ((3, 7), 5)]
)
def test_activation_body_is_header_plus_planned_payload(shape, bits):
    x = torch.randn(*shape)
    body = wire.encode_activation(x, bits, "00112233aabbccdd")
    per_sample = shape[1] if len(shape) == 2 else shape[1] * shape[2] * shape[3]
    d_a = -(-per_sample * bits // 8) + 3  # the planner's D_a
    assert len(body) == wire.ACTIVATION_HEADER_BYTES + shape[0] * d_a == 32 + shape[0] * d_a
    head, y = wire.decode_activation(body, shape[1:], bits)
    assert head.plan_id == "00112233aabbccdd" and head.shape == shape and head.bits == bits
    torch.testing.assert_close(y, roundtrip_activation(x, bits))
    with pytest.raises(wire.WireFormatError, match="exactly"):
        wire.decode_activation(body[:-1])
    with pytest.raises(wire.WireFormatError, match="exactly"):
        wire.decode_activation(body + b"\0")
    with pytest.raises(wire.WireFormatError, match="shorter"):
        wire.decode_activation(body[:10])
    with pytest.raises(wire.WireFormatError, match="magic"):
        wire.decode_activation(b"XXXX" + body[4:])
    with pytest.raises(wire.WireFormatError, match="cut shape"):
        wire.decode_activation(body, (999,))
