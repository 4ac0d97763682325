"""Fused per-tensor uniform fake quantization on the CPU (``fake_quant.c``, compiled on first use).

The torch path of :func:`qwt_core.quant.layers.quantize_activation` makes 4 (integer zero point)
or 6 (fractional) elementwise passes over an fp32 activation; the C kernel makes one, with the same
IEEE operations in the same order, so the same bits (3-4x faster on a (32, 3136, 384) tensor, as
fast as one torch multiply). It is built once per source, compiler and flags with the system C
compiler into ``$XDG_CACHE_HOME/qwt/kernels/`` (``~/.cache`` by default) and loaded with ctypes
(no torch headers, no ninja: well under a second). ``target_clones`` selects AVX-512, AVX2 or
baseline x86-64 code when it is loaded, so one build serves every machine sharing the cache.

Off with ``QWT_FUSED_QUANT=0``; without a C compiler, or on a non-x86 / non-Linux host where the
build fails, the torch path runs (one warning) and the results are the same.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("fake_quant.c")
CFLAGS = ("-O3", "-shared", "-fPIC", "-fno-fast-math", "-ffp-contract=off", "-fno-math-errno")
PARALLEL_MIN = 1 << 20  # elements from which several torch threads split the pass
_ARGS = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_float, ctypes.c_float]

_lib: ctypes.CDLL | None = None
_tried = False
_pool: ThreadPoolExecutor | None = None


def enabled() -> bool:
    """``QWT_FUSED_QUANT`` is not ``0`` (read on every call: tests and users may flip it)."""
    return os.environ.get("QWT_FUSED_QUANT", "1") != "0"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwt" / "kernels"


def _compiler() -> str:
    return os.environ.get("CC", "cc")


def _build() -> Path:
    """The shared library for this source, compiler and flags (built atomically if missing)."""
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"libqwt_fake_quant-{key}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, check=True)
        os.replace(tmp, lib)  # (concurrent builders: the last rename wins, every one a whole file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None where that fails (warned once)."""
    global _lib, _tried
    if not _tried:
        _tried = True
        try:
            lib = ctypes.CDLL(str(_build()))
            for name in ("qwt_fq_folded", "qwt_fq_zp"):
                getattr(lib, name).argtypes = _ARGS
                getattr(lib, name).restype = None
            _lib = lib
        except (OSError, subprocess.CalledProcessError) as e:
            detail = e.stderr.strip()[-400:] if isinstance(e, subprocess.CalledProcessError) else str(e)
            warnings.warn(f"qwt: the fused CPU fake-quant kernel could not be built with {_compiler()!r} "
                          f"({detail}); using the torch path (same results, slower). Set CC to a C "
                          "compiler, or QWT_FUSED_QUANT=0 to silence this.", RuntimeWarning, stacklevel=3)
    return _lib


def dense(x: Tensor) -> bool:
    """x's elements fill ``numel`` consecutive slots from ``data_ptr`` (contiguous, or a permutation
    of a contiguous layout): an elementwise map may then run over the memory in its order."""
    if x.is_contiguous():
        return True
    dims = sorted((s, n) for s, n in zip(x.stride(), x.shape) if n != 1)
    expect = 1
    for stride, size in dims:
        if stride != expect:
            return False
        expect *= size
    return True


def usable(x: Tensor) -> bool:
    """The kernel can take x: an fp32 CPU tensor laid out densely, with the library built."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and enabled() and dense(x)
            and library() is not None)


def _run(name: str, x: Tensor, a: float, b: float, c: float) -> Tensor:
    """out = kernel(x) elementwise, in x's layout (``empty_like`` keeps a dense permuted layout)."""
    lib = library()
    assert lib is not None
    fn = getattr(lib, name)
    out = torch.empty_like(x)
    n, src, dst = x.numel(), x.data_ptr(), out.data_ptr()
    threads = torch.get_num_threads()
    if threads == 1 or n < PARALLEL_MIN:
        fn(src, dst, n, a, b, c)
        return out
    global _pool
    if _pool is None or _pool._max_workers < threads:  # (ctypes releases the GIL during the call)
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="qwt-fq")
    step = ((n + threads - 1) // threads + 15) // 16 * 16  # elements per thread (whole 64-byte lines)
    jobs = [_pool.submit(fn, src + 4 * i, dst + 4 * i, min(step, n - i), a, b, c) for i in range(0, n, step)]
    for j in jobs:
        j.result()
    return out


def fake_quant_folded(x: Tensor, delta: float, lo: float, hi: float) -> Tensor:
    """``clamp(round(x / delta), lo, hi) * delta + 0`` (x: fp32 CPU, :func:`dense`)."""
    return _run("qwt_fq_folded", x, delta, lo, hi)


def fake_quant_zero_point(x: Tensor, delta: float, zero_point: float, top: float) -> Tensor:
    """``(clamp(round(x / delta) + zero_point, 0, top) - zero_point) * delta`` (x: fp32 CPU, dense)."""
    return _run("qwt_fq_zp", x, delta, zero_point, top)


if sys.platform == "win32":  # pragma: no cover - (no target_clones / cc there: torch path)
    _tried = True
