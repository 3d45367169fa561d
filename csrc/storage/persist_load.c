/* Loading a saved cache (persist_format.h) from a file (memory-mapped read-only) or a buffer.
 *
 * The file is untrusted. Every read is bounds-checked against the bytes present; every size is
 * checked before anything is allocated for it, so allocations stay proportional to the file (a page
 * holds at most SPARKV_PAGE_TOKENS tokens and must bring its bytes); and every invariant the
 * attention kernels, append, inspection and the memory report rely on is checked before the cache
 * is returned: page boundaries shared by all heads, n <= cap, page kinds the policy can produce,
 * mask popcounts that match the policy and kept_bytes, sign bits only on pruned channels, finite
 * stored values, scales and statistics, in-grid quantized codes. A file that fails any check is
 * SPARKV_ERR_FORMAT (or SPARKV_ERR_INVALID_SHAPE / SPARKV_ERR_CAPACITY against an expected shape)
 * and nothing is returned.
 *
 * Fuzzing: building with -DSPARKV_FUZZ_SKIP_CHECKSUMS skips the CRC comparison (only there), so a
 * fuzzer's mutations reach the structural checks behind it instead of stopping at the checksum. */
#define _POSIX_C_SOURCE 200809L
#include "persist_format.h"
#include "half.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A bounds-checked reader over the file's bytes. */
typedef struct {
    const uint8_t *p;
    uint64_t len, off;
} reader;

static int take(reader *r, void *dst, uint64_t n) {
    if (n > r->len - r->off) return 0;
    if (dst) memcpy(dst, r->p + r->off, (size_t)n);
    r->off += n;
    return 1;
}
static uint32_t get_u32(reader *r) { uint32_t x = 0; take(r, &x, 4); return x; }
static uint64_t get_u64(reader *r) { uint64_t x = 0; take(r, &x, 8); return x; }
static float get_f32(reader *r) { float x = 0; take(r, &x, 4); return x; }

/* What the loader is building. */
typedef struct {
    reader file;
    sparkv_cache *cache;
    const char *where; /* "layer 3, KV head 1, page 2: " style prefix, built by the caller */
    char where_buf[96];
} loader;

#define FAIL(...) sv_fail(NULL, SPARKV_ERR_FORMAT, __VA_ARGS__)

static const char *tag_name(uint32_t tag, char out[8]) {
    for (int i = 0; i < 4; i++) {
        const char ch = (char)(tag >> (8 * i));
        out[i] = ch >= 32 && ch < 127 ? ch : '?';
    }
    out[4] = '\0';
    return out;
}

/* The next section, which must be `tag`; *payload reads its payload (checksum verified). */
static sparkv_status section(loader *ld, uint32_t tag, reader *payload) {
    reader *r = &ld->file;
    const uint64_t at = r->off;
    char want[8], got[8];
    if (r->len - r->off < SV_SECTION_FRAME_BYTES)
        return FAIL("%struncated: a %s section was expected at byte %llu, the file ends at byte %llu", ld->where,
                    tag_name(tag, want), (unsigned long long)at, (unsigned long long)r->len);
    const uint32_t t = get_u32(r), reserved = get_u32(r);
    const uint64_t n = get_u64(r);
    if (t != tag)
        return FAIL("%sbyte %llu: a %s section was expected, found '%s'", ld->where, (unsigned long long)at,
                    tag_name(tag, want), tag_name(t, got));
    if (reserved != 0) return FAIL("%sbyte %llu: reserved field is not 0", ld->where, (unsigned long long)at);
    if (n > r->len - r->off || r->len - r->off - n < 8)
        return FAIL("%struncated: the %s section at byte %llu declares %llu payload bytes, %llu remain", ld->where,
                    tag_name(tag, want), (unsigned long long)at, (unsigned long long)n,
                    (unsigned long long)(r->len - r->off));
    *payload = (reader){r->p + r->off, n, 0};
    const uint32_t computed = sv_crc32c_update(0, r->p + at, (size_t)(16 + n));
    r->off += n;
    const uint32_t stored = get_u32(r), reserved2 = get_u32(r);
#ifndef SPARKV_FUZZ_SKIP_CHECKSUMS
    if (stored != computed)
        return FAIL("%sthe %s section at byte %llu fails its checksum (stored 0x%08x, computed 0x%08x): the file is "
                    "corrupt", ld->where, tag_name(tag, want), (unsigned long long)at, stored, computed);
#else
    (void)stored; (void)computed;
#endif
    if (reserved2 != 0) return FAIL("%sbyte %llu: reserved field is not 0", ld->where, (unsigned long long)at);
    return SPARKV_OK;
}

/* ---- content checks: values as the kernels will read them ---------------------------------------- */

static int half_finite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }
/* fp16 scales and statistics are magnitudes: finite and not negative (+0 allowed). */
static int half_magnitude(uint16_t h) { return half_finite(h) && !(h & 0x8000u); }

