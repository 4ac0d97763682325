"""The experiment registry (benchmarks/registry.py) is the one list of benchmarked models: the
detector constructors, the Makefile's target lists and its command line agree with it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import registry
from detection.registry import DETECTORS, ZOO_DETECTORS

REPO = Path(__file__).resolve().parents[2]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=120)


def test_detectors_are_the_registered_models() -> None:
    assert [m.name for m in registry.models("coco")] == list(DETECTORS)
    assert [m.name for m in registry.models("coco", beyond_paper=True)] == list(ZOO_DETECTORS)
    for m in registry.models("coco"):
        assert m.family == "swin" and m.paper is not None, m.name  # the paper's Swin detectors
    for m in registry.models("coco", beyond_paper=True):
        assert m.family == ZOO_DETECTORS[m.name].backbone and m.paper is None, m.name


def test_every_model_has_rows_and_a_display_name() -> None:
    for m in registry.MODELS:
        rows = [e for e in registry.experiments(m.suite, beyond_paper=None) if e.model == m.name]
        assert {e.method for e in rows} >= {"fp", *m.methods}, m.name
        assert registry.display(m.name) == m.display != m.name
    assert len({m.name for m in registry.MODELS}) == len(registry.MODELS)


def test_unknown_model_lists_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="deit_small.*mask_rcnn_swin_t"):
        registry.model("deit_huge")


def test_the_registry_imports_no_heavy_library() -> None:
    """Make calls it on every invocation: standard library only (no torch, pandas, timm, mmdet)."""
    code = ("import sys, benchmarks.registry; "
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'timm', 'mmdet') if m in sys.modules))")
    proc = _run(sys.executable, "-c", code)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_command_line() -> None:
    py = (sys.executable, "-m", "benchmarks.registry")
    assert _run(*py, "models", "imagenet").stdout.split() == [m.name for m in registry.models("imagenet")]
    assert _run(*py, "methods", "coco", "retinanet_r50_fpn_1x").stdout.strip() == "percentile,percentile+qwt"
    bad = _run(*py, "methods", "coco", "deit_tiny")
    assert bad.returncode == 2 and "imagenet model" in bad.stderr


@needs_make
def test_make_lists_come_from_the_registry(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp"
    stamp.touch()
    listed = _run("make", "--no-print-directory", "imagenet-list", f"STAMP={stamp}")
    assert listed.returncode == 0 and listed.stdout.split() == registry.make_targets("imagenet")
    assert registry.make_targets("imagenet")[-1] == "imagenet-resnet101-strict-w6a6"
    zoo = _run("make", "-n", "--no-print-directory", "coco-zoo-all", f"STAMP={stamp}", "DEVICE=cpu")
    assert zoo.returncode == 0, zoo.stderr
    for m in registry.models("coco", beyond_paper=True):
        assert f"coco-{m.name}-w4a4 COCO_METHODS=fp,{','.join(m.methods)}" in zoo.stdout
        assert f"coco-{m.name}-w6a6 COCO_METHODS={','.join(m.methods)}" in zoo.stdout
    unknown = _run("make", "-n", "--no-print-directory", "coco-deit_tiny-w4a4", f"STAMP={stamp}", "DEVICE=cpu")
    assert unknown.returncode != 0 and "unknown detector 'deit_tiny'; choose from mask_rcnn_swin_t" in unknown.stderr
