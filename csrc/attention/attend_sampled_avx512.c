/* AVX-512 scoring of SparK pages under sampled (GAUSSIAN / EXPONENTIAL) recovery.
 *
 * The key is rebuilt 16 lanes at a time as in attend_avx512.c (kept values expanded, pruned lanes
 * filled, one FMA per query head), the fill being the token's draws (draw.h). Per token: one 64-bit
 * hash (scalar, the head's part hoisted), and the documented float32 recovery applied to the 64
 * table points (four registers; GAUSSIAN's four vsqrtps are IEEE-exact like sqrtf), giving the
 * token's 64 possible magnitudes. Per 5 blocks of 16 channels: one 32-bit counter hash in integer
 * lanes (two vpmulld). Per block: a shift brings its 6-bit field down, and two vpermt2ps plus a
 * blend on bit 5 look the magnitude up. Every draw equals the portable one bit for bit; only the
 * products with rq_j (and 1/s for I8/I4 keys) may round differently, as in the MEAN kernels. */
#include "attend.h"
#include "draw.h"
#include "half.h"
#include "quant_block.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "attend_avx512_common.h"

/* Tokens ahead of the one being scored whose data is prefetched (as attend_avx512.c). */
#define SV_SAMPLED_PREFETCH 16u






/* 64 floats in four registers, entry i in lane i % 16 of register i / 16. */
typedef struct table64 { __m512 r[4]; } table64;

/* Entry (idx & 63) of t per lane: vpermt2ps reads index bits 0-4 (bit 4 picks the register of the
 * pair) and ignores the rest, so idx may carry other bits above bit 5. */
SV_INLINE __m512 lookup64(const table64 *t, __m512i idx) {
    const __m512 lo = _mm512_permutex2var_ps(t->r[0], idx, t->r[1]);
    const __m512 hi = _mm512_permutex2var_ps(t->r[2], idx, t->r[3]);
    return _mm512_mask_mov_ps(lo, _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)), hi);
}

/* The token's recovered magnitude sqrt(x / c) for each of the 64 points: the documented float32
 * sequence (sv_draw_magnitude) applied to the table once per token instead of once per channel,
 * so a channel costs one look-up (and GAUSSIAN 4 vsqrtps per token instead of one per 16 lanes). */
SV_INLINE table64 token_magnitudes(const uint16_t *st, const table64 *points, const int gauss) {
    const float a = sv_half_to_float(st[SV_STAT_MEAN]), e = sv_half_to_float(st[SV_STAT_THETA]);
    table64 t;
    if (!gauss) {
        const __m512 va = _mm512_set1_ps(a), ve = _mm512_set1_ps(e);
        for (int k = 0; k < 4; k++) t.r[k] = _mm512_min_ps(_mm512_mul_ps(va, points->r[k]), ve);
        return t;
    }
    const float b = sv_half_to_float(st[SV_STAT_SD]);
    const __m512 m = _mm512_set1_ps(a * a), s = _mm512_set1_ps(b * b), th = _mm512_set1_ps(e * e);
    for (int k = 0; k < 4; k++) {
        const __m512 x = _mm512_add_ps(m, _mm512_mul_ps(s, points->r[k]));
        t.r[k] = _mm512_sqrt_ps(_mm512_min_ps(_mm512_max_ps(x, _mm512_setzero_ps()), th));
    }
    return t;
}

/* fmix32 of key + (16 * word + lane) * STRIDE in each lane: the hash whose 6-bit fields are the
 * bins of blocks 5 * word .. 5 * word + 4 (draw.h). */
SV_INLINE __m512i word_hash(uint32_t key, uint32_t word) {
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i x = _mm512_add_epi32(_mm512_set1_epi32((int)(key + 16u * word * SV_DRAW_STRIDE)),
                                 _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int)SV_DRAW_STRIDE)));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)SV_DRAW_MUL1));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 13));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)SV_DRAW_MUL2));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

/* The token's draw state: its magnitudes per point, its key and the hash of the current word. */
typedef struct draw_token {
    table64 mag;
    uint32_t key;
    __m512i word;
} draw_token;

/* The pruned lanes' entries of 16-channel block c: sgn * magnitude * rq (* 1/s for I8/I4). Blocks
 * are visited in order, so the word hash is refreshed every SV_DRAW_FIELDS blocks. */
