"""Fake-quantized layers. Each wraps the parameters of an existing float layer (no copy).

Evaluation fast paths (bit-identical to calling the quantizers; ``tests/core/test_weight_cache.py``):

* **Weight cache.** After calibration the weights and their quantizer ranges do not change, so
  ``Q_w(W)`` is computed once and reused while nothing it depends on changes. The cache key is the
  weight tensor (object, storage pointer, in-place version counter) and the quantizer's range
  buffers (objects and version counters), bits and channel dim: in-place edits of the weight
  (reparameterization, ``load_state_dict``), a quantizer re-initialisation (new range tensors),
  ``.to()`` / ``.half()`` all invalidate it. Only edits through ``.data`` escape the version
  counter: call :func:`clear_weight_cache` after those. The cache is used only when the quantizer
  is enabled, initialised and not calibrating, and when no gradient is being recorded for the
  weight; it costs one extra copy of the layer's weight and is never part of the state dict.
* **Fused activation quantization.** ``quantize_activation`` computes the same elementwise
  results as the quantizers with fewer full-size temporaries: the reference's formula
  ``(clamp(round(x / d) + zp, 0, 2^n - 1) - zp) * d`` evaluated in place on one temporary (the
  operations and their order are the reference's, so the result is bit-identical also for the
  fractional zero points that the RepQ-ViT reparameterization leaves), and for log-sqrt(2) a table
  lookup of the 2^n output levels instead of the level arithmetic on every element. Used outside
  calibration and autograd only; bit-identity is tested on odd-sized tensors.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .primitives import LOG_RATIO_FLOOR
from .quantizers import LogSqrt2Quantizer, Quantizer, UniformQuantizer


def _ready(q: Quantizer) -> bool:
    """Quantizer enabled, initialised and not calibrating (its output is a pure function of x)."""
    return q.enabled and q.inited and not q.calibrating


def _log_levels(codes: Tensor, delta: Tensor) -> Tensor:
    """Output level of each log-sqrt(2) code: the expression of ``fake_quant_log_sqrt2``."""
    odd = (codes % 2) * (math.sqrt(2) - 1) + 1
    return 2 ** (-1 * torch.ceil(codes / 2)) * odd * delta


def quantize_activation(q: Quantizer, x: Tensor) -> Tensor:
    """``q(x)``, computed with fewer full-size temporaries when ``q`` is ready and no gradient is
    recorded (bit-identical: the same elementwise float operations in the same order)."""
    if (not _ready(q) or (torch.is_grad_enabled() and x.requires_grad)
            or x.dtype != q.delta.dtype or x.dtype != q.zero_point.dtype):
        return q(x)  # (mixed dtypes would promote differently in place)
    if type(q) is UniformQuantizer:
        delta, zp = q._broadcast(q.delta, x), q._broadcast(q.zero_point, x)
        # the reference's operations in its order, in place: round(x/d) + zp, clamp, - zp, * d
        # (zp may be fractional after the reparameterization: no shortcut through integer algebra)
        t = (x / delta).round_().add_(zp)
        return t.clamp_(0, 2**q.n_bits - 1).sub_(zp).mul_(delta)
    if type(q) is LogSqrt2Quantizer:
        n_levels = 2**q.n_bits
        # round(-1 * log2(max(x / delta, 1e-6)) * 2): negating and doubling are exact -> one * -2
        t = (x / q.delta).clamp_(min=LOG_RATIO_FLOOR).log2_().mul_(-2).round_()
        if bool(t.min().isnan()):  # negative/NaN inputs: leave NaN handling to the reference path
            return q(x)
        # codes >= 2^n are "dead" (output 0): clamp them onto an extra table entry holding 0
        codes = torch.arange(n_levels, dtype=t.dtype, device=t.device)
        table = torch.cat([_log_levels(codes, q.delta), codes.new_zeros(1)])
        return table[t.clamp_(0, n_levels).long()]
    return q(x)


class _CachedWeight:
    """``quantized_weight()``: Q_w(W), cached while W and the quantizer's range are unchanged."""

    weight: Tensor
    weight_quantizer: UniformQuantizer
    _wq_cache: tuple[tuple[Any, ...], Tensor] | None = None

    def _weight_key(self) -> tuple[Any, ...]:
        w, q = self.weight, self.weight_quantizer
        return (w, w.data_ptr(), w._version, w.dtype, w.device, q.delta, q.delta._version,
                q.zero_point, q.zero_point._version, q.n_bits, q.channel_dim)

    @staticmethod
    def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        return all((x is y) if isinstance(x, Tensor) else (x == y) for x, y in zip(a, b))

    def quantized_weight(self) -> Tensor:
        q = self.weight_quantizer
        if not _ready(q) or (torch.is_grad_enabled() and self.weight.requires_grad):
            return q(self.weight)
        key = self._weight_key()
        cache = self._wq_cache
        if cache is not None and self._same(cache[0], key):
            return cache[1]
        wq = q(self.weight).detach()
        self._wq_cache = (key, wq)
        return wq

    def clear_weight_cache(self) -> None:
        self._wq_cache = None


