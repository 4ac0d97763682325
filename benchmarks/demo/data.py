"""Classification data of the demo: scikit-learn's bundled handwritten digits (1797 real 8x8
images, no download), upsampled to 32x32 RGB and written as PNGs in ImageFolder layout::

    <root>/train/<digit>/<index>.png   1197 images (calibration images are drawn from here)
    <root>/val/<digit>/<index>.png      600 images (the test split)
    <root>/MANIFEST.json               generator version, split sizes, per-file checksum

The split is fixed (stratified, seed 0); the upsampling is bicubic on the 0..16 intensity grid
rescaled to 0..255, so the files are byte-identical on every machine with the same Pillow.
Generation is idempotent: an existing folder with a matching manifest is reused.

    python -m benchmarks.demo.data [--root data/demo/digits] [--force]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

VERSION = 1  # bump when the generated files change
IMG_SIZE = 32
TEST_SIZE = 600
SPLIT_SEED = 0
REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO / "data" / "demo" / "digits"  # /data/ is git-ignored
CLASSES = tuple(str(i) for i in range(10))
# Mean / std of the training split (per channel, the three channels are equal): see ``stats``.
MEAN = (0.3094, 0.3094, 0.3094)
STD = (0.3487, 0.3487, 0.3487)


def digits_split() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{'train'|'val': (images (N, 8, 8) float 0..16, labels (N,), original indices (N,))}."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    tr, te = train_test_split(idx, test_size=TEST_SIZE, stratify=d.target, random_state=SPLIT_SEED)
    tr, te = np.sort(tr), np.sort(te)
    return {"train": (d.images[tr], d.target[tr], tr), "val": (d.images[te], d.target[te], te)}


def upsample(img8: np.ndarray, size: int = IMG_SIZE) -> np.ndarray:
    """(8, 8) intensities 0..16 -> (size, size) uint8, bicubic."""
    im = Image.fromarray((img8 * (255.0 / 16.0)).round().astype(np.uint8), mode="L")
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC))


def stats(root: Path) -> tuple[float, float]:
    """Mean and std (0..1 scale) of the training PNGs; used to set MEAN / STD above."""
    arr = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float64) / 255.0
                    for p in sorted((root / "train").rglob("*.png"))])
    return float(arr.mean()), float(arr.std())


def _manifest_ok(root: Path) -> bool:
    m = root / "MANIFEST.json"
    if not m.is_file():
        return False
    try:
        man = json.loads(m.read_text())
    except json.JSONDecodeError:
        return False
    return man.get("version") == VERSION and all((root / f).is_file() for f in man.get("files", {}))


def build(root: str | Path = DEFAULT_ROOT, force: bool = False) -> Path:
    """Write the ImageFolder tree under ``root`` (if missing or stale); returns ``root``."""
    root = Path(root)
    if not force and _manifest_ok(root):
        return root
    if root.exists():
        shutil.rmtree(root)
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    files: dict[str, str] = {}
    for split, (images, labels, orig) in digits_split().items():
        for c in CLASSES:
            (tmp / split / c).mkdir(parents=True, exist_ok=True)
        for img, label, i in zip(images, labels, orig):
            rel = f"{split}/{label}/{i:04d}.png"
            gray = upsample(img)
            Image.fromarray(np.repeat(gray[..., None], 3, axis=2), mode="RGB").save(tmp / rel)
            files[rel] = hashlib.sha1(gray.tobytes()).hexdigest()[:12]
    sizes = {s: sum(1 for f in files if f.startswith(s + "/")) for s in ("train", "val")}
    (tmp / "MANIFEST.json").write_text(json.dumps(
        {"version": VERSION, "source": "sklearn.datasets.load_digits", "img_size": IMG_SIZE,
         "split_seed": SPLIT_SEED, "sizes": sizes, "files": files}, indent=1, sort_keys=True) + "\n")
    tmp.rename(root)
    return root


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--force", action="store_true", help="regenerate even if the manifest matches")
    args = ap.parse_args(argv)
    root = build(args.root, args.force)
    man = json.loads((root / "MANIFEST.json").read_text())
    print(f"[demo-data] digits {man['sizes']} -> {root}")


if __name__ == "__main__":
    main()
