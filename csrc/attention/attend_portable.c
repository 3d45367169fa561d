/* Portable decode-attention kernels: the specification the SIMD kernels are tested against.
 * The kept part of q.k walks the kept-channel bitmask; the MEAN recovery of the pruned part uses
 * its factorization sqrt(m_t/c) * sum_{j pruned} sgn_j q_j sqrt(c/qn_j): a few byte look-ups per
 * token instead of a loop over the pruned channels. */
#include "attend.h"
#include "draw.h"
#include "half.h"

#include <string.h>

void sv_score_spark_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                  uint64_t *kept, float *scores) {
    const sparkv_cache *cache = h->cache;
    const uint32_t d = h->d, g = h->group, nb = d / 8;
    const sparkv_precision kp = cache->policy.key_precision;
    const sparkv_recovery rec = cache->policy.recovery;
    uint64_t off = *kept;
    float x[SPARKV_MAX_HEAD_DIM];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint8_t *mask = page->mask + (size_t)slot * nb;
        const uint8_t *sign = page->sign ? page->sign + (size_t)slot * nb : NULL;
        const uint16_t *st = page->stats ? page->stats + (size_t)slot * cache->n_stats : NULL;
        uint32_t nk = 0;
        for (uint32_t b = 0; b < nb; b++) nk += (uint32_t)__builtin_popcount(mask[b]);
        /* the token's kept values as attention sees them (dequantized for I8/I4) */
        sv_load_values(x, (const uint8_t *)page->k + off, page->kscale ? page->kscale + slot : NULL, 1, kp, nk,
                       nk ? nk : 1);
        off += sv_row_bytes(kp, nk);
        float s[SPARKV_MAX_GROUP];
        for (uint32_t k = 0; k < g; k++) s[k] = 0.0f;
        uint32_t p = 0;
        for (uint32_t b = 0; b < nb; b++) {
            for (uint32_t bits = mask[b]; bits; bits &= bits - 1) {
                const uint32_t j = 8 * b + (uint32_t)__builtin_ctz(bits);
                const float xj = x[p++];
                for (uint32_t k = 0; k < g; k++) s[k] += h->qs[k * d + j] * xj;
            }
        }
        if (rec == SPARKV_RECOVER_MEAN) {
            const float a = sv_half_to_float(st[SV_STAT_MEAN]);
            for (uint32_t k = 0; k < g; k++) {
                const float *lut = h->lut + (size_t)k * nb * 256;
                float r = 0.0f;
                for (uint32_t b = 0; b < nb; b++) {
                    r += lut[b * 256 + (uint8_t)~mask[b]];
                    if (sign) r -= 2.0f * lut[b * 256 + sign[b]];
                }
                s[k] += a * r;
            }
        } else if (rec != SPARKV_RECOVER_NONE) {
            /* Sampled recovery: one table draw per pruned channel (draw.c), recomputed each time. */
            const uint32_t key = sv_draw_key(sv_token_hash(cache->policy.seed, h->layer, h->head, page->first + slot));
            for (uint32_t j = 0; j < d; j++) {
                if (mask[j >> 3] >> (j & 7) & 1u) continue;
                float e = sv_draw_magnitude(rec, st, key, j) * h->rq[j];
                if (sign && (sign[j >> 3] >> (j & 7) & 1u)) e = -e;
                for (uint32_t k = 0; k < g; k++) s[k] += h->qs[k * d + j] * e;
            }
        }
        for (uint32_t k = 0; k < g; k++) scores[k * SV_BLOCK + i] = s[k];
    }
    *kept = off;
}

/* Dot product with 8 independent partial sums: a reduction the compiler may vectorize without
 * reassociating (the order is fixed by the code), so results do not depend on the ISA. */
