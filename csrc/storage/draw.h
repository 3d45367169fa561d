/* The sampled-recovery draw (sparkv_draw_standard in sparkv.h): a 64-bit hash per token, then a
 * 32-bit counter hash per 16 lanes whose 6-bit fields (one per 16-channel block, five per hash)
 * pick one of 64 inverse-CDF points. Integer-only hashing and a table look-up make every draw
 * bit-identical on every ISA and thread count; the SIMD kernels compute the same integers 8 or 16
 * channels at a time. */
#ifndef SV_DRAW_H
#define SV_DRAW_H

#include <stdint.h>

#include "draw_tables.h"
#include "internal.h"

/* The channel counter's stride (2^32 / golden ratio): consecutive counters land far apart. */
#define SV_DRAW_STRIDE 0x9E3779B9u
/* murmur3's fmix32 multipliers */
#define SV_DRAW_MUL1 0x85EBCA6Bu
#define SV_DRAW_MUL2 0xC2B2AE35u
/* One 32-bit hash serves 5 blocks of 16 channels: its bits 26-31, 20-25, 14-19, 8-13, 2-7. */
#define SV_DRAW_FIELDS 5u

/* mix(mix(mix(seed) ^ layer) ^ kv_head): the part of the token hash shared by a head's tokens. */
static inline uint64_t sv_draw_head_hash(uint64_t seed, uint32_t layer, uint32_t kv_head) {
    return sv_mix64(sv_mix64(sv_mix64(seed) ^ layer) ^ kv_head);
}

/* The token's 32-bit draw key from its 64-bit hash (sv_token_hash = mix(head hash ^ token)). */
static inline uint32_t sv_draw_key(uint64_t token_hash) {
    return (uint32_t)token_hash ^ (uint32_t)(token_hash >> 32);
}

/* murmur3's fmix32: a bijection whose every output bit depends on every input bit. */
static inline uint32_t sv_fmix32(uint32_t x) {
    x ^= x >> 16;
    x *= SV_DRAW_MUL1;
    x ^= x >> 13;
    x *= SV_DRAW_MUL2;
    return x ^ (x >> 16);
}

/* The bin of one channel j: lane l = j % 16 of block b = j / 16 reads field b % 5 of the hash of
 * counter 16 * (b / 5) + l, so a 16-lane kernel hashes once per 5 blocks and shifts per block. */
static inline uint32_t sv_draw_bin(uint32_t key, uint32_t channel) {
    const uint32_t lane = channel % 16u, block = channel / 16u;
    const uint32_t counter = 16u * (block / SV_DRAW_FIELDS) + lane;
    const uint32_t x = sv_fmix32(key + counter * SV_DRAW_STRIDE);
    return (x >> (26u - 6u * (block % SV_DRAW_FIELDS))) & 63u;
}

#endif
