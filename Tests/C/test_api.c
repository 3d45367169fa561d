/*
 * test_api.c — the public C API of SparKV, tested from C alone (no Swift).
 *
 * Every function of sparkv.h is called, every documented error path is provoked, and after each
 * failure the test asserts (1) the exact status, (2) a fresh, non-empty sparkv_last_error() and
 * (3) that the cache is exactly as before (memory report, token counts, stored state and attend
 * output, compared bit for bit). Stored keys, masks, statistics-based recovery and attention are
 * checked against an independent reference (reference.c) written from the header's semantics,
 * and so is the policy pipeline: StreamingLLM / SnapKV / PyramidKV eviction (kept token sets
 * found by matching stored values against the original rows), ThinK channel sets, value pruning,
 * the memory report of each, and attention over an evicted cache against dense attention
 * restricted to the kept tokens. Random configurations of every kernel against the reference
 * (I8/I4 included) are in test_differential.c.
 *
 *   make test-c      (builds this file and csrc/ with ASan + UBSan and runs it)
 *
 * The last line printed is "N passed, M failed"; the exit status is non-zero if M > 0.
 */
#include "sparkv.h"
#include "reference.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_D 256u

static const sparkv_kernel ALL_KERNELS[] = {SPARKV_KERNEL_PORTABLE, SPARKV_KERNEL_AVX2, SPARKV_KERNEL_AVX512};

static sparkv_policy spark_policy(float r, sparkv_recovery rec, int sign_bits) {
    sparkv_policy p = sparkv_default_policy();
    p.key_prune_ratio = r;
    p.recovery = rec;
    p.sign_bits = sign_bits;
    return p;
}

/* ThinK: one channel set per head, TOPK, no recovery, no sign bits. */
static sparkv_policy think_policy(float r) {
    sparkv_policy p = sparkv_default_policy();
    p.key_pruning = SPARKV_KEYS_THINK;
    p.key_prune_ratio = r;
    p.recovery = SPARKV_RECOVER_NONE;
    p.sign_bits = 0;
    return p;
}

static int shape_equal(const sparkv_shape *a, const sparkv_shape *b) {
    return a->struct_size == b->struct_size && a->n_layers == b->n_layers && a->n_q_heads == b->n_q_heads &&
           a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim && a->capacity == b->capacity;
}

static int policy_equal(const sparkv_policy *a, const sparkv_policy *b) {
    return a->struct_size == b->struct_size && memcmp(&a->key_prune_ratio, &b->key_prune_ratio, 4) == 0 &&
           a->selection == b->selection && memcmp(&a->cumulative_p, &b->cumulative_p, 4) == 0 &&
           a->cumulative_min_keep == b->cumulative_min_keep && a->cumulative_max_keep == b->cumulative_max_keep &&
           a->recovery == b->recovery && a->sign_bits == b->sign_bits && a->key_precision == b->key_precision &&
           a->value_precision == b->value_precision && a->window == b->window && a->seed == b->seed &&
           a->threads == b->threads && memcmp(&a->attention_scale, &b->attention_scale, 4) == 0 &&
           a->eviction == b->eviction && a->evict_budget == b->evict_budget && a->pool_kernel == b->pool_kernel &&
           memcmp(&a->pyramid_ratio, &b->pyramid_ratio, 4) == 0 && a->sink_tokens == b->sink_tokens &&
           a->recent_tokens == b->recent_tokens && a->key_pruning == b->key_pruning &&
           memcmp(&a->value_prune_ratio, &b->value_prune_ratio, 4) == 0;
}

/* A report ready to be filled: struct_size set, everything else 0. */
static sparkv_memory mem_init(void) {
    sparkv_memory m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof(sparkv_memory);
    return m;
}

static int memory_equal(const sparkv_memory *a, const sparkv_memory *b) {
    return a->struct_size == b->struct_size && a->n_tokens == b->n_tokens && a->key_bytes == b->key_bytes &&
           a->key_meta_bytes == b->key_meta_bytes && a->value_bytes == b->value_bytes &&
           a->value_meta_bytes == b->value_meta_bytes && a->total_bytes == b->total_bytes &&
           a->dense_bytes == b->dense_bytes && a->reserved_bytes == b->reserved_bytes;
}

static void print_memory(const char *what, const sparkv_memory *m) {
    fprintf(stderr, "      %s: tokens %llu key %llu key_meta %llu value %llu value_meta %llu total %llu dense %llu\n", what,
            (unsigned long long)m->n_tokens, (unsigned long long)m->key_bytes, (unsigned long long)m->key_meta_bytes,
            (unsigned long long)m->value_bytes, (unsigned long long)m->value_meta_bytes,
            (unsigned long long)m->total_bytes, (unsigned long long)m->dense_bytes);
}

/* The documented fields of a report (reserved_bytes excepted) against the expected ones. */
#define CHECK_MEMORY(got, want, what) check_memory_impl(got, want, what, __FILE__, __LINE__)
static int check_memory_impl(const sparkv_memory *got, const sparkv_memory *want, const char *what, const char *file,
                             int line) {
    int ok = got->n_tokens == want->n_tokens && got->key_bytes == want->key_bytes &&
             got->key_meta_bytes == want->key_meta_bytes && got->value_bytes == want->value_bytes &&
             got->value_meta_bytes == want->value_meta_bytes && got->total_bytes == want->total_bytes &&
             got->dense_bytes == want->dense_bytes && got->reserved_bytes >= got->total_bytes;
    if (!check_impl(ok, what, file, line)) {
        print_memory("got ", got);
        print_memory("want", want);
        fprintf(stderr, "      reserved %llu\n", (unsigned long long)got->reserved_bytes);
    }
    return ok;
}

static uint32_t popcount_bytes(const uint8_t *m, size_t n) {
    uint32_t c = 0;
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) c += (m[i] >> b) & 1u;
    return c;
}

/* ============================================================================================== */
/* Snapshots: everything observable about a cache, to prove a failed call changed nothing.        */
/* ============================================================================================== */

typedef struct blob {
    unsigned char *data;
    size_t len, cap;
} blob;

static void blob_put(blob *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n) cap *= 2;
        unsigned char *grown = (unsigned char *)realloc(b->data, cap);
        if (!grown) { fprintf(stderr, "test: out of memory\n"); exit(2); }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* The state as a byte string: shape, policy, kernel, memory reports, token counts, qn/c of every
 * head, key (mask + recovered) and value of the first, a middle and the last token of every head,
 * and the attend output of every non-empty layer for a fixed query. */
static blob snap_take(sparkv_cache *c) {
    blob b = {NULL, 0, 0};
    sparkv_shape sh;
    sparkv_policy po;
    if (sparkv_cache_shape(c, &sh) != SPARKV_OK || sparkv_cache_policy(c, &po) != SPARKV_OK) {
        fprintf(stderr, "test: cannot read shape/policy for a snapshot\n");
        exit(2);
    }
    /* Field by field: struct padding is not part of the state. */
    uint64_t fields[] = {sh.n_layers, sh.n_q_heads, sh.n_kv_heads, sh.head_dim, sh.capacity};
    blob_put(&b, fields, sizeof fields);
    uint32_t r_bits, p_bits, scale_bits;
    memcpy(&r_bits, &po.key_prune_ratio, 4);
    memcpy(&p_bits, &po.cumulative_p, 4);
    memcpy(&scale_bits, &po.attention_scale, 4);
    uint32_t pyr_bits, rv_bits;
    memcpy(&pyr_bits, &po.pyramid_ratio, 4);
    memcpy(&rv_bits, &po.value_prune_ratio, 4);
    uint64_t pf[] = {po.struct_size, r_bits, (uint64_t)po.selection, p_bits, po.cumulative_min_keep,
                     po.cumulative_max_keep, (uint64_t)po.recovery, (uint64_t)po.sign_bits,
                     (uint64_t)po.key_precision, (uint64_t)po.value_precision, po.window, po.seed,
                     (uint64_t)po.threads, scale_bits, (uint64_t)po.eviction, po.evict_budget, po.pool_kernel,
                     pyr_bits, po.sink_tokens, po.recent_tokens, (uint64_t)po.key_pruning, rv_bits,
                     (uint64_t)sparkv_cache_threads(c)};
    blob_put(&b, pf, sizeof pf);
    sparkv_kernel k = sparkv_cache_kernel(c);
    blob_put(&b, &k, sizeof k);
    sparkv_memory m = mem_init();
    sparkv_memory_report(c, SPARKV_ALL_LAYERS, &m);
    blob_put(&b, &m, sizeof m);
    const uint32_t d = sh.head_dim;
    float *q = falloc((size_t)sh.n_q_heads * d), *out = falloc((size_t)sh.n_q_heads * d);
    rng r = {777};
    fill_normal(&r, q, (size_t)sh.n_q_heads * d, 1.0f);
    for (uint32_t l = 0; l < sh.n_layers; l++) {
        m = mem_init();
        sparkv_memory_report(c, l, &m);
        blob_put(&b, &m, sizeof m);
        uint64_t n = sparkv_layer_tokens(c, l);
        blob_put(&b, &n, sizeof n);
        for (uint32_t h = 0; h < sh.n_kv_heads; h++) {
            float qn[MAX_D], cc = -1.0f;
            sparkv_inspect_qnorm(c, l, h, qn, &cc);
            blob_put(&b, qn, d * sizeof(float));
            blob_put(&b, &cc, sizeof cc);
            uint64_t probe[3] = {0, n / 2, n ? n - 1 : 0};
            for (int i = 0; n && i < 3; i++) {
                uint8_t mask[MAX_D / 8];
                float key[MAX_D], val[MAX_D];
                sparkv_inspect_key(c, l, h, probe[i], mask, key);
                sparkv_inspect_value(c, l, h, probe[i], val);
                blob_put(&b, mask, d / 8);
                blob_put(&b, key, d * sizeof(float));
                blob_put(&b, val, d * sizeof(float));
            }
        }
        if (n) {
            sparkv_status st = sparkv_attend(c, l, q, out);
            blob_put(&b, &st, sizeof st);
            blob_put(&b, out, (size_t)sh.n_q_heads * d * sizeof(float));
        }
    }
    free(q);
    free(out);
    return b;
}

