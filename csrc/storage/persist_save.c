/* Saving a cache (or a range of its layers) in the format of persist_format.h: to a file, to a
 * caller's buffer, or only its size. One writer walks the cache for all three. */
#define _POSIX_C_SOURCE 200809L /* getpid */
#include "persist_format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Where the bytes go: a FILE, a buffer, or nowhere (counting). */
typedef struct {
    FILE *file;
    uint8_t *buf;
    uint64_t cap;    /* buffer bytes */
    uint64_t off;    /* bytes written (or counted) so far */
    uint32_t crc;    /* of the current section */
    int failed;      /* a write failed or the buffer is too small */
} sink;

static void put(sink *s, const void *data, size_t n) {
    if (s->failed || n == 0) return;
    if (s->file) {
        if (fwrite(data, 1, n, s->file) != n) s->failed = 1;
    } else if (s->buf) {
        if (n > s->cap - s->off) { s->failed = 1; return; }
        memcpy(s->buf + s->off, data, n);
    }
    if (s->file || s->buf) s->crc = sv_crc32c_update(s->crc, data, n);
    s->off += n;
}
static void put_u32(sink *s, uint32_t x) { put(s, &x, 4); }
static void put_u64(sink *s, uint64_t x) { put(s, &x, 8); }
static void put_f32(sink *s, float x) { put(s, &x, 4); }

static void section_begin(sink *s, uint32_t tag, uint64_t payload) {
    s->crc = 0;
    put_u32(s, tag);
    put_u32(s, 0);
    put_u64(s, payload);
}
static void section_end(sink *s) {
    const uint32_t crc = s->crc;
    put_u32(s, crc);
    put_u32(s, 0);
}

static void put_policy(sink *s, const sparkv_policy *p) {
    put_f32(s, p->key_prune_ratio);
    put_u32(s, (uint32_t)p->selection);
    put_f32(s, p->cumulative_p);
    put_u32(s, p->cumulative_min_keep);
    put_u32(s, p->cumulative_max_keep);
    put_u32(s, (uint32_t)p->recovery);
    put_u32(s, (uint32_t)p->sign_bits);
    put_u32(s, (uint32_t)p->key_precision);
    put_u32(s, (uint32_t)p->value_precision);
    put_u32(s, p->window);
    put_u64(s, p->seed);
    put_u32(s, (uint32_t)p->threads);
    put_f32(s, p->attention_scale);
    put_u32(s, (uint32_t)p->eviction);
    put_u32(s, p->evict_budget);
    put_u32(s, p->pool_kernel);
    put_f32(s, p->pyramid_ratio);
    put_u32(s, p->sink_tokens);
    put_u32(s, p->recent_tokens);
    put_u32(s, (uint32_t)p->key_pruning);
    put_f32(s, p->value_prune_ratio);
    put_u32(s, p->quant_group);
    put_u32(s, (uint32_t)p->compress_decode);
    put_u32(s, p->decode_recent);
}

static uint64_t kv_head_payload(const sparkv_cache *c, const sv_layer *L) {
    return SV_KV_HEAD_FIXED_BYTES + (L->prefilled ? sv_head_meta_bytes(c, L->prompt_keys) : 0);
}

static void put_page(sink *s, const sparkv_cache *c, const sv_page *p) {
    sv_page_array arr[SV_MAX_PAGE_ARRAYS];
    uint64_t bytes;
    const uint32_t count = sv_page_arrays(c, p, arr, &bytes);
    const uint64_t own_norms = p->qn ? (uint64_t)(c->shape.head_dim + 1) * sizeof(float) : 0;
    section_begin(s, SV_SECTION_PAGE, SV_PAGE_FIXED_BYTES + bytes + own_norms);
    put_u64(s, p->first);
    put_u32(s, p->n);
    put_u32(s, p->cap);
    put_u32(s, (uint32_t)p->keys);
    put_u32(s, (uint32_t)p->values_pruned);
    put_u64(s, p->kept_bytes);
    put_u32(s, p->qn != NULL);
    put_u32(s, 0);
    for (uint32_t a = 0; a < count; a++)
        for (uint32_t r = 0; r < arr[a].rows; r++) put(s, arr[a].ptr + r * arr[a].stride, (size_t)arr[a].bytes);
    put(s, p->qn, (size_t)own_norms);
    section_end(s);
}

