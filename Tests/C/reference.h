/*
 * reference.h — a naive float64 reference of SparKV, written from include/sparkv.h alone.
 *
 * Scalar, unoptimised, written for clarity: it includes no csrc/ header and calls no library
 * function except the public constants and enums of sparkv.h. Rounding to fp16/bf16 goes through
 * frexp/nearbyint instead of bit tricks; saliency, statistics, SnapKV scores, ThinK scores and
 * attention are computed in double.
 *
 * What the reference reproduces, with the header sentence it follows:
 *  - storage rounding of F32/F16/BF16 and the symmetric I8/I4 quantization (sparkv_precision):
 *    scale = fp16(max|x| / Q), q = clamp(rint(x / s), -Q, Q), read back as s * q; runs of
 *    quant_group channels for rows stored whole, one run over the kept values for SparK/ThinK
 *    keys and value-pruned values;
 *  - window query norms qn and c, SparK top-k / cumulative selection, recovery statistics, sign
 *    bits and recovery (MEAN, GAUSSIAN, EXPONENTIAL, with the published draw hash) — sparkv_prefill;
 *  - eviction (StreamingLLM, SnapKV, PyramidKV), ThinK channel sets, value pruning, in the order
 *    eviction -> key pruning -> value pruning; appended tokens stored dense (sparkv_append);
 *  - decode attention: softmax(scale q.K^T) V in double over the keys and values as stored.
 */
#ifndef SPARKV_TEST_REFERENCE_H
#define SPARKV_TEST_REFERENCE_H

#include "sparkv.h"

#include <stdint.h>

#define REF_MAX_D 256u

/* ---- storage rounding ---------------------------------------------------------------------- */

/* |x| rounded to `bits` significant bits (nearest even), quantum no finer than 2^min_exp. */
double ref_round_sig(double x, int bits, int min_exp);
float ref_round_f16(float x); /* IEEE binary16, nearest even; |x| >= 65520 -> +-Inf */
float ref_round_bf16(float x);
/* One value in a float precision (F32, F16, BF16); I8/I4 are not per-value: see ref_quantize_run. */
float ref_round_prec(float x, sparkv_precision p);
/* Bytes per value of a float precision (4 for F32, 2 for F16/BF16). */
unsigned ref_prec_bytes(sparkv_precision p);
int ref_is_quantized(sparkv_precision p);

/* n values sharing one fp16 scale, quantized and read back: out[i] = s * q_i (I8: Q = 127, I4: Q = 7).
 * Returns the scale s. */
float ref_quantize_run(const float *x, uint32_t n, sparkv_precision p, float *out);
/* A row stored whole (dense prompt key, appended key or value, unpruned value): F32/F16/BF16 per
 * value, I8/I4 in runs of `group` channels. */
void ref_store_row(const float *x, uint32_t n, sparkv_precision p, uint32_t group, float *out);
/* The kept values of one token that share a single scale (SparK/ThinK keys, value-pruned values). */
void ref_store_kept(const float *x, uint32_t n, sparkv_precision p, float *out);

/* ---- draws: the standardized draw published in sparkv.h (sparkv_draw_standard) ------------------ */

#define REF_DRAW_BINS 64
uint64_t ref_mix(uint64_t z);
/* the bin i of (seed, layer, kv_head, token, channel) and the table point of bin i (GAUSSIAN: Z[i];
 * EXPONENTIAL: S[i] = sqrt(E[i])), the tables computed in double from the documented formulas */
uint32_t ref_draw_bin(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token, uint32_t channel);
float ref_draw_point(uint32_t bin, sparkv_recovery rec);
float ref_draw_standard(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token, uint32_t channel,
                        sparkv_recovery rec);

/* ---- policy predicates ------------------------------------------------------------------------- */

uint32_t ref_topk_keep(float r, uint32_t d);                    /* D - floor(r * D) */
int ref_prunes(const sparkv_policy *p, uint32_t d);             /* keys stored pruned (SparK or ThinK) */
uint32_t ref_n_stats(const sparkv_policy *p, uint32_t d);       /* fp16 statistics per SparK token */
enum { REF_KEYS_DENSE = 0, REF_KEYS_SPARK = 1, REF_KEYS_THINK = 2 };
int ref_key_mode(const sparkv_policy *p, uint32_t d);
int ref_value_prunes(const sparkv_policy *p, uint32_t d);
int ref_scored_eviction(const sparkv_policy *p);                /* SnapKV or PyramidKV */
double ref_attention_scale(const sparkv_policy *p, uint32_t d); /* policy scale, or 1/sqrt(D) */

/* ---- prefill stages ---------------------------------------------------------------------------- */

/* qn and c of KV head h: q_window [n_q][n_window][d], its last `use` rows, GQA group g. */
void ref_qnorm(const float *qw, uint64_t n_window, uint32_t use, uint32_t g, uint32_t h, uint32_t d, float *qn,
               float *c);

/* sqrt(c / qn_j) as recovery uses it (floored per SPARKV_RECOVERY_QN_FLOOR when the header has it). */
float ref_recovery_rq(float qn, float c);

/* The kept mask (D/8 bytes) and the key as attention sees it of one prompt token that survived
 * eviction (`token` = its index in the layer), SparK or dense. */
