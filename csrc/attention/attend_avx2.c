/* AVX2 decode-attention kernels (AVX2 + FMA + F16C + BMI2), chosen at run time.
 *
 * AVX2 has no expand instruction: for each 8-channel byte of a kept mask, pdep turns the mask into
 * the permutation that moves the next popcount(mask) packed values to their channels (lane l takes
 * packed element rank(l)); pruned lanes are then filled with the MEAN recovery (keys) or the fill
 * value (pruned values), as in the AVX-512 kernels. Cases not specialised here use the portable
 * kernels.
 *
 * I8 values are permuted the same way after widening 8 bytes to 32-bit lanes; I4 rows are first
 * unpacked to int8 (sv_unpack_i4). Per-token scales are folded out of the inner loops as in the
 * AVX-512 kernels (quant_block.h); whole key rows are dequantized in registers, one broadcast scale
 * per 8-lane block (quant_group is a multiple of 8, so a block never straddles two groups). */
#include "attend.h"
#include "half.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define SV_TARGET __attribute__((target("avx2,fma,f16c,bmi2,popcnt")))
#define SV_INLINE static inline __attribute__((always_inline)) SV_TARGET

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#define SV_HALF _cvtsh_ss
#include "quant_block.h"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

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

/* 8 int8 values as floats. */
SV_INLINE __m256 i8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* The next popcount(m) int8 values at p placed in the lanes set in m (other lanes undefined), as
 * floats. Reads 8 bytes. */
SV_INLINE __m256 expand_i8x8(const int8_t *p, uint32_t m) {
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)_pdep_u64(0x0706050403020100ull, bytes_of_bits(m))));
    return _mm256_cvtepi32_ps(_mm256_permutevar8x32_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)), idx));
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
    const uint8_t *kptr = (const uint8_t *)page->k + *kept;
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
    *kept = (uint64_t)(kptr - (const uint8_t *)page->k);
}

/* score_spark_g for I8/I4 kept values: key' = q_int on kept lanes, fill / s on pruned lanes, and the
 * score times s (quant_block.h). */
SV_INLINE void score_spark_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, uint64_t *kept,
                             float *scores, const int i4, const uint32_t G) {
    const sparkv_cache *cache = h->cache;
    const uint32_t d = h->d, nc = d / 8;
    const int mean = cache->policy.recovery == SPARKV_RECOVER_MEAN;
    uint64_t off = *kept;
    const __m256 signbit = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    int8_t tmp[SPARKV_MAX_HEAD_DIM + 32];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint8_t *mask = page->mask + (size_t)slot * nc;
        const uint8_t *sign = page->sign ? page->sign + (size_t)slot * nc : NULL;
        const uint8_t *row = (const uint8_t *)page->k + off;
        const int8_t *kq = (const int8_t *)row;
        if (i4) {
            /* the row's length is only known from the mask */
            uint32_t nk = 0;
            for (uint32_t c = 0; c < nc; c++) nk += (uint32_t)__builtin_popcount(mask[c]);
            sv_unpack_i4(tmp, row, (nk + 1) / 2);
            off += (nk + 1) / 2;
            kq = tmp;
        }
        const int8_t *const kq0 = kq;
        const float f = sv_scale_factor(page->kscale[slot]);
        __m256 a = _mm256_setzero_ps();
        if (mean) a = _mm256_set1_ps(SV_HALF(page->stats[(size_t)slot * cache->n_stats + SV_STAT_MEAN]) / f);
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
        for (uint32_t c = 0; c < nc; c++) {
            const uint32_t m = mask[c];
            const __m256 keep = lanes_of_bits(m);
            __m256 key = expand_i8x8(kq, m);
            kq += __builtin_popcount(m);
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
        if (!i4) off += (uint64_t)(kq - kq0);
        for (uint32_t g = 0; g < G; g++) scores[g * SV_BLOCK + i] = hsum8(acc[g]) * f;
    }
    *kept = off;
}

SV_TARGET static void score_spark(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                  uint64_t *kept, float *scores) {
    const sparkv_recovery rec = h->cache->policy.recovery;
    if (h->group > SV_SIMD_MAX_GROUP) {
        sv_score_spark_portable(h, page, t0, n, kept, scores);
        return;
    }
    if (rec != SPARKV_RECOVER_NONE && rec != SPARKV_RECOVER_MEAN) {
        sv_score_spark_sampled_avx2(h, page, t0, n, kept, scores);
        return;
    }
    const sparkv_precision kp = h->cache->policy.key_precision;
    if (kp == SPARKV_I8) SV_GROUP_SWITCH(h->group, score_spark_q, h, page, t0, n, kept, scores, 0);
    else if (kp == SPARKV_I4) SV_GROUP_SWITCH(h->group, score_spark_q, h, page, t0, n, kept, scores, 1);
    else SV_GROUP_SWITCH(h->group, score_spark_g, h, page, t0, n, kept, scores);
}

