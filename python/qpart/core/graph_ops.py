"""The operator set a QPART graph may contain: the allow-list that capture checks at
registration and that a device segment (format v2) may name.

Every entry is a ``torch.export`` ATen overload, named ``"aten.<op>.<overload>"``, plus
``"getitem"`` (``operator.getitem`` on an op with several outputs). ``nn.Linear`` /
``nn.Conv2d`` are not here: capture lifts ``aten.linear`` / ``aten.conv2d`` with parameter
weights into modules (the learnable layers the planner quantizes).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch

_ATEN_OPS = (
    # activations
    "relu.default",
    "relu6.default",
    "hardtanh.default",
    "leaky_relu.default",
    "elu.default",
    "gelu.default",
    "silu.default",
    "hardswish.default",
    "hardsigmoid.default",
    "sigmoid.default",
    "tanh.default",
    "softmax.int",
    "log_softmax.int",
    "clamp.default",
    "clamp_min.default",
    "clamp_max.default",
    # arithmetic
    "add.Tensor",
    "add.Scalar",
    "sub.Tensor",
    "sub.Scalar",
    "rsub.Scalar",
    "mul.Tensor",
    "mul.Scalar",
    "div.Tensor",
    "div.Scalar",
    "neg.default",
    "abs.default",
    "sqrt.default",
    "rsqrt.default",
    "exp.default",
    "pow.Tensor_Scalar",
    "maximum.default",
    "minimum.default",
    # shape and indexing
    "view.default",
    "reshape.default",
    "flatten.using_ints",
    "unflatten.int",
    "permute.default",
    "transpose.int",
    "t.default",
    "contiguous.default",
    "clone.default",
    "alias.default",
    "unsqueeze.default",
    "squeeze.dim",
    "squeeze.dims",
    "squeeze.default",
    "expand.default",
    "slice.Tensor",
    "select.int",
    "narrow.default",
    "cat.default",
    "stack.default",
    "chunk.default",
    "split.Tensor",
    "split_with_sizes.default",
    "sym_size.int",
    "pad.default",
    "constant_pad_nd.default",
    # pooling and reductions
    "max_pool2d.default",
    "max_pool1d.default",
    "avg_pool2d.default",
    "avg_pool1d.default",
    "adaptive_avg_pool2d.default",
    "adaptive_avg_pool1d.default",
    "adaptive_max_pool2d.default",
    "adaptive_max_pool1d.default",
    "mean.dim",
    "mean.default",
    "sum.dim_IntList",
    "sum.default",
    "amax.default",
    "amin.default",
    # normalisation kept in float (BatchNorm directly after a conv is folded instead)
    "batch_norm.default",
    "layer_norm.default",
    "group_norm.default",
    # identity in eval mode
    "dropout.default",
    "feature_dropout.default",
)

#: In-place variants capture rewrites to the functional op (``relu_`` -> ``relu``).
INPLACE_TO_FUNCTIONAL = {
    "relu_.default": "relu.default",
    "relu6_.default": "relu6.default",
    "hardtanh_.default": "hardtanh.default",
    "leaky_relu_.default": "leaky_relu.default",
    "elu_.default": "elu.default",
    "silu_.default": "silu.default",
    "hardswish_.default": "hardswish.default",
    "hardsigmoid_.default": "hardsigmoid.default",
    "sigmoid_.default": "sigmoid.default",
    "tanh_.default": "tanh.default",
    "add_.Tensor": "add.Tensor",
    "mul_.Tensor": "mul.Tensor",
    "clamp_.default": "clamp.default",
    "dropout_.default": "dropout.default",
}

GETITEM = "getitem"


def _resolve(name: str):
    op_name, overload = name.rsplit(".", 1)
    return getattr(getattr(torch.ops.aten, op_name), overload)


def _build() -> dict[str, Callable]:
    table: dict[str, Callable] = {}
    for name in _ATEN_OPS:
        try:
            table[f"aten.{name}"] = _resolve(name)
        except AttributeError:  # an overload this torch does not have
            continue
    table[GETITEM] = operator.getitem
    return table


#: ``"aten.relu.default"`` -> ``torch.ops.aten.relu.default`` (and ``"getitem"``).
SUPPORTED_OPS: dict[str, Callable] = _build()
_NAMES = {fn: name for name, fn in SUPPORTED_OPS.items()}
_INPLACE = {}
for _src, _dst in INPLACE_TO_FUNCTIONAL.items():
    try:
        _INPLACE[_resolve(_src)] = SUPPORTED_OPS[f"aten.{_dst}"]
    except (AttributeError, KeyError):
        continue

#: The learnable-layer ops capture lifts into modules.
LINEAR_OP = torch.ops.aten.linear.default
CONV2D_OP = torch.ops.aten.conv2d.default
BATCH_NORM_OP = torch.ops.aten.batch_norm.default


def op_name(target) -> str | None:
    """The allow-list name of a call target, or ``None`` when it is not supported."""
    try:
        return _NAMES.get(target)
    except TypeError:  # unhashable target
        return None


def functional_of(target):
    """The functional op of an in-place ATen op (``relu_`` -> ``relu``), else ``None``."""
    try:
        return _INPLACE.get(target)
    except TypeError:
        return None


def describe(target) -> str:
    """A readable name of any call target (for error messages)."""
    name = getattr(target, "__name__", None)
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return name or repr(target)