/* n stored values in precision p at src (one row): finite floats, in-grid quantized codes, and an
 * odd I4 row's padding nibble 0x8. */
static int row_ok(const uint8_t *src, sparkv_precision p, uint32_t n) {
    switch (p) {
    case SPARKV_F32:
        for (uint32_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, src + 4 * (size_t)i, 4);
            if ((u & 0x7f800000u) == 0x7f800000u) return 0;
        }
        return 1;
    case SPARKV_F16:
        for (uint32_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * (size_t)i, 2);
            if (!half_finite(h)) return 0;
        }
        return 1;
    case SPARKV_BF16:
        for (uint32_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * (size_t)i, 2);
            if ((h & 0x7f80u) == 0x7f80u) return 0;
        }
        return 1;
    case SPARKV_I8:
        for (uint32_t i = 0; i < n; i++)
            if (src[i] == 0x80u) return 0; /* -128 is outside [-127, 127] */
        return 1;
    default: /* I4: nibbles q + 8 in 1..15 */
        for (uint32_t i = 0; i < n; i++) {
            const uint32_t nib = (src[i / 2] >> (4 * (i & 1))) & 15u;
            if (nib == 0) return 0;
        }
        if (n & 1) return (src[n / 2] >> 4) == 8u;
        return 1;
    }
}

static uint32_t popcount_row(const uint8_t *m, uint32_t nb) {
    uint32_t k = 0;
    for (uint32_t b = 0; b < nb; b++) k += (uint32_t)__builtin_popcount(m[b]);
    return k;
}

static int halves_ok(const uint8_t *p, uint64_t count, int magnitude) {
    for (uint64_t i = 0; i < count; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        if (magnitude ? !half_magnitude(h) : !half_finite(h)) return 0;
    }
    return 1;
}

/* The content of a freshly filled page. */
static sparkv_status check_page_content(loader *ld, const sv_page *p) {
    const sparkv_cache *c = ld->cache;
    const uint32_t d = c->shape.head_dim, nb = d / 8, n = p->n;
    const sparkv_precision kp = c->policy.key_precision, vp = c->policy.value_precision;
    if (p->kscale && !halves_ok((const uint8_t *)p->kscale,
                                (uint64_t)n * (p->keys == SV_KEYS_DENSE ? c->kgroups : 1u), 1))
        return FAIL("%sa key scale is negative, Inf or NaN", ld->where);
    if (p->keys == SV_KEYS_SPARK) {
        const uint32_t lo = c->policy.selection == SPARKV_SELECT_TOPK ? c->keep_topk : c->policy.cumulative_min_keep;
        const uint32_t hi = c->policy.selection == SPARKV_SELECT_TOPK ? c->keep_topk
                            : c->policy.cumulative_max_keep ? c->policy.cumulative_max_keep : d;
        uint64_t off = 0;
        for (uint32_t t = 0; t < n; t++) {
            const uint8_t *m = p->mask + (size_t)t * nb;
            const uint32_t kept = popcount_row(m, nb);
            if (kept < lo || kept > hi)
                return FAIL("%stoken %u keeps %u key channels; the policy keeps %u..%u", ld->where, t, kept, lo, hi);
            const uint64_t rb = sv_row_bytes(kp, kept);
            if (rb > p->kept_bytes - off)
                return FAIL("%sthe kept-channel masks need more than the page's kept_bytes (%llu)", ld->where,
                            (unsigned long long)p->kept_bytes);
            if (!row_ok((const uint8_t *)p->k + off, kp, kept))
                return FAIL("%stoken %u: a kept key value is Inf, NaN or outside its quantization grid", ld->where, t);
            off += rb;
            if (p->sign)
                for (uint32_t b = 0; b < nb; b++)
                    if (p->sign[(size_t)t * nb + b] & m[b])
                        return FAIL("%stoken %u: a sign bit is set on a kept channel", ld->where, t);
        }
        if (off != p->kept_bytes)
            return FAIL("%skept_bytes is %llu but the masks account for %llu", ld->where,
                        (unsigned long long)p->kept_bytes, (unsigned long long)off);
        if (p->stats && !halves_ok((const uint8_t *)p->stats, (uint64_t)n * c->n_stats, 1))
            return FAIL("%sa recovery statistic is negative, Inf or NaN", ld->where);
    } else {
        const uint32_t width = p->keys == SV_KEYS_THINK ? c->keep_topk : d;
        const size_t rb = sv_row_bytes(kp, width);
        for (uint32_t t = 0; t < n; t++)
            if (!row_ok((const uint8_t *)p->k + t * rb, kp, width))
                return FAIL("%stoken %u: a key value is Inf, NaN or outside its quantization grid", ld->where, t);
    }
    if (p->values_pruned) {
        const uint32_t tv = c->keep_values;
        const size_t rb = sv_row_bytes(vp, tv);
        for (uint32_t t = 0; t < n; t++) {
            const uint32_t kept = popcount_row(p->vmask + (size_t)t * nb, nb);
            if (kept != tv)
                return FAIL("%stoken %u keeps %u value channels; the policy keeps %u", ld->where, t, kept, tv);
            if (!row_ok((const uint8_t *)p->v + t * rb, vp, tv))
                return FAIL("%stoken %u: a kept value is Inf, NaN or outside its quantization grid", ld->where, t);
        }
        if (!halves_ok((const uint8_t *)p->vfill, n, 0)) return FAIL("%sa value fill is Inf or NaN", ld->where);
        if (p->vscale && !halves_ok((const uint8_t *)p->vscale, n, 1))
            return FAIL("%sa value scale is negative, Inf or NaN", ld->where);
    } else {
        const size_t rb = sv_row_bytes(vp, d);
        for (uint32_t t = 0; t < n; t++)
            if (!row_ok((const uint8_t *)p->v + t * rb, vp, d))
                return FAIL("%stoken %u: a value is Inf, NaN or outside its quantization grid", ld->where, t);
        for (uint32_t g = 0; p->vscale && g < c->vgroups; g++)
            if (!halves_ok((const uint8_t *)(p->vscale + (size_t)g * p->cap), n, 1))
                return FAIL("%sa value scale is negative, Inf or NaN", ld->where);
    }
    return SPARKV_OK;
}

