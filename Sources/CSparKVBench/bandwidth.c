/* Memory-bandwidth probe of `sparkv bench` (see include/sparkv_bench.h). */
#define _POSIX_C_SOURCE 200809L
#include "sparkv_bench.h"

#include "omp_compat.h" /* csrc/platform/: OpenMP or single-threaded stand-ins */
#include "cpu_features.h" /* csrc/platform/: the project's one CPU probe */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Words per block: 512 bytes = 8 cache lines. A pass is split among threads in whole 4 KiB pages. */
#define BLOCK_WORDS 64
#define PAGE_BYTES 4096
/* Prefetch distance. The hardware prefetchers already follow a linear stream; the software hint
 * only has to cover the gaps they leave at page boundaries. */
#define PREFETCH_BYTES 1024

/* The read loop: 16 independent 64-bit accumulators the compiler turns into vector registers
 * (integer adds are associative, so it may vectorize without fast-math), one block of 8 cache
 * lines per iteration. Inlined into one function per ISA level and prefetch setting. */
static inline __attribute__((always_inline)) uint64_t sum_words(const uint64_t *restrict p, size_t n,
                                                                 int prefetch) {
    uint64_t acc[16] = {0};
    /* Not vectorized across blocks (that would turn the loads into gathers): the unrolled block
     * body is vectorized instead, one vector load per 16 words x lanes. */
#pragma clang loop vectorize(disable)
    for (size_t i = 0; i < n; i += BLOCK_WORDS) {
        if (prefetch) {
            const char *ahead = (const char *)(p + i) + PREFETCH_BYTES;
            for (int line = 0; line < BLOCK_WORDS * 8 / 64; line++) __builtin_prefetch(ahead + 64 * line, 0, 0);
        }
        for (int j = 0; j < BLOCK_WORDS; j += 16)
            for (int k = 0; k < 16; k++) acc[k] += p[i + j + k];
    }
    uint64_t s = 0;
    for (int k = 0; k < 16; k++) s += acc[k];
    return s;
}

typedef uint64_t (*sum_fn)(const uint64_t *restrict, size_t);

static uint64_t sum_base(const uint64_t *restrict p, size_t n) { return sum_words(p, n, 0); }
static uint64_t sum_base_pf(const uint64_t *restrict p, size_t n) { return sum_words(p, n, 1); }

#if defined(__x86_64__) || defined(__i386__)
#define SPARKV_BENCH_X86 1
__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *restrict p, size_t n) {
    return sum_words(p, n, 0);
}
__attribute__((target("avx2"))) static uint64_t sum_avx2_pf(const uint64_t *restrict p, size_t n) {
    return sum_words(p, n, 1);
}
__attribute__((target("avx512f"))) static uint64_t sum_avx512(const uint64_t *restrict p, size_t n) {
    return sum_words(p, n, 0);
}
__attribute__((target("avx512f"))) static uint64_t sum_avx512_pf(const uint64_t *restrict p, size_t n) {
    return sum_words(p, n, 1);
}
#endif

static sum_fn pick(int prefetch, int *simd) {
#ifdef SPARKV_BENCH_X86
    /* the project's one probe (csrc/platform/cpu_features.h) */
    if (sv_cpu_avx512()) {
        *simd = 3;
        return prefetch ? sum_avx512_pf : sum_avx512;
    }
    if (sv_cpu_avx2()) {
        *simd = 2;
        return prefetch ? sum_avx2_pf : sum_avx2;
    }
#endif
    *simd = 0;
    return prefetch ? sum_base_pf : sum_base;
}

uint64_t sparkv_bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int sparkv_bench_default_threads(void) { return omp_get_max_threads(); }

int sparkv_bench_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Pages [first, last) of thread `t` of `nt` for `pages` pages: contiguous, fixed split. */
static void slice(size_t pages, int t, int nt, size_t *first, size_t *last) {
    *first = pages * (size_t)t / (size_t)nt;
    *last = pages * (size_t)(t + 1) / (size_t)nt;
}

int sparkv_bench_bandwidth(uint64_t bytes, int threads, int passes, int prefetch,
                           sparkv_bench_bandwidth_result *out) {
    if (!out || bytes < 65536 || passes < 1) return -1;
    memset(out, 0, sizeof *out);
    int nt = threads > 0 ? threads : omp_get_max_threads();
    size_t pages = (size_t)(bytes / PAGE_BYTES);
    size_t total = pages * PAGE_BYTES;
    const size_t page_words = PAGE_BYTES / sizeof(uint64_t);
    uint64_t *buf = aligned_alloc(64, total);
    double *rates = malloc(sizeof(double) * (size_t)passes);
    if (!buf || !rates) {
        free(buf);
        free(rates);
        return -1;
    }
    int simd = 0;
    sum_fn sum = pick(prefetch, &simd);

    /* First touch by the thread that will read the page. */
#pragma omp parallel num_threads(nt)
    {
        size_t first, last;
        slice(pages, omp_get_thread_num(), omp_get_num_threads(), &first, &last);
        for (size_t w = first * page_words; w < last * page_words; w++) buf[w] = (uint64_t)w * 0x9E3779B97F4A7C15u;
    }

    uint64_t checksum = 0;
    for (int pass = -1; pass < passes; pass++) {
        uint64_t s = 0;
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt) reduction(+ : s)
        {
            size_t first, last;
            slice(pages, omp_get_thread_num(), omp_get_num_threads(), &first, &last);
            s += sum(buf + first * page_words, (last - first) * page_words);
        }
        double seconds = omp_get_wtime() - t0;
        checksum += s;
        if (pass >= 0) rates[pass] = (double)total / seconds / 1e9;
    }

    qsort(rates, (size_t)passes, sizeof(double), compare_doubles);
    out->gbps_median = passes % 2 ? rates[passes / 2] : 0.5 * (rates[passes / 2 - 1] + rates[passes / 2]);
    out->gbps_min = rates[0];
    out->gbps_max = rates[passes - 1];
    out->bytes = total;
    out->threads = nt;
    out->passes = passes;
    out->prefetch = prefetch ? 1 : 0;
    out->simd = simd;
    out->checksum = checksum;
    free(rates);
    free(buf);
    return 0;
}
