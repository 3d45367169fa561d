/*
 * test_threads.c — the threading contract of include/sparkv.h, run under ThreadSanitizer
 * (`make test-tsan`).
 *
 * What the header promises, and what each section checks from concurrent pthreads:
 *  - calls that only read a cache (attend, memory_report, inspect_*, layer_tokens, shape / policy /
 *    kernel / threads queries) may run concurrently with each other on one handle: several
 *    threads attend on one cache (every kernel the CPU has, every storage mode) and get the
 *    single-threaded result bit for bit, while other threads report and inspect;
 *  - distinct handles are independent: threads create, fill, query and free their own caches;
 *  - error details are per thread: threads fail on the same handle (and without a handle) with
 *    their own arguments, and each reads its own detail back, while other threads succeed.
 * Mutating calls (prefill, append, set_kernel, free) are never overlapped with other calls on the
 * same handle here: the header forbids it.
 *
 * OpenMP: `make test-tsan` builds the library without -fopenmp (the pragmas are ignored) because
 * libomp is not TSan-instrumented and its own synchronisation would be reported as races; the
 * policies below also set threads = 1 so that an OpenMP build run under TSan stays on one thread
 * per call. The threads here are the caller's pthreads.
 */
#define _POSIX_C_SOURCE 200809L /* pthread barriers under -std=c11 */
#include "sparkv.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Relaxed counters: they must not synchronise the threads (a seq_cst increment after each call
 * would create the happens-before edges that hide the library's own races from TSan). */
static atomic_int g_passed, g_failed;

static int check_impl(int ok, const char *what, const char *file, int line) {
    if (ok) atomic_fetch_add_explicit(&g_passed, 1, memory_order_relaxed);
    else {
        atomic_fetch_add_explicit(&g_failed, 1, memory_order_relaxed);
        fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what);
    }
    return ok;
}
#define CHECK(cond) check_impl(!!(cond), #cond, __FILE__, __LINE__)
#define CHECK_OK(call)                                                                                  \
    do {                                                                                                \
        sparkv_status st_ = (call);                                                                     \
        if (!check_impl(st_ == SPARKV_OK, #call, __FILE__, __LINE__))                                   \
            fprintf(stderr, "      status %d (%s)\n", (int)st_, sparkv_status_string(st_));            \
    } while (0)

#define N_THREADS 4
#define N_QUERIES 6
#define ROUNDS 3

/* ---- data ------------------------------------------------------------------------------------- */

static uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* Deterministic values in [-1, 1) from (seed, index): any thread can regenerate them. */
static void fill(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((double)(mix(seed * 0x1000003ull + i) >> 11) * 0x1p-52 - 1.0);
}
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "test_threads: out of memory\n"); exit(2); }
    return p;
}

typedef struct config {
    const char *name;
    sparkv_shape shape;
    sparkv_policy policy;
    uint64_t prompt, appended;
} config;

static config make_config(int which) {
    config c;
    c.shape = sparkv_default_shape();
    c.shape.n_layers = 2;
    c.shape.n_kv_heads = 2;
    c.shape.n_q_heads = 4;
    c.shape.head_dim = 64;
    c.shape.capacity = 1024;
    c.policy = sparkv_default_policy();
    c.policy.threads = 1; /* see the file comment: no OpenMP team under TSan */
    c.prompt = 300;       /* two pages: a full one and a partial one */
    c.appended = 5;
    switch (which) {
    case 0:
        c.name = "SparK r=0.8 MEAN f16";
        c.policy.key_prune_ratio = 0.8f;
        break;
    case 1:
        c.name = "ThinK r=0.5 i8 keys, i4 values";
        c.policy.key_pruning = SPARKV_KEYS_THINK;
        c.policy.key_prune_ratio = 0.5f;
        c.policy.recovery = SPARKV_RECOVER_NONE;
        c.policy.sign_bits = 0;
        c.policy.key_precision = SPARKV_I8;
        c.policy.value_precision = SPARKV_I4;
        c.policy.quant_group = 16;
        break;
    case 2:
        c.name = "SnapKV + SparK GAUSSIAN, value pruning, bf16";
        c.policy.key_prune_ratio = 0.5f;
        c.policy.recovery = SPARKV_RECOVER_GAUSSIAN;
        c.policy.eviction = SPARKV_EVICT_SNAPKV;
        c.policy.evict_budget = 100;
        c.policy.value_prune_ratio = 0.25f;
        c.policy.key_precision = SPARKV_BF16;
        break;
    default:
        c.name = "dense f32 keys, i8 values";
        c.policy.key_precision = SPARKV_F32;
        c.policy.value_precision = SPARKV_I8;
        c.prompt = 40;
        break;
    }
    return c;
}

