/* AVX-512 decode-attention kernels (F/BW/VL/VBMI2 + F16C + FMA), chosen at run time.
 *
 * A SparK key is rebuilt 16 lanes at a time in registers: vpexpandw/vexpandps place the kept
 * values at their channels, and the pruned lanes are filled with the MEAN recovery
 * sign * sqrt(m_t/c) * sqrt(c/qn_j) ("fused" recovery) before one dense FMA per query head of the
 * GQA group. Value-pruned values are rebuilt the same way with the token's fill value. Nothing is
 * written back to memory. Cases not specialised here (sampled recovery, head_dim not a multiple
 * of 16, groups above SV_SIMD_MAX_GROUP) use the portable kernels.
 *
 * I8 keys and values are expanded as bytes (vpexpandb: 64 kept-key channels per expand) and
 * widened to floats in registers; I4 rows are first unpacked to int8 in a small buffer
 * (sv_unpack_i4). Per-token scales are folded out of the inner loops (quant_block.h): a SparK/ThinK
 * score is multiplied by its token's key scale after the reduction, a value scale multiplies the
 * softmax weight. Whole key rows with a scale per quant_group channels are dequantized in registers
 * (the token's scales permuted once per group, or per 16 lanes when quant_group is not a multiple
 * of 16). Whole value rows with quant_group not a multiple of 16 use the AVX2 kernel, whose 8-lane
 * chunks never straddle two groups. The scale arrays are prefetched like the rows. */
#include "attend.h"
#include "half.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>


#include "attend_avx512_common.h"








/* The fp16 scales (I8/I4) of the token SV_PREFETCH_TOKENS ahead: small separate arrays, the value
 * scales one stream per group, that the hardware prefetcher follows poorly. kper: key scales per
 * token (quant_group groups of whole rows, else 1). */
SV_INLINE void prefetch_scales(const sv_page *page, uint32_t slot, uint32_t kper, uint32_t vgroups) {
    const uint32_t ahead = slot + SV_PREFETCH_TOKENS;
    if (ahead >= page->n) return;
    if (page->kscale) _mm_prefetch((const char *)(page->kscale + (size_t)ahead * kper), _MM_HINT_T0);
    if (page->vscale && (slot & 15) == 0) {
        if (page->values_pruned) _mm_prefetch((const char *)(page->vscale + ahead), _MM_HINT_T0);
        else
            for (uint32_t k = 0; k < vgroups; k++)
                _mm_prefetch((const char *)(page->vscale + (size_t)k * page->cap + ahead), _MM_HINT_T0);
    }
}

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#endif
#define SV_HALF _cvtsh_ss
#include "quant_block.h"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif



/* 16 int8 values as floats. */
SV_INLINE __m512 i8x16(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* The next popcount(m) int8 values at p placed in the lanes set in m (0 elsewhere), as floats. */
SV_INLINE __m512 expand_i8x16(const int8_t *p, __mmask16 m) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_expand_epi8(m, _mm_loadu_si128((const __m128i *)p))));
}

/* Tokens scored per pass of the unrolled kernels: the G * U <= 16 accumulators (query head g,
 * token u in lane g * U + u after reduce16x16) stay in registers, and every load of a query block
 * serves U tokens instead of one. */
#define SV_UNROLL(G) ((G) >= 16u ? 1u : 16u / (G))

/* Stores lane g * U + u of r (query head g, token i + u; u < cnt) to scores[g * SV_BLOCK + i + u],
 * times fac[u] when fac is not NULL. One masked store per query head: the base is shifted down by
 * g * U lanes (still inside scores, U <= 16 < SV_BLOCK), and masked-off lanes are never written. */
SV_INLINE void store_scores(__m512 r, uint32_t G, uint32_t U, uint32_t cnt, uint32_t i, const float *fac,
                            float *scores) {
    if (fac) {
        float f[16];
        for (uint32_t g = 0; g < G; g++)
            for (uint32_t u = 0; u < U; u++) f[g * U + u] = u < cnt ? fac[u] : 0.0f;
        for (uint32_t k = G * U; k < 16; k++) f[k] = 0.0f;
        r = _mm512_mul_ps(r, _mm512_loadu_ps(f));
    }
    const uint32_t low = (1u << cnt) - 1u;
    for (uint32_t g = 0; g < G; g++)
        _mm512_mask_storeu_ps(scores + (size_t)g * SV_BLOCK + i - (size_t)g * U, (__mmask16)(low << (g * U)), r);
}

/* Reduces the first G * U accumulators (the others must be zero) and stores the scores. */
SV_INLINE void finish_pass(__m512 *acc, uint32_t G, uint32_t U, uint32_t cnt, uint32_t i, const float *fac,
                           float *scores) {
    store_scores(reduce16x16(acc), G, U, cnt, i, fac, scores);
}

/* kp, mean and G are compile-time constants in every instance (see score_spark), so the inner
 * loop carries no precision or recovery test. */
