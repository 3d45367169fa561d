/* Prefill: the policy's pipeline on one layer's prompt — token eviction, then key-channel
 * pruning (SparK per token, or ThinK per head) of the survivors, then value-channel pruning —
 * stored page by page. Nothing is written to the cache until every page of every head has been
 * built, so a failure (bad input, out of memory) leaves the cache exactly as it was. */
#include "internal.h"
#include "input_rows.h"
#include "prefill_arena.h"
#include "prefill_kernels.h"
#include "page_encode.h"

#include <stdlib.h>
#include <string.h>
#include "omp_compat.h"

static int thread_count(const sparkv_cache *c) {
    return c->policy.threads > 0 ? c->policy.threads : omp_get_max_threads();
}

static sparkv_status check_eviction(sparkv_cache *c, uint64_t n, uint32_t n_use) {
    const sparkv_policy *p = &c->policy;
    if ((p->eviction == SPARKV_EVICT_SNAPKV || p->eviction == SPARKV_EVICT_PYRAMIDKV) &&
        (uint64_t)p->evict_budget > n - n_use)
        return sv_fail(c, SPARKV_ERR_INVALID_POLICY,
                       "prefill: evict_budget %u exceeds the %llu prompt tokens before the %u-token window",
                       p->evict_budget, (unsigned long long)(n - n_use), n_use);
    return SPARKV_OK;
}

sparkv_status sparkv_prefill(sparkv_cache *cache, uint32_t layer, const float *keys, const float *values,
                             uint64_t n_tokens, const float *q_window, uint64_t n_window) {
    return sparkv_prefill_typed(cache, layer, SPARKV_DTYPE_F32, keys, values, n_tokens, q_window, n_window);
}

