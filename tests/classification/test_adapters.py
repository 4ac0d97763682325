"""What each adapter quantizes (SPEC "Quantizers"), and the agreement / KL metrics."""
from __future__ import annotations

import math

import torch

from classification.adapters import QuantAttention, QuantWindowAttention, for_family
from classification.build import build_model
from classification.evaluate import evaluate
from qwt_core import LogSqrt2Quantizer, QuantConv2d, QuantLinear, UniformQuantizer


def _quantized(name: str, method: str | None = None, w: int = 4, a: int = 4):
    model, spec = build_model(name, tiny=True)
    adapter = for_family(spec.family)
    adapter.quantize(model, w, a, method or adapter.methods[0])
    return model, adapter


def test_vit_plan_distilled() -> None:
    model, adapter = _quantized("deit_small_distilled")
    assert isinstance(model.patch_embed.proj, QuantConv2d)
    assert model.patch_embed.proj.input_quantizer.n_bits == 8 and model.patch_embed.proj.weight_quantizer.n_bits == 4
    for head in (model.head, model.head_dist):
        assert isinstance(head, QuantLinear) and head.input_quantizer.channel_dim is None
    blk = model.blocks[0]
    assert isinstance(blk.attn, QuantAttention)
    assert blk.attn.qkv.input_quantizer.channel_dim == -1 and blk.mlp.fc1.input_quantizer.channel_dim == -1
    assert blk.attn.proj.input_quantizer.channel_dim is None and blk.mlp.fc2.input_quantizer.channel_dim is None
    assert isinstance(blk.attn.matmul1.quantizer_a, UniformQuantizer)
    assert isinstance(blk.attn.matmul2.quantizer_a, LogSqrt2Quantizer)
    assert adapter.reparam_pairs(model)[:2] == [("blocks.0.norm1", "blocks.0.attn.qkv"),
                                                ("blocks.0.norm2", "blocks.0.mlp.fc1")]
    assert not any(type(m) is torch.nn.Linear for m in model.modules())


def test_swin_plan_and_walk() -> None:
    model, adapter = _quantized("swin_tiny")
    assert isinstance(model.layers[0].blocks[0].attn, QuantWindowAttention)
    assert model.layers[1].downsample.reduction.input_quantizer.channel_dim == -1
    assert ("layers.1.downsample.norm", "layers.1.downsample.reduction") in adapter.reparam_pairs(model)
    assert isinstance(model.head.fc, QuantLinear)
    steps = adapter.blockwise(model).steps()
    assert [s.name for s in steps] == ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1.blocks.0", "layers.1.blocks.1"]
    assert steps[1].after is model.layers[1].downsample and steps[0].after is None and steps[-1].after is None


def test_resnet_reference_and_strict_plans() -> None:
    ref, adapter = _quantized("resnet50", "percentile", 4, 4)
    strict, _ = _quantized("resnet50", "percentile_strict", 4, 4)
    for model, conv_a in ((ref, 8), (strict, 4)):
        for name in ("conv1", "fc"):
            m = model.get_submodule(name)
            assert (m.weight_quantizer.n_bits, m.input_quantizer.n_bits) == (8, 8)
        for name in ("layer1.0.conv2", "layer2.0.downsample.0", "layer4.0.conv3"):
            m = model.get_submodule(name)
            assert (m.weight_quantizer.n_bits, m.input_quantizer.n_bits) == (4, conv_a), name
    assert adapter.reparam_pairs(ref) == []
    steps = adapter.blockwise(ref).steps()
    assert [s.name for s in steps] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert all(s.kind == "conv" for s in steps)


def test_agreement_and_kl_against_fp() -> None:
    class Fixed(torch.nn.Module):
        def __init__(self, logits: torch.Tensor) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.logits[idx]

    fp_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    q_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1])
    batches = [(torch.tensor([0, 1]), labels)]
    fp = evaluate(Fixed(fp_logits), batches, keep_logprobs=True)
    q = evaluate(Fixed(q_logits), batches, fp_logprobs=fp.logprobs)
    assert fp.metrics["top1"] == 100.0 and q.metrics["top1"] == 50.0 and q.metrics["top5"] == 100.0
    assert q.metrics["agreement_fp"] == 50.0
    p, lq = fp_logits.softmax(1), q_logits.log_softmax(1)
    expected = float((p * (p.log() - lq)).sum(1).mean())
    assert math.isclose(q.metrics["kl_fp"], expected, rel_tol=1e-5)
