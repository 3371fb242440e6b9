"""Compiled pieces of a captured float graph, for the probe's partial re-runs.

:class:`Subgraph` turns the nodes ``[start, stop)`` of an ``fx.GraphModule`` into a
generated-code ``GraphModule`` (no per-node interpreter overhead) that reads the values of
the earlier nodes it needs and returns the values later nodes need (or the graph's output).
Submodules are shared with the original graph, so a weight swapped into a layer there is
seen here. ``max_pool2d`` is run through :func:`max_pool2d_slices` (QPART's native max pool on NCHW
tensors: bit-identical, several times faster than ATen's CPU kernel there), and a
one-channel convolution through :func:`conv2d`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import fx, nn
from torch.nn import functional as F  # noqa: N812

from qpart_kernels.nn import max_pool2d_slices

_MAX_POOL = getattr(torch.ops.aten.max_pool2d, "default", None)
_SYM_SIZE = getattr(getattr(torch.ops.aten, "sym_size", None), "int", None)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride,
    padding,
    dilation,
    groups: int,
) -> torch.Tensor:
    """``F.conv2d``; a stride-1 convolution of a one-channel input runs on the input with a
    zero second channel (and zero weights for it): the same sums, several times faster
    on CPU than ATen's one-channel path."""
    unit_stride = stride == 1 or (not isinstance(stride, int) and all(v == 1 for v in stride))
    if x.dim() == 4 and x.shape[1] == 1 and groups == 1 and unit_stride:
        x = torch.cat([x, torch.zeros_like(x)], 1)
        weight = torch.cat([weight, torch.zeros_like(weight)], 1)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _fast_conv_node(graph: fx.Graph, gm: fx.GraphModule, node: fx.Node, lookup):
    """A ``call_function`` of :func:`conv2d` for a zero-padded ``nn.Conv2d`` module call, or
    ``None`` to copy the node as it is."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    mod = gm.get_submodule(node.target)
    if type(mod) is not nn.Conv2d or mod.padding_mode != "zeros" or mod.in_channels != 1:
        return None
    w = graph.get_attr(f"{node.target}.weight")
    b = graph.get_attr(f"{node.target}.bias") if mod.bias is not None else None
    args = (lookup(node.args[0]), w, b, mod.stride, mod.padding, mod.dilation, mod.groups)
    return graph.call_function(conv2d, args)


class Subgraph:
    """Nodes ``[start, stop)`` of ``gm`` (indices into ``nodes``, the graph's node list) as
    generated code. :attr:`inputs`: the earlier nodes whose values it reads (placeholders of
    the original graph inside the range are inputs too); :attr:`outputs`: the nodes of the
    range read at or after ``stop``, or ``None`` when the range includes the graph's output
    (then calling it returns the graph's output). ``fast_conv=False`` keeps one-channel
    ``nn.Conv2d`` calls as module calls (so that the module's hooks run)."""

    def __init__(
        self,
        gm: fx.GraphModule,
        nodes: Sequence[fx.Node],
        start: int,
        stop: int,
        fast_conv: bool = True,
    ):
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        self.inputs: list[fx.Node] = []

        def lookup(a: fx.Node) -> fx.Node:
            if a in env:
                return env[a]
            if a.op == "get_attr":
                env[a] = graph.node_copy(a)
            elif a.op == "call_function" and a.target is _SYM_SIZE:
                env[a] = graph.node_copy(a, lookup)  # a size, re-read from its (local) tensor
            else:
                self.inputs.append(a)
                env[a] = graph.placeholder(a.name)
                env[a].meta = dict(a.meta)
            return env[a]

        self.outputs: list[fx.Node] | None = []
        for node in nodes[start:stop]:
            if node.op == "placeholder":
                lookup(node)
            elif node.op == "output":
                graph.output(fx.node.map_arg(node.args[0], lookup))
                self.outputs = None
            else:
                for a in node.all_input_nodes:
                    lookup(a)
                fast = _fast_conv_node(graph, gm, node, lookup) if fast_conv else None
                if fast is not None:
                    env[node] = fast
                elif node.op == "call_function" and node.target is _MAX_POOL:
                    env[node] = graph.call_function(
                        max_pool2d_slices,
                        fx.node.map_arg(node.args, lookup),
                        fx.node.map_arg(node.kwargs, lookup),
                    )
                else:
                    env[node] = graph.node_copy(node, lookup)
        if self.outputs is not None:
            later = set(nodes[stop:])
            self.outputs = [n for n in nodes[start:stop] if any(u in later for u in n.users)]
            self.outputs = [n for n in self.outputs if n.op != "get_attr"]
            graph.output(tuple(env[n] for n in self.outputs))
        self.module = fx.GraphModule(gm, graph)

    def __call__(self, values: Mapping[fx.Node, object]):
        """Runs the piece on ``values`` (one per :attr:`inputs` node): the graph's output, or
        a dict ``{node: value}`` of :attr:`outputs`."""
        out = self.module(*(values[n] for n in self.inputs))
        if self.outputs is None:
            return out
        return dict(zip(self.outputs, out))
