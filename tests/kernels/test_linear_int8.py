"""The integer path of qpart.linear (``int8_activations=True``): every CPU ISA and width
against the reference (same int8 activation quantization, then an fp32 linear), 1 and 2
threads, the modules' ``act_int8`` flag, and its error handling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import qpart_kernels as qk
from helpers import ALL_BITS
from qpart_kernels.ops import reference

pytestmark = pytest.mark.skipif(not qk.extension_loaded(), reason="needs the compiled extension")


def _bound(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """sum |terms| of each output, the scale of its float rounding error."""
    xq = reference.int8_fake_quant(x).reshape(-1, x.shape[-1])
    out = xq.abs() @ w.abs().t()
    if bias is not None:
        out = out + bias.abs()
    return out.reshape(*x.shape[:-1], w.shape[0])


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize(
    "m,k,n,group",
    [
        (1, 100, 37, None),  # per-channel, k not a multiple of 8 / 32
        (2, 256, 33, 128),
        (3, 64, 1, 32),  # n = 1
        (5, 1030, 19, None),  # row blocks + tails, k tail
        (9, 384, 50, 128),
        (1, 512, 8, 64),
    ],
)
def test_matches_reference(isa, threads, bits, m, k, n, group):
    torch.manual_seed(1000 * bits + m + k)
    w = torch.randn(n, k) * 0.5
    x = torch.randn(m, k) * 2
    bias = torch.randn(n) if m % 2 else None
    q = qk.quantize_weight(w, bits, group)
    got = qk.linear(x, *q, bits, bias=bias, int8_activations=True)
    want = reference.linear(x, *q, bias, bits, k, True)
    wd = qk.dequantize_weight(*q, bits, k)
    err = (got - want).abs()
    assert bool((err <= 2e-6 * _bound(x, wd, bias) + 1e-6).all()), float(err.max())
    # The int path really quantizes the activations: it differs from the float path.
    flt = qk.linear(x, *q, bits, bias=bias)
    assert not torch.equal(got, flt)


def test_quantizer_is_bit_exact_with_the_reference():
    torch.manual_seed(0)
    x = torch.randn(7, 300) * torch.logspace(-3, 3, 7).unsqueeze(1)
    x[3] = 0.0
    q, scale = reference.quantize_activations_int8(x)
    assert q.abs().max() <= 127 and float(scale[3]) == 0.0
    # Weights equal to one-hot rows pick single quantized activations out exactly.
    eye = torch.eye(300)[:32]
    p = qk.quantize_weight(eye, 8, None)
    got = qk.linear(x, *p, 8, int8_activations=True)
    want = reference.linear(x, *p, None, 8, 300, True)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_thread_count_does_not_change_results():
    torch.manual_seed(3)
    x, w = torch.randn(6, 512), torch.randn(96, 512)
    q = qk.quantize_weight(w, 4, 128)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = qk.linear(x, *q, 4, int8_activations=True)
        torch.set_num_threads(2)
        two = qk.linear(x, *q, 4, int8_activations=True)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, two)


def test_dtypes_and_batch_dims():
    torch.manual_seed(4)
    w = torch.randn(10, 64)
    q = qk.quantize_weight(w, 5, 32)
    x = torch.randn(2, 3, 64)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        got = qk.linear(x.to(dtype), *q, 5, int8_activations=True)
        want = reference.linear(x.to(dtype), *q, None, 5, 64, True)
        assert got.dtype == dtype and got.shape == (2, 3, 10)
        torch.testing.assert_close(
            got.float(),
            want.float(),
            rtol=1e-2 if dtype != torch.float32 else 1e-5,
            atol=1e-2 if dtype != torch.float32 else 1e-5,
        )


def test_module_flag_and_quantize_model():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.randn(4, 64)
    flt = qk.quantize_model(_copy(model), 4)
    i8 = qk.quantize_model(_copy(model), 4, act_int8=True)
    assert all(m.act_int8 for m in i8.modules() if isinstance(m, qk.QPartLinear))
    assert "act_int8=True" in repr(i8)
    y_f, y_i = flt(x), i8(x)
    assert not torch.equal(y_f, y_i)
    torch.testing.assert_close(y_i, y_f, rtol=0.1, atol=0.1)
    partial = qk.quantize_model(_copy(model), 4, act_int8={"0": True})
    assert partial[0].act_int8 and not partial[2].act_int8
    # The flag is not part of the payload.
    assert set(i8.state_dict()) == set(flt.state_dict())
    layer = qk.QPartLinear.from_float(model[0], 3, act_int8=True)
    torch.testing.assert_close(
        layer(x),
        reference.linear(
            x, layer.packed_weight, layer.scales, layer.zeros, layer.bias, 3, 64, True
        ),
        rtol=1e-5,
        atol=1e-5,
    )


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def test_rejects_non_finite_and_huge_groups():
    w = qk.quantize_weight(torch.randn(4, 64), 4, None)
    x = torch.randn(2, 64)
    x[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        qk.linear(x, *w, 4, int8_activations=True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        reference.linear(x, *w, None, 4, 64, True)
    x[1, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        torch.ops.qpart.linear(x, *w, None, 4, 64, True)
    # The float path keeps propagating NaN/Inf as before.
    assert not bool(torch.isfinite(qk.linear(x, *w, 4)).all())
    big = 65536 * 2
    wb = qk.quantize_weight(torch.randn(1, big), 2, None)
    with pytest.raises(ValueError, match="at most 65536"):
        qk.linear(torch.randn(1, big), *wb, 2, int8_activations=True)
    with pytest.raises(ValueError, match="at most 65536"):
        reference.linear(torch.randn(1, big), *wb, None, 2, big, True)
