"""RepQ-ViT scale reparameterization keeps the full-precision function (rel. error <= 1e-5)."""
from __future__ import annotations

import copy

import pytest
import torch

from qwt_core import calibrate_repq, full_precision, quant_state
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


def test_reparam_per_tensor_quantization_close_to_per_channel() -> None:
    """After reparameterization the per-tensor quantized model stays close to full precision."""
    model = TinyTransformer().eval()
    ref = copy.deepcopy(model)
    x = torch.randn(16, 20, 12)
    pairs = quantize_transformer(model, bits=8)
    calibrate_repq(model, x, pairs)
    with torch.no_grad(), quant_state(model):
        out = model(x)
    want = ref(x)
    assert float((out - want).norm() / want.norm()) < 0.05
