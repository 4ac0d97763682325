"""QwT's regression solved with the released code's own arithmetic (``QwTConfig.solver="reference"``,
the rows mode of :class:`~qwt_core.qwt.accumulator.NormalEquations`).

The reference keeps every regression row of a block (gathered over processes) and solves in fp32,
operation for operation (``lienar_regression`` of its scripts), per group g (G = 1 token-wise)::

    Xa = [X_g, 1] (n, D + 1)
    W_all = inverse(Xaᵀ Xa [+ λ·I]) @ Xaᵀ @ Y_g       # evaluated left to right; λ = 1e-3 for ResNet
    W_g, b_g = W_all[:-1], W_all[-1]
    R² = 1 - Σ(Y - Ŷ)² / SS_tot,  Ŷ = X_g @ W_g + b_g

with SS_tot around ``Y.mean(dim=0)`` of Y as the reference shapes it: per output column for
tokens, per (channel, y, x) over the images for the grouped conv (passed in, see
:class:`~qwt_core.qwt.driver.PositionSums`). Token rows (n, D) and the grouped-conv rows of
:func:`~qwt_core.qwt.compensation.unfold_groups` ((b, y, x) rows, (channel, ky, kx) columns per
group) hold the same values in the same places as the reference's, so the same fp32 operations
give its W, b bit for bit where the BLAS sees the same inputs. Nothing short of that matches on
ill-conditioned blocks: an fp32 inverse is off by ~6e-8·cond(XᵀX) relative. The price is the
reference's memory (the rows of one block for all images); the streaming solvers keep it constant.

Where fp32 ``inverse`` fails on an exactly singular system the reference would stop; here the
block gets R² = -inf (zero compensation).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor

GatherFn = Callable[[Tensor], Tensor]


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


def solve_rows(X: Tensor, Y: Tensor, ridge: float = 0.0,
               ss_tot: float | None = None) -> tuple[Tensor, Tensor, float]:
    """The reference's fit of rows X (n, G, D), Y (n, G, O) in fp32 -> W (G, D, O), b (G, O), R²."""
    n, G, D = X.shape
    weights, biases = [], []
    ss_res = 0.0
    for g in range(G):
        X_g, Y_g = X[:, g], Y[:, g]
        X_add_one = torch.cat([X_g, torch.ones(size=[n, 1], device=X.device)], dim=-1)
        XTX = X_add_one.t() @ X_add_one
        if ridge:
            XTX = XTX + ridge * torch.eye(XTX.shape[0], device=X.device)
        try:
            W_all = torch.inverse(XTX) @ X_add_one.t() @ Y_g
        except RuntimeError:  # exactly singular in fp32: the reference stops here
            return X.new_zeros(G, D, Y.shape[2]), X.new_zeros(G, Y.shape[2]), -math.inf
        W_g, b_g = W_all[:-1, :], W_all[-1, :]
        ss_res += float(torch.sum((Y_g - (X_g @ W_g + b_g)).pow(2)))
        weights.append(W_g)
        biases.append(b_g)
    if ss_tot is None:  # around the mean of every output column (fp32, as the reference)
        ss_tot = float(sum(torch.sum((Y[:, g] - Y[:, g].mean(dim=0)).pow(2)) for g in range(G)))
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return torch.stack(weights), torch.stack(biases), (r2 if math.isfinite(r2) else -math.inf)
