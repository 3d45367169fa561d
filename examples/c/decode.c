/*
 * decode.c — a SparKV decode loop in plain C.
 *
 * Builds a 2-layer cache (8 query heads sharing 2 KV heads, D = 128) that prunes 80% of every
 * prompt key's channels (TOPK, MEAN recovery with sign bits), prefills it with seeded random
 * "post-RoPE" keys, values and window queries, appends a few decode tokens, runs decode attention
 * and prints what the cache holds and how much memory it saves against a dense fp16 cache.
 *
 *   make example        (or: cc -std=c11 decode.c $(pkg-config --cflags --libs sparkv) -lm)
 */
#include "sparkv.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { N_LAYERS = 2, N_Q = 8, N_KV = 2, D = 128, N_PROMPT = 600, N_WINDOW = 32, N_DECODE = 4 };

/* Fail loudly: every SparKV call returns a status, and the handle (or NULL) carries the detail. */
#define CHECK(call, cache)                                                                            \
    do {                                                                                              \
        sparkv_status st_ = (call);                                                                   \
        if (st_ != SPARKV_OK) {                                                                       \
            fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #call,                 \
                    sparkv_status_string(st_), sparkv_last_error(cache));                             \
            sparkv_cache_free(cache);                                                                 \
            return EXIT_FAILURE;                                                                      \
        }                                                                                             \
    } while (0)

/* splitmix64-driven standard normals (Box-Muller), so the run is reproducible everywhere. */
static uint64_t rng_state = 42;
static double uniform01(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static void fill_normal(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * sqrt(-2.0 * log(uniform01())) * cos(6.283185307179586 * uniform01()));
}
/* Real keys have a few outlier channels; give every KV head some so pruning has work to do. */
static void add_outlier_channels(float *k, size_t rows) {
    for (size_t t = 0; t < rows; t++)
        for (int j = 0; j < D; j += 16) k[t * D + j] *= 6.0f;
}

static void print_memory(const char *what, const sparkv_memory *m) {
    double dense = m->dense_bytes ? (double)m->dense_bytes : 1.0;
    printf("%-8s tokens/head %5llu | keys %8llu B | key meta %7llu B | values %8llu B | value meta %5llu B | "
           "total %8llu B (%5.1f%% of dense fp16 %llu B) | reserved %llu B\n",
           what, (unsigned long long)m->n_tokens, (unsigned long long)m->key_bytes,
           (unsigned long long)m->key_meta_bytes, (unsigned long long)m->value_bytes,
           (unsigned long long)m->value_meta_bytes, (unsigned long long)m->total_bytes,
           100.0 * (double)m->total_bytes / dense, (unsigned long long)m->dense_bytes,
           (unsigned long long)m->reserved_bytes);
}

