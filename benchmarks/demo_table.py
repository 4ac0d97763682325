"""The embedded benchmark's table (``results/demo.md``): mean ± std over seeds, no paper values.

Demo records (suite ``demo``) are small models on the digits data, run at several bit widths with
several seeds. Per (model, method, bits) the table gives the number of seeds and, per metric,
mean ± sample std (ddof=1) over seeds. Per seed the newest full record counts; partial
(``--val-limit``) records count only when a seed has no full one, and such rows are marked partial
(:func:`benchmarks.rows.demo_groups`: the same selection feeds the per-block plots). Whatever
models exist are rendered, one section per model, with the metrics a reader compares
(:data:`COLUMNS`; every other metric stays in the records). A metric a record lists in
``metrics_absent`` (COCO size buckets without objects) is absent, not zero. Below the tables,
:func:`qwt_effect` compares each ``+qwt`` method with its baseline seed by seed.

Other code calls :func:`render_demo` (records dir -> markdown file).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import registry
from benchmarks.plots import PLOT_DIR, plot_jobs, render_plots
from benchmarks.render import GENERATED, Footnotes, load_suite, markdown_table, write_if_changed
from benchmarks.rows import demo_groups

#: the columns of the demo tables, in order (those the model's records have); every other metric
#: (top-5 aside: AP50/AP75, COCO size buckets, ...) stays in the records
COLUMNS = ("top1", "top5", "agreement_fp", "kl_fp", "bbox_mAP", "segm_mAP", "feature_err")
METRIC_DIGITS = {"kl_fp": 4, "feature_err": 4}
ABSENT = "absent"


def metric_value(rec: dict[str, Any], metric: str) -> float | None:
    """``rec``'s value of ``metric``; None when it is missing or listed in ``metrics_absent``."""
    if metric in rec.get("metrics_absent", ()):
        return None
    value = rec["metrics"].get(metric)
    return None if value is None or pd.isna(value) else float(value)


def _mean_std(records: list[dict[str, Any]], metric: str, digits: int) -> str:
    arr = np.asarray([v for v in (metric_value(r, metric) for r in records) if v is not None], dtype=float)
    if arr.size == 0:
        absent = any(metric in r.get("metrics_absent", ()) for r in records)
        return ABSENT if absent else "—"
    if arr.size == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1):.{digits}f}"


def _method_rank(method: str) -> tuple[int, str]:
    order = registry.METHOD_ORDER
    return (order.index(method), "") if method in order else (len(order), method)


def demo_table(records: list[dict[str, Any]], model: str, notes: Footnotes) -> pd.DataFrame:
    """Rows (method, bits) of one demo model with mean ± std per metric over seeds."""
    groups = {k: g for k, g in demo_groups(records).items() if k[0] == model}
    present = {m for g in groups.values() for r in g.used for m in r["metrics"]}
    metrics = [m for m in COLUMNS if m in present]
    rows = []
    for key in sorted(groups, key=lambda k: (_method_rank(k[1]), k[2], k[3])):
        _, method, w, a = key
        g = groups[key]
        row: dict[str, Any] = {"Method": registry.method_label(method),
                               "Bits": "FP" if w < 0 else registry.bits_label(w, a), "seeds": g.seeds_text()}
        for m in metrics:
            text = _mean_std(list(g.used), m, METRIC_DIGITS.get(m, 2))
            row[m] = f"*{text}*" if g.partial and text not in ("—", ABSENT) else text
        row["note"] = "".join(dict.fromkeys(notes.mark(r) for r in g.used))
        rows.append(row)
    return pd.DataFrame(rows)


#: the demo's second QwT row per baseline: the same fit solved exactly (float64 least squares,
#: ``--qwt-solver lstsq``), recorded under ``<base>+qwt`` + :data:`F64`
F64 = "_f64"


