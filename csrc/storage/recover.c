/* Recovery of pruned key entries: sgn * sqrt(x / qn_j) with x the mean pruned saliency or a
 * deterministic draw. Statistics are stored as sqrt(stat / c) (see pack.c), so the entry is
 * sgn * sqrt(x / c) * rq_j with rq_j = sqrt(c / qn_j), qn_j floored (sv_recip_sqrt_qn). The draws
 * themselves are in draw.c. */
#include "internal.h"
#include "draw.h"
#include "half.h"

#include <math.h>

/* rq_j = sqrt(c / max(qn_j, c / SPARKV_RECOVERY_QN_FLOOR)). Without the floor a recovered entry
 * sqrt(m / qn_j) grows without bound as qn_j -> 0+ (signed window queries averaged over a GQA
 * group make tiny norms easy), while the window says nothing about such a channel's keys; the
 * floor bounds it by sqrt(FLOOR) * sqrt(m / c) and makes recovery continuous at qn_j = 0. */
void sv_recip_sqrt_qn(const float *qn, float c, uint32_t d, float *rq) {
    const double floor_qn = (double)c / SPARKV_RECOVERY_QN_FLOOR;
    for (uint32_t j = 0; j < d; j++) {
        const double q = (double)qn[j] > floor_qn ? (double)qn[j] : floor_qn;
        rq[j] = (float)sqrt((double)c / q);
    }
}

void sv_recover_key(const sparkv_cache *cache, const sv_page *page, uint32_t slot, uint64_t kept_offset,
                    const float *rq, uint64_t token_hash, const uint8_t *think_mask, float *key) {
    const uint32_t d = cache->shape.head_dim;
    const sparkv_precision kp = cache->policy.key_precision;
    if (page->keys == SV_KEYS_DENSE) {
        const uint32_t ng = cache->kgroups;
        sv_load_values(key, (const uint8_t *)page->k + (size_t)slot * sv_row_bytes(kp, d),
                       page->kscale ? page->kscale + (size_t)slot * ng : NULL, 1, kp, d, cache->policy.quant_group);
        return;
    }
    float kept[SPARKV_MAX_HEAD_DIM];
    const uint16_t *ks = page->kscale ? page->kscale + slot : NULL;
    if (page->keys == SV_KEYS_THINK) {
        const uint32_t t = cache->keep_topk;
        sv_load_values(kept, (const uint8_t *)page->k + (size_t)slot * sv_row_bytes(kp, t), ks, 1, kp, t, t);
        uint32_t p = 0;
        for (uint32_t j = 0; j < d; j++) key[j] = (think_mask[j >> 3] >> (j & 7) & 1u) ? kept[p++] : 0.0f;
        return;
    }
    const uint8_t *mask = page->mask + (size_t)slot * (d / 8);
    const uint8_t *sign = page->sign ? page->sign + (size_t)slot * (d / 8) : NULL;
    const uint16_t *st = page->stats ? page->stats + (size_t)slot * cache->n_stats : NULL;
    const sparkv_recovery rec = cache->policy.recovery;
    const uint32_t draw_key = sv_draw_key(token_hash);
    uint32_t nk = 0;
    for (uint32_t b = 0; b < d / 8; b++) nk += (uint32_t)__builtin_popcount(mask[b]);
    sv_load_values(kept, (const uint8_t *)page->k + kept_offset, ks, 1, kp, nk, nk ? nk : 1);
    uint32_t p = 0;
    for (uint32_t j = 0; j < d; j++) {
        if (mask[j >> 3] >> (j & 7) & 1u) {
            key[j] = kept[p++];
            continue;
        }
        float mag = 0.0f;
        if (rec == SPARKV_RECOVER_MEAN) mag = sv_half_to_float(st[SV_STAT_MEAN]) * rq[j];
        else if (rec != SPARKV_RECOVER_NONE) mag = sv_draw_magnitude(rec, st, draw_key, j) * rq[j];
        key[j] = (sign && (sign[j >> 3] >> (j & 7) & 1u)) ? -mag : mag;
    }
}
