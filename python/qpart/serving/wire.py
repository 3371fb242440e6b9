"""Wire formats of the serving system (byte layouts in docs/SERVING.md).

* **Segment**: the quantized device segment as a safetensors container. Tensors: every
  module's buffers/parameters under ``"<index>.<name>"`` (for ``QPartLinear`` /
  ``QPartConv2d`` exactly ``packed_weight``, ``scales``, ``zeros``, ``bias`` - the planner's
  ``D_w``); metadata ``{"qpart": <architecture JSON>}``. The device rebuilds an
  ``nn.Sequential`` from that JSON - no pickle anywhere. Segment id = sha256 of the bytes.
* **Cut activation**: a 32-byte header then, per sample, one fp16 scale, one uint8 zero and
  the packed codes (``quantize_activation`` per sample) - so the body is exactly
  ``32 + batch * D_a`` bytes, ``D_a`` being the planner's activation payload.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

import qpart_kernels

from ..core.split import quantize_activation_rows

SEGMENT_FORMAT = "qpart-segment"
SEGMENT_VERSION = 1
METADATA_KEY = "qpart"

ACTIVATION_MAGIC = b"QPAC"
ACTIVATION_VERSION = 1
#: ``<4s B B B B 8s 4I``: magic, version, bits, ndim, reserved, plan id, shape[4].
ACTIVATION_HEADER = struct.Struct("<4sBBBB8s4I")
ACTIVATION_HEADER_BYTES = ACTIVATION_HEADER.size  # 32
MAX_NDIM = 4
PLAN_ID_BYTES = 8


class WireFormatError(ValueError):
    """Bytes that do not follow the wire format (message says what is wrong)."""


# ----------------------------------------------------------------------------- segments

#: Supported module types -> (constructor, config attributes). QPart modules are rebuilt
#: from their config; the tensors are then loaded and checked for shape and dtype.
_SIMPLE: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
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
_QPART = ("QPartLinear", "QPartConv2d")


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise WireFormatError(f"cannot describe config value {value!r} in JSON")


def _module_entry(name: str, module: nn.Module) -> dict:
    kind = type(module).__name__
    if kind not in _SIMPLE or type(module) is not _SIMPLE[kind][0]:
        raise WireFormatError(
            f"module {name!r} ({type(module).__module__}.{kind}) is not supported in a device "
            f"segment; supported: {', '.join(sorted(_SIMPLE))}"
        )
    if isinstance(module, nn.MaxPool2d) and module.return_indices:
        raise WireFormatError(f"module {name!r}: MaxPool2d(return_indices=True) is not supported")
    config = {attr: _jsonable(getattr(module, attr)) for attr in _SIMPLE[kind][1]}
    if kind in _QPART:
        config["bias"] = module.bias is not None
    return {"name": name, "type": kind, "config": config}


def chain_modules(gm: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of a segment that is a chain ``x -> m1 -> m2 -> ... -> out``, in order.
    Accepts an ``nn.Sequential`` or an fx ``GraphModule``; raises :class:`WireFormatError`
    naming the offending node otherwise."""
    if isinstance(gm, nn.Sequential):
        return list(gm.named_children())
    if not isinstance(gm, fx.GraphModule):
        raise WireFormatError(
            f"expected an nn.Sequential or fx.GraphModule, got {type(gm).__name__}"
        )
    modules = dict(gm.named_modules())
    chain: list[tuple[str, nn.Module]] = []
    prev: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                raise WireFormatError("a device segment takes exactly one input")
            prev = node
        elif node.op == "call_module":
            if node.args != (prev,) or node.kwargs:
                raise WireFormatError(
                    f"device segment is not a chain: node {node.name!r} does "
                    f"not take only the previous node's output"
                )
            chain.append((str(node.target), modules[node.target]))
            prev = node
        elif node.op == "output":
            if node.args[0] is not prev:
                raise WireFormatError(
                    "device segment is not a chain: its output is not the last module's"
                )
        else:
            raise WireFormatError(
                f"device segment is not a chain of supported modules: node {node.name!r} is a "
                f"{node.op} ({node.target}); only module calls can be shipped"
            )
    return chain


@dataclass(frozen=True)
class EncodedSegment:
    """A serialised segment: container bytes, its sha256 (segment id), the bytes of the
    tensors (``tensor_bytes``; QPart buffers only in ``qpart_tensor_bytes`` = ``D_w``)."""

    data: bytes
    segment_id: str
    tensor_bytes: int
    qpart_tensor_bytes: int

    @property
    def overhead_bytes(self) -> int:
        """Container bytes beyond the tensors (length prefix + JSON header)."""
        return len(self.data) - self.tensor_bytes


