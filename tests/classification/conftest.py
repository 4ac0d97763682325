"""Fixtures: a synthetic ImageNet-style class-folder dataset written by the test session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

N_CLASSES = 4
TRAIN_PER_CLASS = 8
VAL_PER_CLASS = 4
# fast settings for every tiny end-to-end run
FAST = dict(calib_size=8, qwt_size=16, batch_size=8, workers=0, progress=False)
FAST_ARGS = ["--calib-size", "8", "--qwt-size", "16", "--batch-size", "8", "--workers", "0", "--no-progress"]


def write_dataset(root: Path, n_classes: int = N_CLASSES, train: int = TRAIN_PER_CLASS,
                  val: int = VAL_PER_CLASS, seed: int = 0) -> Path:
    """<root>/train/<wnid>/*.png and <root>/val/<wnid>/*.png; each class has its own mean colour."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 225, size=(n_classes, 3))
    for split, n in (("train", train), ("val", val)):
        for c in range(n_classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = colours[c] + rng.normal(0, 40, size=(40, 48, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{split}_{c}_{i}.png")
    return root


@pytest.fixture(scope="session")
def imagenet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("imagenet"))
