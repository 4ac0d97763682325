"""The demo's seed-by-seed verdicts: decided only where the reference's fp32 solve and the float64
solve agree by more than they differ; and the two-run comparison of ``make demo-isa-check``."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.demo.isa_check import compare, held_verdicts, main
from benchmarks.demo_table import F64, Effect, qwt_effect, qwt_effects
from benchmarks.render import load_suite

from .factory import record, write


@pytest.mark.parametrize("ref, f64, want", [
    ((-50.0,), (-40.0,), ("lower",)),  # same sign, |effect| 40 > spread 10
    ((-50.0,), (-20.0,), ("undecided",)),  # spread 30 > 20: the solve decides, not QwT
    ((+5.0,), (-4.0,), ("undecided",)),  # opposite signs
    ((+30.0,), (+29.0,), ("higher",)),
    ((0.0,), (0.0,), ("undecided",)),  # no effect is no verdict
])
def test_verdict_needs_both_solves_beyond_their_spread(ref, f64, want) -> None:
    assert Effect("m", "W4/A4", "kl_fp", (0,), ref, f64).verdicts() == want


def test_verdict_without_float64_row_is_the_sign() -> None:
    e = Effect("m", "W4/A4", "kl_fp", (0, 1, 2), (-3.0, 2.0, 0.0), None)
    assert e.verdicts() == ("lower", "higher", "undecided")
    assert e.verdict() == "lower in 1 of 3 seeds, higher in 1 of 3 seeds, undecided in 1 of 3 seeds"


def _run(root: Path, kl: dict[str, tuple[float, ...]], machine: str) -> Path:
    """Demo records of one classifier row: baseline, fp32-solve QwT and float64-solve QwT per seed."""
    for seed in range(len(kl["repq"])):
        for method in ("repq", "repq+qwt", "repq+qwt" + F64):
            rec = record("demo", "demo_vit", method, 4, {"top1": 90.0, "kl_fp": kl[method][seed]}, seed=seed,
                         images=60)
            rec["provenance"]["machine"] = {"cpu": machine, "torch_cpu_capability": "AVX2", "isa_caps": {}}
            write(root, rec)
    return root


def test_effects_pair_the_float64_rows_and_the_line_says_the_verdict(tmp_path: Path) -> None:
    root = _run(tmp_path / "a", {"repq": (0.10, 0.10), "repq+qwt": (0.05, 0.12),
                                 "repq+qwt" + F64: (0.06, 0.09)}, "cpu A")
    (kl, top1) = qwt_effects(load_suite(root, "demo"))
    assert kl.metric == "kl_fp" and kl.seeds == (0, 1)
    assert kl.ref == pytest.approx((-50.0, 20.0)) and kl.f64 == pytest.approx((-40.0, -10.0))
    assert kl.verdicts() == ("lower", "undecided") and top1.ref == (0.0, 0.0)
    (line,) = qwt_effect(load_suite(root, "demo"))
    assert line.endswith("float64 solve: KL(FP‖Q) -40 %, -10 %; verdict on KL: lower in 1 of 2 seeds, "
                         "undecided in 1 of 2 seeds")


def test_isa_check_reports_which_verdicts_held(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", {"repq": (0.10, 0.10), "repq+qwt": (0.05, 0.12), "repq+qwt" + F64: (0.06, 0.09)},
             "cpu A")
    b = _run(tmp_path / "b", {"repq": (0.10, 0.10), "repq+qwt": (0.055, 0.085), "repq+qwt" + F64: (0.06, 0.09)},
             "cpu B")
    lines, held, total = compare(load_suite(a, "demo"), load_suite(b, "demo"))
    assert total == 2 and held == 1  # KL: seed 1 moved from undecided to lower; top-1: unchanged
    assert any("**no**" in line and "KL" in line for line in lines)
    assert [e.metric for e in held_verdicts(load_suite(a, "demo"), load_suite(b, "demo"))] == ["top1"]
    out = tmp_path / "demo_isa.md"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    md = out.read_text()
    assert "Verdicts held in 1 of 2 rows." in md and "cpu A (AVX2)" in md and "cpu B (AVX2)" in md
    assert main([str(tmp_path / "none"), str(b), "--out", str(out)]) == 2
