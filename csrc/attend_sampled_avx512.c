/* AVX512 scoring of SparK pages under sampled (GAUSSIAN/EXPONENTIAL) recovery.
 * Placeholder: the portable kernel until the SIMD draw lands. */
#include "attend.h"

void sv_score_spark_sampled_avx512(const sv_head_ctx *h, const sv_page *page, uint32_t t0, uint32_t n,
                                   uint64_t *kept, float *scores) {
    sv_score_spark_portable(h, page, t0, n, kept, scores);
}