SV_INLINE void score_spark_pass(const sv_head_ctx *h, const sv_page *page, uint32_t slot, const uint8_t **kptr,
                                float *scores, uint32_t i, const sparkv_precision kp, const int signs,
                                const uint32_t d, const uint32_t G, const uint32_t U, const uint32_t cnt) {
    const sparkv_cache *cache = h->cache;
    const uint32_t nc = d / 16, nb = d / 8;
    const int quant = kp == SPARKV_I8 || kp == SPARKV_I4, i4 = kp == SPARKV_I4;
    /* bytes per stored value (I4 rows are unpacked to one int8 per value first) */
    const size_t kb = kp == SPARKV_F32 ? 4 : quant ? 1 : 2;
    const __m512i signbit = _mm512_set1_epi32((int)0x80000000u);
    const uint8_t *src[16];
    int8_t unpacked[i4 ? 16 : 1][i4 ? SPARKV_MAX_HEAD_DIM + 32 : 1];
    /* token u's mask (sign) word c: mask[u * nc + c] */
    const uint16_t *mask = (const uint16_t *)(page->mask + (size_t)slot * nb);
    const uint16_t *sign = signs ? (const uint16_t *)(page->sign + (size_t)slot * nb) : NULL;
    __m512 a[16];
    float fac[16];
    const uint8_t *next = *kptr;
    SV_UNROLLED
    for (uint32_t u = 0; u < cnt; u++) {
        uint32_t nk = 0;
        for (uint32_t c = 0; c < nc; c++) nk += (uint32_t)__builtin_popcount(mask[u * nc + c]);
        if (i4) {
            /* the row's length is only known from the mask */
            sv_unpack_i4(unpacked[u], next, (nk + 1) / 2);
            src[u] = (const uint8_t *)unpacked[u];
            next += (nk + 1) / 2;
        } else {
            src[u] = next;
            next += (size_t)nk * kb;
        }
        /* I8/I4: key' = q_int on kept lanes and fill / s on pruned ones, the score times s */
        fac[u] = quant ? sv_scale_factor(page->kscale[slot + u]) : 1.0f;
        /* recovery NONE has no statistics: a = 0 fills the pruned lanes with (signed) zeros */
        const uint16_t stat = cache->n_stats ? page->stats[(size_t)(slot + u) * cache->n_stats + SV_STAT_MEAN] : 0;
        a[u] = quant ? _mm512_set1_ps(SV_HALF(stat) / fac[u]) : _mm512_cvtph_ps(_mm256_set1_epi16((short)stat));
    }
    __m512 acc[16];
    for (uint32_t k = 0; k < 16; k++) acc[k] = _mm512_setzero_ps();
    for (uint32_t c = 0; c < nc; c++) {
        __m512 key[16];
        const __m512 rq = _mm512_loadu_ps(h->rq + 16 * c);
        SV_UNROLLED
        for (uint32_t u = 0; u < cnt; u++) {
            const uint32_t bits = mask[u * nc + c];
            if (quant) {
                __m128i x = _mm_loadu_si128((const __m128i *)src[u]);
                SV_IN_REGISTER(x);
                key[u] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_expand_epi8((__mmask16)bits, x)));
            } else {
                key[u] = expand16(src[u], (__mmask16)bits, kp);
            }
            src[u] += (size_t)__builtin_popcount(bits) * kb;
            /* pruned lanes a * rq_j, then their signs (sign bits are only set on pruned lanes) */
            key[u] = _mm512_mask_mul_ps(key[u], (__mmask16)~bits, a[u], rq);
            if (signs)
                key[u] = _mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(key[u]), sign[u * nc + c],
                                                                   _mm512_castps_si512(key[u]), signbit));
        }
        SV_UNROLLED
        for (uint32_t g = 0; g < G; g++) {
            const __m512 qv = _mm512_loadu_ps(h->qs + (size_t)g * d + 16 * c);
            SV_UNROLLED
            for (uint32_t u = 0; u < cnt; u++) acc[g * U + u] = _mm512_fmadd_ps(qv, key[u], acc[g * U + u]);
        }
    }
    *kptr = next;
    finish_pass(acc, G, U, cnt, i, quant ? fac : NULL, scores);
}

/* kp, mean and G are compile-time constants in every instance (see score_spark); passes of U tokens
 * (SV_UNROLL) share the query loads, the last pass of a block takes what is left. */
SV_INLINE void score_spark_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, uint64_t *kept,
                             float *scores, const sparkv_precision kp, const uint32_t G) {
    const uint32_t U = SV_UNROLL(G), d = h->d, nb = d / 8;
    const uint8_t *kptr = (const uint8_t *)page->k + *kept;
    const size_t vrow_bytes = sv_row_bytes(h->cache->policy.value_precision, d);
    /* the page's mean packed bytes per token */
    const size_t kept_bytes = (size_t)(page->kept_bytes / (page->n ? page->n : 1));
    for (uint32_t i = 0; i < n; i += U) {
        const uint32_t slot = t0 + i, cnt = n - i < U ? n - i : U;
        if (page->kscale || page->vscale)
            for (uint32_t u = 0; u < cnt; u++) prefetch_scales(page, slot + u, 1, h->cache->vgroups);
        /* packed keys, masks and signs about SV_PREFETCH_TOKENS tokens ahead; these tokens' values
         * for accumulate_v */
        prefetch_lines(kptr + SV_PREFETCH_TOKENS * kept_bytes, cnt * kept_bytes + 63);
        if (slot + SV_PREFETCH_TOKENS < page->n) {
            prefetch_lines(page->mask + (size_t)(slot + SV_PREFETCH_TOKENS) * nb, cnt * nb);
            if (page->sign) prefetch_lines(page->sign + (size_t)(slot + SV_PREFETCH_TOKENS) * nb, cnt * nb);
        }
        if (!page->values_pruned)
            prefetch_lines((const uint8_t *)page->v + (size_t)slot * vrow_bytes, cnt * vrow_bytes);
        /* full passes with the sign flag as a constant; a block's last tokens one at a time (few
         * instances of the unrolled code: it is large, and compile time grows with each) */
        if (cnt == U) {
            if (page->sign) score_spark_pass(h, page, slot, &kptr, scores, i, kp, 1, d, G, U, U);
            else score_spark_pass(h, page, slot, &kptr, scores, i, kp, 0, d, G, U, U);
        } else {
            for (uint32_t u = 0; u < cnt; u++)
                score_spark_pass(h, page, slot + u, &kptr, scores, i + u, kp, page->sign != NULL, d, G, 1, 1);
        }
    }
    *kept = (uint64_t)(kptr - (const uint8_t *)page->k);
}

