/*
 * test_robustness.c — regression tests of the defects found by the correctness audit (issue 11):
 * every test here failed on the library before its fix. Built with ASan + UBSan like test_api.
 *
 *   1. ThinK attention on AVX2 / AVX-512 read past a row into the page's next array (NaN scores).
 *   2. Finite inputs became Inf in f16 storage / fp16 statistics; q.k overflow returned NaN.
 *   3. Recovery was unbounded as a window-query norm went to 0+ (and jumped at exactly 0).
 *   4. Non-finite scores were handled differently by each kernel (UB in the portable one).
 *   8. Error details were written into the handle by const calls; threads and pool_kernel bounds.
 */
#include "test_util.h"

#include <pthread.h>

static const sparkv_kernel KERNELS[] = {SPARKV_KERNEL_PORTABLE, SPARKV_KERNEL_AVX2, SPARKV_KERNEL_AVX512};
#define N_KERNELS (sizeof KERNELS / sizeof KERNELS[0])

static sparkv_shape shape_of(uint32_t n_q, uint32_t n_kv, uint32_t d, uint64_t capacity) {
    sparkv_shape s = sparkv_default_shape();
    s.n_layers = 1;
    s.n_q_heads = n_q;
    s.n_kv_heads = n_kv;
    s.head_dim = d;
    s.capacity = capacity;
    return s;
}

/* Attention of every supported kernel against the float64 reference over the keys and values
 * the cache reports (sparkv_inspect_*: the portable decoder, independent of the SIMD kernels).
 * Returns the number of kernels whose output is off by more than tol * max|ref|. */
static int kernels_off_reference(sparkv_cache *c, uint32_t n_q, uint32_t n_kv, uint32_t d, const float *q,
                                 double tol, const char *what) {
    const uint64_t n = sparkv_layer_tokens(c, 0);
    float *keys = falloc((size_t)n_kv * n * d), *values = falloc((size_t)n_kv * n * d);
    for (uint32_t h = 0; h < n_kv; h++)
        for (uint64_t t = 0; t < n; t++) {
            CHECK_OK(sparkv_inspect_key(c, 0, h, t, NULL, keys + ((size_t)h * n + t) * d));
            CHECK_OK(sparkv_inspect_value(c, 0, h, t, values + ((size_t)h * n + t) * d));
        }
    sparkv_policy p;
    CHECK_OK(sparkv_cache_policy(c, &p));
    double *ref = dalloc((size_t)n_q * d);
    ref_attention(n_q, n_kv, d, n, keys, values, q, ref_attention_scale(&p, d), ref);
    double scale = 0.0;
    for (size_t i = 0; i < (size_t)n_q * d; i++) scale = fabs(ref[i]) > scale ? fabs(ref[i]) : scale;
    float *out = falloc((size_t)n_q * d);
    int off = 0;
    for (size_t k = 0; k < N_KERNELS; k++) {
        if (!sparkv_kernel_supported(KERNELS[k])) continue;
        CHECK_OK(sparkv_cache_set_kernel(c, KERNELS[k]));
        CHECK_OK(sparkv_attend(c, 0, q, out));
        double err = 0.0;
        for (size_t i = 0; i < (size_t)n_q * d; i++) {
            const double e = isfinite(out[i]) ? fabs((double)out[i] - ref[i]) : INFINITY;
            err = e > err ? e : err;
        }
        if (!(err <= tol * scale)) {
            off++;
            fprintf(stderr, "      %s: %s kernel off the reference by %.3g (%.3g of the output scale)\n", what,
                    sparkv_kernel_name(KERNELS[k]), err, err / scale);
        }
    }
    CHECK_OK(sparkv_cache_set_kernel(c, SPARKV_KERNEL_AUTO));
    free(keys); free(values); free(ref); free(out);
    return off;
}

/* 1. ThinK r = 0.8, D = 128, f16 keys with f32 / i8 / i4 values, 512 tokens, 20 seeds: the case
 * the audit reproduced (10-19 of 20 seeds wrong on SIMD before the fix). */
