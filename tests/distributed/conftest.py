"""Fixtures for multi-process runs: a synthetic class-folder dataset whose val set (11 images) is
not divisible by the number of processes, and a launcher for ``torchrun``-style subprocesses."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.classification.conftest import write_dataset

REPO = Path(__file__).resolve().parents[2]
VAL_IMAGES = 11  # 4 classes x 3, minus one: odd, so 2 processes cannot split it evenly
TRAIN_IMAGES = 16
# tiny run: RepQ-ViT on 8 images, QwT on all 16 train images in 4 batches (2 per process), the
# 11 val images in 3 batches (rank 0: 1, rank 1: 2)
TINY_ARGS = ["--tiny", "--device", "cpu", "--calib-size", "8", "--qwt-size", "16", "--batch-size", "4",
             "--workers", "0", "--no-progress"]


@pytest.fixture(scope="session")
def odd_imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_dataset(tmp_path_factory.mktemp("imagenet_odd"), n_classes=4, train=4, val=3)
    (root / "val" / "n00000003" / "val_3_2.png").unlink()
    assert sum(1 for _ in (root / "val").rglob("*.png")) == VAL_IMAGES
    return root


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a launched run: one thread per process (what torchrun sets for several
    processes), short collective timeout, no inherited torchrun variables, this checkout first on the path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    # PYTHONPATH: the launched processes import this checkout (they run in a temporary folder)
    env.update(OMP_NUM_THREADS="1", QWT_DIST_TIMEOUT_S="120", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.update(extra)
    return env


def launch(module: str, args: list[str], nproc: int, cwd: Path, timeout: float = 300,
           **env: str) -> subprocess.CompletedProcess:
    """``python -m <module> ...`` (nproc 0) or ``python -m torch.distributed.run --standalone
    --nproc_per_node <nproc> -m <module> ...``."""
    if nproc == 0:
        cmd = [sys.executable, "-m", module, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", module, *args]
    return subprocess.run(cmd, cwd=cwd, env=child_env(**env), capture_output=True, text=True, timeout=timeout)
