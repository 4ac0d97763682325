"""The suite's CPU kernels (``kernels.c``), compiled on first use and loaded with ctypes.

Each kernel does, in one pass, what several torch operations do, with the same IEEE operations in
the same order, so the same bits: the fused fake quantization (:mod:`qwt_core.quant.fused`); and
the sums of a regression's R² in one pass (:mod:`qwt_core.qwt.rows`; summed in another order);
torch's NCHW max pooling without its index tensor (:func:`qwt_core.native.maxpool.max_pool2d`).
(A tiled transposing copy of the grouped-conv regression rows was tried and dropped: slower than
torch's strided copy on this machine.) The library is built once per source, compiler and flags with the
system C compiler (``cc``, or ``CC``) into ``$XDG_CACHE_HOME/qwt/kernels/`` (``~/.cache`` by
default): no torch headers, no ninja, well under a second. ``target_clones`` selects AVX-512, AVX2
or baseline x86-64 code when it is loaded, so one build serves every machine sharing the cache.

Off with ``QWT_CPU_KERNELS=0``; without a C compiler (or where the build fails) the torch
operations run instead, after one warning, with the same results.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("kernels.c")
CFLAGS = ("-O3", "-shared", "-fPIC", "-fno-fast-math", "-ffp-contract=off", "-fno-math-errno")
_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float  # pointer, int64, float
SIGNATURES: dict[str, list] = {
    "qwt_fq_folded": [_P, _P, _I, _F, _F, _F],
    "qwt_fq_zp": [_P, _P, _I, _F, _F, _F],
    "qwt_fq_zp_rows": [_P, _P, _I, _I, _P, _P, _F],
    "qwt_r2_sums": [_P, _P, _P, _P, _I, _I, _I, _P],
    "qwt_max_pool2d": [_P, _P, _I, _I, _I, _I, _I, _I, _I, _I],
}

_lib: ctypes.CDLL | None = None
_tried = False
_pool: ThreadPoolExecutor | None = None


def enabled() -> bool:
    """``QWT_CPU_KERNELS`` is not ``0`` (read on every call: tests and users may flip it)."""
    return os.environ.get("QWT_CPU_KERNELS", "1") != "0"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwt" / "kernels"


def _compiler() -> str:
    return os.environ.get("CC", "cc")


def build() -> Path:
    """The shared library for this source, compiler and flags (built atomically if missing)."""
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"libqwt_kernels-{key}.so"
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
    """The loaded kernels, building them on first use; None when switched off or where that fails
    (warned once)."""
    global _lib, _tried
    if not enabled():
        return None
    if not _tried:
        _tried = True
        try:
            lib = ctypes.CDLL(str(build()))
            for name, args in SIGNATURES.items():
                getattr(lib, name).argtypes = args
                getattr(lib, name).restype = None
            _lib = lib
        except (OSError, subprocess.CalledProcessError) as e:
            detail = e.stderr.strip()[-400:] if isinstance(e, subprocess.CalledProcessError) else str(e)
            warnings.warn(f"qwt: the CPU kernels could not be built with {_compiler()!r} ({detail}); using "
                          "torch operations (same results, slower). Set CC to a C compiler, or "
                          "QWT_CPU_KERNELS=0 to silence this.", RuntimeWarning, stacklevel=3)
    return _lib


def available(*tensors: Tensor) -> bool:
    """The kernels can take these tensors: fp32 on the CPU, with the library built."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and library() is not None


def dense(x: Tensor) -> bool:
    """x's elements fill ``numel`` consecutive slots from ``data_ptr`` (contiguous, or a permutation
    of a contiguous layout): an elementwise map may then run over the memory in its order."""
    if x.is_contiguous():
        return True
    expect = 1
    for stride, size in sorted((s, n) for s, n in zip(x.stride(), x.shape) if n != 1):
        if stride != expect:
            return False
        expect *= size
    return True


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """A thread pool of at least ``threads`` workers (ctypes releases the GIL during a call)."""
    global _pool
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="qwt-native")
    return _pool