/* Build and fill a cache of a config; every layer is prefilled and gets `appended` tokens. */
static sparkv_cache *build(const config *c, uint64_t seed) {
    sparkv_cache *cache = NULL;
    CHECK_OK(sparkv_cache_create(&c->shape, &c->policy, &cache));
    if (!cache) return NULL;
    const uint32_t d = c->shape.head_dim, nkv = c->shape.n_kv_heads, nq = c->shape.n_q_heads;
    const uint64_t n = c->prompt, w = 16;
    float *k = (float *)xmalloc(sizeof(float) * nkv * n * d), *v = (float *)xmalloc(sizeof(float) * nkv * n * d);
    float *q = (float *)xmalloc(sizeof(float) * nq * w * d);
    for (uint32_t l = 0; l < c->shape.n_layers; l++) {
        fill(k, (size_t)nkv * n * d, seed + 10 * l + 1);
        fill(v, (size_t)nkv * n * d, seed + 10 * l + 2);
        fill(q, (size_t)nq * w * d, seed + 10 * l + 3);
        CHECK_OK(sparkv_prefill(cache, l, k, v, n, q, w));
        for (uint64_t t = 0; t < c->appended; t++) {
            fill(k, (size_t)nkv * d, seed + 1000 * (t + 1) + l);
            fill(v, (size_t)nkv * d, seed + 2000 * (t + 1) + l);
            CHECK_OK(sparkv_append(cache, l, k, v));
        }
    }
    free(k); free(v); free(q);
    return cache;
}

/* ---- shared-handle readers ---------------------------------------------------------------------- */

typedef struct shared {
    const config *cfg;
    sparkv_cache *cache;
    pthread_barrier_t *start;
    const float *queries;  /* [N_QUERIES][nq][d] */
    const float *expected; /* [n_layers][N_QUERIES][nq][d], single-threaded attend */
    sparkv_memory mem;     /* single-threaded memory report, all layers */
    const float *keys0;    /* inspect_key of layer 0, head 1, every token: [n][d] */
    const float *values0;  /* inspect_value of the same */
    const float *qn0;      /* inspect_qnorm of layer 0, head 1: [d] */
    int role;              /* set per thread: 0 attend, 1 report/inspect */
} shared;

static void *attend_worker(void *arg) {
    shared *s = (shared *)arg;
    const uint32_t d = s->cfg->shape.head_dim, nq = s->cfg->shape.n_q_heads;
    float *out = (float *)xmalloc(sizeof(float) * nq * d);
    pthread_barrier_wait(s->start);
    int same = 1, ok = 1;
    for (int r = 0; r < ROUNDS; r++)
        for (uint32_t l = 0; l < s->cfg->shape.n_layers; l++)
            for (int i = 0; i < N_QUERIES; i++) {
                ok &= sparkv_attend(s->cache, l, s->queries + (size_t)i * nq * d, out) == SPARKV_OK;
                same &= memcmp(out, s->expected + ((size_t)l * N_QUERIES + i) * nq * d, sizeof(float) * nq * d) == 0;
            }
    CHECK(ok);
    CHECK(same); /* concurrent attends give the single-threaded result, bit for bit */
    free(out);
    return NULL;
}

