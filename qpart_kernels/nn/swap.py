"""Model-level conversion: swap every ``nn.Linear`` / ``nn.Conv2d`` for its QPART module."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .conv import QPartConv2d
from .linear import QPartLinear

QUANTIZABLE = (nn.Linear, nn.Conv2d)
QUANTIZED = (QPartLinear, QPartConv2d)


def _quantize_module(
    module: nn.Module, bits: int, group_size: int | None, act_int8: bool = False
) -> nn.Module:
    if isinstance(module, nn.Linear):
        return QPartLinear.from_float(module, bits, group_size, act_int8=act_int8)
    return QPartConv2d.from_float(module, bits, group_size, act_int8=act_int8)


def _setting(value, name: str, default):
    if isinstance(value, Mapping):
        return value.get(name, default)
    return value


def quantize_model(
    model: nn.Module,
    bits: int | Mapping[str, int],
    group_size: int | None | Mapping[str, int | None] = None,
    act_int8: bool | Mapping[str, bool] = False,
) -> nn.Module:
    """Replaces ``nn.Linear`` / ``nn.Conv2d`` modules of ``model`` in place; returns the model.

    ``bits``: one width for every such module, or a dict from module name (as in
    ``named_modules()``) to width; modules not named stay float. ``group_size``: ``None``
    (one group per output channel), an int, or a dict from module name to either. If
    ``model`` itself is a Linear/Conv2d (name ``""``), the quantized module is returned.
    ``act_int8``: run the quantized modules on the integer path (int8 activations, see
    ``QPartLinear`` and ``QPartConv2d``); a bool or a dict from module name to bool. Opt-in:
    it changes the numerics.
    """
    modules = dict(model.named_modules())
    if isinstance(bits, Mapping):
        unknown = sorted(set(bits) - set(modules))
        if unknown:
            raise KeyError(f"quantize_model: no modules named {unknown} in the model")
        wrong = sorted(n for n in bits if not isinstance(modules[n], QUANTIZABLE))
        if wrong:
            raise TypeError(
                f"quantize_model: modules {wrong} are not nn.Linear or nn.Conv2d and cannot "
                "be quantized"
            )
        targets = list(bits)
    else:
        targets = [n for n, m in modules.items() if isinstance(m, QUANTIZABLE)]

    for name in targets:
        width = _setting(bits, name, None)
        try:
            replacement = _quantize_module(
                modules[name],
                width,
                _setting(group_size, name, None),
                bool(_setting(act_int8, name, False)),
            )
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"quantize_model: layer {name or '<root>'!r}: {exc}") from exc
        if name == "":
            return replacement
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name], child, replacement)
    return model


def payload_bytes(model: nn.Module) -> int:
    """Bytes to ship ``model``: packed payload of QPART modules plus all other float tensors."""
    total = 0
    counted: set[int] = set()
    for module in model.modules():
        if isinstance(module, QUANTIZED):
            total += module.payload_bytes()
            counted.update(id(b) for b in module.buffers())
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in counted:
            total += tensor.numel() * tensor.element_size()
    return total
