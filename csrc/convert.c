/* Rows of floats to and from a storage precision. */
#include "internal.h"
#include "half.h"

void sv_store_row(void *dst, sparkv_precision p, const float *src, size_t n) {
    if (p == SPARKV_F32) { memcpy(dst, src, n * sizeof(float)); return; }
    uint16_t *h = (uint16_t *)dst;
    if (p == SPARKV_F16) for (size_t i = 0; i < n; i++) h[i] = sv_float_to_half(src[i]);
    else for (size_t i = 0; i < n; i++) h[i] = sv_float_to_bf16(src[i]);
}

void sv_load_row(float *dst, const void *src, sparkv_precision p, size_t n) {
    if (p == SPARKV_F32) { memcpy(dst, src, n * sizeof(float)); return; }
    const uint16_t *h = (const uint16_t *)src;
    if (p == SPARKV_F16) for (size_t i = 0; i < n; i++) dst[i] = sv_half_to_float(h[i]);
    else for (size_t i = 0; i < n; i++) dst[i] = sv_bf16_to_float(h[i]);
}

float sv_load_one(const void *src, sparkv_precision p, size_t i) {
    if (p == SPARKV_F32) return ((const float *)src)[i];
    const uint16_t *h = (const uint16_t *)src;
    return p == SPARKV_F16 ? sv_half_to_float(h[i]) : sv_bf16_to_float(h[i]);
}
