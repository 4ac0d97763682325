"""Row selection: which records make which table row and which plot series.

The one place that decides what a row shows, so the tables (:mod:`benchmarks.tables`,
:mod:`benchmarks.demo_table`) and the per-block plots (:mod:`benchmarks.plots`) show the same
records. Pure functions of the records (no rendering); imports only :mod:`benchmarks.render` and
:mod:`benchmarks.paper_cell`, below every table and plot module.

* Paper tables (:func:`paper_cells`, :func:`custom_groups`): a cell shows the newest record that
  fills a paper cell (:func:`benchmarks.paper_cell.fills_paper_cell`); partial and custom runs are
  grouped per (model, method, bits, what differs), newest first.
* Demo table (:func:`demo_groups`): per (model, method, bits) the newest full record of each seed;
  partial records count only when no seed has a full one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.paper_cell import fills_paper_cell, label
from benchmarks.render import bits_key, cells, pick, records_frame


def paper_cells(records: list[dict[str, Any]]) -> dict[tuple[str, str, int, int], dict[str, Any]]:
    """(model, method, w_bits, a_bits) (fp bits -1) -> the record its cell shows: the newest of
    the records that fill a paper cell."""
    return {k: p.shown for k, p in cells(records_frame([r for r in records if fills_paper_cell(r)])).items()
            if p.shown is not None}


def custom_groups(records: list[dict[str, Any]]) -> dict[tuple[str, str, int, int, str], list[dict[str, Any]]]:
    """(model, method, w_bits, a_bits, what differs) -> its partial / custom records, newest first."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for rec in records:
        if not fills_paper_cell(rec):
            groups.setdefault((rec["model"], rec["method"], *bits_key(rec["w_bits"], rec["a_bits"]), label(rec)),
                              []).append(rec)
    return {k: list(pick(records_frame(g)).records) for k, g in groups.items()}


@dataclass(frozen=True)
class DemoGroup:
    """The records of one demo row (model, method, bits): per seed the newest full record (or the
    newest partial one when no seed has a full run)."""

    used: tuple[dict[str, Any], ...]  # what the row averages, by seed
    shown: int  # seeds with any record
    runs: int  # records of the row, all seeds and runs
    partial: bool  # only partial runs

    def seeds_text(self) -> str:
        text = str(len(self.used))
        if self.partial:
            text += " (partial)"
        elif len(self.used) < self.shown:
            text += f" (+{self.shown - len(self.used)} partial, excluded)"
        if self.runs > self.shown:
            text += f"; newest of {self.runs} runs"
        return text


def demo_groups(records: list[dict[str, Any]]) -> dict[tuple[str, str, int, int], DemoGroup]:
    """(model, method, w_bits, a_bits) (fp bits -1) -> :class:`DemoGroup`: what the table and
    the plots show."""
    frame = records_frame(records)
    per_seed = cells(frame, ("model", "method", "w_bits", "a_bits", "seed"))
    by_row: dict[tuple, list] = {}
    for (model, method, w, a, _seed), cell in per_seed.items():
        by_row.setdefault((model, method, w, a), []).append(cell)
    out = {}
    for key, seed_cells in by_row.items():
        shown = [c.shown for c in seed_cells]
        full = [r for r in shown if not r["partial"]]
        used = full or shown  # partial seeds count only when no seed has a full run
        out[key] = DemoGroup(tuple(sorted(used, key=lambda r: r["seed"])), len(shown),
                             sum(c.n for c in seed_cells), not full)
    return out
