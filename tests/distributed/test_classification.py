"""Classification under torchrun (CPU, gloo, 2 processes) equals one process.

One tiny DeiT run in one process (``python -m classification``) and one with 2 processes through
the real Make target (``make imagenet-deit_tiny-w4a4 GPUS=2``, i.e. ``python -m
torch.distributed.run --standalone --nproc_per_node 2 -m classification ...``). Batch size 4: the
16 QwT images are 4 batches (2 per process, so the float64 normal equations are summed in a
different order than in one process) and the 11 val images 3 batches (1 on rank 0, 2 on rank 1).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import REPO, TINY_ARGS, VAL_IMAGES, child_env, launch

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")
ARGS = TINY_ARGS
RUN_DEPENDENT = ("command", "results_dir", "save_state")  # config keys naming this run's paths


def _records(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted((root / "imagenet").glob("*.json")):
        rec = json.loads(p.read_text())
        out[rec["method"]] = rec
    return out


@pytest.fixture(scope="module")
def runs(odd_imagenet, tmp_path_factory) -> dict[int, tuple[dict[str, dict], Path]]:
    base = tmp_path_factory.mktemp("dist_runs")
    out = {}
    one = base / "one"
    one.mkdir()
    proc = launch("classification", ["--model", "deit_tiny", "--w-bits", "4", "--a-bits", "4", "--data-dir",
                                     str(odd_imagenet), "--checkpoint-dir", "checkpoints", *ARGS,
                                     "--results-dir", str(one / "rec"),
                                     "--save-state", str(one / "state.pt")], 0, one)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out[1] = (_records(one / "rec"), one / "state.pt")
    if shutil.which("make") is None:
        pytest.skip("needs GNU make")
    two = base / "two"
    two.mkdir()
    (two / "stamp").touch()  # stands in for the installed-venv stamp
    cls_args = " ".join([*ARGS, "--results-dir", str(two / "rec"), "--save-state", str(two / "state.pt")])
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "imagenet-deit_tiny-w4a4", "GPUS=2",
                           f"IMAGENET={odd_imagenet}", f"STAMP={two / 'stamp'}", f"PY={sys.executable}",
                           "CLS_TABLES=0", f"CLS_ARGS={cls_args}"],
                          capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m classification" in proc.stdout
    out[2] = (_records(two / "rec"), two / "state.pt")
    return out


def test_compensation_equals_one_process(runs) -> None:
    one = torch.load(runs[1][1], map_location="cpu", weights_only=False)
    two = torch.load(runs[2][1], map_location="cpu", weights_only=False)
    assert one["compensated"] == two["compensated"] and len(one["compensated"]) == 2
    assert one["state_dict"].keys() == two["state_dict"].keys()
    comp = [k for k in one["state_dict"] if ".compensation." in k]
    assert len(comp) == 4  # W, b of both blocks
    for key, a in one["state_dict"].items():
        b = two["state_dict"][key]
        if not isinstance(a, torch.Tensor):  # quantizer settings
            assert a == b, key
            continue
        if not torch.is_floating_point(a):
            assert torch.equal(a, b), key
            continue
        rel = float((a.double() - b.double()).norm() / a.double().norm().clamp_min(1e-30))
        assert rel <= 1e-5, f"{key}: relative difference {rel:.2e}"
    assert all(one["state_dict"][k].abs().sum() > 0 for k in comp)  # a real fit, not zeros


def test_records_equal_one_process(runs) -> None:
    one, two = runs[1][0], runs[2][0]
    assert sorted(one) == sorted(two) == ["fp", "repq", "repq+qwt"]  # rank 0 only: one record per method
    for method, a in one.items():
        b = two[method]
        assert a["provenance"]["world_size"] == 1 and b["provenance"]["world_size"] == 2
        assert a["images"] == b["images"] == VAL_IMAGES and not a["partial"] and not b["partial"]
        assert a["metrics"]["top1"] == b["metrics"]["top1"] and a["metrics"]["top5"] == b["metrics"]["top5"]
        assert a["metrics"].keys() == b["metrics"].keys()
        for k, v in a["metrics"].items():
            assert b["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (method, k)

        def strip(r: dict) -> dict:
            return {k: v for k, v in r.items() if k not in ("provenance", "times", "blocks", "metrics", "config")}

        assert strip(a) == strip(b)
        assert {k: v for k, v in a["config"].items() if k not in RUN_DEPENDENT} == \
               {k: v for k, v in b["config"].items() if k not in RUN_DEPENDENT}
        assert len(a["blocks"]) == len(b["blocks"])
        for ba, bb in zip(a["blocks"], b["blocks"]):
            assert (ba["index"], ba["name"], ba["applied"], ba["samples"]) == \
                   (bb["index"], bb["name"], bb["applied"], bb["samples"])
            for k in ("r2", "mse_before", "mse_after"):
                assert bb[k] == pytest.approx(ba[k], rel=1e-6), (method, ba["name"], k)
    assert one["repq+qwt"]["config"]["qwt_images"] == two["repq+qwt"]["config"]["qwt_images"] == 16
    assert one["repq+qwt"]["blocks"][0]["samples"] == 16 * 17  # all 16 images x 17 tokens, summed over ranks


def test_failing_worker_fails_the_run_and_keeps_finished_records(odd_imagenet, tmp_path) -> None:
    """Rank 1 raises when QwT starts (tests.distributed.failing_run monkeypatches the QwT step)
    (after fp and repq were evaluated, while rank 0 waits in the first all-reduce): the launcher
    exits non-zero with rank 1's error; the fp and repq records, complete and written by rank 0 as
    each finished, are kept; no repq+qwt record, no state."""
    proc = launch("tests.distributed.failing_run", ["1", "_fit", "--model", "deit_tiny", "--data-dir",
                                                    str(odd_imagenet), *ARGS, "--results-dir", str(tmp_path / "rec"),
                                                    "--save-state", str(tmp_path / "state.pt")], 2, tmp_path,
                  QWT_DIST_TIMEOUT_S="60")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "InjectedFailure: injected failure on rank 1 at step '_fit'" in out, out
    assert "deit_tiny repq w4a4: top1" in out  # it failed after two methods were evaluated...
    assert sorted(_records(tmp_path / "rec")) == ["fp", "repq"]  # ...whose records are kept
    assert not (tmp_path / "state.pt").exists() and not list(tmp_path.rglob("*.tmp"))


def test_bad_input_fails_every_process_before_the_group(tmp_path) -> None:
    proc = launch("classification", ["--model", "deit_tiny", "--data-dir", str(tmp_path / "missing"), *ARGS,
                                     "--results-dir", str(tmp_path / "rec")], 2, tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("error: dataset folder") == 2  # both ranks say why, nobody waits
    assert not (tmp_path / "rec").exists()
