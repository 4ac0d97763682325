"""Markdown results tables rendered from records, beside the paper's numbers.

``results/imagenet.md`` and ``results/coco.md`` follow the paper's layout (model, method, W4/A4,
W6/A6) with, per bits group, our value, the QwT paper's value and Δ = ours − paper; the COCO table
adds the values RepQ-ViT's and APHQ-ViT's own tables report for the same setting. ``results/demo.md``
is the embedded benchmark's table (:mod:`benchmarks.demo_table`). Per-block QwT plots go to
``results/qwt_blocks/`` (:mod:`benchmarks.plots`).

Cell rules (see docs/tables.md): only a record that fills a paper cell (:mod:`benchmarks.paper_cell`:
the benchmark split, whole, with the reference settings) is shown in a cell; several such records
-> the newest is shown and the cell says how many exist; none -> "not run" with the Make target
that produces it (and how many partial / custom runs exist). Partial and custom runs are listed in
their own section, one row per (model, method, bits, what differs), newest run first: they never
hide a paper-cell run, and a paper-cell run never hides them.

Imports go one way (no cycle, ``tests/test_import_cycles.py``): ``registry``, ``render``,
``paper_cell`` -> ``rows`` (which records make which row) -> ``plots`` -> ``demo_table`` -> ``tables``.

CLI (what ``make tables`` / ``make tables-check`` run)::

    python -m benchmarks.tables render --records results/records --out results
    python -m benchmarks.tables check  --records results/records --out results
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks import registry
from benchmarks.demo_table import demo_markdown
from benchmarks.paper_cell import fills_paper_cell
from benchmarks.plots import PLOT_DIR, expected_plots, plot_jobs, render_plots
from benchmarks.render import (
    GENERATED,
    Footnotes,
    Pick,
    bits_key,
    cells,
    fmt,
    fmt_delta,
    load_suite,
    markdown_table,
    records_frame,
    write_if_changed,
)
from benchmarks.rows import custom_groups
from runtime.records import BENCHMARK_SPLITS, RecordError

PAPER_SUITES = ("imagenet", "coco")
TABLE_FILES = {"imagenet": "imagenet.md", "coco": "coco.md", "demo": "demo.md"}
TITLES = {"imagenet": "ImageNet top-1 (%): ours beside the QwT paper (CVPR 2025)",
          "coco": "COCO val2017 AP<sup>box</sup> / AP<sup>mask</sup> (%): ours beside the QwT paper (CVPR 2025)"}
DETAIL_METRICS = {"imagenet": ("top1", "top5", "agreement_fp", "kl_fp"),
                  "coco": ("bbox_mAP", "segm_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP_50", "segm_mAP_75")}
METRIC_DIGITS = {"kl_fp": 4}


def _value(suite: str, metrics: dict[str, float]) -> str:
    """A cell's number(s): "71.5" (ImageNet top-1) or "36.1 / 36.0" (COCO box / mask)."""
    return " / ".join(fmt(metrics.get(m)) for m in registry.SUITE_METRICS[suite])


def _delta(suite: str, ours: dict[str, float], paper: dict[str, float]) -> str:
    if not paper:
        return "—"
    return " / ".join(fmt_delta(ours.get(m), paper.get(m)) for m in registry.SUITE_METRICS[suite])


def ours_cell(suite: str, exp: registry.Experiment | None, cell: Pick, notes: Footnotes,
              others: int = 0) -> tuple[str, str]:
    """(our value cell, Δ cell) for one experiment given its paper-cell records (``others``: how
    many partial / custom runs exist for the same model, method and bits)."""
    rec = cell.shown
    if rec is None:
        if exp is None:
            return "—", "—"
        more = f" ({others} partial/custom run{'s' if others > 1 else ''} below)" if others else ""
        return (f"not run: `make {exp.target}`{more}" if exp.target else "— (not run by this suite)"), "—"
    count = f" (newest of {cell.n} runs)" if cell.n > 1 else ""
    value = _value(suite, rec["metrics"])
    delta = _delta(suite, rec["metrics"], exp.paper if exp else {})
    return f"{value} {notes.mark(rec)}{count}", delta


