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

Each evaluated method gives one record (:mod:`qwt_core.records`, suite "coco", metrics in
percent) written to ``results_dir`` on rank 0 as soon as the method is evaluated, so a run that
fails later keeps them. ``run_experiment`` is what the CLI calls.

Before any work (:func:`check_request`): options in range (bits, methods, seed, workers, device,
sizes), output folder and state file writable, COCO files present, checkpoint readable and of this
detector, ``--load-state`` a readable detection state of this detector and bits, and the images
the calibration will read (first val image, probe images, QwT train images) decodable. After the
weights are loaded and before the FP evaluation: the state's weights fingerprint and
``--start-block`` against the backbone's blocks.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from qwt_core import (QwTConfig, check_bits, eval_arithmetic, fit_qwt, load_state, model_size, quantizers, save_state,
                      set_quant_state, weights_fingerprint)
from qwt_core import preflight
from qwt_core.qwt.config import solver_preset
from qwt_core.records import RECORDS_DIR, dataset_entry, make_record, write_record
from qwt_core.state_io import StateFileError, StateInfo, module_device, read_state_info

from .backbones import ALL_METHODS, DEFAULT_METHODS, QWT, BackboneError, base_method, check_methods

METHODS = ALL_METHODS  # every method of some backbone; a run takes those of its detector's backbone
DEFAULT_CKPT_DIR = "checkpoints"


class ExperimentError(ValueError):
    """A bad request (bits, methods, detector, files); the message is one line for the user."""


@dataclass
class DetectionRun:
    """Everything one run needs (the CLI options, one to one)."""

    detector: str | None = None  # registry name (detection.registry.DETECTORS)
    config: str | None = None  # or a custom mmdet config file
    data_root: str | None = None  # COCO 2017 root (annotations/, val2017/, train2017/)
    checkpoint: str | None = None  # default: <ckpt_dir>/<release file name>
    ckpt_dir: str = DEFAULT_CKPT_DIR
    w_bits: int = 4
    a_bits: int = 4
    methods: Sequence[str] | None = None  # None: the backbone's default (fp + its method + QwT)
    device: str | None = None  # None: cuda when torch sees a GPU, else cpu
    qwt_size: int = 512  # train2017 images for the QwT regression (SPEC: 512)
    qwt_img_size: int = 224  # square resize, keep_ratio False, no flip (SPEC)
    qwt_batch_size: int = 8
    qwt_store: str = "device"  # where block inputs of the QwT images live: device | cpu | disk
    val_limit: int | None = None  # evaluate the first N test images only (recorded as partial)
    seed: int = 0
    start_block: int = 0  # QwT: blocks before this index keep zero compensation
    qwt_solver: str = "reference"  # qwt_core.SOLVER_PRESETS name: reference | streaming | lstsq
    window_pad: str = "zero"  # "zero": the reference (default); "exact": pad with -b after the reparameterized norm1
    results_dir: str | os.PathLike[str] = RECORDS_DIR
    save_state: str | None = None
    load_state: str | None = None
    work_dir: str | None = None  # mmengine logs; default work_dirs/<detector>
    workers: int = field(default_factory=lambda: preflight.default_workers(2))  # test dataloader workers (<= CPUs)
    launcher: str = "none"  # none | pytorch (torchrun)
    log_interval: int = 50
    cfg_options: dict[str, Any] = field(default_factory=dict)
    command: str | None = None  # recorded; default: sys.argv
    on_block: Callable[[Any], None] | None = None  # per-block QwT report callback
    feature_probe: int = 4  # held-out val images for the backbone feature error (0: off)
    kernel_size: int = 1  # QwT ResNet backbones: grouped-conv kernel (reference 1)
    factor: int = 64  # QwT ResNet backbones: groups = C_in // factor (reference 64)


