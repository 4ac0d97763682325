"""The one reader of a record's ``config`` into the typed run config, whatever its age.

Records before the shared run config wrote the QwT settings flat (``start_block``, ``kernel_size``,
``factor``, ``qwt_solver``, ``qwt_fp16_eval``: detection; classification also nested ``qwt`` for
``+qwt`` methods) and some fields under other names (``data_root``, ``ckpt_dir``,
``model_overrides``). Newer records write every field and ``qwt`` nested
(:func:`runtime.config.record_config`). :func:`read_config` maps both into a config object and
says which settings the record did not hold (the object has the default there: the caller decides
what a missing setting means; ``benchmarks.paper_cell`` counts it as a deviation).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from qwt_core import QwTConfig
from qwt_core.qwt.config import SOLVER_PRESETS

from .config import RunConfig

C = TypeVar("C", bound=RunConfig)

#: old flat key -> QwTConfig field
FLAT_QWT = {"start_block": "start_block", "kernel_size": "kernel_size", "factor": "factor",
            "qwt_solver": "solver", "qwt_store": "store"}
#: old name -> run-config field
RENAMED = {"data_root": "data_dir", "ckpt_dir": "checkpoint_dir", "model_overrides": "model_kwargs",
           "qwt_fp16_eval": "eval_fp16"}
#: keys of an old nested ``qwt`` that are run-level settings now
RUN_LEVEL_IN_QWT = {"fp16_eval": "eval_fp16", "half_arith": "half_arith"}


def read_config(cls: type[C], config: dict[str, Any]) -> tuple[C, frozenset[str]]:
    """(the typed config of a record's ``config``, the settings it did not record: ``"field"`` or
    ``"qwt.field"``). Keys that are no field of ``cls`` (the task's own) are ignored."""
    run_names = {f.name for f in fields(cls) if f.name != "qwt" and f.metadata.get("record", True)}
    qwt_names = {f.name for f in fields(QwTConfig)}
    run: dict[str, Any] = {}
    qwt: dict[str, Any] = {}
    flat = dict(config)
    nested = flat.pop("qwt", None)
    for key, value in flat.items():
        if key in FLAT_QWT:
            qwt[FLAT_QWT[key]] = value
        elif RENAMED.get(key, key) in run_names and key not in ("model_kwargs",):
            run[RENAMED.get(key, key)] = value
    if isinstance(nested, dict):
        for key, value in nested.items():
            if key in RUN_LEVEL_IN_QWT:
                run.setdefault(RUN_LEVEL_IN_QWT[key], value)
            qwt[key] = value  # the nested value wins over an old flat one
    if "solver" in qwt and qwt["solver"] in SOLVER_PRESETS:  # the old preset name -> its fields
        for key, value in SOLVER_PRESETS[qwt.pop("solver")].items():
            qwt.setdefault(key, value)
    qwt = {k: v for k, v in qwt.items() if k in qwt_names}
    missing = {n for n in run_names if n not in run} | {f"qwt.{n}" for n in qwt_names if n not in qwt}
    if isinstance(run.get("methods"), list):
        run["methods"] = tuple(run["methods"])
    return cls(**run, qwt=QwTConfig(**qwt)), frozenset(missing)
