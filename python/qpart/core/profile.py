"""Layer profile of a model: per learnable layer its weight count, MACs and output size, and
the valid partition points (DESIGN.md §3).

Every model is captured with :func:`qpart.core.capture.capture` (``torch.export``, rebuilt
over the supported operator set). Learnable layers are the ``nn.Linear`` / ``nn.Conv2d``
calls of the captured graph (BatchNorm folded in), in execution order ``1..L``. Partition
point ``p`` puts layers ``1..p`` on the device; it is valid when, somewhere between layer
``p`` and layer ``p+1`` in the graph's order, exactly one tensor crosses the cut (inside a
residual block two tensors cross, so it is not a cut; after the block's add it is). Among
several such positions the one with the smallest crossing tensor is used (latest on ties).
``p = 0``: only the (possibly preprocessed) input crosses; ``p = L``: everything runs on the
device and nothing is sent back.

Every other tensor the device segment reads (float BatchNorm parameters that could not be
folded, buffers, constants) is shipped in float and counted in ``D_w``
(:meth:`ModelProfile.weight_payload_bytes`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import fx, nn

from .capture import capture
from .errors import ProfileError

__all__ = [
    "ACTIVATION_OVERHEAD_BYTES",
    "BIAS_BYTES",
    "FLOAT_BYTES",
    "SCALE_ZERO_BYTES",
    "CutPoint",
    "LayerProfile",
    "ModelProfile",
    "ProfileError",
    "attribute",
    "instrument_cut",
    "profile",
]

#: Bytes per quantized output channel besides the packed codes: fp16 scale + uint8 zero.
SCALE_ZERO_BYTES = 3
#: Bytes per fp32 bias element.
BIAS_BYTES = 4
#: Bytes of the activation header: one fp16 scale + one uint8 zero (per-tensor quantization).
ACTIVATION_OVERHEAD_BYTES = 3
#: Bytes per float activation element held in device memory.
FLOAT_BYTES = 4


@dataclass(frozen=True)
class LayerProfile:
    """One learnable layer. ``rows`` x ``reduction`` is the packed weight matrix
    (``C_out`` x ``C_in/groups*kh*kw`` for a convolution); counts are per sample."""

    name: str
    kind: str
    weight_count: int
    bias_count: int
    rows: int
    reduction: int
    macs: int
    output_elems: int

    def payload_bytes(self, bits: int | None) -> int:
        """Bytes to ship this layer: ``N*ceil(K*b/8) + 3N + 4*bias`` at ``bits``; fp32
        weights and bias when ``bits`` is ``None``."""
        if bits is None:
            return FLOAT_BYTES * (self.weight_count + self.bias_count)
        return (
            self.rows * math.ceil(self.reduction * bits / 8)
            + SCALE_ZERO_BYTES * self.rows
            + BIAS_BYTES * self.bias_count
        )


@dataclass(frozen=True)
class CutPoint:
    """Where partition point ``p`` cuts the graph: after node ``node``, whose output
    (``activation_elems`` elements per sample) is what crosses."""

    p: int
    node: str
    activation_elems: int
    device_peak_activation_elems: int
    float_tensor_bytes: int = 0
    cut_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cut_shape", tuple(int(d) for d in self.cut_shape))


@dataclass
class ModelProfile:
    """Profile of a model for one input shape. ``cuts`` holds the valid partition points
    ``p < L``; ``p = L`` (all on device) is always valid."""

    layers: tuple[LayerProfile, ...]
    input_elems: int
    cuts: dict[int, CutPoint]
    full_device_peak_activation_elems: int
    graph_module: fx.GraphModule | None = field(default=None, repr=False, compare=False)
    full_float_tensor_bytes: int = 0
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()

    @property
    def num_layers(self) -> int:
        """``L``, the number of learnable layers."""
        return len(self.layers)

    @property
    def valid_points(self) -> tuple[int, ...]:
        """Valid partition points, ascending (always includes ``L``)."""
        return tuple(sorted(self.cuts)) + (self.num_layers,)

    def check_point(self, p: int) -> None:
        """Raises ``ValueError`` if ``p`` is not a valid partition point."""
        if p not in self.valid_points:
            raise ValueError(f"partition point {p} is not valid; valid points: {self.valid_points}")

    def device_macs(self, p: int) -> int:
        """``M_dev(p) = sum_{i<=p} M_i``."""
        return sum(layer.macs for layer in self.layers[:p])

    def server_macs(self, p: int) -> int:
        """``M_srv(p) = sum_{i>p} M_i``."""
        return sum(layer.macs for layer in self.layers[p:])

    def activation_elems(self, p: int) -> int:
        """``A_p``: elements per sample crossing at ``p`` (0 at ``p = L``)."""
        self.check_point(p)
        return 0 if p == self.num_layers else self.cuts[p].activation_elems

    def float_tensor_bytes(self, p: int) -> int:
        """Bytes of the float tensors besides the layers' (unfolded BatchNorm parameters,
        buffers, constants) that the device segment at ``p`` reads and is shipped."""
        self.check_point(p)
        if p == self.num_layers:
            return self.full_float_tensor_bytes
        return self.cuts[p].float_tensor_bytes

    def weight_payload_bytes(self, p: int, bits) -> int:
        """Exact ``D_w`` in bytes for layer widths ``bits`` (length ``p``; ``None`` = fp32):
        every layer's payload plus :meth:`float_tensor_bytes`."""
        if len(bits) != p:
            raise ValueError(f"need {p} layer widths for partition point {p}, got {len(bits)}")
        return self.float_tensor_bytes(p) + sum(
            layer.payload_bytes(None if b is None else int(b))
            for layer, b in zip(self.layers[:p], bits)
        )

    def activation_payload_bytes(self, p: int, bits: int | None) -> int:
        """Exact ``D_a`` in bytes: ``ceil(b_a A_p / 8) + 3`` (fp32 when ``bits`` is None;
        0 at ``p = L``)."""
        a = self.activation_elems(p)
        if a == 0:
            return 0
        if bits is None:
            return FLOAT_BYTES * a
        return math.ceil(bits * a / 8) + ACTIVATION_OVERHEAD_BYTES

    def device_memory_bytes(self, p: int, bits) -> int:
        """Device memory of a plan: the weight payload plus the peak of live float
        activations while running the device segment (one sample)."""
        peak = (
            self.full_device_peak_activation_elems
            if p == self.num_layers
            else self.cuts[p].device_peak_activation_elems
        )
        return self.weight_payload_bytes(p, bits) + FLOAT_BYTES * peak

    def to_dict(self) -> dict:
        """JSON-serialisable form (without the traced graph)."""
        return {
            "layers": [asdict(layer) for layer in self.layers],
            "input_elems": self.input_elems,
            "cuts": [asdict(c) for c in self.cuts.values()],
            "full_device_peak_activation_elems": self.full_device_peak_activation_elems,
            "full_float_tensor_bytes": self.full_float_tensor_bytes,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelProfile:
        """Inverse of :meth:`to_dict`."""
        return cls(
            layers=tuple(LayerProfile(**d) for d in data["layers"]),
            input_elems=int(data["input_elems"]),
            cuts={int(c["p"]): CutPoint(**c) for c in data["cuts"]},
            full_device_peak_activation_elems=int(data["full_device_peak_activation_elems"]),
            full_float_tensor_bytes=int(data.get("full_float_tensor_bytes", 0)),
            input_shape=tuple(data.get("input_shape", ())),
            output_shape=tuple(data.get("output_shape", ())),
        )


def _per_sample(shape) -> int:
    if len(shape) == 0:
        raise ProfileError("tensors must have a leading batch dimension")
    return int(math.prod(shape[1:]))


def attribute(module: nn.Module, target: str):
    """The attribute ``target`` (a dotted path) of ``module``."""
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def profile(model: nn.Module, example_input: torch.Tensor) -> ModelProfile:
    """Profiles ``model`` for inputs shaped like ``example_input`` (batch dimension first).

    ``model`` is any ``nn.Module`` that ``torch.export`` captures (extra ``forward``
    arguments take their defaults) or an ``ExportedProgram``. Returns per learnable layer
    (``nn.Linear`` / ``nn.Conv2d``, in execution order) its weight count, MACs per sample
    (linear ``C_in*C_out`` per row; conv ``C_in/groups*C_out*kh*kw*H_out*W_out``) and output
    elements per sample, plus the valid partition points. Raises :class:`ProfileError` if the
    model cannot be captured, uses an unsupported op, has a layer called twice, several
    inputs, or no learnable layer.
    """
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise ProfileError("qpart.profile: example_input must be a batched tensor (batch first)")
    gm = capture(model, example_input)
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except Exception as exc:
        raise ProfileError(f"qpart.profile: running the traced model failed: {exc}") from exc
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ProfileError(
            f"qpart.profile: models must take exactly one input, got {len(placeholders)}"
        )
    modules = dict(gm.named_modules())

    layers: list[LayerProfile] = []
    layer_nodes: list[int] = []
    seen: set[str] = set()
    for n in nodes:
        if n.op != "call_module":
            continue
        mod = modules[n.target]
        if not isinstance(mod, (nn.Linear, nn.Conv2d)):
            continue
        if n.target in seen:
            raise ProfileError(f"qpart.profile: layer {n.target!r} is called more than once")
        seen.add(n.target)
        out_elems = _per_sample(n.meta["tensor_meta"].shape)
        bias = 0 if mod.bias is None else mod.bias.numel()
        if isinstance(mod, nn.Linear):
            rows, red, kind = mod.out_features, mod.in_features, "linear"
        else:
            rows = mod.out_channels
            red = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            kind = "conv2d"
        # out_elems = rows * (positions); each output element costs `red` MACs.
        layers.append(
            LayerProfile(
                n.target, kind, mod.weight.numel(), bias, rows, red, out_elems * red, out_elems
            )
        )
        layer_nodes.append(index[n])
    if not layers:
        raise ProfileError("qpart.profile: the model has no nn.Linear / nn.Conv2d layer")

    def numel(n: fx.Node) -> int:
        meta = n.meta.get("tensor_meta")
        return _per_sample(meta.shape) if meta is not None and hasattr(meta, "shape") else 0

    # live[j]: tensors produced at or before node j and used after it (crossing the cut after j).
    last_use = {n: max((index[u] for u in n.users), default=-1) for n in nodes}
    carries = [n for n in nodes if n.op not in ("get_attr", "output")]
    crossing: list[list[fx.Node]] = []
    live_elems: list[int] = []
    for j in range(len(nodes)):
        cross = [n for n in carries if index[n] <= j < last_use[n]]
        crossing.append(cross)
        live_elems.append(sum(numel(n) for n in cross))
    peak_upto: list[int] = []
    peak = 0
    for j, n in enumerate(nodes):
        before = live_elems[j - 1] if j > 0 else 0
        peak = max(peak, before + numel(n))
        peak_upto.append(peak)

    # float tensors (get_attr) read at or before node j ship with a device segment cut at j.
    first_read: dict[int, int] = {}
    for n in nodes:
        if n.op == "get_attr" and n.users:
            t = attribute(gm, str(n.target))
            size = t.numel() * t.element_size()
            first = min(index[u] for u in n.users)
            first_read[first] = first_read.get(first, 0) + size
    float_upto: list[int] = []
    acc = 0
    for j in range(len(nodes)):
        acc += first_read.get(j, 0)
        float_upto.append(acc)

    cuts: dict[int, CutPoint] = {}
    start_positions = [index[placeholders[0]]] + layer_nodes
    for p in range(len(layers)):
        best: tuple[int, int] | None = None
        for j in range(start_positions[p], layer_nodes[p]):
            cross = crossing[j]
            if (
                len(cross) != 1
                or cross[0] is not nodes[j]
                or nodes[j].meta.get("tensor_meta") is None
            ):
                continue
            size = numel(nodes[j])
            if best is None or size <= best[0]:
                best = (size, j)
        if best is not None:
            j = best[1]
            shape = nodes[j].meta["tensor_meta"].shape[1:]
            cuts[p] = CutPoint(p, nodes[j].name, best[0], peak_upto[j], float_upto[j], shape)
    full_peak = peak_upto[-1]
    final = next(n for n in nodes if n.op == "output").args[0]
    return ModelProfile(
        tuple(layers),
        _per_sample(example_input.shape),
        cuts,
        full_peak,
        gm,
        full_float_tensor_bytes=float_upto[-1],
        input_shape=tuple(int(d) for d in example_input.shape[1:]),
        output_shape=tuple(int(d) for d in final.meta["tensor_meta"].shape[1:]),
    )


def instrument_cut(
    gm: fx.GraphModule, node_name: str, fn: Callable[..., torch.Tensor], *args
) -> fx.GraphModule:
    """A copy of ``gm`` whose tensor ``node_name`` passes through ``fn(x, *args)`` before
    any use
    (how the device's cut activation is quantized in calibration and validation)."""
    import copy

    new = copy.deepcopy(gm)
    target = next((n for n in new.graph.nodes if n.name == node_name), None)
    if target is None:
        raise ValueError(f"no node {node_name!r} in the graph")
    with new.graph.inserting_after(target):
        hooked = new.graph.call_function(fn, (target, *args))
    target.replace_all_uses_with(hooked)
    hooked.args = (target, *args)
    new.recompile()
    return new
