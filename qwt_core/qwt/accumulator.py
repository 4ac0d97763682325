"""Streaming least squares for QwT: Y ≈ X W + b, solved from accumulated normal equations.

For G independent groups (G = 1 for a Linear compensation; G = number of conv groups for ResNet),
with X_aug = [X, 1] (n, G, D + 1) and Y (n, G, O), ``update`` adds

    A  += X_augᵀ X_aug   (G, D+1, D+1)
    B  += X_augᵀ Y       (G, D+1, O)
    yy += Σ y²           (G, O)

in float64. Memory is independent of the number of samples n (the count lives in A[:, -1, -1] and
Σy in B[:, -1]). ``solve`` returns W (G, D, O), b (G, O) and the pooled coefficient of
determination R² = 1 - SS_res / SS_tot over all outputs, with
SS_res = Σyy - 2 tr(Wᵀ B) + tr(Wᵀ A W) and SS_tot = Σyy - Σ (Σy)² / n.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

ReduceFn = Callable[[Tensor], None]
SINGULAR_RTOL = 1e-12  # eigenvalue ratio of XᵀX below which a direction counts as absent
SINGLE_THREAD_MAX_DIM = 4096  # CPU factorizations up to this size run on one thread (see _lapack_threads)


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
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def all_reduce_sum(t: Tensor) -> None:
    """Sum ``t`` in place over all processes when torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


@dataclass
class Solution:
    """Fitted compensation of G groups: out_g = x_g @ weight[g] + bias[g]."""

    weight: Tensor  # (G, D, O), float32
    bias: Tensor  # (G, O), float32
    r2: float


class NormalEquations:
    """Accumulate XᵀX, XᵀY, Σy² batch by batch; solve once.

    Args:
        in_dim: D, features per group; out_dim: O, outputs per group; groups: G.
        ridge: λ added to the diagonal of A (all D+1 entries) before solving; 0 = plain normal
            equations (the reference for ViT/DeiT/Swin), 1e-3 for the grouped-conv fit.
    """

    def __init__(self, in_dim: int, out_dim: int, groups: int = 1, ridge: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        self.in_dim, self.out_dim, self.groups, self.ridge = in_dim, out_dim, groups, ridge
        # rows converted to float64 at a time: the temporaries of one update stay below ~32 MiB
        # whatever the batch size (the sums are the same up to float64 rounding order)
        self.chunk_rows = max(256, (32 << 20) // (8 * groups * (in_dim + out_dim + 1)))
        self.A = torch.zeros(groups, in_dim + 1, in_dim + 1, dtype=torch.float64, device=device)
        self.B = torch.zeros(groups, in_dim + 1, out_dim, dtype=torch.float64, device=device)
        self.yy = torch.zeros(groups, out_dim, dtype=torch.float64, device=device)

    @property
    def count(self) -> int:
        return int(round(float(self.A[0, -1, -1])))

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor) -> None:
        """x: (n, G, D) or (n, D) when G = 1; y: (n, G, O) or (n, O)."""
        if x.dim() == 2:
            x, y = x[:, None], y[:, None]
        if x.shape[1:] != (self.groups, self.in_dim) or y.shape[1:] != (self.groups, self.out_dim):
            raise ValueError(f"expected x (n, {self.groups}, {self.in_dim}) and y (n, {self.groups}, "
                             f"{self.out_dim}), got {tuple(x.shape)} and {tuple(y.shape)}")
        for start in range(0, x.shape[0], self.chunk_rows):  # bounds the float64 temporaries
            self._update(x[start:start + self.chunk_rows], y[start:start + self.chunk_rows])

    def _update(self, x: Tensor, y: Tensor) -> None:
        x = x.to(self.A.device, torch.float64)
        y = y.to(self.A.device, torch.float64)
        xt = x.permute(1, 2, 0)  # (G, D, n)
        xx = xt @ xt.transpose(1, 2)  # (G, D, D)
        sx = x.sum(0)  # (G, D)
        sy = y.sum(0)  # (G, O)
        D = self.in_dim
        self.A[:, :D, :D] += xx
        self.A[:, :D, D] += sx
        self.A[:, D, :D] += sx
        self.A[:, D, D] += x.shape[0]
        self.B[:, :D] += xt @ y.permute(1, 0, 2)  # (G, D, O)
        self.B[:, D] += sy
        self.yy += y.pow(2).sum(0)

    def all_reduce(self, reduce: ReduceFn = all_reduce_sum) -> None:
        """Sum the statistics over processes (call on every rank before ``solve``)."""
        for t in (self.A, self.B, self.yy):
            reduce(t)

    def solve(self) -> Solution:
        """W_aug = (A + λI)⁻¹ B per group; falls back to least squares if A is singular."""
        with _lapack_threads(self.A):
            return self._solve()

    def _solve(self) -> Solution:
        A = self.A
        if self.ridge:
            A = A + self.ridge * torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        # A numerically singular A does not make linalg.solve raise: it returns huge weights that
        # cancel only in exact arithmetic (e.g. Swin's first block, whose input is a LayerNorm
        # output: its channels sum to a constant, collinear with the ones column), and the fp16
        # eval of the compensation then amplifies them. Detect it from the eigenvalues and use the
        # minimum-norm solution instead.
        eig = torch.linalg.eigvalsh(A)  # (G, D+1), ascending
        singular = bool((eig[:, 0] <= SINGULAR_RTOL * eig[:, -1].abs()).any())
        W_aug = None
        if not singular:
            try:
                W_aug = torch.linalg.solve(A, self.B)  # (G, D+1, O)
            except RuntimeError:
                W_aug = None
        if W_aug is None:  # singular (collinear or dead feature columns): minimum-norm solution
            W_aug = torch.linalg.pinv(A, rtol=SINGULAR_RTOL, hermitian=True) @ self.B
        n = self.A[0, -1, -1]
        sy = self.B[:, -1]  # (G, O)
        ss_tot = (self.yy - sy.pow(2) / n).sum()
        ss_res = (self.yy.sum() - 2 * (W_aug * self.B).sum()
                  + (W_aug * (self.A @ W_aug)).sum())
        r2 = float(1 - ss_res / ss_tot) if float(ss_tot) > 0 else 0.0
        return Solution(W_aug[:, :-1].float(), W_aug[:, -1].float(), r2)
