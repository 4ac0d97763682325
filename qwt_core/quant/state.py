"""Quant-state control. Every switch is a context manager that restores the previous state on
exit, also when the body raises."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from .layers import QuantConv2d, QuantLinear
from .quantizers import Quantizer, UniformQuantizer


def quantizers(model: nn.Module) -> Iterator[tuple[str, Quantizer]]:
    """All quantizers of ``model`` with their qualified names."""
    for name, m in model.named_modules():
        if isinstance(m, Quantizer):
            yield name, m


def _is_weight_quantizer(name: str) -> bool:
    return name.endswith("weight_quantizer")


def set_quant_state(model: nn.Module, weight: bool, act: bool) -> None:
    """Enable/disable weight and activation quantizers (no restore; prefer :func:`quant_state`)."""
    for name, q in quantizers(model):
        q.enabled = weight if _is_weight_quantizer(name) else act


@contextlib.contextmanager
def quant_state(model: nn.Module, weight: bool = True, act: bool = True) -> Iterator[nn.Module]:
    """Temporarily set the quant state of every quantizer in ``model``; restores it on exit."""
    saved = [(q, q.enabled) for _, q in quantizers(model)]
    try:
        set_quant_state(model, weight, act)
        yield model
    finally:
        for q, enabled in saved:
            q.enabled = enabled


def full_precision(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Run ``model`` without quantization inside the block."""
    return quant_state(model, weight=False, act=False)


@contextlib.contextmanager
def calibration(model: nn.Module) -> Iterator[nn.Module]:
    """Quantized forward passes inside this block initialise every uninitialised quantizer on the
    tensor it first sees (in execution order, each seeing already-quantized inputs)."""
    qs = [q for _, q in quantizers(model)]
    saved = [(q, q.enabled, q.calibrating) for q in qs]
    try:
        for q in qs:
            q.enabled, q.calibrating = True, True
        yield model
    finally:
        for q, enabled, calibrating in saved:
            q.enabled, q.calibrating = enabled, calibrating


def uncalibrated(model: nn.Module) -> list[str]:
    """Names of quantizers that are not initialised yet."""
    return [n for n, q in quantizers(model) if not q.inited]


def reset_weight_quantizers(model: nn.Module) -> None:
    """Mark all weight quantizers uninitialised (to re-fit them after the weights changed)."""
    for m in model.modules():
        if isinstance(m, (QuantLinear, QuantConv2d)):
            m.weight_quantizer.inited = False


__all__ = ["quantizers", "set_quant_state", "quant_state", "full_precision", "calibration",
           "uncalibrated", "reset_weight_quantizers", "UniformQuantizer"]
