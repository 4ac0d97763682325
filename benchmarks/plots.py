"""Per-block QwT diagnostics as PNGs, drawn from the records' ``blocks`` (matplotlib, Agg backend).

A plot shows what its table row shows. Paper tables: the record a cell shows (newest run that fills
the cell, :mod:`benchmarks.paper_cell`) -> ``<suite>__<model>__<method>__<bits>.png``, and the
newest record of each partial / custom row -> ``...__custom_<what differs>.png``. Demo table: the
records the row averages (one per seed) -> ``demo__<model>__<method>__<bits>.png`` with the mean
over seeds and the seeds' range. Per block: the fit's R² (top; blocks left uncompensated, R² ≤ 0
or before ``start_block``, in grey) and the mean squared error of the block output before and after
the compensation (bottom, log scale). File names are deterministic; PNGs carry no timestamp, so
re-rendering gives identical bytes.

    python -m benchmarks.plots --records results/records --out results
"""
from __future__ import annotations

import argparse
import io
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.render import load_suite, write_if_changed
from benchmarks.rows import custom_groups, demo_groups, paper_cells
from runtime.records import RecordError

PLOT_DIR = "qwt_blocks"  # under the results dir
SUITES = ("imagenet", "coco", "demo")


@dataclass(frozen=True)
class PlotJob:
    """One PNG: its file name, the link label in the table, and the records it draws (several:
    one per seed, drawn as mean and range)."""

    name: str
    label: str
    records: tuple[dict[str, Any], ...]


def plot_name(suite: str, rec: dict[str, Any], suffix: str = "") -> str:
    """Deterministic file name of a row's plot, e.g. ``imagenet__deit_small__repq_plus_qwt__w4a4.png``."""
    bits = "fp" if rec["w_bits"] is None else f"w{rec['w_bits']}a{rec['a_bits']}"
    return f"{suite}__{rec['model']}__{rec['method'].replace('+', '_plus_')}__{bits}{suffix}.png"


def _slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


def _bits(rec: dict[str, Any]) -> str:
    return "FP" if rec["w_bits"] is None else f"W{rec['w_bits']}/A{rec['a_bits']}"


def plot_jobs(suite: str, records: list[dict[str, Any]]) -> list[PlotJob]:
    """The plots of ``suite``'s table rows whose records have per-block data."""
    jobs: list[PlotJob] = []
    if suite == "demo":
        for _, group in sorted(demo_groups(records).items()):
            recs = tuple(r for r in group.used if r["blocks"])
            if not recs:
                continue
            r0 = recs[0]
            seeds = ", ".join(str(r["seed"]) for r in recs)
            label = (f"{r0['model']} {r0['method']} {_bits(r0)} (seeds {seeds})"
                     + (" (partial runs)" if group.partial else ""))
            jobs.append(PlotJob(plot_name(suite, r0), label, recs))
        return jobs
    for _, rec in sorted(paper_cells(records).items()):
        if rec["blocks"]:
            jobs.append(PlotJob(plot_name(suite, rec), f"{rec['model']} {rec['method']} {_bits(rec)}", (rec,)))
    for key, newest_first in sorted(custom_groups(records).items()):
        rec = newest_first[0]
        if rec["blocks"]:
            what = key[-1]
            jobs.append(PlotJob(plot_name(suite, rec, f"__custom_{_slug(what)}"),
                                f"{rec['model']} {rec['method']} {_bits(rec)} ({what})", (rec,)))
    return jobs


