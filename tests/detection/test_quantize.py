"""RepQ-ViT + QwT on the mmdet Swin backbone: plan, window padding (the reference's zeros by
default, exact as the named option), quantizers the calibration image does not reach, and QwT
lowering the feature error on held-out images."""
from __future__ import annotations

import copy

import pytest
import torch

from qwt_core import QuantLinear, QwTConfig, eval_arithmetic, fit_qwt, full_precision, quant_state

from .helpers import TINY_DEPTHS

pytestmark = pytest.mark.detection


def _backbone(tiny, name="cascade_mask_rcnn_swin_t", seed=2):
    from .helpers import build

    return build(tiny[name][0], seed=seed).backbone


def _images(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g)


def test_plan_covers_every_linear_and_conv(tiny):
    from torch import nn

    from detection.quantize import build_plan, quantize_detector, reparam_pairs

    from .helpers import build

    model = build(tiny["cascade_mask_rcnn_swin_t"][0])
    plan = build_plan(model, 4, 4)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert sorted(plan) == sorted(layers)
    assert any(n.startswith("roi_head.bbox_head.2.shared_convs") for n in plan)
    assert any(n.startswith("roi_head.mask_head.0.conv_logits") for n in plan)
    assert plan["backbone.patch_embed.projection"].a_bits == 8
    cw = sorted(n for n, s in plan.items() if s.act_channel_wise)
    assert all(n.endswith(("attn.w_msa.qkv", "ffn.layers.0.0", "downsample.reduction")) for n in cw)
    assert len(cw) == 2 * sum(TINY_DEPTHS) + 3  # qkv + fc1 per block, 3 patch mergings
    assert len(reparam_pairs(model)) == len(cw)
    quantize_detector(model, 4, 4)
    assert isinstance(model.roi_head.bbox_head[0].fc_cls, QuantLinear)
    assert type(model.roi_head.mask_head[0].upsample).__name__ == "ConvTranspose2d"  # stays float


@pytest.mark.parametrize("hw", [(100, 76), (120, 92)])
def test_reparameterization_is_exact_with_window_padding(tiny, hw):
    """Token grids 25x19 / 30x23 ... are not multiples of the window (7): mmdet pads the
    normalized tokens. In full precision the reparameterized model equals the original only
    with the padding at -b (``exact_padding=True``, ``--window-pad exact``); the default, zero
    padding as in the reference, does not."""
    from detection.quantize import PadAwareShiftWindowMSA, calibrate_detector, quantize_detector

    bb = _backbone(tiny)
    ref = copy.deepcopy(bb)
    x = _images(2, *hw, seed=0)
    calib = _images(2, *hw, seed=1)
    with torch.no_grad():
        want = ref(x)
    quantize_detector(bb, 4, 4)
    calibrate_detector(bb, calib, forward=lambda m, b: m(b), exact_padding=True)
    attns = [m for m in bb.modules() if isinstance(m, PadAwareShiftWindowMSA)]
    assert attns and all(a.pad_value.abs().max() > 0 for a in attns)
    # the reparameterization really moved the norms (otherwise the test would be vacuous)
    assert not torch.allclose(bb.stages[0].blocks[0].norm1.bias, ref.stages[0].blocks[0].norm1.bias)
    with torch.no_grad(), full_precision(bb):
        got = bb(x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    # the default: the reference's zero padding (--window-pad zero) changes the FP function
    zero = _backbone(tiny)
    quantize_detector(zero, 4, 4)
    calibrate_detector(zero, calib, forward=lambda m, b: m(b))
    assert all(float(m.pad_value.abs().max()) == 0 for m in zero.modules()
               if isinstance(m, PadAwareShiftWindowMSA))
    with torch.no_grad(), full_precision(zero):
        naive = zero(x)
    assert max(float((n - w).abs().max()) for n, w in zip(naive, want)) > 1e-2
    with torch.no_grad(), quant_state(bb):  # the quantized forward runs
        q = bb(x)
    assert all(torch.isfinite(t).all() for t in q)


def test_window_padding_defaults_to_the_reference_zeros():
    """CLI, run and calibration defaults are the reference's zero padding; exact is opt-in."""
    import inspect

    from detection.cli import parser
    from detection.pipeline import DetectionRun
    from detection.quantize import calibrate_detector

    assert parser().parse_args(["--detector", "mask_rcnn_swin_t"]).window_pad == "zero"
    assert parser().parse_args(["--detector", "mask_rcnn_swin_t", "--window-pad", "exact"]).window_pad == "exact"
    assert DetectionRun().window_pad == "zero"
    assert inspect.signature(calibrate_detector).parameters["exact_padding"].default is False


def test_mask_head_unreached_in_calibration_initialises_on_first_evaluation_data(tiny, coco_root, caplog):
    """The calibration image yields no detection (score threshold above 1), so no mask-head
    quantizer sees data: the reference initialises them on the first evaluation data that
    reaches them; here too, with a log line at calibration and one per quantizer at evaluation."""
    import logging

    from mmengine.config import Config

    from detection.data import first_test_batch, set_data_root
    from detection.quantize import calibrate_detector, quantize_detector
    from qwt_core import quantizers, set_quant_state, uncalibrated

    from .helpers import build

    cfg_path = tiny["mask_rcnn_swin_t"][0]
    cfg = Config.fromfile(str(cfg_path))
    set_data_root(cfg, coco_root)
    model = build(cfg_path)
    quantize_detector(model, 4, 4)
    rcnn = model.roi_head.test_cfg
    rcnn.score_thr = 1.01  # no box survives: predict_mask never calls the mask head
    batch = first_test_batch(cfg)
    with caplog.at_level(logging.WARNING, logger="qwt_core"):
        lazy = calibrate_detector(model, batch, forward=lambda m, b: m.test_step(b))
    assert lazy and set(lazy) == set(uncalibrated(model))
    assert all(n.startswith("roi_head.mask_head.") for n in lazy)
    conv_logits = {"roi_head.mask_head.convs.0.conv.input_quantizer",
                   "roi_head.mask_head.conv_logits.weight_quantizer"}
    assert conv_logits <= set(lazy)
    assert any(r.name == "qwt_core.calibrate" and r.getMessage().startswith(f"{len(lazy)} quantizers")
               for r in caplog.records)
    caplog.clear()

    set_quant_state(model, weight=True, act=True)
    rcnn.score_thr = 0.0
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="qwt_core"):
        out = model.test_step(batch)
        out2 = model.test_step(batch)
    assert uncalibrated(model) == []
    assert len(out[0].pred_instances) > 0 and out[0].pred_instances.masks.shape[0] > 0
    logged = [r.getMessage().split()[1] for r in caplog.records if r.name == "qwt_core.quant"]
    assert sorted(logged) == sorted(lazy)  # once per quantizer, not per call
    torch.testing.assert_close(out[0].pred_instances.masks, out2[0].pred_instances.masks)
    assert all(q.init_on_first_use == (n in lazy) for n, q in quantizers(model))


