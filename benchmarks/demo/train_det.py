"""Train the demo detector (Swin Mask R-CNN on the digits-on-canvas COCO set) with mmengine's
Runner, from scratch, on the CPU, and write a commit-ready fp16 checkpoint and its card.

    python -m benchmarks.demo.train_det [--threads 2] [--epochs N] [--out benchmarks/demo/checkpoints] [--check]

Config: ``benchmarks/demo/configs/mask_rcnn_swin_digits.py``. The checkpoint is the model's
state dict (mmdet key names) in fp16; the card holds the command, the box / mask mAP of that fp16
file on the 100 val canvases (loaded back into fp32), the seed, the training time and versions.
``--check`` retrains into a temporary folder and compares box mAP with the committed card
(tolerance 1 point of AP).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import detection_data
from .models import CHECKPOINTS

NAME = "demo_mask_rcnn_swin"
CONFIG = Path(__file__).resolve().parent / "configs" / f"{NAME}.py"
SEED = 0
TOLERANCE = 1.0  # points of box mAP (x100)


def load_cfg(data_root: Path, work_dir: Path, epochs: int | None = None):
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIG))
    root = str(data_root).rstrip("/") + "/"
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = root
    for ev, split in (("val_evaluator", "val"), ("test_evaluator", "val")):
        cfg[ev].ann_file = root + f"annotations/instances_{split}.json"
    if epochs is not None:
        cfg.train_cfg.max_epochs = epochs
        cfg.train_cfg.val_interval = epochs
        cfg.param_scheduler[1].end = cfg.param_scheduler[1].T_max = epochs
        cfg.default_hooks.checkpoint.interval = epochs
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=SEED, deterministic=False)
    return cfg


def evaluate(cfg, checkpoint: Path) -> dict[str, float]:
    """COCO box / mask mAP (x100) of ``checkpoint`` on the val split through mmengine's test loop."""
    from mmengine.runner import Runner

    cfg = cfg.copy()
    cfg.load_from = str(checkpoint)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    return {"bbox_mAP": round(100 * float(metrics["coco/bbox_mAP"]), 2),
            "bbox_mAP_50": round(100 * float(metrics["coco/bbox_mAP_50"]), 2),
            "segm_mAP": round(100 * float(metrics["coco/segm_mAP"]), 2),
            "segm_mAP_50": round(100 * float(metrics["coco/segm_mAP_50"]), 2)}


def train(out: Path, data_root: Path, epochs: int | None, work_dir: Path) -> dict:
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    register_all_modules()
    cfg = load_cfg(data_root, work_dir, epochs)
    t0 = time.time()
    runner = Runner.from_cfg(cfg)
    model = runner.train()
    train_s = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / f"{NAME}.pth"
    sd = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "meta": {"config": CONFIG.name}}, ckpt)
    metrics = evaluate(load_cfg(data_root, work_dir / "eval"), ckpt)
    import mmcv
    import mmdet
    import mmengine
    card = {
        "model": NAME, "family": "mask_rcnn_swin", "checkpoint": ckpt.name, "dtype": "float16",
        "config": str(CONFIG.relative_to(CONFIG.parents[3])),
        "params": sum(p.numel() for p in model.parameters()), "bytes": ckpt.stat().st_size,
        "fp": metrics, "val_images": detection_data.SIZES["val"], "train_images": detection_data.SIZES["train"],
        "seed": SEED, "epochs": cfg.train_cfg.max_epochs, "train_seconds": round(train_s, 1),
        "threads": torch.get_num_threads(),
        "command": "make demo-train  # python -m benchmarks.demo.train_det",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "mmdet": mmdet.__version__, "mmcv": mmcv.__version__, "mmengine": mmengine.__version__},
        "data": {"generator": "benchmarks.demo.detection_data", "version": detection_data.VERSION},
    }
    (out / f"{NAME}.json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"[train] {NAME}: box mAP {metrics['bbox_mAP']:.1f}, mask mAP {metrics['segm_mAP']:.1f} "
          f"({ckpt.stat().st_size / 2**20:.2f} MB, {train_s:.0f}s) -> {ckpt}")
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(detection_data.DEFAULT_ROOT))
    ap.add_argument("--out", default=str(CHECKPOINTS))
    ap.add_argument("--epochs", type=int, default=None, help="override the config's max_epochs")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--work-dir", default="work_dirs/demo_mask_rcnn_swin")
    ap.add_argument("--check", action="store_true",
                    help="retrain into a temporary folder and compare box mAP with the committed card")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = detection_data.build(args.data_root)
    with tempfile.TemporaryDirectory(prefix="qwt-demo-det-") as tmp:
        card = train(Path(tmp) if args.check else Path(args.out), root, args.epochs, Path(args.work_dir))
        if args.check:
            ref = json.loads((CHECKPOINTS / f"{NAME}.json").read_text())
            diff = card["fp"]["bbox_mAP"] - ref["fp"]["bbox_mAP"]
            ok = abs(diff) <= TOLERANCE
            print(f"[check] {NAME}: retrained box mAP {card['fp']['bbox_mAP']:.2f} vs card "
                  f"{ref['fp']['bbox_mAP']:.2f} ({diff:+.2f}, tolerance ±{TOLERANCE}) {'OK' if ok else 'FAILED'}")
            return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
