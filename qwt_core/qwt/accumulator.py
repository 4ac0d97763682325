"""Least squares for QwT from float64 normal equations (``QwTConfig.regression="sums"``).

For G independent groups (G = 1 for a Linear compensation; G = number of conv groups for ResNet),
with X_aug = [X, 1] (n, G, D + 1) and Y (n, G, O), ``update`` adds

    A  += X_augᵀ X_aug   (G, D+1, D+1)
    B  += X_augᵀ Y       (G, D+1, O)
    yy += Σ y²           (G, O)

in float64. Memory is independent of the number of samples n (the count lives in A[:, -1, -1] and
Σy in B[:, -1]); processes combine by summing (all-reduce). ``solve`` returns W (G, D, O), b (G, O)
of W_aug = (A + λI)⁻¹ B in float64 (minimum-norm where A is numerically singular) and two pooled
coefficients of determination R² = 1 - SS_res / SS_tot: of that solution (``r2``) and of the
reference's kind of solution, inverse(fp32(A + λI)) @ fp32(B) (``r2_reference``), with
SS_res = Σyy - 2 tr(Wᵀ B) + tr(Wᵀ A W) evaluated exactly on the sums and SS_tot = Σyy - Σ (Σy)² / n
(tokens) or around the mean over the images of every output position (grouped conv).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

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
from .threads import one_thread

SINGULAR_RTOL = 1e-12  # eigenvalue ratio of XᵀX below which a direction counts as absent
SINGLE_THREAD_MAX_DIM = 4096  # CPU factorizations up to this size run on one thread (see _lapack_threads)
BUFFER_BYTES = 16 << 20  # float64 copy of one update chunk (x and y each; below glibc's 32 MiB mmap ceiling)


@contextlib.contextmanager
def _lapack_threads(A: Tensor) -> Iterator[None]:
    """Run the small dense factorizations of ``solve`` on one CPU thread.

    LAPACK's eigvalsh/solve on a (D+1)² matrix of a few hundred rows is a long chain of small
    parallel regions; on a loaded CPU every region waits for all threads, and a 385² eigvalsh took
    10 s on two busy cores against 0.03 s on one. Single-threaded results are identical up to the
    usual float reordering; nothing changes on GPU.
    """
    if A.device.type != "cpu" or A.shape[-1] > SINGLE_THREAD_MAX_DIM:
        yield
        return
    with one_thread():
        yield


class NormalEquations:
    """Accumulate XᵀX, XᵀY, Σy² batch by batch; all-reduce; solve once (see module doc).

    Args:
        in_dim: D, features per group; out_dim: O, outputs per group; groups: G.
        ridge: λ added to the diagonal of A (all D+1 entries) before solving; 0 = plain normal
            equations (the reference for ViT/DeiT/Swin), 1e-3 for the grouped-conv fit.
    """

    def __init__(self, in_dim: int, out_dim: int, groups: int = 1, ridge: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        self.in_dim, self.out_dim, self.groups, self.ridge = in_dim, out_dim, groups, ridge
        self.positions = PositionSums()  # Σ_b y per conv output position (update_columns only)
        # rows converted to float64 at a time: the float64 copies of one chunk stay below
        # BUFFER_BYTES each whatever the batch size (the sums are the same up to float64 rounding
        # order); the copies go to buffers kept between updates (a fresh allocation of that size
        # costs more in page faults than the conversion itself)
        self.chunk_rows = max(256, BUFFER_BYTES // (8 * groups * max(in_dim + 1, out_dim)))
        size = in_dim + 1
        self.A = torch.zeros(groups, size, size, dtype=torch.float64, device=device)
        self.B = torch.zeros(groups, size, out_dim, dtype=torch.float64, device=device)
        self.yy = torch.zeros(groups, out_dim, dtype=torch.float64, device=device)
        self._buffers: dict[str, Tensor] = {}

    @property
    def count(self) -> int:
        """Rows seen (all processes once combined)."""
        return int(round(float(self.A[0, -1, -1])))

    def _buffer(self, name: str, shape: tuple[int, ...]) -> Tensor:
        """A float64 work tensor of ``shape``, reused between updates (grown when too small)."""
        n = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < n:
            buf = self._buffers[name] = torch.empty(n, dtype=torch.float64, device=self.A.device)
        return buf[:n].view(shape)

    def reserve(self, rows: int, like: Tensor) -> None:
        """(Constant memory: nothing to reserve.)"""

    def release(self) -> None:
        """Drop the work buffers (the sums stay)."""
        self._buffers.clear()

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor) -> None:
        """x: (n, G, D) or (n, D) when G = 1; y: (n, G, O) or (n, O)."""
        x, y = check_rows(x, y, self.groups, self.in_dim, self.out_dim)
        n, G, D, O = x.shape[0], self.groups, self.in_dim, self.out_dim
        step = math.ceil(n / math.ceil(n / self.chunk_rows)) if n else 1  # equal chunks
        for start in range(0, n, step):  # bounds the float64 copies
            xc, yc = x[start:start + step], y[start:start + step]
            m = xc.shape[0]
            xa = self._buffer("x", (m, G, D + 1))  # X_aug = [X, 1] in float64
            xa[..., :D].copy_(xc)
            xa[..., D].fill_(1.0)
            yb = self._buffer("y", (m, G, O)).copy_(yc)
            xt = xa.permute(1, 2, 0)  # (G, D+1, m)
            # X_augᵀX_aug holds XᵀX, Σx and the count; X_augᵀY holds XᵀY and Σy
            self._add(xt @ xa.transpose(0, 1), xt @ yb.transpose(0, 1), yb.pow(2).sum(0))

    @torch.no_grad()
    def update_columns(self, x: Tensor, y: Tensor) -> None:
        """The same sums from column-major tensors: x (B, G, D, *S), y (B, G, O, *S), one regression
        row per image and position of S (e.g. the output pixels of a grouped convolution, without
        unfolding them into rows); also adds Σ over the images of y per position, (G, O, *S)
        float64, for the ResNet SS_tot."""
        check_columns(x, y, self.groups, self.in_dim, self.out_dim)
        B, S = x.shape[0], tuple(x.shape[3:])
        L = math.prod(S)
        G, D, O = self.groups, self.in_dim, self.out_dim
        per_image = 8 * G * max(D + 1, O) * max(L, 1)
        step = max(1, min(B, BUFFER_BYTES // per_image))
        step = math.ceil(B / math.ceil(B / step)) if B else 1  # equal chunks
        sums = torch.zeros(G, O, *S, dtype=torch.float64, device=self.A.device)
        for start in range(0, B, step):
            xc, yc = x[start:start + step], y[start:start + step]
            m = xc.shape[0]
            # images next to positions in one contiguous float64 copy (one GEMM per group over
            # m * L rows), with a row of ones: X_aug = [X; 1]
            xa = self._buffer("xc", (G, D + 1, m) + S)
            xa[:, :D].copy_(xc.movedim(0, 2))
            xa[:, D].fill_(1.0)
            xa = xa.view(G, D + 1, m * L)
            yb = self._buffer("yc", (G, O, m) + S).copy_(yc.movedim(0, 2))
            sums += yb.sum(2)
            yb = yb.view(G, O, m * L)
            sq = torch.mul(yb, yb, out=self._buffer("sq", (G, O, m * L)))
            self._add(xa @ xa.transpose(1, 2), xa @ yb.transpose(1, 2), sq.sum(-1))
        self.positions.add(sums, B)

    def _add(self, aa: Tensor, ab: Tensor, yy: Tensor) -> None:
        """Add one chunk's sums: X_augᵀX_aug (G, D+1, D+1), X_augᵀY (G, D+1, O), Σy² (G, O)."""
        self.A += aa
        self.B += ab
        self.yy += yy

    def all_reduce(self, reduce: ReduceFn = all_reduce_sum, gather: GatherFn = all_gather_rows) -> None:
        """Sum the statistics of all processes with ``reduce`` (every rank, before ``solve``);
        ``gather`` is unused (no rows are kept)."""
        for t in (self.A, self.B, self.yy):
            reduce(t)
        self.positions.all_reduce(reduce)

    def solve(self) -> Solution:
        """W_aug = (A + λI)⁻¹ B per group in float64 (the minimum-norm solution where A is
        numerically singular), with its R² (``r2``) and the R² of the reference's kind of solution,
        ``inverse(fp32(A + λI)) @ fp32(B)`` (``r2_reference``). The two differ where A is
        numerically singular (cond ≳ 1/eps_fp32, e.g. the LayerNorm output that feeds Swin's first
        block): the fp32 solution is dominated by rounding and its R² is negative; elsewhere they
        agree up to fp32 rounding. SS_res is evaluated exactly (float64) on the sums."""
        ss_tot = self.positions.ss_tot(self.yy)
        if ss_tot is None:  # around the mean of every output column: Σyy - (Σy)² / n
            ss_tot = float((self.yy - self.B[:, -1].pow(2) / self.A[0, -1, -1]).sum())
        with _lapack_threads(self.A):
            W_aug = self._solve_lstsq()
            W_ref = self._solve_fp32()
        return Solution(W_aug[:, :-1].float(), W_aug[:, -1].float(), r_squared(self._ss_res(W_aug), ss_tot),
                        r_squared(self._ss_res(W_ref), ss_tot))

    def _ss_res(self, W_aug: Tensor) -> float:
        """Σ ||y - x_aug W_aug||² over all groups, from the sums: Σyy - 2<W, B> + <W, A W>."""
        return float(self.yy.sum() - 2 * (W_aug * self.B).sum() + (W_aug * (self.A @ W_aug)).sum())

    def residual(self, sol: Solution) -> float:
        """SS_res = Σ ||y - x W - b||² of a solution (float64, from the sums)."""
        return self._ss_res(torch.cat([sol.weight, sol.bias[:, None]], 1).to(self.A))

    def _ridged(self) -> Tensor:
        A = self.A
        if self.ridge:
            A = A + self.ridge * torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        return A

    def _solve_fp32(self) -> Tensor:
        """The reference's solution: inverse(fp32(A + λI)) @ fp32(B) in fp32 (returned in float64;
        NaN where fp32 A is exactly singular, which makes the reference fail)."""
        A32 = self._ridged().float()
        try:
            inv = torch.linalg.inv(A32)
        except RuntimeError:  # exactly singular in fp32: the reference would fail here too
            return torch.full_like(self.B, math.nan)
        return (inv @ self.B.float()).double()

    def _solve_lstsq(self) -> Tensor:
        """float64 solve; minimum-norm solution when A is numerically singular."""
        A = self._ridged()
        # A numerically singular A does not make linalg.solve raise: it returns huge weights that
        # cancel only in exact arithmetic. Detect it from the eigenvalues and use the minimum-norm
        # solution instead.
        eig = torch.linalg.eigvalsh(A)  # (G, D+1), ascending
        singular = bool((eig[:, 0] <= SINGULAR_RTOL * eig[:, -1].abs()).any())
        if not singular:
            try:
                return torch.linalg.solve(A, self.B)  # (G, D+1, O)
            except RuntimeError:
                pass
        return torch.linalg.pinv(A, rtol=SINGULAR_RTOL, hermitian=True) @ self.B
