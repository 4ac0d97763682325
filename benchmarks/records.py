"""Result records, as the table layer reads them: the schema, writer and loader live in
:mod:`runtime.records` (below the experiment pipelines, which write records with it); this
module re-exports them for ``benchmarks`` code (tables, plots, the demo and perf runners)."""
from __future__ import annotations

from runtime.records import *  # noqa: F401,F403
from runtime.records import __all__  # noqa: F401
