"""Quantizer math against a plain numpy re-derivation of RepQ-ViT's percentile-MSE search."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qwt_core import PERCENTILES, fake_quant_log_sqrt2, fake_quant_uniform, search_log_sqrt2_delta, search_uniform_range
from qwt_core.quant.primitives import lower_quantiles, per_channel_loop_search, upper_quantiles


def np_percentile_ref(x: np.ndarray, q: float) -> float:
    """The reference's percentile: torch.quantile (float32 ranks, linear interpolation) up to
    2^24 elements, numpy.percentile beyond."""
    if x.size > 2**24:
        return float(np.percentile(x, q * 100))
    v = np.sort(x.astype(np.float32))
    rank = np.float32(q) * np.float32(x.size - 1)
    lo, hi = int(np.floor(rank)), int(np.ceil(rank))
    w = np.float32(rank - np.floor(rank))
    return float(v[lo] + w * (v[hi] - v[lo]))


def np_quant(x: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    delta = (hi - lo) / (2**n - 1)
    zp = np.round(-lo / delta)
    return (np.clip(np.round(x / delta) + zp, 0, 2**n - 1) - zp) * delta


def np_search(x: np.ndarray, n: int) -> tuple[float, float]:
    """The reference per-tensor search, written out in numpy."""
    best = (0.0, 0.0, np.inf)
    for p in PERCENTILES:
        hi, lo = np_percentile_ref(x, p), np_percentile_ref(x, 1 - p)
        score = np.mean((x - np_quant(x, lo, hi, n)) ** 2)
        if score < best[2]:
            delta = (hi - lo) / (2**n - 1)
            best = (delta, np.round(-lo / delta), score)
    return best[0], best[1]


def test_quantiles_match_numpy_and_torch() -> None:
    x = torch.randn(5, 3001)
    qs_hi, qs_lo = [0.999, 0.9999, 0.99999, 0.5], [0.001, 0.0001, 0.00001, 0.5]
    hi, lo = upper_quantiles(x, qs_hi), lower_quantiles(x, qs_lo)
    xn = x.numpy()
    for c in range(5):
        np.testing.assert_allclose(hi[c].numpy(), [np_percentile_ref(xn[c], q) for q in qs_hi], rtol=1e-6)
        np.testing.assert_allclose(lo[c].numpy(), [np_percentile_ref(xn[c], q) for q in qs_lo], rtol=1e-6)
        # bit-identical to torch.quantile, which the reference calls on tensors up to 2^24 elements
        assert torch.equal(hi[c], torch.quantile(x[c], torch.tensor(qs_hi)))
        assert torch.equal(lo[c], torch.quantile(x[c], torch.tensor(qs_lo)))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_per_tensor_search_matches_numpy(bits: int) -> None:
    x = torch.randn(4, 197, 64) * torch.linspace(0.1, 3, 64)
    delta, zp = search_uniform_range(x, bits)
    d_ref, z_ref = np_search(x.double().numpy().ravel(), bits)
    assert delta.shape == zp.shape == ()
    assert float(delta) == pytest.approx(d_ref, rel=1e-6)
    assert float(zp) == z_ref


def test_per_channel_weights_match_numpy() -> None:
    w = torch.randn(48, 32) * torch.rand(48, 1) * 2  # (out, in): channel dim 0
    delta, zp = search_uniform_range(w, 4, channel_dim=0)
    for c in range(48):
        d_ref, z_ref = np_search(w[c].double().numpy(), 4)
        assert float(delta[c]) == pytest.approx(d_ref, rel=1e-6)
        assert float(zp[c]) == z_ref


def test_per_channel_activations_last_dim_match_numpy() -> None:
    x = torch.randn(2, 50, 24) * torch.rand(24) * 5 + torch.randn(24)  # (B, N, C): channel = last dim
    delta, zp = search_uniform_range(x, 4, channel_dim=-1)
    for c in range(24):
        d_ref, z_ref = np_search(x[:, :, c].double().numpy().ravel(), 4)
        assert float(delta[c]) == pytest.approx(d_ref, rel=1e-6)
        assert float(zp[c]) == z_ref


def test_per_channel_conv_weight_matches_loop_reference() -> None:
    w = torch.randn(16, 8, 3, 3)
    delta, zp = search_uniform_range(w, 4, channel_dim=0)
    d_loop, z_loop = per_channel_loop_search(w, 4, channel_dim=0)
    torch.testing.assert_close(delta, d_loop, rtol=1e-6, atol=0)
    torch.testing.assert_close(zp, z_loop, rtol=0, atol=0)


def test_tensor_larger_than_torch_quantile_limit() -> None:
    """torch.quantile rejects > 2^24 elements (the reference falls back to numpy there)."""
    x = torch.randn(16_777_216 + 4099)
    with pytest.raises(RuntimeError):
        torch.quantile(x, 0.999)
    delta, zp = search_uniform_range(x, 4)
    d_ref, z_ref = np_search(x.double().numpy(), 4)
    assert float(delta) == pytest.approx(d_ref, rel=1e-6)
    assert float(zp) == z_ref


def test_fake_quant_uniform_matches_numpy() -> None:
    x = torch.randn(1000) * 3
    out = fake_quant_uniform(x, torch.tensor(0.05), torch.tensor(7.0), 4)
    ref = (np.clip(np.round(x.numpy() / 0.05) + 7, 0, 15) - 7) * 0.05
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-7)
    assert len(torch.unique(out)) <= 16


def test_log_sqrt2_matches_numpy() -> None:
    attn = torch.softmax(torch.randn(2, 3, 20, 20) * 3, -1)
    delta = search_log_sqrt2_delta(attn, 4)
    a = attn.double().numpy().ravel()

    def q(x: np.ndarray, d: float, n: int = 4) -> np.ndarray:
        with np.errstate(divide="ignore"):
            k = np.round(-2 * np.log2(x / d))
        dead = k >= 2**n
        k = np.clip(k, 0, 2**n - 1)
        out = 2.0 ** (-np.ceil(k / 2)) * np.where(k % 2 == 1, np.sqrt(2), 1.0) * d
        return np.where(dead, 0.0, out)

    cands = [np.percentile(a, p * 100) for p in PERCENTILES]
    scores = [np.mean((a - q(a, d)) ** 2) for d in cands]
    assert float(delta) == pytest.approx(cands[int(np.argmin(scores))], rel=1e-6)
    out = fake_quant_log_sqrt2(attn, delta, 4).double().numpy().ravel()
    np.testing.assert_allclose(out, q(a, float(delta)), rtol=1e-5, atol=1e-9)
    assert (out[a < float(delta) * 2 ** -8.5] == 0).all()  # codes >= 2^n map to 0