SV_INLINE __m512 fill16(draw_token *t, const float *rq, const uint16_t *sign, uint32_t c, __m512 inv_scale,
                        const int quant) {
    const uint32_t field = c % SV_DRAW_FIELDS;
    if (field == 0) t->word = word_hash(t->key, c / SV_DRAW_FIELDS);
    const __m512i idx = _mm512_srl_epi32(t->word, _mm_cvtsi32_si128((int)(26u - 6u * field)));
    __m512 fill = _mm512_mul_ps(lookup64(&t->mag, idx), _mm512_loadu_ps(rq + 16 * c));
    if (quant) fill = _mm512_mul_ps(fill, inv_scale);
    if (sign)
        fill = _mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(fill), sign[c], _mm512_castps_si512(fill),
                                                         _mm512_set1_epi32((int)0x80000000u)));
    return fill;
}

SV_INLINE draw_token token_draws(const sv_page *page, uint32_t slot, uint32_t n_stats, uint64_t head_hash,
                                 const table64 *points, const int gauss) {
    draw_token t;
    t.mag = token_magnitudes(page->stats + (size_t)slot * n_stats, points, gauss);
    t.key = sv_draw_key(sv_mix64(head_hash ^ (page->first + slot)));
    t.word = _mm512_setzero_si512();
    return t;
}

SV_INLINE table64 load_points(const int gauss) {
    const float *p = gauss ? sv_draw_normal : sv_draw_sqrt_exponential;
    table64 t = {{_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16), _mm512_loadu_ps(p + 32), _mm512_loadu_ps(p + 48)}};
    return t;
}

/* Prefetches the data of the token SV_SAMPLED_PREFETCH ahead and this token's values. */
SV_INLINE void prefetch_token(const sv_page *page, uint32_t slot, uint32_t d, uint32_t n_stats,
                              const uint8_t *kept_row, size_t kept_bytes, size_t vrow_bytes) {
    prefetch_lines(kept_row + SV_SAMPLED_PREFETCH * kept_bytes, kept_bytes);
    const uint32_t ahead = slot + SV_SAMPLED_PREFETCH;
    if (ahead < page->n) {
        _mm_prefetch((const char *)(page->mask + (size_t)ahead * (d / 8)), _MM_HINT_T0);
        if (page->sign) _mm_prefetch((const char *)(page->sign + (size_t)ahead * (d / 8)), _MM_HINT_T0);
        _mm_prefetch((const char *)(page->stats + (size_t)ahead * n_stats), _MM_HINT_T0);
        if (page->kscale) _mm_prefetch((const char *)(page->kscale + ahead), _MM_HINT_T0);
    }
    if (!page->values_pruned) prefetch_lines((const uint8_t *)page->v + (size_t)slot * vrow_bytes, vrow_bytes);
}

/* Tokens scored per pass: the G * U <= 16 accumulators stay in registers and every load of a query
 * block serves U tokens (the structure of attend_avx512.c's MEAN kernel). */
#define SV_SAMPLED_UNROLL(G) ((G) >= 16u ? 1u : 16u / (G))

/* Stores lane g * U + u of r (query head g, token i + u; u < cnt) to scores[g * SV_BLOCK + i + u]:
 * one masked store per query head, its base shifted down by g * U lanes (inside scores). */
SV_INLINE void store_pass(__m512 r, uint32_t G, uint32_t U, uint32_t cnt, uint32_t i, float *scores) {
    const uint32_t low = (1u << cnt) - 1u;
    for (uint32_t g = 0; g < G; g++)
        _mm512_mask_storeu_ps(scores + (size_t)g * SV_BLOCK + i - (size_t)g * U, (__mmask16)(low << (g * U)), r);
}

/* One pass over cnt <= U tokens from slot. The tokens' 64 magnitudes are written to a small
 * buffer (L1) and looked up from there: U tables would not fit the registers beside the
 * accumulators. kp, gauss, signs, G, U, cnt are compile-time constants in the full passes. */