static int snap_equal(const blob *a, const blob *b) {
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* ============================================================================================== */
/* Expected failures                                                                               */
/* ============================================================================================== */

/* A value no real message contains: errors are primed with it so a stale message is detected. */
#define PRIME_INDEX 4294967280u
#define PRIME_TEXT "4294967280"

static blob g_before;
static char g_last_msg[1024]; /* the message of the last EXPECT_FAIL, saved before the snapshot */
static sparkv_cache *g_snap_cache;

static void prime_error(const sparkv_cache *errh) {
    if (errh) {
        (void)sparkv_inspect_qnorm(errh, 0, PRIME_INDEX, NULL, NULL);
    } else {
        sparkv_policy p = sparkv_default_policy();
        (void)sparkv_policy_validate(&p, PRIME_INDEX);
    }
}

static void expect_fail_begin(sparkv_cache *snapc, const sparkv_cache *errh) {
    g_snap_cache = snapc;
    if (snapc) g_before = snap_take(snapc);
    prime_error(errh);
}

static void expect_fail_end(sparkv_status got, sparkv_status want, const sparkv_cache *errh, const char *expr,
                            const char *file, int line) {
    char what[512];
    snprintf(what, sizeof what, "%s returns %s", expr, sparkv_status_string(want));
    if (!check_impl(got == want, what, file, line))
        fprintf(stderr, "      got %d (%s), want %d\n", (int)got, sparkv_status_string(got), (int)want);
    const char *msg = sparkv_last_error(errh);
    snprintf(g_last_msg, sizeof g_last_msg, "%s", msg ? msg : "");
    int fresh = msg && msg[0] && !strstr(msg, PRIME_TEXT);
    snprintf(what, sizeof what, "%s sets sparkv_last_error(%s)", expr, errh ? "cache" : "NULL");
    if (!check_impl(fresh, what, file, line)) fprintf(stderr, "      last error: \"%s\"\n", msg ? msg : "(null)");
    if (g_snap_cache) {
        blob after = snap_take(g_snap_cache);
        snprintf(what, sizeof what, "cache unchanged after failed %s", expr);
        check_impl(snap_equal(&g_before, &after), what, file, line);
        free(after.data);
        free(g_before.data);
        g_before.data = NULL;
        g_snap_cache = NULL;
    }
}

/* EXPECT_FAIL(status, cache to compare or NULL, handle whose last_error must be set or NULL, call) */
#define EXPECT_FAIL(want, snapc, errh, call) \
    (expect_fail_begin((snapc), (errh)), expect_fail_end((call), (want), (errh), #call, __FILE__, __LINE__))

/* ============================================================================================== */
/* Scenarios: prefill + append one layer, then compare everything with the reference.             */
/* ============================================================================================== */

typedef struct scenario {
    const char *name;
    uint32_t n_q, n_kv, d;
    uint64_t n_prompt, n_window, n_append;
    sparkv_policy policy;
} scenario;

/* Data with the awkward cases built in: outlier channels, an all-equal token, an all-zero token,
 * tie groups, and a channel whose window queries are all zero (qn_j = 0). */
static void make_prompt(rng *r, const scenario *sc, float *keys, float *values, float *qw) {
    const uint32_t d = sc->d;
    const uint64_t n = sc->n_prompt;
    fill_normal(r, keys, (size_t)sc->n_kv * n * d, 1.0f);
    fill_normal(r, values, (size_t)sc->n_kv * n * d, 1.0f);
    for (uint32_t h = 0; h < sc->n_kv; h++) {
        float *kh = keys + (size_t)h * n * d;
        for (uint64_t t = 0; t < n; t++)
            for (uint32_t j = 5 % d; j < d; j += 16) kh[t * d + j] *= 5.0f;
        if (n > 4) {
            for (uint32_t j = 0; j < d; j++) {
                kh[1 * d + j] = 0.5f;                           /* every saliency ties up to qn */
                kh[2 * d + j] = 0.0f;                           /* all-zero key */
                kh[3 * d + j] = (j % 2) ? -0.25f : 0.25f;       /* equal magnitudes, mixed signs */
                kh[4 * d + j] = 0.5f * (float)(j % 4) - 0.75f;  /* four tie groups */
            }
        }
    }
    if (qw) {
        fill_normal(r, qw, (size_t)sc->n_q * sc->n_window * d, 1.0f);
        for (uint32_t i = 0; i < sc->n_q; i++)
            for (uint64_t w = 0; w < sc->n_window; w++) qw[((size_t)i * sc->n_window + w) * d + 3] = 0.0f;
    }
}

static void run_scenario(const scenario *sc, uint64_t seed) {
    g_section = sc->name;
    const uint32_t d = sc->d, n_kv = sc->n_kv, n_q = sc->n_q, g = n_q / n_kv, layer = 1;
    const uint64_t np = sc->n_prompt, na = sc->n_append, n = np + na;
    const sparkv_policy *p = &sc->policy;
    const size_t nb = d / 8;
    sparkv_shape shape = make_shape(2, n_q, n_kv, d, n);
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(&shape, p, &c));
    if (!c) return;

    rng r = {seed};
    float *keys = falloc((size_t)n_kv * np * d), *values = falloc((size_t)n_kv * np * d);
    float *qw = sc->n_window ? falloc((size_t)n_q * sc->n_window * d) : NULL;
    make_prompt(&r, sc, keys, values, qw);
    CHECK_OK(sparkv_prefill(c, layer, keys, values, np, qw, sc->n_window));

    /* Expected state, [n_kv][n][d]. */
    float *ek = falloc((size_t)n_kv * n * d), *ev = falloc((size_t)n_kv * n * d);
    uint8_t *em = (uint8_t *)xmalloc((size_t)n_kv * n * nb);
    float qn[MAX_D * 16], qc[16];
    const uint32_t use = (uint32_t)(sc->n_window < p->window ? sc->n_window : p->window);
    uint64_t kept_total = 0;
    for (uint32_t h = 0; h < n_kv; h++) {
        if (ref_prunes(p, d)) ref_qnorm(qw, sc->n_window, use, g, h, d, qn + (size_t)h * d, &qc[h]);
        else { memset(qn + (size_t)h * d, 0, d * sizeof(float)); qc[h] = 1.0f; }
        for (uint64_t t = 0; t < np; t++) {
            const size_t o = (size_t)h * n + t;
            ref_prompt_token(p, d, layer, h, t, keys + ((size_t)h * np + t) * d, qn + (size_t)h * d, qc[h],
                             em + o * nb, ek + o * d);
            kept_total += popcount_bytes(em + o * nb, nb);
            for (uint32_t j = 0; j < d; j++) ev[o * d + j] = ref_round_prec(values[((size_t)h * np + t) * d + j], p->value_precision);
        }
    }
    float *ka = falloc((size_t)n_kv * d), *va = falloc((size_t)n_kv * d);
    for (uint64_t t = np; t < n; t++) {
        fill_normal(&r, ka, (size_t)n_kv * d, 2.0f);
        fill_normal(&r, va, (size_t)n_kv * d, 1.0f);
        CHECK_OK(sparkv_append(c, layer, ka, va));
        for (uint32_t h = 0; h < n_kv; h++) {
            const size_t o = (size_t)h * n + t;
            memset(em + o * nb, 0xff, nb);
            for (uint32_t j = 0; j < d; j++) {
                ek[o * d + j] = ref_round_prec(ka[(size_t)h * d + j], p->key_precision);
                ev[o * d + j] = ref_round_prec(va[(size_t)h * d + j], p->value_precision);
            }
        }
    }
    CHECK(sparkv_layer_tokens(c, layer) == n);
    CHECK(sparkv_layer_tokens(c, 0) == 0);

    /* Stored state, exactly. */
    uint64_t bad_qn = 0, bad_mask = 0, bad_key = 0, bad_val = 0, first_bad_key = UINT64_MAX;
    for (uint32_t h = 0; h < n_kv; h++) {
        float got_qn[MAX_D], got_c = -1.0f;
        CHECK_OK(sparkv_inspect_qnorm(c, layer, h, got_qn, &got_c));
        bad_qn += memcmp(got_qn, qn + (size_t)h * d, d * sizeof(float)) != 0 || got_c != qc[h];
        for (uint64_t t = 0; t < n; t++) {
            const size_t o = (size_t)h * n + t;
            uint8_t mask[MAX_D / 8];
            float key[MAX_D], val[MAX_D];
            if (sparkv_inspect_key(c, layer, h, t, mask, key) != SPARKV_OK ||
                sparkv_inspect_value(c, layer, h, t, val) != SPARKV_OK) {
                bad_key++;
                continue;
            }
            bad_mask += memcmp(mask, em + o * nb, nb) != 0;
            if (memcmp(key, ek + o * d, d * sizeof(float)) != 0) {
                if (!bad_key++) first_bad_key = o;
            }
            bad_val += memcmp(val, ev + o * d, d * sizeof(float)) != 0;
        }
    }
    CHECKF(bad_qn == 0, "%llu heads with qn/c different from the reference", (unsigned long long)bad_qn);
    CHECKF(bad_mask == 0, "%llu tokens with a kept mask different from the reference", (unsigned long long)bad_mask);
    CHECKF(bad_val == 0, "%llu tokens with a stored value different from the reference", (unsigned long long)bad_val);
    if (!CHECK(bad_key == 0)) {
        float key[MAX_D];
        const uint32_t h = (uint32_t)(first_bad_key / n);
        const uint64_t t = first_bad_key % n;
        sparkv_inspect_key(c, layer, h, t, NULL, key);
        for (uint32_t j = 0; j < d; j++)
            if (memcmp(&key[j], &ek[first_bad_key * d + j], sizeof(float)) != 0) {
                fprintf(stderr, "      %llu keys differ; first: head %u token %llu channel %u: got %.9g want %.9g\n",
                        (unsigned long long)bad_key, h, (unsigned long long)t, j, (double)key[j],
                        (double)ek[first_bad_key * d + j]);
                break;
            }
    }
    if (ref_prunes(p, d) && p->selection == SPARKV_SELECT_TOPK)
        CHECK(kept_total == (uint64_t)n_kv * np * sparkv_topk_keep(p->key_prune_ratio, d));

    /* Memory report, by the documented formula. */
    const size_t kb = ref_prec_bytes(p->key_precision), vb = ref_prec_bytes(p->value_precision);
    sparkv_memory m = mem_init(), all = mem_init(), empty = mem_init();
    CHECK_OK(sparkv_memory_report(c, layer, &m));
    CHECK_OK(sparkv_memory_report(c, SPARKV_ALL_LAYERS, &all));
    CHECK_OK(sparkv_memory_report(c, 0, &empty));
    sparkv_memory want = mem_init();
    want.n_tokens = n; /* per KV head */
    if (ref_prunes(p, d)) {
        want.key_bytes = kept_total * kb + (uint64_t)n_kv * na * d * kb;
        want.key_meta_bytes = (uint64_t)n_kv * np * (nb + (p->sign_bits ? nb : 0) + 2 * ref_n_stats(p, d)) +
                              (uint64_t)n_kv * (d * 4 + 4);
    } else {
        want.key_bytes = (uint64_t)n_kv * n * d * kb;
        want.key_meta_bytes = 0;
    }
    want.value_bytes = (uint64_t)n_kv * n * d * vb;
    want.value_meta_bytes = 0;
    want.total_bytes = want.key_bytes + want.key_meta_bytes + want.value_bytes + want.value_meta_bytes;
    want.dense_bytes = (uint64_t)n_kv * n * d * 4;
    CHECK_MEMORY(&m, &want, "memory report follows the documented formula");
    CHECK(memory_equal(&m, &all));
    CHECK(empty.n_tokens == 0 && empty.total_bytes == 0 && empty.dense_bytes == 0);

    /* Attention against the double reference, with every kernel this CPU supports; the SIMD
     * kernels must also agree closely with the portable one. */
    const double scale = p->attention_scale > 0.0f ? (double)p->attention_scale : 1.0 / sqrt((double)d);
    float *q = falloc((size_t)n_q * d), *out = falloc((size_t)n_q * d), *out_portable = falloc((size_t)n_q * d);
    double *ref = dalloc((size_t)n_q * d), *portable_d = dalloc((size_t)n_q * d);
    for (int trial = 0; trial < 2; trial++) {
        fill_normal(&r, q, (size_t)n_q * d, trial ? 2.0f : 1.0f);
        ref_attention(n_q, n_kv, d, n, ek, ev, q, scale, ref);
        for (size_t k = 0; k < sizeof ALL_KERNELS / sizeof ALL_KERNELS[0]; k++) {
            if (!sparkv_kernel_supported(ALL_KERNELS[k])) continue;
            CHECK_OK(sparkv_cache_set_kernel(c, ALL_KERNELS[k]));
            CHECK(sparkv_cache_kernel(c) == ALL_KERNELS[k]);
            memset(out, 0xff, (size_t)n_q * d * sizeof(float));
            CHECK_OK(sparkv_attend(c, layer, q, out));
            char what[128];
            snprintf(what, sizeof what, "attend (%s kernel) matches the double reference",
                     sparkv_kernel_name(ALL_KERNELS[k]));
            CHECK_CLOSE(out, ref, (size_t)n_q * d, 1e-5, 1e-4, what);
            if (ALL_KERNELS[k] == SPARKV_KERNEL_PORTABLE) {
                memcpy(out_portable, out, (size_t)n_q * d * sizeof(float));
                for (size_t i = 0; i < (size_t)n_q * d; i++) portable_d[i] = out[i];
            } else {
                snprintf(what, sizeof what, "attend (%s kernel) matches the portable kernel",
                         sparkv_kernel_name(ALL_KERNELS[k]));
                CHECK_CLOSE(out, portable_d, (size_t)n_q * d, 1e-5, 1e-4, what);
            }
            /* Same call, same result. */
            float *again = falloc((size_t)n_q * d);
            CHECK_OK(sparkv_attend(c, layer, q, again));
            CHECK(memcmp(again, out, (size_t)n_q * d * sizeof(float)) == 0);
            free(again);
        }
    }
    CHECK_OK(sparkv_cache_set_kernel(c, SPARKV_KERNEL_AUTO));

    free(q); free(out); free(out_portable); free(ref); free(portable_d);
    free(ka); free(va); free(ek); free(ev); free(em);
    free(keys); free(values); free(qw);
    sparkv_cache_free(c);
}

static void test_scenarios(void) {
    scenario sc;
    /* r = 0: dense storage; f32 keys and values, no window queries at all. */
    sc = (scenario){"dense f32", 6, 2, 64, 300, 0, 5, sparkv_default_policy()};
    sc.policy.key_precision = sc.policy.value_precision = SPARKV_F32;
    sc.policy.threads = 2;
    run_scenario(&sc, 1);
    /* r = 0, fp16, an explicit softmax scale, window queries given although not needed. */
    sc = (scenario){"dense f16", 4, 4, 128, 270, 4, 3, sparkv_default_policy()};
    sc.policy.attention_scale = 0.07f;
    run_scenario(&sc, 2);
    sc = (scenario){"dense bf16 keys", 8, 1, 32, 40, 0, 2, sparkv_default_policy()};
    sc.policy.key_precision = SPARKV_BF16;
    sc.policy.value_precision = SPARKV_F32;
    run_scenario(&sc, 3);
    /* r > 0 but floor(r * D) = 0: keeps every channel, so stored dense. */
    sc = (scenario){"topk keeps all", 4, 2, 64, 30, 8, 1, spark_policy(0.001f, SPARKV_RECOVER_MEAN, 1)};
    run_scenario(&sc, 4);
    /* The paper's setting: r = 0.8, D = 128, MEAN with sign bits, window of 16 of 24 queries. */
    sc = (scenario){"topk 0.8 mean signs", 8, 2, 128, 300, 24, 3, spark_policy(0.8f, SPARKV_RECOVER_MEAN, 1)};
    sc.policy.window = 16;
    sc.policy.threads = 2;
    run_scenario(&sc, 5);
    sc = (scenario){"topk 0.5 none f32 keys", 2, 2, 64, 50, 50, 2, spark_policy(0.5f, SPARKV_RECOVER_NONE, 0)};
    sc.policy.key_precision = SPARKV_F32;
    sc.policy.value_precision = SPARKV_BF16;
    run_scenario(&sc, 6);
    sc = (scenario){"topk 0.6 gaussian", 4, 2, 64, 280, 12, 2, spark_policy(0.6f, SPARKV_RECOVER_GAUSSIAN, 1)};
    sc.policy.seed = 12345;
    sc.policy.window = 8;
    run_scenario(&sc, 7);
    sc = (scenario){"topk 0.7 exponential bf16", 6, 3, 64, 70, 10, 2, spark_policy(0.7f, SPARKV_RECOVER_EXPONENTIAL, 0)};
    sc.policy.seed = 9;
    sc.policy.key_precision = SPARKV_BF16;
    run_scenario(&sc, 8);
    sc = (scenario){"cumulative 0.8 mean", 4, 2, 64, 100, 10, 2, spark_policy(0.0f, SPARKV_RECOVER_MEAN, 1)};
    sc.policy.selection = SPARKV_SELECT_CUMULATIVE;
    sc.policy.cumulative_p = 0.8f;
    sc.policy.cumulative_min_keep = 2;
    sc.policy.cumulative_max_keep = 40;
    run_scenario(&sc, 9);
    sc = (scenario){"cumulative keep 0 gaussian", 2, 1, 32, 40, 5, 1, spark_policy(0.0f, SPARKV_RECOVER_GAUSSIAN, 1)};
    sc.policy.selection = SPARKV_SELECT_CUMULATIVE;
    sc.policy.cumulative_p = 0.95f;
    sc.policy.cumulative_min_keep = 0;
    sc.policy.cumulative_max_keep = 0;
    run_scenario(&sc, 10);
    /* Sampled recovery in the float key precisions (I8/I4 keys: test_differential), 520-600 prompt
     * tokens (a full and a partial page) plus appended ones: D = 128 with G = 4 (the SIMD sampled
     * kernels), D = 40 with G = 3 (AVX2's 8-lane kernel with a tail; AVX-512 falls back to the
     * portable one for D not a multiple of 16). Keys, draws included, bit for bit. */
    const sparkv_precision precs[] = {SPARKV_F16, SPARKV_F32, SPARKV_BF16};
    static const char *const sampled_names[2][3] = {
        {"sampled gaussian f16", "sampled gaussian f32 D40", "sampled gaussian bf16 unsigned"},
        {"sampled exponential f16", "sampled exponential f32 D40", "sampled exponential bf16 unsigned"}};
    for (int ri = 0; ri < 2; ri++)
        for (int pi = 0; pi < 3; pi++) {
            const sparkv_recovery rec = ri ? SPARKV_RECOVER_EXPONENTIAL : SPARKV_RECOVER_GAUSSIAN;
            sc = pi == 1 ? (scenario){sampled_names[ri][pi], 6, 2, 40, 520, 8, 3, spark_policy(0.6f, rec, 1)}
                         : (scenario){sampled_names[ri][pi], 8, 2, 128, 600, 16, 3, spark_policy(0.8f, rec, 1)};
            sc.policy.key_precision = precs[pi];
            sc.policy.seed = 77 + (uint64_t)pi;
            sc.policy.sign_bits = pi != 2;
            sc.policy.threads = 2;
            run_scenario(&sc, 20 + (uint64_t)(ri * 3 + pi));
        }
    sc = (scenario){"head_dim 8", 2, 1, 8, 20, 4, 1, spark_policy(0.5f, SPARKV_RECOVER_MEAN, 1)};
    run_scenario(&sc, 11);
    sc = (scenario){"head_dim 256", 4, 2, 256, 260, 32, 2, spark_policy(0.9f, SPARKV_RECOVER_MEAN, 1)};
    run_scenario(&sc, 12);
}

/* ============================================================================================== */
/* Policies: eviction (StreamingLLM, SnapKV, PyramidKV), ThinK, value pruning                      */
/* ============================================================================================== */

/* The references below follow the sparkv_prefill comment of sparkv.h: eviction first (per KV
 * head, survivors kept in prompt order and renumbered 0..kept-1), then key pruning of the
 * survivors (SparK per token, or ThinK per head), then value pruning. */

typedef struct pipe_case {
    const char *name;
    uint32_t n_layers, n_q, n_kv, d;
    uint64_t n_prompt, n_window, n_append;
    sparkv_policy policy;
    int zero_rows;    /* SnapKV ties: the keys of prompt rows t % 4 != 0 are all zero */
    int dup_channels; /* ThinK ties: channel 2m+1 repeats channel 2m in keys and window queries */
    int tie_values;   /* value-pruning ties: value row 5 of every head has magnitudes in three tie groups */
} pipe_case;

static void pipe_data(rng *r, const pipe_case *pc, float *keys, float *values, float *qw) {
    const uint32_t d = pc->d;
    const uint64_t n = pc->n_prompt;
    fill_normal(r, keys, (size_t)pc->n_kv * n * d, 1.0f);
    fill_normal(r, values, (size_t)pc->n_kv * n * d, 1.0f);
    fill_normal(r, qw, (size_t)pc->n_q * pc->n_window * d, 1.0f);
    for (uint32_t h = 0; h < pc->n_kv; h++) {
        float *kh = keys + (size_t)h * n * d, *vh = values + (size_t)h * n * d;
        for (uint64_t t = 0; t < n; t++) {
            for (uint32_t j = 5 % d; j < d; j += 16) kh[t * d + j] *= 4.0f; /* outlier channels */
            if (pc->zero_rows && t % 4 != 0) memset(kh + t * d, 0, d * sizeof(float));
            if (pc->dup_channels)
                for (uint32_t j = 0; j < d; j += 2) kh[t * d + j + 1] = kh[t * d + j];
        }
        if (pc->tie_values && n > 5)
            for (uint32_t j = 0; j < d; j++)
                vh[5 * d + j] = ((j % 2) ? -0.25f : 0.25f) * (float)(1 + j % 3);
    }
    if (pc->dup_channels)
        for (size_t row = 0; row < (size_t)pc->n_q * pc->n_window; row++)
            for (uint32_t j = 0; j < d; j += 2) qw[row * d + j + 1] = qw[row * d + j];
}

/* Which original prompt row of head h each stored token's value is (values are random, so rows are
 * unique): got[i] = row, or UINT64_MAX when no row matches. */
static void match_rows(sparkv_cache *c, uint32_t layer, uint32_t h, const float *vh, uint64_t np, uint64_t nk,
                       uint32_t d, sparkv_precision vp, uint64_t *got) {
    float *stored = falloc((size_t)np * d);
    for (uint64_t t = 0; t < np * d; t++) stored[t] = ref_round_prec(vh[t], vp);
    for (uint64_t i = 0; i < nk; i++) {
        float val[MAX_D];
        got[i] = UINT64_MAX;
        if (sparkv_inspect_value(c, layer, h, i, val) != SPARKV_OK) continue;
        for (uint64_t t = 0; t < np; t++)
            if (memcmp(val, stored + t * d, d * sizeof(float)) == 0) { got[i] = t; break; }
    }
    free(stored);
}

static void print_rows(const char *what, const uint64_t *rows, uint64_t n) {
    fprintf(stderr, "      %s (%llu):", what, (unsigned long long)n);
    for (uint64_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %lld", rows[i] == UINT64_MAX ? -1LL : (long long)rows[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static void run_pipeline(const pipe_case *pc, uint64_t seed) {
    g_section = pc->name;
    const uint32_t d = pc->d, n_kv = pc->n_kv, n_q = pc->n_q, g = n_q / n_kv, L = pc->n_layers;
    const uint64_t np = pc->n_prompt, na = pc->n_append, nw = pc->n_window;
    const sparkv_policy *p = &pc->policy;
    const size_t nb = d / 8, kb = ref_prec_bytes(p->key_precision), vb = ref_prec_bytes(p->value_precision);
    const int kmode = ref_key_mode(p, d), vprune = ref_value_prunes(p, d);
    const uint32_t u = (uint32_t)(nw < p->window ? nw : p->window);
    sparkv_shape shape = make_shape(L, n_q, n_kv, d, np + na);
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(&shape, p, &c));
    if (!c) return;
    if (p->threads > 0) CHECK(sparkv_cache_threads(c) == p->threads);
    CHECK(sparkv_cache_threads(c) >= 1);

    float *keys = falloc((size_t)n_kv * np * d), *values = falloc((size_t)n_kv * np * d);
    float *qw = falloc((size_t)n_q * (nw ? nw : 1) * d);
    float *ka = falloc((size_t)na * n_kv * d + 1), *va = falloc((size_t)na * n_kv * d + 1);
    uint64_t *rows = (uint64_t *)xmalloc(sizeof(uint64_t) * n_kv * np), *got = (uint64_t *)xmalloc(sizeof(uint64_t) * np);
    float *ek = falloc((size_t)n_kv * (np + na) * d), *ev = falloc((size_t)n_kv * (np + na) * d);
    uint8_t *em = (uint8_t *)xmalloc((size_t)n_kv * (np + na) * nb);
    float *q = falloc((size_t)n_q * d), *out = falloc((size_t)n_q * d);
    double *ref = dalloc((size_t)n_q * d);
    sparkv_memory want_all = mem_init();
    const double scale = p->attention_scale > 0.0f ? (double)p->attention_scale : 1.0 / sqrt((double)d);

    for (uint32_t layer = 0; layer < L; layer++) {
        rng r = {seed * 1000 + layer};
        pipe_data(&r, pc, keys, values, qw);
        fill_normal(&r, ka, (size_t)na * n_kv * d, 1.5f);
        fill_normal(&r, va, (size_t)na * n_kv * d, 1.0f);
        CHECK_OK(sparkv_prefill(c, layer, keys, values, np, nw ? qw : NULL, nw));
        for (uint64_t t = 0; t < na; t++) CHECK_OK(sparkv_append(c, layer, ka + t * n_kv * d, va + t * n_kv * d));

        /* Expected survivors, and the state they are stored in. */
        uint64_t nk = 0, kept_channels = 0;
        int counts_agree = 1;
        for (uint32_t h = 0; h < n_kv; h++) {
            const float *kh = keys + (size_t)h * np * d;
            double gap = INFINITY;
            const uint64_t nk_h = ref_evict(p, layer, L, kh, np, qw, nw, u, g, h, d, rows + (size_t)h * np, &gap, NULL);
            if (gap > 0.0 && gap <= 1e-12)
                printf("note: %s, layer %u head %u: SnapKV scores at the budget boundary are within %.3g (relative)\n",
                       pc->name, layer, h, gap);
            if (h == 0) nk = nk_h;
            counts_agree &= nk_h == nk;
        }
        CHECK(counts_agree);
        const uint64_t n = nk + na;
        CHECKF(sparkv_layer_tokens(c, layer) == n, "layer %u holds %llu tokens, want %llu + %llu appended", layer,
               (unsigned long long)sparkv_layer_tokens(c, layer), (unsigned long long)nk, (unsigned long long)na);
        float qn[MAX_D], qc = 1.0f;
        uint64_t bad_qn = 0, bad_mask = 0, bad_key = 0, bad_val = 0, bad_rows = 0;
        for (uint32_t h = 0; h < n_kv; h++) {
            const float *kh = keys + (size_t)h * np * d, *vh = values + (size_t)h * np * d;
            const uint64_t *rh = rows + (size_t)h * np;
            uint8_t think[MAX_D / 8];
            memset(qn, 0, sizeof qn);
            qc = 1.0f;
            if (kmode != REF_KEYS_DENSE) ref_qnorm(qw, nw, u, g, h, d, qn, &qc);
            if (kmode == REF_KEYS_THINK) ref_think_mask(kh, rh, nk, qn, u, d, ref_topk_keep(p->key_prune_ratio, d), think);
            for (uint64_t i = 0; i < nk; i++) {
                const size_t o = (size_t)h * n + i;
                const float *k = kh + rh[i] * d;
                if (kmode == REF_KEYS_SPARK) {
                    ref_prompt_token(p, d, layer, h, i, k, qn, qc, em + o * nb, ek + o * d);
                } else if (kmode == REF_KEYS_THINK) {
                    memcpy(em + o * nb, think, nb);
                    ref_think_key(p, d, think, k, ek + o * d);
                } else {
                    memset(em + o * nb, 0xff, nb);
                    for (uint32_t j = 0; j < d; j++) ek[o * d + j] = ref_round_prec(k[j], p->key_precision);
                }
                kept_channels += popcount_bytes(em + o * nb, nb);
                ref_value_row(p, vh + rh[i] * d, d, ev + o * d);
            }
            for (uint64_t t = 0; t < na; t++) {
                const size_t o = (size_t)h * n + nk + t;
                memset(em + o * nb, 0xff, nb);
                for (uint32_t j = 0; j < d; j++) {
                    ek[o * d + j] = ref_round_prec(ka[(t * n_kv + h) * d + j], p->key_precision);
                    ev[o * d + j] = ref_round_prec(va[(t * n_kv + h) * d + j], p->value_precision);
                }
            }
            /* The survivors, found by their stored values among the original rows. */
            if (!vprune && n == sparkv_layer_tokens(c, layer)) {
                match_rows(c, layer, h, vh, np, nk, d, p->value_precision, got);
                if (memcmp(got, rh, nk * sizeof(uint64_t)) != 0) {
                    if (!bad_rows++) {
                        fprintf(stderr, "      layer %u head %u: kept prompt rows differ\n", layer, h);
                        print_rows("want", rh, nk);
                        print_rows("got ", got, nk);
                    }
                }
                /* Attention over the cache = dense attention restricted to the survivors (exact
                 * storage only: f32 keys and values, no channel pruning). */
                if (h == 0 && kmode == REF_KEYS_DENSE && p->key_precision == SPARKV_F32 &&
                    p->value_precision == SPARKV_F32 && p->eviction != SPARKV_EVICT_NONE) {
                    float *dk = falloc((size_t)n_kv * n * d), *dv = falloc((size_t)n_kv * n * d);
                    int all_found = 1;
                    for (uint32_t hh = 0; hh < n_kv; hh++) {
                        match_rows(c, layer, hh, values + (size_t)hh * np * d, np, nk, d, SPARKV_F32, got);
                        for (uint64_t i = 0; i < n; i++) {
                            const size_t o = ((size_t)hh * n + i) * d;
                            if (i < nk && got[i] == UINT64_MAX) { all_found = 0; continue; }
                            const float *ks = i < nk ? keys + ((size_t)hh * np + got[i]) * d : ka + ((i - nk) * n_kv + hh) * d;
                            const float *vs = i < nk ? values + ((size_t)hh * np + got[i]) * d : va + ((i - nk) * n_kv + hh) * d;
                            memcpy(dk + o, ks, d * sizeof(float));
                            memcpy(dv + o, vs, d * sizeof(float));
                        }
                    }
                    CHECK(all_found);
                    rng rq = {seed + 99};
                    fill_normal(&rq, q, (size_t)n_q * d, 1.0f);
                    ref_attention(n_q, n_kv, d, n, dk, dv, q, scale, ref);
                    CHECK_OK(sparkv_cache_set_kernel(c, SPARKV_KERNEL_PORTABLE));
                    CHECK_OK(sparkv_attend(c, layer, q, out));
                    CHECK_CLOSE(out, ref, (size_t)n_q * d, 1e-5, 1e-4, "attend = dense attention over the kept rows");
                    CHECK_OK(sparkv_cache_set_kernel(c, SPARKV_KERNEL_AUTO));
                    free(dk);
                    free(dv);
                }
            }
            if (kmode == REF_KEYS_SPARK) {
                float got_qn[MAX_D], got_c = -1.0f;
                CHECK_OK(sparkv_inspect_qnorm(c, layer, h, got_qn, &got_c));
                bad_qn += memcmp(got_qn, qn, d * sizeof(float)) != 0 || got_c != qc;
            }
            for (uint64_t i = 0; i < n && n == sparkv_layer_tokens(c, layer); i++) {
                const size_t o = (size_t)h * n + i;
                uint8_t mask[MAX_D / 8];
                float key[MAX_D], val[MAX_D];
                if (sparkv_inspect_key(c, layer, h, i, mask, key) != SPARKV_OK ||
                    sparkv_inspect_value(c, layer, h, i, val) != SPARKV_OK) {
                    bad_key++;
                    continue;
                }
                if (memcmp(mask, em + o * nb, nb) != 0) bad_mask++;
                if (memcmp(key, ek + o * d, d * sizeof(float)) != 0) {
                    if (!bad_key++)
                        for (uint32_t j = 0; j < d; j++)
                            if (memcmp(&key[j], &ek[o * d + j], 4) != 0) {
                                fprintf(stderr, "      layer %u head %u token %llu channel %u: key %.9g, want %.9g\n", layer,
                                        h, (unsigned long long)i, j, (double)key[j], (double)ek[o * d + j]);
                                break;
                            }
                }
                if (memcmp(val, ev + o * d, d * sizeof(float)) != 0) {
                    if (!bad_val++)
                        for (uint32_t j = 0; j < d; j++)
                            if (memcmp(&val[j], &ev[o * d + j], 4) != 0) {
                                fprintf(stderr, "      layer %u head %u token %llu channel %u: value %.9g, want %.9g\n",
                                        layer, h, (unsigned long long)i, j, (double)val[j], (double)ev[o * d + j]);
                                break;
                            }
                }
            }
        }
        CHECKF(bad_rows == 0, "layer %u: kept prompt rows differ from the reference", layer);
        CHECKF(bad_qn == 0, "layer %u: %llu heads with qn/c different from the reference", layer, (unsigned long long)bad_qn);
        CHECKF(bad_mask == 0, "layer %u: %llu tokens with a kept mask different from the reference", layer,
               (unsigned long long)bad_mask);
        CHECKF(bad_key == 0, "layer %u: %llu tokens with a key different from the reference", layer,
               (unsigned long long)bad_key);
        CHECKF(bad_val == 0, "layer %u: %llu tokens with a stored value different from the reference", layer,
               (unsigned long long)bad_val);

        /* Memory report, by the documented formula. */
        sparkv_memory want = mem_init(), m = mem_init();
        want.n_tokens = n;
        if (kmode == REF_KEYS_SPARK) {
            want.key_bytes = kept_channels * kb + (uint64_t)n_kv * na * d * kb;
            want.key_meta_bytes = (uint64_t)n_kv * nk * (nb + (p->sign_bits ? nb : 0) + 2 * ref_n_stats(p, d)) +
                                  (uint64_t)n_kv * (d * 4 + 4);
        } else if (kmode == REF_KEYS_THINK) {
            want.key_bytes = (uint64_t)n_kv * nk * ref_topk_keep(p->key_prune_ratio, d) * kb + (uint64_t)n_kv * na * d * kb;
            want.key_meta_bytes = (uint64_t)n_kv * nb;
        } else {
            want.key_bytes = (uint64_t)n_kv * n * d * kb;
        }
        if (vprune) {
            want.value_bytes = (uint64_t)n_kv * nk * ref_topk_keep(p->value_prune_ratio, d) * vb + (uint64_t)n_kv * na * d * vb;
            want.value_meta_bytes = (uint64_t)n_kv * nk * (nb + 2);
        } else {
            want.value_bytes = (uint64_t)n_kv * n * d * vb;
        }
        want.total_bytes = want.key_bytes + want.key_meta_bytes + want.value_bytes + want.value_meta_bytes;
        want.dense_bytes = (np + na) * n_kv * d * 4; /* every token seen, evicted ones included */
        CHECK_OK(sparkv_memory_report(c, layer, &m));
        char what[160];
        snprintf(what, sizeof what, "layer %u: memory report follows the documented formula", layer);
        CHECK_MEMORY(&m, &want, what);
        want_all.n_tokens += want.n_tokens; want_all.key_bytes += want.key_bytes;
        want_all.key_meta_bytes += want.key_meta_bytes; want_all.value_bytes += want.value_bytes;
        want_all.value_meta_bytes += want.value_meta_bytes; want_all.total_bytes += want.total_bytes;
        want_all.dense_bytes += want.dense_bytes;

        /* Attention against the double reference over the expected state, every kernel. */
        if (n != sparkv_layer_tokens(c, layer)) continue;
        for (int trial = 0; trial < 2; trial++) {
            rng rq = {seed * 7 + (uint64_t)trial};
            fill_normal(&rq, q, (size_t)n_q * d, trial ? 2.0f : 1.0f);
            ref_attention(n_q, n_kv, d, n, ek, ev, q, scale, ref);
            for (size_t kk = 0; kk < sizeof ALL_KERNELS / sizeof ALL_KERNELS[0]; kk++) {
                if (!sparkv_kernel_supported(ALL_KERNELS[kk])) continue;
                CHECK_OK(sparkv_cache_set_kernel(c, ALL_KERNELS[kk]));
                memset(out, 0xff, (size_t)n_q * d * sizeof(float));
                CHECK_OK(sparkv_attend(c, layer, q, out));
                snprintf(what, sizeof what, "layer %u: attend (%s kernel) matches the double reference", layer,
                         sparkv_kernel_name(ALL_KERNELS[kk]));
                CHECK_CLOSE(out, ref, (size_t)n_q * d, 1e-5, 1e-4, what);
            }
        }
        CHECK_OK(sparkv_cache_set_kernel(c, SPARKV_KERNEL_AUTO));
    }
    sparkv_memory all = mem_init();
    CHECK_OK(sparkv_memory_report(c, SPARKV_ALL_LAYERS, &all));
    CHECK_MEMORY(&all, &want_all, "memory report of all layers = sum of the layers' formulas");

    free(keys); free(values); free(qw); free(ka); free(va); free(rows); free(got);
    free(ek); free(ev); free(em); free(q); free(out); free(ref);
    sparkv_cache_free(c);
}

static sparkv_policy evict_policy(sparkv_eviction e, uint32_t budget, uint32_t pool) {
    sparkv_policy p = sparkv_default_policy();
    p.eviction = e;
    p.evict_budget = budget;
    p.pool_kernel = pool;
    return p;
}

static sparkv_policy streaming_policy(uint32_t sinks, uint32_t recent) {
    sparkv_policy p = sparkv_default_policy();
    p.eviction = SPARKV_EVICT_STREAMING;
    p.sink_tokens = sinks;
    p.recent_tokens = recent;
    return p;
}

static void test_policies(void) {
    pipe_case pc;
    /* StreamingLLM. */
    pc = (pipe_case){"streaming f32", 2, 4, 2, 64, 120, 8, 3, streaming_policy(4, 30), 0, 0, 0};
    pc.policy.key_precision = pc.policy.value_precision = SPARKV_F32;
    run_pipeline(&pc, 101);
    pc = (pipe_case){"streaming no sinks f16", 1, 2, 1, 32, 50, 4, 1, streaming_policy(0, 7), 0, 0, 0};
    run_pipeline(&pc, 102);
    pc = (pipe_case){"streaming covers the prompt", 1, 2, 2, 32, 40, 4, 2, streaming_policy(10, 35), 0, 0, 0};
    run_pipeline(&pc, 103);
    pc = (pipe_case){"streaming + spark gaussian", 2, 4, 2, 64, 90, 8, 2, streaming_policy(3, 40), 0, 0, 0};
    pc.policy.key_prune_ratio = 0.6f;
    pc.policy.recovery = SPARKV_RECOVER_GAUSSIAN;
    pc.policy.seed = 77;
    run_pipeline(&pc, 104);
    /* SnapKV. */
    pc = (pipe_case){"snapkv f32 pool 5", 2, 8, 2, 64, 200, 16, 3, evict_policy(SPARKV_EVICT_SNAPKV, 40, 5), 0, 0, 0};
    pc.policy.window = 12;
    pc.policy.threads = 2;
    pc.policy.key_precision = pc.policy.value_precision = SPARKV_F32;
    run_pipeline(&pc, 105);
    pc = (pipe_case){"snapkv f32 pool 7 scale", 1, 4, 4, 32, 90, 6, 1, evict_policy(SPARKV_EVICT_SNAPKV, 9, 7), 0, 0, 0};
    pc.policy.attention_scale = 0.3f;
    pc.policy.key_precision = pc.policy.value_precision = SPARKV_F32;
    run_pipeline(&pc, 106);
    pc = (pipe_case){"snapkv ties pool 1", 1, 2, 2, 32, 80, 4, 1, evict_policy(SPARKV_EVICT_SNAPKV, 30, 1), 1, 0, 0};
    pc.policy.key_precision = pc.policy.value_precision = SPARKV_F32;
    run_pipeline(&pc, 107);
    pc = (pipe_case){"snapkv budget = prompt - window", 1, 2, 1, 32, 40, 8, 1, evict_policy(SPARKV_EVICT_SNAPKV, 32, 3), 0, 0, 0};
    run_pipeline(&pc, 108);
    pc = (pipe_case){"snapkv + spark mean", 2, 4, 2, 64, 150, 10, 2, evict_policy(SPARKV_EVICT_SNAPKV, 50, 3), 0, 0, 0};
    pc.policy.key_prune_ratio = 0.75f;
    run_pipeline(&pc, 109);
    /* PyramidKV: budgets 30, 23, 17, 10; then 56 (clamped from 64), 48, 32, 16; then L = 1. */
    pc = (pipe_case){"pyramidkv 4 layers", 4, 4, 2, 32, 100, 8, 1, evict_policy(SPARKV_EVICT_PYRAMIDKV, 20, 5), 0, 0, 0};
    pc.policy.pyramid_ratio = 3.0f;
    pc.policy.key_precision = pc.policy.value_precision = SPARKV_F32;
    run_pipeline(&pc, 110);
    pc = (pipe_case){"pyramidkv clamped", 4, 2, 1, 32, 64, 8, 0, evict_policy(SPARKV_EVICT_PYRAMIDKV, 40, 3), 0, 0, 0};
    run_pipeline(&pc, 111);
    pc = (pipe_case){"pyramidkv ratio 1", 3, 2, 2, 32, 60, 5, 1, evict_policy(SPARKV_EVICT_PYRAMIDKV, 17, 1), 0, 0, 0};
    pc.policy.pyramid_ratio = 1.0f;
    run_pipeline(&pc, 112);
    pc = (pipe_case){"pyramidkv 1 layer", 1, 2, 2, 32, 60, 5, 1, evict_policy(SPARKV_EVICT_PYRAMIDKV, 13, 3), 0, 0, 0};
    run_pipeline(&pc, 113);
    /* ThinK. */
    pc = (pipe_case){"think 0.5", 2, 4, 2, 64, 150, 16, 2, think_policy(0.5f), 0, 0, 0};
    pc.policy.window = 10;
    run_pipeline(&pc, 114);
    pc = (pipe_case){"think ties bf16", 1, 4, 2, 64, 60, 8, 1, think_policy(0.55f), 0, 1, 0};
    pc.policy.key_precision = SPARKV_BF16;
    run_pipeline(&pc, 115);
    pc = (pipe_case){"think 0.9 f32 d256", 1, 2, 1, 256, 40, 8, 1, think_policy(0.9f), 0, 0, 0};
    pc.policy.key_precision = SPARKV_F32;
    run_pipeline(&pc, 116);
    /* Value pruning. */
    pc = (pipe_case){"values 0.5", 1, 4, 2, 64, 80, 0, 2, sparkv_default_policy(), 0, 0, 1};
    pc.policy.value_prune_ratio = 0.5f;
    run_pipeline(&pc, 117);
    pc = (pipe_case){"values 0.75 bf16 + spark", 2, 4, 2, 64, 70, 8, 1, spark_policy(0.8f, SPARKV_RECOVER_MEAN, 1), 0, 0, 1};
    pc.policy.value_prune_ratio = 0.75f;
    pc.policy.value_precision = SPARKV_BF16;
    run_pipeline(&pc, 118);
    pc = (pipe_case){"values 0.3 f32 d8", 1, 2, 1, 8, 30, 0, 1, sparkv_default_policy(), 0, 0, 1};
    pc.policy.value_prune_ratio = 0.3f;
    pc.policy.value_precision = SPARKV_F32;
    run_pipeline(&pc, 119);
    /* The whole pipeline at once. */
    pc = (pipe_case){"snapkv + think + values", 2, 8, 2, 64, 160, 12, 2, think_policy(0.6f), 0, 0, 1};
    pc.policy.eviction = SPARKV_EVICT_SNAPKV;
    pc.policy.evict_budget = 48;
    pc.policy.value_prune_ratio = 0.5f;
    pc.policy.threads = 2;
    run_pipeline(&pc, 120);
    pc = (pipe_case){"pyramidkv + spark exponential + values", 3, 4, 2, 64, 100, 10, 1,
                     spark_policy(0.7f, SPARKV_RECOVER_EXPONENTIAL, 1), 0, 0, 0};
    pc.policy.eviction = SPARKV_EVICT_PYRAMIDKV;
    pc.policy.evict_budget = 30;
    pc.policy.value_prune_ratio = 0.25f;
    pc.policy.seed = 5;
    run_pipeline(&pc, 121);
}

/* evict_budget larger than the prompt minus the window fails at prefill and changes nothing. */
static void test_eviction_errors(void) {
    g_section = "eviction errors";
    enum { EQ = 4, EKV = 2, ED = 32, ECAP = 128 };
    rng r = {555};
    float *k = falloc((size_t)EKV * ECAP * ED), *v = falloc((size_t)EKV * ECAP * ED), *qw = falloc((size_t)EQ * 8 * ED);
    fill_normal(&r, k, (size_t)EKV * ECAP * ED, 1.0f);
    fill_normal(&r, v, (size_t)EKV * ECAP * ED, 1.0f);
    fill_normal(&r, qw, (size_t)EQ * 8 * ED, 1.0f);
    const sparkv_eviction modes[] = {SPARKV_EVICT_SNAPKV, SPARKV_EVICT_PYRAMIDKV};
    for (int mi = 0; mi < 2; mi++) {
        sparkv_shape s = make_shape(3, EQ, EKV, ED, ECAP);
        sparkv_policy p = evict_policy(modes[mi], 60, 5);
        p.window = 4; /* u = min(4, n_window) */
        sparkv_cache *c = NULL;
        CHECK_OK(sparkv_cache_create(&s, &p, &c));
        if (!c) continue;
        CHECK_OK(sparkv_prefill(c, 0, k, v, 100, qw, 8));
        CHECK_OK(sparkv_append(c, 0, k, v));
        /* n - u = 63 - 4 = 59 < 60; 40 - 4 = 36; n_window 2: 61 - 2 = 59. */
        EXPECT_FAIL(SPARKV_ERR_INVALID_POLICY, c, c, sparkv_prefill(c, 1, k, v, 63, qw, 8));
        EXPECT_FAIL(SPARKV_ERR_INVALID_POLICY, c, c, sparkv_prefill(c, 1, k, v, 40, qw, 8));
        EXPECT_FAIL(SPARKV_ERR_INVALID_POLICY, c, c, sparkv_prefill(c, 1, k, v, 61, qw, 2));
        EXPECT_FAIL(SPARKV_ERR_INVALID_POLICY, c, c, sparkv_prefill(c, 1, k, v, 4, qw, 4));
        /* Scored eviction needs the window queries. */
        EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_prefill(c, 1, k, v, 100, NULL, 0));
        CHECK(sparkv_layer_tokens(c, 1) == 0);
        /* Exactly the budget: every prompt token survives. */
        CHECK_OK(sparkv_prefill(c, 1, k, v, 64, qw, 8));
        CHECK(sparkv_layer_tokens(c, 1) == 64);
        /* Layer 2 of 3: SnapKV keeps all 60 + 2; PyramidKV's last layer keeps 2 * 60 / (1 + 4) + 2. */
        CHECK_OK(sparkv_prefill(c, 2, k, v, 62, qw, 2));
        CHECK(sparkv_layer_tokens(c, 2) == (modes[mi] == SPARKV_EVICT_SNAPKV ? 62u : 26u));
        sparkv_cache_free(c);
    }
    /* StreamingLLM keeps no more than sink + recent, and needs no window queries for dense keys. */
    sparkv_shape s = make_shape(1, EQ, EKV, ED, ECAP);
    sparkv_policy p = streaming_policy(2, 5);
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(&s, &p, &c));
    if (c) {
        CHECK_OK(sparkv_prefill(c, 0, k, v, 50, NULL, 0));
        CHECK(sparkv_layer_tokens(c, 0) == 7);
        sparkv_memory m = mem_init();
        CHECK_OK(sparkv_memory_report(c, 0, &m));
        CHECK(m.n_tokens == 7 && m.dense_bytes == (uint64_t)50 * EKV * ED * 4);
        sparkv_cache_free(c);
    }
    free(k); free(v); free(qw);
}

