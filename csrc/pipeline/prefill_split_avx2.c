/* sv_split_token with AVX2: one mask byte (8 channels) per step; the kept keys are moved to the
 * front by a permutation built from the mask byte with pdep/pext (no look-up table). Every output
 * is exact (copies, compares, min and max), so it equals the portable split bit for bit. */
#include "prefill_kernels.h"

#ifdef SV_HAVE_X86_PREFILL
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* Lane indices of the set bits of m, lowest first, as 8 dwords. */
__attribute__((target("avx2,bmi2"))) static __m256i compress_indices(uint32_t m) {
    const uint64_t lanes = _pdep_u64(m, 0x0101010101010101ull) * 0xffu; /* bit i -> byte i = 0xff */
    const uint64_t picked = _pext_u64(0x0706050403020100ull, lanes);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)picked));
}

#define TARGET __attribute__((target("avx2,bmi2,popcnt,f16c")))

TARGET uint32_t sv_split_token_avx2(const float *k, const double *s, const uint8_t *mask, uint32_t d, float *kept,
                uint16_t *kept_f16, double *pruned, uint8_t *sign, double *min_kept, double *max_pruned) {
    const __m256i bit = _mm256_setr_epi64x(1, 2, 4, 8);
    __m256d lo = _mm256_set1_pd(INFINITY), hi = _mm256_setzero_pd();
    uint32_t n = 0;
    for (uint32_t j = 0; j < d; j += 8) {
        const uint32_t m = mask[j / 8];
        const __m256 kv = _mm256_loadu_ps(k + j);
        _mm256_storeu_ps(kept + n, _mm256_permutevar8x32_ps(kv, compress_indices(m))); /* 8 floats of slack */
        n += (uint32_t)_mm_popcnt_u32(m);
        if (sign) {
            const __m256 negative = _mm256_cmp_ps(kv, _mm256_setzero_ps(), _CMP_LT_OQ);
            sign[j / 8] = (uint8_t)((uint32_t)_mm256_movemask_ps(negative) & ~m);
        }
        for (uint32_t h = 0; h < 2; h++) {
            const __m256i sel = _mm256_and_si256(_mm256_set1_epi64x((long long)(m >> (4 * h))), bit);
            const __m256d keep = _mm256_castsi256_pd(_mm256_cmpeq_epi64(sel, bit));
            const __m256d sv = _mm256_loadu_pd(s + j + 4 * h);
            const __m256d p = _mm256_andnot_pd(keep, sv);
            _mm256_storeu_pd(pruned + j + 4 * h, p);
            lo = _mm256_min_pd(lo, _mm256_blendv_pd(_mm256_set1_pd(INFINITY), sv, keep));
            hi = _mm256_max_pd(hi, p);
        }
    }
    double l[4], x[4];
    _mm256_storeu_pd(l, lo);
    _mm256_storeu_pd(x, hi);
    double a = l[0], b = x[0];
    for (int i = 1; i < 4; i++) {
        a = l[i] < a ? l[i] : a;
        b = x[i] > b ? x[i] : b;
    }
    *min_kept = a;
    *max_pruned = b;
    if (kept_f16) {
        /* whole vectors into a buffer, then exactly n values: the bytes after the row may already
         * hold the page's masks */
        uint16_t h[SPARKV_MAX_HEAD_DIM + 8];
        for (uint32_t i = 0; i < n; i += 8)
            _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(kept + i), _MM_FROUND_TO_NEAREST_INT));
        memcpy(kept_f16, h, (size_t)n * sizeof(uint16_t));
    }
    return n;
}
#endif
