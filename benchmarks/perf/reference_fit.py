"""A reference-style QwT fit, written for the benchmark only (the baseline of figure 2).

It follows the released ``generate_compensation_model`` (QwT-cls-RepQ-ViT, ``qwt_vit_and_deit.py``,
``qwt_swin.py``, ``qwt_resnet_group_conv_only_percentile.py``) step by step, on the suite's
quantized model and adapter:

* the block-0 inputs of *every* calibration image are concatenated into one tensor, grown with
  ``torch.cat`` batch by batch, and served back in batches by a ``DataLoader`` over that tensor;
* for each block: every batch runs through the block in full precision and quantized, the inputs
  and both outputs are again grown with ``torch.cat``; the least squares are solved in fp32 from
  the concatenated rows as ``inverse(X_augᵀ X_aug) @ X_augᵀ @ Y`` (the grouped-conv fit per group
  on unfolded patches, ``+ 1e-3 I``), R² from a prediction pass;
* the compensated block then runs over every batch a third time (quantized block + compensation
  in fp32, as the reference's fresh ``CompensationBlock`` is in training mode) to make the next
  block's inputs.

So its memory grows with the number of images (several n x D copies at once) and each block runs
three times, where :func:`qwt_core.fit_qwt` streams float64 normal equations, runs each block twice
and reuses the stored quantized outputs. The installed compensation modules are the suite's, so
both fits produce the same kind of model (their W agree up to the float32 inverse's error).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from qwt_core import CompensatedBlock, QwTConfig, full_precision, quant_state
from qwt_core.qwt.compensation import ConvCompensation, LinearCompensation
from qwt_core.qwt.driver import BlockwiseAdapter
from qwt_core.qwt.regression import Solution


class _Features(Dataset):
    """The reference's FeatureDataset: item i of the concatenated features."""

    def __init__(self, X: Tensor) -> None:
        self.X = X

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, item: int) -> Tensor:
        return self.X[item]


def _inverse(a: Tensor) -> Tensor:
    try:
        return torch.inverse(a)
    except RuntimeError:  # exactly singular in fp32: the reference would stop here
        return torch.full_like(a, math.nan)


def _linear_regression(X: Tensor, Y: Tensor) -> Solution:
    """The reference's ``lienar_regression`` (tokens): X (..., D), Y (..., O)."""
    X = X.reshape(-1, X.size(-1))
    X_add_one = torch.cat([X, torch.ones(X.size(0), 1, device=X.device)], dim=-1)
    Y = Y.reshape(-1, Y.size(-1))
    X_add_one_T = X_add_one.t()
    W_overall = _inverse(X_add_one_T @ X_add_one) @ X_add_one_T @ Y
    W, b = W_overall[:-1, :], W_overall[-1, :]
    Y_pred = X @ W + b
    ss_tot = torch.sum((Y - Y.mean(dim=0)).pow(2))
    ss_res = torch.sum((Y - Y_pred).pow(2))
    r2 = float(1 - ss_res / ss_tot)
    r2 = r2 if math.isfinite(r2) else -math.inf
    return Solution(W[None].float(), b[None].float(), r2, r2)


