/*
 * test_prefill_kernels.c — SparK's per-ISA prefill kernels (saliency, top-T selection, split)
 * against naive float64 versions written here, on every kernel family the CPU runs, and whole
 * prefills per kernel against the reference (reference.c), bit for bit.
 *
 *   test_prefill_kernels [seed]
 *
 * Selection is exercised where a threshold search can go wrong: long runs of exact ties, all-zero
 * saliencies, neighbouring doubles inside one 16-bit key bucket, keep = 0, 1, D - 1, D, and every
 * D from 8 to 256. Prefills use prompts of >= 512 tokens with partial last pages, top-k and
 * cumulative selection, every recovery mode, sign bits on and off, and f16, bf16, f32, i8 and i4
 * kept keys. Links the library's objects directly (its kernels are internal).
 */
#include "prefill_kernels.h"
#include "reference.h"
#include "test_util.h"

static const sparkv_kernel FAMILIES[] = {SPARKV_KERNEL_PORTABLE, SPARKV_KERNEL_AVX2, SPARKV_KERNEL_AVX512};
#define N_FAMILIES (sizeof FAMILIES / sizeof FAMILIES[0])

static uint64_t g_rng;
static uint64_t next_u64(void) { return g_rng = ref_mix(g_rng + 0x9e3779b97f4a7c15ull); }
static double uniform(void) { return (double)(next_u64() >> 11) * 0x1.0p-53; }
static uint32_t below(uint32_t n) { return (uint32_t)(next_u64() % n); }

/* ---- naive versions ------------------------------------------------------------------------ */

/* Channel j is kept when fewer than `keep` channels beat it (larger, or equal with a lower index). */
static void naive_topk(const double *s, uint32_t d, uint32_t keep, uint8_t *mask) {
    memset(mask, 0, d / 8);
    for (uint32_t j = 0; j < d; j++) {
        uint32_t beaten_by = 0;
        for (uint32_t i = 0; i < d; i++) beaten_by += s[i] > s[j] || (s[i] == s[j] && i < j);
        if (beaten_by < keep) mask[j / 8] |= (uint8_t)(1u << (j % 8));
    }
}

static int kept_bit(const uint8_t *mask, uint32_t j) { return mask[j / 8] >> (j % 8) & 1; }

/* A saliency row of one of several shapes; all entries >= +0, not NaN. */
static void saliency_row(double *s, uint32_t d, int shape) {
    const double base = 0.5 + uniform();
    for (uint32_t j = 0; j < d; j++) {
        switch (shape) {
        case 0: s[j] = uniform() * uniform() * 10.0; break;                       /* spread out */
        case 1: s[j] = (double)below(4); break;                                    /* long exact tie runs, zeros */
        case 2: s[j] = 0.0; break;                                                 /* all zero */
        case 3: s[j] = base + (double)below(3) * 0x1.0p-52; break;                /* one 16-bit key bucket */
        case 4: s[j] = below(3) ? 0.0 : uniform(); break;                          /* mostly zero */
        default: s[j] = ldexp(1.0, (int)below(40) - 20) * (1.0 + (double)below(2) * 0x1.0p-40); break;
        }
    }
}

/* ---- kernels against the naive versions ----------------------------------------------------- */

static void test_saliency(const sv_prefill_kernels *kern, const char *name) {
    float k[SPARKV_MAX_HEAD_DIM];
    double qn[SPARKV_MAX_HEAD_DIM], s[SPARKV_MAX_HEAD_DIM];
    for (uint32_t d = 8; d <= SPARKV_MAX_HEAD_DIM; d += 8) {
        for (uint32_t j = 0; j < d; j++) {
            const uint32_t r = below(8);
            k[j] = r == 0 ? 0.0f : r == 1 ? -0.0f : r == 2 ? 3e-20f : (float)((uniform() - 0.5) * 600.0);
            qn[j] = below(6) ? (double)(float)(uniform() * 50.0) : 0.0;
        }
        kern->saliency(k, qn, d, s);
        int same = 1;
        for (uint32_t j = 0; j < d; j++) same &= s[j] == (double)k[j] * (double)k[j] * qn[j] && !signbit(s[j]);
        CHECKF(same, "%s saliency differs at d = %u", name, d);
    }
}