def _validate(run: DetectionRun) -> None:
    """Options that need no file: bits, methods, seed, workers, sizes, device (normalized in place)."""
    for what, bits in (("--w-bits", run.w_bits), ("--a-bits", run.a_bits)):
        try:
            check_bits(bits)
        except ValueError:
            raise ExperimentError(f"{what} must be an integer in 2..8, got {bits!r}") from None
    if run.methods is not None and not run.methods:
        raise ExperimentError(f"--methods names no method; choose from {','.join(METHODS)}")
    run.methods = tuple(run.methods) if run.methods is not None else None
    bad = [m for m in run.methods or () if m not in METHODS]
    if bad:
        raise ExperimentError(f"unknown methods {bad}; choose from {', '.join(METHODS)}")
    if run.methods is not None and len(set(run.methods)) != len(run.methods):
        raise ExperimentError(f"duplicate methods in {','.join(run.methods)}")
    if (run.detector is None) == (run.config is None):
        raise ExperimentError("give exactly one of --detector NAME or --config PATH")
    if run.val_limit is not None and run.val_limit < 1:
        raise ExperimentError(f"--val-limit must be >= 1 (omit it to evaluate every val image), got {run.val_limit}")
    if run.window_pad not in ("exact", "zero"):
        raise ExperimentError(f"--window-pad must be 'exact' or 'zero', got {run.window_pad!r}")
    if run.qwt_size < 1 or run.qwt_img_size < 32 or run.qwt_batch_size < 1:
        raise ExperimentError("--qwt-size and --qwt-batch-size must be >= 1 and --qwt-img-size >= 32")
    if run.start_block < 0:
        raise ExperimentError(f"--start-block must be >= 0, got {run.start_block}")
    try:
        QwTConfig(**solver_preset(run.qwt_solver), store=run.qwt_store, kernel_size=run.kernel_size,  # type: ignore[arg-type]
                  factor=run.factor)
    except ValueError as e:
        raise ExperimentError(f"QwT options: {e}") from None
    if run.feature_probe < 0:
        raise ExperimentError(f"--feature-probe must be >= 0, got {run.feature_probe}")
    try:
        preflight.check_seed(run.seed)
        preflight.check_workers(run.workers)
        run.device = preflight.parse_device(run.device if run.device is not None else preflight.default_device())
        preflight.check_outputs(run.results_dir, run.save_state)
    except preflight.PreflightError as e:
        raise ExperimentError(str(e)) from None


def resolve(run: DetectionRun) -> tuple[str, Path, str | None]:
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


def _checkpoint_path(run: DetectionRun, url: str | None) -> Path:
    if run.checkpoint and run.checkpoint.startswith(URL_SCHEMES):
        return _download(run.checkpoint, Path(run.ckpt_dir))
    if run.checkpoint:
        path = Path(run.checkpoint)
    elif url is not None:
        path = Path(run.ckpt_dir) / url.rsplit("/", 1)[-1]
    else:
        raise ExperimentError("a custom --config needs --checkpoint")
    if not path.is_file():
        hint = (f": download the release checkpoint {url} into {path.parent} (CKPT_DIR=...) "
                "or pass --checkpoint") if url else ""
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


def load_config(run: DetectionRun, config_path: Path, work_dir: str):  # noqa: ANN201
    """The mmengine Config with data root, subset, workers and the subset-aware metric."""
    from mmengine.config import Config

    from .data import set_data_root

    cfg = Config.fromfile(str(config_path))
    if run.cfg_options:
        cfg.merge_from_dict(run.cfg_options)
    if run.data_root is not None:
        set_data_root(cfg, run.data_root)
    cfg.work_dir = work_dir
    cfg.load_from = None
    loader = cfg.test_dataloader
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


def build_detector(cfg, device: str, distributed: bool) -> nn.Module:  # noqa: ANN001
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

    def __init__(self, cfg, work_dir: str, launcher: str) -> None:  # noqa: ANN001
        self.cfg, self.work_dir, self.launcher = cfg, work_dir, launcher
        self.runner = None
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
    backbone = getattr(model, "module", model).backbone
    dev = next(backbone.parameters()).device
    with eval_arithmetic(fp16=False):  # detection's evaluation arithmetic (fp32 compensation)
        return [[f.float().cpu() for f in backbone(x.to(dev))] for x in inputs]


def feature_error(feats: list[list[torch.Tensor]], ref: list[list[torch.Tensor]]) -> float:
    """Relative backbone feature error Σ‖f - f_fp‖² / Σ‖f_fp‖² over probe images and stages."""
    num = sum(float((f - r).pow(2).sum()) for fs, rs in zip(feats, ref) for f, r in zip(fs, rs))
    den = sum(float(r.pow(2).sum()) for rs in ref for r in rs)
    return num / den if den > 0 else 0.0


