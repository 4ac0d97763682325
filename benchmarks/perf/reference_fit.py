"""A reference-style QwT fit, written for the benchmark only (the baseline of figure 2).

It computes what :func:`qwt_core.fit_qwt` computes, the way the released QwT code does it: the
block inputs of *every* calibration image are concatenated into one tensor on the device, the
full-precision and quantized outputs of the block likewise, and the least-squares problem is
solved in float32 from the concatenated rows::

    X_aug = [X, 1]                       (n, D + 1), n = images x tokens
    W_aug = inverse(X_augᵀ X_aug) @ X_augᵀ @ Y            (+ λI inside the inverse for the grouped conv)
    R²    = 1 - Σ(Y - X_aug W_aug)² / Σ(Y - mean Y)²

so memory grows with the number of images (several n x D copies at once), where the streaming
accumulator of ``qwt_core`` keeps only (D+1)² statistics. Blocks run batch by batch (as the
reference's data loader does); the compensation modules and their installation are the same as
ours, so the two fits produce the same model up to float error.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from qwt_core import CompensatedBlock, QwTConfig, full_precision, quant_state
from qwt_core.qwt.accumulator import Solution
from qwt_core.qwt.compensation import ConvCompensation, LinearCompensation
from qwt_core.qwt.driver import BlockwiseAdapter, _rows


def _lstsq_inverse(x: Tensor, y: Tensor, ridge: float) -> Solution:
    """x (n, G, D), y (n, G, O) -> W (G, D, O), b (G, O), pooled R², via inverse(XᵀX)."""
    xt = x.permute(1, 0, 2)  # (G, n, D)
    yt = y.permute(1, 0, 2)  # (G, n, O)
    ones = torch.ones(*xt.shape[:2], 1, dtype=x.dtype, device=x.device)
    xa = torch.cat([xt, ones], dim=-1)  # (G, n, D+1)
    xa_t = xa.transpose(1, 2)  # (G, D+1, n)
    gram = xa_t @ xa
    if ridge:
        gram = gram + ridge * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    w_aug = torch.inverse(gram) @ xa_t @ yt  # (G, D+1, O)
    pred = xa @ w_aug  # (G, n, O)
    ss_res = (yt - pred).pow(2).sum()
    ss_tot = (yt - yt.mean(dim=1, keepdim=True)).pow(2).sum()
    r2 = float(1 - ss_res / ss_tot) if float(ss_tot) > 0 else 0.0
    return Solution(w_aug[:, :-1].float(), w_aug[:, -1].float(), r2)


@torch.no_grad()
def reference_fit(adapter: BlockwiseAdapter, batches: Iterable[Tensor], cfg: QwTConfig = QwTConfig(),
                  batch_size: int = 32) -> list[float]:
    """Install QwT compensation on every block of ``adapter`` the reference way; returns the R²s."""
    model = adapter.model.eval()
    dev = next(model.parameters()).device
    r2s: list[float] = []
    with quant_state(model, weight=True, act=True):
        feats = torch.cat([adapter.embed(b.to(dev)) for b in batches])  # (N, ...) all images
        for k, step in enumerate(adapter.steps()):
            block = model.get_submodule(step.name)
            fp_parts, q_parts = [], []
            for i in range(0, feats.shape[0], batch_size):
                x = feats[i:i + batch_size]
                with full_precision(block):
                    fp_parts.append(step.call(block, x))
                q_parts.append(step.call(block, x))
            fp, q = torch.cat(fp_parts), torch.cat(q_parts)
            del fp_parts, q_parts
            xr, yr, geom = _rows(step.kind, feats, fp - q, cfg)
            if xr.dim() == 2:
                xr, yr = xr[:, None], yr[:, None]
            ridge = cfg.linear_ridge if step.kind == "linear" else cfg.conv_ridge
            sol = _lstsq_inverse(xr, yr, ridge)
            del xr, yr, fp
            if not (sol.r2 > 0 and k >= cfg.start_block):
                sol.weight.zero_()
                sol.bias.zero_()
            if step.kind == "linear":
                comp: torch.nn.Module = LinearCompensation.from_solution(sol, cfg.fp16_eval)
            else:
                comp = ConvCompensation.from_solution(sol, geom["in_channels"], cfg.kernel_size,
                                                      geom["stride"], cfg.fp16_eval)
            comp = comp.to(dev).eval()
            model.set_submodule(step.name, CompensatedBlock(block, comp))
            out = q + comp(feats)
            del q
            feats = step.after(out) if step.after is not None else out
            r2s.append(sol.r2)
    return r2s
