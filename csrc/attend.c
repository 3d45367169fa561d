/* Decode attention over the compact cache: one query token, every stored token of a layer.
 *
 * Work is split into (KV head, token chunk) items so that a layer with fewer KV heads than threads
 * still uses every core (split-K). Chunk boundaries depend only on the number of pages, never on
 * the thread count, and partial results are merged in a fixed order with a log-sum-exp merge:
 * the output is bit-identical for any thread count. */
#include "internal.h"
#include "attend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "omp_compat.h"

/* At most this many chunks per KV head. */
#define SV_MAX_CHUNKS 16u

static const sv_kernels *kernels_for(sparkv_kernel k) {
    switch (k) {
    case SPARKV_KERNEL_AVX512: return &sv_kernels_avx512;
    case SPARKV_KERNEL_AVX2: return &sv_kernels_avx2;
    default: return &sv_kernels_portable;
    }
}

/* Per-head query preparation: scaled queries, rq, (THINK) the queries gathered at the head's kept
 * channels and (MEAN) the byte look-up tables. */
static void prepare_head(const sparkv_cache *cache, const sv_head *hs, const float *q, float scale,
                         uint32_t head, float *qs, float *rq, float *qt, uint32_t tstride, float *lut) {
    const uint32_t d = cache->shape.head_dim, g = cache->group;
    for (uint32_t i = 0; i < g; i++)
        for (uint32_t j = 0; j < d; j++) qs[i * d + j] = q[((size_t)head * g + i) * d + j] * scale;
    if (qt) {
        for (uint32_t i = 0; i < g; i++) {
            uint32_t m = 0;
            for (uint32_t j = 0; j < d; j++)
                if (hs->think_mask[j >> 3] >> (j & 7) & 1u) qt[(size_t)i * tstride + m++] = qs[i * d + j];
            for (; m < tstride; m++) qt[(size_t)i * tstride + m] = 0.0f;
        }
    }
    if (hs->qn) sv_recip_sqrt_qn(hs->qn, hs->c, d, rq);
    else memset(rq, 0, d * sizeof(float));
    if (!lut) return;
    /* lut[i][b][x] = sum over set bits k of x of qs_i[8b + k] * rq[8b + k]: built by adding the
     * lowest bit to the entry without it, so each entry costs one addition. */
    for (uint32_t i = 0; i < g; i++) {
        for (uint32_t b = 0; b < d / 8; b++) {
            float *row = lut + ((size_t)i * (d / 8) + b) * 256;
            float a[8];
            for (uint32_t k = 0; k < 8; k++) a[k] = qs[i * d + 8 * b + k] * rq[8 * b + k];
            row[0] = 0.0f;
            for (uint32_t x = 1; x < 256; x++) row[x] = row[x & (x - 1)] + a[__builtin_ctz(x)];
        }
    }
}

