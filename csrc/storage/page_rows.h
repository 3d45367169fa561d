/* Where one token's stored rows sit in a page: the accessors the encoder, append, decode-time
 * compression, recovery, inspection and the portable kernels share, so the row and scale layout of
 * every storage mode is written down once (the SIMD kernels walk the same layout a block at a time).
 *
 *  keys   DENSE: rb(kp, D) bytes per token, D/quant_group fp16 scales per token (token-major);
 *         THINK: rb(kp, T) per token, one scale per token; SPARK: packed rows of rb(kp, kept)
 *         bytes at a running offset, one scale per token.
 *  values whole rows: rb(vp, D) per token, D/quant_group scales group-major ([group][cap]: one
 *         token's scales are cap apart); value-pruned: rb(vp, T_v) per token, one scale per token. */
#ifndef SPARKV_PAGE_ROWS_H
#define SPARKV_PAGE_ROWS_H

#include "half.h"
#include "internal.h"

/* One stored row: its bytes, its fp16 scales (NULL for float precisions) `scale_stride` apart, n
 * values sharing a scale per `group` — the arguments of sv_store_values / sv_load_values. */
typedef struct {
    void *data;
    uint16_t *scales;
    size_t scale_stride;
    uint32_t n;
    size_t group;
    sparkv_precision precision;
} sv_row_ref;

/* The key row of a DENSE or THINK token. */
static inline sv_row_ref sv_page_key_row(const sparkv_cache *c, const sv_page *p, uint32_t slot) {
    const sparkv_precision kp = c->policy.key_precision;
    const int dense = p->keys == SV_KEYS_DENSE;
    const uint32_t n = dense ? c->shape.head_dim : c->keep_topk;
    const size_t per = dense ? c->kgroups : 1;
    sv_row_ref r = {(uint8_t *)p->k + (size_t)slot * sv_row_bytes(kp, n), p->kscale ? p->kscale + slot * per : NULL, 1,
                    n, dense ? c->policy.quant_group : n, kp};
    return r;
}

/* The kept key values of a SPARK token: n_kept of them at byte `offset` of page->k. */
static inline sv_row_ref sv_page_spark_key_row(const sparkv_cache *c, const sv_page *p, uint32_t slot, uint64_t offset,
                                               uint32_t n_kept) {
    sv_row_ref r = {(uint8_t *)p->k + offset, p->kscale ? p->kscale + slot : NULL, 1, n_kept, n_kept ? n_kept : 1,
                    c->policy.key_precision};
    return r;
}

/* The stored value row of a token: whole, or its kept values when the page is value-pruned. */
static inline sv_row_ref sv_page_value_row(const sparkv_cache *c, const sv_page *p, uint32_t slot) {
    const sparkv_precision vp = c->policy.value_precision;
    if (p->values_pruned) {
        const uint32_t tv = c->keep_values;
        sv_row_ref r = {(uint8_t *)p->v + (size_t)slot * sv_row_bytes(vp, tv), p->vscale ? p->vscale + slot : NULL, 1, tv,
                        tv, vp};
        return r;
    }
    const uint32_t d = c->shape.head_dim;
    sv_row_ref r = {(uint8_t *)p->v + (size_t)slot * sv_row_bytes(vp, d), p->vscale ? p->vscale + slot : NULL, p->cap, d,
                    c->policy.quant_group, vp};
    return r;
}

static inline void sv_row_store(sv_row_ref r, const float *src) {
    sv_store_values(r.data, r.scales, r.scale_stride, r.precision, src, r.n, r.group);
}

static inline void sv_row_load(sv_row_ref r, float *dst) {
    sv_load_values(dst, r.data, r.scales, r.scale_stride, r.precision, r.n, r.group);
}

/* A token's whole value as attention sees it: the stored row, or (value-pruned) the kept values at
 * their channels and the token's fp16 fill elsewhere. */
static inline void sv_page_load_value(const sparkv_cache *c, const sv_page *p, uint32_t slot, float *v) {
    const sv_row_ref r = sv_page_value_row(c, p, slot);
    if (!p->values_pruned) { sv_row_load(r, v); return; }
    const uint32_t d = c->shape.head_dim;
    float kept[SPARKV_MAX_HEAD_DIM];
    sv_row_load(r, kept);
    const uint8_t *mask = p->vmask + (size_t)slot * (d / 8);
    const float fill = sv_half_to_float(p->vfill[slot]);
    uint32_t q = 0;
    for (uint32_t j = 0; j < d; j++) v[j] = (mask[j >> 3] >> (j & 7) & 1u) ? kept[q++] : fill;
}

#endif
