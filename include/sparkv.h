/* SPDX-License-Identifier: Apache-2.0 (see LICENSE) */
/*
 * sparkv.h — SparKV: a compact, query-aware channel-pruned KV cache for CPU LLM inference.
 *
 * SparKV implements SparK: at prefill, every prompt key keeps only its most salient channels
 * (saliency s_tj = k_tj^2 * qn_j, qn_j = ||Qwin[:, j]||_2 over the last w post-RoPE queries,
 * averaged over the query heads of the GQA group). The kept values are stored compactly with a
 * per-token channel bitmask, optional sign bits for the pruned channels, and a few fp16
 * statistics from which decode attention *recovers* the pruned entries. Decode attention reads
 * this compact form directly; the cache is never re-densified.
 *
 * Lifecycle:   sparkv_default_policy() -> sparkv_cache_create() -> sparkv_prefill() per layer
 *              -> { sparkv_append(), sparkv_attend() } per decode step -> sparkv_memory_report()
 *              -> sparkv_cache_free().
 *
 * Conventions (apply to every function below):
 *  - Every fallible call returns a sparkv_status. SPARKV_OK is 0. sparkv_status_string() gives a
 *    stable sentence for any code; sparkv_last_error() gives the detail of the last failure.
 *  - A call that fails leaves the cache exactly as it was before the call, and writes no output.
 *  - Finite inputs give finite outputs or an error: a value that its storage precision cannot hold
 *    is SPARKV_ERR_RANGE (nothing is rounded to Inf or saturated silently), a score or sum that
 *    overflows float32 in attend is SPARKV_ERR_OVERFLOW.
 *  - Tensors are float32, row-major, contiguous, already RoPE-rotated. Shapes are written
 *    [outer][...][inner]. The caller keeps ownership of every pointer it passes; SparKV copies
 *    what it needs before returning and never keeps a caller pointer.
 *  - Threading: calls that change a cache (prefill, append, set_kernel, free) must not overlap any
 *    other call on the same handle. Calls that only read it (attend, the reports, inspect_*,
 *    layer_tokens, shape/policy/kernel queries) may run concurrently with each other on one handle.
 *    Distinct handles are independent. Error details are kept per thread (sparkv_last_error).
 *    Internally prefill and attend use OpenMP with the policy's thread count. Results do not
 *    depend on the thread count: work is split into fixed token chunks merged in a fixed order.
 *  - Bytes are bytes; token counts are per layer and per KV head unless stated otherwise.
 *
 * This header compiles as C99, C11 and C++.
 */
#ifndef SPARKV_H
#define SPARKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(SPARKV_BUILD_SHARED)
#define SPARKV_API __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#define SPARKV_API __attribute__((visibility("default")))
#else
#define SPARKV_API
#endif

/* ------------------------------------------------------------------------------------------ */
/* Version                                                                                      */
/* ------------------------------------------------------------------------------------------ */

#define SPARKV_VERSION_MAJOR 0
#define SPARKV_VERSION_MINOR 1
#define SPARKV_VERSION_PATCH 0
#define SPARKV_VERSION_NUMBER (SPARKV_VERSION_MAJOR * 10000 + SPARKV_VERSION_MINOR * 100 + SPARKV_VERSION_PATCH)

/** The library's version as MAJOR*10000 + MINOR*100 + PATCH (compare with SPARKV_VERSION_NUMBER). */
SPARKV_API unsigned sparkv_version(void);
/** The library's version as a static string "MAJOR.MINOR.PATCH". Never NULL; do not free. */
SPARKV_API const char *sparkv_version_string(void);

/* ------------------------------------------------------------------------------------------ */
/* Status codes                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/** Result of every fallible call. Values are stable: never reused or renumbered. */
typedef enum sparkv_status {
    SPARKV_OK = 0,
    SPARKV_ERR_NULL_POINTER = 1,     /**< a required pointer argument is NULL */
    SPARKV_ERR_INVALID_SHAPE = 2,    /**< a size is zero or sizes are inconsistent */
    SPARKV_ERR_HEAD_DIM = 3,         /**< head_dim is not a multiple of 8 in [8, 256] */
    SPARKV_ERR_GQA = 4,              /**< n_q_heads is not a multiple of n_kv_heads */
    SPARKV_ERR_INVALID_POLICY = 5,   /**< a policy field is out of range or an invalid combination */
    SPARKV_ERR_NON_FINITE = 6,       /**< an input tensor contains NaN or Inf */
    SPARKV_ERR_LAYER = 7,            /**< layer index out of range */
    SPARKV_ERR_CAPACITY = 8,         /**< the layer's token capacity would be exceeded */
    SPARKV_ERR_STATE = 9,            /**< call not allowed in the layer's state (prefill twice, ...) */
    SPARKV_ERR_WINDOW = 10,          /**< observation window is empty or longer than the prompt */
    SPARKV_ERR_OUT_OF_MEMORY = 11,   /**< an allocation failed */
    SPARKV_ERR_UNSUPPORTED = 12,     /**< requested kernel/ISA not supported by this CPU or build */
    SPARKV_ERR_EMPTY = 13,           /**< attend on a layer that holds no token */
    SPARKV_ERR_STRUCT_SIZE = 14,     /**< struct_size field is not one this library knows */
    SPARKV_ERR_INDEX = 15,           /**< a head or token index is out of range */
    SPARKV_ERR_RANGE = 16,           /**< a finite input is beyond what its storage precision holds
                                          (see sparkv_precision), or a stored fp16 statistic would be */
    SPARKV_ERR_OVERFLOW = 17,        /**< attend: a score or output is not finite in float32 although
                                          every input is (|scale * q.k| or a value sum beyond 3.4e38) */
    SPARKV_ERR_DTYPE = 18,           /**< an input element type is not a sparkv_dtype */
    SPARKV_ERR_FORMAT = 19,          /**< a saved cache is malformed: truncated, corrupt (checksum), not a
                                          SparKV file, another format version, or contents the library
                                          could not have written (see sparkv_cache_load) */
    SPARKV_ERR_IO = 20               /**< a file cannot be opened, read, written or renamed */
} sparkv_status;

/** A stable English sentence describing `status` (unknown codes get a generic sentence).
 *  Static storage; never NULL; do not free. Thread-safe. */
SPARKV_API const char *sparkv_status_string(sparkv_status status);