/* Eviction, ThinK and value pruning give the same stored state and output with 1 and 2 threads. */
static void test_policy_thread_invariance(void) {
    g_section = "policy thread invariance";
    const uint32_t n_q = 4, n_kv = 2, d = 64;
    const uint64_t np = 700, nw = 16;
    rng r = {4711};
    float *k = falloc((size_t)n_kv * np * d), *v = falloc((size_t)n_kv * np * d), *qw = falloc((size_t)n_q * nw * d);
    float q[4 * 64];
    fill_normal(&r, k, (size_t)n_kv * np * d, 1.0f);
    fill_normal(&r, v, (size_t)n_kv * np * d, 1.0f);
    fill_normal(&r, qw, (size_t)n_q * nw * d, 1.0f);
    fill_normal(&r, q, (size_t)n_q * d, 1.0f);
    sparkv_policy pols[3];
    pols[0] = think_policy(0.5f);
    pols[0].eviction = SPARKV_EVICT_SNAPKV;
    pols[0].evict_budget = 300;
    pols[0].value_prune_ratio = 0.5f;
    pols[1] = spark_policy(0.75f, SPARKV_RECOVER_GAUSSIAN, 1);
    pols[1].eviction = SPARKV_EVICT_PYRAMIDKV;
    pols[1].evict_budget = 280;
    pols[2] = spark_policy(0.5f, SPARKV_RECOVER_MEAN, 1);
    pols[2].eviction = SPARKV_EVICT_STREAMING;
    pols[2].sink_tokens = 4;
    pols[2].recent_tokens = 600;
    pols[2].value_prune_ratio = 0.25f;
    for (int pi = 0; pi < 3; pi++) {
        blob state[2];
        for (int threads = 1; threads <= 2; threads++) {
            sparkv_shape s = make_shape(2, n_q, n_kv, d, np);
            sparkv_policy p = pols[pi];
            p.threads = threads;
            sparkv_cache *c = NULL;
            CHECK_OK(sparkv_cache_create(&s, &p, &c));
            if (!c) return;
            CHECK(sparkv_cache_threads(c) == threads);
            CHECK_OK(sparkv_cache_set_kernel(c, SPARKV_KERNEL_PORTABLE));
            CHECK_OK(sparkv_prefill(c, 1, k, v, np, qw, nw));
            blob b = {NULL, 0, 0};
            const uint64_t n = sparkv_layer_tokens(c, 1);
            for (uint32_t h = 0; h < n_kv; h++)
                for (uint64_t t = 0; t < n; t++) {
                    uint8_t mask[8];
                    float key[64], val[64];
                    CHECK(sparkv_inspect_key(c, 1, h, t, mask, key) == SPARKV_OK &&
                          sparkv_inspect_value(c, 1, h, t, val) == SPARKV_OK);
                    blob_put(&b, mask, sizeof mask);
                    blob_put(&b, key, sizeof key);
                    blob_put(&b, val, sizeof val);
                }
            float out[4 * 64];
            CHECK_OK(sparkv_attend(c, 1, q, out));
            blob_put(&b, out, sizeof out);
            sparkv_memory m = mem_init();
            CHECK_OK(sparkv_memory_report(c, 1, &m));
            m.reserved_bytes = 0;
            blob_put(&b, &m, sizeof m);
            state[threads - 1] = b;
            sparkv_cache_free(c);
        }
        CHECKF(snap_equal(&state[0], &state[1]), "policy %d: stored state or attend differs between 1 and 2 threads", pi);
        free(state[0].data);
        free(state[1].data);
    }
    free(k); free(v); free(qw);
}

