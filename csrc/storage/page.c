/* Pages: one allocation holds every array of up to SPARKV_PAGE_TOKENS tokens of one KV head.
 * The allocation is a heap block, or a slice of a prefill call's arena (prefill_arena.h); a
 * 64-byte header before page->base says which. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "internal.h"
#include "prefill_arena.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__)
#include <sys/mman.h>
#endif

#define HEADER 64u

struct sv_page_arena {
    void *map;             /* the mapping: this struct, then the pages */
    size_t map_bytes, bytes;
    _Atomic size_t used;   /* bytes handed out after the struct */
    _Atomic uint64_t refs; /* pages alive + the builder's */
};

typedef struct {
    void *block;           /* heap block to free, or NULL */
    sv_page_arena *arena;  /* arena to release, or NULL */
} block_header;

static size_t align64(size_t x) { return (x + 63u) & ~(size_t)63u; }

/* Carves 64-byte aligned arrays out of one zeroed allocation; the last SPARKV_PAD_BYTES stay
 * zero so SIMD kernels may load whole vectors past the end of any array. */
typedef struct { size_t off; } layout;
static size_t take(layout *l, size_t bytes) { size_t at = l->off; l->off += align64(bytes); return at; }

sv_page_arena *sv_arena_new(size_t bytes) {
#if defined(__unix__) && defined(MAP_ANONYMOUS)
    const size_t huge = (size_t)2 << 20;
    const size_t want = align64(sizeof(sv_page_arena)) + bytes;
    /* huge pages need 2 MiB-aligned ranges: map one more, then unmap the unaligned ends */
    const size_t map_bytes = (want + huge - 1) / huge * huge;
    uint8_t *raw = (uint8_t *)mmap(NULL, map_bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == (uint8_t *)MAP_FAILED) return NULL;
    uint8_t *map = (uint8_t *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
    if (map > raw) munmap(raw, (size_t)(map - raw));
    uint8_t *end = map + map_bytes, *raw_end = raw + map_bytes + huge;
    if (end < raw_end) munmap(end, (size_t)(raw_end - end));
#ifdef MADV_HUGEPAGE
    /* advice only. A fresh mapping is zeroed by the kernel either way; with 4 KiB pages the faults
     * themselves cost more (one 32K-token layer of 8 heads: 97 ms with 4 KiB pages, 68 ms with
     * huge pages, on the development machine) */
    madvise(map, map_bytes, MADV_HUGEPAGE);
#endif
    sv_page_arena *a = (sv_page_arena *)map;
    a->map = map;
    a->map_bytes = map_bytes;
    a->bytes = map_bytes - align64(sizeof(sv_page_arena));
    atomic_init(&a->used, 0);
    atomic_init(&a->refs, 1);
    return a;
#else
    (void)bytes;
    return NULL;
#endif
}

void sv_arena_release(sv_page_arena *a) {
#if defined(__unix__) && defined(MAP_ANONYMOUS)
    if (a && atomic_fetch_sub(&a->refs, 1) == 1) munmap(a->map, a->map_bytes);
#else
    (void)a;
#endif
}

/* A block of `bytes` (header excluded) whose memory is zero: from the arena if it has room (a
 * fresh mapping is zero), else from the heap. */
static void *block_alloc(size_t bytes, sv_page_arena *arena) {
    if (arena) {
        const size_t at = atomic_fetch_add(&arena->used, HEADER + bytes);
        if (at + HEADER + bytes <= arena->bytes) {
            uint8_t *mem = (uint8_t *)arena->map + align64(sizeof(sv_page_arena)) + at;
            atomic_fetch_add(&arena->refs, 1);
            block_header h = {NULL, arena};
            memcpy(mem, &h, sizeof h);
            return mem + HEADER;
        }
    }
    uint8_t *mem = (uint8_t *)aligned_alloc(64, HEADER + bytes); /* a multiple of 64, as aligned_alloc requires */
    if (!mem) return NULL;
    memset(mem + HEADER, 0, bytes);
    block_header h = {mem, NULL};
    memcpy(mem, &h, sizeof h);
    return mem + HEADER;
}

static void block_free(void *base) {
    if (!base) return;
    block_header h;
    memcpy(&h, (uint8_t *)base - HEADER, sizeof h);
    if (h.arena) sv_arena_release(h.arena);
    else free(h.block);
}

static sv_page *page_alloc(size_t bytes, sv_page_arena *arena) {
    sv_page *page = (sv_page *)calloc(1, sizeof(sv_page));
    if (!page) return NULL;
    bytes = align64(bytes + SPARKV_PAD_BYTES);
    void *mem = block_alloc(bytes, arena);
    if (!mem) { free(page); return NULL; }
    page->base = mem;
    page->alloc_bytes = bytes;
    return page;
}

/* A dense page, or (allocate 0) only its size in *bytes. */
static sv_page *new_dense(const sparkv_cache *cache, sv_page_arena *arena, int allocate, size_t *bytes) {
    const uint32_t d = cache->shape.head_dim, cap = SPARKV_PAGE_TOKENS;
    layout l = {0};
    size_t k = take(&l, (size_t)cap * sv_row_bytes(cache->policy.key_precision, d));
    size_t ks = take(&l, (size_t)cap * cache->kgroups * sizeof(uint16_t));
    size_t v = take(&l, (size_t)cap * sv_row_bytes(cache->policy.value_precision, d));
    size_t vs = take(&l, (size_t)cap * cache->vgroups * sizeof(uint16_t));
    if (!allocate) {
        *bytes = HEADER + align64(l.off + SPARKV_PAD_BYTES);
        return NULL;
    }
    sv_page *page = page_alloc(l.off, arena);
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

sv_page *sv_page_new_dense(const sparkv_cache *cache) { return new_dense(cache, NULL, 1, NULL); }

/* The layout of a prompt page; *bytes receives its size. Dense prompt pages are dense pages
 * (appends may fill them up). Returns NULL when allocate is 0. */
static sv_page *new_prompt(const sparkv_cache *cache, uint32_t n, uint64_t kept_bytes, sv_page_arena *arena,
                           int allocate, size_t *bytes);

sv_page *sv_page_new_prompt(const sparkv_cache *cache, uint32_t n, uint64_t kept_bytes) {
    return new_prompt(cache, n, kept_bytes, NULL, 1, NULL);
}

sv_page *sv_page_new_prompt_in(const sparkv_cache *cache, uint32_t n, uint64_t kept_bytes, sv_page_arena *arena) {
    return new_prompt(cache, n, kept_bytes, arena, 1, NULL);
}

size_t sv_page_prompt_bytes(const sparkv_cache *cache, uint32_t n, uint64_t kept_bytes) {
    size_t bytes = 0;
    new_prompt(cache, n, kept_bytes, NULL, 0, &bytes);
    return bytes;
}

size_t sv_page_alloc_bytes(const sparkv_cache *cache, int prompt, uint32_t n, uint64_t kept_bytes) {
    size_t bytes = 0;
    if (prompt) new_prompt(cache, n, kept_bytes, NULL, 0, &bytes);
    else new_dense(cache, NULL, 0, &bytes);
    return bytes - HEADER;
}

static sv_page *new_prompt(const sparkv_cache *cache, uint32_t n, uint64_t kept_bytes, sv_page_arena *arena,
                           int allocate, size_t *bytes) {
    if (cache->prompt_keys == SV_KEYS_DENSE && cache->keep_values == cache->shape.head_dim)
        return new_dense(cache, arena, allocate, bytes);
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
    if (!allocate) {
        *bytes = HEADER + align64(l.off + SPARKV_PAD_BYTES);
        return NULL;
    }
    sv_page *page = page_alloc(l.off, arena);
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
    free(page->qn);
    block_free(page->base);
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

/* Byte accounting of stored tokens (the memory report's formulas, sparkv.h): next to the layout it
 * counts, so a layout change and its accounting change together. */
void sv_account_page(const sparkv_cache *c, sv_key_mode keys, int values_pruned, int signs, uint64_t n,
                     uint64_t kept_bytes, sparkv_memory *m) {
    const uint32_t d = c->shape.head_dim;
    const sparkv_precision kp = c->policy.key_precision, vp = c->policy.value_precision;
    const uint64_t kscale = sv_is_quantized(kp) ? sizeof(uint16_t) : 0; /* bytes per fp16 scale, 0 if none */
    const uint64_t vscale = sv_is_quantized(vp) ? sizeof(uint16_t) : 0;
    switch (keys) {
    case SV_KEYS_SPARK:
        m->key_bytes += kept_bytes;
        m->key_meta_bytes += n * ((d / 8) * (signs ? 2u : 1u) + c->n_stats * 2u + kscale);
        break;
    case SV_KEYS_THINK:
        m->key_bytes += n * sv_row_bytes(kp, c->keep_topk);
        m->key_meta_bytes += n * kscale;
        break;
    default:
        m->key_bytes += n * sv_row_bytes(kp, d);
        m->key_meta_bytes += n * c->kgroups * kscale;
        break;
    }
    if (values_pruned) {
        m->value_bytes += n * sv_row_bytes(vp, c->keep_values);
        m->value_meta_bytes += n * (d / 8 + sizeof(uint16_t) + vscale);
    } else {
        m->value_bytes += n * sv_row_bytes(vp, d);
        m->value_meta_bytes += n * c->vgroups * vscale;
    }
}

uint64_t sv_head_meta_bytes(const sparkv_cache *c, sv_key_mode prompt_keys) {
    const uint32_t d = c->shape.head_dim;
    if (prompt_keys == SV_KEYS_SPARK) return (uint64_t)d * sizeof(float) + sizeof(float);
    if (prompt_keys == SV_KEYS_THINK) return d / 8;
    return 0;
}
