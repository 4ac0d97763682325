"""The embedded benchmark's table (``results/demo.md``): mean ± std over seeds, no paper values.

Demo records (suite ``demo``) are small models on the digits data, run at several bit widths with
several seeds. Per (model, method, bits) the table gives the number of seeds and, per metric,
mean ± sample std (ddof=1) over seeds. Per seed the newest full record counts; partial
(``--val-limit``) records count only when a seed has no full one, and such rows are marked partial.
Whatever models exist are rendered, one section per model.

Other code calls :func:`render_demo` (records dir -> markdown file).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import registry
from benchmarks.render import (GENERATED, Footnotes, cells, load_suite, markdown_table, records_frame,
                               write_if_changed)

#: preferred column order; other metrics follow alphabetically
METRIC_ORDER = ("top1", "agreement_fp", "kl_fp", "bbox_mAP", "segm_mAP", "feature_err")
METRIC_DIGITS = {"kl_fp": 4, "feature_err": 4}


def _mean_std(values: list[float], digits: int) -> str:
    arr = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    if arr.size == 0:
        return "—"
    if arr.size == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1):.{digits}f}"


def _method_rank(method: str) -> tuple[int, str]:
    order = registry.METHOD_ORDER
    return (order.index(method), "") if method in order else (len(order), method)


def demo_table(frame: pd.DataFrame, model: str, notes: Footnotes) -> pd.DataFrame:
    """Rows (method, bits) of one demo model with mean ± std per metric over seeds."""
    sub = frame[frame["model"] == model]
    per_seed = cells(sub, ("method", "w_bits", "a_bits", "seed"))
    groups: dict[tuple, list] = {}
    for (method, w, a, _seed), cell in per_seed.items():
        groups.setdefault((method, w, a), []).append(cell)
    present = {m for rec in sub["record"] for m in rec["metrics"]}
    metrics = [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))
    rows = []
    for (method, w, a) in sorted(groups, key=lambda k: (_method_rank(k[0]), k[1], k[2])):
        seed_cells = groups[(method, w, a)]
        shown = [c.shown for c in seed_cells]
        full = [r for r in shown if not r["partial"]]
        used = full or shown  # partial seeds count only when no seed has a full run
        partial = not full
        n_runs = sum(c.n for c in seed_cells)
        seeds = str(len(used))
        if partial:
            seeds += " (partial)"
        elif len(full) < len(shown):
            seeds += f" (+{len(shown) - len(full)} partial, excluded)"
        if n_runs > len(shown):
            seeds += f"; newest of {n_runs} runs"
        row: dict[str, Any] = {"Method": registry.method_label(method),
                               "Bits": "FP" if w < 0 else registry.bits_label(w, a), "seeds": seeds}
        for m in metrics:
            text = _mean_std([r["metrics"].get(m) for r in used], METRIC_DIGITS.get(m, 2))
            row[m] = f"*{text}*" if partial and text != "—" else text
        row["note"] = "".join(dict.fromkeys(notes.mark(r) for r in sorted(used, key=lambda r: r["seed"])))
        rows.append(row)
    return pd.DataFrame(rows)


def demo_markdown(records: list[dict[str, Any]]) -> str:
    """The whole ``results/demo.md`` from demo-suite records."""
    frame = records_frame(records)
    parts = ["# Embedded benchmark (digits, small models): mean ± std over seeds", "",
             GENERATED.format(suite="demo"), ""]
    if frame.empty:
        parts += ["Not run: no demo records yet. Run `make demo`.", ""]
        return "\n".join(parts)
    parts += [f"Records: {len(frame)} ({int(frame['partial'].sum())} partial). No paper values: the "
              "demo runs the paper-scale code paths on small models; compare each method with the "
              "baseline seed by seed and let the numbers speak (QwT does not help everywhere here). ± is the sample std over seeds (ddof=1). "
              "How to read: [docs/tables.md](../docs/tables.md).", ""]
    notes = Footnotes()
    for model in sorted(frame["model"].unique()):
        parts += [f"## {model}", "", markdown_table(demo_table(frame, model, notes)), ""]
    parts += ["## Provenance", "", *notes.lines(), ""]
    from benchmarks.plots import PLOT_DIR, plot_jobs
    links = [f"- [{label}]({PLOT_DIR}/{name})" for name, label, _ in plot_jobs("demo", frame)]
    if links:
        parts += ["## Per-block QwT diagnostics (R², error before/after)", "", *links, ""]
    return "\n".join(parts)


def render_demo(records_dir: str | os.PathLike[str], out_path: str | os.PathLike[str],
                plots: bool = True) -> Path:
    """Render the demo table from ``records_dir``/demo into ``out_path``.

    With ``plots`` (default) the per-block PNGs of the demo records are drawn beside it too
    (``out_path.parent/qwt_blocks/demo__*.png``), so ``make tables-check`` passes after ``make demo``.
    """
    out_path = Path(out_path)
    write_if_changed(out_path, demo_markdown(load_suite(records_dir, "demo")))
    if plots:
        from benchmarks.plots import render_plots
        render_plots(records_dir, out_path.parent, suites=("demo",))
    return out_path
