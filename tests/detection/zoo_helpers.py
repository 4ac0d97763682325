"""Tiny random-init versions of mmdet's own configs (the model-zoo detectors) and their checkpoints
in the openmmlab (mmdet 3.x) layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .helpers import shrink


def tiny_zoo_config(spec: str, out: Path, resnet_depth: int | None = None) -> Path:
    """mmdet's config ``spec`` (``mmdet::...``), dumped whole with small test images, few proposals,
    low score thresholds and no pretrained init (the ResNet keeps its real depth and widths unless
    ``resnet_depth`` is given, e.g. 18 for BasicBlocks; a Swin is shrunk as the paper detectors are)."""
    from mmengine.config import Config

    from detection.mmdet_configs import resolve_config

    cfg = Config.fromfile(str(resolve_config(spec)))
    m = cfg.model
    m.backbone.init_cfg = None  # no torchvision:// / pretrained download
    if m.backbone.type == "SwinTransformer":
        shrink(cfg)
        m.backbone.pop("pretrained", None)
    else:
        if resnet_depth is not None:
            m.backbone.depth = resnet_depth
            if resnet_depth < 50:  # BasicBlock: expansion 1
                m.neck.in_channels = [64, 128, 256, 512]
        for step in cfg.test_dataloader.dataset.pipeline:
            if step["type"] == "Resize":
                step["scale"] = (128, 96)
        if "rpn" in m.test_cfg:
            m.test_cfg.rpn.update(nms_pre=100, max_per_img=20)
            m.test_cfg.rcnn.update(score_thr=0.0, max_per_img=10)
        else:  # RetinaNet: one dense head
            m.test_cfg.update(nms_pre=100, score_thr=0.0, max_per_img=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(out))
    return out


def build_random(cfg_path: Path, seed: int = 0) -> torch.nn.Module:
    """The detector with init_weights and perturbed norms (BatchNorm statistics and affine
    parameters, LayerNorms), so that residual branches are not zero (mmdet zero-inits the last
    BN of each ResNet block)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm

    register_all_modules()
    torch.manual_seed(seed)
    model = revert_sync_batchnorm(MODELS.build(Config.fromfile(str(cfg_path)).model))
    model.init_weights()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm)):
                if m.weight is not None:
                    m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
                    m.bias.add_(0.1 * torch.randn_like(m.bias))
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(0.1 * torch.randn_like(m.running_mean))
                    m.running_var.copy_(1.0 + 0.5 * torch.rand_like(m.running_var))
    return model.eval()


def zoo_checkpoint(cfg_path: Path, path: Path, seed: int = 0) -> Path:
    """A random-init checkpoint as the openmmlab model zoo stores them: {state_dict, meta}."""
    sd = build_random(cfg_path, seed).state_dict()
    torch.save({"state_dict": sd, "meta": {"mmdet_version": "3.3.0", "epoch": 12,
                                            "dataset_meta": {"classes": ("person",)}, "np": np.float64(1.0)}},
               path)
    return path
