/* Which arrays of a page a saved cache holds, and where they sit in the page: the one description
 * both the writer (persist_save.c) and the reader (persist_load.c) walk, so the two cannot disagree
 * on the file's order or sizes. Only the n stored tokens are saved, never a page's free slots. */
#include "persist_format.h"

static void add(sv_page_array *arr, uint32_t *count, uint64_t *total, sv_array_kind kind, void *ptr, uint64_t bytes,
                uint32_t rows, uint64_t stride) {
    if (!ptr) return;
    arr[*count] = (sv_page_array){kind, (uint8_t *)ptr, bytes, rows, stride};
    *total += bytes * rows;
    (*count)++;
}

uint32_t sv_page_arrays(const sparkv_cache *c, const sv_page *p, sv_page_array *arr, uint64_t *total) {
    const uint32_t d = c->shape.head_dim, n = p->n, nb = d / 8;
    const sparkv_precision kp = c->policy.key_precision, vp = c->policy.value_precision;
    uint32_t count = 0;
    *total = 0;
    switch (p->keys) {
    case SV_KEYS_SPARK:
        add(arr, &count, total, SV_ARR_K, p->k, p->kept_bytes, 1, 0);
        add(arr, &count, total, SV_ARR_KSCALE, p->kscale, (uint64_t)n * 2u, 1, 0);
        add(arr, &count, total, SV_ARR_MASK, p->mask, (uint64_t)n * nb, 1, 0);
        add(arr, &count, total, SV_ARR_SIGN, p->sign, (uint64_t)n * nb, 1, 0);
        add(arr, &count, total, SV_ARR_STATS, p->stats, (uint64_t)n * c->n_stats * 2u, 1, 0);
        break;
    case SV_KEYS_THINK:
        add(arr, &count, total, SV_ARR_K, p->k, (uint64_t)n * sv_row_bytes(kp, c->keep_topk), 1, 0);
        add(arr, &count, total, SV_ARR_KSCALE, p->kscale, (uint64_t)n * 2u, 1, 0);
        break;
    default:
        add(arr, &count, total, SV_ARR_K, p->k, (uint64_t)n * sv_row_bytes(kp, d), 1, 0);
        add(arr, &count, total, SV_ARR_KSCALE, p->kscale, (uint64_t)n * c->kgroups * 2u, 1, 0);
        break;
    }
    if (p->values_pruned) {
        add(arr, &count, total, SV_ARR_V, p->v, (uint64_t)n * sv_row_bytes(vp, c->keep_values), 1, 0);
        add(arr, &count, total, SV_ARR_VSCALE, p->vscale, (uint64_t)n * 2u, 1, 0);
        add(arr, &count, total, SV_ARR_VMASK, p->vmask, (uint64_t)n * nb, 1, 0);
        add(arr, &count, total, SV_ARR_VFILL, p->vfill, (uint64_t)n * 2u, 1, 0);
    } else {
        add(arr, &count, total, SV_ARR_V, p->v, (uint64_t)n * sv_row_bytes(vp, d), 1, 0);
        /* group-major: group g's scales of the page's tokens at vscale[g * cap .. g * cap + n) */
        add(arr, &count, total, SV_ARR_VSCALE, p->vscale, (uint64_t)n * 2u, c->vgroups, (uint64_t)p->cap * 2u);
    }
    return count;
}