def _conv_regression(X: Tensor, Y: Tensor, kernel_size: int, groups: int, ridge: float) -> tuple[Solution, int]:
    """The reference's grouped-conv ``lienar_regression``: X (B, C, H, W), Y (B, O, H', W')."""
    B, C_X, H_X, W_X = X.size()
    _, C_Y, H_Y, W_Y = Y.size()
    stride = H_X // H_Y
    cg, og = C_X // groups, C_Y // groups
    weights, biases = [], []
    for g in range(groups):
        Xu = F.unfold(X[:, g * cg:(g + 1) * cg], kernel_size, stride=stride, padding=kernel_size // 2)
        Xb = Xu.permute(0, 2, 1).reshape(-1, cg * kernel_size * kernel_size)
        Yb = Y[:, g * og:(g + 1) * og].reshape(B, og, -1).permute(0, 2, 1).reshape(-1, og)
        Xw = torch.cat([Xb, torch.ones(Xb.shape[0], 1, device=X.device)], dim=1)
        XTX = Xw.T @ Xw
        W = _inverse(XTX + ridge * torch.eye(XTX.shape[0], device=X.device)) @ Xw.T @ Yb
        weights.append(W[:-1])
        biases.append(W[-1])
    Wg, bg = torch.stack(weights), torch.stack(biases)  # (G, cg*k*k, og), (G, og)
    Wc = Wg.permute(0, 2, 1).reshape(C_Y, cg, kernel_size, kernel_size)
    Y_pred = F.conv2d(X, Wc, bg.reshape(-1), stride=stride, padding=kernel_size // 2, groups=groups)
    ss_tot = torch.sum((Y - Y.mean(dim=0)).pow(2))
    ss_res = torch.sum((Y - Y_pred).pow(2))
    r2 = float(1 - ss_res / ss_tot)
    r2 = r2 if math.isfinite(r2) else -math.inf
    return Solution(Wg.float(), bg.float(), r2, r2), stride


@torch.no_grad()
def reference_fit(adapter: BlockwiseAdapter, batches: Iterable[Tensor], cfg: QwTConfig = QwTConfig(),
                  batch_size: int = 32) -> list[float]:
    """Install QwT compensation on every block of ``adapter`` the reference way; returns the R²s."""
    model = adapter.model
    model.eval()
    dev = next(model.parameters()).device
    r2s: list[float] = []
    with quant_state(model, weight=True, act=True):
        output_t = torch.zeros(0, device=dev)
        for images in batches:
            output_t = torch.cat([output_t, adapter.embed(images.to(dev))], dim=0)
        features = _Features(output_t.cpu())
        loader = DataLoader(features, batch_size=batch_size, shuffle=False, num_workers=0)
        output_previous = output_t
        del output_t
        for k, step in enumerate(adapter.steps()):
            features.X = output_previous.cpu()
            del output_previous
            block = model.get_submodule(step.name)
            out_fp = torch.zeros(0, device=dev)
            out_q = torch.zeros(0, device=dev)
            out_in = torch.zeros(0, device=dev)
            for t_out in loader:
                t_out = t_out.to(dev)
                with full_precision(block):
                    fp = step.call(block, t_out)
                q = step.call(block, t_out)
                out_in = torch.cat([out_in, t_out], dim=0)
                out_fp = torch.cat([out_fp, fp], dim=0)
                out_q = torch.cat([out_q, q], dim=0)
                del fp, q
            if step.kind == "linear":
                sol = _linear_regression(out_in, out_fp - out_q)
            else:
                groups = cfg.conv_groups(out_in.shape[1], out_fp.shape[1])
                sol, stride = _conv_regression(out_in, out_fp - out_q, cfg.kernel_size, groups, cfg.conv_ridge)
            del out_in, out_fp, out_q
            if not (sol.r2 > 0 and k >= cfg.start_block):
                sol.weight.zero_()
                sol.bias.zero_()
            if step.kind == "linear":
                comp: LinearCompensation | ConvCompensation = LinearCompensation.from_solution(sol)
            else:
                comp = ConvCompensation.from_solution(sol, features.X.shape[1], cfg.kernel_size, stride)
            comp = comp.to(dev).eval()
            model.set_submodule(step.name, CompensatedBlock(block, comp))
            output_previous = torch.zeros(0, device=dev)
            for t_out in loader:  # the compensated block once more, compensation in fp32
                t_out = t_out.to(dev)
                out = comp.add_to(step.call(block, t_out), t_out, fp32=True)
                if step.after is not None:
                    out = step.after(out)
                output_previous = torch.cat([output_previous, out], dim=0)
            r2s.append(sol.r2)
    return r2s
