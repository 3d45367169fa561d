/* Decode-time compression: appended tokens are stored dense (append.c); once a full page of them
 * has `decode_recent` newer tokens after it, that page is re-encoded under the layer's key and
 * value policy by the prefill's page encoder (page_encode.c), from its stored values. SparK pages
 * get window-query norms of their own, from the last `window` decode queries passed to
 * sparkv_append_step (the prompt's norms until one is passed). The newest tokens stay dense, so
 * attention to them is exact. */
#include "internal.h"
#include "page_encode.h"

#include <stdlib.h>
#include <string.h>

/* Whether decode tokens of this layer are compressed at all: only a prefilled layer has the
 * policy's key mode (and ThinK channel set) to encode them with, and re-encoding dense keys
 * without value pruning would store the same bytes. */
static int layer_ages(const sparkv_cache *c, const sv_layer *L) {
    return c->policy.compress_decode && L->prefilled &&
           (L->prompt_keys != SV_KEYS_DENSE || c->keep_values < c->shape.head_dim);
}

uint64_t sv_qring_bytes(const sparkv_cache *c) {
    return (uint64_t)c->shape.n_kv_heads * c->policy.window * c->shape.head_dim * sizeof(double);
}

int sv_decode_wants_queries(const sparkv_cache *c, uint32_t layer) {
    const sv_layer *L = &c->layers[layer];
    return layer_ages(c, L) && L->prompt_keys == SV_KEYS_SPARK; /* only SparK's saliency reads norms */
}

void sv_decode_observe(sparkv_cache *c, uint32_t layer, const float *q, double *ring) {
    sv_layer *L = &c->layers[layer];
    const uint32_t d = c->shape.head_dim, w = c->policy.window, g = c->group;
    if (!L->qring) L->qring = ring;
    const sv_rows rows = {q, SPARKV_DTYPE_F32}; /* [n_q][1][D]: a window of one row */
    for (uint32_t h = 0; h < c->shape.n_kv_heads; h++)
        sv_group_mean(rows, 1, 0, g, h * g, d, L->qring + ((size_t)h * w + L->qring_next) * d);
    L->qring_next = (L->qring_next + 1) % w;
    if (L->qring_n < w) L->qring_n++;
}

/* Norms (D floats, then their mean c) of KV head h from the ring: the sum of squared group means,
 * oldest query first, as sv_window_qnorm adds them. */
static void ring_norms(const sparkv_cache *c, const sv_layer *L, uint32_t h, float *out) {
    const uint32_t d = c->shape.head_dim, w = c->policy.window, n = L->qring_n;
    const uint32_t oldest = n < w ? 0 : L->qring_next;
    double acc[SPARKV_MAX_HEAD_DIM];
    for (uint32_t j = 0; j < d; j++) acc[j] = 0.0;
    for (uint32_t k = 0; k < n; k++) {
        const double *m = L->qring + ((size_t)h * w + (oldest + k) % w) * d;
        for (uint32_t j = 0; j < d; j++) acc[j] += m[j] * m[j];
    }
    sv_qnorm_finish(acc, d, out, &out[d]);
}

/* Re-encodes page `pi` of every head; 0, or -1 (out of memory or a statistic beyond fp16: the
 * page stays dense, which is exact). */
static int age_page(sparkv_cache *c, sv_layer *L, uint64_t pi) {
    const uint32_t d = c->shape.head_dim, nkv = c->shape.n_kv_heads, n = SPARKV_PAGE_TOKENS;
    const sparkv_precision kp = c->policy.key_precision, vp = c->policy.value_precision;
    const size_t qg = c->policy.quant_group;
    float *keys = (float *)malloc(sizeof(float) * (size_t)n * d * 2);
    uint64_t *rows = (uint64_t *)malloc(sizeof(uint64_t) * n);
    sv_page **fresh = (sv_page **)calloc(nkv, sizeof(sv_page *));
    int failed = !keys || !rows || !fresh;
    for (uint32_t t = 0; !failed && t < n; t++) rows[t] = t;
    for (uint32_t h = 0; h < nkv && !failed; h++) {
        const sv_head *hs = &L->heads[h];
        const sv_page *old = hs->pages[pi];
        float *values = keys + (size_t)n * d;
        for (uint32_t t = 0; t < n; t++) {
            sv_load_values(keys + (size_t)t * d, (const uint8_t *)old->k + (size_t)t * sv_row_bytes(kp, d),
                           old->kscale ? old->kscale + (size_t)t * c->kgroups : NULL, 1, kp, d, qg);
            sv_load_values(values + (size_t)t * d, (const uint8_t *)old->v + (size_t)t * sv_row_bytes(vp, d),
                           old->vscale ? old->vscale + t : NULL, old->cap, vp, d, qg);
        }
        float *qn = NULL;
        if (L->prompt_keys == SV_KEYS_SPARK) {
            qn = (float *)malloc(sizeof(float) * (d + 1));
            if (!qn) { failed = 1; break; }
            if (L->qring_n) {
                ring_norms(c, L, h, qn);
            } else {
                memcpy(qn, hs->qn, d * sizeof(float));
                qn[d] = hs->c;
            }
        }
        const sv_encode_input in = {{keys, SPARKV_DTYPE_F32}, {values, SPARKV_DTYPE_F32}, rows, qn,
                                    qn ? qn[d] : 1.0f, hs->think_mask};
        fresh[h] = sv_encode_page(c, &in, 0, n, NULL);
        if (!fresh[h]) { free(qn); failed = 1; break; }
        fresh[h]->qn = qn;
        fresh[h]->first = old->first;
        if (sv_page_first_overflow(c, fresh[h]) < n) failed = 1;
    }
    if (!failed) {
        for (uint32_t h = 0; h < nkv; h++) {
            sv_page_free(L->heads[h].pages[pi]);
            L->heads[h].pages[pi] = fresh[h];
        }
    } else if (fresh) {
        for (uint32_t h = 0; h < nkv; h++) sv_page_free(fresh[h]);
    }
    free(keys); free(rows); free(fresh);
    return failed ? -1 : 0;
}

void sv_decode_age(sparkv_cache *c, uint32_t layer) {
    sv_layer *L = &c->layers[layer];
    if (!layer_ages(c, L)) return;
    const sv_head *h0 = &L->heads[0];
    while (L->next_age < h0->n_pages) {
        const sv_page *p = h0->pages[L->next_age];
        /* a page ages when full and followed by decode_recent newer tokens */
        if (p->n < SPARKV_PAGE_TOKENS || L->n_tokens - (p->first + p->n) < c->policy.decode_recent) break;
        if (age_page(c, L, L->next_age) == 0) L->n_aged++;
        L->next_age++;
    }
}