/* ------------------------------------------------------------------------------------------ */
/* Model shape and compression policy                                                           */
/* ------------------------------------------------------------------------------------------ */

/** Shape of the attention layers a cache serves. */
typedef struct sparkv_shape {
    uint32_t struct_size; /**< sizeof(sparkv_shape); set by sparkv_default_shape() */
    uint32_t n_layers;    /**< number of transformer layers, >= 1 */
    uint32_t n_q_heads;   /**< query heads per layer, >= 1, multiple of n_kv_heads */
    uint32_t n_kv_heads;  /**< key/value heads per layer, >= 1 (GQA group = n_q_heads / n_kv_heads) */
    uint32_t head_dim;    /**< D: channels per head, a multiple of 8 in [8, 256]; 64 and 128 are fastest */
    uint64_t capacity;    /**< maximum tokens per layer (prompt + appended), >= 1. Memory is allocated
                               in pages as tokens arrive, not reserved up front. */
} sparkv_shape;

/** How pruned channels are chosen per token. */
typedef enum sparkv_selection {
    SPARKV_SELECT_TOPK = 0,       /**< keep T = D - floor(r*D) channels per token */
    SPARKV_SELECT_CUMULATIVE = 1  /**< keep the fewest top channels whose saliency sum >= p * total,
                                       clamped to [cumulative_min_keep, cumulative_max_keep] */
} sparkv_selection;

/** Recovery reads qn_j as max(qn_j, c / SPARKV_RECOVERY_QN_FLOOR), c the head's mean window-query
 *  norm: a recovered entry is at most sqrt(SPARKV_RECOVERY_QN_FLOOR) = 4 times sqrt(x / c), where x
 *  is the token's statistic or draw. Without the floor, sqrt(x / qn_j) is unbounded as qn_j -> 0+
 *  (signed window queries averaged over a GQA group make tiny norms easy) and jumps at qn_j = 0.
 *  Channel selection (saliency) uses the true qn_j. */
#define SPARKV_RECOVERY_QN_FLOOR 16

/** How a pruned key entry is rebuilt at attention time (qn_j: window query norm of channel j,
 *  floored as above). */
typedef enum sparkv_recovery {
    SPARKV_RECOVER_NONE = 0,        /**< pruned entry is 0 */
    SPARKV_RECOVER_MEAN = 1,        /**< sgn * sqrt(m_t / qn_j), m_t = mean pruned saliency */
    SPARKV_RECOVER_GAUSSIAN = 2,    /**< sgn * sqrt(x / qn_j), x = m_t + sd_t * z clipped to [0, theta_t], z a
                                         64-point standard-normal draw (sparkv_draw_standard) */
    SPARKV_RECOVER_EXPONENTIAL = 3  /**< sgn * sqrt(x / qn_j), x = m_t * E clipped to [0, theta_t], E a
                                         64-point unit-exponential draw (sparkv_draw_standard) */
} sparkv_recovery;

/** Token eviction applied at prefill, before channel pruning (per layer and KV head). */
typedef enum sparkv_eviction {
    SPARKV_EVICT_NONE = 0,
    SPARKV_EVICT_SNAPKV = 1,    /**< keep the window and the `evict_budget` prompt tokens with the highest
                                     pooled window attention (SnapKV) */
    SPARKV_EVICT_PYRAMIDKV = 2, /**< SnapKV scoring with budgets decreasing linearly over the layers
                                     (mean evict_budget, first/last ratio pyramid_ratio) */
    SPARKV_EVICT_STREAMING = 3  /**< keep the first sink_tokens and the last recent_tokens (StreamingLLM) */
} sparkv_eviction;

/** How key channels are pruned when key_prune_ratio > 0 (or selection is CUMULATIVE). */
typedef enum sparkv_key_pruning {
    SPARKV_KEYS_SPARK = 0, /**< per-token (unstructured) channel sets with recovery (SparK) */
    SPARKV_KEYS_THINK = 1  /**< one channel set per layer and KV head for all tokens (ThinK);
                                pruned channels are 0; TOPK only, no recovery statistics */
} sparkv_key_pruning;

/** Storage precision of kept key values and of values.
 *
 *  The quantized formats (I8, I4) are symmetric with fp16 scales. A run of n values x_0..x_{n-1}
 *  that shares one scale is stored as:
 *    Q      = 127 (I8) or 7 (I4)
 *    a      = max_i |x_i|                        (0 when n = 0)
 *    scale  = fp16(a / Q)   the float quotient rounded to fp16 (nearest even); inputs whose
 *                           quotient would round to Inf (a / Q >= 65520) are rejected with
 *                           SPARKV_ERR_RANGE
 *    s      = scale read back as a float
 *    q_i    = 0 if s == 0, else clamp(rint(x_i / s), -Q, Q)   (float division, ties to even)
 *  and read back (by attention and by sparkv_inspect_key/value) as the float product s * q_i,
 *  which is exact in float. So |x_i - s*q_i| <= s/2, except that a value that rounds beyond the
 *  grid because fp16 rounded the scale down is clamped to +-Q*s (an extra error below a * 2^-11
 *  for normal scales).
 *  I8 stores q_i as a signed byte. I4 stores q_i + 8 (1..15) as a 4-bit nibble, two per byte, low
 *  nibble first; every token's row starts on a byte (an odd row ends with a 0x8 nibble).
 *  Which values share a scale:
 *   - rows stored whole (appended keys; prompt keys when the policy prunes none, i.e. TOPK with
 *     floor(r*D) = 0 and no CUMULATIVE selection; values without value pruning): each run of
 *     policy.quant_group consecutive channels of a token (a CUMULATIVE token that happens to keep
 *     all D channels is still a SparK token with one scale);
 *   - kept key values of a SparK or ThinK token, kept values of a value-pruned token: all the
 *     token's kept values share one scale. Kept values are the large ones, so the grid fits them;
 *     recovery statistics, sign bits, masks and value-pruning fills are unchanged (fp16). */
typedef enum sparkv_precision {
    SPARKV_F32 = 0,  /**< 4 bytes */
    SPARKV_F16 = 1,  /**< IEEE binary16, 2 bytes, round to nearest even (default); inputs with
                          |x| >= 65520 (which would round to Inf) are SPARKV_ERR_RANGE */
    SPARKV_BF16 = 2, /**< bfloat16, 2 bytes, round to nearest even; |x| that would round to Inf
                          (>= 0x1.ffp127, about 3.3961e38) is SPARKV_ERR_RANGE */
    SPARKV_I8 = 3,   /**< symmetric int8, q in [-127, 127], 1 byte + fp16 scales (see above) */
    SPARKV_I4 = 4    /**< symmetric 4-bit, q in [-7, 7], half a byte (rows rounded up to whole bytes)
                          + fp16 scales (see above) */
} sparkv_precision;

