"""Bad input: one clear line on stderr, exit status 2, no record written."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from classification.build import build_model
from classification.cli import main
from runtime.records import load_records

from .conftest import FAST_ARGS


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as e:  # argparse errors
        code = int(e.code or 0)
    err = capsys.readouterr().err
    return code, err


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def assert_nothing_written(results: Path) -> None:
    assert not results.exists() or not any(p.is_file() for p in results.rglob("*")), list(results.rglob("*"))


def base(data: Path | str, results: Path, model: str = "deit_tiny") -> list[str]:
    return ["--model", model, "--data-dir", str(data), "--results-dir", str(results), *FAST_ARGS]


def test_missing_dataset(tmp_path, capsys) -> None:
    code, err = run_cli(base(tmp_path / "nope", tmp_path / "rec") + ["--tiny"], capsys)
    assert code == 2
    assert "does not exist" in error_line(err) and "class-folder" in error_line(err)
    assert_nothing_written(tmp_path / "rec")


def test_dataset_not_in_class_folder_layout(tmp_path, capsys) -> None:
    flat = tmp_path / "flat"
    for split in ("train", "val"):
        (flat / split).mkdir(parents=True)
        (flat / split / "img.png").write_bytes(b"")
    code, err = run_cli(base(flat, tmp_path / "rec") + ["--tiny"], capsys)
    assert code == 2 and "no class folders" in error_line(err)
    (flat / "val").rename(flat / "validation")
    code, err = run_cli(base(flat, tmp_path / "rec") + ["--tiny"], capsys)
    assert code == 2 and "no val/ folder" in error_line(err)
    assert_nothing_written(tmp_path / "rec")


def test_unknown_model_lists_valid_ones(imagenet_dir, tmp_path, capsys) -> None:
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec", model="deit_huge"), capsys)
    line = error_line(err)
    assert code == 2 and "deit_huge" in line
    for name in ("vit_small", "deit_base_distilled", "swin_small", "resnet101"):
        assert name in line
    assert_nothing_written(tmp_path / "rec")


@pytest.mark.parametrize("flag,value", [("--w-bits", "9"), ("--a-bits", "1"), ("--w-bits", "four")])
def test_bits_outside_range(flag, value, imagenet_dir, tmp_path, capsys) -> None:
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec") + ["--tiny", flag, value], capsys)
    assert code == 2 and "2..8" in error_line(err)
    assert_nothing_written(tmp_path / "rec")


@pytest.mark.parametrize("model,needle", [("resnet18", "resnet18_imagenet.pth.tar"),
                                          ("resnet50", "resnet50_imagenet.pth.tar"),
                                          ("resnet101", "resnet101-63fe2227.pth")])
def test_resnet_checkpoint_missing(model, needle, imagenet_dir, tmp_path, capsys) -> None:
    args = base(imagenet_dir, tmp_path / "rec", model=model) + ["--checkpoint-dir", str(tmp_path / "ckpt")]
    code, err = run_cli(args, capsys)
    line = error_line(err)
    assert code == 2 and needle in line and "--checkpoint" in line
    assert ("BRECQ" in line) if model != "resnet101" else ("torchvision" in line)
    assert_nothing_written(tmp_path / "rec")


def test_pretrained_weights_unreachable_offline(imagenet_dir, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hf_constants
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec"), capsys)
    line = error_line(err)
    assert code == 2 and "deit_tiny_patch16_224.fb_in1k" in line
    assert "cache" in line and "--checkpoint" in line
    assert_nothing_written(tmp_path / "rec")


def test_checkpoint_of_another_architecture(imagenet_dir, tmp_path, capsys) -> None:
    tiny, _ = build_model("deit_tiny", tiny=True)
    ckpt = tmp_path / "tiny_deit.pth"
    torch.save(tiny.state_dict(), ckpt)
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec") + ["--checkpoint", str(ckpt)], capsys)
    line = error_line(err)
    assert code == 2 and "does not match the architecture of deit_tiny" in line
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec", model="resnet18")
                        + ["--checkpoint", str(ckpt)], capsys)
    assert code == 2 and "does not match the architecture of resnet18" in error_line(err)
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec") + ["--checkpoint", str(tmp_path / "no.pth")], capsys)
    assert code == 2 and "does not exist" in error_line(err)
    assert_nothing_written(tmp_path / "rec")


def test_wrong_method_for_family(imagenet_dir, tmp_path, capsys) -> None:
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec", model="resnet18")
                        + ["--tiny", "--methods", "fp,repq,repq+qwt"], capsys)
    line = error_line(err)
    assert code == 2 and "'repq'" in line and "percentile_strict+qwt" in line
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec") + ["--tiny", "--methods", "percentile"], capsys)
    assert code == 2 and "repq+qwt" in error_line(err)
    assert_nothing_written(tmp_path / "rec")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on CPU-only machines")
def test_cuda_requested_without_cuda(imagenet_dir, tmp_path, capsys) -> None:
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec") + ["--tiny", "--device", "cuda"], capsys)
    assert code == 2 and "CUDA is not available" in error_line(err)
    assert_nothing_written(tmp_path / "rec")


# --- checked before any work: options, output paths, files -----------------------------------------------


@pytest.mark.parametrize("extra, needle", [
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--device", "foo"], "--device 'foo' is not a device: use cpu, cuda or cuda:N"),
    (["--device", "mps"], "only cpu and cuda devices are supported"),
    (["--workers", "-1"], "--workers must be an integer >= 0"),
    (["--model-kwargs", '{"foo": 1}'], "unexpected keyword argument 'foo'"),
    (["--methods", ","], "--methods names no method; valid methods for deit_tiny: fp,repq,repq+qwt"),
    (["--qwt-start-block", "99"], "--qwt-start-block 99: deit_tiny has 2 QwT blocks (0..1)"),
    (["--val-limit", "0"], "--val-limit must be >= 1 (omit it to evaluate every val image)"),
    (["--calib-size", "1000"], "--calib-size 1000 asks for more images than"),
    (["--qwt-size", "1000"], "--qwt-size 1000 asks for more images than"),
])
def test_options_refused_before_any_work(extra, needle, imagenet_dir, tmp_path, capsys) -> None:
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec") + ["--tiny", *extra], capsys)
    assert code == 2 and needle in error_line(err), err
    assert "Traceback" not in err
    assert_nothing_written(tmp_path / "rec")


def test_output_paths_checked_before_any_work(imagenet_dir, tmp_path, capsys) -> None:
    (tmp_path / "a_file").write_text("x")
    code, err = run_cli(base(imagenet_dir, tmp_path / "a_file" / "rec") + ["--tiny"], capsys)
    assert code == 2 and "a_file is a file, so the folder" in error_line(err)
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec") + ["--tiny", "--save-state", str(tmp_path)], capsys)
    assert code == 2 and "--save-state" in error_line(err) and "is a folder" in error_line(err)
    assert_nothing_written(tmp_path / "rec")
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".qwt-write-probe-*"))


def test_unwritable_results_dir(imagenet_dir, tmp_path, capsys) -> None:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        target = locked / "rec"
    elif os.path.isdir("/sys") and _sys_refuses_files():
        target = Path("/sys/qwt-records")  # root writes everywhere except pseudo file systems
    else:
        pytest.skip("no unwritable folder for this user")
    code, err = run_cli(base(imagenet_dir, target) + ["--tiny"], capsys)
    assert code == 2 and f"--results-dir {target}: cannot write in" in error_line(err)
    assert not target.exists()


def _sys_refuses_files() -> bool:
    import tempfile
    try:
        fd, name = tempfile.mkstemp(dir="/sys")
    except OSError:
        return True
    os.close(fd)
    os.unlink(name)
    return False


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_unreadable_images_name_their_file(imagenet_dir, tmp_path, capsys) -> None:
    # val: met during the first evaluation (nothing computed yet: no record)
    data = _copy(imagenet_dir, tmp_path / "bad_val")
    bad = data / "val" / "n00000002" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    code, err = run_cli(base(data, tmp_path / "rec") + ["--tiny"], capsys)
    assert code == 2 and f"cannot read image {bad}" in error_line(err) and "Traceback" not in err
    assert_nothing_written(tmp_path / "rec")
    # train: every calibration image is decoded before the FP evaluation
    data = _copy(imagenet_dir, tmp_path / "bad_train")
    bad = sorted((data / "train" / "n00000001").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    code, err = run_cli(base(data, tmp_path / "rec") + ["--tiny", "--qwt-size", "32"], capsys)
    assert code == 2 and f"cannot read image {bad}" in error_line(err) and "fp eval" not in err
    assert "top1" not in err  # refused before the FP evaluation
    assert_nothing_written(tmp_path / "rec")


def test_unreadable_image_in_a_loader_worker_is_one_line(imagenet_dir, tmp_path, capsys) -> None:
    data = _copy(imagenet_dir, tmp_path / "bad_val")
    bad = data / "val" / "n00000003" / "broken.png"
    bad.write_text("not a png")
    args = [a for a in base(data, tmp_path / "rec") if a not in ("--workers", "0")] + ["--tiny", "--workers", "1",
                                                                                      "--methods", "fp"]
    code, err = run_cli(args, capsys)
    assert code == 2 and error_line(err) == f"error: cannot read image {bad} (cannot identify image file); " \
                                            "remove or replace the file"


def test_bad_image_met_later_keeps_the_finished_records(imagenet_dir, tmp_path) -> None:
    """A val image that turns unreadable after the FP evaluation (stands for one met late in a long
    run): the run stops naming the file, and the FP record it finished is on disk."""
    from classification.errors import ImageReadError
    from classification.pipeline import ExperimentConfig, run_experiment

    from .conftest import FAST

    data = _copy(imagenet_dir, tmp_path / "data")
    victim = sorted((data / "val" / "n00000001").iterdir())[0]
    written = []

    def on_record(rec: dict) -> None:
        written.append(rec["method"])
        victim.write_bytes(b"garbage")

    cfg = ExperimentConfig(model="deit_tiny", tiny=True, data_dir=str(data), results_dir=str(tmp_path / "rec"),
                           methods=("fp", "repq"), **FAST)
    with pytest.raises(ImageReadError, match=f"cannot read image {victim}"):
        run_experiment(cfg, on_record=on_record)
    (rec,) = load_records(tmp_path / "rec", "imagenet")
    assert written == ["fp"] and rec["method"] == "fp"


def test_empty_val_class_folder(imagenet_dir, tmp_path, capsys) -> None:
    data = _copy(imagenet_dir, tmp_path / "data")
    (data / "val" / "n00000009").mkdir()
    (data / "train" / "n00000009").mkdir()
    shutil.copy(next((data / "train" / "n00000000").iterdir()), data / "train" / "n00000009" / "x.png")
    code, err = run_cli(base(data, tmp_path / "rec") + ["--tiny"], capsys)
    assert code == 2 and f"class folder {data / 'val' / 'n00000009'} holds no images" in error_line(err)
    assert_nothing_written(tmp_path / "rec")


def test_unreadable_checkpoint_and_state_files(imagenet_dir, tmp_path, capsys) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("hello, not a checkpoint\n")
    truncated = tmp_path / "cut.pt"
    tiny, _ = build_model("deit_tiny", tiny=True)
    torch.save(tiny.state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    for ckpt in (text, truncated):
        code, err = run_cli(base(imagenet_dir, tmp_path / "rec") + ["--tiny", "--checkpoint", str(ckpt)], capsys)
        assert code == 2 and f"checkpoint {ckpt} cannot be read as a state dict" in error_line(err), err
        code, err = run_cli(base(imagenet_dir, tmp_path / "rec") + ["--tiny", "--load-state", str(ckpt)], capsys)
        assert code == 2 and f"--load-state {ckpt}: not a readable calibrated state" in error_line(err), err
    assert_nothing_written(tmp_path / "rec")


def test_state_of_other_weights_or_of_a_detector_is_refused(imagenet_dir, tmp_path, capsys) -> None:
    """A state remembers a fingerprint of the FP weights it was calibrated from."""
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net, _ = build_model("deit_tiny", tiny=True, overrides={"num_classes": 4})
        ckpts.append(tmp_path / f"w{seed}.pth")
        torch.save(net.state_dict(), ckpts[-1])
    state = tmp_path / "state.pt"
    common = ["--tiny", "--model-kwargs", '{"num_classes": 4}', "--methods", "fp,repq"]
    code, _ = run_cli(base(imagenet_dir, tmp_path / "a") + common + ["--checkpoint", str(ckpts[0]),
                                                                    "--save-state", str(state)], capsys)
    assert code == 0 and state.is_file()
    code, err = run_cli(base(imagenet_dir, tmp_path / "b") + common + ["--checkpoint", str(ckpts[1]),
                                                                      "--load-state", str(state)], capsys)
    line = error_line(err)
    assert code == 2 and "was calibrated from other FP weights than" in line and str(ckpts[0]) in line
    assert_nothing_written(tmp_path / "b")
    code, _ = run_cli(base(imagenet_dir, tmp_path / "c") + common + ["--checkpoint", str(ckpts[0]),
                                                                    "--load-state", str(state)], capsys)
    assert code == 0 and len(load_records(tmp_path / "c", "imagenet")) == 2
    det_state = tmp_path / "det.pt"
    torch.save({"format": "qwt-state/1", "state_dict": {}, "compensated": {},
                "meta": {"detector": "mask_rcnn_swin_t", "w_bits": 4, "a_bits": 4}}, det_state)
    code, err = run_cli(base(imagenet_dir, tmp_path / "d") + common + ["--load-state", str(det_state)], capsys)
    assert code == 2 and "is a detection state (detector mask_rcnn_swin_t)" in error_line(err)


def test_class_subset_refused_unless_asked_then_labelled(imagenet_dir, tmp_path, capsys) -> None:
    """Two class folders named "3" and "7" for a trained 10-class model: numbered 0..1 they would be
    the wrong classes. Refused; with --class-subset each folder is the model's class of its name."""
    data = tmp_path / "digits37"
    for split in ("train", "val"):
        for src, name in (("n00000000", "3"), ("n00000001", "7")):
            shutil.copytree(imagenet_dir / split / src, data / split / name)
    net, _ = build_model("deit_tiny", tiny=True)
    ckpt = tmp_path / "trained.pth"
    torch.save(net.state_dict(), ckpt)
    args = base(data, tmp_path / "rec") + ["--tiny", "--checkpoint", str(ckpt), "--methods", "fp"]
    code, err = run_cli(args, capsys)
    line = error_line(err)
    assert code == 2 and "has 2 class folders but deit_tiny outputs 10 classes" in line and "--class-subset" in line
    assert_nothing_written(tmp_path / "rec")
    code, err = run_cli(args + ["--class-subset"], capsys)
    assert code == 0, err
    (rec,) = load_records(tmp_path / "rec", "imagenet")
    assert rec["dataset"]["class_subset"] is True and rec["dataset"]["classes"] == 2
    assert rec["dataset"]["benchmark"] is None and rec["config"]["class_subset"] is True


