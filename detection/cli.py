"""``python -m detection`` / ``qwt-detect``: RepQ-ViT / percentile quantization and QwT on COCO detectors.

Detectors: the five Swin detectors of the QwT COCO table (``--detector``), mmdet model-zoo
detectors registered beyond the paper, or any mmdet 3.x config (``--config FILE``,
``mmdet::<dir>/<file>.py``) whose backbone is a SwinTransformer (RepQ-ViT) or a ResNet /
ResNetV1d / ResNeXt (percentile); any other backbone is refused in one line.

Example (one row of the QwT COCO table, paper setting)::

    qwt-detect --detector cascade_mask_rcnn_swin_t --data-root /data/coco --ckpt-dir checkpoints \
        --w-bits 4 --a-bits 4 --methods fp,repq,repq+qwt --device cuda

Errors in the request print one line ``qwt-detect: error: ...`` and exit with status 2 before
anything is evaluated or recorded: options out of range (bits, methods, seed, workers, device,
sizes, start block), output folder / state file that cannot be written, missing COCO files,
unreadable images, a missing or unreadable checkpoint or one of another detector, a --load-state
that is not a state of this detector, bits and FP weights. An unreadable val image met during an
evaluation stops the run with one line naming the file; the records already written are kept.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Sequence

from .pipeline import DEFAULT_CKPT_DIR

PROG = "qwt-detect"
EXIT_BAD_INPUT = 2


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (their help says what happens instead)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse would print the usage too)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    from qwt_core.preflight import default_workers

    from .registry import ALL_DETECTORS

    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                formatter_class=_Formatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--detector", choices=list(ALL_DETECTORS),
                   help="a detector of the QwT COCO table or a registered mmdet model-zoo detector")
    g.add_argument("--config", help="an mmdet 3.x config: a file, or mmdet::<dir>/<file>.py from the installed "
                                    "mmdet (Swin, ResNet, ResNetV1d or ResNeXt backbone)")
    p.add_argument("--data-root", help="COCO 2017 root: annotations/, val2017/, train2017/")
    p.add_argument("--checkpoint", help="detector checkpoint file or URL (downloaded into --ckpt-dir): release "
                                        "mmdet 2.x Swin layout or mmdet 3.x (openmmlab model zoo)")
    p.add_argument("--ckpt-dir", default=DEFAULT_CKPT_DIR,
                   help="where release checkpoints are looked up (make: CKPT_DIR)")
    p.add_argument("--w-bits", type=int, default=4)
    p.add_argument("--a-bits", type=int, default=4)
    p.add_argument("--methods", default=None,
                   help="comma list; Swin backbones: fp,repq,repq+qwt (default); ResNet backbones: "
                        "fp,percentile,percentile+qwt (default), percentile_strict, percentile_strict+qwt")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda when torch sees a GPU, else cpu)")
    p.add_argument("--qwt-size", type=int, default=512, help="train2017 images for QwT")
    p.add_argument("--qwt-img-size", type=int, default=224, help="QwT images are resized to this square")
    p.add_argument("--qwt-batch-size", type=int, default=8)
    p.add_argument("--qwt-store", choices=("device", "cpu", "disk"), default="device",
                   help="where the QwT block inputs live between blocks")
    p.add_argument("--qwt-solver", choices=("reference", "streaming", "lstsq"), default="reference",
                   help="QwT regression: reference (default: the released fp32 solve on all rows of a block, bit for bit; memory grows with the images), streaming (float64 normal equations, constant memory; keep/zero by the R² of an fp32 inverse) or lstsq (streaming, float64 R²: also compensates numerically singular blocks)")
    p.add_argument("--val-limit", type=int, default=None,
                   help="evaluate only the first N >= 1 val images (recorded as partial; default: all)")
    p.add_argument("--seed", type=int, default=0, help="QwT image sampling seed, >= 0")
    p.add_argument("--feature-probe", type=int, default=4, metavar="N",
                   help="held-out val images (test items 1..N) for the backbone feature error metric; 0: off")
    p.add_argument("--start-block", type=int, default=0,
                   help="QwT: blocks before this keep no compensation (0 .. number of Swin blocks - 1)")
    p.add_argument("--kernel-size", type=int, default=1,
                   help="QwT, ResNet backbones: grouped-conv compensation kernel (odd)")
    p.add_argument("--factor", type=int, default=64,
                   help="QwT, ResNet backbones: groups = input channels // factor")
    p.add_argument("--window-pad", choices=("zero", "exact"), default="zero",
                   help="padding of the normalized tokens after the reparameterized norm1: 'zero' "
                        "(the reference code) or 'exact' (named improvement: -b, same FP function)")
    p.add_argument("--results-dir", default=None, help="records folder (default results/records)")
    p.add_argument("--save-state", help="write the calibrated (RepQ-ViT [+ QwT]) state to this file, with a "
                                        "fingerprint of the FP weights")
    p.add_argument("--load-state", help="load a calibrated state instead of calibrating (same detector, bits "
                                        "and FP weights)")
    p.add_argument("--work-dir", help="mmengine work dir (logs); default work_dirs/<detector>")
    p.add_argument("--workers", type=int, default=default_workers(2),
                   help="test dataloader workers, >= 0 (2, at most the CPUs available here)")
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                   help="'pytorch' under torchrun for several GPUs")
    p.add_argument("--cfg-options", nargs="*", default=[], metavar="KEY=VALUE",
                   help="mmengine config overrides, e.g. model.test_cfg.rcnn.score_thr=0.05")
    return p


def _cfg_options(items: Sequence[str]) -> dict:
    from mmengine.config import DictAction

    ns = argparse.Namespace()
    DictAction(option_strings=[], dest="opts")(argparse.ArgumentParser(), ns, list(items))
    return ns.opts or {}


def fail(msg: str) -> int:
    print(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # mmengine imports pkg_resources (deprecated by setuptools): keep stderr for our own messages
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    args = parser().parse_args(argv)
    from qwt_core.preflight import PreflightError, default_device, parse_device

    try:
        args.device = parse_device(args.device if args.device is not None else default_device())
    except PreflightError as e:
        return fail(str(e))
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # mmengine's Runner moves models to get_device()
    try:
        import mmdet  # noqa: F401
        import mmcv.ops  # noqa: F401
    except ImportError as e:
        return fail(f"mmdet/mmcv (with ops) are not installed ({e}): run `make install`")
    from qwt_core.records import RECORDS_DIR

    from .convert import CheckpointError
    from .data import DataError
    from .pipeline import DetectionRun, ExperimentError, run_experiment

    run = DetectionRun(
        detector=args.detector, config=args.config, data_root=args.data_root,
        checkpoint=args.checkpoint, ckpt_dir=args.ckpt_dir, w_bits=args.w_bits, a_bits=args.a_bits,
        methods=None if args.methods is None else tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        device=args.device, kernel_size=args.kernel_size, factor=args.factor,
        qwt_size=args.qwt_size, qwt_img_size=args.qwt_img_size, qwt_batch_size=args.qwt_batch_size,
        qwt_store=args.qwt_store, qwt_solver=args.qwt_solver, val_limit=args.val_limit, seed=args.seed,
        start_block=args.start_block, window_pad=args.window_pad, feature_probe=args.feature_probe,
        results_dir=Path(args.results_dir) if args.results_dir else RECORDS_DIR,
        save_state=args.save_state, load_state=args.load_state, work_dir=args.work_dir,
        workers=args.workers, launcher=args.launcher, log_interval=args.log_interval,
        command=shlex.join([PROG, *argv]))
    try:
        run.cfg_options = _cfg_options(args.cfg_options)
        run_experiment(run)
    except (ExperimentError, CheckpointError, DataError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted: the records of the methods already evaluated are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
