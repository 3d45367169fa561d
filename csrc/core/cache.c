/* Cache lifecycle, queries about it, memory accounting and inspection. */
#include "internal.h"
#include "half.h"

#include <stdlib.h>
#include <string.h>
#include "omp_compat.h"

static void free_head_pages(sv_head *h) {
    for (uint64_t i = 0; i < h->n_pages; i++) sv_page_free(h->pages[i]);
    free(h->pages);
    free(h->qn);
    memset(h, 0, sizeof(*h));
}

sparkv_status sv_shape_check(const sparkv_shape *shape) {
    if (shape->struct_size != sizeof(sparkv_shape))
        return sv_fail(NULL, SPARKV_ERR_STRUCT_SIZE, "shape.struct_size is %u, this library expects %u",
                       shape->struct_size, (unsigned)sizeof(sparkv_shape));
    if (shape->n_layers == 0 || shape->n_q_heads == 0 || shape->n_kv_heads == 0 || shape->capacity == 0)
        return sv_fail(NULL, SPARKV_ERR_INVALID_SHAPE,
                       "n_layers (%u), n_q_heads (%u), n_kv_heads (%u) and capacity (%llu) must all be >= 1",
                       shape->n_layers, shape->n_q_heads, shape->n_kv_heads, (unsigned long long)shape->capacity);
    if (shape->n_layers > 65536 || shape->n_kv_heads > 4096 || shape->capacity > (1ull << 40))
        return sv_fail(NULL, SPARKV_ERR_INVALID_SHAPE,
                       "shape too large: n_layers <= 65536, n_kv_heads <= 4096, capacity <= 2^40");
    uint32_t d = shape->head_dim;
    if (d < 8 || d > SPARKV_MAX_HEAD_DIM || d % 8 != 0)
        return sv_fail(NULL, SPARKV_ERR_HEAD_DIM, "head_dim %u is not a multiple of 8 in [8, 256]", d);
    if (shape->n_q_heads % shape->n_kv_heads != 0)
        return sv_fail(NULL, SPARKV_ERR_GQA, "n_q_heads (%u) is not a multiple of n_kv_heads (%u)",
                       shape->n_q_heads, shape->n_kv_heads);
    if (shape->n_q_heads / shape->n_kv_heads > SPARKV_MAX_GROUP)
        return sv_fail(NULL, SPARKV_ERR_GQA, "GQA group of %u query heads exceeds %u",
                       shape->n_q_heads / shape->n_kv_heads, SPARKV_MAX_GROUP);
    return SPARKV_OK;
}

sparkv_status sparkv_cache_create(const sparkv_shape *shape, const sparkv_policy *policy, sparkv_cache **out) {
    sv_clear_error(NULL);
    if (out) *out = NULL;
    if (!shape || !policy || !out)
        return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "cache_create: %s is NULL",
                       !shape ? "shape" : !policy ? "policy" : "out");
    sparkv_status st = sv_shape_check(shape);
    if (st == SPARKV_OK) st = sv_policy_check(NULL, policy, shape->head_dim);
    if (st != SPARKV_OK) return st;
    const uint32_t d = shape->head_dim;

    sparkv_cache *c = (sparkv_cache *)calloc(1, sizeof(sparkv_cache));
    if (!c) return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "cache_create: out of memory");
    c->shape = *shape;
    c->policy = *policy;
    c->group = shape->n_q_heads / shape->n_kv_heads;
    c->keep_topk = sparkv_topk_keep(policy->key_prune_ratio, d);
    c->prunes = policy->selection == SPARKV_SELECT_CUMULATIVE || c->keep_topk < d;
    c->prompt_keys = !c->prunes ? SV_KEYS_DENSE
                     : policy->key_pruning == SPARKV_KEYS_THINK ? SV_KEYS_THINK : SV_KEYS_SPARK;
    c->n_stats = c->prompt_keys == SV_KEYS_SPARK ? sv_n_stats(policy->recovery) : 0;
    c->keep_values = sparkv_topk_keep(policy->value_prune_ratio, d);
    c->kgroups = sv_is_quantized(policy->key_precision) ? d / policy->quant_group : 0;
    c->vgroups = sv_is_quantized(policy->value_precision) ? d / policy->quant_group : 0;
    c->kernel = sv_best_kernel();
    static _Atomic uint64_t next_id = 1;
    c->id = next_id++; /* atomic increment: caches may be created concurrently */
    c->layers = (sv_layer *)calloc(shape->n_layers, sizeof(sv_layer));
    if (!c->layers) { free(c); return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "cache_create: out of memory"); }
    for (uint32_t l = 0; l < shape->n_layers; l++) {
        c->layers[l].heads = (sv_head *)calloc(shape->n_kv_heads, sizeof(sv_head));
        if (!c->layers[l].heads) { sparkv_cache_free(c); return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "cache_create: out of memory"); }
    }
    *out = c;
    return SPARKV_OK;
}

