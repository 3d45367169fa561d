/*
 * test_persist.c — saved caches (sparkv_cache_save / sparkv_cache_load and their buffer forms).
 *
 *  - Round trips for every storage mode (dense, SparK top-k and cumulative with each recovery,
 *    ThinK, value pruning, SnapKV / PyramidKV / StreamingLLM eviction, f32 / bf16 / i8 / i4, appended
 *    tokens, partial pages, >= 512 tokens, layer ranges): the loaded cache's memory report is
 *    identical, attend is bit-identical, every stored key and value inspects identically, an
 *    append continues both caches identically, and saving the loaded cache gives the same bytes.
 *  - Hostile files: each malformed class (truncated, magic, version, byte order, checksum,
 *    trailing bytes, wrong expected shape, overflowing sizes and counts, n > cap, page kinds the
 *    policy cannot build, SparK masks that disagree with T or kept_bytes, sign bits on kept
 *    channels, non-finite values / scales / statistics / norms, off-grid quantized codes) returns
 *    its status with a message and leaves *out NULL; the checksum of a doctored section is
 *    recomputed so each check is reached on its own. Then a truncation sweep (every prefix of small
 *    files) and a bit-flip sweep (every bit).
 *
 *   make test-persist   (ASan + UBSan; part of make test-c)
 */
#include "sparkv.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_D 256u
/* the format's framing (persist_format.h), as the hostile-file tests need it */
#define PREAMBLE 16u
#define FRAME 24u
#define TAG(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define T_HEAD TAG('H', 'E', 'A', 'D')
#define T_LAYER TAG('L', 'A', 'Y', 'R')
#define T_KVHEAD TAG('K', 'V', 'H', 'D')
#define T_PAGE TAG('P', 'A', 'G', 'E')

/* A cache with every layer prefilled with `prompt` tokens (prompt 0: none) and `appended` tokens
 * appended, from seeded normal data (scaled by layer so layers differ). */
static sparkv_cache *build(const sparkv_shape *s, const sparkv_policy *p, uint64_t prompt, uint64_t appended,
                           uint64_t seed) {
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_create(s, p, &c));
    if (!c) return NULL;
    const uint32_t d = s->head_dim, nkv = s->n_kv_heads, nq = s->n_q_heads;
    rng r = {seed};
    for (uint32_t l = 0; l < s->n_layers; l++) {
        if (prompt) {
            const uint64_t nw = prompt < 16 ? prompt : 16;
            float *k = falloc((size_t)nkv * prompt * d), *v = falloc((size_t)nkv * prompt * d);
            float *q = falloc((size_t)nq * nw * d);
            fill_normal(&r, k, (size_t)nkv * prompt * d, 1.0f + 0.25f * (float)l);
            fill_normal(&r, v, (size_t)nkv * prompt * d, 1.0f);
            fill_normal(&r, q, (size_t)nq * nw * d, 1.0f);
            CHECK_OK(sparkv_prefill(c, l, k, v, prompt, q, nw));
            free(k); free(v); free(q);
        }
        float kr[4 * MAX_D], vr[4 * MAX_D], qr[8 * MAX_D];
        for (uint64_t t = 0; t < appended; t++) {
            fill_normal(&r, kr, (size_t)nkv * d, 1.0f);
            fill_normal(&r, vr, (size_t)nkv * d, 1.0f);
            fill_normal(&r, qr, (size_t)nq * d, 1.0f);
            /* with the step's query: decode-time compression keeps the last window of them */
            CHECK_OK(sparkv_append_step(c, l, SPARKV_DTYPE_F32, kr, vr, qr));
        }
    }
    return c;
}

static uint8_t *save_to_buffer(const sparkv_cache *c, uint32_t first, uint32_t count, size_t *size) {
    uint64_t bytes = 0;
    CHECK_OK(sparkv_cache_save_size(c, first, count, &bytes));
    uint8_t *buf = (uint8_t *)xmalloc((size_t)bytes);
    size_t written = 0;
    CHECK_OK(sparkv_cache_save_buffer(c, first, count, buf, (size_t)bytes, &written));
    CHECK(written == bytes);
    *size = written;
    return buf;
}

static int same_memory(const sparkv_memory *a, const sparkv_memory *b) { return memcmp(a, b, sizeof *a) == 0; }

/* Everything observable of layer l is the same in a and b: memory report, token count, every
 * stored key (with mask) and value, qnorms, and attend output bit for bit. */
static void compare_layer(sparkv_cache *a, sparkv_cache *b, uint32_t l, uint64_t seed, const char *what) {
    sparkv_shape s;
    CHECK_OK(sparkv_cache_shape(a, &s));
    const uint32_t d = s.head_dim;
    sparkv_memory ma = SPARKV_MEMORY_INIT, mb = SPARKV_MEMORY_INIT;
    CHECK_OK(sparkv_memory_report(a, l, &ma));
    CHECK_OK(sparkv_memory_report(b, l, &mb));
    CHECKF(same_memory(&ma, &mb), "%s layer %u: memory reports differ (total %llu vs %llu, reserved %llu vs %llu)",
           what, l, (unsigned long long)ma.total_bytes, (unsigned long long)mb.total_bytes,
           (unsigned long long)ma.reserved_bytes, (unsigned long long)mb.reserved_bytes);
    const uint64_t n = sparkv_layer_tokens(a, l);
    CHECKF(sparkv_layer_tokens(b, l) == n, "%s layer %u: token counts differ", what, l);
    int keys_same = 1, values_same = 1;
    for (uint32_t h = 0; h < s.n_kv_heads; h++) {
        float qa[MAX_D], qb[MAX_D], ca, cb;
        CHECK_OK(sparkv_inspect_qnorm(a, l, h, qa, &ca));
        CHECK_OK(sparkv_inspect_qnorm(b, l, h, qb, &cb));
        CHECK(memcmp(qa, qb, d * sizeof(float)) == 0 && memcmp(&ca, &cb, sizeof ca) == 0);
        for (uint64_t t = 0; t < n; t++) {
            float ka[MAX_D], kb[MAX_D], va[MAX_D], vb[MAX_D];
            uint8_t ma_[MAX_D / 8], mb_[MAX_D / 8];
            if (sparkv_inspect_key(a, l, h, t, ma_, ka) != SPARKV_OK || sparkv_inspect_key(b, l, h, t, mb_, kb) != SPARKV_OK ||
                memcmp(ka, kb, d * sizeof(float)) != 0 || memcmp(ma_, mb_, d / 8) != 0)
                keys_same = 0;
            if (sparkv_inspect_value(a, l, h, t, va) != SPARKV_OK || sparkv_inspect_value(b, l, h, t, vb) != SPARKV_OK ||
                memcmp(va, vb, d * sizeof(float)) != 0)
                values_same = 0;
        }
    }
    CHECKF(keys_same && values_same, "%s layer %u: inspected keys (%d) or values (%d) differ", what, l, keys_same,
           values_same);
    if (n == 0) return;
    rng r = {seed};
    float *q = falloc((size_t)s.n_q_heads * d), *oa = falloc((size_t)s.n_q_heads * d), *ob = falloc((size_t)s.n_q_heads * d);
    fill_normal(&r, q, (size_t)s.n_q_heads * d, 1.0f);
    CHECK_OK(sparkv_attend(a, l, q, oa));
    CHECK_OK(sparkv_attend(b, l, q, ob));
    CHECKF(memcmp(oa, ob, (size_t)s.n_q_heads * d * sizeof(float)) == 0, "%s layer %u: attend differs", what, l);
    free(q); free(oa); free(ob);
}

