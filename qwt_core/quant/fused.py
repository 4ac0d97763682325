"""Fused per-tensor uniform fake quantization on the CPU (the C kernels of :mod:`qwt_core.native`).

The torch path of :func:`qwt_core.quant.layers.quantize_activation` makes 4 (integer zero point)
or 6 (fractional) elementwise passes over an fp32 activation; the kernel makes one, with the same
IEEE operations in the same order, so the same bits (NaN payloads aside): 27 ms against 90 ms on a
(32, 3136, 384) tensor, as fast as one torch multiply. Several torch threads split a large tensor.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import native

PARALLEL_MIN = 1 << 20  # elements from which several torch threads split the pass


def usable(x: Tensor) -> bool:
    """The kernel can take x: an fp32 CPU tensor laid out densely (:func:`qwt_core.native.dense`)."""
    return native.available(x) and native.dense(x)


def _run(name: str, x: Tensor, a: float, b: float, c: float) -> Tensor:
    """out = kernel(x) elementwise, in x's layout (``empty_like`` keeps a dense permuted layout)."""
    lib = native.library()
    assert lib is not None
    fn = getattr(lib, name)
    out = torch.empty_like(x)
    n, src, dst = x.numel(), x.data_ptr(), out.data_ptr()
    threads = torch.get_num_threads()
    if threads == 1 or n < PARALLEL_MIN:
        fn(src, dst, n, a, b, c)
        return out
    step = ((n + threads - 1) // threads + 15) // 16 * 16  # elements per thread (whole 64-byte lines)
    pool = native.thread_pool(threads)
    jobs = [pool.submit(fn, src + 4 * i, dst + 4 * i, min(step, n - i), a, b, c) for i in range(0, n, step)]
    for j in jobs:
        j.result()
    return out


def fake_quant_folded(x: Tensor, delta: float, lo: float, hi: float) -> Tensor:
    """``clamp(round(x / delta), lo, hi) * delta + 0`` (x: fp32 CPU, dense)."""
    return _run("qwt_fq_folded", x, delta, lo, hi)


def fake_quant_zero_point(x: Tensor, delta: float, zero_point: float, top: float) -> Tensor:
    """``(clamp(round(x / delta) + zero_point, 0, top) - zero_point) * delta`` (x: fp32 CPU, dense)."""
    return _run("qwt_fq_zp", x, delta, zero_point, top)


def fake_quant_channels(x: Tensor, delta: Tensor, zero_point: Tensor, top: float) -> Tensor:
    """The same formula with one (delta, zero point) per slice ``x[c]`` along dim 0 (per output
    channel weights; x contiguous fp32 CPU, delta and zero point (C,) fp32)."""
    lib = native.library()
    assert lib is not None
    out = torch.empty_like(x)
    d, zp = delta.reshape(-1).contiguous(), zero_point.reshape(-1).contiguous()
    lib.qwt_fq_zp_rows(x.data_ptr(), out.data_ptr(), x.shape[0], x[0].numel(), d.data_ptr(), zp.data_ptr(), top)
    return out


def channels_usable(x: Tensor, delta: Tensor, zero_point: Tensor) -> bool:
    """:func:`fake_quant_channels` can take x with these per-dim-0 ranges."""
    return (x.dim() >= 1 and x.is_contiguous() and x.shape[0] > 0 and delta.numel() == zero_point.numel() == x.shape[0]
            and delta.dtype == zero_point.dtype == torch.float32 and native.available(x, delta, zero_point))