/* ============================================================================================== */
/* Version, strings, defaults, validation                                                          */
/* ============================================================================================== */

static void test_version_and_strings(void) {
    g_section = "version and strings";
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", SPARKV_VERSION_MAJOR, SPARKV_VERSION_MINOR, SPARKV_VERSION_PATCH);
    CHECK(sparkv_version() == SPARKV_VERSION_NUMBER);
    CHECK(sparkv_version_string() != NULL && strcmp(sparkv_version_string(), want) == 0);

    const char *seen[16];
    for (int s = 0; s <= SPARKV_ERR_INDEX; s++) {
        const char *str = sparkv_status_string((sparkv_status)s);
        CHECKF(str && str[0], "status %d has no string", s);
        seen[s] = str;
        for (int t = 0; str && t < s; t++) CHECKF(strcmp(seen[t], str) != 0, "statuses %d and %d share a string", t, s);
    }
    const char *unknown = sparkv_status_string((sparkv_status)999);
    CHECK(unknown && unknown[0] && strcmp(unknown, seen[0]) != 0);

    CHECK(strcmp(sparkv_kernel_name(SPARKV_KERNEL_AUTO), "auto") == 0);
    CHECK(strcmp(sparkv_kernel_name(SPARKV_KERNEL_PORTABLE), "portable") == 0);
    CHECK(strcmp(sparkv_kernel_name(SPARKV_KERNEL_AVX2), "avx2") == 0);
    CHECK(strcmp(sparkv_kernel_name(SPARKV_KERNEL_AVX512), "avx512") == 0);
    CHECK(sparkv_kernel_name((sparkv_kernel)42) != NULL);
    CHECK(sparkv_kernel_supported(SPARKV_KERNEL_PORTABLE) == 1);
    CHECK(sparkv_kernel_supported((sparkv_kernel)42) == 0);
    for (size_t k = 0; k < 3; k++) {
        int s = sparkv_kernel_supported(ALL_KERNELS[k]);
        CHECK(s == 0 || s == 1);
    }
    /* AVX-512 here implies AVX2. */
    CHECK(!sparkv_kernel_supported(SPARKV_KERNEL_AVX512) || sparkv_kernel_supported(SPARKV_KERNEL_AVX2));
}

