"""One experiment, the same ten steps for every suite: :func:`run` (``run(task, config)``).

    1. plan        validate everything that needs no I/O (model, bits, methods, options, device)
    2. preflight   outputs writable, --load-state readable and of this model, dataset and files present
    3. build       the FP model on its device (inside the process group under torchrun); state weights
    4. data        the calibration images (RepQ-ViT batch, QwT images), decoded before any evaluation
    5. fp eval     the FP reference (kept for agreement / KL when the task returns one)
    6. quantize    the task's layer plan, per base method (``repq``, ``percentile``, ...)
    7. calibrate   RepQ-ViT + reparameterization (or load a calibrated state)
    8. QwT fit     block by block (``qwt_core.fit_qwt``) on the task's blockwise adapter
    9. save/load   the calibrated state (``--save-state``), with a fingerprint of the FP weights
    10. evaluate + record   each method evaluated and its record written at once (rank 0)

A :class:`Task` (``classification.task``, ``detection.task``) says how: build, calibration data,
evaluation, quantization plan, calibration with its reparameterization pairs, blockwise adapter.
Every bad input raises :class:`runtime.errors.BadInput` before any work.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

import qwt_core
from qwt_core import (
    BlockReport,
    BlockwiseAdapter,
    QwTConfig,
    fit_qwt,
    load_state,
    model_size,
    save_state,
    set_quant_state,
    weights_fingerprint,
)
from qwt_core.qwt.compensation import CompensatedBlock
from qwt_core.state_io import StateFileError, StateInfo, read_state_info

from . import distributed as dist_mod
from . import preflight
from .config import RunConfig, flag_of, record_config
from .errors import BadInput, CheckpointError
from .methods import QWT
from .records import make_record, write_record

log = logging.getLogger("qwt")  # the one logger of both suites (the CLIs configure it)


@dataclass
class Plan:
    """The validated experiment (step 1)."""

    model: str  # the record's model name
    methods: list[str]  # in order; "fp" and base methods and <base>+qwt
    variants: list[str]  # base quantization methods, in order
    device: str  # resolved and checked ("cpu", "cuda", "cuda:1")
    extra: dict[str, Any] = field(default_factory=dict)  # the task's own (spec, adapter, mmengine config, ...)


@dataclass
class Evaluation:
    """One evaluation: metrics (percent), images, seconds; ``reference`` is kept from the FP one."""

    metrics: dict[str, float]
    images: int
    seconds: float
    partial: bool = False
    reference: Any = None  # what later evaluations compare with (FP log-probabilities)
    record: dict[str, Any] = field(default_factory=dict)  # extra make_record fields (coco_raw, ...)


@dataclass
class CalibrationData:
    calib: Any = None  # the RepQ-ViT calibration input (None: loaded state)
    qwt_batches: Iterable[Any] = ()  # the QwT images, batch by batch
    config: dict[str, Any] = field(default_factory=dict)  # recorded (calib_images, qwt_images, ...)


@dataclass
class Context:
    """What the steps share: the config, the plan, the process group, the loaded state."""

    cfg: RunConfig
    plan: Plan
    state: StateInfo | None = None
    dist: dist_mod.DistInfo | None = None
    fingerprint: str | None = None
    base_config: dict[str, Any] = field(default_factory=dict)  # recorded with every method
    extra: dict[str, Any] = field(default_factory=dict)  # the task's scratch (loader, dataset entry, ...)

    @property
    def needs_qwt_fit(self) -> bool:
        return any(m.endswith(QWT) for m in self.plan.methods) and not (self.state and self.state.has_qwt)

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main


class Task(Protocol):
    """What a suite provides to :func:`run`."""

    suite: str

    def plan(self, cfg: RunConfig) -> Plan: ...  # 1: no I/O beyond config files; BadInput
    def check_state(self, ctx: Context) -> None: ...  # 2: ctx.state.meta is of this model/method/bits
    def check_inputs(self, ctx: Context) -> None: ...  # 2: dataset, checkpoint, images
    def open_group(self, ctx: Context) -> dist_mod.DistInfo: ...  # 3: the process group (device bound)
    def build(self, ctx: Context) -> nn.Module: ...  # 3: the FP model on ctx.dist.device
    def check_model(self, ctx: Context, model: nn.Module) -> None: ...  # 3: what needs the model
    def data(self, ctx: Context, model: nn.Module) -> CalibrationData: ...  # 4
    def evaluate(self, ctx: Context, net: nn.Module, method: str, ref: Any) -> Evaluation: ...  # 5, 10
    def quantize(self, ctx: Context, model: nn.Module, variant: str) -> dict[str, Any]: ...  # 6: config
    def calibrate(self, ctx: Context, model: nn.Module, calib: Any) -> None: ...  # 7
    def blockwise(self, ctx: Context, model: nn.Module) -> BlockwiseAdapter: ...  # 8
    def state_meta(self, ctx: Context, variant: str) -> dict[str, Any]: ...  # 9
    def after_calibration(self, ctx: Context, model: nn.Module) -> dict[str, Any]: ...  # recorded


@contextlib.contextmanager
def without_compensation(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily unwrap every CompensatedBlock (evaluate the base method alone from a QwT state)."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, CompensatedBlock)]
    try:
        for name, m in wrapped:
            model.set_submodule(name, m.block)
        yield model
    finally:
        for name, m in wrapped:
            model.set_submodule(name, m)


def eval_arithmetic(cfg: RunConfig) -> contextlib.AbstractContextManager:
    """The run's evaluation arithmetic (fp16 compensation on/off, half_arith)."""
    return qwt_core.eval_arithmetic(fp16=cfg.fp16_eval, half_arith=cfg.half_arith)


