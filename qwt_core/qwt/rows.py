"""QwT's regression solved with the released code's own arithmetic (``QwTConfig.regression="rows"``).

The reference keeps every regression row of a block (gathered over processes) and solves in fp32,
operation for operation (``lienar_regression`` of its scripts), per group g (G = 1 token-wise)::

    Xa = [X_g, 1] (n, D + 1)
    W_all = inverse(Xaᵀ Xa [+ λ·I]) @ Xaᵀ @ Y_g       # evaluated left to right; λ = 1e-3 for ResNet
    W_g, b_g = W_all[:-1], W_all[-1]
    R² = 1 - Σ(Y - Ŷ)² / SS_tot,  Ŷ = X_g @ W_g + b_g

with SS_tot = Σ (Y - Y.mean(dim=0))² around the means the reference's shapes of Y give: per output
column for tokens, per (channel, y, x) over the images for the grouped conv (summed in float64 by
the CPU kernel, otherwise in fp32 around a mean pass: R² is reported to ~1e-7 of the reference's,
not bit for bit; W and b are the claim). Token rows (n, D) and the grouped-conv rows
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

from .. import native
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

#: elements of Y per chunk of the R² pass (4 MiB of fp32: the residual GEMM's output per chunk)
R2_CHUNK = 1 << 20


class ReferenceRows:
    """Every row of a block kept (fp32 copies), gathered over processes, solved as released.

    Args: in_dim D, out_dim O, groups G; ridge λ added to the diagonal of Xaᵀ Xa (1e-3 for the
    grouped conv, 0 for tokens); device is unused (rows stay where the caller's tensors are).

    The rows are kept as the solve reads them, group by group: Xa = [X_g, 1] (G, n, D + 1) with the
    ones column, and Y (G, n, O), each group's rows contiguous as the reference's ``torch.cat``
    makes them. With :meth:`reserve` (the driver knows its batch count) every batch is copied once
    into buffers of the final size; without it, or past it, the batches are concatenated once when
    the rows are combined."""

    def __init__(self, in_dim: int, out_dim: int, groups: int = 1, ridge: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        self.in_dim, self.out_dim, self.groups, self.ridge = in_dim, out_dim, groups, ridge
        self._pieces: list[tuple[Tensor, Tensor]] = []  # (xa (G, n_i, D + 1), y (G, n_i, O)) filled
        self._buffer: tuple[Tensor, Tensor] | None = None  # reserved (G, capacity, D + 1), (G, capacity, O)
        self._filled = 0  # rows written into the reserved buffer
        self.rows: tuple[Tensor, Tensor] | None = None  # (Xa, Y) of all processes once combined
        self.rows_per_image: int | None = None  # conv rows (update_columns): positions per image
        self.yy = torch.zeros((), dtype=torch.float64)  # Σ y² over all rows (set by solve)
        self._solved: tuple[Solution, float] | None = None  # the last solution and its SS_res

    @property
    def count(self) -> int:
        if self.rows is not None:
            return self.rows[0].shape[1]
        return self._filled + sum(x.shape[1] for x, _ in self._pieces)

    def reserve(self, rows: int, like: Tensor) -> None:
        """Room for ``rows`` rows in total (on ``like``'s device), filled in place by the updates."""
        if self._buffer is None and self.count == 0 and rows > 0:
            self._buffer = self._new_rows(rows, like.device)

    def _new_rows(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Empty fp32 rows for n rows: Xa (G, n, D + 1) (:meth:`_keep` sets the ones column of the
        rows it fills, while they are in the cache), Y (G, n, O)."""
        return _group_major(self.groups, n, self.in_dim + 1, device), _group_major(self.groups, n, self.out_dim, device)

    def _keep(self, x: Tensor, y: Tensor, shape: tuple[int, ...]) -> None:
        """Copy x viewed as (G, *shape, D) and y as (G, *shape, O) (one copy each, fp32) into the
        reserved buffer, or into a new piece with its ones column (the caller's tensors may be
        reused for the next batch)."""
        n, G = math.prod(shape), self.groups
        buf = self._buffer
        if buf is not None and self._filled + n <= buf[0].shape[1]:
            xa, yk = buf[0][:, self._filled:self._filled + n], buf[1][:, self._filled:self._filled + n]
            self._filled += n
        else:
            xa, yk = self._new_rows(n, x.device)
            self._pieces.append((xa, yk))
        xa[..., :-1].view(G, *shape, self.in_dim).copy_(x)
        xa[..., -1] = 1
        yk.view(G, *shape, self.out_dim).copy_(y)

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor) -> None:
        """x: (n, G, D) or (n, D) when G = 1; y: (n, G, O) or (n, O)."""
        if self.rows_per_image is not None:
            raise ValueError("this regression holds conv columns (update_columns): rows cannot be added")
        x, y = check_rows(x, y, self.groups, self.in_dim, self.out_dim)
        self._keep(x.transpose(0, 1), y.transpose(0, 1), (x.shape[0],))

    @torch.no_grad()
    def update_columns(self, x: Tensor, y: Tensor) -> None:
        """x (B, G, D, *S), y (B, G, O, *S): rows (b, *s) x (G, D) as the reference unfolds them."""
        check_columns(x, y, self.groups, self.in_dim, self.out_dim)
        per_image = math.prod(x.shape[3:])
        if self.rows_per_image not in (None, per_image) or (self.rows_per_image is None and self.count):
            raise ValueError(f"conv columns of {per_image} positions per image after "
                             f"{self.rows_per_image or 'plain rows'}: one regression holds one layout")
        self.rows_per_image = per_image
        order = (1, 0, *range(3, x.dim()), 2)  # (G, B, *S, D)
        self._keep(x.permute(order), y.permute(order), (x.shape[0], *x.shape[3:]))

    def release(self) -> None:
        """(Nothing to drop: the rows are the statistic.)"""

    def all_reduce(self, reduce: ReduceFn = all_reduce_sum, gather: GatherFn = all_gather_rows) -> None:
        """Concatenate the kept rows of all processes in rank order, group by group (``gather``;
        ``reduce`` is not needed: every statistic is computed from the gathered rows)."""
        pieces = self._pieces
        if self._buffer is not None:
            pieces.insert(0, (self._buffer[0][:, :self._filled], self._buffer[1][:, :self._filled]))
        self._pieces, self._buffer = [], None
        X, Y = _concat([x for x, _ in pieces]), _concat([y for _, y in pieces])
        del pieces
        self.rows = (_gather_groups(X, gather), _gather_groups(Y, gather))

    def _r2_sums(self, Xa: Tensor, Y: Tensor, weights: list[Tensor], biases: list[Tensor]) -> tuple[float, float]:
        """(SS_res, SS_tot) of the solution, and ``yy`` = Σ y² (float64): SS_res = Σ (X_g W_g + b_g -
        Y_g)² and the reference's SS_tot = Σ (Y - Y.mean(dim=0))², around the mean of every output
        column (tokens) or of every (channel, position) over the images (conv rows, (b, *s)
        ordered). One pass over the rows in chunks of whole images of about ``R2_CHUNK`` elements:
        the residual GEMM (torch), then with :mod:`qwt_core.native` SS_res, Σ y² and the sums of y
        per mean position in one C pass (float64 sums; SS_tot = Σ y² - Σ (Σ y)² / images), or
        without it the torch passes on the chunk while it is in the cache, around the means of a
        first pass (fp32 sums per chunk)."""
        G, n, O = Y.shape
        P = self.rows_per_image or 1  # rows that share a mean position: per image (conv) or 1 (tokens)
        images = n // P
        step = max(1, R2_CHUNK // (P * O)) * P  # rows per chunk, whole images
        lib = native.library() if native.available(Xa, Y) and all(Y[g].is_contiguous() for g in range(G)) else None
        ss_res = ss_tot = yy = 0.0
        for g in range(G):
            b = biases[g].contiguous()
            if lib is not None:  # SS_res, Σ y², Σ y per position in one pass (C)
                sums, sy = torch.zeros(2, dtype=torch.float64), torch.zeros(P, O, dtype=torch.float64)
                for r0 in range(0, n, step):
                    r1 = min(n, r0 + step)
                    e = Xa[g, r0:r1, :-1] @ weights[g]  # (rows, O)
                    lib.qwt_r2_sums(e.data_ptr(), Y[g, r0:r1].data_ptr(), b.data_ptr(), sy.data_ptr(), r1 - r0, O, P,
                                    sums.data_ptr())
                ss_res += float(sums[0])
                ss_tot += max(0.0, float(sums[1]) - float(sy.pow_(2).sum()) / images)  # (>= 0 despite rounding)
                yy += float(sums[1])
                continue
            Yg = Y[g]
            m = Yg.view(images, P, O).mean(dim=0)  # (P, O)
            tot_g = 0.0
            for r0 in range(0, n, step):
                r1 = min(n, r0 + step)
                y = Yg[r0:r1]  # (rows, O)
                # (X W + b) - Y: the negated residual of the reference's, the same squares
                err = (Xa[g, r0:r1, :-1] @ weights[g]).add_(b).sub_(y)
                ss_res += float(torch.sum(err.pow_(2)))
                dev = torch.sub(y.view(-1, P, O), m, out=err.view(-1, P, O))
                tot_g += float(torch.sum(dev.pow_(2)))
            ss_tot += tot_g
            yy += tot_g + images * float(m.double().pow(2).sum())  # Σ y² = SS_tot + Σ count·mean²
        self.yy = torch.tensor(yy, dtype=torch.float64)
        return ss_res, ss_tot

    def solve(self) -> Solution:
        """The reference's fp32 fit of rows X (n, G, D), Y (n, G, O) -> W (G, D, O), b (G, O), R²
        (the same R² for ``r2`` and ``r2_reference``: the solution is the reference's)."""
        if self.rows is None:  # a single process that did not call all_reduce
            self.all_reduce(reduce=lambda t: None, gather=lambda t: t)
        assert self.rows is not None
        Xa, Y = self.rows
        G = Xa.shape[0]
        weights, biases = [], []
        for g in range(G):
            X_add_one, Y_g = Xa[g], Y[g]  # [X_g, 1] (n, D + 1), contiguous as the reference's torch.cat
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
            weights.append(W_g)
            biases.append(b_g)
        ss_res, ss_tot = self._r2_sums(Xa, Y, weights, biases)
        r2 = r_squared(ss_res, ss_tot)
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
        return float(sum(((Y[g] - (Xa[g, :, :-1] @ sol.weight[g] + sol.bias[g])).double()).pow(2).sum()
                         for g in range(self.groups)))


def _concat(pieces: list[Tensor]) -> Tensor:
    """``torch.cat(pieces, dim=1)`` of (G, n_i, C) pieces, without a copy for one piece and
    freeing each piece once copied (peak: the result plus one piece, not twice the rows)."""
    if len(pieces) == 1:
        return pieces.pop()
    G, C = pieces[0].shape[0], pieces[0].shape[2]
    out = _group_major(G, sum(p.shape[1] for p in pieces), C, pieces[0].device)
    start = 0
    while pieces:
        p = pieces.pop(0)
        out[:, start:start + p.shape[1]].copy_(p)
        start += p.shape[1]
    return out


def _gather_groups(t: Tensor, gather: GatherFn) -> Tensor:
    """Each group's rows (G, n, C) concatenated over processes in rank order by ``gather`` (which
    returns its argument in a single process: then ``t`` itself, no copy)."""
    parts = [gather(t[g]) for g in range(t.shape[0])]
    if all(p.data_ptr() == t[g].data_ptr() and p.shape == t[g].shape for g, p in enumerate(parts)):
        return t
    out = _group_major(t.shape[0], parts[0].shape[0], t.shape[2], t.device)
    for g, p in enumerate(parts):
        out[g].copy_(p)
    return out


def _group_major(G: int, n: int, C: int, device: torch.device) -> Tensor:
    """An empty fp32 (G, n, C) whose groups each start 64 bytes apart from a 64-byte aligned start,
    as a fresh tensor of their own would (rows padded to a multiple of 16): the BLAS then sees each
    group's (n, C) block as it sees the reference's ``torch.cat`` result (some BLAS paths depend on
    the alignment of their operands)."""
    return torch.empty(G, -(-n // 16) * 16, C, dtype=torch.float32, device=device)[:, :n]