static void test_think_simd_rows_end(void) {
    g_section = "ThinK rows on SIMD kernels";
    const uint32_t d = 128, n_q = 4, n_kv = 2;
    const uint64_t n = 512;
    const sparkv_precision vps[] = {SPARKV_F32, SPARKV_I8, SPARKV_I4};
    for (size_t vi = 0; vi < 3; vi++) {
        int wrong = 0;
        for (uint64_t seed = 1; seed <= 20; seed++) {
            sparkv_policy p = sparkv_default_policy();
            p.key_prune_ratio = 0.8f;
            p.key_pruning = SPARKV_KEYS_THINK;
            p.recovery = SPARKV_RECOVER_NONE;
            p.sign_bits = 0;
            p.value_precision = vps[vi];
            sparkv_shape s = shape_of(n_q, n_kv, d, n);
            sparkv_cache *c = NULL;
            CHECK_OK(sparkv_cache_create(&s, &p, &c));
            if (!c) return;
            rng r = {seed * 7919};
            float *k = falloc((size_t)n_kv * n * d), *v = falloc((size_t)n_kv * n * d), *qw = falloc((size_t)n_q * 32 * d);
            /* values with every bit pattern in their low halves: read as f16 some are NaN or Inf */
            fill_normal(&r, k, (size_t)n_kv * n * d, 1.0f);
            fill_normal(&r, v, (size_t)n_kv * n * d, 1.0f);
            fill_normal(&r, qw, (size_t)n_q * 32 * d, 1.0f);
            CHECK_OK(sparkv_prefill(c, 0, k, v, n, qw, 32));
            float q[4 * 128];
            fill_normal(&r, q, (size_t)n_q * d, 1.0f);
            wrong += kernels_off_reference(c, n_q, n_kv, d, q, 1e-4, "ThinK") != 0;
            sparkv_cache_free(c);
            free(k); free(v); free(qw);
        }
        CHECKF(wrong == 0, "ThinK with %d-precision values: %d of 20 seeds wrong on some kernel", (int)vps[vi], wrong);
    }
}

/* 2. Finite values beyond a storage precision are errors, not Inf; the cache is unchanged. */
static void test_storage_range(void) {
    g_section = "storage range";
    const uint32_t d = 16;
    struct { sparkv_precision p; float ok, bad; } cases[] = {
        {SPARKV_F16, 65519.0f, 70000.0f},     {SPARKV_F16, -65504.0f, -65520.0f},
        {SPARKV_BF16, 3.38e38f, 3.40e38f},    {SPARKV_I8, 8.3e6f, 8.33e6f},
        {SPARKV_I4, 4.5e5f, 4.6e5f},          {SPARKV_F32, 3.4e38f, 0.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int which = 0; which < 2; which++) { /* 0: keys, 1: values */
            sparkv_policy p = sparkv_default_policy();
            p.quant_group = 8;
            if (which == 0) p.key_precision = cases[i].p;
            else p.value_precision = cases[i].p;
            sparkv_shape s = shape_of(1, 1, d, 64);
            sparkv_cache *c = NULL;
            CHECK_OK(sparkv_cache_create(&s, &p, &c));
            if (!c) return;
            float k[4 * 16], v[4 * 16];
            for (int j = 0; j < 4 * 16; j++) k[j] = v[j] = 0.5f;
            float *x = which == 0 ? k : v;
            if (cases[i].bad != 0.0f) {
                x[2 * 16 + 3] = cases[i].bad;
                sparkv_status st = sparkv_prefill(c, 0, k, v, 4, NULL, 0);
                CHECKF(st == SPARKV_ERR_RANGE, "precision %d, %s %g: prefill returned %d, want SPARKV_ERR_RANGE",
                       (int)cases[i].p, which ? "value" : "key", (double)cases[i].bad, (int)st);
                CHECK(strstr(sparkv_last_error(c), "beyond") != NULL);
                CHECK(sparkv_layer_tokens(c, 0) == 0);
            }
            x[2 * 16 + 3] = cases[i].ok;
            CHECK_OK(sparkv_prefill(c, 0, k, v, 4, NULL, 0));
            if (cases[i].bad != 0.0f) {
                float ka[16], va[16];
                for (int j = 0; j < 16; j++) ka[j] = va[j] = 0.25f;
                (which == 0 ? ka : va)[7] = cases[i].bad;
                CHECK(sparkv_append(c, 0, ka, va) == SPARKV_ERR_RANGE);
                CHECK(sparkv_layer_tokens(c, 0) == 4);
            }
            /* what was accepted is stored finite and attention is finite */
            float key[16], val[16], q[16], out[16];
            CHECK_OK(sparkv_inspect_key(c, 0, 0, 2, NULL, key));
            CHECK_OK(sparkv_inspect_value(c, 0, 0, 2, val));
            CHECK(isfinite(key[3]) && isfinite(val[3]));
            for (int j = 0; j < 16; j++) q[j] = 0.01f;
            sparkv_status st = sparkv_attend(c, 0, q, out);
            /* f32 3.4e38 in a score is an overflow, reported as such (part 4) */
            if (st == SPARKV_OK) {
                int finite = 1;
                for (int j = 0; j < 16; j++) finite &= isfinite(out[j]) != 0;
                CHECK(finite);
            } else {
                CHECK(st == SPARKV_ERR_OVERFLOW);
            }
            sparkv_cache_free(c);
        }
    }
}

