"""Detection under torchrun (CPU, gloo, 2 processes, mmengine's 'pytorch' launcher): the process
group is opened with the device's backend (mmengine's own init_dist assumes CUDA), the Runner's
test loop shards the 3 val images over 2 ranks (mmengine pads one duplicate; the evaluator drops
it, see test_helpers), and rank 0 alone writes one record per method, counting 3 images."""
from __future__ import annotations

import json

import pytest

from .conftest import launch

mmdet = pytest.importorskip("mmdet", reason="needs mmdet")
pytest.importorskip("mmcv.ops", reason="needs mmcv with compiled ops")
pytestmark = [pytest.mark.detection, pytest.mark.slow]


def test_two_processes_evaluate_every_val_image_once(tmp_path) -> None:
    from tests.detection.helpers import tiny_checkpoint, tiny_config, write_synthetic_coco

    root = write_synthetic_coco(tmp_path / "coco", n_val=3, n_train=8)
    cfg = tiny_config("mask_rcnn_swin_t", tmp_path)
    ckpt = tiny_checkpoint(cfg, tmp_path / "tiny.pth", legacy=True)
    proc = launch("detection", ["--launcher", "pytorch", "--config", str(cfg), "--data-dir", str(root),
                                "--checkpoint", str(ckpt), "--methods", "fp,repq", "--device", "cpu",
                                "--workers", "0", "--results-dir", str(tmp_path / "rec"),
                                "--work-dir", str(tmp_path / "work")], 2, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "rec" / "coco").glob("*.json"))]
    assert sorted(r["method"] for r in records) == ["fp", "repq"]  # rank 0 only
    for r in records:
        assert r["images"] == 3 and r["partial"] is False
        assert r["provenance"]["world_size"] == 2 and r["config"]["launcher"] == "pytorch"
        assert "coco/bbox_mAP" in r["coco_raw"] and "coco/segm_mAP" in r["coco_raw"]
