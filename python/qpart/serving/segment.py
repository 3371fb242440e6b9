"""The device-segment container, format v2 (byte layout and rationale in docs/SERVING.md).

A segment is a safetensors container: the tensors, and under the metadata key ``"qpart"``
a JSON description of the graph as data - no pickle, no code:

* ``modules``: the quantized layers, ``{"name", "type": "QPartLinear"|"QPartConv2d",
  "config": {...}}`` (``"act_int8": true`` in the config of a layer that runs on int8
  activations); their buffers are the tensors ``"m<i>.<buffer>"``;
* ``nodes``: in execution order, each one of ``{"op": "input"}``, ``{"op": "tensor",
  "tensor": "c<k>"}`` (a float tensor the graph reads), ``{"op": "module", "module": i,
  "args": [...]}``, ``{"op": "call", "target": "aten.relu.default", "args": [...],
  "kwargs": {...}}`` (``target`` from the allow-list of :mod:`qpart.core.graph_ops`) and a
  final ``{"op": "output", "value": {"node": j}}``. Arguments are JSON values, lists,
  ``{"node": j}`` (an earlier node's result), ``{"float": "inf"|"-inf"|"nan"}`` and
  ``{"dtype": "float32"}``.

The segment id is the sha256 of the container bytes. Every tensor counts in the planner's
``D_w``; the rest of the container is the header (``EncodedSegment.overhead_bytes``).

:func:`decode_segment` validates the whole header - sizes, schema, the allow-list, every
tensor's shape and dtype against modules built on the meta device - before it allocates
anything beyond the container's own tensors, and raises only :class:`WireFormatError`.
Format v1 containers (a chain of modules, :mod:`.segment_v1`) still decode.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

import qpart_kernels

from ..core import graph_ops
from ..core.profile import attribute
from . import segment_v1
from .errors import WireFormatError

SEGMENT_FORMAT = "qpart-segment"
SEGMENT_VERSION = 2
METADATA_KEY = "qpart"

#: Limits a decoder enforces before it builds anything.
MAX_HEADER_BYTES = 16 << 20
MAX_NODES = 100_000
MAX_MODULES = 10_000
MAX_DIM = 1 << 31

#: Quantized layer types -> (class, config keys). The config rebuilds the module on the meta
#: device, whose buffers must then match the container's tensors exactly.
LAYER_TYPES: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "QPartLinear": (
        qpart_kernels.QPartLinear,
        ("in_features", "out_features", "bits", "group_size", "bias"),
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
            "bias",
        ),
    ),
}
#: Config keys a quantized layer carries only when set, with the value their absence means
#: (so containers written before a key existed, and layers that leave it at its default,
#: keep their bytes): ``act_int8`` is the integer-activation path of the layer.
OPTIONAL_KEYS: dict[str, bool] = {"act_int8": False}
_FLOAT_LAYERS = (nn.Linear, nn.Conv2d)
_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64)
    + (torch.int32, torch.int8, torch.uint8, torch.bool)
}
_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


# ----------------------------------------------------------------------------- encoding


def _encode_value(value, index: dict[fx.Node, int], where: str):
    if isinstance(value, fx.Node):
        return {"node": index[value]}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": str(value)}
    if isinstance(value, (list, tuple)):
        return [_encode_value(v, index, where) for v in value]
    if isinstance(value, torch.dtype) and str(value).removeprefix("torch.") in _DTYPES:
        return {"dtype": str(value).removeprefix("torch.")}
    raise WireFormatError(f"{where}: argument {value!r} ({type(value).__name__}) has no wire form")


def _layer_entry(name: str, module: nn.Module, float_ok: bool) -> dict:
    kind = type(module).__name__
    if kind in LAYER_TYPES and type(module) is LAYER_TYPES[kind][0]:
        config = {}
        for key in LAYER_TYPES[kind][1]:
            value = module.bias is not None if key == "bias" else getattr(module, key)
            config[key] = list(value) if isinstance(value, tuple) else value
        for key, default in OPTIONAL_KEYS.items():
            value = getattr(module, key, default)
            if value != default:
                config[key] = value
        return {"name": name, "type": kind, "config": config}
    if float_ok and isinstance(module, _FLOAT_LAYERS):
        return {"name": name, "type": kind, "config": {}}
    raise WireFormatError(
        f"module {name!r} ({kind}) cannot be shipped in a device segment; only "
        f"{', '.join(LAYER_TYPES)} (quantized layers) are"
    )


def describe_graph(gm: fx.GraphModule, float_layers: bool = False) -> tuple[dict, dict]:
    """The v2 description of ``gm`` (``{"modules", "nodes"}``) and its tensors by container
    name. ``float_layers`` accepts float ``nn.Linear``/``nn.Conv2d`` (without their weights)
    - how registration checks that every part of a captured model can be shipped."""
    if not isinstance(gm, fx.GraphModule):
        raise WireFormatError(f"expected an fx.GraphModule segment, got {type(gm).__name__}")
    index: dict[fx.Node, int] = {}
    modules: list[dict] = []
    module_index: dict[str, int] = {}
    nodes: list[dict] = []
    tensors: dict[str, torch.Tensor] = {}
    constants: dict[str, str] = {}
    inputs = 0
    for node in gm.graph.nodes:
        where = f"node {node.name!r}"
        if node.op == "placeholder":
            inputs += 1
            entry: dict = {"op": "input"}
        elif node.op == "get_attr":
            target = str(node.target)
            if target not in constants:
                value = attribute(gm, target)
                if not isinstance(value, torch.Tensor):
                    raise WireFormatError(f"{where}: {target!r} is not a tensor")
                constants[target] = f"c{len(constants)}"
                tensors[constants[target]] = value.detach().cpu().contiguous()
            entry = {"op": "tensor", "tensor": constants[target]}
        elif node.op == "call_module":
            target = str(node.target)
            if target not in module_index:
                module = gm.get_submodule(target)
                layer = _layer_entry(target, module, float_layers)
                module_index[target] = len(modules)
                modules.append(layer)
                if layer["type"] in LAYER_TYPES:
                    for tname, t in module.state_dict().items():
                        tensors[f"m{module_index[target]}.{tname}"] = t.detach().cpu().contiguous()
            if node.kwargs or len(node.args) != 1:
                raise WireFormatError(f"{where}: a layer takes exactly one argument")
            entry = {
                "op": "module",
                "module": module_index[target],
                "args": _encode_value(list(node.args), index, where),
            }
        elif node.op == "call_function":
            name = graph_ops.op_name(node.target)
            if name is None:
                raise WireFormatError(
                    f"{where}: {graph_ops.describe(node.target)} is not in the supported "
                    "operator set"
                )
            entry = {
                "op": "call",
                "target": name,
                "args": _encode_value(list(node.args), index, where),
                "kwargs": {k: _encode_value(v, index, where) for k, v in node.kwargs.items()},
            }
        elif node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                raise WireFormatError("a segment returns exactly one tensor")
            entry = {"op": "output", "value": {"node": index[node.args[0]]}}
        else:
            raise WireFormatError(f"{where}: {node.op} nodes cannot be shipped")
        index[node] = len(nodes)
        nodes.append(entry)
    if inputs != 1:
        raise WireFormatError(f"a device segment takes exactly one input, this one {inputs}")
    return {"modules": modules, "nodes": nodes}, tensors


@dataclass(frozen=True)
class EncodedSegment:
    """A serialised segment: container bytes, its sha256 (segment id), the bytes of all its
    tensors (``tensor_bytes`` = the planner's ``D_w``; ``qpart_tensor_bytes`` the quantized
    layers' share of it)."""

    data: bytes
    segment_id: str
    tensor_bytes: int
    qpart_tensor_bytes: int

    @property
    def overhead_bytes(self) -> int:
        """Container bytes beyond the tensors (length prefix + JSON header)."""
        return len(self.data) - self.tensor_bytes


def encode_segment(
    segment: fx.GraphModule,
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    extra: dict | None = None,
) -> EncodedSegment:
    """Serialises a device segment (an ``fx.GraphModule`` of quantized layers and
    allow-listed ops, as :func:`qpart.core.split.quantized_segments` builds) as a v2
    container. ``input_shape`` / ``output_shape`` are per sample; ``extra``
    (JSON-serialisable) is stored in the description too (e.g. model id, partition point)."""
    from safetensors.torch import save

    graph, tensors = describe_graph(segment)
    arch = {
        "format": SEGMENT_FORMAT,
        "version": SEGMENT_VERSION,
        "input_shape": [int(d) for d in input_shape],
        "output_shape": [int(d) for d in output_shape],
        **graph,
        **({"extra": extra} if extra else {}),
    }
    data = save(
        tensors, metadata={METADATA_KEY: json.dumps(arch, sort_keys=True, separators=(",", ":"))}
    )
    sizes = {k: t.numel() * t.element_size() for k, t in tensors.items()}
    return EncodedSegment(
        data,
        hashlib.sha256(data).hexdigest(),
        sum(sizes.values()),
        sum(v for k, v in sizes.items() if k.startswith("m")),
    )


# ----------------------------------------------------------------------------- decoding


@dataclass
class DecodedSegment:
    """A rebuilt device segment (``fx.GraphModule`` for v2, ``nn.Sequential`` for v1) and
    its description."""

    module: nn.Module
    architecture: dict
    segment_id: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape."""
        return tuple(self.architecture["input_shape"])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample output shape (the cut tensor's, or the model output's at ``p = L``)."""
        return tuple(self.architecture["output_shape"])


def _fail(message: str):
    raise WireFormatError(message)


def _expect(value, kind, what: str):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(f"{what}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _shape(value, what: str) -> list[int]:
    _expect(value, list, what)
    if len(value) > 8:
        _fail(f"{what}: more than 8 dimensions")
    for d in value:
        if not isinstance(d, int) or isinstance(d, bool) or not 0 < d < MAX_DIM:
            _fail(f"{what}: dimensions must be integers in 1..{MAX_DIM - 1}, got {value}")
    return value


def read_container(data: bytes) -> tuple[dict, dict]:
    """The safetensors header and the ``"qpart"`` description of a container, both checked
    for size and JSON validity before any tensor is read."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail(f"expected bytes, got {type(data).__name__}")
    if len(data) < 8:
        _fail(f"not a safetensors container: {len(data)} bytes")
    (header_len,) = struct.unpack("<Q", bytes(data[:8]))
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        _fail(f"not a safetensors container: header of {header_len} bytes in {len(data)}")
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]))
        _expect(header, dict, "container header")
        meta = _expect(header.get("__metadata__"), dict, "container metadata")
        arch = json.loads(_expect(meta.get(METADATA_KEY), str, "qpart metadata"))
    except RecursionError:
        _fail("segment header nests too deeply")
    except ValueError as exc:
        _fail(f"segment header is not valid JSON: {exc}")
    _expect(arch, dict, "qpart metadata")
    body = len(data) - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        _expect(info, dict, f"tensor {name!r}")
        offsets = _expect(info.get("data_offsets"), list, f"tensor {name!r} offsets")
        if len(offsets) != 2 or not all(isinstance(o, int) for o in offsets):
            _fail(f"tensor {name!r}: bad data offsets {offsets}")
        if not 0 <= offsets[0] <= offsets[1] <= body:
            _fail(f"tensor {name!r}: data offsets {offsets} outside the {body}-byte body")
    return header, arch


def _load_tensors(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(bytes(data))
    except (SafetensorError, ValueError, TypeError, RuntimeError) as exc:
        raise WireFormatError(f"not a safetensors container: {exc}") from exc


def _decode_value(value, produced: list[bool], at: int, depth: int = 0):
    if depth > 8:
        _fail(f"node {at}: arguments nest too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode_value(v, produced, at, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key == "node":
            if not isinstance(inner, int) or isinstance(inner, bool) or not 0 <= inner < at:
                _fail(f"node {at}: reference {inner!r} is not an earlier node")
            if not produced[inner]:
                _fail(f"node {at}: node {inner} has no value to use")
            return ("__node__", inner)
        if key == "float" and inner in ("inf", "-inf", "nan"):
            return float(inner)
        if key == "dtype" and inner in _DTYPES:
            return _DTYPES[inner]
    _fail(f"node {at}: argument {value!r} is not a wire value")


def _build_layers(arch: dict, tensors: dict[str, torch.Tensor], used: set[str]) -> list:
    entries = _expect(arch.get("modules"), list, "modules")
    if len(entries) > MAX_MODULES:
        _fail(f"{len(entries)} modules exceed the limit of {MAX_MODULES}")
    built = []
    for i, entry in enumerate(entries):
        _expect(entry, dict, f"module {i}")
        kind = entry.get("type")
        if kind not in LAYER_TYPES:
            _fail(f"module {i}: unsupported type {kind!r}; supported: {sorted(LAYER_TYPES)}")
        cls, keys = LAYER_TYPES[kind]
        config = _expect(entry.get("config"), dict, f"module {i} config")
        if not set(keys) <= set(config) <= set(keys) | set(OPTIONAL_KEYS):
            _fail(
                f"module {i} ({kind}): config keys {sorted(config)}, expected {sorted(keys)} "
                f"and optionally {sorted(OPTIONAL_KEYS)}"
            )
        args = {}
        for key, value in config.items():
            if isinstance(value, list):
                if len(value) != 2 or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_DIM
                    for v in value
                ):
                    _fail(f"module {i} ({kind}): {key}={value} is not a pair of sizes")
                value = tuple(value)
            elif key == "bias" or key in OPTIONAL_KEYS:
                value = _expect(value, bool, f"module {i} {key}")
            elif value is not None:
                value = _expect(value, int, f"module {i} {key}")
                if not 0 <= value < MAX_DIM:
                    _fail(f"module {i} ({kind}): {key}={value} out of range")
            args[key] = value
        try:
            module = cls(**args, device="meta")  # shapes only: nothing is allocated
        except (TypeError, ValueError, RuntimeError) as exc:
            _fail(f"module {i} ({kind}): bad config {config}: {exc}")
        state = {}
        for tname, ref in module.state_dict().items():
            key = f"m{i}.{tname}"
            t = tensors.get(key)
            if t is None:
                _fail(f"module {i} ({kind}): tensor {key!r} is missing")
            if t.shape != ref.shape or t.dtype != ref.dtype:
                _fail(
                    f"tensor {key!r}: expected {tuple(ref.shape)} {ref.dtype}, got "
                    f"{tuple(t.shape)} {t.dtype}"
                )
            state[tname] = t
            used.add(key)
        module.load_state_dict(state, strict=True, assign=True)
        built.append(module.eval())
    return built


def _build_graph(arch: dict, tensors: dict[str, torch.Tensor]) -> fx.GraphModule:
    used: set[str] = set()
    layers = _build_layers(arch, tensors, used)
    nodes = _expect(arch.get("nodes"), list, "nodes")
    if not 2 <= len(nodes) <= MAX_NODES:
        _fail(f"a segment has 2..{MAX_NODES} nodes, this one {len(nodes)}")
    root = nn.Module()
    for i, layer in enumerate(layers):
        root.add_module(f"m{i}", layer)
    graph = fx.Graph()
    made: list[fx.Node | None] = []
    produced: list[bool] = []

    def resolve(value):
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "__node__":
            return made[value[1]]
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    output = None
    for at, entry in enumerate(nodes):
        _expect(entry, dict, f"node {at}")
        op = entry.get("op")
        if output is not None:
            _fail(f"node {at}: nodes after the output")
        if op == "input":
            if at != 0:
                _fail("the input must be the first node")
            made.append(graph.placeholder("x"))
        elif op == "tensor":
            key = entry.get("tensor")
            if not isinstance(key, str) or not re.fullmatch(r"c\d+", key) or key not in tensors:
                _fail(f"node {at}: tensor {key!r} is not in the container")
            if key not in used:
                root.register_buffer(key, tensors[key])
                used.add(key)
            made.append(graph.get_attr(key))
        elif op == "module":
            i = entry.get("module")
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(layers):
                _fail(f"node {at}: module {i!r} does not exist")
            args = _decode_value(_expect(entry.get("args"), list, f"node {at} args"), produced, at)
            made.append(graph.call_module(f"m{i}", tuple(resolve(args))))
        elif op == "call":
            target = graph_ops.SUPPORTED_OPS.get(entry.get("target"))
            if target is None:
                _fail(f"node {at}: operator {entry.get('target')!r} is not in the supported set")
            args = _decode_value(_expect(entry.get("args"), list, f"node {at} args"), produced, at)
            kwargs = _expect(entry.get("kwargs", {}), dict, f"node {at} kwargs")
            kw = {}
            for k, v in kwargs.items():
                if not isinstance(k, str) or not k.isidentifier():
                    _fail(f"node {at}: bad keyword {k!r}")
                kw[k] = resolve(_decode_value(v, produced, at))
            made.append(graph.call_function(target, tuple(resolve(args)), kw))
        elif op == "output":
            value = _decode_value(entry.get("value"), produced, at)
            if not (isinstance(value, tuple) and value[0] == "__node__"):
                _fail("the output must name one node")
            output = graph.output(resolve(value))
            made.append(None)
        else:
            _fail(f"node {at}: unknown op {op!r}")
        produced.append(op != "output")
    if output is None:
        _fail("the segment has no output node")
    extra = sorted(set(tensors) - used)
    if extra:
        _fail(f"unexpected tensors in the segment: {extra[:8]}")
    try:
        gm = fx.GraphModule(root, graph)
        gm.graph.lint()
    except Exception as exc:  # fx reports malformed graphs with several types
        raise WireFormatError(f"the segment graph is malformed: {exc}") from exc
    return gm.eval()


def decode_segment(data: bytes, expected_id: str | None = None) -> DecodedSegment:
    """Rebuilds the device segment of a container (v2, or v1 for old containers). Verifies
    the sha256 against ``expected_id`` when given and everything in the header; raises only
    :class:`WireFormatError`."""
    digest = hashlib.sha256(bytes(data)).hexdigest() if isinstance(data, (bytes, bytearray)) else ""
    if expected_id is not None and digest != expected_id:
        raise WireFormatError(f"segment hash mismatch: expected {expected_id}, got {digest}")
    try:
        _, arch = read_container(data)
        if arch.get("format") != SEGMENT_FORMAT:
            _fail(f"not a {SEGMENT_FORMAT} container")
        version = arch.get("version")
        _shape(arch.get("input_shape"), "input_shape")
        _shape(arch.get("output_shape"), "output_shape")
        if version == 1:
            module = segment_v1.decode(arch, _load_tensors(data))
        elif version == SEGMENT_VERSION:
            module = _build_graph(arch, _load_tensors(data))
        else:
            _fail(f"unsupported segment format version {version!r} (this decoder reads 1 and 2)")
    except WireFormatError:
        raise
    except Exception as exc:  # the last line of defence: never another type
        raise WireFormatError(f"malformed segment: {type(exc).__name__}: {exc}") from exc
    return DecodedSegment(module, arch, digest)
