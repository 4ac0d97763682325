"""Device placement, checked on the CPU: everything built after the model follows the model's
parameters, and one place binds the device (``runtime.distributed.bind_device``).

The ``meta`` device stands in for a GPU: a model moved there must have every parameter and buffer
there after a calibrated state is loaded into it (the loader builds the compensation modules).
CUDA calls are replaced by recorders, so the binding logic runs without a GPU.
"""
from __future__ import annotations

import pytest
import torch

import runtime.distributed as qd
from qwt_core import CompensatedBlock, QwTConfig, calibrate_repq, fit_qwt, load_state, save_state
from qwt_core.state_io import module_device

from .toy import TinyTransformer, TransformerAdapter, quantize_transformer


def _misplaced(model: torch.nn.Module, device: str) -> list[str]:
    return [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != device]


def _saved_state(tmp_path):
    torch.manual_seed(0)
    model = TinyTransformer(qkv_bias=False).eval()
    calibrate_repq(model, torch.randn(8, 20, 12), quantize_transformer(model, 4))
    fit_qwt(TransformerAdapter(model), [torch.randn(8, 20, 12)], QwTConfig())
    path = tmp_path / "state.pt"
    save_state(model, path)
    return path


def _fresh(device: str) -> TinyTransformer:
    fresh = TinyTransformer(qkv_bias=False).eval()
    quantize_transformer(fresh, 4)
    return fresh.to(device)


def test_loaded_compensation_lives_where_the_model_lives(tmp_path) -> None:
    """A model on another device (meta here, cuda for a user): the compensation modules that
    load_state builds are created on the wrapped block's device, not on the CPU."""
    path = _saved_state(tmp_path)
    fresh = _fresh("meta")
    load_state(fresh, path)
    comps = [m for m in fresh.modules() if isinstance(m, CompensatedBlock)]
    assert comps, "the state carries QwT compensation"
    assert _misplaced(fresh, "meta") == []
    cpu = _fresh("cpu")
    load_state(cpu, path, map_location="cpu")
    assert _misplaced(cpu, "cpu") == []


def test_module_device() -> None:
    assert module_device(torch.nn.Linear(2, 2).to("meta")).type == "meta"
    assert module_device(torch.nn.Identity()).type == "cpu"


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """torch.cuda without a GPU: set_device is recorded, the current device is cuda:0 until set."""
    calls: list[torch.device] = []
    current = [0]

    def set_device(d: torch.device | int) -> None:
        d = torch.device("cuda", d) if isinstance(d, int) else torch.device(d)
        calls.append(d)
        current[0] = d.index

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    return calls


def test_one_process_cuda_index_is_made_current(fake_cuda: list[torch.device]) -> None:
    """--device cuda:1 in one process: cuda:1 becomes the current device, so that libraries which
    put models on "cuda" (mmengine's Runner) use the same GPU."""
    assert qd.bind_device("cuda:1") == torch.device("cuda", 1)
    assert fake_cuda == [torch.device("cuda", 1)]
    assert qd.bind_device("cuda") == torch.device("cuda", 1)  # "cuda": the current one, with its index
    assert qd.bind_device("cpu") == torch.device("cpu") and len(fake_cuda) == 2


def test_torchrun_rank_takes_its_local_gpu(fake_cuda: list[torch.device], monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun with --device cuda:0: rank 1 computes on cuda:1 (not every rank on GPU 0)."""
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    inits: list[str] = []
    monkeypatch.setattr(qd.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(qd.dist, "init_process_group", lambda backend, timeout: inits.append(backend))
    monkeypatch.setattr(qd.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(qd.dist, "get_world_size", lambda: 2)
    for requested in ("cuda:0", "cuda", "cuda:1"):
        info = qd.init_from_env(requested)
        assert info.device == torch.device("cuda", 1) and info.local_rank == 1
        assert fake_cuda[-1] == torch.device("cuda", 1)
    assert inits == ["nccl"] * 3


def test_one_process_init_binds_the_device(fake_cuda: list[torch.device], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = qd.init_from_env("cuda:1")
    assert info.device == torch.device("cuda", 1) and not info.distributed
    assert fake_cuda == [torch.device("cuda", 1)]
