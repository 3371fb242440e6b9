"""``QPartConv2d``: a drop-in ``nn.Conv2d`` whose weight is stored packed at 1..8 bits."""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..ops import checks

IntPair = int | tuple[int, int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"QPartConv2d: {name} must be an int or a pair, got {value!r}")
    return pair


def _explicit_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Turns ``nn.Conv2d`` padding ('valid', 'same' or ints) into symmetric ints."""
    if conv.padding_mode != "zeros":
        raise ValueError(
            f"QPartConv2d: only padding_mode='zeros' is supported, got {conv.padding_mode!r}"
        )
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        pads = []
        for k, d in zip(conv.kernel_size, conv.dilation):
            total = d * (k - 1)
            if total % 2:
                raise ValueError(
                    "QPartConv2d: padding='same' needs asymmetric padding for kernel "
                    f"{conv.kernel_size} with dilation {conv.dilation}; not supported"
                )
            pads.append(total // 2)
        return (pads[0], pads[1])
    return _pair(conv.padding, "padding")


class QPartConv2d(nn.Module):
    """2-D convolution with a densely packed low-bit weight, on ``torch.ops.qpart.conv2d``.

    The weight ``(out, in/groups, kh, kw)`` is packed as ``out`` rows of
    ``in/groups * kh * kw`` codes; groups for quantization run along that row.

    ``act_int8=True`` (opt-in, changes the numerics) runs the integer path: each input image is
    quantized to int8 per call and convolved with the codes in integer arithmetic
    (``qpart_kernels.conv2d(..., int8_activations=True)``). It is not part of the state dict.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        bits: int,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        group_size: int | None = None,
        device: torch.device | str | None = None,
        act_int8: bool = False,
    ) -> None:
        super().__init__()
        checks.check_bits("QPartConv2d", bits)
        if in_channels <= 0 or out_channels <= 0 or groups <= 0:
            raise ValueError("QPartConv2d: channels and groups must be positive")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"QPartConv2d: groups {groups} must divide in_channels {in_channels} and "
                f"out_channels {out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        self.bits = bits
        self.act_int8 = bool(act_int8)
        k = self.reduction_size
        self.group_size = k if group_size is None else group_size
        checks.check_group_size("QPartConv2d", k, self.group_size)
        n_groups = k // self.group_size
        self.register_buffer(
            "packed_weight",
            torch.zeros(
                out_channels, checks.packed_row_bytes(k, bits), dtype=torch.uint8, device=device
            ),
        )
        self.register_buffer(
            "scales", torch.zeros(out_channels, n_groups, dtype=torch.float16, device=device)
        )
        self.register_buffer(
            "zeros", torch.zeros(out_channels, n_groups, dtype=torch.uint8, device=device)
        )
        self.register_buffer("bias", torch.zeros(out_channels, device=device) if bias else None)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """Shape ``(out, in/groups, kh, kw)`` of the float weight this layer represents."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def reduction_size(self) -> int:
        """Codes per packed weight row: ``in_channels / groups * kh * kw``."""
        return self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]

    @classmethod
    def from_float(
        cls,
        conv: nn.Conv2d,
        bits: int,
        group_size: int | None = None,
        act_int8: bool = False,
    ) -> QPartConv2d:
        """Quantizes a float ``nn.Conv2d`` (zero padding; 'same' and 'valid' are accepted)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"QPartConv2d.from_float expects nn.Conv2d, got {type(conv).__name__}")
        weight = conv.weight.detach()
        module = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            bits,
            stride=conv.stride,
            padding=_explicit_padding(conv),
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            group_size=group_size,
            device=weight.device,
            act_int8=act_int8,
        )
        packed, scales, zeros = ops.quantize_weight(
            weight.reshape(conv.out_channels, -1), bits, module.group_size
        )
        module.packed_weight.copy_(packed)
        module.scales.copy_(scales)
        module.zeros.copy_(zeros)
        if conv.bias is not None:
            module.bias.copy_(conv.bias.detach().to(torch.float32))
        return module

    def forward(
        self, input: torch.Tensor, residual: torch.Tensor | float | None = None, relu: bool = False
    ) -> torch.Tensor:
        """The convolution; then ``+ residual`` and ReLU if asked: the values of a separate
        ``+`` and ``torch.relu``. A residual of the output's shape and dtype is fused into the
        kernel's tiles; any other is added after the convolution, broadcast and promoted as
        ``+`` does."""
        unbatched = input.dim() == 3
        x = input.unsqueeze(0) if unbatched else input
        if residual is not None:
            if unbatched and isinstance(residual, torch.Tensor):
                residual = residual.unsqueeze(0)
            if not self._fusable_residual(x, residual):
                out = self.forward(x) + residual
                out = torch.relu(out) if relu else out
                return out.squeeze(0) if unbatched else out
        out = ops.conv2d(
            x,
            self.packed_weight,
            self.scales,
            self.zeros,
            self.bits,
            self.weight_shape,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            int8_activations=self.act_int8,
            residual=residual,
            relu=relu,
        )
        return out.squeeze(0) if unbatched else out

    def _fusable_residual(self, x: torch.Tensor, residual) -> bool:
        if not isinstance(residual, torch.Tensor):
            return False  # a number: added after the convolution
        if residual.dtype != x.dtype or residual.device != x.device or x.dim() != 4:
            return False
        ho, wo = checks.conv2d_output_hw(
            x.shape[2], x.shape[3], self.kernel_size, self.stride, self.padding, self.dilation
        )
        return tuple(residual.shape) == (x.shape[0], self.out_channels, ho, wo)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 ``(out, in/groups, kh, kw)`` weight this layer computes with."""
        flat = ops.dequantize_weight(
            self.packed_weight, self.scales, self.zeros, self.bits, self.reduction_size
        )
        return flat.reshape(self.weight_shape)

    def payload_bytes(self) -> int:
        """Exact bytes of packed weight + scales + zero points + bias."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def extra_repr(self) -> str:
        k = self.reduction_size
        grouping = "per-channel" if self.group_size == k else f"group_size={self.group_size}"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bits={self.bits}, {grouping}, bias={self.bias is not None}"
            + (", act_int8=True" if self.act_int8 else "")
        )
