"""Synthetic COCO data and tiny versions of the registered detectors (test helpers)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

# the 80 COCO category ids (1..90 with the official gaps), in the order of CocoDataset.METAINFO
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
            27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
            52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
            78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
TINY_DEPTHS = (2, 2, 1, 1)  # shifted windows in stages 0-1, four stages, three patch mergings
SIZES = [(200, 150), (176, 240), (160, 120), (210, 210)]  # (W, H) of the synthetic images


def write_synthetic_coco(root: Path, n_val: int = 3, n_train: int = 8, seed: int = 0) -> Path:
    """COCO 2017 layout with all 80 categories, boxes and polygon masks of drawn shapes."""
    import cv2
    from mmdet.datasets import CocoDataset

    names = CocoDataset.METAINFO["classes"]
    assert len(names) == 80 == len(COCO_IDS)
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    cats = [{"id": i, "name": n, "supercategory": "thing"} for i, n in zip(COCO_IDS, names)]
    ann_id = 1
    for split, n in (("val2017", n_val), ("train2017", n_train)):
        (root / split).mkdir(exist_ok=True)
        images, anns = [], []
        for k in range(n):
            img_id = 1000 * (split == "train2017") + k + 1
            w, h = SIZES[k % len(SIZES)]
            img = (rng.random((h, w, 3)) * 60 + 80).astype(np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                bw, bh = int(rng.integers(20, w // 2)), int(rng.integers(20, h // 2))
                x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                # a quadrilateral inside the box (polygon mask), filled in a random color
                poly = np.array([[x0 + bw // 2, y0], [x0 + bw - 1, y0 + bh // 2],
                                 [x0 + bw // 2, y0 + bh - 1], [x0, y0 + bh // 2]], np.int32)
                cv2.fillPoly(img, [poly], tuple(int(c) for c in rng.integers(0, 255, 3)))
                area = float(cv2.contourArea(poly.astype(np.float32)))
                anns.append({"id": ann_id, "image_id": img_id, "category_id": int(rng.choice(COCO_IDS)),
                             "bbox": [float(x0), float(y0), float(bw), float(bh)], "area": area,
                             "iscrowd": 0, "segmentation": [poly.reshape(-1).astype(float).tolist()]})
                ann_id += 1
            fname = f"{img_id:012d}.jpg"
            cv2.imwrite(str(root / split / fname), img)
            images.append({"id": img_id, "file_name": fname, "width": w, "height": h})
        ann = {"images": images, "annotations": anns, "categories": cats,
               "info": {"description": "synthetic COCO for tests"}, "licenses": []}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(ann))
    return root


def shrink(cfg) -> None:
    """Tiny width/depth and small images, keeping the architecture of each detector."""
    m = cfg.model
    m.backbone.update(embed_dims=16, depths=list(TINY_DEPTHS), num_heads=[1, 2, 4, 8], drop_path_rate=0.0)
    m.neck.update(in_channels=[16, 32, 64, 128], out_channels=32)
    m.rpn_head.update(in_channels=32, feat_channels=32)
    rh = m.roi_head
    rh.bbox_roi_extractor.out_channels = 32
    heads = rh.bbox_head if isinstance(rh.bbox_head, list) else [rh.bbox_head]
    for h in heads:
        h.update(in_channels=32, fc_out_channels=64)
        if h.get("num_shared_convs"):
            h.update(conv_out_channels=32)
    rh.mask_roi_extractor.out_channels = 32
    rh.mask_head.update(in_channels=32, conv_out_channels=32)
    m.test_cfg.rpn.update(nms_pre=100, max_per_img=20)
    m.test_cfg.rcnn.update(score_thr=0.0, max_per_img=10)  # random heads: keep low-score boxes
    for step in cfg.test_dataloader.dataset.pipeline:
        if step["type"] == "Resize":
            step["scale"] = (128, 96)  # token grids 32x24 etc.: not multiples of the window (7)


def tiny_config(name: str, out_dir: Path) -> Path:
    """Write a tiny variant of a registered detector's config (inherits nothing: dumped whole)."""
    from mmengine.config import Config

    from detection.registry import DETECTORS

    cfg = Config.fromfile(str(DETECTORS[name].config_path))
    shrink(cfg)
    path = out_dir / f"tiny_{name}.py"
    cfg.dump(str(path))
    return path


def build(cfg_path: Path, seed: int = 0):
    """A randomly initialised (init_weights) detector with non-trivial norms."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm

    register_all_modules()
    torch.manual_seed(seed)
    model = revert_sync_batchnorm(MODELS.build(Config.fromfile(str(cfg_path)).model))
    model.init_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.startswith("backbone."):  # LayerNorms: not just 1 / 0
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def tiny_checkpoint(cfg_path: Path, path: Path, legacy: bool = True, seed: int = 0) -> Path:
    """Save a tiny detector's weights, in the release (official Swin, mmdet 2.x) layout by default."""
    from detection.convert import to_legacy

    sd = build(cfg_path, seed).state_dict()
    if legacy:
        sd = to_legacy(sd)
    torch.save({"state_dict": sd, "meta": {"mmdet_version": "2.11.0", "epoch": 36,
                                            "CLASSES": ("person",), "np": np.float64(1.0)}}, path)
    return path
