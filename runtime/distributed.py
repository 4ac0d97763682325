"""torch.distributed helpers shared by the classification and detection pipelines (torch only).

A run started by ``torchrun`` (``python -m torch.distributed.run``) sees ``WORLD_SIZE``, ``RANK``
and ``LOCAL_RANK`` in its environment; :func:`init_from_env` opens the process group with the
backend of the device (``nccl`` for CUDA, ``gloo`` for CPU, so the same code path runs in CI) and
is a no-op for a plain one-process run. The rest:

- :func:`shard_range` / :func:`shard_batches`: a contiguous, disjoint part of ``range(n)`` per rank
  with NO padding (the union over ranks is ``range(n)`` exactly once), unlike
  ``DistributedSampler``'s default, which repeats samples to even out the shards;
  :func:`shard_batches` keeps the one-process batch boundaries whenever there are at least as
  many batches as ranks, so every batch is the same tensor it would be in one process;
- :func:`broadcast_tensor` / :func:`broadcast_object`: rank 0's value on every rank;
- :func:`gather_objects`: every rank's value, in rank order, on every rank;
QwT's normal equations are all-reduced by the algorithm itself (``qwt_core.qwt.accumulator``).
Tests inject faults by monkeypatching a pipeline step (``tests/distributed/failing_run.py``).

Environment: ``QWT_DIST_TIMEOUT_S`` (default 1800) bounds how long a collective waits for a rank
that neither answers nor dies (torchrun already stops every worker when one exits non-zero).
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

DEFAULT_TIMEOUT_S = 1800.0  # 30 min: QwT of one ViT-B block on 512 images is far below this
TIMEOUT_ENV = "QWT_DIST_TIMEOUT_S"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # True: :func:`cleanup` destroys the group

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def backend_for(device: torch.device | str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))


def bind_device(device: torch.device | str, local_rank: int | None = None) -> torch.device:
    """The one place that decides which device this process computes on, and makes it current.

    - ``cpu`` -> ``cpu``;
    - one process (``local_rank`` None): ``cuda`` -> the current CUDA device, ``cuda:N`` -> ``cuda:N``;
    - one process per GPU (torchrun, ``local_rank`` given): ``cuda`` or ``cuda:N`` -> ``cuda:LOCAL_RANK``
      (an index asked for is not honoured there: every rank would use that one GPU and NCCL would
      fail; choose the GPUs with ``CUDA_VISIBLE_DEVICES``; a log line says so).

    For CUDA, ``torch.cuda.set_device`` is called, so that what later code and libraries put on
    ``"cuda"`` (mmengine's Runner, ``torch.cuda.current_device()``) lands on the same GPU, and the
    returned device always carries its index (``torch.device("cuda") != torch.device("cuda:0")``).
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    if local_rank is not None:
        if dev.index is not None and dev.index != local_rank:
            log.warning("--device %s under torchrun: rank with LOCAL_RANK=%d takes cuda:%d (one GPU per process; "
                        "choose the GPUs with CUDA_VISIBLE_DEVICES)", dev, local_rank, local_rank)
        dev = torch.device("cuda", local_rank)
    elif dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(dev)
    return dev


def init_from_env(device: torch.device | str = "cpu", force: bool = False) -> DistInfo:
    """Join the process group torchrun describes (a no-op when ``WORLD_SIZE`` is unset or 1,
    unless ``force``: a group of one, for code that insists on one, e.g. mmengine's launcher), and
    bind this process's device (:func:`bind_device`, also in one process).

    For CUDA, each process of a group takes ``cuda:LOCAL_RANK`` and the returned ``device`` says so;
    a group that is already initialised (e.g. by mmengine) is reused, not re-created.
    """
    world = env_world_size()
    already = dist.is_available() and dist.is_initialized()
    if world <= 1 and not already and not force:
        return DistInfo(device=bind_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = bind_device(device, local_rank)
    if not already:
        for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set: launch with "
                                   "`python -m torch.distributed.run --nproc_per_node N ...` (torchrun)")
        dist.init_process_group(backend_for(dev), timeout=timeout())
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, initialized_here=not already)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_from_env` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def _comm_device() -> torch.device:
    """The device collectives need: the current CUDA device under nccl, else CPU."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous part of ``range(n)``: sizes differ by at most one, no padding,
    the parts are disjoint and their union (in rank order) is ``range(n)``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def shard_batches(n: int, batch_size: int, rank: int, world_size: int) -> list[range]:
    """This rank's batches of ``range(n)`` (each a ``range`` of item indices), no padding.

    With at least ``world_size`` batches, the one-process batches (``batch_size`` items each, the
    last one shorter) are split contiguously over the ranks, so each rank computes exactly the
    batches one process would have computed; with fewer, the items are split contiguously and each
    rank holds one (smaller) batch, or none when ``n < world_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = list(range(0, n, batch_size))
    if len(starts) >= world_size:
        mine = shard_range(len(starts), rank, world_size)
        return [range(starts[i], min(starts[i] + batch_size, n)) for i in mine]
    part = shard_range(n, rank, world_size)
    return [part] if len(part) else []


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; small objects only)."""
    if not is_initialized():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def broadcast_tensor(t: Tensor | None, src: int = 0) -> Tensor:
    """Rank ``src``'s tensor on every rank (other ranks may pass None): on this rank's GPU when it
    was on a GPU on ``src`` (under nccl), else on the CPU."""
    if not is_initialized():
        if t is None:
            raise ValueError("broadcast_tensor: no tensor and no process group")
        return t
    if get_rank() == src and t is None:
        raise ValueError(f"broadcast_tensor: rank {src} (the source) passed no tensor")
    src_t = t if get_rank() == src else None
    meta = broadcast_object(None if src_t is None else (tuple(src_t.shape), src_t.dtype, str(src_t.device)), src)
    shape, dtype, where = meta
    dev = _comm_device()
    buf = src_t.detach().to(dev).contiguous() if src_t is not None else torch.empty(shape, dtype=dtype, device=dev)
    dist.broadcast(buf, src=src)
    return buf if where.startswith("cuda") and dev.type == "cuda" else buf.cpu()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    if dist.get_backend() == "nccl":  # all_gather_object needs the current CUDA device under nccl
        torch.cuda.set_device(_comm_device())
    dist.all_gather_object(out, obj)
    return out
