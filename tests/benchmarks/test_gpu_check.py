"""``make gpu-check``: one line without CUDA; its checks run on the CPU as a self-test."""
from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: make gpu-check runs for real")
def test_without_cuda_one_line_and_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "sees no CUDA device" in out[0]


def test_self_test_on_cpu_checks_placement_and_reload(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--device", "cpu", "--quick", "--images", "4"]) == 0
    out = capsys.readouterr().out
    assert "PASS  deit_small cpu after QwT: every parameter and buffer on cpu" in out
    assert "reloaded state gives the same logits bit for bit" in out
    assert out.strip().splitlines()[-1].startswith("gpu-check: 0 failed of ")


def test_misplaced_names_every_tensor_elsewhere() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert gpu_check.misplaced(m, torch.device("cpu")) == []
    m[1].to("meta")
    bad = gpu_check.misplaced(m, torch.device("cpu"))
    assert "param 1.weight on meta" in bad and any(b.startswith("buffer 1.running_mean") for b in bad)


def test_bad_device_exit_2() -> None:
    assert gpu_check.main(["--device", "tpu:x"]) == 2