/* score_spark_g for I8/I4 kept values: key' = q_int on kept lanes, fill / s on pruned lanes, and the
 * reduced score times s (quant_block.h). */
SV_INLINE void score_spark_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, uint64_t *kept,
                             float *scores, const int i4, const int mean, const uint32_t G) {
    const sparkv_cache *cache = h->cache;
    const uint32_t d = h->d, nc = d / 16;
    const uint8_t *kbase = (const uint8_t *)page->k;
    uint64_t off = *kept;
    const __m512i signbit = _mm512_set1_epi32((int)0x80000000u);
    const size_t vrow_bytes = sv_row_bytes(cache->policy.value_precision, d);
    const size_t kept_bytes = ((size_t)(page->kept_bytes / (page->n ? page->n : 1)) + 63) & ~(size_t)63;
    int8_t tmp[SPARKV_MAX_HEAD_DIM + 32];
    float fac[16];
    __m512 part[SV_SIMD_MAX_GROUP][16];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint16_t *mask = (const uint16_t *)(page->mask + (size_t)slot * (d / 8));
        const uint8_t *row = kbase + off;
        prefetch_lines(row + SV_PREFETCH_TOKENS * kept_bytes, kept_bytes);
        if (slot + SV_PREFETCH_TOKENS < page->n) {
            _mm_prefetch((const char *)(page->mask + (size_t)(slot + SV_PREFETCH_TOKENS) * (d / 8)), _MM_HINT_T0);
            if (page->sign) _mm_prefetch((const char *)(page->sign + (size_t)(slot + SV_PREFETCH_TOKENS) * (d / 8)), _MM_HINT_T0);
        }
        if (!page->values_pruned) prefetch_lines((const uint8_t *)page->v + (size_t)slot * vrow_bytes, vrow_bytes);
        prefetch_scales(page, slot, 1, cache->vgroups);
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
        const uint16_t *sign = page->sign ? (const uint16_t *)(page->sign + (size_t)slot * (d / 8)) : NULL;
        const float f = sv_scale_factor(page->kscale[slot]);
        __m512 a = _mm512_setzero_ps();
        if (mean) a = _mm512_set1_ps(SV_HALF(page->stats[(size_t)slot * cache->n_stats + SV_STAT_MEAN]) / f);
        __m512 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm512_setzero_ps();
        /* One key block of 16 lanes: the integers widened, pruned lanes filled with fill / s. */
#define SV_SPARK_Q_BLOCK(bytes, c)                                                                          \
        do {                                                                                                \
            const __mmask16 km = mask[c];                                                                   \
            __m512 key = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));                                   \
            if (mean) {                                                                                     \
                __m512 fill = _mm512_mul_ps(a, _mm512_loadu_ps(h->rq + 16 * (c)));                          \
                if (sign)                                                                                   \
                    fill = _mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(fill), sign[c],    \
                                                                     _mm512_castps_si512(fill), signbit));  \
                key = _mm512_mask_mov_ps(fill, km, key);                                                    \
            }                                                                                               \
            for (uint32_t g = 0; g < G; g++)                                                                \
                acc[g] = _mm512_fmadd_ps(_mm512_loadu_ps(h->qs + (size_t)g * d + 16 * (c)), key, acc[g]);   \
        } while (0)
        uint32_t c = 0;
        /* 64 channels per expand: one vpexpandb of 64 bytes serves four blocks (the same expand of
         * f16 values would need two registers) */
        for (; c + 4 <= nc; c += 4) {
            uint64_t km64;
            memcpy(&km64, mask + c, sizeof(km64));
            const __m512i e = _mm512_maskz_expand_epi8(km64, _mm512_loadu_si512(kq));
            kq += __builtin_popcountll(km64);
            SV_SPARK_Q_BLOCK(_mm512_castsi512_si128(e), c);
            SV_SPARK_Q_BLOCK(_mm512_extracti32x4_epi32(e, 1), c + 1);
            SV_SPARK_Q_BLOCK(_mm512_extracti32x4_epi32(e, 2), c + 2);
            SV_SPARK_Q_BLOCK(_mm512_extracti32x4_epi32(e, 3), c + 3);
        }
        for (; c < nc; c++) {
            const __m128i e = _mm_maskz_expand_epi8(mask[c], _mm_loadu_si128((const __m128i *)kq));
            kq += __builtin_popcount(mask[c]);
            SV_SPARK_Q_BLOCK(e, c);
        }
