"""One COCO experiment: build the detector, load (and convert) its checkpoint, then evaluate the
requested methods in order with mmengine's Runner test loop and CocoMetric (bbox, + segm for
detectors with masks). The methods depend on the backbone (:mod:`detection.backbones`; any other
backbone is refused in one line before any work):

    fp                    full precision
    Swin backbone (detection.quantize):
    repq                  RepQ-ViT on the whole detector, calibrated on the first test-loader image
    repq+qwt              the RepQ-ViT model plus QwT compensation on every Swin block, fitted on
                          ``qwt_size`` train2017 images at ``qwt_img_size`` (compensation kept in fp32)
    ResNet / ResNetV1d / ResNeXt backbone (detection.cnn):
    percentile            percentile quantization (backbone conv inputs 8-bit, as the released
                          ResNet code), calibrated on the first test-loader image
    percentile_strict     the same with the backbone conv inputs at a_bits
    <base>+qwt            plus grouped-conv QwT per residual block (``kernel_size``, ``factor``)

The steps are :func:`runtime.experiment.run`'s with :class:`DetectionTask`. Each evaluated
method gives one record (:mod:`runtime.records`, suite "coco", metrics in percent) written to
``results_dir`` on rank 0 as soon as the method is evaluated, so a run that fails later keeps
them. ``run_experiment`` is what the CLI calls.

Before any work (:meth:`DetectionTask.plan`, :meth:`DetectionTask.check_state`,
:meth:`DetectionTask.check_inputs`): options in range (bits, methods, seed, workers, device,
sizes), output folder and state file writable, COCO files present, checkpoint readable and of this
detector, ``--load-state`` a readable detection state of this detector and bits, and the images
the calibration will read (first val image, probe images, QwT train images) decodable. After the
weights are loaded and before the FP evaluation: the state's weights fingerprint and
``--qwt-start-block`` against the backbone's blocks.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qwt_core import quantizers
from qwt_core.state_io import module_device
from runtime import distributed as dist_mod
from runtime import preflight
from runtime.config import DEFAULT_CHECKPOINT_DIR, RunConfig, check_bits_value, flag_of
from runtime.errors import BadInput, CheckpointError
from runtime.experiment import (
    CalibrationData,
    Context,
    Evaluation,
    Plan,
    check_state_weights,
    log,
    run,
)
from runtime.records import dataset_entry

from .backbones import (
    ALL_METHODS,
    DEFAULT_METHODS,
    QWT,
    BackboneError,
    base_method,
    check_methods,
)
from .config import DetectionConfig, DetectionRun  # noqa: F401  (DetectionRun: the name the Python API has used)

METHODS = ALL_METHODS  # every method of some backbone; a run takes those of its detector's backbone
DEFAULT_CKPT_DIR = DEFAULT_CHECKPOINT_DIR  # the one checkpoint folder default (runtime.config)
ExperimentError = BadInput  # a bad request (bits, methods, detector, files); the message is one line




def _validate(run: DetectionConfig) -> None:
    """Options that need no file: bits, methods, seed, workers, sizes, device (normalized in place)."""
    check_bits_value(run.w_bits, "--w-bits")
    check_bits_value(run.a_bits, "--a-bits")
    if run.methods is not None and not run.methods:
        raise ExperimentError(f"--methods names no method; choose from {','.join(METHODS)}")
    bad = [m for m in run.methods or () if m not in METHODS]
    if bad:
        raise ExperimentError(f"unknown methods {bad}; choose from {', '.join(METHODS)}")
    if run.methods is not None and len(set(run.methods)) != len(run.methods):
        raise ExperimentError(f"duplicate methods in {','.join(run.methods)}")
    if (run.detector is None) == (run.config is None):
        raise ExperimentError("give exactly one of --detector NAME or --config PATH")
    run.check_shared()
    if run.window_pad not in ("exact", "zero"):
        raise ExperimentError(f"--window-pad must be 'exact' or 'zero', got {run.window_pad!r}")
    if run.qwt_size < 1 or run.qwt_img_size < 32 or run.qwt_batch_size < 1:
        raise ExperimentError("--qwt-size and --qwt-batch-size must be >= 1 and --qwt-img-size >= 32")
    if run.feature_probe < 0:
        raise ExperimentError(f"--feature-probe must be >= 0, got {run.feature_probe}")
    try:
        preflight.check_seed(run.seed)
        preflight.check_workers(run.workers)  # type: ignore[arg-type]
        run.device = preflight.parse_device(run.device if run.device is not None else preflight.default_device())
    except preflight.PreflightError as e:
        raise ExperimentError(str(e)) from None


def resolve(run: DetectionConfig) -> tuple[str, Path, str | None]:
    """(model name, config path, release URL or None)."""
    from .mmdet_configs import ConfigNotFound, resolve_config
    from .registry import ALL_DETECTORS, get_detector

    try:
        if run.detector is not None:
            if run.detector not in ALL_DETECTORS:
                raise ExperimentError(f"unknown detector {run.detector!r}; choose from {', '.join(ALL_DETECTORS)}")
            d = get_detector(run.detector)
            return d.name, d.config_path, d.url
        path = resolve_config(run.config)  # type: ignore[arg-type]
    except ConfigNotFound as e:
        raise ExperimentError(str(e)) from None
    return path.stem, path, None


def _checkpoint_path(run: DetectionConfig, url: str | None) -> Path:
    if run.checkpoint and run.checkpoint.startswith(URL_SCHEMES):
        return _download(run.checkpoint, Path(run.checkpoint_dir))
    if run.checkpoint:
        path = Path(run.checkpoint)
    elif url is not None:
        path = Path(run.checkpoint_dir) / url.rsplit("/", 1)[-1]
    else:
        raise ExperimentError("a custom --config needs --checkpoint")
    if not path.is_file():
        hint = (f": download the release checkpoint {url} into {path.parent} (--checkpoint-dir, make: "
                "CKPT_DIR=...) or pass --checkpoint") if url else ""
        raise ExperimentError(f"checkpoint {path} not found{hint}")
    return path


URL_SCHEMES = ("http://", "https://", "file://")


def _download(url: str, ckpt_dir: Path) -> Path:
    """``--checkpoint URL``: the file ``<ckpt_dir>/<name>``, downloaded once (torch.hub's downloader)."""
    path = ckpt_dir / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except (OSError, ValueError) as e:  # urllib's URLError is an OSError
        raise ExperimentError(f"cannot download checkpoint {url} into {ckpt_dir} ({type(e).__name__}: {e}); "
                              "download it yourself and pass --checkpoint FILE") from None
    return path


def load_config(run: DetectionConfig, config_path: Path, work_dir: str):
    """The mmengine Config with data root, subset, workers and the subset-aware metric."""
    from mmengine.config import Config

    from .data import set_data_root

    cfg = Config.fromfile(str(config_path))
    if run.cfg_options:
        cfg.merge_from_dict(run.cfg_options)
    if run.data_dir is not None:
        set_data_root(cfg, run.data_dir)
    cfg.work_dir = work_dir
    cfg.load_from = None
    loader = cfg.test_dataloader
    assert run.workers is not None  # (RunConfig.__post_init__ sets the default)
    loader.num_workers = run.workers
    loader.persistent_workers = run.workers > 0
    if run.val_limit is not None:
        loader.dataset.indices = run.val_limit  # the first N images; the metric scores exactly these
    from .backbones import iou_types

    evs = cfg.test_evaluator if isinstance(cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
    types = iou_types(cfg)  # bbox (+ segm when the config scores masks)
    for ev in evs:
        if ev.get("type") in ("CocoMetric", "mmdet.CocoMetric"):
            ev["type"] = "SubsetCocoMetric"
            ev["metric"] = types
    cfg.default_hooks.logger.interval = run.log_interval
    cfg.default_hooks.pop("visualization", None)
    return cfg


def build_detector(cfg, device: str, distributed: bool) -> nn.Module:
    from mmdet.registry import MODELS
    from mmengine.model import revert_sync_batchnorm

    model = MODELS.build(cfg.model)
    if not distributed:
        model = revert_sync_batchnorm(model)  # SyncBN == BN in eval
    return model.to(device).eval()


@contextlib.contextmanager
def runner_keeps_device(model: nn.Module) -> Iterator[None]:
    """While mmengine's Runner is built, its ``wrap_model`` puts the model on the device that
    ``mmengine.device.get_device()`` chose at import (``"cuda"`` whenever torch sees a GPU): on a
    GPU machine a CPU run (the Python API, the demo) would be moved to the GPU, a ``cuda:1`` run to
    the current device. Here the Runner is told the device the model already lives on."""
    import mmengine.runner.runner as runner_mod

    where = str(module_device(model))
    saved = runner_mod.get_device
    runner_mod.get_device = lambda: where
    try:
        yield
    finally:
        runner_mod.get_device = saved


class Evaluator:
    """mmengine Runner test loop (TestLoop + the config's CocoMetric) on one model object.

    The Runner is built on the first call and reused: the methods are evaluated on the same
    model object, quantized and compensated in place between the calls."""

    def __init__(self, cfg, work_dir: str, launcher: str) -> None:
        self.cfg, self.work_dir, self.launcher = cfg, work_dir, launcher
        self.runner: Any = None  # mmengine's Runner (untyped), built on the first call
        self.model: nn.Module | None = None

    def _wrapper(self, model: nn.Module) -> dict | None:
        """Several processes on CPU: mmengine's default DDP wrapper passes device_ids=[LOCAL_RANK],
        which DDP refuses for a CPU module; the test loop only needs the module's test_step."""
        on_cpu = next(model.parameters()).device.type == "cpu"
        if self.launcher == "none" or not on_cpu:
            return None
        return dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)

    def __call__(self, model: nn.Module, tag: str) -> tuple[dict[str, float], int, float]:
        from mmengine.runner import Runner

        t0 = time.time()
        if self.runner is None:
            cfg = self.cfg
            cfg.model_wrapper_cfg = self._wrapper(model)  # Runner.wrap_model reads it from cfg
            with runner_keeps_device(model):
                self.runner = Runner(
                    model=model, work_dir=self.work_dir,
                    experiment_name=f"{tag}_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:6]}",
                    test_dataloader=cfg.test_dataloader, test_cfg=dict(type="TestLoop"),
                    test_evaluator=cfg.test_evaluator, default_hooks=cfg.default_hooks,
                    env_cfg=cfg.get("env_cfg", dict()), log_processor=cfg.get("log_processor"),
                    log_level=cfg.get("log_level", "INFO"), default_scope="mmdet", launcher=self.launcher,
                    randomness=dict(seed=None), cfg=cfg)
            self.model = model
        elif model is not self.model:
            raise ValueError("an Evaluator serves the one model object it was first called with")
        self.runner.logger.info(f"evaluating {tag}")
        metrics = self.runner.test()
        images = len(self.runner.test_dataloader.dataset)
        return dict(metrics), images, time.time() - t0


@torch.no_grad()
def backbone_features(model: nn.Module, inputs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The backbone's multi-scale outputs for each probe image (in the model's current quant state)."""
    unwrapped: nn.Module = getattr(model, "module", model)  # (a DDP wrapper's model)
    backbone = unwrapped.get_submodule("backbone")
    dev = next(backbone.parameters()).device
    return [[f.float().cpu() for f in backbone(x.to(dev))] for x in inputs]


def feature_error(feats: list[list[torch.Tensor]], ref: list[list[torch.Tensor]]) -> float:
    """Relative backbone feature error Σ‖f - f_fp‖² / Σ‖f_fp‖² over probe images and stages."""
    num = sum(float((f - r).pow(2).sum()) for fs, rs in zip(feats, ref) for f, r in zip(fs, rs))
    den = sum(float(r.pow(2).sum()) for rs in ref for r in rs)
    return num / den if den > 0 else 0.0


def _split_info(cfg) -> tuple[int | None, int | None]:
    """(images, categories) of the test annotation file (None when unreadable)."""
    import json

    from .data import test_paths

    ann, _ = test_paths(cfg)
    try:
        coco = json.loads(ann.read_text())
        return len(coco["images"]), len(coco.get("categories", []))
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def blockwise(model: nn.Module, kind: str):
    """The QwT adapter of the detector's backbone: Swin blocks or residual blocks."""
    if kind == "swin":
        from .adapters import SwinBackboneAdapter

        return SwinBackboneAdapter(model)
    from .cnn import ResNetBackboneAdapter

    return ResNetBackboneAdapter(model)


def backbone_of(run: DetectionConfig, cfg, name: str) -> str:
    """The backbone kind of the config, its methods (default or checked) set on ``run``, and the
    options that only one kind takes; BackboneError / ExperimentError before any work."""
    from .backbones import backbone_kind, check_evaluator
    from .cnn import TOTAL_STRIDE

    what = f"detector {name}"
    kind = backbone_kind(cfg.model, what)
    check_evaluator(cfg, what)
    if run.methods is None:
        run.methods = tuple(DEFAULT_METHODS[kind])
    check_methods(kind, run.methods, what)
    if kind == "swin" and (run.qwt.kernel_size, run.qwt.factor) != (1, 64):
        raise ExperimentError(f"{flag_of('kernel_size', qwt=True)} / {flag_of('factor', qwt=True)} "
                              "set the grouped-conv "
                              "QwT of ResNet backbones; "
                              f"{name} has a Swin backbone (token-wise QwT)")
    if kind == "resnet" and run.window_pad != "zero":
        raise ExperimentError(f"--window-pad applies to Swin backbones; {name} has a ResNet backbone")
    if kind == "resnet" and any(m.endswith(QWT) for m in run.methods) and run.qwt_img_size % TOTAL_STRIDE:
        raise ExperimentError(f"--qwt-img-size must be a multiple of {TOTAL_STRIDE} for a ResNet backbone "
                              f"(the grouped-conv QwT strides), got {run.qwt_img_size}")
    return kind


def quantize(model: nn.Module, kind: str, method: str, w_bits: int, a_bits: int) -> None:
    """Fake-quantize the detector in place by its backbone's plan (quantizers start uncalibrated)."""
    if kind == "swin":
        from .quantize import quantize_detector

        quantize_detector(model, w_bits, a_bits)
    else:
        from . import cnn

        cnn.quantize_detector(model, w_bits, a_bits, method)


def calibrate(model: nn.Module, kind: str, batch: dict, exact_padding: bool = False) -> list[str]:
    """RepQ-ViT (Swin) or the percentile ranges (ResNet) on one test-loader batch."""
    forward = lambda m, b: m.test_step(b)  # noqa: E731
    if kind == "swin":
        from .quantize import calibrate_detector

        return calibrate_detector(model, batch, forward=forward, exact_padding=exact_padding)
    from .cnn import calibrate_detector as calibrate_cnn

    return calibrate_cnn(model, batch, forward=forward)




class DetectionTask:
    """The COCO suite's steps (see :class:`runtime.experiment.Task`): mmengine's Runner test loop
    evaluates; the backbone (Swin or ResNet) decides the quantization and the QwT blocks."""

    suite = "coco"

    def plan(self, cfg: RunConfig) -> Plan:
        """Options, detector, config and backbone (an unsupported one refused before any work)."""
        assert isinstance(cfg, DetectionConfig)
        _validate(cfg)
        name, config_path, url = resolve(cfg)
        import mmdet  # noqa: F401  (registers modules)
        from mmdet.utils import register_all_modules

        from . import metrics as _metrics  # noqa: F401  (registers SubsetCocoMetric)
        from .backbones import iou_types

        register_all_modules(init_default_scope=True)
        work_dir = cfg.work_dir or os.path.join("work_dirs", name)
        mm = load_config(cfg, config_path, work_dir)
        try:
            kind = backbone_of(cfg, mm, name)
        except BackboneError as e:
            raise ExperimentError(str(e)) from None
        assert cfg.methods is not None and cfg.device is not None
        base = base_method(cfg.methods)  # "repq" | "percentile" | "percentile_strict" | None (fp only)
        return Plan(name, list(cfg.methods), [base] if base else [], cfg.device,
                    {"mm": mm, "kind": kind, "base": base, "config_path": config_path, "url": url,
                     "work_dir": work_dir, "iou_types": iou_types(mm)})

    def check_state(self, ctx: Context) -> None:
        """A readable detection state of this detector, method, bits and QwT / padding settings
        (its weights are checked once the model is loaded)."""
        cfg, meta, name, base = ctx.cfg, ctx.state.meta, ctx.plan.model, ctx.plan.extra["base"]  # type: ignore[union-attr]
        assert isinstance(cfg, DetectionConfig)
        path = cfg.load_state
        if "detector" not in meta:
            what = f"a classification state (model {meta['model']})" if "model" in meta else "not a detection state"
            raise CheckpointError(f"--load-state {path} is {what}: give a state written by qwt-detect --save-state")
        if meta["detector"] != name:
            raise CheckpointError(f"--load-state {path} was calibrated for the detector {meta['detector']}, not {name}")
        if meta.get("method", "repq") != base:
            raise CheckpointError(f"--load-state {path} holds a {meta.get('method', 'repq')} calibration, not {base}")
        if meta.get("qwt") and base in ctx.plan.methods:
            raise CheckpointError(f"--load-state {path} holds QwT compensation: it can only evaluate "
                                  f"{base}{QWT} (drop {base} from --methods)")
        bits = (meta.get("w_bits"), meta.get("a_bits"))
        if None not in bits and bits != (cfg.w_bits, cfg.a_bits):
            raise CheckpointError(f"--load-state {path} was calibrated at W{bits[0]}A{bits[1]}, "
                                  f"not W{cfg.w_bits}A{cfg.a_bits}")
        for key in ("kernel_size", "factor"):
            if meta.get("qwt") and key in meta and meta[key] != getattr(cfg.qwt, key):
                raise CheckpointError(f"--load-state {path} was fitted with {flag_of(key, qwt=True)} {meta[key]}, "
                                      f"not {getattr(cfg.qwt, key)}")
        if meta.get("window_pad", cfg.window_pad) != cfg.window_pad:
            raise CheckpointError(f"--load-state {path} was calibrated with --window-pad {meta['window_pad']}, "
                                  f"not {cfg.window_pad}")

    def check_inputs(self, ctx: Context) -> None:
        """COCO files, the checkpoint file, and the images the calibration will read."""
        from .data import check_images, check_inputs, qwt_image_files, test_image_files

        cfg, mm = ctx.cfg, ctx.plan.extra["mm"]
        assert isinstance(cfg, DetectionConfig)
        if cfg.data_dir is None:
            raise ExperimentError("pass --data-dir (make ... COCO=/path/to/coco)")
        fit_qwt_here = any(m.endswith(QWT) for m in ctx.plan.methods) and cfg.load_state is None
        check_inputs(mm, need_train=fit_qwt_here)
        ctx.extra["ckpt"] = _checkpoint_path(cfg, ctx.plan.extra["url"])  # read and matched right after the build
        calibrating = bool(ctx.plan.variants) and cfg.load_state is None
        # test item 0 calibrates RepQ-ViT, items 1..feature_probe are the feature-error probes
        n_test = max(1 if calibrating else 0, 1 + cfg.feature_probe if cfg.feature_probe > 0 else 0)
        check_images(test_image_files(mm, n_test), "val")
        if ctx.needs_qwt_fit:
            check_images(qwt_image_files(mm, cfg.qwt_size, cfg.seed), "QwT train")

    def open_group(self, ctx: Context) -> dist_mod.DistInfo:
        """The one place that binds the device: cuda:N made current in one process, cuda:LOCAL_RANK
        under torchrun (nccl on CUDA, gloo on CPU; the Runner reuses this group)."""
        cfg = ctx.cfg
        assert isinstance(cfg, DetectionConfig)
        info = dist_mod.init_from_env(ctx.plan.device, force=cfg.launcher != "none")
        ctx.plan.device = cfg.device = str(info.device)
        torch.manual_seed(cfg.seed)
        return info

    def build(self, ctx: Context) -> nn.Module:
        from .convert import load_detector_weights

        cfg, mm, name = ctx.cfg, ctx.plan.extra["mm"], ctx.plan.model
        assert isinstance(cfg, DetectionConfig) and ctx.dist is not None
        distributed = ctx.dist.world_size > 1 or cfg.launcher != "none"
        model = build_detector(mm, ctx.plan.device, distributed)
        ck_info = load_detector_weights(model, ctx.extra["ckpt"], name)
        ctx.extra["checkpoint_format"] = ck_info["format"]
        return model

    def check_model(self, ctx: Context, model: nn.Module) -> None:
        from .data import train_filter_cfg

        cfg, mm, kind, base = ctx.cfg, ctx.plan.extra["mm"], ctx.plan.extra["kind"], ctx.plan.extra["base"]
        assert isinstance(cfg, DetectionConfig)
        if ctx.state is not None:
            check_state_weights(ctx, str(ctx.extra["ckpt"]))
        split_images, categories = _split_info(mm)
        ctx.extra.update(split_images=split_images, dataset=dataset_entry("coco", mm.get("data_root"), "test",
                                                                          split_images, categories),
                         evaluator=Evaluator(mm, ctx.plan.extra["work_dir"], cfg.launcher), on_block=cfg.on_block)
        ctx.base_config.update({
            "detector": ctx.plan.model, "config_file": str(ctx.plan.extra["config_path"]),
            "checkpoint": str(ctx.extra["ckpt"]), "checkpoint_format": ctx.extra["checkpoint_format"],
            "data_dir": str(mm.get("data_root")), "backbone": kind, "quant_method": base,
            "iou_types": ctx.plan.extra["iou_types"], "methods": ctx.plan.methods, "device": ctx.plan.device,
            "repq_calibration": "first test-loader image (config test pipeline)",
            "qwt_calibration": f"{cfg.qwt_size} train images, {cfg.qwt_img_size}x{cfg.qwt_img_size}, "
                               "keep_ratio False, no flip, seeded sample of the images the training dataset keeps "
                               f"(filter_cfg {train_filter_cfg(mm)})",
            **({"patch_embed_a_bits": 8, "attn_scale": "q * scale before matmul1 (mmdet/RepQ-ViT)"}
               if kind == "swin" else
               {"stem_bits": 8, "backbone_conv_a_bits": 8 if base == "percentile" else cfg.a_bits})})

    def data(self, ctx: Context, model: nn.Module) -> CalibrationData:
        """The probe images (their FP backbone features now), the first test image (RepQ-ViT /
        percentile calibration) and the QwT train images (read lazily, batch by batch)."""
        from tqdm import tqdm

        from .data import first_test_batch, probe_inputs, qwt_batches

        cfg, mm, name, dinfo = ctx.cfg, ctx.plan.extra["mm"], ctx.plan.model, ctx.dist
        assert isinstance(cfg, DetectionConfig) and dinfo is not None
        probes = probe_inputs(mm, model, cfg.feature_probe) if cfg.feature_probe > 0 else []
        ctx.extra.update(probes=probes, fp_feats=backbone_features(model, probes))
        ctx.base_config["feature_probe_images"] = len(probes)
        calib = None
        if ctx.plan.variants and ctx.state is None:
            calib = first_test_batch(mm)
        batches: Any = ()
        if ctx.needs_qwt_fit:
            rank, world = dinfo.rank, dinfo.world_size
            n_batches = math.ceil(len(range(rank, cfg.qwt_size, world)) / cfg.qwt_batch_size)
            batches = tqdm(qwt_batches(mm, model, cfg.qwt_size, cfg.qwt_img_size, cfg.seed, cfg.qwt_batch_size,
                                       rank, world),
                           total=n_batches, desc=f"[{name}] QwT images", disable=rank != 0 or not cfg.progress)
        return CalibrationData(calib, batches)

    def evaluate(self, ctx: Context, net: nn.Module, method: str, ref: Any) -> Evaluation:
        from .data import unreadable_image
        from .metrics import to_percent

        cfg, name = ctx.cfg, ctx.plan.model
        tag = f"{name}_fp" if method == "fp" else \
            f"{name}_{method.replace(QWT, '_qwt')}_w{cfg.w_bits}a{cfg.a_bits}"
        try:
            raw, images, seconds = ctx.extra["evaluator"](net, tag)
        except Exception as e:  # only a bad image is turned into a message, the rest re-raised
            path = unreadable_image(e)
            if path is None:
                raise
            raise ExperimentError(f"cannot read val image {path}; remove or replace the file (records of the "
                                  "methods already evaluated are kept)") from None
        metrics, absent = to_percent(raw, iou_types=ctx.plan.extra["iou_types"])
        probes = ctx.extra["probes"]
        if probes and method != "fp":
            metrics["feature_err"] = feature_error(backbone_features(net, probes), ctx.extra["fp_feats"])
        split = ctx.extra["split_images"]
        partial = cfg.val_limit is not None and (split is None or images < split)
        return Evaluation(metrics, images, seconds, partial,
                          record={"metrics_absent": absent, "coco_raw": dict(raw)})

    def quantize(self, ctx: Context, model: nn.Module, variant: str) -> dict[str, Any]:
        quantize(model, ctx.plan.extra["kind"], variant, ctx.cfg.w_bits, ctx.cfg.a_bits)
        model.to(ctx.plan.device)
        return {}

    def calibrate(self, ctx: Context, model: nn.Module, calib: Any) -> None:
        cfg = ctx.cfg
        assert isinstance(cfg, DetectionConfig)
        log.info("[%s] %s W%dA%d: calibrating on %s", ctx.plan.model, ctx.plan.extra["base"], cfg.w_bits, cfg.a_bits,
                 calib["data_samples"][0].img_path)
        calibrate(model, ctx.plan.extra["kind"], calib, exact_padding=cfg.window_pad == "exact")

    def after_calibration(self, ctx: Context, model: nn.Module) -> dict[str, Any]:
        # quantizers the calibration image did not reach initialise on the first evaluation data (logged)
        return {"lazy_quantizers": [n for n, q in quantizers(model) if q.init_on_first_use]}

    def blockwise(self, ctx: Context, model: nn.Module):
        return blockwise(model, ctx.plan.extra["kind"])

    def state_meta(self, ctx: Context, variant: str) -> dict[str, Any]:
        cfg = ctx.cfg
        assert isinstance(cfg, DetectionConfig)
        return {"detector": ctx.plan.model, "checkpoint": str(ctx.extra["ckpt"]),
                **({"window_pad": cfg.window_pad} if ctx.plan.extra["kind"] == "swin" else
                   {"kernel_size": cfg.qwt.kernel_size, "factor": cfg.qwt.factor})}


def run_experiment(run_cfg: DetectionConfig) -> list[dict[str, Any]]:
    """Run the requested methods (:func:`runtime.experiment.run`); returns the records (each
    written on rank 0 once evaluated)."""
    return run(DetectionTask(), run_cfg)
