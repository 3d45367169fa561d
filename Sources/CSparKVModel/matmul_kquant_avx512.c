/* AVX-512 VNNI micro-kernel of svm_matmul for Q5_0, Q4_K and Q6_K weights (the portable one in
 * matmul_kquant.c is the specification). Work unit: 64 columns (two 32-value activation blocks
 * A, B) per zmm register, in natural column order, so lanes 0-7 hold block A's partial sums and
 * lanes 8-15 block B's.
 *
 * vpdpbusd multiplies unsigned weight bytes by signed activations, so the weights enter as their
 * unsigned codes q and the offsets are folded into the accumulator's start value:
 *  - Q4_K: q in 0..15, no offset; the lanes are multiplied by the sub-block's 6-bit scale (exact
 *    int32) and the min term dmin*m * (dx*qsum) is a scalar per sub-block.
 *  - Q5_0 / Q6_K: q in 0..31 / 0..63, value offset 16 / 32: the accumulator starts at
 *    -offset * (sum of the lane's 4 activations), computed once per token and 64 columns; Q6_K
 *    lanes are then multiplied by the int8 scale of their 16 values (lane / 4).
 * Each lane's int32 is scaled by d*dx (dx of the lane's block) in float and accumulated with FMA. */
#include "internal.h"

#if SVM_X86
#include <immintrin.h>

#define SVM_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define SVM_INLINE static inline __attribute__((always_inline)) SVM_TARGET

/* One unpacked unit of one row: n registers of 64 columns (Q5_0: 1 pair of blocks; K: 4). */
typedef struct {
    __m512i w[4];    /* unsigned codes q */
    __m512i sc[4];   /* int32 lane multipliers (Q4_K, Q6_K) */
    __m512 d;        /* Q5_0: [dA x8, dB x8]; K-quants: d in every lane */
    float mins[8];   /* Q4_K: dmin * m[j] per sub-block */
    int n;
    __mmask64 xmask; /* columns present (Q5_0 with an odd block count: the last pair lacks B) */
} unit;

SVM_INLINE void unpack_q5_0(const svm_block_q5_0 *a, int hasb, unit *u) {
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m128i ra = _mm_loadu_si128((const __m128i *)a[0].qs);
    const __m128i rb = hasb ? _mm_loadu_si128((const __m128i *)a[1].qs) : _mm_setzero_si128();
    /* natural order: [A 0-15 | A 16-31 | B 0-15 | B 16-31] = [lowA | highA | lowB | highB] */
    __m512i nib = _mm512_castsi128_si512(_mm_and_si128(ra, m4));
    nib = _mm512_inserti32x4(nib, _mm_and_si128(_mm_srli_epi16(ra, 4), m4), 1);
    nib = _mm512_inserti32x4(nib, _mm_and_si128(rb, m4), 2);
    nib = _mm512_inserti32x4(nib, _mm_and_si128(_mm_srli_epi16(rb, 4), m4), 3);
    uint32_t qa, qb = 0;
    memcpy(&qa, a[0].qh, 4);
    if (hasb) memcpy(&qb, a[1].qh, 4);
    const __mmask64 high = (__mmask64)qa | (__mmask64)qb << 32; /* bit j = 5th bit of column j */
    u->w[0] = _mm512_or_si512(nib, _mm512_maskz_mov_epi8(high, _mm512_set1_epi8(0x10)));
    const float da = svm_half_to_float(a[0].d), db = hasb ? svm_half_to_float(a[1].d) : 0.0f;
    u->d = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(da), _mm512_set1_ps(db));
    u->n = 1;
    u->xmask = hasb ? ~(__mmask64)0 : (__mmask64)0xffffffffu;
}

SVM_INLINE void unpack_q4_k(const svm_block_q4_k *b, unit *u) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    int sc[8];
    const float dmin = svm_half_to_float(b->dmin);
    for (int j = 0; j < 8; j++) {
        int m;
        svm_q4_k_scale_min(j, b->scales, &sc[j], &m);
        u->mins[j] = dmin * (float)m;
    }
    for (int i = 0; i < 4; i++) {
        /* sub-blocks 2i, 2i+1 = low, high nibbles of qs[32i..]: columns 64i.. in natural order */
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * i));
        u->w[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(raw, m4)),
                                     _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), 1);
        u->sc[i] = _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(sc[2 * i]), _mm512_set1_epi32(sc[2 * i + 1]));
    }
    u->d = _mm512_set1_ps(svm_half_to_float(b->d));
    u->n = 4;
    u->xmask = ~(__mmask64)0;
}

