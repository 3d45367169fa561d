/* Saliency s_j = k_j^2 * qn_j, 8 channels per AVX-512 vector. k_j^2 is exact in double, so the
 * one rounding is the product with qn_j: the same as the portable loop, bit for bit. */
#include "prefill_kernels.h"

#ifdef SV_HAVE_X86_PREFILL
#include <immintrin.h>

__attribute__((target("avx512f"))) void sv_saliency_avx512(const float *k, const double *qn, uint32_t d, double *s) {
    for (uint32_t j = 0; j < d; j += 8) { /* d is a multiple of 8 */
        const __m512d kd = _mm512_cvtps_pd(_mm256_loadu_ps(k + j));
        _mm512_storeu_pd(s + j, _mm512_mul_pd(_mm512_mul_pd(kd, kd), _mm512_loadu_pd(qn + j)));
    }
}
#endif