/* ---- structure ----------------------------------------------------------------------------------- */

/* One page: its fields checked against the layer and (for heads after the first) head 0's page at
 * the same index, then allocated and filled. */
/* Whether decode tokens of the layer are re-encoded as they age (decode_age.c's rule). */
static int layer_ages(const sparkv_cache *c, const sv_layer *L) {
    return c->policy.compress_decode && L->prefilled &&
           (L->prompt_keys != SV_KEYS_DENSE || c->keep_values < c->shape.head_dim);
}

static int norms_ok(const float *qn, uint32_t d) {
    for (uint32_t j = 0; j < d; j++)
        if (!(qn[j] >= 0.0f && qn[j] <= 3.4028235e38f)) return 0;
    return qn[d] > 0.0f && qn[d] <= 3.4028235e38f;
}

static sparkv_status load_page(loader *ld, const sv_layer *L, uint64_t index, uint64_t expect_first,
                               int last, const sv_page *ref, sv_page **out) {
    const sparkv_cache *c = ld->cache;
    const uint32_t d = c->shape.head_dim;
    reader pl;
    sparkv_status st = section(ld, SV_SECTION_PAGE, &pl);
    if (st != SPARKV_OK) return st;
    if (pl.len < SV_PAGE_FIXED_BYTES) return FAIL("%sthe page record is %llu bytes", ld->where, (unsigned long long)pl.len);
    const uint64_t first = get_u64(&pl);
    const uint32_t n = get_u32(&pl), cap = get_u32(&pl), keys = get_u32(&pl), vpruned = get_u32(&pl);
    const uint64_t kept_bytes = get_u64(&pl);
    const uint32_t own_norms = get_u32(&pl), reserved = get_u32(&pl);
    if (own_norms > 1 || reserved != 0) return FAIL("%sown-norms flag %u, reserved %u", ld->where, own_norms, reserved);
    if (first != expect_first)
        return FAIL("%sthe page starts at token %llu, the previous pages end at %llu", ld->where,
                    (unsigned long long)first, (unsigned long long)expect_first);
    if (n == 0 || n > SPARKV_PAGE_TOKENS || n > cap)
        return FAIL("%sthe page holds %u tokens with room for %u (1..%u tokens, at most its room)", ld->where, n, cap,
                    SPARKV_PAGE_TOKENS);
    if (keys > SV_KEYS_THINK || vpruned > 1)
        return FAIL("%sunknown page kind (keys %u, values pruned %u)", ld->where, keys, vpruned);
    if (first + n > L->n_tokens)
        return FAIL("%sthe page ends at token %llu, beyond the layer's %llu tokens", ld->where,
                    (unsigned long long)(first + n), (unsigned long long)L->n_tokens);
    if (ref && (ref->n != n || ref->keys != (sv_key_mode)keys || ref->values_pruned != (int)vpruned ||
                (ref->qn != NULL) != (own_norms != 0)))
        return FAIL("%sthe page differs from KV head 0's page at the same index (heads share page boundaries)",
                    ld->where);
    const int dense = keys == SV_KEYS_DENSE && !vpruned;
    /* the kind prefill gives this cache's prompt pages (a dense kind is the append kind) */
    const int prompt_dense = c->prompt_keys == SV_KEYS_DENSE && c->keep_values == d;
    /* decode pages (after the prompt) up to next_age were full when considered for aging */
    const int decode_page = first >= L->n_prompt;
    if (decode_page && index < L->next_age && n != SPARKV_PAGE_TOKENS)
        return FAIL("%sa decode page before the next page to age holds %u tokens, not %u", ld->where, n,
                    SPARKV_PAGE_TOKENS);
    const int aged = !dense && decode_page;
    if (own_norms != (aged && keys == SV_KEYS_SPARK))
        return FAIL("%s%s", ld->where, own_norms ? "only an aged SparK page has norms of its own"
                                                 : "an aged SparK page lacks its own norms");
    if (dense) {
        if (cap != SPARKV_PAGE_TOKENS)
            return FAIL("%sa dense page has room for %u tokens, not %u", ld->where, cap, SPARKV_PAGE_TOKENS);
        if (kept_bytes != 0) return FAIL("%sa dense page declares kept_bytes %llu", ld->where, (unsigned long long)kept_bytes);
        if (first < L->n_prompt && !prompt_dense)
            return FAIL("%sa dense page holds prompt tokens, but this policy stores the prompt %s", ld->where,
                        c->prompt_keys == SV_KEYS_THINK   ? "with ThinK key pruning"
                        : c->prompt_keys == SV_KEYS_SPARK ? "with SparK key pruning"
                                                          : "with value pruning");
        if (!last && n != cap) return FAIL("%sa dense page that is not the last holds %u of %u tokens", ld->where, n, cap);
    } else {
        if (!L->prefilled || (sv_key_mode)keys != c->prompt_keys || (int)vpruned != (c->keep_values < d))
            return FAIL("%sa %s page with values %s is not a page this policy's prefill builds", ld->where,
                        keys == SV_KEYS_SPARK ? "SparK" : keys == SV_KEYS_THINK ? "ThinK" : "dense-key",
                        vpruned ? "pruned" : "whole");
        if (cap != n) return FAIL("%sa prompt page has room for %u tokens but holds %u", ld->where, cap, n);
        if (aged && (!layer_ages(c, L) || index >= L->next_age))
            return FAIL("%sa compressed page of decode tokens, but the layer %s", ld->where,
                        layer_ages(c, L) ? "has not aged this page yet" : "does not compress decode tokens");
        if (!aged && first + n > L->n_prompt)
            return FAIL("%sa prompt page ends at token %llu, beyond the %llu prompt tokens", ld->where,
                        (unsigned long long)(first + n), (unsigned long long)L->n_prompt);
        if (!aged && n != SPARKV_PAGE_TOKENS && first + n != L->n_prompt)
            return FAIL("%sa prompt page other than the last holds %u tokens, not %u", ld->where, n, SPARKV_PAGE_TOKENS);
        if (keys != SV_KEYS_SPARK && kept_bytes != 0)
            return FAIL("%sa page without SparK keys declares kept_bytes %llu", ld->where, (unsigned long long)kept_bytes);
        /* kept bytes come from the file: they must be there (the exact total is checked below) */
        if (keys == SV_KEYS_SPARK && kept_bytes > pl.len)
            return FAIL("%skept_bytes %llu exceeds the page record (%llu bytes)", ld->where,
                        (unsigned long long)kept_bytes, (unsigned long long)pl.len);
    }
    sv_page *page = dense ? sv_page_new_dense(c) : sv_page_new_prompt(c, n, kept_bytes);
    if (!page) return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "%sout of memory", ld->where);
    page->first = first;
    page->n = n;
    sv_page_array arr[SV_MAX_PAGE_ARRAYS];
    uint64_t bytes;
    const uint32_t count = sv_page_arrays(c, page, arr, &bytes);
    const uint64_t norm_bytes = own_norms ? (uint64_t)(d + 1) * sizeof(float) : 0;
    if (pl.len - SV_PAGE_FIXED_BYTES != bytes + norm_bytes) {
        sv_page_free(page);
        return FAIL("%sthe page record holds %llu array bytes, its %u tokens take %llu", ld->where,
                    (unsigned long long)(pl.len - SV_PAGE_FIXED_BYTES), n, (unsigned long long)(bytes + norm_bytes));
    }
    for (uint32_t a = 0; a < count; a++)
        for (uint32_t r = 0; r < arr[a].rows; r++) take(&pl, arr[a].ptr + r * arr[a].stride, arr[a].bytes);
    if (own_norms) {
        page->qn = (float *)malloc(sizeof(float) * (d + 1));
        if (!page->qn) { sv_page_free(page); return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "%sout of memory", ld->where); }
        take(&pl, page->qn, norm_bytes);
        if (!norms_ok(page->qn, d)) {
            sv_page_free(page);
            return FAIL("%sthe page's window query norms or c are negative, Inf or NaN", ld->where);
        }
    }
    st = check_page_content(ld, page);
    if (st != SPARKV_OK) { sv_page_free(page); return st; }
    *out = page;
    return SPARKV_OK;
}