#undef SV_SPARK_Q_BLOCK
        if (!i4) off += (uint64_t)(kq - kq0);
        for (uint32_t g = 0; g < G; g++) part[g][i & 15] = acc[g];
        fac[i & 15] = f;
        if ((i & 15) == 15 || i + 1 == n) flush_scores(part, G, i & ~15u, (i & 15) + 1, fac, scores);
    }
    *kept = off;
}

SV_TARGET static void score_spark(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                  uint64_t *kept, float *scores) {
    const sparkv_recovery rec = h->cache->policy.recovery;
    if (h->d % 16 || h->group > SV_SIMD_MAX_GROUP) {
        sv_score_spark_portable(h, page, t0, n, kept, scores);
        return;
    }
    if (rec != SPARKV_RECOVER_NONE && rec != SPARKV_RECOVER_MEAN) {
        sv_score_spark_sampled_avx512(h, page, t0, n, kept, scores);
        return;
    }
    /* MEAN and NONE share the float kernels: without statistics the fill is zero */
    const int mean = rec == SPARKV_RECOVER_MEAN;
    switch (h->cache->policy.key_precision) {
    /* I8/I4 keys: one token at a time, one vpexpandb per 64 channels (measured faster than the passes
     * of 16/G tokens, whose per-16-lane byte expands cost more than the shared query loads save) */
    case SPARKV_I8:
        if (mean) SV_GROUP_SWITCH(h->group, score_spark_q, h, page, t0, n, kept, scores, 0, 1);
        else SV_GROUP_SWITCH(h->group, score_spark_q, h, page, t0, n, kept, scores, 0, 0);
        break;
    case SPARKV_I4:
        if (mean) SV_GROUP_SWITCH(h->group, score_spark_q, h, page, t0, n, kept, scores, 1, 1);
        else SV_GROUP_SWITCH(h->group, score_spark_q, h, page, t0, n, kept, scores, 1, 0);
        break;
    case SPARKV_F32: SV_GROUP_SWITCH(h->group, score_spark_g, h, page, t0, n, kept, scores, SPARKV_F32); break;
    case SPARKV_BF16: SV_GROUP_SWITCH(h->group, score_spark_g, h, page, t0, n, kept, scores, SPARKV_BF16); break;
    default: SV_GROUP_SWITCH(h->group, score_spark_g, h, page, t0, n, kept, scores, SPARKV_F16); break;
    }
}

SV_INLINE void score_rows_pass(const uint8_t *row, size_t row_bytes, const float *q, uint32_t qstride,
                               uint32_t nc, __mmask16 tail, float *scores, uint32_t i, const sparkv_precision kp,
                               const uint32_t G, const uint32_t U, const uint32_t cnt) {
    const size_t kb = kp == SPARKV_F32 ? 4 : 2;
    __m512 acc[16];
    for (uint32_t k = 0; k < 16; k++) acc[k] = _mm512_setzero_ps();
    for (uint32_t c = 0; c < nc; c++) {
        /* The last block of a row shorter than a multiple of 16 (ThinK rows, D = 8 mod 16) is
         * loaded masked: past the row lie the next row or another array, whose bits may be
         * NaN/Inf as floats, and 0 * NaN would poison the score even though q is 0 there. */
        __m512 key[16];
        SV_UNROLLED
        for (uint32_t u = 0; u < cnt; u++) {
            const uint8_t *p = row + (size_t)u * row_bytes + (size_t)16 * c * kb;
            key[u] = c + 1 == nc && tail ? load16_masked(p, tail, kp) : load16(p, kp);
        }
        SV_UNROLLED
        for (uint32_t g = 0; g < G; g++) {
            const __m512 qv = _mm512_loadu_ps(q + (size_t)g * qstride + 16 * c);
            SV_UNROLLED
            for (uint32_t u = 0; u < cnt; u++) acc[g * U + u] = _mm512_fmadd_ps(qv, key[u], acc[g * U + u]);
        }
    }
    finish_pass(acc, G, U, cnt, i, NULL, scores);
}

SV_INLINE void score_rows_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                            uint32_t qstride, uint32_t width, float *scores, const sparkv_precision kp,
                            const uint32_t G) {
    const uint32_t U = SV_UNROLL(G), nc = (width + 15) / 16;
    const size_t kb = kp == SPARKV_F32 ? 4 : 2;
    const size_t row_bytes = (size_t)width * kb;
    const size_t vrow_bytes = (size_t)h->d * (h->cache->policy.value_precision == SPARKV_F32 ? 4 : 2);
    const __mmask16 tail = width % 16 ? (__mmask16)((1u << (width % 16)) - 1u) : 0;
    for (uint32_t i = 0; i < n; i += U) {
        const uint32_t slot = t0 + i, cnt = n - i < U ? n - i : U;
        const uint8_t *row = (const uint8_t *)page->k + (size_t)slot * row_bytes;
        if (slot + SV_PREFETCH_TOKENS + cnt <= page->n) prefetch_lines(row + SV_PREFETCH_TOKENS * row_bytes, cnt * row_bytes);
        if (!page->values_pruned)
            prefetch_lines((const uint8_t *)page->v + (size_t)slot * vrow_bytes, cnt * vrow_bytes);
        if (cnt == U) score_rows_pass(row, row_bytes, q, qstride, nc, tail, scores, i, kp, G, U, U);
        else
            for (uint32_t u = 0; u < cnt; u++)
                score_rows_pass(row + u * row_bytes, row_bytes, q, qstride, nc, tail, scores, i + u, kp, G, 1, 1);
    }
}