def _check_state(run: DetectionRun, name: str) -> StateInfo:
    """Refuse, before anything is evaluated, a --load-state that is not a readable state of this
    detector or cannot serve the methods (its weights are checked once the model is loaded)."""
    path = Path(run.load_state)  # type: ignore[arg-type]
    try:
        info = read_state_info(path)
    except StateFileError as e:
        raise ExperimentError(str(e)) from None
    meta = info.meta
    if "detector" not in meta:
        what = f"a classification state (model {meta['model']})" if "model" in meta else "not a detection state"
        raise ExperimentError(f"--load-state {path} is {what}: give a state written by qwt-detect --save-state")
    if meta["detector"] != name:
        raise ExperimentError(f"--load-state {path} was calibrated for the detector {meta['detector']}, not {name}")
    base = base_method(run.methods)
    if meta.get("method", "repq") != base:
        raise ExperimentError(f"--load-state {path} holds a {meta.get('method', 'repq')} calibration, not {base}")
    if meta.get("qwt") and base in run.methods:
        raise ExperimentError(f"--load-state {path} holds QwT compensation: it can only evaluate "
                              f"{base}{QWT} (drop {base} from --methods)")
    bits = (meta.get("w_bits"), meta.get("a_bits"))
    if None not in bits and bits != (run.w_bits, run.a_bits):
        raise ExperimentError(f"--load-state {path} was calibrated at W{bits[0]}A{bits[1]}, "
                              f"not W{run.w_bits}A{run.a_bits}")
    for key in ("kernel_size", "factor"):
        if meta.get("qwt") and key in meta and meta[key] != getattr(run, key):
            raise ExperimentError(f"--load-state {path} was fitted with --{key.replace('_', '-')} {meta[key]}, "
                                  f"not {getattr(run, key)}")
    if meta.get("window_pad", run.window_pad) != run.window_pad:
        raise ExperimentError(f"--load-state {path} was calibrated with --window-pad {meta['window_pad']}, "
                              f"not {run.window_pad}")
    return info


def _check_state_weights(run: DetectionRun, info: StateInfo, fingerprint: str, ckpt: Path) -> None:
    """The state was calibrated from these FP weights (``weights_fingerprint`` in its meta)."""
    saved = info.meta.get("weights_fingerprint")
    if saved is None:
        raise ExperimentError(f"--load-state {run.load_state} does not say which weights it was calibrated "
                              "from (saved by an older version): calibrate again with --save-state")
    if saved != fingerprint:
        raise ExperimentError(f"--load-state {run.load_state} was calibrated from other FP weights than {ckpt} "
                              f"(weights fingerprint {saved}, these are {fingerprint}; the state names checkpoint "
                              f"{info.meta.get('checkpoint')!r}): pass the checkpoint it was calibrated with")


def _split_info(cfg) -> tuple[int | None, int | None]:  # noqa: ANN001
    """(images, categories) of the test annotation file (None when unreadable)."""
    import json

    from .data import test_paths

    ann, _ = test_paths(cfg)
    try:
        coco = json.loads(ann.read_text())
        return len(coco["images"]), len(coco.get("categories", []))
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def blockwise(model: nn.Module, kind: str):  # noqa: ANN201
    """The QwT adapter of the detector's backbone: Swin blocks or residual blocks."""
    if kind == "swin":
        from .adapters import SwinBackboneAdapter

        return SwinBackboneAdapter(model)
    from .cnn import ResNetBackboneAdapter

    return ResNetBackboneAdapter(model)


def _n_blocks(model: nn.Module, kind: str) -> int:
    return len(blockwise(model, kind).steps())