/* 2. A recovery statistic that would overflow fp16 (f32 keys around 1e5) is an error. */
static void test_statistic_range(void) {
    g_section = "statistic range";
    const uint32_t d = 8;
    sparkv_policy p = sparkv_default_policy();
    p.key_precision = SPARKV_F32;
    p.key_prune_ratio = 0.5f;
    sparkv_shape s = shape_of(1, 1, d, 16);
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(&s, &p, &c));
    if (!c) return;
    /* qn = |q|: five channels of norm 100 and three of 1 (c ~ 63); keys 1.2e5 in the first five:
     * one of them is pruned with saliency 1.44e12, so sqrt(m / c) ~ 7.6e4 > 65504 */
    float qw[8] = {100, 100, 100, 100, 100, 1, 1, 1};
    float k[2 * 8] = {1.2e5f, 1.2e5f, 1.2e5f, 1.2e5f, 1.2e5f, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    float v[2 * 8] = {0};
    sparkv_status st = sparkv_prefill(c, 0, k, v, 2, qw, 1);
    CHECKF(st == SPARKV_ERR_RANGE, "prefill returned %d (%s), want SPARKV_ERR_RANGE", (int)st, sparkv_last_error(c));
    CHECK(sparkv_layer_tokens(c, 0) == 0);
    for (int j = 0; j < 5; j++) k[j] = 1.0e4f;
    CHECK_OK(sparkv_prefill(c, 0, k, v, 2, qw, 1));
    sparkv_cache_free(c);
}

/* 3. Recovery is bounded as qn_j -> 0+ and continuous at 0: the audit's case, two query heads of
 * one group at +3 and -3 + 1e-4 in one channel (qn ~ 5e-5), gave recovered |k| of 35-56 where
 * every true |k| <= 1; a channel of norm exactly 0 recovered 0. */
static void test_recovery_bound(void) {
    g_section = "recovery bound";
    const uint32_t d = 16, n_q = 2;
    const uint64_t n = 300, nw = 8;
    sparkv_policy p = sparkv_default_policy();
    p.key_prune_ratio = 0.75f;
    p.key_precision = SPARKV_F32;
    sparkv_shape s = shape_of(n_q, 1, d, n);
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(&s, &p, &c));
    if (!c) return;
    rng r = {42};
    float *k = falloc(n * d), *v = falloc(n * d), qw[2 * 8 * 16];
    for (uint64_t i = 0; i < n * d; i++) k[i] = (float)(2.0 * rng_uniform(&r) - 1.0);
    fill_normal(&r, v, n * d, 1.0f);
    fill_normal(&r, qw, (size_t)n_q * nw * d, 1.0f);
    for (uint64_t w = 0; w < nw; w++) {
        qw[(0 * nw + w) * d + 5] = 3.0f;
        qw[(1 * nw + w) * d + 5] = -3.0f + 1e-4f;
        qw[(0 * nw + w) * d + 6] = 2.0f;
        qw[(1 * nw + w) * d + 6] = -2.0f; /* averages to exactly 0 */
    }
    CHECK_OK(sparkv_prefill(c, 0, k, v, n, qw, nw));
    float qn[16], cc;
    CHECK_OK(sparkv_inspect_qnorm(c, 0, 0, qn, &cc));
    CHECKF(qn[5] > 0.0f && qn[5] < 1e-3f * cc && qn[6] == 0.0f, "qn5 %g qn6 %g c %g", (double)qn[5], (double)qn[6],
           (double)cc);
    double worst = 0.0;
    uint64_t jumps = 0;
    for (uint64_t t = 0; t < n; t++) {
        uint8_t mask[2];
        float key[16];
        CHECK_OK(sparkv_inspect_key(c, 0, 0, t, mask, key));
        for (uint32_t j = 0; j < d; j++) worst = fabs(key[j]) > worst ? fabs(key[j]) : worst;
        /* both channels are pruned (saliency ~ 0) and floored to the same norm */
        const int pruned5 = !(mask[0] >> 5 & 1), pruned6 = !(mask[0] >> 6 & 1);
        if (pruned5 && pruned6 && fabsf(key[5]) != fabsf(key[6])) jumps++;
    }
    CHECKF(worst <= 4.0, "largest recovered |k| %.3g; true keys are within [-1, 1] (bound: 4 sqrt(m/c))", worst);
    CHECKF(jumps == 0, "%llu tokens recover channels of norm 5e-5 and 0 differently", (unsigned long long)jumps);
    free(k); free(v);
    sparkv_cache_free(c);
}

