"""QwT's regression solved with the released code's own arithmetic (``QwTConfig.regression="rows"``).

The reference keeps every regression row of a block (gathered over processes) and solves in fp32,
operation for operation (``lienar_regression`` of its scripts), per group g (G = 1 token-wise)::

    Xa = [X_g, 1] (n, D + 1)
    W_all = inverse(Xaᵀ Xa [+ λ·I]) @ Xaᵀ @ Y_g       # evaluated left to right; λ = 1e-3 for ResNet
    W_g, b_g = W_all[:-1], W_all[-1]
    R² = 1 - Σ(Y - Ŷ)² / SS_tot,  Ŷ = X_g @ W_g + b_g

with SS_tot = Σ (Y - Y.mean(dim=0))² in fp32 as the reference shapes Y: per output column for
tokens, per (channel, y, x) over the images for the grouped conv. Token rows (n, D) and the grouped-conv rows
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
    grouped conv, 0 for tokens); device is unused (rows stay where the caller's tensors are).

    The rows are kept as the solve reads them: Xa = [X, 1] (n, G, D + 1) with the ones column
    written once per batch (one copy of the caller's rows, never a second ``cat`` per group)."""

    def __init__(self, in_dim: int, out_dim: int, groups: int = 1, ridge: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        self.in_dim, self.out_dim, self.groups, self.ridge = in_dim, out_dim, groups, ridge
        self._kept: list[tuple[Tensor, Tensor]] = []  # (xa (n, G, D + 1), y (n, G, O)) of each update
        self.rows: tuple[Tensor, Tensor] | None = None  # (Xa, Y) of all processes once combined
        self.rows_per_image: int | None = None  # conv rows (update_columns): positions per image
        self.yy = torch.zeros((), dtype=torch.float64)  # Σ y² over all rows (set by all_reduce)
        self._solved: tuple[Solution, float] | None = None  # the last solution and its SS_res

    @property
    def count(self) -> int:
        return self.rows[0].shape[0] if self.rows is not None else sum(x.shape[0] for x, _ in self._kept)

    def _keep(self, x: Tensor, y: Tensor, shape: tuple[int, ...]) -> None:
        """Copy x (viewed as ``shape`` + (G, D)) into a new Xa with its ones column, y into its own
        fp32 tensor (the caller's buffers may be reused for the next batch)."""
        n = x.numel() // (self.groups * self.in_dim)
        xa = torch.empty(n, self.groups, self.in_dim + 1, dtype=torch.float32, device=x.device)
        xa[..., :-1].view(*shape, self.groups, self.in_dim).copy_(x)
        xa[..., -1] = 1
        yk = torch.empty(n, self.groups, self.out_dim, dtype=torch.float32, device=y.device)
        yk.view(*shape, self.groups, self.out_dim).copy_(y)
        self._kept.append((xa, yk))

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor) -> None:
        """x: (n, G, D) or (n, D) when G = 1; y: (n, G, O) or (n, O)."""
        if self.rows_per_image is not None:
            raise ValueError("this regression holds conv columns (update_columns): rows cannot be added")
        x, y = check_rows(x, y, self.groups, self.in_dim, self.out_dim)
        self._keep(x, y, (x.shape[0],))

    @torch.no_grad()
    def update_columns(self, x: Tensor, y: Tensor) -> None:
        """x (B, G, D, *S), y (B, G, O, *S): rows (b, *s) x (G, D) as the reference unfolds them."""
        check_columns(x, y, self.groups, self.in_dim, self.out_dim)
        per_image = math.prod(x.shape[3:])
        if self.rows_per_image not in (None, per_image) or (self.rows_per_image is None and self._kept):
            raise ValueError(f"conv columns of {per_image} positions per image after "
                             f"{self.rows_per_image or 'plain rows'}: one regression holds one layout")
        self.rows_per_image = per_image
        order = (0, *range(3, x.dim()), 1, 2)  # (B, *S, G, D)
        self._keep(x.permute(order), y.permute(order), (x.shape[0], *x.shape[3:]))

    def release(self) -> None:
        """(Nothing to drop: the rows are the statistic.)"""

    def all_reduce(self, reduce: ReduceFn = all_reduce_sum, gather: GatherFn = all_gather_rows) -> None:
        """Concatenate the kept rows of all processes in rank order (``gather``; ``reduce`` is not
        needed: every statistic is computed from the gathered rows)."""
        xs, ys = [x for x, _ in self._kept], [y for _, y in self._kept]
        self._kept = []
        X = gather(_concat(xs))
        Y = gather(_concat(ys))
        self.rows = (X, Y)
        self.yy = torch.tensor(float(Y.pow(2).sum()), dtype=torch.float64)

    def _ss_tot(self, Y: Tensor) -> float:
        """The reference's SS_tot in fp32: around ``Y.mean(dim=0)`` of every output column (tokens)
        or of every (position, channel) over the images (conv rows, (b, *s) ordered)."""
        if self.rows_per_image is not None:  # images x (positions, channels): the reference's (B, C, H, W)
            Yi = Y.view(-1, self.rows_per_image * self.groups * self.out_dim)
            return float(torch.sum((Yi - Yi.mean(dim=0)).pow_(2)))
        return float(sum(torch.sum((Y[:, g] - Y[:, g].mean(dim=0)).pow_(2)) for g in range(self.groups)))

    def solve(self) -> Solution:
        """The reference's fp32 fit of rows X (n, G, D), Y (n, G, O) -> W (G, D, O), b (G, O), R²
        (the same R² for ``r2`` and ``r2_reference``: the solution is the reference's)."""
        if self.rows is None:  # a single process that did not call all_reduce
            self.all_reduce(reduce=lambda t: None, gather=lambda t: t)
        assert self.rows is not None
        Xa, Y = self.rows
        n, G, _ = Xa.shape
        weights, biases = [], []
        ss_res = 0.0
        for g in range(G):
            # [X_g, 1] (n, D + 1) laid out as the reference's torch.cat makes it (contiguous)
            X_add_one = Xa[:, g] if G == 1 else Xa[:, g].contiguous()
            Y_g = Y[:, g]
            XTX = X_add_one.t() @ X_add_one
            if self.ridge:
                XTX = XTX + self.ridge * torch.eye(XTX.shape[0], device=Xa.device)
            try:
                W_all = torch.inverse(XTX) @ X_add_one.t() @ Y_g
            except RuntimeError:  # exactly singular in fp32: the reference stops here
                zero = Solution(Xa.new_zeros(G, self.in_dim, self.out_dim), Xa.new_zeros(G, self.out_dim),
                                -math.inf, -math.inf)
                return zero
            W_g, b_g = W_all[:-1, :], W_all[-1, :]
            # (X_g W_g + b_g) - Y_g: the negated residual of the reference's, the same squares
            err = (X_add_one[:, :-1] @ W_g).add_(b_g).sub_(Y_g)
            ss_res += float(torch.sum(err.pow_(2)))
            del X_add_one, err
            weights.append(W_g)
            biases.append(b_g)
        r2 = r_squared(ss_res, self._ss_tot(Y))
        sol = Solution(torch.stack(weights), torch.stack(biases), r2, r2)
        self._solved = (sol, ss_res)
        return sol

    def residual(self, sol: Solution) -> float:
        """SS_res = Σ ||y - x W - b||² over the kept rows: the solve's (fp32 sums, as its R²) for the
        solution it returned, else computed in float64."""
        if self._solved is not None and sol is self._solved[0]:
            return self._solved[1]
        assert self.rows is not None, "call all_reduce() (or solve()) first"
        Xa, Y = self.rows
        return float(sum(((Y[:, g] - (Xa[:, g, :-1] @ sol.weight[g] + sol.bias[g])).double()).pow(2).sum()
                         for g in range(self.groups)))


def _concat(pieces: list[Tensor]) -> Tensor:
    """``torch.cat(pieces)``, without a copy for one piece and freeing each piece once copied
    (peak: the result plus one piece, not twice the rows)."""
    if len(pieces) == 1:
        return pieces.pop()
    out = torch.empty((sum(p.shape[0] for p in pieces), *pieces[0].shape[1:]), dtype=pieces[0].dtype,
                      device=pieces[0].device)
    start = 0
    while pieces:
        p = pieces.pop(0)
        out[start:start + p.shape[0]].copy_(p)
        start += p.shape[0]
    return out
