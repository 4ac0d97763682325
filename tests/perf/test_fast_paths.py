"""The performance paths of evaluation return the reference arithmetic's bits.

* ``eval_arithmetic(half_arith="native")`` on CPU: the result against PyTorch's own fp16 ``matmul`` / grouped
  ``conv2d`` on the same machine, bit for bit, on shapes with and without a tail of D mod 4 terms,
  strided and 3x3 convolutions, whichever path ran (the ordered fp32 re-implementation of ATen's
  fp16 dot product where the probe of the same shapes matched, the native kernel elsewhere); and
  the ordered dot against the plain loop of ATen's summation order (identical on any machine).
* ``"emulated"``: fp16 values within half an fp16 ulp plus the fp32 summation error of the exact
  product of the fp16 operands (float64), and its fp16 rounding almost everywhere.
* the integer-zero-point rewrite of the uniform fake quantizer against the quantizer itself,
  signed zeros, NaN, infinities and values far outside the range included, and its refusal of
  the cases where the rewrite would not be exact.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwt_core.quant.layers import _folded_bounds, quantize_activation
from qwt_core.quant.quantizers import UniformQuantizer
from qwt_core.qwt import halfdot


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int16 if t.dtype == torch.float16 else torch.int32)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _values(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * torch.exp2(torch.randint(-4, 5, shape, generator=g).float())


@pytest.mark.machine_kernels
@pytest.mark.parametrize("shape, d, o", [((3, 50, 96), 96, 96), ((2, 41, 101), 101, 77), ((40, 3), 3, 5),
                                         ((5, 66), 66, 1)])
def test_native_half_matmul_is_the_native_kernel_bit_for_bit(shape: tuple[int, ...], d: int, o: int) -> None:
    x, w = _values(shape, 1), _values((d, o), 2) * 0.05
    assert _same_bits(halfdot.half_matmul(x, w, "native"), (x.half() @ w.half()).float())


def _check_emulated(out: torch.Tensor, exact: torch.Tensor, magnitude: torch.Tensor, d: int) -> None:
    """``out`` is what "emulated" promises of the fp16 operands' product ``exact`` (float64, exact
    up to float64 rounding): fp16 values, each the fp16 rounding of a sum in fp32 (any order), so
    |out - exact| <= half an fp16 ulp of exact + the fp32 summation error d·2⁻²⁴·Σ|x_d w_d|, and
    equal to fp16(exact) except where exact lies that close to a rounding boundary."""
    assert out.dtype == torch.float32 and torch.equal(out.half().float(), out)  # fp16-representable
    ulp16 = torch.exp2(torch.floor(torch.log2(exact.abs().clamp_min(2.0 ** -14))) - 10)
    bound = 0.5 * ulp16 + d * 2.0 ** -24 * magnitude
    assert bool(((out.double() - exact).abs() <= bound).all())
    same = out.double() == exact.half().double()  # (float64 -> fp16: one rounding)
    assert float(same.double().mean()) > 0.99


@pytest.mark.parametrize("shape, d, o", [((3, 50, 96), 96, 96), ((2, 41, 101), 101, 77), ((40, 3), 3, 5)])
def test_emulated_half_matmul_is_an_fp32_product_of_fp16_operands_rounded_to_fp16(
        shape: tuple[int, ...], d: int, o: int) -> None:
    x, w = _values(shape, 11), _values((d, o), 12) * 0.05
    xh, wh = x.half().double(), w.half().double()
    assert not torch.equal(xh, x.double())  # the operands really get rounded
    _check_emulated(halfdot.half_matmul(x, w, "emulated"), xh @ wh, xh.abs() @ wh.abs(), d)


def test_emulated_half_conv_is_an_fp32_product_of_fp16_operands_rounded_to_fp16() -> None:
    x, w = _values((2, 24, 9, 9), 13), _values((48, 8, 3, 3), 14) * 0.05
    xh, wh = x.half().double(), w.half().double()
    exact = F.conv2d(xh, wh, None, 2, 1, 1, 3)
    magnitude = F.conv2d(xh.abs(), wh.abs(), None, 2, 1, 1, 3)
    _check_emulated(halfdot.half_conv2d(x, w, 2, 1, 3, "emulated"), exact, magnitude, 8 * 9)


@pytest.mark.machine_kernels
@pytest.mark.parametrize("b, c, hw, o, groups, stride, k", [
    (2, 256, 9, 256, 4, 1, 1), (2, 128, 10, 256, 2, 2, 1), (3, 64, 7, 64, 1, 1, 1),
    (2, 24, 8, 24, 2, 1, 3), (2, 24, 9, 48, 3, 2, 3)])
def test_native_half_conv_is_the_native_kernel_bit_for_bit(b: int, c: int, hw: int, o: int, groups: int,
                                                             stride: int, k: int) -> None:
    x, w = _values((b, c, hw, hw), 3), _values((o, c // groups, k, k), 4) * 0.05
    native = F.conv2d(x.half(), w.half(), None, stride, k // 2, 1, groups).float()
    assert _same_bits(halfdot.half_conv2d(x, w, stride, k // 2, groups, "native"), native)


@pytest.mark.machine_kernels
def test_ordered_dot_is_used_only_where_the_probe_matched(monkeypatch: pytest.MonkeyPatch) -> None:
    """On any CPU the result is the native kernel's bits: the ordered dot computes it only where
    the probe of the same shapes matched this machine's kernel, else the native kernel runs (on an
    AVX512-FP16 CPU oneDNN's fp16 GEMM sums in another order than ATen's scalar loop)."""
    x, w = _values((4, 30, 52), 5), _values((52, 20), 6) * 0.05
    native = (x.half() @ w.half()).float()
    calls: list[int] = []
    real = halfdot.native_order_dot

    def wrong(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(1)  # the same terms summed in reverse order
        return real(a.flip(2), b.flip(-1), out)

    monkeypatch.setattr(halfdot, "_VERIFIED", {})
    monkeypatch.setattr(halfdot, "native_order_dot", wrong)
    assert _same_bits(halfdot.half_matmul(x, w, "native"), native)  # the probe failed: native kernel
    assert len(calls) <= 1 and not any(halfdot._VERIFIED.values())  # (never probed on fp16 hardware)

    counted: list[int] = []

    def counting(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        counted.append(1)
        return real(a, b, out)

    monkeypatch.setattr(halfdot, "native_order_dot", counting)
    monkeypatch.setattr(halfdot, "_VERIFIED", {})
    assert _same_bits(halfdot.half_matmul(x, w, "native"), native)
    (matched,) = halfdot._VERIFIED.values()
    probes = len(counted) - 1 if matched else len(counted)
    assert probes <= 2 and (not matched or probes == 2)  # two probe draws, then the call itself
    assert matched or halfdot.fp16_gemm_hardware() or probes >= 1
    assert _same_bits(halfdot.half_matmul(x, w, "native"), native)
    assert len(counted) == probes + (2 if matched else 0)  # probed once per shape


def _scalar_loop_order(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """ATen's CPU fp16 dot product written out: x (R, D), w (D, O) rounded to fp16; term d into
    partial sum d mod 4 (a tail of D mod 4 terms into sum 0), fp32 additions in order, combined as
    ((s0 + s1) + s2) + s3, rounded once to fp16. Products of fp16 numbers are exact in fp32, so
    every step is one IEEE rounding: the same bits on any machine."""
    xh, wh = x.half().float(), w.half().float()
    D = w.shape[0]
    full = D - D % 4
    s = torch.zeros(4, x.shape[0], w.shape[1])
    for d in range(D):
        lane = d % 4 if d < full else 0
        s[lane] = s[lane] + xh[:, d, None] * wh[d]
    return (((s[0] + s[1]) + s[2]) + s[3]).half().float()


@pytest.mark.parametrize("rows, d, o", [(7, 3, 5), (9, 66, 4), (130, 101, 17)])
def test_ordered_dot_is_the_scalar_loop_order(rows: int, d: int, o: int) -> None:
    """The vectorised, chunked ordered dot against the plain loop it stands for (any machine)."""
    x, w = _values((rows, d), 7), _values((d, o), 8) * 0.05
    res = torch.empty(rows, o)
    halfdot.native_order_dot(x.t()[None, None], w.t()[None], res.t()[None, None])
    assert _same_bits(res, _scalar_loop_order(x, w))


def test_unknown_half_arith_is_rejected() -> None:
    with pytest.raises(ValueError, match="half_arith"):
        halfdot.half_matmul(torch.zeros(2, 3), torch.zeros(3, 4), "fp32")


def _quantizer(bits: int, channel_dim: int | None, x: torch.Tensor) -> UniformQuantizer:
    q = UniformQuantizer(bits, channel_dim=channel_dim)
    q.initialise(x)
    q.inited = q.enabled = True
    return q


def _specials(x: torch.Tensor) -> torch.Tensor:
    y = x.clone().reshape(-1)
    y[:8] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 3e38, -3e38, 1e-30])
    return y.reshape(x.shape)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("channel_dim", [None, -1])
def test_integer_zero_point_rewrite_is_bit_identical(bits: int, channel_dim: int | None) -> None:
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(3, 37, 29, generator=g) * torch.rand(29, generator=g) * 5 + 1.5
    q = _quantizer(bits, channel_dim, x)
    # integer zero points: the rewrite is taken per tensor (per channel, the reference path)
    assert (_folded_bounds(q, x) is not None) == (channel_dim is None)
    with torch.no_grad():
        for y in (x, x * 4, x * 1e-4 - 1e-5, _specials(x), -x):
            assert _same_bits(quantize_activation(q, y), q(y))


@pytest.mark.parametrize("zp, delta", [(2.5, 0.1), (3.0, -0.1), (2.0**25, 0.1)])
def test_rewrite_refused_where_it_would_not_be_exact(zp: float, delta: float) -> None:
    x = torch.randn(4, 33, generator=torch.Generator().manual_seed(0))
    q = _quantizer(4, None, x)
    q.set_range(torch.tensor(delta), torch.tensor(zp))
    assert _folded_bounds(q, x) is None
    with torch.no_grad():
        for y in (x, x * 1e-4, _specials(x)):
            assert _same_bits(quantize_activation(q, y), q(y))


@pytest.mark.parametrize("zp", [0.0, -0.0, -3.0, 9.0])
def test_rewrite_taken_for_every_integer_zero_point(zp: float) -> None:
    x = torch.randn(4, 33, generator=torch.Generator().manual_seed(2))
    q = _quantizer(4, None, x)
    q.set_range(torch.tensor(0.25), torch.tensor(zp))
    assert _folded_bounds(q, x) is not None
    with torch.no_grad():
        for y in (x, x * 1e-3, -x * 1e-3, _specials(x)):
            assert _same_bits(quantize_activation(q, y), q(y))


def test_rewrite_follows_range_edits() -> None:
    x = torch.randn(4, 33, generator=torch.Generator().manual_seed(1))
    q = _quantizer(4, None, x)
    assert _folded_bounds(q, x) is not None
    q.zero_point.add_(0.5)  # in-place edit: fractional now, the cached decision must not be reused
    assert _folded_bounds(q, x) is None
    with torch.no_grad():
        assert _same_bits(quantize_activation(q, x), q(x))
