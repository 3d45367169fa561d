/* The saved-cache file format (version 1), written by persist_save.c and read by persist_load.c.
 * Not part of the public API: sparkv.h documents only its guarantees.
 *
 *   file     := preamble section(HEAD) { section(LAYR) { section(KVHD) section(PAGE)* } x n_kv_heads } x n_saved
 *               section(END)
 *   preamble := "SPARKVKC" (8 bytes) | u32 format version (1) | u32 0x01020304 (byte-order check)
 *   section  := u32 tag | u32 0 | u64 payload bytes | payload | u32 CRC-32C of tag..payload | u32 0
 *
 * Every integer and float is in the writer's byte order (the preamble's 0x01020304 reads back
 * byte-swapped on a machine of the other order, and the loader rejects the file); floats are IEEE
 * binary32 bit patterns, fp16 values binary16.
 *
 * HEAD payload: u32 writer's SPARKV_VERSION_NUMBER | u32 SPARKV_PAGE_TOKENS | u64 file bytes |
 *   shape: u32 n_layers, n_q_heads, n_kv_heads, head_dim, u64 capacity |
 *   u32 first saved layer | u32 saved layers |
 *   policy: every field of sparkv_policy in declaration order after struct_size, enums and 32-bit
 *   fields as u32, floats as their bits, seed as u64 (SV_POLICY_FIELDS below).
 * LAYR payload: u32 layer | u32 prefilled | u32 prompt key mode (sv_key_mode) | u32 0 |
 *   u64 n_tokens | u64 n_prompt | u64 n_seen | u64 pages per KV head |
 *   decode-time compression state: u32 queries in the ring | u32 next ring slot | u64 next page to
 *   age | u64 pages aged | then, when the ring holds queries, the ring: n_kv x window x D f64.
 * KVHD payload: u32 kv_head | u32 0 | per the layer's prompt key mode when prefilled:
 *   SPARK: D f32 window query norms qn, f32 c; THINK: D/8 bytes channel mask; else nothing.
 * PAGE payload: u64 first token | u32 n | u32 cap | u32 key mode | u32 values pruned | u64 kept_bytes |
 *   u32 own norms (1: an aged SparK page's qn) | u32 0 |
 *   the page's arrays for its n tokens, in this order, each present when the page has it:
 *   k, kscale (token-major), mask, sign, stats, v, vscale (token-major when values are pruned;
 *   else group-major [D/quant_group][n]), vmask, vfill; then the own norms: D f32 qn and f32 c.
 */
#ifndef SPARKV_PERSIST_FORMAT_H
#define SPARKV_PERSIST_FORMAT_H

#include "internal.h"

#define SV_FILE_MAGIC "SPARKVKC"
#define SV_FILE_VERSION 1u
#define SV_FILE_BYTE_ORDER 0x01020304u
#define SV_FILE_PREAMBLE_BYTES 16u

/* Section tags: four ASCII letters read as a little-endian u32. */
#define SV_TAG(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define SV_SECTION_HEAD SV_TAG('H', 'E', 'A', 'D')
#define SV_SECTION_LAYER SV_TAG('L', 'A', 'Y', 'R')
#define SV_SECTION_KV_HEAD SV_TAG('K', 'V', 'H', 'D')
#define SV_SECTION_PAGE SV_TAG('P', 'A', 'G', 'E')
#define SV_SECTION_END SV_TAG('E', 'N', 'D', ' ')
/* Framing around a payload: tag, reserved, length before it; CRC, reserved after it. */
#define SV_SECTION_FRAME_BYTES 24u

/* Fixed payload sizes. */
#define SV_HEAD_PAYLOAD_BYTES (4u + 4u + 8u + 4u * 4u + 8u + 4u + 4u + SV_POLICY_BYTES)
#define SV_POLICY_BYTES (23u * 4u + 8u) /* 23 32-bit fields and the 64-bit seed */
#define SV_LAYER_PAYLOAD_BYTES (4u * 4u + 4u * 8u + 2u * 4u + 2u * 8u) /* without the ring */
#define SV_KV_HEAD_FIXED_BYTES 8u
#define SV_PAGE_FIXED_BYTES (8u + 4u * 4u + 8u + 2u * 4u)

/* CRC-32C of n bytes continuing from crc (0 to start). crc32c.c. */
SPARKV_HIDDEN uint32_t sv_crc32c_update(uint32_t crc, const void *data, size_t n);

#endif

/* The arrays of a page in file order (see PAGE above): each is `rows` runs of `bytes` bytes, run r
 * at ptr + r * stride in the page (rows > 1 only for group-major value scales, whose runs are
 * page->cap tokens apart). Absent arrays are left out. persist_page.c. */
typedef enum {
    SV_ARR_K, SV_ARR_KSCALE, SV_ARR_MASK, SV_ARR_SIGN, SV_ARR_STATS, SV_ARR_V, SV_ARR_VSCALE, SV_ARR_VMASK,
    SV_ARR_VFILL
} sv_array_kind;
typedef struct {
    sv_array_kind kind;
    uint8_t *ptr;
    uint64_t bytes;  /* per run */
    uint32_t rows;
    uint64_t stride; /* bytes between runs */
} sv_page_array;
#define SV_MAX_PAGE_ARRAYS 9
/* Fills arr (SV_MAX_PAGE_ARRAYS entries) for a page of the cache and returns how many; *total gets
 * the bytes they take in the file. The page's kind (keys, values_pruned), n, cap and kept_bytes
 * must be set and consistent with the cache's policy (the loader checks that first). */
SPARKV_HIDDEN uint32_t sv_page_arrays(const sparkv_cache *cache, const sv_page *page, sv_page_array *arr,
                                      uint64_t *total);
