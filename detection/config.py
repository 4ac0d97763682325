"""The detection run config: :class:`runtime.config.RunConfig` plus the COCO suite's own settings
(the CLI's flags are generated from these fields and their comments). Imports no mmdet."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from runtime.config import RunConfig


@dataclass
class DetectionConfig(RunConfig):
    """One COCO experiment (the CLI options, one to one); every default is the reference's."""

    SUITE: ClassVar[str] = "coco"
    WORKERS: ClassVar[int] = 2
    FP16_EVAL: ClassVar[bool] = False  # the reference keeps the detection compensation in fp32

    detector: str | None = None  # registry name (detection.registry.DETECTORS)
    config: str | None = None  # or a custom mmdet config file
    qwt_img_size: int = 224  # QwT images are resized to this square, keep_ratio False, no flip (SPEC)
    qwt_batch_size: int = 8  # QwT images per batch
    feature_probe: int = 4  # held-out val images (test items 1..N) for the backbone feature error metric; 0: off
    # padding of the normalized tokens after the reparameterized norm1: 'zero' (the reference code) or 'exact'
    # (named improvement: -b, same FP function)
    window_pad: Literal["zero", "exact"] = "zero"
    work_dir: str | None = None  # mmengine work dir (logs); default work_dirs/<detector>
    launcher: Literal["none", "pytorch"] = "none"  # 'pytorch' under torchrun for several GPUs
    log_interval: int = 50  # mmengine logger interval
    cfg_options: dict[str, Any] = field(default_factory=dict, metadata={"flag": False})  # mmengine config overrides
    # per-block QwT report callback
    on_block: Callable[[Any], None] | None = field(default=None, metadata={"flag": False, "record": False})


DetectionRun = DetectionConfig  # the name the Python API has used
