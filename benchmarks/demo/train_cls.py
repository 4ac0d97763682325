"""Train the demo classifiers on the digits train split and commit-ready fp16 checkpoints.

    python -m benchmarks.demo.train_cls [--models demo_vit,demo_swin,demo_resnet] [--threads 1]
                                        [--out benchmarks/demo/checkpoints] [--check]

For each model: AdamW, cosine schedule with linear warm-up, label smoothing 0.1, light random
affine augmentation (±10°, ±10% shift, 0.9-1.1 scale), seed 0, one process. A ViT trained from
scratch on 1197 images learns slowly, so (as DeiT does) the ViT and Swin add a soft distillation
loss from the committed demo ResNet (``teacher`` in their hyper-parameters; the ResNet is trained
first when ``--models`` lists it). The state dict is
saved in fp16 (``<name>.pth``) next to a card (``<name>.json``) holding the command, the top-1 of
the fp16 checkpoint on the 600 test images (evaluated after casting back to fp32, with the same
preprocessing as the classification pipeline: PNG -> [0, 1] -> normalize), the seed, the training
time and the library versions. ``--check`` retrains into a temporary folder and compares its top-1
with the committed card (tolerance 1 point) instead of overwriting.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from . import data
from .models import CHECKPOINTS, CLASSIFIERS, DemoModel, load_fp16_checkpoint

SEED = 0
TOLERANCE = 1.0  # points of top-1


def load_split(root: Path, split: str) -> tuple[Tensor, Tensor]:
    """All PNGs of ``root/split`` as uint8 (N, 3, 32, 32) and labels (N,), in sorted path order."""
    paths = sorted((root / split).glob("*/*.png"))
    if not paths:
        raise FileNotFoundError(f"no PNGs under {root / split}: run `python -m benchmarks.demo.data`")
    x = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]))
    y = torch.tensor([int(p.parent.name) for p in paths])
    return x.permute(0, 3, 1, 2).contiguous(), y


def normalize(x: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) -> float, the eval transform's ToTensor + Normalize."""
    mean = torch.tensor(data.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random affine per image (rotation ±10°, shift ±10%, scale 0.9-1.1) on float (B, 3, H, W),
    drawn from ``gen``; bilinear, zero padding (the background is black)."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=gen) * 2 - 1  # (B, 4) in [-1, 1]
    ang = u[:, 0] * math.radians(10)
    scale = 1.0 + 0.1 * u[:, 1]
    tx, ty = 0.2 * u[:, 2], 0.2 * u[:, 3]  # in normalized coords [-1, 1]: 10% of the side
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 200) -> float:
    """Top-1 (%) of ``model`` on uint8 images ``x``."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(normalize(x[i:i + batch_size])).argmax(1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / len(x)


def train_one(spec: DemoModel, root: Path, out: Path, log=print) -> dict:
    """Train ``spec`` from scratch; write ``out/<name>.pth`` (fp16) and ``out/<name>.json``."""
    hp = spec.train
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    xtr, ytr = load_split(root, "train")
    xte, yte = load_split(root, "val")
    mean, std = torch.tensor(data.MEAN).view(1, 3, 1, 1), torch.tensor(data.STD).view(1, 3, 1, 1)
    model = spec.build()
    teacher = None
    if hp.get("teacher"):  # DeiT-style soft distillation from a committed demo CNN
        tspec = CLASSIFIERS[hp["teacher"]]
        teacher = load_fp16_checkpoint(tspec.build(), tspec.checkpoint).eval()
        log(f"[train] {spec.name}: distilling from {tspec.name} ({tspec.checkpoint.name}), "
            f"alpha {hp['kd_alpha']}, T {hp['kd_T']}")
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n and "token" not in n]
    no_decay = [p for n, p in model.named_parameters()
                if not (p.ndim > 1 and "pos_embed" not in n and "token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=hp["lr"])
    steps_per_epoch = math.ceil(len(xtr) / hp["batch_size"])
    total, warm = hp["epochs"] * steps_per_epoch, hp["warmup"] * steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warm:
            return hp["lr"] * (step + 1) / warm
        return 0.5 * hp["lr"] * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

    t0, step = time.time(), 0
    for epoch in range(hp["epochs"]):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        loss_sum = 0.0
        for i in range(0, len(xtr), hp["batch_size"]):
            idx = perm[i:i + hp["batch_size"]]
            # augment in the [0, 1] domain (zero = black background), then normalize
            xb = augment(xtr[idx].float() / 255.0, gen)
            xb = (xb - mean) / std
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits = model(xb)
            loss = F.cross_entropy(logits, ytr[idx], label_smoothing=0.1)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(xb)
                T, a = hp["kd_T"], hp["kd_alpha"]
                kd = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(t_logits / T, 1),
                              reduction="batchmean", log_target=True) * T * T
                loss = (1 - a) * loss + a * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            step += 1
        if epoch % 5 == 4 or epoch == hp["epochs"] - 1:
            log(f"[train] {spec.name} epoch {epoch + 1}/{hp['epochs']} loss {loss_sum / len(xtr):.4f} "
                f"test top-1 {evaluate(model, xte, yte):.2f} ({time.time() - t0:.0f}s)")
    train_s = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / f"{spec.name}.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, ckpt)
    # the card's accuracy is that of the committed fp16 file, loaded back into fp32
    top1 = evaluate(load_fp16_checkpoint(spec.build(), ckpt), xte, yte)
    import timm
    import torchvision
    card = {
        "model": spec.name, "family": spec.family, "checkpoint": ckpt.name, "dtype": "float16",
        "params": sum(p.numel() for p in model.parameters()), "bytes": ckpt.stat().st_size,
        "fp_top1": round(top1, 2), "test_images": len(xte), "train_images": len(xtr),
        "seed": SEED, "hyper_parameters": hp, "train_seconds": round(train_s, 1),
        "threads": torch.get_num_threads(),
        "command": "make demo-train  # python -m benchmarks.demo.train_cls --models " + spec.name,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "timm": timm.__version__},
        "data": {"generator": "benchmarks.demo.data", "version": data.VERSION},
    }
    (out / f"{spec.name}.json").write_text(json.dumps(card, indent=1) + "\n")
    log(f"[train] {spec.name}: fp16 checkpoint top-1 {top1:.2f} on {len(xte)} test images, "
        f"{ckpt.stat().st_size / 2**20:.2f} MB, {train_s:.0f}s -> {ckpt}")
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(CLASSIFIERS), help="comma-separated demo classifiers")
    ap.add_argument("--data-root", default=str(data.DEFAULT_ROOT))
    ap.add_argument("--out", default=str(CHECKPOINTS))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--check", action="store_true",
                    help="retrain into a temporary folder and compare top-1 with the committed cards")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in CLASSIFIERS]
    if unknown:
        ap.error(f"unknown demo classifiers {unknown}; known: {sorted(CLASSIFIERS)}")
    root = data.build(args.data_root)
    failed = []
    with tempfile.TemporaryDirectory(prefix="qwt-demo-train-") as tmp:
        for name in names:
            spec = CLASSIFIERS[name]
            card = train_one(spec, root, Path(tmp) if args.check else Path(args.out))
            if args.check:
                ref = json.loads(spec.card.read_text())
                diff = card["fp_top1"] - ref["fp_top1"]
                ok = abs(diff) <= TOLERANCE
                print(f"[check] {name}: retrained top-1 {card['fp_top1']:.2f} vs card {ref['fp_top1']:.2f} "
                      f"({diff:+.2f}, tolerance ±{TOLERANCE}) {'OK' if ok else 'FAILED'}")
                if not ok:
                    failed.append(name)
    print("[train] command:",
          shlex.join([Path(sys.executable).name, "-m", "benchmarks.demo.train_cls", *(argv or sys.argv[1:])]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
