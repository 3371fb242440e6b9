"""torch.library.opcheck on every op, and torch.compile(fullgraph=True) of QPART modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import qpart_kernels as qk


def weight(n: int, k: int, bits: int, group: int | None = None):
    return tuple(qk.quantize_weight(torch.randn(n, k), bits, group))


def op_samples():
    """(op name, args) pairs covering every op; widths chosen to include odd ones."""
    samples = []
    for bits in (1, 3, 8):
        w = weight(6, 64, bits, 32)
        samples += [
            ("quantize_weight", (torch.randn(6, 64), bits, 32)),
            ("quantize_weight", (torch.randn(5, 7).to(torch.float16), bits, 7)),
            ("dequantize_weight", (*w, bits, 64)),
            ("linear", (torch.randn(3, 64), *w, torch.randn(6), bits, 64)),
            ("linear", (torch.randn(2, 2, 64).to(torch.bfloat16), *w, None, bits, 64)),
            ("linear", (torch.randn(64, 3).t(), *w, None, bits, 64)),  # non-contiguous input
            ("linear", (torch.randn(3, 64), *w, torch.randn(6), bits, 64, True)),  # int path
            ("linear", (torch.randn(2, 2, 64).to(torch.bfloat16), *w, None, bits, 64, True)),
            ("quantize_activation", (torch.randn(2, 3, 5), bits, False)),
            ("quantize_activation", (torch.randn(4, 9), bits, True)),
        ]
        cw = weight(4, 2 * 3 * 3, bits)
        samples.append(
            (
                "conv2d",
                (
                    torch.randn(2, 4, 7, 6),
                    *cw,
                    torch.randn(4),
                    bits,
                    [4, 2, 3, 3],
                    [2, 1],
                    [1, 1],
                    [1, 2],
                    2,
                ),
            )
        )
        samples.append(("max_pool2d", (torch.randn(2, 3, 9, 8), [3, 2], [2, 1], [1, 0])))
        a = tuple(qk.quantize_activation(torch.randn(3, 5), bits, True))
        samples.append(("dequantize_activation", (*a, bits, [3, 5], torch.float16)))
    return samples


@pytest.mark.parametrize("name,args", op_samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(name, args):
    torch.library.opcheck(getattr(torch.ops.qpart, name).default, args)


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, groups=2)
        self.fc1 = nn.Linear(8 * 3 * 3, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_compile_fullgraph_matches_eager(bits):
    model = qk.quantize_model(SmallNet().eval(), bits)
    x = torch.randn(3, 1, 8, 8)
    with torch.inference_mode():
        eager = model(x)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    with torch.inference_mode():
        out = compiled(x)
    torch.testing.assert_close(out, eager)


def test_compile_cut_activation_round_trip():
    def transfer(x):
        q = qk.quantize_activation(x, 4, per_token=True)
        return qk.dequantize_activation(q.packed, q.scales, q.zeros, 4, x.shape)

    x = torch.randn(5, 12)
    torch._dynamo.reset()
    compiled = torch.compile(transfer, fullgraph=True, backend="inductor")
    assert torch.equal(compiled(x), transfer(x))
