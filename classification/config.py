"""The classification run config: :class:`runtime.config.RunConfig` plus the ImageNet suite's own
settings (the CLI's flags are generated from these fields and their comments)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from runtime.config import RunConfig

from .registry import ModelSpec


@dataclass
class ClassificationConfig(RunConfig):
    """One (model, bits) ImageNet experiment; every field has the reference default."""

    SUITE: ClassVar[str] = "imagenet"
    WORKERS: ClassVar[int] = 4
    FP16_EVAL: ClassVar[bool] = True  # the reference evaluates the compensation in fp16

    model: str | None = None  # registry name
    pretrained: bool = True  # the pretrained weights (off: random init, for tests and smoke runs)
    tiny: bool = False  # small random-init variant of the model (tests, smoke runs; never for tables)
    # JSON constructor overrides, checked against the constructor before the run
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64  # eval and QwT batch size
    calib_size: int = 32  # RepQ-ViT calibration images: one batch of augmented train images (reference 32)
    calib_augment: bool = True  # training augmentation on the calibration images (reference)
    # val/ holds a subset of the model's classes: map each class folder to the model's class by its name
    # (ImageNet wnid or class index); recorded as a class subset
    class_subset: bool = False
    suite: str = field(default="imagenet", metadata={"flag": False})  # the records' suite
    # use this spec instead of the registry's
    spec: ModelSpec | None = field(default=None, repr=False, metadata={"flag": False, "record": False})


ExperimentConfig = ClassificationConfig  # the name the Python API has used
