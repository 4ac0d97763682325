"""The demo's classifiers: the suite's real architectures (timm VisionTransformer, timm
SwinTransformer, torchvision ResNet), scaled down for 32x32 digits.

Each constructor builds the library's own class, so the suite's adapters (block walks, layer
plans, RepQ-ViT reparameterization pairs) see the same module names as on ImageNet. Checkpoints
are committed in fp16 under ``checkpoints/`` with a JSON card each (see ``train_cls.py``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .data import IMG_SIZE, MEAN, STD

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def demo_vit(num_classes: int = 10, **kw: Any) -> nn.Module:
    """DeiT-style timm VisionTransformer: 32x32 input, 8x8 patches (16 tokens + cls token), 12
    blocks, width 64, 4 heads, average-pooled patch tokens into the head; ~0.6 M parameters.

    Why 8x8 patches and average pooling: trained from scratch on 1197 images, a 12-block ViT with
    4x4 patches and the cls-token head stayed below 40 % test top-1 after 10 epochs (and costs
    4x the compute per image); 8x8 patches with average pooling reach ~88 % in 30 epochs."""
    from timm.models.vision_transformer import VisionTransformer

    cfg = dict(img_size=IMG_SIZE, patch_size=8, embed_dim=64, depth=12, num_heads=4, mlp_ratio=4.0,
               global_pool="avg", num_classes=num_classes)
    return VisionTransformer(**{**cfg, **kw})


def demo_swin(num_classes: int = 10, **kw: Any) -> nn.Module:
    """timm SwinTransformer: 32x32 input, 2x2 patches (16x16 tokens), window 4, three stages of
    depth 2 (16x16 -> 8x8 -> 4x4 tokens), widths 32/64/128; ~0.5 M parameters."""
    from timm.models.swin_transformer import SwinTransformer

    cfg = dict(img_size=IMG_SIZE, patch_size=2, window_size=4, embed_dim=32, depths=(2, 2, 2),
               num_heads=(2, 4, 8), mlp_ratio=4.0, num_classes=num_classes)
    return SwinTransformer(**{**cfg, **kw})


def demo_resnet(num_classes: int = 10, width: int = 16, layers: tuple[int, ...] = (2, 2, 2, 2)) -> nn.Module:
    """torchvision ResNet (BasicBlock, ResNet-18 layout) at 1/4 width: stages of 16/32/64/128
    channels, a 3x3 stride-1 stem for 32x32 inputs (max-pool kept); ~0.7 M parameters.

    torchvision's constructor fixes the stage widths at 64..512, so the instance is built by
    torchvision and its stem and stages are rebuilt with ``ResNet._make_layer`` at ``width``:
    still a ``torchvision.models.ResNet`` with the usual module names (conv1, bn1, layer1..4, fc).
    """
    from torchvision.models.resnet import BasicBlock, ResNet

    m = ResNet(BasicBlock, list(layers), num_classes=num_classes)
    m.inplanes = width
    m.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    m.layer1 = m._make_layer(BasicBlock, width, layers[0])
    m.layer2 = m._make_layer(BasicBlock, width * 2, layers[1], stride=2)
    m.layer3 = m._make_layer(BasicBlock, width * 4, layers[2], stride=2)
    m.layer4 = m._make_layer(BasicBlock, width * 8, layers[3], stride=2)
    m.fc = nn.Linear(width * 8, num_classes)
    for mod in m.modules():  # torchvision's init, re-applied to the rebuilt layers
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
    return m


@dataclass(frozen=True)
class DemoModel:
    """One demo classifier: registry name, constructor, the family the suite's adapters know,
    and the methods the demo runs on it."""

    name: str
    build: Callable[..., nn.Module]
    family: Literal["vit", "swin", "resnet"]
    methods: tuple[str, ...]
    train: dict[str, Any] = field(default_factory=dict)  # training hyper-parameters (train_cls.py)

    @property
    def checkpoint(self) -> Path:
        return CHECKPOINTS / f"{self.name}.pth"

    @property
    def card(self) -> Path:
        return CHECKPOINTS / f"{self.name}.json"


TRANSFORMER_METHODS = ("fp", "repq", "repq+qwt")
RESNET_METHODS = ("fp", "percentile", "percentile+qwt")

CLASSIFIERS: dict[str, DemoModel] = {m.name: m for m in (
    # the ResNet first: it is the distillation teacher of the two transformers
    DemoModel("demo_resnet", demo_resnet, "resnet", RESNET_METHODS,
              dict(epochs=20, lr=2e-3, weight_decay=5e-4, batch_size=64, warmup=1)),
    DemoModel("demo_vit", demo_vit, "vit", TRANSFORMER_METHODS,
              dict(epochs=80, lr=5e-4, weight_decay=0.05, batch_size=32, warmup=1,
                   teacher="demo_resnet", kd_alpha=0.5, kd_T=2.0)),
    DemoModel("demo_swin", demo_swin, "swin", TRANSFORMER_METHODS,
              dict(epochs=50, lr=2e-3, weight_decay=0.05, batch_size=64, warmup=3,
                   teacher="demo_resnet", kd_alpha=0.5, kd_T=2.0)),
)}

# Eval transform of every demo classifier: the PNGs are already 32x32, so resize/crop are identity.
TRANSFORM: dict[str, Any] = dict(img_size=IMG_SIZE, crop_pct=1.0, mean=MEAN, std=STD, interpolation="bicubic")


def load_fp16_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a committed fp16 state dict into ``model`` (cast back to the model's fp32)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    ref = model.state_dict()
    sd = {k: v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    return model


def register_classifiers() -> list[str]:
    """Register the demo classifiers with :mod:`classification.registry` (idempotent); returns
    their names. Each spec carries the demo's eval transform (32x32, crop_pct 1.0, digits
    mean/std) and the committed checkpoint's file name."""
    from classification import registry

    out = []
    for m in CLASSIFIERS.values():
        spec = registry.ModelSpec(
            name=m.name, family=m.family, arch=m.name, builder=m.build, kwargs={},
            checkpoint_name=m.checkpoint.name,
            checkpoint_source=f"committed: benchmarks/demo/checkpoints/{m.checkpoint.name} (make demo-train)",
            input_size=TRANSFORM["img_size"], crop_pct=TRANSFORM["crop_pct"],
            interpolation=TRANSFORM["interpolation"], mean=TRANSFORM["mean"], std=TRANSFORM["std"])
        registry.register(spec, overwrite=True)
        out.append(m.name)
    return out
