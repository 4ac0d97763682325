"""ViT / DeiT (incl. distilled) from timm's VisionTransformer.

Quantization (RepQ-ViT, as the released ``quant_model``): every Linear: weights per output channel
n-bit, inputs per tensor n-bit; the inputs of ``qkv`` and ``fc1`` start channel-wise (they follow a
LayerNorm and are reparameterized to per-tensor); the patch-embedding conv and the heads (``head``,
``head_dist``): weights and inputs 8-bit. Attention: ``matmul1(q, kᵀ)·scale`` with both inputs
uniform n-bit (the reference's ViT/DeiT order),
``matmul2(softmax, v)`` with the probabilities log-sqrt(2) n-bit and v uniform n-bit.

QwT walks ``blocks.0 .. blocks.{L-1}``; block 0's input is the quantized patch embedding plus
cls/dist tokens and position embedding. A distilled DeiT averages its two heads in eval (timm).
"""
from __future__ import annotations

import torch
from timm.layers.attention import Attention, maybe_add_mask, resolve_self_attn_mask
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from qwt_core import BlockStep, LayerSpec, QuantMatMul

from .base import Blockwise, FamilyAdapter, quantize_attention_module, transformer_plan

CHANNEL_WISE_INPUTS = ("attn.qkv", "mlp.fc1")  # post-LayerNorm inputs (RepQ-ViT)


class QuantAttention(Attention):
    """timm ``Attention`` computed with two :class:`QuantMatMul` (no fused SDPA).

    x (B, N, C) -> q, k, v (B, H, N, D); attn = matmul1(q, kᵀ)·scale (B, H, N, N) (+ mask);
    out = matmul2(softmax(attn), v) (B, H, N, D) -> (B, N, H·D) -> proj.
    """

    matmul1: QuantMatMul
    matmul2: QuantMatMul

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        B, N, C = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, D) each
        q, k = self.q_norm(q), self.k_norm(k)
        attn = self.matmul1(q, k.transpose(-2, -1)) * self.scale  # (B, H, N, N)
        attn = maybe_add_mask(attn, resolve_self_attn_mask(N, attn, attn_mask, is_causal))
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = self.matmul2(attn, v)  # (B, H, N, D)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


def quantize_attention(attn: nn.Module, a_bits: int) -> QuantAttention:
    """Turn a timm ``Attention`` into a :class:`QuantAttention` in place (same parameters)."""
    return quantize_attention_module(attn, Attention, QuantAttention, a_bits)  # type: ignore[return-value]


def _check(model: nn.Module) -> VisionTransformer:
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"the vit adapter needs a timm VisionTransformer, got {type(model).__name__}")
    return model


class VitAdapter(FamilyAdapter):
    family = "vit"
    methods = ("repq",)
    default_methods = ("fp", "repq", "repq+qwt")

    def plan(self, model: nn.Module, w_bits: int, a_bits: int, method: str) -> dict[str, LayerSpec]:
        return transformer_plan(_check(model), w_bits, a_bits, CHANNEL_WISE_INPUTS)

    def insert_matmuls(self, model: nn.Module, a_bits: int) -> None:
        for blk in _check(model).blocks:
            quantize_attention(blk.get_submodule("attn"), a_bits)

    def reparam_pairs(self, model: nn.Module) -> list[tuple[str, str]]:
        pairs = []
        for i in range(len(_check(model).blocks)):
            pairs += [(f"blocks.{i}.norm1", f"blocks.{i}.attn.qkv"), (f"blocks.{i}.norm2", f"blocks.{i}.mlp.fc1")]
        return pairs

    def blockwise(self, model: nn.Module) -> Blockwise:
        vit = _check(model)

        def embed(images: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, N, C) tokens incl. cls/dist
            x = vit.patch_embed(images)
            x = vit._pos_embed(x)
            x = vit.patch_drop(x)
            return vit.norm_pre(x)

        return Blockwise(vit, embed, [BlockStep(f"blocks.{i}") for i in range(len(vit.blocks))])

    @torch.no_grad()
    def features(self, model: nn.Module, images: Tensor) -> Tensor:
        return _check(model).forward_features(images)  # (B, N, C) after the final norm
