"""Layer profile: hand-checked numbers for an MLP and a CNN with a residual block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qpart.core.profile import ProfileError, profile
from qpart.core.split import quantized_split_model
from qpart.workloads.models import mnist_mlp


class ResCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        y = torch.relu(self.c2(x))  # residual block: c2 -> c3, skip from x
        y = self.c3(y)
        x = torch.relu(x + y)
        x = torch.relu(self.down(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def test_mlp_by_hand():
    prof = profile(mnist_mlp(), torch.zeros(3, 784))
    widths = [784, 512, 256, 128, 64, 32, 10]
    assert [l.name for l in prof.layers] == ["0", "2", "4", "6", "8", "10"]
    for layer, k, n in zip(prof.layers, widths[:-1], widths[1:]):
        assert (layer.weight_count, layer.bias_count, layer.macs, layer.output_elems) == (
            k * n,
            n,
            k * n,
            n,
        )
        assert (layer.rows, layer.reduction, layer.kind) == (n, k, "linear")
    assert prof.valid_points == (0, 1, 2, 3, 4, 5, 6)
    assert [prof.activation_elems(p) for p in range(7)] == [784, 512, 256, 128, 64, 32, 0]
    assert prof.device_macs(2) == 784 * 512 + 512 * 256
    assert prof.server_macs(2) == 256 * 128 + 128 * 64 + 64 * 32 + 32 * 10
    # payload: N*ceil(K*b/8) + 3N + 4N ; activation ceil(b*A/8) + 3
    assert prof.weight_payload_bytes(1, [3]) == 512 * 294 + 7 * 512
    assert prof.activation_payload_bytes(1, 3) == 192 + 3
    assert prof.activation_payload_bytes(6, None) == 0
    assert prof.weight_payload_bytes(1, [None]) == 4 * (784 * 512 + 512)
    # peak live float activations on the device: input + first output
    assert prof.device_memory_bytes(1, [8]) == prof.weight_payload_bytes(1, [8]) + 4 * (784 + 512)


def test_payload_matches_real_modules():
    torch.manual_seed(0)
    prof = profile(mnist_mlp(), torch.zeros(2, 784))
    bits = [3, 5, 7]
    split = quantized_split_model(prof, 3, bits, 4)
    mods = dict(split.named_modules())
    assert sum(mods[n].payload_bytes() for n in ("0", "2", "4")) == prof.weight_payload_bytes(
        3, bits
    )


def test_residual_cnn_by_hand():
    prof = profile(ResCNN(), torch.zeros(2, 3, 8, 8))
    got = {
        l.name: (l.weight_count, l.bias_count, l.macs, l.output_elems, l.rows, l.reduction)
        for l in prof.layers
    }
    assert got == {
        "c1": (3 * 8 * 9, 8, 3 * 8 * 9 * 64, 8 * 64, 8, 27),
        "c2": (8 * 8 * 9, 8, 8 * 8 * 9 * 64, 8 * 64, 8, 72),
        "c3": (8 * 8 * 9, 0, 8 * 8 * 9 * 64, 8 * 64, 8, 72),
        # grouped, strided: C_in/groups * C_out * kh * kw * H_out * W_out
        "down": (16 * 4 * 9, 16, 4 * 16 * 9 * 16, 16 * 16, 16, 36),
        "fc": (160, 10, 160, 10, 10, 16),
    }
    # Inside the residual block (after c2) two tensors cross: not a cut.
    assert prof.valid_points == (0, 1, 3, 4, 5)
    assert prof.activation_elems(0) == 3 * 64
    assert prof.activation_elems(1) == 8 * 64
    assert prof.activation_elems(3) == 8 * 64  # after the add + relu
    assert prof.activation_elems(4) == 16  # after pooling + flatten (smallest)
    with pytest.raises(ValueError, match="not valid"):
        prof.activation_elems(2)


def test_residual_split_runs_and_matches_float_at_8_bits():
    torch.manual_seed(0)
    model = ResCNN().eval()
    x = torch.randn(4, 3, 8, 8)
    prof = profile(model, x[:2])
    split = quantized_split_model(prof, 3, [8, 8, 8], 8)
    with torch.no_grad():
        torch.testing.assert_close(split(x), model(x), atol=0.05, rtol=0.05)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.fc(x)
        return x


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))


def test_errors():
    with pytest.raises(ProfileError, match="cannot capture"):
        profile(Untraceable(), torch.zeros(2, 4))
    with pytest.raises(ProfileError, match="more than once"):
        profile(Reused(), torch.zeros(2, 4))
    with pytest.raises(ProfileError, match="no nn.Linear"):
        profile(nn.Sequential(nn.ReLU()), torch.zeros(2, 4))
    with pytest.raises(ProfileError, match="batched"):
        profile(mnist_mlp(), torch.zeros(784))
