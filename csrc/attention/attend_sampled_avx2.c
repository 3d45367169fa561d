/* AVX2 scoring of SparK pages under sampled (GAUSSIAN / EXPONENTIAL) recovery.
 *
 * The key is rebuilt 8 lanes at a time as in attend_avx2.c (a pdep permutation places the kept
 * values), the pruned lanes filled with the token's draws (draw.h): the documented float32
 * recovery applied once per token to the 64 table points (vsqrtps is IEEE-exact like sqrtf), then
 * per 8 channels the 32-bit counter hash in integer lanes, its 6-bit field, and one vgatherdps of
 * the token's magnitude (eight vpermps and seven blends would cost more). Every draw equals the
 * portable one bit for bit. */
#include "attend.h"
#include "draw.h"
#include "half.h"
#include "quant_block.h"

#include <string.h>

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

/* The permutation that moves the next popcount(m) packed elements to the lanes of m. */
SV_INLINE __m256i expand_index(uint32_t m) {
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)_pdep_u64(0x0706050403020100ull, bytes_of_bits(m))));
}

SV_INLINE __m256 load8(const uint8_t *p, sparkv_precision kp) {
    if (kp == SPARKV_F32) return _mm256_loadu_ps((const float *)p);
    const __m128i raw = _mm_loadu_si128((const __m128i *)p);
    return kp == SPARKV_F16 ? _mm256_cvtph_ps(raw)
                            : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

SV_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The token's draw state: its recovered magnitude sqrt(x / c) for each of the 64 points (the
 * documented float32 sequence of sv_draw_magnitude, applied to the table once per token) and its key. */
typedef struct draw_token {
    float mag[SV_DRAW_BINS];
    uint32_t key;
} draw_token;

SV_INLINE void token_draws(draw_token *t, const sv_page *page, uint32_t slot, uint32_t n_stats, uint64_t head_hash,
                           const int gauss) {
    const uint16_t *st = page->stats + (size_t)slot * n_stats;
    const float a = sv_half_to_float(st[SV_STAT_MEAN]), e = sv_half_to_float(st[SV_STAT_THETA]);
    if (!gauss) {
        const __m256 va = _mm256_set1_ps(a), ve = _mm256_set1_ps(e);
        for (uint32_t k = 0; k < SV_DRAW_BINS; k += 8)
            _mm256_storeu_ps(t->mag + k, _mm256_min_ps(_mm256_mul_ps(va, _mm256_loadu_ps(sv_draw_sqrt_exponential + k)), ve));
    } else {
        const float b = sv_half_to_float(st[SV_STAT_SD]);
        const __m256 m = _mm256_set1_ps(a * a), s = _mm256_set1_ps(b * b), th = _mm256_set1_ps(e * e);
        for (uint32_t k = 0; k < SV_DRAW_BINS; k += 8) {
            const __m256 x = _mm256_add_ps(m, _mm256_mul_ps(s, _mm256_loadu_ps(sv_draw_normal + k)));
            _mm256_storeu_ps(t->mag + k, _mm256_sqrt_ps(_mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), th)));
        }
    }
    t->key = sv_draw_key(sv_mix64(head_hash ^ (page->first + slot)));
}

/* fmix32 of key + counter * STRIDE for 8 consecutive counters (draw.h). */
SV_INLINE __m256i counter_hash(uint32_t key, uint32_t counter) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i x = _mm256_add_epi32(_mm256_set1_epi32((int)(key + counter * SV_DRAW_STRIDE)),
                                 _mm256_mullo_epi32(lanes, _mm256_set1_epi32((int)SV_DRAW_STRIDE)));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)SV_DRAW_MUL1));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 13));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)SV_DRAW_MUL2));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

/* The key block of channels 8c .. 8c + 7: kept values (already permuted into place) where m is
 * set, else sgn * magnitude * rq (* 1/s for I8/I4 keys). The channels are lanes l0 .. l0 + 7 of
 * 16-channel block c / 2; their counter hash is recomputed per 8 lanes (simpler than keeping one
 * per half-block, and AVX2 is the fallback ISA on these hosts). */
SV_INLINE __m256 key8(__m256 val, uint32_t m, draw_token *t, const float *rq, const uint8_t *sign, uint32_t c,
                      __m256 inv_scale, const int quant) {
    const uint32_t block = c / 2, l0 = 8 * (c % 2), field = block % SV_DRAW_FIELDS;
    const __m256i word = counter_hash(t->key, 16u * (block / SV_DRAW_FIELDS) + l0);
    const __m256i idx = _mm256_and_si256(_mm256_srl_epi32(word, _mm_cvtsi32_si128((int)(26u - 6u * field))),
                                         _mm256_set1_epi32(63));
    __m256 fill = _mm256_mul_ps(_mm256_i32gather_ps(t->mag, idx, 4), _mm256_loadu_ps(rq + 8 * c));
    if (quant) fill = _mm256_mul_ps(fill, inv_scale);
    if (sign)
        fill = _mm256_xor_ps(fill, _mm256_and_ps(lanes_of_bits(sign[c]),
                                                 _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u))));
    return _mm256_blendv_ps(fill, val, lanes_of_bits(m));
}

