"""Bad requests: one line on stderr, non-zero exit, no record."""
from __future__ import annotations

import shutil

import pytest

from detection.registry import DETECTORS

pytestmark = pytest.mark.detection


def _run(args, capsys, results, defaults=("--device", "cpu", "--workers", "0")):
    from detection.cli import main

    try:
        rc = main([str(a) for a in args] + ["--results-dir", str(results), *defaults])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    ours = [line for line in err.splitlines() if line.startswith("qwt-detect: error: ")]
    assert len(ours) == 1 and err.splitlines()[-1] == ours[0], err  # one line, the last one
    assert "Traceback" not in err and "usage:" not in err, err
    assert not results.exists() or not any(results.rglob("*.json"))
    return ours[0]


def test_missing_coco_root(capsys, tmp_path):
    err = _run(["--detector", "mask_rcnn_swin_t", "--data-dir", tmp_path / "nope"], capsys, tmp_path / "r")
    assert "COCO root" in err and "not found" in err


def test_missing_annotation_file(capsys, tmp_path, coco_root):
    root = tmp_path / "coco"
    shutil.copytree(coco_root / "val2017", root / "val2017")
    err = _run(["--detector", "mask_rcnn_swin_t", "--data-dir", root], capsys, tmp_path / "r")
    assert "instances_val2017.json" in err and "not found" in err


def test_missing_checkpoint_names_release_url(capsys, tmp_path, coco_root):
    err = _run(["--detector", "cascade_mask_rcnn_swin_s", "--data-dir", coco_root,
                "--checkpoint-dir", tmp_path / "ckpts"], capsys, tmp_path / "r")
    assert "not found" in err and DETECTORS["cascade_mask_rcnn_swin_s"].url in err


def test_checkpoint_of_another_detector(capsys, tmp_path, coco_root, tiny):
    err = _run(["--config", tiny["cascade_mask_rcnn_swin_t"][0], "--data-dir", coco_root,
                "--checkpoint", tiny["mask_rcnn_swin_s"][1], "--methods", "fp"], capsys, tmp_path / "r")
    assert "does not match" in err and "looks like mask_rcnn" in err


@pytest.mark.parametrize("bits", [["--w-bits", "9"], ["--a-bits", "1"], ["--w-bits", "0"]])
def test_bits_outside_2_to_8(capsys, tmp_path, coco_root, bits):
    err = _run(["--detector", "mask_rcnn_swin_t", "--data-dir", coco_root, *bits], capsys, tmp_path / "r")
    assert "2..8" in err


