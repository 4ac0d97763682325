"""The classification suite as a :class:`runtime.experiment.Task`: the ten steps of
:func:`runtime.experiment.run` with timm / torchvision models on ImageNet-style class folders.
The CLI is a thin layer over :func:`run_experiment`.

Methods (``ClassificationConfig.methods``):
- every family: ``fp``;
- ViT / DeiT / Swin: ``repq``, ``repq+qwt``;
- ResNet: ``percentile``, ``percentile+qwt`` (reference: conv inputs 8-bit) and
  ``percentile_strict``, ``percentile_strict+qwt`` (conv inputs at a_bits).
A ``<base>+qwt`` method reuses the calibrated ``<base>`` model of the same run.

Every bad input is detected before any evaluation (:meth:`ClassificationTask.plan` without I/O,
then the output folders, the calibrated state, the dataset layout, the weights and the calibration
images), so a refused run writes nothing. Each record is written as soon as its method is
evaluated: a run that fails later keeps the records it finished.

Several processes (``torchrun --nproc_per_node N -m classification ...``, see docs/distributed.md):
each rank builds the model; the RepQ-ViT batch is loaded on rank 0 and broadcast; the global QwT
image set (independent of N) is split into contiguous shards and QwT's normal equations are
all-reduced before each solve; the val set is split into contiguous shards without padding and the
per-batch counts are combined in the global batch order; only rank 0 writes records and states.
"""
from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset
from tqdm import tqdm

from qwt_core import calibrate_repq
from runtime import distributed as dist_mod
from runtime import preflight
from runtime.config import RunConfig, check_bits_value
from runtime.experiment import (
    CalibrationData,
    Context,
    Evaluation,
    Plan,
    check_state_weights,
    log,
    run,
)
from runtime.methods import QWT
from runtime.records import dataset_entry

from . import data as data_mod
from .adapters import for_family
from .build import build_model, check_constructor_kwargs, resolve_spec
from .config import ClassificationConfig, ExperimentConfig
from .errors import CheckpointError, ClassificationError, DataLayoutError, MethodError
from .evaluate import evaluate, metrics_from_batches
from .registry import ModelSpec, UnknownModelError

__all__ = ["ClassificationConfig", "ExperimentConfig", "ClassificationTask", "run_experiment", "plan_experiment"]




