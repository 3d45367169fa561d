/* AVX2 (+FMA, F16C) micro-kernels of svm_matmul, chosen at run time on CPUs without AVX-512 VNNI.
 *
 * One 32-value block per register, as llama.cpp does: vpmaddubsw (unsigned x signed bytes -> int16
 * pairs) then vpmaddwd by ones (-> int32 lanes).
 *  - Q4_1: nibbles are unsigned: [low 16 | high 16] against the activations in natural order
 *    (pair sums <= 2 * 15 * 127, no int16 saturation).
 *  - Q8_0: |w| as the unsigned operand and the activation with w's sign (vpsignb): pair sums
 *    <= 2 * 128 * 127 < 32767.
 * Lanes are scaled by dw*dx and accumulated with FMA; the Q4_1 offset mw * (dx * qsum) is added in
 * lane 0 of the same accumulator. Tiles of 2 rows x 2 tokens (16 ymm registers). */
#include "internal.h"

#if SVM_X86
#include <immintrin.h>

#define SVM_TARGET __attribute__((target("avx2,fma,f16c")))
#define SVM_INLINE static inline __attribute__((always_inline)) SVM_TARGET

/* Prepared X per token (the portable layout): q[cols] int8, then d[nb] float, then s[nb] = d * sum q. */
size_t svm_avx2_x_stride(svm_type type, int cols) { return (size_t)cols + 8 * (size_t)(cols / SVM_QK); }

/* svm_quantize_act_row, 8 lanes at a time (bit-identical: the max is exact, cvtps2dq rounds to
 * nearest even like the portable 1.5*2^23 trick). */
SVM_TARGET void svm_avx2_prepare_x(svm_type type, const float *x, int cols, uint8_t *dst) {
    const int nb = cols / SVM_QK;
    float *od = (float *)(dst + cols), *os = od + nb;
    const __m256 signbit = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < nb; b++) {
        const float *xb = x + b * SVM_QK;
        __m256 v[4];
        for (int c = 0; c < 4; c++) v[c] = _mm256_loadu_ps(xb + 8 * c);
        __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(signbit, v[0]), _mm256_andnot_ps(signbit, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(signbit, v[2]), _mm256_andnot_ps(signbit, v[3])));
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float amax = _mm_cvtss_f32(m);
        const float d = amax / 127.0f;
        const float id = d > 0.0f ? 1.0f / d : 0.0f;
        const __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int c = 0; c < 4; c++) q[c] = _mm256_cvtps_epi32(_mm256_mul_ps(v[c], idv));
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        /* int32 -> int8 (|q| <= 127: no saturation); packs interleave 128-bit lanes, the permute
         * restores element order */
        __m256i p16 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p16 = _mm256_permutevar8x32_epi32(p16, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(dst + (size_t)b * SVM_QK), p16);
        od[b] = d;
        os[b] = d * (float)_mm_cvtsi128_si32(s4);
    }
}

SVM_INLINE __m256 half_bcast(uint16_t h) { return _mm256_cvtph_ps(_mm_set1_epi16((short)h)); }

SVM_INLINE void tile_rt(svm_type type, const uint8_t *W, size_t rb, int cols, const uint8_t *X, size_t xs, float *Y,
                        int ldy, const int R, const int T) {
    const int nb = cols / SVM_QK;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2][2];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    const size_t block_bytes = type == SVM_Q4_1 ? sizeof(svm_block_q4_1) : sizeof(svm_block_q8_0);
    for (int b = 0; b < nb; b++) {
        if (T == 1) /* decode: prefetch the weight stream ahead */
            for (int r = 0; r < R; r++)
                _mm_prefetch((const char *)(W + rb * r + (size_t)b * block_bytes + SVM_PREFETCH_BYTES), _MM_HINT_T0);
        __m256i w[2], ws[2];
        __m256 dw[2], mv[2];
        if (type == SVM_Q4_1) {
            const __m128i m4 = _mm_set1_epi8(0x0f);
            for (int r = 0; r < R; r++) {
                const svm_block_q4_1 *blk = (const svm_block_q4_1 *)(W + rb * r) + b;
                __m128i raw = _mm_loadu_si128((const __m128i *)blk->qs);
                w[r] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
                dw[r] = half_bcast(blk->d);
                mv[r] = _mm256_zextps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(blk->m)));
            }
            for (int t = 0; t < T; t++) {
                const uint8_t *xp = X + xs * t;
                __m256i xq = _mm256_loadu_si256((const __m256i *)(xp + (size_t)b * SVM_QK));
                __m256 xd = _mm256_broadcast_ss((const float *)(xp + cols) + b);
                __m256 xsum = _mm256_broadcast_ss((const float *)(xp + cols) + nb + b);
                for (int r = 0; r < R; r++) {
                    __m256i i = _mm256_madd_epi16(_mm256_maddubs_epi16(w[r], xq), ones);
                    __m256 a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(dw[r], xd), acc[r][t]);
                    acc[r][t] = _mm256_fmadd_ps(mv[r], xsum, a);
                }
            }
        } else {
            for (int r = 0; r < R; r++) {
                const svm_block_q8_0 *blk = (const svm_block_q8_0 *)(W + rb * r) + b;
                ws[r] = _mm256_loadu_si256((const __m256i *)blk->qs);
                w[r] = _mm256_sign_epi8(ws[r], ws[r]); /* |w| */
                dw[r] = half_bcast(blk->d);
            }
            for (int t = 0; t < T; t++) {
                const uint8_t *xp = X + xs * t;
                __m256i xq = _mm256_loadu_si256((const __m256i *)(xp + (size_t)b * SVM_QK));
                __m256 xd = _mm256_broadcast_ss((const float *)(xp + cols) + b);
                for (int r = 0; r < R; r++) {
                    __m256i i = _mm256_madd_epi16(_mm256_maddubs_epi16(w[r], _mm256_sign_epi8(xq, ws[r])), ones);
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(dw[r], xd), acc[r][t]);
                }
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) {
            __m256 v = acc[r][t];
            __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            s = _mm_add_ss(s, _mm_movehdup_ps(s));
            Y[(size_t)ldy * t + r] = _mm_cvtss_f32(s);
        }
}