def clear_weight_cache(model: nn.Module) -> None:
    """Drop every cached quantized weight of ``model`` (needed only after edits through ``.data``)."""
    for m in model.modules():
        if isinstance(m, _CachedWeight):
            m.clear_weight_cache()


class _BiasOnLoad:
    """Create a missing bias when a state dict carries one (RepQ-ViT adds biases)."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = prefix + "bias"
        if key in state_dict and getattr(self, "bias", None) is None:
            self.bias = nn.Parameter(torch.empty_like(state_dict[key], device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]


class QuantLinear(_CachedWeight, _BiasOnLoad, nn.Linear):
    """y = Q_a(x) @ Q_w(W)^T + b; weights per output channel, inputs per tensor or per channel."""

    def __init__(self, linear: nn.Linear, w_bits: int, a_bits: int, act_channel_wise: bool = False) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_quantizer = UniformQuantizer(w_bits, channel_dim=0)
        self.input_quantizer = UniformQuantizer(a_bits, channel_dim=-1 if act_channel_wise else None)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(quantize_activation(self.input_quantizer, x), self.quantized_weight(), self.bias)


class QuantConv2d(_CachedWeight, _BiasOnLoad, nn.Conv2d):
    """Conv2d with per-output-channel weight quantization and per-tensor input quantization."""

    def __init__(self, conv: nn.Conv2d, w_bits: int, a_bits: int) -> None:
        nn.Module.__init__(self)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "groups", "padding_mode", "transposed", "output_padding",
                     "_reversed_padding_repeated_twice"):
            setattr(self, attr, getattr(conv, attr))
        self.weight = conv.weight
        self.bias = conv.bias
        self.weight_quantizer = UniformQuantizer(w_bits, channel_dim=0)
        self.input_quantizer = UniformQuantizer(a_bits, channel_dim=None)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(quantize_activation(self.input_quantizer, x), self.quantized_weight(), self.bias)


class QuantMatMul(nn.Module):
    """Q_a(a) @ Q_b(b). ``log_a=True`` gives ``a`` the log-sqrt(2) quantizer (attn @ v)."""

    def __init__(self, a_bits: int, log_a: bool = False) -> None:
        super().__init__()
        self.quantizer_a: Quantizer = LogSqrt2Quantizer(a_bits) if log_a else UniformQuantizer(a_bits)
        self.quantizer_b: Quantizer = UniformQuantizer(a_bits)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return quantize_activation(self.quantizer_a, a) @ quantize_activation(self.quantizer_b, b)


QUANT_LAYERS: tuple[type[nn.Module], ...] = (QuantLinear, QuantConv2d)


def describe(module: nn.Module) -> dict[str, Any]:
    """Bits of a quantized layer, for size reports."""
    if isinstance(module, QUANT_LAYERS):
        return {"w_bits": module.weight_quantizer.n_bits, "a_bits": module.input_quantizer.n_bits}
    return {}
