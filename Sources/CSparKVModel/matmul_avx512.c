/* AVX-512 (F/BW/VL + VNNI) micro-kernels of svm_matmul, chosen at run time.
 *
 * Work unit: a pair of 32-value blocks (64 columns) of up to 4 weight rows x 4 tokens. vpdpbusd
 * multiplies unsigned weight bytes by signed activation bytes:
 *  - Q4_1: the nibbles are already unsigned. The two blocks' 16-byte nibble arrays become one
 *    register [lowA | lowB | highA | highB]; the activations are packed in the same order, so lanes
 *    0-3 / 8-11 hold block A's partial sums and 4-7 / 12-15 block B's.
 *  - Q8_0: weights are offset to unsigned (w ^ 0x80 = w + 128) and the accumulator starts at
 *    -128 * (the lane's activation sum), precomputed per token: the integer dot stays exact.
 * Each lane's int32 sum is scaled by dw*dx in float and accumulated (fused multiply-add) in its
 * lane; the Q4_1 offset term mw * (dx * qsum) rides in lanes 1 and 3 of the same accumulator. Every
 * (row, token) element goes through the same operations whatever the tile shape. */
#include "internal.h"

#if SVM_X86
#include <immintrin.h>

#define SVM_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define SVM_INLINE static inline __attribute__((always_inline)) SVM_TARGET

/* Prepared X per token, per block pair p (bytes from the token's start):
 *  Q4_1: p*192 + [0,64) q (order above), [64,128) scale lanes [dA x4, dB x4, dA x4, dB x4],
 *        [128,192) offset lanes [0, sA, 0, sB, 0...] with s = dx * qsum.
 *  Q8_0: p*192 + [0,64) q (A then B), [64,128) scale lanes [dA x8, dB x8], [128,192) int32
 *        -128 * sum of the lane's 4 activation bytes.
 * A missing block B (odd block count) is all zero. */
#define PAIR_BYTES 192

size_t svm_avx512_x_stride(svm_type type, int cols) {
    int nb = cols / SVM_QK;
    return (size_t)((nb + 1) / 2) * PAIR_BYTES;
}

/* svm_quantize_act_row of one block of 32 (bit-identical: the max is exact, cvtps2dq rounds to
 * nearest even like the portable 1.5*2^23 trick): the two halves as bytes, d and s = d * sum q. */
SVM_INLINE void quantize_block(const float *xb, __m128i *lo, __m128i *hi, float *d, float *s) {
    const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float db = amax / 127.0f;
    const float id = db > 0.0f ? 1.0f / db : 0.0f;
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
    *lo = _mm512_cvtepi32_epi8(q0);
    *hi = _mm512_cvtepi32_epi8(q1);
    *d = db;
    *s = db * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
}

SVM_TARGET void svm_avx512_prepare_x(svm_type type, const float *x, int cols, uint8_t *dst) {
    const int nb = cols / SVM_QK;
    for (int p = 0; p < (nb + 1) / 2; p++) {
        uint8_t *o = dst + (size_t)p * PAIR_BYTES;
        const int hasb = 2 * p + 1 < nb;
        __m128i alo, ahi, blo = _mm_setzero_si128(), bhi = _mm_setzero_si128();
        float da, sa, db = 0.0f, sb = 0.0f;
        quantize_block(x + (size_t)(2 * p) * SVM_QK, &alo, &ahi, &da, &sa);
        if (hasb) quantize_block(x + (size_t)(2 * p + 1) * SVM_QK, &blo, &bhi, &db, &sb);
        if (type == SVM_Q4_1) {
            _mm_store_si128((__m128i *)o, alo);
            _mm_store_si128((__m128i *)(o + 16), blo);
            _mm_store_si128((__m128i *)(o + 32), ahi);
            _mm_store_si128((__m128i *)(o + 48), bhi);
            const __m512 dv = _mm512_set_ps(db, db, db, db, da, da, da, da, db, db, db, db, da, da, da, da);
            _mm512_store_ps((float *)(o + 64), dv);
            _mm512_store_ps((float *)(o + 128),
                            _mm512_set_ps(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, sb, 0.0f, sa, 0.0f));
        } else {
            _mm_store_si128((__m128i *)o, alo);
            _mm_store_si128((__m128i *)(o + 16), ahi);
            _mm_store_si128((__m128i *)(o + 32), blo);
            _mm_store_si128((__m128i *)(o + 48), bhi);
            const __m512 dv = _mm512_set_ps(db, db, db, db, db, db, db, db, da, da, da, da, da, da, da, da);
            _mm512_store_ps((float *)(o + 64), dv);
            /* -128 * (sum of the lane's 4 activation bytes) */
            const __m512i xq = _mm512_load_si512((const void *)o);
            const __m512i s128 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), xq);
            _mm512_store_si512((void *)(o + 128), _mm512_sub_epi32(_mm512_setzero_si512(), s128));
        }
    }
}

