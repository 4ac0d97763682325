"""RepQ-ViT + QwT on the mmdet Swin backbone: plan, exact reparameterization with window padding,
and QwT lowering the feature error on held-out images."""
from __future__ import annotations

import copy

import pytest
import torch

from qwt_core import QuantLinear, QwTConfig, fit_qwt, full_precision, quant_state

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
    because the padding uses -b; zero padding (the naive port) does not."""
    from detection.quantize import PadAwareShiftWindowMSA, calibrate_detector, quantize_detector

    bb = _backbone(tiny)
    ref = copy.deepcopy(bb)
    x = _images(2, *hw, seed=0)
    calib = _images(2, *hw, seed=1)
    with torch.no_grad():
        want = ref(x)
    quantize_detector(bb, 4, 4)
    calibrate_detector(bb, calib, forward=lambda m, b: m(b))
    attns = [m for m in bb.modules() if isinstance(m, PadAwareShiftWindowMSA)]
    assert attns and all(a.pad_value.abs().max() > 0 for a in attns)
    # the reparameterization really moved the norms (otherwise the test would be vacuous)
    assert not torch.allclose(bb.stages[0].blocks[0].norm1.bias, ref.stages[0].blocks[0].norm1.bias)
    with torch.no_grad(), full_precision(bb):
        got = bb(x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    # the reference's zero padding (--window-pad zero) changes the full-precision function
    zero = _backbone(tiny)
    quantize_detector(zero, 4, 4)
    calibrate_detector(zero, calib, forward=lambda m, b: m(b), exact_padding=False)
    assert all(float(m.pad_value.abs().max()) == 0 for m in zero.modules()
               if isinstance(m, PadAwareShiftWindowMSA))
    with torch.no_grad(), full_precision(zero):
        naive = zero(x)
    assert max(float((n - w).abs().max()) for n, w in zip(naive, want)) > 1e-2
    with torch.no_grad(), quant_state(bb):  # the quantized forward runs
        q = bb(x)
    assert all(torch.isfinite(t).all() for t in q)


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
    reports = fit_qwt(SwinBackboneAdapter(bb), train, QwTConfig(fp16_eval=False))
    assert [r.name for r in reports] == [f"backbone.stages.{i}.blocks.{j}"
                                         for i, d in enumerate(TINY_DEPTHS) for j in range(d)]
    assert all(r.applied and r.mse_after < r.mse_before for r in reports)
    after = rel_errors()
    assert all(a < b for a, b in zip(after, before)), (before, after)
    assert sum(after) < 0.9 * sum(before), (before, after)