def encode_segment(
    segment: nn.Module,
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    extra: dict | None = None,
) -> EncodedSegment:
    """Serialises a chain segment (see :func:`chain_modules`) as a safetensors container.

    ``input_shape`` / ``output_shape`` are per sample; ``extra`` (JSON-serialisable) is
    stored in the architecture description too (e.g. model id, partition point)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    layers = []
    qpart_bytes = 0
    for i, (name, module) in enumerate(chain_modules(segment)):
        entry = _module_entry(name, module)
        layers.append(entry)
        for tname, t in module.state_dict().items():
            t = t.detach().cpu().contiguous()
            tensors[f"{i}.{tname}"] = t
            if entry["type"] in _QPART:
                qpart_bytes += t.numel() * t.element_size()
    arch = {
        "format": SEGMENT_FORMAT,
        "version": SEGMENT_VERSION,
        "layers": layers,
        "input_shape": list(input_shape),
        "output_shape": list(output_shape),
        **({"extra": extra} if extra else {}),
    }
    data = save(tensors, metadata={METADATA_KEY: json.dumps(arch, sort_keys=True)})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    return EncodedSegment(data, hashlib.sha256(data).hexdigest(), total, qpart_bytes)


@dataclass
class DecodedSegment:
    """A rebuilt device segment and its architecture description."""

    module: nn.Sequential
    architecture: dict
    segment_id: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.architecture["input_shape"])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.architecture["output_shape"])


def _config_value(value):
    return tuple(value) if isinstance(value, list) else value


def decode_segment(data: bytes, expected_id: str | None = None) -> DecodedSegment:
    """Rebuilds the ``nn.Sequential`` of a segment container (no pickle: safetensors tensors
    + JSON). Verifies the sha256 against ``expected_id`` when given and every tensor's
    name, shape and dtype against the rebuilt modules; raises :class:`WireFormatError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    digest = hashlib.sha256(data).hexdigest()
    if expected_id is not None and digest != expected_id:
        raise WireFormatError(f"segment hash mismatch: expected {expected_id}, got {digest}")
    try:
        tensors = load(data)
        header_len = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, struct.error) as exc:
        raise WireFormatError(f"not a safetensors container: {exc}") from exc
    try:
        arch = json.loads(header.get("__metadata__", {})[METADATA_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        raise WireFormatError("segment container has no qpart architecture metadata") from exc
    if arch.get("format") != SEGMENT_FORMAT or arch.get("version") != SEGMENT_VERSION:
        raise WireFormatError(f"not a {SEGMENT_FORMAT} v{SEGMENT_VERSION} container")
    children: list[nn.Module] = []
    used: set[str] = set()
    for i, entry in enumerate(arch["layers"]):
        kind = entry.get("type")
        if kind not in _SIMPLE:
            raise WireFormatError(f"layer {i}: unsupported module type {kind!r}")
        cls, attrs = _SIMPLE[kind]
        config = {k: _config_value(v) for k, v in entry.get("config", {}).items()}
        if set(config) - set(attrs) - {"bias"}:
            raise WireFormatError(
                f"layer {i} ({kind}): unexpected config keys "
                f"{sorted(set(config) - set(attrs) - {'bias'})}"
            )
        try:
            module = cls(**config)
        except (TypeError, ValueError) as exc:
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
        module.load_state_dict(state, strict=True)
        children.append(module.eval())
    extra = sorted(set(tensors) - used)
    if extra:
        raise WireFormatError(f"unexpected tensors in the segment: {extra}")
    return DecodedSegment(nn.Sequential(*children).eval(), arch, digest)


# ----------------------------------------------------------------------------- activations


def activation_row_bytes(elems: int, bits: int) -> int:
    """Packed bytes of one sample's cut activation: ``ceil(A * b / 8)``."""
    return math.ceil(elems * bits / 8)


def activation_body_bytes(sample_shape: Sequence[int], bits: int, batch: int) -> int:
    """Exact body size: ``32 + batch * (ceil(A b / 8) + 3)``."""
    return ACTIVATION_HEADER_BYTES + batch * (
        activation_row_bytes(math.prod(sample_shape), bits) + 3
    )


def plan_id_bytes(plan_id: str) -> bytes:
    """The 8 raw bytes of a 16-hex-digit plan id."""
    try:
        raw = bytes.fromhex(plan_id)
    except ValueError:
        raw = b""
    if len(raw) != PLAN_ID_BYTES:
        raise WireFormatError(f"plan id must be {2 * PLAN_ID_BYTES} hex digits, got {plan_id!r}")
    return raw


def encode_activation(x: torch.Tensor, bits: int, plan_id: str) -> bytes:
    """The infer body for a batch ``x`` (batch first) at ``bits``: header, then fp16 scales
    (``batch`` x 2 bytes), uint8 zeros (``batch``), packed codes (``batch`` rows)."""
    if x.dim() < 1 or x.dim() > MAX_NDIM or x.shape[0] < 1:
        raise WireFormatError(
            f"activation must have 1..{MAX_NDIM} dims and batch >= 1, got shape {tuple(x.shape)}"
        )
    _, q = quantize_activation_rows(x, bits)
    shape = list(x.shape) + [0] * (MAX_NDIM - x.dim())
    header = ACTIVATION_HEADER.pack(
        ACTIVATION_MAGIC, ACTIVATION_VERSION, bits, x.dim(), 0, plan_id_bytes(plan_id), *shape
    )
    return b"".join(
        [
            header,
            q.scales.contiguous().view(torch.uint8).numpy().tobytes(),
            q.zeros.contiguous().numpy().tobytes(),
            q.packed.contiguous().numpy().tobytes(),
        ]
    )


@dataclass(frozen=True)
class ActivationHeader:
    """The parsed 32-byte header."""

    bits: int
    shape: tuple[int, ...]
    plan_id: str


def parse_activation_header(body: bytes) -> ActivationHeader:
    """Parses and checks the header of an infer body; raises :class:`WireFormatError`."""
    if len(body) < ACTIVATION_HEADER_BYTES:
        raise WireFormatError(
            f"activation body is {len(body)} bytes, shorter than the "
            f"{ACTIVATION_HEADER_BYTES}-byte header"
        )
    magic, version, bits, ndim, reserved, pid, *shape = ACTIVATION_HEADER.unpack_from(body)
    if magic != ACTIVATION_MAGIC:
        raise WireFormatError(f"bad magic {magic!r}: not a qpart activation body")
    if version != ACTIVATION_VERSION:
        raise WireFormatError(f"unsupported activation format version {version}")
    if not 1 <= bits <= 8:
        raise WireFormatError(f"bits must be 1..8, got {bits}")
    if reserved != 0:
        raise WireFormatError(f"reserved header byte must be 0, got {reserved}")
    if not 1 <= ndim <= MAX_NDIM:
        raise WireFormatError(f"ndim must be 1..{MAX_NDIM}, got {ndim}")
    if any(d == 0 for d in shape[:ndim]) or any(shape[ndim:]):
        raise WireFormatError(f"bad shape {shape[:ndim]} (zero dimension or unused dims set)")
    return ActivationHeader(bits, tuple(shape[:ndim]), pid.hex())


def decode_activation(
    body: bytes,
    sample_shape: Sequence[int] | None = None,
    bits: int | None = None,
    max_batch: int | None = None,
) -> tuple[ActivationHeader, torch.Tensor]:
    """Parses an infer body into its header and the dequantized float32 tensor. Checks
    the per-sample shape / width against the plan's when given, the batch bound, and that
    the body has exactly the size the header implies (truncated / padded bodies fail)."""
    head = parse_activation_header(body)
    if sample_shape is not None and tuple(head.shape[1:]) != tuple(sample_shape):
        raise WireFormatError(
            f"activation shape {list(head.shape)} does not match the plan's "
            f"cut shape [batch, {', '.join(map(str, sample_shape))}]"
        )
    if bits is not None and head.bits != bits:
        raise WireFormatError(f"activation is at {head.bits} bits, the plan says {bits}")
    batch = head.shape[0]
    if max_batch is not None and batch > max_batch:
        raise WireFormatError(f"batch {batch} exceeds the limit of {max_batch}")
    elems = math.prod(head.shape[1:])
    row = activation_row_bytes(elems, head.bits)
    expected = ACTIVATION_HEADER_BYTES + batch * (row + 3)
    if len(body) != expected:
        raise WireFormatError(
            f"activation body is {len(body)} bytes; shape {list(head.shape)} "
            f"at {head.bits} bits needs exactly {expected}"
        )
    buf = torch.frombuffer(bytearray(body[ACTIVATION_HEADER_BYTES:]), dtype=torch.uint8)
    scales = buf[: 2 * batch].view(torch.float16).reshape(batch, 1)
    zeros = buf[2 * batch : 3 * batch].reshape(batch, 1)
    packed = buf[3 * batch :].reshape(batch, row)
    if not torch.isfinite(scales).all():
        raise WireFormatError("activation scales must be finite")
    if bool((scales.view(torch.int16) < 0).any()):  # the sign bit: -0.0 too
        raise WireFormatError("activation scales must be non-negative")
    if bool((zeros > (1 << head.bits) - 1).any()):
        raise WireFormatError(f"activation zero points exceed {(1 << head.bits) - 1}")
    x = qpart_kernels.dequantize_activation(
        packed, scales, zeros, head.bits, (batch, elems), torch.float32
    )
    return head, x.reshape(head.shape)
