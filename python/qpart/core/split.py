"""The profiled graph split at partition point ``p``: float device / server segments, their
quantized versions, the in-process split model of a plan, and THE activation round trip.

Segments: the device segment maps the input to the cut tensor, the server segment maps the
cut tensor to the output.

The cut is the one of :func:`qpart.profile.profile` (``prof.cuts[p].node``: the single
tensor that crosses between layer ``p`` and ``p + 1``). ``p = 0`` may give a device segment
that only forwards its input (plus any preprocessing before the first layer); ``p = L``
puts the whole graph on the device and gives an identity server segment.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

import qpart_kernels

from .profile import ModelProfile, instrument_cut


def quantize_activation_rows(x: torch.Tensor, bits: int):
    """Per-sample quantization of a cut activation (one scale and zero point per batch row,
    i.e. per tensor at batch 1): returns ``(flat float32 rows, QuantizedActivation)``. What
    the device sends for one request; the wire format packs exactly these codes."""
    flat = x.detach().reshape(x.shape[0], -1).to(torch.float32).contiguous()
    return flat, qpart_kernels.quantize_activation(flat, bits, per_token=True)


def roundtrip_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """What the server reconstructs from the cut activation ``x`` at ``bits``: quantized per
    sample with the kernels' activation quantizer and dequantized (same shape and dtype)."""
    flat, q = quantize_activation_rows(x, bits)
    out = qpart_kernels.dequantize_activation(
        q.packed, q.scales, q.zeros, bits, flat.shape, torch.float32
    )
    return out.reshape(x.shape).to(x.dtype)


class SegmentError(ValueError):
    """The graph cannot be split at the requested point."""


@dataclass
class SplitSegments:
    """The two halves of a model at partition point ``p``.

    ``cut_shape``: per-sample shape of the crossing tensor (``None`` at ``p = L``);
    ``input_shape`` / ``output_shape``: per-sample shapes of the model's input and output.
    """

    p: int
    device: fx.GraphModule
    server: fx.GraphModule
    cut_shape: tuple[int, ...] | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise SegmentError(f"node {node.name!r} has no tensor shape (re-profile the model)")
    return tuple(int(d) for d in meta.shape[1:])


def _copy_nodes(
    root: fx.GraphModule,
    nodes: Sequence[fx.Node],
    start: fx.Node,
    result: fx.Node,
    allowed_outside: set[fx.Node],
) -> fx.GraphModule:
    """A GraphModule computing ``result`` from ``start`` (which becomes its placeholder) with
    copies of ``nodes``; ``get_attr`` nodes outside ``nodes`` are copied on demand, any other
    outside reference is an error (the cut would not be a cut)."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {start: graph.placeholder("x")}

    def lookup(arg: fx.Node) -> fx.Node:
        if arg not in env:
            if arg.op == "get_attr" or arg in allowed_outside:
                env[arg] = graph.node_copy(arg, lookup)
            else:
                raise SegmentError(f"node {arg.name!r} crosses the cut besides {start.name!r}")
        return env[arg]

    for n in nodes:
        if n is start or n in env:
            continue
        env[n] = graph.node_copy(n, lookup)
    graph.output(lookup(result))
    gm = fx.GraphModule(root, graph)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm.eval()


def split_model(prof: ModelProfile, p: int) -> SplitSegments:
    """Float device and server segments of the profiled model at partition point ``p``."""
    gm = prof.graph_module
    if gm is None:
        raise SegmentError(
            "this profile has no traced graph (loaded from JSON); re-profile the model"
        )
    prof.check_point(p)
    nodes = list(gm.graph.nodes)
    placeholder = next(n for n in nodes if n.op == "placeholder")
    output = next(n for n in nodes if n.op == "output")
    final = output.args[0]
    if not isinstance(final, fx.Node):
        raise SegmentError("the model must return a single tensor")
    body = [n for n in nodes if n.op not in ("placeholder", "output")]
    input_shape, output_shape = _shape(placeholder), _shape(final)
    if p == prof.num_layers:
        device = _copy_nodes(gm, body, placeholder, final, set())
        server = _copy_nodes(gm, [], final, final, set())
        return SplitSegments(p, device, server, None, input_shape, output_shape)
    cut = next((n for n in nodes if n.name == prof.cuts[p].node), None)
    if cut is None:
        raise SegmentError(f"cut node {prof.cuts[p].node!r} is not in the graph")
    index = nodes.index(cut)
    device = _copy_nodes(gm, [n for n in body if nodes.index(n) <= index], placeholder, cut, set())
    server = _copy_nodes(gm, [n for n in body if nodes.index(n) > index], cut, final, set())
    return SplitSegments(p, device, server, _shape(cut), input_shape, output_shape)


def _quantize_layers(
    gm: nn.Module, prof: ModelProfile, bits: Sequence[int], act_int8: bool
) -> None:
    names = [layer.name for layer in prof.layers[: len(bits)]]
    qpart_kernels.quantize_model(gm, dict(zip(names, map(int, bits))), act_int8=bool(act_int8))


def quantized_segments(
    prof: ModelProfile, p: int, bits: Sequence[int], act_int8: bool = False
) -> SplitSegments:
    """:func:`split_model` with the device layers ``1..p`` swapped for
    ``QPartLinear``/``QPartConv2d`` at ``bits`` (the server half stays float);
    ``act_int8``: the layers run on the integer-activation path."""
    if len(bits) != p:
        raise SegmentError(f"need {p} widths for partition point {p}, got {len(bits)}")
    seg = split_model(prof, p)
    if p:
        _quantize_layers(seg.device, prof, bits, act_int8)
    return seg


def fp32_weight_bytes(prof: ModelProfile, p: int) -> int:
    """Bytes of the device layers' float32 weights and biases (the "payload vs fp32" base)."""
    return prof.weight_payload_bytes(p, [None] * p)


@torch.no_grad()
def run_split(
    device: nn.Module, server: nn.Module, x: torch.Tensor, activation_bits: int | None
) -> torch.Tensor:
    """Device segment -> (per-sample quantized cut activation) -> server segment, in
    process; what the served system computes, without the network."""
    cut = device(x)
    if activation_bits is None:
        return cut
    return server(roundtrip_activation(cut, activation_bits))


def quantized_split_model(
    prof: ModelProfile,
    p: int,
    bits: Sequence[int],
    activation_bits: int | None,
    act_int8: bool = False,
) -> fx.GraphModule:
    """A copy of the profiled model whose layers ``1..p`` are quantized to ``bits`` (on the
    integer-activation path with ``act_int8``) and whose cut activation (for ``p < L``) goes
    through :func:`roundtrip_activation`."""
    if prof.graph_module is None:
        raise ValueError(
            "this profile has no traced graph (loaded from JSON); re-profile the model"
        )
    prof.check_point(p)
    if len(bits) != p:
        raise ValueError(f"need {p} widths for partition point {p}, got {len(bits)}")
    if p < prof.num_layers and activation_bits is not None:
        gm = instrument_cut(
            prof.graph_module, prof.cuts[p].node, roundtrip_activation, int(activation_bits)
        )
    else:
        gm = copy.deepcopy(prof.graph_module)
    if p:
        _quantize_layers(gm, prof, bits, act_int8)
        qpart_kernels.fuse_epilogues(gm)  # what the device runs: the same values, faster
    return gm.eval()
