"""Registry of classification models: how to build each one and how to feed it.

A :class:`ModelSpec` names a constructor (timm or torchvision), its keyword arguments, the pinned
pretrained tag, the eval transform (input size, crop_pct, interpolation, mean/std) and the family
whose adapter quantizes it. Which models the suite benchmarks, their display names and the paper's
values are not kept here: they live in the experiment registry (``benchmarks/registry.py``), and
``tests/classification/test_models.py`` checks that every ImageNet model registered there has a
constructor here, of the same family. ``register(spec)`` adds a model (the embedded demo registers
its small digit models this way); ``get(name)`` raises :class:`UnknownModelError` listing the
registered names.

Pretrained tags: the reference used timm 0.4.12; each tag below is the timm 1.x tag whose weights
are the ones timm 0.4.12 served under the bare name, i.e. whose FP top-1 equals the paper's FP
column (see docs/classification.md for the per-model reasoning).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

Family = Literal["vit", "swin", "resnet"]


class UnknownModelError(KeyError):
    """A model name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """How to build and preprocess one model.

    ``builder`` is ``"timm"`` (``timm.create_model(arch, **kwargs)``), ``"torchvision"``
    (``torchvision.models.<arch>(weights=None, **kwargs)``) or a callable ``f(**kwargs) -> nn.Module``.
    """

    name: str  # registry / command-line name
    family: Family  # which adapter quantizes and walks it
    arch: str  # timm model name or torchvision constructor name
    builder: str | Callable[..., nn.Module] = "timm"
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor keyword arguments
    pretrained_tag: str | None = None  # timm pretrained tag pinned for the paper table
    checkpoint_name: str | None = None  # file looked up in the checkpoint folder (ResNet)
    checkpoint_source: str | None = None  # where that file comes from (for error messages)
    input_size: int = 224  # square eval crop
    crop_pct: float = 0.875  # resize shorter side to input_size / crop_pct, then center crop
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: deprecated, always None: the paper's FP top-1 lives in benchmarks/registry.py (``Model.paper``);
    #: kept until classification/pipeline.py stops copying it into the records' config
    paper_fp_top1: float | None = None
    tiny_kwargs: dict[str, Any] = field(default_factory=dict)  # small random-init variant (tests)
    tiny_input_size: int = 32  # input size of the tiny variant

    def __post_init__(self) -> None:
        if self.family not in ("vit", "swin", "resnet"):
            raise ValueError(f"{self.name}: family must be 'vit', 'swin' or 'resnet', got {self.family!r}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"{self.name}: crop_pct must be in (0, 1], got {self.crop_pct}")

    @property
    def timm_name(self) -> str:
        """``arch.tag`` when a tag is pinned, else ``arch``."""
        return f"{self.arch}.{self.pretrained_tag}" if self.pretrained_tag else self.arch

    def tiny(self) -> ModelSpec:
        """The same classes, small depth/width/image size (random init only)."""
        return dataclasses.replace(self, kwargs={**self.kwargs, **self.tiny_kwargs},
                                   input_size=self.tiny_input_size, crop_pct=1.0,
                                   pretrained_tag=None)

    def with_overrides(self, overrides: dict[str, Any]) -> ModelSpec:
        """Constructor kwargs overridden (``img_size`` also sets the eval input size)."""
        spec = dataclasses.replace(self, kwargs={**self.kwargs, **overrides})
        if "img_size" in overrides:
            spec = dataclasses.replace(spec, input_size=int(overrides["img_size"]))
        return spec


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, overwrite: bool = False) -> ModelSpec:
    """Add ``spec`` under ``spec.name``; re-registering a name needs ``overwrite=True``."""
    if spec.name in _REGISTRY and not overwrite and _REGISTRY[spec.name] != spec:
        raise ValueError(f"model {spec.name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """Registered names, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> ModelSpec:
    """The spec registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; valid models: {' '.join(names())}") from None


# --- constructors of the ImageNet models (which ones the suite benchmarks: benchmarks/registry.py) --
_VIT_TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
_SWIN_TINY = dict(img_size=32, patch_size=2, embed_dim=24, depths=(2, 2), num_heads=(2, 4),
                  window_size=4, num_classes=10)
_RESNET_TINY_BASIC = dict(layers=[1, 1, 1, 1], num_classes=10)  # tiny_input_size 64: layer4 is 2x2
_RESNET_TINY_BOTTLENECK = dict(layers=[1, 1, 1, 1], num_classes=10, width_per_group=16)

_VIT: dict[str, Any] = dict(family="vit", crop_pct=0.9, mean=INCEPTION_MEAN, std=INCEPTION_STD, tiny_kwargs=_VIT_TINY)
_DEIT: dict[str, Any] = dict(family="vit", crop_pct=0.875, tiny_kwargs=_VIT_TINY)
_SWIN: dict[str, Any] = dict(family="swin", crop_pct=0.9, tiny_kwargs=_SWIN_TINY)
_BRECQ = "BRECQ release v1.0 (https://github.com/yhhhli/BRECQ/releases/tag/v1.0)"

TABLE: tuple[ModelSpec, ...] = (
    ModelSpec("vit_small", arch="vit_small_patch16_224", pretrained_tag="augreg_in21k_ft_in1k", **_VIT),
    ModelSpec("vit_base", arch="vit_base_patch16_224", pretrained_tag="augreg_in21k_ft_in1k", **_VIT),
    ModelSpec("deit_tiny", arch="deit_tiny_patch16_224", pretrained_tag="fb_in1k", **_DEIT),
    ModelSpec("deit_small", arch="deit_small_patch16_224", pretrained_tag="fb_in1k", **_DEIT),
    ModelSpec("deit_base", arch="deit_base_patch16_224", pretrained_tag="fb_in1k", **_DEIT),
    ModelSpec("deit_tiny_distilled", arch="deit_tiny_distilled_patch16_224", pretrained_tag="fb_in1k", **_DEIT),
    ModelSpec("deit_small_distilled", arch="deit_small_distilled_patch16_224", pretrained_tag="fb_in1k", **_DEIT),
    ModelSpec("deit_base_distilled", arch="deit_base_distilled_patch16_224", pretrained_tag="fb_in1k", **_DEIT),
    ModelSpec("swin_tiny", arch="swin_tiny_patch4_window7_224", pretrained_tag="ms_in1k", **_SWIN),
    ModelSpec("swin_small", arch="swin_small_patch4_window7_224", pretrained_tag="ms_in1k", **_SWIN),
    ModelSpec("resnet18", family="resnet", arch="resnet18", builder="torchvision",
              checkpoint_name="resnet18_imagenet.pth.tar",
              checkpoint_source=f"{_BRECQ}: resnet18_imagenet.pth.tar",
              tiny_kwargs=_RESNET_TINY_BASIC, tiny_input_size=64),
    ModelSpec("resnet50", family="resnet", arch="resnet50", builder="torchvision",
              checkpoint_name="resnet50_imagenet.pth.tar",
              checkpoint_source=f"{_BRECQ}: resnet50_imagenet.pth.tar",
              tiny_kwargs=_RESNET_TINY_BOTTLENECK, tiny_input_size=64),
    ModelSpec("resnet101", family="resnet", arch="resnet101", builder="torchvision",
              checkpoint_name="resnet101-63fe2227.pth",
              checkpoint_source="torchvision: https://download.pytorch.org/models/resnet101-63fe2227.pth",
              tiny_kwargs=_RESNET_TINY_BOTTLENECK),
)
for _spec in TABLE:
    register(_spec)