static void *report_worker(void *arg) {
    shared *s = (shared *)arg;
    const uint32_t d = s->cfg->shape.head_dim;
    const uint64_t n = sparkv_layer_tokens(s->cache, 0);
    float *buf = (float *)xmalloc(sizeof(float) * d);
    uint8_t mask[32];
    pthread_barrier_wait(s->start);
    int ok = 1;
    for (int r = 0; r < ROUNDS; r++) {
        sparkv_memory m = SPARKV_MEMORY_INIT;
        ok &= sparkv_memory_report(s->cache, SPARKV_ALL_LAYERS, &m) == SPARKV_OK;
        ok &= memcmp(&m, &s->mem, sizeof(m)) == 0;
        for (uint64_t t = 0; t < n; t++) {
            ok &= sparkv_inspect_key(s->cache, 0, 1, t, mask, buf) == SPARKV_OK;
            ok &= memcmp(buf, s->keys0 + t * d, sizeof(float) * d) == 0;
            ok &= sparkv_inspect_value(s->cache, 0, 1, t, buf) == SPARKV_OK;
            ok &= memcmp(buf, s->values0 + t * d, sizeof(float) * d) == 0;
        }
        float c = 0;
        ok &= sparkv_inspect_qnorm(s->cache, 0, 1, buf, &c) == SPARKV_OK;
        ok &= memcmp(buf, s->qn0, sizeof(float) * d) == 0;
        sparkv_shape sh;
        sparkv_policy po;
        ok &= sparkv_cache_shape(s->cache, &sh) == SPARKV_OK && memcmp(&sh, &s->cfg->shape, sizeof(sh)) == 0;
        ok &= sparkv_cache_policy(s->cache, &po) == SPARKV_OK && memcmp(&po, &s->cfg->policy, sizeof(po)) == 0;
        ok &= sparkv_layer_tokens(s->cache, 1) == sparkv_layer_tokens(s->cache, 0);
        ok &= sparkv_cache_threads(s->cache) == 1;
        ok &= sparkv_cache_kernel(s->cache) != SPARKV_KERNEL_AUTO;
    }
    CHECK(ok); /* concurrent reports and inspections agree with the single-threaded ones */
    free(buf);
    return NULL;
}

static void *shared_worker(void *arg) {
    shared *s = (shared *)arg;
    return s->role == 0 ? attend_worker(arg) : report_worker(arg);
}

static void test_shared_handle(int which) {
    const config cfg = make_config(which);
    sparkv_cache *cache = build(&cfg, 100 + (uint64_t)which);
    if (!cache) return;
    const uint32_t d = cfg.shape.head_dim, nq = cfg.shape.n_q_heads, L = cfg.shape.n_layers;
    float *queries = (float *)xmalloc(sizeof(float) * N_QUERIES * nq * d);
    float *expected = (float *)xmalloc(sizeof(float) * L * N_QUERIES * nq * d);
    fill(queries, (size_t)N_QUERIES * nq * d, 7 + (uint64_t)which);
    const uint64_t n = sparkv_layer_tokens(cache, 0);
    float *keys0 = (float *)xmalloc(sizeof(float) * n * d), *values0 = (float *)xmalloc(sizeof(float) * n * d);
    float qn0[256];
    float c0 = 0;
    for (uint64_t t = 0; t < n; t++) {
        CHECK_OK(sparkv_inspect_key(cache, 0, 1, t, NULL, keys0 + t * d));
        CHECK_OK(sparkv_inspect_value(cache, 0, 1, t, values0 + t * d));
    }
    CHECK_OK(sparkv_inspect_qnorm(cache, 0, 1, qn0, &c0));
    sparkv_memory mem = SPARKV_MEMORY_INIT;
    CHECK_OK(sparkv_memory_report(cache, SPARKV_ALL_LAYERS, &mem));

    const sparkv_kernel kernels[] = {SPARKV_KERNEL_PORTABLE, SPARKV_KERNEL_AVX2, SPARKV_KERNEL_AVX512};
    for (size_t ki = 0; ki < sizeof(kernels) / sizeof(kernels[0]); ki++) {
        if (!sparkv_kernel_supported(kernels[ki])) continue;
        CHECK_OK(sparkv_cache_set_kernel(cache, kernels[ki])); /* a mutation: no other thread is running */
        for (uint32_t l = 0; l < L; l++)
            for (int i = 0; i < N_QUERIES; i++)
                CHECK_OK(sparkv_attend(cache, l, queries + (size_t)i * nq * d,
                                       expected + ((size_t)l * N_QUERIES + i) * nq * d));
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, N_THREADS);
        shared s[N_THREADS];
        pthread_t th[N_THREADS];
        for (int t = 0; t < N_THREADS; t++) {
            s[t] = (shared){&cfg, cache, &start, queries, expected, mem, keys0, values0, qn0, 0};
        }
        for (int phase = 0; phase < 2; phase++) { /* 0: every thread attends; 1: attends and reports mixed */
            for (int t = 0; t < N_THREADS; t++) {
                s[t].role = phase == 0 ? 0 : t % 2;
                pthread_create(&th[t], NULL, shared_worker, &s[t]);
            }
            for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
        }
        pthread_barrier_destroy(&start);
    }
    printf("  shared handle, %d threads: %s\n", N_THREADS, cfg.name);
    sparkv_cache_free(cache);
    free(queries); free(expected); free(keys0); free(values0);
}

