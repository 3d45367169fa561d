/* sv_split_token with AVX-512: 16 channels per step, kept keys compressed in registers
 * (vcompressps to a register, then a whole-vector store: the memory form is slow on AMD), and
 * converted to fp16 in registers when the page stores f16 keys. Every output is exact (copies,
 * compares, min and max, round-to-nearest-even fp16 like half.h), so it equals the portable split
 * bit for bit. */
#include "prefill_kernels.h"

#ifdef SV_HAVE_X86_PREFILL
#include <immintrin.h>
#include <math.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))

TARGET uint32_t sv_split_token_avx512(const float *k, const double *s, const uint8_t *mask, uint32_t d, float *kept,
                  uint16_t *kept_f16, double *pruned, uint8_t *sign, double *min_kept, double *max_pruned) {
    __m512d lo = _mm512_set1_pd(INFINITY), hi = _mm512_setzero_pd();
    uint32_t n = 0;
    for (uint32_t j = 0; j < d; j += 16) {
        const int two = d - j >= 16; /* d is a multiple of 8: the last step may hold 8 channels */
        const __mmask16 lanes = two ? 0xffff : 0x00ff;
        const __mmask16 m = (__mmask16)(mask[j / 8] | (two ? mask[j / 8 + 1] << 8 : 0));
        const __m512 kv = _mm512_maskz_loadu_ps(lanes, k + j);
        const __m512 c = _mm512_maskz_compress_ps(m, kv);
        const uint32_t cnt = (uint32_t)_mm_popcnt_u32(m);
        if (kept_f16) /* exactly cnt values: the bytes after the row may already hold the page's masks */
            _mm256_mask_storeu_epi16(kept_f16 + n, (__mmask16)((1u << cnt) - 1u),
                                     _mm512_cvtps_ph(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        else
            _mm512_storeu_ps(kept + n, c); /* kept[] has 16 floats of slack */
        n += cnt;
        if (sign) {
            const uint32_t neg = _mm512_mask_cmp_ps_mask((__mmask16)(lanes & ~m), kv, _mm512_setzero_ps(), _CMP_LT_OQ);
            sign[j / 8] = (uint8_t)neg;
            if (two) sign[j / 8 + 1] = (uint8_t)(neg >> 8);
        }
        for (uint32_t h = 0; h < (two ? 2u : 1u); h++) {
            const __mmask8 mk = (__mmask8)(m >> (8 * h));
            const __m512d sv = _mm512_loadu_pd(s + j + 8 * h);
            const __m512d p = _mm512_maskz_mov_pd((__mmask8)~mk, sv);
            _mm512_storeu_pd(pruned + j + 8 * h, p);
            lo = _mm512_mask_min_pd(lo, mk, lo, sv);
            hi = _mm512_max_pd(hi, p);
        }
    }
    *min_kept = _mm512_reduce_min_pd(lo);
    *max_pruned = _mm512_reduce_max_pd(hi);
    return n;
}
#endif
