"""The CPU kernels (``qwt_core/native``): the fused fake quantization gives the same bits
as the torch passes, computed on this machine, for every layout and thread split it takes; a clean
fallback where it cannot be built."""
from __future__ import annotations

import math

import pytest
import torch

from qwt_core import native
from qwt_core.quant import fused
from qwt_core.quant.layers import quantize_activation
from qwt_core.quant.quantizers import UniformQuantizer

needs_kernel = pytest.mark.skipif(native.library() is None, reason="CPU kernels off (QWT_CPU_KERNELS=0) or not built")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """int32 view with every NaN mapped to one pattern (NaN payloads are not part of the claim)."""
    return torch.where(t.isnan(), torch.full_like(t, math.nan), t).view(torch.int32)


def _quantizer(zero_point_shift: float) -> UniformQuantizer:
    """A 4-bit per-tensor quantizer ranged on Gaussian noise, zero point moved by the shift."""
    q = UniformQuantizer(4)
    q.initialise(torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 3)
    q.set_range(q.delta, q.zero_point + zero_point_shift)
    q.enabled = True
    return q


def _hard_values(n: int, delta: float) -> torch.Tensor:
    """n fp32 values: exact ties of round(x / d) on both sides, +-0, +-inf, NaN, huge, denormals,
    values just around the 2^23 integer threshold of x / d, then Gaussian noise."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, generator=g) * 3
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e38, -1e38, 1e-40, -1e-40,
                            2.0**23 * delta, -(2.0**23) * delta, 2.0**22 * delta * 1.5, 2.0**23 * delta * 0.9999999])
    ties = torch.arange(-40, 40) * 0.5 * delta
    x[:special.numel()] = special
    x[special.numel():special.numel() + ties.numel()] = ties
    return x


@needs_kernel
@pytest.mark.parametrize("shift", [0.0, 0.37, -3.0], ids=["integer-zp", "fractional-zp", "shifted-zp"])
@pytest.mark.parametrize("n", [1, 17, 4099, (1 << 20) + 13])
def test_fused_matches_the_torch_passes(shift: float, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernel = torch passes bit for bit (both computed here), integer zero points (folded bounds)
    and fractional ones (the reference's formula), short and long tensors, one thread and several."""
    q = _quantizer(shift)
    x = _hard_values(max(n, 4096), float(q.delta))[:n] if n >= 100 else torch.randn(n) * 3
    with torch.no_grad():
        monkeypatch.setenv("QWT_CPU_KERNELS", "0")
        want = quantize_activation(q, x)
        assert _bits(want).equal(_bits(q(x)))
        levels = want[want.isfinite()].unique()
        assert n < 1000 or 8 <= levels.numel() <= 17  # (the 4-bit grid, + a fractional-zp clamp level)
        monkeypatch.setenv("QWT_CPU_KERNELS", "1")
        for threads in (1, 3):
            old = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                got = quantize_activation(q, x)
            finally:
                torch.set_num_threads(old)
            assert got.shape == x.shape and _bits(got).equal(_bits(want)), f"{threads} threads"


@needs_kernel
def test_fused_takes_dense_permuted_layouts_and_leaves_strided_views() -> None:
    """A permuted (dense) activation is computed in its own layout (the output keeps x's strides,
    as the torch passes' output does); a strided slice is not dense and goes the torch way."""
    q = _quantizer(0.37)
    x = _hard_values(6 * 7 * 5 * 11, float(q.delta)).view(6, 7, 5, 11)
    perm = x.permute(0, 2, 3, 1)  # (6, 5, 11, 7): dense, not contiguous
    sliced = x[:, :, :, :9]
    assert native.dense(perm) and not perm.is_contiguous() and not native.dense(sliced)
    with torch.no_grad():
        for t in (perm, sliced, x.transpose(-2, -1)):
            got = quantize_activation(q, t)
            want = q(t)
            assert got.stride() == want.stride() and _bits(got).equal(_bits(want))


