"""The machine description in records, and the ISA caps ``make test`` relies on.

``make test`` runs the ``machine_kernels`` tests again under ISA caps (Makefile ``ISA_AVX2``,
``ISA_DEFAULT``), standing in for older x86-64 CPUs. That only means something if the caps reach
the kernels: each variable is checked here in a subprocess, by the kernel it governs giving
other bits (ATen's softmax, MKL's fp32 GEMM) or reporting another ISA.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runtime.machine import ISA_CAP_ENV, describe, machine_info

_PROBE = """
import hashlib, json, torch
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
h = lambda t: hashlib.md5(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
a, b = torch.randn(257, 129, generator=g), torch.randn(129, 65, generator=g)
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "softmax": h(torch.randn(64, 197, generator=g).softmax(-1)), "gemm": h(a @ b)}))
"""


def _probe(env: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ISA_CAP_ENV}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_machine_info_names_cpu_isa_and_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    info = machine_info()
    assert info["cpu"] and info["torch_cpu_capability"] and isinstance(info["cpu_flags"], list)
    assert info["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in describe(info) and info["cpu"] in describe(info)
    assert describe(None) == "machine not recorded"


def test_isa_caps_reach_the_kernels() -> None:
    """ATEN_CPU_CAPABILITY=default switches ATen's vectorised kernels off (another capability, and
    softmax sums in another order); MKL_ENABLE_INSTRUCTIONS=SSE4_2 changes MKL's GEMM blocking."""
    free = _probe({})
    capped = _probe({"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"})
    assert capped["capability"] == "DEFAULT"
    if free["capability"] == "DEFAULT":
        pytest.skip("this CPU has no vector ISA above the baseline: the caps change nothing here")
    assert capped["softmax"] != free["softmax"] or capped["gemm"] != free["gemm"]
