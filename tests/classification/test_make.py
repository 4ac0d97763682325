"""The real Make targets, end to end on the synthetic dataset with a tiny model."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.records import load_records

from .conftest import FAST_ARGS

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def make(target: str, imagenet: Path, results: Path, stamp: Path, extra: list[str] = ()) -> subprocess.CompletedProcess:
    stamp.touch()  # stands in for the installed-venv stamp: the test must not (re)install
    cls_args = " ".join(["--tiny", "--qwt-factor", "16", "--results-dir", str(results), *FAST_ARGS])
    cmd = ["make", "--no-print-directory", "-C", str(REPO), target, f"IMAGENET={imagenet}",
           f"STAMP={stamp}", f"PY={sys.executable}", "CLS_TABLES=0", f"CLS_ARGS={cls_args}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("target,model,methods", [
    ("imagenet-deit_small_distilled-w3a5", "deit_small_distilled", {"fp", "repq", "repq+qwt"}),
    ("imagenet-resnet18-strict-w4a4", "resnet18", {"fp", "percentile_strict", "percentile_strict+qwt"}),
])
def test_make_target_end_to_end(target, model, methods, imagenet_dir, tmp_path) -> None:
    proc = make(target, imagenet_dir, tmp_path / "rec", tmp_path / "stamp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = load_records(tmp_path / "rec", "imagenet")
    assert {r["method"] for r in records} == methods
    bits = target.rsplit("-", 1)[1]
    for r in records:
        assert r["model"] == model
        if r["method"] != "fp":
            assert f"w{r['w_bits']}a{r['a_bits']}" == bits
        assert "-m classification --model " + model in r["provenance"]["command"]


def test_make_rejects_malformed_target(imagenet_dir, tmp_path) -> None:
    proc = make("imagenet-deit_tiny-w9a4", imagenet_dir, tmp_path / "rec", tmp_path / "stamp")
    assert proc.returncode != 0 and "w<2..8>a<2..8>" in proc.stderr
    assert not (tmp_path / "rec").exists()


def test_make_lists_the_whole_table(tmp_path) -> None:
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "imagenet-list",
                           f"STAMP={tmp_path / 'stamp'}"], capture_output=True, text=True, timeout=60)
    targets = proc.stdout.split()
    assert len(targets) == 13 * 2 + 3 * 2
    assert "imagenet-vit_base-w6a6" in targets and "imagenet-resnet101-strict-w4a4" in targets


def test_make_defaults_device_and_checkpoint_folder(tmp_path) -> None:
    """DEVICE defaults to what torch sees (cuda on a GPU machine), CKPT_DIR to checkpoints/ for both
    suites (the CLIs' default too)."""
    gpu_python = tmp_path / "python"
    gpu_python.write_text("#!/bin/sh\necho cuda\n")  # stands in for a python whose torch sees a GPU
    gpu_python.chmod(0o755)
    (tmp_path / "stamp").touch()

    def dry(target: str, *extra: str) -> str:
        proc = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO), target,
                               f"STAMP={tmp_path / 'stamp'}", "CLS_TABLES=0", *extra],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return " ".join(proc.stdout.split())

    for target, ckpt in (("imagenet-deit_tiny-w4a4", "--checkpoint-dir checkpoints"),
                         ("coco-mask_rcnn_swin_t-w4a4", "--checkpoint-dir checkpoints")):
        assert "--device cuda" in dry(target, f"PY={gpu_python}") and ckpt in dry(target, f"PY={gpu_python}")
        here = "cuda" if __import__("torch").cuda.is_available() else "cpu"
        assert f"--device {here}" in dry(target, f"PY={sys.executable}")
        assert "--device cpu" in dry(target, f"PY={gpu_python}", "DEVICE=cpu")
        assert "/ckpt" in dry(target, f"PY={gpu_python}", "CKPT_DIR=/ckpt")
    from classification.build import DEFAULT_CHECKPOINT_DIR
    from detection.pipeline import DEFAULT_CKPT_DIR
    assert DEFAULT_CHECKPOINT_DIR == DEFAULT_CKPT_DIR == "checkpoints"
