"""Detection's attention log-sqrt(2) quantizer has no ratio floor, as QwT-det-RepQ-ViT's
``tools/quant/quantizer.py`` (the 1e-6 floor is the classification reference's ``Log2STE``)."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("a_bits", [4, 6])
def test_attention_probabilities_of_zero_quantize_to_zero(a_bits: int) -> None:
    from mmdet.models.backbones.swin import SwinTransformer

    from detection.quantize import QuantWindowMSA, quantize_detector

    torch.manual_seed(0)
    swin = SwinTransformer(embed_dims=32, depths=(2, 1), num_heads=(2, 4), window_size=7, out_indices=(0, 1))
    swin.eval()  # (mmdet's SwinTransformer.train() returns None)
    quantize_detector(swin, 4, a_bits)
    msas = [m for m in swin.modules() if isinstance(m, QuantWindowMSA)]
    assert msas and all(m.matmul2.quantizer_a.ratio_floor is None for m in msas)
    q = msas[0].matmul2.quantizer_a
    attn = torch.softmax(torch.randn(4, 2, 49, 49) * 3 + torch.where(torch.rand(49) < 0.3, -100.0, 0.0), -1)
    q.calibrating = q.enabled = True
    out = q(attn)  # initialises on attn, then quantizes
    q.calibrating = False
    tiny = attn < q.delta * 2.0 ** -(2**a_bits)  # codes >= 2^n: the reference maps them to 0
    assert bool(tiny.any())
    assert bool((out[tiny] == 0).all())
