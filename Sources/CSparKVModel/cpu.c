/* Settings of the model kernels: run-time ISA choice (never from build flags: the machine that runs
 * the library may not be the one that built it), thread count, status strings, per-thread scratch. */
#include "internal.h"

#include "omp_compat.h" /* csrc/platform/: OpenMP or single-threaded stand-ins */
#include <stdlib.h>
#include <string.h>

/* The model kernels' levels, from the project's one probe (csrc/platform/cpu_features.h). The AVX-512 path
 * needs VNNI (vpdpbusd), not VBMI2 as SparKV's attention does. */
static int cpu_has_avx2(void) { return sv_cpu_avx2(); }
static int cpu_has_avx512(void) { return sv_cpu_avx512_vnni(); }

int svm_isa_supported(svm_isa isa) {
    switch (isa) {
    case SVM_ISA_AUTO:
    case SVM_ISA_PORTABLE: return 1;
    case SVM_ISA_AVX2: return cpu_has_avx2();
    case SVM_ISA_AVX512: return cpu_has_avx512();
    }
    return 0;
}

static svm_isa best_isa(void) {
    if (cpu_has_avx512()) return SVM_ISA_AVX512;
    if (cpu_has_avx2()) return SVM_ISA_AVX2;
    return SVM_ISA_PORTABLE;
}

static int g_isa = -1; /* -1: not yet chosen */
static int g_threads = 0;

svm_isa svm_current_isa(void) {
    int isa = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
    if (isa >= 0) return (svm_isa)isa;
    svm_isa chosen = best_isa();
    const char *env = getenv("SVM_ISA");
    if (env && *env) {
        if (!strcmp(env, "portable")) chosen = SVM_ISA_PORTABLE;
        else if (!strcmp(env, "avx2") && cpu_has_avx2()) chosen = SVM_ISA_AVX2;
        else if (!strcmp(env, "avx512") && cpu_has_avx512()) chosen = SVM_ISA_AVX512;
    }
    __atomic_store_n(&g_isa, (int)chosen, __ATOMIC_RELAXED);
    return chosen;
}

svm_status svm_set_isa(svm_isa isa) {
    if ((int)isa < 0 || (int)isa > SVM_ISA_AVX512 || !svm_isa_supported(isa)) return SVM_ERR_UNSUPPORTED;
    if (isa == SVM_ISA_AUTO) isa = best_isa();
    __atomic_store_n(&g_isa, (int)isa, __ATOMIC_RELAXED);
    return SVM_OK;
}

svm_isa svm_get_isa(void) { return svm_current_isa(); }

const char *svm_isa_name(svm_isa isa) {
    switch (isa) {
    case SVM_ISA_AUTO: return "auto";
    case SVM_ISA_PORTABLE: return "portable";
    case SVM_ISA_AVX2: return "avx2";
    case SVM_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

void svm_set_threads(int threads) { __atomic_store_n(&g_threads, threads > 0 ? threads : 0, __ATOMIC_RELAXED); }

int svm_threads(void) {
    int t = __atomic_load_n(&g_threads, __ATOMIC_RELAXED);
    if (t <= 0) t = omp_get_max_threads();
    return t > 0 ? t : 1;
}

int svm_get_threads(void) { return svm_threads(); }

const char *svm_status_string(svm_status status) {
    switch (status) {
    case SVM_OK: return "success";
    case SVM_ERR_ARG: return "a required pointer is NULL or a size is invalid";
    case SVM_ERR_TYPE: return "unknown weight type";
    case SVM_ERR_SHAPE: return "cols is not a multiple of the block size";
    case SVM_ERR_MEMORY: return "out of memory";
    case SVM_ERR_UNSUPPORTED: return "this CPU does not support the requested instruction set";
    }
    return "unknown status";
}

/* ---- scratch ---- */
#define SVM_SCRATCH_SLOTS 4
static _Thread_local struct {
    void *ptr;
    size_t size;
} g_scratch[SVM_SCRATCH_SLOTS];

void *svm_scratch(int slot, size_t bytes) {
    if (slot < 0 || slot >= SVM_SCRATCH_SLOTS) return NULL;
    if (bytes == 0) bytes = 64;
    if (g_scratch[slot].size >= bytes) return g_scratch[slot].ptr;
    size_t size = (bytes + bytes / 4 + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, size);
    if (!p) return NULL;
    free(g_scratch[slot].ptr);
    g_scratch[slot].ptr = p;
    g_scratch[slot].size = size;
    return p;
}

void svm_release_scratch(void) {
    for (int i = 0; i < SVM_SCRATCH_SLOTS; i++) {
        free(g_scratch[i].ptr);
        g_scratch[i].ptr = NULL;
        g_scratch[i].size = 0;
    }
}
