"""torchvision ResNet (BasicBlock / Bottleneck), the "Percentile" rows of the QwT table.

Quantization: the uniform percentile quantizer on every Conv2d and the fc (weights per output
channel, inputs per tensor); ``conv1`` and ``fc`` at 8 bits (weights and inputs); BatchNorm is not
folded; no reparameterization (no LayerNorm).
- ``percentile`` (reference, default): every other conv has n-bit weights and **8-bit inputs**, as
  the released code does even at "A4";
- ``percentile_strict``: the other convs' inputs at the requested a_bits.

QwT walks every block of layer1..layer4 with grouped-conv compensation (kind 'conv'); block 0's
input is the quantized stem conv1 -> bn1 -> relu -> maxpool.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.resnet import ResNet

from qwt_core import BlockStep, LayerSpec
from qwt_core.native.maxpool import max_pool2d
from runtime.methods import EDGE_BITS, REFERENCE_CONV_A_BITS

from .base import Blockwise, FamilyAdapter


def _check(model: nn.Module) -> ResNet:
    if not isinstance(model, ResNet):
        raise TypeError(f"the resnet adapter needs a torchvision ResNet, got {type(model).__name__}")
    return model


class ResNetAdapter(FamilyAdapter):
    family = "resnet"
    methods = ("percentile", "percentile_strict")
    default_methods = ("fp", "percentile", "percentile+qwt")

    def plan(self, model: nn.Module, w_bits: int, a_bits: int, method: str) -> dict[str, LayerSpec]:
        _check(model)
        conv_a = REFERENCE_CONV_A_BITS if method == "percentile" else a_bits
        plan: dict[str, LayerSpec] = {}
        for name, m in model.named_modules():
            if name in ("conv1", "fc"):
                plan[name] = LayerSpec(EDGE_BITS, EDGE_BITS)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                plan[name] = LayerSpec(w_bits, conv_a)
        return plan

    def blockwise(self, model: nn.Module) -> Blockwise:
        net = _check(model)

        def embed(images: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 64, H/4, W/4)
            # (the stem's pool through the CPU kernel where it applies: the same bits, no index tensor)
            return max_pool2d(net.maxpool, net.relu(net.bn1(net.conv1(images))))

        steps = [BlockStep(f"layer{i}.{j}", kind="conv")
                 for i in range(1, 5) for j in range(len(getattr(net, f"layer{i}")))]
        return Blockwise(net, embed, steps)

    @torch.no_grad()
    def features(self, model: nn.Module, images: Tensor) -> Tensor:
        return self.blockwise(model).run(images)  # (B, C, H', W') output of layer4

    def qwt_kind(self) -> str:
        return "conv"