def backbone_of(run: DetectionRun, cfg, name: str) -> str:  # noqa: ANN001
    """The backbone kind of the config, its methods (default or checked) set on ``run``, and the
    options that only one kind takes; BackboneError / ExperimentError before any work."""
    from .backbones import backbone_kind, check_evaluator
    from .cnn import TOTAL_STRIDE

    what = f"detector {name}"
    kind = backbone_kind(cfg.model, what)
    check_evaluator(cfg, what)
    if run.methods is None:
        run.methods = DEFAULT_METHODS[kind]
    check_methods(kind, run.methods, what)
    if kind == "swin" and (run.kernel_size, run.factor) != (1, 64):
        raise ExperimentError("--kernel-size / --factor set the grouped-conv QwT of ResNet backbones; "
                              f"{name} has a Swin backbone (token-wise QwT)")
    if kind == "resnet" and run.window_pad != "zero":
        raise ExperimentError(f"--window-pad applies to Swin backbones; {name} has a ResNet backbone")
    if kind == "resnet" and any(m.endswith(QWT) for m in run.methods) and run.qwt_img_size % TOTAL_STRIDE:
        raise ExperimentError(f"--qwt-img-size must be a multiple of {TOTAL_STRIDE} for a ResNet backbone "
                              f"(the grouped-conv QwT strides), got {run.qwt_img_size}")
    return kind


def check_request(run: DetectionRun, cfg, name: str, url: str | None) -> tuple[Path, StateInfo | None]:  # noqa: ANN001
    """Everything that can be checked before the model is built: COCO files, checkpoint file,
    ``--load-state``, and the images the calibration will read. Returns (checkpoint, state)."""
    from .data import check_images, check_inputs, qwt_image_files, test_image_files

    if run.data_root is None:
        raise ExperimentError("pass --data-root (make ... COCO=/path/to/coco)")
    methods = tuple(run.methods or ())
    fit_qwt_here = any(m.endswith(QWT) for m in methods) and run.load_state is None
    check_inputs(cfg, need_train=fit_qwt_here)
    ckpt = _checkpoint_path(run, url)  # read (and matched to the detector) right after the build
    state = _check_state(run, name) if run.load_state is not None else None
    calibrating = base_method(methods) is not None and run.load_state is None
    # test item 0 calibrates RepQ-ViT, items 1..feature_probe are the feature-error probes
    n_test = max(1 if calibrating else 0, 1 + run.feature_probe if run.feature_probe > 0 else 0)
    check_images(test_image_files(cfg, n_test), "val")
    if fit_qwt_here and not (state and state.has_qwt):
        check_images(qwt_image_files(cfg, run.qwt_size, run.seed), "QwT train")
    return ckpt, state


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


