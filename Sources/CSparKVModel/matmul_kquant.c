/* The portable micro-kernel of svm_matmul for Q5_0, Q4_K and Q6_K weights: the specification the
 * AVX2 and AVX-512 versions (matmul_kquant_avx2.c, matmul_kquant_avx512.c) are tested against.
 *
 * Activations are the Q8 blocks of 32 every type uses (svm_quantize_act_row: q, dx, s = dx*qsum),
 * so a K-quant super-block of 256 meets 8 activation blocks: sub-block j of 32 of a Q4_K block is
 * scaled by its own 6-bit scale and min, and each 32 of Q6_K by its two int8 scales of 16. */
#include "internal.h"

/* sum_{i < n} w[i] * x[i], exact in int32 (|w| <= 63, |x| <= 127, n <= 32). */
static int32_t idot(const int8_t *w, const int8_t *x, int n) {
    int32_t s = 0;
    for (int i = 0; i < n; i++) s += (int32_t)w[i] * x[i];
    return s;
}

/* One (row, token) element; blocks of 32 in column order. */
static float kquant_dot(svm_type type, const uint8_t *w, const int8_t *xq, const float *xd, const float *xs,
                        int cols) {
    float acc = 0.0f;
    int8_t q[SVM_QK];
    if (type == SVM_Q5_0) {
        const svm_block_q5_0 *b = (const svm_block_q5_0 *)w;
        for (int i = 0; i < cols / SVM_QK; i++) {
            for (int j = 0; j < SVM_QK; j++) q[j] = (int8_t)(svm_q5_0_q(&b[i], j) - 16);
            acc += (svm_half_to_float(b[i].d) * xd[i]) * (float)idot(q, xq + SVM_QK * i, SVM_QK);
        }
    } else if (type == SVM_Q4_K) {
        const svm_block_q4_k *b = (const svm_block_q4_k *)w;
        for (int i = 0; i < cols / SVM_QK_K; i++) {
            const float d = svm_half_to_float(b[i].d), dmin = svm_half_to_float(b[i].dmin);
            for (int j = 0; j < 8; j++) {
                const int blk = 8 * i + j;
                int sc, m;
                svm_q4_k_scale_min(j, b[i].scales, &sc, &m);
                const uint8_t *qs = b[i].qs + 32 * (j / 2);
                for (int l = 0; l < SVM_QK; l++) q[l] = (int8_t)((j & 1) ? qs[l] >> 4 : qs[l] & 15);
                const int32_t isum = sc * idot(q, xq + SVM_QK * blk, SVM_QK);
                acc += (d * xd[blk]) * (float)isum - (dmin * (float)m) * xs[blk];
            }
        }
    } else { /* SVM_Q6_K */
        const svm_block_q6_k *b = (const svm_block_q6_k *)w;
        for (int i = 0; i < cols / SVM_QK_K; i++) {
            const float d = svm_half_to_float(b[i].d);
            for (int j = 0; j < 8; j++) {
                const int blk = 8 * i + j;
                for (int l = 0; l < SVM_QK; l++) q[l] = (int8_t)(svm_q6_k_q(&b[i], SVM_QK * j + l) - 32);
                const int8_t *x = xq + SVM_QK * blk;
                /* |isum| <= 2 * 128 * 16 * 32 * 127: exact in int32 */
                const int32_t isum = b[i].scales[2 * j] * idot(q, x, 16) + b[i].scales[2 * j + 1] * idot(q + 16, x + 16, 16);
                acc += (d * xd[blk]) * (float)isum;
            }
        }
    }
    return acc;
}

void svm_kquant_portable_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                              size_t x_stride, int nt, float *Y, int ldy) {
    const int nb = cols / SVM_QK;
    for (int t = 0; t < nt; t++) {
        const int8_t *xq = (const int8_t *)(X + x_stride * t);
        const float *xd = (const float *)(X + x_stride * t + cols);
        for (int r = 0; r < nr; r++) Y[(size_t)ldy * t + r] = kquant_dot(type, W + row_bytes * r, xq, xd, xd + nb, cols);
    }
}
