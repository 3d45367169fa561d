/*
 * fuzz_api.c — libFuzzer target for sequences of SparKV C API calls.
 *
 * The input is decoded as a small program (the encoding is written out in
 * Tests/Fuzz/api/make_corpus.py, which also builds the seed corpus):
 *
 *   session := shape policy twin_byte op*          (op FREE ends a session; the next one begins)
 *   op      := kind_byte arguments
 *
 * Every field of the shape and policy can take sensible values (from small tables) or raw bytes
 * (out of range, NaN/Inf floats, huge sizes). Tensors are generated from a seeded PRNG at one of
 * several scales (1e-20 ... 7e4 ... 1e20) plus "patches" that put chosen special values (NaN, Inf,
 * 65504, 65520, 7e4, 1e20, 3.4e38, subnormals, raw bits) at chosen positions.
 *
 * Invariants (a violation prints "fuzz_api: INVARIANT" and aborts):
 *  - no crash, no ASan/UBSan report (the build uses -fsanitize=fuzzer,address,undefined);
 *  - every status is a known code with a non-NULL sentence; kernel names are non-NULL;
 *  - every failed call returns non-OK, leaves a non-empty sparkv_last_error (of the handle, or of
 *    NULL for handle-less calls), writes no output, and leaves the cache unchanged (memory report,
 *    layer token counts, kernel, and a sample of inspected keys/values/qnorms);
 *  - memory_report matches the byte formulas of sparkv.h after every prefill/append; eviction keeps
 *    the documented token counts, in prompt order, with the window (or sinks and recent tokens);
 *  - policy_validate agrees with create on a valid shape; threads / pool_kernel beyond the
 *    documented maxima are rejected; sparkv_plan_memory on the same shape and policy answers with
 *    a known status or consistent totals;
 *  - every stored key/value inspected after a successful prefill/append is finite, recovered key
 *    entries stay within the documented bound (SPARKV_RECOVERY_QN_FLOOR), and dense rows read back
 *    within the rounding bound of their precision (no silent saturation);
 *  - attend on finite input returns OK (or OVERFLOW / OUT_OF_MEMORY) and, when OK, an all-finite
 *    output that is deterministic, bit-identical with a twin cache run at another thread count,
 *    and close to a float64 softmax over the keys/values inspect reports (when scores are small
 *    enough for float32 rounding to be negligible).
 *
 * Harness limits (not library properties): shapes whose buffers would exceed a few MB, and
 * prefills with more than ~3e7 units of work, are skipped so the fuzzer is neither OOM-killed nor
 * slow; accepted thread counts above 16 are reduced to 1..4 after validation was checked.
 *
 * Build: see `make fuzz-api`. -DFUZZ_API_STANDALONE gives a main() that replays files given on
 * the command line (for compilers without libFuzzer).
 */
#include "sparkv.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPS 48
#define MAX_SESSIONS 3
#define MAX_TOKENS_ALLOC 1200u   /* rows the harness allocates for a prefill */
#define MAX_FLOATS (1u << 20)    /* 4 MB per tensor */
#define MAX_WORK 30000000ull     /* prefill work estimate above which the harness skips */
#define MAX_HEAD_SLOTS 4096u     /* n_layers * n_kv_heads the harness lets the library allocate */
#define LAST_STATUS 18           /* SPARKV_ERR_DTYPE */
#define ST_RANGE 16
#define ST_OVERFLOW 17

/* ---- failure reporting --------------------------------------------------------------------------- */

