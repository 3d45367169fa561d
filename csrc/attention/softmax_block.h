/* The online-softmax update of one block of scores, shared by every ISA: each attend_*.c includes
 * this file under its own target options (after defining SV_EXP_BLOCK, its exp kernel), so the
 * compiler vectorizes the same C for each ISA. Loops are written over fixed 16-lane partials so
 * they vectorize without reassociating a reduction.
 *
 * sc[i * SV_BLOCK + t], t < n: scores of query head i; on return, the softmax weights
 * exp(score - running max). Returns 1, changing nothing, if a score is NaN or Inf. mx, sum: running max and sum per head; acc[i * d ..]: the weighted
 * value sum, rescaled whenever the max grows. */
#ifndef SV_EXP_BLOCK
#error "define SV_EXP_BLOCK before including softmax_block.h"
#endif

#include <math.h>
#include <string.h>

static int sv_online_softmax(float *sc, uint32_t n, uint32_t g, uint32_t d, float *mx, float *sum, float *acc) {
    /* Scores are finite whenever q.k fits float32; one that is not (overflow, Inf - Inf) is
     * reported, never turned into a weight: every ISA's exp would map it differently. */
    uint32_t bad = 0;
    for (uint32_t i = 0; i < g; i++) {
        const float *s = sc + (size_t)i * SV_BLOCK;
        for (uint32_t t = 0; t < n; t++) {
            uint32_t bits;
            memcpy(&bits, &s[t], 4);
            bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
        }
    }
    if (bad) return 1;
    for (uint32_t i = 0; i < g; i++) {
        float *s = sc + (size_t)i * SV_BLOCK;
        for (uint32_t t = n; t < SV_BLOCK; t++) s[t] = -INFINITY; /* exp gives 0 */
        float lane[16];
        for (uint32_t l = 0; l < 16; l++) lane[l] = s[l] > s[l + 16] ? s[l] : s[l + 16];
        float bm = lane[0];
        for (uint32_t l = 1; l < 16; l++) bm = lane[l] > bm ? lane[l] : bm;
        if (bm > mx[i]) sv_softmax_raise_max(&mx[i], &sum[i], acc + (size_t)i * d, d, bm);
        const float m = mx[i];
        for (uint32_t t = 0; t < SV_BLOCK; t++) s[t] -= m;
    }
    SV_EXP_BLOCK(sc, g * SV_BLOCK);
    for (uint32_t i = 0; i < g; i++) {
        const float *s = sc + (size_t)i * SV_BLOCK;
        float lane[16];
        for (uint32_t l = 0; l < 16; l++) lane[l] = s[l] + s[l + 16];
        for (uint32_t l = 0; l < 8; l++) lane[l] += lane[l + 8];
        for (uint32_t l = 0; l < 4; l++) lane[l] += lane[l + 4];
        sum[i] += (lane[0] + lane[2]) + (lane[1] + lane[3]);
    }
    return 0;
}