static void test_select(const sv_prefill_kernels *kern, const char *name) {
    static double s[SV_SELECT_BLOCK * SPARKV_MAX_HEAD_DIM];
    uint8_t mask[SV_SELECT_BLOCK * SPARKV_MAX_HEAD_DIM / 8], want[SPARKV_MAX_HEAD_DIM / 8];
    unsigned bad = 0, runs = 0;
    for (uint32_t d = 8; d <= SPARKV_MAX_HEAD_DIM; d += 8) {
        for (int rep = 0; rep < 12; rep++) {
            const uint32_t n = 1 + below(SV_SELECT_BLOCK);
            const uint32_t pick = below(6);
            const uint32_t keep = pick == 0 ? 0 : pick == 1 ? 1 : pick == 2 ? d - 1 : pick == 3 ? d : below(d + 1);
            for (uint32_t t = 0; t < n; t++) saliency_row(s + (size_t)t * d, d, (int)below(6));
            memset(mask, 0xA5, sizeof mask);
            kern->select_topk(s, n, d, keep, mask);
            for (uint32_t t = 0; t < n; t++) {
                naive_topk(s + (size_t)t * d, d, keep, want);
                runs++;
                if (memcmp(mask + (size_t)t * (d / 8), want, d / 8)) {
                    if (bad++ < 5) fprintf(stderr, "%s select: d = %u keep = %u token %u differs\n", name, d, keep, t);
                }
            }
        }
    }
    CHECKF(bad == 0, "%s select: %u of %u tokens differ from the naive top-T", name, bad, runs);
}

static void test_split(const sv_prefill_kernels *kern, const char *name) {
    const sv_prefill_kernels *spec = sv_prefill_kernels_for(SPARKV_KERNEL_PORTABLE);
    float k[SPARKV_MAX_HEAD_DIM], kept[SPARKV_MAX_HEAD_DIM + 16], kept_spec[SPARKV_MAX_HEAD_DIM + 16];
    double s[SPARKV_MAX_HEAD_DIM], pruned[SPARKV_MAX_HEAD_DIM];
    uint8_t mask[SPARKV_MAX_HEAD_DIM / 8], sign[SPARKV_MAX_HEAD_DIM / 8 + 8];
    /* the f16 row is followed by guard values: an exact-count store must leave them alone */
    uint16_t f16[SPARKV_MAX_HEAD_DIM + 32], f16_spec[SPARKV_MAX_HEAD_DIM + 32];
    unsigned bad = 0;
    for (uint32_t d = 8; d <= SPARKV_MAX_HEAD_DIM; d += 8) {
        for (int rep = 0; rep < 8; rep++) {
            for (uint32_t j = 0; j < d; j++) {
                k[j] = below(9) ? (float)((uniform() - 0.5) * 200.0) : below(2) ? -0.0f : 0.0f;
                s[j] = (double)k[j] * (double)k[j] * (double)(float)uniform();
            }
            const uint32_t density = below(5);
            for (uint32_t b = 0; b < d / 8; b++)
                mask[b] = density == 0 ? 0 : density == 1 ? 0xff : (uint8_t)next_u64();
            uint32_t n_want = 0;
            double lo = INFINITY, hi = 0.0;
            for (uint32_t j = 0; j < d; j++) {
                if (kept_bit(mask, j)) { kept_spec[n_want++] = k[j]; lo = fmin(lo, s[j]); }
                else hi = fmax(hi, s[j]);
            }
            double mn, mx;
            memset(sign, 0xA5, sizeof sign);
            const uint32_t n = kern->split(k, s, mask, d, kept, NULL, pruned, sign, &mn, &mx);
            int ok = n == n_want && mn == lo && mx == hi && !memcmp(kept, kept_spec, n_want * sizeof(float));
            for (uint32_t j = 0; j < d; j++) {
                ok &= pruned[j] == (kept_bit(mask, j) ? 0.0 : s[j]);
                ok &= kept_bit(sign, j) == (!kept_bit(mask, j) && k[j] < 0.0f);
            }
            ok &= sign[d / 8] == 0xA5; /* nothing written past d/8 bytes */
            for (uint32_t i = 0; i < sizeof f16 / 2; i++) f16[i] = f16_spec[i] = 0xBEEF;
            double mn2, mx2;
            spec->split(k, s, mask, d, kept_spec, f16_spec, pruned, NULL, &mn2, &mx2);
            kern->split(k, s, mask, d, kept, f16, pruned, NULL, &mn2, &mx2);
            ok &= !memcmp(f16, f16_spec, sizeof f16);
            if (!ok && bad++ < 5) fprintf(stderr, "%s split: d = %u rep %d differs\n", name, d, rep);
        }
    }
    CHECKF(bad == 0, "%s split: %u rows differ from the naive split", name, bad);
}

/* ---- whole prefills against the reference -------------------------------------------------- */

typedef struct {
    uint32_t d, n_kv, g;
    uint64_t n;
    sparkv_policy policy;
} prefill_case;