def test_subset_targets_by_name() -> None:
    from timm.data import ImageNetInfo

    from classification.data import subset_targets
    from classification.errors import DataLayoutError

    wnids = ImageNetInfo("imagenet-1k").label_names()
    assert subset_targets([wnids[5], wnids[999]], 1000) == [5, 999]
    assert subset_targets(["3", "7"], 10) == [3, 7]
    with pytest.raises(DataLayoutError, match="cannot map the class folders"):
        subset_targets(["cat", "dog"], 10)


def test_pretrained_unreachable_fails_in_seconds(imagenet_dir, tmp_path, capsys, monkeypatch) -> None:
    """Online mode, empty cache, a hub that does not answer: one line within seconds (no retries)."""
    import socket
    import time

    import huggingface_hub.constants as hf_constants
    with socket.socket() as s:  # a local port nobody listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.perf_counter()
    code, err = run_cli(base(imagenet_dir, tmp_path / "rec"), capsys)
    line = error_line(err)
    assert code == 2 and f"http://127.0.0.1:{port} does not answer" in line
    assert "--checkpoint FILE" in line and "CKPT_DIR" in line
    assert time.perf_counter() - t0 < 30
    assert_nothing_written(tmp_path / "rec")


def test_local_timm_weights_in_the_checkpoint_folder(tmp_path) -> None:
    """Offline use without the hub: <arch>.<tag>.pth in --checkpoint-dir is the pretrained weights."""
    from classification.build import construct
    from classification.registry import get

    spec = get("deit_tiny")
    torch.manual_seed(3)
    ref = construct(spec)
    torch.save(ref.state_dict(), tmp_path / f"{spec.timm_name}.pth")
    net, _ = build_model("deit_tiny", checkpoint_dir=str(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))


