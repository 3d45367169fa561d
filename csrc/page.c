/* Pages: one allocation holds every array of up to SPARKV_PAGE_TOKENS tokens of one KV head. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static size_t align64(size_t x) { return (x + 63u) & ~(size_t)63u; }

static sv_page *page_alloc(size_t bytes) {
    sv_page *page = (sv_page *)calloc(1, sizeof(sv_page));
    if (!page) return NULL;
    /* Callers pass multiples of 64, as aligned_alloc requires. */
    void *mem = aligned_alloc(64, bytes);
    if (!mem) { free(page); return NULL; }
    memset(mem, 0, bytes);
    page->alloc_bytes = bytes;
    page->k = mem; /* the base of the allocation; the other arrays follow it */
    return page;
}

sv_page *sv_page_new_dense(const sparkv_cache *cache) {
    const uint32_t d = cache->shape.head_dim, cap = SPARKV_PAGE_TOKENS;
    size_t kb = align64((size_t)cap * d * sv_precision_bytes(cache->policy.key_precision));
    size_t vb = align64((size_t)cap * d * sv_precision_bytes(cache->policy.value_precision));
    sv_page *page = page_alloc(kb + vb + SPARKV_PAD_BYTES);
    if (!page) return NULL;
    page->cap = cap;
    page->compressed = 0;
    page->v = (uint8_t *)page->k + kb;
    return page;
}

sv_page *sv_page_new_compressed(const sparkv_cache *cache, uint32_t n, uint64_t kept_elems) {
    const uint32_t d = cache->shape.head_dim;
    size_t kb = align64((size_t)kept_elems * sv_precision_bytes(cache->policy.key_precision) + SPARKV_PAD_BYTES);
    size_t mb = align64((size_t)n * (d / 8));
    size_t sb = cache->policy.sign_bits ? mb : 0;
    size_t tb = align64((size_t)n * cache->n_stats * sizeof(uint16_t));
    size_t vb = align64((size_t)n * d * sv_precision_bytes(cache->policy.value_precision));
    sv_page *page = page_alloc(kb + mb + sb + tb + vb + SPARKV_PAD_BYTES);
    if (!page) return NULL;
    uint8_t *base = (uint8_t *)page->k;
    page->cap = n;
    page->compressed = 1;
    page->kept_elems = kept_elems;
    page->mask = base + kb;
    page->sign = sb ? base + kb + mb : NULL;
    page->stats = cache->n_stats ? (uint16_t *)(base + kb + mb + sb) : NULL;
    page->v = base + kb + mb + sb + tb;
    return page;
}

void sv_page_free(sv_page *page) {
    if (!page) return;
    free(page->k);
    free(page);
}

static uint32_t popcount8(uint8_t b) { return (uint32_t)__builtin_popcount(b); }

uint64_t sv_page_kept_offset(const sv_page *page, uint32_t d, uint32_t token) {
    uint64_t off = 0;
    const uint8_t *m = page->mask;
    for (uint64_t i = 0; i < (uint64_t)token * (d / 8); i++) off += popcount8(m[i]);
    return off;
}
