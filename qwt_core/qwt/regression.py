"""The regression protocol of a QwT block, the R² gate, and what both implementations share.

A block's compensation is the least-squares fit, per group g (G = 1 for tokens; G = conv groups
for ResNet), of Y_g ≈ X_g W_g + b_g over all calibration rows, X_g (n, D), Y_g (n, O), with

    R² = 1 - SS_res / SS_tot,  SS_res = Σ_g ||Y_g - X_g W_g - b_g||²,

SS_tot around the mean of every output column for tokens, and around the mean over the images of
every output position (channel, y, x) for the grouped conv (the reference's ResNet R²).

Two implementations of :class:`Regression`, chosen by ``QwTConfig.regression``:
``"rows"`` -> :class:`~qwt_core.qwt.rows.ReferenceRows` (every row kept, the released fp32 solve),
``"sums"`` -> :class:`~qwt_core.qwt.accumulator.NormalEquations` (float64 sums, constant memory).
:func:`gate` then keeps or zeroes the block (``QwTConfig.gate``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:
    from .config import QwTConfig

ReduceFn = Callable[[Tensor], None]  # sums a tensor in place over processes
GatherFn = Callable[[Tensor], Tensor]  # concatenates a tensor's rows over processes


@dataclass
class Solution:
    """Fitted compensation of G groups: out_g = x_g @ weight[g] + bias[g]."""

    weight: Tensor  # (G, D, O), float32
    bias: Tensor  # (G, O), float32
    r2: float  # R² of (weight, bias)
    r2_reference: float  # R² of the reference's kind of solution, inverse(fp32(XᵀX [+ λI])) @ XᵀY


class Regression(Protocol):
    """What ``fit_block`` needs: add rows, combine over processes, solve once."""

    out_dim: int
    groups: int
    yy: Tensor  # Σ y², float64, per (group, output) or in total (complete after solve; its total is read)

    def reserve(self, rows: int, like: Tensor) -> None:
        """A hint before the first update: about ``rows`` rows will come, on ``like``'s device."""

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add rows x (n, G, D) or (n, D), y (n, G, O) or (n, O)."""

    def update_columns(self, x: Tensor, y: Tensor) -> None:
        """Add the rows of a grouped conv in column layout: x (B, G, D, *S), y (B, G, O, *S), one row
        per image and position; also keeps Σ_b y per position for the conv SS_tot."""

    def release(self) -> None:
        """Drop work buffers once every row is in (the statistics stay)."""

    def all_reduce(self, reduce: ReduceFn, gather: GatherFn) -> None:
        """Combine the statistics of all processes (every rank, before ``solve``)."""

    def solve(self) -> Solution:
        """W, b and their R²."""

    def residual(self, sol: Solution) -> float:
        """SS_res of a solution (float64)."""

    @property
    def count(self) -> int:
        """Rows seen."""


def gate(sol: Solution, index: int, cfg: QwTConfig) -> tuple[bool, float]:
    """Keep block ``index``'s compensation? (applied, the deciding R²).

    ``reference``: the R² of the reference's fp32 solution > 0 (where XᵀX is numerically singular,
    e.g. the LayerNorm output feeding Swin's first block, that solution is rounding noise, its R² is
    negative and the block stays uncompensated, as in the released code); ``float64``: the R² of the
    float64 solution > 0. Blocks before ``cfg.start_block`` are never kept."""
    r2 = sol.r2_reference if cfg.gate == "reference" else sol.r2
    return r2 > 0 and index >= cfg.start_block, r2


def r_squared(ss_res: float, ss_tot: float) -> float:
    """1 - SS_res / SS_tot; 0 when SS_tot <= 0, -inf when not finite (NaN weights)."""
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return r2 if math.isfinite(r2) else -math.inf


class PositionSums:
    """Σ over images of the conv targets per (group, output, *S) position, float64: the reference's
    ResNet R² takes SS_tot = Σ y² - Σ_{c,h,w} (Σ_b y)² / B around the mean of every position."""

    def __init__(self) -> None:
        self.sums: Tensor | None = None  # (G, O, *S) float64
        self.images = torch.zeros((), dtype=torch.float64)

    def add(self, sums: Tensor, images: int) -> None:
        self.sums = sums if self.sums is None else self.sums + sums.view_as(self.sums)
        self.images = self.images.to(sums.device) + images

    def all_reduce(self, reduce: ReduceFn) -> None:
        if self.sums is not None:
            reduce(self.sums)
            reduce(self.images)

    def ss_tot(self, yy: Tensor) -> float | None:
        """SS_tot from Σ y² (G, O); None when no conv rows were added (tokens)."""
        if self.sums is None:
            return None
        return float(yy.sum() - self.sums.pow(2).sum() / self.images)


def all_reduce_sum(t: Tensor) -> None:
    """Sum ``t`` in place over all processes when torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate ``t`` (n_rank, ...) over processes along dim 0 in rank order (the reference's
    ``gather_tensor_from_multi_processes``); ``t`` itself in a single process. Shards may differ
    in length."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = max(int(s) for s in sizes)
    padded = t.new_zeros((longest, *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)], 0)


def check_rows(x: Tensor, y: Tensor, groups: int, in_dim: int, out_dim: int) -> tuple[Tensor, Tensor]:
    """x, y as (n, G, D), (n, G, O) (a missing group axis added when G = 1); ValueError otherwise."""
    if x.dim() == 2:
        x, y = x[:, None], y[:, None]
    if x.shape[1:] != (groups, in_dim) or y.shape[1:] != (groups, out_dim):
        raise ValueError(f"expected x (n, {groups}, {in_dim}) and y (n, {groups}, {out_dim}), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def check_columns(x: Tensor, y: Tensor, groups: int, in_dim: int, out_dim: int) -> None:
    """ValueError unless x (B, G, D, *S) and y (B, G, O, *S)."""
    B, S = x.shape[0], tuple(x.shape[3:])
    if x.shape[1:3] != (groups, in_dim) or y.shape[:3] != (B, groups, out_dim) or tuple(y.shape[3:]) != S:
        raise ValueError(f"expected x (B, {groups}, {in_dim}, *S) and y (B, {groups}, {out_dim}, *S), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