#define TILE_FN(R, T)                                                                                          \
    static SVM_TARGET void tile_##R##_##T(svm_type type, const uint8_t *W, size_t rb, int cols, const uint8_t *X, \
                                          size_t xs, float *Y, int ldy) {                                     \
        tile_rt(type, W, rb, cols, X, xs, Y, ldy, R, T);                                                      \
    }
TILE_FN(1, 1) TILE_FN(1, 2) TILE_FN(2, 1) TILE_FN(2, 2)

void svm_avx2_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                   size_t x_stride, int nt, float *Y, int ldy) {
    for (int t = 0; t < nt; t += 2)
        for (int r = 0; r < nr; r += 2) {
            const uint8_t *w = W + row_bytes * r;
            const uint8_t *x = X + x_stride * t;
            float *y = Y + (size_t)ldy * t + r;
            int rr = nr - r >= 2 ? 2 : 1, tt = nt - t >= 2 ? 2 : 1;
            if (rr == 2 && tt == 2) tile_2_2(type, w, row_bytes, cols, x, x_stride, y, ldy);
            else if (rr == 2) tile_2_1(type, w, row_bytes, cols, x, x_stride, y, ldy);
            else if (tt == 2) tile_1_2(type, w, row_bytes, cols, x, x_stride, y, ldy);
            else tile_1_1(type, w, row_bytes, cols, x, x_stride, y, ldy);
        }
}

/* ---- exact path helpers (bit-identical to the portable ones: same operations, 8 lanes) ---- */

SVM_TARGET void svm_avx2_dequantize_row(svm_type type, const uint8_t *row, int cols, float *out) {
    const int nb = cols / SVM_QK;
    switch (type) {
    case SVM_Q4_1: {
        const svm_block_q4_1 *b = (const svm_block_q4_1 *)row;
        const __m128i m4 = _mm_set1_epi8(0x0f);
        for (int i = 0; i < nb; i++, out += SVM_QK) {
            const __m256 d = _mm256_set1_ps(svm_half_to_float(b[i].d)), m = _mm256_set1_ps(svm_half_to_float(b[i].m));
            const __m128i raw = _mm_loadu_si128((const __m128i *)b[i].qs);
            const __m128i lo = _mm_and_si128(raw, m4), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
            const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
            for (int c = 0; c < 4; c++) {
                __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[c]));
                _mm256_storeu_ps(out + 8 * c, _mm256_add_ps(_mm256_mul_ps(d, q), m));
            }
        }
        break;
    }
    case SVM_Q8_0: {
        const svm_block_q8_0 *b = (const svm_block_q8_0 *)row;
        for (int i = 0; i < nb; i++, out += SVM_QK) {
            const __m256 d = _mm256_set1_ps(svm_half_to_float(b[i].d));
            for (int c = 0; c < 4; c++) {
                __m128i raw = _mm_loadl_epi64((const __m128i *)(b[i].qs + 8 * c));
                _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw))));
            }
        }
        break;
    }
    case SVM_F16: {
        int k = 0;
        for (; k + 8 <= cols; k += 8)
            _mm256_storeu_ps(out + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * (size_t)k))));
        for (; k < cols; k++) {
            uint16_t h;
            memcpy(&h, row + 2 * (size_t)k, 2);
            out[k] = svm_half_to_float(h);
        }
        break;
    }
    default: svm_dequantize_row(type, row, cols, out); break;
    }
}

SVM_INLINE void dots_rows(const float *w, size_t ldw, const float *x, int cols, float *y, const int R) {
    __m256 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= cols; k += 8) {
        const __m256 xv = _mm256_loadu_ps(x + k);
        for (int r = 0; r < R; r++) acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(_mm256_loadu_ps(w + ldw * r + k), xv));
    }
    for (int r = 0; r < R; r++) {
        float a[8];
        _mm256_storeu_ps(a, acc[r]);
        for (int kk = k; kk < cols; kk++) a[kk & 7] += w[ldw * r + kk] * x[kk];
        y[r] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    }
}

SVM_TARGET void svm_avx2_dots_f32(const float *w, size_t ldw, int nr, const float *x, int cols, float *y) {
    int r = 0;
    for (; r + 4 <= nr; r += 4) dots_rows(w + ldw * r, ldw, x, cols, y + r, 4);
    for (; r < nr; r++) dots_rows(w + ldw * r, ldw, x, cols, y + r, 1);
}

#endif
