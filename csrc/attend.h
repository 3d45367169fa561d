/* The interface between the shared decode-attention driver (attend.c) and the per-ISA kernels
 * (attend_portable.c, attend_avx2.c, attend_avx512.c). */
#ifndef SPARKV_ATTEND_H
#define SPARKV_ATTEND_H

#include "internal.h"

/* Tokens scored together before one online-softmax update. Divides SPARKV_PAGE_TOKENS. */
#define SV_BLOCK 32u

/* Everything a kernel needs about one (layer, KV head) for one attend call. */
typedef struct sv_head_ctx {
    const sparkv_cache *cache;
    uint32_t layer, head, d, group;
    const float *qs;    /* [group][d] queries times the softmax scale */
    const float *rq;    /* [d] sqrt(c / qn_j), 0 where qn_j = 0 */
    const float *lut;   /* MEAN: [group][d/8][256] sums of qs*rq over the set bits of a mask byte */
} sv_head_ctx;

typedef struct sv_kernels {
    /* scores[g * SV_BLOCK + i] = qs_g . key(t0 + i) for i < n; *kept advances past the block's
     * kept values (the offset of token t0 in page->k on entry). */
    void (*score_compressed)(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                             uint64_t *kept, float *scores);
    void (*score_dense)(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, float *scores);
    /* acc[g * d + j] += sum_i p[g * SV_BLOCK + i] * v(t0 + i)_j */
    void (*accumulate_v)(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                         const float *p, float *acc);
    /* x[i] = exp(x[i]) for x[i] <= 0 (the softmax weights of a block), relative error < 3e-7 */
    void (*exp_block)(float *x, uint32_t n);
} sv_kernels;

SPARKV_HIDDEN extern const sv_kernels sv_kernels_portable;
SPARKV_HIDDEN extern const sv_kernels sv_kernels_avx2;
SPARKV_HIDDEN extern const sv_kernels sv_kernels_avx512;

/* Portable pieces the SIMD kernels reuse for the cases they do not specialise. */
SPARKV_HIDDEN void sv_score_compressed_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0,
                                                uint32_t n, uint64_t *kept, float *scores);
SPARKV_HIDDEN void sv_score_dense_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                           float *scores);
SPARKV_HIDDEN void sv_exp_block_portable(float *x, uint32_t n);
SPARKV_HIDDEN void sv_accumulate_v_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                            const float *p, float *acc);

#endif
