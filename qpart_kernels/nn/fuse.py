"""Graph rewrites that make a quantized ``fx.GraphModule`` run faster with the same values.

:func:`fuse_epilogues` folds what follows a :class:`QPartConv2d` into its call - a residual
add and a ReLU (``relu(conv(x) + identity)``, ``relu(conv(x))``) run on each output tile while
it is in cache, with the values of the separate ops bit for bit - and runs ``max_pool2d``
through :func:`max_pool2d_slices`: QPART's native max pool (``qpart::max_pool2d``) on CPU
NCHW float tensors, where ATen's kernel is several times slower, with ATen's values bit for
bit. Captured graphs (``torch.export``, the QPART profile) and hand-written
``fx.symbolic_trace`` graphs are both understood.
"""

from __future__ import annotations

import functools
import math
import operator

import torch
from torch import fx, nn
from torch.nn import functional as F  # noqa: N812

from .conv import QPartConv2d

_aten = torch.ops.aten
_RELU_FUNCTIONS = {_aten.relu.default, _aten.relu_.default, torch.relu, torch.relu_, F.relu}
_ADD_FUNCTIONS = {_aten.add.Tensor, operator.add, torch.add}
_MAX_POOL_FUNCTIONS = {_aten.max_pool2d.default, F.max_pool2d, torch.max_pool2d}
_INPLACE_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.ilshift,
    operator.irshift,
    operator.imatmul,
}


def _pair(v, default) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[-1])) if len(v) in (1, 2) else (int(v[0]), int(v[1]))


