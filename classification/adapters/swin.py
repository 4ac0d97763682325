"""Swin Transformer from timm 1.x (``SwinTransformer``; tensors are (B, H, W, C)).

Quantization as ViT (RepQ-ViT), plus the patch-merging ``reduction`` whose input (after its
LayerNorm) starts channel-wise and is reparameterized with ``downsample.norm``. Window attention
keeps the relative position bias and the shift mask; its two matmuls are :class:`QuantMatMul`.

timm 1.x puts PatchMerging at the START of stages 1..3 (the reference, timm 0.4.12, at the end of
stages 0..2): QwT walks every block of every stage in order, and the last block of stage s gets
``after = layers[s+1].downsample`` (quantized), so the walk is the same as the reference's.
"""
from __future__ import annotations

from typing import cast

import torch
from timm.models.swin_transformer import SwinTransformer, SwinTransformerStage, WindowAttention
from torch import Tensor, nn

from qwt_core import BlockStep, LayerSpec, QuantMatMul

from .base import Blockwise, FamilyAdapter, quantize_attention_module, transformer_plan

CHANNEL_WISE_INPUTS = ("attn.qkv", "mlp.fc1", "downsample.reduction")


class QuantWindowAttention(WindowAttention):
    """timm ``WindowAttention`` computed with two :class:`QuantMatMul` (no fused SDPA).

    x (nW·B, N, C); attn = matmul1(q·scale, kᵀ) + relative position bias (+ shift mask);
    out = matmul2(softmax(attn), v). The scale multiplies q before the quantized product, as in
    the reference's Swin (``window_attention_forward``): under quantization this is not the same
    as scaling the product (ViT/DeiT scale the product, as their reference does).
    """

    matmul1: QuantMatMul
    matmul2: QuantMatMul

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B_, H, N, D)
        attn = self.matmul1(q * self.scale, k.transpose(-2, -1))  # (B_, H, N, N)
        attn = attn + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(self.softmax(attn))
        x = self.matmul2(attn, v)  # (B_, H, N, D)
        x = x.transpose(1, 2).reshape(B_, N, -1)
        return self.proj_drop(self.proj(x))


def quantize_window_attention(attn: nn.Module, a_bits: int) -> QuantWindowAttention:
    """Turn a timm ``WindowAttention`` into a :class:`QuantWindowAttention` in place (same parameters)."""
    return quantize_attention_module(attn, WindowAttention, QuantWindowAttention, a_bits)  # type: ignore[return-value]


def _check(model: nn.Module) -> SwinTransformer:
    if not isinstance(model, SwinTransformer):
        raise TypeError(f"the swin adapter needs a timm SwinTransformer, got {type(model).__name__}")
    return model


def _stages(swin: SwinTransformer) -> list[SwinTransformerStage]:
    """``swin.layers`` as its stages (timm types it as an nn.Sequential of plain Modules)."""
    return [cast(SwinTransformerStage, stage) for stage in swin.layers]


class SwinAdapter(FamilyAdapter):
    family = "swin"
    methods = ("repq",)
    default_methods = ("fp", "repq", "repq+qwt")

    def plan(self, model: nn.Module, w_bits: int, a_bits: int, method: str) -> dict[str, LayerSpec]:
        return transformer_plan(_check(model), w_bits, a_bits, CHANNEL_WISE_INPUTS)

    def insert_matmuls(self, model: nn.Module, a_bits: int) -> None:
        for stage in _stages(_check(model)):
            for blk in stage.blocks:
                quantize_window_attention(blk.get_submodule("attn"), a_bits)

    def reparam_pairs(self, model: nn.Module) -> list[tuple[str, str]]:
        pairs = []
        for s, stage in enumerate(_stages(_check(model))):
            if not isinstance(stage.downsample, nn.Identity):
                pairs.append((f"layers.{s}.downsample.norm", f"layers.{s}.downsample.reduction"))
            for j in range(len(stage.blocks)):
                p = f"layers.{s}.blocks.{j}"
                pairs += [(f"{p}.norm1", f"{p}.attn.qkv"), (f"{p}.norm2", f"{p}.mlp.fc1")]
        return pairs

    def blockwise(self, model: nn.Module) -> Blockwise:
        swin = _check(model)
        stages = _stages(swin)
        if not isinstance(stages[0].downsample, nn.Identity):
            raise ValueError("swin adapter: stage 0 is expected to have no patch merging")
        steps: list[BlockStep] = []
        for s, stage in enumerate(stages):
            nxt = stages[s + 1].downsample if s + 1 < len(stages) else None
            for j in range(len(stage.blocks)):
                last = j == len(stage.blocks) - 1
                after = nxt if last and nxt is not None and not isinstance(nxt, nn.Identity) else None
                steps.append(BlockStep(f"layers.{s}.blocks.{j}", after=after))
        # (B, 3, H, W) -> (B, H/p, W/p, C) patch tokens
        return Blockwise(swin, swin.patch_embed, steps)

    @torch.no_grad()
    def features(self, model: nn.Module, images: Tensor) -> Tensor:
        return _check(model).forward_features(images)  # (B, H', W', C) after the final norm
