/* Run-time choice of the attention kernels: the machine that runs the library may not be the
 * one that built it, so nothing here depends on -march. */
#include "internal.h"
#include "attend.h"
#include "cpu_features.h"

#include <stdlib.h>
#include <string.h>

/* The attention kernels' levels, from the project's one probe (cpu_features.h). */
static int cpu_has_avx2(void) { return sv_cpu_avx2(); }
static int cpu_has_avx512(void) { return sv_cpu_avx512_vbmi2(); }

int sparkv_kernel_supported(sparkv_kernel kernel) {
    switch (kernel) {
    case SPARKV_KERNEL_AUTO:
    case SPARKV_KERNEL_PORTABLE: return 1;
    case SPARKV_KERNEL_AVX2: return cpu_has_avx2();
    case SPARKV_KERNEL_AVX512: return cpu_has_avx512();
    }
    return 0;
}

sparkv_kernel sv_best_kernel(void) {
    const char *env = getenv("SPARKV_KERNEL");
    if (env && *env) {
        if (!strcmp(env, "portable")) return SPARKV_KERNEL_PORTABLE;
        if (!strcmp(env, "avx2") && cpu_has_avx2()) return SPARKV_KERNEL_AVX2;
        if (!strcmp(env, "avx512") && cpu_has_avx512()) return SPARKV_KERNEL_AVX512;
    }
    if (cpu_has_avx512()) return SPARKV_KERNEL_AVX512;
    if (cpu_has_avx2()) return SPARKV_KERNEL_AVX2;
    return SPARKV_KERNEL_PORTABLE;
}

const char *sparkv_kernel_name(sparkv_kernel kernel) {
    switch (kernel) {
    case SPARKV_KERNEL_AUTO: return "auto";
    case SPARKV_KERNEL_PORTABLE: return "portable";
    case SPARKV_KERNEL_AVX2: return "avx2";
    case SPARKV_KERNEL_AVX512: return "avx512";
    }
    return "unknown";
}

sparkv_status sparkv_cache_set_kernel(sparkv_cache *cache, sparkv_kernel kernel) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "cache_set_kernel: cache is NULL");
    sv_clear_error(cache);
    if ((int)kernel < 0 || (int)kernel > SPARKV_KERNEL_AVX512)
        return sv_fail(cache, SPARKV_ERR_UNSUPPORTED, "kernel %d is not a known kernel family", (int)kernel);
    if (kernel == SPARKV_KERNEL_AUTO) kernel = sv_best_kernel();
    if (!sparkv_kernel_supported(kernel))
        return sv_fail(cache, SPARKV_ERR_UNSUPPORTED, "this CPU does not support the %s kernels",
                       sparkv_kernel_name(kernel));
    cache->kernel = kernel;
    return SPARKV_OK;
}

sparkv_kernel sparkv_cache_kernel(const sparkv_cache *cache) {
    return cache ? cache->kernel : SPARKV_KERNEL_PORTABLE;
}
