"""`python -m benchmarks.perf.run --tiny`: every ratio is printed with its target, the record and the
rendered table land in the given folders, the two fits agree, and the fit's profile adds up."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.perf.profile import COMPONENTS, FitProfile
from benchmarks.perf.report import render_markdown
from benchmarks.perf.targets import TARGETS
from qwt_core import QwTConfig, fit_qwt
from qwt_core.qwt import accumulator, driver, store

ROOT = Path(__file__).resolve().parents[2]
RELEASED_PREFIXES = {"calib_over_released", "fit_over_released", "fit_mem_over_released", "fit_streaming_over_released",
                     "fit_streaming_mem_over_released", "whole_calibration_s"}  # figure 2 (tests/perf/test_released.py)


def test_tiny_bench_prints_every_ratio_and_writes_record_and_table(tmp_path: Path) -> None:
    records, out = tmp_path / "records", tmp_path / "perf.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.perf.run", "--tiny", "--device", "cpu",
                           "--results-dir", str(records), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[released] skipped: not run in mode tiny" in proc.stdout  # figure 2 runs the real models only
    for t in (t for t in TARGETS if t.prefix not in RELEASED_PREFIXES):  # every figure, with its target and a verdict
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith(t.prefix + "/")]
        assert lines, f"{t.prefix} not printed:\n{proc.stdout}"
        assert all(f"target {t.text()}" in ln and ("PASS" in ln or "MISS" in ln or t.op == "info") for ln in lines)
    files = list((records / "perf").glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["suite"] == "perf" and rec["model"] == "perf" and rec["partial"]
    assert {k.split("/")[0] for k in rec["metrics"]} >= {t.prefix for t in TARGETS} - RELEASED_PREFIXES
    raw = rec["config"]["raw"]
    # the reference-style fit computes the same regression: per-block R² agree
    assert raw["reference_time"]["max_abs_r2_diff"] < 1e-3
    for case, prof in raw["fit_profile"].items():  # every component timed, nothing counted twice
        assert set(prof) == set(COMPONENTS) | {"the rest"}
        assert all(v >= 0 for k, v in prof.items() if k != "the rest")
        assert prof["the rest"] > -0.05 * raw["seconds"][case]["fit"]
    text = out.read_text()
    assert text == render_markdown({**rec, "_path": str(files[0])})  # rendered from the record only (one run)
    assert "## Summary" in text and "<= 3x" in text and "<= 1.5x" in text
    assert "skipped: not run in mode tiny" in text
    # re-rendering is deterministic and leaves the file alone
    again = subprocess.run([sys.executable, "-m", "benchmarks.perf.run", "--render-only",
                            "--results-dir", str(records), "--out", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and out.read_text() == text


def test_fit_profile_restores_what_it_wraps() -> None:
    from qwt_core import calibrate_repq
    from tests.core.toy import TinyTransformer, TransformerAdapter, quantize_transformer

    model = TinyTransformer(depth=2).eval()
    calibrate_repq(model, torch.randn(8, 20, 12), quantize_transformer(model, 4))
    adapter = TransformerAdapter(model)
    before = (accumulator.NormalEquations.update, store.FeatureStore._put, driver.full_precision,
              [s.call for s in adapter.steps()])
    with FitProfile(adapter) as prof:
        fit_qwt(adapter, [torch.randn(8, 20, 12) for _ in range(2)], QwTConfig())
    assert prof.seconds["FP block passes"] > 0 and prof.seconds["quantized block passes"] > 0
    assert prof.seconds["normal equations (float64)"] > 0
    after = (accumulator.NormalEquations.update, store.FeatureStore._put, driver.full_precision,
             [s.call for s in adapter.steps()])
    assert after == before and "embed" not in vars(adapter)