int main(void) {
    printf("SparKV %s (header %d.%d.%d)\n", sparkv_version_string(), SPARKV_VERSION_MAJOR, SPARKV_VERSION_MINOR,
           SPARKV_VERSION_PATCH);

    sparkv_shape shape = sparkv_default_shape();
    shape.n_layers = N_LAYERS;
    shape.n_q_heads = N_Q;
    shape.n_kv_heads = N_KV;
    shape.head_dim = D;
    shape.capacity = N_PROMPT + N_DECODE;

    sparkv_policy policy = sparkv_default_policy();
    policy.key_prune_ratio = 0.8f; /* keep 26 of 128 channels per prompt key */
    policy.selection = SPARKV_SELECT_TOPK;
    policy.recovery = SPARKV_RECOVER_MEAN;
    policy.sign_bits = 1;
    policy.window = N_WINDOW;

    sparkv_cache *cache = NULL;
    CHECK(sparkv_policy_validate(&policy, shape.head_dim), NULL);
    CHECK(sparkv_cache_create(&shape, &policy, &cache), NULL);
    printf("kernel %s, %d threads, keeps %u of %u key channels per prompt token\n",
           sparkv_kernel_name(sparkv_cache_kernel(cache)), sparkv_cache_threads(cache),
           sparkv_topk_keep(policy.key_prune_ratio, D), D);

    float *keys = malloc(sizeof(float) * N_KV * N_PROMPT * D);
    float *values = malloc(sizeof(float) * N_KV * N_PROMPT * D);
    float *window = malloc(sizeof(float) * N_Q * N_WINDOW * D);
    float k_new[N_KV * D], v_new[N_KV * D], q[N_Q * D], out[N_Q * D];
    if (!keys || !values || !window) {
        fprintf(stderr, "out of memory\n");
        free(keys); free(values); free(window);
        sparkv_cache_free(cache);
        return EXIT_FAILURE;
    }

    for (uint32_t layer = 0; layer < N_LAYERS; layer++) {
        fill_normal(keys, (size_t)N_KV * N_PROMPT * D, 1.0f);
        add_outlier_channels(keys, (size_t)N_KV * N_PROMPT);
        fill_normal(values, (size_t)N_KV * N_PROMPT * D, 1.0f);
        fill_normal(window, (size_t)N_Q * N_WINDOW * D, 1.0f);
        CHECK(sparkv_prefill(cache, layer, keys, values, N_PROMPT, window, N_WINDOW), cache);
        for (int step = 0; step < N_DECODE; step++) {
            fill_normal(k_new, N_KV * D, 1.0f);
            add_outlier_channels(k_new, N_KV);
            fill_normal(v_new, N_KV * D, 1.0f);
            fill_normal(q, N_Q * D, 1.0f);
            CHECK(sparkv_append(cache, layer, k_new, v_new), cache);
            CHECK(sparkv_attend(cache, layer, q, out), cache);
        }
        double sum = 0.0, sum_abs = 0.0, max_abs = 0.0;
        for (int i = 0; i < N_Q * D; i++) {
            sum += out[i];
            sum_abs += fabs(out[i]);
            if (fabs(out[i]) > max_abs) max_abs = fabs(out[i]);
        }
        printf("layer %u: %llu tokens; last attend output: sum %+.6f, mean |x| %.6f, max |x| %.6f, "
               "head 0 [%+.4f %+.4f %+.4f %+.4f ...]\n",
               layer, (unsigned long long)sparkv_layer_tokens(cache, layer), sum, sum_abs / (N_Q * D), max_abs,
               out[0], out[1], out[2], out[3]);
    }
    free(keys);
    free(values);
    free(window);

    uint8_t mask[D / 8];
    float key[D];
    CHECK(sparkv_inspect_key(cache, 0, 0, 0, mask, key), cache);
    int kept = 0;
    for (int j = 0; j < D; j++) kept += mask[j / 8] >> (j % 8) & 1;
    printf("layer 0, KV head 0, token 0 keeps %d channels; recovered key [%+.4f %+.4f %+.4f %+.4f ...]\n", kept,
           key[0], key[1], key[2], key[3]);

    sparkv_memory mem = {sizeof(sparkv_memory), 0, 0, 0, 0, 0, 0, 0, 0}; /* struct_size first */
    for (uint32_t layer = 0; layer < N_LAYERS; layer++) {
        char name[16];
        snprintf(name, sizeof name, "layer %u", layer);
        CHECK(sparkv_memory_report(cache, layer, &mem), cache);
        print_memory(name, &mem);
    }
    CHECK(sparkv_memory_report(cache, SPARKV_ALL_LAYERS, &mem), cache);
    print_memory("all", &mem);
    /* Key bytes of the prompt alone: minus the dense appended keys and the per-head qn[D] and c. */
    uint64_t prompt_key_bytes = mem.key_bytes + mem.key_meta_bytes - (uint64_t)N_LAYERS * N_KV * N_DECODE * D * 2 -
                                (uint64_t)N_LAYERS * N_KV * (D * 4 + 4);
    printf("prompt keys: %.1f bytes per token and KV head (dense fp16: %d)\n",
           (double)prompt_key_bytes / ((double)N_LAYERS * N_KV * N_PROMPT), D * 2);

    sparkv_cache_free(cache);
    return EXIT_SUCCESS;
}
