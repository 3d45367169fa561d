/* Prefill: compress and store the prompt of one layer, SparK-style, one page at a time.
 * Nothing is written to the cache until every page of every head has been built, so a failure
 * (bad input, out of memory) leaves the cache exactly as it was. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int thread_count(const sparkv_cache *c) {
#ifdef _OPENMP
    return c->policy.threads > 0 ? c->policy.threads : omp_get_max_threads();
#else
    (void)c;
    return 1;
#endif
}

/* Build one page of prompt tokens [t0, t0 + n) of head h. NULL when out of memory. */
static sv_page *build_page(const sparkv_cache *c, const float *keys, const float *values, uint64_t n_tokens,
                           uint32_t h, uint64_t t0, uint32_t n, const float *qn, float qc) {
    const uint32_t d = c->shape.head_dim, nb = d / 8;
    const float *k0 = keys + ((uint64_t)h * n_tokens + t0) * d;
    const float *v0 = values + ((uint64_t)h * n_tokens + t0) * d;
    const sparkv_precision vp = c->policy.value_precision, kp = c->policy.key_precision;
    sv_page *page;
    if (!c->prunes) {
        page = sv_page_new_dense(c);
        if (!page) return NULL;
        for (uint32_t i = 0; i < n; i++)
            sv_store_row((uint8_t *)page->k + (size_t)i * d * sv_precision_bytes(kp), kp, k0 + (size_t)i * d, d);
    } else {
        uint8_t masks[SPARKV_PAGE_TOKENS * (SPARKV_MAX_HEAD_DIM / 8)];
        double s[SPARKV_MAX_HEAD_DIM], scratch[SPARKV_MAX_HEAD_DIM];
        uint64_t kept = 0;
        const uint32_t maxk = c->policy.cumulative_max_keep ? c->policy.cumulative_max_keep : d;
        for (uint32_t i = 0; i < n; i++) {
            sv_token_saliency(k0 + (size_t)i * d, qn, d, s);
            kept += c->policy.selection == SPARKV_SELECT_TOPK
                        ? sv_select_topk(s, d, c->keep_topk, masks + (size_t)i * nb, scratch)
                        : sv_select_cumulative(s, d, (double)c->policy.cumulative_p, c->policy.cumulative_min_keep,
                                               maxk, masks + (size_t)i * nb, scratch);
        }
        page = sv_page_new_compressed(c, n, kept);
        if (!page) return NULL;
        memcpy(page->mask, masks, (size_t)n * nb);
        uint64_t off = 0;
        for (uint32_t i = 0; i < n; i++) {
            /* Saliency is recomputed rather than kept for the whole page: it is cheap, and a page's
             * worth of doubles would not fit the stack for D = 256. */
            sv_token_saliency(k0 + (size_t)i * d, qn, d, s);
            sv_pack_token(c, page, i, off, k0 + (size_t)i * d, s, qc);
            const uint8_t *m = page->mask + (size_t)i * nb;
            for (uint32_t b = 0; b < nb; b++) off += (uint64_t)__builtin_popcount(m[b]);
        }
    }
    for (uint32_t i = 0; i < n; i++)
        sv_store_row((uint8_t *)page->v + (size_t)i * d * sv_precision_bytes(vp), vp, v0 + (size_t)i * d, d);
    page->n = n;
    page->first = t0;
    return page;
}

