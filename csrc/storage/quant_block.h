/* Scale folding for the SIMD kernels over I8/I4 rows, shared by every ISA: each attend_*.c includes
 * this file under its own target options (like softmax_block.h), so the same C is vectorized per ISA.
 *
 * A per-token scale s is applied once per token instead of once per element: the score of a SparK
 * or ThinK key is s * (q . (k_int + fill / s)), and a value row's scale multiplies the token's
 * softmax weight (p * s) instead of its elements. A zero scale means every integer is 0 (see
 * sparkv_precision), so it is replaced by 1 — the fill then enters unscaled and the integers
 * contribute nothing either way. */
#ifndef SV_QUANT_BLOCK_H
#define SV_QUANT_BLOCK_H

#include "half.h"

/* fp16 to float of one scale: an ISA may define it as its conversion instruction (same result). */
#ifndef SV_HALF
#define SV_HALF sv_half_to_float
#endif

/* The factor of a scale: s, or 1 when s is 0. */
static inline float sv_scale_factor(uint16_t scale) {
    const float s = SV_HALF(scale);
    return s != 0.0f ? s : 1.0f;
}

/* w[g * SV_BLOCK + i] = p[g * SV_BLOCK + i] * f[i] for i < SV_BLOCK (f zero past the block's tokens). */
static inline __attribute__((always_inline)) void sv_fold_weights(const float *p, const float *f, uint32_t g,
                                                                  float *w) {
    for (uint32_t k = 0; k < g; k++)
        for (uint32_t i = 0; i < SV_BLOCK; i++) w[k * SV_BLOCK + i] = p[k * SV_BLOCK + i] * f[i];
}

/* f[i] = the scale factor of tokens t0 .. t0 + n - 1 (scales[(t0 + i) * stride]), 0 past n. */
static inline void sv_token_factors(const uint16_t *scales, size_t stride, uint32_t t0, uint32_t n, float *f) {
    for (uint32_t i = 0; i < SV_BLOCK; i++) f[i] = i < n ? sv_scale_factor(scales[(size_t)(t0 + i) * stride]) : 0.0f;
}

/* lg[j] = the scale group of channel j (j / quant_group), without a division per channel. */
static inline void sv_lane_groups(uint32_t d, uint32_t quant_group, int32_t *lg) {
    int32_t g = 0;
    for (uint32_t j = 0, r = 0; j < d; j++) {
        lg[j] = g;
        if (++r == quant_group) { r = 0; g++; }
    }
}

#endif
