/* The page encoder (page_encode.c), shared by prefill and decode-time compression. */
#ifndef SPARKV_PAGE_ENCODE_H
#define SPARKV_PAGE_ENCODE_H

#include "internal.h"

struct sv_page_arena;

/* What encoding the pages of one head needs. */
typedef struct {
    sv_rows keys, values;         /* the head's rows: [*][D] */
    const uint64_t *rows;         /* the rows to store, in order (page token i is rows[i0 + i]) */
    const float *qn;              /* SPARK: the window query norms the saliency uses */
    float c;                      /* SPARK: their mean; statistics are stored divided by it */
    const uint8_t *think_mask;    /* THINK: the head's kept channels */
} sv_encode_input;

/* The page holding rows[i0 .. i0 + n) of one head, in the arena if not NULL (first = i0, n set).
 * NULL when out of memory. */
SPARKV_HIDDEN sv_page *sv_encode_page(const sparkv_cache *cache, const sv_encode_input *in, uint64_t i0, uint32_t n,
                                      struct sv_page_arena *arena);

/* Appends one token (key and value rows of D floats) to a dense page with room: the append path. */
SPARKV_HIDDEN void sv_encode_dense_token(const sparkv_cache *cache, sv_page *page, const float *key, const float *value);

/* The page's first token whose fp16 statistics or value fill overflowed, or page->n if none. */
SPARKV_HIDDEN uint32_t sv_page_first_overflow(const sparkv_cache *cache, const sv_page *page);

#endif
