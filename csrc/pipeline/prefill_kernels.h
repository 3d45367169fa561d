/* The per-token steps of SparK's prefill that have per-ISA versions: saliency, top-T selection
 * and the split of a selected token into kept values, sign bits and pruned saliencies. The
 * portable versions (saliency.c, select.c, pack.c) are the specification; the AVX2 and AVX-512
 * ones return bit-identical results and are chosen by the cache's kernel (cache->kernel). */
#ifndef SPARKV_PREFILL_KERNELS_H
#define SPARKV_PREFILL_KERNELS_H

#include "internal.h"

/* Most tokens one select_topk call takes. */
#define SV_SELECT_BLOCK 8u

typedef struct sv_prefill_kernels {
    /* s[j] = k[j]^2 * qn[j] in double (qn given as doubles: the same products as from floats) */
    void (*saliency)(const float *k, const double *qn, uint32_t d, double *s);
    /* for each of n <= SV_SELECT_BLOCK tokens (s: [n][d], mask: [n][d/8]), the kept mask of its
     * `keep` largest s[j], ties toward the lower index; every s[j] must be +0 or positive and not
     * NaN (saliencies of finite keys always are). Several tokens per call, so that the SIMD
     * versions can interleave their tokens' dependent steps. */
    void (*select_topk)(const double *s, uint32_t n, uint32_t d, uint32_t keep, uint8_t *mask);
    /* See sv_split_token. */
    uint32_t (*split)(const float *k, const double *s, const uint8_t *mask, uint32_t d, float *kept,
                      uint16_t *kept_f16, double *pruned, uint8_t *sign, double *min_kept, double *max_pruned);
} sv_prefill_kernels;

/* The kernels of a family (AUTO is not a family: the cache resolves it at creation). A family
 * this build has no code for falls back to the portable one. */
SPARKV_HIDDEN const sv_prefill_kernels *sv_prefill_kernels_for(sparkv_kernel kernel);

/* Portable specification (saliency.c, select.c, pack.c). */
SPARKV_HIDDEN void sv_saliency_portable(const float *k, const double *qn, uint32_t d, double *s);
SPARKV_HIDDEN void sv_select_topk_portable(const double *s, uint32_t n, uint32_t d, uint32_t keep, uint8_t *mask);
/* One selected token, split: its kept values in channel order into kept[] (d + 16 floats: SIMD
 * versions store whole vectors), or as exactly that many fp16 values into kept_f16[] when it is
 * not NULL (kept[] is then scratch); returns how many;
 * the sign bits of its pruned channels into sign[0..d/8) (skipped when sign is NULL); its pruned
 * saliencies into pruned[] with 0.0 at kept channels, so that summing pruned[] in channel order
 * gives exactly the pruned sum; the smallest kept saliency (+Inf if none) and the largest pruned
 * one (0 if none). */
SPARKV_HIDDEN uint32_t sv_split_token(const float *k, const double *s, const uint8_t *mask, uint32_t d, float *kept,
                                      uint16_t *kept_f16, double *pruned, uint8_t *sign, double *min_kept,
                                      double *max_pruned);
/* The recovery statistics of a split token from its pruned sum (pruned[] summed in channel order). */
SPARKV_HIDDEN void sv_pack_stats(const sparkv_cache *cache, sv_page *page, uint32_t slot, uint32_t n_kept,
                                 double pruned_sum, double min_kept, double max_pruned, const double *pruned,
                                 float c);

/* The keys, masks, sign bits and statistics of a SparK prompt page of n tokens (rows[0..n) of
 * keys, [*][d]) with the head's window query norms qn and their mean cq, in the arena if not
 * NULL; the caller stores the values. NULL when out of memory (prefill_spark.c). */
struct sv_page_arena;
SPARKV_HIDDEN sv_page *sv_spark_page(const sparkv_cache *cache, sv_rows keys, const uint64_t *rows, uint32_t n,
                                     const float *qn, float cq, struct sv_page_arena *arena);

/* The `need` largest of n candidates given as the order-preserving bits of non-negative doubles,
 * with their channel indices ascending; ties toward the lower index. Sets their mask bits
 * (select_candidates.c, shared by the SIMD selections for the threshold bucket). */
SPARKV_HIDDEN void sv_select_candidates(const uint64_t *bits, const uint32_t *index, uint32_t n, uint32_t need,
                                        uint8_t *mask);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SV_HAVE_X86_PREFILL 1
SPARKV_HIDDEN void sv_saliency_avx2(const float *k, const double *qn, uint32_t d, double *s);
SPARKV_HIDDEN void sv_select_topk_avx2(const double *s, uint32_t n, uint32_t d, uint32_t keep, uint8_t *mask);
SPARKV_HIDDEN uint32_t sv_split_token_avx2(const float *k, const double *s, const uint8_t *mask, uint32_t d,
                                           float *kept, uint16_t *kept_f16, double *pruned, uint8_t *sign,
                                           double *min_kept, double *max_pruned);
SPARKV_HIDDEN void sv_saliency_avx512(const float *k, const double *qn, uint32_t d, double *s);
SPARKV_HIDDEN void sv_select_topk_avx512(const double *s, uint32_t n, uint32_t d, uint32_t keep, uint8_t *mask);
SPARKV_HIDDEN uint32_t sv_split_token_avx512(const float *k, const double *s, const uint8_t *mask, uint32_t d,
                                             float *kept, uint16_t *kept_f16, double *pruned, uint8_t *sign,
                                             double *min_kept, double *max_pruned);
#endif

#endif
