/* Y[n][rows] = X[n][cols] . W^T: argument checks, the Q8 activation quantization, the split of the
 * work over threads and cache tiles (shared by every ISA), the portable micro-kernel (the
 * specification of the fast path) and the exact dequantize-then-dot reference path. */
#include "internal.h"

#include "omp_compat.h" /* csrc/platform/: OpenMP or single-threaded stand-ins */

void svm_dequantize_row(svm_type type, const uint8_t *row, int cols, float *out);

/* Cache tiling: a thread walks its rows in chunks of MM_RC rows (their weights stay in L1) and, for
 * each chunk, every token of a chunk of MM_TC tokens (their packed activations stay in L2). */
#define MM_RC 16
#define MM_TC 64

static svm_status check(const void *W, svm_type type, int rows, int cols, const float *X, int n, const float *Y) {
    if (!W || !X || !Y || rows <= 0 || cols <= 0 || n <= 0) return SVM_ERR_ARG;
    if (svm_block_size(type) == 0) return SVM_ERR_TYPE;
    if (svm_row_bytes(type, cols) == 0) return SVM_ERR_SHAPE;
    return SVM_OK;
}

/* The part of [rows) x [n) a thread computes: contiguous groups of 4 rows; tokens are split as well
 * only when there are too few row groups to go round. Every element is computed by the same
 * micro-kernel arithmetic wherever the boundaries fall, so results do not depend on the split. */
static void split(int rows, int n, int tid, int nth, int *r0, int *r1, int *t0, int *t1) {
    int groups = (rows + 3) / 4;
    if (groups >= 2 * nth || n < 4 * nth) {
        int g0 = (int)((long long)groups * tid / nth), g1 = (int)((long long)groups * (tid + 1) / nth);
        *r0 = g0 * 4;
        *r1 = g1 * 4 < rows ? g1 * 4 : rows;
        *t0 = 0;
        *t1 = n;
    } else {
        int tg = (n + 3) / 4;
        int g0 = (int)((long long)tg * tid / nth), g1 = (int)((long long)tg * (tid + 1) / nth);
        *r0 = 0;
        *r1 = rows;
        *t0 = g0 * 4;
        *t1 = g1 * 4 < n ? g1 * 4 : n;
    }
}

/* ---- portable path: X laid out as q[cols] int8, d[nb] float, s[nb] float per token ---- */

static size_t portable_x_stride(svm_type type, int cols) { return (size_t)cols + 8 * (size_t)(cols / SVM_QK); }

static void portable_prepare_x(svm_type type, const float *x, int cols, uint8_t *dst) {
    float *d = (float *)(dst + cols);
    svm_quantize_act_row(x, cols, (int8_t *)dst, d, d + cols / SVM_QK);
}

/* One (row, token) element: blocks in order, each block's exact integer dot scaled in float. */
static float portable_dot(svm_type type, const uint8_t *w, const int8_t *xq, const float *xd, const float *sx,
                          int nb) {
    float acc = 0.0f;
    if (type == SVM_Q4_1) {
        const svm_block_q4_1 *b = (const svm_block_q4_1 *)w;
        for (int i = 0; i < nb; i++) {
            const int8_t *x = xq + i * SVM_QK;
            int32_t isum = 0;
            for (int j = 0; j < 16; j++)
                isum += (int32_t)(b[i].qs[j] & 15) * x[j] + (int32_t)(b[i].qs[j] >> 4) * x[j + 16];
            float dw = svm_half_to_float(b[i].d), mw = svm_half_to_float(b[i].m);
            acc += (dw * xd[i]) * (float)isum + mw * sx[i];
        }
    } else {
        const svm_block_q8_0 *b = (const svm_block_q8_0 *)w;
        for (int i = 0; i < nb; i++) {
            const int8_t *x = xq + i * SVM_QK;
            int32_t isum = 0;
            for (int j = 0; j < SVM_QK; j++) isum += (int32_t)b[i].qs[j] * x[j];
            acc += (svm_half_to_float(b[i].d) * xd[i]) * (float)isum;
        }
    }
    return acc;
}

static void portable_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                          size_t x_stride, int nt, float *Y, int ldy) {
    const int nb = cols / SVM_QK;
    for (int t = 0; t < nt; t++) {
        const int8_t *xq = (const int8_t *)(X + x_stride * t);
        const float *xd = (const float *)(X + x_stride * t + cols);
        for (int r = 0; r < nr; r++) Y[(size_t)ldy * t + r] = portable_dot(type, W + row_bytes * r, xq, xd, xd + nb, nb);
    }
}

/* ---- driver ---- */

