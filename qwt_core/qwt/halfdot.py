"""The fp16 products of QwT evaluation: ``(x.half() @ W.half()).float()`` and the grouped fp16
convolution, in two named arithmetics (``QwTConfig.half_arith``).

``"native"`` (default) is the device's own fp16 kernel, bit for bit: the reference's evaluation
arithmetic. On a CUDA device that kernel is called. On a CPU without fp16 hardware (no AVX512-FP16
/ AMX-FP16) PyTorch's fp16 GEMM -- used by ``mm`` and by the slow fp16 convolution -- is a scalar
loop: every output is the dot product of fp16 operands whose products are exact in fp32, summed
in fp32 into 4 interleaved partial sums (term l goes to sum l mod 4, a tail of D mod 4 terms to sum
0), combined as ((s0 + s1) + s2) + s3 and rounded once to fp16 (``sum`` in ATen's
``BlasKernel.cpp``). That loop runs at about 1 GFLOP/s. :func:`native_order_dot` performs exactly
the same fp32 additions in the same order, vectorised across the outputs (one ``addcmul_`` per
group of 4 terms), so it returns the same bits about ten times faster. It is used only after a
probe of exactly the same shapes has returned bit-identical results to the native kernel in this
process (:func:`_verified`); otherwise (a CPU whose fp16 GEMM goes to oneDNN, e.g. one with
AVX512-FP16, another PyTorch) the native kernel itself runs. Either way the bits are the native
kernel's of the machine it runs on: "native" is a same-machine promise.

``"emulated"`` rounds both operands to fp16, multiplies in fp32 with the fast fp32 kernels (any
summation order) and rounds the product to fp16: fp32 speed, but not the native kernel's bits
(about 0.2 % of the outputs differ by one fp16 ulp on a CPU, and fake quantization downstream turns
such last-bit differences into different logits).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .threads import one_thread

HALF_ARITHS = ("native", "emulated")
ILP = 4  # partial sums of ATen's CPU dot product (BlasKernel.cpp ``sum``)
CHUNK_ELEMENTS = 1 << 21  # partial sums per chunk (8 MiB of fp32): fewer, longer passes (measured best)
MKLDNN_MIN_WORK = 16 * 16 * 16  # ATen sends fp16 GEMMs above this many MACs to oneDNN where it can


def _check(arith: str) -> None:
    if arith not in HALF_ARITHS:
        raise ValueError(f"half_arith must be one of {HALF_ARITHS}, got {arith!r}")


def native_order_dot(x: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """out[b, g, o, *s] = fp16(Σ_d w[g, o, d] x[b, g, d, *s]), the sum in fp32 in the order of
    ATen's CPU fp16 dot product (returned as fp32 holding fp16 values).

    x: (B, G, D, *S), any float dtype and strides: rounded to fp16 here, chunk by chunk (the
    product of two fp16 numbers is exact in fp32, so only the additions round); w: (G, O, D).
    ``out``: (B, G, O, *S) float32 to write into (any strides), allocated when None. Works on
    chunks of images and positions so that the partial sums (4 per output) and the converted
    inputs stay within a few MiB.
    """
    B, G, D = x.shape[:3]
    S = tuple(x.shape[3:])
    L = math.prod(S)
    O = w.shape[1]
    J = D // ILP  # full groups of ILP terms; terms J*ILP .. D-1 are the tail (added to sum 0)
    w = w.half().float()
    wj = w[:, :, :J * ILP].unflatten(-1, (J, ILP)).permute(2, 0, 3, 1).unsqueeze(-1)  # (J, G, ILP, O, 1)
    wt = w[:, :, J * ILP:].permute(2, 0, 1).unsqueeze(-1)  # tail (D - J*ILP, G, O, 1)
    if out is None:
        out = torch.empty(B, G, O, *S, dtype=torch.float32, device=x.device)
    per_image = G * ILP * max(O, D) * L
    bc = max(1, CHUNK_ELEMENTS // per_image)  # images per chunk
    if bc == 1 and len(S) != 1:  # one image is more than a chunk: chunk its positions (flat)
        x, out_flat = x.reshape(B, G, D, L), out.view(B, G, O, L) if out.is_contiguous() else None
        if out_flat is None:
            res = native_order_dot(x, w, None)
            out.copy_(res.view(out.shape))
            return out
        native_order_dot(x, w, out_flat)
        return out
    lc = L if bc > 1 or not S else max(1, CHUNK_ELEMENTS // (G * ILP * max(O, D)))  # positions per chunk
    for b0 in range(0, B, bc):
        b1 = min(B, b0 + bc)
        for l0 in range(0, max(L, 1), lc):
            l1 = min(L, l0 + lc)
            xs = x[b0:b1] if bc > 1 or not S else x[b0:b1, ..., l0:l1]
            xh = torch.empty(xs.shape, dtype=torch.float16, device=x.device).copy_(xs)  # fp16 rounding
            xf = torch.empty(xs.shape, dtype=torch.float32, device=x.device).copy_(xh).view(b1 - b0, G, D, -1)
            xj = xf[:, :, :J * ILP].unflatten(2, (J, ILP)).unsqueeze(-2)  # (b, G, J, ILP, 1, l)
            p = torch.zeros(b1 - b0, G, ILP, O, xf.shape[-1], dtype=torch.float32, device=x.device)
            for j in range(J):
                p.addcmul_(xj[:, :, j], wj[j])
            p0 = p[:, :, 0]
            for t in range(D - J * ILP):  # tail terms go to partial sum 0, in order
                p0.addcmul_(xf[:, :, J * ILP + t, None], wt[t])
            acc = p0
            for k in range(1, ILP):
                acc = acc + p[:, :, k]
            dst = out[b0:b1] if bc > 1 or not S else out[b0:b1, ..., l0:l1]
            dst.copy_(acc.half().view(dst.shape))
    return out


def _bits_equal(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int16), b.view(torch.int16))


_VERIFIED: dict[tuple, bool] = {}


def _probe_values(shape: tuple[int, ...], gen: torch.Generator, span: int = 6) -> Tensor:
    """fp16 values with magnitudes over 2^-span .. 2^span (so that summation order shows in the bits)."""
    mag = torch.exp2(torch.randint(-span, span + 1, shape, generator=gen).float())
    return (torch.randn(shape, generator=gen) * mag).half()


#: oneDNN ISA caps (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) below its fp16 kernels
_NO_FP16_ISA = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                "AVX512_CORE_BF16")


def fp16_gemm_hardware() -> bool:
    """Whether PyTorch's CPU fp16 GEMMs can run on fp16 hardware here (AVX512-FP16 or AMX-FP16,
    not capped away by ``ONEDNN_MAX_CPU_ISA``): ATen then hands them to oneDNN, whose summation
    order the ordered dot does not reproduce. Seen on a Xeon with AVX512-FP16: the reversed order
    passed a random probe and still differed on other data, so there the ordered dot is never used."""
    caps = torch.cpu.get_capabilities()
    hardware = bool(caps.get("avx512_fp16") or caps.get("amx_fp16"))
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    return hardware and cap not in _NO_FP16_ISA


def _verified(key: tuple, native: Callable[[Tensor, Tensor], Tensor],
              ordered: Callable[[Tensor, Tensor], Tensor], x_shape: tuple[int, ...],
              w_shape: tuple[int, ...]) -> bool:
    """Whether :func:`native_order_dot` reproduces the native CPU kernel on probe data of exactly
    this call's shapes, bit for bit (checked once per shape, thread count and process).

    The whole shape is probed, not a smaller stand-in: which kernel ATen / oneDNN run, and so their
    summation order, can depend on every dimension (on an AVX512-FP16 CPU a 9x9 input took another
    kernel than the 7x7 stand-in of the same convolution). The native kernel runs at the caller's
    thread count, as it would in the call it stands for."""
    full = key + (tuple(x_shape), torch.get_num_threads(), torch.__version__, torch.backends.mkldnn.is_available(),
                  torch._C._get_mkldnn_enabled())
    if full not in _VERIFIED:
        ok = not fp16_gemm_hardware()
        gen = torch.Generator().manual_seed(0)
        for span in (6, 2):  # two draws: wide and narrow magnitude ranges
            if not ok:
                break
            x, w = _probe_values(x_shape, gen, span), _probe_values(w_shape, gen, span)
            want = native(x, w)
            with one_thread():
                ok = _bits_equal(want, ordered(x, w).half())
        _VERIFIED[full] = ok
    return _VERIFIED[full]


def half_matmul(x: Tensor, w: Tensor, arith: str = "native") -> Tensor:
    """``(x.half() @ w.half()).float()``; x (..., D), w (D, O) -> (..., O) float32."""
    _check(arith)
    if arith == "emulated":
        return (x.half().float() @ w.half().float()).half().float()
    D, O = w.shape
    rows = x.numel() // max(D, 1)
    if x.device.type != "cpu" or rows * D * O <= MKLDNN_MIN_WORK or D == 0:
        return (x.half() @ w.half()).float()

    def ordered(a: Tensor, b: Tensor) -> Tensor:  # a (..., D), b (D, O) -> (..., O) fp32
        a2 = a.reshape(-1, D)
        res = torch.empty(a2.shape[0], O, dtype=torch.float32, device=a.device)
        native_order_dot(a2.t()[None, None], b.t()[None], res.t()[None, None])
        return res.view(*a.shape[:-1], O)

    if not _verified(("mm", D, O), torch.matmul, ordered, tuple(x.shape), (D, O)):
        return (x.half() @ w.half()).float()
    with one_thread():
        return ordered(x, w)


def half_conv2d(x: Tensor, w: Tensor, stride: int, padding: int, groups: int, arith: str = "native") -> Tensor:
    """``conv2d(x.half(), w.half(), None, stride, padding, 1, groups).float()``;
    x (B, C, H, W), w (O, C/groups, k, k) -> (B, O, H', W') float32."""
    _check(arith)

    def conv(a: Tensor, b: Tensor) -> Tensor:
        return F.conv2d(a, b, None, stride, padding, 1, groups)

    if arith == "emulated":
        return conv(x.half().float(), w.half().float()).half().float()
    O, cg, kh, kw = w.shape
    B, C, H, W = x.shape
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    D = cg * kh * kw
    if x.device.type != "cpu" or Ho <= 0 or Wo <= 0 or B * Ho * Wo * D * (O // groups) <= MKLDNN_MIN_WORK:
        return conv(x.half(), w.half()).float()

    def ordered(a: Tensor, b: Tensor) -> Tensor:
        n = a.shape[0]
        ho, wo = (a.shape[2] + 2 * padding - kh) // stride + 1, (a.shape[3] + 2 * padding - kw) // stride + 1
        if kh == kw == 1 and padding == 0:
            cols = a[:, :, ::stride, ::stride]  # (n, C, H', W'): the 1x1 patches, a view
        else:  # (n, C*k*k, H'*W'), per group in the (c, ky, kx) order of the weight
            cols = F.unfold(a.half(), (kh, kw), padding=padding, stride=stride).view(n, C * kh * kw, ho, wo)
        res = torch.empty(n, O, ho, wo, dtype=torch.float32, device=a.device)
        native_order_dot(cols.unflatten(1, (groups, D)), b.reshape(groups, O // groups, D),
                         res.unflatten(1, (groups, O // groups)))
        return res

    key = ("conv", C, O, kh, kw, stride, padding, groups)
    if not _verified(key, conv, ordered, tuple(x.shape), tuple(w.shape)):
        return conv(x.half(), w.half()).float()
    with one_thread():
        return ordered(x, w)
