/* Plain-C bodies of the attention block kernels (see svm_attn_path in internal.h). They are the
 * specification and the portable path; attention_avx2.c / attention_avx512.c hold the SIMD kernels. */
#ifndef SVM_ATTENTION_KERNELS_H
#define SVM_ATTENTION_KERNELS_H

#include "internal.h"

#define SVM_KB 64 /* keys per block */

/* S[i][j] = sum over d ascending of Q[i][d] * Kt[d][j]. */
static inline __attribute__((always_inline)) void scores_body(const float *Q, int nq, int hd, const float *Kt,
                                                              float *S) {
    for (int i = 0; i < nq; i++) {
        float acc[SVM_KB];
        for (int j = 0; j < SVM_KB; j++) acc[j] = 0.0f;
        const float *qi = Q + (size_t)hd * i;
        for (int d = 0; d < hd; d++) {
            const float qd = qi[d];
            const float *kd = Kt + (size_t)SVM_KB * d;
            for (int j = 0; j < SVM_KB; j++) acc[j] += qd * kd[j];
        }
        for (int j = 0; j < SVM_KB; j++) S[(size_t)SVM_KB * i + j] = acc[j];
    }
}

/* O[i][d] = alpha[i] * O[i][d], then += P[i][j] * V[j][d] over j ascending. */
static inline __attribute__((always_inline)) void accumulate_body(const float *P, int nq, int nk, const float *V,
                                                                  size_t ldv, int hd, const float *alpha, float *O) {
    for (int i = 0; i < nq; i++) {
        float *oi = O + (size_t)hd * i;
        const float *pi = P + (size_t)SVM_KB * i;
        const float a = alpha[i];
        for (int d = 0; d < hd; d++) oi[d] *= a;
        for (int j = 0; j < nk; j++) {
            const float p = pi[j];
            const float *vj = V + ldv * j;
            for (int d = 0; d < hd; d++) oi[d] += p * vj[d];
        }
    }
}

static inline __attribute__((always_inline)) void softmax_body(float *S, int nq, const int *visible, float *m,
                                                               float *l, float *alpha) {
    for (int i = 0; i < nq; i++) {
        float *s = S + (size_t)SVM_KB * i;
        const int vis = visible[i];
        if (vis <= 0) {
            for (int j = 0; j < SVM_KB; j++) s[j] = 0.0f;
            alpha[i] = 1.0f;
            continue;
        }
        float mx = m[i];
        for (int j = 0; j < vis; j++) mx = s[j] > mx ? s[j] : mx;
        for (int j = 0; j < SVM_KB; j++) s[j] = j < vis ? svm_exp2f(s[j] - mx) : 0.0f;
        float sum = 0.0f;
        for (int j = 0; j < vis; j++) sum += s[j];
        const float a = svm_exp2f(m[i] - mx); /* exp2(-inf) = 0 on the first block */
        alpha[i] = a;
        l[i] = l[i] * a + sum;
        m[i] = mx;
    }
}

#endif
