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
    size_t k = take(&l, (size_t)cap * d * sv_precision_bytes(cache->policy.key_precision));
    size_t v = take(&l, (size_t)cap * d * sv_precision_bytes(cache->policy.value_precision));
    sv_page *page = page_alloc(l.off);
    if (!page) return NULL;
    uint8_t *b = (uint8_t *)page->base;
    page->cap = cap;
    page->keys = SV_KEYS_DENSE;
    page->k = b + k;
    page->v = b + v;
    return page;
}

sv_page *sv_page_new_prompt(const sparkv_cache *cache, uint32_t n, uint64_t kept_elems) {
    if (cache->prompt_keys == SV_KEYS_DENSE && cache->keep_values == cache->shape.head_dim) {
        sv_page *page = sv_page_new_dense(cache);
        return page;
    }
    const uint32_t d = cache->shape.head_dim;
    const size_t kb = sv_precision_bytes(cache->policy.key_precision);
    const size_t vb = sv_precision_bytes(cache->policy.value_precision);
    const int spark = cache->prompt_keys == SV_KEYS_SPARK;
    const int vpruned = cache->keep_values < d;
    layout l = {0};
    size_t k, mask = 0, sign = 0, stats = 0, v, vmask = 0, vfill = 0;
    if (spark) k = take(&l, (size_t)kept_elems * kb);
    else if (cache->prompt_keys == SV_KEYS_THINK) k = take(&l, (size_t)n * cache->keep_topk * kb);
    else k = take(&l, (size_t)n * d * kb);
    if (spark) {
        mask = take(&l, (size_t)n * (d / 8));
        if (cache->policy.sign_bits) sign = take(&l, (size_t)n * (d / 8));
        if (cache->n_stats) stats = take(&l, (size_t)n * cache->n_stats * sizeof(uint16_t));
    }
    v = take(&l, (size_t)n * cache->keep_values * vb);
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
    page->kept_elems = spark ? kept_elems : 0;
    page->k = b + k;
    if (spark) {
        page->mask = b + mask;
        page->sign = cache->policy.sign_bits ? b + sign : NULL;
        page->stats = cache->n_stats ? (uint16_t *)(b + stats) : NULL;
    }
    page->v = b + v;
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

uint64_t sv_page_kept_offset(const sv_page *page, uint32_t d, uint32_t token) {
    uint64_t off = 0;
    const uint8_t *m = page->mask;
    for (uint64_t i = 0; i < (uint64_t)token * (d / 8); i++) off += (uint64_t)__builtin_popcount(m[i]);
    return off;
}