/* score_rows_g for I8/I4 rows. ThinK rows have one scale per token, applied to the reduced score;
 * whole (DENSE) rows one per quant_group channels: lane j of the key takes scale lg[j] of the
 * token, permuted out of its (at most 32) scales (once per group when quant_group is a multiple of
 * 16). Row reads run past the row into the next one or the page's padding; q is zero there. */
SV_INLINE void score_rows_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                            uint32_t qstride, uint32_t width, float *scores, const int i4, const int per_token,
                            const uint32_t G) {
    const uint32_t nc = (width + 15) / 16, ng = h->cache->kgroups, qg = h->cache->policy.quant_group;
    const uint32_t cpg = qg % 16 ? 0 : qg / 16; /* 16-lane blocks per scale group, 0 if blocks straddle */
    const size_t row_bytes = i4 ? (width + 1) / 2 : width;
    const size_t vrow_bytes = sv_row_bytes(h->cache->policy.value_precision, h->d);
    const uint32_t last = page->n;
    const __mmask16 m0 = ng >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << ng) - 1u);
    const __mmask16 m1 = ng <= 16 ? 0 : ng >= 32 ? (__mmask16)0xFFFF : (__mmask16)((1u << (ng - 16)) - 1u);
    int32_t lg[SPARKV_MAX_HEAD_DIM];
    if (!per_token && !cpg) sv_lane_groups(width, qg, lg);
    int8_t tmp[SPARKV_MAX_HEAD_DIM + 32];
    float fac[16];
    __m512 part[SV_SIMD_MAX_GROUP][16];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint8_t *row = (const uint8_t *)page->k + (size_t)slot * row_bytes;
        if (slot + SV_PREFETCH_TOKENS < last) prefetch_lines(row + SV_PREFETCH_TOKENS * row_bytes, row_bytes);
        if (!page->values_pruned) prefetch_lines((const uint8_t *)page->v + (size_t)slot * vrow_bytes, vrow_bytes);
        prefetch_scales(page, slot, per_token ? 1 : ng, h->cache->vgroups);
        const int8_t *kq = (const int8_t *)row;
        if (i4) {
            sv_unpack_i4(tmp, row, row_bytes);
            kq = tmp;
        }
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        if (!per_token) {
            const uint16_t *sc = page->kscale + (size_t)slot * ng;
            s0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m0, sc));
            if (m1) s1 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m1, sc + 16));
        }
        __m512 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm512_setzero_ps();
        __m512 sv = _mm512_setzero_ps();
        for (uint32_t c = 0, k = 0; c < nc; c++) {
            __m512 key = i8x16(kq + 16 * c);
            if (!per_token) {
                /* a 16-lane block in one group: its scale broadcast once per group; else per lane */
                if (cpg) {
                    if (c == k * cpg) sv = _mm512_permutex2var_ps(s0, _mm512_set1_epi32((int)k++), s1);
                } else {
                    sv = _mm512_permutex2var_ps(s0, _mm512_loadu_si512(lg + 16 * c), s1);
                }
                key = _mm512_mul_ps(key, sv);
            }
            for (uint32_t g = 0; g < G; g++)
                acc[g] = _mm512_fmadd_ps(_mm512_loadu_ps(q + (size_t)g * qstride + 16 * c), key, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) part[g][i & 15] = acc[g];
        /* a zero ThinK scale means every integer is 0: the score is 0 either way */
        fac[i & 15] = per_token ? SV_HALF(page->kscale[slot]) : 1.0f;
        if ((i & 15) == 15 || i + 1 == n)
            flush_scores(part, G, i & ~15u, (i & 15) + 1, per_token ? fac : NULL, scores);
    }
}

SV_TARGET static void score_rows(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                                 uint32_t qstride, uint32_t width, float *scores) {
    if ((width + 15) / 16 * 16 > qstride || h->group > SV_SIMD_MAX_GROUP) {
        sv_score_rows_portable(h, page, t0, n, q, qstride, width, scores);
        return;
    }
    const sparkv_precision kp = h->cache->policy.key_precision;
    if (sv_is_quantized(kp)) {
        const int i4 = kp == SPARKV_I4, per_token = page->keys != SV_KEYS_DENSE;
        SV_FLAGS_GROUP_SWITCH(h->group, i4, per_token, score_rows_q, h, page, t0, n, q, qstride, width, scores);
        return;
    }
    if (kp == SPARKV_F32) SV_GROUP_SWITCH(h->group, score_rows_g, h, page, t0, n, q, qstride, width, scores, SPARKV_F32);
    else if (kp == SPARKV_BF16) SV_GROUP_SWITCH(h->group, score_rows_g, h, page, t0, n, q, qstride, width, scores, SPARKV_BF16);
    else SV_GROUP_SWITCH(h->group, score_rows_g, h, page, t0, n, q, qstride, width, scores, SPARKV_F16);
}

/* Channel blocks outer, tokens inner: the accumulators of CB blocks of 16 channels for all G query
 * heads (G * CB <= 16) stay in registers while the block's values stream through, so each weight
 * is broadcast once per CB blocks. */
