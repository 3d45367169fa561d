/*
 * reference.c — the naive float64 reference of SparKV (see reference.h).
 *
 * Written from include/sparkv.h only; nothing here includes csrc/ or calls into the library
 * beyond the enums of the public header. Clarity first: plain loops, double accumulators, qsort
 * for every "largest first, ties toward the lower index" selection.
 */
#include "reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *ref_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "reference: out of memory\n");
        exit(2);
    }
    return p;
}

/* ============================================================================================== */
/* Storage rounding and quantization                                                               */
/* ============================================================================================== */

double ref_round_sig(double x, int bits, int min_exp) {
    if (x == 0.0 || !isfinite(x)) return x;
    int e;
    frexp(fabs(x), &e); /* |x| in [2^(e-1), 2^e) */
    int q = e - bits;
    if (q < min_exp) q = min_exp;
    return copysign(ldexp(nearbyint(ldexp(fabs(x), -q)), q), x);
}

float ref_round_f16(float x) {
    if (!isfinite(x)) return x;
    if (fabs((double)x) >= 65520.0) return x > 0 ? INFINITY : -INFINITY;
    return (float)ref_round_sig((double)x, 11, -24);
}

float ref_round_bf16(float x) {
    if (!isfinite(x)) return x;
    return (float)ref_round_sig((double)x, 8, -133);
}

float ref_round_prec(float x, sparkv_precision p) {
    return p == SPARKV_F16 ? ref_round_f16(x) : p == SPARKV_BF16 ? ref_round_bf16(x) : x;
}

unsigned ref_prec_bytes(sparkv_precision p) { return p == SPARKV_F32 ? 4 : 2; }

int ref_is_quantized(sparkv_precision p) { return p == SPARKV_I8 || p == SPARKV_I4; }

/* sparkv_precision: a = max|x_i|; scale = fp16(a / Q) (float quotient; 65504 or more gives 65504);
 * s = scale as float; q_i = 0 if s == 0 else clamp(rint(x_i / s), -Q, Q) (float division, ties to
 * even); read back as the float product s * q_i. */
float ref_quantize_run(const float *x, uint32_t n, sparkv_precision p, float *out) {
    const float Q = p == SPARKV_I8 ? 127.0f : 7.0f;
    float a = 0.0f;
    for (uint32_t i = 0; i < n; i++)
        if (fabsf(x[i]) > a) a = fabsf(x[i]);
    const float quotient = a / Q;
    const float s = quotient >= 65504.0f ? 65504.0f : ref_round_f16(quotient);
    for (uint32_t i = 0; i < n; i++) {
        double q = 0.0;
        if (s != 0.0f) {
            const float y = x[i] / s;
            q = nearbyint((double)y); /* default rounding mode: to nearest, ties to even */
            if (q > Q) q = Q;
            if (q < -Q) q = -Q;
        }
        out[i] = s * (float)(int)q; /* q_i is an integer: 0, never -0 */
    }
    return s;
}

void ref_store_row(const float *x, uint32_t n, sparkv_precision p, uint32_t group, float *out) {
    if (!ref_is_quantized(p)) {
        for (uint32_t j = 0; j < n; j++) out[j] = ref_round_prec(x[j], p);
        return;
    }
    for (uint32_t j0 = 0; j0 < n; j0 += group) ref_quantize_run(x + j0, n - j0 < group ? n - j0 : group, p, out + j0);
}

void ref_store_kept(const float *x, uint32_t n, sparkv_precision p, float *out) {
    if (!ref_is_quantized(p)) {
        for (uint32_t j = 0; j < n; j++) out[j] = ref_round_prec(x[j], p);
        return;
    }
    ref_quantize_run(x, n, p, out);
}

/* ============================================================================================== */
/* Draws                                                                                           */
/* ============================================================================================== */

