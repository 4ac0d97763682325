"""The detectors this suite can build: config file, checkpoint, architecture facts.

Which detectors the suite benchmarks, their display names and the papers' values live in the
experiment registry (``benchmarks/registry.py``); ``tests/benchmarks/test_registry.py`` checks that
every COCO model registered there has an entry here, with the same backbone family.

``DETECTORS``: the five detectors of the QwT COCO table. Their checkpoints are the
Swin-Transformer-Object-Detection releases (mmdet 2.x, official Swin key names) that the QwT paper
quantizes; :mod:`detection.convert` converts them on load.

``ZOO_DETECTORS``: beyond the paper (no paper values), mmdet 3.x's own configs (shipped in the
installed mmdet package, ``mmdet::<dir>/<file>``) with their openmmlab model-zoo checkpoints,
loaded as is: two ResNet-50 detectors (percentile + QwT on the backbone) and mmdet's Swin-T Mask
R-CNN 3x (RepQ-ViT + QwT).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RELEASE = "https://github.com/SwinTransformer/storage/releases/download/v1.0.2"


@dataclass(frozen=True)
class Detector:
    name: str  # registry / Make target name
    config: str  # file under detection/configs/
    checkpoint: str  # release file name (looked up in --ckpt-dir)
    kind: str  # "mask_rcnn" | "cascade_mask_rcnn"
    embed_dims: int
    depths: tuple[int, ...]
    params_m: float  # #params of the release table (millions)

    @property
    def url(self) -> str:
        return f"{RELEASE}/{self.checkpoint}"

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / self.config


DETECTORS: dict[str, Detector] = {d.name: d for d in [
    Detector("mask_rcnn_swin_t", "mask_rcnn_swin_t_3x_coco.py", "mask_rcnn_swin_tiny_patch4_window7.pth",
             "mask_rcnn", 96, (2, 2, 6, 2), 48),
    Detector("mask_rcnn_swin_s", "mask_rcnn_swin_s_3x_coco.py", "mask_rcnn_swin_small_patch4_window7.pth",
             "mask_rcnn", 96, (2, 2, 18, 2), 69),
    Detector("cascade_mask_rcnn_swin_t", "cascade_mask_rcnn_swin_t_3x_coco.py",
             "cascade_mask_rcnn_swin_tiny_patch4_window7.pth", "cascade_mask_rcnn", 96, (2, 2, 6, 2),
             86),
    Detector("cascade_mask_rcnn_swin_s", "cascade_mask_rcnn_swin_s_3x_coco.py",
             "cascade_mask_rcnn_swin_small_patch4_window7.pth", "cascade_mask_rcnn", 96, (2, 2, 18, 2),
             107),
    Detector("cascade_mask_rcnn_swin_b", "cascade_mask_rcnn_swin_b_3x_coco.py",
             "cascade_mask_rcnn_swin_base_patch4_window7.pth", "cascade_mask_rcnn", 128, (2, 2, 18, 2),
             145),
]}


ZOO = "https://download.openmmlab.com/mmdetection/v2.0"


@dataclass(frozen=True)
class ZooDetector:
    """An mmdet model-zoo detector: mmdet's own config and openmmlab checkpoint (no paper values)."""

    name: str  # registry / Make target name
    config: str  # "mmdet::<dir>/<file>.py" (resolved in the installed mmdet package)
    url: str  # openmmlab checkpoint (mmdet 3.x layout: state_dict + meta), looked up in --ckpt-dir
    backbone: str  # "resnet" | "swin" (detection.backbones kinds)

    @property
    def checkpoint(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def config_path(self) -> Path:
        from .mmdet_configs import resolve_config

        return resolve_config(self.config)


ZOO_DETECTORS: dict[str, ZooDetector] = {d.name: d for d in [
    ZooDetector("mask_rcnn_r50_fpn_1x", "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
                f"{ZOO}/mask_rcnn/mask_rcnn_r50_fpn_1x_coco/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth",
                "resnet"),
    ZooDetector("retinanet_r50_fpn_1x", "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py",
                f"{ZOO}/retinanet/retinanet_r50_fpn_1x_coco/retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth",
                "resnet"),
    ZooDetector("mmdet_mask_rcnn_swin_t_3x", "mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py",
                f"{ZOO}/swin/mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco/"
                "mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco_20210906_131725-bacf6f7b.pth",
                "swin"),
]}

#: every name ``--detector`` accepts
ALL_DETECTORS: tuple[str, ...] = tuple(DETECTORS) + tuple(ZOO_DETECTORS)


def get_detector(name: str) -> Detector | ZooDetector:
    """Look a detector up by name; the error lists the registered names."""
    if name in DETECTORS:
        return DETECTORS[name]
    if name in ZOO_DETECTORS:
        return ZOO_DETECTORS[name]
    raise KeyError(f"unknown detector {name!r}; registered: {', '.join(ALL_DETECTORS)}")
