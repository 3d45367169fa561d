/* Block formats: sizes, reference quantization (ggml's rounding), dequantization of a row (the
 * embedding lookup), and the 8-bit quantization of activations used by the fast matmul. */
#include "internal.h"

#include <math.h>

int svm_block_size(svm_type type) {
    switch (type) {
    case SVM_F32:
    case SVM_F16: return 1;
    case SVM_Q4_1:
    case SVM_Q5_0:
    case SVM_Q8_0: return SVM_QK;
    case SVM_Q4_K:
    case SVM_Q6_K: return SVM_QK_K;
    }
    return 0;
}

size_t svm_row_bytes(svm_type type, int cols) {
    int bs = svm_block_size(type);
    if (bs == 0 || cols <= 0 || cols % bs) return 0;
    switch (type) {
    case SVM_F32: return (size_t)cols * 4;
    case SVM_F16: return (size_t)cols * 2;
    case SVM_Q4_1: return (size_t)(cols / SVM_QK) * sizeof(svm_block_q4_1);
    case SVM_Q8_0: return (size_t)(cols / SVM_QK) * sizeof(svm_block_q8_0);
    case SVM_Q5_0: return (size_t)(cols / SVM_QK) * sizeof(svm_block_q5_0);
    case SVM_Q4_K: return (size_t)(cols / SVM_QK_K) * sizeof(svm_block_q4_k);
    case SVM_Q6_K: return (size_t)(cols / SVM_QK_K) * sizeof(svm_block_q6_k);
    }
    return 0;
}

