"""Family adapters: ``for_family(name)`` returns the adapter of 'vit', 'swin' or 'resnet'."""
from __future__ import annotations

from .base import Blockwise, FamilyAdapter
from .resnet import ResNetAdapter
from .swin import QuantWindowAttention, SwinAdapter
from .vit import QuantAttention, VitAdapter

ADAPTERS: dict[str, FamilyAdapter] = {"vit": VitAdapter(), "swin": SwinAdapter(), "resnet": ResNetAdapter()}


def for_family(family: str) -> FamilyAdapter:
    try:
        return ADAPTERS[family]
    except KeyError:
        raise ValueError(f"no adapter for family {family!r}; valid: {' '.join(ADAPTERS)}") from None


__all__ = ["ADAPTERS", "Blockwise", "FamilyAdapter", "QuantAttention", "QuantWindowAttention",
           "ResNetAdapter", "SwinAdapter", "VitAdapter", "for_family"]
