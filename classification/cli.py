"""``python -m classification`` / ``qwt-classify``: one (model, bits) experiment per command.

Example (the paper's DeiT-S W4/A4 rows)::

    python -m classification --model deit_small --w-bits 4 --a-bits 4 --data-dir /data/imagenet

Bad input prints one line ``error: ...`` and exits with status 2 before any work, writing nothing:
unknown model, bits outside 2..8, options out of range (seed, workers, device, sizes, start
block), output folders that cannot be written, missing or unreadable dataset / images /
checkpoint / state, unreachable weights, a checkpoint or state that does not match, a class subset
not asked for. An unreadable val image met during an evaluation stops the run with one line naming
the file; the records of the methods already evaluated are kept.

Several processes (docs/distributed.md)::

    python -m torch.distributed.run --standalone --nproc_per_node 8 -m classification --model deit_small \
        --device cuda --data-dir /data/imagenet
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from torch.distributed.elastic.multiprocessing.errors import record

from qwt_core.records import RECORDS_DIR

from . import registry
from .build import DEFAULT_CHECKPOINT_DIR
from .errors import ClassificationError, one_line
from .pipeline import ExperimentConfig, run_experiment

EXIT_BAD_INPUT = 2


def _bits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits must be an integer in 2..8, got {text!r}") from None
    if not 2 <= value <= 8:
        raise argparse.ArgumentTypeError(f"bits must be an integer in 2..8, got {value}")
    return value


def _methods(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _kwargs(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--model-kwargs must be a JSON object: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--model-kwargs must be a JSON object")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the usage too)
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="qwt-classify", description="RepQ-ViT + QwT on ImageNet: one model, one bit setting.")
    p.add_argument("--model", required=True, help=f"one of: {' '.join(registry.names())}")
    p.add_argument("--w-bits", type=_bits, default=4, help="weight bits, 2..8 (default 4)")
    p.add_argument("--a-bits", type=_bits, default=4, help="activation bits, 2..8 (default 4)")
    p.add_argument("--methods", type=_methods, default=None,
                   help="comma list; transformers: fp,repq,repq+qwt (default); ResNet: fp,percentile,"
                        "percentile+qwt (default), percentile_strict, percentile_strict+qwt")
    p.add_argument("--data-dir", required=True, help="ImageNet root with train/ and val/ class folders")
    p.add_argument("--checkpoint", default=None,
                   help="local state dict of the same architecture (replaces the pretrained weights)")
    p.add_argument("--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR,
                   help="folder with the reference ResNet checkpoints (resnet18_imagenet.pth.tar, "
                        "resnet50_imagenet.pth.tar, resnet101-63fe2227.pth) and, for offline use, timm "
                        f"weights named <arch>.<tag>.safetensors or .pth (default {DEFAULT_CHECKPOINT_DIR}; "
                        "make: CKPT_DIR)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda when torch sees a GPU, else cpu)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None,
                   help="val loader workers, >= 0 (default: 4, at most the CPUs available)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed, >= 0 (default 0)")
    p.add_argument("--calib-size", type=int, default=32, help="RepQ-ViT calibration images (default 32)")
    p.add_argument("--qwt-size", type=int, default=512, help="QwT regression images (default 512)")
    p.add_argument("--no-calib-augment", action="store_true",
                   help="calibrate on eval-transformed train images (reference: augmented)")
    p.add_argument("--val-limit", type=int, default=None,
                   help="evaluate N >= 1 evenly strided val images only (recorded as partial; default: all)")
    p.add_argument("--class-subset", action="store_true",
                   help="val/ holds a subset of the model's classes: map each class folder to the model's "
                        "class by its name (ImageNet wnid or class index); recorded as a class subset")
    p.add_argument("--start-block", type=int, default=0,
                   help="QwT: first compensated block (0 .. number of blocks - 1; default 0)")
    p.add_argument("--kernel-size", type=int, default=1, help="QwT ResNet: grouped-conv kernel size")
    p.add_argument("--factor", type=int, default=64, help="QwT ResNet: channels per group")
    p.add_argument("--qwt-solver", choices=("reference", "streaming", "lstsq"), default="reference",
                   help="QwT regression: reference (default: the released fp32 solve on all rows of a block, bit for bit; memory grows with the images), streaming (float64 normal equations, constant memory; keep/zero by the R² of an fp32 inverse) or lstsq (streaming, float64 R²: also compensates numerically singular blocks)")
    p.add_argument("--half-arith", choices=("native", "emulated"), default="native",
                   help="fp16 QwT compensation at evaluation: native fp16 (default, the reference's results bit "
                        "for bit) or emulated (fp16 operands and result, fp32 product: much faster on CPUs, "
                        "not bit-identical)")
    p.add_argument("--save-state", default=None,
                   help="write the calibrated state to this file (with a fingerprint of the FP weights)")
    p.add_argument("--load-state", default=None,
                   help="load a calibrated state (skips calibration); it must come from the same model, "
                        "method, bits and FP weights")
    p.add_argument("--results-dir", default=str(RECORDS_DIR), help="record root (default results/records)")
    p.add_argument("--model-kwargs", type=_kwargs, default=None,
                   help="JSON constructor overrides, checked against the constructor before the run")
    p.add_argument("--random-init", action="store_true", help="no pretrained weights (smoke runs)")
    p.add_argument("--tiny", action="store_true",
                   help="small random-init variant of the model (tests/smoke runs; never for tables)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--import-module", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it may call classification.registry.register); repeatable")
    return p


def config_from_args(args: argparse.Namespace, command: str) -> ExperimentConfig:
    return ExperimentConfig(
        model=args.model, data_dir=args.data_dir, w_bits=args.w_bits, a_bits=args.a_bits,
        methods=args.methods, checkpoint=args.checkpoint, checkpoint_dir=args.checkpoint_dir,
        pretrained=not args.random_init, tiny=args.tiny, model_kwargs=args.model_kwargs or {},
        device=args.device, batch_size=args.batch_size, seed=args.seed, class_subset=args.class_subset,
        **({} if args.workers is None else {"workers": args.workers}),
        calib_size=args.calib_size, qwt_size=args.qwt_size, calib_augment=not args.no_calib_augment,
        val_limit=args.val_limit, start_block=args.start_block, kernel_size=args.kernel_size,
        factor=args.factor, qwt_solver=args.qwt_solver, half_arith=args.half_arith, save_state=args.save_state, load_state=args.load_state,
        results_dir=args.results_dir, command=command, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    if "TORCHELASTIC_RUN_ID" in os.environ:  # under torchrun: a failing worker's traceback goes
        return record(_main)(argv)  # into the launcher's error summary
    return _main(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # modules that register extra models must be imported before --model is resolved
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import-module", action="append", default=[])
    for module in pre.parse_known_args(argv)[0].import_module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            print(f"error: --import-module {module}: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))  # torchrun: only rank 0 logs progress
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(message)s" if rank == 0 else f"%(asctime)s [rank {rank}] %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    prog = Path(sys.argv[0]).name
    prefix = ["python", "-m", "classification"] if prog in ("__main__.py", "-m", "") else [prog]
    try:
        run_experiment(config_from_args(args, shlex.join(prefix + argv)))
    except ClassificationError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: the records of the methods already evaluated are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
