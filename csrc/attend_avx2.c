/* AVX2 decode-attention kernels (AVX2 + FMA + F16C + BMI2), chosen at run time.
 *
 * AVX2 has no expand instruction: for each 8-channel byte of a kept mask, pdep turns the mask into
 * the permutation that moves the next popcount(mask) packed values to their channels (lane l takes
 * packed element rank(l)); pruned lanes are then filled with the MEAN recovery (keys) or the fill
 * value (pruned values), as in the AVX-512 kernels. Cases not specialised here use the portable
 * kernels. */
#include "attend.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define SV_TARGET __attribute__((target("avx2,fma,f16c,bmi2,popcnt")))
#define SV_INLINE static inline __attribute__((always_inline)) SV_TARGET

/* 0xFF in byte l of the result for each bit l set in m. */
SV_INLINE uint64_t bytes_of_bits(uint32_t m) { return _pdep_u64(m, 0x0101010101010101ull) * 0xFFu; }

/* All-ones 32-bit lanes where m has a bit set. */
SV_INLINE __m256 lanes_of_bits(uint32_t m) {
    return _mm256_castsi256_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128((long long)bytes_of_bits(m))));
}

SV_INLINE __m256 load8(const uint8_t *p, sparkv_precision kp) {
    if (kp == SPARKV_F32) return _mm256_loadu_ps((const float *)p);
    __m128i raw = _mm_loadu_si128((const __m128i *)p);
    return kp == SPARKV_F16 ? _mm256_cvtph_ps(raw)
                            : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

/* The next popcount(m) stored values at p placed in the lanes set in m (other lanes undefined). The
 * load may run past the packed values into the page's zeroed padding. */
SV_INLINE __m256 expand8(const uint8_t *p, uint32_t m, sparkv_precision kp) {
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)_pdep_u64(0x0706050403020100ull, bytes_of_bits(m))));
    return _mm256_permutevar8x32_ps(load8(p, kp), idx);
}

SV_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

SV_INLINE void score_spark_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, uint64_t *kept,
                             float *scores, const uint32_t G) {
    const sparkv_cache *cache = h->cache;
    const uint32_t d = h->d, nc = d / 8;
    const sparkv_precision kp = cache->policy.key_precision;
    const size_t kb = kp == SPARKV_F32 ? 4 : 2;
    const int mean = cache->policy.recovery == SPARKV_RECOVER_MEAN;
    const uint8_t *kptr = (const uint8_t *)page->k + *kept * kb;
    const __m256 signbit = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint8_t *mask = page->mask + (size_t)slot * nc;
        const uint8_t *sign = page->sign ? page->sign + (size_t)slot * nc : NULL;
        __m256 a = _mm256_setzero_ps();
        if (mean) a = _mm256_cvtph_ps(_mm_set1_epi16((short)page->stats[(size_t)slot * cache->n_stats + SV_STAT_MEAN]));
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
        for (uint32_t c = 0; c < nc; c++) {
            const uint32_t m = mask[c];
            const __m256 keep = lanes_of_bits(m);
            __m256 key = expand8(kptr, m, kp);
            kptr += (size_t)__builtin_popcount(m) * kb;
            if (mean) {
                __m256 fill = _mm256_mul_ps(a, _mm256_loadu_ps(h->rq + 8 * c));
                if (sign) fill = _mm256_xor_ps(fill, _mm256_and_ps(lanes_of_bits(sign[c]), signbit));
                key = _mm256_blendv_ps(fill, key, keep);
            } else {
                key = _mm256_and_ps(key, keep);
            }
            for (uint32_t g = 0; g < G; g++)
                acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(h->qs + (size_t)g * d + 8 * c), key, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) scores[g * SV_BLOCK + i] = hsum8(acc[g]);
    }
    *kept = (uint64_t)(kptr - (const uint8_t *)page->k) / kb;
}

SV_TARGET static void score_spark(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                  uint64_t *kept, float *scores) {
    const sparkv_recovery rec = h->cache->policy.recovery;
    if (h->group > SV_SIMD_MAX_GROUP || (rec != SPARKV_RECOVER_NONE && rec != SPARKV_RECOVER_MEAN)) {
        sv_score_spark_portable(h, page, t0, n, kept, scores);
        return;
    }
    SV_GROUP_SWITCH(h->group, score_spark_g, h, page, t0, n, kept, scores);
}

SV_INLINE void score_rows_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                            uint32_t qstride, uint32_t width, float *scores, const uint32_t G) {
    const uint32_t nc = (width + 7) / 8;
    const sparkv_precision kp = h->cache->policy.key_precision;
    const size_t kb = kp == SPARKV_F32 ? 4 : 2;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)page->k + (size_t)(t0 + i) * width * kb;
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
        for (uint32_t c = 0; c < nc; c++) {
            __m256 key = load8(row + (size_t)8 * c * kb, kp);
            for (uint32_t g = 0; g < G; g++)
                acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)g * qstride + 8 * c), key, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) scores[g * SV_BLOCK + i] = hsum8(acc[g]);
    }
}

