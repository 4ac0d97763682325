"""Bad requests: one line on stderr, non-zero exit, no record."""
from __future__ import annotations

import shutil

import pytest

from detection.registry import DETECTORS

pytestmark = pytest.mark.detection


def _run(args, capsys, results):
    from detection.cli import main

    rc = main([str(a) for a in args] + ["--results-dir", str(results), "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    ours = [line for line in err.splitlines() if line.startswith("qwt-detect: error: ")]
    assert len(ours) == 1 and err.splitlines()[-1] == ours[0], err  # one line, the last one
    assert not results.exists() or not any(results.rglob("*.json"))
    return ours[0]


def test_missing_coco_root(capsys, tmp_path):
    err = _run(["--detector", "mask_rcnn_swin_t", "--data-root", tmp_path / "nope"], capsys, tmp_path / "r")
    assert "COCO root" in err and "not found" in err


def test_missing_annotation_file(capsys, tmp_path, coco_root):
    root = tmp_path / "coco"
    shutil.copytree(coco_root / "val2017", root / "val2017")
    err = _run(["--detector", "mask_rcnn_swin_t", "--data-root", root], capsys, tmp_path / "r")
    assert "instances_val2017.json" in err and "not found" in err


def test_missing_checkpoint_names_release_url(capsys, tmp_path, coco_root):
    err = _run(["--detector", "cascade_mask_rcnn_swin_s", "--data-root", coco_root,
                "--ckpt-dir", tmp_path / "ckpts"], capsys, tmp_path / "r")
    assert "not found" in err and DETECTORS["cascade_mask_rcnn_swin_s"].url in err


def test_checkpoint_of_another_detector(capsys, tmp_path, coco_root, tiny):
    err = _run(["--config", tiny["cascade_mask_rcnn_swin_t"][0], "--data-root", coco_root,
                "--checkpoint", tiny["mask_rcnn_swin_s"][1], "--methods", "fp"], capsys, tmp_path / "r")
    assert "does not match" in err and "looks like mask_rcnn" in err


@pytest.mark.parametrize("bits", [["--w-bits", "9"], ["--a-bits", "1"], ["--w-bits", "0"]])
def test_bits_outside_2_to_8(capsys, tmp_path, coco_root, bits):
    err = _run(["--detector", "mask_rcnn_swin_t", "--data-root", coco_root, *bits], capsys, tmp_path / "r")
    assert "2..8" in err


def test_state_that_cannot_serve_the_methods(capsys, tmp_path, coco_root, tiny):
    import torch

    state = tmp_path / "state.pth"
    torch.save({"format": "qwt-state/1", "state_dict": {}, "compensated": {"b": {}},
                "meta": {"qwt": True, "w_bits": 4, "a_bits": 4}}, state)
    cfg, ckpt = tiny["mask_rcnn_swin_t"]
    base = ["--config", cfg, "--data-root", coco_root, "--checkpoint", ckpt, "--load-state", state]
    err = _run([*base, "--methods", "fp,repq"], capsys, tmp_path / "r")
    assert "holds QwT compensation" in err
    err = _run([*base, "--methods", "repq+qwt", "--w-bits", "6", "--a-bits", "6"], capsys, tmp_path / "r")
    assert "calibrated at W4A4" in err