static void test_defaults_and_validate(void) {
    g_section = "defaults and policy validation";
    sparkv_shape s = sparkv_default_shape();
    CHECK(s.struct_size == sizeof(sparkv_shape));
    CHECK(s.n_layers == 1 && s.n_q_heads == 1 && s.n_kv_heads == 1 && s.head_dim == 128 && s.capacity == 4096);
    sparkv_policy p = sparkv_default_policy();
    CHECK(p.struct_size == sizeof(sparkv_policy));
    CHECK(p.key_prune_ratio == 0.0f && p.selection == SPARKV_SELECT_TOPK && p.cumulative_p == 0.9f);
    CHECK(p.cumulative_min_keep == 1 && p.cumulative_max_keep == 0);
    CHECK(p.recovery == SPARKV_RECOVER_MEAN && p.sign_bits == 1);
    CHECK(p.key_precision == SPARKV_F16 && p.value_precision == SPARKV_F16);
    CHECK(p.window == 32 && p.seed == 0 && p.threads == 0 && p.attention_scale == 0.0f);
    CHECK(p.eviction == SPARKV_EVICT_NONE && p.evict_budget == 512 && p.pool_kernel == 5 && p.pyramid_ratio == 4.0f);
    CHECK(p.sink_tokens == 4 && p.recent_tokens == 508);
    CHECK(p.key_pruning == SPARKV_KEYS_SPARK && p.value_prune_ratio == 0.0f);

    CHECK_OK(sparkv_policy_validate(&p, 128));
    for (uint32_t d = 8; d <= 256; d += 8) CHECK_OK(sparkv_policy_validate(&p, d));
    const uint32_t bad_dims[] = {0, 4, 7, 12, 100, 257, 264, 1024};
    for (size_t i = 0; i < sizeof bad_dims / sizeof bad_dims[0]; i++)
        EXPECT_FAIL(SPARKV_ERR_HEAD_DIM, NULL, NULL, sparkv_policy_validate(&p, bad_dims[i]));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, NULL, NULL, sparkv_policy_validate(NULL, 128));
    sparkv_policy q = p;
    q.struct_size = 0;
    EXPECT_FAIL(SPARKV_ERR_STRUCT_SIZE, NULL, NULL, sparkv_policy_validate(&q, 128));
    q.struct_size = (uint32_t)sizeof(sparkv_policy) + 8;
    EXPECT_FAIL(SPARKV_ERR_STRUCT_SIZE, NULL, NULL, sparkv_policy_validate(&q, 128));

    /* Every out-of-range field, through validate and through create. */
    enum { N_BAD = 57 };
    sparkv_policy bad[N_BAD];
    for (int i = 0; i < N_BAD; i++) bad[i] = p;
    int i = 0;
    bad[i++].key_prune_ratio = -0.1f;
    bad[i++].key_prune_ratio = 1.0f;
    bad[i++].key_prune_ratio = NAN;
    bad[i++].key_prune_ratio = INFINITY;
    bad[i++].selection = (sparkv_selection)2;
    bad[i++].selection = (sparkv_selection)-1;
    bad[i].selection = SPARKV_SELECT_CUMULATIVE; bad[i++].cumulative_p = 0.0f;
    bad[i].selection = SPARKV_SELECT_CUMULATIVE; bad[i++].cumulative_p = 1.5f;
    bad[i].selection = SPARKV_SELECT_CUMULATIVE; bad[i++].cumulative_p = NAN;
    bad[i].selection = SPARKV_SELECT_CUMULATIVE; bad[i++].cumulative_min_keep = 129;
    bad[i].selection = SPARKV_SELECT_CUMULATIVE; bad[i++].cumulative_max_keep = 129;
    bad[i].selection = SPARKV_SELECT_CUMULATIVE; bad[i].cumulative_min_keep = 10; bad[i++].cumulative_max_keep = 5;
    bad[i++].recovery = (sparkv_recovery)4;
    bad[i++].recovery = (sparkv_recovery)-1;
    bad[i++].sign_bits = 2;
    bad[i++].sign_bits = -1;
    bad[i].recovery = SPARKV_RECOVER_NONE; bad[i++].sign_bits = 1;
    bad[i++].key_precision = (sparkv_precision)5;
    bad[i++].value_precision = (sparkv_precision)5;
    bad[i++].value_precision = (sparkv_precision)-1;
    bad[i++].window = 0;
    bad[i++].threads = -1;
    bad[i++].attention_scale = -1.0f;
    bad[i++].attention_scale = INFINITY;
    bad[i++].attention_scale = NAN;
    bad[i].key_prune_ratio = 0.5f; bad[i++].window = 0;
    /* Eviction. */
    bad[i++].eviction = (sparkv_eviction)4;
    bad[i++].eviction = (sparkv_eviction)-1;
    bad[i].eviction = SPARKV_EVICT_SNAPKV; bad[i++].pool_kernel = 4;
    bad[i].eviction = SPARKV_EVICT_SNAPKV; bad[i++].pool_kernel = 2;
    bad[i].eviction = SPARKV_EVICT_SNAPKV; bad[i++].pool_kernel = 0;
    bad[i].eviction = SPARKV_EVICT_PYRAMIDKV; bad[i++].pool_kernel = 6;
    bad[i].eviction = SPARKV_EVICT_SNAPKV; bad[i++].evict_budget = 0;
    bad[i].eviction = SPARKV_EVICT_PYRAMIDKV; bad[i++].evict_budget = 0;
    bad[i].eviction = SPARKV_EVICT_PYRAMIDKV; bad[i++].pyramid_ratio = 0.99f;
    bad[i].eviction = SPARKV_EVICT_PYRAMIDKV; bad[i++].pyramid_ratio = 0.0f;
    bad[i].eviction = SPARKV_EVICT_PYRAMIDKV; bad[i++].pyramid_ratio = -2.0f;
    bad[i].eviction = SPARKV_EVICT_PYRAMIDKV; bad[i++].pyramid_ratio = NAN;
    /* Key pruning. */
    bad[i++].key_pruning = (sparkv_key_pruning)2;
    bad[i++].key_pruning = (sparkv_key_pruning)-1;
    /* ThinK: TOPK only, recovery NONE, no sign bits. */
    bad[i] = think_policy(0.5f); bad[i++].selection = SPARKV_SELECT_CUMULATIVE;
    bad[i] = think_policy(0.0f); bad[i].selection = SPARKV_SELECT_CUMULATIVE; bad[i++].cumulative_p = 0.5f;
    bad[i] = think_policy(0.5f); bad[i++].recovery = SPARKV_RECOVER_MEAN;
    bad[i] = think_policy(0.5f); bad[i++].recovery = SPARKV_RECOVER_GAUSSIAN;
    bad[i] = think_policy(0.5f); bad[i++].recovery = SPARKV_RECOVER_EXPONENTIAL;
    bad[i] = think_policy(0.5f); bad[i].recovery = SPARKV_RECOVER_MEAN; bad[i++].sign_bits = 1;
    bad[i] = think_policy(0.5f); bad[i++].sign_bits = 1;
    bad[i].key_pruning = SPARKV_KEYS_THINK; bad[i++].key_prune_ratio = 0.5f; /* default MEAN + signs */
    /* Value pruning: r_v in [0, 1). */
    bad[i++].value_prune_ratio = -0.1f;
    bad[i++].value_prune_ratio = -0.0001f;
    bad[i++].value_prune_ratio = 1.0f;
    bad[i++].value_prune_ratio = 1.5f;
    bad[i++].value_prune_ratio = NAN;
    bad[i++].value_prune_ratio = INFINITY;
    bad[i++].value_prune_ratio = -INFINITY;
    /* New fields combined with an otherwise valid pruning policy. */
    bad[i] = spark_policy(0.5f, SPARKV_RECOVER_MEAN, 1); bad[i].eviction = SPARKV_EVICT_SNAPKV; bad[i++].pool_kernel = 8;
    bad[i] = think_policy(0.5f); bad[i++].value_prune_ratio = 1.0f;
    CHECK(i == N_BAD);
    sparkv_shape shape = make_shape(1, 2, 1, 128, 16);
    for (i = 0; i < N_BAD; i++) {
        g_section = "policy ranges";
        EXPECT_FAIL(SPARKV_ERR_INVALID_POLICY, NULL, NULL, sparkv_policy_validate(&bad[i], 128));
        sparkv_cache *c = (sparkv_cache *)&shape; /* must be overwritten with NULL */
        EXPECT_FAIL(SPARKV_ERR_INVALID_POLICY, NULL, NULL, sparkv_cache_create(&shape, &bad[i], &c));
        CHECKF(c == NULL, "policy %d: *out not set to NULL on failure", i);
    }

    /* Valid corners. */
    g_section = "policy corners";
    enum { N_OK = 19 };
    sparkv_policy ok[N_OK];
    for (i = 0; i < N_OK; i++) ok[i] = p;
    ok[0].key_prune_ratio = 0.99f;
    ok[1].selection = SPARKV_SELECT_CUMULATIVE; ok[1].cumulative_p = 1.0f; ok[1].cumulative_min_keep = 0;
    ok[2].selection = SPARKV_SELECT_CUMULATIVE; ok[2].cumulative_min_keep = 128; ok[2].cumulative_max_keep = 128;
    ok[3].recovery = SPARKV_RECOVER_NONE; ok[3].sign_bits = 0;
    ok[4].window = 1; ok[4].threads = 1;
    ok[5].attention_scale = 0.5f; ok[5].seed = UINT64_MAX;
    ok[6].key_precision = SPARKV_F32; ok[6].value_precision = SPARKV_BF16;
    ok[7].recovery = SPARKV_RECOVER_GAUSSIAN; ok[7].sign_bits = 0; ok[7].key_prune_ratio = 0.25f;
    ok[8].eviction = SPARKV_EVICT_SNAPKV; ok[8].evict_budget = 1; ok[8].pool_kernel = 1;
    ok[9].eviction = SPARKV_EVICT_SNAPKV; ok[9].evict_budget = UINT32_MAX; ok[9].pool_kernel = 31;
    ok[10].eviction = SPARKV_EVICT_PYRAMIDKV; ok[10].pyramid_ratio = 1.0f; ok[10].evict_budget = 1;
    ok[11].eviction = SPARKV_EVICT_PYRAMIDKV; ok[11].pyramid_ratio = 20.0f;
    ok[12].eviction = SPARKV_EVICT_STREAMING; ok[12].sink_tokens = 0; ok[12].recent_tokens = 16;
    ok[13].eviction = SPARKV_EVICT_STREAMING; ok[13].sink_tokens = 8; ok[13].recent_tokens = 0;
    ok[14] = think_policy(0.5f);
    ok[15] = think_policy(0.99f); ok[15].eviction = SPARKV_EVICT_SNAPKV; ok[15].value_prune_ratio = 0.5f;
    ok[16].value_prune_ratio = 0.99f;
    ok[17].value_prune_ratio = 0.5f; ok[17].key_prune_ratio = 0.8f; ok[17].eviction = SPARKV_EVICT_STREAMING;
    /* evict_budget must be >= 1 only when evicting by score. */
    ok[18].evict_budget = 0;
    ok[13].evict_budget = 0;
    for (i = 0; i < N_OK; i++) CHECKF(sparkv_policy_validate(&ok[i], 128) == SPARKV_OK, "corner policy %d: %s", i,
                                   sparkv_last_error(NULL));

    g_section = "topk_keep";
    CHECK(sparkv_topk_keep(0.0f, 128) == 128);
    CHECK(sparkv_topk_keep(0.8f, 128) == 26);
    CHECK(sparkv_topk_keep(0.5f, 64) == 32);
    CHECK(sparkv_topk_keep(0.999f, 8) == 1);
    const float ratios[] = {0.001f, 0.1f, 0.2f, 0.25f, 0.3f, 0.33f, 0.6f, 0.7f, 0.75f, 0.9f, 0.95f};
    for (size_t k = 0; k < sizeof ratios / sizeof ratios[0]; k++)
        for (uint32_t d = 8; d <= 256; d += 8)
            CHECKF(sparkv_topk_keep(ratios[k], d) == ref_topk_keep(ratios[k], d), "topk_keep(%g, %u) = %u, want %u",
                   (double)ratios[k], d, sparkv_topk_keep(ratios[k], d), ref_topk_keep(ratios[k], d));
}

/* ============================================================================================== */
/* Create, accessors, free                                                                         */
/* ============================================================================================== */

static void test_create(void) {
    g_section = "create";
    const sparkv_policy p = sparkv_default_policy();
    sparkv_shape s = make_shape(2, 8, 2, 64, 100);
    sparkv_cache *c = NULL;
    sparkv_cache *sentinel = (sparkv_cache *)&s;

    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, NULL, NULL, sparkv_cache_create(NULL, &p, &c));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, NULL, NULL, sparkv_cache_create(&s, NULL, &c));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, NULL, NULL, sparkv_cache_create(&s, &p, NULL));

    struct { const char *what; sparkv_shape shape; sparkv_status want; } cases[] = {
        {"struct_size 0", s, SPARKV_ERR_STRUCT_SIZE},
        {"struct_size too big", s, SPARKV_ERR_STRUCT_SIZE},
        {"n_layers 0", s, SPARKV_ERR_INVALID_SHAPE},
        {"n_q_heads 0", s, SPARKV_ERR_INVALID_SHAPE},
        {"n_kv_heads 0", s, SPARKV_ERR_INVALID_SHAPE},
        {"capacity 0", s, SPARKV_ERR_INVALID_SHAPE},
        {"head_dim 0", s, SPARKV_ERR_HEAD_DIM},
        {"head_dim 7", s, SPARKV_ERR_HEAD_DIM},
        {"head_dim 12", s, SPARKV_ERR_HEAD_DIM},
        {"head_dim 264", s, SPARKV_ERR_HEAD_DIM},
        {"GQA 3/2", s, SPARKV_ERR_GQA},
        {"GQA 2/4", s, SPARKV_ERR_GQA},
    };
    cases[0].shape.struct_size = 0;
    cases[1].shape.struct_size = (uint32_t)sizeof(sparkv_shape) + 8;
    cases[2].shape.n_layers = 0;
    cases[3].shape.n_q_heads = 0;
    cases[4].shape.n_kv_heads = 0;
    cases[5].shape.capacity = 0;
    cases[6].shape.head_dim = 0;
    cases[7].shape.head_dim = 7;
    cases[8].shape.head_dim = 12;
    cases[9].shape.head_dim = 264;
    cases[10].shape.n_q_heads = 3; cases[10].shape.n_kv_heads = 2;
    cases[11].shape.n_q_heads = 2; cases[11].shape.n_kv_heads = 4;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c = sentinel;
        EXPECT_FAIL(cases[i].want, NULL, NULL, sparkv_cache_create(&cases[i].shape, &p, &c));
        CHECKF(c == NULL, "%s: *out not set to NULL on failure", cases[i].what);
    }
    /* A policy with a bad struct_size is caught by create too. */
    sparkv_policy bad = p;
    bad.struct_size = 4;
    c = sentinel;
    EXPECT_FAIL(SPARKV_ERR_STRUCT_SIZE, NULL, NULL, sparkv_cache_create(&s, &bad, &c));
    CHECK(c == NULL);

    /* Success: shape and policy are copied and read back. */
    sparkv_policy q = spark_policy(0.5f, SPARKV_RECOVER_GAUSSIAN, 1);
    q.seed = 99;
    q.window = 7;
    q.threads = 1;
    q.attention_scale = 0.25f;
    c = NULL;
    CHECK_OK(sparkv_cache_create(&s, &q, &c));
    if (!c) return;
    s.n_layers = 77; /* the cache holds a copy */
    q.seed = 1;
    sparkv_shape s2;
    sparkv_policy q2;
    CHECK_OK(sparkv_cache_shape(c, &s2));
    CHECK_OK(sparkv_cache_policy(c, &q2));
    sparkv_shape s_want = make_shape(2, 8, 2, 64, 100);
    sparkv_policy q_want = spark_policy(0.5f, SPARKV_RECOVER_GAUSSIAN, 1);
    q_want.seed = 99;
    q_want.window = 7;
    q_want.threads = 1;
    q_want.attention_scale = 0.25f;
    CHECK(shape_equal(&s2, &s_want));
    CHECK(policy_equal(&q2, &q_want));
    CHECK(sparkv_layer_tokens(c, 0) == 0 && sparkv_layer_tokens(c, 1) == 0);
    CHECK(sparkv_layer_tokens(c, 2) == 0 && sparkv_layer_tokens(NULL, 0) == 0);
    sparkv_kernel k = sparkv_cache_kernel(c);
    CHECK(k != SPARKV_KERNEL_AUTO && sparkv_kernel_supported(k));
    sparkv_memory m = mem_init();
    CHECK_OK(sparkv_memory_report(c, SPARKV_ALL_LAYERS, &m));
    CHECK(m.struct_size == sizeof(sparkv_memory));
    CHECK(m.n_tokens == 0 && m.key_bytes == 0 && m.key_meta_bytes == 0 && m.value_bytes == 0 && m.total_bytes == 0 &&
          m.value_meta_bytes == 0 && m.dense_bytes == 0);
    CHECK(sparkv_cache_threads(c) == 1); /* q.threads */

    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_cache_shape(NULL, &s2));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_cache_shape(c, NULL));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_cache_policy(NULL, &q2));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_cache_policy(c, NULL));
    sparkv_cache_free(c);
    sparkv_cache_free(NULL); /* no-op */
    CHECK(1);

    /* Many caches at once are independent. */
    sparkv_cache *many[8];
    sparkv_shape one = make_shape(1, 1, 1, 8, 4);
    for (int i = 0; i < 8; i++) CHECK_OK(sparkv_cache_create(&one, &p, &many[i]));
    float kv[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK_OK(sparkv_append(many[3], 0, kv, kv));
    CHECK(sparkv_layer_tokens(many[3], 0) == 1 && sparkv_layer_tokens(many[2], 0) == 0);
    for (int i = 0; i < 8; i++) sparkv_cache_free(many[i]);
}

/* ============================================================================================== */
/* Draws                                                                                           */
/* ============================================================================================== */

