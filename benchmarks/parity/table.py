"""The printed parity table (grouped by model) and its last line."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .compare import Row, fmt

HEADER = ("stage", "measured", "tolerance", "verdict")


@dataclass
class ModelResult:
    """The rows of one model and how long each side took."""

    model: str
    rows: list[Row]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def deciding(self) -> list[Row]:
        return [r for r in self.rows if r.deciding]

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "FAIL"]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rows": [r.to_dict() for r in self.rows], "seconds": self.seconds,
                "failed": len(self.failed), "deciding": len(self.deciding)}


def render(results: list[ModelResult]) -> str:
    """One block per model: a title line, then stage / measured / tolerance / verdict and the detail
    of each row on the line below it."""
    cells = [[(r.stage, fmt(r.measured), r.tolerance, r.verdict) for r in res.rows] for res in results]
    w = [max([len(h)] + [len(c[i]) for block in cells for c in block]) for i, h in enumerate(HEADER)]
    line = lambda c: "  " + "  ".join(x.ljust(w[i]) for i, x in enumerate(c)).rstrip()  # noqa: E731
    out = []
    for res, block in zip(results, cells):
        took = ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items())
        out += [f"{res.model}: {len(res.failed)} of {len(res.deciding)} deciding rows failed"
                + (f" ({took})" if took else ""),
                line(HEADER), "  " + "-" * (sum(w) + 2 * (len(w) - 1))]
        for r, c in zip(res.rows, block):
            out.append(line(c))
            if r.detail:
                out.append(" " * 6 + "└ " + r.detail)
        out.append("")
    return "\n".join(out)


def summary(results: list[ModelResult], tool: str = "parity") -> str:
    """``<tool>: N deciding rows failed of M (model failed/deciding, ...)`` (``parity``, ``parity-det``)."""
    n_fail = sum(len(r.failed) for r in results)
    n_dec = sum(len(r.deciding) for r in results)
    per = ", ".join(f"{r.model} {len(r.failed)}/{len(r.deciding)}" for r in results)
    return f"{tool}: {n_fail} deciding rows failed of {n_dec} ({per})"


def write_json(path: str, a: Any, results: list[ModelResult], seconds: float, module: str, tool: str = "parity",
               **where: Any) -> None:
    """The run as JSON (``--json``): summary, counts, settings (``a``'s options), every row, provenance
    with the command line of ``python -m <module>``; ``where``: the folders used (``ref``, ``side_env``)."""
    import json
    import shlex
    import sys
    from pathlib import Path

    from runtime.records import provenance
    doc = {"summary": summary(results, tool), "failed": sum(len(r.failed) for r in results),
           "deciding": sum(len(r.deciding) for r in results), "seconds": seconds,
           **{k: str(v) if v else None for k, v in where.items()},
           "settings": {k: v for k, v in vars(a).items() if k not in ("json", "traceback")},
           "models": [r.to_dict() for r in results],
           "provenance": provenance(shlex.join([sys.executable, "-m", module, *sys.argv[1:]]))}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, default=str) + "\n")