static sparkv_status load_kv_head(loader *ld, const sv_layer *L, uint32_t h, sv_head *hs) {
    const sparkv_cache *c = ld->cache;
    const uint32_t d = c->shape.head_dim;
    reader pl;
    sparkv_status st = section(ld, SV_SECTION_KV_HEAD, &pl);
    if (st != SPARKV_OK) return st;
    const uint64_t meta = L->prefilled ? sv_head_meta_bytes(c, L->prompt_keys) : 0;
    if (pl.len != SV_KV_HEAD_FIXED_BYTES + meta)
        return FAIL("%sthe KV head record is %llu bytes, expected %llu", ld->where, (unsigned long long)pl.len,
                    (unsigned long long)(SV_KV_HEAD_FIXED_BYTES + meta));
    const uint32_t index = get_u32(&pl), reserved = get_u32(&pl);
    if (index != h || reserved != 0)
        return FAIL("%sthe KV head record is numbered %u, expected %u", ld->where, index, h);
    if (L->prefilled && L->prompt_keys == SV_KEYS_SPARK) {
        hs->qn = (float *)malloc(sizeof(float) * d);
        if (!hs->qn) return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "%sout of memory", ld->where);
        take(&pl, hs->qn, sizeof(float) * d);
        hs->c = get_f32(&pl);
        for (uint32_t j = 0; j < d; j++)
            if (!(hs->qn[j] >= 0.0f && hs->qn[j] <= 3.4028235e38f))
                return FAIL("%swindow query norm %u is negative, Inf or NaN", ld->where, j);
        if (!(hs->c > 0.0f && hs->c <= 3.4028235e38f))
            return FAIL("%sthe recovery scale c is not a positive finite number", ld->where);
    } else if (L->prefilled && L->prompt_keys == SV_KEYS_THINK) {
        take(&pl, hs->think_mask, d / 8);
        const uint32_t kept = popcount_row(hs->think_mask, d / 8);
        if (kept != c->keep_topk)
            return FAIL("%sthe ThinK channel mask keeps %u channels, the policy keeps %u", ld->where, kept, c->keep_topk);
    }
    return SPARKV_OK;
}