static void violated(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void violated(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_api: INVARIANT VIOLATED: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}
#define ENSURE(cond, ...) do { if (!(cond)) violated(__VA_ARGS__); } while (0)

/* ---- input reader ------------------------------------------------------------------------------------ */

typedef struct reader {
    const uint8_t *p;
    size_t n, i;
} reader;

static int more(const reader *r) { return r->i < r->n; }
static uint8_t u8(reader *r) { return r->i < r->n ? r->p[r->i++] : 0; }
static uint16_t u16(reader *r) { uint16_t a = u8(r); return (uint16_t)(a | (uint16_t)u8(r) << 8); }
static uint32_t u32(reader *r) { uint32_t a = u16(r); return a | (uint32_t)u16(r) << 16; }
static uint64_t u64(reader *r) { uint64_t a = u32(r); return a | (uint64_t)u32(r) << 32; }
static float f32raw(reader *r) { uint32_t b = u32(r); float f; memcpy(&f, &b, 4); return f; }

/* A selector byte: >= 0xF0 takes the raw value from the input, else table[b % n]. */
#define PICK_U32(r, ...) pick_u32(r, (const uint32_t[]){__VA_ARGS__}, sizeof((const uint32_t[]){__VA_ARGS__}) / 4)
static uint32_t pick_u32(reader *r, const uint32_t *t, size_t n) {
    uint8_t b = u8(r);
    return b >= 0xF0 ? u32(r) : t[b % n];
}
#define PICK_F32(r, ...) pick_f32(r, (const float[]){__VA_ARGS__}, sizeof((const float[]){__VA_ARGS__}) / 4)
static float pick_f32(reader *r, const float *t, size_t n) {
    uint8_t b = u8(r);
    return b >= 0xF0 ? f32raw(r) : t[b % n];
}

/* ---- data ------------------------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t g_rng;
static uint64_t rnd(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* Approximately normal: sum of 4 uniforms, centred (cheap, no libm). */
static float rnorm(void) {
    uint64_t a = rnd(), b = rnd();
    double s = (double)(a & 0xffffffffu) + (double)(a >> 32) + (double)(b & 0xffffffffu) + (double)(b >> 32);
    return (float)((s / 4294967296.0 - 2.0) * 1.7320508);
}

static const float k_specials[] = {NAN,     INFINITY, -INFINITY, 65504.0f, 65505.0f, 65519.0f, 65520.0f,
                                   7e4f,    -7e4f,    1e5f,      1e20f,    -1e20f,   3.4e38f,  -3.4e38f,
                                   1e-45f,  -0.0f,    0.0f,      6e-8f,    1e-30f,   3.0f,     -3.0f,
                                   1e-4f,   255.0f};
#define N_SPECIALS (sizeof(k_specials) / sizeof(k_specials[0]))
static const float k_scales[] = {1.0f, 0.01f, 100.0f, 1e4f, 3e4f, 7e4f, 1e-20f, 1e20f};

/* Fill x[n_outer][n_rows][d]. Query tensors can cancel pairwise within a GQA group (tiny window
 * norms) and carry a large outlier channel. Returns 1 if every value is finite. */
static int gen_tensor(reader *r, float *x, uint32_t n_outer, uint64_t n_rows, uint32_t d, uint32_t group, int query) {
    const uint8_t m = u8(r);
    g_rng = (uint64_t)u16(r) * 0x100000001B3ull + 7;
    const float scale = k_scales[m & 7];
    const unsigned pat = (m >> 3) & 3;
    const size_t n = (size_t)n_outer * n_rows * d;
    for (size_t i = 0; i < n; i++) {
        float v = rnorm();
        switch (pat) {
        case 1: v = fabsf(v); break;
        case 2: v = 1.0f; break;
        case 3: if (i % d == 3) v *= 50.0f; break;
        default: break;
        }
        x[i] = v * scale;
    }
    if (query) {
        const uint8_t f = u8(r);
        /* head 2k+1 = -head 2k (times 1.0001 with bit 3) within each group, in every channel or (bit 2)
         * only in channels 3 mod 8: exactly zero or tiny window norms, for all or some channels */
        if ((f & 1) && group >= 2)
            for (uint32_t h = 0; h + 1 < n_outer; h += 2)
                if ((h % group) + 1 < group)
                    for (size_t i = 0; i < n_rows * d; i++)
                        if (!(f & 4) || i % 8 == 3)
                            x[(size_t)(h + 1) * n_rows * d + i] = -x[(size_t)h * n_rows * d + i] * ((f & 8) ? 1.0001f : 1.0f);
        if (f & 2) for (size_t i = 5 % d; i < n; i += d) x[i] *= 1000.0f;
    }
    const unsigned np = m >> 5;
    for (unsigned k = 0; k < np && n; k++) {
        const size_t idx = u32(r) % n;
        const uint8_t s = u8(r);
        x[idx] = s >= 0xF0 ? f32raw(r) : k_specials[s % N_SPECIALS];
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* ---- status checks ---------------------------------------------------------------------------------- */

static int g_trace = -1; /* FUZZ_API_TRACE=1: print every call and its status on stderr */
static void check_status_value(sparkv_status st, const char *call) {
    if (g_trace < 0) g_trace = getenv("FUZZ_API_TRACE") != NULL;
    if (g_trace) fprintf(stderr, "  %-16s -> %d %s\n", call, (int)st, st ? "" : "OK");
    ENSURE((int)st >= 0 && (int)st <= LAST_STATUS, "%s returned unknown status %d", call, (int)st);
    ENSURE(sparkv_status_string(st) != NULL, "status_string(%d) is NULL", (int)st);
}

/* A failed call: non-OK already known; the detail must be non-empty. */
static void check_error_text(const sparkv_cache *c, sparkv_status st, const char *call) {
    const char *e = sparkv_last_error(c);
    ENSURE(e != NULL, "%s failed (%d) and last_error is NULL", call, (int)st);
    ENSURE(e[0] != '\0', "%s failed with %d (%s) and an empty last_error", call, (int)st, sparkv_status_string(st));
}

/* ---- cache fingerprint: what "unchanged" is checked against ------------------------------------------ */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = (const uint8_t *)p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001B3ull; }
    return h;
}

typedef struct fprint {
    sparkv_memory mem;
    uint64_t hash;
    int kernel;
} fprint;

static fprint fingerprint(const sparkv_cache *c, const sparkv_shape *sh) {
    fprint f;
    memset(&f, 0, sizeof(f));
    sparkv_memory m = SPARKV_MEMORY_INIT;
    sparkv_status st = sparkv_memory_report(c, SPARKV_ALL_LAYERS, &m);
    ENSURE(st == SPARKV_OK, "memory_report(ALL) failed with %d", (int)st);
    f.mem = m;
    f.kernel = (int)sparkv_cache_kernel(c);
    uint64_t h = 0xcbf29ce484222325ull, sum = 0;
    const uint32_t d = sh->head_dim;
    float buf[256];
    uint8_t mask[32];
    for (uint32_t l = 0; l < sh->n_layers; l++) {
        const uint64_t n = sparkv_layer_tokens(c, l);
        sum += n;
        h = fnv(h, &n, sizeof(n));
        if (!n) continue;
        for (uint32_t kh = 0; kh < sh->n_kv_heads; kh++) {
            float c_scale = 0;
            ENSURE(sparkv_inspect_qnorm(c, l, kh, buf, &c_scale) == SPARKV_OK, "inspect_qnorm failed on a valid head");
            h = fnv(h, buf, d * 4);
            h = fnv(h, &c_scale, 4);
            const uint64_t sample[5] = {0, n / 3, n / 2, n - 2 < n ? n - 2 : 0, n - 1};
            for (int s = 0; s < 5; s++) {
                ENSURE(sparkv_inspect_key(c, l, kh, sample[s], mask, buf) == SPARKV_OK, "inspect_key failed on a valid token");
                h = fnv(h, mask, d / 8);
                h = fnv(h, buf, d * 4);
                ENSURE(sparkv_inspect_value(c, l, kh, sample[s], buf) == SPARKV_OK, "inspect_value failed on a valid token");
                h = fnv(h, buf, d * 4);
            }
        }
    }
    ENSURE(m.n_tokens == sum, "memory_report n_tokens %llu != sum of layer_tokens %llu", (unsigned long long)m.n_tokens,
           (unsigned long long)sum);
    ENSURE(m.total_bytes == m.key_bytes + m.key_meta_bytes + m.value_bytes + m.value_meta_bytes,
           "memory_report total_bytes is not the sum of its parts");
    ENSURE(m.reserved_bytes >= m.total_bytes, "memory_report reserved_bytes < total_bytes");
    f.hash = h;
    return f;
}

static void check_unchanged(const fprint *before, const sparkv_cache *c, const sparkv_shape *sh, const char *call) {
    fprint after = fingerprint(c, sh);
    ENSURE(memcmp(&before->mem, &after.mem, sizeof(sparkv_memory)) == 0, "%s failed and changed the memory report", call);
    ENSURE(before->kernel == after.kernel, "%s failed and changed the kernel", call);
    ENSURE(before->hash == after.hash, "%s failed and changed the stored keys/values/qnorms", call);
}

/* ---- session state ---------------------------------------------------------------------------------- */

typedef struct session {
    sparkv_shape sh;
    sparkv_policy pol;
    sparkv_cache *c, *twin;
    fprint fp;
    uint64_t *prompt, *seen;    /* per layer: stored prompt tokens, tokens given (prompt + appended) */
} session;

static void decode_shape(reader *r, sparkv_shape *s) {
    *s = sparkv_default_shape();
    const uint8_t mode = u8(r);
    if ((mode & 15) == 15) { /* raw */
        s->struct_size = (mode & 16) ? u32(r) : (uint32_t)sizeof(sparkv_shape);
        s->n_layers = u32(r);
        s->n_q_heads = u32(r);
        s->n_kv_heads = u32(r);
        s->head_dim = u32(r);
        s->capacity = u64(r);
        return;
    }
    s->n_layers = 1 + u8(r) % 3;
    s->n_kv_heads = 1 + u8(r) % 4;
    s->n_q_heads = s->n_kv_heads * PICK_U32(r, 1, 2, 4, 3, 5, 8, 17, 1);
    s->head_dim = PICK_U32(r, 128, 64, 8, 16, 32, 256, 24, 136, 96, 248);
    s->capacity = PICK_U32(r, 1024, 64, 300, 600, 16, 256, 1, 257, 4096, 520);
}

static void decode_policy(reader *r, sparkv_policy *p, uint32_t d) {
    *p = sparkv_default_policy();
    const uint8_t mode = u8(r);
    if ((mode & 15) == 15) { /* raw, field by field */
        p->struct_size = (mode & 16) ? u32(r) : (uint32_t)sizeof(sparkv_policy);
        p->key_prune_ratio = f32raw(r);
        p->selection = (sparkv_selection)u32(r);
        p->cumulative_p = f32raw(r);
        p->cumulative_min_keep = u32(r);
        p->cumulative_max_keep = u32(r);
        p->recovery = (sparkv_recovery)u32(r);
        p->sign_bits = (int32_t)u32(r);
        p->key_precision = (sparkv_precision)u32(r);
        p->value_precision = (sparkv_precision)u32(r);
        p->window = u32(r);
        p->seed = u64(r);
        p->threads = (int32_t)u32(r);
        p->attention_scale = f32raw(r);
        p->eviction = (sparkv_eviction)u32(r);
        p->evict_budget = u32(r);
        p->pool_kernel = u32(r);
        p->pyramid_ratio = f32raw(r);
        p->sink_tokens = u32(r);
        p->recent_tokens = u32(r);
        p->key_pruning = (sparkv_key_pruning)u32(r);
        p->value_prune_ratio = f32raw(r);
        p->quant_group = u32(r);
        return;
    }
    p->key_prune_ratio = PICK_F32(r, 0.0f, 0.8f, 0.5f, 0.25f, 0.9f, 0.97f, 0.125f, 0.75f, 1.0f, -0.1f, NAN);
    p->selection = (sparkv_selection)PICK_U32(r, 0, 0, 0, 1);
    p->cumulative_p = PICK_F32(r, 0.9f, 0.5f, 1.0f, 0.99f, 0.1f, 0.0f);
    p->cumulative_min_keep = PICK_U32(r, 1, 0, 4, 8, 300);
    p->cumulative_max_keep = PICK_U32(r, 0, 8, 16, 4);
    p->recovery = (sparkv_recovery)PICK_U32(r, 1, 0, 2, 3, 4);
    p->sign_bits = (int32_t)PICK_U32(r, 1, 0, 0, 2);
    p->key_precision = (sparkv_precision)PICK_U32(r, 1, 0, 2, 3, 4, 3, 4, 5);
    p->value_precision = (sparkv_precision)PICK_U32(r, 1, 0, 2, 3, 4, 3, 4, 5);
    p->window = PICK_U32(r, 32, 1, 4, 8, 16, 64, 0);
    p->seed = u8(r);
    p->threads = (int32_t)PICK_U32(r, 1, 2, 0, 1, 2, 3, (uint32_t)-1);
    p->attention_scale = PICK_F32(r, 0.0f, 0.125f, 1.0f, 1e-3f, 10.0f, -1.0f, INFINITY);
    p->eviction = (sparkv_eviction)PICK_U32(r, 0, 0, 1, 2, 3, 4);
    p->evict_budget = PICK_U32(r, 8, 1, 32, 100, 300, 512, 0);
    p->pool_kernel = PICK_U32(r, 5, 1, 3, 7, 0, 2, 31);
    p->pyramid_ratio = PICK_F32(r, 4.0f, 1.0f, 2.0f, 1e6f, 0.5f, NAN);
    p->sink_tokens = PICK_U32(r, 4, 0, 1, 16);
    p->recent_tokens = PICK_U32(r, 508, 8, 32, 0, 200);
    p->key_pruning = (sparkv_key_pruning)PICK_U32(r, 0, 0, 1, 2);
    p->value_prune_ratio = PICK_F32(r, 0.0f, 0.0f, 0.5f, 0.25f, 0.75f, 1.0f);
    p->quant_group = PICK_U32(r, 32, 8, 16, 64, 128, 0, 12);
    if (mode & 16) { /* fix up into a valid combination most of the time */
        if (p->key_pruning == SPARKV_KEYS_THINK) {
            p->recovery = SPARKV_RECOVER_NONE;
            p->sign_bits = 0;
            p->selection = SPARKV_SELECT_TOPK;
        }
        if (p->recovery == SPARKV_RECOVER_NONE) p->sign_bits = 0;
        if (p->quant_group == 0 || p->quant_group % 8 || p->quant_group > d || (d && d % p->quant_group)) p->quant_group = 8;
    }
}

/* ---- checks of stored data ------------------------------------------------------------------------------ */

/* The rounding bound of one stored value of a dense row (appended tokens, dense prompt rows). */
static double store_tol(sparkv_precision p, const float *row, uint32_t j, uint32_t d, uint32_t qg) {
    const double x = fabs((double)row[j]);
    switch (p) {
    case SPARKV_F32: return 0.0;
    case SPARKV_F16: return x * 0x1p-11 + 0x1p-25;
    case SPARKV_BF16: return x * 0x1p-8 + 0x1p-133;
    default: {
        const double q = p == SPARKV_I8 ? 127.0 : 7.0;
        const uint32_t g0 = qg ? (j / qg) * qg : 0, g1 = qg ? g0 + qg : d;
        double a = 0;
        for (uint32_t k = g0; k < g1 && k < d; k++) a = fmax(a, fabs((double)row[k]));
        return a * (0.5 / q + 0x1p-10) + q * 0x1p-24;
    }
    }
}

static void check_dense_row(const sparkv_policy *p, const float *in, const float *got, uint32_t d, int key,
                            const char *what, uint64_t token) {
    const sparkv_precision prec = key ? p->key_precision : p->value_precision;
    for (uint32_t j = 0; j < d; j++) {
        const double tol = store_tol(prec, in, j, d, p->quant_group);
        ENSURE(fabs((double)got[j] - (double)in[j]) <= tol,
               "%s token %llu channel %u: stored %.9g for input %.9g (precision %d, tolerance %.3g)", what,
               (unsigned long long)token, j, (double)got[j], (double)in[j], (int)prec, tol);
    }
}

/* Every stored key/value of a layer is finite (scans at most ~200k floats). */
static void check_layer_finite(const session *s, uint32_t layer, const char *after) {
    const uint32_t d = s->sh.head_dim;
    const uint64_t n = sparkv_layer_tokens(s->c, layer);
    float buf[256], qn[256], c = 1.0f;
    uint8_t mask[32];
    const uint64_t step = n * s->sh.n_kv_heads * d > 200000 ? 7 : 1;
    const sparkv_precision kp = s->pol.key_precision;
    const int float_keys = kp == SPARKV_F32 || kp == SPARKV_F16 || kp == SPARKV_BF16;
    for (uint32_t h = 0; h < s->sh.n_kv_heads; h++) {
        ENSURE(sparkv_inspect_qnorm(s->c, layer, h, qn, &c) == SPARKV_OK, "inspect_qnorm failed on a valid head");
        for (uint64_t t = 0; t < n; t += step) {
            ENSURE(sparkv_inspect_key(s->c, layer, h, t, mask, buf) == SPARKV_OK, "inspect_key failed on a valid token");
            ENSURE(all_finite(buf, d), "after %s: stored key (layer %u, head %u, token %llu) is not finite", after, layer, h,
                   (unsigned long long)t);
            /* Recovery bound (sparkv.h, SPARKV_RECOVERY_QN_FLOOR): a recovered entry is at most
             * sqrt(FLOOR) * sqrt(x / c), and every statistic or draw x is at most theta, the token's
             * smallest kept saliency k_i^2 * qn_i. Checked where kept values are stored in a float
             * format (the quantized ones may round a small kept value far from its float). */
#ifdef SPARKV_RECOVERY_QN_FLOOR
            if (float_keys && c > 0.0f) {
                double theta = INFINITY;
                for (uint32_t j = 0; j < d; j++)
                    if (mask[j >> 3] >> (j & 7) & 1u) theta = fmin(theta, (double)buf[j] * buf[j] * qn[j]);
                if (theta < INFINITY) {
                    /* the statistic is stored as fp16(sqrt(x / c)): relative 2^-11, absolute 2^-25 (subnormal) */
                    const double bound = sqrt((double)SPARKV_RECOVERY_QN_FLOOR) * (sqrt(theta / c) * 1.02 + 0x1p-25);
                    for (uint32_t j = 0; j < d; j++)
                        if (!(mask[j >> 3] >> (j & 7) & 1u))
                            ENSURE(fabs((double)buf[j]) <= bound,
                                   "after %s: recovered key entry %.9g (layer %u, head %u, token %llu, channel %u, "
                                   "qn_j %g, c %g) exceeds sqrt(%d) * fp16(sqrt(theta / c)) <= %.9g", after, (double)buf[j], layer, h,
                                   (unsigned long long)t, j, (double)qn[j], (double)c, SPARKV_RECOVERY_QN_FLOOR, bound);
                }
            }
#else
            (void)float_keys;
#endif
            ENSURE(sparkv_inspect_value(s->c, layer, h, t, buf) == SPARKV_OK, "inspect_value failed on a valid token");
            ENSURE(all_finite(buf, d), "after %s: stored value (layer %u, head %u, token %llu) is not finite", after, layer,
                   h, (unsigned long long)t);
        }
    }
}

/* The memory report against the byte formulas of sparkv.h (sparkv_memory), recomputed from the
 * policy, the token counts the harness tracked and the kept-channel masks inspect reports. */
static uint64_t rb(sparkv_precision p, uint64_t n) {
    switch (p) {
    case SPARKV_F32: return 4 * n;
    case SPARKV_I8: return n;
    case SPARKV_I4: return (n + 1) / 2;
    default: return 2 * n;
    }
}
static uint64_t sc(sparkv_precision p, uint64_t k) { return p == SPARKV_I8 || p == SPARKV_I4 ? 2 * k : 0; }

static void check_memory_formula(const session *s) {
    const uint32_t d = s->sh.head_dim, nkv = s->sh.n_kv_heads, qg = s->pol.quant_group;
    const sparkv_precision kp = s->pol.key_precision, vp = s->pol.value_precision;
    const uint32_t keep = sparkv_topk_keep(s->pol.key_prune_ratio, d), keep_v = sparkv_topk_keep(s->pol.value_prune_ratio, d);
    const int prunes = s->pol.selection == SPARKV_SELECT_CUMULATIVE || keep < d;
    const int think = prunes && s->pol.key_pruning == SPARKV_KEYS_THINK, spark = prunes && !think;
    const uint64_t n_stats = s->pol.recovery == SPARKV_RECOVER_MEAN ? 1 : s->pol.recovery == SPARKV_RECOVER_EXPONENTIAL ? 2
                             : s->pol.recovery == SPARKV_RECOVER_GAUSSIAN ? 3 : 0;
    const uint64_t kgroups = (kp == SPARKV_I8 || kp == SPARKV_I4) ? d / qg : 0;
    const uint64_t vgroups = (vp == SPARKV_I8 || vp == SPARKV_I4) ? d / qg : 0;
    sparkv_memory want = SPARKV_MEMORY_INIT;
    uint8_t mask[32];
    for (uint32_t l = 0; l < s->sh.n_layers; l++) {
        const uint64_t n = sparkv_layer_tokens(s->c, l), np = s->prompt[l];
        if (n == 0) continue;
        if (n * nkv > 100000) return; /* too large to recount cheaply */
        want.n_tokens += n;
        want.dense_bytes += s->seen[l] * nkv * d * 4;
        for (uint32_t h = 0; h < nkv; h++) {
            if (np && spark) want.key_meta_bytes += (uint64_t)d * 4 + 4;
            if (np && think) want.key_meta_bytes += d / 8;
            for (uint64_t t = 0; t < n; t++) {
                const int prompt = t < np;
                if (prompt && spark) {
                    ENSURE(sparkv_inspect_key(s->c, l, h, t, mask, NULL) == SPARKV_OK, "inspect_key (mask) failed");
                    uint64_t kept = 0;
                    for (uint32_t b = 0; b < d / 8; b++) kept += (uint64_t)__builtin_popcount(mask[b]);
                    want.key_bytes += rb(kp, kept);
                    want.key_meta_bytes += d / 8 + (s->pol.sign_bits ? d / 8 : 0) + 2 * n_stats + sc(kp, 1);
                } else if (prompt && think) {
                    want.key_bytes += rb(kp, keep);
                    want.key_meta_bytes += sc(kp, 1);
                } else {
                    want.key_bytes += rb(kp, d);
                    want.key_meta_bytes += sc(kp, kgroups);
                }
                if (prompt && keep_v < d) {
                    want.value_bytes += rb(vp, keep_v);
                    want.value_meta_bytes += d / 8 + 2 + sc(vp, 1);
                } else {
                    want.value_bytes += rb(vp, d);
                    want.value_meta_bytes += sc(vp, vgroups);
                }
            }
        }
    }
    sparkv_memory got = SPARKV_MEMORY_INIT;
    ENSURE(sparkv_memory_report(s->c, SPARKV_ALL_LAYERS, &got) == SPARKV_OK, "memory_report failed");
    want.total_bytes = want.key_bytes + want.key_meta_bytes + want.value_bytes + want.value_meta_bytes;
    ENSURE(got.n_tokens == want.n_tokens && got.key_bytes == want.key_bytes && got.key_meta_bytes == want.key_meta_bytes &&
               got.value_bytes == want.value_bytes && got.value_meta_bytes == want.value_meta_bytes &&
               got.total_bytes == want.total_bytes && got.dense_bytes == want.dense_bytes,
           "memory_report differs from the sparkv.h formulas: tokens %llu/%llu key %llu/%llu key_meta %llu/%llu value "
           "%llu/%llu value_meta %llu/%llu dense %llu/%llu (got/want)",
           (unsigned long long)got.n_tokens, (unsigned long long)want.n_tokens, (unsigned long long)got.key_bytes,
           (unsigned long long)want.key_bytes, (unsigned long long)got.key_meta_bytes,
           (unsigned long long)want.key_meta_bytes, (unsigned long long)got.value_bytes,
           (unsigned long long)want.value_bytes, (unsigned long long)got.value_meta_bytes,
           (unsigned long long)want.value_meta_bytes, (unsigned long long)got.dense_bytes,
           (unsigned long long)want.dense_bytes);
}

/* Float64 softmax over what inspect reports, compared with attend's output when every score is
 * small (|scale * q| . |k| <= 30 per token, so float32 rounding of scores is far below the
 * tolerance). Returns silently when the layer is too large to check cheaply. */
static void check_attend_reference(const session *s, uint32_t layer, const float *q, const float *out) {
    const uint32_t d = s->sh.head_dim, nkv = s->sh.n_kv_heads, g = s->sh.n_q_heads / nkv;
    const uint64_t n = sparkv_layer_tokens(s->c, layer);
    if (n == 0 || n * nkv * d > 400000) return;
    const float scale = s->pol.attention_scale > 0.0f ? s->pol.attention_scale : (float)(1.0 / sqrt((double)d));
    float *K = (float *)malloc(sizeof(float) * n * d), *V = (float *)malloc(sizeof(float) * n * d);
    double *w = (double *)malloc(sizeof(double) * n);
    if (!K || !V || !w) { free(K); free(V); free(w); return; }
    for (uint32_t h = 0; h < nkv; h++) {
        double vmax = 0;
        for (uint64_t t = 0; t < n; t++) {
            ENSURE(sparkv_inspect_key(s->c, layer, h, t, NULL, K + t * d) == SPARKV_OK, "inspect_key failed");
            ENSURE(sparkv_inspect_value(s->c, layer, h, t, V + t * d) == SPARKV_OK, "inspect_value failed");
            for (uint32_t j = 0; j < d; j++) vmax = fmax(vmax, fabs((double)V[t * d + j]));
        }
        for (uint32_t i = 0; i < g; i++) {
            const float *qi = q + ((size_t)h * g + i) * d;
            double mx = -INFINITY, bound = 0;
            for (uint64_t t = 0; t < n; t++) {
                double dot = 0, mag = 0;
                for (uint32_t j = 0; j < d; j++) {
                    const double qs = (double)qi[j] * (double)scale; /* exact: no float overflow of q * scale */
                    dot += qs * (double)K[t * d + j];
                    mag += fabs(qs * (double)K[t * d + j]);
                }
                w[t] = dot;
                mx = fmax(mx, dot);
                bound = isnan(mag) ? INFINITY : fmax(bound, mag);
            }
            if (!(bound <= 30.0) || !(vmax < 1e30)) continue;
            double total = 0;
            for (uint64_t t = 0; t < n; t++) { w[t] = exp(w[t] - mx); total += w[t]; }
            const float *o = out + ((size_t)h * g + i) * d;
            for (uint32_t j = 0; j < d; j++) {
                double acc = 0;
                for (uint64_t t = 0; t < n; t++) acc += w[t] * (double)V[t * d + j];
                const double want = acc / total, tol = 2e-3 * vmax + 1e-30;
                ENSURE(fabs((double)o[j] - want) <= tol,
                       "attend (kernel %s, layer %u, q head %u, channel %u, %llu tokens) = %.9g, float64 reference over "
                       "inspected keys/values = %.9g (tolerance %.3g)",
                       sparkv_kernel_name(sparkv_cache_kernel(s->c)), layer, h * g + i, j, (unsigned long long)n,
                       (double)o[j], want, tol);
            }
        }
    }
    free(K); free(V); free(w);
}

/* ---- ops ---------------------------------------------------------------------------------------------- */

static uint32_t pick_layer(reader *r, const session *s) {
    const uint8_t b = u8(r);
    if (b >= 0xF8) return b == 0xFF ? u32(r) : s->sh.n_layers + (b & 3);
    return b % s->sh.n_layers;
}

/* A failed mutating or reading call on the cache: detail, status and state. */
/* The status of a call on the primary cache, checked at once: error details are per thread and
 * per handle, so the twin's call (same thread, other handle) may clear the primary's detail. */
static void primary_status(session *s, sparkv_status st, const char *call) {
    check_status_value(st, call);
    if (st != SPARKV_OK) check_error_text(s->c, st, call);
}

/* After a failed call: the cache is unchanged. */
static void after_failure(session *s, sparkv_status st, const char *call) {
    (void)st;
    check_unchanged(&s->fp, s->c, &s->sh, call);
}

static void op_prefill(reader *r, session *s) {
    const uint32_t layer = pick_layer(r, s);
    const uint32_t d = s->sh.head_dim, nkv = s->sh.n_kv_heads, nq = s->sh.n_q_heads;
    const uint8_t nsel = u8(r);
    uint64_t n;
    switch (nsel & 7) {
    case 0: n = 1 + u8(r) % 16; break;
    case 1: n = 1 + u8(r) % 64; break;
    case 2: n = 200 + u8(r); break;
    case 3: n = 256; break;
    case 4: n = 512; break;
    case 5: n = 257 + u8(r); break;
    case 6: n = s->sh.capacity + (nsel >> 7); break;
    default: n = (nsel & 8) ? 0 : u64(r); break;
    }
    const uint8_t wsel = u8(r);
    uint64_t nw;
    switch (wsel & 3) {
    case 0: nw = n < 32 ? n : 32; break;
    case 1: nw = 1 + (n ? u8(r) % n : 0); break;
    case 2: nw = (wsel & 4) ? 0 : n + 1; break;
    default: nw = n < 8 ? n : 8; break;
    }
    const uint8_t nulls = u8(r);
    const uint64_t n_alloc = n < MAX_TOKENS_ALLOC ? n : MAX_TOKENS_ALLOC;
    const uint64_t nw_alloc = nw < n_alloc ? nw : n_alloc;
    if (n_alloc * nkv * d > MAX_FLOATS || nw_alloc * nq * d > MAX_FLOATS) return;
    /* work estimate: scoring eviction costs window * group per token, pooling costs pool_kernel */
    const int scored = s->pol.eviction == SPARKV_EVICT_SNAPKV || s->pol.eviction == SPARKV_EVICT_PYRAMIDKV;
    const uint64_t use = nw < s->pol.window ? nw : s->pol.window;
    const double work = (double)n_alloc * nkv * d * (1.0 + (scored ? (double)use * (nq / nkv) : 0.0)) +
                        (scored ? (double)n_alloc * nkv * s->pol.pool_kernel : 0.0);
    if (work > (double)MAX_WORK) return;
    float *keys = (float *)malloc(sizeof(float) * (n_alloc * nkv * d + 1));
    float *vals = (float *)malloc(sizeof(float) * (n_alloc * nkv * d + 1));
    float *qw = (float *)malloc(sizeof(float) * (nw_alloc * nq * d + 1));
    if (!keys || !vals || !qw) { free(keys); free(vals); free(qw); return; }
    gen_tensor(r, keys, nkv, n_alloc, d, 1, 0);
    gen_tensor(r, vals, nkv, n_alloc, d, 1, 0);
    gen_tensor(r, qw, nq, nw_alloc, d, nq / nkv, 1);
    /* The arrays hold n_alloc rows: a call with more rows than that must be rejected (n > capacity)
     * before reading. */
    const uint64_t before_tokens = layer < s->sh.n_layers ? sparkv_layer_tokens(s->c, layer) : 0;
    sparkv_memory mb = SPARKV_MEMORY_INIT;
    sparkv_memory_report(s->c, SPARKV_ALL_LAYERS, &mb);
    const float *kp = (nulls & 1) ? NULL : keys, *vp = (nulls & 2) ? NULL : vals, *qp = (nulls & 4) ? NULL : qw;
    if (n > n_alloc && n <= s->sh.capacity) { free(keys); free(vals); free(qw); return; }
    if (nw > nw_alloc && qp && nw <= n && n <= s->sh.capacity) { free(keys); free(vals); free(qw); return; }
    if (g_trace > 0)
        fprintf(stderr, "  prefill(layer %u, n %llu, n_window %llu, nulls %d)\n", layer, (unsigned long long)n,
                (unsigned long long)nw, nulls & 7);
    const sparkv_status st = sparkv_prefill(s->c, layer, kp, vp, n, qp, nw);
    primary_status(s, st, "prefill");
    if (s->twin) {
        const sparkv_status st2 = sparkv_prefill(s->twin, layer, kp, vp, n, qp, nw);
        ENSURE(st2 == st, "prefill returned %d with threads %d and %d with threads %d", (int)st, (int)s->pol.threads,
               (int)st2, sparkv_cache_threads(s->twin));
    }
    if (st != SPARKV_OK) {
        after_failure(s, st, "prefill");
    } else {
        const uint64_t got = sparkv_layer_tokens(s->c, layer);
        ENSURE(before_tokens == 0 && got >= 1 && got <= n, "prefill of %llu tokens left %llu tokens (had %llu)",
               (unsigned long long)n, (unsigned long long)got, (unsigned long long)before_tokens);
        if (s->pol.eviction == SPARKV_EVICT_NONE)
            ENSURE(got == n, "prefill without eviction kept %llu of %llu tokens", (unsigned long long)got,
                   (unsigned long long)n);
        /* Token counts of eviction (sparkv.h, sparkv_prefill), u = min(window, n_window) */
        const uint64_t u = qp ? use : 0;
        if (s->pol.eviction == SPARKV_EVICT_SNAPKV)
            ENSURE(got == s->pol.evict_budget + u, "SnapKV kept %llu tokens, budget %u + window %llu",
                   (unsigned long long)got, s->pol.evict_budget, (unsigned long long)u);
        if (s->pol.eviction == SPARKV_EVICT_PYRAMIDKV)
            ENSURE(got > u && got <= n, "PyramidKV kept %llu tokens of %llu (window %llu)", (unsigned long long)got,
                   (unsigned long long)n, (unsigned long long)u);
        if (s->pol.eviction == SPARKV_EVICT_STREAMING) {
            const uint64_t sr = (uint64_t)s->pol.sink_tokens + s->pol.recent_tokens;
            ENSURE(got == (sr < n ? sr : n), "StreamingLLM kept %llu tokens of %llu (sink %u + recent %u)",
                   (unsigned long long)got, (unsigned long long)n, s->pol.sink_tokens, s->pol.recent_tokens);
        }
        /* Survivors are stored in prompt order, the window (scored eviction) or the sinks and recent
         * tokens (StreamingLLM) among them: matched through f32 values stored whole (exact). */
        if (s->pol.value_precision == SPARKV_F32 && sparkv_topk_keep(s->pol.value_prune_ratio, d) == d &&
            got * nkv * d <= 200000) {
            float row[256];
            for (uint32_t h = 0; h < nkv; h++) {
                uint64_t next = 0; /* first input row the next survivor may match */
                for (uint64_t t = 0; t < got; t++) {
                    sparkv_inspect_value(s->c, layer, h, t, row);
                    uint64_t r0 = next;
                    while (r0 < n && memcmp(row, vals + (h * n + r0) * d, sizeof(float) * d) != 0) r0++;
                    ENSURE(r0 < n, "prefill: stored token %llu of head %u matches no later prompt row (after row %llu)",
                           (unsigned long long)t, h, (unsigned long long)next);
                    const int window = (s->pol.eviction == SPARKV_EVICT_SNAPKV || s->pol.eviction == SPARKV_EVICT_PYRAMIDKV) &&
                                       t + u >= got;
                    const int stream = s->pol.eviction == SPARKV_EVICT_STREAMING && got < n;
                    if (window || (stream && t + s->pol.recent_tokens >= got)) {
                        const uint64_t want = n - (got - t);
                        ENSURE(memcmp(row, vals + (h * n + want) * d, sizeof(float) * d) == 0,
                               "prefill: stored token %llu of head %u is not prompt row %llu (window / recent tokens)",
                               (unsigned long long)t, h, (unsigned long long)want);
                        r0 = want;
                    } else if (stream && t < s->pol.sink_tokens) {
                        ENSURE(memcmp(row, vals + (h * n + t) * d, sizeof(float) * d) == 0,
                               "prefill: stored token %llu of head %u is not sink row %llu", (unsigned long long)t, h,
                               (unsigned long long)t);
                        r0 = t;
                    }
                    next = r0 + 1;
                }
            }
        }
        sparkv_memory ma = SPARKV_MEMORY_INIT;
        sparkv_memory_report(s->c, SPARKV_ALL_LAYERS, &ma);
        ENSURE(ma.dense_bytes == mb.dense_bytes + n * nkv * d * 4, "prefill: dense_bytes grew by %llu, expected %llu",
               (unsigned long long)(ma.dense_bytes - mb.dense_bytes), (unsigned long long)(n * nkv * d * 4));
        s->prompt[layer] = got;
        s->seen[layer] = n;
        check_layer_finite(s, layer, "prefill");
        check_memory_formula(s);
        /* Dense prompt rows (no eviction, no key pruning) read back within their rounding bound. */
        if (s->pol.eviction == SPARKV_EVICT_NONE && n * nkv * d <= 200000) {
            uint8_t mask[32];
            float buf[256];
            const int dense_vals = sparkv_topk_keep(s->pol.value_prune_ratio, d) == d;
            const int dense_keys = s->pol.selection == SPARKV_SELECT_TOPK && sparkv_topk_keep(s->pol.key_prune_ratio, d) == d;
            for (uint32_t h = 0; h < nkv; h++)
                for (uint64_t t = 0; t < n; t++) {
                    const float *krow = keys + (h * n + t) * d, *vrow = vals + (h * n + t) * d;
                    sparkv_inspect_key(s->c, layer, h, t, mask, buf);
                    int dense = 1;
                    for (uint32_t b = 0; b < d / 8; b++) dense &= mask[b] == 0xff;
                    if (dense && dense_keys) check_dense_row(&s->pol, krow, buf, d, 1, "prefill key", t);
                    if (dense_vals) {
                        sparkv_inspect_value(s->c, layer, h, t, buf);
                        check_dense_row(&s->pol, vrow, buf, d, 0, "prefill value", t);
                    }
                }
        }
        s->fp = fingerprint(s->c, &s->sh);
    }
    free(keys); free(vals); free(qw);
}

static void op_append(reader *r, session *s) {
    const uint32_t layer = pick_layer(r, s);
    const uint32_t d = s->sh.head_dim, nkv = s->sh.n_kv_heads;
    const uint8_t nulls = u8(r);
    const uint8_t reps = 1 + (nulls >> 4);
    float *keys = (float *)malloc(sizeof(float) * nkv * d), *vals = (float *)malloc(sizeof(float) * nkv * d);
    if (!keys || !vals) { free(keys); free(vals); return; }
    gen_tensor(r, keys, nkv, 1, d, 1, 0);
    gen_tensor(r, vals, nkv, 1, d, 1, 0);
    for (uint8_t rep = 0; rep < reps; rep++) {
        const uint64_t before = layer < s->sh.n_layers ? sparkv_layer_tokens(s->c, layer) : 0;
        const float *kp = (nulls & 1) ? NULL : keys, *vp = (nulls & 2) ? NULL : vals;
        const sparkv_status st = sparkv_append(s->c, layer, kp, vp);
        primary_status(s, st, "append");
        if (s->twin) ENSURE(sparkv_append(s->twin, layer, kp, vp) == st, "append status differs between thread counts");
        if (st != SPARKV_OK) { after_failure(s, st, "append"); break; }
        ENSURE(sparkv_layer_tokens(s->c, layer) == before + 1, "append did not add exactly one token");
        s->seen[layer]++;
        if (rep + 1 == reps) check_memory_formula(s);
        float buf[256];
        for (uint32_t h = 0; h < nkv; h++) {
            ENSURE(sparkv_inspect_key(s->c, layer, h, before, NULL, buf) == SPARKV_OK, "inspect_key of appended token");
            check_dense_row(&s->pol, keys + (size_t)h * d, buf, d, 1, "appended key", before);
            ENSURE(sparkv_inspect_value(s->c, layer, h, before, buf) == SPARKV_OK, "inspect_value of appended token");
            check_dense_row(&s->pol, vals + (size_t)h * d, buf, d, 0, "appended value", before);
        }
        s->fp = fingerprint(s->c, &s->sh);
        /* a slightly different token next time */
        for (size_t i = 0; i < (size_t)nkv * d; i += 7) { keys[i] *= -1.0f; vals[i] *= 0.5f; }
    }
    free(keys); free(vals);
}

static void op_attend(reader *r, session *s) {
    const uint32_t layer = pick_layer(r, s);
    const uint32_t d = s->sh.head_dim, nq = s->sh.n_q_heads;
    const uint8_t nulls = u8(r);
    const size_t nf = (size_t)nq * d;
    float *q = (float *)malloc(sizeof(float) * nf), *out = (float *)malloc(sizeof(float) * nf);
    float *out2 = (float *)malloc(sizeof(float) * nf), *sentinel = (float *)malloc(sizeof(float) * nf);
    if (!q || !out || !out2 || !sentinel) { free(q); free(out); free(out2); free(sentinel); return; }
    const int finite = gen_tensor(r, q, nq, 1, d, nq / s->sh.n_kv_heads, 1);
    memset(sentinel, 0x5A, sizeof(float) * nf);
    memcpy(out, sentinel, sizeof(float) * nf);
    const float *qp = (nulls & 1) ? NULL : q;
    float *op = (nulls & 2) ? NULL : out;
    const sparkv_status st = sparkv_attend(s->c, layer, qp, op);
    primary_status(s, st, "attend");
    const int valid = qp && op && layer < s->sh.n_layers && sparkv_layer_tokens(s->c, layer) > 0;
    if (st != SPARKV_OK) {
        ENSURE(memcmp(out, sentinel, sizeof(float) * nf) == 0, "attend failed (%d) but wrote its output", (int)st);
        after_failure(s, st, "attend");
        if (valid && !finite)
            ENSURE(st == SPARKV_ERR_NON_FINITE, "attend on a non-finite query returned %d, not NON_FINITE", (int)st);
        if (valid && finite)
            ENSURE(st == ST_OVERFLOW || st == SPARKV_ERR_OUT_OF_MEMORY,
                   "attend on finite input and a non-empty layer failed with %d (%s): %s", (int)st,
                   sparkv_status_string(st), sparkv_last_error(s->c));
    } else {
        ENSURE(valid && finite, "attend returned OK on invalid input (valid=%d, finite=%d)", valid, finite);
        for (size_t i = 0; i < nf; i++)
            ENSURE(isfinite(out[i]), "attend (kernel %s) returned OK with a non-finite output %g at %zu",
                   sparkv_kernel_name(sparkv_cache_kernel(s->c)), (double)out[i], i);
        ENSURE(sparkv_attend(s->c, layer, q, out2) == SPARKV_OK && memcmp(out, out2, sizeof(float) * nf) == 0,
               "attend is not deterministic");
        check_attend_reference(s, layer, q, out);
    }
    if (s->twin && qp && op) {
        memcpy(out2, sentinel, sizeof(float) * nf);
        const sparkv_status st2 = sparkv_attend(s->twin, layer, q, out2);
        ENSURE(st2 == st, "attend status %d with %d threads, %d with %d threads", (int)st, sparkv_cache_threads(s->c),
               (int)st2, sparkv_cache_threads(s->twin));
        if (st == SPARKV_OK)
            ENSURE(memcmp(out, out2, sizeof(float) * nf) == 0,
                   "attend output differs between %d and %d threads (kernel %s, layer %u, %llu tokens)",
                   sparkv_cache_threads(s->c), sparkv_cache_threads(s->twin), sparkv_kernel_name(sparkv_cache_kernel(s->c)),
                   layer, (unsigned long long)sparkv_layer_tokens(s->c, layer));
    }
    free(q); free(out); free(out2); free(sentinel);
}

static void op_memory(reader *r, session *s) {
    const uint8_t b = u8(r);
    const uint32_t layer = (b & 3) == 3 ? SPARKV_ALL_LAYERS : pick_layer(r, s);
    sparkv_memory m = SPARKV_MEMORY_INIT;
    if (b & 4) m.struct_size = (b & 8) ? 0 : sizeof(sparkv_memory) + 8;
    sparkv_memory copy = m;
    const sparkv_status st = sparkv_memory_report(s->c, layer, (b & 16) ? NULL : &m);
    primary_status(s, st, "memory_report");
    if (st != SPARKV_OK) {
        ENSURE(memcmp(&m, &copy, sizeof(m)) == 0, "memory_report failed but wrote its output");
        after_failure(s, st, "memory_report");
    } else {
        ENSURE(m.total_bytes == m.key_bytes + m.key_meta_bytes + m.value_bytes + m.value_meta_bytes &&
                   m.reserved_bytes >= m.total_bytes,
               "memory_report of layer %u is inconsistent", layer);
        if (layer != SPARKV_ALL_LAYERS)
            ENSURE(m.n_tokens == sparkv_layer_tokens(s->c, layer), "memory_report n_tokens != layer_tokens");
    }
}

static void op_inspect(reader *r, session *s, int kind) {
    const uint32_t layer = pick_layer(r, s);
    const uint8_t b = u8(r);
    const uint32_t head = (b & 3) == 3 ? s->sh.n_kv_heads + (b >> 6) : (b & 3) % s->sh.n_kv_heads;
    const uint64_t n = layer < s->sh.n_layers ? sparkv_layer_tokens(s->c, layer) : 0;
    uint64_t token;
    switch ((b >> 2) & 3) {
    case 0: token = n ? u16(r) % n : 0; break;
    case 1: token = n ? n - 1 : 0; break;
    case 2: token = n + (b >> 4 & 3); break;
    default: token = u64(r); break;
    }
    float a[256], sa[256];
    uint8_t mask[32], smask[32];
    memset(a, 0xA5, sizeof(a));
    memset(mask, 0xA5, sizeof(mask));
    memcpy(sa, a, sizeof(a));
    memcpy(smask, mask, sizeof(mask));
    sparkv_status st;
    const int null1 = (b >> 4) & 1, null2 = (b >> 5) & 1;
    float c = 12345.0f;
    if (kind == 0) st = sparkv_inspect_key(s->c, layer, head, token, null1 ? NULL : mask, null2 ? NULL : a);
    else if (kind == 1) st = sparkv_inspect_value(s->c, layer, head, token, null2 ? NULL : a);
    else st = sparkv_inspect_qnorm(s->c, layer, head, null1 ? NULL : a, null2 ? NULL : &c);
    primary_status(s, st, "inspect");
    if (st != SPARKV_OK) {
        ENSURE(memcmp(a, sa, sizeof(a)) == 0 && memcmp(mask, smask, sizeof(mask)) == 0 && c == 12345.0f,
               "inspect (%d) failed but wrote its output", kind);
        after_failure(s, st, kind == 0 ? "inspect_key" : kind == 1 ? "inspect_value" : "inspect_qnorm");
    } else {
        const uint32_t d = s->sh.head_dim;
        if (kind != 2 || !null1) ENSURE(all_finite(a, kind == 0 && null2 ? 0 : d), "inspect (%d) returned non-finite data", kind);
        if (kind == 2 && !null2) ENSURE(isfinite(c) && c > 0, "inspect_qnorm returned scale c = %g", (double)c);
    }
}

static void op_set_kernel(reader *r, session *s) {
    const uint8_t b = u8(r);
    const sparkv_kernel k = (sparkv_kernel)((b & 7) == 7 ? (int)u32(r) : (b & 7) % 5);
    const sparkv_status st = sparkv_cache_set_kernel(s->c, k);
    primary_status(s, st, "cache_set_kernel");
    const int supported = (int)k >= 0 && (int)k <= 3 && sparkv_kernel_supported(k);
    if (s->twin) ENSURE(sparkv_cache_set_kernel(s->twin, k) == st, "set_kernel differs between twins");
    if (st != SPARKV_OK) {
        ENSURE(!supported, "set_kernel(%d) failed on a supported kernel", (int)k);
        after_failure(s, st, "cache_set_kernel");
    } else {
        ENSURE(supported, "set_kernel(%d) accepted an unsupported kernel", (int)k);
        const sparkv_kernel now = sparkv_cache_kernel(s->c);
        ENSURE(now != SPARKV_KERNEL_AUTO && (k == SPARKV_KERNEL_AUTO || now == k), "set_kernel(%d) gave kernel %d", (int)k,
               (int)now);
        s->fp = fingerprint(s->c, &s->sh);
    }
}

static void op_validate(reader *r, session *s) {
    sparkv_policy p;
    decode_policy(r, &p, s->sh.head_dim);
    const uint32_t d = (u8(r) & 1) ? u32(r) : s->sh.head_dim;
    const sparkv_status st = sparkv_policy_validate((u8(r) & 0x80) ? NULL : &p, d);
    check_status_value(st, "policy_validate");
    if (st != SPARKV_OK) check_error_text(NULL, st, "policy_validate");
#ifdef SPARKV_MAX_THREADS
    if (st == SPARKV_OK) ENSURE(p.threads >= 0 && p.threads <= SPARKV_MAX_THREADS, "validate accepted threads %d", (int)p.threads);
#endif
#ifdef SPARKV_MAX_POOL_KERNEL
    if (st == SPARKV_OK && (p.eviction == SPARKV_EVICT_SNAPKV || p.eviction == SPARKV_EVICT_PYRAMIDKV))
        ENSURE(p.pool_kernel >= 1 && p.pool_kernel <= SPARKV_MAX_POOL_KERNEL && p.pool_kernel % 2 == 1,
               "validate accepted pool_kernel %u", p.pool_kernel);
#endif
    (void)s;
}

static void op_queries(reader *r, session *s) {
    const uint8_t b = u8(r);
    sparkv_shape sh;
    sparkv_policy po;
    sparkv_status st = sparkv_cache_shape(s->c, (b & 1) ? NULL : &sh);
    primary_status(s, st, "cache_shape");
    if (b & 1) { ENSURE(st == SPARKV_ERR_NULL_POINTER, "cache_shape(NULL out) = %d", (int)st); after_failure(s, st, "cache_shape"); }
    else ENSURE(st == SPARKV_OK && memcmp(&sh, &s->sh, sizeof(sh)) == 0, "cache_shape differs from the creation shape");
    st = sparkv_cache_policy(s->c, (b & 2) ? NULL : &po);
    primary_status(s, st, "cache_policy");
    if (b & 2) { ENSURE(st == SPARKV_ERR_NULL_POINTER, "cache_policy(NULL out) = %d", (int)st); after_failure(s, st, "cache_policy"); }
    else ENSURE(st == SPARKV_OK && memcmp(&po, &s->pol, sizeof(po)) == 0, "cache_policy differs from the creation policy");
    ENSURE(sparkv_cache_threads(s->c) >= 1, "cache_threads < 1");
    if (s->pol.threads > 0) ENSURE(sparkv_cache_threads(s->c) == s->pol.threads, "cache_threads != policy.threads");
    ENSURE(sparkv_layer_tokens(s->c, s->sh.n_layers) == 0, "layer_tokens of a layer out of range is not 0");
    ENSURE(sparkv_kernel_name(sparkv_cache_kernel(s->c)) != NULL, "kernel_name is NULL");
    /* The published draw (sparkv_draw_standard) at fuzzed coordinates: the bin from the published
     * hash; a bin always gives the same point, points increase with the bin, stay within the
     * outermost documented points (|Z| <= 2.511, S^2 <= 5.159), and the normal table is symmetric. */
    const uint64_t seed = u64(r), token = u64(r);
    const uint32_t layer = u32(r), head = u32(r), ch = u32(r);
    const uint64_t hh = mix64(mix64(mix64(mix64(seed) ^ layer) ^ head) ^ token);
    uint32_t x = ((uint32_t)hh ^ (uint32_t)(hh >> 32)) + (16 * (ch / 16 / 5) + ch % 16) * 0x9E3779B9u;
    x ^= x >> 16; x *= 0x85EBCA6Bu; x ^= x >> 13; x *= 0xC2B2AE35u; x ^= x >> 16;
    const uint32_t bin = (x >> (26 - 6 * (ch / 16 % 5))) & 63;
    static float points[2][64];
    static uint8_t known[2][64];
    for (int k = 0; k < 2; k++) {
        const float z = sparkv_draw_standard(seed, layer, head, token, ch,
                                             k ? SPARKV_RECOVER_EXPONENTIAL : SPARKV_RECOVER_GAUSSIAN);
        ENSURE(k ? (z > 0.0f && z * z <= 5.159f) : fabsf(z) <= 2.511f, "draw %g outside the documented range", (double)z);
        if (!known[k][bin]) { known[k][bin] = 1; points[k][bin] = z; }
        ENSURE(points[k][bin] == z, "bin %u of the published hash gives two different draws", bin);
        for (uint32_t o = 0; o < 64; o++)
            if (known[k][o]) ENSURE(o < bin ? points[k][o] < z : o > bin ? points[k][o] > z : 1, "draws not increasing with the bin");
        if (!k && known[0][63 - bin]) ENSURE(points[0][63 - bin] == -z, "normal draws not symmetric");
    }
    ENSURE(sparkv_draw_standard(seed, layer, head, token, ch, SPARKV_RECOVER_MEAN) == 0.0f, "MEAN draw is not 0");
}

/* Calls given a NULL handle: NULL_POINTER and a thread detail. */
static void op_null_handle(reader *r) {
    const uint8_t b = u8(r);
    float buf[256] = {0};
    uint8_t mask[32];
    sparkv_memory m = SPARKV_MEMORY_INIT;
    sparkv_shape sh;
    sparkv_policy po;
    sparkv_status st;
    switch (b % 10) {
    case 0: st = sparkv_prefill(NULL, 0, buf, buf, 1, buf, 1); break;
    case 1: st = sparkv_append(NULL, 0, buf, buf); break;
    case 2: st = sparkv_attend(NULL, 0, buf, buf + 128); break;
    case 3: st = sparkv_memory_report(NULL, 0, &m); break;
    case 4: st = sparkv_inspect_key(NULL, 0, 0, 0, mask, buf); break;
    case 5: st = sparkv_inspect_value(NULL, 0, 0, 0, buf); break;
    case 6: st = sparkv_inspect_qnorm(NULL, 0, 0, buf, buf + 1); break;
    case 7: st = sparkv_cache_shape(NULL, &sh); break;
    case 8: st = sparkv_cache_policy(NULL, &po); break;
    default: st = sparkv_cache_set_kernel(NULL, SPARKV_KERNEL_PORTABLE); break;
    }
    check_status_value(st, "NULL-handle call");
    ENSURE(st == SPARKV_ERR_NULL_POINTER, "call %d with a NULL handle returned %d", b % 10, (int)st);
    check_error_text(NULL, st, "NULL-handle call");
    ENSURE(sparkv_layer_tokens(NULL, 0) == 0 && sparkv_cache_threads(NULL) == 0, "NULL-handle queries are not 0");
    sparkv_cache_free(NULL);
}

/* ---- one session: create, ops, free ---------------------------------------------------------------- */

static int shape_plausible(const sparkv_shape *sh) {
    return sh->struct_size == sizeof(sparkv_shape) && sh->n_layers >= 1 && sh->n_q_heads >= 1 && sh->n_kv_heads >= 1 &&
           sh->capacity >= 1 && sh->n_layers <= 65536 && sh->n_kv_heads <= 4096 && sh->capacity <= (1ull << 40) &&
           sh->head_dim >= 8 && sh->head_dim <= 256 && sh->head_dim % 8 == 0 && sh->n_q_heads % sh->n_kv_heads == 0 &&
           sh->n_q_heads / sh->n_kv_heads <= 256;
}

static void run_session(reader *r) {
    session s;
    memset(&s, 0, sizeof(s));
    decode_shape(r, &s.sh);
    decode_policy(r, &s.pol, s.sh.head_dim);
    const uint8_t twin = u8(r);

    if (g_trace > 0 || (g_trace < 0 && getenv("FUZZ_API_TRACE"))) {
        const sparkv_policy *p = &s.pol;
        fprintf(stderr, "session: shape L=%u q=%u kv=%u D=%u cap=%llu | r=%g sel=%d p=%g keep=[%u,%u] rec=%d sign=%d "
                "kp=%d vp=%d w=%u seed=%llu thr=%d scale=%g evict=%d budget=%u pool=%u pyr=%g sink=%u recent=%u "
                "kpr=%d rv=%g qg=%u | twin=%d\n", s.sh.n_layers, s.sh.n_q_heads, s.sh.n_kv_heads, s.sh.head_dim,
                (unsigned long long)s.sh.capacity, (double)p->key_prune_ratio, (int)p->selection, (double)p->cumulative_p,
                p->cumulative_min_keep, p->cumulative_max_keep, (int)p->recovery, (int)p->sign_bits, (int)p->key_precision,
                (int)p->value_precision, p->window, (unsigned long long)p->seed, (int)p->threads, (double)p->attention_scale,
                (int)p->eviction, p->evict_budget, p->pool_kernel, (double)p->pyramid_ratio, p->sink_tokens,
                p->recent_tokens, (int)p->key_pruning, (double)p->value_prune_ratio, p->quant_group, twin & 1);
    }
    /* Validation first: the documented limits, and the same verdict as create on a valid shape. */
    const sparkv_status vst = sparkv_policy_validate(&s.pol, s.sh.head_dim);
    check_status_value(vst, "policy_validate");
    if (vst != SPARKV_OK) check_error_text(NULL, vst, "policy_validate");
#ifdef SPARKV_MAX_THREADS
    if (vst == SPARKV_OK)
        ENSURE(s.pol.threads >= 0 && s.pol.threads <= SPARKV_MAX_THREADS, "validate accepted threads %d",
               (int)s.pol.threads);
#endif
#ifdef SPARKV_MAX_POOL_KERNEL
    if (vst == SPARKV_OK && (s.pol.eviction == SPARKV_EVICT_SNAPKV || s.pol.eviction == SPARKV_EVICT_PYRAMIDKV))
        ENSURE(s.pol.pool_kernel <= SPARKV_MAX_POOL_KERNEL, "validate accepted pool_kernel %u", s.pol.pool_kernel);
#endif
    if (s.pol.threads > 16 && vst == SPARKV_OK) s.pol.threads = 1 + s.pol.threads % 4; /* harness limit */

    /* The planner on the same shape and policy, hostile sizes included: a known status with a
     * detail, or consistent totals; closed-form, so even 2^40 tokens x 65536 layers answer at once. */
    {
        sparkv_memory pm = SPARKV_MEMORY_INIT;
        const uint64_t prompt = s.sh.capacity / 2, appended = s.sh.capacity - prompt;
        const sparkv_status pst = sparkv_plan_memory(&s.sh, &s.pol, prompt, appended, &pm);
        check_status_value(pst, "plan_memory");
        if (pst != SPARKV_OK) check_error_text(NULL, pst, "plan_memory");
        else ENSURE(pm.total_bytes == pm.key_bytes + pm.key_meta_bytes + pm.value_bytes + pm.value_meta_bytes &&
                    pm.reserved_bytes >= pm.total_bytes, "plan_memory totals are inconsistent");
        if (pst == SPARKV_OK) ENSURE(vst == SPARKV_OK, "plan_memory accepted a policy validation rejects");
    }
    const int plausible = shape_plausible(&s.sh);
    if (plausible && (uint64_t)s.sh.n_layers * s.sh.n_kv_heads > MAX_HEAD_SLOTS) return; /* harness limit */
    sparkv_cache *dummy = (sparkv_cache *)&s; /* create must set *out to NULL on failure */
    s.c = dummy;
    const sparkv_status st = sparkv_cache_create(&s.sh, &s.pol, (twin & 0x40) ? NULL : &s.c);
    check_status_value(st, "cache_create");
    if (twin & 0x40) { ENSURE(st == SPARKV_ERR_NULL_POINTER, "create(out = NULL) returned %d", (int)st); return; }
    if (st != SPARKV_OK) {
        ENSURE(s.c == NULL, "create failed and did not set *out to NULL");
        check_error_text(NULL, st, "cache_create");
        if (plausible) ENSURE(st == vst, "create returned %d on a valid shape, policy_validate %d", (int)st, (int)vst);
        return;
    }
    ENSURE(s.c != NULL && s.c != dummy, "create succeeded without a handle");
    ENSURE(plausible && vst == SPARKV_OK, "create accepted a shape/policy that validation rejects (validate %d)", (int)vst);
    s.prompt = (uint64_t *)calloc(s.sh.n_layers, sizeof(uint64_t));
    s.seen = (uint64_t *)calloc(s.sh.n_layers, sizeof(uint64_t));
    if ((uint64_t)s.sh.n_q_heads * s.sh.head_dim > 65536 || !s.prompt || !s.seen) { /* harness limit */
        sparkv_cache_free(s.c);
        free(s.prompt);
        free(s.seen);
        return;
    }
    if (twin & 1) {
        sparkv_policy p2 = s.pol;
        p2.threads = s.pol.threads == 1 ? 2 : 1;
        ENSURE(sparkv_cache_create(&s.sh, &p2, &s.twin) == SPARKV_OK, "twin create failed");
        ENSURE(sparkv_cache_set_kernel(s.twin, sparkv_cache_kernel(s.c)) == SPARKV_OK, "twin set_kernel failed");
    }
    s.fp = fingerprint(s.c, &s.sh);

    for (int ops = 0; ops < MAX_OPS && more(r); ops++) {
        const uint8_t kind = u8(r);
        switch ((kind & 0x7F) % 13) {
        case 0: case 1: op_prefill(r, &s); break;
        case 2: op_append(r, &s); break;
        case 3: case 4: op_attend(r, &s); break;
        case 5: op_memory(r, &s); break;
        case 6: op_inspect(r, &s, 0); break;
        case 7: op_inspect(r, &s, 1); break;
        case 8: op_inspect(r, &s, 2); break;
        case 9: op_set_kernel(r, &s); break;
        case 10: op_validate(r, &s); break;
        case 11: if (kind & 0x80) op_null_handle(r); else op_queries(r, &s); break;
        default: goto done; /* FREE: end of this session */
        }
    }
done:
    sparkv_cache_free(s.c);
    sparkv_cache_free(s.twin);
    free(s.prompt);
    free(s.seen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    reader r = {data, size, 0};
    /* Static facts, every input. */
    for (int k = -1; k <= LAST_STATUS + 2; k++) ENSURE(sparkv_status_string((sparkv_status)k) != NULL, "status_string NULL");
    for (int k = -1; k <= 5; k++) ENSURE(sparkv_kernel_name((sparkv_kernel)k) != NULL, "kernel_name NULL");
    ENSURE(sparkv_last_error(NULL) != NULL, "last_error(NULL) is NULL");
    for (int sess = 0; sess < MAX_SESSIONS && more(&r); sess++) run_session(&r);
    return 0;
}

#ifdef FUZZ_API_STANDALONE
int main(int argc, char **argv) {
    int ran = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { perror(argv[i]); return 2; }
        uint8_t *buf = (uint8_t *)malloc(1 << 20);
        size_t n = fread(buf, 1, 1 << 20, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
        ran++;
    }
    printf("fuzz_api: %d inputs replayed, no invariant violated\n", ran);
    return 0;
}
#endif