/* ---- independent handles -------------------------------------------------------------------------- */

typedef struct own {
    int which;
    pthread_barrier_t *start;
    float *out; /* [N_QUERIES][nq][d] of layer 1 */
} own;

static void *own_worker(void *arg) {
    own *o = (own *)arg;
    const config cfg = make_config(o->which);
    const uint32_t d = cfg.shape.head_dim, nq = cfg.shape.n_q_heads;
    pthread_barrier_wait(o->start);
    sparkv_cache *cache = build(&cfg, 500);
    if (!cache) return NULL;
    float *q = (float *)xmalloc(sizeof(float) * nq * d);
    for (int i = 0; i < N_QUERIES; i++) {
        fill(q, (size_t)nq * d, 900 + (uint64_t)i);
        CHECK_OK(sparkv_attend(cache, 1, q, o->out + (size_t)i * nq * d));
    }
    sparkv_memory m = SPARKV_MEMORY_INIT;
    CHECK_OK(sparkv_memory_report(cache, SPARKV_ALL_LAYERS, &m));
    CHECK(m.n_tokens == 2 * sparkv_layer_tokens(cache, 0));
    sparkv_cache_free(cache);
    free(q);
    return NULL;
}

/* The smallest independent use: a default (dense f16) cache, prefill, attend, free. */
static void *first_use_worker(void *arg) {
    const uint64_t seed = (uint64_t)(uintptr_t)arg;
    sparkv_shape sh = sparkv_default_shape();
    sh.head_dim = 64;
    sparkv_policy p = sparkv_default_policy();
    p.threads = 1;
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(&sh, &p, &c));
    if (!c) return NULL;
    float *k = (float *)xmalloc(sizeof(float) * 64 * 64), *out = (float *)xmalloc(sizeof(float) * 64);
    fill(k, 64 * 64, seed);
    CHECK_OK(sparkv_prefill(c, 0, k, k, 64, NULL, 0));
    CHECK_OK(sparkv_attend(c, 0, k, out));
    sparkv_cache_free(c);
    free(k); free(out);
    return NULL;
}

static void test_independent_handles(void) {
    /* First uses of the library on several threads at once (no barrier: TSan needs no real overlap). */
    pthread_t first[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) pthread_create(&first[t], NULL, first_use_worker, (void *)(uintptr_t)(t + 1));
    for (int t = 0; t < N_THREADS; t++) pthread_join(first[t], NULL);

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    own o[N_THREADS];
    pthread_t th[N_THREADS];
    const config cfg = make_config(0);
    const size_t per = (size_t)N_QUERIES * cfg.shape.n_q_heads * cfg.shape.head_dim;
    for (int t = 0; t < N_THREADS; t++) {
        o[t] = (own){t % 4, &start, (float *)xmalloc(sizeof(float) * per)};
        pthread_create(&th[t], NULL, own_worker, &o[t]);
    }
    for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    /* The same work on this thread alone gives the same bits. */
    for (int t = 0; t < N_THREADS; t++) {
        own solo = {t % 4, NULL, (float *)xmalloc(sizeof(float) * per)};
        pthread_barrier_t one;
        pthread_barrier_init(&one, NULL, 1);
        solo.start = &one;
        own_worker(&solo);
        pthread_barrier_destroy(&one);
        CHECK(memcmp(solo.out, o[t].out, sizeof(float) * per) == 0);
        free(solo.out);
        free(o[t].out);
    }
    printf("  independent handles, %d threads: create, prefill, append, attend, report, free\n", N_THREADS);
}

/* ---- per-thread error details ------------------------------------------------------------------------ */

typedef struct errs {
    int id;
    sparkv_cache *cache;
    pthread_barrier_t *start;
} errs;

static int contains_number(const char *s, unsigned long long v) {
    char num[32];
    snprintf(num, sizeof(num), "%llu", v);
    return s && strstr(s, num) != NULL;
}