static void put_layer(sink *s, const sparkv_cache *c, uint32_t l) {
    const sv_layer *L = &c->layers[l];
    const uint32_t d = c->shape.head_dim;
    const uint64_t ring = L->qring && L->qring_n ? sv_qring_bytes(c) : 0;
    section_begin(s, SV_SECTION_LAYER, SV_LAYER_PAYLOAD_BYTES + ring);
    put_u32(s, l);
    put_u32(s, (uint32_t)L->prefilled);
    put_u32(s, (uint32_t)L->prompt_keys);
    put_u32(s, 0);
    put_u64(s, L->n_tokens);
    put_u64(s, L->n_prompt);
    put_u64(s, L->n_seen);
    put_u64(s, L->heads[0].n_pages);
    put_u32(s, ring ? L->qring_n : 0);
    put_u32(s, ring ? L->qring_next : 0);
    put_u64(s, L->next_age);
    put_u64(s, L->n_aged);
    put(s, L->qring, (size_t)ring);
    section_end(s);
    for (uint32_t h = 0; h < c->shape.n_kv_heads; h++) {
        const sv_head *hs = &L->heads[h];
        section_begin(s, SV_SECTION_KV_HEAD, kv_head_payload(c, L));
        put_u32(s, h);
        put_u32(s, 0);
        if (L->prefilled && L->prompt_keys == SV_KEYS_SPARK) {
            put(s, hs->qn, sizeof(float) * d);
            put_f32(s, hs->c);
        } else if (L->prefilled && L->prompt_keys == SV_KEYS_THINK) {
            put(s, hs->think_mask, d / 8);
        }
        section_end(s);
        for (uint64_t i = 0; i < hs->n_pages; i++) put_page(s, c, hs->pages[i]);
    }
}

/* The whole file; `total` is the file's size (from a counting pass) written into the header. */
static void put_file(sink *s, const sparkv_cache *c, uint32_t first, uint32_t count, uint64_t total) {
    put(s, SV_FILE_MAGIC, 8);
    put_u32(s, SV_FILE_VERSION);
    put_u32(s, SV_FILE_BYTE_ORDER);
    section_begin(s, SV_SECTION_HEAD, SV_HEAD_PAYLOAD_BYTES);
    put_u32(s, SPARKV_VERSION_NUMBER);
    put_u32(s, SPARKV_PAGE_TOKENS);
    put_u64(s, total);
    put_u32(s, c->shape.n_layers);
    put_u32(s, c->shape.n_q_heads);
    put_u32(s, c->shape.n_kv_heads);
    put_u32(s, c->shape.head_dim);
    put_u64(s, c->shape.capacity);
    put_u32(s, first);
    put_u32(s, count);
    put_policy(s, &c->policy);
    section_end(s);
    for (uint32_t l = first; l < first + count; l++) put_layer(s, c, l);
    section_begin(s, SV_SECTION_END, 0);
    section_end(s);
}

/* Checks the handle and range; *count gets the number of layers (SPARKV_ALL_LAYERS: through the last). */
static sparkv_status check_range(const sparkv_cache *cache, const char *what, uint32_t first, uint32_t *count) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "%s: cache is NULL", what);
    sparkv_cache *mc = (sparkv_cache *)cache; /* only the error text is written */
    sv_clear_error(mc);
    const uint32_t nl = cache->shape.n_layers;
    if (first >= nl)
        return sv_fail(mc, SPARKV_ERR_LAYER, "%s: first_layer %u is out of range (n_layers = %u)", what, first, nl);
    if (*count == SPARKV_ALL_LAYERS) *count = nl - first;
    if (*count == 0 || *count > nl - first)
        return sv_fail(mc, SPARKV_ERR_LAYER, "%s: layers [%u, %u + %u) are not a non-empty range of the %u layers",
                       what, first, first, *count, nl);
    return SPARKV_OK;
}

