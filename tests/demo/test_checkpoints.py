"""The committed demo checkpoints: small, fp16, loadable through the suite's model builders, and
their FP accuracy equals what their cards say (±1 point)."""
from __future__ import annotations

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