def _blocks_frame(rec: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for i, b in enumerate(rec["blocks"]):
        missing = [k for k in ("r2", "mse_before", "mse_after") if k not in b]
        if missing:
            raise RecordError(f"{rec.get('_path', '<record>')}: blocks[{i}] lacks {missing}")
        rows.append({"index": b.get("index", i), "name": b.get("name", str(i)), "r2": b["r2"],
                     "applied": b.get("applied", True), "mse_before": b["mse_before"],
                     "mse_after": b["mse_after"]})
    return pd.DataFrame(rows).sort_values("index", kind="mergesort").reset_index(drop=True)


def _stacked(records: Iterable[dict[str, Any]]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(first record's block table, {column: (records, blocks) array}) of records with the same blocks."""
    frames = [_blocks_frame(r) for r in records]
    first = frames[0]
    for r, f in zip(records, frames):
        if list(f["name"]) != list(first["name"]):
            raise RecordError(f"{r.get('_path', '<record>')}: its blocks differ from the other seeds' of the same row")
    return first, {c: np.stack([f[c].to_numpy(dtype=float) for f in frames]) for c in ("r2", "mse_before", "mse_after")}


def plot_blocks(records: dict[str, Any] | Iterable[dict[str, Any]], title: str) -> bytes:
    """PNG bytes of the per-block R² and error before/after QwT of one record, or of several (the
    seeds of one row): then bars and curves are the mean over the records, with their min..max range
    (error bars for R², shaded bands for the errors); a block counts as applied when it is in every
    record."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [records] if isinstance(records, dict) else list(records)
    df, vals = _stacked(recs)
    applied = np.asarray(np.stack([_blocks_frame(r)["applied"].to_numpy(dtype=bool) for r in recs]).all(axis=0))
    n = len(recs)
    x = np.arange(len(df))
    fig, (ax_r2, ax_err) = plt.subplots(2, 1, figsize=(max(6.0, 0.35 * len(df) + 2), 5.5), sharex=True)
    colors = ["tab:blue" if a else "tab:gray" for a in applied]
    r2 = vals["r2"]
    r2_mean = r2.mean(axis=0)
    yerr = np.stack([r2_mean - r2.min(axis=0), r2.max(axis=0) - r2_mean]) if n > 1 else None
    ax_r2.bar(x, r2_mean, color=colors, yerr=yerr, capsize=2 if n > 1 else 0)
    ax_r2.axhline(0.0, color="black", linewidth=0.6)
    ax_r2.set_ylabel("R² of the fit" + (f" (mean, range of {n})" if n > 1 else ""))
    ax_r2.set_title(title, fontsize=10)
    for key, marker, color, text in (("mse_before", "o-", "tab:red", "before QwT (FP − Q)"),
                                     ("mse_after", "s-", "tab:green", "after QwT (FP − Q − c)")):
        v = vals[key]
        ax_err.plot(x, v.mean(axis=0), marker, label=text + (" mean" if n > 1 else ""), color=color)
        if n > 1:
            ax_err.fill_between(x, v.min(axis=0), v.max(axis=0), color=color, alpha=0.2, linewidth=0)
    if (vals["mse_before"] > 0).all() and (vals["mse_after"] > 0).all():
        ax_err.set_yscale("log")
    ax_err.set_ylabel("block output MSE")
    ax_err.legend(fontsize=8)
    ax_err.set_xticks(list(x))
    ax_err.set_xticklabels(df["name"], rotation=90, fontsize=7)
    ax_err.set_xlabel("block (grey R²: left uncompensated)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _title(suite: str, records: tuple[dict[str, Any], ...]) -> str:
    rec = records[0]
    part = ", PARTIAL" if any(r["partial"] for r in records) else ""
    images = sorted({r["images"] for r in records})
    imgs = f"{images[0]} images" if len(images) == 1 else f"{images[0]}..{images[-1]} images"
    seeds = (f"seed {rec['seed']}" if len(records) == 1
             else f"mean of {len(records)} seeds: {', '.join(str(r['seed']) for r in records)}")
    days = sorted({str(r["provenance"]["date"])[:10] for r in records})
    commits = sorted({str(r["provenance"]["git_commit"])[:7] for r in records})
    return (f"{suite}: {rec['model']} {rec['method']} {_bits(rec)} ({seeds}, {imgs}{part})\n"
            f"{', '.join(days)}, commit {', '.join(commits)}")


def _jobs(records_dir: str | os.PathLike[str], suites: Iterable[str]) -> list[tuple[str, PlotJob]]:
    return [(suite, job) for suite in suites for job in plot_jobs(suite, load_suite(records_dir, suite))]


def expected_plots(records_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                   suites: Iterable[str] = SUITES) -> list[Path]:
    """Paths the plots of these records should have."""
    return [Path(out_dir) / PLOT_DIR / job.name for _, job in _jobs(records_dir, suites)]


def render_plots(records_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                 suites: Iterable[str] = SUITES) -> list[Path]:
    """Draw every row's per-block plot into ``out_dir/qwt_blocks``; remove stale ones of these suites.

    Returns the files written (unchanged files are left alone).
    """
    suites = tuple(suites)
    folder = Path(out_dir) / PLOT_DIR
    jobs = _jobs(records_dir, suites)
    written = []
    for suite, job in jobs:
        if write_if_changed(folder / job.name, plot_blocks(job.records, _title(suite, job.records))):
            written.append(folder / job.name)
    keep = {job.name for _, job in jobs}
    if folder.exists():
        for suite in suites:
            for stale in folder.glob(f"{suite}__*.png"):
                if stale.name not in keep:
                    stale.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__.split("\n")[0])
    ap.add_argument("--records", default="results/records")
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    try:
        for path in render_plots(args.records, args.out):
            print(f"wrote {path}")
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
