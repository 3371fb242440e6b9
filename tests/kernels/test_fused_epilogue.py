"""conv2d's fused epilogue (``residual``, ``relu``), the graph rewrite that uses it
(``fuse_epilogues``) and the strided-slice max pool: the same values as the unfused ops."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

import qpart_kernels as qk
from qpart_kernels.nn import max_pool2d_slices
from qpart_kernels.ops import reference

# (c_in, c_out, kernel, stride, padding, groups, h, w): odd channel counts, tails, depthwise;
# the last two reach the amx row's tile (>= 32 input channels), which fuses the epilogue into
# its stores (a 33-channel tail, and a strided layout with several output rows per 16 pixels)
SHAPES = [
    (3, 8, 7, 2, 3, 1, 19, 17),
    (16, 24, 3, 1, 1, 1, 13, 11),
    (8, 8, 3, 2, 1, 8, 9, 12),
    (5, 7, 1, 1, 0, 1, 6, 5),
    (6, 9, 3, 1, 2, 3, 7, 8),
    (40, 33, 3, 1, 1, 1, 9, 10),
    (64, 48, 3, 2, 1, 1, 11, 7),
]


def _layer(shape, bits: int, act_int8: bool, seed: int) -> tuple[qk.QPartConv2d, torch.Tensor]:
    ci, co, k, st, pd, g, h, w = shape
    torch.manual_seed(seed)
    conv = nn.Conv2d(ci, co, k, st, pd, groups=g)
    return qk.QPartConv2d.from_float(conv, bits, act_int8=act_int8), torch.randn(2, ci, h, w)


def _bits(a: torch.Tensor) -> torch.Tensor:
    return a.contiguous().view(torch.int32)


@pytest.mark.parametrize("act_int8", [False, True], ids=["float", "int8"])
@pytest.mark.parametrize("bits", range(1, 9))
def test_epilogue_equals_separate_add_and_relu(isa, threads, act_int8, bits):
    for i, shape in enumerate(SHAPES):
        m, x = _layer(shape, bits, act_int8, 10 * bits + i)
        plain = m(x)
        r = torch.randn_like(plain)
        r.view(-1)[:3] = torch.tensor([-0.0, float("nan"), -plain.view(-1)[2].item()])
        for residual in (None, r):
            for relu in (False, True):
                want = plain if residual is None else plain + residual
                want = torch.relu(want) if relu else want
                got = m(x, residual, relu=relu)
                assert torch.equal(_bits(got), _bits(want)), (shape, residual is None, relu)


@pytest.mark.parametrize("bits", [2, 4, 7])
def test_int8_epilogue_is_bit_exact_with_the_reference(bits):
    for i, shape in enumerate(SHAPES):
        m, x = _layer(shape, bits, True, bits + i)
        out = m(x)
        r = torch.randn_like(out)
        args = (x, m.packed_weight, m.scales, m.zeros, m.bias, bits, m.weight_shape)
        conv = (m.stride, m.padding, m.dilation, m.groups, True, r, True)
        assert torch.equal(reference.conv2d(*args, *conv), m(x, r, relu=True))


def test_float_epilogue_matches_the_reference_and_other_dtypes():
    m, x = _layer(SHAPES[1], 4, False, 0)
    r = torch.randn_like(m(x))
    args = (m.packed_weight, m.scales, m.zeros, m.bias, 4, m.weight_shape)
    conv = (m.stride, m.padding, m.dilation, m.groups, False)
    torch.testing.assert_close(m(x, r, relu=True), reference.conv2d(x, *args, *conv, r, True))
    # bfloat16: the add and clamp run after the conversion, as separate ops would
    xb, rb = x.to(torch.bfloat16), r.to(torch.bfloat16)
    want = torch.relu(m(xb) + rb)
    assert torch.equal(m(xb, rb, relu=True), want)


def test_module_broadcasts_a_residual_of_another_shape():
    m, x = _layer(SHAPES[1], 4, True, 1)
    plain = m(x)
    r = torch.randn(1, plain.shape[1], 1, 1)
    assert torch.equal(m(x, r, relu=True), torch.relu(plain + r))
    r64 = torch.randn_like(plain, dtype=torch.float64)  # promoted as `+` promotes
    assert torch.equal(m(x, r64), plain + r64)
    assert torch.equal(m(x, 0.5, relu=True), torch.relu(plain + 0.5))  # a number, as `+`
    assert torch.equal(m(x[1], 0.5), plain[1] + 0.5)
    unbatched = m(x[0], plain[0], relu=True)
    assert torch.equal(unbatched, torch.relu(plain[0] + plain[0]))


def test_bad_residual_and_relu_arguments_raise():
    m, x = _layer(SHAPES[1], 4, False, 2)
    out = m(x)
    args = (x, m.packed_weight, m.scales, m.zeros, m.bias, 4, m.weight_shape)
    conv = (m.stride, m.padding, m.dilation, m.groups)
    for impl in (torch.ops.qpart.conv2d, reference.conv2d):
        with pytest.raises(ValueError, match="output's shape"):
            impl(*args, *conv, False, out[:, :3], False)
        with pytest.raises(ValueError, match="dtype"):
            impl(*args, *conv, False, out.double(), False)
    api = (x, m.packed_weight, m.scales, m.zeros, 4, m.weight_shape, m.bias, *conv)
    with pytest.raises(TypeError, match="relu must be a bool"):
        qk.conv2d(*api, relu=1)
    with pytest.raises(TypeError, match="residual must be a tensor"):
        qk.conv2d(*api, residual=1.0)
    with pytest.raises(ValueError, match="output's shape"):
        qk.conv2d(*api, residual=out[:1])


def test_opcheck_with_residual_and_relu():
    for act_int8 in (False, True):
        m, x = _layer(SHAPES[2], 3, act_int8, 3)
        r = torch.randn_like(m(x))
        args = (x, m.packed_weight, m.scales, m.zeros, m.bias, 3, list(m.weight_shape))
        conv = (list(m.stride), list(m.padding), list(m.dilation), m.groups, act_int8, r, True)
        torch.library.opcheck(torch.ops.qpart.conv2d.default, (*args, *conv))


# ---------------------------------------------------------------- graph rewrite


class Block(nn.Module):
    """A ResNet basic block; ``projection`` puts a strided 1x1 shortcut after conv2."""

    def __init__(self, cin: int, cout: int, stride: int, functional: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.relu = nn.ReLU()
        self.functional = functional
        self.short = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = F.relu(self.conv1(x)) if self.functional else self.relu(self.conv1(x))
        y = self.conv2(y)
        identity = x if self.short is None else self.short(x)
        return self.relu(identity + y) if self.functional else torch.relu(y + identity)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 5, 2, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.b1 = Block(8, 8, 1, functional=True)
        self.b2 = Block(8, 16, 2, functional=False)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.stem(x)), 2)
        x = self.b2(self.b1(self.pool(x)))
        return self.head(x.mean((2, 3)))


def _quantized_graph(act_int8: bool) -> fx.GraphModule:
    torch.manual_seed(0)
    return qk.quantize_model(fx.symbolic_trace(Net().eval()), 4, act_int8=act_int8)


def _ops(gm: fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_method")]


@pytest.mark.parametrize("act_int8", [False, True], ids=["float", "int8"])
def test_fuse_epilogues_keeps_every_value(act_int8):
    gm = _quantized_graph(act_int8)
    fused = qk.fuse_epilogues(copy.deepcopy(gm))
    x = torch.randn(3, 3, 41, 37)
    with torch.inference_mode():
        assert torch.equal(fused(x), gm(x))
    targets = _ops(fused)
    relus = {torch.relu, F.relu}
    assert not relus & set(targets), targets  # every ReLU after a conv is fused
    assert not {F.max_pool2d} & set(targets) and max_pool2d_slices in targets
    fused_convs = [n for n in fused.graph.nodes if n.op == "call_module" and n.kwargs]
    assert sum("residual" in n.kwargs for n in fused_convs) == 2  # both blocks' adds
    assert all(n.kwargs.get("relu") for n in fused_convs)


def test_fuse_epilogues_on_a_captured_graph():
    from qpart.core.profile import profile

    torch.manual_seed(1)
    gm = profile(Net().eval(), torch.randn(1, 3, 32, 32)).graph_module
    gm = qk.quantize_model(gm, 5, act_int8=True)
    fused = qk.fuse_epilogues(copy.deepcopy(gm))
    assert torch.ops.aten.add.Tensor not in _ops(fused)
    assert torch.ops.aten.relu.default not in _ops(fused)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(fused(x), gm(x))


class Shared(nn.Module):
    """Cases that must not fuse: a conv output used twice, and a write between conv and add."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        z = torch.relu(y) + y  # y has two users
        w = self.b(z)
        z.mul_(2)  # in place, between b and the add that reads z
        return w + z


