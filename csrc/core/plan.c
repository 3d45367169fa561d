/* Memory planning: the memory report of a cache that does not exist yet, from the same page sizes
 * and per-page byte formulas the report itself uses (page.c, sv_account_page), evaluated per
 * layer in closed form, so planning a 2^40-token cache costs as little as a 4K one. */
#include "internal.h"

#include <string.h>

typedef unsigned __int128 u128;

/* A model of the cache: one KV head per layer (every head of a layer stores the same bytes), the
 * real group size, layer count and policy, so eviction budgets and page layouts are the real ones. */
static sparkv_status model_cache(const sparkv_shape *shape, const sparkv_policy *policy, sparkv_cache **out) {
    if (!shape || !policy) {
        *out = NULL;
        return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "plan: %s is NULL", !shape ? "shape" : "policy");
    }
    /* the real shape's checks; then a 1-head model (the real cache would allocate n_layers x
     * n_kv_heads head records, up to 2^28) */
    sparkv_status st = sv_shape_check(shape);
    if (st != SPARKV_OK) return st;
    sparkv_shape one = *shape;
    one.n_q_heads = shape->n_q_heads / shape->n_kv_heads;
    one.n_kv_heads = 1;
    return sparkv_cache_create(&one, policy, out);
}

/* Reserved and used bytes of one KV head of layer l: n_keep prompt tokens stored by prefill (if
 * prefilled), then `appended` dense tokens. */
static void plan_head(const sparkv_cache *c, int prefilled, uint64_t n_keep, uint64_t appended, sparkv_memory *m) {
    const uint32_t d = c->shape.head_dim, page = SPARKV_PAGE_TOKENS;
    uint64_t free_slots = 0; /* room the last prompt page leaves for appends */
    if (prefilled) {
        const uint64_t meta = sv_head_meta_bytes(c, c->prompt_keys);
        m->key_meta_bytes += meta;
        m->reserved_bytes += meta;
        uint64_t row = 0; /* packed kept key bytes per SparK token */
        if (c->prompt_keys == SV_KEYS_SPARK) {
            uint32_t keep = c->keep_topk < d ? c->keep_topk : d;
            if (c->policy.selection != SPARKV_SELECT_TOPK)
                keep = c->policy.cumulative_max_keep ? c->policy.cumulative_max_keep : d;
            row = sv_row_bytes(c->policy.key_precision, keep);
        }
        const uint64_t full = n_keep / page, rest = n_keep % page;
        if (full) m->reserved_bytes += full * sv_page_alloc_bytes(c, 1, page, (uint64_t)page * row);
        if (rest) m->reserved_bytes += sv_page_alloc_bytes(c, 1, (uint32_t)rest, rest * row);
        const int vpruned = c->keep_values < d;
        sv_account_page(c, c->prompt_keys, vpruned, c->policy.sign_bits != 0, n_keep, n_keep * row, m);
        /* a dense prompt page is an append page: appends fill its free slots first (append.c) */
        if (c->prompt_keys == SV_KEYS_DENSE && !vpruned && rest) free_slots = page - rest;
        /* decode-time compression (decode_age.c): every full page of appended tokens followed by
         * decode_recent newer ones is a prompt-style page (SparK: with norms of its own) */
        if (c->policy.compress_decode && (c->prompt_keys != SV_KEYS_DENSE || vpruned) &&
            appended >= c->policy.decode_recent) {
            const uint64_t aged = (appended - c->policy.decode_recent) / page;
            m->reserved_bytes += aged * sv_page_alloc_bytes(c, 1, page, (uint64_t)page * row);
            sv_account_page(c, c->prompt_keys, vpruned, c->policy.sign_bits != 0, aged * page, aged * page * row, m);
            if (c->prompt_keys == SV_KEYS_SPARK) {
                m->key_meta_bytes += aged * ((uint64_t)d * sizeof(float) + sizeof(float));
                m->reserved_bytes += aged * ((uint64_t)d * sizeof(float) + sizeof(float));
            }
            appended -= aged * page;
        }
    }
    const uint64_t into_prompt = appended < free_slots ? appended : free_slots;
    const uint64_t fresh = appended - into_prompt;
    m->reserved_bytes += (fresh + page - 1) / page * sv_page_alloc_bytes(c, 0, page, 0);
    sv_account_page(c, SV_KEYS_DENSE, 0, 0, appended, 0, m);
}

