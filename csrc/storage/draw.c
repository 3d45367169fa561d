/* Deterministic draws of sampled (GAUSSIAN / EXPONENTIAL) recovery: the per-token hash, the
 * published standardized draw and the recovered magnitude of one pruned channel, in float32
 * arithmetic exactly as sparkv.h documents it (the SIMD kernels repeat these operations lane-wise). */
#include "internal.h"
#include "draw.h"
#include "half.h"

#include <math.h>

uint64_t sv_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t sv_token_hash(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token) {
    return sv_mix64(sv_draw_head_hash(seed, layer, kv_head) ^ token);
}

float sparkv_draw_standard(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token, uint32_t channel,
                           sparkv_recovery recovery) {
    const uint32_t bin = sv_draw_bin(sv_draw_key(sv_token_hash(seed, layer, kv_head, token)), channel);
    if (recovery == SPARKV_RECOVER_GAUSSIAN) return sv_draw_normal[bin];
    if (recovery == SPARKV_RECOVER_EXPONENTIAL) return sv_draw_sqrt_exponential[bin];
    return 0.0f;
}

/* sqrt(x / c) of one pruned channel. Each line is one float32 operation (the build disables FMA
 * contraction), so the result is the same everywhere. */
float sv_draw_magnitude(sparkv_recovery rec, const uint16_t *stats, uint32_t draw_key, uint32_t channel) {
    const uint32_t bin = sv_draw_bin(draw_key, channel);
    const float a = sv_half_to_float(stats[SV_STAT_MEAN]);
    const float e = sv_half_to_float(stats[SV_STAT_THETA]);
    if (rec == SPARKV_RECOVER_EXPONENTIAL) {
        /* x = m * E, so sqrt(x) = a * sqrt(E); clipped at sqrt(theta) = e */
        const float r = a * sv_draw_sqrt_exponential[bin];
        return r < e ? r : e;
    }
    const float b = sv_half_to_float(stats[SV_STAT_SD]);
    const float m = a * a, s = b * b, theta = e * e;
    const float sz = s * sv_draw_normal[bin];
    float x = m + sz;
    x = x > 0.0f ? x : 0.0f;
    x = x < theta ? x : theta;
    return sqrtf(x);
}
