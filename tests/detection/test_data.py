"""QwT calibration images: drawn from the images mmdet's training dataset keeps (annotated, min
side >= 32, as the reference's mmdet 2.x ``qwerty_calibration`` dataset), never from the rest of
the folder."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from .helpers import write_synthetic_coco

pytestmark = pytest.mark.detection

N_TRAIN = 6  # annotated train images of the synthetic set, all >= 120 px


def _add_unusable_train_images(root):
    """Train images the filter drops (two without annotations, one annotated 31 px wide), one it
    keeps (annotated, exactly 32 px: min_size is inclusive) and one file no annotation lists."""
    ann_path = root / "annotations" / "instances_train2017.json"
    coco = json.loads(ann_path.read_text())
    next_ann = max(a["id"] for a in coco["annotations"]) + 1
    dropped, kept = [], []
    for k, (w, h, annotated) in enumerate([(160, 120, False), (200, 150, False), (31, 64, True),
                                          (32, 48, True)]):
        img_id = 2000 + k
        name = f"{img_id:012d}.jpg"
        cv2.imwrite(str(root / "train2017" / name), np.full((h, w, 3), 90 + 20 * k, np.uint8))
        coco["images"].append({"id": img_id, "file_name": name, "width": w, "height": h})
        if annotated:
            coco["annotations"].append({
                "id": next_ann + k, "image_id": img_id, "category_id": 1, "bbox": [2.0, 2.0, 20.0, 20.0],
                "area": 400.0, "iscrowd": 0, "segmentation": [[2, 2, 22, 2, 22, 22, 2, 22]]})
        (kept if annotated and min(w, h) >= 32 else dropped).append(name)
    cv2.imwrite(str(root / "train2017" / "unlisted.jpg"), np.zeros((64, 64, 3), np.uint8))
    ann_path.write_text(json.dumps(coco))
    return dropped + ["unlisted.jpg"], kept


@pytest.fixture(scope="module")
def filtered_coco(tmp_path_factory):
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from detection.data import set_data_root
    from detection.registry import DETECTORS

    register_all_modules(init_default_scope=True)
    root = write_synthetic_coco(tmp_path_factory.mktemp("coco_filtered"), n_val=1, n_train=N_TRAIN)
    dropped, kept = _add_unusable_train_images(root)
    cfg = Config.fromfile(str(DETECTORS["mask_rcnn_swin_t"].config_path))
    set_data_root(cfg, root)
    valid = {f"{1000 + k + 1:012d}.jpg" for k in range(N_TRAIN)} | set(kept)
    return cfg, valid, set(dropped)


def test_qwt_images_come_from_the_filtered_training_set(filtered_coco):
    from detection.data import DataError, qwt_image_files

    cfg, valid, dropped = filtered_coco
    assert len(valid) == N_TRAIN + 1 and len(dropped) == 4
    for seed in range(4):
        names = [p.name for p in qwt_image_files(cfg, len(valid) - 2, seed)]
        assert len(set(names)) == len(names) == len(valid) - 2 and set(names) <= valid, seed
    assert {p.name for p in qwt_image_files(cfg, len(valid), 0)} == valid  # all of them, no other
    # more than the filter keeps: the error names the count after filtering (the folder has more)
    with pytest.raises(DataError, match=rf"keeps {len(valid)} after filtering"):
        qwt_image_files(cfg, len(valid) + 1, 0)


def test_qwt_image_pool_is_mmdets_filtered_train_dataset(filtered_coco):
    from detection.data import qwt_image_files, qwt_image_pool, train_filter_cfg

    cfg, valid, dropped = filtered_coco
    assert train_filter_cfg(cfg) == {"filter_empty_gt": True, "min_size": 32}  # the mmdet 3.3 config
    pool = [p.name for p in qwt_image_pool(cfg)]
    assert set(pool) == valid and not set(pool) & dropped
    # the seeded sample: same seed, same images; another seed, another sample
    assert qwt_image_files(cfg, 3, 5) == qwt_image_files(cfg, 3, 5)
    assert any(qwt_image_files(cfg, 3, 5) != qwt_image_files(cfg, 3, s) for s in range(6, 10))


def test_qwt_batches_resize_and_normalise(filtered_coco):
    import torch
    from mmdet.registry import MODELS

    from detection.data import qwt_batches

    cfg, valid, _ = filtered_coco

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.data_preprocessor = MODELS.build(cfg.model.data_preprocessor)

    batches = list(qwt_batches(cfg, Holder(), 5, 64, seed=0, batch_size=2))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64)]
    x = torch.cat(batches)
    assert x.dtype == torch.float32 and -3 < float(x.mean()) < 3  # normalized, not 0..255
    # rank shards of a 2-process run partition the same sample
    shards = [torch.cat(list(qwt_batches(cfg, Holder(), 5, 64, 0, 2, r, 2))) for r in (0, 1)]
    assert sorted(float(t.sum()) for t in torch.cat(shards)) == sorted(float(t.sum()) for t in x)


# img_norm_cfg of the reference's configs (configs/_base_/datasets/coco_instance.py and the five
# configs/swin/*.py of QwT-det-RepQ-ViT): mean / std in BGR->RGB order, to_rgb=True
REF_MEAN, REF_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


@pytest.mark.machine_kernels
@pytest.mark.parametrize("name", ["mask_rcnn_swin_t", "cascade_mask_rcnn_swin_b"])
def test_input_normalisation_is_the_reference_normalize_within_one_ulp(name):
    """The reference normalizes in its mmdet 2.11 pipeline: ``Normalize`` keeps mean / std as
    float32 arrays and calls mmcv's ``imnormalize`` (BGR->RGB, then cv2 ``x - mean`` and
    ``x * (1 / std)`` with the reciprocal in float64). mmdet 3's ``DetDataPreprocessor`` computes
    ``(x - mean) / std`` in float32 torch: an IEEE division, the same bits on any machine.

    How cv2 multiplies by the float64 reciprocal depends on the OpenCV build: in float64 (then the
    result equals ours on every value 0..255 of every channel, measured with the development
    machine's OpenCV) or in float32 with the reciprocal rounded to float32 (OpenCV 5.1: 27.9 % of
    the values one float32 ulp away). The test holds either way: ours is the float32 quotient, the
    reference's is one of those two formulas, and they are never more than one ulp apart."""
    import mmcv
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from detection.registry import DETECTORS

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(str(DETECTORS[name].config_path))
    pp = MODELS.build(cfg.model.data_preprocessor)
    values = np.arange(256, dtype=np.uint8)
    bgr = np.repeat(values[None, :, None], 3, axis=2)  # (1, 256, 3): every value in each channel
    ours = pp({"inputs": [torch.from_numpy(bgr).permute(2, 0, 1).contiguous()], "data_samples": None},
              False)["inputs"][0, :, :1, :256].permute(1, 2, 0).numpy()  # (1, 256, 3) RGB, unpadded
    mean, std = np.array(REF_MEAN, np.float32), np.array(REF_STD, np.float32)
    centred = bgr[..., ::-1].astype(np.float32) - mean  # exact: integers minus float32 means
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, centred / std)  # the float32 quotient, bit for bit
    double_product = (centred.astype(np.float64) * (1 / std.astype(np.float64))).astype(np.float32)
    single_product = centred * (1 / std.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(ours, double_product)  # = imnormalize's formula in float64
    ref = mmcv.imnormalize(bgr, mean, std, to_rgb=True)  # this machine's OpenCV
    assert ref.dtype == np.float32
    assert np.all((ref == double_product) | (ref == single_product))
    differ = ours != ref
    assert np.all(np.abs(ours - ref)[differ] <= np.spacing(np.abs(ours))[differ])  # at most one ulp
    assert not np.array_equal(double_product, single_product)  # the check can see a one-ulp difference
