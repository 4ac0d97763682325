"""End to end on a synthetic COCO set: each detector of the table, tiny, through the same code path
as the real run (CLI -> run_experiment -> Runner test loop + CocoMetric), fp -> repq -> repq+qwt."""
from __future__ import annotations

import pytest
import torch

from detection.registry import DETECTORS
from runtime.records import load_records

from .helpers import TINY_DEPTHS

pytestmark = [pytest.mark.detection]


def _cli(args):
    from detection.cli import main

    return main([str(a) for a in args])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DETECTORS))
def test_tiny_detector_fp_repq_qwt_records(tiny, coco_root, tmp_path, name):
    cfg, ckpt = tiny[name]
    results = tmp_path / "records"
    state = tmp_path / "state.pth"
    n_val = 2 if name == "mask_rcnn_swin_t" else 1
    rc = _cli(["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt, "--w-bits", 4,
               "--a-bits", 4, "--methods", "fp,repq,repq+qwt", "--device", "cpu", "--qwt-size", 4,
               "--qwt-img-size", 96, "--qwt-batch-size", 2, "--val-limit", n_val, "--workers", 0,
               "--results-dir", results, "--work-dir", tmp_path / "work", "--save-state", state,
               "--seed", 0])
    assert rc == 0
    recs = {r["method"]: r for r in load_records(results, "coco")}
    assert set(recs) == {"fp", "repq", "repq+qwt"}
    for r in recs.values():
        assert r["model"] == f"tiny_{name}" and r["suite"] == "coco"
        assert r["images"] == n_val and r["partial"] is True
        for key in ("bbox_mAP", "segm_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP_50", "segm_mAP_75"):
            assert 0.0 <= r["metrics"][key] <= 100.0
        assert "coco/bbox_mAP" in r["coco_raw"] and "coco/segm_mAP" in r["coco_raw"]  # AP was computed
        assert r["provenance"]["command"].startswith("qwt-detect --config")
        assert r["config"]["checkpoint_format"] == "legacy"
        assert r["model_size"]["total_mb"] > 0
    assert recs["fp"]["w_bits"] is None and recs["repq"]["w_bits"] == 4
    # backbone feature error vs FP on held-out val images (items 1..; item 0 calibrates RepQ-ViT)
    assert "feature_err" not in recs["fp"]["metrics"]
    assert recs["repq"]["config"]["feature_probe_images"] == n_val - 1
    if n_val > 1:
        assert recs["repq"]["metrics"]["feature_err"] > 0 and recs["repq+qwt"]["metrics"]["feature_err"] > 0
    else:  # no held-out image: no metric rather than one measured on the calibration image
        assert "feature_err" not in recs["repq"]["metrics"]
    assert recs["repq"]["model_size"]["bits_per_weight"] == 4
    blocks = recs["repq+qwt"]["blocks"]
    assert len(blocks) == sum(TINY_DEPTHS) and all("r2" in b and "mse_before" in b for b in blocks)
    assert {"calibration_s", "qwt_s", "eval_s"} <= set(recs["repq+qwt"]["times"])
    assert recs["repq+qwt"]["model_size"]["qwt_params"] > 0
    assert state.is_file()
    # defaults reproduce the reference: zero window padding after the reparameterized norm1
    assert recs["repq"]["config"]["window_pad"] == "zero"
    pads = [v for k, v in torch.load(state, weights_only=False)["state_dict"].items() if k.endswith("pad_value")]
    assert pads and all(float(v.abs().max()) == 0 for v in pads)
    assert recs["repq"]["config"]["lazy_quantizers"] == []  # score_thr 0: the mask head is reached
    assert "filter_cfg" in recs["repq+qwt"]["config"]["qwt_calibration"]
    if name == "mask_rcnn_swin_t":  # reloading the calibrated state reproduces the numbers
        again = tmp_path / "again"
        rc = _cli(["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt, "--methods",
                   "repq+qwt", "--device", "cpu", "--val-limit", 2, "--workers", 0,
                   "--results-dir", again, "--work-dir", tmp_path / "work", "--load-state", state])
        assert rc == 0
        (r2,) = load_records(again, "coco")
        assert r2["metrics"] == recs["repq+qwt"]["metrics"]
        assert r2["coco_raw"] == recs["repq+qwt"]["coco_raw"]


def test_runner_keeps_the_run_device(tiny, coco_root, tmp_path, monkeypatch):
    """mmengine's Runner puts the model on the device mmengine chose at import ("cuda" on any GPU
    machine). Simulated here by a get_device() that answers "meta": a CPU run must stay on the
    CPU and evaluate (before the fix the detector was moved to that device)."""
    import mmengine.runner.runner as runner_mod

    monkeypatch.setattr(runner_mod, "get_device", lambda: "meta")
    cfg, ckpt = tiny["mask_rcnn_swin_t"]
    results = tmp_path / "records"
    rc = _cli(["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt, "--methods", "fp",
               "--device", "cpu", "--val-limit", 1, "--workers", 0, "--results-dir", results,
               "--work-dir", tmp_path / "work"])
    assert rc == 0
    (rec,) = load_records(results, "coco")
    assert rec["provenance"]["device"] == "cpu" and 0.0 <= rec["metrics"]["bbox_mAP"] <= 100.0
    assert runner_mod.get_device() == "meta"  # the library's own function is restored afterwards