SV_INLINE void accumulate_v_pass(const uint8_t *base, size_t row_bytes, uint32_t d, uint32_t c0, uint32_t n,
                                 const float *p, float *accum, const sparkv_precision vp, const uint32_t G,
                                 const uint32_t CB, const uint32_t cb) {
    const size_t vb = vp == SPARKV_F32 ? 4 : 2;
    __m512 acc[16];
    for (uint32_t g = 0; g < G; g++)
        for (uint32_t k = 0; k < cb; k++) acc[g * CB + k] = _mm512_loadu_ps(accum + (size_t)g * d + 16 * (c0 + k));
    for (uint32_t i = 0; i < n; i++) {
        __m512 v[16];
        for (uint32_t k = 0; k < cb; k++) v[k] = load16(base + (size_t)i * row_bytes + (size_t)16 * (c0 + k) * vb, vp);
        for (uint32_t g = 0; g < G; g++) {
            const __m512 w = _mm512_set1_ps(p[g * SV_BLOCK + i]);
            for (uint32_t k = 0; k < cb; k++) acc[g * CB + k] = _mm512_fmadd_ps(w, v[k], acc[g * CB + k]);
        }
    }
    for (uint32_t g = 0; g < G; g++)
        for (uint32_t k = 0; k < cb; k++) _mm512_storeu_ps(accum + (size_t)g * d + 16 * (c0 + k), acc[g * CB + k]);
}

SV_INLINE void accumulate_v_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *p,
                              float *accum, const sparkv_precision vp, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 16, CB = G >= 16u ? 1u : 16u / G > 8u ? 8u : 16u / G;
    const size_t row_bytes = (size_t)d * (vp == SPARKV_F32 ? 4 : 2);
    const uint8_t *base = (const uint8_t *)page->v + (size_t)t0 * row_bytes;
    for (uint32_t c0 = 0; c0 < nc; c0 += CB) {
        if (nc - c0 >= CB) accumulate_v_pass(base, row_bytes, d, c0, n, p, accum, vp, G, CB, CB);
        else accumulate_v_pass(base, row_bytes, d, c0, n, p, accum, vp, G, CB, nc - c0);
    }
}

/* w[g * SV_BLOCK + i] = p[g * SV_BLOCK + i] * s[i], s the block's n fp16 scales of one group (0 past n). */
SV_INLINE void group_weights(const uint16_t *s, uint32_t n, const float *p, uint32_t G, float *w) {
    for (uint32_t i0 = 0; i0 < SV_BLOCK; i0 += 16) {
        const __mmask16 m = n <= i0 ? 0 : n - i0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i0)) - 1u);
        const __m512 sv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s + i0));
        for (uint32_t g = 0; g < G; g++)
            _mm512_storeu_ps(w + g * SV_BLOCK + i0, _mm512_mul_ps(_mm512_loadu_ps(p + g * SV_BLOCK + i0), sv));
    }
}

SV_INLINE void accumulate_v_q_pass(const int8_t *base, size_t stride, uint32_t d, uint32_t c0, uint32_t cpg,
                                   uint32_t n, const float *w, float *accum, const uint32_t G, const uint32_t CB,
                                   const uint32_t cb) {
    __m512 acc[16];
    SV_UNROLLED
    for (uint32_t g = 0; g < G; g++)
        SV_UNROLLED
        for (uint32_t k = 0; k < cb; k++) acc[g * CB + k] = _mm512_loadu_ps(accum + (size_t)g * d + 16 * (c0 + k));
    for (uint32_t i = 0; i < n; i++) {
        __m512 v[16];
        SV_UNROLLED
        for (uint32_t k = 0; k < cb; k++) v[k] = i8x16(base + (size_t)i * stride + 16 * (c0 + k));
        SV_UNROLLED
        for (uint32_t g = 0; g < G; g++) {
            /* the weight p * s of this token in block k's scale group, broadcast once per group */
            __m512 wv = _mm512_setzero_ps();
            SV_UNROLLED
            for (uint32_t k = 0; k < cb; k++) {
                if (k == 0 || (c0 + k) % cpg == 0)
                    wv = _mm512_set1_ps(w[((size_t)((c0 + k) / cpg) * SV_SIMD_MAX_GROUP + g) * SV_BLOCK + i]);
                acc[g * CB + k] = _mm512_fmadd_ps(wv, v[k], acc[g * CB + k]);
            }
        }
    }
    SV_UNROLLED
    for (uint32_t g = 0; g < G; g++)
        SV_UNROLLED
        for (uint32_t k = 0; k < cb; k++) _mm512_storeu_ps(accum + (size_t)g * d + 16 * (c0 + k), acc[g * CB + k]);
}

/* accumulate_v_g for I8/I4 rows (quant_group a multiple of 16, so a 16-lane block lies in one scale
 * group): the weight of token i in group k is p_i * s_ik, built once per group for the block; the
 * accumulators of CB channel blocks stay in registers as in accumulate_v_g. */