/* 4. A non-finite score is SPARKV_ERR_OVERFLOW on every kernel, out untouched; so is an output
 * sum that overflows. Before: NaN (portable, through undefined behaviour) or a dropped token. */
static void test_overflow_is_an_error(void) {
    g_section = "score and output overflow";
    const uint32_t d = 32, n_q = 2;
    const uint64_t n = 300;
    for (int kind = 0; kind < 3; kind++) {
        sparkv_policy p = sparkv_default_policy();
        p.key_precision = p.value_precision = SPARKV_F32;
        sparkv_shape s = shape_of(n_q, 1, d, n);
        sparkv_cache *c = NULL;
        CHECK_OK(sparkv_cache_create(&s, &p, &c));
        if (!c) return;
        rng r = {(uint64_t)kind + 5};
        float *k = falloc(n * d), *v = falloc(n * d), q[2 * 32];
        fill_normal(&r, k, n * d, 1.0f);
        fill_normal(&r, v, n * d, 1.0f);
        fill_normal(&r, q, (size_t)n_q * d, 1.0f);
        if (kind == 0) { /* q = k = 1e20 everywhere: every score overflows */
            for (uint64_t i = 0; i < n * d; i++) k[i] = 1e20f;
            for (uint32_t i = 0; i < n_q * d; i++) q[i] = 1e20f;
        } else if (kind == 1) { /* one token's score overflows: it must not silently vanish */
            for (uint32_t j = 0; j < d; j++) { k[137 * d + j] = 1e20f; q[j] = 1e19f; q[d + j] = 1e19f; }
        } else { /* every score equal, every value 3e38: the weighted sum overflows */
            for (uint64_t i = 0; i < n * d; i++) { k[i] = 0.0f; v[i] = 3e38f; }
        }
        CHECK_OK(sparkv_prefill(c, 0, k, v, n, NULL, 0));
        for (size_t ki = 0; ki < N_KERNELS; ki++) {
            if (!sparkv_kernel_supported(KERNELS[ki])) continue;
            CHECK_OK(sparkv_cache_set_kernel(c, KERNELS[ki]));
            float out[2 * 32];
            memset(out, 0xab, sizeof out);
            sparkv_status st = sparkv_attend(c, 0, q, out);
            CHECKF(st == SPARKV_ERR_OVERFLOW, "case %d, %s kernel: attend returned %d, want SPARKV_ERR_OVERFLOW", kind,
                   sparkv_kernel_name(KERNELS[ki]), (int)st);
            uint8_t untouched = 1;
            for (size_t b = 0; b < sizeof out; b++) untouched &= ((uint8_t *)out)[b] == 0xab;
            CHECK(untouched);
            CHECK(strstr(sparkv_last_error(c), "overflow") != NULL);
        }
        free(k); free(v);
        sparkv_cache_free(c);
    }
}

/* 4. SnapKV's window logits overflow the same way: SPARKV_ERR_OVERFLOW, not NaN pooled scores that
 * left the selection short and the unfilled row indices read (found by fuzz_api). */
static void test_snapkv_overflow_is_an_error(void) {
    g_section = "SnapKV logit overflow";
    const uint32_t d = 64;
    const uint64_t n = 256;
    for (int mode = 0; mode < 3; mode++) { /* dense, SparK, ThinK storage of the survivors */
        sparkv_policy p = sparkv_default_policy();
        p.eviction = SPARKV_EVICT_SNAPKV;
        p.evict_budget = 8;
        p.key_precision = p.value_precision = SPARKV_F32;
        if (mode) p.key_prune_ratio = 0.5f;
        if (mode == 2) { p.key_pruning = SPARKV_KEYS_THINK; p.recovery = SPARKV_RECOVER_NONE; p.sign_bits = 0; }
        sparkv_shape s = shape_of(1, 1, d, n);
        sparkv_cache *c = NULL;
        CHECK_OK(sparkv_cache_create(&s, &p, &c));
        if (!c) return;
        rng r = {77};
        float *k = falloc(n * d), *v = falloc(n * d), q[64];
        for (uint64_t i = 0; i < n * d; i++) k[i] = (float)(2.0 * rng_uniform(&r) - 1.0);
        fill_normal(&r, v, n * d, 1.0f);
        k[5 * d + 3] = 3.4e38f;
        k[9 * d + 3] = -3.4e38f;
        for (uint32_t j = 0; j < d; j++) q[j] = 1.0f;
        q[3] = 100.0f;
        sparkv_status st = sparkv_prefill(c, 0, k, v, n, q, 1);
        CHECKF(st == SPARKV_ERR_OVERFLOW, "mode %d: prefill returned %d (%s)", mode, (int)st, sparkv_last_error(c));
        CHECK(sparkv_layer_tokens(c, 0) == 0);
        free(k); free(v);
        sparkv_cache_free(c);
    }
}

