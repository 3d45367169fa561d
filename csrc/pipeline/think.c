/* ThinK: structured key-channel pruning, one channel set per layer and KV head for all tokens.
 * score_j = (mean over window queries of qbar_j^2) * (mean over tokens of k_j^2), where qbar is the
 * window query averaged over the GQA group; the floor(r*D) lowest-scoring channels are dropped
 * (ties keep the lower index). */
#include "internal.h"
#include "input_rows.h"

void sv_think_select(const sparkv_cache *cache, sv_rows keys, const uint64_t *rows, uint64_t n,
                     const float *qn, uint32_t n_use, uint8_t *mask) {
    const uint32_t d = cache->shape.head_dim;
    double k2[SPARKV_MAX_HEAD_DIM], score[SPARKV_MAX_HEAD_DIM], scratch[SPARKV_MAX_HEAD_DIM];
    for (uint32_t j = 0; j < d; j++) k2[j] = 0.0;
    float widened[SPARKV_MAX_HEAD_DIM];
    for (uint64_t i = 0; i < n; i++) {
        const float *k = sv_rows_get(keys, rows[i], d, widened);
        for (uint32_t j = 0; j < d; j++) k2[j] += (double)k[j] * (double)k[j];
    }
    for (uint32_t j = 0; j < d; j++)
        score[j] = ((double)qn[j] * (double)qn[j] / (double)n_use) * (k2[j] / (double)n);
    sv_select_topk(score, d, cache->keep_topk, mask, scratch);
}