/** Largest policy.threads accepted (more threads than processors only add overhead; the bound keeps
 *  a mistyped count from exhausting the process's threads). */
#define SPARKV_MAX_THREADS 1024
/** Largest policy.pool_kernel accepted: SnapKV's pooling costs O(prompt * pool_kernel). */
#define SPARKV_MAX_POOL_KERNEL 255

/** Compression policy of a cache. Obtain with sparkv_default_policy() and change fields. */
typedef struct sparkv_policy {
    uint32_t struct_size;            /**< sizeof(sparkv_policy); set by sparkv_default_policy() */
    float key_prune_ratio;           /**< r in [0, 1): fraction of key channels pruned per token (TOPK).
                                          0 stores keys dense. Default 0 (dense). */
    sparkv_selection selection;      /**< default SPARKV_SELECT_TOPK */
    float cumulative_p;              /**< p in (0, 1] for CUMULATIVE. Default 0.9 */
    uint32_t cumulative_min_keep;    /**< CUMULATIVE lower clamp on kept channels, in [0, D]. Default 1 */
    uint32_t cumulative_max_keep;    /**< CUMULATIVE upper clamp, in [min_keep, D]; 0 means D. Default 0 */
    sparkv_recovery recovery;        /**< default SPARKV_RECOVER_MEAN */
    int32_t sign_bits;               /**< 1: store one sign bit per pruned channel (needs recovery != NONE);
                                          0: recovered entries are positive. Default 1 */
    sparkv_precision key_precision;  /**< kept key values and appended keys. Default SPARKV_F16 */
    sparkv_precision value_precision;/**< values. Default SPARKV_F16 */
    uint32_t window;                 /**< w: observation-window queries used, >= 1. Default 32 */
    uint64_t seed;                   /**< seed of the gaussian/exponential draws. Default 0 */
    int32_t threads;                 /**< OpenMP threads for prefill/attend; 0 = OpenMP's default; in
                                          [0, SPARKV_MAX_THREADS] */
    float attention_scale;           /**< softmax scale; 0 = 1/sqrt(D). Must be finite and >= 0 */
    /* --- token eviction (prefill) --- */
    sparkv_eviction eviction;        /**< default SPARKV_EVICT_NONE */
    uint32_t evict_budget;           /**< SNAPKV: prompt tokens kept besides the window; PYRAMIDKV: the mean
                                          over layers. >= 1 when evicting by score; must not exceed the
                                          prompt minus the window. Default 512 */
    uint32_t pool_kernel;            /**< SnapKV average-pooling width along tokens, odd, in
                                          [1, SPARKV_MAX_POOL_KERNEL] (1 = none), zero padding of
                                          pool_kernel/2 on both sides. Default 5 */
    float pyramid_ratio;             /**< PYRAMIDKV: first layer's budget / last layer's, in [1, 1e6].
                                          Default 4 */
    uint32_t sink_tokens;            /**< STREAMING: first tokens kept. Default 4 */
    uint32_t recent_tokens;          /**< STREAMING: last tokens kept. Default 508 */
    /* --- structured key pruning and value pruning --- */
    sparkv_key_pruning key_pruning;  /**< default SPARKV_KEYS_SPARK */
    float value_prune_ratio;         /**< r_v in [0, 1): fraction of value channels pruned per token (largest
                                          |v| kept, ties toward the lower index), the pruned ones replaced by
                                          the token's mean pruned value (fp16). 0 = off (default) */
    /* --- quantization (key_precision / value_precision SPARKV_I8 or SPARKV_I4) --- */
    uint32_t quant_group;            /**< channels per fp16 scale in rows stored whole (dense and appended keys,
                                          values without value pruning): a multiple of 8 in [8, D] dividing D.
                                          Checked only when a precision is I8 or I4 (ignored otherwise). Kept
                                          key values (SparK, ThinK) and kept values of value pruning always
                                          use one scale per token. Default 32 */
    /* --- decode-time compression (append) --- */
    int32_t compress_decode;         /**< 1: appended tokens are compressed as they age, under the layer's key
                                          and value policy (see sparkv_append_step). 0 (default): appended
                                          tokens stay dense */
    uint32_t decode_recent;          /**< compress_decode: the newest tokens that always stay dense (attention
                                          to them is exact). Default 32 */
} sparkv_policy;

/** A 1-layer default shape (struct_size set, every other field must be filled in by the caller:
 *  n_layers = 1, n_q_heads = n_kv_heads = 1, head_dim = 128, capacity = 4096). */
SPARKV_API sparkv_shape sparkv_default_shape(void);
/** The default policy: dense (r = 0), TOPK, MEAN recovery with sign bits, f16 keys and values,
 *  window 32, seed 0, OpenMP's thread count, scale 1/sqrt(D); no eviction (its parameters at
 *  SnapKV 512 / pool 5, PyramidKV ratio 4, StreamingLLM 4 + 508), SparK key pruning, no value
 *  pruning, quant_group 32 (used only with I8/I4 precisions). The pipeline a policy describes
 *  runs: eviction, then key-channel pruning of the surviving prompt tokens, then value-channel
 *  pruning. */
SPARKV_API sparkv_policy sparkv_default_policy(void);

/** Check a policy against a head dimension without creating a cache. Returns SPARKV_OK or
 *  SPARKV_ERR_INVALID_POLICY / SPARKV_ERR_HEAD_DIM / SPARKV_ERR_STRUCT_SIZE; the detail is
 *  available from sparkv_last_error(NULL) on the calling thread. */
SPARKV_API sparkv_status sparkv_policy_validate(const sparkv_policy *policy, uint32_t head_dim);

/** Number of key channels TOPK keeps per token: D - floor(r * D), computed as in the library
 *  (floor of the float product r*D evaluated in double). */
SPARKV_API uint32_t sparkv_topk_keep(float key_prune_ratio, uint32_t head_dim);

/* ------------------------------------------------------------------------------------------ */
/* Cache lifecycle                                                                              */
/* ------------------------------------------------------------------------------------------ */

