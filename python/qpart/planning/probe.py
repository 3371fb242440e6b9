"""Re-runs a profiled float graph on fixed inputs with some layer weights replaced and/or the
cut activation transformed, and measures the output-noise energy and the disagreement rate
(:class:`qpart.core.metrics.Agreement`, top-1 by default) against the float model.
Calibration, the measured refinement and the held-out acceptance all measure through it.

Float values of every node are cached once; a perturbation re-runs only the graph after it,
as generated code (:class:`~qpart.planning.subgraph.Subgraph`). Several perturbations of one
node run as one pass over the inputs stacked along the batch (:meth:`Probe.outputs_from`).
Plans run segment by segment (between learnable layers and after each cut), and the values
reached by a plan's quantized prefix are kept (least recently used first out, bounded bytes)
so that plans sharing the widths of their first layers share that work. The inputs can be
split into fixed row chunks (:meth:`Probe.set_chunks`) so that a plan measurement can stop
as soon as its disagreements exceed a limit (:meth:`Probe.plan_disagreements`)."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import fx, nn

import qpart_kernels
from qpart_kernels.ops.reference import int8_fake_quant, int8_fake_quant_images

from ..core.metrics import AgreementSpec, agreement
from ..core.profile import ModelProfile
from ..core.split import roundtrip_activation
from .subgraph import Subgraph, conv2d

#: Bytes of plan-prefix values a probe keeps (see the module docstring).
PREFIX_CACHE_BYTES = 256 * 2**20


class Probe:
    """Runs the float graph on the calibration inputs with some weights replaced and/or the
    cut activation transformed (see the module docstring). ``agreement``: what counts as the
    same answer (:func:`qpart.core.metrics.agreement`; default top-1).

    ``act_int8``: the device's integer-activation numerics - every layer whose weight is
    swapped (a quantized device layer) also sees its input quantized to int8 as the integer
    kernels quantize it (:func:`int8_input`: per row for a Linear, per image for a Conv2d)."""

    def __init__(
        self,
        prof: ModelProfile,
        x: torch.Tensor,
        agreement_spec: AgreementSpec = None,
        act_int8: bool = False,
    ):
        if x.shape[0] == 0:
            raise ValueError("Probe: no inputs")
        self.prof = prof
        self.agreement = agreement(agreement_spec)
        self.act_int8 = bool(act_int8)
        self.gm = fast_layout_copy(prof.graph_module)
        self.nodes = list(self.gm.graph.nodes)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        self.modules = dict(self.gm.named_modules())
        names = {layer.name for layer in prof.layers}
        self.layer_index = {}
        for n in self.nodes:
            if n.op == "call_module" and n.target in names:
                self.layer_index[n.target] = self.index[n.name]
        #: Layers whose input is int8-quantized now (those swapped, with ``act_int8``).
        self._int8_active: set[str] = set()
        if self.act_int8:
            for name in names:
                self.modules[name].register_forward_pre_hook(self._int8_hook(name))
        interp = fx.Interpreter(self.gm, garbage_collect_values=False)
        with torch.inference_mode():
            self.ref = interp.run(_layout(x))
            self.cache = dict(interp.env)
        self.x = x
        self.n = int(x.shape[0])
        self._cut_index = {p: self.index[c.node] for p, c in prof.cuts.items()}
        bounds = set(self.layer_index.values()) | {i + 1 for i in self._cut_index.values()}
        self._bounds = sorted(b for b in bounds | {len(self.nodes)} if 0 < b <= len(self.nodes))
        self._pieces: dict[tuple[int, int], Subgraph] = {}
        self._last_use = {
            n: max((self.index[u.name] for u in n.users), default=-1) for n in self.nodes
        }
        self._prefix: OrderedDict[tuple, tuple[dict, int]] = OrderedDict()
        self._prefix_bytes = 0
        self._chunks: list[torch.Tensor | None] = [None]
        self._num_chunks = 0
        self._uncached: set[int] = set()
        self._chunk_values: dict[tuple[int, fx.Node], torch.Tensor] = {}

    # ------------------------------------------------------------------ running pieces
    def _piece(self, start: int, stop: int) -> Subgraph:
        key = (start, stop)
        if key not in self._pieces:
            # the one-channel conv rewrite calls F.conv2d directly: it would skip the hook
            self._pieces[key] = Subgraph(
                self.gm, self.nodes, start, stop, fast_conv=not self.act_int8
            )
        return self._pieces[key]

    def _batched(self, node: fx.Node, value) -> bool:
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            return False
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.dim() > 0:
            return not isinstance(val.shape[0], int) or value.shape[0] == self.n
        return value.shape[0] == self.n

    def _float(self, node: fx.Node, chunk: int = 0):
        """The float value of ``node`` on the rows of ``chunk`` (0: all rows)."""
        value = self.cache[node]
        rows = self._chunks[chunk]
        if rows is None or not self._batched(node, value):
            return value
        if chunk in self._uncached:
            return value.index_select(0, rows)
        key = (chunk, node)
        if key not in self._chunk_values:
            self._chunk_values[key] = value.index_select(0, rows)
        return self._chunk_values[key]

    def _feed(self, piece: Subgraph, env: dict, chunk: int = 0, repeat: int = 1) -> dict:
        values = {}
        for node in piece.inputs:
            if node in env:
                values[node] = env[node]
                continue
            value = self._float(node, chunk)
            if repeat > 1 and self._batched(node, self.cache[node]):
                value = value.repeat(repeat, *([1] * (value.dim() - 1)))
            values[node] = value
        return values

    def _rows(self, chunk: int) -> int:
        rows = self._chunks[chunk]
        return self.n if rows is None else int(rows.numel())

    # ------------------------------------------------------------------ stacked probes
    def outputs_from(
        self,
        node_index: int,
        values: Sequence[torch.Tensor] | torch.Tensor,
        chunk: int = 0,
    ) -> torch.Tensor:
        """Graph outputs with the value of node ``node_index`` replaced by each of
        ``values`` in turn (everything before it float), as one pass over the inputs
        stacked ``len(values)`` times along the batch: ``len(values) * rows`` output rows.
        ``values`` may also be given stacked already (one tensor of ``k * rows`` rows)."""
        node = self.nodes[node_index]
        piece = self._piece(node_index + 1, len(self.nodes))
        if isinstance(values, torch.Tensor):
            k = values.shape[0] // self._rows(chunk)
            env = {node: values}
        else:
            k = len(values)
            env = {node: values[0] if k == 1 else torch.cat(list(values))}
        with torch.inference_mode():
            return piece(self._feed(piece, env, chunk, repeat=k))

    def sole_layer_user(self, node_index: int) -> str | None:
        """The layer whose only input is node ``node_index`` when that layer is the node's
        only user (its output is then linear in the node's value), else ``None``."""
        users = list(self.nodes[node_index].users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].kwargs:
            return None
        user = users[0]
        if user.target not in self.layer_index or list(user.args) != [self.nodes[node_index]]:
            return None
        return str(user.target)

    def layer_input(self, name: str) -> torch.Tensor:
        """The float input of layer ``name`` on the probe's inputs."""
        return self.cache[self.nodes[self.layer_index[name]].args[0]]

    def quantized_layer_input(self, name: str) -> torch.Tensor:
        """The input layer ``name`` sees when it is quantized: :meth:`layer_input`, int8-
        quantized with ``act_int8`` (:func:`int8_input`)."""
        x = self.layer_input(name)
        if not self.act_int8:
            return x
        with torch.inference_mode():
            return int8_input(self.modules[name], x)

    def _int8_hook(self, name: str):
        def hook(module: nn.Module, args: tuple):
            if name in self._int8_active:
                return (int8_input(module, args[0]), *args[1:])
            return None

        return hook

    def layer_output(
        self,
        name: str,
        weight: torch.Tensor | None = None,
        bias: bool = True,
        x: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Layer ``name``'s output with ``weight`` (any shape with the weight's element
        count; ``None``: its own) on input ``x`` (``None``: its float input), with
        (``bias``) or without its bias."""
        mod = self.modules[name]
        weight = mod.weight if weight is None else weight
        w = _layout(weight.reshape(mod.weight.shape).to(mod.weight.dtype))
        x = self.layer_input(name) if x is None else x
        b = mod.bias if bias else None
        with torch.inference_mode():
            if type(mod) is nn.Linear:
                return nn.functional.linear(x, w, b)
            if type(mod) is nn.Conv2d and mod.padding_mode == "zeros":
                return conv2d(x, w, b, mod.stride, mod.padding, mod.dilation, mod.groups)
            if not bias and mod.bias is not None:
                raise TypeError(f"layer {name}: no bias-free output for {type(mod).__name__}")
            return torch.func.functional_call(mod, {"weight": w}, (x,))

    def stats_many(self, logits: torch.Tensor, k: int, chunk: int = 0) -> list[tuple[float, float]]:
        """:meth:`stats` of each of the ``k`` stacked row blocks of ``logits``."""
        rows = self._rows(chunk)
        ref = self.ref if chunk == 0 else self._float(self.nodes[-1].args[0], chunk)
        out = []
        for block in logits.reshape(k, rows, *logits.shape[1:]):
            diff = (block - ref).reshape(rows, -1)
            energy = float((diff**2).sum(-1).mean())
            out.append((energy, self.agreement.disagreement_rate(block, ref)))
        return out

    def sums_many(self, logits: torch.Tensor, k: int, chunk: int = 0) -> list[tuple[float, int]]:
        """``(output-noise energy summed over the rows, disagreements)`` of each of the
        ``k`` stacked row blocks of ``logits`` (outputs on the rows of ``chunk``)."""
        rows = self._rows(chunk)
        ref = self.ref if chunk == 0 else self._float(self.nodes[-1].args[0], chunk)
        out = []
        for block in logits.reshape(k, rows, *logits.shape[1:]):
            diff = (block - ref).reshape(rows, -1)
            out.append((float((diff**2).sum()), self.agreement.disagreements(block, ref)))
        return out

    # ------------------------------------------------------------------ single probes
    def stats(self, logits: torch.Tensor) -> tuple[float, float]:
        """``(output-noise energy E||z - z_float||^2, disagreement rate)`` of ``logits``."""
        return self.stats_many(logits, 1)[0]

    def with_weight(self, name: str, new_weight: torch.Tensor) -> tuple[float, float]:
        """Stats with layer ``name``'s weight replaced by ``new_weight``."""
        out = self.layer_output(name, new_weight, x=self.quantized_layer_input(name))
        return self.stats(self.outputs_from(self.layer_index[name], [out]))

    def with_activation(self, p: int, fn, *args) -> tuple[float, float]:
        """Stats with the cut activation of point ``p`` replaced by ``fn(value, *args)``."""
        i = self._cut_index[p]
        with torch.inference_mode():
            value = fn(self.cache[self.nodes[i]], *args)
        return self.stats(self.outputs_from(i, [value]))

    # ------------------------------------------------------------------ plans
    def set_chunks(self, order: torch.Tensor, fractions: Sequence[float]) -> None:
        """Splits the inputs into row chunks for :meth:`plan_disagreements`: ``order`` (a
        permutation of the rows) cut at the cumulative ``fractions`` (ending at 1)."""
        bounds = sorted({min(self.n, max(1, round(f * self.n))) for f in fractions} | {self.n})
        self._chunks = [None]
        self._uncached = set()
        self._chunk_values = {}
        lo = 0
        for hi in bounds:
            if hi > lo:
                self._chunks.append(order[lo:hi].clone())
                lo = hi
        self._num_chunks = len(self._chunks) - 1

    @property
    def num_chunks(self) -> int:
        """Number of row chunks set by :meth:`set_chunks` (0 when unset)."""
        return self._num_chunks

    def add_rows(self, rows: torch.Tensor, cache: bool = True) -> int:
        """Registers a row set (indices into the inputs) usable as ``chunk`` by the
        measuring methods (not one of :meth:`plan_disagreements`'s chunks; dropped by
        :meth:`set_chunks`); ``cache``: keep the float values it reads. Returns its id."""
        self._chunks.append(rows.clone())
        if not cache:
            self._uncached.add(len(self._chunks) - 1)
        return len(self._chunks) - 1

    def drop_rows(self, chunks) -> None:
        """Forgets row sets registered last by :meth:`add_rows` (their ids ``chunks``)."""
        for chunk in sorted(chunks, reverse=True):
            if chunk != len(self._chunks) - 1 or chunk <= self._num_chunks:
                raise ValueError(f"row set {chunk} is not the last added one")
            self._chunks.pop()
            self._uncached.discard(chunk)
            for key in [k for k in self._chunk_values if k[0] == chunk]:
                del self._chunk_values[key]

    def rows(self, chunk: int) -> torch.Tensor | None:
        """The row indices of ``chunk`` (``None``: all rows)."""
        return self._chunks[chunk]

    def plan_disagreements(
        self,
        p: int,
        bits: Sequence[int],
        b_a: int | None,
        weight: Callable[[str, int], torch.Tensor] | None = None,
        limit: int | None = None,
        resume: tuple[int, int] = (0, 0),
        max_chunks: int | None = None,
    ) -> tuple[int, int]:
        """``(disagreements, rows measured)`` of a plan (see :meth:`with_plan`), chunk by
        chunk (:meth:`set_chunks`; all rows at once when unset), stopping as soon as the
        disagreements exceed ``limit``: exact when all rows were measured, else a lower
        bound that already exceeds ``limit``. ``resume``: ``(disagreements, rows)`` of an
        earlier call for the same plan that stopped early; its chunks are not measured
        again. ``max_chunks``: measure at most this many more chunks (the count is then
        partial unless all rows were measured)."""
        chunks = range(1, self._num_chunks + 1) if self._num_chunks else [0]
        count, seen = resume
        skip = seen
        done = 0
        for chunk in chunks:
            if skip > 0:
                skip -= self._rows(chunk)
                if skip < 0:
                    raise ValueError("resume: rows measured do not end at a chunk boundary")
                continue
            if max_chunks is not None and done >= max_chunks:
                break
            out = self.plan_outputs(p, bits, b_a, weight, chunk=chunk)
            ref = self.ref if chunk == 0 else self._float(self.nodes[-1].args[0], chunk)
            count += self.agreement.disagreements(out, ref)
            seen += self._rows(chunk)
            done += 1
            if limit is not None and count > limit:
                break
        return count, seen

    def with_plan(
        self,
        p: int,
        bits: Sequence[int],
        b_a: int | None,
        weight: Callable[[str, int], torch.Tensor] | None = None,
    ) -> tuple[float, float]:
        """Stats of a plan: device layers ``1..p`` at ``bits`` (real quantizer, dequantized)
        and the cut activation at ``b_a`` (``None`` or ``p = L``: float). ``weight(name,
        bits)`` supplies the dequantized weights (default: quantized afresh); a plan that
        changes nothing measures ``(0, 0)``."""
        return self.stats(self.plan_outputs(p, bits, b_a, weight))

    def plan_outputs(
        self,
        p: int,
        bits: Sequence[int],
        b_a: int | None,
        weight: Callable[[str, int], torch.Tensor] | None = None,
        chunk: int = 0,
    ) -> torch.Tensor:
        """The outputs of a plan on the probe's inputs (the rows of ``chunk``, see
        :meth:`set_chunks`; 0: all) - see :meth:`with_plan`; the float outputs when the
        plan changes nothing."""
        if weight is None:

            def weight(name: str, b: int) -> torch.Tensor:
                return quantized_weight(self.modules[name].weight, b)

        names = [layer.name for layer in self.prof.layers[:p]]
        layer_bits = {name: int(b) for name, b in zip(names, bits)}
        starts = [self.layer_index[n] for n in names]
        cut = None
        if b_a is not None and p < self.prof.num_layers:
            cut = self._cut_index[p]
            starts.append(cut + 1)
        if not starts:
            return self._float(self.nodes[-1].args[0], chunk)
        pos = min(starts)

        def key(b: int) -> tuple:
            done = tuple((n, layer_bits[n]) for n in names if self.layer_index[n] < b)
            return (chunk, b, done, b_a if cut is not None and cut < b else None)

        env: dict = {}
        for b in self._bounds:
            if b > pos and key(b) in self._prefix:
                pos = b
        if key(pos) in self._prefix:
            env = dict(self._prefix[key(pos)][0])
            self._prefix.move_to_end(key(pos))
        elif cut is not None and cut + 1 == pos:  # only the activation changes (p = 0)
            with torch.inference_mode():
                value = self._float(self.nodes[cut], chunk)
                env[self.nodes[cut]] = roundtrip_activation(value, b_a)
        weights = {n: weight(n, b) for n, b in layer_bits.items() if self.layer_index[n] >= pos}
        i = self._bounds.index(pos)
        with torch.inference_mode(), _swapped(self.modules, weights, self._int8_active):
            while True:
                stop = self._bounds[i + 1]
                piece = self._piece(pos, stop)
                out = piece(self._feed(piece, env, chunk))
                if stop == len(self.nodes):
                    return out
                env.update(out)
                env = {nd: v for nd, v in env.items() if self._last_use[nd] >= stop}
                if cut is not None and cut + 1 == stop:
                    # before the cut's round trip: the prefix of plans cut later
                    done = tuple((n, layer_bits[n]) for n in names if self.layer_index[n] < stop)
                    self._remember((chunk, stop, done, None), env)
                    env[self.nodes[cut]] = roundtrip_activation(env[self.nodes[cut]], b_a)
                self._remember(key(stop), env)
                pos, i = stop, i + 1

    def _remember(self, key: tuple, env: dict) -> None:
        size = sum(
            v.numel() * v.element_size() for v in env.values() if isinstance(v, torch.Tensor)
        )
        if size > PREFIX_CACHE_BYTES // 4:
            return
        self._prefix[key] = (dict(env), size)
        self._prefix_bytes += size
        while self._prefix_bytes > PREFIX_CACHE_BYTES:
            _, (_, s) = self._prefix.popitem(last=False)
            self._prefix_bytes -= s


class _swapped:  # noqa: N801 - used as a context manager
    """Swaps layer weights in (and marks the layers in ``active``: their int8 hook, if
    any, then quantizes their input); restores both on exit."""

    def __init__(self, modules, weights, active: set[str] | None = None):
        self.modules, self.weights, self.old = modules, weights or {}, {}
        self.active = set() if active is None else active

    def __enter__(self):
        for name, w in self.weights.items():
            mod = self.modules[name]
            self.old[name] = mod.weight.data
            mod.weight.data = _layout(w.reshape(mod.weight.shape).to(mod.weight.dtype))
            self.active.add(name)

    def __exit__(self, *exc):
        for name, old in self.old.items():
            self.modules[name].weight.data = old
            self.active.discard(name)
        return False


def int8_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` as the integer kernels quantize a layer's input (``q * scale``, float): per
    row for a Linear (``qpart_kernels`` reference ``int8_fake_quant``), per image for a
    Conv2d (``int8_fake_quant_images``)."""
    fake_quant = int8_fake_quant_images if isinstance(module, nn.Conv2d) else int8_fake_quant
    return fake_quant(x).to(x.dtype)


def _layout(t: torch.Tensor) -> torch.Tensor:
    """4-D tensors in channels-last order (the fast layout of CPU convolutions)."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def fast_layout_copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` with every 4-D parameter and buffer in channels-last order: CPU
    convolutions then run in that order (several times faster for the many-channel,
    small-image layers of a ResNet; same values up to float rounding)."""
    out = copy.deepcopy(gm)
    with torch.no_grad():
        for t in list(out.parameters()) + list(out.buffers()):
            if t.dim() == 4:
                t.data = _layout(t.data)
    return out


def quantized_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` (rows = output channels) quantized per channel to ``bits`` with the kernels'
    weight quantizer and dequantized again, as a float ``(rows, K)`` matrix."""
    w2 = w.detach().reshape(w.shape[0], -1).float().contiguous()
    q = qpart_kernels.quantize_weight(w2, bits)
    return qpart_kernels.dequantize_weight(q.packed, q.scales, q.zeros, bits, w2.shape[1])