SV_INLINE void score_sampled_pass(const sv_head_ctx *h, const sv_page *page, uint32_t slot, const uint8_t **kptr,
                                  float *scores, uint32_t i, uint64_t head_hash, const table64 *points,
                                  const sparkv_precision kp, const int gauss, const int signs, const uint32_t G,
                                  const uint32_t U, const uint32_t cnt) {
    const uint32_t d = h->d, nc = d / 16, nb = d / 8, n_stats = h->cache->n_stats;
    const size_t kb = kp == SPARKV_F32 ? 4 : 2;
    const __m512i signbit = _mm512_set1_epi32((int)0x80000000u), bit5 = _mm512_set1_epi32(32);
    const uint8_t *src[16];
    const uint16_t *mask[16], *sign[16];
    uint32_t key[16];
    __m512i word[16];
    float mag[16][SV_DRAW_BINS];
    src[0] = *kptr;
    SV_UNROLLED
    for (uint32_t u = 0; u < cnt; u++) {
        mask[u] = (const uint16_t *)(page->mask + (size_t)(slot + u) * nb);
        sign[u] = signs ? (const uint16_t *)(page->sign + (size_t)(slot + u) * nb) : NULL;
        if (u + 1 < cnt) {
            uint32_t nk = 0;
            for (uint32_t c = 0; c < nc; c++) nk += (uint32_t)__builtin_popcount(mask[u][c]);
            src[u + 1] = src[u] + (size_t)nk * kb;
        }
        table64 t = token_magnitudes(page->stats + (size_t)(slot + u) * n_stats, points, gauss);
        /* EXPONENTIAL: an empty asm "changes" each register, so the compiler stores the table
         * once instead of recomputing the cheap magnitudes at every look-up (measured 32 against
         * 43 ns per token); GAUSSIAN's square roots are never recomputed, and the barrier there
         * measured slower (50 against 34 ns) */
        for (int k = 0; k < 4; k++) {
            if (!gauss) __asm__("" : "+v"(t.r[k]));
            _mm512_storeu_ps(mag[u] + 16 * k, t.r[k]);
        }
        key[u] = sv_draw_key(sv_mix64(head_hash ^ (page->first + slot + u)));
        word[u] = _mm512_setzero_si512();
    }
    __m512 acc[16];
    for (uint32_t k = 0; k < 16; k++) acc[k] = _mm512_setzero_ps();
    for (uint32_t c = 0; c < nc; c++) {
        const uint32_t field = c % SV_DRAW_FIELDS;
        const __m128i shift = _mm_cvtsi32_si128((int)(26u - 6u * field));
        const __m512 rq = _mm512_loadu_ps(h->rq + 16 * c);
        __m512 kv[16];
        SV_UNROLLED
        for (uint32_t u = 0; u < cnt; u++) {
            const __mmask16 km = mask[u][c];
            const __m512 val = expand16(src[u], km, kp);
            src[u] += (size_t)__builtin_popcount(km) * kb;
            if (field == 0) word[u] = word_hash(key[u], c / SV_DRAW_FIELDS);
            const __m512i idx = _mm512_srl_epi32(word[u], shift);
            const __m512 lo = _mm512_permutex2var_ps(_mm512_loadu_ps(mag[u]), idx, _mm512_loadu_ps(mag[u] + 16));
            const __m512 hi = _mm512_permutex2var_ps(_mm512_loadu_ps(mag[u] + 32), idx, _mm512_loadu_ps(mag[u] + 48));
            __m512 fill = _mm512_mul_ps(_mm512_mask_mov_ps(lo, _mm512_test_epi32_mask(idx, bit5), hi), rq);
            if (signs)
                fill = _mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(fill), sign[u][c],
                                                                 _mm512_castps_si512(fill), signbit));
            kv[u] = _mm512_mask_mov_ps(fill, km, val);
        }
        SV_UNROLLED
        for (uint32_t g = 0; g < G; g++) {
            const __m512 qv = _mm512_loadu_ps(h->qs + (size_t)g * d + 16 * c);
            SV_UNROLLED
            for (uint32_t u = 0; u < cnt; u++) acc[(g * U + u) & 15] = _mm512_fmadd_ps(qv, kv[u], acc[(g * U + u) & 15]);
        }
    }
    *kptr = src[cnt - 1];
    store_pass(reduce16x16(acc), G, U, cnt, i, scores);
}

/* F32/F16/BF16 kept values. kp, gauss and G are compile-time constants in every instance; passes
 * of U tokens, the last pass of a block takes what is left. */
SV_INLINE void score_sampled_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, uint64_t *kept,
                               float *scores, const sparkv_precision kp, const int gauss, const uint32_t G) {
    const uint32_t U = SV_SAMPLED_UNROLL(G), d = h->d, nb = d / 8;
    const uint8_t *kptr = (const uint8_t *)page->k + *kept;
    const size_t vrow_bytes = sv_row_bytes(h->cache->policy.value_precision, d);
    const size_t kept_bytes = (size_t)(page->kept_bytes / (page->n ? page->n : 1));
    const table64 points = load_points(gauss);
    const uint64_t head_hash = sv_draw_head_hash(h->cache->policy.seed, h->layer, h->head);
    for (uint32_t i = 0; i < n; i += U) {
        const uint32_t slot = t0 + i, cnt = n - i < U ? n - i : U;
        prefetch_lines(kptr + SV_SAMPLED_PREFETCH * kept_bytes, cnt * kept_bytes + 63);
        if (slot + SV_SAMPLED_PREFETCH < page->n) {
            prefetch_lines(page->mask + (size_t)(slot + SV_SAMPLED_PREFETCH) * nb, cnt * nb);
            if (page->sign) prefetch_lines(page->sign + (size_t)(slot + SV_SAMPLED_PREFETCH) * nb, cnt * nb);
            prefetch_lines(page->stats + (size_t)(slot + SV_SAMPLED_PREFETCH) * h->cache->n_stats,
                           cnt * h->cache->n_stats * 2);
        }
        if (!page->values_pruned) prefetch_lines((const uint8_t *)page->v + (size_t)slot * vrow_bytes, cnt * vrow_bytes);
        if (cnt == U) {
            if (page->sign) score_sampled_pass(h, page, slot, &kptr, scores, i, head_hash, &points, kp, gauss, 1, G, U, U);
            else score_sampled_pass(h, page, slot, &kptr, scores, i, head_hash, &points, kp, gauss, 0, G, U, U);
        } else {
            score_sampled_pass(h, page, slot, &kptr, scores, i, head_hash, &points, kp, gauss, page->sign != NULL, G,
                               U, cnt);
        }
    }
    *kept = (uint64_t)(kptr - (const uint8_t *)page->k);
}