/* Per-sequence memory in 128 bits (huge shapes overflow 64). Fails like prefill would. */
static sparkv_status plan(const sparkv_cache *c, uint32_t n_kv, uint64_t prompt, uint64_t appended, u128 f[8]) {
    const sparkv_policy *p = &c->policy;
    const uint64_t cap = c->shape.capacity;
    if (prompt > cap || appended > cap - prompt)
        return sv_fail(NULL, SPARKV_ERR_CAPACITY, "plan: %llu prompt + %llu appended tokens exceed the capacity of %llu",
                       (unsigned long long)prompt, (unsigned long long)appended, (unsigned long long)cap);
    const uint32_t n_use = (uint32_t)(prompt < p->window ? prompt : p->window);
    const int scored = p->eviction == SPARKV_EVICT_SNAPKV || p->eviction == SPARKV_EVICT_PYRAMIDKV;
    if (prompt && scored && (uint64_t)p->evict_budget > prompt - n_use)
        return sv_fail(NULL, SPARKV_ERR_INVALID_POLICY,
                       "plan: evict_budget %u exceeds the %llu prompt tokens before the %u-token window",
                       p->evict_budget, (unsigned long long)(prompt - n_use), n_use);
    memset(f, 0, 8 * sizeof(u128));
    for (uint32_t l = 0; l < c->shape.n_layers; l++) {
        sparkv_memory m;
        memset(&m, 0, sizeof m);
        const uint64_t n_keep = prompt ? sv_evict_count(c, l, prompt, n_use) : 0;
        plan_head(c, prompt != 0, n_keep, appended, &m);
        /* the layer's decode-query ring (SparK with compress_decode), once per layer */
        uint64_t ring = 0;
        if (prompt && appended && c->policy.compress_decode && c->prompt_keys == SV_KEYS_SPARK)
            ring = sv_qring_bytes(c) * n_kv; /* the model has one KV head */
        f[0] += n_keep + appended;
        f[1] += (u128)m.key_bytes * n_kv;
        f[2] += (u128)m.key_meta_bytes * n_kv + ring;
        f[3] += (u128)m.value_bytes * n_kv;
        f[4] += (u128)m.value_meta_bytes * n_kv;
        f[5] += (u128)(prompt + appended) * n_kv * c->shape.head_dim * 2u * 2u;
        f[6] += (u128)m.reserved_bytes * n_kv + ring;
    }
    f[7] = f[1] + f[2] + f[3] + f[4];
    return SPARKV_OK;
}

static sparkv_status open_plan(const sparkv_shape *shape, const sparkv_policy *policy, sparkv_cache **c) {
    sv_clear_error(NULL);
    return model_cache(shape, policy, c);
}

sparkv_status sparkv_plan_memory(const sparkv_shape *shape, const sparkv_policy *policy, uint64_t prompt_tokens,
                                 uint64_t appended_tokens, sparkv_memory *out) {
    if (!out) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "plan_memory: out is NULL");
    if (out->struct_size != sizeof(sparkv_memory))
        return sv_fail(NULL, SPARKV_ERR_STRUCT_SIZE, "plan_memory: out->struct_size is %llu, this library expects %u",
                       (unsigned long long)out->struct_size, (unsigned)sizeof(sparkv_memory));
    sparkv_cache *c = NULL;
    sparkv_status st = open_plan(shape, policy, &c);
    if (st != SPARKV_OK) return st;
    u128 f[8];
    st = plan(c, shape->n_kv_heads, prompt_tokens, appended_tokens, f);
    sparkv_cache_free(c);
    if (st != SPARKV_OK) return st;
    for (int i = 0; i < 8; i++)
        if (f[i] > UINT64_MAX)
            return sv_fail(NULL, SPARKV_ERR_INVALID_SHAPE, "plan_memory: the cache would exceed 2^64 bytes");
    memset(out, 0, sizeof *out);
    out->struct_size = sizeof(sparkv_memory);
    out->n_tokens = (uint64_t)f[0];
    out->key_bytes = (uint64_t)f[1];
    out->key_meta_bytes = (uint64_t)f[2];
    out->value_bytes = (uint64_t)f[3];
    out->value_meta_bytes = (uint64_t)f[4];
    out->dense_bytes = (uint64_t)f[5];
    out->reserved_bytes = (uint64_t)f[6];
    out->total_bytes = (uint64_t)f[7];
    return SPARKV_OK;
}

