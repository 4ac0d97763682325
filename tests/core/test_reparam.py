"""RepQ-ViT scale reparameterization keeps the full-precision function (rel. error <= 1e-5)."""
from __future__ import annotations

import copy

import pytest
import torch

from qwt_core import QuantLinear, calibrate_repq, full_precision, reparameterize
from qwt_core.quant.quantizers import UniformQuantizer

from .toy import TinyTransformer, quantize_transformer


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_reparameterized_model_equals_original_in_fp(qkv_bias: bool) -> None:
    model = TinyTransformer(qkv_bias=qkv_bias).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.5)
    ref = copy.deepcopy(model)
    x = torch.randn(8, 20, 12)
    pairs = quantize_transformer(model, bits=4)
    if not qkv_bias:
        assert model.blocks[0].attn.qkv.bias is None
    calibrate_repq(model, x, pairs)
    assert model.blocks[0].attn.qkv.bias is not None  # created by the reparameterization
    qkv_in = model.blocks[0].attn.qkv.input_quantizer
    assert isinstance(qkv_in, UniformQuantizer) and qkv_in.channel_dim is None and qkv_in.delta.dim() == 0
    held_out = torch.randn(8, 20, 12) * 1.5
    with torch.no_grad(), full_precision(model):
        for inp in (x, held_out):
            out, want = model(inp), ref(inp)
            assert float((out - want).norm() / want.norm()) <= 1e-5
    # the LayerNorm changed (otherwise the test would be vacuous)
    assert not torch.allclose(model.blocks[0].norm1.weight, ref.blocks[0].norm1.weight)


def _pair(seed: int) -> tuple[torch.nn.LayerNorm, QuantLinear, torch.Tensor]:
    """LayerNorm (perturbed affine: channel ranges differ by several x) -> QuantLinear with a
    calibrated channel-wise 4-bit input quantizer and its weight quantizer off."""
    g = torch.Generator().manual_seed(seed)
    norm = torch.nn.LayerNorm(12)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(12, generator=g) * 1.5 + 0.5)
        norm.bias.copy_(torch.randn(12, generator=g) * 0.5)
    lin = QuantLinear(torch.nn.Linear(12, 16), w_bits=8, a_bits=4, act_channel_wise=True)
    x = torch.randn(64, 12, generator=g) * 2
    iq = lin.input_quantizer
    with torch.no_grad():
        iq.initialise(norm(x))
    iq.inited = iq.enabled = True
    lin.weight_quantizer.enabled = False  # the weights are rescaled (their quantization is re-calibrated)
    return norm, lin, x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_tensor_quantization_after_reparam_is_channel_wise_quantization_before(seed: int) -> None:
    """RepQ-ViT's identity: with r = s_c / s_t, b = -z_c s_c / r + z_t s_t and X' = LN'(x) = X / r - b,
    X'/s_t = X/s_c + z_c - z_t, so where every channel has the same integer zero point (z_c = z_t)
    the per-tensor quantizer after the reparameterization gives the channel-wise codes of before,
    and W' = W·r, bias' = bias + W b undo the rescaling. The Linear outputs then agree up to float32
    rounding: the rewritten affine, W·r and the bias shift round once each (2⁻²⁴ relative), and a
    sum over D = 12 dequantized inputs accumulates a few such errors: 1e-5 of the output scale
    (one flipped code would move an output by a whole step, ~1e-1 here). With the calibrated,
    unequal zero points the codes move by at most one step: |Δout| <= Σ_d |W_od| s_d."""
    norm, lin, x = _pair(seed)
    iq = lin.input_quantizer
    with torch.no_grad():
        before = lin(norm(x))
        s_c = iq.delta.reshape(-1).clone()
        w = lin.weight.detach().clone()
        reparameterize(norm, lin)
        after = lin(norm(x))
    assert iq.channel_dim is None and iq.delta.dim() == 0
    assert float(s_c.max() / s_c.min()) > 1.5  # a non-trivial reparameterization
    step = (w.abs() * s_c).sum(1)  # (O,): one code step on every input
    assert bool(((after - before).abs() <= step * (1 + 1e-5)).all())

    norm, lin, x = _pair(seed)
    iq = lin.input_quantizer
    iq.set_range(iq.delta.clone(), torch.full_like(iq.zero_point, 8.0))  # equal integer zero points
    with torch.no_grad():
        before = lin(norm(x))
        reparameterize(norm, lin)
        after = lin(norm(x))
    assert float((after - before).abs().max()) <= 1e-5 * float(before.abs().max())
