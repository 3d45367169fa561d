/* Row-wise and element-wise kernels of the forward pass: RMSNorm, residual add, SwiGLU, softmax.
 * Each is cheap next to the matmuls; SwiGLU's exp is the vectorizable svm_exp2f so the loop
 * vectorizes (the same plain C compiled for AVX2 / AVX-512 gives bit-identical results: no
 * reductions, no fused multiply-add). Large inputs are split over threads in fixed chunks. */
#include "internal.h"

#include <math.h>
#include "omp_compat.h" /* csrc/platform/: OpenMP or single-threaded stand-ins */

#define EW_CHUNK 16384 /* elements per thread chunk of the element-wise kernels */

static int ew_threads(int64_t n) {
    int nth = svm_threads();
    int64_t chunks = (n + EW_CHUNK - 1) / EW_CHUNK;
    return chunks < nth ? (int)(chunks > 0 ? chunks : 1) : nth;
}

void svm_rmsnorm(const float *x, const float *weight, int n, int dim, float eps, float *out) {
    if (!x || !out || n <= 0 || dim <= 0) return;
    int nth = (int64_t)n * dim >= 4 * EW_CHUNK ? svm_threads() : 1;
    (void)nth; /* read only by the OpenMP pragma */
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)dim * i;
        float *oi = out + (size_t)dim * i;
        double ss = 0.0;
        for (int j = 0; j < dim; j++) ss += (double)xi[j] * (double)xi[j];
        float s = (float)(1.0 / sqrt(ss / dim + (double)eps));
        if (weight)
            for (int j = 0; j < dim; j++) oi[j] = (xi[j] * s) * weight[j];
        else
            for (int j = 0; j < dim; j++) oi[j] = xi[j] * s;
    }
}

void svm_add(const float *a, const float *b, int64_t n, float *out) {
    if (!a || !b || !out || n <= 0) return;
    int nth = ew_threads(n);
    (void)nth; /* read only by the OpenMP pragma */
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int64_t c = 0; c < n; c += EW_CHUNK) {
        int64_t e = c + EW_CHUNK < n ? c + EW_CHUNK : n;
        for (int64_t i = c; i < e; i++) out[i] = a[i] + b[i];
    }
}

/* silu(g) * u with exp(-g) = exp2(-g * log2 e). */
static inline __attribute__((always_inline)) void swiglu_body(const float *g, const float *u, int64_t n, float *o) {
    for (int64_t i = 0; i < n; i++) {
        float e = svm_exp2f(g[i] * -1.44269504088896341f);
        o[i] = (g[i] / (1.0f + e)) * u[i];
    }
}

static void swiglu_portable(const float *g, const float *u, int64_t n, float *o) { swiglu_body(g, u, n, o); }
#if SVM_X86
__attribute__((target("avx2,fma"))) static void swiglu_avx2(const float *g, const float *u, int64_t n, float *o) {
    swiglu_body(g, u, n, o);
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) static void swiglu_avx512(const float *g, const float *u,
                                                                                      int64_t n, float *o) {
    swiglu_body(g, u, n, o);
}
#endif

void svm_swiglu(const float *gate, const float *up, int64_t n, float *out) {
    if (!gate || !up || !out || n <= 0) return;
    void (*fn)(const float *, const float *, int64_t, float *) = swiglu_portable;
#if SVM_X86
    svm_isa isa = svm_current_isa();
    if (isa == SVM_ISA_AVX512) fn = swiglu_avx512;
    else if (isa == SVM_ISA_AVX2) fn = swiglu_avx2;
#endif
    int nth = ew_threads(n);
    (void)nth; /* read only by the OpenMP pragma */
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int64_t c = 0; c < n; c += EW_CHUNK) {
        int64_t e = c + EW_CHUNK < n ? c + EW_CHUNK : n;
        fn(gate + c, up + c, e - c, out + c);
    }
}

void svm_softmax(float *x, int n, int dim) {
    if (!x || n <= 0 || dim <= 0) return;
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)dim * i;
        float mx = xi[0];
        for (int j = 1; j < dim; j++) mx = xi[j] > mx ? xi[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < dim; j++) {
            xi[j] = expf(xi[j] - mx);
            sum += xi[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < dim; j++) xi[j] *= inv;
    }
}

/* RoPE: angle a = pos * base^(-2i/d) and its cos/sin in double, rounded to float once; the table
 * form lets a forward pass compute them once for all layers and for both Q and K. */
svm_status svm_rope_table(const int32_t *positions, int n_tokens, int head_dim, float base, float *table) {
    if (!positions || !table || n_tokens <= 0 || head_dim <= 0 || (head_dim & 1)) return SVM_ERR_ARG;
    const int half = head_dim / 2;
    double theta[512];
    for (int i0 = 0; i0 < half; i0 += 512) {
        int i1 = i0 + 512 < half ? i0 + 512 : half;
        for (int i = i0; i < i1; i++) theta[i - i0] = pow((double)base, -2.0 * i / head_dim);
        int nth = (int64_t)n_tokens * (i1 - i0) >= 8192 ? svm_threads() : 1;
        (void)nth; /* read only by the OpenMP pragma */
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int t = 0; t < n_tokens; t++) {
            float *row = table + (size_t)head_dim * t;
            for (int i = i0; i < i1; i++) {
                double a = (double)positions[t] * theta[i - i0];
                row[2 * i] = (float)cos(a);
                row[2 * i + 1] = (float)sin(a);
            }
        }
    }
    return SVM_OK;
}

void svm_rope_apply(float *x, int n_tokens, int n_heads, int head_dim, const float *table) {
    if (!x || !table || n_tokens <= 0 || n_heads <= 0 || head_dim <= 0 || (head_dim & 1)) return;
    const int half = head_dim / 2;
    int nth = (int64_t)n_tokens * n_heads * head_dim >= 4 * EW_CHUNK ? svm_threads() : 1;
    (void)nth; /* read only by the OpenMP pragma */
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int t = 0; t < n_tokens; t++) {
        const float *cs = table + (size_t)head_dim * t;
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + ((size_t)n_heads * t + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float x0 = xh[2 * i], x1 = xh[2 * i + 1];
                float c = cs[2 * i], s = cs[2 * i + 1];
                xh[2 * i] = x0 * c - x1 * s;
                xh[2 * i + 1] = x0 * s + x1 * c;
            }
        }
    }
}

svm_status svm_rope_adjacent(float *x, int n_tokens, int n_heads, int head_dim, const int32_t *positions,
                             float base) {
    if (!x || !positions || n_tokens <= 0 || n_heads <= 0 || head_dim <= 0 || (head_dim & 1)) return SVM_ERR_ARG;
    float *table = svm_scratch(3, sizeof(float) * (size_t)n_tokens * head_dim);
    if (!table) return SVM_ERR_MEMORY;
    svm_rope_table(positions, n_tokens, head_dim, base, table);
    svm_rope_apply(x, n_tokens, n_heads, head_dim, table);
    return SVM_OK;
}