/** Opaque cache handle. */
typedef struct sparkv_cache sparkv_cache;

/** Create an empty cache for `shape` with `policy` (both copied). On success *out receives a
 *  handle owned by the caller (free with sparkv_cache_free). On failure *out is set to NULL when
 *  `out` is not NULL, and sparkv_last_error(NULL) on this thread holds the detail. */
SPARKV_API sparkv_status sparkv_cache_create(const sparkv_shape *shape, const sparkv_policy *policy,
                                             sparkv_cache **out);

/** Free a cache and all its memory. NULL is a no-op. */
SPARKV_API void sparkv_cache_free(sparkv_cache *cache);

/** Detail of the last failed call on `cache` made by the calling thread ("keys contain NaN at
 *  head 2, row 117, channel 5"), const queries included. Details are kept per thread, so
 *  concurrent readers of one handle never see each other's messages. With cache == NULL: the
 *  detail of the last failed call on this thread that had no handle (create, policy_validate, or
 *  any call given a NULL handle). Empty string if none (or if this thread's last failure was on
 *  another handle). Never NULL; thread-local storage, valid until this thread's next SparKV call. */
SPARKV_API const char *sparkv_last_error(const sparkv_cache *cache);

/** Copy the cache's shape / policy out. */
SPARKV_API sparkv_status sparkv_cache_shape(const sparkv_cache *cache, sparkv_shape *out);
SPARKV_API sparkv_status sparkv_cache_policy(const sparkv_cache *cache, sparkv_policy *out);

/** Threads prefill and attend use: policy.threads, or OpenMP's default when that is 0; 0 for a
 *  NULL handle. */
SPARKV_API int sparkv_cache_threads(const sparkv_cache *cache);

/** Tokens currently held by `layer` (prompt + appended), or 0 on a bad handle/layer. */
SPARKV_API uint64_t sparkv_layer_tokens(const sparkv_cache *cache, uint32_t layer);

/* ------------------------------------------------------------------------------------------ */
/* Prefill, append, attend                                                                      */
/* ------------------------------------------------------------------------------------------ */

/**
 * Compress and store the prompt of one layer. Allowed once per layer, on an empty layer.
 *
 *  keys, values : [n_kv_heads][n_tokens][D]   (post-RoPE keys)
 *  q_window     : [n_q_heads][n_window][D]    the last n_window post-RoPE prompt queries of this
 *                 layer, oldest first. The last min(policy.window, n_window) rows are used.
 *                 Required (1 <= n_window <= n_tokens) when keys are pruned (r > 0, CUMULATIVE or
 *                 ThinK) or tokens are evicted by score (SnapKV, PyramidKV); otherwise it may be
 *                 NULL with n_window = 0. Policy fields of stages a policy does not use (say
 *                 pool_kernel without SnapKV) are not validated.
 *
 * Per KV head: qbar = mean over the group's query heads of the window queries (double);
 * qn_j = sqrt(sum_w qbar_wj^2); c = mean_j qn_j (1 if 0). Per token: s_tj = k_tj^2 * qn_j
 * (double), channels selected per the policy (ties toward the lower channel index), kept values
 * stored in key_precision, pruned-channel signs (bit set = negative) if sign_bits, and statistics
 * stored as fp16 square roots of (statistic / c): m_t = mean pruned saliency; sd_t its population
 * standard deviation (GAUSSIAN); theta_t = smallest kept saliency (GAUSSIAN, EXPONENTIAL).
 * Keeping values in units of keys keeps them inside fp16's range for outlier channels; one that
 * would still exceed it (sqrt(m_t / c) can reach |k| * sqrt(D)) fails the call with
 * SPARKV_ERR_RANGE, as does a value-pruning fill beyond fp16. Keys and values must lie within their
 * storage precision's range (sparkv_precision), checked before anything is stored.
 *
 * Token eviction runs first, per KV head, and stores only the survivors, in prompt order (they are
 * layer tokens 0..kept-1 afterwards; keys are RoPE-rotated already, so nothing is re-rotated):
 *  - SNAPKV: u = min(window, n_window) window queries at prompt positions n-u..n-1. For each, its
 *    causal softmax (scale as in attend) over tokens 0..position, computed per query head of the
 *    group; the weights of the n-u prefix tokens are averaged over window queries and group
 *    heads, then average-pooled along tokens (width pool_kernel, zero padding, always divided by
 *    pool_kernel). Each logit scale * q.k is a float32 dot product (8 partial sums over channels
 *    j = l mod 8, added as ((s0+s4)+(s1+s5))+((s2+s6)+(s3+s7))) times the float scale; the
 *    softmax, averages and pooling are in double. The evict_budget best prefix tokens (ties:
 *    lower index) and the u window tokens are kept. evict_budget > n-u is
 *    SPARKV_ERR_INVALID_POLICY; a logit that is not finite in float32 is SPARKV_ERR_OVERFLOW (as in
 *    attend).
 *  - PYRAMIDKV: as SNAPKV with budget b_l = round(first + (last - first) * l / (L-1)), where
 *    last = 2*evict_budget/(1+pyramid_ratio), first = pyramid_ratio*last (b = evict_budget when
 *    L = 1), at least 1 and at most n-u.
 *  - STREAMING: tokens 0..sink_tokens-1 and the last recent_tokens (all when they cover the prompt).
 * ThinK (key_pruning = THINK) keeps, for each KV head, the T = D - floor(r*D) channels of largest
 * score_j = (qn_j^2 / u) * (sum_t k_tj^2 / kept) over the surviving tokens (double; ties: lower
 * index), stores the T kept values of every token and one D/8-byte mask per head; pruned channels
 * are 0 at attention. Value pruning keeps, per token, the T_v = D - floor(r_v*D) values of largest
 * |v| (ties: lower index) and stores fp16(mean of the pruned values) as their replacement.
 * Selection, statistics, signs and fills are computed from the float inputs; only the stored kept
 * values are quantized (I8/I4, see sparkv_precision), so quantization changes no channel choice.
 */
SPARKV_API sparkv_status sparkv_prefill(sparkv_cache *cache, uint32_t layer,
                                        const float *keys, const float *values, uint64_t n_tokens,
                                        const float *q_window, uint64_t n_window);

/** Append one decode token to `layer`: keys, values [n_kv_heads][D]. Stored dense in the policy's
 *  key/value precision (I8/I4: one fp16 scale per quant_group channels). */