uint64_t ref_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The 64-point tables, computed here in double from the formulas in sparkv.h and rounded once
 * to float: the normal's inverse CDF by bisection on erfc (slow and plain, but independent of the
 * library's generated table). */
static double ref_normal_cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }
static double ref_normal_pdf(double x) { return isinf(x) ? 0.0 : exp(-0.5 * x * x) / sqrt(2.0 * 3.14159265358979323846); }
static double ref_normal_quantile(double p) {
    double lo = -40.0, hi = 40.0;
    for (int it = 0; it < 200; it++) {
        const double mid = 0.5 * (lo + hi);
        if (mid == lo || mid == hi) break;
        if (ref_normal_cdf(mid) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

static float g_ref_normal[REF_DRAW_BINS], g_ref_sqrt_exp[REF_DRAW_BINS];
static int g_ref_tables_ready;

static void ref_tables(void) {
    if (g_ref_tables_ready) return;
    const double n = REF_DRAW_BINS;
    double edge[REF_DRAW_BINS + 1], a[REF_DRAW_BINS];
    edge[0] = -INFINITY;
    edge[REF_DRAW_BINS] = INFINITY;
    for (int i = 1; i < REF_DRAW_BINS; i++) edge[i] = ref_normal_quantile(i / n);
    for (int i = 0; i < REF_DRAW_BINS; i++) {
        g_ref_normal[i] = (float)(n * (ref_normal_pdf(edge[i]) - ref_normal_pdf(edge[i + 1])));
        a[i] = -log1p(-i / n);
    }
    for (int i = 0; i < REF_DRAW_BINS; i++) {
        const double upper = i + 1 < REF_DRAW_BINS ? (a[i + 1] + 1.0) * (n - i - 1) : 0.0;
        g_ref_sqrt_exp[i] = (float)sqrt((a[i] + 1.0) * (n - i) - upper);
    }
    g_ref_tables_ready = 1;
}

float ref_draw_point(uint32_t bin, sparkv_recovery rec) {
    ref_tables();
    if (rec == SPARKV_RECOVER_GAUSSIAN) return g_ref_normal[bin];
    if (rec == SPARKV_RECOVER_EXPONENTIAL) return g_ref_sqrt_exp[bin];
    return 0.0f;
}

uint32_t ref_draw_bin(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token, uint32_t channel) {
    const uint64_t h = ref_mix(ref_mix(ref_mix(ref_mix(seed) ^ layer) ^ kv_head) ^ token);
    const uint32_t lane = channel % 16, block = channel / 16;
    uint32_t x = ((uint32_t)h ^ (uint32_t)(h >> 32)) + (16 * (block / 5) + lane) * 0x9E3779B9u;
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return (x >> (26 - 6 * (block % 5))) & 63;
}

float ref_draw_standard(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token, uint32_t channel,
                        sparkv_recovery rec) {
    return ref_draw_point(ref_draw_bin(seed, layer, kv_head, token, channel), rec);
}

/* ============================================================================================== */
/* Policy predicates                                                                               */
/* ============================================================================================== */

uint32_t ref_topk_keep(float r, uint32_t d) { return d - (uint32_t)floor((double)r * (double)d); }

int ref_prunes(const sparkv_policy *p, uint32_t d) {
    return p->selection == SPARKV_SELECT_CUMULATIVE || ref_topk_keep(p->key_prune_ratio, d) < d;
}

uint32_t ref_n_stats(const sparkv_policy *p, uint32_t d) {
    if (!ref_prunes(p, d) || p->key_pruning == SPARKV_KEYS_THINK) return 0;
    switch (p->recovery) {
    case SPARKV_RECOVER_MEAN: return 1;
    case SPARKV_RECOVER_EXPONENTIAL: return 2;
    case SPARKV_RECOVER_GAUSSIAN: return 3;
    default: return 0;
    }
}

int ref_key_mode(const sparkv_policy *p, uint32_t d) {
    if (!ref_prunes(p, d)) return REF_KEYS_DENSE;
    return p->key_pruning == SPARKV_KEYS_THINK ? REF_KEYS_THINK : REF_KEYS_SPARK;
}

int ref_value_prunes(const sparkv_policy *p, uint32_t d) { return ref_topk_keep(p->value_prune_ratio, d) < d; }

int ref_scored_eviction(const sparkv_policy *p) {
    return p->eviction == SPARKV_EVICT_SNAPKV || p->eviction == SPARKV_EVICT_PYRAMIDKV;
}

double ref_attention_scale(const sparkv_policy *p, uint32_t d) {
    return p->attention_scale > 0.0f ? (double)p->attention_scale : 1.0 / sqrt((double)d);
}

/* ============================================================================================== */
/* Ordering: indices by score, largest first, ties toward the lower index                          */
/* ============================================================================================== */

typedef struct scored {
    double s;
    uint64_t i;
} scored;

static int scored_cmp(const void *a, const void *b) {
    const scored *x = (const scored *)a, *y = (const scored *)b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1; /* score descending */
    return x->i < y->i ? -1 : x->i > y->i;          /* ties: lower index first */
}

/* order[0..n) = 0..n-1 sorted by score[] descending, ties toward the lower index. */
static void order_desc(const double *score, uint32_t n, uint32_t *order) {
    scored tmp[REF_MAX_D];
    for (uint32_t i = 0; i < n; i++) tmp[i] = (scored){score[i], i};
    qsort(tmp, n, sizeof(scored), scored_cmp);
    for (uint32_t i = 0; i < n; i++) order[i] = (uint32_t)tmp[i].i;
}

static int bit(const uint8_t *mask, uint32_t j) { return mask[j / 8] >> (j % 8) & 1u; }

/* ============================================================================================== */
/* SparK                                                                                           */
/* ============================================================================================== */

void ref_qnorm(const float *qw, uint64_t n_window, uint32_t use, uint32_t g, uint32_t h, uint32_t d, float *qn,
               float *c) {
    double acc[REF_MAX_D];
    for (uint32_t j = 0; j < d; j++) acc[j] = 0.0;
    for (uint64_t w = n_window - use; w < n_window; w++) {
        for (uint32_t j = 0; j < d; j++) {
            double sum = 0.0;
            for (uint32_t i = 0; i < g; i++) sum += (double)qw[((size_t)(h * g + i) * n_window + w) * d + j];
            double bar = sum / (double)g;
            acc[j] += bar * bar;
        }
    }
    double total = 0.0;
    for (uint32_t j = 0; j < d; j++) {
        qn[j] = (float)sqrt(acc[j]);
        total += (double)qn[j];
    }
    *c = (float)(total / (double)d);
    if (*c == 0.0f) *c = 1.0f;
}

/* sqrt(c / qn_j), the factor that turns a statistic stored as sqrt(x / c) into sqrt(x / qn_j).
 * With SPARKV_RECOVERY_QN_FLOOR (sparkv.h: "Recovery reads qn_j as max(qn_j, c / FLOOR)") the norm
 * is floored, so the factor is at most sqrt(FLOOR) and continuous at qn_j = 0; a header without
 * the macro documents no floor: the factor is unbounded as qn_j -> 0+ and a channel with qn_j = 0
 * recovers to 0. */
float ref_recovery_rq(float qn, float c) {
#ifdef SPARKV_RECOVERY_QN_FLOOR
    const double floor_qn = (double)c / (double)SPARKV_RECOVERY_QN_FLOOR;
    const double q = (double)qn > floor_qn ? (double)qn : floor_qn;
    return (float)sqrt((double)c / q);
#else
    return qn == 0.0f ? 0.0f : (float)sqrt((double)c / (double)qn);
#endif
}

void ref_prompt_token(const sparkv_policy *p, uint32_t d, uint32_t layer, uint32_t head, uint64_t token,
                      const float *k, const float *qn, float c, uint8_t *mask, float *key) {
    const sparkv_precision kp = p->key_precision;
    if (!ref_prunes(p, d)) {
        memset(mask, 0xff, d / 8);
        ref_store_row(k, d, kp, p->quant_group, key);
        return;
    }
    double s[REF_MAX_D] = {0}; /* (gcc -O2 cannot see every entry read is written) */
    uint32_t order[REF_MAX_D];
    for (uint32_t j = 0; j < d; j++) s[j] = (double)k[j] * (double)k[j] * (double)qn[j];
    order_desc(s, d, order);
    uint32_t keep;
    if (p->selection == SPARKV_SELECT_TOPK) {
        keep = ref_topk_keep(p->key_prune_ratio, d);
    } else {
        double total = 0.0, cum = 0.0;
        for (uint32_t j = 0; j < d; j++) total += s[j];
        const double target = (double)p->cumulative_p * total;
        keep = d;
        for (uint32_t n = 0; n <= d; n++) {
            if (cum >= target) { keep = n; break; }
            if (n < d) cum += s[order[n]];
        }
        const uint32_t maxk = p->cumulative_max_keep ? p->cumulative_max_keep : d;
        if (keep < p->cumulative_min_keep) keep = p->cumulative_min_keep;
        if (keep > maxk) keep = maxk;
    }
    memset(mask, 0, d / 8);
    for (uint32_t n = 0; n < keep; n++) mask[order[n] / 8] |= (uint8_t)(1u << (order[n] % 8));

    double pruned_sum = 0.0, min_kept = INFINITY, max_pruned = -INFINITY;
    uint32_t n_pruned = 0;
    for (uint32_t j = 0; j < d; j++) {
        if (bit(mask, j)) {
            if (s[j] < min_kept) min_kept = s[j];
        } else {
            pruned_sum += s[j];
            n_pruned++;
            if (s[j] > max_pruned) max_pruned = s[j];
        }
    }
    const double m = n_pruned ? pruned_sum / (double)n_pruned : 0.0;
    const double theta = keep ? min_kept : max_pruned;
    double var = 0.0;
    for (uint32_t j = 0; j < d; j++)
        if (!bit(mask, j)) var += (s[j] - m) * (s[j] - m);
    const double sd = n_pruned ? sqrt(var / (double)n_pruned) : 0.0;
    const float a = ref_round_f16((float)sqrt(m / (double)c));
    const float e = ref_round_f16((float)sqrt(theta / (double)c));
    const float b = ref_round_f16((float)sqrt(sd / (double)c));

    /* Kept values: in key_precision; I8/I4 share one scale over the token's kept values. */
    float kept_in[REF_MAX_D] = {0}, kept_out[REF_MAX_D];
    uint32_t nk = 0;
    for (uint32_t j = 0; j < d; j++)
        if (bit(mask, j)) kept_in[nk++] = k[j];
    ref_store_kept(kept_in, nk, kp, kept_out);

    nk = 0;
    for (uint32_t j = 0; j < d; j++) {
        if (bit(mask, j)) {
            key[j] = kept_out[nk++];
            continue;
        }
        const float rq = ref_recovery_rq(qn[j], c);
        float mag = 0.0f;
        if (p->recovery == SPARKV_RECOVER_MEAN) {
            mag = a * rq;
        } else if (p->recovery != SPARKV_RECOVER_NONE) {
            /* sparkv.h's float32 sequence, one rounding per line */
            const float z = ref_draw_standard(p->seed, layer, head, token, j, p->recovery);
            float r;
            if (p->recovery == SPARKV_RECOVER_EXPONENTIAL) {
                r = a * z;
                if (r > e) r = e;
            } else {
                const float m = a * a, s2 = b * b, th = e * e;
                const float sz = s2 * z;
                float x = m + sz;
                if (x < 0.0f) x = 0.0f;
                if (x > th) x = th;
                r = sqrtf(x);
            }
            mag = r * rq;
        }
        key[j] = (p->sign_bits && k[j] < 0.0f) ? -mag : mag;
    }
}

/* ============================================================================================== */
/* Eviction                                                                                        */
/* ============================================================================================== */

uint64_t ref_layer_budget(const sparkv_policy *p, uint32_t layer, uint32_t n_layers, uint64_t n_prefix) {
    double b = (double)p->evict_budget;
    if (p->eviction == SPARKV_EVICT_PYRAMIDKV && n_layers > 1) {
        const double last = 2.0 * (double)p->evict_budget / (1.0 + (double)p->pyramid_ratio);
        const double first = (double)p->pyramid_ratio * last;
        b = round(first + (last - first) * (double)layer / (double)(n_layers - 1));
    }
    if (b < 1.0) b = 1.0;
    if (b > (double)n_prefix) b = (double)n_prefix;
    return (uint64_t)b;
}

void ref_snapkv_scores(const sparkv_policy *p, const float *kh, uint64_t n, const float *qw, uint64_t n_window,
                       uint32_t u, uint32_t g, uint32_t h, uint32_t d, double *pooled, double *pooled_err) {
    const uint64_t np = n - u;
    const double scale = ref_attention_scale(p, d);
    /* Rounding estimate of a float32 logit: 4 * sqrt(D) * 2^-24 * scale * sum_j |q_j k_j|. */
    const double ulp_d = 4.0 * sqrt((double)d) * 0x1.0p-24 * scale;
    double *acc = (double *)ref_alloc(sizeof(double) * (np ? np : 1)), *w8 = (double *)ref_alloc(sizeof(double) * n);
    double *acc_err = (double *)ref_alloc(sizeof(double) * (np ? np : 1)), *lerr = (double *)ref_alloc(sizeof(double) * n);
    for (uint64_t t = 0; t < np; t++) acc[t] = acc_err[t] = 0.0;
    for (uint32_t w = 0; w < u; w++) {
        const uint64_t pos = np + w; /* prompt position of this window query */
        for (uint32_t i = 0; i < g; i++) {
            const float *q = qw + ((size_t)(h * g + i) * n_window + (n_window - u + w)) * d;
            double mx = -INFINITY, total = 0.0;
            for (uint64_t t = 0; t <= pos; t++) {
                double dot = 0.0, mag = 0.0;
                for (uint32_t j = 0; j < d; j++) {
                    const double x = (double)q[j] * (double)kh[t * d + j];
                    dot += x;
                    mag += fabs(x);
                }
                w8[t] = scale * dot;
                lerr[t] = ulp_d * mag;
                if (w8[t] > mx) mx = w8[t];
            }
            for (uint64_t t = 0; t <= pos; t++) {
                w8[t] = exp(w8[t] - mx);
                total += w8[t];
            }
            /* A weight's relative error: its logit's, plus the normaliser's (the weighted mean). */
            double norm_err = 0.0;
            if (pooled_err)
                for (uint64_t t = 0; t <= pos; t++) norm_err += w8[t] / total * lerr[t];
            for (uint64_t t = 0; t < np; t++) {
                acc[t] += w8[t] / total;
                if (pooled_err) acc_err[t] += w8[t] / total * (lerr[t] + norm_err);
            }
        }
    }
    for (uint64_t t = 0; t < np; t++) {
        acc[t] /= (double)u * (double)g;
        acc_err[t] /= (double)u * (double)g;
    }
    const int64_t half = (int64_t)(p->pool_kernel / 2);
    for (uint64_t t = 0; t < np; t++) {
        double s = 0.0, e = 0.0;
        for (int64_t o = -half; o <= half; o++) {
            const int64_t x = (int64_t)t + o;
            if (x >= 0 && x < (int64_t)np) {
                s += acc[x];
                e += acc_err[x];
            }
        }
        pooled[t] = s / (double)p->pool_kernel;
        if (pooled_err) pooled_err[t] = e / (double)p->pool_kernel;
    }
    free(acc);
    free(w8);
    free(acc_err);
    free(lerr);
}

uint64_t ref_evict(const sparkv_policy *p, uint32_t layer, uint32_t n_layers, const float *kh, uint64_t n,
                   const float *qw, uint64_t n_window, uint32_t u, uint32_t g, uint32_t h, uint32_t d, uint64_t *rows,
                   double *boundary_gap, int *fragile) {
    uint64_t nk = 0;
    if (boundary_gap) *boundary_gap = INFINITY;
    if (fragile) *fragile = 0;
    if (p->eviction == SPARKV_EVICT_STREAMING) {
        for (uint64_t t = 0; t < n; t++)
            if (t < p->sink_tokens || t + p->recent_tokens >= n) rows[nk++] = t;
        return nk;
    }
    if (!ref_scored_eviction(p)) {
        for (uint64_t t = 0; t < n; t++) rows[nk++] = t;
        return nk;
    }
    const uint64_t np = n - u, b = ref_layer_budget(p, layer, n_layers, np);
    double *pooled = (double *)ref_alloc(sizeof(double) * (np ? np : 1));
    double *err = fragile ? (double *)ref_alloc(sizeof(double) * (np ? np : 1)) : NULL;
    ref_snapkv_scores(p, kh, n, qw, n_window, u, g, h, d, pooled, err);
    scored *order = (scored *)ref_alloc(sizeof(scored) * (np ? np : 1));
    for (uint64_t t = 0; t < np; t++) order[t] = (scored){pooled[t], t};
    qsort(order, np, sizeof(scored), scored_cmp);
    if (boundary_gap && b < np)
        *boundary_gap = order[b - 1].s > 0.0 ? (order[b - 1].s - order[b].s) / order[b - 1].s : 0.0;
    if (fragile && b < np) {
        /* The kept set is robust if every kept score minus its error estimate stays above every
         * evicted score plus its error estimate, except for exact ties of scores without error
         * (weights that underflowed to 0 in both precisions): those go to the lower index in any
         * implementation. */
        for (uint64_t i = 0; i < b && !*fragile; i++) {
            const uint64_t ti = order[i].i;
            for (uint64_t k = b; k < np; k++) {
                const uint64_t tk = order[k].i;
                if (pooled[ti] - err[ti] > pooled[tk] + err[tk]) continue;
                if (err[ti] == 0.0 && err[tk] == 0.0 && pooled[ti] == pooled[tk]) continue;
                *fragile = 1;
                break;
            }
        }
    }
    uint8_t *keep = (uint8_t *)ref_alloc(n);
    memset(keep, 0, n);
    for (uint64_t i = 0; i < b; i++) keep[order[i].i] = 1;
    for (uint64_t t = np; t < n; t++) keep[t] = 1;
    for (uint64_t t = 0; t < n; t++)
        if (keep[t]) rows[nk++] = t;
    free(keep);
    free(order);
    free(pooled);
    free(err);
    return nk;
}

/* ============================================================================================== */
/* ThinK and value pruning                                                                         */
/* ============================================================================================== */

void ref_think_mask(const float *kh, const uint64_t *rows, uint64_t nk, const float *qn, uint32_t u, uint32_t d,
                    uint32_t keep, uint8_t *mask) {
    double score[REF_MAX_D];
    uint32_t order[REF_MAX_D];
    for (uint32_t j = 0; j < d; j++) {
        double sum = 0.0;
        for (uint64_t i = 0; i < nk; i++) {
            const double k = (double)kh[rows[i] * d + j];
            sum += k * k;
        }
        score[j] = ((double)qn[j] * (double)qn[j] / (double)u) * (sum / (double)nk);
    }
    order_desc(score, d, order);
    memset(mask, 0, d / 8);
    for (uint32_t i = 0; i < keep; i++) mask[order[i] / 8] |= (uint8_t)(1u << (order[i] % 8));
}

void ref_think_key(const sparkv_policy *p, uint32_t d, const uint8_t *mask, const float *k, float *key) {
    float kept_in[REF_MAX_D] = {0}, kept_out[REF_MAX_D];
    uint32_t nk = 0;
    for (uint32_t j = 0; j < d; j++)
        if (bit(mask, j)) kept_in[nk++] = k[j];
    ref_store_kept(kept_in, nk, p->key_precision, kept_out);
    nk = 0;
    for (uint32_t j = 0; j < d; j++) key[j] = bit(mask, j) ? kept_out[nk++] : 0.0f;
}

void ref_value_row(const sparkv_policy *p, const float *v, uint32_t d, float *out) {
    const uint32_t keep = ref_topk_keep(p->value_prune_ratio, d);
    if (keep >= d) {
        ref_store_row(v, d, p->value_precision, p->quant_group, out);
        return;
    }
    double mag[REF_MAX_D] = {0};
    uint32_t order[REF_MAX_D];
    uint8_t kept[REF_MAX_D];
    for (uint32_t j = 0; j < d; j++) mag[j] = fabs((double)v[j]);
    order_desc(mag, d, order);
    memset(kept, 0, sizeof kept);
    for (uint32_t i = 0; i < keep; i++) kept[order[i]] = 1;
    double sum = 0.0;
    float kept_in[REF_MAX_D] = {0}, kept_out[REF_MAX_D];
    uint32_t nk = 0;
    for (uint32_t j = 0; j < d; j++) {
        if (kept[j]) kept_in[nk++] = v[j];
        else sum += (double)v[j];
    }
    ref_store_kept(kept_in, nk, p->value_precision, kept_out);
    const float fill = ref_round_f16((float)(sum / (double)(d - keep)));
    nk = 0;
    for (uint32_t j = 0; j < d; j++) out[j] = kept[j] ? kept_out[nk++] : fill;
}

/* ============================================================================================== */
/* The pipeline of one layer: eviction -> key pruning -> value pruning, then appended tokens       */
/* ============================================================================================== */

int ref_layer_build(const ref_layer_input *in, ref_layer *out) {
    const sparkv_policy *p = in->policy;
    const uint32_t d = in->d, n_kv = in->n_kv, g = in->n_q / in->n_kv, nb = d / 8;
    const uint64_t np = in->n_prompt, nw = in->n_window, na = in->n_append;
    const uint32_t u = (uint32_t)(nw < p->window ? nw : p->window);
    const int kmode = ref_key_mode(p, d);
    memset(out, 0, sizeof *out);
    out->n_kv = n_kv;
    out->d = d;
    out->ok = 1;
    out->min_gap = INFINITY;
    out->rows = (uint64_t *)ref_alloc(sizeof(uint64_t) * n_kv * (np ? np : 1));
    out->qn = (float *)ref_alloc(sizeof(float) * n_kv * d);
    out->c = (float *)ref_alloc(sizeof(float) * n_kv);

    /* Eviction, per KV head. */
    for (uint32_t h = 0; h < n_kv; h++) {
        double gap = INFINITY;
        int fragile = 0;
        const uint64_t nk = ref_evict(p, in->layer, in->n_layers, in->keys + (size_t)h * np * d, np, in->q_window, nw,
                                      u, g, h, d, out->rows + (size_t)h * np, &gap, &fragile);
        if (h == 0) out->n_kept = nk;
        else if (nk != out->n_kept) out->ok = 0;
        if (gap < out->min_gap) out->min_gap = gap;
        out->fragile |= fragile;
    }
    const uint64_t nk = out->n_kept, n = nk + na;
    out->n = n;
    out->masks = (uint8_t *)ref_alloc((size_t)n_kv * n * nb);
    out->keys = (float *)ref_alloc(sizeof(float) * (size_t)n_kv * n * d);
    out->values = (float *)ref_alloc(sizeof(float) * (size_t)n_kv * n * d);

    for (uint32_t h = 0; h < n_kv; h++) {
        const float *kh = in->keys + (size_t)h * np * d, *vh = in->values + (size_t)h * np * d;
        const uint64_t *rh = out->rows + (size_t)h * np;
        float *qn = out->qn + (size_t)h * d;
        uint8_t think[REF_MAX_D / 8];
        memset(qn, 0, sizeof(float) * d);
        out->c[h] = 1.0f;
        if (kmode != REF_KEYS_DENSE) ref_qnorm(in->q_window, nw, u, g, h, d, qn, &out->c[h]);
        if (kmode == REF_KEYS_THINK) ref_think_mask(kh, rh, nk, qn, u, d, ref_topk_keep(p->key_prune_ratio, d), think);
        /* Survivors, renumbered 0..nk-1 in prompt order. */
        for (uint64_t i = 0; i < nk; i++) {
            const size_t o = (size_t)h * n + i;
            const float *k = kh + rh[i] * d;
            if (kmode == REF_KEYS_THINK) {
                memcpy(out->masks + o * nb, think, nb);
                ref_think_key(p, d, think, k, out->keys + o * d);
            } else {
                /* SparK, or dense (ref_prompt_token stores the row whole when nothing is pruned) */
                ref_prompt_token(p, d, in->layer, h, i, k, qn, out->c[h], out->masks + o * nb, out->keys + o * d);
            }
            ref_value_row(p, vh + rh[i] * d, d, out->values + o * d);
        }
        /* Appended tokens: dense, in the storage precision (I8/I4: runs of quant_group). */
        for (uint64_t t = 0; t < na; t++) {
            const size_t o = (size_t)h * n + nk + t;
            memset(out->masks + o * nb, 0xff, nb);
            ref_store_row(in->app_keys + (t * n_kv + h) * d, d, p->key_precision, p->quant_group, out->keys + o * d);
            ref_store_row(in->app_values + (t * n_kv + h) * d, d, p->value_precision, p->quant_group,
                          out->values + o * d);
        }
    }
    return 0;
}

void ref_layer_free(ref_layer *l) {
    free(l->rows);
    free(l->qn);
    free(l->c);
    free(l->masks);
    free(l->keys);
    free(l->values);
    memset(l, 0, sizeof *l);
}

/* ============================================================================================== */
/* Attention                                                                                       */
/* ============================================================================================== */

void ref_attention(uint32_t n_q, uint32_t n_kv, uint32_t d, uint64_t n, const float *keys, const float *values,
                   const float *q, double scale, double *out) {
    const uint32_t g = n_q / n_kv;
    double *s = (double *)ref_alloc(sizeof(double) * (n ? n : 1));
    for (uint32_t i = 0; i < n_q; i++) {
        const uint32_t h = i / g;
        double mx = -INFINITY;
        for (uint64_t t = 0; t < n; t++) {
            double dot = 0.0;
            for (uint32_t j = 0; j < d; j++) dot += (double)q[(size_t)i * d + j] * (double)keys[((size_t)h * n + t) * d + j];
            s[t] = scale * dot;
            if (s[t] > mx) mx = s[t];
        }
        double total = 0.0;
        for (uint64_t t = 0; t < n; t++) {
            s[t] = exp(s[t] - mx);
            total += s[t];
        }
        for (uint32_t j = 0; j < d; j++) {
            double acc = 0.0;
            for (uint64_t t = 0; t < n; t++) acc += s[t] * (double)values[((size_t)h * n + t) * d + j];
            out[(size_t)i * d + j] = acc / total;
        }
    }
    free(s);
}
