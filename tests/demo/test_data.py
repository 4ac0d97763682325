"""The demo's data: fixed split, deterministic bytes, ImageFolder layout, valid COCO."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.demo import data, detection_data


def _digest(root: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return data.build(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    return detection_data.build(tmp_path_factory.mktemp("coco") / "digits-coco")


def test_digits_split_is_fixed_and_stratified():
    split = data.digits_split()
    tr, te = split["train"][2], split["val"][2]
    assert len(tr) == 1197 and len(te) == data.TEST_SIZE == 600
    assert not set(tr) & set(te) and len(set(tr) | set(te)) == 1797
    counts = np.bincount(split["val"][1], minlength=10)
    assert counts.min() >= 57 and counts.max() <= 62  # stratified: ~60 per class
    again = data.digits_split()
    assert (again["val"][2] == te).all()


def test_digits_imagefolder_layout(digits: Path):
    for split, n in (("train", 1197), ("val", 600)):
        assert sorted(p.name for p in (digits / split).iterdir()) == list(data.CLASSES)
        files = sorted((digits / split).glob("*/*.png"))
        assert len(files) == n
    im = Image.open(files[0])
    assert im.size == (32, 32) and im.mode == "RGB"
    arr = np.asarray(im)
    assert (arr[..., 0] == arr[..., 1]).all() and arr.max() > 200


def test_digits_deterministic(digits: Path, tmp_path: Path):
    again = data.build(tmp_path / "again")
    assert _digest(again) == _digest(digits)
    # idempotent: a matching manifest is reused, not regenerated
    mtime = (again / "MANIFEST.json").stat().st_mtime_ns
    data.build(tmp_path / "again")
    assert (again / "MANIFEST.json").stat().st_mtime_ns == mtime


def test_mean_std_constants_match_the_data(digits: Path):
    mean, std = data.stats(digits)
    assert abs(mean - data.MEAN[0]) < 1e-3 and abs(std - data.STD[0]) < 1e-3


def test_coco_valid_and_consistent(coco: Path):
    from pycocotools.coco import COCO

    for split, n in detection_data.SIZES.items():
        api = COCO(str(coco / "annotations" / f"instances_{split}.json"))
        assert len(api.getImgIds()) == n
        assert sorted(c["name"] for c in api.loadCats(api.getCatIds())) == list(data.CLASSES)
        anns = api.loadAnns(api.getAnnIds())
        per_image = np.bincount([a["image_id"] for a in anns])[1:]
        assert per_image.min() >= 1 and per_image.max() <= 4
        for a in anns[:50]:
            m = api.annToMask(a)
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert a["area"] == m.sum() > 0
            assert 10 <= max(a["bbox"][2:]) <= detection_data.SCALE[1]
        info = api.loadImgs(api.getImgIds()[0])[0]
        im = Image.open(coco / split / info["file_name"])
        assert im.size == (128, 128) and im.mode == "RGB"


def test_coco_deterministic(coco: Path, tmp_path: Path):
    again = detection_data.build(tmp_path / "again")
    assert _digest(again) == _digest(coco)
    man = json.loads((again / "MANIFEST.json").read_text())
    assert man["sizes"] == detection_data.SIZES
