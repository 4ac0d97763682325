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
  fractional zero points that the RepQ-ViT reparameterization leaves); where every zero point is an
  integer (all but the reparameterized inputs) ``round(x/d) + zp`` and ``- zp`` are exact, so the
  zero point moves into the clamp bounds, ``clamp(round(x / d), -zp, 2^n - 1 - zp) * d`` (the
  product is added to +0 so that -0 becomes +0 as the reference's ``(... - zp)`` makes it; see
  :func:`_folded_bounds` for the conditions); for log-sqrt(2) a table lookup of the 2^n output
  levels (int32 codes, ``index_select``) instead of the level arithmetic on every element. Used
  outside calibration and autograd only; bit-identity is tested on odd-sized tensors
  (``tests/core/test_weight_cache.py``, ``tests/perf/test_fast_paths.py``).
* **Fused CPU kernel.** Per-tensor uniform quantization of a dense fp32 CPU activation runs as one
  pass of :mod:`qwt_core.quant.fused` (the same operations in C, the same bits; ``QWT_CPU_KERNELS=0``
  or a missing C compiler leaves the torch passes above, chunked for large tensors).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fused
from .quantizers import LogSqrt2Quantizer, Quantizer, UniformQuantizer


def _ready(q: Quantizer) -> bool:
    """Quantizer enabled, initialised and not calibrating (its output is a pure function of x)."""
    return q.enabled and q.inited and not q.calibrating


def _log_levels(codes: Tensor, delta: Tensor) -> Tensor:
    """Output level of each log-sqrt(2) code: the expression of ``fake_quant_log_sqrt2``."""
    odd = (codes % 2) * (math.sqrt(2) - 1) + 1
    return 2 ** (-1 * torch.ceil(codes / 2)) * odd * delta


_EXACT_INT = 2.0**24  # integers up to this magnitude are exact in fp32


def _folded_bounds(q: UniformQuantizer, x: Tensor) -> tuple[float, float, Tensor] | None:
    """(lo, hi, +0) with ``clamp(round(x/d), lo, hi) * d + 0`` bit-identical to the reference's
    ``(clamp(round(x/d) + zp, 0, 2^n - 1) - zp) * d``, or None where that does not hold: only
    per-tensor ranges (a clamp with per-channel tensor bounds returns NaN with other bits).

    With r = round(x/d) integer-valued and zp an integer, r + zp and the subtraction of zp are
    exact while |r| < 2^24, so clamp(r + zp, 0, L) - zp = clamp(r, -zp, L - zp); beyond 2^24 both
    sides sit on a bound; NaN stays NaN on both. Zeros: the reference's c - zp is never -0 (c is
    never -0: for zp = +0, r + zp turns -0 into +0; and c - zp with c = zp is +0, -0 - (-0) too),
    so with d > 0 its zeros are +0, which adding +0 to the product reproduces.
    Cached on the range buffers (object and version).
    """
    zp, d = q.zero_point, q.delta
    key = (zp, zp._version, d, d._version, q.n_bits, q.channel_dim, x.dim(), x.dtype, x.device)
    cached = q.__dict__.get("_folded")
    if cached is not None and all((a is b) if isinstance(a, Tensor) else (a == b) for a, b in zip(cached[0], key)):
        return cached[1]
    bounds = None
    if zp.dim() == 0 and bool((zp == zp.round()) & (zp.abs() < _EXACT_INT) & (d > 0).all()):
        top = 2**q.n_bits - 1
        bounds = (float(-zp), float(top - zp), torch.zeros((), dtype=x.dtype, device=x.device))
    q.__dict__["_folded"] = (key, bounds)
    return bounds


#: CPU activations from this many elements on (32 MiB of fp32) are quantized chunk by chunk: the
#: elementwise passes then run on data in the L2 cache instead of streaming the tensor from memory
#: once per pass (2x faster on a (32, 3136, 384) tensor alone, about 3 % of a Swin-T QwT fit; no
#: gain below about 30 MiB; on a GPU one kernel per pass is better than many small ones)
LARGE_ACTIVATION = 1 << 23
CHUNK = 1 << 16  # elements per chunk (256 KiB of fp32)