SPARKV_API sparkv_status sparkv_append(sparkv_cache *cache, uint32_t layer,
                                       const float *keys, const float *values);

/**
 * Element type of the tensors handed to sparkv_prefill_typed / sparkv_append_typed. Inference
 * engines hold K/V in 16-bit floats: these entry points read them in place, one row at a time,
 * without a float32 copy of the tensor.
 *
 * Conversion is exact: every float16 (subnormals included) and every bfloat16 widens to the float32
 * of the same value, and the call then behaves exactly as sparkv_prefill / sparkv_append on those
 * float32 values (same selection, statistics, stored bytes and errors). A float16 or bfloat16 Inf or
 * NaN is SPARKV_ERR_NON_FINITE; a finite bfloat16 beyond the storage precision's range (say 1e5
 * stored as F16) is SPARKV_ERR_RANGE. Any other value of the enum is SPARKV_ERR_DTYPE: nothing else
 * is converted.
 */
typedef enum sparkv_dtype {
    SPARKV_DTYPE_F32 = 0,  /**< float, 4 bytes */
    SPARKV_DTYPE_F16 = 1,  /**< IEEE binary16 bit patterns (uint16_t / _Float16), 2 bytes */
    SPARKV_DTYPE_BF16 = 2  /**< bfloat16 bit patterns (the high half of a float32), 2 bytes */
} sparkv_dtype;

/** sparkv_prefill with keys, values and q_window of element type `dtype` (the same layouts, in
 *  elements). Same ownership and threading rules as sparkv_prefill; the inputs are only read. */
SPARKV_API sparkv_status sparkv_prefill_typed(sparkv_cache *cache, uint32_t layer, sparkv_dtype dtype,
                                              const void *keys, const void *values, uint64_t n_tokens,
                                              const void *q_window, uint64_t n_window);

/** sparkv_append with keys and values [n_kv_heads][D] of element type `dtype`. */
SPARKV_API sparkv_status sparkv_append_typed(sparkv_cache *cache, uint32_t layer, sparkv_dtype dtype,
                                             const void *keys, const void *values);

/**
 * One decode step's append: keys and values [n_kv_heads][D] of element type `dtype`, and the step's
 * post-RoPE query q [n_q_heads][D] (float32, finite; NULL allowed).
 *
 * With policy.compress_decode, appended tokens are compressed as they age. They are stored dense
 * first; once a full page of them (SPARKV_PAGE_TOKENS = 256 tokens) has policy.decode_recent newer
 * tokens after it, that page is re-encoded under the layer's key and value policy (SparK / ThinK
 * keys, value pruning, precisions; never eviction) by the same encoder prefill uses, from the
 * values as stored: the result is exactly the page sparkv_prefill would build from those values
 * with those window queries. SparK pages get window-query norms of their own, computed as prefill
 * computes them from the last policy.window queries passed here (the layer keeps their group means:
 * n_kv_heads x window x D doubles per layer, counted in key_meta_bytes); until a query is passed, the prompt's
 * norms. Only prefilled layers compress decode tokens (a layer filled by appends alone has no key
 * mode or ThinK channel set to use). A page whose statistics would exceed fp16 stays dense (exact).
 * The newest decode_recent tokens (and any partial page) are always dense.
 * q is only recorded; attention needs sparkv_attend as before. Errors as sparkv_append_typed, plus
 * SPARKV_ERR_NON_FINITE for q; a failure changes nothing.
 */
SPARKV_API sparkv_status sparkv_append_step(sparkv_cache *cache, uint32_t layer, sparkv_dtype dtype,
                                            const void *keys, const void *values, const float *q);

/**
 * Decode attention of one query token over every token `layer` holds.
 *  q   : [n_q_heads][D]   post-RoPE query (finite, else SPARKV_ERR_NON_FINITE)
 *  out : [n_q_heads][D]   softmax(scale * q.K^T) V per query head (written only on success; may not
 *                         alias q)
 * Every kernel treats a score that is not finite in float32 (|scale * q.k| beyond 3.4e38, or Inf -
 * Inf) the same way: the call fails with SPARKV_ERR_OVERFLOW naming the KV head, and `out` is left
 * untouched; so does an output that overflows. No token is ever silently dropped.
 * Pruned key entries are recovered per the policy; draws of GAUSSIAN/EXPONENTIAL come from a
 * counter-based hash of (seed, layer, kv_head, token index, channel) — see sparkv_draw_standard —
 * so the same call always gives the same result. Each KV head's data is read once for all query
 * heads of its group. I8/I4 keys and values are read in their quantized form and dequantized in
 * registers: the result is attention over the dequantized values (s * q), up to float rounding
 * (the SIMD kernels apply a token's key scale to its score, and a value scale to the softmax
 * weight, instead of to every element).
 */
SPARKV_API sparkv_status sparkv_attend(sparkv_cache *cache, uint32_t layer, const float *q, float *out);

/**
 * Decode attention of a batch: one query per sequence, each sequence its own cache, all for the
 * same `layer`, in one parallel region over (sequence, KV head, token chunk) items, so a server
 * decoding a batch pays one OpenMP region per layer instead of one per sequence.
 *  caches : n_caches >= 1 handles with equal n_q_heads, n_kv_heads and head_dim (policies,
 *           lengths and kernels may differ); the same handle may appear more than once
 *  q      : [n_caches][n_q_heads][D]  one post-RoPE query per sequence
 *  out    : [n_caches][n_q_heads][D]  written only when every sequence succeeds (may not alias q)
 * Each sequence's output is bit-identical to sparkv_attend on its cache with its query, on any
 * thread count and in any batch. Threads: caches[0]'s policy.threads. On failure the status is the
 * first failing sequence's (in index order) and sparkv_last_error(NULL) reads
 * "attend_batch: sequence i: <its message>". Same threading rule as sparkv_attend: no call may
 * modify any of the caches meanwhile.
 */
SPARKV_API sparkv_status sparkv_attend_batch(sparkv_cache *const *caches, uint32_t n_caches, uint32_t layer,
                                             const float *q, float *out);

/* ------------------------------------------------------------------------------------------ */
/* Memory report                                                                                */
/* ------------------------------------------------------------------------------------------ */

