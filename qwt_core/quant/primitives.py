"""Pure quantizer math (no module state).

Uniform asymmetric fake quantization with n bits::

    delta = (max - min) / (2^n - 1),  zp = round(-min / delta)
    q(x)  = (clamp(round(x / delta) + zp, 0, 2^n - 1) - zp) * delta

and the log-sqrt(2) quantizer of RepQ-ViT for post-softmax attention::

    k = round(-2 * log2(max(x / delta, floor)));  q(x) = 2^(-ceil(k/2)) * (sqrt(2) if k odd else 1) * delta
    with k clamped to [0, 2^n - 1] and codes k >= 2^n mapped to 0. ``floor`` is a setting: 1e-6
    (``LOG_RATIO_FLOOR``, the default) as in the classification reference (QwT-cls-RepQ-ViT's
    ``Log2STE``): the largest code is then round(-2 log2 1e-6) = 40, so from 6 bits on no
    probability is mapped to 0 (at 6 bits a zero probability becomes 2^-20 delta); ``None`` as in
    the detection reference (QwT-det-RepQ-ViT's ``LogSqrt2Quantizer``, plain ``log2(x / delta)``):
    a zero probability gives k = inf and is mapped to 0 at every bit width.

The range search tries the percentile pairs (p, 1-p) for p in ``PERCENTILES`` and keeps the one
with the lowest mean squared error of the quantized tensor (first one on ties), as RepQ-ViT does.
Everything is vectorized over channels; percentiles are exact linear-interpolation quantiles
computed with ``topk`` so that they work on tensors of any size, with the reference's arithmetic:
``torch.quantile``'s float32 ranks up to 2^24 elements and ``numpy.percentile``'s float64 ranks
beyond, where the reference falls back to numpy.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

PERCENTILES: tuple[float, ...] = (0.999, 0.9999, 0.99999)
LOG_RATIO_FLOOR = 1e-6  # x / delta is floored here before log2 (classification reference Log2STE; detection: none)
DELTA_EPS = 1e-8  # guards delta = 0 on constant channels (reference would produce NaN there)


def channels_first_2d(x: Tensor, channel_dim: int | None) -> Tensor:
    """Reshape ``x`` to (C, N) with C = x.shape[channel_dim]; (1, numel) when channel_dim is None."""
    if channel_dim is None:
        return x.reshape(1, -1)
    return x.movedim(channel_dim, 0).reshape(x.shape[channel_dim], -1)


TORCH_QUANTILE_LIMIT = 2**24  # torch.quantile rejects larger inputs; the reference uses numpy there


def _ranks(qs: Sequence[float], n: int) -> Tensor:
    """Fractional positions q * (n - 1) as the reference computes them: in float32 like
    ``torch.quantile`` up to its size limit, in float64 like ``numpy.percentile`` beyond it."""
    dtype = torch.float32 if n <= TORCH_QUANTILE_LIMIT else torch.float64
    return torch.tensor(list(qs), dtype=dtype) * (n - 1)


def _lerp_at(sorted_vals: Tensor, pos: Tensor) -> Tensor:
    """Linear interpolation in ascending ``sorted_vals`` (C, K) at positions ``pos`` (P,), as
    torch.quantile: lerp(v[floor(pos)], v[ceil(pos)], pos - floor(pos))."""
    pos = pos.to(sorted_vals.device)
    lo, hi = pos.floor().long(), pos.ceil().long()
    frac = (pos - pos.floor()).to(sorted_vals.dtype).expand(sorted_vals.shape[0], -1)
    return torch.lerp(sorted_vals[:, lo], sorted_vals[:, hi], frac)


def upper_quantiles(x2d: Tensor, qs: Sequence[float]) -> Tensor:
    """Exact linear-interpolation quantiles q >= 0.5 of each row of ``x2d`` (C, N) -> (C, len(qs)).

    Only the top ``N - floor(min(q) * (N - 1))`` values of each row are needed, so this uses
    ``topk`` instead of a full sort: O(N log k) and no size limit (unlike ``torch.quantile``).
    """
    n = x2d.shape[1]
    pos = _ranks(qs, n)
    lowest = int(pos.min().floor())
    top = torch.topk(x2d, n - lowest, dim=1, largest=True, sorted=True).values.flip(1)  # ascending
    return _lerp_at(top, pos - lowest)


def lower_quantiles(x2d: Tensor, qs: Sequence[float]) -> Tensor:
    """Exact linear-interpolation quantiles q <= 0.5 of each row of ``x2d`` (C, N) -> (C, len(qs))."""
    n = x2d.shape[1]
    pos = _ranks(qs, n)
    k = min(int(pos.max().ceil()) + 1, n)
    bottom = torch.topk(x2d, k, dim=1, largest=False, sorted=True).values  # ascending, (C, k)
    return _lerp_at(bottom, pos)


def uniform_qparams(x_min: Tensor, x_max: Tensor, n_bits: int) -> tuple[Tensor, Tensor]:
    """delta = (max - min) / (2^n - 1), zero_point = round(-min / delta)."""
    delta = ((x_max - x_min) / (2**n_bits - 1)).clamp(min=DELTA_EPS)
    zero_point = (-x_min / delta).round()
    return delta, zero_point


def fake_quant_uniform(x: Tensor, delta: Tensor, zero_point: Tensor, n_bits: int) -> Tensor:
    """(clamp(round(x / delta) + zp, 0, 2^n - 1) - zp) * delta; delta/zp broadcast against x."""
    x_int = torch.round(x / delta)
    x_q = torch.clamp(x_int + zero_point, 0, 2**n_bits - 1)
    return (x_q - zero_point) * delta


def fake_quant_log_sqrt2(x: Tensor, delta: Tensor, n_bits: int, floor: float | None = LOG_RATIO_FLOOR) -> Tensor:
    """Log-sqrt(2) fake quantization of non-negative ``x`` (post-softmax attention); ``floor``:
    the ratio x / delta is floored there before log2 (None: no floor, see the module doc)."""
    n_levels = 2**n_bits
    ratio = x / delta
    if floor is not None:
        ratio = ratio.clamp(min=floor)
    x_int = torch.round(-1 * ratio.log2() * 2)
    dead = x_int >= n_levels
    x_q = torch.clamp(x_int, 0, n_levels - 1)
    odd = (x_q % 2) * (math.sqrt(2) - 1) + 1
    out = 2 ** (-1 * torch.ceil(x_q / 2)) * odd * delta
    return out.masked_fill(dead, 0.0)


def search_uniform_range(
    x: Tensor,
    n_bits: int,
    channel_dim: int | None = None,
    percentiles: Sequence[float] = PERCENTILES,
) -> tuple[Tensor, Tensor]:
    """RepQ-ViT's percentile-by-MSE range search.

    Args:
        x: any tensor; with ``channel_dim`` each slice along that dim gets its own range.
        n_bits: 2..8.
    Returns:
        (delta, zero_point), each of shape (C,) for channel-wise, () for per-tensor.
    """
    x2d = channels_first_2d(x.detach().float(), channel_dim)  # (C, N)
    maxs = upper_quantiles(x2d, list(percentiles))  # (C, P)
    mins = lower_quantiles(x2d, [1.0 - p for p in percentiles])  # (C, P)
    best_score = torch.full((x2d.shape[0],), float("inf"), device=x2d.device)
    best_delta = torch.zeros_like(best_score)
    best_zp = torch.zeros_like(best_score)
    for i in range(len(percentiles)):  # 3 candidates, vectorized over channels
        delta, zp = uniform_qparams(mins[:, i], maxs[:, i], n_bits)
        xq = fake_quant_uniform(x2d, delta[:, None], zp[:, None], n_bits)
        score = (x2d - xq).pow(2).mean(dim=1)
        better = score < best_score
        best_score = torch.where(better, score, best_score)
        best_delta = torch.where(better, delta, best_delta)
        best_zp = torch.where(better, zp, best_zp)
    if channel_dim is None:
        return best_delta[0], best_zp[0]
    return best_delta, best_zp


def search_log_sqrt2_delta(
    x: Tensor, n_bits: int, percentiles: Sequence[float] = PERCENTILES, floor: float | None = LOG_RATIO_FLOOR
) -> Tensor:
    """delta of the log-sqrt(2) quantizer: the upper percentile with the lowest MSE (per tensor),
    each candidate scored with the quantizer's ``floor``."""
    x1 = x.detach().float().reshape(1, -1)
    cands = upper_quantiles(x1, list(percentiles))[0]  # (P,)
    best, best_score = cands[0], float("inf")
    for i in range(len(percentiles)):
        score = float((x1 - fake_quant_log_sqrt2(x1, cands[i], n_bits, floor)).pow(2).mean())
        if score < best_score:
            best, best_score = cands[i], score
    return best.clone()


