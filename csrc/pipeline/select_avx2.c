/* Exact top-T channel selection of one token with AVX2: the search of select_avx512.c on 16 keys
 * per compare. The keys (top 16 bits of each non-negative double) are biased by 0x8000 so that
 * AVX2's signed 16-bit compares order them as unsigned numbers. */
#include "prefill_kernels.h"

#ifdef SV_HAVE_X86_PREFILL
#include <immintrin.h>
#include <string.h>

#define VECS (SPARKV_MAX_HEAD_DIM / 16)

#define TARGET __attribute__((target("avx2,bmi2,popcnt")))

/* Keys of one token, biased, padded with biased zeros (never >= t >= 1). */
TARGET static void load_keys(const double *s, uint32_t d, __m256i *kv) {
    uint16_t key[SPARKV_MAX_HEAD_DIM + 16];
    uint32_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m256i half[2];
        for (int h = 0; h < 2; h++) {
            /* the high dwords of 8 doubles, back in channel order, then their top 16 bits */
            const __m256 a = _mm256_loadu_ps((const float *)(s + j + 8 * h));
            const __m256 b = _mm256_loadu_ps((const float *)(s + j + 8 * h + 4));
            const __m256i hi = _mm256_castps_si256(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
            half[h] = _mm256_srli_epi32(_mm256_permute4x64_epi64(hi, _MM_SHUFFLE(3, 1, 2, 0)), 16);
        }
        const __m256i packed = _mm256_packus_epi32(half[0], half[1]);
        _mm256_storeu_si256((__m256i *)(key + j), _mm256_permute4x64_epi64(packed, _MM_SHUFFLE(3, 1, 2, 0)));
    }
    for (; j < d; j++) {
        uint64_t u;
        memcpy(&u, s + j, sizeof u);
        key[j] = (uint16_t)(u >> 48);
    }
    const uint32_t nv = (d + 15) / 16;
    for (; j < 16 * nv; j++) key[j] = 0;
    const __m256i bias = _mm256_set1_epi16((short)0x8000);
    for (uint32_t i = 0; i < nv; i++)
        kv[i] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(key + 16 * i)), bias);
}

/* Keys >= t, as x > t - 1; each 16-bit compare result gives 2 bits of the byte mask. */
__attribute__((always_inline)) TARGET static inline uint32_t count_at_least(const __m256i *kv, uint32_t nv,
                                                                             uint32_t t) {
    const __m256i tv = _mm256_set1_epi16((short)((t - 1) ^ 0x8000u));
    uint32_t count = 0;
    for (uint32_t i = 0; i < nv; i++)
        count += (uint32_t)_mm_popcnt_u32((uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi16(kv[i], tv)));
    return count / 2;
}

/* Each token's v: the largest key value with at least `keep` keys >= v, bit by bit. The tokens
 * sit in the inner loop: their searches are independent, so they overlap in the pipeline. */
__attribute__((always_inline)) TARGET static inline void search(__m256i kv[][VECS], uint32_t n, uint32_t nv,
                                                                uint32_t keep, uint32_t *v) {
    for (int b = 15; b >= 0; b--)
        for (uint32_t t = 0; t < n; t++) {
            const uint32_t c = v[t] | 1u << b;
            v[t] = count_at_least(kv[t], nv, c) >= keep ? c : v[t];
        }
}

/* The mask of one token whose threshold key v is known: keys above v, then the bucket. */
TARGET static void finish(const __m256i *kv, const double *s, uint32_t d, uint32_t keep, uint32_t v, uint8_t *mask) {
    const uint32_t nb = d / 8, nv = (d + 15) / 16;
    const __m256i tv = _mm256_set1_epi16((short)(v ^ 0x8000u));
    uint32_t gt[VECS], eq[VECS], above = 0, n_eq = 0;
    for (uint32_t i = 0; i < nv; i++) {
        const uint32_t valid = d - 16 * i >= 16 ? 0xffffu : (1u << (d - 16 * i)) - 1u;
        gt[i] = _pext_u32((uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi16(kv[i], tv)), 0x55555555u);
        eq[i] = _pext_u32((uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(kv[i], tv)), 0x55555555u) & valid;
        above += (uint32_t)_mm_popcnt_u32(gt[i]);
        n_eq += (uint32_t)_mm_popcnt_u32(eq[i]);
    }
    /* v is the largest such key, so above < keep <= above + n_eq */
    const uint32_t need = keep - above;
    for (uint32_t i = 0; i < nv; i++) {
        const uint32_t m = need == n_eq ? gt[i] | eq[i] : gt[i];
        mask[2 * i] = (uint8_t)m;
        if (2 * i + 1 < nb) mask[2 * i + 1] = (uint8_t)(m >> 8);
    }
    if (need == n_eq) return;
    uint64_t bits[SPARKV_MAX_HEAD_DIM];
    uint32_t index[SPARKV_MAX_HEAD_DIM], n = 0;
    for (uint32_t i = 0; i < nv; i++)
        for (uint32_t m = eq[i]; m; m &= m - 1) {
            const uint32_t c = 16 * i + (uint32_t)__builtin_ctz(m);
            memcpy(&bits[n], s + c, sizeof(uint64_t));
            index[n++] = c;
        }
    sv_select_candidates(bits, index, n, need, mask);
}

TARGET void sv_select_topk_avx2(const double *s, uint32_t n, uint32_t d, uint32_t keep, uint8_t *mask) {
    const uint32_t nb = d / 8, nv = (d + 15) / 16;
    if (keep >= d || keep == 0) {
        memset(mask, keep ? 0xff : 0, (size_t)n * nb);
        return;
    }
    __m256i kv[SV_SELECT_BLOCK][VECS];
    for (uint32_t t = 0; t < n; t++) load_keys(s + (size_t)t * d, d, kv[t]);
    uint32_t v[SV_SELECT_BLOCK] = {0};
    if (nv == 8) search(kv, n, 8, keep, v); /* D = 128: the count loop unrolled */
    else search(kv, n, nv, keep, v);
    for (uint32_t t = 0; t < n; t++) finish(kv[t], s + (size_t)t * d, d, keep, v[t], mask + (size_t)t * nb);
}
#endif
