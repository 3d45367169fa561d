/* Per-token channel selection. Ties always break toward the lower channel index. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* The k-th largest (0-based) of a[0..n): quickselect with a three-way partition, so runs of
 * equal saliencies (ties, all-zero keys) cost one pass. Reorders a. */
double sv_kth_largest(double *a, uint64_t n, uint64_t k) {
    int64_t l = 0, r = (int64_t)n - 1, kk = (int64_t)k;
    while (r > l) {
        double pivot = a[l + (r - l) / 2];
        int64_t lt = l, gt = r, x = l;
        while (x <= gt) {
            double v = a[x];
            if (v > pivot) { a[x] = a[lt]; a[lt] = v; lt++; x++; }
            else if (v < pivot) { a[x] = a[gt]; a[gt] = v; gt--; }
            else x++;
        }
        /* a[l, lt) > pivot, a[lt, gt] == pivot, a(gt, r] < pivot */
        if (kk < lt) r = lt - 1;
        else if (kk > gt) l = gt + 1;
        else return pivot;
    }
    return a[l];
}

void sv_select_top(const double *s, uint64_t n, uint64_t keep, double *scratch, uint64_t *out) {
    if (keep >= n) { for (uint64_t i = 0; i < n; i++) out[i] = i; return; }
    if (keep == 0) return;
    memcpy(scratch, s, n * sizeof(double));
    double v = sv_kth_largest(scratch, n, keep - 1);
    uint64_t above = 0, m = 0;
    for (uint64_t i = 0; i < n; i++) above += s[i] > v;
    uint64_t ties = keep - above;
    for (uint64_t i = 0; i < n; i++) {
        int take = s[i] > v;
        if (!take && s[i] == v && ties) { take = 1; ties--; }
        if (take) out[m++] = i;
    }
}

/* Top-`keep` channels of one token in about 2D operations, exactly: the float exponent of each
 * saliency is a monotone bucket, so every channel in a bucket above the one where the count
 * crosses `keep` is kept outright and only that bucket's channels (a handful for real keys) are
 * compared exactly, in double, by (saliency desc, index asc). */
uint32_t sv_select_topk(const double *s, uint32_t d, uint32_t keep, uint8_t *mask, double *scratch) {
    (void)scratch;
    memset(mask, 0, d / 8);
    if (keep >= d) { memset(mask, 0xff, d / 8); return d; }
    if (keep == 0) return 0;
    uint16_t bucket[256];
    uint8_t expo[SPARKV_MAX_HEAD_DIM];
    memset(bucket, 0, sizeof(bucket));
    uint32_t top = 0;
    for (uint32_t j = 0; j < d; j++) {
        float f = (float)s[j]; /* s >= 0, so the float's top byte past the sign is its exponent */
        uint32_t bits;
        memcpy(&bits, &f, 4);
        expo[j] = (uint8_t)(bits >> 23);
        bucket[expo[j]]++;
        if (expo[j] > top) top = expo[j];
    }
    uint32_t above = 0, e = top;
    while (above + bucket[e] < keep) above += bucket[e--];
    uint32_t cand[SPARKV_MAX_HEAD_DIM], nc = 0;
    for (uint32_t j = 0; j < d; j++) { /* branch-free: the pattern is random per token */
        mask[j >> 3] |= (uint8_t)((uint32_t)(expo[j] > e) << (j & 7));
        cand[nc] = j;
        nc += expo[j] == e;
    }
    uint32_t need = keep - above;
    if (need == nc) {
        for (uint32_t i = 0; i < nc; i++) mask[cand[i] >> 3] |= (uint8_t)(1u << (cand[i] & 7));
        return keep;
    }
    /* partial selection sort of the candidates (in ascending index order, so ">" keeps the lower
     * index on ties) */
    for (uint32_t r = 0; r < need; r++) {
        uint32_t best = r;
        for (uint32_t i = r + 1; i < nc; i++)
            if (s[cand[i]] > s[cand[best]]) best = i;
        uint32_t j = cand[best];
        for (uint32_t i = best; i > r; i--) cand[i] = cand[i - 1]; /* keep the rest in index order */
        cand[r] = j;
        mask[j >> 3] |= (uint8_t)(1u << (j & 7));
    }
    return keep;
}

typedef struct { double s; uint32_t j; } ranked;

static int by_saliency_desc(const void *pa, const void *pb) {
    const ranked *a = (const ranked *)pa, *b = (const ranked *)pb;
    if (a->s > b->s) return -1;
    if (a->s < b->s) return 1;
    return a->j < b->j ? -1 : (a->j > b->j);
}

uint32_t sv_select_cumulative(const double *s, uint32_t d, double p, uint32_t min_keep, uint32_t max_keep,
                              uint8_t *mask, double *scratch) {
    (void)scratch;
    ranked order[SPARKV_MAX_HEAD_DIM];
    double total = 0.0;
    for (uint32_t j = 0; j < d; j++) { order[j].s = s[j]; order[j].j = j; total += s[j]; }
    qsort(order, d, sizeof(ranked), by_saliency_desc);
    double target = p * total;
    uint32_t keep = d;
    double cum = 0.0;
    for (uint32_t n = 0; n <= d; n++) {
        if (cum >= target) { keep = n; break; }
        if (n < d) cum += order[n].s;
    }
    if (keep < min_keep) keep = min_keep;
    if (keep > max_keep) keep = max_keep;
    memset(mask, 0, d / 8);
    for (uint32_t n = 0; n < keep; n++) mask[order[n].j >> 3] |= (uint8_t)(1u << (order[n].j & 7));
    return keep;
}
