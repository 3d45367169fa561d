/*
 * fuzz_persist.c — libFuzzer target for the saved-cache loader (sparkv_cache_load_buffer).
 *
 * The input is a candidate file. The library objects of this target are built with
 * -DSPARKV_FUZZ_SKIP_CHECKSUMS (see `make fuzz-persist`): the loader then ignores the stored
 * CRC-32C of each section, so mutated inputs reach the structural and content checks behind the
 * checksum instead of nearly all stopping there. Everything else is the shipped loader.
 *
 * Invariants (a violation prints "fuzz_persist: INVARIANT" and aborts):
 *  - no crash, no ASan/UBSan report, no leak;
 *  - a rejected file returns a known non-OK status with a non-empty sparkv_last_error(NULL) and
 *    leaves *out NULL;
 *  - an accepted file gives a cache every call works on: the memory report's total is the sum of
 *    its parts and within reserved bytes; inspect of every stored token (up to a bound) succeeds
 *    with finite keys and values; attend on every non-empty layer returns OK with a finite output,
 *    or SPARKV_ERR_OVERFLOW (values near float's range), twice bit-identically; saving it and
 *    loading the saved bytes gives the same memory report and the same attend output; appending a
 *    token to every layer with room succeeds.
 *
 * Build: `make fuzz-persist`. -DFUZZ_PERSIST_STANDALONE gives a main() that replays files given on
 * the command line (for compilers without libFuzzer).
 */
#include "sparkv.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INSPECT 4096u /* tokens inspected per layer and head */

