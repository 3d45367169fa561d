/*
 * test_decode_compression.c — appended tokens compressed as they age (policy.compress_decode,
 * sparkv_append_step).
 *
 * For each policy (SparK mean / gaussian / cumulative, ThinK, value pruning, SparK with int8 keys
 * and int4 values, SnapKV + SparK) and recent-window length:
 *  1. every aged page equals the page a prefill of the same stored values with the same window
 *     queries builds (keys with recovery, masks, values bit for bit) — ThinK: the head's channel set;
 *  2. the newest tokens stay dense: their keys and values are the inputs in the storage precision;
 *  3. attention, on every kernel, equals a float64 attention over the cache's own stored tokens
 *     (sparkv_inspect_key / _value), and is bit-identical with 1 and 2 threads;
 *  4. the memory report equals sparkv_plan_memory's prediction;
 *  5. without queries the prompt's norms are used; a layer never prefilled keeps its appends dense;
 *     a non-finite query fails and changes nothing.
 */
#include "sparkv.h"
#include "reference.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NQ = 8, NKV = 2, D = 64, G = NQ / NKV, PROMPT = 300, WIN = 16, PAGE = 256 };

static sparkv_shape shape_of(uint64_t capacity) { return make_shape(2, NQ, NKV, D, capacity); }

/* A row of D values as a dense (appended) row of precision p stores it. */
static void stored_row(const float *x, sparkv_precision p, uint32_t group, float *out) {
    ref_store_row(x, D, p, group, out);
}

/* float64 attention of every query head over the cache's stored tokens, read back by inspection */
static void attention_over_stored(sparkv_cache *c, uint32_t layer, const float *q, float scale, double *out) {
    const uint64_t n = sparkv_layer_tokens(c, layer);
    float *k = falloc((size_t)n * D), *v = falloc((size_t)n * D);
    double *w = dalloc(n);
    for (uint32_t h = 0; h < NKV; h++) {
        for (uint64_t t = 0; t < n; t++) {
            CHECK_OK(sparkv_inspect_key(c, layer, h, t, NULL, k + t * D));
            CHECK_OK(sparkv_inspect_value(c, layer, h, t, v + t * D));
        }
        for (uint32_t i = 0; i < G; i++) {
            const float *qi = q + (size_t)(h * G + i) * D;
            double mx = -INFINITY, sum = 0.0;
            for (uint64_t t = 0; t < n; t++) {
                double s = 0.0;
                for (uint32_t j = 0; j < D; j++) s += (double)qi[j] * (double)k[t * D + j];
                w[t] = s * scale;
                if (w[t] > mx) mx = w[t];
            }
            for (uint64_t t = 0; t < n; t++) { w[t] = exp(w[t] - mx); sum += w[t]; }
            double *o = out + (size_t)(h * G + i) * D;
            for (uint32_t j = 0; j < D; j++) o[j] = 0.0;
            for (uint64_t t = 0; t < n; t++)
                for (uint32_t j = 0; j < D; j++) o[j] += w[t] / sum * (double)v[t * D + j];
        }
    }
    free(k); free(v); free(w);
}

/* Appended token a's key/value rows ([n_appended][NKV][D]) and query ([n_appended][NQ][D]). */
typedef struct { float *k, *v, *q; } steps;