/** Exact bytes held. "Used" counts bytes of stored tokens and per-head metadata; `reserved`
 *  counts everything allocated (page slack included). The caller sets struct_size so the
 *  structure can grow: `sparkv_memory m = SPARKV_MEMORY_INIT;`.
 *
 *  Per stored token and KV head, with rb(p, n) = bytes of n values in precision p:
 *  4n (F32), 2n (F16, BF16), n (I8), ceil(n/2) (I4); sc(p, k) = 2k if p is I8/I4, else 0;
 *  g = quant_group; T = kept key channels of the token (SparK) or of the head (ThinK):
 *   key_bytes       dense/appended: rb(kp, D); SparK, ThinK: rb(kp, T)
 *   key_meta_bytes  dense/appended: sc(kp, D/g);
 *                   SparK: D/8 (mask) + D/8 (signs, if sign_bits) + 2*n_stats + sc(kp, 1);
 *                   ThinK: sc(kp, 1); plus per KV head D*4 + 4 (SparK qn, c) or D/8 (ThinK mask);
 *                   plus, with compress_decode, D*4 + 4 per aged SparK page (its own qn, c) and
 *                   n_kv_heads * window * D * 8 per SparK layer that has been passed a decode query
 *   value_bytes     rb(vp, D); value-pruned: rb(vp, T_v)
 *   value_meta_bytes  sc(vp, D/g); value-pruned: D/8 (mask) + 2 (fill) + sc(vp, 1)
 *  Example, D = 128, SparK r = 0.8 (T = 26), MEAN with sign bits, K int8: 26 + 2 (scale) + 16 + 16
 *  + 2 = 62 bytes of K per token (K int4: 13 + 2 + 16 + 16 + 2 = 49; K f16: 86); V int8 with
 *  g = 32: 128 + 4*2 = 136 bytes (V int4: 64 + 8 = 72; V f16: 256). */
typedef struct sparkv_memory {
    uint64_t struct_size;       /**< set by the caller to sizeof(sparkv_memory) */
    uint64_t n_tokens;          /**< tokens held per KV head, summed over the layers covered */
    uint64_t key_bytes;         /**< kept key values + dense appended keys (quantized payload for I8/I4) */
    uint64_t key_meta_bytes;    /**< channel masks, sign bits, recovery statistics, per-head qn and c
                                     (SparK); per-head channel mask (ThinK); fp16 key scales (I8/I4) */
    uint64_t value_bytes;       /**< values (kept values when value pruning is on; quantized payload for I8/I4) */
    uint64_t total_bytes;       /**< key_bytes + key_meta_bytes + value_bytes + value_meta_bytes */
    uint64_t dense_bytes;       /**< the tokens the layers have seen (whole prompts, evicted tokens included,
                                     plus appended tokens) as dense fp16 K and V: tokens * heads * D * 2 * 2 */
    uint64_t reserved_bytes;    /**< bytes allocated for token storage and metadata (>= total_bytes) */
    uint64_t value_meta_bytes;  /**< value-pruning masks and fill values, fp16 value scales (I8/I4)
                                     (included in total_bytes) */
} sparkv_memory;

/** A zeroed sparkv_memory with struct_size set (every field named, so -Wextra stays quiet). */
#define SPARKV_MEMORY_INIT {sizeof(sparkv_memory), 0, 0, 0, 0, 0, 0, 0, 0}

/** Memory of one layer (layer < n_layers) or of the whole cache (layer == SPARKV_ALL_LAYERS).
 *  out->struct_size must be sizeof(sparkv_memory) (SPARKV_ERR_STRUCT_SIZE otherwise). */
#define SPARKV_ALL_LAYERS 0xFFFFFFFFu
SPARKV_API sparkv_status sparkv_memory_report(const sparkv_cache *cache, uint32_t layer, sparkv_memory *out);

/* ------------------------------------------------------------------------------------------ */
/* Saved caches: compress a prompt once, reuse it from a file                                   */
/* ------------------------------------------------------------------------------------------ */

/**
 * Save layers [first_layer, first_layer + n_layers) of a cache (n_layers = SPARKV_ALL_LAYERS: every
 * layer from first_layer on) to the file at `path`, so a long system prompt or document is
 * compressed once and reused by sparkv_cache_load.
 *
 * The file is self-describing and versioned: a magic, the format version (1), a byte-order mark,
 * the library version that wrote it, the whole shape and every policy field, then per saved layer
 * its token counts and per KV head its window-query norms / ThinK mask and its pages' stored bytes
 * (only the tokens held, never free slots), and the decode-time compression state (the next page
 * to age, the pages aged, the decode-query ring, aged SparK pages' own norms), each section with a
 * CRC-32C. It stores exactly the bytes the cache holds: loading gives a cache whose attend output, memory report, inspect results
 * and later appends are bit-identical to the saved one's. Not saved: the kernel choice (a loaded
 * cache picks one as sparkv_cache_create does) and nothing of layers outside the range (they load
 * empty). Integers and floats are stored in the machine's byte order; a machine of the other order
 * rejects the file (SPARKV_ERR_FORMAT).
 *
 * The file is written beside `path` (path + ".tmp<pid>") and renamed over it, so readers never see a
 * partial file and a failed save leaves an existing file unchanged. Errors: SPARKV_ERR_NULL_POINTER,
 * SPARKV_ERR_LAYER (empty or out-of-range layer range), SPARKV_ERR_IO (cannot create, write or
 * rename; the temporary file is removed), SPARKV_ERR_OUT_OF_MEMORY. Threading: only reads the cache
 * (may run concurrently with attend, reports and other saves of the same handle).
 */
SPARKV_API sparkv_status sparkv_cache_save(const sparkv_cache *cache, uint32_t first_layer, uint32_t n_layers,
                                           const char *path);

/** The size in bytes of the file sparkv_cache_save would write for these layers (into *out_bytes). */
SPARKV_API sparkv_status sparkv_cache_save_size(const sparkv_cache *cache, uint32_t first_layer, uint32_t n_layers,
                                                uint64_t *out_bytes);

/** sparkv_cache_save into a caller's buffer of buffer_bytes bytes: *out_written receives the file's
 *  size. SPARKV_ERR_CAPACITY (nothing written) when the buffer is smaller than
 *  sparkv_cache_save_size reports. The caller owns the buffer. */
SPARKV_API sparkv_status sparkv_cache_save_buffer(const sparkv_cache *cache, uint32_t first_layer, uint32_t n_layers,
                                                  void *buffer, size_t buffer_bytes, size_t *out_written);