def _refs(suite: str, exp: registry.Experiment | None) -> str:
    if exp is None or not exp.refs:
        return "—"
    return "; ".join(f"{src}: {_value(suite, vals)}" for src, vals in sorted(exp.refs.items()))


def paper_table(suite: str, frame: pd.DataFrame, notes: Footnotes,
                others: dict[tuple, int] | None = None, beyond_paper: bool = False) -> pd.DataFrame:
    """The paper-layout table of ``suite`` as a DataFrame of strings (``frame``: records that fill
    paper cells; ``others``: cell key -> number of partial / custom runs). ``beyond_paper``: the
    registered rows outside the paper's table instead (same layout, no paper values)."""
    picks = cells(frame)
    others = others or {}
    exps_all = registry.experiments(suite, beyond_paper=beyond_paper)
    with_refs = any(e.refs for e in exps_all if e.method != "fp")
    rows: list[dict[str, str]] = []
    models = list(dict.fromkeys(e.model for e in exps_all))
    for model in models:
        exps = [e for e in exps_all if e.model == model]
        fp = next(e for e in exps if e.method == "fp")
        fp_key = (model, "fp", -1, -1)
        fp_ours, fp_delta = ours_cell(suite, fp, picks.get(fp_key, Pick(())), notes, others.get(fp_key, 0))
        methods = list(dict.fromkeys(e.method for e in exps if e.method != "fp"))
        for i, method in enumerate(methods):
            row = {"Model": registry.display(model) if i == 0 else "",
                   "FP paper": _value(suite, fp.paper) if i == 0 else "",
                   "FP ours": fp_ours if i == 0 else "", "FP Δ": fp_delta if i == 0 else "",
                   "Method": registry.method_label(method)}
            for b in registry.BITS:
                exp = registry.find(suite, model, method, b, b)
                lab = registry.bits_label(b, b)
                key = (model, method, b, b)
                ours, delta = ours_cell(suite, exp, picks.get(key, Pick(())), notes, others.get(key, 0))
                row[f"{lab} ours"] = ours
                row[f"{lab} paper"] = _value(suite, exp.paper) if exp and exp.paper else "—"
                row[f"{lab} Δ"] = delta
                if with_refs:
                    row[f"{lab} other tables"] = _refs(suite, exp)
            rows.append(row)
    return pd.DataFrame(rows)


def _order(suite: str) -> Callable[[tuple], tuple]:
    index = {e.key[1:]: i for i, e in enumerate(registry.experiments(suite, beyond_paper=None))}

    def key(k: tuple) -> tuple:
        model, method, w, a = k
        reg = (model, method, None if w < 0 else w, None if a < 0 else a)
        return (0, index[reg], "", "", 0) if reg in index else (1, 0, model, method, w)
    return key


def _metric_columns(suite: str, records: list[dict[str, Any]]) -> list[str]:
    present = {m for rec in records for m in rec["metrics"]}
    return [m for m in DETAIL_METRICS[suite] if m in present] + sorted(present - set(DETAIL_METRICS[suite]))


def _metric_cell(rec: dict[str, Any], metric: str) -> str:
    if metric in rec.get("metrics_absent", ()):
        return "absent"
    return fmt(rec["metrics"].get(metric), METRIC_DIGITS.get(metric, 2))


def details_table(suite: str, frame: pd.DataFrame, notes: Footnotes) -> pd.DataFrame:
    """Every (model, method, bits) with paper-cell records: all metrics of the shown record, and the
    run count."""
    picks = cells(frame)
    metrics = _metric_columns(suite, list(frame["record"]))
    rows = []
    for k in sorted(picks, key=_order(suite)):
        model, method, w, a = k
        cell = picks[k]
        rec = cell.shown
        assert rec is not None
        reg = registry.find(suite, model, method, None if w < 0 else w, None if a < 0 else a)
        row = {"Model": model, "Method": method, "Bits": registry.bits_label(rec["w_bits"], rec["a_bits"])}
        for m in metrics:
            row[m] = _metric_cell(rec, m)
        row["images"] = str(rec["images"])
        row["runs"] = str(cell.n)
        row["in paper table"] = "yes" if reg is not None and reg.paper else ("extra row" if reg else "no")
        row["note"] = notes.mark(rec)
        rows.append(row)
    return pd.DataFrame(rows)


