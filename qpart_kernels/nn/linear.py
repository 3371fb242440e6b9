"""``QPartLinear``: a drop-in ``nn.Linear`` whose weight is stored packed at 1..8 bits."""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..ops import checks


class QPartLinear(nn.Module):
    """Linear layer with a densely packed low-bit weight, running on ``torch.ops.qpart.linear``.

    The packed weight, fp16 scales, uint8 zero points and the fp32 bias are buffers, so
    ``state_dict()`` holds exactly the payload that is shipped to a device.

    ``act_int8=True`` (opt-in, changes the numerics) runs the integer path: each input row is
    quantized to int8 per call and multiplied with the codes in integer arithmetic
    (``qpart_kernels.linear(..., int8_activations=True)``). It is not part of the state dict.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int | None = None,
        bias: bool = True,
        device: torch.device | str | None = None,
        act_int8: bool = False,
    ) -> None:
        super().__init__()
        checks.check_bits("QPartLinear", bits)
        if in_features <= 0 or out_features <= 0:
            raise ValueError(
                f"QPartLinear: in_features and out_features must be positive, got "
                f"{in_features} and {out_features}"
            )
        group_size = in_features if group_size is None else group_size
        checks.check_group_size("QPartLinear", in_features, group_size)
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        self.group_size = group_size
        self.act_int8 = bool(act_int8)
        groups = in_features // group_size
        row_bytes = checks.packed_row_bytes(in_features, bits)
        self.register_buffer(
            "packed_weight", torch.zeros(out_features, row_bytes, dtype=torch.uint8, device=device)
        )
        self.register_buffer(
            "scales", torch.zeros(out_features, groups, dtype=torch.float16, device=device)
        )
        self.register_buffer(
            "zeros", torch.zeros(out_features, groups, dtype=torch.uint8, device=device)
        )
        bias_tensor = torch.zeros(out_features, device=device) if bias else None
        self.register_buffer("bias", bias_tensor)

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        bits: int,
        group_size: int | None = None,
        act_int8: bool = False,
    ) -> QPartLinear:
        """Quantizes a float ``nn.Linear`` (weights per output row or per group of inputs)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(
                f"QPartLinear.from_float expects nn.Linear, got {type(linear).__name__}"
            )
        weight = linear.weight.detach()
        module = cls(
            linear.in_features,
            linear.out_features,
            bits,
            group_size,
            bias=linear.bias is not None,
            device=weight.device,
            act_int8=act_int8,
        )
        packed, scales, zeros = ops.quantize_weight(weight, bits, module.group_size)
        module.packed_weight.copy_(packed)
        module.scales.copy_(scales)
        module.zeros.copy_(zeros)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach().to(torch.float32))
        return module

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.linear(
            input,
            self.packed_weight,
            self.scales,
            self.zeros,
            self.bits,
            self.bias,
            self.in_features,
            int8_activations=self.act_int8,
        )

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 ``(out_features, in_features)`` weight this layer computes with."""
        return ops.dequantize_weight(
            self.packed_weight, self.scales, self.zeros, self.bits, self.in_features
        )

    def payload_bytes(self) -> int:
        """Exact bytes of packed weight + scales + zero points + bias."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def extra_repr(self) -> str:
        grouping = (
            "per-channel"
            if self.group_size == self.in_features
            else f"group_size={self.group_size}"
        )
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits={self.bits}, {grouping}, bias={self.bias is not None}"
            + (", act_int8=True" if self.act_int8 else "")
        )