/**
 * Load a cache saved by sparkv_cache_save. On success *out receives a new handle owned by the caller
 * (free with sparkv_cache_free) holding the saved layers exactly as they were (layers outside the
 * saved range empty), with the file's shape and policy; it can be attended, reported, inspected,
 * appended to and saved like the original.
 *
 * expected_shape (may be NULL): the model the cache is for. Its n_layers, n_q_heads, n_kv_heads and
 * head_dim must equal the file's (SPARKV_ERR_INVALID_SHAPE otherwise, naming both), and its capacity
 * replaces the file's (SPARKV_ERR_CAPACITY when a saved layer holds more tokens), so a prefix saved
 * with a short capacity can continue in a longer session. NULL keeps the file's shape.
 *
 * The file is untrusted input. It is mapped read-only (mmap; read into a buffer where mapping is not
 * possible) and every byte is bounds-checked; pages are copied out of the mapping, which is unmapped
 * before returning. Any malformed file returns an error, never crashes or reads past the file:
 * SPARKV_ERR_FORMAT for a truncated or oversized file, a wrong magic, format version or byte order, a
 * failed section checksum, sizes or counts that overflow or exceed the shape, the capacity or the
 * bytes present, a policy or shape that sparkv_cache_create rejects, and any content the library
 * could not have written for that policy: page boundaries not shared by every KV head, n > cap,
 * page kinds the policy does not build (say a dense page holding ThinK prompt tokens, or a compressed
 * page of decode tokens the layer has not aged), aging state or a decode-query ring that does not fit
 * the layer, SparK masks
 * whose kept counts differ from the policy's T (TOPK) or its clamps (CUMULATIVE) or disagree with the
 * packed kept bytes, sign bits on kept channels, value masks not keeping T_v channels, NaN/Inf stored
 * values, negative or non-finite fp16 scales and statistics, window-query norms that are negative
 * or not finite, quantized codes off their grid (I8 -128, I4 nibble 0). The message
 * (sparkv_last_error(NULL)) names the layer, KV head, page and token. Every invariant attend and
 * append rely on is checked before the cache is returned, so a loaded cache never makes them
 * misbehave. Memory: the pages' stored bytes come from the file, and a page is allocated only after
 * its record has been seen, so allocation is bounded by about 256 times the file's size (a 1-token
 * dense page gets its 256 slots) plus the shape's head tables (refused beyond 64 MiB and 64 bytes
 * per file byte). Also SPARKV_ERR_IO (cannot open / not a regular file), SPARKV_ERR_NULL_POINTER,
 * SPARKV_ERR_STRUCT_SIZE (expected_shape), SPARKV_ERR_OUT_OF_MEMORY. On any failure *out is NULL.
 * Threading: independent of every other call. The file must not be truncated by another process
 * while it loads (as for any memory-mapped reader, that would raise SIGBUS).
 */
SPARKV_API sparkv_status sparkv_cache_load(const char *path, const sparkv_shape *expected_shape, sparkv_cache **out);

/** sparkv_cache_load from `size` bytes at `data` (the caller's, only read during the call). */
SPARKV_API sparkv_status sparkv_cache_load_buffer(const void *data, size_t size, const sparkv_shape *expected_shape,
                                                  sparkv_cache **out);

/* ------------------------------------------------------------------------------------------ */
/* Memory planning: what a cache would hold, before it exists                                   */
/* ------------------------------------------------------------------------------------------ */

/**
 * The memory report a cache of `shape` and `policy` would give after every layer is prefilled with
 * `prompt_tokens` tokens (with min(policy.window, prompt_tokens) window-query rows) and then
 * `appended_tokens` tokens are appended to every layer: the same formulas and page sizes as
 * sparkv_memory_report, evaluated without data. prompt_tokens 0 means no prefill (appends only).
 * Exact for every policy except CUMULATIVE selection, whose kept counts depend on the data: there
 * every token is counted with cumulative_max_keep channels (D when 0), an upper bound. With
 * compress_decode the appends are taken to be sparkv_append_step calls with a query (SparK layers
 * then hold the decode-query ring) and every aged page to be compressed (a page whose statistics
 * would exceed fp16 stays dense, which the plan does not foresee).
 * `out->struct_size` must be sizeof(sparkv_memory). Errors: as sparkv_cache_create for the shape and
 * policy; SPARKV_ERR_CAPACITY when prompt + appended tokens exceed shape->capacity;
 * SPARKV_ERR_INVALID_POLICY when the eviction budget exceeds the prompt minus the window (as
 * sparkv_prefill would). Allocates nothing proportional to the token counts; thread-safe.
 */
SPARKV_API sparkv_status sparkv_plan_memory(const sparkv_shape *shape, const sparkv_policy *policy,
                                            uint64_t prompt_tokens, uint64_t appended_tokens, sparkv_memory *out);

/**
 * The longest prompt per sequence such that `batch` sequences (each its own cache of `shape` and
 * `policy`, prefilled with the prompt, then `appended_tokens` appended) hold at most
 * `memory_bytes` of reserved_bytes together (sparkv_plan_memory's reserved_bytes x batch; handles
 * and per-call scratch are not counted). Searches prompts up to shape->capacity - appended_tokens
 * (so a policy whose memory stops growing, like token eviction, reports the capacity); *out_tokens
 * is 0 when not even the shortest valid prompt fits. batch >= 1.
 */
SPARKV_API sparkv_status sparkv_plan_max_prompt(const sparkv_shape *shape, const sparkv_policy *policy,
                                                uint64_t memory_bytes, uint64_t batch, uint64_t appended_tokens,
                                                uint64_t *out_tokens);

/**
 * The most sequences of `prompt_tokens` prompt + `appended_tokens` appended tokens whose caches fit
 * in `memory_bytes` of reserved_bytes together: floor(memory_bytes / per-sequence reserved_bytes)
 * (UINT64_MAX when a sequence needs no memory: no prompt and nothing appended).
 */
SPARKV_API sparkv_status sparkv_plan_max_batch(const sparkv_shape *shape, const sparkv_policy *policy,
                                               uint64_t memory_bytes, uint64_t prompt_tokens, uint64_t appended_tokens,
                                               uint64_t *out_batch);

/* ------------------------------------------------------------------------------------------ */
/* Inspection (tests, debugging, export). Not used by attend.                                    */
/* ------------------------------------------------------------------------------------------ */

