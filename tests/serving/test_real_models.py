"""Real networks end to end: user models with residual DAGs, functional ops and optional
forward arguments are captured, calibrated, tabulated and served; every served pattern's
segment and activation cross the wire byte-exactly as planned and the served output equals
the local quantized split model's. Bad models fail at registration, clearly."""

from __future__ import annotations

import argparse
import copy
import struct

import pytest
import torch
from fastapi.testclient import TestClient

from qpart.apps.model_specs import SpecError, load_spec, parse_config, parse_model_arg
from qpart.apps.serve import build_entries
from qpart.core.errors import ProfileError
from qpart.core.profile import profile
from qpart.core.split import quantized_split_model, roundtrip_activation
from qpart.serving.device import DeviceClient, runnable_segment
from qpart.serving.registry import ModelSpec, entry_from_spec
from qpart.serving.server import ServerThread, create_app
from qpart.serving.wire import (
    ACTIVATION_HEADER_BYTES,
    decode_segment,
    encode_activation,
)
from qpart_kernels import cpu_isa
from user_models import (
    CalledTwice,
    DataDependent,
    TwoInputs,
    Unsupported,
    functional_net,
    functional_spec,
)


def _header_bytes(container: bytes) -> int:
    return 8 + struct.unpack("<Q", container[:8])[0]


@pytest.fixture(scope="module")
def functional_entry(tmp_path_factory):
    return entry_from_spec("func", functional_spec(), tmp_path_factory.mktemp("cache"))


def test_capture_keeps_the_model_function_and_finds_residual_cuts():
    model = functional_net()
    x = torch.randn(5, 3, 12, 12)
    prof = profile(model, x[:2])
    torch.testing.assert_close(prof.graph_module(x), model(x), rtol=1e-5, atol=1e-5)
    names = [layer.name for layer in prof.layers]
    assert names == ["conv1", "dw", "pw", "fc1", "fc2"]
    # inside the dw -> pw branch two tensors cross: no cut there; after the add there is
    assert 1 in prof.cuts and 2 not in prof.cuts
    assert prof.layers[1].rows == 8 and prof.layers[1].reduction == 9  # depthwise
    # the BatchNorm after the add is not foldable: its float tensors ship from p = 3 on
    assert prof.float_tensor_bytes(1) == 0
    assert prof.float_tensor_bytes(3) == 4 * 4 * 8


def test_every_served_pattern_crosses_the_wire_as_planned(functional_entry):
    entry = functional_entry
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    client = TestClient(create_app({"func": entry}))
    checked = set()
    for pid, served in entry.plans.items():
        pat = served.pattern
        if served.key in checked and pat.activation_bits is None:
            continue
        checked.add(served.key)
        resp = client.get(f"/v1/segment/{pid}")
        assert resp.status_code == 200
        data = resp.content
        assert len(data) == pat.weight_payload_bytes + _header_bytes(data)
        seg = decode_segment(data, resp.headers["x-qpart-segment-id"])
        ref = quantized_split_model(
            entry.profile, pat.partition_point, pat.bits, pat.activation_bits
        )(x)
        cut = seg.module(x)
        fused = runnable_segment(copy.deepcopy(seg)).module  # what DeviceClient runs: same values
        assert torch.equal(fused(x), cut)
        if pat.partition_point >= 1:  # conv1 -> F.relu runs as one call
            assert any(n.kwargs.get("relu") for n in fused.graph.nodes if n.op == "call_module")
        if pat.activation_bits is None:
            torch.testing.assert_close(cut, ref, rtol=1e-5, atol=1e-5)
            continue
        body = encode_activation(cut, pat.activation_bits, pid)
        assert len(body) == ACTIVATION_HEADER_BYTES + 3 * pat.activation_payload_bytes
        out = client.post(f"/v1/infer/{pid}", content=body)
        assert out.status_code == 200, out.text
        got = torch.tensor(out.json()["output"])
        torch.testing.assert_close(got, ref.reshape(3, -1), rtol=1e-4, atol=1e-4)
        local = served.server(roundtrip_activation(served.device_module()(x), pat.activation_bits))
        torch.testing.assert_close(got, local.reshape(3, -1), rtol=1e-5, atol=1e-5)
    assert len(checked) >= 3


