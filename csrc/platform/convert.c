/* Rows of floats to and from a storage precision. The plain-C conversions in half.h are the
 * reference; on x86-64 with F16C the same rounding is done 8 values at a time. */
#include "internal.h"
#include "cpu_features.h"
#include "half.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <stdatomic.h>
#define SV_HAVE_F16C_PATH 1

/* -1: not checked yet. Atomic because OpenMP threads of prefill may be the first to ask; every
 * thread computes the same value, so a relaxed store/load is enough. */
static _Atomic int f16c_state = -1;

static int have_f16c(void) {
    int state = atomic_load_explicit(&f16c_state, memory_order_relaxed);
    if (state < 0) {
        state = sv_cpu_f16c();
        atomic_store_explicit(&f16c_state, state, memory_order_relaxed);
    }
    return state;
}

__attribute__((target("avx,f16c"))) static size_t store_half_f16c(uint16_t *h, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}

__attribute__((target("avx,f16c"))) static size_t load_half_f16c(float *dst, const uint16_t *h, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    return i;
}
#endif

void sv_store_row(void *dst, sparkv_precision p, const float *src, size_t n) {
    if (p == SPARKV_F32) { memcpy(dst, src, n * sizeof(float)); return; }
    uint16_t *h = (uint16_t *)dst;
    size_t i = 0;
    if (p == SPARKV_F16) {
#ifdef SV_HAVE_F16C_PATH
        if (have_f16c()) i = store_half_f16c(h, src, n);
#endif
        for (; i < n; i++) h[i] = sv_float_to_half(src[i]);
    } else {
        for (; i < n; i++) h[i] = sv_float_to_bf16(src[i]);
    }
}

void sv_load_row(float *dst, const void *src, sparkv_precision p, size_t n) {
    if (p == SPARKV_F32) { memcpy(dst, src, n * sizeof(float)); return; }
    const uint16_t *h = (const uint16_t *)src;
    size_t i = 0;
    if (p == SPARKV_F16) {
#ifdef SV_HAVE_F16C_PATH
        if (have_f16c()) i = load_half_f16c(dst, h, n);
#endif
        for (; i < n; i++) dst[i] = sv_half_to_float(h[i]);
    } else {
        for (; i < n; i++) dst[i] = sv_bf16_to_float(h[i]);
    }
}

float sv_load_one(const void *src, sparkv_precision p, size_t i) {
    if (p == SPARKV_F32) return ((const float *)src)[i];
    const uint16_t *h = (const uint16_t *)src;
    return p == SPARKV_F16 ? sv_half_to_float(h[i]) : sv_bf16_to_float(h[i]);
}
