/* AVX2 micro-kernel of svm_matmul for Q5_0, Q4_K and Q6_K weights (the portable one in
 * matmul_kquant.c is the specification). One 32-value activation block per register.
 *
 * A weight "unit" (a Q5_0 block of 32, or a K-quant super-block of 256) is unpacked once per row
 * of the tile into int8 registers, then dotted with each token of the tile:
 *  - Q4_K: the nibbles are unsigned: vpmaddubsw(q, x) (pair sums <= 2*15*127), then vpmaddwd by the
 *    sub-block's 6-bit scale gives sc*isum exactly; the min term dmin*m * (dx*qsum) is a scalar.
 *  - Q5_0 / Q6_K: q - 16 / q - 32 are signed: |w| as the unsigned operand and x with w's sign
 *    (vpsignb), pair sums <= 2*32*127; vpmaddwd by the scale (1 for Q5_0, Q6_K's int8 scale of
 *    each 16 values) gives the scaled integer dot exactly (<= 2*8128*128 per lane).
 * Each lane's int32 is scaled by (d*dx) in float and accumulated with FMA. */
#include "internal.h"

#if SVM_X86
#include <immintrin.h>

#define SVM_TARGET __attribute__((target("avx2,fma,f16c")))
#define SVM_INLINE static inline __attribute__((always_inline)) SVM_TARGET

/* One unpacked unit of one row: n sub-blocks of 32 (1 or 8). */
typedef struct {
    __m256i w[8];   /* Q4_K: q (unsigned); Q5_0/Q6_K: q - 16 / q - 32 (signed) */
    __m256i sc[8];  /* int16 multipliers of the 16 pair sums */
    float d;        /* d (fp16 -> float) */
    float mins[8];  /* Q4_K: dmin * m[j] */
    int n;
} unit;

static const int8_t kBitOf[32] = {1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128,
                                  1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128};

SVM_INLINE void unpack_q5_0(const svm_block_q5_0 *b, unit *u) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    /* byte j <- byte j/8 of qh, then test bit j%8: 0x10 where element j's 5th bit is set */
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
                                               _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                                                2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_loadu_si256((const __m256i *)kBitOf);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    const __m256i q = _mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
    u->w[0] = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    u->sc[0] = _mm256_set1_epi16(1);
    u->d = svm_half_to_float(b->d);
    u->n = 1;
}

SVM_INLINE void unpack_q4_k(const svm_block_q4_k *b, unit *u) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int i = 0; i < 4; i++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * i));
        u->w[2 * i] = _mm256_and_si256(raw, m4);
        u->w[2 * i + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
    }
    const float dmin = svm_half_to_float(b->dmin);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        svm_q4_k_scale_min(j, b->scales, &sc, &m);
        u->sc[j] = _mm256_set1_epi16((short)sc);
        u->mins[j] = dmin * (float)m;
    }
    u->d = svm_half_to_float(b->d);
    u->n = 8;
}

SVM_INLINE void unpack_q6_k(const svm_block_q6_k *b, unit *u) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    for (int h = 0; h < 2; h++) {
        const __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        const __m256i lo[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                               _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                               _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
        for (int k = 0; k < 4; k++) {
            const __m256i top = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m2), 4);
            u->w[4 * h + k] = _mm256_sub_epi8(_mm256_or_si256(lo[k], top), off);
        }
    }
    for (int j = 0; j < 8; j++)
        u->sc[j] = _mm256_set_m128i(_mm_set1_epi16(b->scales[2 * j + 1]), _mm_set1_epi16(b->scales[2 * j]));
    u->d = svm_half_to_float(b->d);
    u->n = 8;
}

SVM_INLINE void unpack(svm_type type, const uint8_t *row, int unit_index, unit *u) {
    if (type == SVM_Q5_0) unpack_q5_0((const svm_block_q5_0 *)row + unit_index, u);
    else if (type == SVM_Q4_K) unpack_q4_k((const svm_block_q4_k *)row + unit_index, u);
    else unpack_q6_k((const svm_block_q6_k *)row + unit_index, u);
}

/* One row against tokens t < nt: acc[t] (lanes) and macc[t] (the Q4_K min terms) over every unit. */
SVM_INLINE void row_tile(svm_type type, const uint8_t *row, int cols, const uint8_t *X, size_t xs, int nt,
                         float *y, int ldy) {
    const int nb = cols / SVM_QK;
    const int per_unit = type == SVM_Q5_0 ? 1 : 8;
    const size_t unit_bytes = svm_row_bytes(type, SVM_QK * per_unit);
    const int is_signed = type != SVM_Q4_K;
    __m256 acc[4];
    float macc[4] = {0, 0, 0, 0};
    for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    unit u;
    for (int ui = 0; ui < nb / per_unit; ui++) {
        if (nt == 1) /* decode streams the weights once: prefetch ahead */
            _mm_prefetch((const char *)(row + (size_t)ui * unit_bytes + SVM_PREFETCH_BYTES), _MM_HINT_T0);
        unpack(type, row, ui, &u);
        for (int t = 0; t < nt; t++) {
            const uint8_t *xp = X + xs * t;
            const float *xd = (const float *)(xp + cols), *xsum = xd + nb;
            for (int j = 0; j < u.n; j++) {
                const int blk = ui * per_unit + j;
                const __m256i xq = _mm256_loadu_si256((const __m256i *)(xp + (size_t)blk * SVM_QK));
                const __m256i p = is_signed ? _mm256_maddubs_epi16(_mm256_sign_epi8(u.w[j], u.w[j]),
                                                                   _mm256_sign_epi8(xq, u.w[j]))
                                            : _mm256_maddubs_epi16(u.w[j], xq);
                const __m256i i = _mm256_madd_epi16(p, u.sc[j]);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(u.d * xd[blk]), acc[t]);
                if (!is_signed) macc[t] += u.mins[j] * xsum[blk];
            }
        }
    }
    for (int t = 0; t < nt; t++) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[t]), _mm256_extractf128_ps(acc[t], 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        y[(size_t)ldy * t] = _mm_cvtss_f32(s) - macc[t];
    }
}

#define ROW_FN(TYPE, NAME)                                                                                       \
    static SVM_TARGET void NAME(const uint8_t *row, int cols, const uint8_t *X, size_t xs, int nt, float *y,     \
                                int ldy) {                                                                       \
        row_tile(TYPE, row, cols, X, xs, nt, y, ldy);                                                            \
    }
ROW_FN(SVM_Q5_0, row_q5_0) ROW_FN(SVM_Q4_K, row_q4_k) ROW_FN(SVM_Q6_K, row_q6_k)

void svm_kquant_avx2_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                          size_t x_stride, int nt, float *Y, int ldy) {
    void (*fn)(const uint8_t *, int, const uint8_t *, size_t, int, float *, int) =
        type == SVM_Q5_0 ? row_q5_0 : type == SVM_Q4_K ? row_q4_k : row_q6_k;
    for (int r = 0; r < nr; r++) fn(W + row_bytes * r, cols, X, x_stride, nt, Y + r, ldy);
}

#endif