def per_channel_loop_search(
    x: Tensor, n_bits: int, channel_dim: int, percentiles: Sequence[float] = PERCENTILES
) -> tuple[Tensor, Tensor]:
    """The reference's per-channel loop (one per-tensor search per channel, torch.quantile): the
    plain re-derivation of :func:`search_uniform_range` (the same ranges, channel by channel).

    The quantizers use the vectorized :func:`search_uniform_range`; this loop is its oracle in
    ``tests/core/test_primitives.py`` and the baseline of ``benchmarks/bench_quantizer_init.py``
    and the perf figures.
    """
    x2d = channels_first_2d(x.detach().float(), channel_dim)
    deltas: list[Tensor] = []
    zps: list[Tensor] = []
    for c in range(x2d.shape[0]):
        row = x2d[c]
        best: tuple[Tensor | None, Tensor | None, float] = (None, None, float("inf"))
        for p in percentiles:
            hi, lo = torch.quantile(row, p), torch.quantile(row, 1.0 - p)
            delta, zp = uniform_qparams(lo, hi, n_bits)
            score = float((row - fake_quant_uniform(row, delta, zp, n_bits)).pow(2).mean())
            if score < best[2]:
                best = (delta, zp, score)
        # (set by the first percentile whenever the row is finite; a NaN row fails in torch.stack as before)
        deltas.append(cast(Tensor, best[0]))
        zps.append(cast(Tensor, best[1]))
    return torch.stack(deltas), torch.stack(zps)
