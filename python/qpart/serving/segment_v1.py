"""Decoding of format-v1 segment containers (a chain of modules rebuilt as an
``nn.Sequential``), kept so that segments cached by older devices and servers still load.
New containers are v2 (:mod:`.segment`)."""

from __future__ import annotations

import torch
from torch import nn

import qpart_kernels

from .errors import WireFormatError

#: v1 module types -> (constructor, config attributes).
MODULE_TYPES: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "ReLU": (nn.ReLU, ()),
    "Identity": (nn.Identity, ()),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "Dropout": (nn.Dropout, ("p",)),
    "MaxPool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "AvgPool2d": (
        nn.AvgPool2d,
        ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    ),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
    "BatchNorm2d": (
        nn.BatchNorm2d,
        ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    ),
    "QPartLinear": (
        qpart_kernels.QPartLinear,
        ("in_features", "out_features", "bits", "group_size"),
    ),
    "QPartConv2d": (
        qpart_kernels.QPartConv2d,
        (
            "in_channels",
            "out_channels",
            "kernel_size",
            "bits",
            "stride",
            "padding",
            "dilation",
            "groups",
            "group_size",
        ),
    ),
}
_META_OK = ("QPartLinear", "QPartConv2d", "BatchNorm2d")


def _config_value(value):
    return tuple(value) if isinstance(value, list) else value


def decode(arch: dict, tensors: dict[str, torch.Tensor]) -> nn.Sequential:
    """The ``nn.Sequential`` of a v1 container, from its description ``arch`` (read and
    size-checked by :func:`qpart.serving.segment.read_container`) and its tensors."""
    layers = arch.get("layers")
    if not isinstance(layers, list):
        raise WireFormatError("v1 segment: 'layers' must be a list")
    children: list[nn.Module] = []
    used: set[str] = set()
    for i, entry in enumerate(layers):
        if not isinstance(entry, dict):
            raise WireFormatError(f"layer {i}: expected an object")
        kind = entry.get("type")
        if kind not in MODULE_TYPES:
            raise WireFormatError(f"layer {i}: unsupported module type {kind!r}")
        cls, attrs = MODULE_TYPES[kind]
        raw = entry.get("config", {})
        if not isinstance(raw, dict):
            raise WireFormatError(f"layer {i}: config must be an object")
        config = {k: _config_value(v) for k, v in raw.items()}
        if set(config) - set(attrs) - {"bias"}:
            raise WireFormatError(
                f"layer {i} ({kind}): unexpected config keys "
                f"{sorted(set(config) - set(attrs) - {'bias'})}"
            )
        try:  # shapes first, on the meta device: nothing is allocated for a bogus config
            module = cls(**config, device="meta") if kind in _META_OK else cls(**config)
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise WireFormatError(f"layer {i} ({kind}): bad config {config}: {exc}") from exc
        state = module.state_dict()
        for tname, ref in state.items():
            key = f"{i}.{tname}"
            if key not in tensors:
                raise WireFormatError(f"layer {i} ({kind}): tensor {key!r} is missing")
            t = tensors[key]
            if t.shape != ref.shape or t.dtype != ref.dtype:
                raise WireFormatError(
                    f"tensor {key!r}: expected {tuple(ref.shape)} {ref.dtype}, "
                    f"got {tuple(t.shape)} {t.dtype}"
                )
            state[tname] = t
            used.add(key)
        module.load_state_dict(state, strict=True, assign=True)
        children.append(module.eval())
    extra = sorted(set(tensors) - used)
    if extra:
        raise WireFormatError(f"unexpected tensors in the segment: {extra[:8]}")
    return nn.Sequential(*children).eval()