sparkv_status sparkv_attend(sparkv_cache *cache, uint32_t layer, const float *q, float *out) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "attend: cache is NULL");
    sv_clear_error(cache);
    if (!q || !out) return sv_fail(cache, SPARKV_ERR_NULL_POINTER, "attend: %s is NULL", q ? "out" : "q");
    if (layer >= cache->shape.n_layers)
        return sv_fail(cache, SPARKV_ERR_LAYER, "attend: layer %u is out of range (n_layers = %u)", layer,
                       cache->shape.n_layers);
    const sv_layer *L = &cache->layers[layer];
    if (L->n_tokens == 0) return sv_fail(cache, SPARKV_ERR_EMPTY, "attend: layer %u holds no token", layer);
    const uint32_t d = cache->shape.head_dim, g = cache->group, nkv = cache->shape.n_kv_heads;
    sparkv_status st = sv_check_finite(cache, "queries", q, cache->shape.n_q_heads, 1, d);
    if (st != SPARKV_OK) return st;

    const float scale = cache->policy.attention_scale > 0.0f ? cache->policy.attention_scale
                                                            : (float)(1.0 / sqrt((double)d));
    const sv_kernels *K = kernels_for(cache->kernel);
    const int use_lut = L->prompt_keys == SV_KEYS_SPARK && cache->policy.recovery == SPARKV_RECOVER_MEAN &&
                        L->n_prompt > 0 && K->uses_lut(d, g);
    const int think = L->prompt_keys == SV_KEYS_THINK && L->n_prompt > 0;
    const uint32_t tstride = think ? (cache->keep_topk + 15u) & ~15u : 0;
    const uint64_t n_pages = L->heads[0].n_pages;
    const uint64_t chunk_pages = (n_pages + SV_MAX_CHUNKS - 1) / SV_MAX_CHUNKS;
    const uint32_t n_chunks = (uint32_t)((n_pages + chunk_pages - 1) / chunk_pages);
    /* per item: max[g], sum[g], acc[g][d], block scores[g][SV_BLOCK], and one float whose bits
     * flag a non-finite score */
    const size_t part_stride = (size_t)g * (d + 2 + SV_BLOCK) + 1;
    const size_t lut_stride = use_lut ? (size_t)g * (d / 8) * 256 : 0;
    const size_t qt_stride = (size_t)g * tstride;
    const size_t prep_stride = (size_t)g * d + d + qt_stride + lut_stride;

    /* the merged result is written to `merged` and copied to `out` only when it is all finite */
    float *prep = (float *)malloc(sizeof(float) * (prep_stride * nkv + part_stride * nkv * n_chunks +
                                                   (size_t)cache->shape.n_q_heads * d));
    if (!prep) return sv_fail(cache, SPARKV_ERR_OUT_OF_MEMORY, "attend: cannot allocate scratch");
    float *parts = prep + prep_stride * nkv;
    float *merged = parts + part_stride * nkv * n_chunks;
    const int threads = cache->policy.threads;
    (void)threads; /* read only by the OpenMP pragma */
    const int64_t n_items = (int64_t)nkv * n_chunks;

    /* schedule(static): clang 21's dynamic schedules need a newer libomp than Debian's. */
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
    {
#pragma omp for schedule(static)
        for (int64_t h = 0; h < (int64_t)nkv; h++) {
            float *base = prep + prep_stride * (size_t)h;
            prepare_head(cache, &L->heads[h], q, scale, (uint32_t)h, base, base + (size_t)g * d,
                         think ? base + (size_t)g * d + d : NULL, tstride,
                         use_lut ? base + (size_t)g * d + d + qt_stride : NULL);
        }
#pragma omp for schedule(static, 1)
        for (int64_t item = 0; item < n_items; item++) {
            const uint32_t h = (uint32_t)(item / n_chunks), c = (uint32_t)(item % n_chunks);
            const float *base = prep + prep_stride * h;
            sv_head_ctx ctx = {cache, layer, h, d, g, base, base + (size_t)g * d,
                               use_lut ? base + (size_t)g * d + d + qt_stride : NULL,
                               think ? base + (size_t)g * d + d : NULL, cache->keep_topk, tstride};
            float *part = parts + part_stride * (size_t)item;
            float *mx = part, *sum = part + g, *acc = part + 2 * g;
            for (uint32_t i = 0; i < g; i++) { mx[i] = -INFINITY; sum[i] = 0.0f; }
            memset(acc, 0, sizeof(float) * g * d);
            float *sc = acc + (size_t)g * d;
            float *bad = sc + (size_t)g * SV_BLOCK;
            *bad = 0.0f;
            const uint64_t p_end = (c + 1) * chunk_pages < n_pages ? (c + 1) * chunk_pages : n_pages;
            for (uint64_t pi = c * chunk_pages; pi < p_end && *bad == 0.0f; pi++) {
                const sv_page *page = L->heads[h].pages[pi];
                uint64_t kept = 0;
                for (uint32_t t0 = 0; t0 < page->n; t0 += SV_BLOCK) {
                    const uint32_t n = page->n - t0 < SV_BLOCK ? page->n - t0 : SV_BLOCK;
                    if (page->keys == SV_KEYS_SPARK) K->score_spark(&ctx, page, t0, n, &kept, sc);
                    else if (page->keys == SV_KEYS_THINK) K->score_rows(&ctx, page, t0, n, ctx.qt, tstride, ctx.tkeep, sc);
                    else K->score_rows(&ctx, page, t0, n, ctx.qs, d, d, sc);
                    if (K->softmax(sc, n, g, d, mx, sum, acc)) { *bad = 1.0f; break; }
                    if (page->values_pruned) K->accumulate_v_pruned(&ctx, page, t0, n, sc, acc);
                    else K->accumulate_v(&ctx, page, t0, n, sc, acc);
                }
            }
        }
    }

    for (int64_t item = 0; item < n_items; item++) {
        if (parts[part_stride * (size_t)item + part_stride - 1] != 0.0f) {
            free(prep);
            return sv_fail(cache, SPARKV_ERR_OVERFLOW,
                           "attend: layer %u, KV head %u: a score scale * q.k overflows float32 "
                           "(|q.k| beyond 3.4e38, or Inf - Inf); out is unchanged",
                           layer, (uint32_t)(item / n_chunks));
        }
    }

    /* Log-sum-exp merge of the chunks, in chunk order. */
    for (uint32_t h = 0; h < nkv; h++) {
        for (uint32_t i = 0; i < g; i++) {
            float m = -INFINITY;
            for (uint32_t c = 0; c < n_chunks; c++) {
                const float *part = parts + part_stride * ((size_t)h * n_chunks + c);
                if (part[i] > m) m = part[i];
            }
            float *o = merged + ((size_t)h * g + i) * d;
            double total = 0.0;
            double accd[SPARKV_MAX_HEAD_DIM];
            for (uint32_t j = 0; j < d; j++) accd[j] = 0.0;
            for (uint32_t c = 0; c < n_chunks; c++) {
                const float *part = parts + part_stride * ((size_t)h * n_chunks + c);
                if (part[i] == -INFINITY) continue;
                double w = exp((double)part[i] - (double)m);
                total += w * part[g + i];
                const float *acc = part + 2 * g + (size_t)i * d;
                for (uint32_t j = 0; j < d; j++) accd[j] += w * acc[j];
            }
            for (uint32_t j = 0; j < d; j++) o[j] = (float)(accd[j] / total);
        }
    }
    /* A value sum can still overflow float32 (values near 3.4e38): fail rather than return Inf. */
    const size_t n_out = (size_t)cache->shape.n_q_heads * d;
    for (size_t i = 0; i < n_out; i++) {
        if (!isfinite(merged[i])) {
            free(prep);
            return sv_fail(cache, SPARKV_ERR_OVERFLOW,
                           "attend: layer %u, query head %zu: the weighted value sum overflows float32; out is "
                           "unchanged", layer, i / d);
        }
    }
    memcpy(out, merged, n_out * sizeof(float));
    free(prep);
    return SPARKV_OK;
}