def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _num_outputs(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    fc = getattr(model, "fc", None)
    return fc.out_features if isinstance(fc, nn.Linear) else None


def _describe(meta: dict[str, Any]) -> str:
    bits = f" W{meta.get('w_bits')}A{meta.get('a_bits')}" if meta.get("w_bits") is not None else ""
    return f"{meta.get('model')} {meta.get('method')}{bits}"


def plan_experiment(cfg: ClassificationConfig) -> Plan:
    """Validate everything that needs no I/O (model, bits, methods, options, device)."""
    if not cfg.model:
        raise ClassificationError("--model names no model")
    try:
        spec = resolve_spec(cfg.spec or cfg.model, cfg.model_kwargs or None, cfg.tiny)
    except UnknownModelError as e:
        raise ClassificationError(str(e)) from None
    check_bits_value(cfg.w_bits, "--w-bits")
    check_bits_value(cfg.a_bits, "--a-bits")
    adapter = for_family(spec.family)
    valid = ["fp"] + [m + s for m in adapter.methods for s in ("", QWT)]
    if cfg.methods is not None and not cfg.methods:
        raise MethodError(f"--methods names no method; valid methods for {spec.name}: " + ",".join(valid))
    methods = list(cfg.methods) if cfg.methods else list(adapter.default_methods)
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
    for name, value in (("--calib-size", cfg.calib_size), ("--qwt-size", cfg.qwt_size),
                        ("--batch-size", cfg.batch_size)):
        if value < 1:
            raise ClassificationError(f"{name} must be >= 1, got {value}")
    cfg.check_shared()
    try:
        preflight.check_seed(cfg.seed)
        preflight.check_workers(cfg.workers)  # type: ignore[arg-type]
        device = preflight.parse_device(cfg.device if cfg.device is not None else preflight.default_device())
    except preflight.PreflightError as e:
        raise ClassificationError(str(e)) from None
    world = dist_mod.env_world_size()
    if world > 1 and any(m.endswith(QWT) for m in methods) and not cfg.load_state and cfg.qwt_size < world:
        raise ClassificationError(f"--qwt-size {cfg.qwt_size} is smaller than the number of processes "
                                  f"({world}): every process needs at least one QwT image")
    if cfg.model_kwargs:
        check_constructor_kwargs(spec, cfg.model_kwargs)
    return Plan(spec.name, methods, variants, device, {"spec": spec, "adapter": adapter})


class ClassificationTask:
    """The ImageNet suite's steps (see :class:`runtime.experiment.Task`)."""

    suite = "imagenet"

    def plan(self, cfg: RunConfig) -> Plan:
        assert isinstance(cfg, ClassificationConfig)
        self.suite = cfg.suite
        return plan_experiment(cfg)

    def check_state(self, ctx: Context) -> None:
        """The ``--load-state`` file is a classification state of this model, method, bits and constructor."""
        cfg, plan, meta = ctx.cfg, ctx.plan, ctx.state.meta  # type: ignore[union-attr]
        spec: ModelSpec = plan.extra["spec"]
        if "detector" in meta or "model" not in meta:
            what = (f"a detection state (detector {meta['detector']})" if "detector" in meta
                    else "not a classification state")
            raise CheckpointError(f"--load-state {cfg.load_state} is {what}: give a state written by "
                                  "python -m classification --save-state")
        want = {"model": spec.name, "method": plan.variants[0], "w_bits": cfg.w_bits, "a_bits": cfg.a_bits}
        got = {k: meta.get(k) for k in want}
        if got != want:
            raise CheckpointError(f"--load-state {cfg.load_state} was calibrated for {_describe(got)}, "
                                  f"not {_describe(want)}")
        if meta.get("model_kwargs") != _jsonable(spec.kwargs):
            raise CheckpointError(f"--load-state {cfg.load_state} was calibrated for {spec.name} built with "
                                  f"{json.dumps(meta.get('model_kwargs'))}, not {json.dumps(_jsonable(spec.kwargs))}")

    def check_inputs(self, ctx: Context) -> None:
        need_train = bool(ctx.plan.variants) and (ctx.state is None or ctx.needs_qwt_fit)
        ctx.extra["need_train"] = need_train
        ctx.extra["classes"] = data_mod.check_layout(ctx.cfg.data_dir, need_train=need_train)  # type: ignore[arg-type]

    def open_group(self, ctx: Context) -> dist_mod.DistInfo:
        return dist_mod.init_from_env(ctx.plan.device)

    def build(self, ctx: Context) -> nn.Module:
        cfg = ctx.cfg
        assert isinstance(cfg, ClassificationConfig)
        _seed_everything(cfg.seed)
        model, spec = build_model(ctx.plan.extra["spec"], pretrained=cfg.pretrained and not cfg.tiny,
                                  checkpoint=cfg.checkpoint, checkpoint_dir=cfg.checkpoint_dir)
        ctx.plan.extra["spec"] = spec
        return model

    def check_model(self, ctx: Context, model: nn.Module) -> None:
        """Class folders against the model's outputs; the state's weights; then the model goes to its device."""
        cfg, spec = ctx.cfg, ctx.plan.extra["spec"]
        assert isinstance(cfg, ClassificationConfig)
        classes = ctx.extra["classes"]
        random_weights = not cfg.checkpoint and (cfg.tiny or not cfg.pretrained)
        targets, subset = _class_targets(cfg, spec, classes, _num_outputs(model), trained=not random_weights)
        if ctx.state is not None:
            check_state_weights(ctx, cfg.checkpoint or ("random init" if random_weights else "the pretrained weights"))
        model.to(ctx.dist.device)  # type: ignore[union-attr]
        log.info("%s: %s, %d val classes, methods %s", spec.name,
                 cfg.checkpoint or (spec.timm_name if cfg.pretrained and not cfg.tiny else "random init"),
                 len(classes), ",".join(ctx.plan.methods))
        dinfo = ctx.dist
        loader = data_mod.val_loader(spec, cfg.data_dir, cfg.batch_size, cfg.workers, cfg.val_limit,  # type: ignore[arg-type]
                                     dinfo.rank, dinfo.world_size, targets=targets)  # type: ignore[union-attr]
        val_ds = loader.dataset
        n_val = len(val_ds.dataset if isinstance(val_ds, Subset) else val_ds)  # type: ignore[arg-type]
        ctx.extra.update(loader=loader, partial=cfg.val_limit is not None and cfg.val_limit < n_val,
                         dataset=dataset_entry(cfg.suite, cfg.data_dir, "val", n_val, len(classes), subset))
        ctx.base_config.update({
            **ctx.base_config, "device": ctx.plan.device, "methods": ctx.plan.methods, "timm_name": spec.timm_name,
            "arch": spec.arch, "family": spec.family, "input_size": spec.input_size, "crop_pct": spec.crop_pct,
            "interpolation": spec.interpolation, "mean": list(spec.mean), "std": list(spec.std),
            "model_kwargs": spec.kwargs, "model_overrides": dict(cfg.model_kwargs),
            "class_subset": cfg.class_subset})

    def data(self, ctx: Context, model: nn.Module) -> CalibrationData:
        """Every calibration image decoded now, before any evaluation: a bad train image stops the run here."""
        cfg, dinfo, spec = ctx.cfg, ctx.dist, ctx.plan.extra["spec"]
        assert isinstance(cfg, ClassificationConfig) and dinfo is not None
        if not ctx.extra["need_train"]:
            return CalibrationData(config={"calib_images": 0, "qwt_images": 0})
        assert cfg.data_dir is not None  # (a required flag: the CLI and preflight ask for it)
        t0 = time.perf_counter()
        calib, qwt_batches = data_mod.calibration_sets(
            spec, cfg.data_dir, cfg.calib_size, cfg.qwt_size, cfg.seed, cfg.batch_size, augment=cfg.calib_augment,
            need_qwt=ctx.needs_qwt_fit, progress=cfg.progress and dinfo.is_main, rank=dinfo.rank,
            world_size=dinfo.world_size, need_calib=dinfo.is_main or ctx.state is not None)
        if dinfo.distributed and ctx.state is None:
            calib = dist_mod.broadcast_tensor(calib)  # chosen once, on rank 0
        n_qwt = sum(len(b) for b in qwt_batches)
        qwt_images = sum(dist_mod.gather_objects(n_qwt))  # the same global set whatever the world size
        log.info("calibration data: %d RepQ-ViT + %d QwT train images%s (%.1fs)",
                 len(calib) if calib is not None else 0,
                 qwt_images, f" ({n_qwt} on rank {dinfo.rank} of {dinfo.world_size})" if dinfo.distributed else "",
                 time.perf_counter() - t0)
        if calib is not None:
            calib = calib.to(dinfo.device)
        return CalibrationData(calib, qwt_batches, {"calib_images": 0 if calib is None else len(calib),
                                                    "qwt_images": qwt_images})

    def evaluate(self, ctx: Context, net: nn.Module, method: str, ref: Any) -> Evaluation:
        cfg, dinfo, spec = ctx.cfg, ctx.dist, ctx.plan.extra["spec"]
        assert dinfo is not None
        keep = method == "fp" and bool(ctx.plan.variants)
        bar = tqdm(ctx.extra["loader"], desc=f"{spec.name} {method} eval", disable=not (cfg.progress and dinfo.is_main),
                   file=sys.stderr, leave=False, dynamic_ncols=True)
        res = evaluate(net, bar, dinfo.device, fp_logprobs=ref, keep_logprobs=keep, allow_empty=dinfo.distributed)
        if dinfo.distributed:  # every rank's batch counts, in the global batch order (shards are contiguous)
            parts = dist_mod.gather_objects((res.batches, res.seconds))
            res.batches = [b for batches, _ in parts for b in batches]
            res.metrics, res.images = metrics_from_batches(res.batches, ref is not None)
            res.seconds = max(sec for _, sec in parts)
        return Evaluation(res.metrics, res.images, res.seconds, ctx.extra["partial"], res.logprobs)

    def quantize(self, ctx: Context, model: nn.Module, variant: str) -> dict[str, Any]:
        cfg, adapter = ctx.cfg, ctx.plan.extra["adapter"]
        layer_plan = adapter.plan(model, cfg.w_bits, cfg.a_bits, variant)
        adapter.quantize(model, cfg.w_bits, cfg.a_bits, variant)
        model.to(ctx.dist.device)  # type: ignore[union-attr]
        return {"layers": _plan_summary(layer_plan)}

    def calibrate(self, ctx: Context, model: nn.Module, calib: Any) -> None:
        calibrate_repq(model, calib, ctx.plan.extra["adapter"].reparam_pairs(model))

    def blockwise(self, ctx: Context, model: nn.Module):
        return ctx.plan.extra["adapter"].blockwise(model)

    def state_meta(self, ctx: Context, variant: str) -> dict[str, Any]:
        spec: ModelSpec = ctx.plan.extra["spec"]
        return {"model": spec.name, "model_kwargs": _jsonable(spec.kwargs),
                "config": _jsonable({k: v for k, v in ctx.base_config.items()})}

    def after_calibration(self, ctx: Context, model: nn.Module) -> dict[str, Any]:
        return {}


def _class_targets(cfg: ClassificationConfig, spec: ModelSpec, classes: list[str], n_out: int | None,
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


def run_experiment(cfg: ClassificationConfig, on_record: Callable[[dict[str, Any]], None] | None = None
                   ) -> list[dict[str, Any]]:
    """Run every method of ``cfg`` (:func:`runtime.experiment.run`); returns the records (each also
    written under ``cfg.results_dir`` as soon as its method is evaluated, and passed to ``on_record``).
    Raises :class:`runtime.errors.BadInput` before any work on bad input. Under torchrun
    (``WORLD_SIZE`` > 1) it joins the process group and leaves it at the end; every rank returns
    the same records; rank 0 writes them."""
    return run(ClassificationTask(), cfg, on_record)
