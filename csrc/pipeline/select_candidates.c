/* The last step of an exact top-T selection: the threshold bucket. The SIMD selections find the
 * bucket of 16-bit key prefixes that holds the T-th largest saliency and keep every channel above
 * it outright; the channels inside it (usually one to three) are ranked here on their full bits. */
#include "prefill_kernels.h"

/* Few candidates: each one's rank is the number of candidates that beat it (larger, or equal
 * with a lower index); the `need` of rank < need are kept. */
static void by_rank(const uint64_t *bits, const uint32_t *index, uint32_t n, uint32_t need, uint8_t *mask) {
    for (uint32_t i = 0; i < n; i++) {
        uint32_t rank = 0;
        for (uint32_t m = 0; m < n; m++) rank += bits[m] > bits[i] || (bits[m] == bits[i] && m < i);
        if (rank < need) mask[index[i] >> 3] |= (uint8_t)(1u << (index[i] & 7));
    }
}

/* Many candidates (long runs of exact ties, such as zero saliencies): the largest threshold v with
 * at least `need` candidates >= v, built bit by bit; everything above v is kept, then the
 * lowest-index candidates equal to v until `need` are kept. */
static void by_threshold(const uint64_t *bits, const uint32_t *index, uint32_t n, uint32_t need, uint8_t *mask) {
    uint64_t v = 0;
    for (int b = 63; b >= 0; b--) {
        const uint64_t t = v | (uint64_t)1 << b;
        uint32_t count = 0;
        for (uint32_t i = 0; i < n; i++) count += bits[i] >= t;
        if (count >= need) v = t;
    }
    uint32_t above = 0;
    for (uint32_t i = 0; i < n; i++) above += bits[i] > v;
    uint32_t ties = need - above;
    for (uint32_t i = 0; i < n; i++) {
        const int take = bits[i] > v || (bits[i] == v && ties && ties--);
        if (take) mask[index[i] >> 3] |= (uint8_t)(1u << (index[i] & 7));
    }
}

void sv_select_candidates(const uint64_t *bits, const uint32_t *index, uint32_t n, uint32_t need, uint8_t *mask) {
    if (need == 0) return;
    if (n <= 12) by_rank(bits, index, n, need, mask);
    else by_threshold(bits, index, n, need, mask);
}
