"""Percentile quantization and QwT on an mmdet detector with a ResNet / ResNetV1d / ResNeXt backbone.

The backbone gets the classification suite's ResNet method (:mod:`classification.adapters.resnet`,
the reference's ``qwt_resnet_group_conv_only_percentile.py``), the rest of the detector the plan
of the Swin detectors (:mod:`detection.quantize`):

- backbone: the uniform percentile quantizer on every Conv2d, weights per output channel and
  inputs per tensor; the stem's first conv (the one that sees the image: ``conv1``, or
  ``stem.0`` of a deep stem) at 8 bits, weights and inputs; every other backbone conv with n-bit
  weights and
    ``percentile``         8-bit inputs (the released ResNet code does this even at "A4"),
    ``percentile_strict``  inputs at the requested a_bits;
  BatchNorm is not folded; no reparameterization.
- neck, RPN, RoI / dense heads: every Conv2d and Linear with n-bit weights per output channel and
  n-bit inputs per tensor (``ConvTranspose2d`` stays in float), as for the Swin detectors.

Calibration: one quantized pass of the first test-loader image initialises every quantizer
(percentile-by-MSE ranges); quantizers it does not reach initialise on the first evaluation data.

QwT (``percentile+qwt``): grouped-conv compensation (qwt_core ``ConvCompensation``: kernel
``kernel_size``, groups = C_in // ``factor``, stride from the block) per BasicBlock / Bottleneck
of ``layer1..layer4``, fitted on Y = FP(X) - Q(X) with block 0's input the quantized stem ->
maxpool, as in classification. The compensation is kept in fp32 at evaluation (the detection
setting of the reference; classification uses fp16).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from mmdet.models.backbones import ResNet, ResNetV1d, ResNeXt
from torch import Tensor, nn

from qwt_core import BlockStep, LayerSpec, QuantConv2d, QuantLinear, calibrate_repq, quantize_layers
from runtime.methods import EDGE_BITS, REFERENCE_CONV_A_BITS

RESNETS = (ResNet, ResNetV1d, ResNeXt)
METHODS = ("percentile", "percentile_strict")
TOTAL_STRIDE = 32  # stem 4 x three stride-2 stages: QwT images must be a multiple of it


def find_resnet(model: nn.Module) -> tuple[str, ResNet]:
    """(qualified name, module) of the detector's ResNet / ResNetV1d / ResNeXt backbone (exact classes)."""
    for name, m in model.named_modules():
        if type(m) in RESNETS:
            return name, m
    raise TypeError("the detector has no mmdet ResNet / ResNetV1d / ResNeXt backbone")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def stem_conv(prefix: str, backbone: ResNet) -> str:
    """The conv that sees the image: ``conv1``, or the first conv of a deep stem."""
    return _join(prefix, "stem.0" if backbone.deep_stem else "conv1")


def build_plan(model: nn.Module, w_bits: int, a_bits: int, method: str) -> dict[str, LayerSpec]:
    """LayerSpec for every Conv2d / Linear of the detector (see module doc)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} for a ResNet backbone; choose from {', '.join(METHODS)}")
    prefix, backbone = find_resnet(model)
    first = stem_conv(prefix, backbone)
    conv_a = REFERENCE_CONV_A_BITS if method == "percentile" else a_bits
    plan: dict[str, LayerSpec] = {}
    for name, m in model.named_modules():
        if isinstance(m, (QuantConv2d, QuantLinear)):
            raise ValueError(f"{name} is already quantized: build a fresh model")
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        in_backbone = name.startswith(prefix + ".") if prefix else True
        if name == first:
            plan[name] = LayerSpec(EDGE_BITS, EDGE_BITS)
        elif in_backbone:
            plan[name] = LayerSpec(w_bits, conv_a)
        else:
            plan[name] = LayerSpec(w_bits, a_bits)
    return plan


def quantize_detector(model: nn.Module, w_bits: int, a_bits: int, method: str) -> dict[str, LayerSpec]:
    """Fake-quantize the whole detector in place (quantizers start disabled and uncalibrated).
    Returns the layer plan."""
    plan = build_plan(model, w_bits, a_bits, method)
    quantize_layers(model, plan)
    return plan


@torch.no_grad()
def calibrate_detector(model: nn.Module, batch: object, forward: Callable[[nn.Module, object], object],
                       unreached: Literal["lazy", "error"] = "lazy") -> list[str]:
    """One quantized pass on ``batch``: every quantizer it reaches takes its percentile range
    (qwt_core.calibrate_repq without reparameterization pairs). Returns the unreached quantizers."""
    return calibrate_repq(model, batch, (), forward=forward, unreached=unreached)  # type: ignore[arg-type]


class _Root(nn.Module):
    """Holds a bare backbone so that block names are qualified as in a detector (``backbone.``)."""

    def __init__(self, backbone: ResNet) -> None:
        super().__init__()
        self.backbone = backbone


class ResNetBackboneAdapter:
    """qwt_core BlockwiseAdapter over every residual block of the detector's ResNet: ``embed`` is
    the stem (conv1 -> norm1 -> relu, or the deep stem) and the max-pool, (B, 3, H, W) ->
    (B, C0, H/4, W/4); the steps are ``<backbone>.layerI.J`` with grouped-conv compensation."""

    def __init__(self, model: nn.Module) -> None:
        if type(model) in RESNETS:
            model = _Root(model)
        prefix, backbone = find_resnet(model)
        self.model: nn.Module = model
        self.backbone: ResNet = backbone
        self.prefix = prefix + "." if prefix else ""

    def embed(self, images: Tensor) -> Tensor:
        bb = self.backbone
        if images.shape[-1] % TOTAL_STRIDE or images.shape[-2] % TOTAL_STRIDE:
            raise ValueError(f"QwT images for a ResNet backbone must be a multiple of {TOTAL_STRIDE} "
                             f"pixels (grouped-conv strides), got {tuple(images.shape[-2:])}")
        x = bb.stem(images) if bb.deep_stem else bb.relu(bb.norm1(bb.conv1(images)))
        return bb.maxpool(x)  # (B, C0, H/4, W/4)

    def steps(self) -> Sequence[BlockStep]:
        bb = self.backbone
        return [BlockStep(f"{self.prefix}{layer}.{j}", kind="conv")
                for layer in bb.res_layers for j in range(len(getattr(bb, layer)))]