def run_experiment(run: DetectionRun) -> list[dict[str, Any]]:
    """Run the requested methods; returns the records (each written on rank 0 once evaluated)."""
    _validate(run)
    name, config_path, url = resolve(run)
    import mmdet  # noqa: F401  (registers modules)
    from mmdet.utils import register_all_modules
    from mmengine.dist import get_dist_info

    from qwt_core.distributed import init_from_env

    from . import metrics as _metrics  # noqa: F401  (registers SubsetCocoMetric)
    from .convert import load_detector_weights
    from .data import first_test_batch, probe_inputs, qwt_batches, train_filter_cfg, unreadable_image

    register_all_modules(init_default_scope=True)
    work_dir = run.work_dir or os.path.join("work_dirs", name)
    cfg = load_config(run, config_path, work_dir)
    try:  # an unsupported backbone (or methods of the other kind) is refused before any work
        kind = backbone_of(run, cfg, name)
    except BackboneError as e:
        raise ExperimentError(str(e)) from None
    assert run.methods is not None
    from .backbones import iou_types as scored_iou_types

    iou_types = scored_iou_types(cfg)  # the record's metrics: bbox (+ segm)
    base = base_method(run.methods)  # "repq" | "percentile" | "percentile_strict" | None (fp only)
    ckpt, state = check_request(run, cfg, name, url)
    assert run.device is not None  # resolved by _validate
    need_qwt = any(m.endswith(QWT) for m in run.methods)

    # the one place that binds the device: cuda:N made current in one process, cuda:LOCAL_RANK under
    # torchrun (backend by device: nccl on CUDA, gloo on CPU; mmengine's init_dist assumes CUDA, and
    # the Runner reuses this group)
    run.device = str(init_from_env(run.device, force=run.launcher != "none").device)
    rank, world = get_dist_info()
    distributed = world > 1 or run.launcher != "none"
    torch.manual_seed(run.seed)

    model = build_detector(cfg, run.device, distributed)
    ck_info = load_detector_weights(model, ckpt, name)
    fingerprint = weights_fingerprint(model) if (run.save_state or state is not None) else None
    if state is not None:
        assert fingerprint is not None
        _check_state_weights(run, state, fingerprint, ckpt)
    if need_qwt and not (state and state.has_qwt):
        n_blocks = _n_blocks(model, kind)
        what = "Swin" if kind == "swin" else "residual"
        if run.start_block >= n_blocks:
            raise ExperimentError(f"--start-block {run.start_block}: the backbone of {name} has {n_blocks} {what} "
                                  f"blocks (0..{n_blocks - 1}); nothing would be compensated")
    coco_eval = Evaluator(cfg, work_dir, run.launcher)

    def evaluate(net: nn.Module, tag: str) -> tuple[dict[str, float], int, float]:
        try:
            with eval_arithmetic(fp16=False):  # the reference's detection: fp32 compensation product
                return coco_eval(net, tag)
        except Exception as e:  # noqa: BLE001 - only a bad image is turned into a message, the rest re-raised
            path = unreadable_image(e)
            if path is None:
                raise
            raise ExperimentError(f"cannot read val image {path}; remove or replace the file (records of the "
                                  "methods already evaluated are kept)") from None

    split_images, categories = _split_info(cfg)
    dataset = dataset_entry("coco", cfg.get("data_root"), "test", split_images, categories)
    base_config = {
        "detector": name, "config_file": str(config_path), "checkpoint": str(ckpt),
        "checkpoint_format": ck_info["format"], "data_root": str(cfg.get("data_root")),
        "val_limit": run.val_limit, "qwt_size": run.qwt_size, "qwt_img_size": run.qwt_img_size,
        "qwt_batch_size": run.qwt_batch_size, "qwt_fp16_eval": False, "start_block": run.start_block,
        "backbone": kind, "quant_method": base, "iou_types": iou_types,
        "repq_calibration": "first test-loader image (config test pipeline)",
        "qwt_calibration": f"{run.qwt_size} train images, {run.qwt_img_size}x{run.qwt_img_size}, keep_ratio False, no flip, seeded sample of the images the training dataset keeps (filter_cfg {train_filter_cfg(cfg)})",
        **({"patch_embed_a_bits": 8, "attn_scale": "q * scale before matmul1 (mmdet/RepQ-ViT)",
            "window_pad": run.window_pad}  # zero: the reference; exact: padding after the reparameterized norm1 is -b
           if kind == "swin" else
           {"stem_bits": 8, "backbone_conv_a_bits": 8 if base == "percentile" else run.a_bits,
            "kernel_size": run.kernel_size, "factor": run.factor}),
        "qwt_solver": run.qwt_solver,
        "methods": list(run.methods), "launcher": run.launcher, "device": run.device,
        "weights_fingerprint": fingerprint,
    }
    records: list[dict[str, Any]] = []
    probes = probe_inputs(cfg, model, run.feature_probe) if run.feature_probe > 0 else []
    fp_feats = backbone_features(model, probes)

    def record(method: str, metrics_raw: dict, images: int, times: dict, blocks: list, size: dict | None,
               extra_cfg: dict) -> None:
        from .metrics import to_percent

        metrics, absent = to_percent(metrics_raw, iou_types=iou_types)
        fp = method == "fp"
        extra_cfg = {**extra_cfg, "feature_probe_images": len(probes)}
        if probes and not fp:
            metrics["feature_err"] = feature_error(backbone_features(model, probes), fp_feats)
        rec = make_record(
            suite="coco", model=name, method=method, w_bits=None if fp else run.w_bits,
            a_bits=None if fp else run.a_bits, metrics=metrics, images=images,
            partial=run.val_limit is not None and (split_images is None or images < split_images),
            dataset=dataset, seed=run.seed,
            config={**base_config, **extra_cfg, **({} if fp else {"w_bits": run.w_bits, "a_bits": run.a_bits})},
            times=times, blocks=blocks, model_size=size, command=run.command, device=run.device,
            world_size=world, metrics_absent=absent, coco_raw={k: v for k, v in metrics_raw.items()})
        records.append(rec)
        if rank == 0:
            path = write_record(rec, run.results_dir)
            mask = f" / mask AP {metrics['segm_mAP']:.1f}" if "segm_mAP" in metrics else ""
            print(f"[{name}] {method}: box AP {metrics['bbox_mAP']:.1f}{mask} ({images} images) -> {path}", flush=True)

    state_meta = {"detector": name, "method": base, "w_bits": run.w_bits, "a_bits": run.a_bits,
                  "checkpoint": str(ckpt), "weights_fingerprint": fingerprint,
                  **({"window_pad": run.window_pad} if kind == "swin" else
                     {"kernel_size": run.kernel_size, "factor": run.factor})}
    if "fp" in run.methods:
        m, n_img, t = evaluate(model, f"{name}_fp")
        record("fp", m, n_img, {"eval_s": t}, [], model_size(model).to_dict(), {})
    if base is None:
        return records

    # --- RepQ-ViT (Swin) / percentile (ResNet) --------------------------------------------------
    quantize(model, kind, base, run.w_bits, run.a_bits)
    model.to(run.device)
    t0 = time.time()
    blocks: list[dict] = []
    has_qwt = False
    if run.load_state:
        try:
            meta = load_state(model, run.load_state)  # compensation built where the model lives
        except ValueError as e:
            raise ExperimentError(" ".join(str(e).split())[:300]) from None
        has_qwt = bool(meta.get("qwt"))
        blocks = list(meta.get("blocks", []))
        print(f"[{name}] loaded calibrated state {run.load_state} (qwt={has_qwt})", flush=True)
    else:
        batch = first_test_batch(cfg)
        print(f"[{name}] {base} W{run.w_bits}A{run.a_bits}: calibrating on "
              f"{batch['data_samples'][0].img_path}", flush=True)
        calibrate(model, kind, batch, exact_padding=run.window_pad == "exact")
    set_quant_state(model, weight=True, act=True)  # quantizers start (and calibrate) disabled
    # quantizers the calibration image did not reach initialise on the first evaluation data (logged)
    base_config["lazy_quantizers"] = [n for n, q in quantizers(model) if q.init_on_first_use]
    t_cal = time.time() - t0
    size = model_size(model).to_dict()
    if base in run.methods:
        m, n_img, t = evaluate(model, f"{name}_{base}_w{run.w_bits}a{run.a_bits}")
        record(base, m, n_img, {"calibration_s": t_cal, "eval_s": t}, [], size, {})
    if not need_qwt:
        if run.save_state and rank == 0:
            save_state(model, run.save_state, {**state_meta, "qwt": False, "blocks": []})
        return records

    # --- QwT on the backbone blocks (Swin blocks / residual blocks) -------------------------------
    t0 = time.time()
    if not has_qwt:
        from tqdm import tqdm

        adapter = blockwise(model, kind)
        qcfg = QwTConfig(start_block=run.start_block, store=run.qwt_store,  # type: ignore[arg-type]
                         kernel_size=run.kernel_size, factor=run.factor, **solver_preset(run.qwt_solver))  # type: ignore[arg-type]
        n_batches = math.ceil(len(range(rank, run.qwt_size, world)) / run.qwt_batch_size)
        batches = tqdm(qwt_batches(cfg, model, run.qwt_size, run.qwt_img_size, run.seed,
                                   run.qwt_batch_size, rank, world),
                       total=n_batches, desc=f"[{name}] QwT images", disable=rank != 0)
        n_blocks = len(adapter.steps())
        bar = tqdm(total=n_blocks, desc=f"[{name}] QwT blocks", disable=rank != 0)

        def on_block(r) -> None:  # noqa: ANN001
            bar.update(1)
            if rank == 0:
                tqdm.write(f"[qwt] block {r.index:2d} {r.name}: R2={r.r2:.4f} mse {r.mse_before:.3e} -> "
                           f"{r.mse_after:.3e} ({'applied' if r.applied else 'skipped'}, {r.samples} tokens)")
            if run.on_block is not None:
                run.on_block(r)

        reports = fit_qwt(adapter, batches, qcfg, device=run.device, on_block=on_block)
        bar.close()
        blocks = [r.to_dict() for r in reports]
    t_qwt = time.time() - t0
    if run.save_state and rank == 0:
        save_state(model, run.save_state, {**state_meta, "qwt": True, "blocks": blocks})
    m, n_img, t = evaluate(model, f"{name}_{base}_qwt_w{run.w_bits}a{run.a_bits}")
    record(base + QWT, m, n_img, {"calibration_s": t_cal, "qwt_s": t_qwt, "eval_s": t}, blocks,
           model_size(model).to_dict(), {"qwt_state_loaded": has_qwt})
    return records