def read_state(cfg: RunConfig) -> StateInfo | None:
    """The ``--load-state`` file's meta (CheckpointError naming the flag)."""
    if cfg.load_state is None:
        return None
    try:
        return read_state_info(cfg.load_state, what="--load-state")
    except StateFileError as e:
        raise CheckpointError(str(e)) from None


def check_state_weights(ctx: Context, source: str) -> None:
    """The loaded state was calibrated from these FP weights (``weights_fingerprint`` in its meta)."""
    assert ctx.state is not None
    saved = ctx.state.meta.get("weights_fingerprint")
    path = ctx.cfg.load_state
    if saved is None:
        raise CheckpointError(f"--load-state {path} does not say which weights it was calibrated "
                              "from (saved by an older version): calibrate again with --save-state")
    if saved != ctx.fingerprint:
        cfg_ckpt = ctx.state.meta.get("config", {}).get("checkpoint", ctx.state.meta.get("checkpoint"))
        raise CheckpointError(f"--load-state {path} was calibrated from other FP weights than {source} "
                              f"(weights fingerprint {saved}, these are {ctx.fingerprint}; the state's config names "
                              f"checkpoint {cfg_ckpt!r}): pass the weights it was calibrated with")


def check_start_block(ctx: Context, task: Task, model: nn.Module, what: str) -> None:
    """``--qwt-start-block`` is one of the model's QwT blocks."""
    n = len(task.blockwise(ctx, model).steps())
    start = ctx.cfg.qwt.start_block
    if start >= n:
        raise BadInput(f"{flag_of('start_block', qwt=True)} {start}: {what} has {n} QwT blocks "
                       f"(0..{n - 1}); nothing would be compensated")


def run(task: Task, cfg: RunConfig, on_record: Callable[[dict[str, Any]], None] | None = None
        ) -> list[dict[str, Any]]:
    """The ten steps (module docstring); returns the records (each written as soon as evaluated)."""
    ctx = Context(cfg, task.plan(cfg))  # 1
    ctx.base_config.update(record_config(cfg))  # both suites: every config field, qwt nested
    try:
        preflight.check_outputs(cfg.results_dir, cfg.save_state)  # 2
    except preflight.PreflightError as e:
        raise BadInput(str(e)) from None
    ctx.state = read_state(cfg)
    if ctx.state is not None:
        task.check_state(ctx)
    task.check_inputs(ctx)
    ctx.dist = task.open_group(ctx)  # 3: after the input checks, so bad input fails every rank alike
    try:
        records = _steps(task, ctx, on_record)
        dist_mod.barrier()
    finally:
        dist_mod.cleanup(ctx.dist)
    return records


