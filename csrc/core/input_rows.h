/* A caller's input tensor (keys, values, window queries): rows of D elements in float32, float16 or
 * bfloat16. Readers take one row at a time as float32. The widening is exact, so every stage sees
 * the same float32 values whatever the input type, and a 16-bit input never needs a float32 copy
 * of the whole tensor. */
#ifndef SPARKV_INPUT_ROWS_H
#define SPARKV_INPUT_ROWS_H

#include "internal.h"

static inline size_t sv_dtype_bytes(sparkv_dtype t) { return t == SPARKV_DTYPE_F32 ? 4u : 2u; }

static inline int sv_dtype_valid(sparkv_dtype t) {
    return t == SPARKV_DTYPE_F32 || t == SPARKV_DTYPE_F16 || t == SPARKV_DTYPE_BF16;
}

/* The rows starting `rows` rows of d elements further. */
static inline sv_rows sv_rows_at(sv_rows r, uint64_t rows, uint32_t d) {
    r.data = (const uint8_t *)r.data + rows * d * sv_dtype_bytes(r.dtype);
    return r;
}

/* Row i as float32: a pointer into the input for float32, else `scratch` (d floats) filled. */
static inline const float *sv_rows_get(sv_rows r, uint64_t i, uint32_t d, float *scratch) {
    if (r.dtype == SPARKV_DTYPE_F32) return (const float *)r.data + i * d;
    sv_load_row(scratch, (const uint16_t *)r.data + i * d, r.dtype == SPARKV_DTYPE_F16 ? SPARKV_F16 : SPARKV_BF16, d);
    return scratch;
}

/* validate.c: SPARKV_ERR_NON_FINITE for NaN/Inf, SPARKV_ERR_RANGE for a finite element beyond
 * sv_precision_limit(storage); the messages name head, row and channel. */
SPARKV_HIDDEN sparkv_status sv_check_rows(sparkv_cache *cache, const char *what, sv_rows x, uint64_t n_outer,
                                          uint64_t n_mid, uint32_t d, sparkv_precision storage);

#endif
