"""RandAugment's posterize with 0 bits (timm ``inc1`` at high magnitude) must not crash calibration."""
from __future__ import annotations

import numpy as np
from PIL import Image

from classification.data import calib_transform
from classification.registry import get


def test_calibration_augmentation_survives_posterize_zero_bits() -> None:
    calib_transform(get("deit_tiny"))  # installs the shim where Pillow needs it
    from timm.data import auto_augment

    img = Image.fromarray(np.full((8, 8, 3), 200, np.uint8))
    out = auto_augment.NAME_TO_OP["PosterizeIncreasing"](img, 0)
    assert np.asarray(out).max() == 0  # Pillow < 13's result: every value keeps 0 bits
    same = auto_augment.NAME_TO_OP["PosterizeIncreasing"](img, 4)
    assert np.asarray(same).max() == 192  # other bit counts unchanged
