"""Wire formats of the serving system (byte layouts in docs/SERVING.md).

* **Segment**: the quantized device segment as a safetensors container with the graph as
  JSON data (format v2, :mod:`.segment`; re-exported here).
* **Cut activation**: a 32-byte header then, per sample, one fp16 scale, one uint8 zero and
  the packed codes (``quantize_activation`` per sample) - so the body is exactly
  ``32 + batch * D_a`` bytes, ``D_a`` being the planner's activation payload.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch

import qpart_kernels

from ..core.split import quantize_activation_rows
from .errors import WireFormatError
from .segment import (
    DecodedSegment,
    EncodedSegment,
    decode_segment,
    encode_segment,
)

__all__ = [
    "ACTIVATION_HEADER_BYTES",
    "DecodedSegment",
    "EncodedSegment",
    "WireFormatError",
    "activation_body_bytes",
    "decode_activation",
    "decode_segment",
    "encode_activation",
    "encode_segment",
    "parse_activation_header",
]

ACTIVATION_MAGIC = b"QPAC"
ACTIVATION_VERSION = 1
#: ``<4s B B B B 8s 4I``: magic, version, bits, ndim, reserved, plan id, shape[4].
ACTIVATION_HEADER = struct.Struct("<4sBBBB8s4I")
ACTIVATION_HEADER_BYTES = ACTIVATION_HEADER.size  # 32
MAX_NDIM = 4
PLAN_ID_BYTES = 8


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
