/* Internal types shared by the kernels. Not part of the public API. */
#ifndef SPARKV_INTERNAL_H
#define SPARKV_INTERNAL_H

#include "sparkv.h"

#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>

#define SPARKV_HIDDEN __attribute__((visibility("hidden")))

/* Tokens per storage page. Appends fill the last page; eviction and compression rebuild pages of
 * one head at a time, so no operation ever copies a whole layer. */
#define SPARKV_PAGE_TOKENS 256u
/* Zeroed bytes after every packed kept-value array: SIMD kernels load whole vectors. */
#define SPARKV_PAD_BYTES 128u
#define SPARKV_MAX_HEAD_DIM 256u
#define SPARKV_MAX_GROUP 256u /* query heads per KV head */
#define SPARKV_ERROR_LEN 512

/* How the keys of a page are stored. */
typedef enum { SV_KEYS_DENSE = 0, SV_KEYS_SPARK = 1, SV_KEYS_THINK = 2 } sv_key_mode;

/* One page of one KV head: up to SPARKV_PAGE_TOKENS consecutive stored tokens. Prompt pages are
 * built once at prefill and never change; appended tokens go to dense pages. */
typedef struct sv_page {
    uint64_t first;        /* layer token index of the page's first token */
    uint32_t n;            /* tokens stored */
    uint32_t cap;          /* tokens this page can hold */
    sv_key_mode keys;
    int values_pruned;     /* 1: value-channel pruned (vmask, vfill, T_v kept values per token) */
    uint64_t kept_bytes;   /* SPARK: bytes of packed kept key values in `k` (every token's row starts
                              on a byte: sv_row_bytes(key precision, kept count) per token) */
    void *k;               /* DENSE: cap * D values; SPARK: packed kept values, token-major;
                              THINK: n * T values (the head's kept channels) */
    uint16_t *kscale;      /* quantized keys: DENSE cap * D/quant_group fp16 scales, token-major;
                              SPARK, THINK: one per token (over its kept values) */
    uint8_t *mask;         /* SPARK: cap * D/8 bytes, bit j = channel j kept */
    uint8_t *sign;         /* SPARK with sign bits: cap * D/8 bytes, bit j = pruned channel j < 0 */
    uint16_t *stats;       /* SPARK with recovery: cap * n_stats fp16 values */
    void *v;               /* cap * D values, or (values_pruned) n * T_v kept values */
    uint8_t *vmask;        /* values_pruned: n * D/8 bytes, bit j = value channel j kept */
    uint16_t *vfill;       /* values_pruned: n fp16 means of the pruned values */
    uint16_t *vscale;      /* quantized values: whole rows [D/quant_group][cap], group-major (a block
                              of tokens' scales of one group is contiguous: the SIMD kernels fold
                              them into the softmax weights); values_pruned: one per token */
    void *base;            /* the single allocation holding every array above */
    size_t alloc_bytes;
    float *qn;             /* SPARK pages of aged decode tokens: their own D window query norms
                              (a separate allocation of D + 1 floats, qn[D] = their mean c); NULL:
                              the head's (sv_head.qn / .c) */
} sv_page;

/* A caller's input tensor of rows of D elements in a sparkv_dtype; read through input_rows.h. */
typedef struct {
    const void *data;   /* row 0 */
    sparkv_dtype dtype;
} sv_rows;

/* Per (layer, KV head) storage. */
typedef struct sv_head {
    sv_page **pages;
    uint64_t n_pages;      /* 64-bit: capacity allows 2^40 tokens, 2^32 pages */
    uint64_t pages_cap;
    float *qn;             /* SPARK: D window query norms (NULL otherwise) */
    float c;               /* SPARK: mean of qn; statistics are stored divided by it */
    uint8_t think_mask[SPARKV_MAX_HEAD_DIM / 8]; /* THINK: the head's kept channels */
} sv_head;

typedef struct sv_layer {
    uint64_t n_tokens;     /* tokens stored */
    uint64_t n_prompt;     /* stored tokens that came from prefill */
    uint64_t n_seen;       /* prompt tokens given to prefill (evicted ones included) + appended */
    int prefilled;
    sv_key_mode prompt_keys; /* how the prompt's keys are stored */
    sv_head *heads;        /* n_kv_heads */
    /* decode-time compression (decode_age.c) */
    double *qring;         /* the last policy.window decode queries passed to append, as their group
                              means (what the norms square), [n_kv][window][D], a ring (NULL until
                              the first) */
    uint32_t qring_n;      /* queries in the ring (<= window) */
    uint32_t qring_next;   /* ring slot the next query goes to */
    uint64_t next_age;     /* page index (of every head) of the oldest page not yet considered for aging */
    uint64_t n_aged;       /* pages of decode tokens re-encoded */
} sv_layer;

