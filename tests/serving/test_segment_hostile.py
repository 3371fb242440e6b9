"""A hostile segment cannot hurt a device: every malformed or tampered container raises
:class:`WireFormatError` (never another type), before anything beyond the container's own
tensors is allocated."""

from __future__ import annotations

import copy
import json
import resource

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from qpart.core.profile import profile
from qpart.core.split import quantized_segments
from qpart.serving.segment import decode_segment, encode_segment, read_container
from qpart.serving.wire import WireFormatError
from user_models import functional_net


@pytest.fixture(scope="module")
def valid():
    model = functional_net()
    prof = profile(model, torch.randn(2, 3, 12, 12))
    p = max(prof.cuts)
    seg = quantized_segments(prof, p, [4] * p)
    enc = encode_segment(seg.device, seg.input_shape, seg.cut_shape)
    header, arch = read_container(enc.data)
    from safetensors.torch import load

    return enc, arch, load(enc.data)


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _container(arch: dict, tensors: dict) -> bytes:
    return save(tensors, metadata={"qpart": json.dumps(arch)})


def test_valid_container_round_trips(valid):
    enc, _, _ = valid
    assert decode_segment(enc.data, enc.segment_id).segment_id == enc.segment_id


def test_memory_bomb_is_refused_without_allocating():
    arch = {
        "format": "qpart-segment",
        "version": 2,
        "input_shape": [50000],
        "output_shape": [100000],
        "modules": [
            {
                "name": "fc",
                "type": "QPartLinear",
                "config": {
                    "in_features": 50000,
                    "out_features": 100000,
                    "bits": 8,
                    "group_size": None,
                    "bias": True,
                },
            }
        ],
        "nodes": [
            {"op": "input"},
            {"op": "module", "module": 0, "args": [{"node": 0}]},
            {"op": "output", "value": {"node": 1}},
        ],
    }
    tensors = {
        "m0.packed_weight": torch.zeros(4, 4, dtype=torch.uint8),
        "m0.scales": torch.zeros(4, 1, dtype=torch.float16),
        "m0.zeros": torch.zeros(4, 1, dtype=torch.uint8),
        "m0.bias": torch.zeros(4),
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(WireFormatError, match="expected"):
        decode_segment(_container(arch, tensors))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 * 1024  # the declared layer alone would need ~5 GB


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a["nodes"].insert(1, {"op": "call", "target": "os.system", "args": []}), "op"),
        (lambda a: a["nodes"][1].update(args=[{"node": 5}]), "earlier node"),
        (lambda a: a["nodes"].append({"op": "input"}), "after the output"),
        (lambda a: a["modules"][0]["config"].update(bits=True), "expected int"),
        (lambda a: a["modules"][0]["config"].update(bits=9), "bad config"),
        (lambda a: a["modules"][0]["config"].update(act_int8="yes"), "expected bool"),
        (lambda a: a["modules"][0]["config"].update(act_int8=1), "expected bool"),
        (lambda a: a["modules"][0]["config"].update(pickle=True), "config keys"),
        (lambda a: a["modules"][0]["config"].pop("bits"), "config keys"),
        (lambda a: a["modules"][0].update(type="Pickle"), "unsupported type"),
        (lambda a: a.update(version=3), "version"),
        (lambda a: a.update(input_shape=[-1]), "input_shape"),
        (lambda a: a["nodes"].pop(), "no output"),
        (lambda a: a.update(nodes="x"), "nodes"),
    ],
)
def test_tampered_descriptions_are_refused(valid, mutate, match):
    _, arch, tensors = valid
    bad = copy.deepcopy(arch)
    mutate(bad)
    with pytest.raises(WireFormatError, match=match):
        decode_segment(_container(bad, tensors))


def test_extra_missing_and_misshaped_tensors_are_refused(valid):
    _, arch, tensors = valid
    with pytest.raises(WireFormatError, match="unexpected tensors"):
        decode_segment(_container(arch, {**tensors, "zzz": torch.zeros(1)}))
    missing = dict(tensors)
    missing.pop("m0.scales")
    with pytest.raises(WireFormatError, match="missing"):
        decode_segment(_container(arch, missing))
    wrong = {**tensors, "m0.scales": tensors["m0.scales"].float()}
    with pytest.raises(WireFormatError, match="expected"):
        decode_segment(_container(arch, wrong))


def test_bad_containers_are_refused():
    deep = "[" * 200_000 + "]" * 200_000
    for data in (
        b"",
        b"\xff" * 8 + b"{}",
        (10**9).to_bytes(8, "little") + b"{}",
        save({"a": torch.zeros(1)}, metadata={"qpart": deep}),
        save({"a": torch.zeros(1)}, metadata={"qpart": "{}"}),
        save({"a": torch.zeros(1)}),
    ):
        with pytest.raises(WireFormatError):
            decode_segment(data)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_random_corruption_raises_only_wire_format_errors(valid, data):
    enc, _, _ = valid
    raw = bytearray(enc.data)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    try:
        decode_segment(bytes(raw))
    except WireFormatError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_random_description_values_raise_only_wire_format_errors(valid, data):
    _, arch, tensors = valid
    bad = copy.deepcopy(arch)
    node = bad
    path = []
    for _ in range(data.draw(st.integers(1, 4))):  # walk down to a random spot
        if isinstance(node, dict) and node:
            key = data.draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            key = data.draw(st.integers(0, len(node) - 1))
        else:
            break
        path.append((node, key))
        node = node[key]
    if path:
        parent, key = path[-1]
        parent[key] = data.draw(_json)
    try:
        decode_segment(_container(bad, tensors))
    except WireFormatError:
        pass
