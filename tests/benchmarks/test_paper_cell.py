"""Which records fill a paper cell (benchmarks.paper_cell) and what schema-1 records become."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.paper_cell import deviations, fills_paper_cell, label
from classification.config import ClassificationConfig
from detection.config import DetectionConfig
from runtime.config import record_config
from runtime.records import SCHEMA, load_records, upgrade, validate

from .factory import record

# the reference settings as both suites record them now (every field, qwt nested)
IMAGENET_QWT = {**record_config(ClassificationConfig(model="deit_small")), "model_overrides": {}}
COCO_QWT = record_config(DetectionConfig(detector="mask_rcnn_swin_t"))
# what a classification +qwt record held before the shared run config (flat QwT keys + nested qwt)
LEGACY_IMAGENET_QWT = {"calib_size": 32, "calib_augment": True, "qwt_size": 512, "start_block": 0, "kernel_size": 1,
                       "factor": 64, "tiny": False, "pretrained": True, "model_overrides": {},
                       "qwt_solver": "reference", "half_arith": "native",
                       "qwt": {"start_block": 0, "fp16_eval": True, "kernel_size": 1, "factor": 64, "conv_ridge": 1e-3,
                               "linear_ridge": 0.0, "store": "device", "solver": "reference", "half_arith": "native"}}
# ... and a detection one (flat, no nested qwt, no ridges)
LEGACY_COCO_QWT = {"window_pad": "zero", "qwt_size": 512, "qwt_img_size": 224, "start_block": 0,
                   "qwt_solver": "reference", "qwt_fp16_eval": False, "kernel_size": 1, "factor": 64}


def _qwt(config: dict, **changes) -> dict:
    return {**config, "qwt": {**config["qwt"], **changes}}


def exactly(rec: dict, config: dict) -> dict:
    """``rec`` with exactly ``config`` (the factory fills in the reference settings a test leaves out)."""
    return {**rec, "config": config}


def _imagenet(config: dict, **kw) -> dict:
    return exactly(record("imagenet", "deit_small", "repq+qwt", 4, {"top1": 71.0}, **kw), config)


def test_reference_full_split_fills_the_cell() -> None:
    assert deviations(_imagenet(IMAGENET_QWT)) == [] and fills_paper_cell(_imagenet(IMAGENET_QWT))
    coco = record("coco", "mask_rcnn_swin_t", "repq+qwt", 4, {"bbox_mAP": 1.0, "segm_mAP": 1.0}, images=5000,
                  config=COCO_QWT)
    assert fills_paper_cell(coco) and label(coco) == "reference"
    demo = record("demo", "demo_vit", "repq+qwt", 4, {"top1": 1.0}, images=600, config=IMAGENET_QWT)
    assert not fills_paper_cell(demo)  # the demo has no paper cells


@pytest.mark.parametrize("change, expected", [
    ({"qwt": {"regression": "sums"}}, "qwt.regression=sums"),
    ({"half_arith": "emulated"}, "half_arith=emulated"),
    ({"eval_fp16": False}, "eval_fp16=False"),
    ({"tiny": True}, "tiny=True"),
    ({"pretrained": False}, "pretrained=False"),
    ({"model_overrides": {"depth": 2}}, "model_kwargs={'depth': 2}"),
    ({"qwt_size": 256}, "qwt_size=256"),
    ({"calib_augment": False}, "calib_augment=False"),
    ({"qwt": {"start_block": 3}}, "qwt.start_block=3"),
    ({"qwt": {"linear_ridge": 0.1}}, "qwt.linear_ridge=0.1"),
])
def test_named_deviations_make_a_custom_row(change: dict, expected: str) -> None:
    rec = _imagenet(_qwt({**IMAGENET_QWT, **{k: v for k, v in change.items() if k != "qwt"}}, **change.get("qwt", {})))
    assert deviations(rec) == [expected] and not fills_paper_cell(rec)


def test_window_pad_other_than_the_reference_is_custom() -> None:
    rec = record("coco", "mask_rcnn_swin_t", "repq", 4, {"bbox_mAP": 1.0, "segm_mAP": 1.0}, images=5000,
                 config={**COCO_QWT, "window_pad": "exact"})
    assert deviations(rec) == ["window_pad=exact"]
    fp = record("coco", "mask_rcnn_swin_t", "fp", None, {"bbox_mAP": 1.0, "segm_mAP": 1.0}, images=5000,
                config={**COCO_QWT, "window_pad": "exact"})
    assert fills_paper_cell(fp)  # FP does not depend on the window padding of the quantized model


def test_settings_apply_to_their_methods_only() -> None:
    fp = record("imagenet", "deit_small", "fp", None, {"top1": 79.9}, config={**IMAGENET_QWT, "qwt_size": 16,
                                                                               "calib_size": 8})
    assert fills_paper_cell(fp)
    repq = record("imagenet", "deit_small", "repq", 4, {"top1": 69.0}, config={**IMAGENET_QWT, "qwt_size": 16})
    assert fills_paper_cell(repq)  # RepQ-ViT alone never saw the QwT images


def test_data_other_than_the_benchmark_split() -> None:
    assert deviations(_imagenet(IMAGENET_QWT, images=16, classes=4)) == [
        "custom data (16 images, 4 classes; not ImageNet val)"]
    assert deviations(_imagenet(IMAGENET_QWT, images=1000, partial=True)) == ["partial (1000 of 50000 images)"]
    subset = _imagenet(IMAGENET_QWT, images=250, classes=5, class_subset=True)
    assert deviations(subset) == ["custom data (250 images, 5 classes; not ImageNet val)", "class subset"]
    # 50,000 images of another class count are not ImageNet val either
    assert not fills_paper_cell(_imagenet(IMAGENET_QWT, classes=100))


def test_schema_1_records_are_read_and_judged_by_their_image_count(tmp_path: Path) -> None:
    v1 = {k: v for k, v in _imagenet(IMAGENET_QWT).items() if k != "dataset"}
    v1["schema"] = "qwt-record/1"
    up = upgrade(v1)
    assert up["schema"] == SCHEMA and up["dataset"]["benchmark"] == "ImageNet val" and up["dataset"]["inferred"]
    assert fills_paper_cell(validate(v1))
    tiny = {**v1, "images": 16}
    assert validate(tiny)["dataset"]["benchmark"] is None and not fills_paper_cell(validate(tiny))
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "old.json").write_text(json.dumps(tiny))
    (rec,) = load_records(tmp_path, "imagenet")
    assert rec["schema_read"] == "qwt-record/1" and deviations(rec)[0].startswith("custom data (16 images")


def test_committed_records_still_load() -> None:
    root = Path(__file__).resolve().parents[2] / "results" / "records"
    records = load_records(root)
    assert records and all(r["schema"] == SCHEMA for r in records)


def test_coco_resnet_backbone_qwt_kernel_and_factor_are_reference_settings() -> None:
    """A CNN-backbone detector fitted with another grouped-conv kernel or factor is a custom run."""
    rec = record("coco", "mask_rcnn_r50_fpn_1x", "percentile+qwt", 4, {"bbox_mAP": 1.0, "segm_mAP": 1.0},
                 images=5000, config=COCO_QWT)
    assert deviations(rec) == []
    rec = record("coco", "mask_rcnn_r50_fpn_1x", "percentile+qwt", 4, {"bbox_mAP": 1.0, "segm_mAP": 1.0},
                 images=5000, config=_qwt(COCO_QWT, kernel_size=3))
    assert deviations(rec) == ["qwt.kernel_size=3"]
    eval16 = record("coco", "mask_rcnn_swin_t", "repq+qwt", 4, {"bbox_mAP": 1.0, "segm_mAP": 1.0}, images=5000,
                    config={**COCO_QWT, "eval_fp16": True})
    assert deviations(eval16) == ["eval_fp16=True"]  # the detection reference evaluates the compensation in fp32


def test_a_missing_setting_is_a_deviation_not_the_reference() -> None:
    no_qwt = {k: v for k, v in IMAGENET_QWT.items() if k != "qwt"}
    devs = deviations(_imagenet(no_qwt))
    assert {"qwt.regression not recorded", "qwt.gate not recorded", "qwt.start_block not recorded"} <= set(devs)
    assert all(d.startswith("qwt.") and d.endswith(" not recorded") for d in devs)
    assert deviations(_imagenet({k: v for k, v in IMAGENET_QWT.items() if k != "calib_size"})) == \
        ["calib_size not recorded"]
    # a setting of another method is not asked for: RepQ-ViT alone needs no QwT settings
    assert fills_paper_cell(exactly(record("imagenet", "deit_small", "repq", 4, {"top1": 69.0}), no_qwt))


def test_legacy_records_are_read_into_the_typed_config() -> None:
    """The one legacy reader: flat QwT keys, nested qwt with run-level keys, renamed fields."""
    assert deviations(_imagenet(LEGACY_IMAGENET_QWT)) == []
    assert deviations(_imagenet({**LEGACY_IMAGENET_QWT, "qwt": {**LEGACY_IMAGENET_QWT["qwt"], "solver": "lstsq"}})) \
        == ["qwt.regression=sums", "qwt.gate=float64"]  # the old preset name read as its two fields
    # without the nested qwt only the flat keys are read: the rest is named as not recorded
    assert deviations(_imagenet({**LEGACY_IMAGENET_QWT, "factor": 16, "qwt": {}})) == [
        "eval_fp16 not recorded", "qwt.factor=16", "qwt.conv_ridge not recorded", "qwt.linear_ridge not recorded"]
    coco = exactly(record("coco", "mask_rcnn_r50_fpn_1x", "percentile+qwt", 4, {"bbox_mAP": 1.0, "segm_mAP": 1.0},
                          images=5000), LEGACY_COCO_QWT)
    # the old detection records did not hold the ridges nor the fp16 arithmetic's half_arith: named
    assert deviations(coco) == ["qwt.conv_ridge not recorded", "qwt.linear_ridge not recorded"]