SV_INLINE void score_rows_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                            uint32_t qstride, uint32_t width, float *scores, const uint32_t G) {
    const uint32_t nc = (width + 7) / 8, tail = width % 8;
    const sparkv_precision kp = h->cache->policy.key_precision;
    const size_t kb = kp == SPARKV_F32 ? 4 : 2;
    /* The last block of a row shorter than a multiple of 8 (ThinK rows) is copied into a zeroed
     * buffer: past the row lie the next row or another array, whose bits may be NaN/Inf as floats,
     * and 0 * NaN would poison the score even though q is 0 there. AVX2 has no masked 16-bit load. */
    uint8_t last_block[32] = {0};
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)page->k + (size_t)(t0 + i) * width * kb;
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
        for (uint32_t c = 0; c < nc; c++) {
            const uint8_t *src = row + (size_t)8 * c * kb;
            if (c + 1 == nc && tail) {
                memcpy(last_block, src, tail * kb);
                src = last_block;
            }
            __m256 key = load8(src, kp);
            for (uint32_t g = 0; g < G; g++)
                acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)g * qstride + 8 * c), key, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) scores[g * SV_BLOCK + i] = hsum8(acc[g]);
    }
}

/* score_rows_g for I8/I4 rows: ThinK rows' one scale per token multiplies the score; whole rows
 * multiply each 8-lane block by its group's scale. Row reads run past the row (q is zero there). */
SV_INLINE void score_rows_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                            uint32_t qstride, uint32_t width, float *scores, const int i4, const int per_token,
                            const uint32_t G) {
    const uint32_t nc = (width + 7) / 8, ng = h->cache->kgroups, bpg = h->cache->policy.quant_group / 8;
    const size_t row_bytes = i4 ? (width + 1) / 2 : width;
    int8_t tmp[SPARKV_MAX_HEAD_DIM + 32];
    float sc[SPARKV_MAX_HEAD_DIM / 8];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint8_t *row = (const uint8_t *)page->k + (size_t)slot * row_bytes;
        const int8_t *kq = (const int8_t *)row;
        if (i4) {
            sv_unpack_i4(tmp, row, row_bytes);
            kq = tmp;
        }
        if (!per_token)
            for (uint32_t k = 0; k < ng; k++) sc[k] = SV_HALF(page->kscale[(size_t)slot * ng + k]);
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
        for (uint32_t c = 0; c < nc; c++) {
            __m256 key = i8x8(kq + 8 * c);
            if (!per_token) key = _mm256_mul_ps(key, _mm256_set1_ps(sc[c / bpg]));
            for (uint32_t g = 0; g < G; g++)
                acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)g * qstride + 8 * c), key, acc[g]);
        }
        /* a zero ThinK scale means every integer is 0: the score is 0 either way */
        const float f = per_token ? SV_HALF(page->kscale[slot]) : 1.0f;
        for (uint32_t g = 0; g < G; g++) scores[g * SV_BLOCK + i] = per_token ? hsum8(acc[g]) * f : hsum8(acc[g]);
    }
}

SV_TARGET static void score_rows(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                                 uint32_t qstride, uint32_t width, float *scores) {
    if ((width + 7) / 8 * 8 > qstride || h->group > SV_SIMD_MAX_GROUP) {
        sv_score_rows_portable(h, page, t0, n, q, qstride, width, scores);
        return;
    }
    const sparkv_precision kp = h->cache->policy.key_precision;
    if (sv_is_quantized(kp)) {
        const int i4 = kp == SPARKV_I4, per_token = page->keys != SV_KEYS_DENSE;
        SV_FLAGS_GROUP_SWITCH(h->group, i4, per_token, score_rows_q, h, page, t0, n, q, qstride, width, scores);
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

/* w[g * SV_BLOCK + i] = p[g * SV_BLOCK + i] * s[i], s the block's n fp16 scales of one group (0 past n). */
SV_INLINE void group_weights(const uint16_t *s, uint32_t n, const float *p, uint32_t G, float *w) {
    uint16_t tail[8];
    for (uint32_t i0 = 0; i0 < SV_BLOCK; i0 += 8) {
        const uint16_t *src = s + i0;
        if (n < i0 + 8) { /* no masked 16-bit loads in AVX2: the block's last scales through a zeroed copy */
            for (uint32_t i = 0; i < 8; i++) tail[i] = i0 + i < n ? s[i0 + i] : 0;
            src = tail;
        }
        const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)src));
        for (uint32_t g = 0; g < G; g++)
            _mm256_storeu_ps(w + g * SV_BLOCK + i0, _mm256_mul_ps(_mm256_loadu_ps(p + g * SV_BLOCK + i0), sv));
    }
}

