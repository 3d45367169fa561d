/*
 * test_util.h — check counting, allocation and seeded data shared by the C tests. The naive
 * float64 reference of the library (storage rounding, quantization, prefill pipeline, attention)
 * is reference.h / reference.c.
 */
#ifndef SPARKV_TEST_UTIL_H
#define SPARKV_TEST_UTIL_H

#include "sparkv.h"
#include "reference.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- checks ---------------------------------------------------------------------------------- */

static int g_passed, g_failed;
static const char *g_section = "";

static inline int check_impl(int ok, const char *what, const char *file, int line) {
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        fprintf(stderr, "FAIL [%s] %s:%d: %s\n", g_section, file, line, what);
    }
    return ok;
}

#define CHECK(cond) check_impl(!!(cond), #cond, __FILE__, __LINE__)
/* A check with a formatted explanation printed on failure. */
#define CHECKF(cond, ...)                                                                             \
    do {                                                                                              \
        if (!check_impl(!!(cond), #cond, __FILE__, __LINE__)) {                                       \
            fprintf(stderr, "      ");                                                                \
            fprintf(stderr, __VA_ARGS__);                                                             \
            fprintf(stderr, "\n");                                                                    \
        }                                                                                             \
    } while (0)
#define CHECK_OK(call)                                                                                \
    do {                                                                                              \
        sparkv_status st_ = (call);                                                                   \
        CHECKF(st_ == SPARKV_OK, "%s returned %d (%s)", #call, (int)st_, sparkv_status_string(st_));  \
    } while (0)

static inline void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test: out of memory\n");
        exit(2);
    }
    return p;
}
static inline float *falloc(size_t n) { return (float *)xmalloc(n * sizeof(float)); }
static inline double *dalloc(size_t n) { return (double *)xmalloc(n * sizeof(double)); }

/* ---- seeded data --------------------------------------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static inline uint64_t rng_next(rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double rng_uniform(rng *r) { return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static inline float rng_normal(rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
static inline void fill_normal(rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(r);
}

/* One check: |got - want| <= atol + rtol * |want| everywhere; reports the worst element. */
#define CHECK_CLOSE(got, want, n, atol, rtol, what) check_close_impl(got, want, n, atol, rtol, what, __FILE__, __LINE__)
static inline int check_close_impl(const float *got, const double *want, size_t n, double atol, double rtol, const char *what,
                            const char *file, int line) {
    size_t worst = 0;
    double worst_excess = -INFINITY;
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]), lim = atol + rtol * fabs(want[i]);
        if (!(err <= lim)) ok = 0;
        double excess = isnan(err) ? INFINITY : err - lim;
        if (excess > worst_excess) { worst_excess = excess; worst = i; }
    }
    if (!check_impl(ok, what, file, line))
        fprintf(stderr, "      worst element %zu: got %.9g, want %.9g\n", worst, (double)got[worst], want[worst]);
    return ok;
}

/* A shape with every field set (struct_size from sparkv_default_shape). */
static inline sparkv_shape make_shape(uint32_t n_layers, uint32_t n_q, uint32_t n_kv, uint32_t d, uint64_t capacity) {
    sparkv_shape s = sparkv_default_shape();
    s.n_layers = n_layers;
    s.n_q_heads = n_q;
    s.n_kv_heads = n_kv;
    s.head_dim = d;
    s.capacity = capacity;
    return s;
}

#endif