/* 8. Error details are per thread and per handle; const calls write nothing into the handle. */
typedef struct { sparkv_cache *c; int ok; } thread_arg;
static void *fail_on_other_thread(void *arg) {
    thread_arg *a = (thread_arg *)arg;
    sparkv_memory m = {sizeof(sparkv_memory), 0, 0, 0, 0, 0, 0, 0, 0};
    a->ok = sparkv_memory_report(a->c, 99, &m) == SPARKV_ERR_LAYER && strstr(sparkv_last_error(a->c), "99") != NULL;
    return NULL;
}

static void test_error_details(void) {
    g_section = "error details";
    sparkv_shape s = shape_of(1, 1, 16, 16);
    sparkv_policy p = sparkv_default_policy();
    sparkv_cache *a = NULL, *b = NULL;
    CHECK_OK(sparkv_cache_create(&s, &p, &a));
    CHECK_OK(sparkv_cache_create(&s, &p, &b));
    if (!a || !b) return;
    float q[16] = {0}, out[16];
    CHECK(sparkv_attend(a, 5, q, out) == SPARKV_ERR_LAYER);
    const char *msg = sparkv_last_error(a);
    CHECK(strstr(msg, "layer 5") != NULL);
    CHECK(sparkv_last_error(b)[0] == '\0');
    CHECK(sparkv_layer_tokens(b, 0) == 0); /* a call on another handle keeps a's detail */
    CHECK(strstr(sparkv_last_error(a), "layer 5") != NULL);
    pthread_t th;
    thread_arg arg = {a, 0};
    CHECK(pthread_create(&th, NULL, fail_on_other_thread, &arg) == 0);
    pthread_join(th, NULL);
    CHECK(arg.ok);
    CHECK(strstr(sparkv_last_error(a), "layer 5") != NULL); /* the other thread's failure is its own */
    sparkv_cache_free(a);
    sparkv_cache_free(b);
}

static void test_policy_bounds(void) {
    g_section = "policy bounds";
    sparkv_policy p = sparkv_default_policy();
    p.threads = SPARKV_MAX_THREADS;
    CHECK_OK(sparkv_policy_validate(&p, 128));
    p.threads = SPARKV_MAX_THREADS + 1;
    CHECK(sparkv_policy_validate(&p, 128) == SPARKV_ERR_INVALID_POLICY);
    CHECK(strstr(sparkv_last_error(NULL), "threads") != NULL);
    p = sparkv_default_policy();
    p.eviction = SPARKV_EVICT_SNAPKV;
    p.pool_kernel = SPARKV_MAX_POOL_KERNEL;
    CHECK_OK(sparkv_policy_validate(&p, 128));
    p.pool_kernel = SPARKV_MAX_POOL_KERNEL + 2;
    CHECK(sparkv_policy_validate(&p, 128) == SPARKV_ERR_INVALID_POLICY);
    p.pool_kernel = UINT32_MAX;
    CHECK(sparkv_policy_validate(&p, 128) == SPARKV_ERR_INVALID_POLICY);
    CHECK(strcmp(sparkv_status_string(SPARKV_ERR_RANGE), sparkv_status_string((sparkv_status)999)) != 0);
    CHECK(strcmp(sparkv_status_string(SPARKV_ERR_OVERFLOW), sparkv_status_string((sparkv_status)999)) != 0);
}

int main(void) {
    (void)check_close_impl;
    (void)check_close_impl;
    test_think_simd_rows_end();
    test_storage_range();
    test_statistic_range();
    test_recovery_bound();
    test_overflow_is_an_error();
    test_snapkv_overflow_is_an_error();
    test_error_details();
    test_policy_bounds();
    printf("test_robustness: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
