/* Quantization of stored keys and values: symmetric int8 (q in [-127, 127]) and 4-bit (q in
 * [-7, 7], stored as the nibble q + 8, low nibble first) with fp16 scales, as sparkv.h specifies:
 * scale = fp16(amax / Q), q = clamp(rint(x / s), -Q, Q) with s the fp16-rounded scale, so the grid
 * is the one attention reads back (s * q, exact in float). These loops are the specification of
 * the formats; the attention kernels only read them. */
#include "internal.h"
#include "half.h"

#include <math.h>
#include <string.h>

int sv_is_quantized(sparkv_precision p) { return p == SPARKV_I8 || p == SPARKV_I4; }

size_t sv_row_bytes(sparkv_precision p, size_t n) {
    switch (p) {
    case SPARKV_F32: return 4 * n;
    case SPARKV_I8: return n;
    case SPARKV_I4: return (n + 1) / 2;
    default: return 2 * n;
    }
}

static float qmax(sparkv_precision p) { return p == SPARKV_I8 ? 127.0f : 7.0f; }

uint16_t sv_quant_scale(float amax, sparkv_precision p) {
    const float s = amax / qmax(p);
    /* A quotient that would round to fp16 infinity saturates at the largest finite scale, so a
     * huge value clamps to +-Q instead of turning the row into Inf * 0 = NaN. */
    return s >= 65504.0f ? (uint16_t)0x7bffu : sv_float_to_half(s);
}

/* rint for |y| <= 127: adding and subtracting 1.5 * 2^23 rounds to the nearest integer, ties to
 * even (the default rounding mode), and vectorizes where rintf would be a library call. */
static float round_even(float y) { return (y + 12582912.0f) - 12582912.0f; }

/* One run of n values sharing one scale: q into out[0..n) (as integers), the scale returned. */
static uint16_t quantize_run(int8_t *out, const float *x, size_t n, sparkv_precision p) {
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    const uint16_t h = sv_quant_scale(amax, p);
    const float s = sv_half_to_float(h), lim = qmax(p);
    if (s == 0.0f) {
        memset(out, 0, n);
        return h;
    }
    for (size_t i = 0; i < n; i++) {
        float y = x[i] / s;
        y = y > lim ? lim : y < -lim ? -lim : y; /* clamping first: rint(clamp) = clamp(rint), Q integer */
        out[i] = (int8_t)(int32_t)round_even(y);
    }
    return h;
}

static void pack_nibbles(uint8_t *dst, const int8_t *q, size_t n) {
    for (size_t i = 0; i + 1 < n; i += 2) dst[i / 2] = (uint8_t)((q[i] + 8) | (q[i + 1] + 8) << 4);
    if (n & 1) dst[n / 2] = (uint8_t)((q[n - 1] + 8) | 8 << 4); /* the padding nibble reads as q = 0 */
}

void sv_store_values(void *dst, uint16_t *scales, size_t scale_stride, sparkv_precision p, const float *src,
                     size_t n, size_t group) {
    if (!sv_is_quantized(p)) {
        sv_store_row(dst, p, src, n);
        return;
    }
    int8_t q[SPARKV_MAX_HEAD_DIM];
    size_t k = 0;
    if (n == 0) scales[0] = 0; /* a token with no kept value still has a (zero) scale */
    for (size_t i0 = 0; i0 < n; i0 += group, k++) {
        const size_t m = n - i0 < group ? n - i0 : group;
        scales[k * scale_stride] = quantize_run(q + i0, src + i0, m, p);
    }
    if (p == SPARKV_I8) memcpy(dst, q, n);
    else pack_nibbles((uint8_t *)dst, q, n);
}

void sv_load_values(float *dst, const void *src, const uint16_t *scales, size_t scale_stride, sparkv_precision p,
                    size_t n, size_t group) {
    if (!sv_is_quantized(p)) {
        sv_load_row(dst, src, p, n);
        return;
    }
    const uint8_t *b = (const uint8_t *)src;
    for (size_t i0 = 0, k = 0; i0 < n; i0 += group, k++) {
        const float s = sv_half_to_float(scales[k * scale_stride]);
        const size_t end = n - i0 < group ? n : i0 + group;
        for (size_t i = i0; i < end; i++) {
            const int32_t q = p == SPARKV_I8 ? (int8_t)b[i] : (int32_t)(b[i / 2] >> (4 * (i & 1)) & 15u) - 8;
            dst[i] = s * (float)q;
        }
    }
}
