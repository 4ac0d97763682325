"""``python -m detection`` / ``qwt-detect``: RepQ-ViT and QwT on the COCO Swin detectors.

Example (one row of the QwT COCO table, paper setting)::

    qwt-detect --detector cascade_mask_rcnn_swin_t --data-root /data/coco --ckpt-dir checkpoints \
        --w-bits 4 --a-bits 4 --methods fp,repq,repq+qwt --device cuda

Errors in the request (bits, missing COCO files or checkpoint, a checkpoint of another detector)
print one line and exit with status 2 before anything is evaluated or recorded.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Sequence

from .pipeline import DEFAULT_CKPT_DIR, METHODS

PROG = "qwt-detect"


def _int_or_none(s: str) -> int | None:
    return None if s.lower() in ("", "none", "0", "all") else int(s)


def parser() -> argparse.ArgumentParser:
    from .registry import DETECTORS

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--detector", choices=list(DETECTORS), help="a detector of the QwT COCO table")
    g.add_argument("--config", help="a custom mmdet 3.x config file (Swin backbone)")
    p.add_argument("--data-root", help="COCO 2017 root: annotations/, val2017/, train2017/")
    p.add_argument("--checkpoint", help="detector checkpoint (release mmdet 2.x Swin layout or mmdet 3.x)")
    p.add_argument("--ckpt-dir", default=DEFAULT_CKPT_DIR, help="where release checkpoints are looked up")
    p.add_argument("--w-bits", type=int, default=4)
    p.add_argument("--a-bits", type=int, default=4)
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--qwt-size", type=int, default=512, help="train2017 images for QwT")
    p.add_argument("--qwt-img-size", type=int, default=224, help="QwT images are resized to this square")
    p.add_argument("--qwt-batch-size", type=int, default=8)
    p.add_argument("--qwt-store", choices=("device", "cpu", "disk"), default="device",
                   help="where the QwT block inputs live between blocks")
    p.add_argument("--val-limit", type=_int_or_none, default=None,
                   help="evaluate only the first N val images (recorded as partial)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-probe", type=int, default=4, metavar="N",
                   help="held-out val images (test items 1..N) for the backbone feature error metric; 0: off")
    p.add_argument("--start-block", type=int, default=0, help="QwT: blocks before this keep no compensation")
    p.add_argument("--window-pad", choices=("zero", "exact"), default="zero",
                   help="padding of the normalized tokens after the reparameterized norm1: 'zero' "
                        "(the reference code) or 'exact' (named improvement: -b, same FP function)")
    p.add_argument("--results-dir", default=None, help="records folder (default results/records)")
    p.add_argument("--save-state", help="write the calibrated (RepQ-ViT [+ QwT]) state here")
    p.add_argument("--load-state", help="load a calibrated state instead of calibrating")
    p.add_argument("--work-dir", help="mmengine work dir (logs); default work_dirs/<detector>")
    p.add_argument("--workers", type=int, default=2, help="test dataloader workers")
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                   help="'pytorch' under torchrun for several GPUs")
    p.add_argument("--cfg-options", nargs="*", default=[], metavar="KEY=VALUE",
                   help="mmengine config overrides, e.g. model.test_cfg.rcnn.score_thr=0.05")
    return p


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


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
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # mmengine's Runner moves models to get_device()
    elif args.device is None:
        args.device = "cuda" if _cuda() else "cpu"
    try:
        import mmdet  # noqa: F401
        import mmcv.ops  # noqa: F401
    except ImportError as e:
        return fail(f"mmdet/mmcv (with ops) are not installed ({e}): run `make install`")
    from benchmarks.records import RECORDS_DIR

    from .convert import CheckpointError
    from .data import DataError
    from .pipeline import DetectionRun, ExperimentError, run_experiment

    run = DetectionRun(
        detector=args.detector, config=args.config, data_root=args.data_root,
        checkpoint=args.checkpoint, ckpt_dir=args.ckpt_dir, w_bits=args.w_bits, a_bits=args.a_bits,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()], device=args.device,
        qwt_size=args.qwt_size, qwt_img_size=args.qwt_img_size, qwt_batch_size=args.qwt_batch_size,
        qwt_store=args.qwt_store, val_limit=args.val_limit, seed=args.seed,
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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
