"""``python -m detection`` / ``qwt-detect``: RepQ-ViT / percentile quantization and QwT on COCO detectors.

Detectors: the five Swin detectors of the QwT COCO table (``--detector``), mmdet model-zoo
detectors registered beyond the paper, or any mmdet 3.x config (``--config FILE``,
``mmdet::<dir>/<file>.py``) whose backbone is a SwinTransformer (RepQ-ViT) or a ResNet /
ResNetV1d / ResNeXt (percentile); any other backbone is refused in one line.

Example (one row of the QwT COCO table, paper setting)::

    qwt-detect --detector cascade_mask_rcnn_swin_t --data-dir /data/coco --checkpoint-dir checkpoints \
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
from collections.abc import Sequence

from runtime.config import build_parser, config_from_args, undeprecate
from runtime.errors import EXIT_BAD_INPUT, BadInput, one_line

PROG = "qwt-detect"

HELP = {
    "detector": "a detector of the QwT COCO table or a registered mmdet model-zoo detector",
    "config": "an mmdet 3.x config: a file, or mmdet::<dir>/<file>.py from the installed mmdet (Swin, ResNet, "
              "ResNetV1d or ResNeXt backbone); give it or --detector",
    "data_dir": "COCO 2017 root: annotations/, val2017/, train2017/",
    "checkpoint": "detector checkpoint file or URL (downloaded into --checkpoint-dir): release mmdet 2.x Swin "
                  "layout or mmdet 3.x (openmmlab model zoo)",
    "checkpoint_dir": "where release checkpoints are looked up (make: CKPT_DIR)",
    "methods": "comma list; Swin backbones: fp,repq,repq+qwt (default); ResNet backbones: "
               "fp,percentile,percentile+qwt (default), percentile_strict, percentile_strict+qwt",
    "qwt_size": "train2017 images for QwT",
    "seed": "QwT image sampling seed, >= 0",
    "workers": "test dataloader workers, >= 0 (default 2, at most the CPUs available here)",
}


def parser() -> argparse.ArgumentParser:
    """The flags of :class:`detection.pipeline.DetectionConfig` (runtime.config: the vocabulary
    both CLIs share), plus ``--cfg-options``."""
    from .pipeline import DetectionConfig

    p = build_parser(DetectionConfig, PROG, __doc__.split("\n\n")[0], extra_help=HELP, error_prefix=f"{PROG}: error: ")
    p.add_argument("--cfg-options", nargs="*", default=[], metavar="KEY=VALUE",
                   help="mmengine config overrides, e.g. model.test_cfg.rcnn.score_thr=0.05")
    return p


def _cfg_options(items: Sequence[str]) -> dict:
    from mmengine.config import DictAction

    ns = argparse.Namespace()
    DictAction(option_strings=[], dest="opts")(argparse.ArgumentParser(), ns, list(items))
    return ns.opts or {}


def fail(msg: str) -> int:
    print(f"{PROG}: error: {one_line(BadInput(msg))}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # mmengine imports pkg_resources (deprecated by setuptools): keep stderr for our own messages
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    args = parser().parse_args(undeprecate(argv, ()))
    from runtime.preflight import PreflightError, default_device, parse_device

    try:
        args.device = parse_device(args.device if args.device is not None else default_device())
    except PreflightError as e:
        return fail(str(e))
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # mmengine's Runner moves models to get_device()
    try:
        import mmcv.ops  # noqa: F401
        import mmdet  # noqa: F401
    except ImportError as e:
        return fail(f"mmdet/mmcv (with ops) are not installed ({e}): run `make install`")
    import logging

    from .pipeline import DetectionConfig, run_experiment

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s", stream=sys.stdout)
    try:
        run = config_from_args(DetectionConfig, args, command=shlex.join([PROG, *argv]))
        assert isinstance(run, DetectionConfig)
        run.cfg_options = _cfg_options(args.cfg_options)
        run_experiment(run)
    except BadInput as e:  # DataError, BackboneError, CheckpointError, PreflightError are BadInput
        return fail(str(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted: the records of the methods already evaluated are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
