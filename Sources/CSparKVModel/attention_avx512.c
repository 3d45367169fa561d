/* AVX-512 attention block kernels: register tiles of 4 query rows x 64 keys (scores) and 4 query
 * rows x 64 dimensions (P.V), 16 accumulators, one fused multiply-add per loaded operand pair.
 * head_dim must be a multiple of 16 (the driver uses the AVX2 kernels otherwise). */
#include "attention_kernels.h"

#include <math.h>

#if SVM_X86
#include <immintrin.h>

#define SVM_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define SVM_INLINE static inline __attribute__((always_inline)) SVM_TARGET

SVM_INLINE void scores_rows(const float *Q, int hd, const float *Kt, float *S, const int R) {
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
    for (int d = 0; d < hd; d++) {
        const float *kd = Kt + (size_t)SVM_KB * d;
        __m512 k0 = _mm512_load_ps(kd), k1 = _mm512_load_ps(kd + 16), k2 = _mm512_load_ps(kd + 32),
               k3 = _mm512_load_ps(kd + 48);
        for (int r = 0; r < R; r++) {
            __m512 qd = _mm512_set1_ps(Q[(size_t)hd * r + d]);
            acc[r][0] = _mm512_fmadd_ps(qd, k0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(qd, k1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(qd, k2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(qd, k3, acc[r][3]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) _mm512_store_ps(S + (size_t)SVM_KB * r + 16 * c, acc[r][c]);
}

static SVM_TARGET void scores_avx512(const float *Q, int nq, int hd, const float *Kt, float *S) {
    int i = 0;
    for (; i + 4 <= nq; i += 4) scores_rows(Q + (size_t)hd * i, hd, Kt, S + (size_t)SVM_KB * i, 4);
    for (; i < nq; i++) scores_rows(Q + (size_t)hd * i, hd, Kt, S + (size_t)SVM_KB * i, 1);
}

/* Rows r < R, dimensions [c0, c0 + 16*C). */
SVM_INLINE void accumulate_rows(const float *P, int nk, const float *V, size_t ldv, int hd, const float *alpha,
                                float *O, int c0, const int R, const int C) {
    __m512 acc[4][4];
    for (int r = 0; r < R; r++) {
        const __m512 a = _mm512_set1_ps(alpha[r]);
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_mul_ps(a, _mm512_loadu_ps(O + (size_t)hd * r + c0 + 16 * c));
    }
    for (int j = 0; j < nk; j++) {
        const float *vj = V + ldv * j + c0;
        __m512 v[4];
        for (int c = 0; c < C; c++) v[c] = _mm512_loadu_ps(vj + 16 * c);
        for (int r = 0; r < R; r++) {
            __m512 p = _mm512_set1_ps(P[(size_t)SVM_KB * r + j]);
            for (int c = 0; c < C; c++) acc[r][c] = _mm512_fmadd_ps(p, v[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) _mm512_storeu_ps(O + (size_t)hd * r + c0 + 16 * c, acc[r][c]);
}

static SVM_TARGET void accumulate_avx512(const float *P, int nq, int nk, const float *V, size_t ldv, int hd,
                                         const float *alpha, float *O) {
    for (int c0 = 0; c0 < hd; c0 += 64) {
        const int C = (hd - c0) / 16 >= 4 ? 4 : (hd - c0) / 16;
        int i = 0;
        for (; i + 4 <= nq; i += 4) {
            const float *p = P + (size_t)SVM_KB * i, *al = alpha + i;
            float *o = O + (size_t)hd * i;
            switch (C) {
            case 4: accumulate_rows(p, nk, V, ldv, hd, al, o, c0, 4, 4); break;
            case 3: accumulate_rows(p, nk, V, ldv, hd, al, o, c0, 4, 3); break;
            case 2: accumulate_rows(p, nk, V, ldv, hd, al, o, c0, 4, 2); break;
            default: accumulate_rows(p, nk, V, ldv, hd, al, o, c0, 4, 1); break;
            }
        }
        for (; i < nq; i++) {
            const float *p = P + (size_t)SVM_KB * i, *al = alpha + i;
            float *o = O + (size_t)hd * i;
            switch (C) {
            case 4: accumulate_rows(p, nk, V, ldv, hd, al, o, c0, 1, 4); break;
            case 3: accumulate_rows(p, nk, V, ldv, hd, al, o, c0, 1, 3); break;
            case 2: accumulate_rows(p, nk, V, ldv, hd, al, o, c0, 1, 2); break;
            default: accumulate_rows(p, nk, V, ldv, hd, al, o, c0, 1, 1); break;
            }
        }
    }
}

/* exp2 of 16 lanes: the polynomial of svm_exp2f evaluated with FMA, 2^n applied by vscalefps
 * (which also flushes x <= -127 to 0 and keeps -inf -> 0). */
SVM_INLINE __m512 exp2_16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.5403530393381606e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    __m512 r = _mm512_scalef_ps(p, n);
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_GE_OQ), r);
}

/* Rows r < R of the online-softmax step (see svm_attn_path): straight-line code over R rows so the
 * rows' reduction and exp2 latency chains overlap. */
SVM_INLINE void softmax_rows(float *S, const int *visible, float *m, float *l, float *alpha, const int R) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 x[4][4];
    __mmask16 mk[4][4];
    float mx[4];
    for (int r = 0; r < R; r++) {
        __m512 vmax = _mm512_set1_ps(m[r]);
        for (int c = 0; c < 4; c++) {
            const int v = visible[r] - 16 * c;
            mk[r][c] = v >= 16 ? (__mmask16)0xffff : v <= 0 ? (__mmask16)0 : (__mmask16)((1u << v) - 1u);
            x[r][c] = _mm512_mask_loadu_ps(ninf, mk[r][c], S + (size_t)SVM_KB * r + 16 * c);
            vmax = _mm512_max_ps(vmax, x[r][c]);
        }
        mx[r] = _mm512_reduce_max_ps(vmax);
    }
    for (int r = 0; r < R; r++) {
        float *s = S + (size_t)SVM_KB * r;
        if (visible[r] <= 0) {
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(s + 16 * c, _mm512_setzero_ps());
            alpha[r] = 1.0f;
            continue;
        }
        const __m512 mv = _mm512_set1_ps(mx[r]);
        __m512 acc = _mm512_setzero_ps();
        for (int c = 0; c < 4; c++) {
            __m512 e = _mm512_maskz_mov_ps(mk[r][c], exp2_16(_mm512_sub_ps(x[r][c], mv)));
            _mm512_storeu_ps(s + 16 * c, e);
            acc = _mm512_add_ps(acc, e);
        }
        const float a = svm_exp2f(m[r] - mx[r]);
        alpha[r] = a;
        l[r] = l[r] * a + _mm512_reduce_add_ps(acc);
        m[r] = mx[r];
    }
}

static SVM_TARGET void softmax_avx512(float *S, int nq, const int *visible, float *m, float *l, float *alpha) {
    int i = 0;
    for (; i + 4 <= nq; i += 4) softmax_rows(S + (size_t)SVM_KB * i, visible + i, m + i, l + i, alpha + i, 4);
    for (; i < nq; i++) softmax_rows(S + (size_t)SVM_KB * i, visible + i, m + i, l + i, alpha + i, 1);
}

const svm_attn_path svm_attn_avx512 = {scores_avx512, softmax_avx512, accumulate_avx512};
#else
const svm_attn_path svm_attn_avx512 = {0, 0, 0};
#endif
