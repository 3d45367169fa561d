#define _POSIX_C_SOURCE 199309L
/* Timing helpers for `sparkv` benchmarks and for measuring the kernels on a new machine. */
#include "internal.h"

#include <stdlib.h>
#include <math.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill(float *x, size_t n, uint64_t seed, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * ((float)(splitmix(&seed) >> 40) / 16777216.0f * 2.0f - 1.0f);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The fastest call: on a shared machine the minimum is the stable statistic. */
static double fastest(double *t, int n) {
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return t[0];
}

double svm_bench_matmul(svm_type type, int rows, int cols, int n, int iters, int exact) {
    size_t rb = svm_row_bytes(type, cols);
    if (rb == 0 || rows <= 0 || n <= 0) return (double)SVM_ERR_ARG;
    if (iters < 1) iters = 1;
    float *wf = malloc(sizeof(float) * (size_t)rows * cols);
    void *w = malloc(rb * (size_t)rows);
    float *x = malloc(sizeof(float) * (size_t)n * cols), *y = malloc(sizeof(float) * (size_t)n * rows);
    double *t = malloc(sizeof(double) * (size_t)iters);
    double result = (double)SVM_ERR_MEMORY;
    if (wf && w && x && y && t) {
        fill(wf, (size_t)rows * cols, 1, 0.05f);
        fill(x, (size_t)n * cols, 2, 1.0f);
        svm_quantize(type, wf, rows, cols, w);
        svm_status st = exact ? svm_matmul_exact(w, type, rows, cols, x, n, y) : svm_matmul(w, type, rows, cols, x, n, y);
        if (st != SVM_OK) result = (double)st;
        else {
            for (int i = 0; i < iters; i++) {
                double t0 = now();
                if (exact) svm_matmul_exact(w, type, rows, cols, x, n, y);
                else svm_matmul(w, type, rows, cols, x, n, y);
                t[i] = now() - t0;
            }
            result = fastest(t, iters);
        }
    }
    free(wf);
    free(w);
    free(x);
    free(y);
    free(t);
    return result;
}

double svm_bench_attention(int n_tokens, int n_q_heads, int n_kv_heads, int head_dim, int iters) {
    if (n_tokens <= 0 || n_q_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0) return (double)SVM_ERR_ARG;
    if (iters < 1) iters = 1;
    size_t nq = (size_t)n_tokens * n_q_heads * head_dim, nk = (size_t)n_tokens * n_kv_heads * head_dim;
    float *q = malloc(sizeof(float) * nq), *k = malloc(sizeof(float) * nk), *v = malloc(sizeof(float) * nk),
          *o = malloc(sizeof(float) * nq);
    double *t = malloc(sizeof(double) * (size_t)iters);
    double result = (double)SVM_ERR_MEMORY;
    if (q && k && v && o && t) {
        fill(q, nq, 3, 1.0f);
        fill(k, nk, 4, 1.0f);
        fill(v, nk, 5, 1.0f);
        float scale = 1.0f / sqrtf((float)head_dim);
        svm_status st = svm_causal_attention(q, k, v, n_tokens, n_q_heads, n_kv_heads, head_dim, scale, o);
        if (st != SVM_OK) result = (double)st;
        else {
            for (int i = 0; i < iters; i++) {
                double t0 = now();
                svm_causal_attention(q, k, v, n_tokens, n_q_heads, n_kv_heads, head_dim, scale, o);
                t[i] = now() - t0;
            }
            result = fastest(t, iters);
        }
    }
    free(q);
    free(k);
    free(v);
    free(o);
    free(t);
    return result;
}
