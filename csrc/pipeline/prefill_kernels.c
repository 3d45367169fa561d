/* The table of prefill kernels per kernel family, so prefill asks one place which to run. */
#include "prefill_kernels.h"

static const sv_prefill_kernels portable = {sv_saliency_portable, sv_select_topk_portable, sv_split_token};
#ifdef SV_HAVE_X86_PREFILL
static const sv_prefill_kernels avx2 = {sv_saliency_avx2, sv_select_topk_avx2, sv_split_token_avx2};
static const sv_prefill_kernels avx512 = {sv_saliency_avx512, sv_select_topk_avx512, sv_split_token_avx512};
#endif

const sv_prefill_kernels *sv_prefill_kernels_for(sparkv_kernel kernel) {
#ifdef SV_HAVE_X86_PREFILL
    if (kernel == SPARKV_KERNEL_AVX512) return &avx512;
    if (kernel == SPARKV_KERNEL_AVX2) return &avx2;
#endif
    (void)kernel;
    return &portable;
}
