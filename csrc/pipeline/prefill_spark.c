/* The keys of one SparK prompt page in one pass per token: saliency, selection, and the split
 * into kept values, sign bits and statistics, each token's saliency computed once and used while
 * it is in registers and L1. Top-k keeps the same count for every token, so the page is sized
 * before any token is seen; cumulative selection first selects every token of the page to size it. */
#include "input_rows.h"
#include "prefill_arena.h"
#include "prefill_kernels.h"

#include <string.h>

/* Tokens whose pruned sums are accumulated side by side: each sum is a chain of d dependent
 * additions in channel order (the reference's order, so it cannot be reassociated), and
 * interleaving independent chains hides the adder's latency. */
#define BLOCK SV_SELECT_BLOCK

sv_page *sv_spark_page(const sparkv_cache *c, sv_rows keys, const uint64_t *rows, uint32_t n, const float *qn,
                       float cq, sv_page_arena *arena) {
    const sv_prefill_kernels *kern = sv_prefill_kernels_for(c->kernel);
    const uint32_t d = c->shape.head_dim, nb = d / 8, keep = c->keep_topk;
    const sparkv_precision kp = c->policy.key_precision;
    const int topk = c->policy.selection == SPARKV_SELECT_TOPK;
    double qnd[SPARKV_MAX_HEAD_DIM];
    for (uint32_t j = 0; j < d; j++) qnd[j] = (double)qn[j];

    uint8_t masks[SPARKV_PAGE_TOKENS * (SPARKV_MAX_HEAD_DIM / 8)];
    uint64_t kept_bytes = 0;
    if (topk) {
        kept_bytes = (uint64_t)n * sv_row_bytes(kp, keep < d ? keep : d);
    } else {
        const uint32_t max_keep = c->policy.cumulative_max_keep ? c->policy.cumulative_max_keep : d;
        for (uint32_t i = 0; i < n; i++) {
            double s[SPARKV_MAX_HEAD_DIM];
            float scratch[SPARKV_MAX_HEAD_DIM];
            kern->saliency(sv_rows_get(keys, rows[i], d, scratch), qnd, d, s);
            kept_bytes += sv_row_bytes(kp, sv_select_cumulative(s, d, (double)c->policy.cumulative_p,
                                                                c->policy.cumulative_min_keep, max_keep,
                                                                masks + (size_t)i * nb, NULL));
        }
    }
    sv_page *page = sv_page_new_prompt_in(c, n, kept_bytes, arena);
    if (!page) return NULL;
    if (!topk) memcpy(page->mask, masks, (size_t)n * nb);

    double sal[BLOCK * SPARKV_MAX_HEAD_DIM], pruned[BLOCK][SPARKV_MAX_HEAD_DIM], min_kept[BLOCK], max_pruned[BLOCK];
    float kept[SPARKV_MAX_HEAD_DIM + 16]; /* SIMD splits store whole vectors past the last kept value */
    float widened[BLOCK][SPARKV_MAX_HEAD_DIM]; /* 16-bit inputs: the block's key rows, widened once */
    const float *key[BLOCK];
    uint32_t n_kept[BLOCK];
    uint64_t off = 0;
    for (uint32_t i0 = 0; i0 < n; i0 += BLOCK) {
        const uint32_t nt = n - i0 < BLOCK ? n - i0 : BLOCK;
        for (uint32_t t = 0; t < nt; t++) {
            key[t] = sv_rows_get(keys, rows[i0 + t], d, widened[t]);
            kern->saliency(key[t], qnd, d, sal + (size_t)t * d);
        }
        if (topk) kern->select_topk(sal, nt, d, keep, page->mask + (size_t)i0 * nb);
        for (uint32_t t = 0; t < nt; t++) {
            const uint32_t i = i0 + t;
            uint8_t *row = (uint8_t *)page->k + off;
            n_kept[t] = kern->split(key[t], sal + (size_t)t * d, page->mask + (size_t)i * nb, d, kept,
                                    kp == SPARKV_F16 ? (uint16_t *)row : NULL, pruned[t],
                                    page->sign ? page->sign + (size_t)i * nb : NULL, &min_kept[t], &max_pruned[t]);
            /* kept values share one scale: they are the token's large ones, so the grid fits them */
            if (kp != SPARKV_F16)
                sv_store_values(row, page->kscale ? page->kscale + i : NULL, 1, kp, kept, n_kept[t],
                                n_kept[t] ? n_kept[t] : 1);
            off += sv_row_bytes(kp, n_kept[t]);
        }
        if (!c->n_stats) continue;
        double sum[BLOCK] = {0};
        for (uint32_t j = 0; j < d; j++)
            for (uint32_t t = 0; t < nt; t++) sum[t] += pruned[t][j];
        for (uint32_t t = 0; t < nt; t++)
            sv_pack_stats(c, page, i0 + t, n_kept[t], sum[t], min_kept[t], max_pruned[t], pruned[t], cq);
    }
    return page;
}
