/* CPU kernels of the suite (built and loaded by qwt_core/native/__init__.py).

   Fused per-tensor uniform fake quantization of fp32 activations (qwt_core/quant/fused.py):
   one pass over the elements instead of the 4-6 elementwise torch passes; the same IEEE operations
   in the same order, so the same bits (NaN payloads aside):
     qwt_fq_folded: clamp(round(x / d), lo, hi) * d + 0           (integer zero point folded into lo, hi)
     qwt_fq_zp:     (clamp(round(x / d) + zp, 0, top) - zp) * d     (the reference's formula, any zp)
   round() is round-half-to-even (torch.round, nearbyint): for |t| < 2^23 the sum |t| + 2^23 has an
   ulp of 1, so the default rounding of that sum rounds |t| to the nearest integer, ties to even;
   larger |t|, inf and NaN are integers or not numbers already. Compiled without -ffast-math (no
   reciprocal for x / d, no reassociation of (a + 2^23) - 2^23) and with -ffp-contract=off.
   target_clones picks AVX-512 / AVX2 / baseline code at load time (the results do not depend on it:
   every operation is an exactly rounded IEEE one). */
#include <stdint.h>
#include <math.h>
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif
static inline float round_even(float t) {
    float a = fabsf(t);
    if (a < 8388608.0f) return copysignf((a + 8388608.0f) - 8388608.0f, t);
    return t;
}
CLONES void qwt_fq_folded(const float* x, float* out, int64_t n, float d, float lo, float hi) {
    for (int64_t i = 0; i < n; ++i) {
        float t = round_even(x[i] / d);
        t = t < lo ? lo : t;
        t = t > hi ? hi : t;
        out[i] = t * d + 0.0f;
    }
}
/* one element of the reference's formula, (clamp(round(x / d) + zp, 0, top) - zp) * d */
static inline float fq_zp(float x, float d, float zp, float top) {
    float t = round_even(x / d) + zp;
    t = t < 0.0f ? 0.0f : t;
    t = t > top ? top : t;
    return (t - zp) * d;
}
CLONES void qwt_fq_zp(const float* x, float* out, int64_t n, float d, float zp, float top) {
    for (int64_t i = 0; i < n; ++i) out[i] = fq_zp(x[i], d, zp, top);
}

/* qwt_fq_zp per row: rows of `inner` elements, each with its own d[r] and zp[r] (per-output-channel
   weights, x (O, ...) contiguous): (clamp(round(x / d) + zp, 0, top) - zp) * d, the same bits. */
CLONES void qwt_fq_zp_rows(const float* x, float* out, int64_t rows, int64_t inner, const float* d,
                           const float* zp, float top) {
    for (int64_t r = 0; r < rows; ++r) {
        const float dr = d[r], zr = zp[r];
        const float* xr = x + r * inner;
        float* orow = out + r * inner;
        for (int64_t i = 0; i < inner; ++i) orow[i] = fq_zp(xr[i], dr, zr, top);
    }
}

/* The sums of a regression's R², for one chunk of kept rows of one group (qwt_core/qwt/rows.py):
     out[0] += Σ ((e + b) - y)²    e = X W (rows, O) from the GEMM, b (O,): the residual
     out[1] += Σ y²
     sy[r % P] += y (double)         per output column (P = 1) or per (position, column) (conv rows)
   in one pass over e and y (SS_tot = Σ y² - Σ sy² / images afterwards, in double). Each row's
   squares are accumulated in 16 fp32 lanes (the compiler vectorizes independent lanes without
   reassociating), then added in double: not torch.sum's order, so not its last bits (R² is
   reported, not reproduced bit for bit). */
CLONES void qwt_r2_sums(const float* e, const float* y, const float* b, double* sy,
                        int64_t rows, int64_t O, int64_t P, double* out) {
    double res = 0.0, sq = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
        const float* er = e + r * O;
        const float* yr = y + r * O;
        double* sr_y = sy + (r % P) * O;
        float sr[16] = {0}, st[16] = {0};
        int64_t o = 0;
        for (; o + 16 <= O; o += 16)
            for (int j = 0; j < 16; ++j) {
                const float v = yr[o + j];
                const float d = (er[o + j] + b[o + j]) - v;
                sr[j] += d * d;
                st[j] += v * v;
                sr_y[o + j] += v;
            }
        for (; o < O; ++o) {
            const float v = yr[o];
            const float d = (er[o] + b[o]) - v;
            sr[0] += d * d;
            st[0] += v * v;
            sr_y[o] += v;
        }
        for (int j = 0; j < 16; ++j) {
            res += sr[j];
            sq += st[j];
        }
    }
    out[0] += res;
    out[1] += sq;
}

/* torch's CPU max_pool2d of a contiguous NCHW fp32 tensor (dilation 1, floor mode), the same
   scan: per output, the window rows then columns clipped to the input, starting from -inf and
   taking a value when it is larger or NaN (so the first of equal maxima, -0 and +0 included, and
   the last NaN), as aten's cpu_max_pool does; without its index tensor (the ResNet stem's pool
   took 170 ms per batch of 32 at 224x224 there). Comparisons only: exact. */
CLONES void qwt_max_pool2d(const float* x, float* out, int64_t planes, int64_t H, int64_t W,
                           int64_t oH, int64_t oW, int64_t k, int64_t s, int64_t p) {
    for (int64_t c = 0; c < planes; ++c) {
        const float* xp = x + c * H * W;
        for (int64_t oh = 0; oh < oH; ++oh) {
            float* m = out + (c * oH + oh) * oW;  /* the output row, updated window element by element */
            for (int64_t ow = 0; ow < oW; ++ow) m[ow] = -INFINITY;
            int64_t ih0 = oh * s - p;
            const int64_t ih1 = ih0 + k < H ? ih0 + k : H;
            if (ih0 < 0) ih0 = 0;
            /* for every output of the row the same order as torch's scan: rows ih, then columns
               iw = ow*s - p + dw ascending; each output's own window only (ow range per dw) */
            for (int64_t ih = ih0; ih < ih1; ++ih) {
                const float* row = xp + ih * W;
                for (int64_t dw = 0; dw < k; ++dw) {
                    int64_t lo = p - dw > 0 ? (p - dw + s - 1) / s : 0;      /* iw >= 0 */
                    int64_t hi = W - 1 + p - dw >= 0 ? (W - 1 + p - dw) / s + 1 : 0;  /* iw <= W - 1 */
                    if (hi > oW) hi = oW;
                    const float* r = row + dw - p;
                    for (int64_t ow = lo; ow < hi; ++ow) {
                        const float v = r[ow * s];
                        m[ow] = (v > m[ow] || v != v) ? v : m[ow];
                    }
                }
            }
        }
    }
}