/* Every field (memcmp would compare padding). */
static int same_float(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }
static int same_policy(const sparkv_policy *a, const sparkv_policy *b) {
    return a->struct_size == b->struct_size && same_float(a->key_prune_ratio, b->key_prune_ratio) &&
           a->selection == b->selection && same_float(a->cumulative_p, b->cumulative_p) &&
           a->cumulative_min_keep == b->cumulative_min_keep && a->cumulative_max_keep == b->cumulative_max_keep &&
           a->recovery == b->recovery && a->sign_bits == b->sign_bits && a->key_precision == b->key_precision &&
           a->value_precision == b->value_precision && a->window == b->window && a->seed == b->seed &&
           a->threads == b->threads && same_float(a->attention_scale, b->attention_scale) &&
           a->eviction == b->eviction && a->evict_budget == b->evict_budget && a->pool_kernel == b->pool_kernel &&
           same_float(a->pyramid_ratio, b->pyramid_ratio) && a->sink_tokens == b->sink_tokens &&
           a->recent_tokens == b->recent_tokens && a->key_pruning == b->key_pruning &&
           same_float(a->value_prune_ratio, b->value_prune_ratio) && a->quant_group == b->quant_group;
}

/* Round trip of layers [first, first + count) through a buffer and through a file. */
static void round_trip(const char *name, const sparkv_shape *s, const sparkv_policy *p, uint64_t prompt,
                       uint64_t appended, uint32_t first, uint32_t count) {
    g_section = name;
    sparkv_cache *a = build(s, p, prompt, appended, 1234);
    if (!a) return;
    size_t size = 0;
    uint8_t *file = save_to_buffer(a, first, count, &size);
    if (count == SPARKV_ALL_LAYERS) count = s->n_layers - first;
    sparkv_cache *b = (sparkv_cache *)&size; /* a non-NULL sentinel: load must overwrite it */
    CHECK_OK(sparkv_cache_load_buffer(file, size, s, &b));
    if (!b) { free(file); sparkv_cache_free(a); return; }
    sparkv_shape sb;
    sparkv_policy pa, pb;
    CHECK_OK(sparkv_cache_shape(b, &sb));
    CHECK_OK(sparkv_cache_policy(a, &pa));
    CHECK_OK(sparkv_cache_policy(b, &pb));
    CHECK(sb.n_layers == s->n_layers && sb.n_q_heads == s->n_q_heads && sb.n_kv_heads == s->n_kv_heads &&
          sb.head_dim == s->head_dim && sb.capacity == s->capacity);
    CHECK(same_policy(&pa, &pb));
    for (uint32_t l = 0; l < s->n_layers; l++) {
        if (l >= first && l < first + count) compare_layer(a, b, l, 77 + l, name);
        else CHECKF(sparkv_layer_tokens(b, l) == 0, "%s: unsaved layer %u is not empty", name, l);
    }
    /* saving the loaded cache writes the same bytes */
    size_t size2 = 0;
    uint8_t *again = save_to_buffer(b, first, count, &size2);
    CHECKF(size2 == size && memcmp(again, file, size) == 0, "%s: re-saved file differs", name);
    free(again);
    /* append continues identically (and, after prefill, is the only change allowed) */
    const uint32_t d = s->head_dim;
    rng r = {99};
    float kr[4 * MAX_D], vr[4 * MAX_D];
    for (uint32_t l = first; l < first + count; l++) {
        if (sparkv_layer_tokens(a, l) + 1 > s->capacity) continue;
        fill_normal(&r, kr, (size_t)s->n_kv_heads * d, 1.0f);
        fill_normal(&r, vr, (size_t)s->n_kv_heads * d, 1.0f);
        CHECK_OK(sparkv_append(a, l, kr, vr));
        CHECK_OK(sparkv_append(b, l, kr, vr));
        compare_layer(a, b, l, 501 + l, name);
    }
    /* through a file */
    char path[64];
    snprintf(path, sizeof path, "/tmp/sparkv-test-persist-%ld.svc", (long)getpid());
    CHECK_OK(sparkv_cache_save(a, first, count, path));
    sparkv_cache *c = NULL;
    CHECK_OK(sparkv_cache_load(path, NULL, &c));
    if (c) {
        for (uint32_t l = first; l < first + count; l++) compare_layer(a, c, l, 900 + l, name);
        sparkv_cache_free(c);
    }
    remove(path);
    free(file);
    sparkv_cache_free(a);
    sparkv_cache_free(b);
}

