/* One memory mapping for all the pages one prefill call builds (page.c). A layer's prompt pages
 * are built together and freed together (with the cache), so they need not be separate heap
 * blocks: one mapping is faulted in once, by huge pages where the kernel allows it, and is
 * already zero. Each page holds a reference; the mapping goes when the last page is freed. */
#ifndef SPARKV_PREFILL_ARENA_H
#define SPARKV_PREFILL_ARENA_H

#include "internal.h"

typedef struct sv_page_arena sv_page_arena;

/* A mapping of `bytes` (the sum of sv_page_prompt_bytes of the pages to come); NULL when the
 * platform has no anonymous mappings or the mapping fails: pages then come from the heap. The
 * caller holds one reference until sv_arena_release. */
SPARKV_HIDDEN sv_page_arena *sv_arena_new(size_t bytes);
SPARKV_HIDDEN void sv_arena_release(sv_page_arena *arena);
/* Bytes a prompt page of n tokens takes (header and padding included). */
SPARKV_HIDDEN size_t sv_page_prompt_bytes(const sparkv_cache *cache, uint32_t n, uint64_t kept_bytes);
/* sv_page_new_prompt, from the arena when there is one and it has room (thread-safe). */
SPARKV_HIDDEN sv_page *sv_page_new_prompt_in(const sparkv_cache *cache, uint32_t n, uint64_t kept_bytes,
                                             sv_page_arena *arena);

#endif
