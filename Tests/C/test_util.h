/*
 * test_util.h — check counting, seeded data and the naive references used by test_api.c.
 *
 * Everything here is written from the semantics in include/sparkv.h and notes, not from csrc/:
 * rounding to fp16/bf16 goes through frexp/nearbyint rather than bit tricks, and attention is a
 * plain double-precision softmax.
 */
#ifndef SPARKV_TEST_UTIL_H
#define SPARKV_TEST_UTIL_H

#include "sparkv.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- checks ---------------------------------------------------------------------------------- */

static int g_passed, g_failed;
static const char *g_section = "";

static int check_impl(int ok, const char *what, const char *file, int line) {
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

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test: out of memory\n");
        exit(2);
    }
    return p;
}
static float *falloc(size_t n) { return (float *)xmalloc(n * sizeof(float)); }
static double *dalloc(size_t n) { return (double *)xmalloc(n * sizeof(double)); }

/* ---- seeded data --------------------------------------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_uniform(rng *r) { return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static float rng_normal(rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
static void fill_normal(rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(r);
}

/* ---- storage rounding, independent of the library's bit manipulation --------------------------- */

/* Round |x| to `bits` significant bits, to nearest even, with quantum no finer than 2^min_exp. */
static double round_sig(double x, int bits, int min_exp) {
    if (x == 0.0 || !isfinite(x)) return x;
    int e;
    frexp(fabs(x), &e); /* |x| in [2^(e-1), 2^e) */
    int q = e - bits;
    if (q < min_exp) q = min_exp;
    return copysign(ldexp(nearbyint(ldexp(fabs(x), -q)), q), x);
}
static float round_f16(float x) {
    if (!isfinite(x)) return x;
    if (fabs((double)x) >= 65520.0) return x > 0 ? INFINITY : -INFINITY;
    return (float)round_sig((double)x, 11, -24);
}
static float round_bf16(float x) {
    if (!isfinite(x)) return x;
    return (float)round_sig((double)x, 8, -133);
}
static float round_prec(float x, sparkv_precision p) {
    return p == SPARKV_F16 ? round_f16(x) : p == SPARKV_BF16 ? round_bf16(x) : x;
}
static size_t prec_bytes(sparkv_precision p) { return p == SPARKV_F32 ? 4 : 2; }

/* ---- draws: the hash published in sparkv.h ----------------------------------------------------- */

static uint64_t ref_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static void ref_uniforms(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token, uint32_t channel, double *u1,
                         double *u2) {
    uint64_t h = ref_mix(ref_mix(ref_mix(ref_mix(seed) ^ layer) ^ kv_head) ^ token);
    uint64_t d1 = ref_mix(h ^ channel), d2 = ref_mix(d1);
    *u1 = ((double)(d1 >> 11) + 0.5) * 0x1.0p-53;
    *u2 = ((double)(d2 >> 11) + 0.5) * 0x1.0p-53;
}

/* ---- dense attention in double --------------------------------------------------------------------- */

/* keys, values: [n_kv][n][d] exactly as the cache stores them; q: [n_q][d]; out: [n_q][d]. */
static void ref_attention(uint32_t n_q, uint32_t n_kv, uint32_t d, uint64_t n, const float *keys, const float *values,
                          const float *q, double scale, double *out) {
    const uint32_t g = n_q / n_kv;
    double *s = dalloc(n);
    for (uint32_t i = 0; i < n_q; i++) {
        const uint32_t h = i / g;
        double mx = -INFINITY;
        for (uint64_t t = 0; t < n; t++) {
            double dot = 0.0;
            for (uint32_t j = 0; j < d; j++) dot += (double)q[(size_t)i * d + j] * (double)keys[((size_t)h * n + t) * d + j];
            s[t] = scale * dot;
            if (s[t] > mx) mx = s[t];
        }
        double total = 0.0;
        for (uint64_t t = 0; t < n; t++) {
            s[t] = exp(s[t] - mx);
            total += s[t];
        }
        for (uint32_t j = 0; j < d; j++) {
            double acc = 0.0;
            for (uint64_t t = 0; t < n; t++) acc += s[t] * (double)values[((size_t)h * n + t) * d + j];
            out[(size_t)i * d + j] = acc / total;
        }
    }
    free(s);
}

/* One check: |got - want| <= atol + rtol * |want| everywhere; reports the worst element. */
#define CHECK_CLOSE(got, want, n, atol, rtol, what) check_close_impl(got, want, n, atol, rtol, what, __FILE__, __LINE__)
static int check_close_impl(const float *got, const double *want, size_t n, double atol, double rtol, const char *what,
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

#endif
