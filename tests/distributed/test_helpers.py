"""runtime.distributed: shards without padding, and the collectives on a real gloo group of 2
processes (torch.multiprocessing), including the all-reduced QwT normal equations and how
mmengine's test sampler + result collection (the detection evaluation) count every image once."""
from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from qwt_core import NormalEquations
from runtime import distributed as qd

WORLD = 2
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 11, 16, 512])
@pytest.mark.parametrize("batch", [1, 4, 64])
def test_shards_cover_every_item_once(n, world, batch) -> None:
    ranges = [qd.shard_range(n, r, world) for r in range(world)]
    assert [i for r in ranges for i in r] == list(range(n))  # contiguous, in rank order, no padding
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    per_rank = [qd.shard_batches(n, batch, r, world) for r in range(world)]
    items = [i for batches in per_rank for b in batches for i in b]
    assert items == list(range(n))
    one = qd.shard_batches(n, batch, 0, 1)
    if len(one) >= world:  # enough batches: exactly the one-process batches, split over the ranks
        assert [b for batches in per_rank for b in batches] == one
    assert all(len(b) > 0 for batches in per_rank for b in batches)


def test_shard_batches_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        qd.shard_batches(4, 0, 0, 1)
    with pytest.raises(ValueError, match="outside a world"):
        qd.shard_range(4, 2, 2)


def test_single_process_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = qd.init_from_env("cpu")
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)
    t = torch.arange(3.0)
    assert qd.broadcast_tensor(t) is t and qd.gather_objects(5) == [5]
    assert qd.backend_for("cuda:1") == "nccl" and qd.backend_for("cpu") == "gloo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 6, generator=g)
    y = x @ torch.randn(6, 3, generator=g) + 0.5 + 0.1 * torch.randn(1000, 3, generator=g)
    return x, y


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: the checks, with failures written to a file (spawned processes' asserts)."""
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), QWT_DIST_TIMEOUT_S="60")
    torch.set_num_threads(1)
    try:
        info = qd.init_from_env("cpu")
        assert (info.rank, info.world_size, info.distributed) == (rank, WORLD, True)
        assert torch.distributed.get_backend() == "gloo"
        # broadcast: rank 0's tensor everywhere; others pass None
        t = qd.broadcast_tensor(torch.arange(6.0).reshape(2, 3) * 7 if rank == 0 else None)
        assert torch.equal(t, torch.arange(6.0).reshape(2, 3) * 7) and t.device.type == "cpu"
        assert qd.broadcast_object({"seed": rank}) == {"seed": 0}
        assert qd.gather_objects(("r", rank)) == [("r", 0), ("r", 1)]
        # QwT normal equations: shards all-reduced == the whole set in one process
        x, y = _data()
        whole = NormalEquations(6, 3)
        for b in range(0, 1000, 100):
            whole.update(x[b:b + 100], y[b:b + 100])
        part = NormalEquations(6, 3)
        for r in qd.shard_batches(1000, 100, rank, WORLD):
            part.update(x[r.start:r.stop], y[r.start:r.stop])
        assert part.count == 500
        part.all_reduce()  # default reduce: torch.distributed all_reduce (sum)
        assert part.count == 1000
        for a, b in ((whole.A, part.A), (whole.B, part.B), (whole.yy, part.yy)):
            assert float((a - b).norm() / a.norm()) < 1e-12
        s1, s2 = whole.solve(), part.solve()
        assert float((s1.weight - s2.weight).norm() / s1.weight.norm()) < 1e-5
        assert float((s1.bias - s2.bias).norm() / s1.bias.norm()) < 1e-5 and abs(s1.r2 - s2.r2) < 1e-9
        # detection evaluation: mmengine's DefaultSampler pads the last round (round_up=True,
        # the mmdet test config's default), and collect_results drops the padding again
        from mmengine.dataset import DefaultSampler
        from mmengine.dist import collect_results

        data = list(range(11))
        sampler = DefaultSampler(data, shuffle=False)
        mine = list(sampler)
        assert len(mine) == 6  # 12 = 11 + 1 padded duplicate, over 2 ranks
        results = collect_results([{"img_id": i} for i in mine], size=len(data), device="cpu")
        if rank == 0:
            assert [r["img_id"] for r in results] == data  # every image exactly once, in order
        qd.barrier()
        qd.cleanup(info)
        assert not torch.distributed.is_initialized()
    except BaseException:
        Path(out_dir, f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def test_collectives_on_a_gloo_group_of_two(tmp_path) -> None:
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(tmp_path))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    errors = "\n".join(f.read_text() for f in sorted(tmp_path.glob("rank*.err")))
    assert not errors, errors
    assert [p.exitcode for p in procs] == [0, 0]