/* 1 if `batch` sequences of this prompt fit; 0 if not; -1 with the error in *st. */
static int fits(const sparkv_cache *c, uint32_t n_kv, uint64_t prompt, uint64_t appended, uint64_t batch,
                uint64_t memory, sparkv_status *st) {
    u128 f[8];
    *st = plan(c, n_kv, prompt, appended, f);
    if (*st != SPARKV_OK) return -1;
    if (f[6] > (u128)memory) return 0; /* also keeps f[6] * batch below 2^128 */
    return f[6] * batch <= (u128)memory;
}

sparkv_status sparkv_plan_max_prompt(const sparkv_shape *shape, const sparkv_policy *policy, uint64_t memory_bytes,
                                     uint64_t batch, uint64_t appended_tokens, uint64_t *out_tokens) {
    if (!out_tokens) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "plan_max_prompt: out_tokens is NULL");
    if (batch == 0) return sv_fail(NULL, SPARKV_ERR_INVALID_SHAPE, "plan_max_prompt: batch is 0");
    sparkv_cache *c = NULL;
    sparkv_status st = open_plan(shape, policy, &c);
    if (st != SPARKV_OK) return st;
    const uint32_t n_kv = shape->n_kv_heads;
    const uint64_t cap = c->shape.capacity;
    if (appended_tokens > cap) {
        sparkv_cache_free(c);
        return sv_fail(NULL, SPARKV_ERR_CAPACITY, "plan_max_prompt: %llu appended tokens exceed the capacity of %llu",
                       (unsigned long long)appended_tokens, (unsigned long long)cap);
    }
    /* the shortest prompt prefill accepts: scored eviction needs budget + window tokens */
    const sparkv_policy *p = &c->policy;
    const int scored = p->eviction == SPARKV_EVICT_SNAPKV || p->eviction == SPARKV_EVICT_PYRAMIDKV;
    uint64_t lo = scored ? (uint64_t)p->evict_budget + p->window : 1, hi = cap - appended_tokens, best = 0;
    /* memory never shrinks as the prompt grows: bisect for the last prompt that fits */
    while (lo <= hi) {
        const uint64_t mid = lo + (hi - lo) / 2;
        const int ok = fits(c, n_kv, mid, appended_tokens, batch, memory_bytes, &st);
        if (ok < 0) break;
        if (ok) { best = mid; lo = mid + 1; }
        else { if (mid == 0) break; hi = mid - 1; }
    }
    sparkv_cache_free(c);
    if (st != SPARKV_OK) return st;
    *out_tokens = best;
    return SPARKV_OK;
}

sparkv_status sparkv_plan_max_batch(const sparkv_shape *shape, const sparkv_policy *policy, uint64_t memory_bytes,
                                    uint64_t prompt_tokens, uint64_t appended_tokens, uint64_t *out_batch) {
    if (!out_batch) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "plan_max_batch: out_batch is NULL");
    sparkv_cache *c = NULL;
    sparkv_status st = open_plan(shape, policy, &c);
    if (st != SPARKV_OK) return st;
    u128 f[8];
    st = plan(c, shape->n_kv_heads, prompt_tokens, appended_tokens, f);
    sparkv_cache_free(c);
    if (st != SPARKV_OK) return st;
    *out_batch = f[6] == 0 ? UINT64_MAX : (uint64_t)((u128)memory_bytes / f[6]);
    return SPARKV_OK;
}
