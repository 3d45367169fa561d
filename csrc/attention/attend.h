/* The interface between the shared decode-attention driver (attend.c) and the per-ISA kernels
 * (attend_portable.c, attend_avx2.c, attend_avx512.c). */
#ifndef SPARKV_ATTEND_H
#define SPARKV_ATTEND_H

#include "internal.h"

#include <math.h>

/* Tokens scored together before one online-softmax update. Divides SPARKV_PAGE_TOKENS. */
#define SV_BLOCK 32u

/* Everything a kernel needs about one (layer, KV head) for one attend call. */
typedef struct sv_head_ctx {
    const sparkv_cache *cache;
    uint32_t layer, head, d, group;
    const float *qs;    /* [group][d] queries times the softmax scale */
    const float *rq;    /* [d] sqrt(c / qn_j), 0 where qn_j = 0 */
    const float *lut;   /* MEAN: [group][d/8][256] sums of qs*rq over the set bits of a mask byte */
    const float *qt;    /* THINK: [group][tstride] qs gathered at the head's kept channels, zero-padded */
    uint32_t tkeep;     /* THINK: kept channels T */
    uint32_t tstride;   /* THINK: T rounded up to a multiple of 16 */
} sv_head_ctx;

typedef struct sv_kernels {
    /* SPARK pages: scores[g * SV_BLOCK + i] = qs_g . key(t0 + i) for i < n, pruned entries recovered;
     * *kept advances past the block's kept rows (the byte offset of token t0's row in page->k on entry). */
    void (*score_spark)(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                        uint64_t *kept, float *scores);
    /* DENSE and THINK pages: rows of `width` stored values; scores[g * SV_BLOCK + i] =
     * q[g * qstride ..] . row(t0 + i). q is zero-padded to qstride (a multiple of 16 >= width), so
     * SIMD kernels may read whole vectors past a row (into the next row or the page's padding). */
    void (*score_rows)(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                       uint32_t qstride, uint32_t width, float *scores);
    /* acc[g * d + j] += sum_i p[g * SV_BLOCK + i] * v(t0 + i)_j, dense values */
    void (*accumulate_v)(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                         const float *p, float *acc);
    /* the same for value-pruned pages: kept values at their channels, the token's fill elsewhere */
    void (*accumulate_v_pruned)(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                const float *p, float *acc);
    /* x[i] = exp(x[i]) for x[i] <= 0 (the softmax weights of a block), relative error < 3e-7 */
    void (*exp_block)(float *x, uint32_t n);
    /* the online-softmax update of one block (softmax_block.h); 1 (nothing updated) if a score is
     * not finite */
    int (*softmax)(float *sc, uint32_t n, uint32_t g, uint32_t d, float *mx, float *sum, float *acc);
    /* whether score_spark reads h->lut (MEAN recovery) for this head size and group */
    int (*uses_lut)(uint32_t d, uint32_t group);
} sv_kernels;

SPARKV_HIDDEN extern const sv_kernels sv_kernels_portable;
SPARKV_HIDDEN extern const sv_kernels sv_kernels_avx2;
SPARKV_HIDDEN extern const sv_kernels sv_kernels_avx512;

/* Calls fn(..., G) with G a compile-time constant for the common GQA group sizes, so the SIMD
 * kernels keep their G accumulators in registers; other sizes use the runtime value. */
#define SV_GROUP_SWITCH(g, fn, ...)                                                                  \
    do {                                                                                             \
        switch (g) {                                                                                 \
        case 1: fn(__VA_ARGS__, 1); break;                                                           \
        case 2: fn(__VA_ARGS__, 2); break;                                                           \
        case 3: fn(__VA_ARGS__, 3); break;                                                           \
        case 4: fn(__VA_ARGS__, 4); break;                                                           \
        case 8: fn(__VA_ARGS__, 8); break;                                                           \
        default: fn(__VA_ARGS__, g); break;                                                          \
        }                                                                                            \
    } while (0)

/* SV_GROUP_SWITCH with two more flags (a, b in {0, 1}) turned into compile-time constants:
 * calls fn(..., A, B, G). */
#define SV_FLAGS_GROUP_SWITCH(g, a, b, fn, ...)                                                      \
    do {                                                                                             \
        if (a) {                                                                                     \
            if (b) SV_GROUP_SWITCH(g, fn, __VA_ARGS__, 1, 1);                                        \
            else SV_GROUP_SWITCH(g, fn, __VA_ARGS__, 1, 0);                                          \
        } else {                                                                                     \
            if (b) SV_GROUP_SWITCH(g, fn, __VA_ARGS__, 0, 1);                                        \
            else SV_GROUP_SWITCH(g, fn, __VA_ARGS__, 0, 0);                                          \
        }                                                                                            \
    } while (0)

/* Full unrolling of the SIMD kernels' small loops over the tokens and query heads of a pass, so
 * their accumulators live in registers. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SV_INSTRUMENTED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(SV_INSTRUMENTED)
/* instrumented builds check behaviour, not speed: unrolled, the instrumented code takes gcc
 * minutes and gigabytes to compile */
#define SV_UNROLLED
#else
#define SV_UNROLLED _Pragma("GCC unroll 16")
#endif

/* The sampled-recovery scoring of one block by key precision and distribution, calling the
 * including file's score_sampled_q(..., i4, gauss, G) and score_sampled_g(..., precision, gauss, G):
 * one dispatch for every ISA's kernels. */
