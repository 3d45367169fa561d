/* Decode attention over the compact cache: one query token, every stored token of a layer.
 *
 * Work is split into (KV head, token chunk) items so that a layer with fewer KV heads than threads
 * still uses every core (split-K). Chunk boundaries depend only on the number of pages, never on
 * the thread count, and partial results are merged in a fixed order with a log-sum-exp merge:
 * the output is bit-identical for any thread count. */
#include "internal.h"
#include "attend.h"

#include <math.h>
#include <stdio.h>
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

static void build_lut(const float *qs, const float *rq, uint32_t g, uint32_t d, float *lut);

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
    if (lut) build_lut(qs, rq, g, d, lut);
}

/* lut[i][b][x] = sum over set bits k of x of qs_i[8b + k] * rq[8b + k]: built by adding the
 * lowest bit to the entry without it, so each entry costs one addition. */
static void build_lut(const float *qs, const float *rq, uint32_t g, uint32_t d, float *lut) {
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

/* One sequence's attention: its layer, kernels, chunking and scratch. sparkv_attend runs one job,
 * sparkv_attend_batch many in one parallel region; either way a job's items and merge are the same,
 * so a sequence's output does not depend on what it was batched with. */
typedef struct {
    sparkv_cache *cache;
    uint32_t layer, d, g, nkv, tstride, n_chunks;
    const sv_layer *L;
    const sv_kernels *K;
    const float *q;
    float scale;
    int use_lut, think;
    uint64_t n_pages, chunk_pages;
    size_t part_stride, qt_stride, prep_stride, lut_stride;
    size_t norm_stride;           /* per item: rq and LUT of aged SparK pages' own norms (0: none) */
    float *prep, *parts, *merged, *norms; /* one allocation (prep) */
    int64_t n_items;
} attend_job;

/* Checks the call and sizes the job; nothing is written to the cache but its error. */
static sparkv_status job_setup(attend_job *j, sparkv_cache *cache, uint32_t layer, const float *q) {
    memset(j, 0, sizeof *j);
    if (layer >= cache->shape.n_layers)
        return sv_fail(cache, SPARKV_ERR_LAYER, "attend: layer %u is out of range (n_layers = %u)", layer,
                       cache->shape.n_layers);
    const sv_layer *L = &cache->layers[layer];
    if (L->n_tokens == 0) return sv_fail(cache, SPARKV_ERR_EMPTY, "attend: layer %u holds no token", layer);
    const uint32_t d = cache->shape.head_dim, g = cache->group, nkv = cache->shape.n_kv_heads;
    sparkv_status st = sv_check_finite(cache, "queries", q, cache->shape.n_q_heads, 1, d);
    if (st != SPARKV_OK) return st;
    j->cache = cache;
    j->layer = layer;
    j->L = L;
    j->q = q;
    j->d = d;
    j->g = g;
    j->nkv = nkv;
    j->scale = cache->policy.attention_scale > 0.0f ? cache->policy.attention_scale : (float)(1.0 / sqrt((double)d));
    j->K = kernels_for(cache->kernel);
    j->use_lut = L->prompt_keys == SV_KEYS_SPARK && cache->policy.recovery == SPARKV_RECOVER_MEAN &&
                 L->n_prompt > 0 && j->K->uses_lut(d, g);
    j->think = L->prompt_keys == SV_KEYS_THINK && L->n_prompt > 0;
    j->tstride = j->think ? (cache->keep_topk + 15u) & ~15u : 0;
    j->n_pages = L->heads[0].n_pages;
    j->chunk_pages = (j->n_pages + SV_MAX_CHUNKS - 1) / SV_MAX_CHUNKS;
    j->n_chunks = (uint32_t)((j->n_pages + j->chunk_pages - 1) / j->chunk_pages);
    /* per item: max[g], sum[g], acc[g][d], block scores[g][SV_BLOCK], and one float whose bits
     * flag a non-finite score */
    j->part_stride = (size_t)g * (d + 2 + SV_BLOCK) + 1;
    j->lut_stride = j->use_lut ? (size_t)g * (d / 8) * 256 : 0;
    j->qt_stride = (size_t)g * j->tstride;
    j->prep_stride = (size_t)g * d + d + j->qt_stride + j->lut_stride;
    j->n_items = (int64_t)nkv * j->n_chunks;
    j->norm_stride = L->n_aged && L->prompt_keys == SV_KEYS_SPARK ? d + j->lut_stride : 0;
    /* the merged result is written to `merged` and copied to `out` only when it is all finite */
    const size_t n_out = (size_t)cache->shape.n_q_heads * d;
    j->prep = (float *)malloc(sizeof(float) * (j->prep_stride * nkv + j->part_stride * (size_t)j->n_items + n_out +
                                               j->norm_stride * (size_t)j->n_items));
    if (!j->prep) return sv_fail(cache, SPARKV_ERR_OUT_OF_MEMORY, "attend: cannot allocate scratch");
    j->parts = j->prep + j->prep_stride * nkv;
    j->merged = j->parts + j->part_stride * (size_t)j->n_items;
    j->norms = j->merged + n_out;
    return SPARKV_OK;
}

static void job_prepare_head(const attend_job *j, uint32_t h) {
    float *base = j->prep + j->prep_stride * h;
    const size_t gd = (size_t)j->g * j->d;
    prepare_head(j->cache, &j->L->heads[h], j->q, j->scale, h, base, base + gd, j->think ? base + gd + j->d : NULL,
                 j->tstride, j->use_lut ? base + gd + j->d + j->qt_stride : NULL);
}

/* One (KV head, chunk) item: online softmax over the chunk's pages into its part. */
static void job_item(const attend_job *j, int64_t item) {
    const uint32_t d = j->d, g = j->g;
    const uint32_t h = (uint32_t)(item / j->n_chunks), c = (uint32_t)(item % j->n_chunks);
    const float *base = j->prep + j->prep_stride * h;
    const size_t gd = (size_t)g * d;
    sv_head_ctx ctx = {j->cache, j->layer, h, d, g, base, base + gd, j->use_lut ? base + gd + d + j->qt_stride : NULL,
                       j->think ? base + gd + d : NULL, j->cache->keep_topk, j->tstride};
    float *part = j->parts + j->part_stride * (size_t)item;
    float *mx = part, *sum = part + g, *acc = part + 2 * g;
    for (uint32_t i = 0; i < g; i++) { mx[i] = -INFINITY; sum[i] = 0.0f; }
    memset(acc, 0, sizeof(float) * gd);
    float *sc = acc + gd;
    float *bad = sc + (size_t)g * SV_BLOCK;
    *bad = 0.0f;
    const sv_kernels *K = j->K;
    const float *head_rq = ctx.rq, *head_lut = ctx.lut, *norms_of = NULL; /* NULL: the head's norms */
    float *page_rq = j->norms + j->norm_stride * (size_t)item, *page_lut = page_rq + d;
    const uint64_t p_end = (c + 1) * j->chunk_pages < j->n_pages ? (c + 1) * j->chunk_pages : j->n_pages;
    for (uint64_t pi = c * j->chunk_pages; pi < p_end && *bad == 0.0f; pi++) {
        const sv_page *page = j->L->heads[h].pages[pi];
        if (page->keys == SV_KEYS_SPARK && page->qn != norms_of) {
            /* an aged decode page recovers with its own norms; prompt pages with the head's */
            norms_of = page->qn;
            if (page->qn) {
                sv_recip_sqrt_qn(page->qn, page->qn[d], d, page_rq);
                if (j->use_lut) build_lut(ctx.qs, page_rq, g, d, page_lut);
                ctx.rq = page_rq;
                ctx.lut = j->use_lut ? page_lut : NULL;
            } else {
                ctx.rq = head_rq;
                ctx.lut = head_lut;
            }
        }
        uint64_t kept = 0;
        for (uint32_t t0 = 0; t0 < page->n; t0 += SV_BLOCK) {
            const uint32_t n = page->n - t0 < SV_BLOCK ? page->n - t0 : SV_BLOCK;
            if (page->keys == SV_KEYS_SPARK) K->score_spark(&ctx, page, t0, n, &kept, sc);
            else if (page->keys == SV_KEYS_THINK) K->score_rows(&ctx, page, t0, n, ctx.qt, j->tstride, ctx.tkeep, sc);
            else K->score_rows(&ctx, page, t0, n, ctx.qs, d, d, sc);
            if (K->softmax(sc, n, g, d, mx, sum, acc)) { *bad = 1.0f; break; }
            if (page->values_pruned) K->accumulate_v_pruned(&ctx, page, t0, n, sc, acc);
            else K->accumulate_v(&ctx, page, t0, n, sc, acc);
        }
    }
}

/* Overflow checks and the log-sum-exp merge of the chunks, in chunk order, into j->merged. */
static sparkv_status job_finish(const attend_job *j) {
    const uint32_t d = j->d, g = j->g, n_chunks = j->n_chunks;
    for (int64_t item = 0; item < j->n_items; item++) {
        if (j->parts[j->part_stride * (size_t)item + j->part_stride - 1] != 0.0f)
            return sv_fail(j->cache, SPARKV_ERR_OVERFLOW,
                           "attend: layer %u, KV head %u: a score scale * q.k overflows float32 "
                           "(|q.k| beyond 3.4e38, or Inf - Inf); out is unchanged",
                           j->layer, (uint32_t)(item / n_chunks));
    }
    for (uint32_t h = 0; h < j->nkv; h++) {
        for (uint32_t i = 0; i < g; i++) {
            float m = -INFINITY;
            for (uint32_t c = 0; c < n_chunks; c++) {
                const float *part = j->parts + j->part_stride * ((size_t)h * n_chunks + c);
                if (part[i] > m) m = part[i];
            }
            float *o = j->merged + ((size_t)h * g + i) * d;
            double total = 0.0;
            double accd[SPARKV_MAX_HEAD_DIM];
            for (uint32_t x = 0; x < d; x++) accd[x] = 0.0;
            for (uint32_t c = 0; c < n_chunks; c++) {
                const float *part = j->parts + j->part_stride * ((size_t)h * n_chunks + c);
                if (part[i] == -INFINITY) continue;
                double w = exp((double)part[i] - (double)m);
                total += w * part[g + i];
                const float *acc = part + 2 * g + (size_t)i * d;
                for (uint32_t x = 0; x < d; x++) accd[x] += w * acc[x];
            }
            for (uint32_t x = 0; x < d; x++) o[x] = (float)(accd[x] / total);
        }
    }
    /* A value sum can still overflow float32 (values near 3.4e38): fail rather than return Inf. */
    const size_t n_out = (size_t)j->cache->shape.n_q_heads * d;
    for (size_t i = 0; i < n_out; i++) {
        if (!isfinite(j->merged[i]))
            return sv_fail(j->cache, SPARKV_ERR_OVERFLOW,
                           "attend: layer %u, query head %zu: the weighted value sum overflows float32; out is "
                           "unchanged", j->layer, i / d);
    }
    return SPARKV_OK;
}

/* The job holding flat index x, given each job's first flat index (first[0] = 0, ascending,
 * first[n_jobs] = the total). */
static uint32_t job_of(const int64_t *first, uint32_t n_jobs, int64_t x) {
    uint32_t lo = 0, hi = n_jobs - 1;
    while (lo < hi) {
        const uint32_t mid = (lo + hi + 1) / 2;
        if (first[mid] <= x) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Every job's head preparations, then every job's items, in one parallel region. head_first /
 * item_first: n_jobs + 1 prefix sums of the jobs' KV heads and items. */
static void run_jobs(const attend_job *jobs, uint32_t n_jobs, const int64_t *head_first, const int64_t *item_first,
                     int threads) {
    (void)threads; /* read only by the OpenMP pragma */
    const int64_t n_heads = head_first[n_jobs], n_items = item_first[n_jobs];
    /* schedule(static): clang 21's dynamic schedules need a newer libomp than Debian's. */
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
    {
#pragma omp for schedule(static)
        for (int64_t x = 0; x < n_heads; x++) {
            const uint32_t j = job_of(head_first, n_jobs, x);
            job_prepare_head(&jobs[j], (uint32_t)(x - head_first[j]));
        }
#pragma omp for schedule(static, 1)
        for (int64_t x = 0; x < n_items; x++) {
            const uint32_t j = job_of(item_first, n_jobs, x);
            job_item(&jobs[j], x - item_first[j]);
        }
    }
}

sparkv_status sparkv_attend(sparkv_cache *cache, uint32_t layer, const float *q, float *out) {
    if (!cache) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "attend: cache is NULL");
    sv_clear_error(cache);
    if (!q || !out) return sv_fail(cache, SPARKV_ERR_NULL_POINTER, "attend: %s is NULL", q ? "out" : "q");
    attend_job job;
    sparkv_status st = job_setup(&job, cache, layer, q);
    if (st != SPARKV_OK) return st;
    const int64_t heads[2] = {0, job.nkv}, items[2] = {0, job.n_items};
    run_jobs(&job, 1, heads, items, cache->policy.threads);
    st = job_finish(&job);
    if (st == SPARKV_OK) memcpy(out, job.merged, (size_t)cache->shape.n_q_heads * job.d * sizeof(float));
    free(job.prep);
    return st;
}

sparkv_status sparkv_attend_batch(sparkv_cache *const *caches, uint32_t n_caches, uint32_t layer, const float *q,
                                  float *out) {
    sv_clear_error(NULL);
    if (!caches || !q || !out)
        return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "attend_batch: %s is NULL", !caches ? "caches" : !q ? "q" : "out");
    if (n_caches == 0) return sv_fail(NULL, SPARKV_ERR_INVALID_SHAPE, "attend_batch: n_caches is 0");
    for (uint32_t i = 0; i < n_caches; i++)
        if (!caches[i]) return sv_fail(NULL, SPARKV_ERR_NULL_POINTER, "attend_batch: caches[%u] is NULL", i);
    const sparkv_shape *s0 = &caches[0]->shape;
    for (uint32_t i = 1; i < n_caches; i++) {
        const sparkv_shape *s = &caches[i]->shape;
        if (s->n_q_heads != s0->n_q_heads || s->n_kv_heads != s0->n_kv_heads || s->head_dim != s0->head_dim)
            return sv_fail(NULL, SPARKV_ERR_INVALID_SHAPE,
                           "attend_batch: caches[%u] has %u query heads, %u KV heads, head_dim %u; caches[0] has "
                           "%u, %u, %u", i, s->n_q_heads, s->n_kv_heads, s->head_dim, s0->n_q_heads, s0->n_kv_heads,
                           s0->head_dim);
    }
    const size_t per = (size_t)s0->n_q_heads * s0->head_dim;
    attend_job *jobs = (attend_job *)calloc(n_caches, sizeof(attend_job));
    int64_t *firsts = (int64_t *)malloc(sizeof(int64_t) * 2 * ((size_t)n_caches + 1));
    if (!jobs || !firsts) {
        free(jobs); free(firsts);
        return sv_fail(NULL, SPARKV_ERR_OUT_OF_MEMORY, "attend_batch: cannot allocate scratch");
    }
    int64_t *head_first = firsts, *item_first = firsts + n_caches + 1;
    sparkv_status st = SPARKV_OK;
    uint32_t failed = 0, set_up = 0;
    for (; set_up < n_caches && st == SPARKV_OK; set_up++) {
        sv_clear_error(caches[set_up]);
        st = job_setup(&jobs[set_up], caches[set_up], layer, q + per * set_up);
        if (st != SPARKV_OK) failed = set_up;
    }
    if (st == SPARKV_OK) {
        head_first[0] = item_first[0] = 0;
        for (uint32_t i = 0; i < n_caches; i++) {
            head_first[i + 1] = head_first[i] + jobs[i].nkv;
            item_first[i + 1] = item_first[i] + jobs[i].n_items;
        }
        run_jobs(jobs, n_caches, head_first, item_first, caches[0]->policy.threads);
        for (uint32_t i = 0; i < n_caches && st == SPARKV_OK; i++) {
            st = job_finish(&jobs[i]);
            if (st != SPARKV_OK) failed = i;
        }
    }
    if (st == SPARKV_OK) {
        for (uint32_t i = 0; i < n_caches; i++) memcpy(out + per * i, jobs[i].merged, per * sizeof(float));
    } else {
        char detail[SPARKV_ERROR_LEN]; /* the cache's message lives in the buffer sv_fail writes */
        snprintf(detail, sizeof detail, "%s", sparkv_last_error(caches[failed]));
        sv_fail(NULL, st, "attend_batch: sequence %u: %s", failed, detail);
    }
    for (uint32_t i = 0; i < n_caches; i++) free(jobs[i].prep);
    free(jobs); free(firsts);
    return st;
}