static void *error_worker(void *arg) {
    errs *e = (errs *)arg;
    sparkv_shape sh;
    CHECK_OK(sparkv_cache_shape(e->cache, &sh));
    const uint32_t d = sh.head_dim, nq = sh.n_q_heads;
    float *q = (float *)xmalloc(sizeof(float) * nq * d), *out = (float *)xmalloc(sizeof(float) * nq * d);
    fill(q, (size_t)nq * d, 77);
    const uint64_t n = sparkv_layer_tokens(e->cache, 0);
    pthread_barrier_wait(e->start);
    int own_detail = 1, empty_after_ok = 1, null_detail = 1, statuses = 1;
    for (int r = 0; r < 40; r++) {
        /* Odd threads fail on the shared handle with their own arguments, even threads succeed. */
        if (e->id % 2) {
            const uint32_t bad_layer = 1000u + (uint32_t)e->id * 7u + (uint32_t)r;
            statuses &= sparkv_attend(e->cache, bad_layer, q, out) == SPARKV_ERR_LAYER;
            own_detail &= contains_number(sparkv_last_error(e->cache), bad_layer);
            const uint64_t bad_token = n + 100000ull * (uint64_t)e->id + (uint64_t)r;
            statuses &= sparkv_inspect_key(e->cache, 0, 0, bad_token, NULL, out) == SPARKV_ERR_INDEX;
            own_detail &= contains_number(sparkv_last_error(e->cache), bad_token);
            sparkv_memory m = SPARKV_MEMORY_INIT;
            m.struct_size = 1000u + (uint64_t)e->id;
            statuses &= sparkv_memory_report(e->cache, 0, &m) == SPARKV_ERR_STRUCT_SIZE;
            own_detail &= contains_number(sparkv_last_error(e->cache), 1000u + (uint64_t)e->id);
        } else {
            statuses &= sparkv_attend(e->cache, 0, q, out) == SPARKV_OK;
            const char *msg = sparkv_last_error(e->cache);
            empty_after_ok &= msg != NULL && msg[0] == '\0'; /* never another thread's detail */
            statuses &= sparkv_inspect_value(e->cache, 0, 1, n - 1, out) == SPARKV_OK;
        }
        /* Handle-less failures: create with a thread-specific bad head_dim, validate a bad policy. */
        sparkv_shape bad = sparkv_default_shape();
        bad.head_dim = 1000u + (uint32_t)e->id;
        sparkv_policy p = sparkv_default_policy();
        sparkv_cache *c = NULL;
        statuses &= sparkv_cache_create(&bad, &p, &c) == SPARKV_ERR_HEAD_DIM && c == NULL;
        null_detail &= contains_number(sparkv_last_error(NULL), 1000u + (uint64_t)e->id);
        p.window = 0;
        statuses &= sparkv_policy_validate(&p, 64) == SPARKV_ERR_INVALID_POLICY;
        null_detail &= sparkv_last_error(NULL)[0] != '\0';
        statuses &= sparkv_attend(NULL, 0, q, out) == SPARKV_ERR_NULL_POINTER;
        null_detail &= sparkv_last_error(NULL)[0] != '\0';
        /* static, thread-safe functions */
        statuses &= sparkv_status_string(SPARKV_ERR_LAYER) != NULL && sparkv_kernel_name(SPARKV_KERNEL_AVX2) != NULL;
        statuses &= sparkv_topk_keep(0.8f, 128) == 26 && sparkv_version() == SPARKV_VERSION_NUMBER;
    }
    CHECK(statuses);
    CHECK(own_detail);     /* each failing thread reads its own detail, not a neighbour's */
    CHECK(empty_after_ok); /* a thread that never failed on the handle sees no detail of others */
    CHECK(null_detail);
    free(q); free(out);
    return NULL;
}

static void test_error_details(void) {
    const config cfg = make_config(0);
    sparkv_cache *cache = build(&cfg, 300);
    if (!cache) return;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    errs e[N_THREADS];
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        e[t] = (errs){t, cache, &start};
        pthread_create(&th[t], NULL, error_worker, &e[t]);
    }
    for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    sparkv_cache_free(cache);
    printf("  per-thread error details: %d threads failing and succeeding on one handle\n", N_THREADS);
}

int main(void) {
    printf("test_threads: SparKV %s, %d threads per section\n", sparkv_version_string(), N_THREADS);
    /* First: the library's first conversions (lazily initialised CPU-feature state) happen on
     * several threads at once, before the main thread has made any. */
    test_independent_handles();
    for (int which = 0; which < 4; which++) test_shared_handle(which);
    test_error_details();
    const int passed = atomic_load(&g_passed), failed = atomic_load(&g_failed);
    printf("test_threads: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
