/* Window query norms and per-channel key saliency: s_tj = k_tj^2 * ||Qwin[:, j]||_2. */
#include "internal.h"
#include "input_rows.h"
#include "prefill_kernels.h"

#include <math.h>

/* qn_j over the last n_use of n_window_total window queries of the `group` query heads starting at
 * first_q_head, averaged over those heads first. Double precision, fixed summation order (window
 * rows ascending, heads ascending) so any reimplementation can reproduce it bit for bit. */
void sv_group_mean(sv_rows q_window, uint64_t n_window_total, uint64_t w, uint32_t group, uint32_t first_q_head,
                   uint32_t d, double *mean) {
    for (uint32_t j = 0; j < d; j++) mean[j] = 0.0;
    for (uint32_t g = 0; g < group; g++) {
        float scratch[SPARKV_MAX_HEAD_DIM];
        const float *row = sv_rows_get(q_window, ((uint64_t)(first_q_head + g)) * n_window_total + w, d, scratch);
        for (uint32_t j = 0; j < d; j++) mean[j] += (double)row[j];
    }
    for (uint32_t j = 0; j < d; j++) mean[j] /= (double)group;
}

void sv_window_qnorm(sv_rows q_window, uint64_t n_window_total, uint32_t n_use, uint32_t group,
                     uint32_t first_q_head, uint32_t d, float *qn, float *c) {
    double acc[SPARKV_MAX_HEAD_DIM];
    for (uint32_t j = 0; j < d; j++) acc[j] = 0.0;
    for (uint64_t w = n_window_total - n_use; w < n_window_total; w++) {
        double m[SPARKV_MAX_HEAD_DIM];
        sv_group_mean(q_window, n_window_total, w, group, first_q_head, d, m);
        for (uint32_t j = 0; j < d; j++) acc[j] += m[j] * m[j];
    }
    sv_qnorm_finish(acc, d, qn, c);
}

void sv_qnorm_finish(const double *acc, uint32_t d, float *qn, float *c) {
    double sum = 0.0;
    for (uint32_t j = 0; j < d; j++) {
        qn[j] = (float)sqrt(acc[j]);
        sum += (double)qn[j];
    }
    float mean = (float)(sum / (double)d);
    *c = mean > 0.0f ? mean : 1.0f;
}

/* Saliency in double: k^2 is exact, so only the product with qn (already in double, as prefill's
 * per-ISA kernels take it) rounds, and it never overflows. */
void sv_saliency_portable(const float *k, const double *qn, uint32_t d, double *s) {
    for (uint32_t j = 0; j < d; j++) s[j] = (double)k[j] * (double)k[j] * qn[j];
}
