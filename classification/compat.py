"""Compatibility shims for newer library versions."""
from __future__ import annotations


def pillow13_posterize_compat() -> bool:
    """Work around timm 1.0.x RandAugment on Pillow >= 13 (returns True when the shim is installed).

    The reference calibration augmentation ``rand-m9-mstd0.5-inc1`` may ask timm's ``posterize``
    to keep 0 bits; Pillow < 13 returned an all-black image for that, Pillow 13 raises
    ``ValueError: bits must be between or equal to 1 and 8``, which aborts a calibration at
    random (depending on the seed). This restores the Pillow < 13 result for 0 bits only (a LUT
    mapping every value to 0), leaving every other call untouched. Installed by
    :func:`classification.data.calib_transform`.
    """
    import numpy as np
    from PIL import Image, ImageOps
    from timm.data import auto_augment

    try:
        ImageOps.posterize(Image.fromarray(np.zeros((1, 1, 3), np.uint8)), 0)
        return False  # this Pillow accepts 0 bits
    except ValueError:
        pass
    if getattr(auto_augment.posterize, "_qwt_compat", False):
        return True
    original = auto_augment.posterize

    def posterize(img, bits_to_keep, **kw):
        if bits_to_keep <= 0:
            return img.point([0] * 256 * len(img.getbands()))
        return original(img, bits_to_keep, **kw)

    posterize._qwt_compat = True  # type: ignore[attr-defined]
    auto_augment.posterize = posterize
    auto_augment.NAME_TO_OP["Posterize"] = auto_augment.NAME_TO_OP["PosterizeIncreasing"] = \
        auto_augment.NAME_TO_OP["PosterizeOriginal"] = posterize
    return True
