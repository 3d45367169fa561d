/* Block formats: sizes, reference quantization (ggml's rounding), dequantization of a row (the
 * embedding lookup), and the 8-bit quantization of activations used by the fast matmul. */
#include "internal.h"

#include <math.h>

int svm_block_size(svm_type type) {
    switch (type) {
    case SVM_F32:
    case SVM_F16: return 1;
    case SVM_Q4_1:
    case SVM_Q8_0: return SVM_QK;
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
    }
    return 0;
}

const char *svm_type_name(svm_type type) {
    switch (type) {
    case SVM_F32: return "f32";
    case SVM_F16: return "f16";
    case SVM_Q4_1: return "q4_1";
    case SVM_Q8_0: return "q8_0";
    }
    return "unknown";
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