static sparkv_status load_layer(loader *ld, uint32_t expect_layer) {
    sparkv_cache *c = ld->cache;
    const uint32_t nkv = c->shape.n_kv_heads;
    snprintf(ld->where_buf, sizeof ld->where_buf, "layer %u: ", expect_layer);
    ld->where = ld->where_buf;
    reader pl;
    sparkv_status st = section(ld, SV_SECTION_LAYER, &pl);
    if (st != SPARKV_OK) return st;
    if (pl.len < SV_LAYER_PAYLOAD_BYTES)
        return FAIL("%sthe layer record is %llu bytes, at least %u expected", ld->where, (unsigned long long)pl.len,
                    SV_LAYER_PAYLOAD_BYTES);
    const uint32_t layer = get_u32(&pl), prefilled = get_u32(&pl), prompt_keys = get_u32(&pl), reserved = get_u32(&pl);
    const uint64_t n_tokens = get_u64(&pl), n_prompt = get_u64(&pl), n_seen = get_u64(&pl), n_pages = get_u64(&pl);
    const uint32_t qring_n = get_u32(&pl), qring_next = get_u32(&pl);
    const uint64_t next_age = get_u64(&pl), n_aged = get_u64(&pl);
    if (layer != expect_layer || reserved != 0)
        return FAIL("%sthe layer record is numbered %u", ld->where, layer);
    if (prefilled > 1) return FAIL("%sprefilled flag is %u", ld->where, prefilled);
    if (n_tokens > c->shape.capacity)
        return sv_fail(NULL, SPARKV_ERR_CAPACITY, "%sthe layer holds %llu tokens, the capacity is %llu", ld->where,
                       (unsigned long long)n_tokens, (unsigned long long)c->shape.capacity);
    if (prefilled) {
        if (prompt_keys != (uint32_t)c->prompt_keys)
            return FAIL("%sthe prompt key mode %u is not the one the policy gives (%u)", ld->where, prompt_keys,
                        (uint32_t)c->prompt_keys);
        if (n_prompt == 0 || n_prompt > n_tokens || n_seen < n_tokens || n_seen - (n_tokens - n_prompt) > (1ull << 40))
            return FAIL("%sinconsistent token counts: %llu stored, %llu from the prompt, %llu seen", ld->where,
                        (unsigned long long)n_tokens, (unsigned long long)n_prompt, (unsigned long long)n_seen);
        if (c->policy.eviction == SPARKV_EVICT_NONE && n_seen != n_tokens)
            return FAIL("%s%llu tokens seen but %llu stored, and the policy evicts none", ld->where,
                        (unsigned long long)n_seen, (unsigned long long)n_tokens);
    } else if (prompt_keys != SV_KEYS_DENSE || n_prompt != 0 || n_seen != n_tokens) {
        return FAIL("%sa layer without prefill has prompt tokens or mode %u (%llu stored, %llu seen)", ld->where,
                    prompt_keys, (unsigned long long)n_tokens, (unsigned long long)n_seen);
    }
    /* every page holds 1..SPARKV_PAGE_TOKENS tokens, and each brings at least its framing */
    const uint64_t min_pages = (n_tokens + SPARKV_PAGE_TOKENS - 1) / SPARKV_PAGE_TOKENS;
    if (n_pages < min_pages || n_pages > n_tokens)
        return FAIL("%s%llu pages per KV head cannot hold %llu tokens", ld->where, (unsigned long long)n_pages,
                    (unsigned long long)n_tokens);
    const uint64_t remaining = ld->file.len - ld->file.off;
    if (n_pages > remaining / (SV_SECTION_FRAME_BYTES + SV_PAGE_FIXED_BYTES) / nkv)
        return FAIL("%struncated: %llu pages per KV head declared, the %llu bytes left hold fewer", ld->where,
                    (unsigned long long)n_pages, (unsigned long long)remaining);
    sv_layer *L = &c->layers[expect_layer];
    L->n_tokens = n_tokens;
    L->n_prompt = n_prompt;
    L->n_seen = n_seen;
    L->prefilled = (int)prefilled;
    L->prompt_keys = (sv_key_mode)prompt_keys;
    /* decode-time compression: where aging stands, and the decode queries it will use */
    const uint64_t prompt_pages = (n_prompt + SPARKV_PAGE_TOKENS - 1) / SPARKV_PAGE_TOKENS;
    if (!prefilled ? next_age != 0 || n_aged != 0
                   : next_age < prompt_pages || next_age > n_pages || n_aged > next_age - prompt_pages ||
                         (!layer_ages(c, L) && (next_age != prompt_pages || n_aged != 0)))
        return FAIL("%saging state (next page %llu, %llu aged) does not fit %llu pages, %llu of the prompt", ld->where,
                    (unsigned long long)next_age, (unsigned long long)n_aged, (unsigned long long)n_pages,
                    (unsigned long long)prompt_pages);
    const uint32_t w = c->policy.window;
    const uint64_t ring = qring_n ? sv_qring_bytes(c) : 0;
    if (qring_n > w || (qring_n < w ? qring_next != qring_n % w : qring_next >= w) ||
        (qring_n && !sv_decode_wants_queries(c, expect_layer)))
        return FAIL("%sdecode-query ring of %u queries, next slot %u (window %u)%s", ld->where, qring_n, qring_next, w,
                    qring_n && !sv_decode_wants_queries(c, expect_layer) ? " in a layer that keeps none" : "");
    if (pl.len - SV_LAYER_PAYLOAD_BYTES != ring)
        return FAIL("%sthe layer record holds %llu ring bytes, %u queries take %llu", ld->where,
                    (unsigned long long)(pl.len - SV_LAYER_PAYLOAD_BYTES), qring_n, (unsigned long long)ring);
    L->next_age = next_age;
    L->n_aged = n_aged;
    if (ring) {
        L->qring = (double *)malloc((size_t)ring);
        if (!L->qring) return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "%sout of memory", ld->where);
        take(&pl, L->qring, ring);
        for (uint64_t i = 0; i < ring / sizeof(double); i++)
            if (!(L->qring[i] >= -1.79e308 && L->qring[i] <= 1.79e308))
                return FAIL("%sa decode query in the ring is Inf or NaN", ld->where);
        L->qring_n = qring_n;
        L->qring_next = qring_next;
    }
    for (uint32_t h = 0; h < nkv; h++) {
        sv_head *hs = &L->heads[h];
        snprintf(ld->where_buf, sizeof ld->where_buf, "layer %u, KV head %u: ", expect_layer, h);
        if ((st = load_kv_head(ld, L, h, hs)) != SPARKV_OK) return st;
        hs->pages = (sv_page **)calloc((size_t)(n_pages ? n_pages : 1), sizeof(sv_page *));
        if (!hs->pages) return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "%sout of memory", ld->where);
        hs->pages_cap = n_pages ? n_pages : 1;
        uint64_t next = 0;
        for (uint64_t i = 0; i < n_pages; i++) {
            snprintf(ld->where_buf, sizeof ld->where_buf, "layer %u, KV head %u, page %llu: ", expect_layer, h,
                     (unsigned long long)i);
            const sv_page *ref = h > 0 ? L->heads[0].pages[i] : NULL;
            if ((st = load_page(ld, L, i, next, i + 1 == n_pages, ref, &hs->pages[i])) != SPARKV_OK) return st;
            hs->n_pages = i + 1;
            next += hs->pages[i]->n;
        }
        if (next != n_tokens)
            return FAIL("%sthe pages hold %llu tokens, the layer %llu", ld->where, (unsigned long long)next,
                        (unsigned long long)n_tokens);
        uint64_t aged = 0;
        for (uint64_t i = 0; i < n_pages; i++) {
            const sv_page *p = hs->pages[i];
            aged += p->first >= n_prompt && !(p->keys == SV_KEYS_DENSE && !p->values_pruned);
        }
        if (aged != n_aged)
            return FAIL("%s%llu pages of decode tokens are compressed, the layer counts %llu", ld->where,
                        (unsigned long long)aged, (unsigned long long)n_aged);
    }
    return SPARKV_OK;
}

