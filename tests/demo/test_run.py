"""A reduced demo end to end (one model, one seed, one bit width, few test images) through the
suite's classification / detection pipelines: demo records and a rendered results table, written
to a temporary folder (never into results/)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from benchmarks.demo import run
from runtime.records import load_records


def _reduced(tmp_path: Path, model: str, limit: int, f64: bool = False) -> tuple[list[dict], str]:
    records, out = tmp_path / "records", tmp_path / "demo.md"
    args = ["--models", model, "--seeds", "0", "--bits", "4", "--test-limit", str(limit),
            "--records", str(records), "--out", str(out), "--threads", "1", *([] if f64 else ["--no-f64"])]
    assert run.main(args) == 0
    return load_records(records, "demo"), out.read_text()


def test_reduced_demo_classifier(tmp_path: Path):
    recs, table = _reduced(tmp_path, "demo_vit", 60, f64=True)
    assert sorted(r["method"] for r in recs) == ["fp", "repq", "repq+qwt", "repq+qwt_f64"]
    for r in recs:
        assert r["suite"] == "demo" and r["model"] == "demo_vit" and r["seed"] == 0
        assert r["images"] == 60 and r["partial"] is True
    q = {r["method"]: r for r in recs}
    assert q["repq"]["w_bits"] == q["repq"]["a_bits"] == 4
    for m in ("repq", "repq+qwt", "repq+qwt_f64"):
        assert {"top1", "agreement_fp", "kl_fp"} <= set(q[m]["metrics"])
    assert len(q["repq+qwt"]["blocks"]) == 12  # one QwT fit per ViT block
    def regression_gate(method: str) -> tuple[str, str]:
        qwt = q[method]["config"]["qwt"]
        return qwt["regression"], qwt["gate"]

    assert regression_gate("repq+qwt") == ("rows", "reference")
    assert regression_gate("repq+qwt_f64") == ("sums", "float64")  # the float64 solve of the same fit (lstsq)
    assert q["repq+qwt_f64"]["config"]["pipeline_method"] == "repq+qwt"
    assert "## demo_vit" in table and "W4/A4" in table and "partial" in table
    assert "RepQ-ViT + QwT (float64 solve)" in table and "verdict on KL:" in table


def test_rerun_replaces_older_records(tmp_path: Path):
    """A second run of the same cells leaves one record per (model, method, bits, seed)."""
    first, _ = _reduced(tmp_path, "demo_resnet", 20)
    second, _ = _reduced(tmp_path, "demo_resnet", 20)
    assert len(second) == len(first) == 3
    assert {r["provenance"]["date"] + r["_path"] for r in second}.isdisjoint(
        {r["provenance"]["date"] + r["_path"] for r in first})


@pytest.mark.detection
@pytest.mark.skipif(importlib.util.find_spec("mmcv") is None, reason="needs mmcv (scripts/install.sh)")
def test_reduced_demo_detector(tmp_path: Path):
    recs, table = _reduced(tmp_path, run.DETECTOR, 8)
    assert sorted(r["method"] for r in recs) == ["fp", "repq", "repq+qwt"]
    for r in recs:
        assert r["suite"] == "demo" and r["images"] == 8 and r["partial"] is True
        assert {"bbox_mAP", "segm_mAP"} <= set(r["metrics"])
    assert f"## {run.DETECTOR}" in table


def test_partial_run_keeps_full_records(tmp_path: Path):
    from runtime.records import make_record, write_record

    full = make_record(suite="demo", model="demo_resnet", method="fp", w_bits=None, a_bits=None,
                       metrics={"top1": 99.0}, images=600, partial=False, seed=0, config={})
    part = dict(full, partial=True, images=20)
    part["provenance"] = dict(full["provenance"], date="2099-01-01T00:00:00+00:00")
    root = tmp_path / "records"
    p_full = write_record(full, root)
    p_part = write_record(part, root)
    assert run.replace_older(root, [p_part]) == 0 and p_full.exists()
    p_full2 = write_record(full, root)
    assert run.replace_older(root, [p_full2]) == 2 and not p_full.exists() and not p_part.exists()