sparkv_status sparkv_prefill_typed(sparkv_cache *cache, uint32_t layer, sparkv_dtype dtype, const void *key_data,
                                   const void *value_data, uint64_t n_tokens, const void *q_data, uint64_t n_window) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "prefill: cache is NULL");
    sv_clear_error(cache);
    if (!sv_dtype_valid(dtype))
        return sv_fail(cache, SPARKV_ERR_DTYPE, "prefill: element type %d is not SPARKV_DTYPE_F32, F16 or BF16",
                       (int)dtype);
    const sv_rows keys = {key_data, dtype}, values = {value_data, dtype}, q_window = {q_data, dtype};
    const sparkv_shape *sh = &cache->shape;
    const uint32_t d = sh->head_dim, nkv = sh->n_kv_heads;
    const int scored_eviction =
        cache->policy.eviction == SPARKV_EVICT_SNAPKV || cache->policy.eviction == SPARKV_EVICT_PYRAMIDKV;
    const int needs_queries = cache->prunes || scored_eviction;
    if (!key_data || !value_data)
        return sv_fail(cache, SPARKV_ERR_NULL_POINTER, "prefill: %s is NULL", key_data ? "values" : "keys");
    if (layer >= sh->n_layers)
        return sv_fail(cache, SPARKV_ERR_LAYER, "prefill: layer %u is out of range (n_layers = %u)", layer, sh->n_layers);
    sv_layer *L = &cache->layers[layer];
    if (L->prefilled || L->n_tokens)
        return sv_fail(cache, SPARKV_ERR_STATE,
                       "prefill: layer %u already holds %llu tokens; prefill is allowed once, on an empty layer", layer,
                       (unsigned long long)L->n_tokens);
    if (n_tokens == 0) return sv_fail(cache, SPARKV_ERR_INVALID_SHAPE, "prefill: n_tokens is 0");
    if (n_tokens > sh->capacity)
        return sv_fail(cache, SPARKV_ERR_CAPACITY, "prefill: %llu tokens exceed the capacity of %llu",
                       (unsigned long long)n_tokens, (unsigned long long)sh->capacity);
    if (needs_queries && !q_data)
        return sv_fail(cache, SPARKV_ERR_NULL_POINTER, "prefill: the policy %s, so q_window is required",
                       cache->prunes ? "prunes key channels" : "scores tokens for eviction");
    if (!q_data && n_window)
        return sv_fail(cache, SPARKV_ERR_NULL_POINTER, "prefill: q_window is NULL but n_window is %llu",
                       (unsigned long long)n_window);
    if (q_data && n_window == 0) return sv_fail(cache, SPARKV_ERR_WINDOW, "prefill: n_window is 0");
    if (n_window > n_tokens)
        return sv_fail(cache, SPARKV_ERR_WINDOW, "prefill: window of %llu queries is longer than the prompt (%llu tokens)",
                       (unsigned long long)n_window, (unsigned long long)n_tokens);
    const uint32_t n_use = (uint32_t)(n_window < cache->policy.window ? n_window : cache->policy.window);
    sparkv_status st = check_eviction(cache, n_tokens, n_use);
    if (st == SPARKV_OK) st = sv_check_rows(cache, "keys", keys, nkv, n_tokens, d, cache->policy.key_precision);
    if (st == SPARKV_OK) st = sv_check_rows(cache, "values", values, nkv, n_tokens, d, cache->policy.value_precision);
    if (st == SPARKV_OK && q_data)
        st = sv_check_rows(cache, "window queries", q_window, sh->n_q_heads, n_window, d, SPARKV_F32);
    if (st != SPARKV_OK) return st;

    const uint64_t n_keep = sv_evict_count(cache, layer, n_tokens, n_use);
    const uint64_t n_pages = (n_keep + SPARKV_PAGE_TOKENS - 1) / SPARKV_PAGE_TOKENS;
    const int64_t n_items = (int64_t)nkv * n_pages;
    sv_page **pages = (sv_page **)calloc((size_t)n_items, sizeof(sv_page *));
    uint64_t *rows = (uint64_t *)malloc(sizeof(uint64_t) * nkv * n_keep);
    float *qn = (float *)calloc((size_t)nkv * d, sizeof(float));
    float *qc = (float *)malloc(sizeof(float) * nkv);
    uint8_t *think = (uint8_t *)calloc(nkv, SPARKV_MAX_HEAD_DIM / 8);
    sv_page ***tables = (sv_page ***)calloc(nkv, sizeof(sv_page **));
    float **norms = (float **)calloc(nkv, sizeof(float *));
    int failed = !pages || !rows || !qn || !qc || !think || !tables || !norms;
    for (uint32_t h = 0; h < nkv && !failed; h++) {
        tables[h] = (sv_page **)malloc(sizeof(sv_page *) * (size_t)(n_pages ? n_pages : 1));
        if (!tables[h]) failed = 1;
        if (cache->prompt_keys == SV_KEYS_SPARK && !(norms[h] = (float *)malloc(sizeof(float) * d))) failed = 1;
    }
    const int threads = thread_count(cache);
    (void)threads; /* read only by the OpenMP pragmas */
    if (!failed) {
        for (uint32_t h = 0; h < nkv; h++) {
            qc[h] = 1.0f;
            if (cache->prunes)
                sv_window_qnorm(q_window, n_window, n_use, cache->group, h * cache->group, d, qn + (size_t)h * d, &qc[h]);
        }
        /* schedule(static): clang 21's dynamic schedules need a newer libomp than Debian's. */
#pragma omp parallel for schedule(static, 1) num_threads(threads)
        for (int64_t h = 0; h < (int64_t)nkv; h++) {
            const int rc = sv_evict_select(cache, layer, (uint32_t)h, keys, n_tokens, q_window, n_window, n_use,
                                           n_keep, rows + (uint64_t)h * n_keep);
            if (rc != 0) {
#pragma omp atomic write
                failed = rc == -2 ? 2 : 1; /* either value stops the build; 2 names the overflow */
            }
            /* rows of a failed head are not filled: never read them */
            else if (cache->prompt_keys == SV_KEYS_THINK)
                sv_think_select(cache, sv_rows_at(keys, (uint64_t)h * n_tokens, d), rows + (uint64_t)h * n_keep, n_keep,
                                qn + (size_t)h * d, n_use, think + (size_t)h * (SPARKV_MAX_HEAD_DIM / 8));
        }
    }
    /* One mapping for every page of the layer when their sizes are known before they are built
     * (cumulative selection sizes a page only when it builds it). */
    sv_page_arena *arena = NULL;
    if (!failed && !(cache->prompt_keys == SV_KEYS_SPARK && cache->policy.selection != SPARKV_SELECT_TOPK)) {
        size_t bytes = 0;
        for (int64_t item = 0; item < n_items; item++) {
            const uint64_t i0 = ((uint64_t)item % n_pages) * SPARKV_PAGE_TOKENS;
            const uint32_t n = (uint32_t)(n_keep - i0 < SPARKV_PAGE_TOKENS ? n_keep - i0 : SPARKV_PAGE_TOKENS);
            const uint32_t t = cache->keep_topk < d ? cache->keep_topk : d;
            bytes += sv_page_prompt_bytes(cache, n, cache->prompt_keys == SV_KEYS_SPARK
                                                        ? (uint64_t)n * sv_row_bytes(cache->policy.key_precision, t)
                                                        : 0);
        }
        arena = sv_arena_new(bytes);
    }
    if (!failed) {
#pragma omp parallel for schedule(static, 1) num_threads(threads)
        for (int64_t item = 0; item < n_items; item++) {
            const uint32_t h = (uint32_t)((uint64_t)item / n_pages);
            const uint64_t i0 = ((uint64_t)item % n_pages) * SPARKV_PAGE_TOKENS;
            const uint32_t n = (uint32_t)(n_keep - i0 < SPARKV_PAGE_TOKENS ? n_keep - i0 : SPARKV_PAGE_TOKENS);
            const sv_encode_input in = {sv_rows_at(keys, (uint64_t)h * n_tokens, d), sv_rows_at(values, (uint64_t)h * n_tokens, d),
                                   rows + (uint64_t)h * n_keep, qn + (size_t)h * d, qc[h],
                                   think + (size_t)h * (SPARKV_MAX_HEAD_DIM / 8)};
            pages[item] = sv_encode_page(cache, &in, i0, n, arena);
            if (!pages[item]) {
#pragma omp atomic write
                failed = 1;
            }
        }
    }
    sv_arena_release(arena); /* the pages hold it now */
    /* In item order, so the message names the same token on any thread count. */
    uint64_t bad_item = 0, bad_token = 0;
    int overflow = 0;
    for (int64_t item = 0; !failed && item < n_items; item++) {
        const uint32_t slot = sv_page_first_overflow(cache, pages[item]);
        if (slot < pages[item]->n) {
            overflow = failed = 1;
            bad_item = (uint64_t)item;
            bad_token = pages[item]->first + slot;
        }
    }
    if (failed) {
        if (pages) for (int64_t i = 0; i < n_items; i++) sv_page_free(pages[i]);
        for (uint32_t h = 0; h < nkv; h++) {
            if (tables) free(tables[h]);
            if (norms) free(norms[h]);
        }
        free(tables); free(norms); free(pages); free(rows); free(qn); free(qc); free(think);
        if (failed == 2)
            return sv_fail(cache, SPARKV_ERR_OVERFLOW,
                           "prefill: layer %u: a SnapKV window logit scale * q.k overflows float32 (|q.k| beyond "
                           "3.4e38)", layer);
        if (overflow)
            return sv_fail(cache, SPARKV_ERR_RANGE,
                           "prefill: layer %u, KV head %llu, stored token %llu: a recovery statistic or value-pruning "
                           "fill exceeds fp16's range (65504); keys or values of this magnitude need smaller inputs",
                           layer, (unsigned long long)(bad_item / n_pages), (unsigned long long)bad_token);
        return sv_fail(cache, SPARKV_ERR_OUT_OF_MEMORY, "prefill: out of memory while building layer %u", layer);
    }
    for (uint32_t h = 0; h < nkv; h++) {
        sv_head *hs = &L->heads[h];
        memcpy(tables[h], pages + (size_t)h * n_pages, sizeof(sv_page *) * (size_t)n_pages);
        hs->pages = tables[h];
        hs->n_pages = n_pages;
        hs->pages_cap = n_pages ? n_pages : 1;
        if (norms[h]) {
            memcpy(norms[h], qn + (size_t)h * d, sizeof(float) * d);
            hs->qn = norms[h];
            hs->c = qc[h];
        }
        memcpy(hs->think_mask, think + (size_t)h * (SPARKV_MAX_HEAD_DIM / 8), SPARKV_MAX_HEAD_DIM / 8);
    }
    L->n_tokens = L->n_prompt = n_keep;
    L->n_seen = n_tokens;
    L->prompt_keys = cache->prompt_keys;
    L->prefilled = 1;
    L->next_age = n_pages; /* decode tokens start on a fresh page (or fill a dense prompt page) */
    free(tables); free(norms); free(pages); free(rows); free(qn); free(qc); free(think);
    return SPARKV_OK;
}