static void read_policy(reader *r, sparkv_policy *p) {
    *p = sparkv_default_policy();
    p->key_prune_ratio = get_f32(r);
    p->selection = (sparkv_selection)get_u32(r);
    p->cumulative_p = get_f32(r);
    p->cumulative_min_keep = get_u32(r);
    p->cumulative_max_keep = get_u32(r);
    p->recovery = (sparkv_recovery)get_u32(r);
    p->sign_bits = (int32_t)get_u32(r);
    p->key_precision = (sparkv_precision)get_u32(r);
    p->value_precision = (sparkv_precision)get_u32(r);
    p->window = get_u32(r);
    p->seed = get_u64(r);
    p->threads = (int32_t)get_u32(r);
    p->attention_scale = get_f32(r);
    p->eviction = (sparkv_eviction)get_u32(r);
    p->evict_budget = get_u32(r);
    p->pool_kernel = get_u32(r);
    p->pyramid_ratio = get_f32(r);
    p->sink_tokens = get_u32(r);
    p->recent_tokens = get_u32(r);
    p->key_pruning = (sparkv_key_pruning)get_u32(r);
    p->value_prune_ratio = get_f32(r);
    p->quant_group = get_u32(r);
    p->compress_decode = (int32_t)get_u32(r);
    p->decode_recent = get_u32(r);
}

