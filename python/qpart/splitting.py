"""Builds the split, quantized model a plan describes, with the real ``qpart_kernels``:
device layers swapped for ``QPartLinear`` / ``QPartConv2d`` and the cut activation
quantized per sample (one scale and zero point per sample, i.e. per tensor at batch 1)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import fx

import qpart_kernels

from .profile import ModelProfile, instrument_cut


def fake_quantize_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantizes and dequantizes ``x`` with the kernels' activation quantizer, one group
    per sample (batch row), exactly what the device sends for one request."""
    flat = x.reshape(x.shape[0], -1).contiguous()
    q = qpart_kernels.quantize_activation(flat, bits, per_token=True)
    out = qpart_kernels.dequantize_activation(q.packed, q.scales, q.zeros, bits, flat.shape,
                                              flat.dtype)
    return out.reshape(x.shape)


def quantized_split_model(
    prof: ModelProfile, p: int, bits: Sequence[int], activation_bits: int | None,
) -> fx.GraphModule:
    """A copy of the profiled model whose layers ``1..p`` are quantized to ``bits`` and whose
    cut activation (for ``p < L``) goes through :func:`fake_quantize_activation`."""
    if prof.graph_module is None:
        raise ValueError("this profile has no traced graph (loaded from JSON); re-profile the model")
    prof.check_point(p)
    if len(bits) != p:
        raise ValueError(f"need {p} widths for partition point {p}, got {len(bits)}")
    if p < prof.num_layers and activation_bits is not None:
        gm = instrument_cut(prof.graph_module, prof.cuts[p].node,
                            fake_quantize_activation, int(activation_bits))
    else:
        gm = copy.deepcopy(prof.graph_module)
    if p:
        qpart_kernels.quantize_model(gm, {layer.name: int(b) for layer, b in zip(prof.layers, bits)})
    return gm.eval()