def test_fuse_epilogues_leaves_unsafe_patterns_alone():
    torch.manual_seed(2)
    gm = qk.quantize_model(fx.symbolic_trace(Shared().eval()), 6)
    fused = qk.fuse_epilogues(copy.deepcopy(gm))
    x = torch.randn(2, 4, 6, 6)
    with torch.inference_mode():
        assert torch.equal(fused(x), gm(x))
    assert not any(n.kwargs for n in fused.graph.nodes if n.op == "call_module")


def test_fuse_epilogues_rejects_a_plain_module():
    with pytest.raises(TypeError, match="GraphModule"):
        qk.fuse_epilogues(nn.Conv2d(1, 1, 1))


def test_fused_graph_compiles_fullgraph():
    gm = qk.fuse_epilogues(_quantized_graph(False))
    x = torch.randn(2, 3, 24, 24)
    torch._dynamo.reset()
    compiled = torch.compile(gm, fullgraph=True, backend="inductor")
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), gm(x))


@pytest.mark.parametrize(
    "kernel,stride,padding",
    [(3, 2, 1), (2, 2, 0), (3, 1, 1), ((2, 3), (1, 2), (1, 0)), (1, 1, 0), (2, 2, 1), (5, 3, 2)],
)
def test_max_pool2d_slices_equals_aten(kernel, stride, padding):
    torch.manual_seed(3)
    x = torch.randn(2, 5, 11, 9)
    x[0, 1, 2, 3] = float("nan")
    x[1, 2] = -float("inf")
    want = F.max_pool2d(x, kernel, stride, padding)
    got = max_pool2d_slices(x, kernel, stride, padding)
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)  # NaN propagates (its payload bits may differ)
    assert torch.equal(_bits(got)[~nan], _bits(want)[~nan])
    assert max_pool2d_slices(x, 2, 2, 0, 1, True).shape == F.max_pool2d(x, 2, 2, 0, 1, True).shape


def test_max_pool2d_slices_keeps_gradients():
    x = torch.randn(1, 2, 7, 7, requires_grad=True)
    max_pool2d_slices(x, 3, 2, 1).sum().backward()
    y = x.detach().requires_grad_()
    F.max_pool2d(y, 3, 2, 1).sum().backward()
    assert torch.equal(x.grad, y.grad)
