"""The experiment, as a function: build -> FP eval -> quantize + RepQ-ViT calibration -> eval ->
QwT -> eval, one result record per evaluated method. The CLI is a thin layer over
:func:`run_experiment`.

Methods (``ExperimentConfig.methods``):
- every family: ``fp``;
- ViT / DeiT / Swin: ``repq``, ``repq+qwt``;
- ResNet: ``percentile``, ``percentile+qwt`` (reference: conv inputs 8-bit) and
  ``percentile_strict``, ``percentile_strict+qwt`` (conv inputs at a_bits).
A ``<base>+qwt`` method reuses the calibrated ``<base>`` model of the same run.

Every bad input is detected before any evaluation (:func:`plan_experiment` without I/O, then the
output folders, the calibrated state, the dataset layout, the weights and the calibration images),
so a refused run writes nothing. Each record is written (atomically,
:func:`qwt_core.records.write_record`) as soon as its method is evaluated: a run that fails later
(an unreadable val image, an interruption) keeps the records it finished.

Several processes (``torchrun --nproc_per_node N -m classification ...``, see docs/distributed.md):
each rank builds the model; the RepQ-ViT batch is loaded on rank 0 and broadcast; the global QwT
image set (independent of N) is split into contiguous shards and QwT's normal equations are
all-reduced before each solve; the val set is split into contiguous shards without padding and the
per-batch counts are combined in the global batch order; only rank 0 writes records and states.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset
from tqdm import tqdm

from qwt_core import (BlockReport, QwTConfig, calibrate_repq, eval_arithmetic, fit_qwt, load_state, model_size,
                      save_state, set_quant_state, weights_fingerprint)
from qwt_core import distributed as dist_mod
from qwt_core import preflight
from qwt_core.qwt.arithmetic import EvalArithmetic
from qwt_core.qwt.compensation import CompensatedBlock
from qwt_core.qwt.config import solver_preset
from qwt_core.records import RECORDS_DIR, dataset_entry, make_record, write_record
from qwt_core.state_io import StateFileError, StateInfo, read_state_info

from . import data as data_mod
from .adapters import FamilyAdapter, for_family
from .build import DEFAULT_CHECKPOINT_DIR, build_model, check_constructor_kwargs, resolve_spec
from .errors import CheckpointError, ClassificationError, DataLayoutError, MethodError
from .evaluate import EvalResult, evaluate, metrics_from_batches
from .registry import ModelSpec, UnknownModelError

log = logging.getLogger("classification")
QWT = "+qwt"


@dataclass
class ExperimentConfig:
    """One (model, bits) experiment; every field has the reference default."""

    model: str  # registry name
    data_dir: str  # <dir>/train/<class>/..., <dir>/val/<class>/...
    w_bits: int = 4
    a_bits: int = 4
    methods: tuple[str, ...] | None = None  # None: the family default (fp, repq, repq+qwt | fp, percentile, percentile+qwt)
    checkpoint: str | None = None  # local state dict replacing the pretrained weights (any model)
    checkpoint_dir: str | None = None  # folder holding the ResNet checkpoints (and local timm weights)
    pretrained: bool = True  # False: random init (tests, smoke runs)
    tiny: bool = False  # small random-init variant of the same classes (tests, smoke runs)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # constructor overrides
    device: str | None = None  # None: cuda when torch sees a GPU, else cpu
    batch_size: int = 64  # eval and QwT batch size
    workers: int = field(default_factory=lambda: preflight.default_workers(4))  # val loader workers (<= CPUs)
    seed: int = 0  # calibration sampling / augmentation / random init (>= 0)
    class_subset: bool = False  # val class folders are a subset of the model's classes: map them by name
    calib_size: int = 32  # RepQ-ViT: one batch of augmented train images (reference 32)
    qwt_size: int = 512  # QwT regression images (reference LINEAR_COMPENSATION_SAMPLES = 512)
    calib_augment: bool = True  # reference: training augmentation on the calibration images
    val_limit: int | None = None  # evaluate an evenly strided subset (records say partial)
    start_block: int = 0  # QwT: blocks before this keep zero compensation
    kernel_size: int = 1  # QwT ResNet: grouped-conv kernel
    factor: int = 64  # QwT ResNet: groups = C_in // factor
    qwt_solver: str = "reference"  # qwt_core.SOLVER_PRESETS name: reference | streaming | lstsq
    half_arith: str = "native"  # eval_arithmetic(fp16=True, half_arith): native | emulated
    save_state: str | None = None  # write the calibrated state here
    load_state: str | None = None  # skip calibration: load this state
    results_dir: str | None = str(RECORDS_DIR)  # None: do not write records
    suite: str = "imagenet"
    command: str | None = None  # recorded command line (default: sys.argv)
    progress: bool = True  # tqdm bars on stderr
    spec: ModelSpec | None = field(default=None, repr=False)  # use this spec instead of the registry's

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("spec")
        return d


@dataclass
class Plan:
    """The validated experiment: resolved spec, adapter, methods and quantization variants."""

    spec: ModelSpec
    adapter: FamilyAdapter
    methods: list[str]
    variants: list[str]  # base quantization methods, in order
    device: str  # resolved and checked ("cpu", "cuda", "cuda:1")


def qwt_config(cfg: ExperimentConfig) -> QwTConfig:
    """The QwT options of an experiment (raises ValueError on a bad value, --half-arith included)."""
    EvalArithmetic(True, cfg.half_arith)
    return QwTConfig(start_block=cfg.start_block, kernel_size=cfg.kernel_size, factor=cfg.factor,
                     **solver_preset(cfg.qwt_solver))  # type: ignore[arg-type]


def plan_experiment(cfg: ExperimentConfig) -> Plan:
    """Validate everything that needs no I/O (model, bits, methods, options, device)."""
    try:
        spec = resolve_spec(cfg.spec or cfg.model, cfg.model_kwargs or None, cfg.tiny)
    except UnknownModelError as e:
        raise ClassificationError(str(e)) from None
    for what, bits in (("--w-bits", cfg.w_bits), ("--a-bits", cfg.a_bits)):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
            raise ClassificationError(f"{what} must be an integer in 2..8, got {bits!r}")
    adapter = for_family(spec.family)
    if cfg.methods is not None and not cfg.methods:
        raise MethodError(f"--methods names no method; valid methods for {spec.name}: "
                          + ",".join(["fp"] + [m + s for m in adapter.methods for s in ("", QWT)]))
    methods = list(cfg.methods) if cfg.methods else list(adapter.default_methods)
    valid = ["fp"] + [m + s for m in adapter.methods for s in ("", QWT)]
    bad = [m for m in methods if m not in valid]
    if bad:
        raise MethodError(f"method {bad[0]!r} is not available for {spec.name} ({spec.family}); "
                          f"valid methods: {','.join(valid)}")
    if len(set(methods)) != len(methods):
        raise MethodError(f"duplicate methods in {','.join(methods)}")
    variants = list(dict.fromkeys(m.removesuffix(QWT) for m in methods if m != "fp"))
    if (cfg.save_state or cfg.load_state) and len(variants) > 1:
        raise MethodError("--save-state/--load-state hold one calibrated model: run one quantization "
                          f"method at a time (got {','.join(variants)})")
    for name, value, low in (("--calib-size", cfg.calib_size, 1), ("--qwt-size", cfg.qwt_size, 1),
                             ("--batch-size", cfg.batch_size, 1)):
        if value < low:
            raise ClassificationError(f"{name} must be >= {low}, got {value}")
    if cfg.val_limit is not None and cfg.val_limit < 1:
        raise ClassificationError(f"--val-limit must be >= 1 (omit it to evaluate every val image), got {cfg.val_limit}")
    try:
        preflight.check_seed(cfg.seed)
        preflight.check_workers(cfg.workers)
        device = preflight.parse_device(cfg.device if cfg.device is not None else preflight.default_device())
    except preflight.PreflightError as e:
        raise ClassificationError(str(e)) from None
    world = dist_mod.env_world_size()
    if world > 1 and any(m.endswith(QWT) for m in methods) and not cfg.load_state and cfg.qwt_size < world:
        raise ClassificationError(f"--qwt-size {cfg.qwt_size} is smaller than the number of processes "
                                  f"({world}): every process needs at least one QwT image")
    try:
        qwt_config(cfg)
    except ValueError as e:
        raise ClassificationError(f"QwT options: {e}") from None
    if cfg.model_kwargs:
        check_constructor_kwargs(spec, cfg.model_kwargs)
    return Plan(spec, adapter, methods, variants, device)


def check_outputs(cfg: ExperimentConfig) -> None:
    """The record folder and the state file can be written (before any work; nothing is left)."""
    try:
        preflight.check_outputs(cfg.results_dir, cfg.save_state)
    except preflight.PreflightError as e:
        raise ClassificationError(str(e)) from None


def _describe(meta: dict[str, Any]) -> str:
    bits = f" W{meta.get('w_bits')}A{meta.get('a_bits')}" if meta.get("w_bits") is not None else ""
    return f"{meta.get('model')} {meta.get('method')}{bits}"


def check_state(cfg: ExperimentConfig, plan: Plan) -> StateInfo:
    """The ``--load-state`` file is a readable classification state of this model, method, bits
    and constructor (its weights are checked after the model is built: :func:`check_state_weights`)."""
    assert cfg.load_state is not None
    try:
        info = read_state_info(cfg.load_state)
    except StateFileError as e:
        raise CheckpointError(str(e)) from None
    meta = info.meta
    if "detector" in meta or "model" not in meta:
        what = f"a detection state (detector {meta['detector']})" if "detector" in meta else "not a classification state"
        raise CheckpointError(f"--load-state {cfg.load_state} is {what}: give a state written by "
                              "python -m classification --save-state")
    want = {"model": plan.spec.name, "method": plan.variants[0], "w_bits": cfg.w_bits, "a_bits": cfg.a_bits}
    got = {k: meta.get(k) for k in want}
    if got != want:
        raise CheckpointError(f"--load-state {cfg.load_state} was calibrated for {_describe(got)}, "
                              f"not {_describe(want)}")
    if meta.get("model_kwargs") != _jsonable(plan.spec.kwargs):
        raise CheckpointError(f"--load-state {cfg.load_state} was calibrated for {plan.spec.name} built with "
                              f"{json.dumps(meta.get('model_kwargs'))}, not {json.dumps(_jsonable(plan.spec.kwargs))}")
    return info


def check_state_weights(cfg: ExperimentConfig, info: StateInfo, fingerprint: str) -> None:
    """The state was calibrated from these FP weights (``weights_fingerprint`` in its meta)."""
    saved = info.meta.get("weights_fingerprint")
    if saved is None:
        raise CheckpointError(f"--load-state {cfg.load_state} does not say which weights it was calibrated "
                              "from (saved by an older version): calibrate again with --save-state")
    if saved != fingerprint:
        source = cfg.checkpoint or ("random init" if not cfg.pretrained or cfg.tiny else "the pretrained weights")
        raise CheckpointError(f"--load-state {cfg.load_state} was calibrated from other FP weights than {source} "
                              f"(weights fingerprint {saved}, these are {fingerprint}; the state's config names "
                              f"checkpoint {info.meta.get('config', {}).get('checkpoint')!r}): pass the weights "
                              "it was calibrated with")


@contextlib.contextmanager
def without_compensation(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily unwrap every CompensatedBlock (evaluate RepQ-ViT alone from a QwT state)."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, CompensatedBlock)]
    try:
        for name, m in wrapped:
            model.set_submodule(name, m.block)
        yield model
    finally:
        for name, m in wrapped:
            model.set_submodule(name, m)


def _num_outputs(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    fc = getattr(model, "fc", None)
    return fc.out_features if isinstance(fc, nn.Linear) else None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_experiment(cfg: ExperimentConfig, on_record: Callable[[dict[str, Any]], None] | None = None
                   ) -> list[dict[str, Any]]:
    """Run every method of ``cfg``; returns the records (each also written under ``cfg.results_dir``
    as soon as its method is evaluated, and passed to ``on_record``).

    Raises :class:`ClassificationError` before any work on bad input. Under torchrun
    (``WORLD_SIZE`` > 1) it joins the process group (backend by device) and leaves it at the end;
    every rank returns the same records; rank 0 writes them.
    """
    plan = plan_experiment(cfg)
    check_outputs(cfg)
    state = check_state(cfg, plan) if cfg.load_state else None
    needs_qwt_fit = any(m.endswith(QWT) for m in plan.methods) and not (state and state.has_qwt)
    need_train = bool(plan.variants) and (state is None or needs_qwt_fit)
    classes = data_mod.check_layout(cfg.data_dir, need_train=need_train)

    dinfo = dist_mod.init_from_env(plan.device)  # after the input checks: bad input fails every rank alike
    try:
        records = _run(cfg, plan, state, needs_qwt_fit, need_train, classes, dinfo, on_record)
        dist_mod.barrier()
    finally:
        dist_mod.cleanup(dinfo)
    return records


def _class_targets(cfg: ExperimentConfig, spec: ModelSpec, classes: list[str], n_out: int | None,
                   trained: bool) -> tuple[list[int] | None, bool]:
    """(the model's class index of each val class folder or None for the folders' own order,
    whether the folders are a subset of the model's classes)."""
    if n_out is None:
        return None, False
    if len(classes) > n_out:
        raise DataLayoutError(f"{cfg.data_dir} has {len(classes)} classes but {spec.name} outputs {n_out}")
    subset = len(classes) < n_out
    if cfg.class_subset:
        return data_mod.subset_targets(classes, n_out), subset
    if subset and trained:
        raise DataLayoutError(
            f"{cfg.data_dir}/val has {len(classes)} class folders but {spec.name} outputs {n_out} classes: numbered "
            f"0..{len(classes) - 1} they would not be the model's classes; evaluate every class, or pass "
            "--class-subset to map each folder to the model's class by its name (ImageNet wnid or class index)")
    return None, subset  # random weights: the folders' order is as good as any (the record says subset)


def _run(cfg: ExperimentConfig, plan: Plan, state: StateInfo | None, needs_qwt_fit: bool, need_train: bool,
         classes: list[str], dinfo: dist_mod.DistInfo, on_record: Callable[[dict[str, Any]], None] | None
         ) -> list[dict[str, Any]]:
    """The body of :func:`run_experiment` once the inputs are checked: builds the model and checks
    what needs it (classes, state weights, QwT blocks), loads the calibration images, then
    evaluates each method and writes its record."""
    spec, adapter = plan.spec, plan.adapter
    quantized = bool(plan.variants)
    rank, world = dinfo.rank, dinfo.world_size
    progress = cfg.progress and dinfo.is_main
    dist_mod.maybe_inject_failure("start")
    _seed_everything(cfg.seed)
    device = dinfo.device  # cuda:LOCAL_RANK under torchrun
    random_weights = not cfg.checkpoint and (cfg.tiny or not cfg.pretrained)
    model, spec = build_model(spec, pretrained=cfg.pretrained and not cfg.tiny, checkpoint=cfg.checkpoint,
                              checkpoint_dir=cfg.checkpoint_dir or DEFAULT_CHECKPOINT_DIR)
    n_out = _num_outputs(model)
    targets, class_subset = _class_targets(cfg, spec, classes, n_out, trained=not random_weights)
    fingerprint = weights_fingerprint(model) if (cfg.save_state or state is not None) else None
    if state is not None:
        assert fingerprint is not None
        check_state_weights(cfg, state, fingerprint)
    if any(m.endswith(QWT) for m in plan.methods) and needs_qwt_fit:
        n_blocks = len(adapter.blockwise(model).steps())
        if cfg.start_block >= n_blocks:
            raise ClassificationError(f"--start-block {cfg.start_block}: {spec.name} has {n_blocks} QwT blocks "
                                      f"(0..{n_blocks - 1}); nothing would be compensated")
    model.to(device)
    log.info("%s: %s, %d val classes, methods %s", spec.name,
             cfg.checkpoint or (spec.timm_name if cfg.pretrained and not cfg.tiny else "random init"),
             len(classes), ",".join(plan.methods))

    loader = data_mod.val_loader(spec, cfg.data_dir, cfg.batch_size, cfg.workers, cfg.val_limit, rank, world,
                                 targets=targets)
    val_ds = loader.dataset
    n_val = len(val_ds.dataset if isinstance(val_ds, Subset) else val_ds)  # type: ignore[arg-type]
    partial = cfg.val_limit is not None and cfg.val_limit < n_val
    dataset = dataset_entry(cfg.suite, cfg.data_dir, "val", n_val, len(classes), class_subset)

    # every calibration image is decoded now, before any evaluation: a bad train image stops the run here
    calib: torch.Tensor | None = None
    qwt_batches: list[torch.Tensor] = []
    qwt_images = 0
    if need_train:
        t0 = time.perf_counter()
        calib, qwt_batches = data_mod.calibration_sets(
            spec, cfg.data_dir, cfg.calib_size, cfg.qwt_size, cfg.seed, cfg.batch_size,
            augment=cfg.calib_augment, need_qwt=needs_qwt_fit, progress=progress, rank=rank,
            world_size=world, need_calib=dinfo.is_main or state is not None)
        if dinfo.distributed and state is None:
            calib = dist_mod.broadcast_tensor(calib)  # chosen once, on rank 0
        n_qwt = sum(len(b) for b in qwt_batches)
        qwt_images = sum(dist_mod.gather_objects(n_qwt))  # the same global set whatever the world size
        log.info("calibration data: %d RepQ-ViT + %d QwT train images%s (%.1fs)", len(calib) if calib is not None else 0,
                 qwt_images, f" ({n_qwt} on rank {rank} of {world})" if dinfo.distributed else "",
                 time.perf_counter() - t0)

    base_config = {**cfg.to_dict(), "device": plan.device, "methods": plan.methods, "timm_name": spec.timm_name,
                   "arch": spec.arch, "family": spec.family, "input_size": spec.input_size,
                   "crop_pct": spec.crop_pct, "interpolation": spec.interpolation, "mean": list(spec.mean),
                   "std": list(spec.std), "model_kwargs": spec.kwargs, "model_overrides": dict(cfg.model_kwargs),
                   "paper_fp_top1": spec.paper_fp_top1, "weights_fingerprint": fingerprint}
    records: list[dict[str, Any]] = []

    def emit(method: str, res: EvalResult, times: dict[str, float], size: dict[str, Any],
             blocks: list[BlockReport] | None = None, extra_config: dict[str, Any] | None = None) -> None:
        fp = method == "fp"
        rec = make_record(
            suite=cfg.suite, model=spec.name, method=method, w_bits=None if fp else cfg.w_bits,
            a_bits=None if fp else cfg.a_bits, metrics=res.metrics, images=res.images, partial=partial,
            dataset=dataset, seed=cfg.seed, config={**base_config, **(extra_config or {})},
            times={**times, "eval_s": res.seconds}, blocks=[b.to_dict() for b in blocks or []],
            model_size=size, command=cfg.command, device=str(torch.device(plan.device)), world_size=world)
        if cfg.results_dir is not None and dinfo.is_main:  # written now: a later failure keeps it
            rec["_path"] = str(write_record(rec, cfg.results_dir))
            log.info("record %s", rec["_path"])
        records.append(rec)
        if on_record is not None:
            on_record(rec)
        m = res.metrics
        log.info("%s %s%s: top1 %.2f top5 %.2f%s (%d images)", spec.name, method,
                 "" if fp else f" w{cfg.w_bits}a{cfg.a_bits}", m["top1"], m["top5"],
                 f" agreement_fp {m['agreement_fp']:.2f} kl_fp {m['kl_fp']:.4f}" if "kl_fp" in m else "",
                 res.images)

    def run_eval(net: nn.Module, method: str, keep: bool = False, ref: torch.Tensor | None = None) -> EvalResult:
        bar = tqdm(loader, desc=f"{spec.name} {method} eval", disable=not progress, file=sys.stderr,
                   leave=False, dynamic_ncols=True)
        dist_mod.maybe_inject_failure("eval")
        with eval_arithmetic(True, cfg.half_arith):  # the reference's fp16 compensation product
            res = evaluate(net, bar, device, fp_logprobs=ref, keep_logprobs=keep, allow_empty=dinfo.distributed)
        if dinfo.distributed:  # every rank's batch counts, in the global batch order (shards are contiguous)
            parts = dist_mod.gather_objects((res.batches, res.seconds))
            res.batches = [b for batches, _ in parts for b in batches]
            res.metrics, res.images = metrics_from_batches(res.batches, ref is not None)
            res.seconds = max(sec for _, sec in parts)
        return res

    fp_ref: torch.Tensor | None = None
    if "fp" in plan.methods:
        res = run_eval(model, "fp", keep=quantized)
        fp_ref = res.logprobs
        emit("fp", res, {}, model_size(model).to_dict())

    qwt_cfg = qwt_config(cfg)
    for i, variant in enumerate(plan.variants):
        qmodel = model if i == len(plan.variants) - 1 else copy.deepcopy(model)
        layer_plan = adapter.plan(qmodel, cfg.w_bits, cfg.a_bits, variant)
        adapter.quantize(qmodel, cfg.w_bits, cfg.a_bits, variant)
        qmodel.to(device)
        variant_config = {"quant_method": variant, "layers": _plan_summary(layer_plan),
                          "calib_images": 0 if calib is None else len(calib),
                          "qwt_images": qwt_images}
        times: dict[str, float] = {}
        has_qwt = False
        if state is not None:
            assert cfg.load_state is not None
            try:
                load_state(qmodel, cfg.load_state)  # on qmodel's device
            except ValueError as e:
                raise CheckpointError(str(e).splitlines()[0]) from e
            has_qwt = state.has_qwt
            variant_config["loaded_state"] = cfg.load_state
            log.info("loaded calibrated state %s (QwT: %s)", cfg.load_state, has_qwt)
        else:
            assert calib is not None
            dist_mod.maybe_inject_failure("calibration")
            t0 = time.perf_counter()
            calibrate_repq(qmodel, calib.to(device), adapter.reparam_pairs(qmodel))
            times["calibration_s"] = time.perf_counter() - t0
            log.info("%s calibration: %.1fs", variant, times["calibration_s"])
        set_quant_state(qmodel, weight=True, act=True)

        if variant in plan.methods:
            ctx = without_compensation(qmodel) if has_qwt else contextlib.nullcontext(qmodel)
            with ctx as net:
                size = model_size(net).to_dict()
                emit(variant, run_eval(net, variant, ref=fp_ref), times, size, extra_config=variant_config)

        reports: list[BlockReport] = []
        if variant + QWT in plan.methods:
            if not has_qwt:
                dist_mod.maybe_inject_failure("qwt")
                reports = _fit_qwt(adapter, qmodel, qwt_batches, qwt_cfg, device, progress)
                times["qwt_s"] = sum(r.extra.get("seconds", 0.0) for r in reports)
                has_qwt = True
            emit(variant + QWT, run_eval(qmodel, variant + QWT, ref=fp_ref), times,
                 model_size(qmodel).to_dict(), reports, extra_config={**variant_config, "qwt": {
                     **asdict(qwt_cfg), "solver": qwt_cfg.solver, "fp16_eval": True, "half_arith": cfg.half_arith}})
        if cfg.save_state and (state is None or reports) and dinfo.is_main:
            save_state(qmodel, cfg.save_state, meta={"model": spec.name, "method": variant, "w_bits": cfg.w_bits,
                                                     "a_bits": cfg.a_bits, "model_kwargs": _jsonable(spec.kwargs),
                                                     "qwt": has_qwt, "weights_fingerprint": fingerprint,
                                                     "config": _jsonable(cfg.to_dict())})
            log.info("saved calibrated state to %s", cfg.save_state)
        if qmodel is not model:
            del qmodel
    return records


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples -> lists), for comparisons with saved metadata."""
    return json.loads(json.dumps(obj, default=str))


def _plan_summary(layer_plan: dict[str, Any]) -> dict[str, int]:
    """Number of layers per quantization setting, e.g. {"w4a4": 48, "w4a4 channel-wise in": 24}."""
    out: dict[str, int] = {}
    for s in layer_plan.values():
        key = f"w{s.w_bits}a{s.a_bits}" + (" channel-wise in" if s.act_channel_wise else "")
        out[key] = out.get(key, 0) + 1
    return out


def _fit_qwt(adapter: FamilyAdapter, qmodel: nn.Module, batches: list[torch.Tensor], qwt_cfg: QwTConfig,
             device: torch.device, progress: bool) -> list[BlockReport]:
    """QwT block by block, logging R² and the error before/after compensation of each block."""
    blockwise = adapter.blockwise(qmodel)
    bar = tqdm(total=len(blockwise.steps()), desc="QwT blocks", disable=not progress, file=sys.stderr,
               leave=False, dynamic_ncols=True)
    last = [time.perf_counter()]

    def on_block(r: BlockReport) -> None:
        now = time.perf_counter()
        r.extra["seconds"] = now - last[0]
        last[0] = now
        bar.update(1)
        log.info("QwT block %2d %-22s R2 %.4f  mse %.4e -> %.4e  %s", r.index, r.name, r.r2, r.mse_before,
                 r.mse_after, "compensated" if r.applied else "kept zero")

    try:
        return fit_qwt(blockwise, batches, qwt_cfg, device=device, on_block=on_block)
    finally:
        bar.close()