def _steps(task: Task, ctx: Context, on_record: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    cfg, plan, records = ctx.cfg, ctx.plan, []
    model = task.build(ctx)  # 3
    ctx.fingerprint = weights_fingerprint(model) if (cfg.save_state or ctx.state) else None
    task.check_model(ctx, model)
    if ctx.needs_qwt_fit:
        check_start_block(ctx, task, model, plan.model)
    data = task.data(ctx, model)  # 4
    ctx.base_config.update(weights_fingerprint=ctx.fingerprint)

    def emit(method: str, net: nn.Module, times: dict[str, float], ref: Any = None,
             blocks: list[BlockReport] | None = None, extra: dict[str, Any] | None = None) -> Evaluation:
        with eval_arithmetic(cfg):
            res = task.evaluate(ctx, net, method, ref)  # 10
        fp = method == "fp"
        rec = make_record(suite=task.suite, model=plan.model, method=method, w_bits=None if fp else cfg.w_bits,
                          a_bits=None if fp else cfg.a_bits, metrics=res.metrics, images=res.images,
                          partial=res.partial, dataset=ctx.extra.get("dataset"), seed=cfg.seed,
                          config={**ctx.base_config, **(extra or {})}, times={**times, "eval_s": res.seconds},
                          blocks=[b.to_dict() if isinstance(b, BlockReport) else b for b in blocks or []],
                          model_size=model_size(net).to_dict(), command=cfg.command, device=plan.device,
                          world_size=ctx.dist.world_size if ctx.dist else 1, **res.record)
        if cfg.results_dir is not None and ctx.is_main:  # written now: a later failure keeps it
            rec["_path"] = str(write_record(rec, cfg.results_dir))
        records.append(rec)
        metrics = " ".join(f"{k} {v:.4g}" for k, v in res.metrics.items())
        log.info("%s %s%s: %s (%d images)%s", plan.model, method, "" if fp else f" w{cfg.w_bits}a{cfg.a_bits}",
                 metrics, res.images, f" -> {rec['_path']}" if "_path" in rec else "")
        if on_record is not None:
            on_record(rec)
        return res

    fp_ref = emit("fp", model, {}).reference if "fp" in plan.methods else None  # 5
    for i, variant in enumerate(plan.variants):
        qmodel = model if i == len(plan.variants) - 1 else copy.deepcopy(model)
        extra = {"quant_method": variant, **task.quantize(ctx, qmodel, variant), **data.config}  # 6
        times: dict[str, float] = {}
        blocks: list[Any] = []
        t0 = time.perf_counter()
        if ctx.state is not None:  # 7 (or 9: load)
            assert cfg.load_state is not None  # (ctx.state is read from it)
            try:
                meta = load_state(qmodel, cfg.load_state)
            except ValueError as e:
                raise CheckpointError(" ".join(str(e).split())[:300]) from e
            blocks = list(meta.get("blocks", []))
            extra["loaded_state"] = cfg.load_state
            log.info("loaded calibrated state %s (QwT: %s)", cfg.load_state, ctx.state.has_qwt)
        else:
            task.calibrate(ctx, qmodel, data.calib)
            times["calibration_s"] = time.perf_counter() - t0
            log.info("%s calibration: %.1fs", variant, times["calibration_s"])
        set_quant_state(qmodel, weight=True, act=True)
        extra.update(task.after_calibration(ctx, qmodel))
        has_qwt = bool(ctx.state and ctx.state.has_qwt)
        if variant in plan.methods:
            with without_compensation(qmodel) if has_qwt else contextlib.nullcontext(qmodel) as net:
                emit(variant, net, times, fp_ref, extra=extra)
        fitted = False
        if variant + QWT in plan.methods:
            qcfg = cfg.qwt
            if not has_qwt:  # 8
                blocks = _fit(task, ctx, qmodel, data.qwt_batches, qcfg)
                times["qwt_s"] = sum(r.extra.get("seconds", 0.0) for r in blocks)
                has_qwt = fitted = True
            emit(variant + QWT, qmodel, times, fp_ref, blocks, {**extra, "qwt_state_loaded": not fitted})
        if cfg.save_state and ctx.is_main:  # 9 (a loaded state is written again: the same tensors)
            save_state(qmodel, cfg.save_state, meta={**task.state_meta(ctx, variant), "method": variant,
                                                    "w_bits": cfg.w_bits, "a_bits": cfg.a_bits, "qwt": has_qwt,
                                                    "weights_fingerprint": ctx.fingerprint,
                                                    "blocks": [b.to_dict() if isinstance(b, BlockReport) else b
                                                               for b in blocks]})
            log.info("saved calibrated state to %s", cfg.save_state)
    return records


def _fit(task: Task, ctx: Context, qmodel: nn.Module, batches: Iterable[Any], qcfg: QwTConfig) -> list[BlockReport]:
    """QwT block by block, logging R² and the error before/after compensation of each block."""
    last = [time.perf_counter()]

    def on_block(r: BlockReport) -> None:
        now = time.perf_counter()
        r.extra["seconds"], last[0] = now - last[0], now
        log.info("QwT block %2d %-22s R2 %.4f  mse %.4e -> %.4e  %s (%d samples)", r.index, r.name, r.r2,
                 r.mse_before, r.mse_after, "compensated" if r.applied else "kept zero", r.samples)
        hook = ctx.extra.get("on_block")
        if hook is not None:
            hook(r)

    assert ctx.dist is not None
    return fit_qwt(task.blockwise(ctx, qmodel), batches, qcfg, device=ctx.dist.device, on_block=on_block)
