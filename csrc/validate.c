/* Input scans: reject NaN/Inf before anything is written. */
#include "internal.h"

#include <math.h>

sparkv_status sv_check_finite(sparkv_cache *cache, const char *what, const float *x,
                              uint64_t n_outer, uint64_t n_mid, uint32_t d) {
    for (uint64_t o = 0; o < n_outer; o++) {
        for (uint64_t t = 0; t < n_mid; t++) {
            const float *row = x + (o * n_mid + t) * d;
            /* Sum of 0*x is 0 for finite rows and NaN otherwise: one pass, no branch per element. */
            float probe = 0.0f;
            for (uint32_t j = 0; j < d; j++) probe += row[j] * 0.0f;
            if (probe != 0.0f) {
                for (uint32_t j = 0; j < d; j++)
                    if (!isfinite(row[j]))
                        return sv_fail(cache, SPARKV_ERR_NON_FINITE, "%s contain %s at head %llu, row %llu, channel %u",
                                       what, isnan(row[j]) ? "NaN" : "Inf", (unsigned long long)o,
                                       (unsigned long long)t, j);
            }
        }
    }
    return SPARKV_OK;
}
