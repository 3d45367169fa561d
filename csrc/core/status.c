/* Status strings, error details and the version. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* Error details live in the failing thread, tagged with the handle's id (0: no handle), so calls
 * that only read a cache never write to it and may run concurrently. An id rather than the
 * pointer: a freed handle's address may be reused by a new cache. */
typedef struct {
    uint64_t owner;
    char text[SPARKV_ERROR_LEN];
} sv_error_slot;
static _Thread_local sv_error_slot thread_error;

static uint64_t owner_id(const sparkv_cache *cache) { return cache ? cache->id : 0; }

unsigned sparkv_version(void) { return SPARKV_VERSION_NUMBER; }

#define SV_STR2(x) #x
#define SV_STR(x) SV_STR2(x)
const char *sparkv_version_string(void) {
    return SV_STR(SPARKV_VERSION_MAJOR) "." SV_STR(SPARKV_VERSION_MINOR) "." SV_STR(SPARKV_VERSION_PATCH);
}

const char *sparkv_status_string(sparkv_status status) {
    switch (status) {
    case SPARKV_OK: return "success";
    case SPARKV_ERR_NULL_POINTER: return "a required pointer argument is NULL";
    case SPARKV_ERR_INVALID_SHAPE: return "a size is zero or the sizes are inconsistent";
    case SPARKV_ERR_HEAD_DIM: return "head_dim must be a multiple of 8 between 8 and 256";
    case SPARKV_ERR_GQA: return "n_q_heads must be a multiple of n_kv_heads";
    case SPARKV_ERR_INVALID_POLICY: return "the compression policy has a value out of range or an invalid combination";
    case SPARKV_ERR_NON_FINITE: return "an input tensor contains NaN or Inf";
    case SPARKV_ERR_LAYER: return "layer index out of range";
    case SPARKV_ERR_CAPACITY: return "the layer's token capacity would be exceeded";
    case SPARKV_ERR_STATE: return "the call is not allowed in the layer's current state";
    case SPARKV_ERR_WINDOW: return "the observation window is empty or longer than the prompt";
    case SPARKV_ERR_OUT_OF_MEMORY: return "out of memory";
    case SPARKV_ERR_UNSUPPORTED: return "the requested kernel is not supported by this CPU or build";
    case SPARKV_ERR_EMPTY: return "the layer holds no token";
    case SPARKV_ERR_STRUCT_SIZE: return "struct_size does not match a structure this library knows";
    case SPARKV_ERR_INDEX: return "a head or token index is out of range";
    case SPARKV_ERR_RANGE: return "a finite input is beyond the range of its storage precision";
    case SPARKV_ERR_OVERFLOW: return "attention overflowed float32 (a score or an output is not finite)";
    case SPARKV_ERR_DTYPE: return "an input element type is not float32, float16 or bfloat16";
    case SPARKV_ERR_FORMAT: return "the saved cache is malformed, truncated, corrupt or of another format version";
    case SPARKV_ERR_IO: return "a file cannot be opened, read, written or renamed";
    }
    return "unknown status code";
}

sparkv_status sv_fail(const sparkv_cache *cache, sparkv_status st, const char *fmt, ...) {
    thread_error.owner = owner_id(cache);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(thread_error.text, SPARKV_ERROR_LEN, fmt, ap);
    va_end(ap);
    return st;
}

void sv_clear_error(const sparkv_cache *cache) {
    if (thread_error.owner == owner_id(cache)) thread_error.text[0] = '\0';
}

const char *sparkv_last_error(const sparkv_cache *cache) {
    return thread_error.owner == owner_id(cache) ? thread_error.text : "";
}