const char *svm_type_name(svm_type type) {
    switch (type) {
    case SVM_F32: return "f32";
    case SVM_F16: return "f16";
    case SVM_Q4_1: return "q4_1";
    case SVM_Q8_0: return "q8_0";
    case SVM_Q5_0: return "q5_0";
    case SVM_Q4_K: return "q4_k";
    case SVM_Q6_K: return "q6_k";
    }
    return "unknown";
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Q5_0 (ggml's reference): d = (the value of largest magnitude) / -16, q = x/d + 16 rounded, <= 31. */
static void quantize_q5_0(const float *x, int cols, svm_block_q5_0 *b) {
    for (int blk = 0; blk < cols / SVM_QK; blk++, x += SVM_QK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < SVM_QK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[blk].d = svm_float_to_half(d);
        uint32_t qh = 0;
        memset(b[blk].qs, 0, sizeof b[blk].qs);
        for (int j = 0; j < SVM_QK; j++) {
            int q = clampi((int)(x[j] * id + 16.5f), 0, 31);
            b[blk].qs[j & 15] |= (uint8_t)((q & 15) << (j < 16 ? 0 : 4));
            qh |= (uint32_t)(q >> 4) << j;
        }
        for (int i = 0; i < 4; i++) b[blk].qh[i] = (uint8_t)(qh >> (8 * i));
    }
}

/* Q4_K, a plain (not ggml's searched) quantizer for tests and benchmarks: per sub-block of 32,
 * step s = (max - min(min, 0)) / 15 and offset o = -min(min, 0); the super-block scales are
 * d = max s / 63, dmin = max o / 63; each sub-block's s and o become 6-bit multiples of them. */
static void quantize_q4_k(const float *x, int cols, svm_block_q4_k *b) {
    for (int blk = 0; blk < cols / SVM_QK_K; blk++, x += SVM_QK_K) {
        float step[8], off[8], smax = 0.0f, omax = 0.0f;
        for (int j = 0; j < 8; j++) {
            float lo = 0.0f, hi = 0.0f;
            for (int i = 0; i < 32; i++) {
                lo = fminf(lo, x[32 * j + i]);
                hi = fmaxf(hi, x[32 * j + i]);
            }
            step[j] = (hi - lo) / 15.0f;
            off[j] = -lo;
            smax = fmaxf(smax, step[j]);
            omax = fmaxf(omax, off[j]);
        }
        const float d = svm_half_to_float(svm_float_to_half(smax / 63.0f));
        const float dmin = svm_half_to_float(svm_float_to_half(omax / 63.0f));
        b[blk].d = svm_float_to_half(d);
        b[blk].dmin = svm_float_to_half(dmin);
        memset(b[blk].scales, 0, sizeof b[blk].scales);
        for (int j = 0; j < 8; j++) {
            const int sc = d > 0.0f ? clampi((int)lrintf(step[j] / d), 0, 63) : 0;
            const int m = dmin > 0.0f ? clampi((int)lrintf(off[j] / dmin), 0, 63) : 0;
            uint8_t *s = b[blk].scales;
            if (j < 4) {
                s[j] |= (uint8_t)sc;
                s[j + 4] |= (uint8_t)m;
            } else {
                s[j + 4] = (uint8_t)((sc & 15) | (m & 15) << 4);
                s[j - 4] |= (uint8_t)((sc >> 4) << 6);
                s[j] |= (uint8_t)((m >> 4) << 6);
            }
            const float ds = d * (float)sc, mo = dmin * (float)m;
            const float id = ds > 0.0f ? 1.0f / ds : 0.0f;
            /* values 64*(j/2) + i sit in the low nibble (even j) or high nibble (odd j) of qs[32*(j/2) + i] */
            for (int i = 0; i < 32; i++) {
                const int q = clampi((int)lrintf((x[32 * j + i] + mo) * id), 0, 15);
                b[blk].qs[32 * (j / 2) + i] = (uint8_t)((j & 1) ? (b[blk].qs[32 * (j / 2) + i] | q << 4) : q);
            }
        }
    }
}

/* Q6_K, a plain quantizer for tests and benchmarks: per 16 values, step s = (signed value of
 * largest magnitude) / -32; d = max |s| / 127; each s becomes an int8 multiple of d. */
static void quantize_q6_k(const float *x, int cols, svm_block_q6_k *b) {
    for (int blk = 0; blk < cols / SVM_QK_K; blk++, x += SVM_QK_K) {
        float step[16], smax = 0.0f;
        for (int g = 0; g < 16; g++) {
            float amax = 0.0f, max = 0.0f;
            for (int i = 0; i < 16; i++)
                if (fabsf(x[16 * g + i]) > amax) {
                    amax = fabsf(x[16 * g + i]);
                    max = x[16 * g + i];
                }
            step[g] = max / -32.0f;
            smax = fmaxf(smax, fabsf(step[g]));
        }
        const float d = svm_half_to_float(svm_float_to_half(smax / 127.0f));
        b[blk].d = svm_float_to_half(d);
        memset(b[blk].ql, 0, sizeof b[blk].ql);
        memset(b[blk].qh, 0, sizeof b[blk].qh);
        for (int g = 0; g < 16; g++) {
            const int sc = d > 0.0f ? clampi((int)lrintf(step[g] / d), -128, 127) : 0;
            b[blk].scales[g] = (int8_t)sc;
            const float ds = d * (float)sc;
            const float id = ds != 0.0f ? 1.0f / ds : 0.0f;
            for (int i = 0; i < 16; i++) {
                const int v = 16 * g + i;
                const int q = clampi((int)lrintf(x[v] * id) + 32, 0, 63);
                const int h = v >> 7, k = (v >> 5) & 3, l = v & 31; /* the layout of svm_q6_k_q */
                b[blk].ql[64 * h + l + 32 * (k & 1)] |= (uint8_t)((q & 15) << (k < 2 ? 0 : 4));
                b[blk].qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
            }
        }
    }
}

static void quantize_row(svm_type type, const float *x, int cols, uint8_t *dst) {
    switch (type) {
    case SVM_F32: memcpy(dst, x, (size_t)cols * 4); break;
    case SVM_F16:
        for (int i = 0; i < cols; i++) {
            uint16_t h = svm_float_to_half(x[i]);
            memcpy(dst + 2 * (size_t)i, &h, 2);
        }
        break;
    case SVM_Q4_1: {
        svm_block_q4_1 *b = (svm_block_q4_1 *)dst;
        for (int blk = 0; blk < cols / SVM_QK; blk++, x += SVM_QK) {
            float lo = INFINITY, hi = -INFINITY;
            for (int j = 0; j < SVM_QK; j++) {
                if (x[j] < lo) lo = x[j];
                if (x[j] > hi) hi = x[j];
            }
            float d = (hi - lo) / 15.0f;
            float id = d != 0.0f ? 1.0f / d : 0.0f;
            b[blk].d = svm_float_to_half(d);
            b[blk].m = svm_float_to_half(lo);
            for (int j = 0; j < 16; j++) {
                int q0 = (int)(int8_t)((x[j] - lo) * id + 0.5f);
                int q1 = (int)(int8_t)((x[16 + j] - lo) * id + 0.5f);
                if (q0 > 15) q0 = 15;
                if (q1 > 15) q1 = 15;
                b[blk].qs[j] = (uint8_t)(q0 | (q1 << 4));
            }
        }
        break;
    }
    case SVM_Q8_0: {
        svm_block_q8_0 *b = (svm_block_q8_0 *)dst;
        for (int blk = 0; blk < cols / SVM_QK; blk++, x += SVM_QK) {
            float amax = 0.0f;
            for (int j = 0; j < SVM_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f;
            float id = d != 0.0f ? 1.0f / d : 0.0f;
            b[blk].d = svm_float_to_half(d);
            for (int j = 0; j < SVM_QK; j++) b[blk].qs[j] = (int8_t)roundf(x[j] * id);
        }
        break;
    }
    case SVM_Q5_0: quantize_q5_0(x, cols, (svm_block_q5_0 *)dst); break;
    case SVM_Q4_K: quantize_q4_k(x, cols, (svm_block_q4_k *)dst); break;
    case SVM_Q6_K: quantize_q6_k(x, cols, (svm_block_q6_k *)dst); break;
    }
}

svm_status svm_quantize(svm_type type, const float *src, int rows, int cols, void *dst) {
    if (!src || !dst || rows <= 0 || cols <= 0) return SVM_ERR_ARG;
    if (svm_block_size(type) == 0) return SVM_ERR_TYPE;
    size_t rb = svm_row_bytes(type, cols);
    if (rb == 0) return SVM_ERR_SHAPE;
    for (int r = 0; r < rows; r++) quantize_row(type, src + (size_t)r * cols, cols, (uint8_t *)dst + rb * r);
    return SVM_OK;
}

/* Dequantize `cols` values of one row (the definition of every format's values). */
void svm_dequantize_row(svm_type type, const uint8_t *row, int cols, float *out) {
    switch (type) {
    case SVM_F32: memcpy(out, row, (size_t)cols * 4); break;
    case SVM_F16:
        for (int i = 0; i < cols; i++) {
            uint16_t h;
            memcpy(&h, row + 2 * (size_t)i, 2);
            out[i] = svm_half_to_float(h);
        }
        break;
    case SVM_Q4_1: {
        const svm_block_q4_1 *b = (const svm_block_q4_1 *)row;
        for (int blk = 0; blk < cols / SVM_QK; blk++, out += SVM_QK) {
            float d = svm_half_to_float(b[blk].d), m = svm_half_to_float(b[blk].m);
            for (int j = 0; j < 16; j++) {
                out[j] = d * (float)(b[blk].qs[j] & 15) + m;
                out[j + 16] = d * (float)(b[blk].qs[j] >> 4) + m;
            }
        }
        break;
    }
    case SVM_Q8_0: {
        const svm_block_q8_0 *b = (const svm_block_q8_0 *)row;
        for (int blk = 0; blk < cols / SVM_QK; blk++, out += SVM_QK) {
            float d = svm_half_to_float(b[blk].d);
            for (int j = 0; j < SVM_QK; j++) out[j] = d * (float)b[blk].qs[j];
        }
        break;
    }
    case SVM_Q5_0: {
        const svm_block_q5_0 *b = (const svm_block_q5_0 *)row;
        for (int blk = 0; blk < cols / SVM_QK; blk++, out += SVM_QK) {
            float d = svm_half_to_float(b[blk].d);
            for (int j = 0; j < SVM_QK; j++) out[j] = d * (float)(svm_q5_0_q(&b[blk], j) - 16);
        }
        break;
    }
    case SVM_Q4_K: {
        const svm_block_q4_k *b = (const svm_block_q4_k *)row;
        for (int blk = 0; blk < cols / SVM_QK_K; blk++) {
            const float d = svm_half_to_float(b[blk].d), dmin = svm_half_to_float(b[blk].dmin);
            for (int j = 0; j < 8; j++, out += 32) {
                int sc, m;
                svm_q4_k_scale_min(j, b[blk].scales, &sc, &m);
                const float ds = d * (float)sc, mo = dmin * (float)m;
                const uint8_t *q = b[blk].qs + 32 * (j / 2); /* even j: low nibbles, odd j: high */
                for (int i = 0; i < 32; i++) out[i] = ds * (float)((j & 1) ? q[i] >> 4 : q[i] & 15) - mo;
            }
        }
        break;
    }
    case SVM_Q6_K: {
        const svm_block_q6_k *b = (const svm_block_q6_k *)row;
        for (int blk = 0; blk < cols / SVM_QK_K; blk++, out += SVM_QK_K) {
            const float d = svm_half_to_float(b[blk].d);
            for (int v = 0; v < SVM_QK_K; v++)
                out[v] = (d * (float)b[blk].scales[v / 16]) * (float)(svm_q6_k_q(&b[blk], v) - 32);
        }
        break;
    }
    }
}

svm_status svm_embed_row(const void *W, svm_type type, int row, int cols, float *out) {
    if (!W || !out || row < 0 || cols <= 0) return SVM_ERR_ARG;
    if (svm_block_size(type) == 0) return SVM_ERR_TYPE;
    size_t rb = svm_row_bytes(type, cols);
    if (rb == 0) return SVM_ERR_SHAPE;
    svm_dequantize_row(type, (const uint8_t *)W + rb * (size_t)row, cols, out);
    return SVM_OK;
}

/* Q8 activations: per block of 32, dx = amax/127, q = x * (1/dx) rounded to nearest even (the
 * 1.5*2^23 trick: exact for |v| <= 127.5, branch-free, the same as cvtps2dq), s = dx * sum q.
 * The max is taken in 8 interleaved lanes (max is exact in any order) so the loop vectorizes. */
void svm_quantize_act_row(const float *x, int cols, int8_t *q, float *d, float *s) {
    for (int b = 0; b < cols / SVM_QK; b++) {
        const float *xb = x + b * SVM_QK;
        float mx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < SVM_QK; j++) {
            float a = fabsf(xb[j]);
            mx[j & 7] = a > mx[j & 7] ? a : mx[j & 7];
        }
        float amax = 0.0f;
        for (int j = 0; j < 8; j++) amax = mx[j] > amax ? mx[j] : amax;
        float db = amax / 127.0f;
        float id = db > 0.0f ? 1.0f / db : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < SVM_QK; j++) {
            float v = (xb[j] * id + 12582912.0f) - 12582912.0f;
            int32_t iv = (int32_t)v;
            q[b * SVM_QK + j] = (int8_t)iv;
            sum += iv;
        }
        d[b] = db;
        s[b] = db * (float)sum;
    }
}