def test_models_route_lists_layers_cuts_and_bytes(functional_entry):
    client = TestClient(create_app({"func": functional_entry}))
    (info,) = client.get("/v1/models").json()
    prof = functional_entry.profile
    assert info["input_shape"] == [3, 12, 12] and info["output_shape"] == [5]
    assert [layer["name"] for layer in info["layers"]] == [layer.name for layer in prof.layers]
    assert [c["p"] for c in info["cuts"]] == sorted(prof.cuts)
    assert info["fp32_weight_bytes"] == prof.weight_payload_bytes(5, [None] * 5)


def test_segments_are_encoded_lazily_and_the_cache_is_bounded(tmp_path):
    entry = entry_from_spec("func", functional_spec(), tmp_path, segment_cache_size=2)
    assert not entry._segments
    keys = sorted(entry.segment_keys)[:4]
    first = entry.encoded_segment(keys[0])
    for key in keys[1:]:
        entry.encoded_segment(key)
    assert len(entry._segments) == 2
    again = entry.encoded_segment(keys[0])  # evicted, re-encoded byte for byte
    assert again.data == first.data and again is not first


@pytest.mark.parametrize(
    "model,match",
    [
        (DataDependent(), "cannot capture"),
        (TwoInputs(), "2 required inputs"),
        (Unsupported(), r"cumsum.*user_models.py:\d+"),
        (CalledTwice(), "'fc' is called more than once"),
    ],
)
def test_bad_models_fail_at_registration(tmp_path, model, match):
    x = torch.randn(8, 4)
    with pytest.raises(ProfileError, match=match):
        entry_from_spec("bad", ModelSpec(model, x[:2], x), tmp_path)


def test_model_arguments_and_config(tmp_path, monkeypatch):
    assert parse_model_arg("mnist-cnn").builtin == "mnist-cnn"
    assert parse_model_arg("mine=pkg.mod:make").factory == "pkg.mod:make"
    src = parse_model_arg("net=model.pt2:calib.npy")
    assert (src.program, src.calibration) == ("model.pt2", "calib.npy")
    for bad in ("bad id=mnist-cnn", "x=nonsense", "=mnist-cnn"):
        with pytest.raises(SpecError):
            parse_model_arg(bad)
    (tmp_path / "models.toml").write_text(
        '[models.a]\nbuiltin = "mnist-cnn"\n'
        '[models.b]\nfactory = "user_models:functional_tuple"\ndescription = "mine"\n'
    )
    a, b = parse_config(tmp_path / "models.toml")
    assert a.builtin == "mnist-cnn" and b.factory and b.description == "mine"
    spec = load_spec(b)
    assert isinstance(spec, ModelSpec) and spec.description == "mine"
    (tmp_path / "bad.toml").write_text('[models.a]\nbuiltin = "x"\nfactory = "y:z"\n')
    with pytest.raises(SpecError, match="exactly one"):
        parse_config(tmp_path / "bad.toml")


