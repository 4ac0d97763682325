"""Bad input: one clear line on stderr, exit status 2, no record written."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from classification.build import build_model
from classification.cli import main

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
