"""What each adapter quantizes (SPEC "Quantizers"), and the agreement / KL metrics."""
from __future__ import annotations

import math

import torch

from classification.adapters import QuantAttention, QuantWindowAttention, for_family
from classification.build import build_model
from classification.evaluate import evaluate
from qwt_core import LogSqrt2Quantizer, QuantConv2d, QuantLinear, UniformQuantizer


def _quantized(name: str, method: str | None = None, w: int = 4, a: int = 4, with_spec: bool = False):
    model, spec = build_model(name, tiny=True)
    adapter = for_family(spec.family)
    adapter.quantize(model, w, a, method or adapter.methods[0])
    return (model, adapter, spec) if with_spec else (model, adapter)


def _bits(m) -> tuple[int, int]:
    return m.weight_quantizer.n_bits, m.input_quantizer.n_bits


def test_vit_plan_distilled() -> None:
    """Reference quant_model: the patch-embedding conv and every Linear named '*head*' (head and
    head_dist) at 8-bit weights and inputs whatever the requested bits; the rest at n bits."""
    model, adapter = _quantized("deit_small_distilled", w=3, a=5)
    assert isinstance(model.patch_embed.proj, QuantConv2d)
    assert _bits(model.patch_embed.proj) == (8, 8)
    for head in (model.head, model.head_dist):
        assert isinstance(head, QuantLinear) and head.input_quantizer.channel_dim is None
        assert _bits(head) == (8, 8)
    for name in ("blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"):
        assert _bits(model.get_submodule(name)) == (3, 5), name
    assert model.blocks[0].attn.matmul1.quantizer_a.n_bits == 5
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
    assert isinstance(model.head.fc, QuantLinear) and _bits(model.head.fc) == (8, 8)
    assert _bits(model.patch_embed.proj) == (8, 8) and _bits(model.layers[0].blocks[0].attn.qkv) == (4, 4)
    steps = adapter.blockwise(model).steps()
    assert [s.name for s in steps] == ["layers.0.blocks.0", "layers.0.blocks.1",
                                       "layers.1.blocks.0", "layers.1.blocks.1"]
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


@torch.no_grad()
def test_swin_scales_q_before_matmul1_vit_after() -> None:
    """Reference order: Swin ``matmul1(q * scale, kᵀ)``, ViT/DeiT ``matmul1(q, kᵀ) * scale``;
    under quantization the two are different functions."""
    for name, scaled in (("swin_tiny", True), ("deit_tiny", False)):
        model, _, spec = _quantized(name, with_spec=True)
        attn = next(m for m in model.modules() if isinstance(m, (QuantWindowAttention, QuantAttention)))
        seen: dict[str, torch.Tensor] = {}
        # (hooks must return None: a returned value would replace the output / the inputs)
        attn.qkv.register_forward_hook(lambda m, i, o, seen=seen: seen.update(qkv=o))
        attn.matmul1.register_forward_pre_hook(lambda m, i, seen=seen: seen.update(a=i[0]))
        model.eval()(torch.randn(1, 3, spec.tiny_input_size, spec.tiny_input_size))  # quantizers off: FP
        qkv = seen["qkv"]
        q = qkv.reshape(qkv.shape[0], qkv.shape[1], 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)[0]
        want = q * attn.scale if scaled else q
        torch.testing.assert_close(seen["a"], want, rtol=0, atol=0, msg=name)
