/* Per-token channel selection. Ties always break toward the lower channel index. */
#include "internal.h"
#include "prefill_kernels.h"

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

/* Number of x[j] >= v: a flat loop the compiler vectorizes (signed 16-bit compares exist on
 * every x86-64 SIMD level; the values stay below 2^15). */
static uint32_t count_at_least(const int16_t *x, uint32_t n, uint32_t v) {
    const int16_t w = (int16_t)v;
    uint32_t c = 0;
    for (uint32_t j = 0; j < n; j++) c += x[j] >= w;
    return c;
}

/* The largest v < 2^nbits with count(x >= v) >= keep, built bit by bit from the top. */
static uint32_t threshold(const int16_t *x, uint32_t n, uint32_t keep, uint32_t nbits) {
    uint32_t v = 0;
    for (int b = (int)nbits - 1; b >= 0; b--)
        if (count_at_least(x, n, v | (1u << b)) >= keep) v |= 1u << b;
    return v;
}

static uint32_t float_bits(double s) {
    float f = (float)s;
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return bits;
}

/* Top-`keep` channels of one token, exactly, in a few vectorizable passes over D: the float
 * rounding of each saliency is monotone, so a radix select on its bits — the exponent over all
 * channels, then the top 8 mantissa bits over the few channels in the threshold exponent — keeps
 * every channel above the threshold bucket outright; only that bucket's channels (usually one or
 * two) are compared in double by (saliency desc, index asc). */
uint32_t sv_select_topk(const double *s, uint32_t d, uint32_t keep, uint8_t *mask, double *scratch) {
    (void)scratch;
    if (keep >= d) { memset(mask, 0xff, d / 8); return d; }
    memset(mask, 0, d / 8);
    if (keep == 0) return 0;
    int16_t hi[SPARKV_MAX_HEAD_DIM] = {0}, lo[SPARKV_MAX_HEAD_DIM] = {0}; /* zeroed only to quiet gcc */
    for (uint32_t j = 0; j < d; j++) hi[j] = (int16_t)(float_bits(s[j]) >> 23); /* s >= 0 */
    const uint32_t e = threshold(hi, d, keep, 8);
    uint32_t cand[SPARKV_MAX_HEAD_DIM], nc = 0, above = 0;
    for (uint32_t b = 0; b < d / 8; b++) {
        /* the byte is assembled in a register: read-modify-writes of one byte would serialize */
        uint32_t byte = 0;
        for (uint32_t i = 0; i < 8; i++) {
            const uint32_t j = 8 * b + i, take = hi[j] > (int16_t)e;
            byte |= take << i;
            above += take;
            cand[nc] = j;
            nc += hi[j] == (int16_t)e;
        }
        mask[b] = (uint8_t)byte;
    }
    uint32_t need = keep - above;
    if (nc > 8 && need < nc) {
        /* level 2 on the candidates only */
        for (uint32_t i = 0; i < nc; i++) lo[i] = (int16_t)((float_bits(s[cand[i]]) >> 15) & 0xFFu);
        const uint32_t l = threshold(lo, nc, need, 8);
        uint32_t m = 0;
        for (uint32_t i = 0; i < nc; i++) {
            const uint32_t j = cand[i];
            if (lo[i] > (int16_t)l) { mask[j >> 3] |= (uint8_t)(1u << (j & 7)); need--; }
            cand[m] = j;
            m += lo[i] == (int16_t)l;
        }
        nc = m;
    }
    /* partial selection sort of the few candidates (in ascending index order, so ">" keeps the
     * lower index on ties) */
    for (uint32_t r = 0; r < need; r++) {
        uint32_t best = r;
        for (uint32_t i = r + 1; i < nc; i++)
            if (s[cand[i]] > s[cand[best]]) best = i;
        const uint32_t j = cand[best];
        for (uint32_t i = best; i > r; i--) cand[i] = cand[i - 1]; /* the rest stay in index order */
        cand[r] = j;
        mask[j >> 3] |= (uint8_t)(1u << (j & 7));
    }
    return keep;
}

void sv_select_topk_portable(const double *s, uint32_t n, uint32_t d, uint32_t keep, uint8_t *mask) {
    for (uint32_t t = 0; t < n; t++) sv_select_topk(s + (size_t)t * d, d, keep, mask + (size_t)t * (d / 8), NULL);
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
