/* Input scans: reject NaN/Inf, and finite values their storage precision cannot hold, before
 * anything is written. */
#include "internal.h"
#include "input_rows.h"

#include <math.h>
#include <string.h>
#include "omp_compat.h"

static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* The largest magnitude precision p stores without turning it into Inf (see sparkv_precision):
 * f16 rounds |x| >= 65520 to Inf; bf16 rounds |x| >= 0x7f7f8000 (about 3.3961e38) to Inf; I8/I4
 * need the scale fp16(|x| / Q) to be finite, so |x| / Q < 65520. */
float sv_precision_limit(sparkv_precision p) {
    switch (p) {
    case SPARKV_F16: return bits_f32(0x477fefffu);          /* below 65520 */
    case SPARKV_BF16: return bits_f32(0x7f7f7fffu);
    case SPARKV_I8: return nextafterf(65520.0f * 127.0f, 0.0f); /* 65520 * 127 is exact in float */
    case SPARKV_I4: return nextafterf(65520.0f * 7.0f, 0.0f);
    default: return bits_f32(0x7f7fffffu);                  /* FLT_MAX: finite is enough */
    }
}

/* 1 if any |x[i]| > limit or is NaN/Inf. For non-negative floats the bit patterns are ordered like
 * the values, and NaN/Inf lie above every finite one: one integer compare, OR-reduced, which the
 * compiler vectorizes (a float probe such as sum(x * 0) would be a serial dependency chain). */
static int any_beyond(const float *x, uint64_t n, uint32_t limit_bits) {
    uint32_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        bad |= (uint32_t)((bits & 0x7fffffffu) > limit_bits);
    }
    return bad != 0;
}

static const char *precision_name(sparkv_precision p) {
    switch (p) {
    case SPARKV_F16: return "f16";
    case SPARKV_BF16: return "bf16";
    case SPARKV_I8: return "i8";
    case SPARKV_I4: return "i4";
    default: return "f32";
    }
}

sparkv_status sv_check_finite(sparkv_cache *cache, const char *what, const float *x,
                              uint64_t n_outer, uint64_t n_mid, uint32_t d) {
    const sv_rows rows = {x, SPARKV_DTYPE_F32};
    return sv_check_rows(cache, what, rows, n_outer, n_mid, d, SPARKV_F32);
}

/* 1 if any of rows [r0, r0 + m) (d elements each) is beyond limit_bits; 16-bit inputs are widened
 * (exactly) a row at a time first. */
static int rows_beyond(sv_rows x, uint64_t r0, uint64_t m, uint32_t d, uint32_t limit_bits) {
    if (x.dtype == SPARKV_DTYPE_F32) return any_beyond((const float *)x.data + r0 * d, m * d, limit_bits);
    float row[SPARKV_MAX_HEAD_DIM];
    int bad = 0;
    for (uint64_t r = r0; r < r0 + m; r++) bad |= any_beyond(sv_rows_get(x, r, d, row), d, limit_bits);
    return bad;
}

sparkv_status sv_check_rows(sparkv_cache *cache, const char *what, sv_rows x, uint64_t n_outer, uint64_t n_mid,
                            uint32_t d, sparkv_precision storage) {
    const float limit = sv_precision_limit(storage);
    uint32_t limit_bits;
    memcpy(&limit_bits, &limit, 4);
    const uint64_t rows = n_outer * n_mid;
    int bad = 0;
    /* schedule(static): clang 21's dynamic schedules need a newer libomp than Debian's. */
#pragma omp parallel for schedule(static) reduction(| : bad) if (rows * d >= (1u << 20)) \
    num_threads(cache && cache->policy.threads > 0 ? cache->policy.threads : omp_get_max_threads())
    for (int64_t r = 0; r < (int64_t)rows; r += 256) {
        const uint64_t m = rows - (uint64_t)r < 256 ? rows - (uint64_t)r : 256;
        bad |= rows_beyond(x, (uint64_t)r, m, d, limit_bits);
    }
    if (!bad) return SPARKV_OK;
    float scratch[SPARKV_MAX_HEAD_DIM];
    for (uint64_t o = 0; o < n_outer; o++) {
        for (uint64_t t = 0; t < n_mid; t++) {
            const float *row = sv_rows_get(x, o * n_mid + t, d, scratch);
            for (uint32_t j = 0; j < d; j++) {
                if (!isfinite(row[j]))
                    return sv_fail(cache, SPARKV_ERR_NON_FINITE, "%s contain %s at head %llu, row %llu, channel %u",
                                   what, isnan(row[j]) ? "NaN" : "Inf", (unsigned long long)o,
                                   (unsigned long long)t, j);
                if (fabsf(row[j]) > limit)
                    return sv_fail(cache, SPARKV_ERR_RANGE,
                                   "%s contain %g at head %llu, row %llu, channel %u: beyond what %s storage holds "
                                   "(|x| <= %g)",
                                   what, (double)row[j], (unsigned long long)o, (unsigned long long)t, j,
                                   precision_name(storage), (double)limit);
            }
        }
    }
    return SPARKV_OK;
}
