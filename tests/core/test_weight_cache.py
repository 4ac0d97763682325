"""Evaluation fast paths of the quantized layers are bit-identical to the quantizers: the cached
quantized weight (and its invalidation) and the fused activation quantization."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from qwt_core import (
    LayerSpec,
    QuantMatMul,
    calibration,
    load_state,
    quant_state,
    quantize_layers,
    reparameterize,
    save_state,
)
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


def _reference_uniform(x: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, bits: int) -> torch.Tensor:
    """The released code's UniformQuantizer.forward, operation for operation."""
    x_int = torch.round(x / delta) + zp
    return (torch.clamp(x_int, 0, 2**bits - 1) - zp) * delta


def _reference_log_sqrt2(x: torch.Tensor, delta: torch.Tensor, bits: int) -> torch.Tensor:
    """The released code's LogSqrt2Quantizer.quantize (Log2STE floors x / delta at 1e-6)."""
    x_int = torch.round(-1 * torch.log2(torch.clamp(x / delta, min=1e-6)) * 2)
    mask = x_int >= 2**bits
    x_quant = torch.clamp(x_int, 0, 2**bits - 1)
    odd = (x_quant % 2) * (2**0.5 - 1) + 1
    out = 2 ** (-1 * torch.ceil(x_quant / 2)) * odd * delta
    out[mask] = 0
    return out


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
def test_fractional_zero_point_is_the_reference_function(bits: int) -> None:
    """After the RepQ-ViT reparameterization the per-tensor zero point is the un-rounded mean of the
    channel zero points: the fused path must still compute (clamp(round(x/d) + zp) - zp) * d."""
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(4, 197, 96, generator=g) * 2 + 0.3
    q = UniformQuantizer(bits, channel_dim=-1)
    q.initialise(x)
    q.make_per_tensor(q.delta.mean(), q.zero_point.mean())  # as reparameterize() leaves it
    assert float(q.zero_point) != round(float(q.zero_point))
    q.enabled = True
    want = _reference_uniform(x, q.delta, q.zero_point, bits)
    with torch.no_grad():
        assert _same_bits(q(x), want)
        assert _same_bits(quantize_activation(q, x), want)


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_log_sqrt2_is_the_reference_function_on_tiny_probabilities(bits: int) -> None:
    """Probabilities below 1e-6 * delta (zeros included) take code 40 in the reference: 0 up to
    5 bits, 2^-20 delta from 6 bits on."""
    g = torch.Generator().manual_seed(bits)
    x = (torch.randn(2, 3, 49, 49, generator=g) * 6).softmax(-1)
    x[0, 0, 0, :7] = torch.tensor([0.0, 1e-30, 1e-12, 1e-9, 3e-8, 1e-7, 1e-6])
    q = LogSqrt2Quantizer(bits)
    q.initialise(x)
    q.inited = q.enabled = True
    want = _reference_log_sqrt2(x, q.delta, bits)
    with torch.no_grad():
        assert _same_bits(q(x), want)
        assert _same_bits(quantize_activation(q, x), want)
    if bits >= 6:
        assert float(want[0, 0, 0, 0]) == float(2.0**-20 * q.delta)


@pytest.mark.parametrize("fractional", [False, True])
def test_large_activations_quantized_in_chunks_are_bit_identical(fractional: bool, monkeypatch) -> None:
    """Without the fused kernel, from ``LARGE_ACTIVATION`` elements on, the uniform quantization
    runs chunk by chunk (in the L2 cache): the same bits as the quantizer itself, integer or
    fractional zero point, on a tensor whose size is not a multiple of the chunk (a short last
    chunk), with ties, zeros and -0."""
    from qwt_core.quant.layers import CHUNK, LARGE_ACTIVATION

    monkeypatch.setenv("QWT_CPU_KERNELS", "0")

    g = torch.Generator().manual_seed(3)
    x = torch.randn(LARGE_ACTIVATION + CHUNK // 2 + 3, generator=g) * 3
    q = UniformQuantizer(4)
    q.initialise(x[:4096])
    q.set_range(q.delta, q.zero_point + (0.37 if fractional else 0.0))
    q.enabled = True
    x[:64] = torch.arange(-32, 32) * 0.5 * q.delta  # exact ties of round(x / d)
    x[64:66] = torch.tensor([0.0, -0.0])
    with torch.no_grad():
        assert _same_bits(quantize_activation(q, x), q(x))
        strided = x[:LARGE_ACTIVATION + 3].view(-1, 11)[:, :9]  # not contiguous: the unchunked path
        assert _same_bits(quantize_activation(q, strided), q(strided))