/* The whole file; on success *out is the new cache. */
static sparkv_status parse(const uint8_t *data, uint64_t size, const sparkv_shape *expected, sparkv_cache **out) {
    loader ld = {{data, size, 0}, NULL, "", {0}};
    if (size < SV_FILE_PREAMBLE_BYTES)
        return FAIL("truncated: %llu bytes, a saved cache starts with a %u-byte preamble", (unsigned long long)size,
                    SV_FILE_PREAMBLE_BYTES);
    if (memcmp(data, SV_FILE_MAGIC, 8) != 0) return FAIL("not a SparKV saved cache (the magic bytes differ)");
    ld.file.off = 8;
    uint32_t version = get_u32(&ld.file), order = get_u32(&ld.file);
    if (order != SV_FILE_BYTE_ORDER) {
        if (order == 0x04030201u)
            return FAIL("the file was written on a machine of the other byte order (saved caches are read on "
                        "machines of the writer's byte order)");
        return FAIL("the byte-order mark is 0x%08x, not 0x%08x", order, SV_FILE_BYTE_ORDER);
    }
    if (version != SV_FILE_VERSION)
        return FAIL("format version %u; this library (%s) reads version %u", version, sparkv_version_string(),
                    SV_FILE_VERSION);
    reader h;
    sparkv_status st = section(&ld, SV_SECTION_HEAD, &h);
    if (st != SPARKV_OK) return st;
    if (h.len != SV_HEAD_PAYLOAD_BYTES)
        return FAIL("the header is %llu bytes, expected %u", (unsigned long long)h.len, SV_HEAD_PAYLOAD_BYTES);
    const uint32_t writer_version = get_u32(&h), page_tokens = get_u32(&h);
    const uint64_t file_size = get_u64(&h);
    sparkv_shape shape = sparkv_default_shape();
    shape.n_layers = get_u32(&h);
    shape.n_q_heads = get_u32(&h);
    shape.n_kv_heads = get_u32(&h);
    shape.head_dim = get_u32(&h);
    shape.capacity = get_u64(&h);
    const uint32_t first = get_u32(&h), count = get_u32(&h);
    sparkv_policy policy;
    read_policy(&h, &policy);
    if (file_size != size)
        return FAIL("%s: the header says %llu bytes, the file has %llu", file_size > size ? "truncated" : "trailing bytes",
                    (unsigned long long)file_size, (unsigned long long)size);
    if (page_tokens != SPARKV_PAGE_TOKENS)
        return FAIL("pages of %u tokens (written by version %u); this library uses %u", page_tokens, writer_version,
                    SPARKV_PAGE_TOKENS);
    char detail[SPARKV_ERROR_LEN]; /* sv_fail writes the buffer sparkv_last_error reads: copy first */
    if ((st = sv_shape_check(&shape)) != SPARKV_OK) {
        snprintf(detail, sizeof detail, "%s", sparkv_last_error(NULL));
        return FAIL("the file's shape is invalid: %s", detail);
    }
    if (count == 0 || first >= shape.n_layers || count > shape.n_layers - first)
        return FAIL("saved layers [%u, %u + %u) are not a range of the %u layers", first, first, count, shape.n_layers);
    if (expected) {
        if (expected->struct_size != sizeof(sparkv_shape))
            return sv_fail(NULL, SPARKV_ERR_STRUCT_SIZE, "cache_load: expected_shape->struct_size is %u, this library "
                           "expects %u", expected->struct_size, (unsigned)sizeof(sparkv_shape));
        if (expected->n_layers != shape.n_layers || expected->n_q_heads != shape.n_q_heads ||
            expected->n_kv_heads != shape.n_kv_heads || expected->head_dim != shape.head_dim)
            return sv_fail(NULL, SPARKV_ERR_INVALID_SHAPE,
                           "the file was saved for %u layers, %u query heads, %u KV heads, head_dim %u; the expected "
                           "shape has %u, %u, %u, %u", shape.n_layers, shape.n_q_heads, shape.n_kv_heads,
                           shape.head_dim, expected->n_layers, expected->n_q_heads, expected->n_kv_heads,
                           expected->head_dim);
        shape.capacity = expected->capacity;
    }
    /* layers outside the saved range still get their (empty) head tables: bound them by the file */
    const uint64_t head_slots = (uint64_t)shape.n_layers * shape.n_kv_heads;
    if (head_slots * sizeof(sv_head) > ((uint64_t)64 << 20) && head_slots * sizeof(sv_head) > size * 64)
        return FAIL("%u layers of %u KV heads would take %llu bytes of tables for a %llu-byte file", shape.n_layers,
                    shape.n_kv_heads, (unsigned long long)(head_slots * sizeof(sv_head)), (unsigned long long)size);
    sparkv_cache *c = NULL;
    if ((st = sparkv_cache_create(&shape, &policy, &c)) != SPARKV_OK) {
        if (st == SPARKV_ERR_OUT_OF_MEMORY) return st;
        snprintf(detail, sizeof detail, "%s", sparkv_last_error(NULL));
        return FAIL("the file's policy is invalid: %s", detail);
    }
    ld.cache = c;
    for (uint32_t l = first; l < first + count && st == SPARKV_OK; l++) st = load_layer(&ld, l);
    ld.where = "";
    reader end;
    if (st == SPARKV_OK) st = section(&ld, SV_SECTION_END, &end);
    if (st == SPARKV_OK && (end.len != 0 || ld.file.off != size))
        st = FAIL("%llu bytes after the end section", (unsigned long long)(size - ld.file.off));
    if (st != SPARKV_OK) {
        sparkv_cache_free(c);
        return st;
    }
    *out = c;
    return SPARKV_OK;
}