/* The published draw against the reference's own tables and hash, bit for bit. */
static void test_draw_standard(void) {
    g_section = "draw standard";
    const uint64_t seeds[] = {0, 1, 12345, UINT64_MAX};
    const sparkv_recovery recs[] = {SPARKV_RECOVER_GAUSSIAN, SPARKV_RECOVER_EXPONENTIAL};
    int bad = 0;
    for (size_t s = 0; s < 4; s++)
        for (uint32_t layer = 0; layer < 3; layer++)
            for (uint32_t head = 0; head < 3; head++)
                for (uint64_t t = 0; t < 300; t += 37)
                    for (uint32_t j = 0; j < 256; j += 17)
                        for (int ri = 0; ri < 2; ri++) {
                            const float got = sparkv_draw_standard(seeds[s], layer, head, t, j, recs[ri]);
                            const float want = ref_draw_standard(seeds[s], layer, head, t, j, recs[ri]);
                            bad += memcmp(&got, &want, sizeof got) != 0;
                        }
    CHECKF(bad == 0, "%d draws differ from the draw published in sparkv.h", bad);
    CHECK(sparkv_draw_standard(5, 1, 2, 3, 4, SPARKV_RECOVER_MEAN) == 0.0f);
    CHECK(sparkv_draw_standard(5, 1, 2, 3, 4, SPARKV_RECOVER_NONE) == 0.0f);
    /* Every argument changes the draws: of 64 channels, some land in another bin. */
    const uint64_t base[5] = {5, 1, 2, 3, 0};
    for (int arg = 0; arg < 4; arg++) {
        int changed = 0;
        for (uint32_t j = 0; j < 64; j++) {
            uint64_t a[5] = {base[0], base[1], base[2], base[3], j};
            a[arg] += 1;
            changed += sparkv_draw_standard(base[0], (uint32_t)base[1], (uint32_t)base[2], base[3], j, SPARKV_RECOVER_GAUSSIAN) !=
                       sparkv_draw_standard(a[0], (uint32_t)a[1], (uint32_t)a[2], a[3], j, SPARKV_RECOVER_GAUSSIAN);
        }
        CHECKF(changed > 32, "argument %d changes only %d of 64 draws", arg, changed);
    }
}

/* The tables' statistics as sparkv.h documents them, and the hash spreading draws evenly over
 * the 64 bins. */
static void test_draw_statistics(void) {
    g_section = "draw statistics";
    /* Each bin's point, from the library (bins found with the reference hash). */
    float normal[REF_DRAW_BINS], sqrt_exp[REF_DRAW_BINS];
    int seen[REF_DRAW_BINS] = {0}, n_seen = 0;
    uint64_t count[REF_DRAW_BINS] = {0};
    const uint64_t n_draws = 1u << 18;
    double sum_z = 0, sum_z2 = 0, sum_e = 0, sum_e2 = 0;
    for (uint64_t i = 0; i < n_draws; i++) {
        const uint64_t token = i / 128;
        const uint32_t ch = (uint32_t)(i % 128);
        const uint32_t bin = ref_draw_bin(3, 1, 2, token, ch);
        const float z = sparkv_draw_standard(3, 1, 2, token, ch, SPARKV_RECOVER_GAUSSIAN);
        const float s = sparkv_draw_standard(3, 1, 2, token, ch, SPARKV_RECOVER_EXPONENTIAL);
        if (!seen[bin]) { seen[bin] = 1; n_seen++; normal[bin] = z; sqrt_exp[bin] = s; }
        count[bin]++;
        sum_z += z; sum_z2 += (double)z * z;
        sum_e += (double)s * s; sum_e2 += (double)s * s * s * s;
    }
    CHECK(n_seen == REF_DRAW_BINS);
    /* Over the bins (equal probabilities): mean 0 exactly (the normal table is symmetric), 1 up to
     * float rounding; variances 0.9961 and 0.9831. */
    double tz = 0, tz2 = 0, te = 0, te2 = 0;
    for (int i = 0; i < REF_DRAW_BINS && n_seen == REF_DRAW_BINS; i++) {
        tz += normal[i]; tz2 += (double)normal[i] * normal[i];
        const double e = (double)sqrt_exp[i] * sqrt_exp[i];
        te += e; te2 += e * e;
        if (i) CHECK(normal[i] > normal[i - 1] && sqrt_exp[i] > sqrt_exp[i - 1]);
    }
    tz /= REF_DRAW_BINS; tz2 /= REF_DRAW_BINS; te /= REF_DRAW_BINS; te2 /= REF_DRAW_BINS;
    CHECKF(tz == 0.0, "normal table mean %.3g", tz);
    CHECKF(fabs(te - 1.0) < 1e-6, "exponential table mean %.9g", te);
    CHECKF(fabs(tz2 - 0.99609) < 1e-4, "normal table variance %.6f", tz2);
    CHECKF(fabs(te2 - te * te - 0.98314) < 1e-4, "exponential table variance %.6f", te2 - te * te);
    CHECKF(fabs(normal[REF_DRAW_BINS - 1] - 2.5102) < 1e-3 && fabs((double)sqrt_exp[REF_DRAW_BINS - 1] * sqrt_exp[REF_DRAW_BINS - 1] - 5.1589) < 1e-3,
           "outermost points %.4f, %.4f", normal[REF_DRAW_BINS - 1], sqrt_exp[REF_DRAW_BINS - 1]);
    /* Bin frequencies: chi-square with 63 degrees of freedom, far below its 1e-6 tail (about 130). */
    double chi2 = 0;
    const double expect = (double)n_draws / REF_DRAW_BINS;
    for (int i = 0; i < REF_DRAW_BINS; i++) chi2 += ((double)count[i] - expect) * ((double)count[i] - expect) / expect;
    CHECKF(chi2 < 130.0, "bin counts chi-square %.1f", chi2);
    /* Sample moments of 2^18 draws (standard errors about 0.002). */
    const double mz = sum_z / n_draws, me = sum_e / n_draws;
    CHECKF(fabs(mz) < 0.01 && fabs(sum_z2 / n_draws - mz * mz - 0.9961) < 0.02, "normal draws: mean %.4f", mz);
    CHECKF(fabs(me - 1.0) < 0.01 && fabs(sum_e2 / n_draws - me * me - 0.9831) < 0.03, "exponential draws: mean %.4f", me);
}

/* ============================================================================================== */
/* Error paths on a populated cache                                                                */
/* ============================================================================================== */

enum { E_LAYERS = 4, E_Q = 4, E_KV = 2, E_D = 64, E_CAP = 300 };

/* Layer 0: 40-token prompt + 2 appended; layer 1: 260-token prompt (two pages); layer 2: empty;
 * layer 3: 3 appended tokens, never prefilled. r = 0.5, MEAN with signs, fp16. */
static sparkv_cache *make_error_cache(void) {
    sparkv_shape s = make_shape(E_LAYERS, E_Q, E_KV, E_D, E_CAP);
    sparkv_policy p = spark_policy(0.5f, SPARKV_RECOVER_MEAN, 1);
    p.window = 8;
    p.threads = 2;
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(&s, &p, &c));
    if (!c) exit(1);
    rng r = {4242};
    float *k = falloc((size_t)E_KV * 260 * E_D), *v = falloc((size_t)E_KV * 260 * E_D);
    float *qw = falloc((size_t)E_Q * 10 * E_D);
    fill_normal(&r, k, (size_t)E_KV * 40 * E_D, 1.0f);
    fill_normal(&r, v, (size_t)E_KV * 40 * E_D, 1.0f);
    fill_normal(&r, qw, (size_t)E_Q * 10 * E_D, 1.0f);
    CHECK_OK(sparkv_prefill(c, 0, k, v, 40, qw, 10));
    fill_normal(&r, k, (size_t)E_KV * 260 * E_D, 1.0f);
    fill_normal(&r, v, (size_t)E_KV * 260 * E_D, 1.0f);
    CHECK_OK(sparkv_prefill(c, 1, k, v, 260, qw, 10));
    for (int i = 0; i < 5; i++) {
        fill_normal(&r, k, (size_t)E_KV * E_D, 1.0f);
        fill_normal(&r, v, (size_t)E_KV * E_D, 1.0f);
        CHECK_OK(sparkv_append(c, i < 2 ? 0 : 3, k, v));
    }
    free(k); free(v); free(qw);
    CHECK(sparkv_layer_tokens(c, 0) == 42 && sparkv_layer_tokens(c, 1) == 260);
    CHECK(sparkv_layer_tokens(c, 2) == 0 && sparkv_layer_tokens(c, 3) == 3);
    return c;
}

static void test_prefill_errors(sparkv_cache *c) {
    g_section = "prefill errors";
    const uint64_t n = 20;
    rng r = {99};
    float *k = falloc((size_t)E_KV * (E_CAP + 1) * E_D), *v = falloc((size_t)E_KV * (E_CAP + 1) * E_D);
    float *qw = falloc((size_t)E_Q * (E_CAP + 1) * E_D);
    fill_normal(&r, k, (size_t)E_KV * (E_CAP + 1) * E_D, 1.0f);
    fill_normal(&r, v, (size_t)E_KV * (E_CAP + 1) * E_D, 1.0f);
    fill_normal(&r, qw, (size_t)E_Q * (E_CAP + 1) * E_D, 1.0f);

    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_prefill(NULL, 2, k, v, n, qw, 4));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_prefill(c, 2, NULL, v, n, qw, 4));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_prefill(c, 2, k, NULL, n, qw, 4));
    /* The policy prunes, so window queries are required. */
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_prefill(c, 2, k, v, n, NULL, 0));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_prefill(c, 2, k, v, n, NULL, 4));
    EXPECT_FAIL(SPARKV_ERR_WINDOW, c, c, sparkv_prefill(c, 2, k, v, n, qw, 0));
    EXPECT_FAIL(SPARKV_ERR_WINDOW, c, c, sparkv_prefill(c, 2, k, v, n, qw, n + 1));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_prefill(c, E_LAYERS, k, v, n, qw, 4));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_prefill(c, UINT32_MAX, k, v, n, qw, 4));
    EXPECT_FAIL(SPARKV_ERR_INVALID_SHAPE, c, c, sparkv_prefill(c, 2, k, v, 0, qw, 0));
    EXPECT_FAIL(SPARKV_ERR_CAPACITY, c, c, sparkv_prefill(c, 2, k, v, E_CAP + 1, qw, 4));
    /* Prefill twice, and prefill of a layer that already holds appended tokens. */
    EXPECT_FAIL(SPARKV_ERR_STATE, c, c, sparkv_prefill(c, 0, k, v, n, qw, 4));
    EXPECT_FAIL(SPARKV_ERR_STATE, c, c, sparkv_prefill(c, 1, k, v, n, qw, 4));
    EXPECT_FAIL(SPARKV_ERR_STATE, c, c, sparkv_prefill(c, 3, k, v, n, qw, 4));

    /* Non-finite inputs anywhere, including window rows older than the policy's window. */
    struct { float *buf; size_t at; float bad; const char *word; } nf[] = {
        {k, ((size_t)1 * n + 17) * E_D + 5, NAN, "NaN"},
        {k, 0, INFINITY, "Inf"},
        {v, ((size_t)1 * n + n - 1) * E_D + E_D - 1, -INFINITY, "Inf"},
        {v, 3 * E_D + 2, NAN, "NaN"},
        {qw, ((size_t)3 * 12 + 11) * E_D + 63, NAN, "NaN"},
        {qw, 0, INFINITY, "Inf"}, /* head 0, row 0: outside the last 8 of 12 rows */
    };
    for (size_t i = 0; i < sizeof nf / sizeof nf[0]; i++) {
        const float saved = nf[i].buf[nf[i].at];
        nf[i].buf[nf[i].at] = nf[i].bad;
        EXPECT_FAIL(SPARKV_ERR_NON_FINITE, c, c, sparkv_prefill(c, 2, k, v, n, qw, 12));
        CHECKF(strstr(g_last_msg, nf[i].word) != NULL, "non-finite case %zu: message \"%s\" lacks \"%s\"", i,
               g_last_msg, nf[i].word);
        nf[i].buf[nf[i].at] = saved;
    }
    /* After all those failures the empty layer still accepts its prompt, exactly at capacity. */
    CHECK_OK(sparkv_prefill(c, 2, k, v, E_CAP, qw, E_CAP));
    CHECK(sparkv_layer_tokens(c, 2) == E_CAP);
    EXPECT_FAIL(SPARKV_ERR_CAPACITY, c, c, sparkv_append(c, 2, k, v));
    EXPECT_FAIL(SPARKV_ERR_STATE, c, c, sparkv_prefill(c, 2, k, v, n, qw, 4));
    free(k); free(v); free(qw);
}

static void test_append_errors(sparkv_cache *c) {
    g_section = "append errors";
    float k[E_KV * E_D], v[E_KV * E_D];
    rng r = {5};
    fill_normal(&r, k, E_KV * E_D, 1.0f);
    fill_normal(&r, v, E_KV * E_D, 1.0f);
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_append(NULL, 0, k, v));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_append(c, 0, NULL, v));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_append(c, 0, k, NULL));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_append(c, E_LAYERS, k, v));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_append(c, UINT32_MAX, k, v));
    const size_t spots[] = {0, E_D - 1, E_D, 2 * E_D - 1};
    for (size_t i = 0; i < 4; i++) {
        float saved = k[spots[i]];
        k[spots[i]] = i % 2 ? INFINITY : NAN;
        EXPECT_FAIL(SPARKV_ERR_NON_FINITE, c, c, sparkv_append(c, 0, k, v));
        CHECK(strstr(g_last_msg, i % 2 ? "Inf" : "NaN") != NULL);
        k[spots[i]] = saved;
        saved = v[spots[i]];
        v[spots[i]] = i % 2 ? -INFINITY : NAN;
        EXPECT_FAIL(SPARKV_ERR_NON_FINITE, c, c, sparkv_append(c, 1, k, v));
        v[spots[i]] = saved;
    }
}

static void test_attend_errors(sparkv_cache *c) {
    g_section = "attend errors";
    float q[E_Q * E_D], out[E_Q * E_D];
    rng r = {6};
    fill_normal(&r, q, E_Q * E_D, 1.0f);
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_attend(NULL, 0, q, out));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_attend(c, 0, NULL, out));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_attend(c, 0, q, NULL));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_attend(c, E_LAYERS, q, out));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_attend(c, UINT32_MAX, q, out));
    q[E_Q * E_D - 1] = NAN;
    EXPECT_FAIL(SPARKV_ERR_NON_FINITE, c, c, sparkv_attend(c, 0, q, out));
    CHECK(strstr(g_last_msg, "NaN") != NULL);
    q[E_Q * E_D - 1] = -INFINITY;
    EXPECT_FAIL(SPARKV_ERR_NON_FINITE, c, c, sparkv_attend(c, 1, q, out));
    q[E_Q * E_D - 1] = 0.5f;
    CHECK_OK(sparkv_attend(c, 3, q, out)); /* appended tokens only */
}

static void test_empty_layer(void) {
    g_section = "empty layer";
    sparkv_shape s = make_shape(2, 2, 1, 16, 8);
    sparkv_policy p = sparkv_default_policy();
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(&s, &p, &c));
    if (!c) return;
    float q[32] = {0}, out[32];
    EXPECT_FAIL(SPARKV_ERR_EMPTY, c, c, sparkv_attend(c, 0, q, out));
    EXPECT_FAIL(SPARKV_ERR_EMPTY, c, c, sparkv_attend(c, 1, q, out));
    EXPECT_FAIL(SPARKV_ERR_INDEX, c, c, sparkv_inspect_key(c, 0, 0, 0, NULL, NULL));
    EXPECT_FAIL(SPARKV_ERR_INDEX, c, c, sparkv_inspect_value(c, 0, 0, 0, out));
    float qn[16], sc = 0.0f;
    CHECK_OK(sparkv_inspect_qnorm(c, 0, 0, qn, &sc));
    int zeros = 1;
    for (int j = 0; j < 16; j++) zeros &= qn[j] == 0.0f;
    CHECK(zeros && sc == 1.0f);
    /* A dense policy takes a prompt without window queries. */
    float kv[16 * 3];
    for (int i = 0; i < 48; i++) kv[i] = (float)i / 7.0f;
    CHECK_OK(sparkv_prefill(c, 0, kv, kv, 3, NULL, 0));
    CHECK_OK(sparkv_attend(c, 0, q, out));
    /* All-zero query: uniform softmax, so the output is the mean value (fp16 storage). */
    double mean[32];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 16; j++)
            mean[i * 16 + j] = ((double)ref_round_f16(kv[j]) + ref_round_f16(kv[16 + j]) + ref_round_f16(kv[32 + j])) / 3.0;
    CHECK_CLOSE(out, mean, 32, 1e-6, 1e-6, "zero query averages the values");
    sparkv_cache_free(c);
}

