/*
 * make_seeds.c — writes the seed corpus of fuzz_persist: small valid saved caches of different
 * policies (a few tokens, D = 8 or 16, so the fuzzer's mutations stay cheap).
 *
 *   cc -std=c11 -Iinclude -o /tmp/make_seeds Tests/Fuzz/persist/make_seeds.c build/libsparkv.a -fopenmp -lm
 *   /tmp/make_seeds Tests/Fuzz/persist/corpus
 */
#include "sparkv.h"

#include <stdio.h>
#include <stdlib.h>

static float next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((int)(*s >> 40 & 0xffff) - 32768) / 16384.0f;
}

static int seed(const char *dir, const char *name, uint32_t n_layers, uint32_t d, sparkv_policy p, uint64_t prompt,
                uint64_t appended, uint32_t first, uint32_t count) {
    /* appended tokens cycle through the prompt's rows; the step's query is a window row */
    sparkv_shape s = sparkv_default_shape();
    s.n_layers = n_layers;
    s.n_q_heads = 2;
    s.n_kv_heads = 1;
    s.head_dim = d;
    s.capacity = 400;
    p.threads = 1;
    sparkv_cache *c = NULL;
    if (sparkv_cache_create(&s, &p, &c) != SPARKV_OK) { fprintf(stderr, "%s: %s\n", name, sparkv_last_error(NULL)); return 1; }
    uint64_t r = 42;
    float k[64 * 16], v[64 * 16], q[2 * 64 * 16];
    for (uint32_t l = 0; l < n_layers; l++) {
        for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) { k[i] = next(&r); v[i] = next(&r); }
        for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) q[i] = next(&r);
        if (prompt && sparkv_prefill(c, l, k, v, prompt, q, prompt < 4 ? prompt : 4) != SPARKV_OK) {
            fprintf(stderr, "%s: %s\n", name, sparkv_last_error(c));
            return 1;
        }
        for (uint64_t t = 0; t < appended; t++)
            if (sparkv_append_step(c, l, SPARKV_DTYPE_F32, k + t % 60 * d, v + t % 60 * d, q + t % 4 * 2 * d) != SPARKV_OK) {
                fprintf(stderr, "%s: %s\n", name, sparkv_last_error(c));
                return 1;
            }
    }
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const sparkv_status st = sparkv_cache_save(c, first, count, path);
    if (st != SPARKV_OK) fprintf(stderr, "%s: %s\n", name, sparkv_last_error(c));
    sparkv_cache_free(c);
    return st != SPARKV_OK;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: make_seeds DIR\n"); return 2; }
    const char *dir = argv[1];
    int bad = 0;
    sparkv_policy p = sparkv_default_policy();
    bad |= seed(dir, "seed-dense-f16", 1, 8, p, 5, 2, 0, 1);
    bad |= seed(dir, "seed-appended-only", 2, 8, p, 0, 3, 0, 2);
    p.key_prune_ratio = 0.5f;
    bad |= seed(dir, "seed-spark-topk-mean", 1, 16, p, 6, 1, 0, 1);
    p.recovery = SPARKV_RECOVER_GAUSSIAN;
    p.key_precision = SPARKV_I8;
    p.value_precision = SPARKV_I4;
    p.quant_group = 8;
    bad |= seed(dir, "seed-spark-topk-gauss-i8-i4", 1, 16, p, 5, 1, 0, 1);
    p = sparkv_default_policy();
    p.selection = SPARKV_SELECT_CUMULATIVE;
    p.cumulative_p = 0.7f;
    p.cumulative_min_keep = 0;
    p.recovery = SPARKV_RECOVER_EXPONENTIAL;
    p.sign_bits = 0;
    bad |= seed(dir, "seed-spark-cumulative-exp", 1, 16, p, 7, 0, 0, 1);
    p = sparkv_default_policy();
    p.key_pruning = SPARKV_KEYS_THINK;
    p.key_prune_ratio = 0.5f;
    p.recovery = SPARKV_RECOVER_NONE;
    p.sign_bits = 0;
    p.value_prune_ratio = 0.5f;
    p.key_precision = SPARKV_I4;
    p.quant_group = 8;
    bad |= seed(dir, "seed-think-i4-value-pruned", 1, 16, p, 5, 1, 0, 1);
    p = sparkv_default_policy();
    p.eviction = SPARKV_EVICT_STREAMING;
    p.sink_tokens = 2;
    p.recent_tokens = 3;
    p.value_prune_ratio = 0.25f;
    p.value_precision = SPARKV_BF16;
    p.key_precision = SPARKV_F32;
    bad |= seed(dir, "seed-streaming-value-pruned", 1, 8, p, 9, 2, 0, 1);
    p = sparkv_default_policy();
    p.key_prune_ratio = 0.25f;
    p.eviction = SPARKV_EVICT_SNAPKV;
    p.evict_budget = 3;
    p.pool_kernel = 3;
    bad |= seed(dir, "seed-snapkv-spark-range", 3, 8, p, 8, 1, 1, 2);
    p = sparkv_default_policy();
    p.key_prune_ratio = 0.5f;
    p.compress_decode = 1;
    p.decode_recent = 4;
    p.window = 2;
    bad |= seed(dir, "seed-decode-compression-spark", 1, 8, p, 6, 262, 0, 1);
    return bad;
}