void sparkv_cache_free(sparkv_cache *cache) {
    if (!cache) return;
    sv_clear_error(cache);
    if (cache->layers) {
        for (uint32_t l = 0; l < cache->shape.n_layers; l++) {
            free(cache->layers[l].qring);
            if (!cache->layers[l].heads) continue;
            for (uint32_t h = 0; h < cache->shape.n_kv_heads; h++) free_head_pages(&cache->layers[l].heads[h]);
            free(cache->layers[l].heads);
        }
        free(cache->layers);
    }
    free(cache);
}

/* Queries take a const handle; only the handle's error text is written. */
static sparkv_status null_output(const sparkv_cache *cache, const char *what) {
    return sv_fail((sparkv_cache *)cache, SPARKV_ERR_NULL_POINTER, "%s: the output pointer is NULL", what);
}

sparkv_status sparkv_cache_shape(const sparkv_cache *cache, sparkv_shape *out) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "cache_shape: cache is NULL");
    if (!out) return null_output(cache, "cache_shape");
    *out = cache->shape;
    return SPARKV_OK;
}

sparkv_status sparkv_cache_policy(const sparkv_cache *cache, sparkv_policy *out) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "cache_policy: cache is NULL");
    if (!out) return null_output(cache, "cache_policy");
    *out = cache->policy;
    return SPARKV_OK;
}

int sparkv_cache_threads(const sparkv_cache *cache) {
    if (!cache) return 0;
#ifdef _OPENMP
    return cache->policy.threads > 0 ? cache->policy.threads : omp_get_max_threads();
#else
    return 1;
#endif
}

uint64_t sparkv_layer_tokens(const sparkv_cache *cache, uint32_t layer) {
    if (!cache || layer >= cache->shape.n_layers) return 0;
    return cache->layers[layer].n_tokens;
}

static void add_layer(const sparkv_cache *c, uint32_t l, sparkv_memory *m) {
    const uint32_t d = c->shape.head_dim;
    const sv_layer *L = &c->layers[l];
    for (uint32_t h = 0; h < c->shape.n_kv_heads; h++) {
        const sv_head *hs = &L->heads[h];
        const uint64_t head_meta = L->prefilled ? sv_head_meta_bytes(c, L->prompt_keys) : 0;
        m->key_meta_bytes += head_meta;
        m->reserved_bytes += head_meta;
        for (uint64_t i = 0; i < hs->n_pages; i++) {
            const sv_page *p = hs->pages[i];
            m->reserved_bytes += p->alloc_bytes;
            sv_account_page(c, p->keys, p->values_pruned, p->sign != NULL, p->n, p->kept_bytes, m);
            if (p->qn) { /* an aged SparK page's own norms and c */
                m->key_meta_bytes += (uint64_t)d * sizeof(float) + sizeof(float);
                m->reserved_bytes += (uint64_t)d * sizeof(float) + sizeof(float);
            }
        }
    }
    if (L->qring) {
        m->key_meta_bytes += sv_qring_bytes(c);
        m->reserved_bytes += sv_qring_bytes(c);
    }
    m->n_tokens += L->n_tokens;
    m->dense_bytes += L->n_seen * c->shape.n_kv_heads * d * 2u * 2u;
}

sparkv_status sparkv_memory_report(const sparkv_cache *cache, uint32_t layer, sparkv_memory *out) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "memory_report: cache is NULL");
    if (!out) return null_output(cache, "memory_report");
    if (layer != SPARKV_ALL_LAYERS && layer >= cache->shape.n_layers) {
        sv_fail((sparkv_cache *)cache, SPARKV_ERR_LAYER, "memory_report: layer %u is out of range (n_layers = %u)",
                layer, cache->shape.n_layers);
        return SPARKV_ERR_LAYER;
    }
    if (out->struct_size != sizeof(sparkv_memory))
        return sv_fail((sparkv_cache *)cache, SPARKV_ERR_STRUCT_SIZE,
                       "memory_report: out->struct_size is %llu, this library expects %u",
                       (unsigned long long)out->struct_size, (unsigned)sizeof(sparkv_memory));
    memset(out, 0, sizeof(*out));
    out->struct_size = sizeof(sparkv_memory);
    if (layer == SPARKV_ALL_LAYERS)
        for (uint32_t l = 0; l < cache->shape.n_layers; l++) add_layer(cache, l, out);
    else
        add_layer(cache, layer, out);
    out->total_bytes = out->key_bytes + out->key_meta_bytes + out->value_bytes + out->value_meta_bytes;
    return SPARKV_OK;
}