def custom_table(suite: str, records: list[dict[str, Any]], notes: Footnotes) -> pd.DataFrame:
    """One row per (model, method, bits, what differs) of the partial / custom runs: the newest
    run's metrics, images and classes, and the run count."""
    groups = custom_groups(records)
    metrics = _metric_columns(suite, [g[0] for g in groups.values()])
    order = _order(suite)
    rows = []
    for key in sorted(groups, key=lambda k: (order(k[:4]), k[4])):
        model, method, w, a, what = key
        rec = groups[key][0]
        ds = rec.get("dataset") or {}
        row = {"Model": model, "Method": method, "Bits": registry.bits_label(rec["w_bits"], rec["a_bits"]),
               "what differs": what}
        for m in metrics:
            row[m] = _metric_cell(rec, m)
        row["images"] = str(rec["images"])
        row["classes"] = str(ds["classes"]) if ds.get("classes") else "—"
        row["runs"] = str(len(groups[key]))
        row["note"] = notes.mark(rec)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_links(suite: str, records: list[dict[str, Any]]) -> list[str]:
    """Markdown links to the per-block plots of this suite's table rows (see benchmarks.plots)."""
    return [f"- [{job.label}]({PLOT_DIR}/{job.name})" for job in plot_jobs(suite, records)]


def _align(column: str) -> str:
    return "r" if column.endswith(("paper", "Δ")) else "l"


def paper_markdown(suite: str, records: list[dict[str, Any]]) -> str:
    """The whole ``results/<suite>.md`` for ``imagenet`` or ``coco``."""
    eligible = [r for r in records if fills_paper_cell(r)]
    custom = [r for r in records if not fills_paper_cell(r)]
    frame = records_frame(eligible)
    others: dict[tuple, int] = {}
    for r in custom:
        key = (r["model"], r["method"], *bits_key(r["w_bits"], r["a_bits"]))
        others[key] = others.get(key, 0) + 1
    notes = Footnotes()
    table = paper_table(suite, frame, notes, others)
    beyond = paper_table(suite, frame, notes, others, beyond_paper=True)
    exps = [e for e in registry.experiments(suite, beyond_paper=None) if e.target]
    picks = cells(frame)
    n_run = sum(1 for e in exps if (e.model, e.method, *bits_key(e.w_bits, e.a_bits)) in picks)
    unit = "top-1 %" if suite == "imagenet" else "AP box / AP mask %"
    split = BENCHMARK_SPLITS[suite]
    parts = [f"# {TITLES[suite]}", "", GENERATED.format(suite=suite), "",
             f"Records: {len(records)} ({len(eligible)} fill paper cells, {len(custom)} partial or custom). "
             f"Registered cells with a run: {n_run} of {len(exps)}. Values in {unit}; Δ = ours − paper. "
             f"A cell shows only a full run on {split.name} ({split.images:,} images"
             + (f", {split.classes:,} classes" if suite == "imagenet" else "")
             + ") with the reference settings; other runs are listed under \"Partial and custom runs\". "
             "How to read this table: [docs/tables.md](../docs/tables.md).", "",
             markdown_table(table, [_align(c) for c in table.columns]), ""]
    if suite == "imagenet":
        parts += ["ResNet rows: \"Percentile\" quantizes conv inputs at 8 bits as the released code does "
                  "(the paper's rows); \"Percentile (strict)\" quantizes them at n bits (our extra rows, "
                  "no paper value).", ""]
    else:
        parts += ["\"other tables\": the same setting in RepQ-ViT's own table (seeds/003) and APHQ-ViT's "
                  "table (seeds/004, its own method, reference only).", ""]
    if not beyond.empty:
        beyond = beyond[[c for c in beyond.columns if not c.endswith(("paper", "Δ"))]]
        parts += ["## Beyond the paper: mmdet model-zoo detectors", "",
                  "mmdet 3.x's own configs with their openmmlab checkpoints (see docs/detection.md, "
                  "\"Supported detectors\"); the paper has no such rows, so there is no paper value. ResNet "
                  "backbones: percentile quantization + grouped-conv QwT per residual block (the ImageNet "
                  "ResNet method), the rest of the detector as for the Swin detectors; box-only detectors "
                  "(RetinaNet) show \"—\" for AP mask.", "",
                  markdown_table(beyond, ["l"] * beyond.shape[1]), ""]
    if not frame.empty:
        details = details_table(suite, frame, notes)
        parts += ["## Every run", "", "All metrics of the record each cell shows, including runs outside the "
                  "paper's table.", "",
                  markdown_table(details, ["l", "l", "l"] + ["r"] * (details.shape[1] - 5) + ["l", "l"]), ""]
    if custom:
        table_c = custom_table(suite, custom, notes)
        parts += ["## Partial and custom runs (not comparable with the paper)", "",
                  "Runs on other data, on part of the split, or with settings other than the reference's, "
                  "one row per model, method, bits and difference (newest run shown). They never fill a "
                  "paper cell.", "",
                  markdown_table(table_c, ["l", "l", "l", "l"] + ["r"] * (table_c.shape[1] - 6) + ["r", "l"]), ""]
    if len(notes):
        parts += ["## Provenance", "", *notes.lines(), ""]
    links = plot_links(suite, records)
    if links:
        parts += ["## Per-block QwT diagnostics (R², error before/after)", "", *links, ""]
    return "\n".join(parts)