static uint64_t file_bytes(const sparkv_cache *cache, uint32_t first, uint32_t count) {
    sink counter = {0};
    put_file(&counter, cache, first, count, 0);
    return counter.off;
}

sparkv_status sparkv_cache_save_size(const sparkv_cache *cache, uint32_t first_layer, uint32_t n_layers,
                                     uint64_t *out_bytes) {
    sparkv_status st = check_range(cache, "cache_save_size", first_layer, &n_layers);
    if (st != SPARKV_OK) return st;
    if (!out_bytes)
        return sv_fail((sparkv_cache *)cache, SPARKV_ERR_NULL_POINTER, "cache_save_size: out_bytes is NULL");
    *out_bytes = file_bytes(cache, first_layer, n_layers);
    return SPARKV_OK;
}

sparkv_status sparkv_cache_save_buffer(const sparkv_cache *cache, uint32_t first_layer, uint32_t n_layers,
                                       void *buffer, size_t buffer_bytes, size_t *out_written) {
    sparkv_status st = check_range(cache, "cache_save_buffer", first_layer, &n_layers);
    if (st != SPARKV_OK) return st;
    sparkv_cache *mc = (sparkv_cache *)cache;
    if (!buffer || !out_written)
        return sv_fail(mc, SPARKV_ERR_NULL_POINTER, "cache_save_buffer: %s is NULL", !buffer ? "buffer" : "out_written");
    const uint64_t total = file_bytes(cache, first_layer, n_layers);
    if (total > buffer_bytes)
        return sv_fail(mc, SPARKV_ERR_CAPACITY, "cache_save_buffer: the file takes %llu bytes, the buffer holds %zu",
                       (unsigned long long)total, buffer_bytes);
    sink s = {NULL, (uint8_t *)buffer, buffer_bytes, 0, 0, 0};
    put_file(&s, cache, first_layer, n_layers, total);
    *out_written = (size_t)s.off;
    return SPARKV_OK;
}

sparkv_status sparkv_cache_save(const sparkv_cache *cache, uint32_t first_layer, uint32_t n_layers, const char *path) {
    sparkv_status st = check_range(cache, "cache_save", first_layer, &n_layers);
    if (st != SPARKV_OK) return st;
    sparkv_cache *mc = (sparkv_cache *)cache;
    if (!path) return sv_fail(mc, SPARKV_ERR_NULL_POINTER, "cache_save: path is NULL");
    /* Written beside the target and renamed over it: a reader never sees a half-written file, and a
     * failed save leaves an existing file as it was. */
    const size_t len = strlen(path);
    char *tmp = (char *)malloc(len + 32);
    if (!tmp) return sv_fail(mc, SPARKV_ERR_OUT_OF_MEMORY, "cache_save: out of memory");
    snprintf(tmp, len + 32, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(tmp);
        return sv_fail(mc, SPARKV_ERR_IO, "cache_save: cannot create a file beside '%s'", path);
    }
    const uint64_t total = file_bytes(cache, first_layer, n_layers);
    sink s = {f, NULL, 0, 0, 0, 0};
    put_file(&s, cache, first_layer, n_layers, total);
    const int closed = fclose(f) == 0;
    if (s.failed || !closed || s.off != total || rename(tmp, path) != 0) {
        remove(tmp);
        free(tmp);
        return sv_fail(mc, SPARKV_ERR_IO, "cache_save: writing '%s' failed (disk full or not writable?)", path);
    }
    free(tmp);
    return SPARKV_OK;
}
