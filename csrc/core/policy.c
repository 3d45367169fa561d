/* Default values and validation of shapes and policies. */
#include "internal.h"

#include <math.h>

sparkv_shape sparkv_default_shape(void) {
    sparkv_shape s;
    s.struct_size = (uint32_t)sizeof(sparkv_shape);
    s.n_layers = 1;
    s.n_q_heads = 1;
    s.n_kv_heads = 1;
    s.head_dim = 128;
    s.capacity = 4096;
    return s;
}

sparkv_policy sparkv_default_policy(void) {
    sparkv_policy p;
    p.struct_size = (uint32_t)sizeof(sparkv_policy);
    p.key_prune_ratio = 0.0f;
    p.selection = SPARKV_SELECT_TOPK;
    p.cumulative_p = 0.9f;
    p.cumulative_min_keep = 1;
    p.cumulative_max_keep = 0;
    p.recovery = SPARKV_RECOVER_MEAN;
    p.sign_bits = 1;
    p.key_precision = SPARKV_F16;
    p.value_precision = SPARKV_F16;
    p.window = 32;
    p.seed = 0;
    p.threads = 0;
    p.attention_scale = 0.0f;
    p.eviction = SPARKV_EVICT_NONE;
    p.evict_budget = 512;
    p.pool_kernel = 5;
    p.pyramid_ratio = 4.0f;
    p.sink_tokens = 4;
    p.recent_tokens = 508;
    p.key_pruning = SPARKV_KEYS_SPARK;
    p.value_prune_ratio = 0.0f;
    p.quant_group = 32;
    p.compress_decode = 0;
    p.decode_recent = 32;
    return p;
}

uint32_t sparkv_topk_keep(float r, uint32_t d) {
    if (!(r >= 0.0f) || !(r < 1.0f)) return d;
    return d - (uint32_t)floor((double)r * (double)d);
}

uint32_t sv_n_stats(sparkv_recovery recovery) {
    switch (recovery) {
    case SPARKV_RECOVER_MEAN: return 1;
    case SPARKV_RECOVER_EXPONENTIAL: return 2;
    case SPARKV_RECOVER_GAUSSIAN: return 3;
    default: return 0;
    }
}

static int precision_ok(sparkv_precision p) {
    return p == SPARKV_F32 || p == SPARKV_F16 || p == SPARKV_BF16 || p == SPARKV_I8 || p == SPARKV_I4;
}