svm_status svm_matmul(const void *W, svm_type type, int rows, int cols, const float *X, int n, float *Y) {
    svm_status st = check(W, type, rows, cols, X, n, Y);
    if (st != SVM_OK) return st;
    if (type == SVM_F32 || type == SVM_F16) return svm_matmul_exact(W, type, rows, cols, X, n, Y);

    const size_t rb = svm_row_bytes(type, cols);
    size_t (*stride)(svm_type, int) = portable_x_stride;
    void (*prepare)(svm_type, const float *, int, uint8_t *) = portable_prepare_x;
    void (*tile)(svm_type, const uint8_t *, size_t, int, int, const uint8_t *, size_t, int, float *, int) =
        portable_tile;
    const int kq = svm_is_kquant_path(type);
    if (kq) tile = svm_kquant_portable_tile;
#if SVM_X86
    switch (svm_current_isa()) {
    case SVM_ISA_AVX512:
        /* Q5_0 / K-quants keep the portable activation layout (AVX2 prepares it bit-identically) */
        stride = kq ? svm_avx2_x_stride : svm_avx512_x_stride;
        prepare = kq ? svm_avx2_prepare_x : svm_avx512_prepare_x;
        tile = kq ? svm_kquant_avx512_tile : svm_avx512_tile;
        break;
    case SVM_ISA_AVX2:
        stride = svm_avx2_x_stride;
        prepare = svm_avx2_prepare_x;
        tile = kq ? svm_kquant_avx2_tile : svm_avx2_tile;
        break;
    default: break;
    }
#endif
    const size_t xs = (stride(type, cols) + 63) & ~(size_t)63;

    /* The prepared X [n][xs] in the calling thread's scratch: nothing is allocated inside the
     * parallel region, so a failure leaves Y untouched. */
    uint8_t *xp = svm_scratch(0, xs * (size_t)n);
    if (!xp) return SVM_ERR_MEMORY;

    int nth = svm_threads();
    if ((long long)rows * cols * n < 32768) nth = 1; /* not worth waking threads */
    const int serial_prepare = n < 4 * nth;
    if (serial_prepare)
        for (int t = 0; t < n; t++) prepare(type, X + (size_t)cols * t, cols, xp + xs * t);
#pragma omp parallel num_threads(nth)
    {
        if (!serial_prepare) {
#pragma omp for schedule(static)
            for (int t = 0; t < n; t++) prepare(type, X + (size_t)cols * t, cols, xp + xs * t);
        }
        int r0, r1, t0, t1;
        split(rows, n, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1, &t0, &t1);
        for (int tc = t0; tc < t1; tc += MM_TC) {
            const int tce = tc + MM_TC < t1 ? tc + MM_TC : t1;
            for (int rc = r0; rc < r1; rc += MM_RC) {
                const int rce = rc + MM_RC < r1 ? rc + MM_RC : r1;
                for (int t = tc; t < tce; t += 4) {
                    const int ntt = tce - t < 4 ? tce - t : 4;
                    for (int r = rc; r < rce; r += 4) {
                        const int nr = rce - r < 4 ? rce - r : 4;
                        tile(type, (const uint8_t *)W + rb * (size_t)r, rb, nr, cols, xp + xs * (size_t)t, xs, ntt,
                             Y + (size_t)rows * t + r, rows);
                    }
                }
            }
        }
    }
    return SVM_OK;
}

/* ---- exact reference path ----
 * Rows are dequantized EX_RB at a time into a per-thread buffer, then dotted with each token. The
 * dot's order is fixed (8 partial sums, lane k mod 8, each acc = acc + w*x without fused
 * multiply-add, combined pairwise): the AVX2 version (8-lane registers, used by both SIMD ISAs) is
 * bit-identical to this one. */

#define EX_RB 8

void svm_dots_f32(const float *w, size_t ldw, int nr, const float *x, int cols, float *y) {
    for (int r = 0; r < nr; r++) {
        const float *wr = w + ldw * r;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int k = 0;
        for (; k + 8 <= cols; k += 8)
            for (int j = 0; j < 8; j++) acc[j] += wr[k + j] * x[k + j];
        for (; k < cols; k++) acc[k & 7] += wr[k] * x[k];
        y[r] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
}

svm_status svm_matmul_exact(const void *W, svm_type type, int rows, int cols, const float *X, int n, float *Y) {
    svm_status st = check(W, type, rows, cols, X, n, Y);
    if (st != SVM_OK) return st;
    const size_t rb = svm_row_bytes(type, cols);
    void (*dequant)(svm_type, const uint8_t *, int, float *) = svm_dequantize_row;
    void (*dots)(const float *, size_t, int, const float *, int, float *) = svm_dots_f32;
#if SVM_X86
    if (svm_current_isa() != SVM_ISA_PORTABLE) {
        dequant = svm_avx2_dequantize_row;
        dots = svm_avx2_dots_f32;
    }
#endif
    int nth = svm_threads();
    if ((long long)rows * cols * n < 32768) nth = 1;
    float *bufs = svm_scratch(2, sizeof(float) * (size_t)cols * EX_RB * nth);
    if (!bufs) return SVM_ERR_MEMORY;
#pragma omp parallel num_threads(nth)
    {
        int r0, r1, t0, t1;
        split(rows, n, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1, &t0, &t1);
        float *buf = bufs + (size_t)cols * EX_RB * omp_get_thread_num();
        float y[EX_RB];
        for (int tc = t0; tc < t1; tc += MM_TC) {
            const int tce = tc + MM_TC < t1 ? tc + MM_TC : t1;
            for (int rc = r0; rc < r1; rc += EX_RB) {
                const int nr = r1 - rc < EX_RB ? r1 - rc : EX_RB;
                for (int r = 0; r < nr; r++)
                    dequant(type, (const uint8_t *)W + rb * (size_t)(rc + r), cols, buf + (size_t)cols * r);
                for (int t = tc; t < tce; t++) {
                    dots(buf, (size_t)cols, nr, X + (size_t)cols * t, cols, y);
                    for (int r = 0; r < nr; r++) Y[(size_t)rows * t + rc + r] = y[r];
                }
            }
        }
    }
    return SVM_OK;
}
