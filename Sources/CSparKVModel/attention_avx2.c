/* AVX2 (+FMA) attention block kernels: register tiles of 2 query rows x 32 keys (scores) and
 * 2 query rows x 32 dimensions (P.V), 8 accumulators of 8 lanes; the online-softmax step with a
 * vectorized exp2. head_dim must be a multiple of 8 (the driver uses the portable kernels
 * otherwise). */
#include "attention_kernels.h"

#include <math.h>

#if SVM_X86
#include <immintrin.h>

#define SVM_TARGET __attribute__((target("avx2,fma,f16c")))
#define SVM_INLINE static inline __attribute__((always_inline)) SVM_TARGET

/* Rows r < R, keys [k0, k0 + 32). */
SVM_INLINE void scores_tile(const float *Q, int hd, const float *Kt, float *S, int k0, const int R) {
    __m256 acc[2][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d++) {
        const float *kd = Kt + (size_t)SVM_KB * d + k0;
        __m256 k[4];
        for (int c = 0; c < 4; c++) k[c] = _mm256_load_ps(kd + 8 * c);
        for (int r = 0; r < R; r++) {
            __m256 qd = _mm256_broadcast_ss(Q + (size_t)hd * r + d);
            for (int c = 0; c < 4; c++) acc[r][c] = _mm256_fmadd_ps(qd, k[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) _mm256_store_ps(S + (size_t)SVM_KB * r + k0 + 8 * c, acc[r][c]);
}

static SVM_TARGET void scores_avx2(const float *Q, int nq, int hd, const float *Kt, float *S) {
    int i = 0;
    for (; i + 2 <= nq; i += 2)
        for (int k0 = 0; k0 < SVM_KB; k0 += 32) scores_tile(Q + (size_t)hd * i, hd, Kt, S + (size_t)SVM_KB * i, k0, 2);
    for (; i < nq; i++)
        for (int k0 = 0; k0 < SVM_KB; k0 += 32) scores_tile(Q + (size_t)hd * i, hd, Kt, S + (size_t)SVM_KB * i, k0, 1);
}

/* Rows r < R, dimensions [c0, c0 + 8*C). */
SVM_INLINE void accumulate_tile(const float *P, int nk, const float *V, size_t ldv, int hd, const float *alpha,
                                float *O, int c0, const int R, const int C) {
    __m256 acc[2][4];
    for (int r = 0; r < R; r++) {
        const __m256 a = _mm256_set1_ps(alpha[r]);
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_mul_ps(a, _mm256_loadu_ps(O + (size_t)hd * r + c0 + 8 * c));
    }
    for (int j = 0; j < nk; j++) {
        const float *vj = V + ldv * j + c0;
        __m256 v[4];
        for (int c = 0; c < C; c++) v[c] = _mm256_loadu_ps(vj + 8 * c);
        for (int r = 0; r < R; r++) {
            __m256 p = _mm256_broadcast_ss(P + (size_t)SVM_KB * r + j);
            for (int c = 0; c < C; c++) acc[r][c] = _mm256_fmadd_ps(p, v[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) _mm256_storeu_ps(O + (size_t)hd * r + c0 + 8 * c, acc[r][c]);
}

#define ACC_CASES(R)                                                                                        \
    switch (C) {                                                                                            \
    case 4: accumulate_tile(p, nk, V, ldv, hd, al, o, c0, R, 4); break;                                     \
    case 3: accumulate_tile(p, nk, V, ldv, hd, al, o, c0, R, 3); break;                                     \
    case 2: accumulate_tile(p, nk, V, ldv, hd, al, o, c0, R, 2); break;                                     \
    default: accumulate_tile(p, nk, V, ldv, hd, al, o, c0, R, 1); break;                                    \
    }

static SVM_TARGET void accumulate_avx2(const float *P, int nq, int nk, const float *V, size_t ldv, int hd,
                                       const float *alpha, float *O) {
    for (int c0 = 0; c0 < hd; c0 += 32) {
        const int C = (hd - c0) / 8 >= 4 ? 4 : (hd - c0) / 8;
        int i = 0;
        for (; i + 2 <= nq; i += 2) {
            const float *p = P + (size_t)SVM_KB * i, *al = alpha + i;
            float *o = O + (size_t)hd * i;
            ACC_CASES(2)
        }
        for (; i < nq; i++) {
            const float *p = P + (size_t)SVM_KB * i, *al = alpha + i;
            float *o = O + (size_t)hd * i;
            ACC_CASES(1)
        }
    }
}

/* exp2 of 8 lanes: svm_exp2f's polynomial with FMA; 2^n built in the exponent field. */
SVM_INLINE __m256 exp2_8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-127.0f));
    __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.5403530393381606e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 r = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_and_ps(r, _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_GE_OQ));
}

SVM_INLINE float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

SVM_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static SVM_TARGET void softmax_avx2(float *S, int nq, const int *visible, float *m, float *l, float *alpha) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int i = 0; i < nq; i++) {
        float *s = S + (size_t)SVM_KB * i;
        const int vis = visible[i];
        if (vis <= 0) {
            for (int c = 0; c < 8; c++) _mm256_storeu_ps(s + 8 * c, _mm256_setzero_ps());
            alpha[i] = 1.0f;
            continue;
        }
        __m256 keep[8], x[8], vmax = _mm256_set1_ps(m[i]);
        for (int c = 0; c < 8; c++) {
            keep[c] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(vis - 8 * c), lane));
            x[c] = _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + 8 * c), keep[c]);
            vmax = _mm256_max_ps(vmax, x[c]);
        }
        const float mx = hmax8(vmax);
        const __m256 mv = _mm256_set1_ps(mx);
        __m256 acc = _mm256_setzero_ps();
        for (int c = 0; c < 8; c++) {
            __m256 e = _mm256_and_ps(exp2_8(_mm256_sub_ps(x[c], mv)), keep[c]);
            _mm256_storeu_ps(s + 8 * c, e);
            acc = _mm256_add_ps(acc, e);
        }
        const float a = svm_exp2f(m[i] - mx);
        alpha[i] = a;
        l[i] = l[i] * a + hsum8(acc);
        m[i] = mx;
    }
}

const svm_attn_path svm_attn_avx2 = {scores_avx2, softmax_avx2, accumulate_avx2};
#else
const svm_attn_path svm_attn_avx2 = {0, 0, 0};
#endif