sparkv_status sparkv_cache_load_buffer(const void *data, size_t size, const sparkv_shape *expected_shape,
                                       sparkv_cache **out) {
    sv_clear_error(NULL);
    if (out) *out = NULL;
    if (!data || !out) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "cache_load_buffer: %s is NULL", !data ? "data" : "out");
    return parse((const uint8_t *)data, size, expected_shape, out);
}

sparkv_status sparkv_cache_load(const char *path, const sparkv_shape *expected_shape, sparkv_cache **out) {
    sv_clear_error(NULL);
    if (out) *out = NULL;
    if (!path || !out) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "cache_load: %s is NULL", !path ? "path" : "out");
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sv_fail(NULL, SPARKV_ERR_IO, "cache_load: cannot open '%s'", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sv_fail(NULL, SPARKV_ERR_IO, "cache_load: '%s' is not a regular file", path);
    }
    const uint64_t size = (uint64_t)sb.st_size;
    if (size == 0) {
        close(fd);
        return FAIL("cache_load: '%s' is empty", path);
    }
    if (size > (uint64_t)SIZE_MAX) {
        close(fd);
        return FAIL("cache_load: '%s' is larger than this process can address", path);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    sparkv_status st;
    if (map != MAP_FAILED) {
        close(fd);
        st = parse((const uint8_t *)map, size, expected_shape, out);
        munmap(map, (size_t)size);
        return st;
    }
    /* no mapping (some file systems): read it, the file's size bounding the buffer */
    uint8_t *buf = (uint8_t *)malloc((size_t)size);
    if (!buf) {
        close(fd);
        return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "cache_load: cannot buffer %llu bytes", (unsigned long long)size);
    }
    uint64_t got = 0;
    while (got < size) {
        const ssize_t r = read(fd, buf + got, (size_t)(size - got));
        if (r <= 0) break;
        got += (uint64_t)r;
    }
    close(fd);
    st = got == size ? parse(buf, size, expected_shape, out)
                     : sv_fail(NULL, SPARKV_ERR_IO, "cache_load: reading '%s' failed", path);
    free(buf);
    return st;
}