SV_INLINE void accumulate_v_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *p,
                              float *accum, const int i4, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 16, cpg = h->cache->policy.quant_group / 16;
    const uint32_t CB = G >= 16u ? 1u : 16u / G > 8u ? 8u : 16u / G;
    const size_t row_bytes = i4 ? d / 2 : d;
    const int8_t *base = (const int8_t *)page->v + (size_t)t0 * row_bytes;
    int8_t tmp[SV_BLOCK * SPARKV_MAX_HEAD_DIM + 32];
    if (i4) {
        /* whole rows are contiguous and even: the block unpacks as one run */
        sv_unpack_i4(tmp, (const uint8_t *)base, (size_t)n * row_bytes);
        base = tmp;
    }
    /* w[(group * SV_SIMD_MAX_GROUP + g) * SV_BLOCK + i]: groups of whole rows, at most 16 (d <= 256) */
    float w[SPARKV_MAX_HEAD_DIM / 16 * SV_SIMD_MAX_GROUP * SV_BLOCK];
    for (uint32_t k = 0; k < (nc + cpg - 1) / cpg; k++)
        group_weights(page->vscale + (size_t)k * page->cap + t0, n, p, G, w + (size_t)k * SV_SIMD_MAX_GROUP * SV_BLOCK);
    for (uint32_t c0 = 0; c0 < nc; c0 += CB) {
        if (nc - c0 >= CB) accumulate_v_q_pass(base, d, d, c0, cpg, n, w, accum, G, CB, CB);
        else accumulate_v_q_pass(base, d, d, c0, cpg, n, w, accum, G, CB, nc - c0);
    }
}

SV_TARGET static void accumulate_v(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *p,
                                   float *accum) {
    if (h->d % 16 || h->group > SV_SIMD_MAX_GROUP) { sv_accumulate_v_portable(h, page, t0, n, p, accum); return; }
    const sparkv_precision vp = h->cache->policy.value_precision;
    if (sv_is_quantized(vp)) {
        if (h->cache->policy.quant_group % 16) { sv_kernels_avx2.accumulate_v(h, page, t0, n, p, accum); return; }
        if (vp == SPARKV_I4) SV_GROUP_SWITCH(h->group, accumulate_v_q, h, page, t0, n, p, accum, 1);
        else SV_GROUP_SWITCH(h->group, accumulate_v_q, h, page, t0, n, p, accum, 0);
        return;
    }
    if (vp == SPARKV_F32) SV_GROUP_SWITCH(h->group, accumulate_v_g, h, page, t0, n, p, accum, SPARKV_F32);
    else if (vp == SPARKV_BF16) SV_GROUP_SWITCH(h->group, accumulate_v_g, h, page, t0, n, p, accum, SPARKV_BF16);
    else SV_GROUP_SWITCH(h->group, accumulate_v_g, h, page, t0, n, p, accum, SPARKV_F16);
}

/* As accumulate_v, with each token's kept values expanded to their channels and its fill value in
 * the others; off[i] tracks where token i's next kept values start. */
SV_INLINE void accumulate_v_pruned_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                     const float *p, float *accum, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 16, tv = h->cache->keep_values;
    const sparkv_precision vp = h->cache->policy.value_precision;
    const size_t vb = vp == SPARKV_F32 ? 4 : 2;
    uint32_t off[SV_BLOCK];
    __m512 fill[SV_BLOCK];
    for (uint32_t i = 0; i < n; i++) {
        off[i] = 0;
        fill[i] = _mm512_cvtph_ps(_mm256_set1_epi16((short)page->vfill[t0 + i]));
    }
    for (uint32_t c = 0; c < nc; c++) {
        __m512 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm512_loadu_ps(accum + (size_t)g * d + 16 * c);
        for (uint32_t i = 0; i < n; i++) {
            const uint32_t slot = t0 + i;
            const __mmask16 m = ((const uint16_t *)(page->vmask + (size_t)slot * (d / 8)))[c];
            const uint8_t *row = (const uint8_t *)page->v + ((size_t)slot * tv + off[i]) * vb;
            __m512 v = _mm512_mask_mov_ps(fill[i], m, expand16(row, m, vp));
            off[i] += (uint32_t)__builtin_popcount(m);
            for (uint32_t g = 0; g < G; g++) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(p[g * SV_BLOCK + i]), v, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) _mm512_storeu_ps(accum + (size_t)g * d + 16 * c, acc[g]);
    }
}

/* accumulate_v_pruned_g for I8/I4 kept values: one scale s per token, folded into the weight (p * s),
 * the fill entering as fill / s (quant_block.h). */
SV_INLINE void accumulate_v_pruned_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                     const float *p, float *accum, const int i4, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 16, tv = h->cache->keep_values;
    const size_t row_bytes = i4 ? (tv + 1) / 2 : tv, stride = i4 ? 2 * row_bytes : row_bytes;
    const int8_t *base = (const int8_t *)page->v + (size_t)t0 * row_bytes;
    int8_t tmp[SV_BLOCK * (SPARKV_MAX_HEAD_DIM + 1) + 32];
    if (i4) {
        /* rows of ceil(T_v / 2) bytes, contiguous: unpacked as one run, 2 * row_bytes int8 per token */
        sv_unpack_i4(tmp, (const uint8_t *)base, (size_t)n * row_bytes);
        base = tmp;
    }
    float f[SV_BLOCK], w[SV_SIMD_MAX_GROUP * SV_BLOCK];
    sv_token_factors(page->vscale, 1, t0, n, f);
    sv_fold_weights(p, f, G, w);
    uint32_t off[SV_BLOCK];
    __m512 fill[SV_BLOCK];
    for (uint32_t i = 0; i < n; i++) {
        off[i] = 0;
        fill[i] = _mm512_set1_ps(SV_HALF(page->vfill[t0 + i]) / f[i]);
    }
    for (uint32_t c = 0; c < nc; c++) {
        __m512 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm512_loadu_ps(accum + (size_t)g * d + 16 * c);
        for (uint32_t i = 0; i < n; i++) {
            const __mmask16 m = ((const uint16_t *)(page->vmask + (size_t)(t0 + i) * (d / 8)))[c];
            const __m512 v = _mm512_mask_mov_ps(fill[i], m, expand_i8x16(base + (size_t)i * stride + off[i], m));
            off[i] += (uint32_t)__builtin_popcount(m);
            for (uint32_t g = 0; g < G; g++) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(w[g * SV_BLOCK + i]), v, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) _mm512_storeu_ps(accum + (size_t)g * d + 16 * c, acc[g]);
    }
}