static void test_report_and_inspect_errors(sparkv_cache *c) {
    g_section = "memory report errors";
    sparkv_memory m = mem_init(), sum = mem_init(), all = mem_init();
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_memory_report(NULL, 0, &m));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_memory_report(c, 0, NULL));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_memory_report(c, SPARKV_ALL_LAYERS, NULL));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_memory_report(c, E_LAYERS, &m));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_memory_report(c, SPARKV_ALL_LAYERS - 1, &m));
    /* struct_size must be sizeof(sparkv_memory): 0, smaller, larger; nothing is written then. */
    const uint64_t bad_sizes[] = {0, 8, sizeof(sparkv_memory) - 8, sizeof(sparkv_memory) + 8, UINT64_MAX};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        sparkv_memory bad;
        memset(&bad, 0x5a, sizeof bad);
        bad.struct_size = bad_sizes[i];
        sparkv_memory untouched = bad;
        EXPECT_FAIL(SPARKV_ERR_STRUCT_SIZE, c, c, sparkv_memory_report(c, 0, &bad));
        EXPECT_FAIL(SPARKV_ERR_STRUCT_SIZE, c, c, sparkv_memory_report(c, SPARKV_ALL_LAYERS, &bad));
        CHECKF(memcmp(&bad, &untouched, sizeof bad) == 0, "failed report with struct_size %llu wrote its output",
               (unsigned long long)bad_sizes[i]);
    }
    for (uint32_t l = 0; l < E_LAYERS; l++) {
        m = mem_init();
        CHECK_OK(sparkv_memory_report(c, l, &m));
        CHECK(m.struct_size == sizeof(sparkv_memory));
        CHECK(m.total_bytes == m.key_bytes + m.key_meta_bytes + m.value_bytes + m.value_meta_bytes);
        CHECK(m.value_meta_bytes == 0);
        CHECK(m.reserved_bytes >= m.total_bytes);
        CHECK(m.n_tokens == sparkv_layer_tokens(c, l)); /* per KV head */
        CHECK(m.dense_bytes == m.n_tokens * E_KV * E_D * 4); /* nothing evicted */
        sum.n_tokens += m.n_tokens; sum.key_bytes += m.key_bytes; sum.key_meta_bytes += m.key_meta_bytes;
        sum.value_bytes += m.value_bytes; sum.value_meta_bytes += m.value_meta_bytes;
        sum.total_bytes += m.total_bytes; sum.dense_bytes += m.dense_bytes; sum.reserved_bytes += m.reserved_bytes;
    }
    CHECK_OK(sparkv_memory_report(c, SPARKV_ALL_LAYERS, &all));
    CHECK(memory_equal(&sum, &all));

    g_section = "inspect errors";
    uint8_t mask[E_D / 8];
    float key[E_D], qn[E_D], sc;
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_inspect_key(NULL, 0, 0, 0, mask, key));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_inspect_value(NULL, 0, 0, 0, key));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_inspect_qnorm(NULL, 0, 0, qn, &sc));
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, c, sparkv_inspect_value(c, 0, 0, 0, NULL));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_inspect_key(c, E_LAYERS, 0, 0, mask, key));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_inspect_value(c, E_LAYERS, 0, 0, key));
    EXPECT_FAIL(SPARKV_ERR_LAYER, c, c, sparkv_inspect_qnorm(c, E_LAYERS, 0, qn, &sc));
    EXPECT_FAIL(SPARKV_ERR_INDEX, c, c, sparkv_inspect_key(c, 0, E_KV, 0, mask, key));
    EXPECT_FAIL(SPARKV_ERR_INDEX, c, c, sparkv_inspect_value(c, 0, E_KV, 0, key));
    EXPECT_FAIL(SPARKV_ERR_INDEX, c, c, sparkv_inspect_qnorm(c, 0, E_KV, qn, &sc));
    EXPECT_FAIL(SPARKV_ERR_INDEX, c, c, sparkv_inspect_key(c, 0, 0, 42, mask, key));
    EXPECT_FAIL(SPARKV_ERR_INDEX, c, c, sparkv_inspect_key(c, 1, 1, 260, mask, key));
    EXPECT_FAIL(SPARKV_ERR_INDEX, c, c, sparkv_inspect_value(c, 0, 0, 42, key));
    EXPECT_FAIL(SPARKV_ERR_INDEX, c, c, sparkv_inspect_key(c, 0, 0, UINT64_MAX, mask, key));
    /* Either output of inspect_key / inspect_qnorm may be NULL. */
    uint8_t mask2[E_D / 8];
    float key2[E_D];
    CHECK_OK(sparkv_inspect_key(c, 0, 1, 41, mask, key));
    CHECK_OK(sparkv_inspect_key(c, 0, 1, 41, mask2, NULL));
    CHECK_OK(sparkv_inspect_key(c, 0, 1, 41, NULL, key2));
    CHECK_OK(sparkv_inspect_key(c, 0, 1, 41, NULL, NULL));
    CHECK(memcmp(mask, mask2, sizeof mask) == 0 && memcmp(key, key2, sizeof key) == 0);
    CHECK(popcount_bytes(mask, sizeof mask) == E_D); /* appended: dense */
    CHECK_OK(sparkv_inspect_key(c, 1, 1, 259, mask, key));
    CHECK(popcount_bytes(mask, sizeof mask) == sparkv_topk_keep(0.5f, E_D));
    float qn2[E_D], sc2 = 0.0f;
    CHECK_OK(sparkv_inspect_qnorm(c, 1, 1, qn, &sc));
    CHECK_OK(sparkv_inspect_qnorm(c, 1, 1, qn2, NULL));
    CHECK_OK(sparkv_inspect_qnorm(c, 1, 1, NULL, &sc2));
    CHECK_OK(sparkv_inspect_qnorm(c, 1, 1, NULL, NULL));
    CHECK(memcmp(qn, qn2, sizeof qn) == 0 && sc == sc2 && sc > 0.0f);
    CHECK_OK(sparkv_inspect_qnorm(c, 3, 0, qn, &sc)); /* never prefilled: zeros and 1 */
    CHECK(qn[0] == 0.0f && qn[E_D - 1] == 0.0f && sc == 1.0f);
}

static void test_kernel_errors(sparkv_cache *c) {
    g_section = "kernel selection";
    const sparkv_kernel before = sparkv_cache_kernel(c);
    EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c, NULL, sparkv_cache_set_kernel(NULL, SPARKV_KERNEL_PORTABLE));
    EXPECT_FAIL(SPARKV_ERR_UNSUPPORTED, c, c, sparkv_cache_set_kernel(c, (sparkv_kernel)4));
    EXPECT_FAIL(SPARKV_ERR_UNSUPPORTED, c, c, sparkv_cache_set_kernel(c, (sparkv_kernel)-1));
    CHECK(sparkv_cache_kernel(c) == before);
    int unsupported = 0;
    for (size_t k = 0; k < 3; k++) {
        if (sparkv_kernel_supported(ALL_KERNELS[k])) {
            CHECK_OK(sparkv_cache_set_kernel(c, ALL_KERNELS[k]));
            CHECK(sparkv_cache_kernel(c) == ALL_KERNELS[k]);
        } else {
            unsupported++;
            CHECK_OK(sparkv_cache_set_kernel(c, SPARKV_KERNEL_PORTABLE));
            EXPECT_FAIL(SPARKV_ERR_UNSUPPORTED, c, c, sparkv_cache_set_kernel(c, ALL_KERNELS[k]));
            CHECK(sparkv_cache_kernel(c) == SPARKV_KERNEL_PORTABLE);
        }
    }
    if (!unsupported) printf("note: this CPU supports every kernel; only invalid kernel values test UNSUPPORTED\n");
    CHECK_OK(sparkv_cache_set_kernel(c, SPARKV_KERNEL_AUTO));
    CHECK(sparkv_cache_kernel(c) != SPARKV_KERNEL_AUTO && sparkv_kernel_supported(sparkv_cache_kernel(c)));
}

static void test_capacity(void) {
    g_section = "capacity";
    /* Append-only layer: exactly capacity tokens fit (across a page boundary), then CAPACITY. */
    sparkv_shape s = make_shape(1, 2, 2, 8, 258);
    sparkv_policy p = sparkv_default_policy();
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(&s, &p, &c));
    if (!c) return;
    float kv[16];
    int ok = 1;
    for (int t = 0; t < 258; t++) {
        for (int i = 0; i < 16; i++) kv[i] = (float)((t * 16 + i) % 13) - 6.0f;
        ok &= sparkv_append(c, 0, kv, kv) == SPARKV_OK;
    }
    CHECK(ok && sparkv_layer_tokens(c, 0) == 258);
    EXPECT_FAIL(SPARKV_ERR_CAPACITY, c, c, sparkv_append(c, 0, kv, kv));
    float key[8], val[8];
    CHECK_OK(sparkv_inspect_key(c, 0, 1, 257, NULL, key));
    CHECK_OK(sparkv_inspect_value(c, 0, 1, 257, val));
    CHECK(key[7] == (float)((257 * 16 + 15) % 13) - 6.0f && val[0] == (float)((257 * 16 + 8) % 13) - 6.0f);
    sparkv_cache_free(c);

    /* capacity 1 */
    s = make_shape(1, 1, 1, 8, 1);
    CHECK_OK(sparkv_cache_create(&s, &p, &c));
    if (!c) return;
    float two[16] = {0};
    EXPECT_FAIL(SPARKV_ERR_CAPACITY, c, c, sparkv_prefill(c, 0, two, two, 2, NULL, 0));
    CHECK_OK(sparkv_prefill(c, 0, two, two, 1, NULL, 0));
    EXPECT_FAIL(SPARKV_ERR_CAPACITY, c, c, sparkv_append(c, 0, two, two));
    sparkv_cache_free(c);
}

/* ============================================================================================== */
/* Results do not depend on the thread count                                                       */
/* ============================================================================================== */

static void test_thread_invariance(void) {
    g_section = "thread invariance";
    const uint32_t n_q = 4, n_kv = 1, d = 64;
    const uint64_t np = 1100; /* five pages: several chunks per head */
    sparkv_shape s = make_shape(1, n_q, n_kv, d, np + 40);
    rng r = {31337};
    float *k = falloc((size_t)n_kv * np * d), *v = falloc((size_t)n_kv * np * d), *qw = falloc((size_t)n_q * 16 * d);
    fill_normal(&r, k, (size_t)n_kv * np * d, 1.0f);
    fill_normal(&r, v, (size_t)n_kv * np * d, 1.0f);
    fill_normal(&r, qw, (size_t)n_q * 16 * d, 1.0f);
    float *ka = falloc((size_t)40 * n_kv * d), *va = falloc((size_t)40 * n_kv * d), q[4 * 64];
    fill_normal(&r, ka, (size_t)40 * n_kv * d, 1.0f);
    fill_normal(&r, va, (size_t)40 * n_kv * d, 1.0f);
    fill_normal(&r, q, (size_t)n_q * d, 1.0f);
    /* every kernel: the sampled SIMD kernels draw the same values on any thread count */
    const sparkv_recovery recs[] = {SPARKV_RECOVER_MEAN, SPARKV_RECOVER_GAUSSIAN, SPARKV_RECOVER_EXPONENTIAL};
    for (size_t kr = 0; kr < 3 * sizeof ALL_KERNELS / sizeof ALL_KERNELS[0]; kr++) {
        const size_t kk = kr / 3, ri = kr % 3;
        if (!sparkv_kernel_supported(ALL_KERNELS[kk])) continue;
        float out[2][4 * 64];
        for (int threads = 1; threads <= 2; threads++) {
            sparkv_policy p = spark_policy(0.75f, recs[ri], 1);
            p.threads = threads;
            sparkv_cache *c = NULL;
            CHECK_OK(sparkv_cache_create(&s, &p, &c));
            if (!c) return;
            CHECK_OK(sparkv_cache_set_kernel(c, ALL_KERNELS[kk]));
            CHECK_OK(sparkv_prefill(c, 0, k, v, np, qw, 16));
            for (int t = 0; t < 40; t++) CHECK_OK(sparkv_append(c, 0, ka + (size_t)t * n_kv * d, va + (size_t)t * n_kv * d));
            CHECK_OK(sparkv_attend(c, 0, q, out[threads - 1]));
            sparkv_cache_free(c);
        }
        CHECKF(memcmp(out[0], out[1], sizeof out[0]) == 0, "attend differs between 1 and 2 threads (recovery %d, %s kernel)",
               (int)recs[ri], sparkv_kernel_name(ALL_KERNELS[kk]));
    }
    free(k); free(v); free(qw); free(ka); free(va);
}

/* float16 / bfloat16 inputs (sparkv_prefill_typed, sparkv_append_typed): the same cache as float32
 * inputs of the same values; anything that is not a sparkv_dtype, and 16-bit Inf/NaN or values
 * beyond the storage precision, fail without touching the cache. */
static void test_typed_inputs(void) {
    g_section = "float16 / bfloat16 inputs";
    enum { TQ = 4, TKV = 2, TD = 64, TN = 300, TW = 8 };
    const size_t nkv = (size_t)TKV * TN * TD, nqw = (size_t)TQ * TW * TD;
    rng r = {4242};
    float *k = falloc(nkv), *v = falloc(nkv), *qw = falloc(nqw), *q = falloc((size_t)TQ * TD);
    uint16_t *k16 = (uint16_t *)malloc(nkv * 2), *v16 = (uint16_t *)malloc(nkv * 2), *qw16 = (uint16_t *)malloc(nqw * 2);
    float *out32 = falloc((size_t)TQ * TD), *out16 = falloc((size_t)TQ * TD);
    fill_normal(&r, k, nkv, 2.0f);
    fill_normal(&r, v, nkv, 1.0f);
    fill_normal(&r, qw, nqw, 1.0f);
    fill_normal(&r, q, (size_t)TQ * TD, 1.0f);
    const sparkv_dtype types[] = {SPARKV_DTYPE_F16, SPARKV_DTYPE_BF16};
    for (int ti = 0; ti < 2; ti++) {
        const sparkv_dtype t = types[ti];
        /* The float32 values of the 16-bit inputs, rounded exactly as a caller's cast would. */
        float *kr = falloc(nkv), *vr = falloc(nkv), *qr = falloc(nqw);
        const float *src[3] = {k, v, qw};
        float *dst[3] = {kr, vr, qr};
        uint16_t *bits[3] = {k16, v16, qw16};
        const size_t len[3] = {nkv, nkv, nqw};
        for (int a = 0; a < 3; a++)
            for (size_t i = 0; i < len[a]; i++) {
                if (t == SPARKV_DTYPE_F16) {
                    _Float16 h = (_Float16)src[a][i];
                    memcpy(&bits[a][i], &h, 2);
                    dst[a][i] = (float)h;
                } else {
                    dst[a][i] = ref_round_bf16(src[a][i]);
                    uint32_t u;
                    memcpy(&u, &dst[a][i], 4);
                    bits[a][i] = (uint16_t)(u >> 16);
                }
            }
        sparkv_shape s = make_shape(2, TQ, TKV, TD, TN + 4);
        sparkv_policy p = sparkv_default_policy();
        p.key_prune_ratio = 0.75f;
        p.eviction = SPARKV_EVICT_SNAPKV;
        p.evict_budget = 200;
        p.value_precision = SPARKV_I8;
        sparkv_cache *c32 = NULL, *c16 = NULL;
        CHECK_OK(sparkv_cache_create(&s, &p, &c32));
        CHECK_OK(sparkv_cache_create(&s, &p, &c16));
        if (!c32 || !c16) { sparkv_cache_free(c32); sparkv_cache_free(c16); free(kr); free(vr); free(qr); continue; }
        CHECK_OK(sparkv_prefill(c32, 0, kr, vr, TN, qr, TW));
        CHECK_OK(sparkv_prefill_typed(c16, 0, t, k16, v16, TN, qw16, TW));
        CHECK_OK(sparkv_append(c32, 0, kr, vr));
        CHECK_OK(sparkv_append_typed(c16, 0, t, k16, v16));
        blob a = snap_take(c32), b = snap_take(c16);
        CHECK(snap_equal(&a, &b));
        free(a.data); free(b.data);
        CHECK_OK(sparkv_attend(c32, 0, q, out32));
        CHECK_OK(sparkv_attend(c16, 0, q, out16));
        CHECK(memcmp(out32, out16, (size_t)TQ * TD * sizeof(float)) == 0);

        /* Not a sparkv_dtype: nothing is read or converted. */
        EXPECT_FAIL(SPARKV_ERR_DTYPE, c16, c16, sparkv_prefill_typed(c16, 1, (sparkv_dtype)3, k16, v16, TN, qw16, TW));
        EXPECT_FAIL(SPARKV_ERR_DTYPE, c16, c16, sparkv_prefill_typed(c16, 1, (sparkv_dtype)-1, k16, v16, TN, qw16, TW));
        EXPECT_FAIL(SPARKV_ERR_DTYPE, c16, c16, sparkv_append_typed(c16, 0, (sparkv_dtype)7, k16, v16));
        EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c16, c16, sparkv_prefill_typed(c16, 1, t, NULL, v16, TN, qw16, TW));
        EXPECT_FAIL(SPARKV_ERR_NULL_POINTER, c16, c16, sparkv_append_typed(c16, 0, t, k16, NULL));
        /* 16-bit Inf and NaN (in keys, values and window queries) are non-finite inputs. */
        const uint16_t inf = t == SPARKV_DTYPE_F16 ? 0x7c00u : 0x7f80u, nan = t == SPARKV_DTYPE_F16 ? 0x7e00u : 0x7fc0u;
        const size_t at = (size_t)1 * TN * TD + 17 * TD + 5; /* head 1, row 17, channel 5 */
        uint16_t keep = k16[at];
        k16[at] = inf;
        EXPECT_FAIL(SPARKV_ERR_NON_FINITE, c16, c16, sparkv_prefill_typed(c16, 1, t, k16, v16, TN, qw16, TW));
        CHECK(strstr(g_last_msg, "keys contain Inf at head 1, row 17, channel 5") != NULL);
        EXPECT_FAIL(SPARKV_ERR_NON_FINITE, c16, c16, sparkv_append_typed(c16, 0, t, k16 + at - 5, v16));
        k16[at] = keep;
        keep = v16[3];
        v16[3] = (uint16_t)(nan | 0x8000u);
        EXPECT_FAIL(SPARKV_ERR_NON_FINITE, c16, c16, sparkv_prefill_typed(c16, 1, t, k16, v16, TN, qw16, TW));
        CHECK(strstr(g_last_msg, "values contain NaN at head 0, row 0, channel 3") != NULL);
        v16[3] = keep;
        keep = qw16[TD + 1];
        qw16[TD + 1] = inf;
        EXPECT_FAIL(SPARKV_ERR_NON_FINITE, c16, c16, sparkv_prefill_typed(c16, 1, t, k16, v16, TN, qw16, TW));
        qw16[TD + 1] = keep;
        /* A finite bfloat16 beyond float16 storage (1e5 > 65504) is a range error, not an Inf. */
        if (t == SPARKV_DTYPE_BF16) {
            keep = k16[at];
            k16[at] = 0x47c3u; /* 99840 */
            EXPECT_FAIL(SPARKV_ERR_RANGE, c16, c16, sparkv_prefill_typed(c16, 1, t, k16, v16, TN, qw16, TW));
            CHECK(strstr(g_last_msg, "keys contain 99840 at head 1, row 17, channel 5") != NULL);
            k16[at] = keep;
        }
        CHECK(sparkv_layer_tokens(c16, 1) == 0);
        CHECK_OK(sparkv_prefill_typed(c16, 1, t, k16, v16, TN, qw16, TW));
        sparkv_cache_free(c32);
        sparkv_cache_free(c16);
        free(kr); free(vr); free(qr);
    }
    free(k); free(v); free(qw); free(q); free(k16); free(v16); free(qw16); free(out32); free(out16);
}

