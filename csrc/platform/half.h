/* IEEE binary16 and bfloat16 conversions in plain C (round to nearest, ties to even).
 * These are the reference conversions; F16C instructions give identical results. */
#ifndef SPARKV_HALF_H
#define SPARKV_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t sv_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float sv_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float sv_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return sv_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* subnormal: man * 2^-24, exact in float */
        float f = (float)man * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    return sv_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t sv_float_to_half(float f) {
    uint32_t x = sv_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: overflow */
    if (ax < 0x38800000u) {
        /* result is subnormal or zero: scale so the integer part is the half mantissa */
        if (ax < 0x33000000u) return (uint16_t)sign; /* < 2^-25: rounds to 0 */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax - 0x38000000u; /* rebias exponent 127 -> 15 */
    uint32_t lsb = (r >> 13) & 1u;
    r += 0xfffu + lsb;
    return (uint16_t)(sign | (r >> 13));
}

static inline float sv_bf16_to_float(uint16_t b) { return sv_bits_f32((uint32_t)b << 16); }

static inline uint16_t sv_float_to_bf16(float f) {
    uint32_t x = sv_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

#endif
