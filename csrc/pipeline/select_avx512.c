/* Exact top-T channel selection of one token with AVX-512. The bits of a non-negative double,
 * read as an integer, are ordered like the double, so their top 16 bits (exponent and 4 mantissa
 * bits) are a monotone key: a bitwise search over 32 keys per compare finds the key bucket of the
 * T-th largest saliency; every channel above that bucket is kept outright, and the few channels
 * inside it are ranked on their full bits (select_candidates.c), ties toward the lower index. */
#include "prefill_kernels.h"

#ifdef SV_HAVE_X86_PREFILL
#include <immintrin.h>
#include <string.h>

#define VECS (SPARKV_MAX_HEAD_DIM / 32)

#define TARGET __attribute__((target("avx512f,avx512bw,popcnt")))

__attribute__((always_inline)) TARGET static inline uint32_t count_at_least(const __m512i *kv, uint32_t nv,
                                                                             uint32_t t) {
    const __m512i tv = _mm512_set1_epi16((short)t);
    uint32_t count = 0;
    for (uint32_t i = 0; i < nv; i++) count += (uint32_t)_mm_popcnt_u32(_mm512_cmpge_epu16_mask(kv[i], tv));
    return count;
}

/* Each token's v: the largest key value with at least `keep` keys >= v, bit by bit. The tokens
 * sit in the inner loop: their searches are independent, so they overlap in the pipeline. */
__attribute__((always_inline)) TARGET static inline void search(__m512i kv[][VECS], uint32_t n, uint32_t nv,
                                                                uint32_t keep, uint32_t *v) {
    for (int b = 15; b >= 0; b--)
        for (uint32_t t = 0; t < n; t++) {
            const uint32_t c = v[t] | 1u << b;
            v[t] = count_at_least(kv[t], nv, c) >= keep ? c : v[t];
        }
}

/* The mask of one token whose threshold key v is known: keys above v, then the bucket. */
TARGET static void finish(const __m512i *kv, const double *s, uint32_t d, uint32_t keep, uint32_t v, uint8_t *mask) {
    const uint32_t nv = (d + 31) / 32;
    const __m512i tv = _mm512_set1_epi16((short)v);
    uint32_t gt[VECS], eq[VECS], above = 0, n_eq = 0;
    for (uint32_t i = 0; i < nv; i++) {
        const uint32_t rest = d - 32 * i, valid = rest >= 32 ? 0xffffffffu : (1u << rest) - 1u;
        gt[i] = _mm512_cmpgt_epu16_mask(kv[i], tv);
        eq[i] = _mm512_cmpeq_epu16_mask(kv[i], tv) & valid;
        above += (uint32_t)_mm_popcnt_u32(gt[i]);
        n_eq += (uint32_t)_mm_popcnt_u32(eq[i]);
    }
    /* v is the largest such key, so above < keep <= above + n_eq */
    const uint32_t need = keep - above;
    if (need == n_eq)
        for (uint32_t i = 0; i < nv; i++) gt[i] |= eq[i];
    memcpy(mask, gt, d / 8); /* little-endian: bit j of the words is bit j & 7 of byte j >> 3 */
    if (need == n_eq) return;
    uint64_t bits[SPARKV_MAX_HEAD_DIM];
    uint32_t index[SPARKV_MAX_HEAD_DIM], n = 0;
    for (uint32_t i = 0; i < nv; i++)
        for (uint32_t m = eq[i]; m; m &= m - 1) {
            const uint32_t j = 32 * i + (uint32_t)__builtin_ctz(m);
            memcpy(&bits[n], s + j, sizeof(uint64_t));
            index[n++] = j;
        }
    sv_select_candidates(bits, index, n, need, mask);
}

TARGET void sv_select_topk_avx512(const double *s, uint32_t n, uint32_t d, uint32_t keep, uint8_t *mask) {
    const uint32_t nb = d / 8, nv = (d + 31) / 32;
    if (keep >= d || keep == 0) {
        memset(mask, keep ? 0xff : 0, (size_t)n * nb);
        return;
    }
    __m512i kv[SV_SELECT_BLOCK][VECS];
    for (uint32_t t = 0; t < n; t++) {
        uint16_t key[SPARKV_MAX_HEAD_DIM];
        const double *st = s + (size_t)t * d;
        for (uint32_t j = 0; j < d; j += 8) /* d is a multiple of 8 */
            _mm_storeu_si128((__m128i *)(key + j),
                             _mm512_cvtepi64_epi16(_mm512_srli_epi64(_mm512_loadu_si512(st + j), 48)));
        for (uint32_t i = 0; i < nv; i++) {
            const uint32_t rest = d - 32 * i;
            /* padding keys are 0: never >= t >= 1 */
            kv[t][i] = _mm512_maskz_loadu_epi16(rest >= 32 ? 0xffffffffu : (1u << rest) - 1u, key + 32 * i);
        }
    }
    uint32_t v[SV_SELECT_BLOCK] = {0};
    if (nv == 4) search(kv, n, 4, keep, v); /* D = 128: the count loop unrolled */
    else search(kv, n, nv, keep, v);
    for (uint32_t t = 0; t < n; t++) finish(kv[t], s + (size_t)t * d, d, keep, v[t], mask + (size_t)t * nb);
}
#endif
