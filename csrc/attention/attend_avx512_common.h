/* Register-level helpers shared by the AVX-512 decode-attention kernels (attend_avx512.c,
 * attend_sampled_avx512.c): conversions, expands, prefetch and the 16-vector reduction. Included
 * only from x86-64 GNU C files, after <immintrin.h>. */
#ifndef SV_ATTEND_AVX512_COMMON_H
#define SV_ATTEND_AVX512_COMMON_H

#include "attend.h"

#if defined(__GNUC__) && !defined(__clang__)
/* gcc cannot see that the kernels' passes index their register arrays below G * U <= 16 and read only the
 * entries they wrote (cnt <= U, cb <= CB): its array-bounds and maybe-uninitialized warnings on
 * the runtime-G instances are false positives. */
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define SV_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi2,avx2,fma,f16c,bmi2,popcnt")))
#define SV_INLINE static inline __attribute__((always_inline)) SV_TARGET

/* Keeps the compiler from folding a load into the instruction that uses it (an empty asm that
 * "changes" the register): compilers fold a load into vexpand, whose memory form is microcoded. */
#define SV_IN_REGISTER(x) __asm__("" : "+v"(x))

/* Tokens ahead of the one being scored whose data is requested. */
#define SV_PREFETCH_TOKENS 16u

SV_INLINE __m512 widen16(__m256i raw, sparkv_precision p) {
    return p == SPARKV_F16 ? _mm512_cvtph_ps(raw)
                           : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

/* The next popcount(m) stored values at *ptr placed in the lanes set in m (0 elsewhere). A full
 * load then a register expand: the memory forms of vexpand are microcoded and slow on some cores.
 * The load may run past the packed values into the page's zeroed padding. */
SV_INLINE __m512 expand16(const uint8_t *ptr, __mmask16 m, sparkv_precision p) {
    if (p == SPARKV_F32) {
        __m512 x = _mm512_loadu_ps(ptr);
        SV_IN_REGISTER(x);
        return _mm512_maskz_expand_ps(m, x);
    }
    __m256i x = _mm256_loadu_si256((const __m256i *)ptr);
    SV_IN_REGISTER(x);
    return widen16(_mm256_maskz_expand_epi16(m, x), p);
}

SV_INLINE __m512 load16(const uint8_t *ptr, sparkv_precision p) {
    if (p == SPARKV_F32) return _mm512_loadu_ps(ptr);
    return widen16(_mm256_loadu_si256((const __m256i *)ptr), p);
}

/* The lanes of m loaded from ptr, 0 in the others; nothing outside m is read. */
SV_INLINE __m512 load16_masked(const uint8_t *ptr, __mmask16 m, sparkv_precision p) {
    if (p == SPARKV_F32) return _mm512_maskz_loadu_ps(m, ptr);
    return widen16(_mm256_maskz_loadu_epi16(m, ptr), p);
}

/* Software prefetch of `bytes` from p, one request per cache line. Decode attention streams
 * several arrays per page (keys, values, masks); without it the loads wait on memory latency
 * instead of overlapping with the arithmetic (KERNEL-NOTES: about 16 tokens ahead). */
SV_INLINE void prefetch_lines(const void *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

/* r[k] = sum of the 16 lanes of v[k], for 16 vectors at once: a transpose-and-add tree of 45
 * shuffles and adds instead of 16 separate horizontal reductions (about 8 each). */
SV_INLINE __m512 reduce16x16(const __m512 *v) {
    __m512 s[8], t[4];
    for (int k = 0; k < 8; k++)
        s[k] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]), _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
    for (int k = 0; k < 4; k++)
        t[k] = _mm512_add_ps(_mm512_shuffle_ps(s[2 * k], s[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(s[2 * k], s[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 p01 = _mm512_add_ps(_mm512_shuffle_f32x4(t[0], t[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f32x4(t[0], t[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 p23 = _mm512_add_ps(_mm512_shuffle_f32x4(t[2], t[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f32x4(t[2], t[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(p01, p23, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(p01, p23, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Per-token accumulators of up to 16 tokens, reduced together: part[g][i] is query head g's
 * accumulator for token i0 + i; fac (NULL: 1) the tokens' key scale factors. */
SV_INLINE void flush_scores(__m512 (*part)[16], uint32_t G, uint32_t i0, uint32_t cnt, const float *fac,
                            float *scores) {
    for (uint32_t i = cnt; i < 16; i++)
        for (uint32_t g = 0; g < G; g++) part[g][i] = _mm512_setzero_ps();
    const __mmask16 m = cnt >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cnt) - 1u);
    const __m512 f = fac ? _mm512_maskz_loadu_ps(m, fac) : _mm512_set1_ps(1.0f);
    for (uint32_t g = 0; g < G; g++)
        _mm512_mask_storeu_ps(scores + g * SV_BLOCK + i0, m, fac ? _mm512_mul_ps(reduce16x16(part[g]), f)
                                                                  : reduce16x16(part[g]));
}

#endif
