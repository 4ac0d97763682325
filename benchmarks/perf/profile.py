"""Where a QwT fit spends its time: process CPU seconds per component of :func:`qwt_core.fit_qwt`.

:class:`FitProfile` wraps, for the duration of one fit, the functions the driver calls (the
block calls of the adapter's steps, split into full-precision and quantized passes; the float64
normal equations; the solves; the propagation to the next block; the feature store; the
embedding) with timers on the same clock as the benchmark. Nothing is nested: every second is
counted once, and what no wrapper sees is "the rest" (Python, the y = FP - Q subtraction, the
reports). The wrappers cost a clock read per call, a few hundred calls per fit.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, cast

from qwt_core.qwt import accumulator, compensation, driver, rows, store

COMPONENTS = ("embed", "FP block passes", "quantized block passes", "normal equations (float64)",
              "solve", "propagation (fp32 compensation)", "feature store")


class FitProfile:
    """``with FitProfile(adapter, clock) as p: fit_qwt(adapter, ...)``; then ``p.seconds``."""

    def __init__(self, adapter: Any, clock: Callable[[], float] = time.process_time) -> None:
        self.adapter, self.clock = adapter, clock
        # a Counter of float seconds (typeshed's Counter counts ints)
        self.seconds = cast("dict[str, float]", Counter())
        self.counts: Counter[str] = Counter()  # "store bytes written", "normal-equation MACs"
        self._fp = False

    def _timed(self, label: str | Callable[[], str], fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label() if callable(label) else label] += self.clock() - t0
        return wrapper

    def _counted(self, count: Callable[..., None], fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            count(*args)
            return fn(*args, **kwargs)
        return wrapper

    def _ne_macs(self, columns: bool) -> Callable[..., None]:
        """float64 multiply-adds of one update: rows x G x (D+1) x (D+1+O) (rows: x (n, G, D) for
        ``update``, x (B, G, D, *S) -> B * prod(S) for ``update_columns``)."""
        def count(acc: Any, x: Any, y: Any) -> None:
            rows = x.shape[0] * (math.prod(x.shape[3:]) if columns else 1)
            self.counts["normal-equation MACs"] += rows * acc.groups * (acc.in_dim + 1) * (acc.in_dim + 1 + acc.out_dim)
        return count

    def _store_bytes(self, store_: Any, t: Any) -> None:
        if store_.where == "disk":
            self.counts["store bytes written"] += t.numel() * t.element_size()

    @contextlib.contextmanager
    def _full_precision(self, module: Any) -> Iterator[Any]:
        with self._orig_fp(module) as m:
            self._fp = True
            try:
                yield m
            finally:
                self._fp = False

    def __enter__(self) -> FitProfile:
        patches: list[tuple[Any, str, Any]] = []

        def patch(owner: Any, name: str, new: Any) -> None:
            own = name in vars(owner)  # (an instance attribute, or a class / module member)
            patches.append((owner, name, vars(owner)[name] if own else None))
            setattr(owner, name, new)

        for ne in (accumulator.NormalEquations, rows.ReferenceRows):  # the two regressions
            for name in ("update", "update_columns"):
                patch(ne, name, self._counted(self._ne_macs(name == "update_columns"),
                                              self._timed("normal equations (float64)", ne.__dict__[name])))
            for name in ("solve", "residual"):
                patch(ne, name, self._timed("solve", ne.__dict__[name]))
        for cls in (compensation.LinearCompensation, compensation.ConvCompensation):
            patch(cls, "add_to", self._timed("propagation (fp32 compensation)", cls.__dict__["add_to"]))
        fs = store.FeatureStore
        for name in ("_put", "_read", "_forget"):  # writes, reads (and moves between devices), deletions
            fn = self._timed("feature store", fs.__dict__[name])
            patch(fs, name, self._counted(self._store_bytes, fn) if name == "_put" else fn)
        self._orig_fp = driver.full_precision
        patch(driver, "full_precision", self._full_precision)
        patch(self.adapter, "embed", self._timed("embed", self.adapter.embed))
        steps = list(self.adapter.steps())
        for step in steps:
            patch(step, "call",
                  self._timed(lambda: "FP block passes" if self._fp else "quantized block passes", step.call))
            if step.after is not None:
                patch(step, "after", self._timed("propagation (fp32 compensation)", step.after))
        patch(self.adapter, "steps", lambda: steps)  # (adapters may build new steps on every call)
        self._patches = patches
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, old in reversed(self._patches):
            if old is None:
                delattr(owner, name)  # was the class's method: drop the instance's wrapper
            else:
                setattr(owner, name, old)

    def breakdown(self, total: float) -> dict[str, float]:
        """Seconds per component plus "the rest" (total minus everything timed)."""
        out = {c: self.seconds.get(c, 0.0) for c in COMPONENTS}
        out["the rest"] = total - sum(out.values())
        return out