def _max_along(x: torch.Tensor, dim: int, k: int, s: int, p: int, n_out: int) -> torch.Tensor:
    """Max over windows of ``k`` along ``dim`` (stride ``s``, ``p`` implicit ``-inf`` each
    side): one strided slice per tap, clipped to the outputs whose tap is inside ``x``."""
    length = x.shape[dim]
    taps = []
    for j in range(k):
        lo = max(0, -((j - p) // s))  # first output whose tap j is at index >= 0
        hi = min(n_out, (length - 1 + p - j) // s + 1)
        if hi > lo:
            start = lo * s - p + j
            taps.append((lo, hi, x.narrow(dim, start, (hi - lo - 1) * s + 1)))
    full = next((t for t in taps if t[0] == 0 and t[1] == n_out), None)
    if full is not None:
        out = full[2][(slice(None),) * (dim % x.dim()) + (slice(None, None, s),)].clone()
    else:
        shape = list(x.shape)
        shape[dim] = n_out
        out = x.new_full(shape, -math.inf)
    for lo, hi, view in taps:
        if full is not None and view is full[2]:
            continue
        part = view[(slice(None),) * (dim % x.dim()) + (slice(None, None, s),)]
        region = out.narrow(dim, lo, hi - lo)
        torch.maximum(region, part, out=region)
    return out


def max_pool2d_strided_slices(x: torch.Tensor, kernel_size, stride, padding) -> torch.Tensor:
    """The strided-slice max pool of an NCHW tensor (``kernel_size``, ``stride``, ``padding``:
    pairs; dilation 1, floor mode, ``padding <= kernel / 2``, arguments not checked): the
    element-wise maximum of ``kw`` strided slices along the width, then of ``kh`` along the
    height, the padding never materialised. NaN propagates; of ``-0.0`` and ``+0.0`` in one
    window it may return either (``torch.maximum`` does not say which)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    ho = (x.shape[2] + 2 * ph - kh) // sh + 1
    wo = (x.shape[3] + 2 * pw - kw) // sw + 1
    return _max_along(_max_along(x, 3, kw, sw, pw, wo), 2, kh, sh, ph, ho)


@functools.cache
def _native_pool() -> bool:
    from ..ops import has_native_kernel

    return has_native_kernel("max_pool2d", "CPU")


_NATIVE_POOL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def max_pool2d_slices(
    x: torch.Tensor,
    kernel_size,
    stride=(),
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """``max_pool2d`` with ATen's values (NaN propagates, ties as ATen breaks them), faster.

    Contiguous NCHW float32 / float16 / bfloat16 CPU tensors run QPART's native kernel
    (``qpart::max_pool2d``: one pass, rows then columns, several times faster than ATen's NCHW
    kernel); other NCHW floating tensors (float64, other devices, or no compiled extension)
    take the maximum of strided slices, first along the width and then along the height
    (``kh + kw`` element-wise maxima, the padding never materialised). ``ceil_mode``, a
    dilation, channels-last tensors, compiled code and inputs that need a gradient run ATen's
    ``max_pool2d``, which also raises its own errors for bad arguments."""
    kh, kw = _pair(kernel_size, None)
    sh, sw = _pair(stride, (kh, kw))
    ph, pw = _pair(padding, 0)
    dh, dw = _pair(dilation, 1)
    fallback = ceil_mode or (dh, dw) != (1, 1) or x.dim() != 4 or not x.is_floating_point()
    fallback = fallback or torch.compiler.is_compiling()  # the compiler makes its own pool
    fallback = fallback or (torch.is_grad_enabled() and x.requires_grad)  # no autograd here
    h, w = x.shape[-2:] if x.dim() == 4 else (0, 0)
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    fallback = fallback or channels_last  # ATen's channels-last kernel is the faster one there
    fallback = fallback or min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0 or 0 in x.shape[1:]
    if fallback or ho <= 0 or wo <= 0 or 2 * ph > kh or 2 * pw > kw:  # ATen raises its errors
        return torch.ops.aten.max_pool2d(x, [kh, kw], [sh, sw], [ph, pw], [dh, dw], ceil_mode)
    if x.device.type == "cpu" and x.dtype in _NATIVE_POOL_DTYPES and _native_pool():
        return torch.ops.qpart.max_pool2d(x, [kh, kw], [sh, sw], [ph, pw])
    return max_pool2d_strided_slices(x, (kh, kw), (sh, sw), (ph, pw))


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return len(node.args) == 1 and set(node.kwargs) <= {"inplace"}
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return len(node.args) == 1 and not node.kwargs
    return isinstance(_module(gm, node), nn.ReLU) and len(node.args) == 1


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
        return len(node.args) == 2 and not node.kwargs
    return node.op == "call_method" and node.target == "add" and len(node.args) == 2


def _mutates(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether a node may write into one of its inputs (then nothing moves past it)."""
    if node.op == "call_method":
        return node.target.endswith("_")
    if node.op == "call_function":
        if node.target in _INPLACE_OPERATORS:
            return True
        name = getattr(node.target, "__name__", "")
        schema = getattr(node.target, "_schema", None)
        return name.endswith("_") or (schema is not None and schema.is_mutable)
    if node.op == "call_module":
        return bool(getattr(_module(gm, node), "inplace", False))
    return False


def _fusable_conv(gm: fx.GraphModule, node: fx.Node) -> bool:
    return (
        isinstance(_module(gm, node), QPartConv2d)
        and len(node.args) == 1
        and not node.kwargs
        and len(node.users) == 1
    )


def _fuse_residual(gm: fx.GraphModule, conv: fx.Node, add: fx.Node) -> bool:
    """``add(conv(x), other)`` -> ``conv(x, residual=other)`` where that is safe."""
    other = add.args[1] if add.args[0] is conv else add.args[0]
    if not isinstance(other, fx.Node) or other is conv:
        return False
    node = conv.next
    while node is not add:  # the add comes after its operand conv
        if _mutates(gm, node):
            return False
        node = node.next
    add.prepend(conv)  # after `other`, which may come later (a projection shortcut)
    conv.kwargs = {"residual": other}
    add.replace_all_uses_with(conv)
    gm.graph.erase_node(add)
    return True


def _fuse_relu(conv: fx.Node, relu: fx.Node, gm: fx.GraphModule) -> None:
    conv.kwargs = {**conv.kwargs, "relu": True}
    relu.replace_all_uses_with(conv)
    gm.graph.erase_node(relu)


def _pool_args(gm: fx.GraphModule, node: fx.Node) -> tuple | None:
    """``(x, kernel, stride, padding)`` of a ``max_pool2d`` node that
    :func:`max_pool2d_slices` computes."""
    module = _module(gm, node)
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices or module.ceil_mode or _pair(module.dilation, 1) != (1, 1):
            return None
        if len(node.args) != 1 or node.kwargs:
            return None
        return (node.args[0], module.kernel_size, module.stride, module.padding)
    if node.op != "call_function" or node.target not in _MAX_POOL_FUNCTIONS:
        return None
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
    bound = dict(zip(names, node.args))
    for key, value in node.kwargs.items():
        if key == "return_indices" and value is False:
            continue
        if key not in names:
            return None  # return_indices=True and anything unknown
        bound[key] = value
    if len(node.args) > len(names):
        return None
    if _pair(bound.get("dilation", 1), 1) != (1, 1) or bound.get("ceil_mode", False):
        return None
    stride = bound.get("stride") or bound["kernel_size"]
    return (bound["input"], bound["kernel_size"], stride, bound.get("padding", 0))


def fuse_epilogues(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrites ``gm`` in place and returns it (recompiled), computing the same values:

    * ``relu(conv(x))`` -> ``conv(x, relu=True)``;
    * ``conv(x) + other`` (either operand order) -> ``conv(x, residual=other)``, and a ReLU
      right after it joins too - the ResNet block's ``relu(conv2(...) + identity)``;
    * ``max_pool2d`` (floor mode, dilation 1) -> :func:`max_pool2d_slices` (the native
      ``qpart::max_pool2d`` on CPU NCHW float tensors).

    ``conv`` is a :class:`QPartConv2d` whose output has no other user; nothing is fused past
    an op that writes into its inputs. A residual whose shape is not the output's is added
    by broadcasting after the convolution, as the graph did (see ``QPartConv2d.forward``).
    """
    if not isinstance(gm, fx.GraphModule):
        raise TypeError(f"fuse_epilogues: expects an fx.GraphModule, got {type(gm).__name__}")
    erased: set[fx.Node] = set()
    for node in list(gm.graph.nodes):
        if node in erased:
            continue
        pool = _pool_args(gm, node)
        if pool is not None:
            with gm.graph.inserting_before(node):
                fast = gm.graph.call_function(max_pool2d_slices, pool)
            node.replace_all_uses_with(fast)
            gm.graph.erase_node(node)
            continue
        if not _fusable_conv(gm, node):
            continue
        user = next(iter(node.users))
        if _is_add(user) and _fuse_residual(gm, node, user):
            erased.add(user)
            if len(node.users) != 1:
                continue
            user = next(iter(node.users))
        if _is_relu(gm, user):
            _fuse_relu(node, user, gm)
            erased.add(user)
    gm.graph.lint()
    gm.recompile()
    return gm