def test_state_that_cannot_serve_the_methods(capsys, tmp_path, coco_root, tiny):
    import torch

    state = tmp_path / "state.pth"
    torch.save({"format": "qwt-state/1", "state_dict": {}, "compensated": {"b": {}},
                "meta": {"detector": "tiny_mask_rcnn_swin_t", "qwt": True, "w_bits": 4, "a_bits": 4}}, state)
    cfg, ckpt = tiny["mask_rcnn_swin_t"]
    base = ["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt, "--load-state", state]
    err = _run([*base, "--methods", "fp,repq"], capsys, tmp_path / "r")
    assert "holds QwT compensation" in err
    err = _run([*base, "--methods", "repq+qwt", "--w-bits", "6", "--a-bits", "6"], capsys, tmp_path / "r")
    assert "calibrated at W4A4" in err


@pytest.mark.parametrize("extra, needle", [
    (["--device", "foo"], "--device 'foo' is not a device: use cpu, cuda or cuda:N"),
    (["--workers", "-1"], "--workers must be an integer >= 0"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--methods", ","], "--methods names no method; choose from fp,repq,repq+qwt"),
    (["--val-limit", "0"], "--val-limit must be >= 1 (omit it to evaluate every val image), got 0"),
    (["--w-bits", "four"], "argument --w-bits: bits must be an integer in 2..8, got 'four'"),
])
def test_options_refused_before_any_work(capsys, tmp_path, coco_root, tiny, extra, needle):
    cfg, ckpt = tiny["mask_rcnn_swin_t"]
    err = _run(["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt, *extra], capsys, tmp_path / "r",
               defaults=())
    assert needle in err


def test_output_paths_checked_before_any_work(capsys, tmp_path, coco_root, tiny):
    cfg, ckpt = tiny["mask_rcnn_swin_t"]
    base = ["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt]
    (tmp_path / "a_file").write_text("x")
    err = _run(base, capsys, tmp_path / "a_file" / "r")
    assert "a_file is a file, so the folder" in err
    err = _run([*base, "--save-state", tmp_path], capsys, tmp_path / "r")
    assert "--save-state" in err and "is a folder" in err
    assert not list(tmp_path.rglob("*.tmp"))


def test_unreadable_state_files_and_states_of_other_models(capsys, tmp_path, coco_root, tiny):
    import torch

    cfg, ckpt = tiny["mask_rcnn_swin_t"]
    base = ["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt, "--methods", "repq"]
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    cut = tmp_path / "cut.pt"
    torch.save({"format": "qwt-state/1", "state_dict": {"w": torch.zeros(1000)}, "compensated": {}, "meta": {}}, cut)
    cut.write_bytes(cut.read_bytes()[:500])
    for bad in (text, cut):
        err = _run([*base, "--load-state", bad], capsys, tmp_path / "r")
        assert f"--load-state {bad}: not a readable calibrated state" in err
    cls = tmp_path / "cls.pt"
    torch.save({"format": "qwt-state/1", "state_dict": {}, "compensated": {},
                "meta": {"model": "deit_tiny", "method": "repq", "w_bits": 4, "a_bits": 4}}, cls)
    assert "is a classification state (model deit_tiny)" in _run([*base, "--load-state", cls], capsys, tmp_path / "r")
    other = tmp_path / "other.pt"
    torch.save({"format": "qwt-state/1", "state_dict": {}, "compensated": {},
                "meta": {"detector": "tiny_mask_rcnn_swin_s", "w_bits": 4, "a_bits": 4}}, other)
    assert "calibrated for the detector tiny_mask_rcnn_swin_s, not tiny_mask_rcnn_swin_t" in _run(
        [*base, "--load-state", other], capsys, tmp_path / "r")
    # the right detector and bits, calibrated from other FP weights (checked before any evaluation)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "qwt-state/1", "state_dict": {}, "compensated": {},
                "meta": {"detector": "tiny_mask_rcnn_swin_t", "w_bits": 4, "a_bits": 4, "checkpoint": "/elsewhere.pth",
                         "weights_fingerprint": "0123456789abcdef"}}, foreign)
    err = _run([*base, "--load-state", foreign], capsys, tmp_path / "r")
    assert f"was calibrated from other FP weights than {ckpt}" in err and "/elsewhere.pth" in err


def test_start_block_past_the_backbone(capsys, tmp_path, coco_root, tiny):
    cfg, ckpt = tiny["mask_rcnn_swin_t"]
    err = _run(["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt, "--qwt-size", 4,
                "--qwt-start-block", 99], capsys, tmp_path / "r")
    assert "--qwt-start-block 99: tiny_mask_rcnn_swin_t has 6 QwT blocks (0..5)" in err


def test_unreadable_images_are_named_before_any_work(capsys, tmp_path, coco_root, tiny):
    cfg, ckpt = tiny["mask_rcnn_swin_t"]
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    bad_train = sorted((root / "train2017").iterdir())[0]
    bad_train.write_bytes(b"garbage")
    err = _run(["--config", cfg, "--data-dir", root, "--checkpoint", ckpt, "--qwt-size", 8], capsys, tmp_path / "r")
    assert f"cannot read QwT train image {bad_train}" in err
    bad_val = sorted((root / "val2017").iterdir())[0]  # the RepQ-ViT calibration image
    bad_val.write_bytes(b"garbage")
    err = _run(["--config", cfg, "--data-dir", root, "--checkpoint", ckpt, "--methods", "fp,repq"], capsys,
               tmp_path / "r")
    assert f"cannot read val image {bad_val}" in err


@pytest.mark.slow
def test_bad_val_image_met_during_evaluation_keeps_finished_records(capsys, tmp_path, coco_root, tiny):
    """The last val image (not a calibration or probe image) turns unreadable after the FP record
    was written (stands for a bad image met late in a long run): one line naming it, FP record kept."""
    from detection.pipeline import DetectionRun, ExperimentError, run_experiment
    from runtime.records import load_records

    cfg, ckpt = tiny["mask_rcnn_swin_t"]
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    victim = sorted((root / "val2017").iterdir())[-1]

    def spoil(_report) -> None:  # called after each QwT block, i.e. after the FP evaluation
        victim.write_bytes(b"garbage")

    run = DetectionRun(config=str(cfg), data_dir=str(root), checkpoint=str(ckpt), methods=("fp", "repq+qwt"),
                       device="cpu", qwt_size=2, qwt_img_size=64, qwt_batch_size=2, workers=0, feature_probe=1,
                       results_dir=str(tmp_path / "rec"), work_dir=str(tmp_path / "work"), on_block=spoil)
    with pytest.raises(ExperimentError, match=f"cannot read val image {victim}"):
        run_experiment(run)
    (rec,) = load_records(tmp_path / "rec", "coco")
    assert rec["method"] == "fp" and rec["dataset"]["split_images"] == 3