/* Weights of rows r < R for block pair p: the unsigned bytes, the scale lanes, (Q4_1) the offsets. */
SVM_INLINE void load_q4_1(const uint8_t *row, int p, int hasb, __m512i *w, __m512 *dw, __m512 *mv) {
    const svm_block_q4_1 *a = (const svm_block_q4_1 *)row + 2 * p;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m128i qa = _mm_loadu_si128((const __m128i *)a[0].qs);
    __m128i qb = hasb ? _mm_loadu_si128((const __m128i *)a[1].qs) : _mm_setzero_si128();
    __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(qa), qb, 1);
    __m256i lo = _mm256_and_si256(t, m4), hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), m4);
    *w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    uint32_t ha, hb = 0;
    memcpy(&ha, &a[0].d, 4); /* d then m */
    if (hasb) memcpy(&hb, &a[1].d, 4);
    __m128 f = _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)hb, (int)ha)); /* [dA, mA, dB, mB] */
    __m512 fz = _mm512_zextps128_ps512(f);
    *dw = _mm512_permutexvar_ps(_mm512_set_epi32(2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0), fz);
    *mv = fz;
}

SVM_INLINE void load_q8_0(const uint8_t *row, int p, int hasb, __m512i *w, __m512 *dw) {
    const svm_block_q8_0 *a = (const svm_block_q8_0 *)row + 2 * p;
    __m256i qa = _mm256_loadu_si256((const __m256i *)a[0].qs);
    /* missing block B: zero bytes (128 after the offset) meet zero activations and a zero correction */
    __m256i qb = hasb ? _mm256_loadu_si256((const __m256i *)a[1].qs) : _mm256_setzero_si256();
    *w = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(qa), qb, 1), _mm512_set1_epi8((char)0x80));
    uint32_t h = a[0].d;
    if (hasb) h |= (uint32_t)a[1].d << 16;
    __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)h));
    *dw = _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                                _mm512_zextps128_ps512(f));
}

SVM_INLINE void tile_rt(svm_type type, const uint8_t *W, size_t rb, int nb, const uint8_t *X, size_t xs, float *Y,
                        int ldy, const int R, const int T) {
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    const int np = (nb + 1) / 2;
    const size_t pair_bytes = type == SVM_Q4_1 ? 2 * sizeof(svm_block_q4_1) : 2 * sizeof(svm_block_q8_0);
    for (int p = 0; p < np; p++) {
        const int hasb = 2 * p + 1 < nb;
        __m512i w[4];
        __m512 dw[4], mv[4];
        if (T == 1) /* decode streams the weights once: prefetch ahead (the rows are too short for
                     * the hardware prefetcher to train on) */
            for (int r = 0; r < R; r++)
                _mm_prefetch((const char *)(W + rb * r + (size_t)p * pair_bytes + SVM_PREFETCH_BYTES), _MM_HINT_T0);
        if (type == SVM_Q4_1) {
            for (int r = 0; r < R; r++) load_q4_1(W + rb * r, p, hasb, &w[r], &dw[r], &mv[r]);
            for (int t = 0; t < T; t++) {
                const uint8_t *xp = X + xs * t + (size_t)p * PAIR_BYTES;
                __m512i xq = _mm512_load_si512((const void *)xp);
                __m512 xsc = _mm512_load_ps((const float *)(xp + 64));
                __m512 xm = _mm512_load_ps((const float *)(xp + 128));
                for (int r = 0; r < R; r++) {
                    __m512i i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[r], xq);
                    __m512 a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(dw[r], xsc), acc[r][t]);
                    acc[r][t] = _mm512_fmadd_ps(mv[r], xm, a);
                }
            }
        } else {
            for (int r = 0; r < R; r++) load_q8_0(W + rb * r, p, hasb, &w[r], &dw[r]);
            for (int t = 0; t < T; t++) {
                const uint8_t *xp = X + xs * t + (size_t)p * PAIR_BYTES;
                __m512i xq = _mm512_load_si512((const void *)xp);
                __m512 xsc = _mm512_load_ps((const float *)(xp + 64));
                __m512i corr = _mm512_load_si512((const void *)(xp + 128));
                for (int r = 0; r < R; r++) {
                    __m512i i = _mm512_dpbusd_epi32(corr, w[r], xq);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(dw[r], xsc), acc[r][t]);
                }
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) Y[(size_t)ldy * t + r] = _mm512_reduce_add_ps(acc[r][t]);
}

#define TILE_FN(R, T)                                                                                          \
    static SVM_TARGET void tile_##R##_##T(svm_type type, const uint8_t *W, size_t rb, int nb, const uint8_t *X, \
                                          size_t xs, float *Y, int ldy) {                                     \
        tile_rt(type, W, rb, nb, X, xs, Y, ldy, R, T);                                                        \
    }
TILE_FN(1, 1) TILE_FN(1, 2) TILE_FN(1, 3) TILE_FN(1, 4)
TILE_FN(2, 1) TILE_FN(2, 2) TILE_FN(2, 3) TILE_FN(2, 4)
TILE_FN(3, 1) TILE_FN(3, 2) TILE_FN(3, 3) TILE_FN(3, 4)
TILE_FN(4, 1) TILE_FN(4, 2) TILE_FN(4, 3) TILE_FN(4, 4)

typedef void (*tile_fn)(svm_type, const uint8_t *, size_t, int, const uint8_t *, size_t, float *, int);
static const tile_fn tiles[4][4] = {
    {tile_1_1, tile_1_2, tile_1_3, tile_1_4},
    {tile_2_1, tile_2_2, tile_2_3, tile_2_4},
    {tile_3_1, tile_3_2, tile_3_3, tile_3_4},
    {tile_4_1, tile_4_2, tile_4_3, tile_4_4},
};

void svm_avx512_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                     size_t x_stride, int nt, float *Y, int ldy) {
    tiles[nr - 1][nt - 1](type, W, row_bytes, cols / SVM_QK, X, x_stride, Y, ldy);
}

#endif