@dataclass(frozen=True)
class Effect:
    """QwT's effect on one metric of one demo row, seed by seed: ``ref`` with the reference's fp32
    solve, ``f64`` with the float64 solve (None where that row was not run)."""

    model: str
    bits: str
    metric: str  # "kl_fp" (relative change, %), "top1", "bbox_mAP", "segm_mAP" (points)
    seeds: tuple[int, ...]
    ref: tuple[float, ...]
    f64: tuple[float, ...] | None

    def verdicts(self) -> tuple[str, ...]:
        """Per seed ``"lower"`` / ``"higher"`` (the metric moves that way with QwT) where both solves
        agree in sign and the effect exceeds the spread between them, else ``"undecided"``. The
        reference's fp32 inverse of an ill-conditioned system moves with the machine's LAPACK
        kernels; the float64 solve does not: an effect smaller than their difference is not a
        property of QwT. Without the float64 row every seed is judged by its sign."""
        out = []
        for i, r in enumerate(self.ref):
            f = r if self.f64 is None else self.f64[i]
            spread = abs(r - f)
            decided = r * f > 0 and min(abs(r), abs(f)) > spread
            out.append(("lower" if r < 0 else "higher") if decided else "undecided")
        return tuple(out)

    def verdict(self) -> str:
        """The row's verdict: ``"lower in 3 of 3 seeds"``, ``"higher in 2 of 3 seeds, undecided in 1 of 3 seeds"``."""
        v = self.verdicts()
        return ", ".join(f"{k} in {v.count(k)} of {len(v)} seeds" for k in ("lower", "higher", "undecided")
                         if v.count(k))


def _pairs(groups: dict, model: str, base: str, method: str, w: int, a: int) -> list[tuple[dict, dict]]:
    if (model, base, w, a) not in groups or (model, method, w, a) not in groups:
        return []
    q_by_seed = {r["seed"]: r for r in groups[(model, method, w, a)].used}
    return [(b, q_by_seed[b["seed"]]) for b in groups[(model, base, w, a)].used if b["seed"] in q_by_seed]


def _change(b: dict, q: dict, metric: str) -> float | None:
    bv, qv = metric_value(b, metric), metric_value(q, metric)
    if bv is None or qv is None:
        return None
    if metric == "kl_fp":
        return 100 * (qv - bv) / bv if bv else None
    return qv - bv


def qwt_effects(records: list[dict[str, Any]]) -> list[Effect]:
    """Every demo row with QwT against its baseline (same model, bits and seeds), per metric."""
    groups = demo_groups(records)
    out = []
    for (model, method, w, a) in sorted(groups, key=lambda k: (k[0], _method_rank(k[1]), k[2], k[3])):
        if not method.endswith("+qwt"):
            continue
        base = method.removesuffix("+qwt")
        pairs = _pairs(groups, model, base, method, w, a)
        if not pairs:
            continue
        f64_by_seed = {b["seed"]: (b, q) for b, q in _pairs(groups, model, base, method + F64, w, a)}
        metrics = ("kl_fp", "top1") if metric_value(pairs[0][0], "kl_fp") is not None else ("bbox_mAP", "segm_mAP")
        for metric in metrics:
            changes = [(b["seed"], _change(b, q, metric)) for b, q in pairs]
            rows = [(s, c) for s, c in changes if c is not None]
            if not rows:
                continue
            seeds = tuple(s for s, _ in rows)
            f64: tuple[float, ...] | None = None
            if all(s in f64_by_seed for s in seeds):
                f = [_change(*f64_by_seed[s], metric) for s in seeds]
                known = [v for v in f if v is not None]
                f64 = tuple(known) if len(known) == len(f) else None
            out.append(Effect(model, registry.bits_label(w, a), metric, seeds, tuple(c for _, c in rows), f64))
    return out


