"""Evaluation fast paths of the quantized layers are bit-identical to the quantizers: the cached
quantized weight (and its invalidation) and the fused activation quantization."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from qwt_core import (LayerSpec, QuantMatMul, calibration, load_state, quant_state, quantize_layers,
                      reparameterize, save_state)
from qwt_core.quant.layers import clear_weight_cache, quantize_activation
from qwt_core.quant.quantizers import LogSqrt2Quantizer, UniformQuantizer


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (torch.equal treats -0.0 == 0.0 and fails on NaN)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def _model() -> nn.Module:
    m = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))
    quantize_layers(m, {"1": LayerSpec(4, 4, act_channel_wise=True), "3": LayerSpec(3, 5)})
    with calibration(m):
        m(torch.randn(64, 16))
    return m


def _reference(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The same forward without any fast path: every quantizer called directly."""
    ln, l1, act, l2 = m[0], m[1], m[2], m[3]
    h = nn.functional.linear(l1.input_quantizer(ln(x)), l1.weight_quantizer(l1.weight), l1.bias)
    h = act(h)
    return nn.functional.linear(l2.input_quantizer(h), l2.weight_quantizer(l2.weight), l2.bias)


@torch.no_grad()
def test_cached_weight_is_reused_and_bit_identical() -> None:
    m = _model()
    x = torch.randn(8, 5, 16)
    with quant_state(m):
        out = m(x)
        first = m[1]._wq_cache[1]
        assert _same_bits(out, _reference(m, x))
        m(x)
        assert m[1]._wq_cache[1] is first  # reused, not recomputed


@torch.no_grad()
def test_cache_invalidates_on_weight_edit_reinit_load_and_device_moves(tmp_path) -> None:
    m = _model()
    x = torch.randn(8, 16)
    with quant_state(m):
        m(x)
        m[3].weight.mul_(1.5)  # in-place weight edit (as the reparameterization does)
        assert torch.equal(m(x), _reference(m, x))
        m[3].weight_quantizer.initialise(m[3].weight)  # quantizer re-initialised
        assert torch.equal(m(x), _reference(m, x))
    reparameterize(m[0], m[1])  # weight *= r, weight quantizer reset, then re-calibrated
    with calibration(m):
        m(x)
    with quant_state(m):
        assert torch.equal(m(x), _reference(m, x))
        save_state(m, tmp_path / "s.pt")
        other = _model()
    with quant_state(other), quant_state(m):
        other(x)  # fills other's cache with its own weights
        load_state(other, tmp_path / "s.pt")
        assert torch.equal(other(x), m(x))
        twin = copy.deepcopy(m).double()
        assert torch.equal(twin(x.double()), _reference(twin, x.double()))


@torch.no_grad()
def test_data_edits_need_clear_weight_cache() -> None:
    m = _model()
    x = torch.randn(8, 16)
    with quant_state(m):
        m(x)
        m[3].weight.data.copy_(torch.randn_like(m[3].weight))  # bypasses the version counter
        clear_weight_cache(m)
        assert torch.equal(m(x), _reference(m, x))


def test_no_cache_while_recording_gradients() -> None:
    m = _model()
    with quant_state(m):
        m(torch.randn(4, 16)).sum().backward()
    assert m[1]._wq_cache is None


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("channel_dim", [None, -1])
def test_fused_uniform_activation_is_bit_identical(bits: int, channel_dim: int | None) -> None:
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(3, 37, 29, generator=g) * torch.rand(29, generator=g) * 5  # odd sizes: scalar tails
    q = UniformQuantizer(bits, channel_dim=channel_dim)
    q.initialise(x)
    q.inited = q.enabled = True
    with torch.no_grad():
        assert _same_bits(quantize_activation(q, x), q(x))
        y = x * 3  # values outside the calibrated range get clamped
        assert _same_bits(quantize_activation(q, y), q(y))
        tiny = x * 1e-4  # x / delta in (-0.5, 0.5): signed zeros
        assert _same_bits(quantize_activation(q, tiny), q(tiny))


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_fused_log_sqrt2_activation_is_bit_identical(bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(2, 3, 49, 51, generator=g).softmax(-1)
    x[0, 0, 0, :5] = 0.0  # log2(0) = -inf: dead codes
    q = LogSqrt2Quantizer(bits)
    q.initialise(x)
    q.inited = q.enabled = True
    with torch.no_grad():
        assert _same_bits(quantize_activation(q, x), q(x))
        neg = x - 0.01  # negative inputs (NaN codes) fall back to the reference path
        assert torch.equal(quantize_activation(q, neg).isnan(), q(neg).isnan())
    mm = QuantMatMul(bits, log_a=True)
    with calibration(mm):
        mm(x, torch.randn(2, 3, 51, 8, generator=g))
    mm.quantizer_a.enabled = mm.quantizer_b.enabled = True
    v = torch.randn(2, 3, 51, 8, generator=g)
    with torch.no_grad():
        assert _same_bits(mm(x, v), mm.quantizer_a(x) @ mm.quantizer_b(v))