/* Locate (page, slot) of a token of one head. */
static sparkv_status find_token(const sparkv_cache *cache, uint32_t layer, uint32_t kv_head, uint64_t token,
                                const sv_page **page, uint32_t *slot) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "inspect: cache is NULL");
    sparkv_cache *mc = (sparkv_cache *)cache; /* only the error string is written */
    sv_clear_error(mc);
    if (layer >= cache->shape.n_layers)
        return sv_fail(mc, SPARKV_ERR_LAYER, "layer %u is out of range (n_layers = %u)", layer, cache->shape.n_layers);
    if (kv_head >= cache->shape.n_kv_heads)
        return sv_fail(mc, SPARKV_ERR_INDEX, "kv_head %u is out of range (n_kv_heads = %u)", kv_head,
                       cache->shape.n_kv_heads);
    const sv_layer *L = &cache->layers[layer];
    if (token >= L->n_tokens)
        return sv_fail(mc, SPARKV_ERR_INDEX, "token %llu is out of range (layer %u holds %llu)",
                       (unsigned long long)token, layer, (unsigned long long)L->n_tokens);
    const sv_head *hs = &L->heads[kv_head];
    for (uint64_t i = 0; i < hs->n_pages; i++) {
        const sv_page *p = hs->pages[i];
        if (token < p->first + p->n) { *page = p; *slot = (uint32_t)(token - p->first); return SPARKV_OK; }
    }
    return sv_fail(mc, SPARKV_ERR_INDEX, "token %llu not found", (unsigned long long)token);
}

sparkv_status sparkv_inspect_key(const sparkv_cache *cache, uint32_t layer, uint32_t kv_head, uint64_t token,
                                 uint8_t *kept_mask, float *key) {
    const sv_page *page;
    uint32_t slot;
    sparkv_status st = find_token(cache, layer, kv_head, token, &page, &slot);
    if (st != SPARKV_OK) return st;
    const uint32_t d = cache->shape.head_dim;
    if (kept_mask) {
        if (page->keys == SV_KEYS_SPARK) memcpy(kept_mask, page->mask + (size_t)slot * (d / 8), d / 8);
        else if (page->keys == SV_KEYS_THINK) memcpy(kept_mask, cache->layers[layer].heads[kv_head].think_mask, d / 8);
        else memset(kept_mask, 0xff, d / 8);
    }
    if (key) {
        const sv_head *hs = &cache->layers[layer].heads[kv_head];
        float rq[SPARKV_MAX_HEAD_DIM];
        if (page->qn) sv_recip_sqrt_qn(page->qn, page->qn[d], d, rq);
        else if (hs->qn) sv_recip_sqrt_qn(hs->qn, hs->c, d, rq);
        else memset(rq, 0, sizeof(rq));
        uint64_t off = page->keys == SV_KEYS_SPARK ? sv_page_kept_offset(page, d, cache->policy.key_precision, slot) : 0;
        sv_recover_key(cache, page, slot, off, rq, sv_token_hash(cache->policy.seed, layer, kv_head, token),
                       hs->think_mask, key);
    }
    return SPARKV_OK;
}

sparkv_status sparkv_inspect_value(const sparkv_cache *cache, uint32_t layer, uint32_t kv_head, uint64_t token,
                                   float *value) {
    const sv_page *page;
    uint32_t slot;
    sparkv_status st = find_token(cache, layer, kv_head, token, &page, &slot);
    if (st != SPARKV_OK) return st;
    if (!value) return sv_fail((sparkv_cache *)cache, SPARKV_ERR_NULL_POINTER, "inspect_value: value is NULL");
    const uint32_t d = cache->shape.head_dim;
    const sparkv_precision vp = cache->policy.value_precision;
    if (!page->values_pruned) {
        sv_load_values(value, (const uint8_t *)page->v + (size_t)slot * sv_row_bytes(vp, d),
                       page->vscale ? page->vscale + slot : NULL, page->cap, vp, d, cache->policy.quant_group);
        return SPARKV_OK;
    }
    const uint32_t tv = cache->keep_values;
    const uint8_t *mask = page->vmask + (size_t)slot * (d / 8);
    const float fill = sv_half_to_float(page->vfill[slot]);
    float kept[SPARKV_MAX_HEAD_DIM];
    sv_load_values(kept, (const uint8_t *)page->v + (size_t)slot * sv_row_bytes(vp, tv),
                   page->vscale ? page->vscale + slot : NULL, 1, vp, tv, tv);
    uint32_t p = 0;
    for (uint32_t j = 0; j < d; j++) value[j] = (mask[j >> 3] >> (j & 7) & 1u) ? kept[p++] : fill;
    return SPARKV_OK;
}

sparkv_status sparkv_inspect_qnorm(const sparkv_cache *cache, uint32_t layer, uint32_t kv_head, float *qn,
                                   float *scale_c) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "inspect_qnorm: cache is NULL");
    sparkv_cache *mc = (sparkv_cache *)cache;
    sv_clear_error(mc);
    if (layer >= cache->shape.n_layers)
        return sv_fail(mc, SPARKV_ERR_LAYER, "layer %u is out of range (n_layers = %u)", layer, cache->shape.n_layers);
    if (kv_head >= cache->shape.n_kv_heads)
        return sv_fail(mc, SPARKV_ERR_INDEX, "kv_head %u is out of range (n_kv_heads = %u)", kv_head,
                       cache->shape.n_kv_heads);
    const sv_head *hs = &cache->layers[layer].heads[kv_head];
    const uint32_t d = cache->shape.head_dim;
    if (qn) {
        if (hs->qn) memcpy(qn, hs->qn, d * sizeof(float));
        else memset(qn, 0, d * sizeof(float));
    }
    if (scale_c) *scale_c = hs->qn ? hs->c : 1.0f;
    return SPARKV_OK;
}