void ref_prompt_token(const sparkv_policy *p, uint32_t d, uint32_t layer, uint32_t head, uint64_t token,
                      const float *k, const float *qn, float c, uint8_t *mask, float *key);

/* SnapKV/PyramidKV budget of `layer` (n_prefix = n - u), clamped to [1, n_prefix]. */
uint64_t ref_layer_budget(const sparkv_policy *p, uint32_t layer, uint32_t n_layers, uint64_t n_prefix);
/* SnapKV's pooled score of each of the n - u prefix tokens of KV head h: kh [n][d] the head's
 * prompt keys, q_window [n_q][n_window][d]. pooled_err (may be NULL) receives an estimate of how
 * far each pooled score may move if the logits are computed in float32 instead of double (the
 * header leaves their precision open): a logit l = scale q.k off by 4 sqrt(D) 2^-24 scale
 * sum_j |q_j k_j| (4x the random-walk size of D rounded products and sums), propagated through
 * the softmax (the weight's own logit plus the normaliser's weighted mean) and the pooling. */
void ref_snapkv_scores(const sparkv_policy *p, const float *kh, uint64_t n, const float *qw, uint64_t n_window,
                       uint32_t u, uint32_t g, uint32_t h, uint32_t d, double *pooled, double *pooled_err);
/* Surviving prompt rows of KV head h, ascending; returns their count. For scored eviction,
 * *boundary_gap (if not NULL) receives (s_b - s_b+1) / s_b of the last kept and the first evicted
 * pooled scores (INFINITY when nothing is evicted by score), and *fragile (if not NULL) is 1 when
 * the kept set could change within the rounding estimate of ref_snapkv_scores (a kept score minus
 * its estimate at or below an evicted score plus its estimate): the kept set then hinges on
 * rounding the header does not specify. */
uint64_t ref_evict(const sparkv_policy *p, uint32_t layer, uint32_t n_layers, const float *kh, uint64_t n,
                   const float *qw, uint64_t n_window, uint32_t u, uint32_t g, uint32_t h, uint32_t d, uint64_t *rows,
                   double *boundary_gap, int *fragile);

/* ThinK's channel set of one KV head: the `keep` channels of largest (qn_j^2 / u) * mean_t k_tj^2
 * over the surviving rows (ties: lower index). */
void ref_think_mask(const float *kh, const uint64_t *rows, uint64_t nk, const float *qn, uint32_t u, uint32_t d,
                    uint32_t keep, uint8_t *mask);
/* A ThinK token's key as attention sees it: kept channels stored (one scale for I8/I4), others 0. */
void ref_think_key(const sparkv_policy *p, uint32_t d, const uint8_t *mask, const float *k, float *key);

/* A stored value as attention sees it: under value pruning the T_v largest |v| (ties: lower index)
 * in value_precision (one scale for I8/I4) and fp16(mean of the pruned values) elsewhere; without,
 * the row stored whole. */
void ref_value_row(const sparkv_policy *p, const float *v, uint32_t d, float *out);

/* ---- the whole prefill + append pipeline of one layer ------------------------------------------ */

typedef struct ref_layer_input {
    const sparkv_policy *policy;
    uint32_t n_layers, layer; /* layer index (PyramidKV budgets, recovery draws) */
    uint32_t n_q, n_kv, d;
    const float *keys, *values; /* [n_kv][n_prompt][d] */
    uint64_t n_prompt;
    const float *q_window; /* [n_q][n_window][d], may be NULL when n_window = 0 */
    uint64_t n_window;
    const float *app_keys, *app_values; /* [n_append][n_kv][d], in sparkv_append order */
    uint64_t n_append;
} ref_layer_input;

typedef struct ref_layer {
    uint32_t n_kv, d;
    uint64_t n_kept;      /* prompt tokens surviving eviction, per KV head (head 0's: see ok) */
    uint64_t n;           /* n_kept + n_append: tokens per KV head */
    uint64_t *rows;       /* [n_kv][n_prompt]: survivors' prompt rows, first n_kept of each head */
    float *qn, *c;        /* [n_kv][d], [n_kv]: zeros and 1 when keys are stored dense */
    uint8_t *masks;       /* [n_kv][n][d/8] kept-channel masks */
    float *keys, *values; /* [n_kv][n][d] as attention sees them */
    double min_gap;       /* smallest SnapKV boundary gap over the heads (INFINITY if none) */
    int fragile;          /* a head's SnapKV kept set is within rounding of another (ref_evict) */
    int ok;               /* 0 if the heads kept different counts (cannot happen per the header) */
} ref_layer;

/* Returns 0 on success (out filled, free with ref_layer_free). */
int ref_layer_build(const ref_layer_input *in, ref_layer *out);
void ref_layer_free(ref_layer *l);

/* ---- attention --------------------------------------------------------------------------------- */

/* keys, values: [n_kv][n][d] as stored; q: [n_q][d]; out: [n_q][d]. softmax(scale q.k) v in double. */
void ref_attention(uint32_t n_q, uint32_t n_kv, uint32_t d, uint64_t n, const float *keys, const float *values,
                   const float *q, double scale, double *out);

#endif