SV_TARGET static void accumulate_v_pruned(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                          const float *p, float *accum) {
    if (h->d % 16 || h->group > SV_SIMD_MAX_GROUP) {
        sv_accumulate_v_pruned_portable(h, page, t0, n, p, accum);
        return;
    }
    const sparkv_precision vp = h->cache->policy.value_precision;
    if (vp == SPARKV_I4) SV_GROUP_SWITCH(h->group, accumulate_v_pruned_q, h, page, t0, n, p, accum, 1);
    else if (vp == SPARKV_I8) SV_GROUP_SWITCH(h->group, accumulate_v_pruned_q, h, page, t0, n, p, accum, 0);
    else SV_GROUP_SWITCH(h->group, accumulate_v_pruned_g, h, page, t0, n, p, accum);
}

/* The portable polynomial (attend_portable.c), 16 lanes: exp(x) for x <= 0, 0 below -87. */
SV_INLINE __m512 exp16(__m512 x0) {
    const __m512 lo = _mm512_set1_ps(-87.0f);
    __m512 v = _mm512_max_ps(x0, lo);
    __m512 t = _mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f));
    __m512 k = _mm512_cvtepi32_ps(_mm512_cvttps_epi32(_mm512_sub_ps(t, _mm512_set1_ps(0.5f))));
    __m512 r = _mm512_sub_ps(_mm512_sub_ps(v, _mm512_mul_ps(k, _mm512_set1_ps(0.693145751953125f))),
                             _mm512_mul_ps(k, _mm512_set1_ps(1.428606765330187045e-06f)));
    __m512 y = _mm512_set1_ps(1.0f / 720.0f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 120.0f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 24.0f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 6.0f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(0.5f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f));
    __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(k), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(bits));
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x0, lo, _CMP_LT_OQ), _mm512_setzero_ps());
}

SV_TARGET static void exp_block(float *x, uint32_t n) {
    for (uint32_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(x + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* The online-softmax update of softmax_block.h (same contract), in registers: a block of 32 scores
 * of a query head is two vectors, so the finiteness test, the maximum, exp and the sum run on
 * them directly instead of in separate passes over memory. */
SV_TARGET static int online_softmax(float *sc, uint32_t n, uint32_t g, uint32_t d, float *mx, float *sum,
                                    float *acc) {
    const __mmask16 m0 = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
    const __mmask16 m1 = n <= 16 ? 0 : n >= 32 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - 16)) - 1u);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    /* a NaN or Inf (all exponent bits set) among the block's scores: nothing is updated */
    const __m512i expo = _mm512_set1_epi32(0x7f800000);
    __mmask16 bad = 0;
    for (uint32_t i = 0; i < g; i++) {
        const __m512i b0 = _mm512_and_si512(_mm512_loadu_si512(sc + (size_t)i * SV_BLOCK), expo);
        const __m512i b1 = _mm512_and_si512(_mm512_loadu_si512(sc + (size_t)i * SV_BLOCK + 16), expo);
        bad |= _mm512_mask_cmpeq_epi32_mask(m0, b0, expo) | _mm512_mask_cmpeq_epi32_mask(m1, b1, expo);
    }
    if (bad) return 1;
    for (uint32_t i = 0; i < g; i++) {
        float *s = sc + (size_t)i * SV_BLOCK;
        const __m512 s0 = _mm512_mask_loadu_ps(ninf, m0, s), s1 = _mm512_mask_loadu_ps(ninf, m1, s + 16);
        const float bm = _mm512_reduce_max_ps(_mm512_max_ps(s0, s1));
        if (bm > mx[i]) sv_softmax_raise_max(&mx[i], &sum[i], acc + (size_t)i * d, d, bm);
        const __m512 mv = _mm512_set1_ps(mx[i]);
        const __m512 e0 = exp16(_mm512_sub_ps(s0, mv)), e1 = exp16(_mm512_sub_ps(s1, mv));
        _mm512_storeu_ps(s, e0);
        _mm512_storeu_ps(s + 16, e1);
        sum[i] += _mm512_reduce_add_ps(_mm512_add_ps(e0, e1));
    }
    return 0;
}

/* score_spark falls back to the portable kernel (which reads the look-up tables) for these */
static int uses_lut(uint32_t d, uint32_t group) { return d % 16 != 0 || group > SV_SIMD_MAX_GROUP; }

const sv_kernels sv_kernels_avx512 = {score_spark, score_rows, accumulate_v, accumulate_v_pruned, exp_block,
                                      online_softmax, uses_lut};

#else
/* Not x86-64: the dispatcher never selects these; keep the symbol for the table. */
static int uses_lut(uint32_t d, uint32_t group) { return 1; }
const sv_kernels sv_kernels_avx512 = {sv_score_spark_portable, sv_score_rows_portable, sv_accumulate_v_portable,
                                      sv_accumulate_v_pruned_portable, sv_exp_block_portable, sv_softmax_portable,
                                      uses_lut};
#endif
