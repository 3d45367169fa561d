/* Input scans: reject NaN/Inf before anything is written. */
#include "internal.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
#define omp_get_max_threads() 1
#endif

/* 1 if any of x[0..n) is NaN or Inf. Integer test of the exponent bits, OR-reduced: the compiler
 * vectorizes it (a float probe such as sum(x * 0) would be a serial dependency chain). */
static int any_non_finite(const float *x, uint64_t n) {
    uint32_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    return bad != 0;
}

sparkv_status sv_check_finite(sparkv_cache *cache, const char *what, const float *x,
                              uint64_t n_outer, uint64_t n_mid, uint32_t d) {
    const uint64_t rows = n_outer * n_mid;
    int bad = 0;
    /* schedule(static): clang 21's dynamic schedules need a newer libomp than Debian's. */
#pragma omp parallel for schedule(static) reduction(| : bad) if (rows * d >= (1u << 20)) \
    num_threads(cache && cache->policy.threads > 0 ? cache->policy.threads : omp_get_max_threads())
    for (int64_t r = 0; r < (int64_t)rows; r += 256) {
        const uint64_t m = rows - (uint64_t)r < 256 ? rows - (uint64_t)r : 256;
        bad |= any_non_finite(x + (uint64_t)r * d, m * d);
    }
    if (!bad) return SPARKV_OK;
    for (uint64_t o = 0; o < n_outer; o++) {
        for (uint64_t t = 0; t < n_mid; t++) {
            const float *row = x + (o * n_mid + t) * d;
            for (uint32_t j = 0; j < d; j++)
                if (!isfinite(row[j]))
                    return sv_fail(cache, SPARKV_ERR_NON_FINITE, "%s contain %s at head %llu, row %llu, channel %u",
                                   what, isnan(row[j]) ? "NaN" : "Inf", (unsigned long long)o,
                                   (unsigned long long)t, j);
        }
    }
    return SPARKV_OK;
}