def _smooth_images(n, h, w, seed):
    """Low-frequency images plus noise (closer to natural images than white noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.randn(n, 3, h // 8, w // 8, generator=g), size=(h, w),
                                        mode="bilinear")
    return x + 0.3 * torch.randn(n, 3, h, w, generator=g)


def test_qwt_lowers_backbone_feature_error_on_held_out_images(tiny):
    """Relative error of the four backbone outputs against full precision, on images QwT never
    saw, drops in every stage. The Linear weights get a unit-gain scale (std 1/sqrt(fan_in)) so
    that the blocks, not the residual shortcut, carry the features as in a trained Swin."""
    from torch import nn

    from detection.adapters import SwinBackboneAdapter
    from detection.quantize import calibrate_detector, quantize_detector

    bb = _backbone(tiny, seed=4)
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, m.in_features ** -0.5)
    quantize_detector(bb, 4, 4)
    calibrate_detector(bb, _smooth_images(2, 120, 92, seed=10), forward=lambda m, b: m(b))
    held_out = _smooth_images(4, 112, 112, seed=20)
    with torch.no_grad(), full_precision(bb):
        fp = bb(held_out)  # before QwT: the compensation is not part of the FP model

    def rel_errors() -> list[float]:
        with torch.no_grad(), quant_state(bb):
            q = bb(held_out)
        return [float((a - b).pow(2).mean() / a.pow(2).mean()) for a, b in zip(fp, q)]

    before = rel_errors()
    train = [_smooth_images(8, 112, 112, seed=30 + i) for i in range(3)]
    reports = fit_qwt(SwinBackboneAdapter(bb), train, QwTConfig())
    assert [r.name for r in reports] == [f"backbone.stages.{i}.blocks.{j}"
                                         for i, d in enumerate(TINY_DEPTHS) for j in range(d)]
    # the reference's keep/zero rule: a fit with R² <= 0 leaves its block uncompensated. Block 0
    # can meet it: its input, the patch embedding's LayerNorm output, is collinear with the bias
    # column (Σ_c (x_c - β_c) / γ_c = 0), and the reference's fp32 inverse of that singular XᵀX
    # gives no usable fit. Every later block is fitted and lowers its error.
    assert all(r.applied == (r.r2 > 0) for r in reports)
    assert all(r.applied and r.mse_after < r.mse_before for r in reports[1:])
    with eval_arithmetic(fp16=False):  # detection's evaluation arithmetic
        after = rel_errors()
    assert all(a < b for a, b in zip(after, before)), (before, after)
    assert sum(after) < 0.9 * sum(before), (before, after)