struct sparkv_cache {
    sparkv_shape shape;
    sparkv_policy policy;
    uint32_t group;        /* n_q_heads / n_kv_heads */
    uint32_t keep_topk;    /* T for TOPK (SparK and ThinK) */
    uint32_t keep_values;  /* T_v: value channels kept per token (D when value pruning is off) */
    uint32_t kgroups;      /* fp16 key scales per dense row: D / quant_group (I8/I4 keys), else 0 */
    uint32_t vgroups;      /* fp16 value scales per whole value row (I8/I4 values), else 0 */
    uint32_t n_stats;      /* fp16 statistics per compressed token: 0, 1 (mean), 2 (exp), 3 (gauss) */
    int prunes;            /* prefill prunes key channels */
    sv_key_mode prompt_keys; /* how prefill stores keys: DENSE, SPARK or THINK */
    sparkv_kernel kernel;
    sv_layer *layers;
    uint64_t id;           /* unique per created cache, never 0: tags this handle's error details */
};

/* Statistic slots, in order, for each compressed token. */
enum { SV_STAT_MEAN = 0, SV_STAT_THETA = 1, SV_STAT_SD = 2 };

/* status.c */
/* Records the detail of a failure for sparkv_last_error (per thread, tagged with the handle). */
SPARKV_HIDDEN sparkv_status sv_fail(const sparkv_cache *cache, sparkv_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
SPARKV_HIDDEN void sv_clear_error(const sparkv_cache *cache);

/* cache.c: the shape checks of sparkv_cache_create (struct size, sizes, head_dim, GQA). */
SPARKV_HIDDEN sparkv_status sv_shape_check(const sparkv_shape *shape);

/* policy.c */
SPARKV_HIDDEN sparkv_status sv_policy_check(sparkv_cache *err_to, const sparkv_policy *policy, uint32_t head_dim);
SPARKV_HIDDEN uint32_t sv_n_stats(sparkv_recovery recovery);

/* validate.c: SPARKV_ERR_NON_FINITE for NaN/Inf; sv_check_rows (input_rows.h) also SPARKV_ERR_RANGE for a finite
 * value beyond sv_precision_limit(storage). */
SPARKV_HIDDEN sparkv_status sv_check_finite(sparkv_cache *cache, const char *what, const float *x,
                                            uint64_t n_outer, uint64_t n_mid, uint32_t d);
SPARKV_HIDDEN float sv_precision_limit(sparkv_precision p);

/* page.c */
SPARKV_HIDDEN sv_page *sv_page_new_dense(const sparkv_cache *cache);
/* A prompt page of n tokens stored per the cache's policy; kept_bytes = SPARK packed kept key bytes. */
SPARKV_HIDDEN sv_page *sv_page_new_prompt(const sparkv_cache *cache, uint32_t n_tokens, uint64_t kept_bytes);
SPARKV_HIDDEN void sv_page_free(sv_page *page);
/* page->alloc_bytes of a page before it is built: a prompt page of n tokens (kept_bytes as above),
 * or (prompt 0) an append page. */
SPARKV_HIDDEN size_t sv_page_alloc_bytes(const sparkv_cache *cache, int prompt, uint32_t n, uint64_t kept_bytes);
/* page.c: adds the used bytes of a page of n tokens (stored as `keys`, values pruned or not,
 * kept_bytes packed SparK key bytes, sign bits or not) to m, the memory report's formulas. */
SPARKV_HIDDEN void sv_account_page(const sparkv_cache *cache, sv_key_mode keys, int values_pruned, int signs,
                                   uint64_t n, uint64_t kept_bytes, sparkv_memory *m);
/* The per-head metadata bytes of a prefilled layer (SparK window-query norms and c; ThinK mask). */
SPARKV_HIDDEN uint64_t sv_head_meta_bytes(const sparkv_cache *cache, sv_key_mode prompt_keys);
/* Byte offset in page->k of a SPARK token's kept row. */
SPARKV_HIDDEN uint64_t sv_page_kept_offset(const sv_page *page, uint32_t d, sparkv_precision kp, uint32_t token);

/* convert.c: element stores/loads in a storage precision. */
SPARKV_HIDDEN void sv_store_row(void *dst, sparkv_precision p, const float *src, size_t n);
SPARKV_HIDDEN void sv_load_row(float *dst, const void *src, sparkv_precision p, size_t n);
SPARKV_HIDDEN float sv_load_one(const void *src, sparkv_precision p, size_t index);

/* quantize.c: I8/I4 rows (symmetric, fp16 scales; see sparkv_precision in sparkv.h). */
SPARKV_HIDDEN int sv_is_quantized(sparkv_precision p);
/* Bytes of n values in precision p (I4 rounded up to a whole byte). */
SPARKV_HIDDEN size_t sv_row_bytes(sparkv_precision p, size_t n);
/* Store n values, one scale per `group` values (group > 0; a shorter last group is allowed);
 * scales[k * scale_stride] receives group k's scale. Float precisions ignore the scales. */
SPARKV_HIDDEN void sv_store_values(void *dst, uint16_t *scales, size_t scale_stride, sparkv_precision p,
                                   const float *src, size_t n, size_t group);
/* The inverse: dst[i] = stored value i as attention sees it (s * q for I8/I4). */
SPARKV_HIDDEN void sv_load_values(float *dst, const void *src, const uint16_t *scales, size_t scale_stride,
                                  sparkv_precision p, size_t n, size_t group);
/* The fp16 scale of a run of values whose largest magnitude is amax. */
SPARKV_HIDDEN uint16_t sv_quant_scale(float amax, sparkv_precision p);

/* saliency.c */
/* The group mean of window row w (double, heads ascending: the mean sv_window_qnorm squares), and
 * qn_j = sqrt(acc_j), c = mean qn (1 if 0) from acc_j = the sum of squared means over the window. */
SPARKV_HIDDEN void sv_group_mean(sv_rows q_window, uint64_t n_window_total, uint64_t w, uint32_t group,
                                 uint32_t first_q_head, uint32_t d, double *mean);
SPARKV_HIDDEN void sv_qnorm_finish(const double *acc, uint32_t d, float *qn, float *c);
SPARKV_HIDDEN void sv_window_qnorm(sv_rows q_window, uint64_t n_window_total, uint32_t n_use,
                                   uint32_t group, uint32_t first_q_head, uint32_t d, float *qn, float *c);

/* select.c: indices (ascending) of the `keep` largest of s[0..n), ties toward the lower index.
 * s must hold no NaN (NaN compares false with everything: fewer than `keep` would be written). */
SPARKV_HIDDEN double sv_kth_largest(double *a, uint64_t n, uint64_t k);
SPARKV_HIDDEN void sv_select_top(const double *s, uint64_t n, uint64_t keep, double *scratch, uint64_t *out);
/* select.c: fills the kept mask (d/8 bytes) of one token; returns the number kept. */
SPARKV_HIDDEN uint32_t sv_select_topk(const double *s, uint32_t d, uint32_t keep, uint8_t *mask, double *scratch);
SPARKV_HIDDEN uint32_t sv_select_cumulative(const double *s, uint32_t d, double p, uint32_t min_keep,
                                            uint32_t max_keep, uint8_t *mask, double *scratch);

/* pack.c: one token's value into a value-pruned page. */
SPARKV_HIDDEN void sv_pack_value(const sparkv_cache *cache, sv_page *page, uint32_t slot, const float *v);

/* evict.c: the prompt tokens a head keeps, ascending, into keep[]; returns how many. */
SPARKV_HIDDEN uint64_t sv_evict_count(const sparkv_cache *cache, uint32_t layer, uint64_t n_tokens, uint32_t n_use);
SPARKV_HIDDEN uint32_t sv_pyramid_budget(uint32_t mean_budget, float ratio, uint32_t layer, uint32_t n_layers);
/* 0 on success, -1 when out of memory, -2 when a SnapKV logit overflows float32. */
SPARKV_HIDDEN int sv_evict_select(const sparkv_cache *cache, uint32_t layer, uint32_t head, sv_rows keys,
                                  uint64_t n_tokens, sv_rows q_window, uint64_t n_window, uint32_t n_use,
                                  uint64_t n_keep, uint64_t *keep);

/* decode_age.c: decode-time compression. sv_decode_wants_queries: the layer keeps decode queries;
 * sv_decode_observe records one (ring: a fresh sv_qring_bytes allocation the layer adopts if it has
 * none yet, else unused); sv_decode_age re-encodes the pages that have aged. */
SPARKV_HIDDEN int sv_decode_wants_queries(const sparkv_cache *cache, uint32_t layer);
SPARKV_HIDDEN void sv_decode_observe(sparkv_cache *cache, uint32_t layer, const float *q, double *ring);
SPARKV_HIDDEN void sv_decode_age(sparkv_cache *cache, uint32_t layer);
SPARKV_HIDDEN uint64_t sv_qring_bytes(const sparkv_cache *cache);

/* think.c: ThinK's channel set of one head from its surviving keys. */
SPARKV_HIDDEN void sv_think_select(const sparkv_cache *cache, sv_rows keys, const uint64_t *rows, uint64_t n,
                                   const float *qn, uint32_t n_use, uint8_t *mask);

/* draw.c: the token hash, and sqrt(x / c) of one pruned channel under GAUSSIAN or EXPONENTIAL
 * (draw_key = sv_draw_key(token hash), draw.h) */
SPARKV_HIDDEN uint64_t sv_mix64(uint64_t z);
SPARKV_HIDDEN uint64_t sv_token_hash(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token);
SPARKV_HIDDEN float sv_draw_magnitude(sparkv_recovery rec, const uint16_t *stats, uint32_t draw_key, uint32_t channel);

/* recover.c */
SPARKV_HIDDEN void sv_recip_sqrt_qn(const float *qn, float c, uint32_t d, float *rq);
SPARKV_HIDDEN void sv_recover_key(const sparkv_cache *cache, const sv_page *page, uint32_t slot, uint64_t kept_offset,
                                  const float *rq, uint64_t token_hash, const uint8_t *think_mask, float *key);

/* cpu.c */
SPARKV_HIDDEN sparkv_kernel sv_best_kernel(void);

#endif
