"""The detectors this suite registers: config file, checkpoint, paper numbers.

``DETECTORS``: the five detectors of the QwT COCO table. Their checkpoints are the
Swin-Transformer-Object-Detection releases (mmdet 2.x, official Swin key names) that the QwT paper
quantizes; :mod:`detection.convert` converts them on load.

``ZOO_DETECTORS``: beyond the paper (no paper values), mmdet 3.x's own configs (shipped in the
installed mmdet package, ``mmdet::<dir>/<file>``) with their openmmlab model-zoo checkpoints,
loaded as is: two ResNet-50 detectors (percentile + QwT on the backbone) and mmdet's Swin-T Mask
R-CNN 3x (RepQ-ViT + QwT).
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    fp: tuple[float, float]  # paper FP (box AP, mask AP)
    params_m: float  # #params of the release table (millions)
    # paper RepQ-ViT / RepQ-ViT+QwT (box, mask) at W4A4 and W6A6
    paper: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{RELEASE}/{self.checkpoint}"

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / self.config


DETECTORS: dict[str, Detector] = {d.name: d for d in [
    Detector("mask_rcnn_swin_t", "mask_rcnn_swin_t_3x_coco.py", "mask_rcnn_swin_tiny_patch4_window7.pth",
             "mask_rcnn", 96, (2, 2, 6, 2), (46.0, 41.6), 48,
             {"repq@w4a4": (36.1, 36.0), "repq+qwt@w4a4": (36.3, 36.0),
              "repq@w6a6": (45.5, 41.3), "repq+qwt@w6a6": (45.4, 41.3)}),
    Detector("mask_rcnn_swin_s", "mask_rcnn_swin_s_3x_coco.py", "mask_rcnn_swin_small_patch4_window7.pth",
             "mask_rcnn", 96, (2, 2, 18, 2), (48.5, 43.3), 69,
             {"repq@w4a4": (42.6, 40.0), "repq+qwt@w4a4": (43.1, 40.4),
              "repq@w6a6": (47.6, 42.9), "repq+qwt@w6a6": (48.0, 43.1)}),
    Detector("cascade_mask_rcnn_swin_t", "cascade_mask_rcnn_swin_t_3x_coco.py",
             "cascade_mask_rcnn_swin_tiny_patch4_window7.pth", "cascade_mask_rcnn", 96, (2, 2, 6, 2),
             (50.4, 43.7), 86,
             {"repq@w4a4": (47.0, 41.4), "repq+qwt@w4a4": (47.6, 41.8),
              "repq@w6a6": (50.1, 43.5), "repq+qwt@w6a6": (50.1, 43.6)}),
    Detector("cascade_mask_rcnn_swin_s", "cascade_mask_rcnn_swin_s_3x_coco.py",
             "cascade_mask_rcnn_swin_small_patch4_window7.pth", "cascade_mask_rcnn", 96, (2, 2, 18, 2),
             (51.9, 45.0), 107,
             {"repq@w4a4": (49.3, 43.1), "repq+qwt@w4a4": (49.9, 43.4),
              "repq@w6a6": (51.4, 44.6), "repq+qwt@w6a6": (51.7, 44.8)}),
    Detector("cascade_mask_rcnn_swin_b", "cascade_mask_rcnn_swin_b_3x_coco.py",
             "cascade_mask_rcnn_swin_base_patch4_window7.pth", "cascade_mask_rcnn", 128, (2, 2, 18, 2),
             (51.9, 45.0), 145,
             {"repq@w4a4": (49.3, 43.1), "repq+qwt@w4a4": (50.0, 43.7),
              "repq@w6a6": (51.5, 44.8), "repq+qwt@w6a6": (51.8, 45.0)}),
]}


ZOO = "https://download.openmmlab.com/mmdetection/v2.0"


@dataclass(frozen=True)
class ZooDetector:
    """An mmdet model-zoo detector: mmdet's own config and openmmlab checkpoint (no paper values)."""

    name: str  # registry / Make target name
    config: str  # "mmdet::<dir>/<file>.py" (resolved in the installed mmdet package)
    url: str  # openmmlab checkpoint (mmdet 3.x layout: state_dict + meta), looked up in --ckpt-dir
    backbone: str  # "resnet" | "swin" (detection.backbones kinds)
    title: str  # as the tables print it

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
                "resnet", "Mask RCNN + R50-FPN 1x (mmdet)"),
    ZooDetector("retinanet_r50_fpn_1x", "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py",
                f"{ZOO}/retinanet/retinanet_r50_fpn_1x_coco/retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth",
                "resnet", "RetinaNet + R50-FPN 1x (mmdet)"),
    ZooDetector("mmdet_mask_rcnn_swin_t_3x", "mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py",
                f"{ZOO}/swin/mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco/"
                "mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco_20210906_131725-bacf6f7b.pth",
                "swin", "Mask RCNN + Swin_T 3x (mmdet)"),
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
