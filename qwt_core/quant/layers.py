"""Fake-quantized layers. Each wraps the parameters of an existing float layer (no copy)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .quantizers import LogSqrt2Quantizer, Quantizer, UniformQuantizer


class _BiasOnLoad:
    """Create a missing bias when a state dict carries one (RepQ-ViT adds biases)."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = prefix + "bias"
        if key in state_dict and getattr(self, "bias", None) is None:
            self.bias = nn.Parameter(torch.empty_like(state_dict[key], device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]


class QuantLinear(_BiasOnLoad, nn.Linear):
    """y = Q_a(x) @ Q_w(W)^T + b; weights per output channel, inputs per tensor or per channel."""

    def __init__(self, linear: nn.Linear, w_bits: int, a_bits: int, act_channel_wise: bool = False) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_quantizer = UniformQuantizer(w_bits, channel_dim=0)
        self.input_quantizer = UniformQuantizer(a_bits, channel_dim=-1 if act_channel_wise else None)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


class QuantConv2d(_BiasOnLoad, nn.Conv2d):
    """Conv2d with per-output-channel weight quantization and per-tensor input quantization."""

    def __init__(self, conv: nn.Conv2d, w_bits: int, a_bits: int) -> None:
        nn.Module.__init__(self)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "groups", "padding_mode", "transposed", "output_padding",
                     "_reversed_padding_repeated_twice"):
            setattr(self, attr, getattr(conv, attr))
        self.weight = conv.weight
        self.bias = conv.bias
        self.weight_quantizer = UniformQuantizer(w_bits, channel_dim=0)
        self.input_quantizer = UniformQuantizer(a_bits, channel_dim=None)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


class QuantMatMul(nn.Module):
    """Q_a(a) @ Q_b(b). ``log_a=True`` gives ``a`` the log-sqrt(2) quantizer (attn @ v)."""

    def __init__(self, a_bits: int, log_a: bool = False) -> None:
        super().__init__()
        self.quantizer_a: Quantizer = LogSqrt2Quantizer(a_bits) if log_a else UniformQuantizer(a_bits)
        self.quantizer_b: Quantizer = UniformQuantizer(a_bits)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.quantizer_a(a) @ self.quantizer_b(b)


QUANT_LAYERS: tuple[type[nn.Module], ...] = (QuantLinear, QuantConv2d)


def describe(module: nn.Module) -> dict[str, Any]:
    """Bits of a quantized layer, for size reports."""
    if isinstance(module, QUANT_LAYERS):
        return {"w_bits": module.weight_quantizer.n_bits, "a_bits": module.input_quantizer.n_bits}
    return {}
