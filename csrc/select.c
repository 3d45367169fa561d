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

uint32_t sv_select_topk(const double *s, uint32_t d, uint32_t keep, uint8_t *mask, double *scratch) {
    memset(mask, 0, d / 8);
    if (keep >= d) { memset(mask, 0xff, d / 8); return d; }
    if (keep == 0) return 0;
    memcpy(scratch, s, d * sizeof(double));
    double v = sv_kth_largest(scratch, d, keep - 1);
    uint32_t above = 0;
    for (uint32_t j = 0; j < d; j++) above += s[j] > v;
    uint32_t ties = keep - above; /* channels equal to v still to keep, lowest index first */
    for (uint32_t j = 0; j < d; j++) {
        int take = s[j] > v;
        if (!take && s[j] == v && ties) { take = 1; ties--; }
        if (take) mask[j >> 3] |= (uint8_t)(1u << (j & 7));
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