SV_TARGET static void score_rows(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                                 uint32_t qstride, uint32_t width, float *scores) {
    if ((width + 7) / 8 * 8 > qstride || h->group > SV_SIMD_MAX_GROUP) {
        sv_score_rows_portable(h, page, t0, n, q, qstride, width, scores);
        return;
    }
    SV_GROUP_SWITCH(h->group, score_rows_g, h, page, t0, n, q, qstride, width, scores);
}

SV_INLINE void accumulate_v_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *p,
                              float *accum, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 8;
    const sparkv_precision vp = h->cache->policy.value_precision;
    const size_t vb = vp == SPARKV_F32 ? 4 : 2;
    const uint8_t *base = (const uint8_t *)page->v + (size_t)t0 * d * vb;
    for (uint32_t c = 0; c < nc; c++) {
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_loadu_ps(accum + (size_t)g * d + 8 * c);
        for (uint32_t i = 0; i < n; i++) {
            __m256 v = load8(base + ((size_t)i * d + 8 * c) * vb, vp);
            for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(p[g * SV_BLOCK + i]), v, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) _mm256_storeu_ps(accum + (size_t)g * d + 8 * c, acc[g]);
    }
}

SV_TARGET static void accumulate_v(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *p,
                                   float *accum) {
    if (h->group > SV_SIMD_MAX_GROUP) { sv_accumulate_v_portable(h, page, t0, n, p, accum); return; }
    SV_GROUP_SWITCH(h->group, accumulate_v_g, h, page, t0, n, p, accum);
}

SV_INLINE void accumulate_v_pruned_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                     const float *p, float *accum, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 8, tv = h->cache->keep_values;
    const sparkv_precision vp = h->cache->policy.value_precision;
    const size_t vb = vp == SPARKV_F32 ? 4 : 2;
    uint32_t off[SV_BLOCK];
    for (uint32_t i = 0; i < n; i++) off[i] = 0;
    for (uint32_t c = 0; c < nc; c++) {
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_loadu_ps(accum + (size_t)g * d + 8 * c);
        for (uint32_t i = 0; i < n; i++) {
            const uint32_t slot = t0 + i;
            const uint32_t m = page->vmask[(size_t)slot * nc + c];
            const uint8_t *row = (const uint8_t *)page->v + ((size_t)slot * tv + off[i]) * vb;
            const __m256 fill = _mm256_cvtph_ps(_mm_set1_epi16((short)page->vfill[slot]));
            __m256 v = _mm256_blendv_ps(fill, expand8(row, m, vp), lanes_of_bits(m));
            off[i] += (uint32_t)__builtin_popcount(m);
            for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(p[g * SV_BLOCK + i]), v, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) _mm256_storeu_ps(accum + (size_t)g * d + 8 * c, acc[g]);
    }
}

SV_TARGET static void accumulate_v_pruned(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                          const float *p, float *accum) {
    if (h->group > SV_SIMD_MAX_GROUP) { sv_accumulate_v_pruned_portable(h, page, t0, n, p, accum); return; }
    SV_GROUP_SWITCH(h->group, accumulate_v_pruned_g, h, page, t0, n, p, accum);
}

/* The portable polynomial (attend_portable.c), 8 lanes at a time. */
SV_TARGET static void exp_block(float *x, uint32_t n) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x0 = _mm256_loadu_ps(x + i);
        __m256 v = _mm256_max_ps(x0, lo);
        __m256 t = _mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f));
        __m256 k = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(_mm256_sub_ps(t, _mm256_set1_ps(0.5f))));
        __m256 r = _mm256_sub_ps(_mm256_sub_ps(v, _mm256_mul_ps(k, _mm256_set1_ps(0.693145751953125f))),
                                 _mm256_mul_ps(k, _mm256_set1_ps(1.428606765330187045e-06f)));
        __m256 y = _mm256_set1_ps(1.0f / 720.0f);
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f / 120.0f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f / 24.0f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f / 6.0f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(0.5f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f));
        __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(k), _mm256_set1_epi32(127)), 23);
        y = _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
        y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x0, lo, _CMP_LT_OQ));
        _mm256_storeu_ps(x + i, y);
    }
    if (i < n) sv_exp_block_portable(x + i, n - i);
}

#define SV_EXP_BLOCK exp_block
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#include "softmax_block.h"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* score_spark falls back to the portable kernel (which reads the look-up tables) for these */
static int uses_lut(uint32_t d, uint32_t group) { return group > SV_SIMD_MAX_GROUP; }

const sv_kernels sv_kernels_avx2 = {score_spark, score_rows, accumulate_v, accumulate_v_pruned, exp_block,
                                    sv_online_softmax, uses_lut};

#else
static int uses_lut(uint32_t d, uint32_t group) { return 1; }
const sv_kernels sv_kernels_avx2 = {sv_score_spark_portable, sv_score_rows_portable, sv_accumulate_v_portable,
                                    sv_accumulate_v_pruned_portable, sv_exp_block_portable, sv_softmax_portable,
                                    uses_lut};
#endif