static sparkv_policy spark(float r, sparkv_recovery rec, int sign_bits) {
    sparkv_policy p = sparkv_default_policy();
    p.key_prune_ratio = r;
    p.recovery = rec;
    p.sign_bits = sign_bits;
    p.threads = 2;
    return p;
}

static void test_round_trips(void) {
    const sparkv_shape s1 = make_shape(2, 4, 2, 64, 2048);
    sparkv_policy p = sparkv_default_policy();
    p.threads = 2;
    round_trip("dense f16", &s1, &p, 40, 3, 0, 2);
    round_trip("appended only (no prefill)", &s1, &p, 0, 5, 0, 2);
    round_trip("dense, >= 512 tokens, page filled by appends", &s1, &p, 600, 30, 0, SPARKV_ALL_LAYERS);
    p.key_precision = SPARKV_F32;
    p.value_precision = SPARKV_BF16;
    round_trip("dense f32 keys, bf16 values", &s1, &p, 70, 2, 0, 2);

    const sparkv_recovery recs[] = {SPARKV_RECOVER_NONE, SPARKV_RECOVER_MEAN, SPARKV_RECOVER_GAUSSIAN,
                                    SPARKV_RECOVER_EXPONENTIAL};
    const char *rec_names[] = {"SparK top-k, no recovery", "SparK top-k, mean", "SparK top-k, gaussian",
                               "SparK top-k, exponential"};
    for (int i = 0; i < 4; i++) {
        sparkv_policy q = spark(0.75f, recs[i], recs[i] != SPARKV_RECOVER_NONE);
        round_trip(rec_names[i], &s1, &q, 300, 4, 0, 2);
    }
    const char *cum_names[] = {"SparK cumulative, no recovery", "SparK cumulative, mean", "SparK cumulative, gaussian",
                               "SparK cumulative, exponential"};
    for (int i = 0; i < 4; i++) {
        sparkv_policy q = spark(0.0f, recs[i], recs[i] != SPARKV_RECOVER_NONE);
        q.selection = SPARKV_SELECT_CUMULATIVE;
        q.cumulative_p = 0.8f;
        q.cumulative_min_keep = i == 0 ? 0 : 4;
        q.cumulative_max_keep = i == 3 ? 40 : 0;
        round_trip(cum_names[i], &s1, &q, 270, 2, 0, 2);
    }
    sparkv_policy q = spark(0.5f, SPARKV_RECOVER_MEAN, 1);
    q.key_precision = SPARKV_I8;
    q.value_precision = SPARKV_I8;
    round_trip("SparK, i8 keys and values, >= 512 tokens", &s1, &q, 530, 3, 0, 2);
    q.key_precision = SPARKV_I4;
    q.value_precision = SPARKV_I4;
    q.quant_group = 16;
    round_trip("SparK, i4 keys and values", &s1, &q, 77, 1, 0, 2);
    q.selection = SPARKV_SELECT_CUMULATIVE; /* odd kept counts: I4 rows end with a padding nibble */
    q.cumulative_p = 0.7f;
    round_trip("SparK cumulative, i4 keys (odd rows)", &s1, &q, 90, 1, 0, 2);
    sparkv_policy think_odd = sparkv_default_policy();
    think_odd.key_pruning = SPARKV_KEYS_THINK;
    think_odd.key_prune_ratio = 0.3f; /* T = 64 - floor(19.2) = 45: odd */
    think_odd.recovery = SPARKV_RECOVER_NONE;
    think_odd.sign_bits = 0;
    think_odd.key_precision = SPARKV_I4;
    think_odd.value_prune_ratio = 0.3f; /* T_v = 64 - 19 = 45: odd */
    think_odd.value_precision = SPARKV_I4;
    round_trip("ThinK + value pruning, i4, odd T_v", &s1, &think_odd, 40, 1, 0, 2);
    sparkv_policy di4 = sparkv_default_policy();
    di4.key_precision = SPARKV_I4;
    di4.value_precision = SPARKV_I8;
    di4.quant_group = 8;
    round_trip("dense i4 keys, i8 values", &s1, &di4, 33, 260, 0, 2);

    sparkv_policy think = sparkv_default_policy();
    think.key_pruning = SPARKV_KEYS_THINK;
    think.key_prune_ratio = 0.5f;
    think.recovery = SPARKV_RECOVER_NONE;
    think.sign_bits = 0;
    round_trip("ThinK", &s1, &think, 300, 3, 0, 2);
    think.key_precision = SPARKV_I4;
    round_trip("ThinK, i4 keys", &s1, &think, 45, 1, 0, 2);

    sparkv_policy vp = spark(0.5f, SPARKV_RECOVER_GAUSSIAN, 1);
    vp.value_prune_ratio = 0.5f;
    round_trip("SparK + value pruning", &s1, &vp, 100, 2, 0, 2);
    vp.value_precision = SPARKV_I8;
    round_trip("SparK + value pruning, i8 values", &s1, &vp, 100, 2, 0, 2);
    sparkv_policy vd = sparkv_default_policy();
    vd.value_prune_ratio = 0.25f;
    round_trip("dense keys + value pruning", &s1, &vd, 257, 2, 0, 2);

    sparkv_policy snap = spark(0.5f, SPARKV_RECOVER_MEAN, 1);
    snap.eviction = SPARKV_EVICT_SNAPKV;
    snap.evict_budget = 100;
    round_trip("SnapKV + SparK", &s1, &snap, 400, 2, 0, 2);
    snap.eviction = SPARKV_EVICT_PYRAMIDKV;
    round_trip("PyramidKV + SparK", &s1, &snap, 400, 2, 0, 2);
    sparkv_policy st = sparkv_default_policy();
    st.eviction = SPARKV_EVICT_STREAMING;
    st.sink_tokens = 4;
    st.recent_tokens = 60;
    round_trip("StreamingLLM", &s1, &st, 300, 3, 0, 2);

    /* decode-time compression: aged pages (SparK with norms of their own, ThinK, value-pruned), the
     * decode-query ring, the aging state; appends after the load keep aging identically */
    const sparkv_shape sd = make_shape(2, 4, 2, 32, 2048);
    sparkv_policy dc = spark(0.5f, SPARKV_RECOVER_MEAN, 1);
    dc.compress_decode = 1;
    dc.decode_recent = 16;
    dc.window = 8;
    round_trip("decode-time compression, SparK (ring partly filled)", &sd, &dc, 100, 5, 0, 2);
    round_trip("decode-time compression, SparK, aged pages", &sd, &dc, 100, 700, 0, 2);
    dc.key_precision = SPARKV_I8;
    dc.value_prune_ratio = 0.25f;
    round_trip("decode-time compression, SparK i8 + value pruning", &sd, &dc, 300, 560, 0, 2);
    sparkv_policy dt = sparkv_default_policy();
    dt.key_pruning = SPARKV_KEYS_THINK;
    dt.key_prune_ratio = 0.5f;
    dt.recovery = SPARKV_RECOVER_NONE;
    dt.sign_bits = 0;
    dt.compress_decode = 1;
    dt.decode_recent = 40;
    round_trip("decode-time compression, ThinK", &sd, &dt, 60, 600, 0, 2);
    sparkv_policy dv = sparkv_default_policy();
    dv.value_prune_ratio = 0.5f;
    dv.compress_decode = 1;
    round_trip("decode-time compression, dense keys + value pruning", &sd, &dv, 20, 560, 0, 2);

    const sparkv_shape s3 = make_shape(3, 2, 1, 32, 600);
    sparkv_policy r3 = spark(0.5f, SPARKV_RECOVER_EXPONENTIAL, 1);
    round_trip("layer range [1, 2)", &s3, &r3, 50, 2, 1, 1);
    round_trip("layer range [1, end)", &s3, &r3, 50, 2, 1, SPARKV_ALL_LAYERS);
    round_trip("full capacity (no room to append)", &s3, &r3, 590, 10, 0, 3);
}

