/* Recovery of pruned key entries: sgn * sqrt(x / qn_j) with x the mean pruned saliency or a
 * deterministic draw. Statistics are stored as sqrt(stat / c) (see pack.c), so the entry is
 * sgn * sqrt(x / c) * rq_j with rq_j = sqrt(c / qn_j), qn_j floored (sv_recip_sqrt_qn). */
#include "internal.h"
#include "half.h"

#include <math.h>

uint64_t sv_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t sv_token_hash(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token) {
    return sv_mix64(sv_mix64(sv_mix64(sv_mix64(seed) ^ layer) ^ kv_head) ^ token);
}

static double to_unit(uint64_t d) { return ((double)(d >> 11) + 0.5) * 0x1.0p-53; }

void sv_channel_uniforms(uint64_t token_hash, uint32_t channel, double *u1, double *u2) {
    uint64_t d1 = sv_mix64(token_hash ^ channel);
    *u1 = to_unit(d1);
    *u2 = to_unit(sv_mix64(d1));
}

void sparkv_draw_uniforms(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token, uint32_t channel,
                          double *u1, double *u2) {
    double a, b;
    sv_channel_uniforms(sv_token_hash(seed, layer, kv_head, token), channel, &a, &b);
    if (u1) *u1 = a;
    if (u2) *u2 = b;
}

/* sqrt(x / c) for one pruned channel under GAUSSIAN or EXPONENTIAL. */
double sv_draw_scaled(sparkv_recovery rec, const uint16_t *stats, uint64_t token_hash, uint32_t channel) {
    double a = (double)sv_half_to_float(stats[SV_STAT_MEAN]);
    double e = (double)sv_half_to_float(stats[SV_STAT_THETA]);
    double m = a * a, theta = e * e;
    double u1, u2, x;
    sv_channel_uniforms(token_hash, channel, &u1, &u2);
    if (rec == SPARKV_RECOVER_GAUSSIAN) {
        double b = (double)sv_half_to_float(stats[SV_STAT_SD]);
        x = m + b * b * sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
    } else {
        x = -m * log(u1);
    }
    if (x < 0.0) x = 0.0;
    if (x > theta) x = theta;
    return sqrt(x);
}

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
        else if (rec != SPARKV_RECOVER_NONE) mag = (float)sv_draw_scaled(rec, st, token_hash, j) * rq[j];
        key[j] = (sign && (sign[j >> 3] >> (j & 7) & 1u)) ? -mag : mag;
    }
}
