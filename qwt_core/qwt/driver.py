"""Model-agnostic block-wise QwT fitting.

An adapter tells the driver three things: how to get the inputs of block 0 from a batch of images
(``embed``, run with the model quantized), the ordered blocks (``steps``: the module name, how to
call it, and what runs between it and the next block), and the model. For block k the driver runs
the block in full precision and quantized on the same input X (the output of the already
quantized-and-compensated blocks before it), accumulates Y = FP(X) - Q(X) ≈ X W + b, solves,
installs ``CompensatedBlock``, and feeds Q(X) + c(X) (then ``after``) to block k + 1. As in the
reference, the features passed on while fitting go through the compensation in fp32; only the
installed wrapper at evaluation uses the product of :func:`qwt_core.eval_arithmetic`.
Each block is run twice per calibration batch: once in full precision, once quantized; the
propagation to the next block reuses the stored quantized outputs (no third pass).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..quant.state import full_precision, quant_state
from .accumulator import NormalEquations
from .compensation import CompensatedBlock, Compensation, ConvCompensation, LinearCompensation
from .config import QwTConfig
from .regression import GatherFn, ReduceFn, Regression, all_gather_rows, all_reduce_sum, gate
from .rows import ReferenceRows
from .store import FeatureStore, Recycler


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


def _columns(x: Tensor, y: Tensor, cfg: QwTConfig) -> tuple[Tensor, Tensor, dict]:
    """The grouped-conv regression in column layout (no rows unfolded): patches x (B, G, D, H', W')
    (for kernel 1 a strided view of x) and targets y (B, G, O/G, H', W'), with the geometry."""
    if x.dim() != 4 or y.dim() != 4:
        raise ValueError(f"conv compensation needs (B, C, H, W) tensors, got {tuple(x.shape)} -> {tuple(y.shape)}")
    stride = x.shape[-1] // y.shape[-1]
    groups = cfg.conv_groups(x.shape[1], y.shape[1])
    k = cfg.kernel_size
    B, C, H, W = x.shape
    h, w = (H + 2 * (k // 2) - k) // max(stride, 1) + 1, (W + 2 * (k // 2) - k) // max(stride, 1) + 1
    if stride < 1 or (h, w) != tuple(y.shape[-2:]):
        raise ValueError(f"stride {stride} with kernel {k} does not map {tuple(x.shape)} onto {tuple(y.shape)}")
    if k == 1:
        cols = x[:, :, ::stride, ::stride]  # (B, C, h, w): the 1x1 patches, in place
    else:  # (B, C*k*k, h*w), per group in the (c, ky, kx) order of the conv weight
        cols = F.unfold(x, k, padding=k // 2, stride=stride).view(B, C * k * k, h, w)
    xc = cols.unflatten(1, (groups, cols.shape[1] // groups))  # (B, G, D, h, w)
    yc = y.unflatten(1, (groups, y.shape[1] // groups))  # (B, G, O/G, h, w)
    return xc, yc, {"stride": stride, "groups": groups, "in_channels": C}


class Propagated:
    """The next block's inputs, computed batch by batch when read: ``after(Q(x) + c(x))`` from the
    stored block inputs x and quantized outputs Q(x), with the compensation in fp32 as the
    reference propagates while fitting. Each stored pair is forgotten once used."""

    def __init__(self, inputs: FeatureStore, quantized: FeatureStore, comp: Compensation,
                 after: Callable[[Tensor], Tensor] | None) -> None:
        self.inputs, self.quantized, self.comp, self.after = inputs, quantized, comp, after

    def drain(self) -> Iterator[Tensor]:
        xs, qs = self.inputs.drain(), self.quantized.drain()
        for x in xs:
            q = next(qs)
            out = self.comp.add_to(q, x, fp32=True)
            del x, q
            yield self.after(out) if self.after is not None else out
        for _ in qs:  # (runs the quantized outputs' drain to its end: its last buffer goes back)
            pass

    def close(self) -> None:
        self.inputs.close()
        self.quantized.close()


Inputs = FeatureStore | Propagated


def new_regression(cfg: QwTConfig, in_dim: int, out_dim: int, groups: int, ridge: float,
                   device: torch.device) -> Regression:
    """The regression ``cfg.regression`` names: ``"rows"`` -> :class:`ReferenceRows`, ``"sums"`` ->
    :class:`NormalEquations`, looked up in this module when called (instrumentation may replace
    either class here)."""
    cls = ReferenceRows if cfg.regression == "rows" else NormalEquations
    return cls(in_dim, out_dim, groups, ridge, device=device)


def fit_block(block: nn.Module, step: BlockStep, inputs: Inputs, cfg: QwTConfig, reduce: ReduceFn,
              index: int, keep: bool = True, gather: GatherFn = all_gather_rows
              ) -> tuple[Compensation, tuple[FeatureStore, FeatureStore] | None, BlockReport]:
    """Fit the compensation of one block: for every batch X, Y = FP(X) - Q(X) into the regression
    (tokens: rows (n, D) -> (n, O); ResNet: grouped-conv columns); combine over processes; solve;
    gate; build the module. Reads (and consumes) ``inputs`` once; with ``keep`` also returns the
    block inputs and quantized outputs, from which :class:`Propagated` makes the next block's
    inputs once the compensation is known."""
    src = inputs.inputs if isinstance(inputs, Propagated) else inputs
    kept = (FeatureStore(cfg.store, src.device, src.recycler),
            FeatureStore(cfg.store, src.device, src.recycler)) if keep else None
    reg: Regression | None = None
    geom: dict = {}
    for x in inputs.drain():
        with full_precision(block):
            fp = step.call(block, x)
        q = step.call(block, x)  # the caller holds the model in quant state
        # Y = FP(x) - Q(x), in fp's memory unless fp shares it with the block input or Q(x)
        own = fp.data_ptr() not in (x.data_ptr(), q.data_ptr()) and fp._base is None
        y = fp.sub_(q) if own else fp - q
        if step.kind == "linear":
            xr, yr = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])  # (n, D), (n, O)
            if reg is None:  # room for every batch's rows, as many as this one's (the last may have fewer)
                reg = new_regression(cfg, xr.shape[-1], yr.shape[-1], 1, cfg.linear_ridge, x.device)
                reg.reserve(len(src) * xr.shape[0], x)
            reg.update(xr, yr)
        else:
            xc, yc, geom = _columns(x, y, cfg)  # (B, G, D, h, w), (B, G, O/G, h, w)
            if reg is None:
                reg = new_regression(cfg, xc.shape[2], yc.shape[2], xc.shape[1], cfg.conv_ridge, x.device)
                reg.reserve(len(src) * xc.shape[0] * math.prod(xc.shape[3:]), x)
            reg.update_columns(xc, yc)
        if kept is not None:
            kept[0].append(x)
            kept[1].append(q)
        del fp, y, q, x
    if reg is None:
        raise ValueError("QwT needs at least one calibration batch")
    reg.release()
    reg.all_reduce(reduce, gather)
    sol = reg.solve()
    applied, r2 = gate(sol, index, cfg)
    if not applied:
        sol.weight.zero_()
        sol.bias.zero_()
    comp = (LinearCompensation.from_solution(sol) if step.kind == "linear" else
            ConvCompensation.from_solution(sol, geom["in_channels"], cfg.kernel_size, geom["stride"]))
    n_out = reg.count * reg.out_dim * reg.groups
    mse_before = float(reg.yy.sum()) / n_out
    report = BlockReport(index, step.name, r2, applied, mse_before,
                         reg.residual(sol) / n_out if applied else mse_before, reg.count,
                         {k: v for k, v in geom.items() if k != "in_channels"})
    return comp.to(src.device).eval(), kept, report


@torch.no_grad()
def fit_qwt(adapter: BlockwiseAdapter, batches: Iterable[Tensor], cfg: QwTConfig = QwTConfig(),
            device: torch.device | str | None = None, reduce: ReduceFn = all_reduce_sum,
            on_block: Callable[[BlockReport], None] | None = None,
            gather: GatherFn = all_gather_rows) -> list[BlockReport]:
    """Fit and install QwT compensation on every block of ``adapter``, in order.

    Block k + 1 reads its inputs ``after(Q(x) + c(x))`` batch by batch from block k's stored inputs
    and quantized outputs (:class:`Propagated`): each stored batch is written once and read once,
    and the last block stores nothing.

    Args:
        batches: calibration images (B, 3, H, W); with several processes each rank passes its own
            shard; before each solve ``gather`` concatenates the regression rows over processes in
            rank order (``regression="rows"``), ``reduce`` sums the normal equations
            (``regression="sums"``) and the ResNet R² position sums.
        on_block: called with each block's report (progress / logging).
    Returns:
        one :class:`BlockReport` per block.
    """
    model = adapter.model
    model.eval()  # (mmdet modules may return None from train()/eval())
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    reports: list[BlockReport] = []
    steps = list(adapter.steps())
    recycler = Recycler()  # spare host tensors and feature files, shared by the stores of this fit
    with quant_state(model, weight=True, act=True):
        first = FeatureStore(cfg.store, dev, recycler)
        for images in batches:
            first.append(adapter.embed(images.to(dev)))
        inputs: Inputs = first
        try:
            for k, step in enumerate(steps):
                block = model.get_submodule(step.name)
                if isinstance(block, CompensatedBlock):
                    raise ValueError(f"{step.name} is already compensated: build a fresh quantized model")
                comp, kept, report = fit_block(block, step, inputs, cfg, reduce, k, keep=k + 1 < len(steps),
                                                gather=gather)
                model.set_submodule(step.name, CompensatedBlock(block, comp))
                inputs.close()
                if kept is not None:
                    inputs = Propagated(kept[0], kept[1], comp, step.after)
                reports.append(report)
                if on_block is not None:
                    on_block(report)
        finally:
            inputs.close()
            recycler.close()
    return reports