SVM_INLINE void unpack_q6_k(const svm_block_q6_k *b, unit *u) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        /* ql[64h..64h+63]: low nibbles = columns 128h + 0..63, high nibbles = 128h + 64..127 */
        const __m512i ql = _mm512_loadu_si512((const void *)(b->ql + 64 * h));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        /* [qh | qh >> 2]: bits 0-1 of each byte are the top bits of columns 0..63 (k = 0, 1); bits
         * 4-5 those of columns 64..127 (k = 2, 3) */
        const __m512i hh = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        const __m512i top0 = _mm512_slli_epi16(_mm512_and_si512(hh, m2), 4);
        const __m512i top1 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hh, 4), m2), 4);
        u->w[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), top0);
        u->w[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), top1);
    }
    const __m512i s = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->scales));
    for (int c = 0; c < 4; c++) /* lane l of register c covers columns 64c + 4l.. : scale 4c + l/4 */
        u->sc[c] = _mm512_permutexvar_epi32(
            _mm512_add_epi32(_mm512_set1_epi32(4 * c), _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0)),
            s);
    u->d = _mm512_set1_ps(svm_half_to_float(b->d));
    u->n = 4;
    u->xmask = ~(__mmask64)0;
}

/* One row against tokens t < nt over every unit. */
SVM_INLINE void row_tile(svm_type type, const uint8_t *row, int cols, const uint8_t *X, size_t xs, int nt,
                         float *y, int ldy) {
    const int nb = cols / SVM_QK;
    const __m512i lane_block = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i offset = _mm512_set1_epi8(type == SVM_Q5_0 ? 16 : type == SVM_Q6_K ? 32 : 0);
    const int units = type == SVM_Q5_0 ? (nb + 1) / 2 : nb / 8;
    const size_t unit_bytes = type == SVM_Q5_0 ? 2 * sizeof(svm_block_q5_0) : svm_row_bytes(type, SVM_QK_K);
    __m512 acc[4];
    float macc[4] = {0, 0, 0, 0};
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    unit u;
    for (int ui = 0; ui < units; ui++) {
        if (nt == 1) /* decode streams the weights once: prefetch ahead */
            _mm_prefetch((const char *)(row + (size_t)ui * unit_bytes + SVM_PREFETCH_BYTES), _MM_HINT_T0);
        if (type == SVM_Q5_0) unpack_q5_0((const svm_block_q5_0 *)row + 2 * ui, 2 * ui + 1 < nb, &u);
        else if (type == SVM_Q4_K) unpack_q4_k((const svm_block_q4_k *)row + ui, &u);
        else unpack_q6_k((const svm_block_q6_k *)row + ui, &u);
        const __mmask16 dmask = u.xmask == ~(__mmask64)0 ? 0xffff : 0x00ff;
        for (int t = 0; t < nt; t++) {
            const uint8_t *xp = X + xs * t;
            const float *xd = (const float *)(xp + cols), *xsum = xd + nb;
            for (int c = 0; c < u.n; c++) {
                const int blk = type == SVM_Q5_0 ? 2 * ui : 8 * ui + 2 * c; /* block A of this register */
                const __m512i xq = _mm512_maskz_loadu_epi8(u.xmask, xp + (size_t)blk * SVM_QK);
                /* -offset * (sum of the lane's 4 activations) */
                const __m512i start =
                    type == SVM_Q4_K ? _mm512_setzero_si512()
                                     : _mm512_sub_epi32(_mm512_setzero_si512(),
                                                        _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, xq));
                __m512i i = _mm512_dpbusd_epi32(start, u.w[c], xq);
                if (type != SVM_Q5_0) i = _mm512_mullo_epi32(i, u.sc[c]);
                __m128 dpair = _mm_castpd_ps(_mm_load_sd((const double *)(xd + blk)));
                if (dmask != 0xffff) dpair = _mm_move_ss(_mm_setzero_ps(), dpair); /* no block B */
                const __m512 dx = _mm512_maskz_permutexvar_ps(dmask, lane_block, _mm512_castps128_ps512(dpair));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(u.d, dx), acc[t]);
                if (type == SVM_Q4_K) macc[t] += u.mins[2 * c] * xsum[blk] + u.mins[2 * c + 1] * xsum[blk + 1];
            }
        }
    }
    for (int t = 0; t < nt; t++) y[(size_t)ldy * t] = _mm512_reduce_add_ps(acc[t]) - macc[t];
}

#define ROW_FN(TYPE, NAME)                                                                                       \
    static SVM_TARGET void NAME(const uint8_t *row, int cols, const uint8_t *X, size_t xs, int nt, float *y,     \
                                int ldy) {                                                                       \
        row_tile(TYPE, row, cols, X, xs, nt, y, ldy);                                                            \
    }
ROW_FN(SVM_Q5_0, row_q5_0) ROW_FN(SVM_Q4_K, row_q4_k) ROW_FN(SVM_Q6_K, row_q6_k)

void svm_kquant_avx512_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                            size_t x_stride, int nt, float *Y, int ldy) {
    void (*fn)(const uint8_t *, int, const uint8_t *, size_t, int, float *, int) =
        type == SVM_Q5_0 ? row_q5_0 : type == SVM_Q4_K ? row_q4_k : row_q6_k;
    for (int r = 0; r < nr; r++) fn(W + row_bytes * r, cols, X, x_stride, nt, Y + r, ldy);
}

#endif
