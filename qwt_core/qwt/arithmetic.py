"""The evaluation arithmetic of QwT compensation: a context, not module or state-file state.

In eval mode a compensation module computes its product x @ W (or the grouped convolution) as
``(x.half() @ W.half()).float()`` when ``fp16`` is set (the reference's classification setting,
the default outside any context) and in fp32 otherwise (the reference's detection setting);
``half_arith`` says how the fp16 product is computed (:mod:`qwt_core.qwt.halfdot`: ``"native"``,
the device's fp16 kernel bit for bit, or ``"emulated"``, fp16 operands and result with an fp32
product). Training mode, and the features propagated while fitting, are always fp32.

    with eval_arithmetic(fp16=False):          # detection
        evaluate(model)
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from .halfdot import HALF_ARITHS


@dataclass(frozen=True)
class EvalArithmetic:
    fp16: bool = True  # fp16 product at evaluation (reference: classification on, detection off)
    half_arith: str = "native"  # how the fp16 product is computed: native | emulated

    def __post_init__(self) -> None:
        if self.half_arith not in HALF_ARITHS:
            raise ValueError(f"half_arith must be one of {HALF_ARITHS}, got {self.half_arith!r}")


_CURRENT: ContextVar[EvalArithmetic] = ContextVar("qwt_eval_arithmetic", default=EvalArithmetic())


def current_arithmetic() -> EvalArithmetic:
    """The evaluation arithmetic in force (the reference classification setting outside any context)."""
    return _CURRENT.get()


@contextlib.contextmanager
def eval_arithmetic(fp16: bool = True, half_arith: str = "native") -> Iterator[EvalArithmetic]:
    """Evaluate compensation modules inside the block with this arithmetic (restored on exit,
    also on errors; per thread / task, as a ``contextvars.ContextVar``)."""
    token = _CURRENT.set(EvalArithmetic(bool(fp16), half_arith))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)
