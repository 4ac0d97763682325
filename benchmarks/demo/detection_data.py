"""Detection / instance-segmentation data of the demo: the digits of :mod:`benchmarks.demo.data`
pasted at random positions and scales on 128x128 canvases, with COCO boxes and masks::

    <root>/train/<id>.png, <root>/val/<id>.png          canvases (RGB, uint8)
    <root>/annotations/instances_train.json             COCO: images, annotations, categories
    <root>/annotations/instances_val.json
    <root>/MANIFEST.json

Each canvas holds 1-4 digits (side 24-56 px, bicubic from the 8x8 originals), placed without
overlap on a dark noisy background. A digit's mask is its pixels with intensity > 25% of the
maximum (RLE, pycocotools), its box the tight box of that mask. Train canvases use only train
digits and val canvases only val (test) digits of the classification split. Everything is drawn
from one fixed seed, so the files are identical on every run.

    python -m benchmarks.demo.detection_data [--root data/demo/digits-coco] [--force]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .data import REPO, digits_split

VERSION = 2
CANVAS = 128
SIZES = {"train": 400, "val": 100}  # canvases per split
SCALE = (24, 56)  # digit side in pixels
PER_IMAGE = (1, 4)
MASK_THRESHOLD = 0.25
SEED = 0
DEFAULT_ROOT = REPO / "data" / "demo" / "digits-coco"
CATEGORIES = [{"id": i + 1, "name": str(i), "supercategory": "digit"} for i in range(10)]


def _digit_patch(img8: np.ndarray, side: int) -> np.ndarray:
    """(8, 8) 0..16 -> (side, side) float 0..1 (bicubic, clipped)."""
    im = Image.fromarray((img8 / 16.0).astype(np.float32), mode="F")
    return np.clip(np.asarray(im.resize((side, side), Image.Resampling.BICUBIC)), 0.0, 1.0)


def _place(rng: np.random.Generator, side: int, boxes: list[tuple[int, int, int, int]],
           tries: int = 50) -> tuple[int, int] | None:
    """Top-left corner for a side x side square that overlaps no earlier square (or None)."""
    for _ in range(tries):
        x, y = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
        if all(x + side <= bx or bx + bs <= x or y + side <= by or by + bs <= y
               for bx, by, bs, _ in boxes):
            return x, y
    return None


def make_split(split: str, n_images: int, rng: np.random.Generator, out: Path) -> dict:
    """Draw ``n_images`` canvases; write PNGs under ``out/split``; return the COCO dict."""
    from pycocotools import mask as mask_utils

    images8, labels, _ = digits_split()[split]
    (out / split).mkdir(parents=True, exist_ok=True)
    coco: dict = {"info": {"description": f"digits-coco {split} (benchmarks.demo.detection_data v{VERSION})"},
                  "images": [], "annotations": [], "categories": CATEGORIES}
    ann_id = 1
    for image_id in range(1, n_images + 1):
        canvas = rng.uniform(0.0, 0.12, size=(CANVAS, CANVAS)).astype(np.float32)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(PER_IMAGE[0], PER_IMAGE[1] + 1))):
            side = int(rng.integers(SCALE[0], SCALE[1] + 1))
            pos = _place(rng, side, placed)
            if pos is None:
                continue
            k = int(rng.integers(len(labels)))
            patch = _digit_patch(images8[k], side)
            x, y = pos
            region = canvas[y:y + side, x:x + side]
            np.maximum(region, patch, out=region)
            m = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
            m[y:y + side, x:x + side] = patch > MASK_THRESHOLD * patch.max()
            ys, xs = np.nonzero(m)
            if len(xs) == 0:
                continue
            placed.append((x, y, side, int(labels[k])))
            rle = mask_utils.encode(np.asfortranarray(m))
            bx0, by0, bx1, by1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            coco["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": int(labels[k]) + 1,
                "bbox": [bx0, by0, bx1 - bx0, by1 - by0], "area": float(mask_utils.area(rle)),
                "segmentation": {"size": [CANVAS, CANVAS], "counts": rle["counts"].decode("ascii")},
                "iscrowd": 0})
            ann_id += 1
        fname = f"{image_id:05d}.png"  # relative to <root>/<split>/, as COCO's file_name
        rgb = np.repeat((canvas * 255).round().astype(np.uint8)[..., None], 3, axis=2)
        Image.fromarray(rgb, mode="RGB").save(out / split / fname)
        coco["images"].append({"id": image_id, "file_name": fname, "width": CANVAS, "height": CANVAS})
    return coco


def _manifest_ok(root: Path) -> bool:
    m = root / "MANIFEST.json"
    if not m.is_file():
        return False
    try:
        man = json.loads(m.read_text())
    except json.JSONDecodeError:
        return False
    return (man.get("version") == VERSION and man.get("sizes") == SIZES
            and all((root / "annotations" / f"instances_{s}.json").is_file() for s in SIZES))


def build(root: str | Path = DEFAULT_ROOT, force: bool = False) -> Path:
    """Write canvases and COCO json under ``root`` (if missing or stale); returns ``root``."""
    root = Path(root)
    if not force and _manifest_ok(root):
        return root
    if root.exists():
        shutil.rmtree(root)
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "annotations").mkdir(parents=True)
    counts = {}
    for i, (split, n) in enumerate(SIZES.items()):
        rng = np.random.default_rng([SEED, i])
        coco = make_split(split, n, rng, tmp)
        counts[split] = {"images": len(coco["images"]), "instances": len(coco["annotations"])}
        (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    (tmp / "MANIFEST.json").write_text(json.dumps(
        {"version": VERSION, "canvas": CANVAS, "sizes": SIZES, "scale": SCALE, "per_image": PER_IMAGE,
         "mask_threshold": MASK_THRESHOLD, "seed": SEED, "counts": counts}, indent=1, sort_keys=True) + "\n")
    tmp.rename(root)
    return root


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--force", action="store_true", help="regenerate even if the manifest matches")
    args = ap.parse_args(argv)
    root = build(args.root, args.force)
    print(f"[demo-data] digits-coco {json.loads((root / 'MANIFEST.json').read_text())['counts']} -> {root}")


if __name__ == "__main__":
    main()
