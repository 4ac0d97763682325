"""`python -m benchmarks.perf.run --tiny`: every ratio is printed with its target, and the record
and the rendered table land in the given folders."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.perf.report import render_markdown
from benchmarks.perf.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_bench_prints_every_ratio_and_writes_record_and_table(tmp_path: Path) -> None:
    records, out = tmp_path / "records", tmp_path / "perf.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.perf.run", "--tiny", "--device", "cpu",
                           "--results-dir", str(records), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for t in TARGETS:  # every figure, with its target and a verdict
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith(t.prefix + "/")]
        assert lines, f"{t.prefix} not printed:\n{proc.stdout}"
        assert all(f"target {t.text()}" in ln and ("PASS" in ln or "MISS" in ln or t.op == "info") for ln in lines)
    files = list((records / "perf").glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["suite"] == "perf" and rec["model"] == "perf" and rec["partial"]
    assert {k.split("/")[0] for k in rec["metrics"]} >= {t.prefix for t in TARGETS}
    text = out.read_text()
    assert text == render_markdown({**rec, "_path": str(files[0])})  # rendered from the record only (one run)
    assert "## Summary" in text and "<= 3x" in text
    # re-rendering is deterministic and leaves the file alone
    again = subprocess.run([sys.executable, "-m", "benchmarks.perf.run", "--render-only",
                            "--results-dir", str(records), "--out", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and out.read_text() == text
