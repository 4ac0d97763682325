"""Block-wise QwT: compensation lowers block output error on held-out inputs; gating rules."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from qwt_core import (
    SOLVER_PRESETS,
    BlockStep,
    CompensatedBlock,
    QwTConfig,
    calibrate_repq,
    eval_arithmetic,
    fit_qwt,
    full_precision,
    quant_state,
)

from .toy import ConvAdapter, TinyConvNet, TinyTransformer, TransformerAdapter, quantize_convnet, quantize_transformer


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean())


def _transformer(bits: int = 4) -> tuple[TinyTransformer, TinyTransformer]:
    model = TinyTransformer(depth=3).eval()
    ref = copy.deepcopy(model)
    pairs = quantize_transformer(model, bits)
    calibrate_repq(model, torch.randn(16, 20, 12), pairs)
    return model, ref


def test_qwt_lowers_block_and_feature_error_on_held_out_inputs() -> None:
    model, ref = _transformer()
    held_out = torch.randn(32, 20, 12)
    with torch.no_grad(), quant_state(model):
        x0 = model.embed(held_out)
        q_block0 = model.blocks[0](x0)
        feats_before = model.features(held_out)
    fp_block0 = ref.blocks[0](ref.embed(held_out)).detach()
    # (block 0's input, embed(x) of 12-dim tokens, has rank 13 < 33: the float64 gate keeps it)
    reports = fit_qwt(TransformerAdapter(model), [torch.randn(16, 20, 12) for _ in range(4)],
                      QwTConfig(**SOLVER_PRESETS["lstsq"]))  # type: ignore[arg-type]
    assert [r.name for r in reports] == ["blocks.0", "blocks.1", "blocks.2"]
    assert all(isinstance(b, CompensatedBlock) for b in model.blocks)
    assert all(r.applied and 0 < r.r2 < 1 and r.mse_after < r.mse_before for r in reports)
    with torch.no_grad(), quant_state(model), eval_arithmetic(fp16=False):
        q_comp_block0 = model.blocks[0](x0)
        feats_after = model.features(held_out)
    fp_feats = ref.features(held_out).detach()
    assert _err(q_comp_block0, fp_block0) < _err(q_block0, fp_block0)
    assert _err(feats_after, fp_feats) < _err(feats_before, fp_feats)
    with torch.no_grad(), full_precision(model):  # compensation is added in every mode
        assert not torch.allclose(model.blocks[0](x0), ref.blocks[0](x0))


def test_driver_feeds_compensated_outputs_forward() -> None:
    """Block k's regression inputs are the outputs of the compensated blocks before it."""
    model, _ = _transformer()
    calib = [torch.randn(8, 20, 12) for _ in range(2)]
    seen: list[torch.Tensor] = []
    hook = model.blocks[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    fit_qwt(TransformerAdapter(model), calib, QwTConfig())
    hook.remove()
    with torch.no_grad(), quant_state(model):
        want = model.blocks[0](model.embed(calib[0]))  # wrapper now: Q(x) + c(x)
    torch.testing.assert_close(seen[0], want, rtol=0, atol=0)


class FullPrecisionAdapter(TransformerAdapter):
    """Its blocks are called in full precision even inside the fit's quant state: Q(x) = FP(x)."""

    def steps(self) -> list[BlockStep]:
        def call(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            with full_precision(block):
                return block(x)
        return [dataclasses.replace(s, call=call) for s in super().steps()]


def test_start_block_and_r2_gating() -> None:
    model, _ = _transformer()
    reports = fit_qwt(TransformerAdapter(model), [torch.randn(8, 20, 12)], QwTConfig(start_block=2))
    assert [r.applied for r in reports] == [False, False, True]
    assert float(model.blocks[0].compensation.weight.abs().sum()) == 0.0
    assert reports[0].mse_after == reports[0].mse_before
    # a block whose quantized output equals full precision has nothing to fit: R² <= 0, zero weights
    fp_model = TinyTransformer(depth=1).eval()
    quantize_transformer(fp_model, 8)
    calibrate_repq(fp_model, torch.randn(4, 20, 12))
    reports = fit_qwt(FullPrecisionAdapter(fp_model), [torch.randn(4, 20, 12)])
    assert reports[0].mse_before == 0.0  # Y = FP(x) - Q(x) = 0 exactly
    assert reports[0].r2 <= 0 and not reports[0].applied
    assert float(fp_model.blocks[0].compensation.weight.abs().sum()) == 0.0


def test_conv_qwt_lowers_error_with_stride_two_block() -> None:
    model = TinyConvNet().eval()
    ref = copy.deepcopy(model)
    quantize_convnet(model, 3)
    calibrate_repq(model, torch.randn(16, 3, 12, 12))
    held_out = torch.randn(16, 3, 12, 12)
    with torch.no_grad(), quant_state(model):
        before = model(held_out)
    reports = fit_qwt(ConvAdapter(model), [torch.randn(16, 3, 12, 12) for _ in range(4)],
                      QwTConfig(kernel_size=3, factor=4))
    assert [r.extra["stride"] for r in reports] == [1, 2, 1]
    assert [r.extra["groups"] for r in reports] == [2, 2, 4]
    with torch.no_grad(), quant_state(model), eval_arithmetic(fp16=False):
        after = model(held_out)
    want = ref(held_out).detach()
    assert _err(after, want) < _err(before, want)


def test_feature_stores_give_identical_fits() -> None:
    results = []
    for where in ("device", "cpu", "disk"):
        torch.manual_seed(0)
        model, _ = _transformer()
        torch.manual_seed(1)
        calib = [torch.randn(8, 20, 12) for _ in range(3)]
        reports = fit_qwt(TransformerAdapter(model), calib, QwTConfig(store=where))
        results.append(([r.r2 for r in reports], model.blocks[2].compensation.weight.detach().clone()))
    for r2, w in results[1:]:
        assert r2 == results[0][0]
        torch.testing.assert_close(w, results[0][1], rtol=0, atol=0)


def test_reference_rule_zeroes_a_rank_deficient_block_that_lstsq_compensates() -> None:
    """Block 0's input, embed(x) for 12-dim tokens, spans 13 of its 33 augmented dimensions: XᵀX is
    singular. The reference inverts it in fp32, gets a solution dominated by rounding with a
    negative R², and keeps the block at zero; the reference gate reaches the same decision (on
    kept rows and on float64 sums alike) while the float64 gate (``"lstsq"``) compensates the block."""
    model, _ = _transformer()
    calib = [torch.randn(16, 20, 12) for _ in range(4)]
    by = {}
    for solver in SOLVER_PRESETS:
        m = copy.deepcopy(model)
        by[solver] = fit_qwt(TransformerAdapter(m), calib, QwTConfig(**SOLVER_PRESETS[solver]))  # type: ignore[arg-type]
        if solver != "lstsq":
            assert float(m.blocks[0].compensation.weight.detach().abs().sum()) == 0.0
    for ref in (by["reference"], by["streaming"]):
        assert ref[0].r2 < 0 and not ref[0].applied
        assert all(r.applied and r.r2 > 0 for r in ref[1:])  # full-rank blocks are kept
    lst = by["lstsq"]
    assert lst[0].r2 > 0 and lst[0].applied


@torch.no_grad()
def test_conv_r2_is_taken_around_per_position_means() -> None:
    """ResNet R² as the reference computes it on the (B, C, H, W) output: SS_tot around
    Y.mean(dim=0), one mean per (channel, y, x) over the images, not one per channel."""
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    quantize_convnet(model, 3)
    pattern = torch.linspace(-3, 3, 12)[None, None, :, None] * torch.linspace(0, 2, 12)  # (1, 1, 12, 12)
    calib = [torch.randn(8, 3, 12, 12) + pattern for _ in range(3)]
    calibrate_repq(model, calib[0])
    adapter = ConvAdapter(model)
    with quant_state(model):
        x = torch.cat([adapter.embed(b) for b in calib])  # inputs of block 0
        blk = model.layers[0]
        q = blk(x)
        with full_precision(blk):
            y = blk(x) - q  # (B, C, H, W)
    cfg = QwTConfig(kernel_size=3, factor=4)
    report = fit_qwt(adapter, calib, cfg)[0]
    # direct re-derivation: grouped ridge fit on unfolded patches, then the reference's R²
    g = report.extra["groups"]
    cols = F.unfold(x, 3, padding=1)  # (B, C*9, L), (c, ky, kx) per group
    xr = cols.transpose(1, 2).reshape(-1, g, cols.shape[1] // g).double()  # (n, G, D)
    yr = y.permute(0, 2, 3, 1).reshape(-1, g, y.shape[1] // g).double()  # (n, G, O)
    pred = torch.empty_like(yr)
    for k in range(g):
        xa = torch.cat([xr[:, k], torch.ones(len(xr), 1, dtype=torch.float64)], 1)
        w = torch.linalg.solve(xa.T @ xa + 1e-3 * torch.eye(xa.shape[1], dtype=torch.float64), xa.T @ yr[:, k])
        pred[:, k] = xa @ w
    ss_res = float((yr - pred).pow(2).sum())
    yd = y.double()
    r2_reference = 1 - ss_res / float((yd - yd.mean(dim=0)).pow(2).sum())
    rows = yr.reshape(len(yr), -1)
    r2_pooled = 1 - ss_res / float((rows - rows.mean(dim=0)).pow(2).sum())
    assert abs(r2_reference - r2_pooled) > 0.02  # the two centrings really differ here
    assert report.r2 == pytest.approx(r2_reference, abs=1e-5)


def test_fit_propagates_in_fp32_and_evaluates_in_fp16() -> None:
    """While fitting, block k+1 sees (Q(x) + x @ W) + b in fp32 (the reference's freshly built
    CompensationBlock is in training mode); the installed block evaluates
    (Q(x) + (x.half() @ W.half()).float()) + b (eval mode), in that order of additions."""
    model, _ = _transformer()
    calib = [torch.randn(8, 20, 12) for _ in range(2)]
    seen: list[torch.Tensor] = []
    hook = model.blocks[2].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    fit_qwt(TransformerAdapter(model), calib, QwTConfig(**SOLVER_PRESETS["lstsq"]))  # type: ignore[arg-type]
    hook.remove()
    c0, wrapped = model.blocks[0], model.blocks[1]
    W0, b0 = c0.compensation.weight.detach(), c0.compensation.bias.detach()
    W, b = wrapped.compensation.weight.detach(), wrapped.compensation.bias.detach()
    assert W.abs().sum() > 0
    with torch.no_grad(), quant_state(model):
        x0 = model.embed(calib[0])
        x1 = (c0.block(x0) + x0 @ W0) + b0  # what block 1 saw while fitting
        out = wrapped.block(x1)
        assert torch.equal(seen[0], (out + x1 @ W) + b)
        assert torch.equal(wrapped.eval()(x1), (out + (x1.half() @ W.half()).float()) + b)  # the default
        assert not torch.equal(seen[0], wrapped(x1))
        with eval_arithmetic(fp16=False):  # detection's evaluation arithmetic: the fp32 product
            assert torch.equal(wrapped(x1), (out + x1 @ W) + b)