sparkv_status sv_policy_check(sparkv_cache *e, const sparkv_policy *p, uint32_t d) {
    if (!p) return sv_fail(e, SPARKV_ERR_NULL_POINTER, "policy is NULL");
    if (p->struct_size != sizeof(sparkv_policy))
        return sv_fail(e, SPARKV_ERR_STRUCT_SIZE, "policy.struct_size is %u, this library expects %u",
                       p->struct_size, (unsigned)sizeof(sparkv_policy));
    if (d < 8 || d > SPARKV_MAX_HEAD_DIM || d % 8 != 0)
        return sv_fail(e, SPARKV_ERR_HEAD_DIM, "head_dim %u is not a multiple of 8 in [8, 256]", d);
    if (!(p->key_prune_ratio >= 0.0f && p->key_prune_ratio < 1.0f))
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "key_prune_ratio %g is outside [0, 1)", (double)p->key_prune_ratio);
    if (p->selection != SPARKV_SELECT_TOPK && p->selection != SPARKV_SELECT_CUMULATIVE)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "selection %d is not TOPK (0) or CUMULATIVE (1)", (int)p->selection);
    if (p->selection == SPARKV_SELECT_CUMULATIVE) {
        if (!(p->cumulative_p > 0.0f && p->cumulative_p <= 1.0f))
            return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "cumulative_p %g is outside (0, 1]", (double)p->cumulative_p);
        uint32_t maxk = p->cumulative_max_keep ? p->cumulative_max_keep : d;
        if (p->cumulative_min_keep > d || maxk > d || p->cumulative_min_keep > maxk)
            return sv_fail(e, SPARKV_ERR_INVALID_POLICY,
                           "cumulative keep clamp [%u, %u] is not within [0, %u] with min <= max",
                           p->cumulative_min_keep, maxk, d);
    }
    if ((int)p->recovery < 0 || (int)p->recovery > SPARKV_RECOVER_EXPONENTIAL)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "recovery %d is not a known mode (0..3)", (int)p->recovery);
    if (p->sign_bits != 0 && p->sign_bits != 1)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "sign_bits %d must be 0 or 1", (int)p->sign_bits);
    if (p->sign_bits && p->recovery == SPARKV_RECOVER_NONE)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY,
                       "sign_bits needs a recovery mode: with recovery NONE the bits would be stored and never read");
    if (!precision_ok(p->key_precision))
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "key_precision %d is not F32, F16, BF16, I8 or I4",
                       (int)p->key_precision);
    if (!precision_ok(p->value_precision))
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "value_precision %d is not F32, F16, BF16, I8 or I4",
                       (int)p->value_precision);
    if ((sv_is_quantized(p->key_precision) || sv_is_quantized(p->value_precision)) &&
        (p->quant_group < 8 || p->quant_group % 8 != 0 || p->quant_group > d || d % p->quant_group != 0))
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY,
                       "quant_group %u must be a multiple of 8 that divides head_dim %u (I8/I4 precisions)",
                       p->quant_group, d);
    if (p->window < 1)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "window must be at least 1");
    if (p->threads < 0 || p->threads > SPARKV_MAX_THREADS)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "threads %d is outside [0, %d]", (int)p->threads,
                       SPARKV_MAX_THREADS);
    if (!isfinite(p->attention_scale) || p->attention_scale < 0.0f)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "attention_scale %g must be finite and >= 0",
                       (double)p->attention_scale);
    if ((int)p->eviction < 0 || (int)p->eviction > SPARKV_EVICT_STREAMING)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "eviction %d is not a known mode (0..3)", (int)p->eviction);
    if (p->eviction == SPARKV_EVICT_SNAPKV || p->eviction == SPARKV_EVICT_PYRAMIDKV) {
        if (p->evict_budget < 1)
            return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "evict_budget must be at least 1");
        if (p->pool_kernel < 1 || p->pool_kernel % 2 == 0 || p->pool_kernel > SPARKV_MAX_POOL_KERNEL)
            return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "pool_kernel %u must be odd and in [1, %d]", p->pool_kernel,
                           SPARKV_MAX_POOL_KERNEL);
    }
    if (p->eviction == SPARKV_EVICT_PYRAMIDKV && !(p->pyramid_ratio >= 1.0f && p->pyramid_ratio <= 1e6f))
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "pyramid_ratio %g must be in [1, 1e6]", (double)p->pyramid_ratio);
    if (p->eviction == SPARKV_EVICT_STREAMING && p->sink_tokens + (uint64_t)p->recent_tokens < 1)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "StreamingLLM needs sink_tokens + recent_tokens >= 1");
    if (p->key_pruning != SPARKV_KEYS_SPARK && p->key_pruning != SPARKV_KEYS_THINK)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "key_pruning %d is not SPARK (0) or THINK (1)", (int)p->key_pruning);
    if (p->key_pruning == SPARKV_KEYS_THINK) {
        if (p->selection != SPARKV_SELECT_TOPK)
            return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "ThinK prunes one channel set per head: selection must be TOPK");
        if (p->sign_bits || p->recovery != SPARKV_RECOVER_NONE)
            return sv_fail(e, SPARKV_ERR_INVALID_POLICY,
                           "ThinK stores no recovery statistics: set recovery NONE and sign_bits 0");
    }
    if (!(p->value_prune_ratio >= 0.0f && p->value_prune_ratio < 1.0f))
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "value_prune_ratio %g is outside [0, 1)", (double)p->value_prune_ratio);
    if (p->compress_decode != 0 && p->compress_decode != 1)
        return sv_fail(e, SPARKV_ERR_INVALID_POLICY, "compress_decode %d is not 0 or 1", p->compress_decode);
    return SPARKV_OK;
}

sparkv_status sparkv_policy_validate(const sparkv_policy *policy, uint32_t head_dim) {
    sv_clear_error(NULL);
    return sv_policy_check(NULL, policy, head_dim);
}