/* ---- hostile files --------------------------------------------------------------------------------- */

static uint32_t rd32(const uint8_t *p) { uint32_t x; memcpy(&x, p, 4); return x; }
static uint64_t rd64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return x; }
static void wr32(uint8_t *p, uint32_t x) { memcpy(p, &x, 4); }
static void wr64(uint8_t *p, uint64_t x) { memcpy(p, &x, 8); }

/* CRC-32C, written here from its definition (reflected polynomial 0x82F63B78), bit by bit. */
static uint32_t crc32c(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1u ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

/* Offset of the index-th section with this tag (its framing's start), or 0. */
static size_t find_section(const uint8_t *f, size_t size, uint32_t tag, int index) {
    size_t off = PREAMBLE;
    while (off + FRAME <= size) {
        const uint64_t len = rd64(f + off + 8);
        if (rd32(f + off) == tag && index-- == 0) return off;
        off += FRAME + (size_t)len;
    }
    return 0;
}
static uint8_t *payload(uint8_t *f, size_t section) { return f + section + 16; }
static void fix_crc(uint8_t *f, size_t section) {
    const uint64_t len = rd64(f + section + 8);
    wr32(f + section + 16 + len, crc32c(f + section, (size_t)(16 + len)));
}

/* Loads a doctored copy: must fail with `want`, a message, and *out NULL. */
static void expect_load_fails(const uint8_t *f, size_t size, const sparkv_shape *expected, sparkv_status want,
                              const char *what) {
    sparkv_cache *out = (sparkv_cache *)&size;
    const sparkv_status st = sparkv_cache_load_buffer(f, size, expected, &out);
    CHECKF(st == want && out == NULL && sparkv_last_error(NULL)[0] != '\0',
           "%s: got status %d (%s) and out %s, want %d; message '%s'", what, (int)st, sparkv_status_string(st),
           out ? "set" : "NULL", (int)want, sparkv_last_error(NULL));
    if (getenv("SPARKV_TEST_VERBOSE")) fprintf(stderr, "  %-45s -> %s\n", what, sparkv_last_error(NULL));
    if (st == SPARKV_OK && out) sparkv_cache_free(out);
}

/* A copy of `f` changed by `edit`, with the edited section's checksum recomputed when fix is set. */
typedef void (*edit_fn)(uint8_t *f, size_t size);
static void doctor(const uint8_t *f, size_t size, edit_fn edit, const sparkv_shape *expected, sparkv_status want,
                   const char *what) {
    uint8_t *g = (uint8_t *)xmalloc(size);
    memcpy(g, f, size);
    edit(g, size);
    expect_load_fails(g, size, expected, want, what);
    free(g);
}

/* Layout of the SparK f16 test file's first page: fixed 40 bytes (u64 first, u32 n, cap, keys,
 * values pruned, u64 kept_bytes, u32 own norms, u32 0), then k (kept_bytes), mask (n * D/8),
 * sign (n * D/8), stats (n * n_stats * 2). D = 16, MEAN (1 statistic), sign bits. */
#define HD 16u
#define FIXED 40u
static size_t page0(const uint8_t *f, size_t size) { return find_section(f, size, T_PAGE, 0); }
static uint8_t *page0_field(uint8_t *f, size_t size, size_t at) { return payload(f, page0(f, size)) + at; }
static uint64_t page0_kept(uint8_t *f, size_t size) { return rd64(page0_field(f, size, 24)); }
static uint32_t page0_n(uint8_t *f, size_t size) { return rd32(page0_field(f, size, 8)); }
static uint8_t *page0_mask(uint8_t *f, size_t size) { return page0_field(f, size, FIXED + page0_kept(f, size)); }

static void e_magic(uint8_t *f, size_t n) { f[0] = 'X'; }
static void e_version(uint8_t *f, size_t n) { wr32(f + 8, 2); }
static void e_order(uint8_t *f, size_t n) { wr32(f + 12, 0x04030201u); }
static void e_crc(uint8_t *f, size_t n) { payload(f, page0(f, n))[30] ^= 0x10; } /* no fix: checksum fails */
static void e_file_size(uint8_t *f, size_t n) {
    const size_t h = find_section(f, n, T_HEAD, 0);
    wr64(payload(f, h) + 8, rd64(payload(f, h) + 8) + 1);
    fix_crc(f, h);
}
static void e_layers_zero(uint8_t *f, size_t n) {
    const size_t h = find_section(f, n, T_HEAD, 0);
    wr32(payload(f, h) + 16, 0);
    fix_crc(f, h);
}
static void e_head_dim(uint8_t *f, size_t n) {
    const size_t h = find_section(f, n, T_HEAD, 0);
    wr32(payload(f, h) + 28, 12); /* not a multiple of 8 */
    fix_crc(f, h);
}
static void e_range(uint8_t *f, size_t n) {
    const size_t h = find_section(f, n, T_HEAD, 0);
    wr32(payload(f, h) + 44, 0xffffffffu); /* saved layer count */
    fix_crc(f, h);
}
static void e_policy(uint8_t *f, size_t n) {
    const size_t h = find_section(f, n, T_HEAD, 0);
    const float r = 2.0f; /* key_prune_ratio beyond [0, 1) */
    memcpy(payload(f, h) + 48, &r, 4);
    fix_crc(f, h);
}
static void e_policy_topk(uint8_t *f, size_t n) {
    const size_t h = find_section(f, n, T_HEAD, 0);
    const float r = 0.25f; /* another T than the masks were built for */
    memcpy(payload(f, h) + 48, &r, 4);
    fix_crc(f, h);
}
static void e_tokens_huge(uint8_t *f, size_t n) {
    const size_t s = find_section(f, n, T_LAYER, 0);
    wr64(payload(f, s) + 16, 1ull << 62);
    fix_crc(f, s);
}
static void e_pages_huge(uint8_t *f, size_t n) {
    const size_t s = find_section(f, n, T_LAYER, 0);
    wr64(payload(f, s) + 40, 0xffffffffffffull);
    fix_crc(f, s);
}
static void e_prompt_beyond(uint8_t *f, size_t n) {
    const size_t s = find_section(f, n, T_LAYER, 0);
    wr64(payload(f, s) + 24, rd64(payload(f, s) + 16) + 1); /* n_prompt > n_tokens */
    fix_crc(f, s);
}
static void e_qn_nan(uint8_t *f, size_t n) {
    const size_t s = find_section(f, n, T_KVHEAD, 0);
    wr32(payload(f, s) + 8 + 4 * 3, 0x7fc00000u);
    fix_crc(f, s);
}
static void e_c_zero(uint8_t *f, size_t n) {
    const size_t s = find_section(f, n, T_KVHEAD, 0);
    wr32(payload(f, s) + 8 + 4 * HD, 0);
    fix_crc(f, s);
}
static void e_n_beyond_cap(uint8_t *f, size_t n) {
    wr32(page0_field(f, n, 8), page0_n(f, n) + 1);
    fix_crc(f, page0(f, n));
}
static void e_n_zero(uint8_t *f, size_t n) {
    wr32(page0_field(f, n, 8), 0);
    fix_crc(f, page0(f, n));
}
static void e_first(uint8_t *f, size_t n) {
    wr64(page0_field(f, n, 0), 1);
    fix_crc(f, page0(f, n));
}
static void e_kind_dense(uint8_t *f, size_t n) {
    wr32(page0_field(f, n, 16), 0); /* keys DENSE in a SparK / ThinK layer, with a dense page's room */
    wr32(page0_field(f, n, 12), 256);
    wr64(page0_field(f, n, 24), 0);
    fix_crc(f, page0(f, n));
}
static void e_kind_unknown(uint8_t *f, size_t n) {
    wr32(page0_field(f, n, 16), 7);
    fix_crc(f, page0(f, n));
}
static void e_kept_bytes_huge(uint8_t *f, size_t n) {
    wr64(page0_field(f, n, 24), 1ull << 60);
    fix_crc(f, page0(f, n));
}
static void e_mask_popcount(uint8_t *f, size_t n) {
    uint8_t *m = page0_mask(f, n);
    for (uint32_t b = 0; b < HD / 8; b++) /* keep one more channel on token 0: set its lowest clear bit */
        if (m[b] != 0xff) { m[b] |= (uint8_t)(m[b] + 1); break; }
    fix_crc(f, page0(f, n));
}
static void e_mask_moved(uint8_t *f, size_t n) {
    /* token 0 keeps one channel fewer and token 1 one more: counts per token break, the total does not */
    uint8_t *m = page0_mask(f, n);
    for (uint32_t b = 0; b < HD / 8; b++)
        if (m[b]) { m[b] &= (uint8_t)(m[b] - 1); break; }
    for (uint32_t b = 0; b < HD / 8; b++)
        if (m[HD / 8 + b] != 0xff) { m[HD / 8 + b] |= (uint8_t)(m[HD / 8 + b] + 1); break; }
    fix_crc(f, page0(f, n));
}
static void e_sign_on_kept(uint8_t *f, size_t n) {
    uint8_t *m = page0_mask(f, n), *sign = m + (size_t)page0_n(f, n) * (HD / 8);
    sign[0] |= (uint8_t)(m[0] & (uint8_t)-m[0]); /* the lowest kept channel of token 0 */
    fix_crc(f, page0(f, n));
}
static void e_stat_inf(uint8_t *f, size_t n) {
    uint8_t *stats = page0_mask(f, n) + 2 * (size_t)page0_n(f, n) * (HD / 8);
    const uint16_t inf = 0x7c00;
    memcpy(stats + 2, &inf, 2);
    fix_crc(f, page0(f, n));
}
static void e_stat_negative(uint8_t *f, size_t n) {
    uint8_t *stats = page0_mask(f, n) + 2 * (size_t)page0_n(f, n) * (HD / 8);
    stats[1] |= 0x80;
    fix_crc(f, page0(f, n));
}
static void e_key_nan(uint8_t *f, size_t n) {
    const uint16_t nan = 0x7e00; /* f16 NaN as the third kept value */
    memcpy(page0_field(f, n, FIXED + 4), &nan, 2);
    fix_crc(f, page0(f, n));
}
static void e_page_record_short(uint8_t *f, size_t n) {
    wr64(page0_field(f, n, 24), page0_kept(f, n) - 2); /* the arrays no longer fill the record */
    fix_crc(f, page0(f, n));
}

static void test_hostile_files(void) {
    g_section = "hostile files";
    const sparkv_shape s = make_shape(2, 2, 1, HD, 64);
    sparkv_policy p = spark(0.5f, SPARKV_RECOVER_MEAN, 1);
    sparkv_cache *c = build(&s, &p, 20, 2, 5);
    if (!c) return;
    size_t size = 0;
    uint8_t *f = save_to_buffer(c, 0, SPARKV_ALL_LAYERS, &size);
    sparkv_cache *ok = NULL;
    CHECK_OK(sparkv_cache_load_buffer(f, size, NULL, &ok));
    sparkv_cache_free(ok);

    struct { edit_fn edit; sparkv_status want; const char *what; } cases[] = {
        {e_magic, SPARKV_ERR_FORMAT, "wrong magic"},
        {e_version, SPARKV_ERR_FORMAT, "format version 2"},
        {e_order, SPARKV_ERR_FORMAT, "other byte order"},
        {e_crc, SPARKV_ERR_FORMAT, "flipped byte (checksum)"},
        {e_file_size, SPARKV_ERR_FORMAT, "header's file size differs"},
        {e_layers_zero, SPARKV_ERR_FORMAT, "shape with 0 layers"},
        {e_head_dim, SPARKV_ERR_FORMAT, "head_dim 12"},
        {e_range, SPARKV_ERR_FORMAT, "saved layer count overflows the shape"},
        {e_policy, SPARKV_ERR_FORMAT, "invalid policy (r = 2)"},
        {e_policy_topk, SPARKV_ERR_FORMAT, "policy's T disagrees with the masks"},
        {e_tokens_huge, SPARKV_ERR_CAPACITY, "2^62 tokens"},
        {e_pages_huge, SPARKV_ERR_FORMAT, "2^48 pages"},
        {e_prompt_beyond, SPARKV_ERR_FORMAT, "n_prompt > n_tokens"},
        {e_qn_nan, SPARKV_ERR_FORMAT, "NaN window query norm"},
        {e_c_zero, SPARKV_ERR_FORMAT, "recovery scale c = 0"},
        {e_n_beyond_cap, SPARKV_ERR_FORMAT, "page n > cap"},
        {e_n_zero, SPARKV_ERR_FORMAT, "page n = 0"},
        {e_first, SPARKV_ERR_FORMAT, "page does not start where the previous ends"},
        {e_kind_dense, SPARKV_ERR_FORMAT, "dense page holding SparK prompt tokens"},
        {e_kind_unknown, SPARKV_ERR_FORMAT, "unknown page kind"},
        {e_kept_bytes_huge, SPARKV_ERR_FORMAT, "kept_bytes 2^60"},
        {e_mask_popcount, SPARKV_ERR_FORMAT, "mask keeps T + 1 channels"},
        {e_mask_moved, SPARKV_ERR_FORMAT, "masks keep T - 1 and T + 1 (same total)"},
        {e_sign_on_kept, SPARKV_ERR_FORMAT, "sign bit on a kept channel"},
        {e_stat_inf, SPARKV_ERR_FORMAT, "Inf statistic"},
        {e_stat_negative, SPARKV_ERR_FORMAT, "negative statistic"},
        {e_key_nan, SPARKV_ERR_FORMAT, "NaN kept key value"},
        {e_page_record_short, SPARKV_ERR_FORMAT, "page record longer than its arrays"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        doctor(f, size, cases[i].edit, NULL, cases[i].want, cases[i].what);

    /* trailing bytes: the header's size no longer matches */
    uint8_t *longer = (uint8_t *)xmalloc(size + 8);
    memcpy(longer, f, size);
    memset(longer + size, 0, 8);
    expect_load_fails(longer, size + 8, NULL, SPARKV_ERR_FORMAT, "trailing bytes");
    free(longer);

    /* expected shape */
    sparkv_shape other = s;
    other.n_kv_heads = 2;
    other.n_q_heads = 4;
    expect_load_fails(f, size, &other, SPARKV_ERR_INVALID_SHAPE, "another model's shape");
    other = s;
    other.head_dim = 32;
    expect_load_fails(f, size, &other, SPARKV_ERR_INVALID_SHAPE, "another head_dim");
    other = s;
    other.capacity = 21; /* layers hold 22 tokens */
    expect_load_fails(f, size, &other, SPARKV_ERR_CAPACITY, "capacity below the saved tokens");
    other = s;
    other.struct_size = 4;
    expect_load_fails(f, size, &other, SPARKV_ERR_STRUCT_SIZE, "expected shape's struct_size");
    other = s;
    other.capacity = 1000; /* a longer session: allowed, and appends may use it */
    sparkv_cache *big = NULL;
    CHECK_OK(sparkv_cache_load_buffer(f, size, &other, &big));
    if (big) {
        sparkv_shape got;
        CHECK_OK(sparkv_cache_shape(big, &got));
        CHECK(got.capacity == 1000);
        sparkv_cache_free(big);
    }

    /* arguments and files */
    sparkv_cache *out = (sparkv_cache *)&size;
    CHECK(sparkv_cache_load_buffer(NULL, 1, NULL, &out) == SPARKV_ERR_NULL_POINTER && out == NULL);
    CHECK(sparkv_cache_load_buffer(f, size, NULL, NULL) == SPARKV_ERR_NULL_POINTER);
    out = (sparkv_cache *)&size;
    CHECK(sparkv_cache_load("/nonexistent/sparkv.svc", NULL, &out) == SPARKV_ERR_IO && out == NULL);
    CHECK(sparkv_cache_load("/tmp", NULL, &out) == SPARKV_ERR_IO && out == NULL);
    CHECK(sparkv_cache_save(c, 0, 1, "/nonexistent/dir/x.svc") == SPARKV_ERR_IO);
    CHECK(sparkv_last_error(c)[0] != '\0');
    CHECK(sparkv_cache_save(c, 2, 1, "/tmp/x.svc") == SPARKV_ERR_LAYER);
    CHECK(sparkv_cache_save(c, 1, 2, "/tmp/x.svc") == SPARKV_ERR_LAYER);
    CHECK(sparkv_cache_save(c, 0, 0, "/tmp/x.svc") == SPARKV_ERR_LAYER);
    CHECK(sparkv_cache_save(NULL, 0, 1, "/tmp/x.svc") == SPARKV_ERR_NULL_POINTER);
    CHECK(sparkv_cache_save(c, 0, 1, NULL) == SPARKV_ERR_NULL_POINTER);
    uint8_t small[16];
    size_t written = 7;
    CHECK(sparkv_cache_save_buffer(c, 0, 1, small, sizeof small, &written) == SPARKV_ERR_CAPACITY && written == 7);
    char empty_path[64];
    snprintf(empty_path, sizeof empty_path, "/tmp/sparkv-test-empty-%ld.svc", (long)getpid());
    FILE *e = fopen(empty_path, "wb");
    if (e) fclose(e);
    out = (sparkv_cache *)&size;
    CHECK(sparkv_cache_load(empty_path, NULL, &out) == SPARKV_ERR_FORMAT && out == NULL);
    remove(empty_path);
    CHECK(strcmp(sparkv_status_string(SPARKV_ERR_FORMAT), sparkv_status_string((sparkv_status)999)) != 0);
    CHECK(strcmp(sparkv_status_string(SPARKV_ERR_IO), sparkv_status_string((sparkv_status)999)) != 0);
    free(f);
    sparkv_cache_free(c);
}

/* Doctored ThinK, i8 and value-pruned files: their own invariants. */
static void e_think_mask(uint8_t *f, size_t n) {
    const size_t s = find_section(f, n, T_KVHEAD, 0);
    payload(f, s)[8] ^= 0x01; /* one channel more or fewer than T */
    fix_crc(f, s);
}
static void e_i8_min(uint8_t *f, size_t n) {
    page0_field(f, n, FIXED)[0] = 0x80; /* int8 -128 is off the grid */
    fix_crc(f, page0(f, n));
}
static void e_vmask(uint8_t *f, size_t n) {
    /* value-pruned dense-key page, D = 16, f16: k (n*32), v (n*T_v*2), vmask */
    const uint32_t pn = page0_n(f, n);
    uint8_t *vmask = page0_field(f, n, FIXED + (size_t)pn * HD * 2 + (size_t)pn * 8 * 2);
    vmask[0] ^= 0x01;
    fix_crc(f, page0(f, n));
}
static void e_vfill_nan(uint8_t *f, size_t n) {
    const uint32_t pn = page0_n(f, n);
    uint8_t *vfill = page0_field(f, n, FIXED + (size_t)pn * HD * 2 + (size_t)pn * 8 * 2 + (size_t)pn * (HD / 8));
    const uint16_t nan = 0x7e00;
    memcpy(vfill, &nan, 2);
    fix_crc(f, page0(f, n));
}
static void e_dense_not_full(uint8_t *f, size_t n) {
    /* a dense layer of 2 pages whose first claims 255 tokens: the second no longer starts where it ends */
    const size_t p0 = find_section(f, n, T_PAGE, 0);
    wr32(payload(f, p0) + 8, 255);
    fix_crc(f, p0);
}

/* Decode-time compression state (layer payload: qring_n at 48, qring_next 52, next_age 56, n_aged 64;
 * page 1 of head 0 is an aged SparK page: own-norms flag at 32, its norms at the end). */
static void layer_edit(uint8_t *f, size_t n, size_t at, uint64_t value, int wide) {
    const size_t s = find_section(f, n, T_LAYER, 0);
    if (wide) wr64(payload(f, s) + at, value);
    else wr32(payload(f, s) + at, (uint32_t)value);
    fix_crc(f, s);
}
static void e_n_aged(uint8_t *f, size_t n) {
    layer_edit(f, n, 64, rd64(payload(f, find_section(f, n, T_LAYER, 0)) + 64) + 1, 1);
}
static void e_next_age_back(uint8_t *f, size_t n) { layer_edit(f, n, 56, 1, 1); } /* before an aged page */
static void e_next_age_huge(uint8_t *f, size_t n) { layer_edit(f, n, 56, 1ull << 40, 1); }
static void e_ring_slot(uint8_t *f, size_t n) { layer_edit(f, n, 52, 4, 0); } /* the full ring's window is 4 */
static void e_ring_count(uint8_t *f, size_t n) { layer_edit(f, n, 48, 0, 0); } /* ring bytes without a count */
static void e_ring_nan(uint8_t *f, size_t n) {
    const size_t s = find_section(f, n, T_LAYER, 0);
    wr64(payload(f, s) + 72 + 8, 0x7ff8000000000000ull);
    fix_crc(f, s);
}
static void e_aged_no_norms(uint8_t *f, size_t n) {
    const size_t s = find_section(f, n, T_PAGE, 1);
    wr32(payload(f, s) + 32, 0);
    fix_crc(f, s);
}
static void e_aged_norm_nan(uint8_t *f, size_t n) {
    const size_t s = find_section(f, n, T_PAGE, 1);
    const uint64_t len = rd64(f + s + 8);
    wr32(payload(f, s) + len - 4 * 3, 0x7fc00000u);
    fix_crc(f, s);
}

static void test_decode_state(void) {
    g_section = "hostile files: decode-time compression";
    const sparkv_shape s = make_shape(1, 2, 1, HD, 600);
    sparkv_policy p = spark(0.5f, SPARKV_RECOVER_MEAN, 1);
    p.compress_decode = 1;
    p.decode_recent = 8;
    p.window = 4;
    sparkv_cache *c = build(&s, &p, 10, 270, 3);
    if (!c) return;
    size_t size;
    uint8_t *f = save_to_buffer(c, 0, 1, &size);
    CHECK(rd32(payload(f, find_section(f, size, T_PAGE, 1)) + 32) == 1); /* the fixture has an aged page */
    doctor(f, size, e_n_aged, NULL, SPARKV_ERR_FORMAT, "aged-page count off by one");
    doctor(f, size, e_next_age_back, NULL, SPARKV_ERR_FORMAT, "next page to age before an aged page");
    doctor(f, size, e_next_age_huge, NULL, SPARKV_ERR_FORMAT, "next page to age beyond the pages");
    doctor(f, size, e_ring_slot, NULL, SPARKV_ERR_FORMAT, "ring slot beyond the window");
    doctor(f, size, e_ring_count, NULL, SPARKV_ERR_FORMAT, "ring bytes without queries");
    doctor(f, size, e_ring_nan, NULL, SPARKV_ERR_FORMAT, "NaN decode query in the ring");
    doctor(f, size, e_aged_no_norms, NULL, SPARKV_ERR_FORMAT, "aged SparK page without its norms");
    doctor(f, size, e_aged_norm_nan, NULL, SPARKV_ERR_FORMAT, "NaN in an aged page's norms");
    free(f);
    sparkv_cache_free(c);
}

static void test_policy_invariants(void) {
    g_section = "hostile files: policy invariants";
    const sparkv_shape s = make_shape(1, 2, 1, HD, 600);
    sparkv_policy think = sparkv_default_policy();
    think.key_pruning = SPARKV_KEYS_THINK;
    think.key_prune_ratio = 0.5f;
    think.recovery = SPARKV_RECOVER_NONE;
    think.sign_bits = 0;
    sparkv_cache *c = build(&s, &think, 10, 1, 3);
    size_t size;
    uint8_t *f = save_to_buffer(c, 0, 1, &size);
    doctor(f, size, e_think_mask, NULL, SPARKV_ERR_FORMAT, "ThinK mask keeps T +- 1 channels");
    doctor(f, size, e_kind_dense, NULL, SPARKV_ERR_FORMAT, "dense page in a ThinK layer");
    free(f);
    sparkv_cache_free(c);

    sparkv_policy i8 = spark(0.5f, SPARKV_RECOVER_MEAN, 1);
    i8.key_precision = SPARKV_I8;
    i8.quant_group = 8;
    c = build(&s, &i8, 10, 1, 3);
    f = save_to_buffer(c, 0, 1, &size);
    doctor(f, size, e_i8_min, NULL, SPARKV_ERR_FORMAT, "int8 code -128");
    free(f);
    sparkv_cache_free(c);

    sparkv_policy vp = sparkv_default_policy();
    vp.value_prune_ratio = 0.5f;
    c = build(&s, &vp, 10, 1, 3);
    f = save_to_buffer(c, 0, 1, &size);
    doctor(f, size, e_vmask, NULL, SPARKV_ERR_FORMAT, "value mask keeps T_v +- 1 channels");
    doctor(f, size, e_vfill_nan, NULL, SPARKV_ERR_FORMAT, "NaN value fill");
    free(f);
    sparkv_cache_free(c);

    sparkv_policy dense = sparkv_default_policy();
    c = build(&s, &dense, 300, 0, 3);
    f = save_to_buffer(c, 0, 1, &size);
    doctor(f, size, e_dense_not_full, NULL, SPARKV_ERR_FORMAT, "dense page boundaries out of step");
    free(f);
    sparkv_cache_free(c);
}

/* Every prefix of small files fails; every single-bit flip fails (CRC-32C detects them all). */
static void sweep(const char *name, const sparkv_policy *p, uint64_t prompt, uint64_t appended) {
    g_section = name;
    const sparkv_shape s = make_shape(1, 2, 1, 8, 64);
    sparkv_cache *c = build(&s, p, prompt, appended, 11);
    if (!c) return;
    size_t size;
    uint8_t *f = save_to_buffer(c, 0, 1, &size);
    int bad_prefix = 0, bad_flip = 0;
    for (size_t len = 0; len < size; len++) {
        uint8_t *g = (uint8_t *)xmalloc(len); /* exactly len bytes: ASan catches any over-read */
        memcpy(g, f, len);
        sparkv_cache *out = (sparkv_cache *)&size;
        if (sparkv_cache_load_buffer(g, len, NULL, &out) != SPARKV_ERR_FORMAT || out != NULL) bad_prefix++;
        free(g);
    }
    CHECKF(bad_prefix == 0, "%s: %d of %zu prefixes did not fail with SPARKV_ERR_FORMAT", name, bad_prefix, size);
    uint8_t *g = (uint8_t *)xmalloc(size);
    for (size_t bit = 0; bit < size * 8; bit++) {
        memcpy(g, f, size);
        g[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        sparkv_cache *out = (sparkv_cache *)&size;
        if (sparkv_cache_load_buffer(g, size, NULL, &out) != SPARKV_ERR_FORMAT || out != NULL) bad_flip++;
    }
    CHECKF(bad_flip == 0, "%s: %d of %zu bit flips were not SPARKV_ERR_FORMAT", name, bad_flip, size * 8);
    free(g);
    free(f);
    sparkv_cache_free(c);
}

static void test_sweeps(void) {
    sparkv_policy sp = spark(0.5f, SPARKV_RECOVER_GAUSSIAN, 1);
    sweep("sweep: SparK gaussian", &sp, 5, 2);
    sparkv_policy q = sparkv_default_policy();
    q.key_precision = SPARKV_I4;
    q.value_precision = SPARKV_I8;
    q.quant_group = 8;
    sweep("sweep: dense i4/i8", &q, 3, 1);
    sparkv_policy vp = sparkv_default_policy();
    vp.key_pruning = SPARKV_KEYS_THINK;
    vp.key_prune_ratio = 0.5f;
    vp.recovery = SPARKV_RECOVER_NONE;
    vp.sign_bits = 0;
    vp.value_prune_ratio = 0.5f;
    sweep("sweep: ThinK + value pruning", &vp, 4, 1);
}

int main(void) {
    test_round_trips();
    test_hostile_files();
    test_policy_invariants();
    test_decode_state();
    test_sweeps();
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