static void run_policy(const char *name, sparkv_policy p, uint32_t recent, int with_queries, rng *r) {
    char section[160];
    snprintf(section, sizeof section, "%s, recent %u%s", name, recent, with_queries ? "" : ", no queries");
    g_section = section;
    p.compress_decode = 1;
    p.decode_recent = recent;
    p.window = WIN;
    const uint64_t n_app = 3 * PAGE + recent + 17;
    const sparkv_shape s = shape_of(PROMPT + n_app + 1);
    float *pk = falloc((size_t)NKV * PROMPT * D), *pv = falloc((size_t)NKV * PROMPT * D), *pq = falloc((size_t)NQ * WIN * D);
    fill_normal(r, pk, (size_t)NKV * PROMPT * D, 1.0f);
    fill_normal(r, pv, (size_t)NKV * PROMPT * D, 1.0f);
    fill_normal(r, pq, (size_t)NQ * WIN * D, 1.0f);
    steps a = {falloc(n_app * NKV * D), falloc(n_app * NKV * D), falloc(n_app * NQ * D)};
    fill_normal(r, a.k, n_app * NKV * D, 1.3f);
    fill_normal(r, a.v, n_app * NKV * D, 1.0f);
    fill_normal(r, a.q, n_app * NQ * D, 1.0f);
    for (size_t i = 0; i < n_app * NQ * D; i += 7) a.q[i] *= 4.0f; /* decode norms unlike the prompt's */

    sparkv_cache *c[2] = {NULL, NULL};
    for (int t = 0; t < 2; t++) {
        sparkv_policy pt = p;
        pt.threads = t + 1;
        CHECK_OK(sparkv_cache_create(&s, &pt, &c[t]));
        if (!c[t]) goto out;
        CHECK_OK(sparkv_prefill(c[t], 1, pk, pv, PROMPT, pq, WIN));
        for (uint64_t i = 0; i < n_app; i++) {
            CHECK_OK(sparkv_append_step(c[t], 1, SPARKV_DTYPE_F32, a.k + i * NKV * D, a.v + i * NKV * D,
                                        with_queries ? a.q + i * NQ * D : NULL));
            /* layer 0 is never prefilled: its appends stay dense */
            CHECK_OK(sparkv_append_step(c[t], 0, SPARKV_DTYPE_F32, a.k + i * NKV * D, a.v + i * NKV * D,
                                        a.q + i * NQ * D));
        }
    }
    const uint64_t kept_prompt = sparkv_layer_tokens(c[0], 1) - n_app;

    /* 4: bytes as planned (layer 1 as if prefilled + appended; layer 0 appended only: dense) */
    sparkv_memory got = SPARKV_MEMORY_INIT, want = SPARKV_MEMORY_INIT, dense = SPARKV_MEMORY_INIT;
    CHECK_OK(sparkv_memory_report(c[0], 1, &got));
    sparkv_shape one = s;
    one.n_layers = 1; /* the planner prefills every layer: plan layer 1 alone (no PyramidKV here) */
    if (with_queries && p.selection == SPARKV_SELECT_CUMULATIVE) {
        /* cumulative selection: the plan counts max_keep channels per token, an upper bound */
        CHECK_OK(sparkv_plan_memory(&one, &p, PROMPT, n_app, &want));
        CHECK(got.total_bytes <= want.total_bytes && got.reserved_bytes <= want.reserved_bytes);
    } else if (with_queries) {
        CHECK_OK(sparkv_plan_memory(&one, &p, PROMPT, n_app, &want));
        CHECKF(got.total_bytes == want.total_bytes && got.reserved_bytes == want.reserved_bytes &&
               got.key_meta_bytes == want.key_meta_bytes,
               "memory report %llu / %llu reserved vs planned %llu / %llu", (unsigned long long)got.total_bytes,
               (unsigned long long)got.reserved_bytes, (unsigned long long)want.total_bytes,
               (unsigned long long)want.reserved_bytes);
    }
    CHECK_OK(sparkv_memory_report(c[0], 0, &dense));
    {
        sparkv_memory plain = SPARKV_MEMORY_INIT, uncompressed = SPARKV_MEMORY_INIT;
        CHECK_OK(sparkv_plan_memory(&one, &p, 0, n_app, &plain)); /* never prefilled: appends only, dense */
        CHECK(dense.total_bytes == plain.total_bytes && dense.key_bytes == (uint64_t)n_app * NKV *
              (p.key_precision == SPARKV_F32 ? 4 * D : p.key_precision == SPARKV_I8 ? D : p.key_precision == SPARKV_I4 ? D / 2 : 2 * D));
        sparkv_policy off = p;
        off.compress_decode = 0;
        CHECK_OK(sparkv_plan_memory(&one, &off, PROMPT, n_app, &uncompressed));
        CHECK(got.total_bytes < uncompressed.total_bytes); /* the aged pages are smaller */
    }

    /* 1: each aged page against a prefill of its stored values with the ring's window queries */
    const uint64_t first_app = kept_prompt;
    const uint64_t n_aged = (n_app - recent) / PAGE;
    float *bk = falloc((size_t)NKV * PAGE * D), *bv = falloc((size_t)NKV * PAGE * D), *bq = falloc((size_t)NQ * WIN * D);
    for (uint64_t pg = 0; pg < n_aged; pg++) {
        const uint64_t a0 = pg * PAGE; /* appended index of the page's first token */
        for (uint32_t h = 0; h < NKV; h++)
            for (uint32_t t = 0; t < PAGE; t++) {
                const size_t src = ((a0 + t) * NKV + h) * D, dst = ((size_t)h * PAGE + t) * D;
                stored_row(a.k + src, p.key_precision, p.quant_group, bk + dst);
                stored_row(a.v + src, p.value_precision, p.value_prune_ratio > 0 ? D : p.quant_group, bv + dst);
            }
        /* the page aged at the append of appended token a0 + PAGE + recent - 1: the ring then held
         * the last WIN queries up to it (or, without queries, the prompt's window) */
        const uint64_t last = a0 + PAGE + recent - 1;
        for (uint32_t i = 0; i < NQ; i++)
            for (uint32_t w = 0; w < WIN; w++)
                memcpy(bq + ((size_t)i * WIN + w) * D,
                       with_queries ? a.q + ((last - (WIN - 1) + w) * NQ + i) * D : pq + ((size_t)i * WIN + w) * D,
                       D * sizeof(float));
        sparkv_policy pb = p;
        pb.eviction = SPARKV_EVICT_NONE;
        pb.compress_decode = 0;
        sparkv_shape sb = shape_of(PAGE);
        sb.n_layers = 1;
        sparkv_cache *b = NULL;
        CHECK_OK(sparkv_cache_create(&sb, &pb, &b));
        if (!b) break;
        const int think = p.key_pruning == SPARKV_KEYS_THINK && p.key_prune_ratio > 0.0f;
        CHECK_OK(sparkv_prefill(b, 0, bk, bv, PAGE, bq, WIN));
        int same = 1;
        for (uint32_t h = 0; h < NKV; h++) {
            uint8_t think_mask[D / 8];
            if (think) CHECK_OK(sparkv_inspect_key(c[0], 1, h, 0, think_mask, NULL));
            for (uint32_t t = 0; t < PAGE; t++) {
                float ka[D], kb[D], va[D], vb[D];
                uint8_t ma[D / 8], mb[D / 8];
                CHECK_OK(sparkv_inspect_key(c[0], 1, h, first_app + a0 + t, ma, ka));
                CHECK_OK(sparkv_inspect_value(c[0], 1, h, first_app + a0 + t, va));
                CHECK_OK(sparkv_inspect_key(b, 0, h, t, mb, kb));
                CHECK_OK(sparkv_inspect_value(b, 0, h, t, vb));
                if (think) {
                    /* ThinK: the layer's channel set, stored values there, zero elsewhere */
                    for (uint32_t j = 0; j < D; j++) {
                        const int kept = think_mask[j >> 3] >> (j & 7) & 1;
                        const float kw = kept ? bk[((size_t)h * PAGE + t) * D + j] : 0.0f;
                        same &= memcmp(&ka[j], &kw, 4) == 0;
                    }
                    same &= memcmp(ma, think_mask, D / 8) == 0;
                } else if (p.recovery == SPARKV_RECOVER_GAUSSIAN || p.recovery == SPARKV_RECOVER_EXPONENTIAL) {
                    /* draws hash the layer and token index, which differ: compare the kept entries */
                    same &= memcmp(ma, mb, D / 8) == 0;
                    for (uint32_t j = 0; j < D; j++)
                        if (ma[j >> 3] >> (j & 7) & 1) same &= memcmp(&ka[j], &kb[j], 4) == 0;
                } else {
                    same &= memcmp(ma, mb, D / 8) == 0 && memcmp(ka, kb, sizeof ka) == 0;
                }
                same &= memcmp(va, vb, sizeof va) == 0;
            }
        }
        CHECKF(same, "aged page %llu equals the prefill of its stored values", (unsigned long long)pg);
        sparkv_cache_free(b);
    }
    free(bk); free(bv); free(bq);

    /* 2: the newest tokens are dense, exactly the inputs in the storage precision */
    {
        int exact = 1;
        for (uint64_t i = n_aged * PAGE; i < n_app; i++)
            for (uint32_t h = 0; h < NKV; h++) {
                float k[D], v[D], kw[D], vw[D];
                uint8_t m[D / 8];
                CHECK_OK(sparkv_inspect_key(c[0], 1, h, first_app + i, m, k));
                CHECK_OK(sparkv_inspect_value(c[0], 1, h, first_app + i, v));
                stored_row(a.k + (i * NKV + h) * D, p.key_precision, p.quant_group, kw);
                stored_row(a.v + (i * NKV + h) * D, p.value_precision, p.quant_group, vw);
                exact &= memcmp(k, kw, sizeof k) == 0 && memcmp(v, vw, sizeof v) == 0;
                for (uint32_t j = 0; j < D / 8; j++) exact &= m[j] == 0xff;
            }
        CHECKF(exact, "the %llu newest tokens are stored dense and exact", (unsigned long long)(n_app - n_aged * PAGE));
    }

    /* 3: attention over the cache's own stored tokens, every kernel, 1 and 2 threads */
    {
        float q[NQ * D], o1[NQ * D], o2[NQ * D];
        double ref[NQ * D];
        fill_normal(r, q, NQ * D, 1.0f);
        attention_over_stored(c[0], 1, q, 1.0f / sqrtf((float)D), ref);
        const sparkv_kernel ks[] = {SPARKV_KERNEL_PORTABLE, SPARKV_KERNEL_AVX2, SPARKV_KERNEL_AVX512};
        for (int ki = 0; ki < 3; ki++) {
            if (!sparkv_kernel_supported(ks[ki])) continue;
            CHECK_OK(sparkv_cache_set_kernel(c[0], ks[ki]));
            CHECK_OK(sparkv_cache_set_kernel(c[1], ks[ki]));
            CHECK_OK(sparkv_attend(c[0], 1, q, o1));
            CHECK_OK(sparkv_attend(c[1], 1, q, o2));
            CHECK(memcmp(o1, o2, sizeof o1) == 0);
            CHECK_CLOSE(o1, ref, NQ * D, 2e-5, 2e-4, sparkv_kernel_name(ks[ki]));
        }
    }

    /* 5: a non-finite query fails and changes nothing */
    {
        sparkv_memory before = SPARKV_MEMORY_INIT, after = SPARKV_MEMORY_INIT;
        CHECK_OK(sparkv_memory_report(c[0], SPARKV_ALL_LAYERS, &before));
        float qbad[NQ * D];
        memcpy(qbad, a.q, sizeof qbad);
        qbad[3] = NAN;
        CHECK(sparkv_append_step(c[0], 1, SPARKV_DTYPE_F32, a.k, a.v, qbad) == SPARKV_ERR_NON_FINITE);
        CHECK_OK(sparkv_memory_report(c[0], SPARKV_ALL_LAYERS, &after));
        CHECK(memcmp(&before, &after, sizeof before) == 0);
    }
out:
    sparkv_cache_free(c[0]);
    sparkv_cache_free(c[1]);
    free(pk); free(pv); free(pq); free(a.k); free(a.v); free(a.q);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    rng r = {20261130};
    sparkv_policy spark = sparkv_default_policy();
    spark.key_prune_ratio = 0.8f;
    sparkv_policy gauss = spark;
    gauss.recovery = SPARKV_RECOVER_GAUSSIAN;
    gauss.key_prune_ratio = 0.5f;
    sparkv_policy cumulative = spark;
    cumulative.selection = SPARKV_SELECT_CUMULATIVE;
    cumulative.cumulative_p = 0.8f;
    sparkv_policy think = sparkv_default_policy();
    think.key_prune_ratio = 0.5f;
    think.key_pruning = SPARKV_KEYS_THINK;
    think.recovery = SPARKV_RECOVER_NONE;
    think.sign_bits = 0;
    sparkv_policy vprune = sparkv_default_policy();
    vprune.value_prune_ratio = 0.5f;
    sparkv_policy quant = spark;
    quant.key_precision = SPARKV_I8;
    quant.value_precision = SPARKV_I4;
    quant.quant_group = 16;
    sparkv_policy snap = spark;
    snap.eviction = SPARKV_EVICT_SNAPKV;
    snap.evict_budget = 100;

    run_policy("spark 0.8 mean", spark, 32, 1, &r);
    run_policy("spark 0.8 mean", spark, 0, 1, &r);
    run_policy("spark 0.8 mean", spark, 5, 0, &r);
    run_policy("spark 0.5 gaussian", gauss, 7, 1, &r);
    run_policy("spark cumulative", cumulative, 32, 1, &r);
    run_policy("think 0.5", think, 32, 1, &r);
    run_policy("value pruning 0.5", vprune, 1, 1, &r);
    run_policy("spark 0.8 + i8 keys + i4 values", quant, 32, 1, &r);
    run_policy("snapkv 100 + spark 0.8", snap, 32, 1, &r);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
