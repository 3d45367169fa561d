/* Packing one selected token: kept values, pruned-channel signs, recovery statistics. */
#include "internal.h"
#include "half.h"
#include "prefill_kernels.h"

#include <math.h>

/* Statistics are stored as fp16(sqrt(stat / c)): in units of keys, so they stay inside fp16's
 * range whenever the keys do, however large qn grows; and sqrt is what recovery multiplies by. */
static uint16_t stat_half(double stat, float c) { return sv_float_to_half((float)sqrt(stat / (double)c)); }

uint32_t sv_split_token(const float *k, const double *s, const uint8_t *mask, uint32_t d, float *kept,
                        uint16_t *kept_f16, double *pruned, uint8_t *sign, double *min_kept, double *max_pruned) {
    uint32_t n_kept = 0;
    double lo = INFINITY, hi = 0.0;
    /* Branch-free: the kept pattern is random per token, so branches would mispredict. */
    for (uint32_t b = 0; b < d / 8; b++) {
        uint32_t neg = 0;
        for (uint32_t i = 0; i < 8; i++) {
            const uint32_t j = 8 * b + i;
            const uint32_t keep = mask[b] >> i & 1u;
            kept[n_kept] = k[j];
            n_kept += keep;
            pruned[j] = keep ? 0.0 : s[j];
            const double as_kept = keep ? s[j] : INFINITY;
            lo = as_kept < lo ? as_kept : lo;
            hi = pruned[j] > hi ? pruned[j] : hi;
            neg |= (uint32_t)(!keep && k[j] < 0.0f) << i;
        }
        if (sign) sign[b] = (uint8_t)neg;
    }
    *min_kept = lo;
    *max_pruned = hi;
    if (kept_f16) sv_store_row(kept_f16, SPARKV_F16, kept, n_kept);
    return n_kept;
}

void sv_pack_stats(const sparkv_cache *cache, sv_page *page, uint32_t slot, uint32_t n_kept, double pruned_sum,
                   double min_kept, double max_pruned, const double *pruned, float c) {
    if (!cache->n_stats) return;
    const uint32_t d = cache->shape.head_dim, n_pruned = d - n_kept;
    const double mean = n_pruned ? pruned_sum / (double)n_pruned : 0.0;
    uint16_t *st = page->stats + (size_t)slot * cache->n_stats;
    st[SV_STAT_MEAN] = stat_half(mean, c);
    if (cache->n_stats > SV_STAT_THETA) st[SV_STAT_THETA] = stat_half(n_kept ? min_kept : max_pruned, c);
    if (cache->n_stats > SV_STAT_SD) {
        const uint8_t *mask = page->mask + (size_t)slot * (d / 8);
        double var = 0.0;
        for (uint32_t j = 0; j < d; j++)
            if (!(mask[j >> 3] >> (j & 7) & 1u)) var += (pruned[j] - mean) * (pruned[j] - mean);
        st[SV_STAT_SD] = stat_half(n_pruned ? sqrt(var / (double)n_pruned) : 0.0, c);
    }
}

/* Value-channel pruning: keep the T_v values of largest magnitude; the others are replaced at
 * attention time by their mean, so the token's value sum over channels is preserved. */
void sv_pack_value(const sparkv_cache *cache, sv_page *page, uint32_t slot, const float *v) {
    const uint32_t d = cache->shape.head_dim, tv = cache->keep_values;
    double mag[SPARKV_MAX_HEAD_DIM] = {0}, scratch[SPARKV_MAX_HEAD_DIM];
    for (uint32_t j = 0; j < d; j++) mag[j] = fabs((double)v[j]);
    uint8_t *mask = page->vmask + (size_t)slot * (d / 8);
    sv_select_topk(mag, d, tv, mask, scratch);
    float kept[SPARKV_MAX_HEAD_DIM];
    uint32_t nk = 0, np = 0;
    double pruned = 0.0;
    for (uint32_t j = 0; j < d; j++) {
        if (mask[j >> 3] >> (j & 7) & 1u) kept[nk++] = v[j];
        else { pruned += (double)v[j]; np++; }
    }
    const sparkv_precision vp = cache->policy.value_precision;
    sv_store_values((uint8_t *)page->v + (size_t)slot * sv_row_bytes(vp, tv), page->vscale ? page->vscale + slot : NULL,
                    1, vp, kept, nk, nk ? nk : 1);
    page->vfill[slot] = sv_float_to_half((float)(np ? pruned / (double)np : 0.0));
}
