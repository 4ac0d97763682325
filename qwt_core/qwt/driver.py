"""Model-agnostic block-wise QwT fitting.

An adapter tells the driver three things: how to get the inputs of block 0 from a batch of images
(``embed``, run with the model quantized), the ordered blocks (``steps``: the module name, how to
call it, and what runs between it and the next block), and the model. For block k the driver runs
the block in full precision and quantized on the same input X (the output of the already
quantized-and-compensated blocks before it), accumulates Y = FP(X) - Q(X) ≈ X W + b, solves,
installs ``CompensatedBlock``, and feeds Q(X) + c(X) (then ``after``) to block k + 1. As in the
reference, the features passed on while fitting go through the compensation in fp32; only the
installed wrapper at evaluation uses the fp16 product (``QwTConfig.fp16_eval``).
Each block is run twice per calibration batch: once in full precision, once quantized.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Literal, Protocol, Sequence

import torch
from torch import Tensor, nn

from ..quant.state import full_precision, quant_state
from .accumulator import NormalEquations, ReduceFn, all_reduce_sum
from .compensation import (CompensatedBlock, ConvCompensation, LinearCompensation, conv_rows,
                           unfold_groups)
from .config import QwTConfig
from .reference_solve import GatherFn, all_gather_rows
from .store import FeatureStore


def call_block(block: nn.Module, x: Tensor) -> Tensor:
    """Default: ``block(x)``."""
    return block(x)


@dataclass
class BlockStep:
    """One block of the walk."""

    name: str  # qualified module name in the model (the wrapper replaces it there)
    call: Callable[[nn.Module, Tensor], Tensor] = call_block  # e.g. lambda b, x: b(x, hw_shape)
    after: Callable[[Tensor], Tensor] | None = None  # runs on the block output before the next block
    kind: Literal["linear", "conv"] = "linear"  # token compensation or grouped-conv compensation


class BlockwiseAdapter(Protocol):
    """What the driver needs from a model family."""

    model: nn.Module

    def embed(self, images: Tensor) -> Tensor:
        """Inputs of the first block for a batch of images."""

    def steps(self) -> Sequence[BlockStep]:
        """The blocks in execution order."""


@dataclass
class BlockReport:
    """Per-block diagnostics of the fit (mse over all elements of the calibration outputs)."""

    index: int
    name: str
    r2: float
    applied: bool
    mse_before: float  # mean (FP - Q)^2
    mse_after: float  # mean (FP - Q - c)^2 of the fitted compensation (= mse_before if not applied)
    samples: int  # rows of the regression (tokens or output pixels)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _rows(kind: str, x: Tensor, y: Tensor, cfg: QwTConfig) -> tuple[Tensor, Tensor, dict]:
    """Regression rows and the compensation geometry for one batch."""
    if kind == "linear":
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), {}
    if x.dim() != 4 or y.dim() != 4:
        raise ValueError(f"conv compensation needs (B, C, H, W) tensors, got {tuple(x.shape)} -> {tuple(y.shape)}")
    stride = x.shape[-1] // y.shape[-1]
    groups = cfg.conv_groups(x.shape[1], y.shape[1])
    xr = unfold_groups(x, cfg.kernel_size, stride, groups)
    yr = conv_rows(y, groups)
    if xr.shape[0] != yr.shape[0]:
        raise ValueError(f"stride {stride} with kernel {cfg.kernel_size} does not map "
                         f"{tuple(x.shape)} onto {tuple(y.shape)}")
    return xr, yr, {"stride": stride, "groups": groups, "in_channels": x.shape[1]}


class PositionSums:
    """Σ over images of Y (B, C, H, W) per (channel, y, x): the reference's ResNet R² takes
    SS_tot around ``Y.mean(dim=0)``, one mean per output position over the images:
    SS_tot = Σ y² - Σ_{c,h,w} (Σ_b y)² / B."""

    def __init__(self) -> None:
        self.sums: Tensor | None = None  # (C, H, W) float64
        self.images = torch.zeros((), dtype=torch.float64)

    def update(self, y: Tensor) -> None:
        s = y.to(torch.float64).sum(0)
        self.sums = s if self.sums is None else self.sums + s
        self.images = self.images.to(s.device) + y.shape[0]

    def all_reduce(self, reduce: ReduceFn) -> None:
        assert self.sums is not None
        reduce(self.sums)
        reduce(self.images)

    def ss_tot(self, yy: Tensor) -> float:
        assert self.sums is not None
        return float(yy.sum() - self.sums.pow(2).sum() / self.images)


def fit_block(block: nn.Module, step: BlockStep, inputs: FeatureStore, cfg: QwTConfig,
              reduce: ReduceFn, index: int, gather: GatherFn = all_gather_rows
              ) -> tuple[nn.Module, FeatureStore, BlockReport]:
    """Fit and return the compensation of one block, and the quantized outputs (not yet compensated)."""
    outs = FeatureStore(inputs.where, inputs.device)
    acc: NormalEquations | None = None
    positions = PositionSums() if step.kind == "conv" else None
    geom: dict = {}
    for x in inputs:
        with full_precision(block):
            fp = step.call(block, x)
        q = step.call(block, x)  # the caller holds the model in quant state
        # Y = FP(x) - Q(x), in fp's memory unless fp shares it with the block input or Q(x)
        own = fp.data_ptr() not in (x.data_ptr(), q.data_ptr()) and fp._base is None
        y = fp.sub_(q) if own else fp - q
        xr, yr, geom = _rows(step.kind, x, y, cfg)
        if acc is None:
            ridge = cfg.linear_ridge if step.kind == "linear" else cfg.conv_ridge
            acc = NormalEquations(xr.shape[-1], yr.shape[-1], xr.shape[1] if xr.dim() == 3 else 1,
                                  ridge, device=x.device, keep_rows=cfg.solver == "reference")
        acc.update(xr, yr)
        if positions is not None:
            positions.update(y)
        outs.append(q)
        del fp, y, xr, yr
    if acc is None:
        raise ValueError("QwT needs at least one calibration batch")
    acc.all_reduce(reduce, gather)
    ss_tot = None
    if positions is not None:
        positions.all_reduce(reduce)
        ss_tot = positions.ss_tot(acc.yy)
    sol = acc.solve("float64" if cfg.solver == "lstsq" else "fp32", ss_tot=ss_tot)
    applied = sol.r2 > 0 and index >= cfg.start_block
    if not applied:
        sol.weight.zero_()
        sol.bias.zero_()
    if step.kind == "linear":
        comp: nn.Module = LinearCompensation.from_solution(sol, cfg.fp16_eval, cfg.half_arith)
    else:
        comp = ConvCompensation.from_solution(sol, geom["in_channels"], cfg.kernel_size,
                                              geom["stride"], cfg.fp16_eval, cfg.half_arith)
    n_out = acc.count * acc.out_dim * acc.groups
    mse_before = float(acc.yy.sum()) / n_out
    report = BlockReport(index, step.name, sol.r2, applied, mse_before,
                         acc.residual(sol) / n_out if applied else mse_before, acc.count,
                         {k: v for k, v in geom.items() if k != "in_channels"})
    return comp.to(inputs.device).eval(), outs, report


@torch.no_grad()
def fit_qwt(adapter: BlockwiseAdapter, batches: Iterable[Tensor], cfg: QwTConfig = QwTConfig(),
            device: torch.device | str | None = None, reduce: ReduceFn = all_reduce_sum,
            on_block: Callable[[BlockReport], None] | None = None,
            gather: GatherFn = all_gather_rows) -> list[BlockReport]:
    """Fit and install QwT compensation on every block of ``adapter``, in order.

    Args:
        batches: calibration images (B, 3, H, W); with several processes each rank passes its own
            shard; before each solve ``gather`` concatenates the regression rows over processes in
            rank order (``solver="reference"``), ``reduce`` sums the normal equations (streaming
            solvers) and the ResNet R² position sums.
        on_block: called with each block's report (progress / logging).
    Returns:
        one :class:`BlockReport` per block.
    """
    model = adapter.model
    model.eval()  # (mmdet modules may return None from train()/eval())
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    reports: list[BlockReport] = []
    with quant_state(model, weight=True, act=True):
        feats = FeatureStore(cfg.store, dev)
        for images in batches:
            feats.append(adapter.embed(images.to(dev)))
        for k, step in enumerate(adapter.steps()):
            block = model.get_submodule(step.name)
            if isinstance(block, CompensatedBlock):
                raise ValueError(f"{step.name} is already compensated: build a fresh quantized model")
            comp, outs, report = fit_block(block, step, feats, cfg, reduce, k, gather)
            model.set_submodule(step.name, CompensatedBlock(block, comp))
            for i in range(len(outs)):  # Q(x) + c(x) in fp32, as the reference propagates while fitting
                out = comp.add_to(outs[i], feats[i], fp32=True)
                outs[i] = step.after(out) if step.after is not None else out
            feats.close()
            feats = outs
            reports.append(report)
            if on_block is not None:
                on_block(report)
        feats.close()
    return reports
