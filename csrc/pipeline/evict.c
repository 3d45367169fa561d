/* Token eviction at prefill: SnapKV, PyramidKV and StreamingLLM choose, per layer and KV head,
 * which prompt tokens are stored at all. Survivors keep their order (and, since keys arrive
 * RoPE-rotated, their positions); channel pruning then applies to them. */
#include "internal.h"
#include "input_rows.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

uint32_t sv_pyramid_budget(uint32_t mean_budget, float ratio, uint32_t layer, uint32_t n_layers) {
    if (n_layers <= 1) return mean_budget;
    /* first + last = 2 * mean and first = ratio * last; linear in between */
    const double last = 2.0 * (double)mean_budget / (1.0 + (double)ratio);
    const double first = (double)ratio * last;
    const double b = first + (last - first) * (double)layer / (double)(n_layers - 1);
    const double r = floor(b + 0.5);
    return r < 1.0 ? 1u : (uint32_t)r;
}

static uint64_t score_budget(const sparkv_cache *c, uint32_t layer) {
    if (c->policy.eviction == SPARKV_EVICT_PYRAMIDKV)
        return sv_pyramid_budget(c->policy.evict_budget, c->policy.pyramid_ratio, layer, c->shape.n_layers);
    return c->policy.evict_budget;
}

uint64_t sv_evict_count(const sparkv_cache *c, uint32_t layer, uint64_t n, uint32_t n_use) {
    switch (c->policy.eviction) {
    case SPARKV_EVICT_SNAPKV:
    case SPARKV_EVICT_PYRAMIDKV: {
        uint64_t b = score_budget(c, layer);
        return b >= n - n_use ? n : b + n_use;
    }
    case SPARKV_EVICT_STREAMING: {
        uint64_t k = (uint64_t)c->policy.sink_tokens + c->policy.recent_tokens;
        return k >= n ? n : k;
    }
    default: return n;
    }
}

static float dot8(const float *a, const float *b, uint32_t d) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (uint32_t j = 0; j < d; j += 8)
        for (uint32_t l = 0; l < 8; l++) acc[l] += a[j + l] * b[j + l];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* SnapKV's observation: softmax attention of each window query (causal: the query at prompt
 * position p sees tokens 0..p) averaged over the window and the GQA group, then average-pooled
 * over the prefix tokens with zero padding. Returns 0, -1 when out of memory, or -2 when a logit
 * scale * q.k is not finite in float32 (as attend does, reported rather than turned into NaN
 * scores, which would leave the selection short of `budget` tokens). */
static int snapkv_select(const sparkv_cache *c, uint32_t head, sv_rows keys, uint64_t n, sv_rows q_window,
                         uint64_t n_window, uint32_t n_use, uint64_t budget, uint64_t *keep) {
    const uint32_t d = c->shape.head_dim, g = c->group;
    const uint64_t prefix = n - n_use;
    const float scale = c->policy.attention_scale > 0.0f ? c->policy.attention_scale : (float)(1.0 / sqrt((double)d));
    if (prefix == 0 || budget == 0) return 0; /* not reached: prefill validates budget <= prefix */
    double *score = (double *)calloc(prefix, sizeof(double));
    double *pooled = (double *)malloc(sizeof(double) * prefix);
    double *logit = (double *)malloc(sizeof(double) * n);
    if (!score || !pooled || !logit) { free(score); free(pooled); free(logit); return -1; }
    /* every window query reads every key: a 16-bit input is widened once, into a copy of this
     * head's keys, rather than once per query */
    float *widened = NULL;
    const float *kh;
    if (keys.dtype == SPARKV_DTYPE_F32) {
        kh = (const float *)keys.data + (uint64_t)head * n * d;
    } else {
        widened = (float *)malloc(sizeof(float) * n * d);
        if (!widened) { free(score); free(pooled); free(logit); return -1; }
        for (uint64_t t = 0; t < n; t++) sv_rows_get(keys, (uint64_t)head * n + t, d, widened + t * d);
        kh = widened;
    }
    for (uint32_t w = 0; w < n_use; w++) {
        const uint64_t pos = prefix + w;
        for (uint32_t i = 0; i < g; i++) {
            float q_row[SPARKV_MAX_HEAD_DIM];
            const float *q = sv_rows_get(q_window, ((uint64_t)head * g + i) * n_window + (n_window - n_use + w), d, q_row);
            double mx = -INFINITY;
            int finite = 1;
            for (uint64_t t = 0; t <= pos; t++) {
                logit[t] = (double)(scale * dot8(q, kh + t * d, d));
                finite &= isfinite(logit[t]) != 0;
                if (logit[t] > mx) mx = logit[t];
            }
            if (!finite) { free(score); free(pooled); free(logit); free(widened); return -2; }
            double sum = 0.0;
            for (uint64_t t = 0; t <= pos; t++) { logit[t] = exp(logit[t] - mx); sum += logit[t]; }
            for (uint64_t t = 0; t < prefix; t++) score[t] += logit[t] / sum;
        }
    }
    const double norm = 1.0 / ((double)n_use * (double)g);
    for (uint64_t t = 0; t < prefix; t++) score[t] *= norm;
    const int64_t half = (int64_t)(c->policy.pool_kernel / 2);
    for (uint64_t t = 0; t < prefix; t++) {
        double s = 0.0;
        for (int64_t o = -half; o <= half; o++) {
            int64_t u = (int64_t)t + o;
            if (u >= 0 && u < (int64_t)prefix) s += score[u];
        }
        pooled[t] = s / (double)c->policy.pool_kernel;
    }
    /* `logit` (n doubles) is free again: reuse it as the selection scratch */
    sv_select_top(pooled, prefix, budget, logit, keep);
    for (uint32_t w = 0; w < n_use; w++) keep[budget + w] = prefix + w;
    free(score); free(pooled); free(logit); free(widened);
    return 0;
}

int sv_evict_select(const sparkv_cache *c, uint32_t layer, uint32_t head, sv_rows keys, uint64_t n,
                    sv_rows q_window, uint64_t n_window, uint32_t n_use, uint64_t n_keep, uint64_t *keep) {
    if (n_keep == n) {
        for (uint64_t t = 0; t < n; t++) keep[t] = t;
        return 0;
    }
    if (c->policy.eviction == SPARKV_EVICT_STREAMING) {
        const uint64_t sinks = c->policy.sink_tokens, recent = n_keep - sinks;
        for (uint64_t t = 0; t < sinks; t++) keep[t] = t;
        for (uint64_t t = 0; t < recent; t++) keep[sinks + t] = n - recent + t;
        return 0;
    }
    return snapkv_select(c, head, keys, n, q_window, n_window, n_use, n_keep - n_use, keep);
}
