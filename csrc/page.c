/* Pages: one allocation holds every array of up to SPARKV_PAGE_TOKENS tokens of one KV head. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static size_t align64(size_t x) { return (x + 63u) & ~(size_t)63u; }

/* Carves 64-byte aligned arrays out of one zeroed allocation; the last SPARKV_PAD_BYTES stay
 * zero so SIMD kernels may load whole vectors past the end of any array. */
typedef struct { size_t off; } layout;
static size_t take(layout *l, size_t bytes) { size_t at = l->off; l->off += align64(bytes); return at; }

static sv_page *page_alloc(size_t bytes) {
    sv_page *page = (sv_page *)calloc(1, sizeof(sv_page));
    if (!page) return NULL;
    bytes = align64(bytes + SPARKV_PAD_BYTES);
    void *mem = aligned_alloc(64, bytes); /* size is a multiple of 64, as aligned_alloc requires */
    if (!mem) { free(page); return NULL; }
    memset(mem, 0, bytes);
    page->base = mem;
    page->alloc_bytes = bytes;
    return page;
}

sv_page *sv_page_new_dense(const sparkv_cache *cache) {
    const uint32_t d = cache->shape.head_dim, cap = SPARKV_PAGE_TOKENS;
    layout l = {0};
    size_t k = take(&l, (size_t)cap * sv_row_bytes(cache->policy.key_precision, d));
    size_t ks = take(&l, (size_t)cap * cache->kgroups * sizeof(uint16_t));
    size_t v = take(&l, (size_t)cap * sv_row_bytes(cache->policy.value_precision, d));
    size_t vs = take(&l, (size_t)cap * cache->vgroups * sizeof(uint16_t));
    sv_page *page = page_alloc(l.off);
    if (!page) return NULL;
    uint8_t *b = (uint8_t *)page->base;
    page->cap = cap;
    page->keys = SV_KEYS_DENSE;
    page->k = b + k;
    page->v = b + v;
    if (cache->kgroups) page->kscale = (uint16_t *)(b + ks);
    if (cache->vgroups) page->vscale = (uint16_t *)(b + vs);
    return page;
}

sv_page *sv_page_new_prompt(const sparkv_cache *cache, uint32_t n, uint64_t kept_bytes) {
    if (cache->prompt_keys == SV_KEYS_DENSE && cache->keep_values == cache->shape.head_dim) {
        sv_page *page = sv_page_new_dense(cache);
        return page;
    }
    const uint32_t d = cache->shape.head_dim;
    const sparkv_precision kp = cache->policy.key_precision, vp = cache->policy.value_precision;
    const int spark = cache->prompt_keys == SV_KEYS_SPARK;
    const int vpruned = cache->keep_values < d;
    /* fp16 scales per token: one over the kept values of a SparK/ThinK key or of a value-pruned
     * value, one per quant_group channels of a whole row */
    const uint32_t kscales = !sv_is_quantized(kp) ? 0 : cache->prompt_keys == SV_KEYS_DENSE ? cache->kgroups : 1;
    const uint32_t vscales = !sv_is_quantized(vp) ? 0 : vpruned ? 1 : cache->vgroups;
    layout l = {0};
    size_t k, ks, mask = 0, sign = 0, stats = 0, v, vs, vmask = 0, vfill = 0;
    if (spark) k = take(&l, (size_t)kept_bytes);
    else if (cache->prompt_keys == SV_KEYS_THINK) k = take(&l, (size_t)n * sv_row_bytes(kp, cache->keep_topk));
    else k = take(&l, (size_t)n * sv_row_bytes(kp, d));
    ks = take(&l, (size_t)n * kscales * sizeof(uint16_t));
    if (spark) {
        mask = take(&l, (size_t)n * (d / 8));
        if (cache->policy.sign_bits) sign = take(&l, (size_t)n * (d / 8));
        if (cache->n_stats) stats = take(&l, (size_t)n * cache->n_stats * sizeof(uint16_t));
    }
    v = take(&l, (size_t)n * sv_row_bytes(vp, cache->keep_values));
    vs = take(&l, (size_t)n * vscales * sizeof(uint16_t));
    if (vpruned) {
        vmask = take(&l, (size_t)n * (d / 8));
        vfill = take(&l, (size_t)n * sizeof(uint16_t));
    }
    sv_page *page = page_alloc(l.off);
    if (!page) return NULL;
    uint8_t *b = (uint8_t *)page->base;
    page->cap = n;
    page->keys = cache->prompt_keys;
    page->values_pruned = vpruned;
    page->kept_bytes = spark ? kept_bytes : 0;
    page->k = b + k;
    if (kscales) page->kscale = (uint16_t *)(b + ks);
    if (spark) {
        page->mask = b + mask;
        page->sign = cache->policy.sign_bits ? b + sign : NULL;
        page->stats = cache->n_stats ? (uint16_t *)(b + stats) : NULL;
    }
    page->v = b + v;
    if (vscales) page->vscale = (uint16_t *)(b + vs);
    if (vpruned) {
        page->vmask = b + vmask;
        page->vfill = (uint16_t *)(b + vfill);
    }
    return page;
}

void sv_page_free(sv_page *page) {
    if (!page) return;
    free(page->base);
    free(page);
}

uint64_t sv_page_kept_offset(const sv_page *page, uint32_t d, sparkv_precision kp, uint32_t token) {
    uint64_t off = 0;
    for (uint32_t t = 0; t < token; t++) {
        const uint8_t *m = page->mask + (size_t)t * (d / 8);
        uint32_t kept = 0;
        for (uint32_t i = 0; i < d / 8; i++) kept += (uint32_t)__builtin_popcount(m[i]);
        off += sv_row_bytes(kp, kept);
    }
    return off;
}