/* The planner predicts sparkv_memory_report exactly (every field, reserved bytes included) for
 * caches really built, and its searches return the last fitting size. */
static void test_plan(void) {
    g_section = "memory planner";
    enum { PQ = 6, PKV = 2, PD = 64, PL = 3 };
    const uint64_t prompts[] = {0, 1, 200, 255, 256, 257, 600};
    const uint64_t appends[] = {0, 1, 56, 300};
    sparkv_policy pol[9];
    for (int i = 0; i < 9; i++) pol[i] = sparkv_default_policy();
    pol[1].key_prune_ratio = 0.8f;                                     /* SparK, mean, signs */
    pol[2].key_prune_ratio = 0.5f; pol[2].recovery = SPARKV_RECOVER_GAUSSIAN; pol[2].key_precision = SPARKV_I4;
    pol[3].key_prune_ratio = 0.5f; pol[3].key_pruning = SPARKV_KEYS_THINK; pol[3].value_precision = SPARKV_I8;
    pol[3].recovery = SPARKV_RECOVER_NONE; pol[3].sign_bits = 0;
    pol[4].eviction = SPARKV_EVICT_SNAPKV; pol[4].evict_budget = 150; pol[4].key_prune_ratio = 0.7f;
    pol[5].eviction = SPARKV_EVICT_PYRAMIDKV; pol[5].evict_budget = 120;
    pol[6].eviction = SPARKV_EVICT_STREAMING; pol[6].sink_tokens = 4; pol[6].recent_tokens = 100;
    pol[7].value_prune_ratio = 0.5f; pol[7].value_precision = SPARKV_I4;
    pol[8].key_precision = SPARKV_I8; pol[8].value_precision = SPARKV_BF16; pol[8].quant_group = 16;
    rng r = {777};
    const uint64_t cap = 1000;
    float *k = falloc((size_t)PKV * cap * PD), *v = falloc((size_t)PKV * cap * PD), *qw = falloc((size_t)PQ * 32 * PD);
    fill_normal(&r, k, (size_t)PKV * cap * PD, 1.0f);
    fill_normal(&r, v, (size_t)PKV * cap * PD, 1.0f);
    fill_normal(&r, qw, (size_t)PQ * 32 * PD, 1.0f);
    const sparkv_shape s = make_shape(PL, PQ, PKV, PD, cap);
    for (int pi = 0; pi < 9; pi++) {
        for (size_t a = 0; a < sizeof prompts / sizeof prompts[0]; a++) {
            for (size_t b = 0; b < sizeof appends / sizeof appends[0]; b++) {
                const uint64_t np = prompts[a], na = appends[b];
                sparkv_memory want = SPARKV_MEMORY_INIT, got = SPARKV_MEMORY_INIT;
                const sparkv_status pst = sparkv_plan_memory(&s, &pol[pi], np, na, &got);
                sparkv_cache *c = NULL;
                CHECK_OK(sparkv_cache_create(&s, &pol[pi], &c));
                if (!c) continue;
                const uint64_t nw = np < 32 ? np : 32;
                sparkv_status st = SPARKV_OK;
                for (uint32_t l = 0; np && l < PL && st == SPARKV_OK; l++) {
                    /* window rows: the prompt's last nw query rows (any rows do for byte counts) */
                    st = sparkv_prefill(c, l, k, v, np, qw, nw);
                }
                for (uint32_t l = 0; l < PL && st == SPARKV_OK; l++)
                    for (uint64_t t = 0; t < na && st == SPARKV_OK; t++)
                        st = sparkv_append(c, l, k + t * PKV * PD % ((size_t)PKV * cap * PD - PKV * PD), v);
                if (st != SPARKV_OK) {
                    /* prefill refused (an eviction budget above the prompt): so must the planner */
                    CHECK(pst == st);
                } else {
                    CHECK_OK(pst);
                    CHECK_OK(sparkv_memory_report(c, SPARKV_ALL_LAYERS, &want));
                    if (!CHECK(memory_equal(&want, &got)))
                        fprintf(stderr, "      policy %d prompt %llu appended %llu: reserved %llu vs planned %llu, "
                                "total %llu vs %llu\n", pi, (unsigned long long)np, (unsigned long long)na,
                                (unsigned long long)want.reserved_bytes, (unsigned long long)got.reserved_bytes,
                                (unsigned long long)want.total_bytes, (unsigned long long)got.total_bytes);
                }
                sparkv_cache_free(c);
            }
        }
    }
    /* Searches: the answer fits, one more token (or sequence) does not. */
    for (int pi = 0; pi < 9; pi++) {
        const uint64_t budgets[] = {100000, 1000000, 3000000};
        for (int bi = 0; bi < 3; bi++) {
            uint64_t best = 0, batch = 0;
            CHECK_OK(sparkv_plan_max_prompt(&s, &pol[pi], budgets[bi], 2, 10, &best));
            sparkv_memory m = SPARKV_MEMORY_INIT;
            if (best) {
                CHECK_OK(sparkv_plan_memory(&s, &pol[pi], best, 10, &m));
                CHECK(2 * m.reserved_bytes <= budgets[bi]);
            }
            if (best && best + 10 < cap) {
                CHECK_OK(sparkv_plan_memory(&s, &pol[pi], best + 1, 10, &m));
                CHECK(2 * m.reserved_bytes > budgets[bi]);
            }
            CHECK_OK(sparkv_plan_max_batch(&s, &pol[pi], budgets[bi], 400, 10, &batch));
            CHECK_OK(sparkv_plan_memory(&s, &pol[pi], 400, 10, &m));
            CHECK(batch * m.reserved_bytes <= budgets[bi] && (batch + 1) * m.reserved_bytes > budgets[bi]);
        }
    }
    /* Errors, and a hostile shape answered in closed form (no per-page or per-head loop). */
    sparkv_memory m = SPARKV_MEMORY_INIT;
    uint64_t x = 0;
    CHECK(sparkv_plan_memory(&s, &pol[0], 900, 101, &m) == SPARKV_ERR_CAPACITY);
    CHECK(sparkv_plan_memory(NULL, &pol[0], 1, 0, &m) == SPARKV_ERR_NULL_POINTER);
    CHECK(sparkv_plan_memory(&s, &pol[0], 1, 0, NULL) == SPARKV_ERR_NULL_POINTER);
    CHECK(sparkv_plan_max_prompt(&s, &pol[0], 1000, 0, 0, &x) == SPARKV_ERR_INVALID_SHAPE);
    CHECK(sparkv_plan_memory(&s, &pol[4], 100, 0, &m) == SPARKV_ERR_INVALID_POLICY);
    CHECK(strstr(sparkv_last_error(NULL), "evict_budget") != NULL);
    sparkv_memory bad = SPARKV_MEMORY_INIT;
    bad.struct_size = 8;
    CHECK(sparkv_plan_memory(&s, &pol[0], 1, 0, &bad) == SPARKV_ERR_STRUCT_SIZE);
    sparkv_policy broken = pol[1];
    broken.key_prune_ratio = 1.5f;
    CHECK(sparkv_plan_memory(&s, &broken, 1, 0, &m) == SPARKV_ERR_INVALID_POLICY);
    sparkv_shape gqa = s;
    gqa.n_q_heads = 5;
    CHECK(sparkv_plan_memory(&gqa, &pol[0], 1, 0, &m) == SPARKV_ERR_GQA);
    sparkv_shape huge = make_shape(65536, 4096, 4096, 256, 1ull << 40);
    CHECK(sparkv_plan_memory(&huge, &pol[0], 1ull << 40, 0, &m) == SPARKV_ERR_INVALID_SHAPE);
    CHECK_OK(sparkv_plan_memory(&huge, &pol[1], 1ull << 20, 0, &m));
    CHECK_OK(sparkv_plan_max_prompt(&huge, &pol[1], UINT64_MAX, 1, 0, &x));
    CHECK(x > 0);
    free(k); free(v); free(qw);
}

/* sparkv_attend_batch: each sequence's output bit-identical to sparkv_attend on its own cache (any
 * mix of policies, lengths and kernels, the same cache twice, any order); failures name the sequence and write
 * nothing. */
static void test_attend_batch(void) {
    g_section = "batched attend";
    enum { BQ = 8, BKV = 2, BD = 128, NB = 5 };
    rng r = {9090};
    const uint64_t lengths[NB] = {700, 1, 256, 513, 1030};
    sparkv_cache *c[NB + 1] = {NULL};
    sparkv_shape s = make_shape(2, BQ, BKV, BD, 1100);
    float *k = falloc((size_t)BKV * 1100 * BD), *v = falloc((size_t)BKV * 1100 * BD), *qw = falloc((size_t)BQ * 32 * BD);
    fill_normal(&r, k, (size_t)BKV * 1100 * BD, 1.0f);
    fill_normal(&r, v, (size_t)BKV * 1100 * BD, 1.0f);
    fill_normal(&r, qw, (size_t)BQ * 32 * BD, 1.0f);
    for (int i = 0; i < NB; i++) {
        sparkv_policy p = sparkv_default_policy();
        if (i == 0) p.key_prune_ratio = 0.8f;
        if (i == 2) { p.key_prune_ratio = 0.5f; p.recovery = SPARKV_RECOVER_GAUSSIAN; p.value_precision = SPARKV_I8; }
        if (i == 3) { p.key_prune_ratio = 0.5f; p.key_pruning = SPARKV_KEYS_THINK; p.recovery = SPARKV_RECOVER_NONE; p.sign_bits = 0; }
        if (i == 4) { p.key_prune_ratio = 0.8f; p.key_precision = SPARKV_I8; p.value_prune_ratio = 0.25f; }
        CHECK_OK(sparkv_cache_create(&s, &p, &c[i]));
        if (!c[i]) goto done;
        const uint64_t nw = lengths[i] < 32 ? lengths[i] : 32;
        CHECK_OK(sparkv_prefill(c[i], 1, k, v, lengths[i], qw, nw));
        CHECK_OK(sparkv_append(c[i], 1, k, v));
    }
    if (sparkv_kernel_supported(SPARKV_KERNEL_AVX2)) CHECK_OK(sparkv_cache_set_kernel(c[1], SPARKV_KERNEL_AVX2));
    CHECK_OK(sparkv_cache_set_kernel(c[3], SPARKV_KERNEL_PORTABLE));
    {
        const size_t per = (size_t)BQ * BD;
        float *q = falloc(per * (NB + 1)), *want = falloc(per * (NB + 1)), *got = falloc(per * (NB + 1));
        fill_normal(&r, q, per * (NB + 1), 1.0f);
        c[NB] = c[0]; /* the same cache twice, with another query */
        for (int i = 0; i <= NB; i++) CHECK_OK(sparkv_attend(c[i], 1, q + per * i, want + per * i));
        {
            memset(got, 0, sizeof(float) * per * (NB + 1));
            CHECK_OK(sparkv_attend_batch(c, NB + 1, 1, q, got));
            CHECK(memcmp(want, got, sizeof(float) * per * (NB + 1)) == 0);
            /* a sub-batch in another order gives the same rows */
            sparkv_cache *sub[2] = {c[4], c[2]};
            float qsub[2 * BQ * BD], osub[2 * BQ * BD];
            memcpy(qsub, q + per * 4, per * sizeof(float));
            memcpy(qsub + per, q + per * 2, per * sizeof(float));
            CHECK_OK(sparkv_attend_batch(sub, 2, 1, qsub, osub));
            CHECK(memcmp(osub, want + per * 4, per * sizeof(float)) == 0);
            CHECK(memcmp(osub + per, want + per * 2, per * sizeof(float)) == 0);
        }
        /* failures: nothing written, the sequence named */
        for (size_t i = 0; i < per * (NB + 1); i++) got[i] = 7.0f;
        CHECK(sparkv_attend_batch(c, NB + 1, 0, q, got) == SPARKV_ERR_EMPTY);
        CHECK(strstr(sparkv_last_error(NULL), "attend_batch: sequence 0: attend: layer 0 holds no token") != NULL);
        q[per * 3 + 5] = NAN;
        CHECK(sparkv_attend_batch(c, NB + 1, 1, q, got) == SPARKV_ERR_NON_FINITE);
        CHECK(strstr(sparkv_last_error(NULL), "sequence 3") != NULL);
        q[per * 3 + 5] = 0.0f;
        CHECK(sparkv_attend_batch(c, NB + 1, 2, q, got) == SPARKV_ERR_LAYER);
        CHECK(sparkv_attend_batch(c, 0, 1, q, got) == SPARKV_ERR_INVALID_SHAPE);
        CHECK(sparkv_attend_batch(NULL, 1, 1, q, got) == SPARKV_ERR_NULL_POINTER);
        sparkv_cache *holes[2] = {c[0], NULL};
        CHECK(sparkv_attend_batch(holes, 2, 1, q, got) == SPARKV_ERR_NULL_POINTER);
        sparkv_shape other = make_shape(2, BQ, BKV * 2, BD, 64);
        sparkv_cache *odd = NULL;
        sparkv_policy dp = sparkv_default_policy();
        CHECK_OK(sparkv_cache_create(&other, &dp, &odd));
        sparkv_cache *mixed[2] = {c[0], odd};
        CHECK(sparkv_attend_batch(mixed, 2, 1, q, got) == SPARKV_ERR_INVALID_SHAPE);
        CHECK(strstr(sparkv_last_error(NULL), "caches[1] has 8 query heads, 4 KV heads") != NULL);
        sparkv_cache_free(odd);
        int untouched = 1;
        for (size_t i = 0; i < per * (NB + 1); i++) untouched &= got[i] == 7.0f;
        CHECK(untouched);
        free(q); free(want); free(got);
    }
done:
    for (int i = 0; i < NB; i++) sparkv_cache_free(c[i]);
    free(k); free(v); free(qw);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_version_and_strings();
    test_defaults_and_validate();
    test_create();
    test_draw_standard();
    test_draw_statistics();
    test_scenarios();
    test_policies();
    test_eviction_errors();
    test_typed_inputs();
    test_plan();
    test_attend_batch();
    sparkv_cache *c = make_error_cache();
    test_prefill_errors(c);
    test_append_errors(c);
    test_attend_errors(c);
    test_report_and_inspect_errors(c);
    test_kernel_errors(c);
    sparkv_cache_free(c);
    test_empty_layer();
    test_capacity();
    test_thread_invariance();
    test_policy_thread_invariance();
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