sparkv_status sparkv_prefill(sparkv_cache *cache, uint32_t layer, const float *keys, const float *values,
                             uint64_t n_tokens, const float *q_window, uint64_t n_window) {
    if (!cache) return SPARKV_ERR_NULL_POINTER;
    sv_clear_error(cache);
    const sparkv_shape *sh = &cache->shape;
    const uint32_t d = sh->head_dim, nkv = sh->n_kv_heads;
    if (!keys || !values)
        return sv_fail(cache, SPARKV_ERR_NULL_POINTER, "prefill: %s is NULL", keys ? "values" : "keys");
    if (layer >= sh->n_layers)
        return sv_fail(cache, SPARKV_ERR_LAYER, "prefill: layer %u is out of range (n_layers = %u)", layer, sh->n_layers);
    sv_layer *L = &cache->layers[layer];
    if (L->prefilled || L->n_tokens)
        return sv_fail(cache, SPARKV_ERR_STATE, "prefill: layer %u already holds %llu tokens; prefill is allowed once, on an empty layer",
                       layer, (unsigned long long)L->n_tokens);
    if (n_tokens == 0) return sv_fail(cache, SPARKV_ERR_INVALID_SHAPE, "prefill: n_tokens is 0");
    if (n_tokens > sh->capacity)
        return sv_fail(cache, SPARKV_ERR_CAPACITY, "prefill: %llu tokens exceed the capacity of %llu",
                       (unsigned long long)n_tokens, (unsigned long long)sh->capacity);
    if (cache->prunes && !q_window)
        return sv_fail(cache, SPARKV_ERR_NULL_POINTER, "prefill: the policy prunes key channels, so q_window is required");
    if (!q_window && n_window)
        return sv_fail(cache, SPARKV_ERR_NULL_POINTER, "prefill: q_window is NULL but n_window is %llu",
                       (unsigned long long)n_window);
    if (q_window && n_window == 0) return sv_fail(cache, SPARKV_ERR_WINDOW, "prefill: n_window is 0");
    if (n_window > n_tokens)
        return sv_fail(cache, SPARKV_ERR_WINDOW, "prefill: window of %llu queries is longer than the prompt (%llu tokens)",
                       (unsigned long long)n_window, (unsigned long long)n_tokens);
    sparkv_status st = sv_check_finite(cache, "keys", keys, nkv, n_tokens, d);
    if (st == SPARKV_OK) st = sv_check_finite(cache, "values", values, nkv, n_tokens, d);
    if (st == SPARKV_OK && q_window) st = sv_check_finite(cache, "window queries", q_window, sh->n_q_heads, n_window, d);
    if (st != SPARKV_OK) return st;

    const uint32_t n_pages = (uint32_t)((n_tokens + SPARKV_PAGE_TOKENS - 1) / SPARKV_PAGE_TOKENS);
    const uint32_t n_use = (uint32_t)(n_window < cache->policy.window ? n_window : cache->policy.window);
    sv_page **pages = (sv_page **)calloc((size_t)nkv * n_pages, sizeof(sv_page *));
    float *qn = cache->prunes ? (float *)malloc(sizeof(float) * (size_t)nkv * d) : NULL;
    float *qc = (float *)malloc(sizeof(float) * nkv);
    if (!pages || !qc || (cache->prunes && !qn)) {
        free(pages); free(qn); free(qc);
        return sv_fail(cache, SPARKV_ERR_OUT_OF_MEMORY, "prefill: cannot allocate page tables");
    }
    for (uint32_t h = 0; h < nkv; h++) {
        qc[h] = 1.0f;
        if (qn) sv_window_qnorm(q_window, n_window, n_use, cache->group, h * cache->group, d, qn + (size_t)h * d, &qc[h]);
    }
    int failed = 0;
    const int64_t n_items = (int64_t)nkv * n_pages;
    /* schedule(static): clang 21's dynamic schedules need a newer libomp than Debian's. */
#pragma omp parallel for schedule(static, 1) num_threads(thread_count(cache))
    for (int64_t item = 0; item < n_items; item++) {
        const uint32_t h = (uint32_t)(item / n_pages), pi = (uint32_t)(item % n_pages);
        const uint64_t t0 = (uint64_t)pi * SPARKV_PAGE_TOKENS;
        const uint32_t n = (uint32_t)(n_tokens - t0 < SPARKV_PAGE_TOKENS ? n_tokens - t0 : SPARKV_PAGE_TOKENS);
        pages[item] = build_page(cache, keys, values, n_tokens, h, t0, n, qn ? qn + (size_t)h * d : NULL, qc[h]);
        if (!pages[item]) {
#pragma omp atomic write
            failed = 1;
        }
    }
    sv_page ***tables = (sv_page ***)calloc(nkv, sizeof(sv_page **));
    float **norms = (float **)calloc(nkv, sizeof(float *));
    if (!failed && tables && norms) {
        for (uint32_t h = 0; h < nkv && !failed; h++) {
            tables[h] = (sv_page **)malloc(sizeof(sv_page *) * n_pages);
            if (!tables[h]) failed = 1;
            if (qn) {
                norms[h] = (float *)malloc(sizeof(float) * d);
                if (!norms[h]) failed = 1;
            }
        }
    } else {
        failed = 1;
    }
    if (failed) {
        for (int64_t i = 0; i < n_items; i++) sv_page_free(pages[i]);
        if (tables) for (uint32_t h = 0; h < nkv; h++) free(tables[h]);
        if (norms) for (uint32_t h = 0; h < nkv; h++) free(norms[h]);
        free(tables); free(norms); free(pages); free(qn); free(qc);
        return sv_fail(cache, SPARKV_ERR_OUT_OF_MEMORY, "prefill: out of memory while building layer %u", layer);
    }
    for (uint32_t h = 0; h < nkv; h++) {
        sv_head *hs = &L->heads[h];
        memcpy(tables[h], pages + (size_t)h * n_pages, sizeof(sv_page *) * n_pages);
        hs->pages = tables[h];
        hs->n_pages = hs->pages_cap = n_pages;
        if (qn) {
            memcpy(norms[h], qn + (size_t)h * d, sizeof(float) * d);
            hs->qn = norms[h];
            hs->c = qc[h];
        }
    }
    L->n_tokens = L->n_prompt = n_tokens;
    L->prefilled = 1;
    free(tables); free(norms); free(pages); free(qn); free(qc);
    return SPARKV_OK;
}