/* F32/F16/BF16 kept values; kp, gauss and G compile-time constants. */
SV_INLINE void score_sampled_g(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, uint64_t *kept,
                               float *scores, const sparkv_precision kp, const int gauss, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 8;
    const size_t kb = kp == SPARKV_F32 ? 4 : 2;
    const uint8_t *kptr = (const uint8_t *)page->k + *kept;
    const uint64_t head_hash = sv_draw_head_hash(h->cache->policy.seed, h->layer, h->head);
    draw_token t;
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint8_t *mask = page->mask + (size_t)slot * nc;
        const uint8_t *sign = page->sign ? page->sign + (size_t)slot * nc : NULL;
        token_draws(&t, page, slot, h->cache->n_stats, head_hash, gauss);
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
        for (uint32_t c = 0; c < nc; c++) {
            const uint32_t m = mask[c];
            const __m256 val = _mm256_permutevar8x32_ps(load8(kptr, kp), expand_index(m));
            kptr += (size_t)__builtin_popcount(m) * kb;
            const __m256 key = key8(val, m, &t, h->rq, sign, c, _mm256_setzero_ps(), 0);
            for (uint32_t g = 0; g < G; g++)
                acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(h->qs + (size_t)g * d + 8 * c), key, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) scores[g * SV_BLOCK + i] = hsum8(acc[g]);
    }
    *kept = (uint64_t)(kptr - (const uint8_t *)page->k);
}

/* I8/I4 kept values: the integers on kept lanes, fill / s on pruned lanes, the score times s. */
SV_INLINE void score_sampled_q(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, uint64_t *kept,
                               float *scores, const int i4, const int gauss, const uint32_t G) {
    const uint32_t d = h->d, nc = d / 8;
    uint64_t off = *kept;
    const uint64_t head_hash = sv_draw_head_hash(h->cache->policy.seed, h->layer, h->head);
    draw_token t;
    int8_t tmp[SPARKV_MAX_HEAD_DIM + 32];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint8_t *mask = page->mask + (size_t)slot * nc;
        const uint8_t *sign = page->sign ? page->sign + (size_t)slot * nc : NULL;
        const uint8_t *row = (const uint8_t *)page->k + off;
        uint32_t nk = 0;
        for (uint32_t c = 0; c < nc; c++) nk += (uint32_t)__builtin_popcount(mask[c]);
        const int8_t *kq = (const int8_t *)row;
        if (i4) {
            sv_unpack_i4(tmp, row, (nk + 1) / 2);
            kq = tmp;
        }
        off += i4 ? (nk + 1) / 2 : nk;
        const float f = sv_scale_factor(page->kscale[slot]);
        const __m256 inv_scale = _mm256_set1_ps(1.0f / f);
        token_draws(&t, page, slot, h->cache->n_stats, head_hash, gauss);
        __m256 acc[SV_SIMD_MAX_GROUP];
        for (uint32_t g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
        for (uint32_t c = 0; c < nc; c++) {
            const uint32_t m = mask[c];
            /* 8 bytes read, the kept ones permuted into place: may read into the next row or padding */
            const __m256i ints = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)kq));
            const __m256 val = _mm256_cvtepi32_ps(_mm256_permutevar8x32_epi32(ints, expand_index(m)));
            kq += __builtin_popcount(m);
            const __m256 key = key8(val, m, &t, h->rq, sign, c, inv_scale, 1);
            for (uint32_t g = 0; g < G; g++)
                acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(h->qs + (size_t)g * d + 8 * c), key, acc[g]);
        }
        for (uint32_t g = 0; g < G; g++) scores[g * SV_BLOCK + i] = hsum8(acc[g]) * f;
    }
    *kept = off;
}

/* Called by attend_avx2.c's score_spark for GAUSSIAN/EXPONENTIAL with a group of at most
 * SV_SIMD_MAX_GROUP (D is a multiple of 8). */
SV_TARGET void sv_score_spark_sampled_avx2(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                           uint64_t *kept, float *scores) {
    if (h->d % 8 || h->group > SV_SIMD_MAX_GROUP) {
        sv_score_spark_portable(h, page, t0, n, kept, scores);
        return;
    }
    SV_SAMPLED_DISPATCH(h, page, t0, n, kept, scores);
}

#else
/* Not x86-64: never dispatched. */
void sv_score_spark_sampled_avx2(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                 uint64_t *kept, float *scores) {
    sv_score_spark_portable(h, page, t0, n, kept, scores);
}
#endif
