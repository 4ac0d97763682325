"""QwT's regression solved with the released code's own arithmetic (``QwTConfig.regression="rows"``).

The reference keeps every regression row of a block (gathered over processes) and solves in fp32,
operation for operation (``lienar_regression`` of its scripts), per group g (G = 1 token-wise)::

    Xa = [X_g, 1] (n, D + 1)
    W_all = inverse(Xaᵀ Xa [+ λ·I]) @ Xaᵀ @ Y_g       # evaluated left to right; λ = 1e-3 for ResNet
    W_g, b_g = W_all[:-1], W_all[-1]
    R² = 1 - Σ(Y - Ŷ)² / SS_tot,  Ŷ = X_g @ W_g + b_g

with SS_tot around ``Y.mean(dim=0)`` of Y as the reference shapes it: per output column for
tokens (fp32), per (channel, y, x) over the images for the grouped conv (float64 position sums,
:class:`~qwt_core.qwt.regression.PositionSums`). Token rows (n, D) and the grouped-conv rows
unfolded by :meth:`ReferenceRows.update_columns` ((b, y, x) rows, (channel, ky, kx) columns per
group) hold the same values in the same places as the reference's, so the same fp32 operations
give its W, b bit for bit where the BLAS sees the same inputs. Nothing short of that matches on
ill-conditioned blocks: an fp32 inverse is off by ~6e-8·cond(XᵀX) relative. The price is the
reference's memory (the rows of one block for all images); ``NormalEquations`` keeps it constant.

Where fp32 ``inverse`` fails on an exactly singular system the reference would stop; here the
block gets R² = -inf (zero compensation).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .regression import (
    GatherFn,
    PositionSums,
    ReduceFn,
    Solution,
    all_gather_rows,
    all_reduce_sum,
    check_columns,
    check_rows,
    r_squared,
)


class ReferenceRows:
    """Every row of a block kept (fp32 copies), gathered over processes, solved as released.

    Args: in_dim D, out_dim O, groups G; ridge λ added to the diagonal of Xaᵀ Xa (1e-3 for the
    grouped conv, 0 for tokens); device is unused (rows stay where the caller's tensors are)."""

    def __init__(self, in_dim: int, out_dim: int, groups: int = 1, ridge: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        self.in_dim, self.out_dim, self.groups, self.ridge = in_dim, out_dim, groups, ridge
        self._kept: list[tuple[Tensor, Tensor]] = []  # (x (n, G, D), y (n, G, O)) of each update
        self.rows: tuple[Tensor, Tensor] | None = None  # all processes' rows once combined
        self.positions = PositionSums()
        self.yy = torch.zeros(groups, out_dim, dtype=torch.float64)

    @property
    def count(self) -> int:
        return self.rows[0].shape[0] if self.rows is not None else sum(x.shape[0] for x, _ in self._kept)

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor) -> None:
        """x: (n, G, D) or (n, D) when G = 1; y: (n, G, O) or (n, O)."""
        x, y = check_rows(x, y, self.groups, self.in_dim, self.out_dim)
        # own copies: the caller's buffers may be reused for the next batch
        self._kept.append((x.float().clone(), y.float().clone()))

    @torch.no_grad()
    def update_columns(self, x: Tensor, y: Tensor) -> None:
        """x (B, G, D, *S), y (B, G, O, *S): rows (b, *s) x (G, D) as the reference unfolds them."""
        check_columns(x, y, self.groups, self.in_dim, self.out_dim)
        order = (0, *range(3, x.dim()), 1, 2)
        self.update(x.permute(order).reshape(-1, self.groups, self.in_dim),
                    y.permute(order).reshape(-1, self.groups, self.out_dim))
        self.positions.add(y.to(torch.float64).sum(0), y.shape[0])

    def release(self) -> None:
        """(Nothing to drop: the rows are the statistic.)"""

    def all_reduce(self, reduce: ReduceFn = all_reduce_sum, gather: GatherFn = all_gather_rows) -> None:
        """Concatenate the kept rows of all processes in rank order (``gather``); sum the conv
        position sums (``reduce``)."""
        X = gather(torch.cat([x for x, _ in self._kept]))
        Y = gather(torch.cat([y for _, y in self._kept]))
        self._kept = []
        self.rows = (X, Y)
        self.yy = Y.double().pow(2).sum(0)  # (G, O)
        self.positions.all_reduce(reduce)

    def solve(self) -> Solution:
        """The reference's fp32 fit of rows X (n, G, D), Y (n, G, O) -> W (G, D, O), b (G, O), R²
        (the same R² for ``r2`` and ``r2_reference``: the solution is the reference's)."""
        if self.rows is None:  # a single process that did not call all_reduce
            self.all_reduce(reduce=lambda t: None, gather=lambda t: t)
        assert self.rows is not None
        X, Y = self.rows
        n, G, D = X.shape
        weights, biases = [], []
        ss_res = 0.0
        for g in range(G):
            X_g, Y_g = X[:, g], Y[:, g]
            X_add_one = torch.cat([X_g, torch.ones(size=[n, 1], device=X.device)], dim=-1)
            XTX = X_add_one.t() @ X_add_one
            if self.ridge:
                XTX = XTX + self.ridge * torch.eye(XTX.shape[0], device=X.device)
            try:
                W_all = torch.inverse(XTX) @ X_add_one.t() @ Y_g
            except RuntimeError:  # exactly singular in fp32: the reference stops here
                zero = Solution(X.new_zeros(G, D, Y.shape[2]), X.new_zeros(G, Y.shape[2]), -math.inf, -math.inf)
                return zero
            W_g, b_g = W_all[:-1, :], W_all[-1, :]
            ss_res += float(torch.sum((Y_g - (X_g @ W_g + b_g)).pow(2)))
            weights.append(W_g)
            biases.append(b_g)
        ss_tot = self.positions.ss_tot(self.yy)
        if ss_tot is None:  # around the mean of every output column (fp32, as the reference)
            ss_tot = float(sum(torch.sum((Y[:, g] - Y[:, g].mean(dim=0)).pow(2)) for g in range(G)))
        r2 = r_squared(ss_res, ss_tot)
        return Solution(torch.stack(weights), torch.stack(biases), r2, r2)

    def residual(self, sol: Solution) -> float:
        """SS_res = Σ ||y - x W - b||² over the kept rows (float64)."""
        assert self.rows is not None, "call all_reduce() (or solve()) first"
        X, Y = self.rows
        return float(sum(((Y[:, g] - (X[:, g] @ sol.weight[g] + sol.bias[g])).double()).pow(2).sum()
                         for g in range(self.groups)))
