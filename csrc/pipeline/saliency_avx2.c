/* Saliency s_j = k_j^2 * qn_j, 4 channels per AVX2 vector; bit-identical to the portable loop
 * (k_j^2 is exact in double, the product with qn_j rounds once). */
#include "prefill_kernels.h"

#ifdef SV_HAVE_X86_PREFILL
#include <immintrin.h>

__attribute__((target("avx2"))) void sv_saliency_avx2(const float *k, const double *qn, uint32_t d, double *s) {
    for (uint32_t j = 0; j < d; j += 4) { /* d is a multiple of 8 */
        const __m256d kd = _mm256_cvtps_pd(_mm_loadu_ps(k + j));
        _mm256_storeu_pd(s + j, _mm256_mul_pd(_mm256_mul_pd(kd, kd), _mm256_loadu_pd(qn + j)));
    }
}
#endif