static void invariant(int ok, const char *what) {
    if (ok) return;
    fprintf(stderr, "fuzz_persist: INVARIANT: %s (last error: %s)\n", what, sparkv_last_error(NULL));
    abort();
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* attend on every non-empty layer into out (n_layers * n_q * d floats); statuses into st. */
static void attend_all(sparkv_cache *c, const sparkv_shape *s, const float *q, float *out, sparkv_status *st) {
    const size_t per = (size_t)s->n_q_heads * s->head_dim;
    for (uint32_t l = 0; l < s->n_layers; l++) {
        st[l] = SPARKV_ERR_EMPTY;
        if (sparkv_layer_tokens(c, l) == 0) continue;
        st[l] = sparkv_attend(c, l, q, out + per * l);
        invariant(st[l] == SPARKV_OK || st[l] == SPARKV_ERR_OVERFLOW, "attend on a loaded cache fails");
        if (st[l] == SPARKV_OK) invariant(all_finite(out + per * l, per), "attend output not finite");
    }
}

static void exercise(sparkv_cache *c) {
    sparkv_shape s;
    invariant(sparkv_cache_shape(c, &s) == SPARKV_OK, "cache_shape");
    const uint32_t d = s.head_dim;
    sparkv_memory m = SPARKV_MEMORY_INIT;
    invariant(sparkv_memory_report(c, SPARKV_ALL_LAYERS, &m) == SPARKV_OK, "memory_report");
    invariant(m.total_bytes == m.key_bytes + m.key_meta_bytes + m.value_bytes + m.value_meta_bytes &&
              m.total_bytes <= m.reserved_bytes, "memory report parts");
    float key[256], value[256];
    for (uint32_t l = 0; l < s.n_layers; l++) {
        const uint64_t n = sparkv_layer_tokens(c, l);
        for (uint32_t h = 0; h < s.n_kv_heads; h++)
            for (uint64_t t = 0; t < n && t < MAX_INSPECT; t++) {
                invariant(sparkv_inspect_key(c, l, h, t, NULL, key) == SPARKV_OK && all_finite(key, d), "inspect_key");
                invariant(sparkv_inspect_value(c, l, h, t, value) == SPARKV_OK && all_finite(value, d),
                          "inspect_value");
            }
    }
    /* the shape is bounded by the input's size, but keep the harness's own buffers small */
    const size_t per = (size_t)s.n_q_heads * d;
    if (per * s.n_layers > ((size_t)1 << 22)) return;
    float *q = (float *)malloc(per * sizeof(float));
    float *o1 = (float *)calloc(per * s.n_layers, sizeof(float)), *o2 = (float *)calloc(per * s.n_layers, sizeof(float));
    sparkv_status *s1 = (sparkv_status *)malloc(s.n_layers * sizeof(sparkv_status));
    sparkv_status *s2 = (sparkv_status *)malloc(s.n_layers * sizeof(sparkv_status));
    if (!q || !o1 || !o2 || !s1 || !s2) goto done;
    for (size_t i = 0; i < per; i++) q[i] = (float)((int)(i * 37 % 17) - 8) * 0.125f;
    attend_all(c, &s, q, o1, s1);
    attend_all(c, &s, q, o2, s2);
    invariant(memcmp(s1, s2, s.n_layers * sizeof *s1) == 0 && memcmp(o1, o2, per * s.n_layers * sizeof(float)) == 0,
              "attend is not deterministic");
    /* save and load again: the same cache */
    uint64_t bytes = 0;
    invariant(sparkv_cache_save_size(c, 0, SPARKV_ALL_LAYERS, &bytes) == SPARKV_OK, "save_size");
    uint8_t *file = (uint8_t *)malloc((size_t)bytes);
    if (file) {
        size_t written = 0;
        invariant(sparkv_cache_save_buffer(c, 0, SPARKV_ALL_LAYERS, file, (size_t)bytes, &written) == SPARKV_OK &&
                  written == bytes, "save_buffer");
        sparkv_cache *again = NULL;
        invariant(sparkv_cache_load_buffer(file, written, NULL, &again) == SPARKV_OK && again, "reload of a re-save");
        sparkv_memory m2 = SPARKV_MEMORY_INIT;
        invariant(sparkv_memory_report(again, SPARKV_ALL_LAYERS, &m2) == SPARKV_OK &&
                  memcmp(&m, &m2, sizeof m) == 0, "reloaded memory report differs");
        attend_all(again, &s, q, o2, s2);
        invariant(memcmp(s1, s2, s.n_layers * sizeof *s1) == 0 &&
                  memcmp(o1, o2, per * s.n_layers * sizeof(float)) == 0, "reloaded attend differs");
        sparkv_cache_free(again);
        free(file);
    }
    /* appends continue. Harness limit: the first 4 layers only. An append may open a 256-token page
     * per KV head, and a small file can declare thousands of (layer, head) slots; appending to all of
     * them (with ASan's quarantine) would exhaust the fuzzer's 2 GB for no extra coverage. */
    float *kv = (float *)calloc((size_t)s.n_kv_heads * d, sizeof(float));
    if (kv) {
        for (uint32_t l = 0; l < s.n_layers && l < 4; l++) {
            if (sparkv_layer_tokens(c, l) >= s.capacity) continue;
            for (size_t i = 0; i < (size_t)s.n_kv_heads * d; i++) kv[i] = (float)((int)(i % 7) - 3) * 0.5f;
            invariant(sparkv_append(c, l, kv, kv) == SPARKV_OK, "append to a loaded cache");
        }
        free(kv);
    }
done:
    free(q); free(o1); free(o2); free(s1); free(s2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sparkv_cache *c = (sparkv_cache *)&size; /* sentinel: a failed load must set NULL */
    const sparkv_status st = sparkv_cache_load_buffer(data, size, NULL, &c);
    if (st != SPARKV_OK) {
        invariant(c == NULL, "failed load left *out set");
        invariant(st == SPARKV_ERR_FORMAT || st == SPARKV_ERR_CAPACITY || st == SPARKV_ERR_OUT_OF_MEMORY,
                  "unexpected status for a malformed file");
        invariant(sparkv_last_error(NULL)[0] != '\0', "no error message");
        return 0;
    }
    invariant(c != NULL, "OK without a cache");
    exercise(c);
    sparkv_cache_free(c);
    return 0;
}

#ifdef FUZZ_PERSIST_STANDALONE
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { perror(argv[i]); return 2; }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
        if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { fclose(f); return 2; }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, (size_t)n);
        free(buf);
    }
    return 0;
}
#endif
