/* Append: one decode token per KV head, stored dense in the policy's precisions (I8/I4: one fp16
 * scale per quant_group channels). Every page the token needs is allocated before anything is
 * written, so a failure leaves the cache unchanged. */
#include "internal.h"
#include "input_rows.h"
#include "page_encode.h"

#include <stdlib.h>
#include <string.h>

sparkv_status sparkv_append(sparkv_cache *cache, uint32_t layer, const float *keys, const float *values) {
    return sparkv_append_step(cache, layer, SPARKV_DTYPE_F32, keys, values, NULL);
}

sparkv_status sparkv_append_typed(sparkv_cache *cache, uint32_t layer, sparkv_dtype dtype, const void *key_data,
                                  const void *value_data) {
    return sparkv_append_step(cache, layer, dtype, key_data, value_data, NULL);
}

sparkv_status sparkv_append_step(sparkv_cache *cache, uint32_t layer, sparkv_dtype dtype, const void *key_data,
                                 const void *value_data, const float *q) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "append: cache is NULL");
    sv_clear_error(cache);
    if (!sv_dtype_valid(dtype))
        return sv_fail(cache, SPARKV_ERR_DTYPE, "append: element type %d is not SPARKV_DTYPE_F32, F16 or BF16",
                       (int)dtype);
    const sv_rows keys = {key_data, dtype}, values = {value_data, dtype};
    const sparkv_shape *sh = &cache->shape;
    const uint32_t d = sh->head_dim, nkv = sh->n_kv_heads;
    if (!key_data || !value_data)
        return sv_fail(cache, SPARKV_ERR_NULL_POINTER, "append: %s is NULL", key_data ? "values" : "keys");
    if (layer >= sh->n_layers)
        return sv_fail(cache, SPARKV_ERR_LAYER, "append: layer %u is out of range (n_layers = %u)", layer, sh->n_layers);
    sv_layer *L = &cache->layers[layer];
    if (L->n_tokens + 1 > sh->capacity)
        return sv_fail(cache, SPARKV_ERR_CAPACITY, "append: layer %u is full (capacity %llu tokens)", layer,
                       (unsigned long long)sh->capacity);
    sparkv_status st = sv_check_rows(cache, "keys", keys, nkv, 1, d, cache->policy.key_precision);
    if (st == SPARKV_OK) st = sv_check_rows(cache, "values", values, nkv, 1, d, cache->policy.value_precision);
    if (st == SPARKV_OK && q) st = sv_check_finite(cache, "queries", q, sh->n_q_heads, 1, d);
    if (st != SPARKV_OK) return st;
    /* the decode-query ring is allocated before anything is written, so a failure changes nothing */
    const int observe = q && sv_decode_wants_queries(cache, layer);
    double *ring = NULL;
    if (observe && !L->qring) {
        ring = (double *)malloc((size_t)sv_qring_bytes(cache));
        if (!ring) return sv_fail(cache, SPARKV_ERR_OUT_OF_MEMORY, "append: out of memory");
    }

    /* Heads share page boundaries: either all need a new page or none does. */
    const sv_page *last = L->heads[0].n_pages ? L->heads[0].pages[L->heads[0].n_pages - 1] : NULL;
    const int need_page = !last || last->keys != SV_KEYS_DENSE || last->values_pruned || last->n == last->cap;
    if (need_page) {
        sv_page **fresh = (sv_page **)calloc(nkv, sizeof(sv_page *));
        int failed = !fresh;
        for (uint32_t h = 0; h < nkv && !failed; h++) {
            sv_head *hs = &L->heads[h];
            if (hs->n_pages == hs->pages_cap) {
                const uint64_t cap = hs->pages_cap ? hs->pages_cap * 2 : 4;
                sv_page **grown = (sv_page **)realloc(hs->pages, sizeof(sv_page *) * (size_t)cap);
                if (!grown) { failed = 1; break; } /* the old table stays valid and unchanged */
                hs->pages = grown;
                hs->pages_cap = cap;
            }
            fresh[h] = sv_page_new_dense(cache);
            if (!fresh[h]) failed = 1;
        }
        if (failed) {
            if (fresh) for (uint32_t h = 0; h < nkv; h++) sv_page_free(fresh[h]);
            free(fresh);
            free(ring);
            return sv_fail(cache, SPARKV_ERR_OUT_OF_MEMORY, "append: out of memory");
        }
        for (uint32_t h = 0; h < nkv; h++) {
            fresh[h]->first = L->n_tokens;
            L->heads[h].pages[L->heads[h].n_pages++] = fresh[h];
        }
        free(fresh);
    }
    float k_row[SPARKV_MAX_HEAD_DIM], v_row[SPARKV_MAX_HEAD_DIM];
    for (uint32_t h = 0; h < nkv; h++)
        sv_encode_dense_token(cache, L->heads[h].pages[L->heads[h].n_pages - 1], sv_rows_get(keys, h, d, k_row),
                              sv_rows_get(values, h, d, v_row));
    L->n_tokens++;
    L->n_seen++;
    if (observe) sv_decode_observe(cache, layer, q, ring);
    sv_decode_age(cache, layer);
    return SPARKV_OK;
}
