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
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from torch.distributed.elastic.multiprocessing.errors import record

from runtime.config import build_parser as config_parser
from runtime.config import config_from_args as _config_from_args
from runtime.config import undeprecate
from runtime.errors import EXIT_BAD_INPUT, BadInput, one_line

from . import registry
from .build import DEFAULT_CHECKPOINT_DIR
from .pipeline import ClassificationConfig, run_experiment

HELP = {
    "data_dir": "ImageNet root with train/ and val/ class folders",
    "checkpoint": "local state dict of the same architecture (replaces the pretrained weights)",
    "checkpoint_dir": "folder with the reference ResNet checkpoints (resnet18_imagenet.pth.tar, "
                      "resnet50_imagenet.pth.tar, resnet101-63fe2227.pth) and, for offline use, timm "
                      f"weights named <arch>.<tag>.safetensors or .pth (default {DEFAULT_CHECKPOINT_DIR}; "
                      "make: CKPT_DIR)",
    "methods": "comma list; transformers: fp,repq,repq+qwt (default); ResNet: fp,percentile,"
               "percentile+qwt (default), percentile_strict, percentile_strict+qwt",
}


def build_parser() -> argparse.ArgumentParser:
    """The flags of :class:`ClassificationConfig` (runtime.config: the vocabulary both CLIs share)."""
    p = config_parser(ClassificationConfig, "qwt-classify", "RepQ-ViT + QwT on ImageNet: one model, one bit setting.",
                      required=("model", "data_dir"),
                      extra_help={**HELP, "model": f"one of: {' '.join(registry.names())}"})
    p.add_argument("--import-module", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it may call classification.registry.register); repeatable")
    return p


def config_from_args(args: argparse.Namespace, command: str) -> ClassificationConfig:
    cfg = _config_from_args(ClassificationConfig, args, command=command)
    assert isinstance(cfg, ClassificationConfig)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # under torchrun: a failing worker's traceback goes into the launcher's error summary
        # (record re-raises the failure, so it returns _main's int: the cast drops its Optional)
        return cast(int, record(_main)(argv))
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
    args = build_parser().parse_args(undeprecate(argv, ()))
    rank = int(os.environ.get("RANK", "0"))  # torchrun: only rank 0 logs progress
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(message)s" if rank == 0 else f"%(asctime)s [rank {rank}] %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    prog = Path(sys.argv[0]).name
    prefix = ["python", "-m", "classification"] if prog in ("__main__.py", "-m", "") else [prog]
    try:
        run_experiment(config_from_args(args, shlex.join(prefix + argv)))
    except BadInput as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: the records of the methods already evaluated are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
