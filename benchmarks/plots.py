"""Per-block QwT diagnostics as PNGs, drawn from the records' ``blocks`` (matplotlib, Agg backend).

For every table cell whose shown record (newest full run, see :func:`benchmarks.render.pick`) has
blocks, ``results/qwt_blocks/<suite>__<model>__<method>__<bits>.png`` shows, per block,
the fit's R² (top; blocks left uncompensated, R² ≤ 0 or before ``start_block``, in grey) and the
mean squared error of the block output before and after the compensation (bottom, log scale).
File names are deterministic; PNGs carry no timestamp, so re-rendering gives identical bytes.

    python -m benchmarks.plots --records results/records --out results
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from benchmarks.records import RecordError
from benchmarks.render import cells, load_suite, records_frame, write_if_changed

PLOT_DIR = "qwt_blocks"  # under the results dir
SUITES = ("imagenet", "coco", "demo")


def plot_name(suite: str, rec: dict[str, Any]) -> str:
    """Deterministic file name of a cell's plot, e.g. ``imagenet__deit_small__repq_plus_qwt__w4a4.png``."""
    bits = "fp" if rec["w_bits"] is None else f"w{rec['w_bits']}a{rec['a_bits']}"
    return f"{suite}__{rec['model']}__{rec['method'].replace('+', '_plus_')}__{bits}.png"


def plot_jobs(suite: str, frame: pd.DataFrame) -> list[tuple[str, str, dict[str, Any]]]:
    """(file name, link label, record) for each cell whose shown record has per-block data."""
    jobs = []
    for _, cell in sorted(cells(frame).items()):
        rec = cell.shown
        if rec is None or not rec["blocks"]:
            continue
        bits = "FP" if rec["w_bits"] is None else f"W{rec['w_bits']}/A{rec['a_bits']}"
        label = f"{rec['model']} {rec['method']} {bits}" + (" (partial run)" if rec["partial"] else "")
        jobs.append((plot_name(suite, rec), label, rec))
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
    return pd.DataFrame(rows).sort_values("index", kind="mergesort")


def plot_blocks(rec: dict[str, Any], title: str) -> bytes:
    """PNG bytes of one record's per-block R² and error before/after QwT."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = _blocks_frame(rec)
    x = range(len(df))
    fig, (ax_r2, ax_err) = plt.subplots(2, 1, figsize=(max(6.0, 0.35 * len(df) + 2), 5.5), sharex=True)
    colors = ["tab:blue" if a else "tab:gray" for a in df["applied"]]
    ax_r2.bar(x, df["r2"], color=colors)
    ax_r2.axhline(0.0, color="black", linewidth=0.6)
    ax_r2.set_ylabel("R² of the fit")
    ax_r2.set_title(title, fontsize=10)
    ax_err.plot(x, df["mse_before"], "o-", label="before QwT (FP − Q)", color="tab:red")
    ax_err.plot(x, df["mse_after"], "s-", label="after QwT (FP − Q − c)", color="tab:green")
    if (df[["mse_before", "mse_after"]] > 0).all().all():
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


def _title(suite: str, rec: dict[str, Any]) -> str:
    prov = rec["provenance"]
    bits = "FP" if rec["w_bits"] is None else f"W{rec['w_bits']}/A{rec['a_bits']}"
    part = ", PARTIAL" if rec["partial"] else ""
    return (f"{suite}: {rec['model']} {rec['method']} {bits} (seed {rec['seed']}, {rec['images']} images{part})\n"
            f"{str(prov['date'])[:10]}, commit {str(prov['git_commit'])[:7]}")


def _jobs(records_dir: str | os.PathLike[str], suites: Iterable[str]) -> list[tuple[str, str, dict[str, Any]]]:
    jobs = []
    for suite in suites:
        jobs += [(name, suite, rec) for name, _, rec in plot_jobs(suite, records_frame(load_suite(records_dir, suite)))]
    return jobs


def expected_plots(records_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                   suites: Iterable[str] = SUITES) -> list[Path]:
    """Paths the plots of these records should have."""
    return [Path(out_dir) / PLOT_DIR / name for name, _, _ in _jobs(records_dir, suites)]


def render_plots(records_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                 suites: Iterable[str] = SUITES) -> list[Path]:
    """Draw every cell's per-block plot into ``out_dir/qwt_blocks``; remove stale ones of these suites.

    Returns the files written (unchanged files are left alone).
    """
    suites = tuple(suites)
    folder = Path(out_dir) / PLOT_DIR
    jobs = _jobs(records_dir, suites)
    written = []
    for name, suite, rec in jobs:
        if write_if_changed(folder / name, plot_blocks(rec, _title(suite, rec))):
            written.append(folder / name)
    keep = {name for name, _, _ in jobs}
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
