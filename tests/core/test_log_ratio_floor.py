"""The log-sqrt(2) quantizer's ratio floor is a setting: 1e-6 (classification reference ``Log2STE``,
the default) or none (detection reference ``LogSqrt2Quantizer``: plain ``log2(x / delta)``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qwt_core import LogSqrt2Quantizer, QuantMatMul, fake_quant_log_sqrt2, search_log_sqrt2_delta
from qwt_core.quant.layers import quantize_activation


def det_reference(x: np.ndarray, d: float, n: int) -> np.ndarray:
    """QwT-det-RepQ-ViT's LogSqrt2Quantizer.quantize re-derived in numpy (no floor)."""
    with np.errstate(divide="ignore"):
        k = np.round(-1 * np.log2(x / d) * 2)
    dead = k >= 2**n
    k = np.clip(k, 0, 2**n - 1)
    out = 2.0 ** (-np.ceil(k / 2)) * ((k % 2) * (math.sqrt(2) - 1) + 1) * d
    return np.where(dead, 0.0, out)


def attention(seed: int = 0) -> torch.Tensor:
    """Softmax rows with exact zeros (as -100 shift masks and underflow give) and tiny values."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 49, 49, generator=g) * 4
    logits[..., :10] = -200.0  # exp underflows to exactly 0 in fp32
    logits[..., 10:20] -= 40.0  # ~1e-18: far below 2^-32 delta
    return torch.softmax(logits, -1)


@pytest.mark.parametrize("n_bits", [6, 8])
def test_no_floor_maps_zero_and_tiny_probabilities_to_zero(n_bits: int) -> None:
    attn = attention()
    delta = search_log_sqrt2_delta(attn, n_bits, floor=None)
    out = fake_quant_log_sqrt2(attn, delta, n_bits, floor=None)
    dead = attn < float(delta) * 2.0 ** (-(2**n_bits - 0.5) / 2)  # codes >= 2^n: 0 in the reference
    assert bool(dead[..., :10].all()) and bool((attn[..., :10] == 0).all())
    assert (out[dead] == 0).all()
    np.testing.assert_array_equal(out.double().numpy(), det_reference(attn.double().numpy(), float(delta), n_bits)
                                  .astype(np.float32).astype(np.float64))


def test_default_floor_keeps_the_classification_behaviour() -> None:
    """At 6 bits the floored code of a zero is round(-2 log2 1e-6) = 40 -> 2^-20 delta, not 0."""
    attn = attention()
    delta = search_log_sqrt2_delta(attn, 6)
    out = fake_quant_log_sqrt2(attn, delta, 6)
    assert float(out[0, 0, 0, 0]) == pytest.approx(2.0**-20 * float(delta), rel=1e-6)
    q = LogSqrt2Quantizer(6)
    assert q.ratio_floor == 1e-6


@pytest.mark.parametrize("floor", [None, 1e-6])
def test_matmul_eval_fast_path_uses_the_quantizer_floor(floor: float | None) -> None:
    """QuantMatMul's evaluation fast path (table lookup) gives the quantizer's own result."""
    attn = attention(1)
    mm = QuantMatMul(6, log_a=True)
    mm.quantizer_a = LogSqrt2Quantizer(6, ratio_floor=floor)
    mm.quantizer_a.initialise(attn)
    mm.quantizer_a.inited = mm.quantizer_a.enabled = True
    with torch.no_grad():
        fast = quantize_activation(mm.quantizer_a, attn)
    slow = fake_quant_log_sqrt2(attn, mm.quantizer_a.delta, 6, floor)
    assert torch.equal(fast, slow)
    assert bool((fast[..., :10] == 0).all()) == (floor is None)


def test_bad_floor_is_refused() -> None:
    with pytest.raises(ValueError, match="ratio_floor"):
        LogSqrt2Quantizer(4, ratio_floor=0.0)
