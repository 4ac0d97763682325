"""Swap float layers for fake-quantized ones according to a per-layer plan."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .layers import QuantConv2d, QuantLinear
from .quantizers import check_bits


@dataclass(frozen=True)
class LayerSpec:
    """How one Linear / Conv2d is quantized."""

    w_bits: int  # weights: per output channel
    a_bits: int  # inputs: per tensor (per channel until reparameterized if act_channel_wise)
    act_channel_wise: bool = False  # RepQ-ViT's post-LayerNorm inputs (qkv, fc1, reduction)

    def __post_init__(self) -> None:
        check_bits(self.w_bits)
        check_bits(self.a_bits)


def quantize_layers(model: nn.Module, plan: dict[str, LayerSpec]) -> nn.Module:
    """Replace each named Linear / Conv2d of ``plan`` by its quantized twin, in place."""
    for name, spec in plan.items():
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear):
            new: nn.Module = QuantLinear(module, spec.w_bits, spec.a_bits, spec.act_channel_wise)
        elif isinstance(module, nn.Conv2d):
            if spec.act_channel_wise:
                raise ValueError(f"{name}: channel-wise inputs are only defined for Linear layers")
            new = QuantConv2d(module, spec.w_bits, spec.a_bits)
        else:
            raise TypeError(f"{name}: cannot quantize a {type(module).__name__} (Linear/Conv2d only)")
        model.set_submodule(name, new)
    return model