static void test_prefill(sparkv_kernel family, const prefill_case *pc) {
    const uint32_t d = pc->d, nq = pc->n_kv * pc->g, w = 16;
    const uint64_t n = pc->n;
    float *keys = malloc(sizeof(float) * pc->n_kv * n * d), *values = malloc(sizeof(float) * pc->n_kv * n * d);
    float *qw = malloc(sizeof(float) * nq * w * d);
    for (uint64_t i = 0; i < (uint64_t)pc->n_kv * n * d; i++) {
        const uint32_t r = below(16);
        /* exact ties (integers), zeros, and an outlier channel */
        keys[i] = r == 0 ? 0.0f : r == 1 ? (float)((int)below(5) - 2) : (float)((uniform() - 0.5) * 4.0);
        if (i % d == 5) keys[i] *= 40.0f;
        values[i] = (float)(uniform() - 0.5);
    }
    for (uint64_t i = 0; i < (uint64_t)nq * w * d; i++) qw[i] = i % d == 7 ? 0.0f : (float)(uniform() - 0.5);
    sparkv_shape shape = sparkv_default_shape();
    shape.n_layers = 1;
    shape.n_q_heads = nq;
    shape.n_kv_heads = pc->n_kv;
    shape.head_dim = d;
    shape.capacity = n;
    sparkv_cache *cache = NULL;
    sparkv_status st = sparkv_cache_create(&shape, &pc->policy, &cache);
    if (st == SPARKV_OK) st = sparkv_cache_set_kernel(cache, family);
    if (st == SPARKV_OK) st = sparkv_prefill(cache, 0, keys, values, n, qw, w);
    CHECKF(st == SPARKV_OK, "%s prefill: %s", sparkv_kernel_name(family), sparkv_last_error(cache));
    uint64_t bad = 0;
    for (uint32_t h = 0; st == SPARKV_OK && h < pc->n_kv; h++) {
        float qn[REF_MAX_D], c;
        ref_qnorm(qw, w, w < pc->policy.window ? w : pc->policy.window, pc->g, h, d, qn, &c);
        for (uint64_t t = 0; t < n; t++) {
            uint8_t mask[REF_MAX_D / 8], want_mask[REF_MAX_D / 8];
            float key[REF_MAX_D], want_key[REF_MAX_D];
            ref_prompt_token(&pc->policy, d, 0, h, t, keys + ((uint64_t)h * n + t) * d, qn, c, want_mask, want_key);
            sparkv_inspect_key(cache, 0, h, t, mask, key);
            if (memcmp(mask, want_mask, d / 8) || memcmp(key, want_key, d * sizeof(float))) {
                if (bad++ < 3)
                    fprintf(stderr, "%s prefill: d = %u, head %u, token %llu differs from the reference\n",
                            sparkv_kernel_name(family), d, h, (unsigned long long)t);
            }
        }
    }
    CHECKF(bad == 0, "%s prefill (d = %u, %llu tokens, selection %d, recovery %d, key precision %d): %llu tokens "
                     "differ from the reference", sparkv_kernel_name(family), d, (unsigned long long)n,
           (int)pc->policy.selection, (int)pc->policy.recovery, (int)pc->policy.key_precision,
           (unsigned long long)bad);
    sparkv_cache_free(cache);
    free(keys);
    free(values);
    free(qw);
}

int main(int argc, char **argv) {
    g_rng = argc > 1 ? strtoull(argv[1], NULL, 10) : 20261130u;
    for (size_t f = 0; f < N_FAMILIES; f++) {
        if (!sparkv_kernel_supported(FAMILIES[f])) {
            printf("test_prefill_kernels: %s not supported by this CPU, skipped\n", sparkv_kernel_name(FAMILIES[f]));
            continue;
        }
        const sv_prefill_kernels *kern = sv_prefill_kernels_for(FAMILIES[f]);
        const char *name = sparkv_kernel_name(FAMILIES[f]);
        g_section = name;
        test_saliency(kern, name);
        test_select(kern, name);
        test_split(kern, name);
        static const sparkv_precision precisions[] = {SPARKV_F16, SPARKV_BF16, SPARKV_F32, SPARKV_I8, SPARKV_I4};
        for (int i = 0; i < 6; i++) {
            prefill_case pc = {i == 2 ? 64u : i == 4 ? 200u : 128u, 2, 2, i == 0 ? 512u : 600u + 37u * (uint64_t)i,
                               sparkv_default_policy()};
            pc.policy.key_prune_ratio = i == 3 ? 0.5f : 0.8f;
            pc.policy.recovery = (sparkv_recovery)(i % 4);
            pc.policy.sign_bits = pc.policy.recovery != SPARKV_RECOVER_NONE && i != 5;
            pc.policy.key_precision = precisions[i % 5];
            pc.policy.quant_group = 8; /* divides every D used here */
            if (i == 5) {
                pc.policy.selection = SPARKV_SELECT_CUMULATIVE;
                pc.policy.cumulative_p = 0.9f;
            }
            pc.policy.threads = 1 + i % 2;
            test_prefill(FAMILIES[f], &pc);
        }
    }
    printf("test_prefill_kernels: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed != 0;
}