def test_int8_activations_from_config_and_flag(tmp_path):
    from qpart.apps.serve import build_entries

    (tmp_path / "models.toml").write_text(
        '[models.a]\nfactory = "user_models:functional_tuple"\nint8_activations = true\n'
        '[models.b]\nfactory = "user_models:functional_tuple"\n'
    )
    a, b = parse_config(tmp_path / "models.toml")
    assert a.int8_activations is True and b.int8_activations is None
    assert load_spec(a).int8_activations and not load_spec(b).int8_activations
    (tmp_path / "bad.toml").write_text(
        '[models.a]\nbuiltin = "mnist-cnn"\nint8_activations = "yes"\n'
    )
    with pytest.raises(SpecError, match="true or false"):
        parse_config(tmp_path / "bad.toml")
    from qpart.cli import build_parser

    config = ["--config", str(tmp_path / "models.toml"), "--cache-dir", str(tmp_path)]
    entries = build_entries(build_parser().parse_args(["serve", *config]), quiet=True)
    assert entries["a"].act_int8 and not entries["b"].act_int8
    args = build_parser().parse_args(["serve", "--int8-activations", *config])
    assert all(e.act_int8 for e in build_entries(args, quiet=True).values())


def test_exported_program_with_calibration_file(tmp_path):
    from safetensors.torch import save_file

    spec = functional_spec()
    program = torch.export.export(spec.model, (spec.example,))  # static batch, as users save
    torch.export.save(program, tmp_path / "net.pt2")
    save_file({"inputs": spec.calibration}, tmp_path / "calib.safetensors")
    source = parse_model_arg(f"net={tmp_path}/net.pt2:{tmp_path}/calib.safetensors")
    loaded = load_spec(source)
    entry = entry_from_spec("net", loaded, tmp_path)
    x = torch.randn(1, 3, 12, 12)  # another batch size than the export's
    torch.testing.assert_close(entry.profile.graph_module(x), spec.model(x), rtol=1e-5, atol=1e-5)


def test_v1_segment_still_decodes():
    from pathlib import Path

    from safetensors.torch import load_file

    data = Path(__file__).with_name("data").joinpath("segment_v1.safetensors").read_bytes()
    io = load_file(str(Path(__file__).with_name("data") / "segment_v1_io.safetensors"))
    seg = decode_segment(data)
    assert seg.architecture["version"] == 1 and seg.output_shape == (6,)
    # io["y"] was recorded with the AVX2 kernels: exact there; other ISAs sum in another order.
    torch.testing.assert_close(seg.module(io["x"]), io["y"], rtol=1e-5, atol=1e-5)
    if "avx2" in cpu_isa.available_cpu_isas():
        with cpu_isa.cpu_isa("avx2"):
            torch.testing.assert_close(seg.module(io["x"]), io["y"], rtol=0, atol=0)


@pytest.mark.slow
def test_residual_cnn_served_over_http_from_the_cli_arguments():
    """``qpart serve --model mnist-resnet`` as the CLI builds it (the default cache: the
    trained weights are shared with other tests); a device runs digits."""
    args = argparse.Namespace(
        model=["mnist-resnet"],
        config=None,
        cache_dir=None,
        seed=0,
        progress=False,
        calib_samples=300,
    )
    entries = build_entries(args)
    entry = entries["mnist-resnet"]
    assert entry.profile.num_layers == 10 and len(entry.profile.cuts) >= 4
    from qpart.workloads.data import load_mnist

    x = load_mnist(seed=0).x_test[:6].reshape(6, 1, 28, 28)
    with ServerThread(entries) as server, DeviceClient(server.url) as dev:
        for budget in (0.01, 0.05):
            res = dev.run(x, "mnist-resnet", budget)
            p = res.plan
            assert res.segment_bytes in (0, p["segment_bytes"])
            ref = quantized_split_model(
                entry.profile, p["partition_point"], p["bits"], p["activation_bits"]
            )(x)
            torch.testing.assert_close(res.output, ref.reshape(6, -1), rtol=1e-4, atol=1e-4)
            if p["activation_bits"] is not None:
                assert (
                    res.activation_bytes
                    == ACTIVATION_HEADER_BYTES + 6 * p["activation_payload_bytes"]
                )
            # built-in models are accepted on the 1000 test digits (never trained,
            # calibrated or selected on): a served plan's 95 % upper bound meets its budget
            assert p["acceptance_n"] == 1000 and not p["predicted_only"]
            assert p["loss_upper_bound"] <= budget
