"""What every model family provides to the pipeline.

A family adapter knows, for one architecture family:
- ``methods``: the quantization methods it offers (base names; ``+qwt`` is added by QwT);
- ``quantize(model, w_bits, a_bits, method)``: insert quantized matmuls and swap Linear/Conv2d
  for fake-quantized twins according to ``plan``;
- ``reparam_pairs(model)``: (LayerNorm, Linear) pairs for RepQ-ViT's scale reparameterization;
- ``blockwise(model)``: the :class:`qwt_core.BlockwiseAdapter` that QwT walks;
- ``features(model, images)``: the final features before the classifier (for diagnostics/tests).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from qwt_core import BlockStep, LayerSpec, QuantMatMul, quantize_layers

EDGE_BITS = 8  # patch-embedding conv and classifier heads: 8-bit weights and inputs (reference quant_model)


@dataclass
class Blockwise:
    """A :class:`qwt_core.BlockwiseAdapter` built from an embed function and a list of steps."""

    model: nn.Module
    _embed: Callable[[Tensor], Tensor]  # images (B, 3, H, W) -> inputs of block 0
    _steps: Sequence[BlockStep]

    def embed(self, images: Tensor) -> Tensor:
        return self._embed(images)

    def steps(self) -> Sequence[BlockStep]:
        return self._steps

    def run(self, images: Tensor) -> Tensor:
        """embed -> every block (with its ``after``): the output of the last block."""
        x = self.embed(images)
        for step in self._steps:
            x = step.call(self.model.get_submodule(step.name), x)
            if step.after is not None:
                x = step.after(x)
        return x


def is_head(name: str) -> bool:
    """The reference's rule: every Linear whose name contains 'head' (``head``, ``head_dist``,
    timm 1.x Swin's ``head.fc``) is a classifier head."""
    return "head" in name


def transformer_plan(model: nn.Module, w_bits: int, a_bits: int,
                     channel_wise_inputs: tuple[str, ...]) -> dict[str, LayerSpec]:
    """RepQ-ViT's plan for ViT/DeiT/Swin as the released ``quant_model`` assigns it: the
    patch-embedding Conv2d and every head at 8 bits (weights per channel, inputs per tensor)
    whatever the requested bits; every other Linear with n-bit weights per channel and n-bit
    inputs per tensor, the post-LayerNorm inputs named by ``channel_wise_inputs`` starting
    channel-wise."""
    plan: dict[str, LayerSpec] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            if name.endswith(channel_wise_inputs):
                plan[name] = LayerSpec(w_bits, a_bits, act_channel_wise=True)
            elif is_head(name):
                plan[name] = LayerSpec(EDGE_BITS, EDGE_BITS)
            else:
                plan[name] = LayerSpec(w_bits, a_bits)
        elif isinstance(m, nn.Conv2d):
            plan[name] = LayerSpec(EDGE_BITS, EDGE_BITS)
    return plan


def quantize_attention_module(attn: nn.Module, timm_cls: type, quant_cls: type, a_bits: int) -> nn.Module:
    """Turn a timm attention module into its quantized subclass in place (same parameters):
    ``matmul1`` (q @ kᵀ, uniform) and ``matmul2`` (attn @ v, log-sqrt(2) on attn)."""
    if type(attn) is not timm_cls:
        raise TypeError(f"expected timm {timm_cls.__name__}, got {type(attn).__name__}")
    attn.__class__ = quant_cls
    attn.matmul1 = QuantMatMul(a_bits)
    attn.matmul2 = QuantMatMul(a_bits, log_a=True)
    return attn


class FamilyAdapter:
    """Base class; subclasses fill in the family specifics."""

    family: str = ""
    methods: tuple[str, ...] = ()  # quantization methods (without "+qwt")
    default_methods: tuple[str, ...] = ()  # what --methods means when not given

    def plan(self, model: nn.Module, w_bits: int, a_bits: int, method: str) -> dict[str, LayerSpec]:
        raise NotImplementedError

    def insert_matmuls(self, model: nn.Module, a_bits: int) -> None:
        """Replace attention so that its two matmuls are QuantMatMul modules (transformers)."""

    def quantize(self, model: nn.Module, w_bits: int, a_bits: int, method: str) -> nn.Module:
        """In place: quantized attention matmuls + fake-quantized Linear/Conv2d."""
        if method not in self.methods:
            raise ValueError(f"{self.family}: unknown method {method!r} (expected one of {self.methods})")
        self.insert_matmuls(model, a_bits)
        return quantize_layers(model, self.plan(model, w_bits, a_bits, method))

    def reparam_pairs(self, model: nn.Module) -> list[tuple[str, str]]:
        return []

    def blockwise(self, model: nn.Module) -> Blockwise:
        raise NotImplementedError

    def features(self, model: nn.Module, images: Tensor) -> Tensor:
        """Final features before pooling / the classifier."""
        raise NotImplementedError

    def qwt_kind(self) -> str:
        return "linear"