static float dot8(const float *a, const float *b, uint32_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (uint32_t l = 0; l < 8; l++) acc[l] += a[j + l] * b[j + l];
    for (uint32_t l = 0; j < n; j++, l++) acc[l] += a[j] * b[j];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void sv_score_rows_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *q,
                            uint32_t qstride, uint32_t width, float *scores) {
    const uint32_t g = h->group;
    const sparkv_precision kp = h->cache->policy.key_precision;
    const size_t rb = sv_row_bytes(kp, width);
    /* DENSE rows: one scale per quant_group channels; THINK rows: one per token */
    const int whole = page->keys == SV_KEYS_DENSE;
    const size_t group = whole ? h->cache->policy.quant_group : width;
    const uint32_t ns = whole ? h->cache->kgroups : 1;
    float key[SPARKV_MAX_HEAD_DIM];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        sv_load_values(key, (const uint8_t *)page->k + (size_t)slot * rb,
                       page->kscale ? page->kscale + (size_t)slot * ns : NULL, 1, kp, width, group);
        for (uint32_t k = 0; k < g; k++) scores[k * SV_BLOCK + i] = dot8(q + (size_t)k * qstride, key, width);
    }
}

static void add_weighted(const float *v, const float *p, uint32_t i, uint32_t d, uint32_t g, float *acc) {
    for (uint32_t k = 0; k < g; k++) {
        const float w = p[k * SV_BLOCK + i];
        float *a = acc + (size_t)k * d;
        for (uint32_t j = 0; j < d; j++) a[j] += w * v[j];
    }
}

void sv_accumulate_v_pruned_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                     const float *p, float *acc) {
    const uint32_t d = h->d, tv = h->cache->keep_values;
    const sparkv_precision vp = h->cache->policy.value_precision;
    const size_t rb = sv_row_bytes(vp, tv);
    float v[SPARKV_MAX_HEAD_DIM], kept[SPARKV_MAX_HEAD_DIM];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        const uint8_t *mask = page->vmask + (size_t)slot * (d / 8);
        const float fill = sv_half_to_float(page->vfill[slot]);
        sv_load_values(kept, (const uint8_t *)page->v + (size_t)slot * rb, page->vscale ? page->vscale + slot : NULL, 1,
                       vp, tv, tv);
        uint32_t q = 0;
        for (uint32_t j = 0; j < d; j++) v[j] = (mask[j >> 3] >> (j & 7) & 1u) ? kept[q++] : fill;
        add_weighted(v, p, i, d, h->group, acc);
    }
}

void sv_accumulate_v_portable(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n, const float *p,
                              float *acc) {
    const uint32_t d = h->d, g = h->group;
    const sparkv_precision vp = h->cache->policy.value_precision;
    const size_t rb = sv_row_bytes(vp, d);
    float v[SPARKV_MAX_HEAD_DIM];
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t slot = t0 + i;
        /* value scales are group-major: group k of this token at vscale[k * cap + slot] */
        sv_load_values(v, (const uint8_t *)page->v + (size_t)slot * rb, page->vscale ? page->vscale + slot : NULL,
                       page->cap, vp, d, h->cache->policy.quant_group);
        add_weighted(v, p, i, d, g, acc);
    }
}

/* exp(x) for x <= 0 in plain C that vectorizes: Cody-Waite reduction and a degree-6 polynomial
 * (relative error below 3e-7); x below -87 gives 0. */
void sv_exp_block_portable(float *x, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        float v = !(x[i] >= -87.0f) ? -87.0f : x[i]; /* NaN too: no undefined float-to-int below */
        float t = v * 1.44269504088896341f;
        float k = (float)(int32_t)(t - 0.5f); /* round half down: v <= 0 */
        float r = v - k * 0.693145751953125f - k * 1.428606765330187045e-06f;
        float p = 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        int32_t bits = ((int32_t)k + 127) << 23;
        float scale;
        memcpy(&scale, &bits, 4);
        x[i] = x[i] < -87.0f ? 0.0f : p * scale;
    }
}

#define SV_EXP_BLOCK sv_exp_block_portable
#include "softmax_block.h"

int sv_softmax_portable(float *sc, uint32_t n, uint32_t g, uint32_t d, float *mx, float *sum, float *acc) {
    return sv_online_softmax(sc, n, g, d, mx, sum, acc);
}

static int always_lut(uint32_t d, uint32_t group) { return 1; }

const sv_kernels sv_kernels_portable = {sv_score_spark_portable, sv_score_rows_portable, sv_accumulate_v_portable,
                                        sv_accumulate_v_pruned_portable, sv_exp_block_portable,
                                        sv_softmax_portable, always_lut};
