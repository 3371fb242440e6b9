"""Models a user might bring (importable as ``user_models:<factory>`` in tests): one with
functional ops, indexing, an optional forward argument, a depthwise conv and a BatchNorm
that does not follow a conv; and models QPART must refuse at registration."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qpart.serving.registry import ModelSpec


class FunctionalNet(nn.Module):
    """F.pad / F.relu / indexing / cat / mul, an optional ``forward`` argument, a depthwise
    conv, Hardswish, SiLU, a BatchNorm after an add (kept in float) and max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.Hardswish()
        self.fc1 = nn.Linear(8 * 3 * 3 + 4, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor, scale: float = 1.0, embed: bool = False) -> torch.Tensor:
        x = F.relu(self.conv1(F.pad(x, (1, 1, 1, 1))))
        y = self.pw(self.act(self.dw(x)))
        x = self.bn(x + y) * scale
        x = F.max_pool2d(F.silu(x), 4)
        flat = torch.flatten(x, 1)
        x = torch.cat([flat, flat[:, :4]], dim=1)
        x = F.relu(self.fc1(x))
        if embed:
            return x
        return self.fc2(x)


def functional_net() -> FunctionalNet:
    """A :class:`FunctionalNet` with non-trivial BatchNorm statistics (eval mode)."""
    torch.manual_seed(0)
    model = FunctionalNet()
    model.bn.running_mean.uniform_(-0.3, 0.3)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def functional_spec() -> ModelSpec:
    """Factory for ``qpart serve --model ID=user_models:functional_spec``."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(96, 3, 12, 12, generator=gen)
    return ModelSpec(functional_net(), x[:2], x, "functional test net")


def functional_tuple():
    """The same as a plain tuple ``(model, example, calibration)``."""
    spec = functional_spec()
    return spec.model, spec.example, spec.calibration


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, y):
        return self.fc(x) + y


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cumsum(self.fc(x), dim=1)


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))