def _chunked(fn: Any, x: Tensor) -> Tensor:
    """``fn(x)`` of an elementwise ``fn(x, out)``, computed over contiguous chunks of ``CHUNK``
    elements (the same operations on every element, so the same bits)."""
    out = torch.empty_like(x)
    xf, of = x.view(-1), out.view(-1)
    for start in range(0, xf.numel(), CHUNK):
        fn(xf[start:start + CHUNK], of[start:start + CHUNK])
    return out


def quantize_activation(q: Quantizer, x: Tensor) -> Tensor:
    """``q(x)``, computed with fewer full-size temporaries when ``q`` is ready and no gradient is
    recorded (bit-identical: the reference's elementwise operations in its order, or where the zero
    point is an integer the exact rewrite of :func:`_folded_bounds`)."""
    if (not _ready(q) or (torch.is_grad_enabled() and x.requires_grad)
            or x.dtype != q.delta.dtype or x.dtype != q.zero_point.dtype):
        return q(x)  # (mixed dtypes would promote differently in place)
    if type(q) is UniformQuantizer:
        delta, zp = q._broadcast(q.delta, x), q._broadcast(q.zero_point, x)
        bounds = _folded_bounds(q, x)
        top = 2**q.n_bits - 1

        def uniform(x: Tensor, t: Tensor | None = None) -> Tensor:
            t = torch.div(x, delta, out=t).round_() if t is not None else (x / delta).round_()
            if bounds is not None:  # integer zero points: 4 passes instead of 6, same bits
                return torch.addcmul(bounds[2], t.clamp_(bounds[0], bounds[1]), delta, out=t)
            # the reference's operations in its order, in place: round(x/d) + zp, clamp, - zp, * d
            # (zp fractional after the reparameterization: no shortcut through integer algebra)
            return t.add_(zp).clamp_(0, top).sub_(zp).mul_(delta)

        per_tensor = delta.dim() == 0 and zp.dim() == 0
        if per_tensor and fused.usable(x):  # one pass in C, the same bits
            if bounds is not None:
                return fused.fake_quant_folded(x, float(delta), bounds[0], bounds[1])
            return fused.fake_quant_zero_point(x, float(delta), float(zp), float(top))
        if per_tensor and x.numel() >= LARGE_ACTIVATION and x.device.type == "cpu" and x.is_contiguous():
            return _chunked(uniform, x)
        return uniform(x)
    if type(q) is LogSqrt2Quantizer:
        n_levels = 2**q.n_bits
        # round(-1 * log2(max(x / delta, floor)) * 2): negating and doubling are exact -> one * -2
        t = x / q.delta
        if q.ratio_floor is not None:  # the classification reference's floor (detection: none)
            t.clamp_(min=q.ratio_floor)
        t = t.log2_().mul_(-2).round_()
        if bool(t.min().isnan()):  # negative/NaN inputs: leave NaN handling to the reference path
            return q(x)
        # codes >= 2^n are "dead" (output 0): clamp them onto an extra table entry holding 0
        codes = torch.arange(n_levels, dtype=t.dtype, device=t.device)
        table = torch.cat([_log_levels(codes, q.delta), codes.new_zeros(1)])
        # int32 codes: half the bytes of int64 (the index tensor is as large as the attention map)
        return table.index_select(0, t.clamp_(0, n_levels).int().reshape(-1)).view(t.shape)
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
        w = self.weight.detach()
        if q.channel_dim == 0 and fused.channels_usable(w, q.delta, q.zero_point):  # one C pass, same bits
            wq = fused.fake_quant_channels(w, q.delta, q.zero_point, float(2**q.n_bits - 1))
        else:
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

    # declared for the type checker: provided by the nn.Linear / nn.Conv2d this is mixed into
    # (bias: a Parameter or None, typed differently by the two)
    weight: Tensor
    bias: Any

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
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


QUANT_LAYERS = (QuantLinear, QuantConv2d)


def describe(module: nn.Module) -> dict[str, Any]:
    """Bits of a quantized layer, for size reports."""
    if isinstance(module, QUANT_LAYERS):
        return {"w_bits": module.weight_quantizer.n_bits, "a_bits": module.input_quantizer.n_bits}
    return {}