/* I8/I4 kept values: key' = the integers on kept lanes, fill / s on pruned lanes, and the reduced
 * score times s (quant_block.h). */
SV_INLINE void score_sampled_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, uint64_t *kept,
                               float *scores, const int i4, const int gauss, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 16;
    const uint8_t *kbase = (const uint8_t *)page->k;
    uint64_t off = *kept;
    const size_t vrow_bytes = sv_row_bytes(h->cache->policy.value_precision, d);
    const size_t kept_bytes = ((size_t)(page->kept_bytes / (page->n ? page->n : 1)) + 63) & ~(size_t)63;
    const table64 points = load_points(gauss);
    const uint64_t head_hash = sv_draw_head_hash(h->cache->policy.seed, h->layer, h->head);
    int8_t tmp[SPARKV_MAX_HEAD_DIM + 32];
    float fac[16];
    __m512 part[SV_SIMD_MAX_GROUP][16];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint16_t *mask = (const uint16_t *)(page->mask + (size_t)slot * (d / 8));
        const uint16_t *sign = page->sign ? (const uint16_t *)(page->sign + (size_t)slot * (d / 8)) : NULL;
        const uint8_t *row = kbase + off;
        prefetch_token(page, slot, d, h->cache->n_stats, row, kept_bytes, vrow_bytes);
        uint32_t nk = 0;
        for (uint32_t c = 0; c < nc; c++) nk += (uint32_t)__builtin_popcount(mask[c]);
        const int8_t *kq = (const int8_t *)row;
        if (i4) {
            sv_unpack_i4(tmp, row, (nk + 1) / 2);
            kq = tmp;
        }
        off += i4 ? (nk + 1) / 2 : nk;
        const float f = sv_scale_factor(page->kscale[slot]);
        const __m512 inv_scale = _mm512_set1_ps(1.0f / f);
        draw_token t = token_draws(page, slot, h->cache->n_stats, head_hash, &points, gauss);
        __m512 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm512_setzero_ps();
        for (uint32_t c = 0; c < nc; c++) {
            const __mmask16 km = mask[c];
            /* 16 bytes loaded, the kept ones expanded: may read into the next row or padding */
            const __m128i bytes = _mm_maskz_expand_epi8(km, _mm_loadu_si128((const __m128i *)kq));
            kq += __builtin_popcount(km);
            const __m512 val = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
            const __m512 fill = fill16(&t, h->rq, sign, c, inv_scale, 1);
            const __m512 key = _mm512_mask_mov_ps(fill, km, val);
            for (uint32_t g = 0; g < G; g++)
                acc[g] = _mm512_fmadd_ps(_mm512_loadu_ps(h->qs + (size_t)g * d + 16 * c), key, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) part[g][i & 15] = acc[g];
        fac[i & 15] = f;
        if ((i & 15) == 15 || i + 1 == n) flush_scores(part, G, i & ~15u, (i & 15) + 1, fac, scores);
    }
    *kept = off;
}

/* Called by attend_avx512.c's score_spark for GAUSSIAN/EXPONENTIAL with D a multiple of 16 and a
 * group of at most SV_SIMD_MAX_GROUP. */
SV_TARGET void sv_score_spark_sampled_avx512(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                             uint64_t *kept, float *scores) {
    if (h->d % 16 || h->group > SV_SIMD_MAX_GROUP) {
        sv_score_spark_portable(h, page, t0, n, kept, scores);
        return;
    }
    SV_SAMPLED_DISPATCH(h, page, t0, n, kept, scores);
}

#else
/* Not x86-64: never dispatched. */
void sv_score_spark_sampled_avx512(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                   uint64_t *kept, float *scores) {
    sv_score_spark_portable(h, page, t0, n, kept, scores);
}
#endif