/** The key of one stored token as attention sees it (kept values as stored — dequantized, s * q,
 *  for I8/I4 — pruned entries recovered per the policy) and its kept-channel mask (bit j of byte
 *  j/8 = channel j kept; D/8 bytes). Either output may be NULL. Dense tokens report every channel
 *  kept. */
SPARKV_API sparkv_status sparkv_inspect_key(const sparkv_cache *cache, uint32_t layer, uint32_t kv_head,
                                            uint64_t token, uint8_t *kept_mask, float *key);
/** The value of one stored token as attention sees it (D floats): as stored, dequantized (s * q)
 *  for I8/I4, the fill value in pruned channels of a value-pruned token. */
SPARKV_API sparkv_status sparkv_inspect_value(const sparkv_cache *cache, uint32_t layer, uint32_t kv_head,
                                              uint64_t token, float *value);
/** The window query norms qn_j (D floats) and the scale c of one layer and KV head (zeros and 1
 *  for a layer stored dense or not yet prefilled). Either output may be NULL. */
SPARKV_API sparkv_status sparkv_inspect_qnorm(const sparkv_cache *cache, uint32_t layer, uint32_t kv_head,
                                              float *qn, float *scale_c);

/** The standardized recovery draw of (seed, layer, kv_head, token, channel): for
 *  SPARKV_RECOVER_GAUSSIAN the standard-normal point Z[i], for SPARKV_RECOVER_EXPONENTIAL the
 *  square root S[i] of the unit-exponential point (the factor recovery multiplies by); 0 for other
 *  recovery modes. Published so other implementations can reproduce draws bit for bit:
 *    mix(z): z += 0x9E3779B97F4A7C15; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9;
 *            z = (z ^ z>>27) * 0x94D049BB133111EB; return z ^ z>>31          (64-bit, wrapping)
 *    h = mix(mix(mix(mix(seed) ^ layer) ^ kv_head) ^ token)                     (once per token)
 *    key = low32(h) ^ high32(h)
 *    lane = channel % 16;  block = channel / 16;  counter = 16 * (block / 5) + lane
 *    x = key + counter * 0x9E3779B9; x ^= x>>16; x *= 0x85EBCA6B; x ^= x>>13; x *= 0xC2B2AE35;
 *    x ^= x>>16                                                    (32-bit, wrapping: murmur3 fmix32)
 *    i = (x >> (26 - 6 * (block % 5))) & 63                        (one of 64 bins)
 *  so one 32-bit hash serves five 16-channel blocks through its 6-bit fields at bits 26, 20, 14,
 *  8 and 2 (fmix32 is a bijection: over a uniform key the five fields are exactly uniform and
 *  independent), and a 16-lane kernel hashes once per 80 channels.
 *  The tables: split the distribution into 64 bins of probability 1/64 each, bin i = [F^-1(i/64),
 *  F^-1((i+1)/64)); Z[i] = E[Z | Z in bin i] = 64 * (phi(lo) - phi(hi)) for the standard normal
 *  (phi its density, phi(+-inf) = 0), E[i] = E[X | X in bin i] = (a_i + 1)(64 - i) - (a_{i+1} + 1)(63 - i)
 *  for the unit exponential with a_i = -ln(1 - i/64) (the last term 0 for i = 63), and
 *  S[i] = sqrt(E[i]); each computed in double and rounded once to float32. Every bin has
 *  probability 1/64 and holds its conditional mean, so the draws' mean is the distribution's
 *  (0 and 1, up to float32 rounding). The discretization keeps variance 0.9961 of the normal's 1
 *  (|Z| <= 2.510) and 0.9831 of the exponential's 1 (E <= 5.159): the tails beyond the outermost
 *  bins' means are not drawn (the clip to [0, theta] below bounds every draw anyway).
 *  A recovered entry, in float32 arithmetic with every operation rounded to nearest (no fused
 *  multiply-add), from the token's stored fp16 statistics a (mean), b (spread), e (clip bound),
 *  which are sqrt(stat / c):
 *    EXPONENTIAL: r = min(a * S[i], e)                        (x = m * E clipped to theta, as sqrt)
 *    GAUSSIAN:    x = a*a + (b*b) * Z[i];  x = min(max(x, 0), e*e);  r = sqrt(x)   (IEEE sqrt)
 *    MEAN:        r = a
 *  and the entry is sgn * (r * rq_j) with rq_j = float(sqrt(c / max(qn_j, c / SPARKV_RECOVERY_QN_FLOOR)))
 *  computed in double. (Earlier builds drew Box-Muller / -ln(u) in double from two 64-bit hashes
 *  per entry, published as sparkv_draw_uniforms; that draw did not vectorize and is gone.) */
SPARKV_API float sparkv_draw_standard(uint64_t seed, uint32_t layer, uint32_t kv_head, uint64_t token,
                                      uint32_t channel, sparkv_recovery recovery);

/* ------------------------------------------------------------------------------------------ */
/* Kernels (SIMD dispatch)                                                                      */
/* ------------------------------------------------------------------------------------------ */

/** Attention kernel families. AUTO picks the best the CPU supports (checked at run time). The
 *  environment variable SPARKV_KERNEL=portable|avx2|avx512 overrides AUTO for new caches. */
typedef enum sparkv_kernel {
    SPARKV_KERNEL_AUTO = 0,
    SPARKV_KERNEL_PORTABLE = 1, /**< plain C11, the specification */
    SPARKV_KERNEL_AVX2 = 2,     /**< AVX2 + FMA + F16C + BMI2 */
    SPARKV_KERNEL_AVX512 = 3    /**< AVX-512 F/BW/VL/VBMI2 + F16C */
} sparkv_kernel;

/** 1 if this CPU and build support `kernel`, else 0. */
SPARKV_API int sparkv_kernel_supported(sparkv_kernel kernel);
/** Choose the kernel family of a cache. SPARKV_ERR_UNSUPPORTED if the CPU lacks it. */
SPARKV_API sparkv_status sparkv_cache_set_kernel(sparkv_cache *cache, sparkv_kernel kernel);
/** The kernel family a cache uses (never AUTO). */
SPARKV_API sparkv_kernel sparkv_cache_kernel(const sparkv_cache *cache);
/** "portable", "avx2", "avx512" or "auto". Static; never NULL. */
SPARKV_API const char *sparkv_kernel_name(sparkv_kernel kernel);

#ifdef __cplusplus
}
#endif

#endif /* SPARKV_H */