def render_markdown(records_dir: str | os.PathLike[str]) -> dict[str, str]:
    """{file name: markdown} for every table, from the records under ``records_dir``."""
    out = {}
    for suite in PAPER_SUITES:
        records = load_suite(records_dir, suite, registry.REQUIRED_METRICS[suite])
        out[TABLE_FILES[suite]] = paper_markdown(suite, records)
    out[TABLE_FILES["demo"]] = demo_markdown(load_suite(records_dir, "demo"))
    return out


def render(records_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], plots: bool = True) -> list[Path]:
    """Write the tables (and the per-block plots) into ``out_dir``; returns the files written."""
    written = []
    for name, text in render_markdown(records_dir).items():
        if write_if_changed(Path(out_dir) / name, text):
            written.append(Path(out_dir) / name)
    if plots:
        written += render_plots(records_dir, out_dir)
    return written


def check(records_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[str]:
    """Problems with ``out_dir``'s tables: each differs from a fresh render of the records."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        render(records_dir, tmp, plots=False)
        for name in TABLE_FILES.values():
            fresh, committed = Path(tmp) / name, Path(out_dir) / name
            if not committed.exists():
                problems.append(f"{committed}: missing (run `make tables`)")
                continue
            a, b = committed.read_text(), fresh.read_text()
            if a != b:
                diff = difflib.unified_diff(a.splitlines(), b.splitlines(), f"{committed} (on disk)",
                                            f"{name} (rendered from the records)", lineterm="", n=1)
                problems.append(f"{committed}: differs from the records (hand-edited or stale); "
                                "run `make tables`\n" + "\n".join(list(diff)[:40]))
    for path in expected_plots(records_dir, out_dir):
        if not path.exists():
            problems.append(f"{path}: missing per-block plot (run `make tables`)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tables", description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=("render", "check"))
    ap.add_argument("--records", default="results/records", help="records root (suite folders under it)")
    ap.add_argument("--out", default="results", help="where the tables live")
    ap.add_argument("--no-plots", action="store_true", help="render: skip the per-block PNGs")
    args = ap.parse_args(argv)
    try:
        if args.action == "render":
            for path in render(args.records, args.out, plots=not args.no_plots):
                print(f"wrote {path}")
            return 0
        problems = check(args.records, args.out)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print("tables-check: FAILED -- tables are generated from records, never edited by hand", file=sys.stderr)
        return 1
    print(f"tables-check: {', '.join(TABLE_FILES.values())} match the records in {args.records}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