def test_without_a_compiler_the_torch_path_runs(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """CC pointing nowhere: one warning naming the way out, then the same results as the quantizer."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("QWT_CPU_KERNELS", "1")
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_tried", False)
    q = _quantizer(0.0)
    x = _hard_values(5000, float(q.delta))
    with pytest.warns(RuntimeWarning, match="QWT_CPU_KERNELS=0"):
        assert native.library() is None
    with torch.no_grad():
        assert _bits(quantize_activation(q, x)).equal(_bits(q(x)))


def test_the_kernel_is_built_into_the_cache_once(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A fresh cache gets one library named after the source, compiler and flags; a second load
    reuses it."""
    if native.library() is None:
        pytest.skip("CPU kernels off (QWT_CPU_KERNELS=0) or not built")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = native.build()
    assert first.parent == tmp_path / "qwt" / "kernels" and first.exists()
    mtime = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == mtime
    assert list(first.parent.iterdir()) == [first]  # (no temporary file left behind)


@needs_kernel
@pytest.mark.parametrize("layout", ["tokens", "conv"])
def test_r2_sums_in_one_pass_match_the_torch_passes_and_float64(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ReferenceRows' R² and Σy² with the one-pass C sums = with the torch passes (another
    summation order: to fp32 rounding) = a float64 re-derivation from the kept rows; chunks of a
    few images, so that rows are split across chunks, and O not a multiple of 16 (the lanes' tail)."""
    from qwt_core import ReferenceRows
    from qwt_core.qwt import rows as rows_mod

    g = torch.Generator().manual_seed(7)
    monkeypatch.setattr(rows_mod, "R2_CHUNK", 200)
    if layout == "tokens":
        D, O, G = 24, 37, 1
        x = torch.randn(300, D, generator=g)
        y = x @ torch.randn(D, O, generator=g) * 0.3 + torch.randn(300, O, generator=g) + 2.0
    else:  # (B, G, D, h, w) columns, (B, G, O, h, w) targets
        D, O, G = 5, 19, 2
        x = torch.randn(6, G, D, 4, 3, generator=g)
        y = torch.einsum("bgdhw,gdo->bgohw", x, torch.randn(G, D, O, generator=g))
        y += torch.randn(6, G, O, 4, 3, generator=g)

    def fit(kernels: str) -> tuple[float, float, ReferenceRows]:
        monkeypatch.setenv("QWT_CPU_KERNELS", kernels)
        reg = ReferenceRows(D, O, G, ridge=1e-3 if layout == "conv" else 0.0)
        reg.update(x, y) if layout == "tokens" else reg.update_columns(x, y)
        sol = reg.solve()
        return sol.r2, float(reg.yy), reg

    r2_c, yy_c, reg = fit("1")
    r2_t, yy_t, _ = fit("0")
    assert r2_c == pytest.approx(r2_t, rel=1e-6) and yy_c == pytest.approx(yy_t, rel=1e-6)
    assert reg.rows is not None and reg._solved is not None
    Xa, Y = (t.double() for t in reg.rows)
    sol = reg._solved[0]
    pred = torch.einsum("gnd,gdo->gno", Xa[..., :-1], sol.weight.double()) + sol.bias.double()[:, None]
    P = reg.rows_per_image or 1
    Yi = Y.view(G, -1, P, O)
    ss_tot = float(((Yi - Yi.mean(dim=1, keepdim=True)) ** 2).sum())
    assert r2_c == pytest.approx(1 - float(((Y - pred) ** 2).sum()) / ss_tot, rel=1e-6)
    assert yy_c == pytest.approx(float((Y**2).sum()), rel=1e-6)
    assert 0.3 < r2_c < 0.99  # (a fit that explains part of Y: both sums matter)


@needs_kernel
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2)])
def test_max_pool_is_torchs_bit_for_bit(k: int, s: int, p: int) -> None:
    """The kernel's pooling = torch's max_pool2d on this machine, bit for bit (both computed here):
    odd sizes, windows clipped at the borders, -0/+0 ties in both orders (the first maximum wins),
    -inf everywhere in some windows, NaN (it wins)."""
    from qwt_core.native.maxpool import max_pool2d

    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 13, 10, generator=g).relu_()  # many exact +0 ties, as after the stem's ReLU
    x[0, 0, :4, :4] = torch.tensor([[0.0, -0.0], [-0.0, 0.0]]).repeat(2, 2)
    x[0, 1, 5:9, 2:6] = -math.inf
    x[1, 2, 3, 3] = math.nan
    x[1, 1, :, 0] = -0.0
    pool = torch.nn.MaxPool2d(k, s, p)
    got, want = max_pool2d(pool, x), pool(x)
    assert got.shape == want.shape and _bits(got).equal(_bits(want))
    assert got.isnan().any() and (got == -math.inf).any() or (k, s, p) != (3, 1, 1)
    # settings the kernel does not take go to the module: the same result either way
    for other in (torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, dilation=2),
                  torch.nn.MaxPool2d((3, 2), 2, 1)):
        assert _bits(max_pool2d(other, x)).equal(_bits(other(x)))
    assert _bits(max_pool2d(pool, x.transpose(-2, -1))).equal(_bits(pool(x.transpose(-2, -1))))
    for tiny in (torch.randn(1, 2, 1, 2, generator=g), torch.randn(1, 1, 2, 1, generator=g)):  # windows past both ends
        if (tiny.shape[-1] + 2 * p - k) // s + 1 >= 1 and (tiny.shape[-2] + 2 * p - k) // s + 1 >= 1:
            assert _bits(max_pool2d(pool, tiny)).equal(_bits(pool(tiny)))


@needs_kernel
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_cached_weights_from_the_kernel_are_the_quantizers_bits(kind: str) -> None:
    """The weight cache is filled by the per-channel kernel: the same bits as the quantizer on the
    weight (computed here), ties of round(w / d_c) on several channels and fractional zero points."""
    from qwt_core.quant.layers import QuantConv2d, QuantLinear

    g = torch.Generator().manual_seed(13)
    base = torch.nn.Linear(37, 11) if kind == "linear" else torch.nn.Conv2d(6, 11, 3)
    m = QuantLinear(base, 4, 4) if kind == "linear" else QuantConv2d(base, 4, 4)
    q = m.weight_quantizer
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=g))
        q.initialise(m.weight)
        q.set_range(q.delta, q.zero_point + torch.rand(q.zero_point.shape, generator=g) * (torch.arange(11) % 2))
        q.enabled = True
        flat = m.weight.view(11, -1)
        flat[:, :6] = (torch.arange(-3, 3) + 0.5) * q.delta.reshape(11, 1)  # exact ties per channel
        want = q(m.weight)
        got = m.quantized_weight()
        assert fused.channels_usable(m.weight.detach(), q.delta, q.zero_point)  # (the kernel's path)
    assert _bits(got).equal(_bits(want))
