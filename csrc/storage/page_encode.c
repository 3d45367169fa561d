/* The page encoder: the tokens of one page of one head, stored under the layer's policy (SparK per
 * token, ThinK with the head's channel set, dense keys; value pruning; every precision). Prefill
 * encodes the prompt's pages with it, append the decode tokens that age (decode_age.c): one
 * encoder, so an aged page is exactly the page a prefill of the same values would build. Appended
 * tokens enter a dense page one at a time through sv_encode_dense_token. */
#include "internal.h"
#include "input_rows.h"
#include "page_encode.h"
#include "prefill_arena.h"
#include "prefill_kernels.h"

/* Index of the first fp16 infinity in h[0..n) (n if none). */
static uint32_t first_inf_half(const uint16_t *h, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if ((h[i] & 0x7fffu) == 0x7c00u) return i;
    return n;
}

/* The page's first token whose fp16 statistics or value fill overflowed (n_stats-wide rows of
 * statistics, one fill per token), or page->n if none. Inputs are range-checked before, so only
 * a statistic can overflow: sqrt(m / c) grows like |k| * sqrt(qn_j / c), up to |k| * sqrt(D). */
uint32_t sv_page_first_overflow(const sparkv_cache *c, const sv_page *page) {
    uint32_t bad = page->n;
    if (page->stats) bad = first_inf_half(page->stats, page->n * c->n_stats) / c->n_stats;
    if (page->vfill) {
        const uint32_t v = first_inf_half(page->vfill, page->n);
        bad = v < bad ? v : bad;
    }
    return bad;
}

sv_page *sv_encode_page(const sparkv_cache *c, const sv_encode_input *in, uint64_t i0, uint32_t n,
                        sv_page_arena *arena) {
    const uint32_t d = c->shape.head_dim;
    const sparkv_precision vp = c->policy.value_precision, kp = c->policy.key_precision;
    const size_t qg = c->policy.quant_group;
    sv_page *page;
    if (c->prompt_keys == SV_KEYS_SPARK) {
        page = sv_spark_page(c, in->keys, in->rows + i0, n, in->qn, in->c, arena);
        if (!page) return NULL;
    } else if (c->prompt_keys == SV_KEYS_THINK) {
        page = sv_page_new_prompt_in(c, n, 0, arena);
        if (!page) return NULL;
        const uint32_t t = c->keep_topk;
        float row[SPARKV_MAX_HEAD_DIM], scratch[SPARKV_MAX_HEAD_DIM];
        for (uint32_t i = 0; i < n; i++) {
            const float *k = sv_rows_get(in->keys, in->rows[i0 + i], d, scratch);
            uint32_t m = 0;
            for (uint32_t j = 0; j < d; j++)
                if (in->think_mask[j >> 3] >> (j & 7) & 1u) row[m++] = k[j];
            sv_store_values((uint8_t *)page->k + (size_t)i * sv_row_bytes(kp, t), page->kscale ? page->kscale + i : NULL,
                            1, kp, row, t, t);
        }
    } else {
        page = sv_page_new_prompt_in(c, n, 0, arena);
        if (!page) return NULL;
        float scratch[SPARKV_MAX_HEAD_DIM];
        for (uint32_t i = 0; i < n; i++)
            sv_store_values((uint8_t *)page->k + (size_t)i * sv_row_bytes(kp, d),
                            page->kscale ? page->kscale + (size_t)i * c->kgroups : NULL, 1, kp,
                            sv_rows_get(in->keys, in->rows[i0 + i], d, scratch), d, qg);
    }
    float scratch[SPARKV_MAX_HEAD_DIM];
    for (uint32_t i = 0; i < n; i++) {
        const float *v = sv_rows_get(in->values, in->rows[i0 + i], d, scratch);
        if (page->values_pruned) sv_pack_value(c, page, i, v);
        else sv_store_values((uint8_t *)page->v + (size_t)i * sv_row_bytes(vp, d), page->vscale ? page->vscale + i : NULL,
                             page->cap, vp, v, d, qg);
    }
    page->n = n;
    page->first = i0;
    return page;
}

void sv_encode_dense_token(const sparkv_cache *c, sv_page *p, const float *key, const float *value) {
    const uint32_t d = c->shape.head_dim;
    const sparkv_precision kp = c->policy.key_precision, vp = c->policy.value_precision;
    const size_t qg = c->policy.quant_group;
    sv_store_values((uint8_t *)p->k + (size_t)p->n * sv_row_bytes(kp, d),
                    p->kscale ? p->kscale + (size_t)p->n * c->kgroups : NULL, 1, kp, key, d, qg);
    /* value scales are group-major ([D/g][cap]): one token's scales are cap apart */
    sv_store_values((uint8_t *)p->v + (size_t)p->n * sv_row_bytes(vp, d), p->vscale ? p->vscale + p->n : NULL, p->cap,
                    vp, value, d, qg);
    p->n++;
}