def test_defaults_device_and_workers() -> None:
    from classification.cli import build_parser, config_from_args
    from runtime.preflight import available_cpus

    args = build_parser().parse_args(["--model", "deit_tiny", "--data-dir", "x"])
    cfg = config_from_args(args, "cmd")
    assert cfg.device is None and cfg.workers == min(4, available_cpus())
    assert cfg.checkpoint_dir == "checkpoints"
    from classification.pipeline import plan_experiment
    assert plan_experiment(cfg).device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "default: cuda when torch sees a GPU" in " ".join(build_parser().format_help().split())


def test_qwt_named_options_reach_the_fit_and_the_record(imagenet_dir, tmp_path) -> None:
    """--qwt-solver / --half-arith are named deviations: the preset's fields recorded in config.qwt, the
    evaluation arithmetic in config (a run setting); never a paper cell."""
    from benchmarks.paper_cell import deviations
    from classification.cli import main
    from runtime.records import load_records
    code = main(["--model", "deit_tiny", "--tiny", "--methods", "repq+qwt", "--data-dir", str(imagenet_dir),
                 "--results-dir", str(tmp_path / "r"), "--qwt-solver", "streaming", "--half-arith", "emulated",
                 "--calib-size", "8", "--qwt-size", "16", "--batch-size", "8", "--workers", "0", "--no-progress"])
    assert code == 0
    (rec,) = load_records(tmp_path / "r")
    assert rec["config"]["qwt"]["regression"] == "sums" and rec["config"]["qwt"]["gate"] == "reference"
    assert rec["config"]["half_arith"] == "emulated" and "half_arith" not in rec["config"]["qwt"]
    devs = deviations(rec)  # (with the tiny model's and data's own deviations)
    assert "half_arith=emulated" in devs and "qwt.regression=sums" in devs and "qwt.gate=reference" not in devs
    with pytest.raises(SystemExit) as exc:  # argparse: one line, status 2
        main(["--model", "deit_tiny", "--data-dir", str(imagenet_dir), "--qwt-solver", "fast"])
    assert exc.value.code == 2
