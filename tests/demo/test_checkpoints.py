"""The committed demo checkpoints: small, fp16, loadable through the suite's model builders, and
their FP accuracy equals what their cards say (±1 point)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from benchmarks.demo import data, models, train_cls

TOLERANCE = 1.0
MAX_TOTAL_MB = 8.0


def test_checkpoints_small_fp16_with_cards():
    total = 0
    for path in sorted(models.CHECKPOINTS.glob("*.pth")):
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["checkpoint"] == path.name and card["dtype"] == "float16"
        assert card["bytes"] == path.stat().st_size
        assert "command" in card and "versions" in card and card["seed"] == 0
        total += path.stat().st_size
    assert set(models.CLASSIFIERS) <= {p.stem for p in models.CHECKPOINTS.glob("*.pth")}
    assert total / 2**20 <= MAX_TOTAL_MB


@pytest.fixture(scope="module")
def val_split():
    return train_cls.load_split(data.build(), "val")


@pytest.mark.machine_kernels
@pytest.mark.parametrize("name", list(models.CLASSIFIERS))
def test_classifier_fp_accuracy_matches_card(name, val_split):
    """Built through classification.build (the registry spec + the suite's checkpoint loader, which
    casts the fp16 file back to the model's fp32), evaluated on the 600 test images."""
    from classification.build import build_model

    torch.set_num_threads(1)
    models.register_classifiers()
    spec = models.CLASSIFIERS[name]
    net, _ = build_model(name, checkpoint=str(spec.checkpoint))
    assert next(net.parameters()).dtype == torch.float32
    card = json.loads(spec.card.read_text())
    top1 = train_cls.evaluate(net, *val_split)
    assert abs(top1 - card["fp_top1"]) <= TOLERANCE, f"{name}: top-1 {top1:.2f} vs card {card['fp_top1']}"


@pytest.mark.detection
@pytest.mark.skipif(importlib.util.find_spec("mmcv") is None, reason="needs mmcv (scripts/install.sh)")
def test_detector_fp_map_matches_card(tmp_path):
    """The committed detector through the detection pipeline's FP path (100 val canvases)."""
    from benchmarks.demo import detection_data, run
    from detection.pipeline import DetectionRun, run_experiment

    card = json.loads((models.CHECKPOINTS / f"{run.DETECTOR}.json").read_text())
    recs = run_experiment(DetectionRun(
        config=str(run.DETECTOR_CONFIG), data_dir=str(detection_data.build()),
        checkpoint=str(models.CHECKPOINTS / f"{run.DETECTOR}.pth"), methods=("fp",),
        results_dir=tmp_path, workers=0, log_interval=10**6, work_dir=str(tmp_path / "wd")))
    got = recs[0]["metrics"]
    for m in ("bbox_mAP", "segm_mAP"):
        assert abs(got[m] - card["fp"][m]) <= TOLERANCE, f"{m}: {got[m]} vs card {card['fp'][m]}"