#define SV_SAMPLED_DISPATCH(h, page, t0, n, kept, scores)                                                        \
    do {                                                                                                         \
        const int gauss = h->cache->policy.recovery == SPARKV_RECOVER_GAUSSIAN;                                  \
        switch (h->cache->policy.key_precision) {                                                                \
        case SPARKV_I8:                                                                                          \
            if (gauss) SV_GROUP_SWITCH(h->group, score_sampled_q, h, page, t0, n, kept, scores, 0, 1);           \
            else SV_GROUP_SWITCH(h->group, score_sampled_q, h, page, t0, n, kept, scores, 0, 0);                 \
            break;                                                                                               \
        case SPARKV_I4:                                                                                          \
            if (gauss) SV_GROUP_SWITCH(h->group, score_sampled_q, h, page, t0, n, kept, scores, 1, 1);           \
            else SV_GROUP_SWITCH(h->group, score_sampled_q, h, page, t0, n, kept, scores, 1, 0);                 \
            break;                                                                                               \
        case SPARKV_F32:                                                                                         \
            if (gauss) SV_GROUP_SWITCH(h->group, score_sampled_g, h, page, t0, n, kept, scores, SPARKV_F32, 1);  \
            else SV_GROUP_SWITCH(h->group, score_sampled_g, h, page, t0, n, kept, scores, SPARKV_F32, 0);        \
            break;                                                                                               \
        case SPARKV_BF16:                                                                                        \
            if (gauss) SV_GROUP_SWITCH(h->group, score_sampled_g, h, page, t0, n, kept, scores, SPARKV_BF16, 1); \
            else SV_GROUP_SWITCH(h->group, score_sampled_g, h, page, t0, n, kept, scores, SPARKV_BF16, 0);       \
            break;                                                                                               \
        default:                                                                                                 \
            if (gauss) SV_GROUP_SWITCH(h->group, score_sampled_g, h, page, t0, n, kept, scores, SPARKV_F16, 1);  \
            else SV_GROUP_SWITCH(h->group, score_sampled_g, h, page, t0, n, kept, scores, SPARKV_F16, 0);        \
            break;                                                                                               \
        }                                                                                                        \
    } while (0)

/* The online softmax's running maximum of one query head rises to bm: the sum and the weighted
 * value sum (d floats) so far are rescaled by exp(old max - bm) (0 before the first block). */
static inline void sv_softmax_raise_max(float *mx, float *sum, float *acc, uint32_t d, float bm) {
    const float corr = *mx == -INFINITY ? 0.0f : expf(*mx - bm);
    *sum *= corr;
    for (uint32_t j = 0; j < d; j++) acc[j] *= corr;
    *mx = bm;
}

/* SIMD kernels hold at most this many query heads' accumulators; larger groups use the portable
 * kernels. */
#define SV_SIMD_MAX_GROUP 16u

/* Portable pieces the SIMD kernels reuse for the cases they do not specialise. */
SPARKV_HIDDEN void sv_score_spark_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0,
                                           uint32_t n, uint64_t *kept, float *scores);
SPARKV_HIDDEN void sv_score_rows_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                          const float *q, uint32_t qstride, uint32_t width, float *scores);
SPARKV_HIDDEN void sv_accumulate_v_pruned_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0,
                                                   uint32_t n, const float *p, float *acc);
SPARKV_HIDDEN void sv_exp_block_portable(float *x, uint32_t n);
/* Sampled (GAUSSIAN/EXPONENTIAL) recovery, one per SIMD family (attend_sampled_avx512.c,
 * attend_sampled_avx2.c); the contract of score_spark. */
SPARKV_HIDDEN void sv_score_spark_sampled_avx512(const sv_head_ctx *h, const sv_page *page, uint32_t t0,
                                                 uint32_t n, uint64_t *kept, float *scores);
SPARKV_HIDDEN void sv_score_spark_sampled_avx2(const sv_head_ctx *h, const sv_page *page, uint32_t t0,
                                               uint32_t n, uint64_t *kept, float *scores);
SPARKV_HIDDEN int sv_softmax_portable(float *sc, uint32_t n, uint32_t g, uint32_t d, float *mx, float *sum,
                                      float *acc);
SPARKV_HIDDEN void sv_accumulate_v_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                            const float *p, float *acc);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>
/* I4 rows to int8 for the SIMD kernels (SSE2): dst[2i] = (src[i] & 15) - 8, dst[2i+1] = (src[i] >> 4) - 8
 * for i < nbytes, 16 bytes at a time: reads up to 15 bytes past src + nbytes (the page's next array
 * or its zeroed padding) and writes up to 31 bytes past dst + 2 * nbytes. */
static inline __attribute__((always_inline)) void sv_unpack_i4(int8_t *dst, const uint8_t *src, size_t nbytes) {
    const __m128i low = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    for (size_t i = 0; i < nbytes; i += 16) {
        const __m128i x = _mm_loadu_si128((const __m128i *)(src + i));
        const __m128i lo = _mm_and_si128(x, low), hi = _mm_and_si128(_mm_srli_epi16(x, 4), low);
        _mm_storeu_si128((__m128i *)(dst + 2 * i), _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), eight));
        _mm_storeu_si128((__m128i *)(dst + 2 * i + 16), _mm_sub_epi8(_mm_unpackhi_epi8(lo, hi), eight));
    }
}
#endif

#endif
