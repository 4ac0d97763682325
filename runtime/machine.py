"""What machine a number was computed on: CPU model, the vector ISA the kernels dispatch to, the
ISA caps set in the environment, and the GPU, if any.

The same code gives different last bits on different CPUs: PyTorch's CPU kernels (ATen's own
vectorised loops, oneDNN's fp16 / fp32 GEMMs and convolutions, MKL's LAPACK) and OpenCV pick their
summation order by the instruction set they find. Quantization then turns a last-bit difference
into a different rounding decision. A record therefore states :func:`machine_info` beside the
library versions, and the tests that compare with a machine kernel are run again with the ISA
capped (:data:`ISA_CAP_ENV`, ``make test``).
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

# The environment variables our stack honours to cap the vector ISA (each checked in
# tests/core/test_machine.py): ATen's dispatch, oneDNN (fp16 / fp32 GEMM and convolution), MKL
# (BLAS / LAPACK of the x86 PyTorch wheels), OpenCV's dispatch (mmcv's imnormalize) and numpy's.
ISA_CAP_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
               "MKL_CBWR", "OPENCV_CPU_DISABLE", "NPY_DISABLE_CPU_FEATURES")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def cpu_flags() -> tuple[str, ...]:
    """The vector-ISA flags of the CPU that matter for the kernels' arithmetic (x86: AVX2 / FMA /
    AVX-512 / AVX-512-FP16 / AMX); empty where ``/proc/cpuinfo`` says nothing."""
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile",
              "amx_bf16", "amx_int8", "amx_fp16")
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return tuple(w for w in wanted if w in have)
    except OSError:
        pass
    return ()


def isa_caps() -> dict[str, str]:
    """The ISA caps set in this process's environment (``{}``: the kernels use all the CPU has)."""
    return {k: os.environ[k] for k in ISA_CAP_ENV if os.environ.get(k)}


def machine_info() -> dict[str, Any]:
    """``{"cpu", "cpu_flags", "torch_cpu_capability", "isa_caps", "gpu"}`` for a record (torch is
    imported here, so that the record layer itself needs only the standard library)."""
    import torch

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # older torch
        capability = "unknown"
    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.cuda.current_device())
    return {"cpu": cpu_model(), "cpu_flags": list(cpu_flags()), "torch_cpu_capability": capability,
            "isa_caps": isa_caps(), "gpu": gpu}


def describe(info: dict[str, Any] | None) -> str:
    """One line for a table's provenance: ``Intel Xeon ... (AVX512, caps ONEDNN_MAX_CPU_ISA=AVX2)``."""
    if not info:
        return "machine not recorded"
    text = f"{info.get('cpu', 'unknown CPU')} ({info.get('torch_cpu_capability', '?')}"
    caps = info.get("isa_caps") or {}
    if caps:
        text += ", caps " + " ".join(f"{k}={v}" for k, v in sorted(caps.items()))
    text += ")"
    if info.get("gpu"):
        text += f", GPU {info['gpu']}"
    return text