/* accumulate_v_g for I8/I4 rows: the weight of token i in scale group k is p_i * s_ik, built once per
 * group for the block (an 8-lane block lies in one group). */
SV_INLINE void accumulate_v_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *p,
                              float *accum, const int i4, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 8, bpg = h->cache->policy.quant_group / 8;
    const size_t row_bytes = i4 ? d / 2 : d;
    const int8_t *base = (const int8_t *)page->v + (size_t)t0 * row_bytes;
    int8_t tmp[SV_BLOCK * SPARKV_MAX_HEAD_DIM + 32];
    if (i4) {
        sv_unpack_i4(tmp, (const uint8_t *)base, (size_t)n * row_bytes);
        base = tmp;
    }
    float w[SV_SIMD_MAX_GROUP * SV_BLOCK];
    for (uint32_t c = 0; c < nc; c++) {
        if (c % bpg == 0) group_weights(page->vscale + (size_t)(c / bpg) * page->cap + t0, n, p, G, w);
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_loadu_ps(accum + (size_t)g * d + 8 * c);
        for (uint32_t i = 0; i < n; i++) {
            const __m256 v = i8x8(base + (size_t)i * d + 8 * c);
            for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(w[g * SV_BLOCK + i]), v, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) _mm256_storeu_ps(accum + (size_t)g * d + 8 * c, acc[g]);
    }
}

SV_TARGET static void accumulate_v(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *p,
                                   float *accum) {
    if (h->group > SV_SIMD_MAX_GROUP) { sv_accumulate_v_portable(h, page, t0, n, p, accum); return; }
    const sparkv_precision vp = h->cache->policy.value_precision;
    if (vp == SPARKV_I8) SV_GROUP_SWITCH(h->group, accumulate_v_q, h, page, t0, n, p, accum, 0);
    else if (vp == SPARKV_I4) SV_GROUP_SWITCH(h->group, accumulate_v_q, h, page, t0, n, p, accum, 1);
    else SV_GROUP_SWITCH(h->group, accumulate_v_g, h, page, t0, n, p, accum);
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

/* accumulate_v_pruned_g for I8/I4 kept values: one scale s per token, folded into the weight (p * s),
 * the fill entering as fill / s (quant_block.h). */
SV_INLINE void accumulate_v_pruned_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                     const float *p, float *accum, const int i4, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 8, tv = h->cache->keep_values;
    const size_t row_bytes = i4 ? (tv + 1) / 2 : tv, stride = i4 ? 2 * row_bytes : row_bytes;
    const int8_t *base = (const int8_t *)page->v + (size_t)t0 * row_bytes;
    int8_t tmp[SV_BLOCK * (SPARKV_MAX_HEAD_DIM + 1) + 32];
    if (i4) {
        sv_unpack_i4(tmp, (const uint8_t *)base, (size_t)n * row_bytes);
        base = tmp;
    }
    float f[SV_BLOCK], w[SV_SIMD_MAX_GROUP * SV_BLOCK];
    sv_token_factors(page->vscale, 1, t0, n, f);
    sv_fold_weights(p, f, G, w);
    uint32_t off[SV_BLOCK];
    __m256 fill[SV_BLOCK];
    for (uint32_t i = 0; i < n; i++) {
        off[i] = 0;
        fill[i] = _mm256_set1_ps(SV_HALF(page->vfill[t0 + i]) / f[i]);
    }
    for (uint32_t c = 0; c < nc; c++) {
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_loadu_ps(accum + (size_t)g * d + 8 * c);
        for (uint32_t i = 0; i < n; i++) {
            const uint32_t m = page->vmask[(size_t)(t0 + i) * nc + c];
            const __m256 v = _mm256_blendv_ps(fill[i], expand_i8x8(base + (size_t)i * stride + off[i], m), lanes_of_bits(m));
            off[i] += (uint32_t)__builtin_popcount(m);
            for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(w[g * SV_BLOCK + i]), v, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) _mm256_storeu_ps(accum + (size_t)g * d + 8 * c, acc[g]);
    }
}

SV_TARGET static void accumulate_v_pruned(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                          const float *p, float *accum) {
    if (h->group > SV_SIMD_MAX_GROUP) { sv_accumulate_v_pruned_portable(h, page, t0, n, p, accum); return; }
    const sparkv_precision vp = h->cache->policy.value_precision;
    if (vp == SPARKV_I8) SV_GROUP_SWITCH(h->group, accumulate_v_pruned_q, h, page, t0, n, p, accum, 0);
    else if (vp == SPARKV_I4) SV_GROUP_SWITCH(h->group, accumulate_v_pruned_q, h, page, t0, n, p, accum, 1);
    else SV_GROUP_SWITCH(h->group, accumulate_v_pruned_g, h, page, t0, n, p, accum);
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