def qwt_effect(records: list[dict[str, Any]]) -> list[str]:
    """Seed-by-seed comparison of each ``<base>+qwt`` row with its ``<base>`` row (same model and
    bits, the records the table uses): the relative change of KL(FP ‖ Q) and the change of top-1
    (classifiers), or the change of box / mask AP (detector). One line per row; where the demo also
    ran the float64 solve, its changes and the verdict (:meth:`Effect.verdicts`) follow."""
    groups = demo_groups(records)
    by_row: dict[tuple[str, str], dict[str, Effect]] = {}
    for e in qwt_effects(records):
        by_row.setdefault((e.model, e.bits), {})[e.metric] = e
    lines = []
    for (model, method, w, a) in sorted(groups, key=lambda k: (k[0], _method_rank(k[1]), k[2], k[3])):
        if not method.endswith("+qwt"):
            continue
        base = method.removesuffix("+qwt")
        effects = by_row.get((model, registry.bits_label(w, a)))
        if not effects or not _pairs(groups, model, base, method, w, a):
            continue
        first = next(iter(effects.values()))
        head = (f"{model} {registry.bits_label(w, a)}, {registry.method_label(method)} vs "
                f"{registry.method_label(base)} (seeds {', '.join(map(str, first.seeds))})")
        if "kl_fp" in effects:
            kl, top1 = effects["kl_fp"], effects.get("top1")
            line = (f"{head}: KL(FP‖Q) " + ", ".join(f"{r:+.0f} %" for r in kl.ref)
                    + f" (lower in {sum(r < 0 for r in kl.ref)} of {len(kl.ref)} seeds)")
            if top1 is not None:
                line += "; top-1 " + ", ".join(f"{d:+.2f}" for d in top1.ref)
            if kl.f64 is not None:
                line += ("; float64 solve: KL(FP‖Q) " + ", ".join(f"{r:+.0f} %" for r in kl.f64)
                         + f"; verdict on KL: {kl.verdict()}")
        else:
            def fmt(e: Effect | None, vals: tuple[float, ...] | None) -> str:
                return "absent" if e is None or vals is None else ", ".join(f"{v:+.1f}" for v in vals)
            box, mask = effects.get("bbox_mAP"), effects.get("segm_mAP")
            line = (f"{head}: box AP {fmt(box, box.ref if box else None)}; "
                    f"mask AP {fmt(mask, mask.ref if mask else None)}")
            if (box and box.f64) is not None or (mask and mask.f64) is not None:
                line += (f"; float64 solve: box AP {fmt(box, box.f64 if box else None)}; "
                         f"mask AP {fmt(mask, mask.f64 if mask else None)}"
                         + f"; verdict on box AP: {box.verdict() if box else 'absent'}"
                         + f", on mask AP: {mask.verdict() if mask else 'absent'}")
        lines.append(line)
    return lines


def demo_markdown(records: list[dict[str, Any]]) -> str:
    """The whole ``results/demo.md`` from demo-suite records."""
    parts = ["# Embedded benchmark (digits, small models): mean ± std over seeds", "",
             GENERATED.format(suite="demo"), ""]
    if not records:
        parts += ["Not run: no demo records yet. Run `make demo`.", ""]
        return "\n".join(parts)
    parts += [f"Records: {len(records)} ({sum(r['partial'] for r in records)} partial). No paper values: the "
              "demo runs the paper-scale code paths on small models; compare each method with the "
              "baseline seed by seed (below the tables) and let the numbers speak (QwT does not help "
              "everywhere here). ± is the sample std over seeds (ddof=1); `absent`: the metric does not "
              "exist for this data (e.g. no large objects). Other metrics (AP50, AP75, COCO size "
              "buckets) are in the records. How to read: [docs/tables.md](../docs/tables.md).", ""]
    notes = Footnotes()
    for model in sorted({r["model"] for r in records}):
        parts += [f"## {model}", "", markdown_table(demo_table(records, model, notes)), ""]
    effect = qwt_effect(records)
    if effect:
        parts += ["## QwT against its baseline, seed by seed", "",
                  "Classifiers: relative change of KL(FP‖Q) (negative: closer to the FP model) and change of "
                  "top-1 in points; detector: change of box and mask AP in points. Seeds in the order listed. "
                  "With the reference's fp32 solve, then (where run) with the float64 solve of the same fit; a "
                  "seed's verdict is stated only where both solves move the metric the same way by more than "
                  "they differ from each other (else *undecided*): the fp32 inverse of an ill-conditioned "
                  "regression moves with the machine's kernels, so such a change is not a property of QwT "
                  "([docs/demo.md](../docs/demo.md)).",
                  "", *[f"- {line}" for line in effect], ""]
    parts += ["## Provenance", "", *notes.lines(), ""]
    links = [f"- [{job.label}]({PLOT_DIR}/{job.name})" for job in plot_jobs("demo", records)]
    if links:
        parts += ["## Per-block QwT diagnostics (R², error before/after; mean and range over the seeds of "
                  "the row)", "", *links, ""]
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
        render_plots(records_dir, out_path.parent, suites=("demo",))
    return out_path
