/* Benchmark utilities of the sparkv CLI (`sparkv bench`); not part of the SparKV library API.
 *
 * A memory-bandwidth probe: a multithreaded streaming read of a buffer far larger than the
 * last-level cache, the same kind of traffic decode attention generates (every byte of the KV
 * cache read once per step). The `sparkv bench` tables quote decode bandwidth as a percentage of
 * what this probe measures with the same thread count.
 */
#ifndef SPARKV_BENCH_H
#define SPARKV_BENCH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Result of sparkv_bench_bandwidth. GB are 1e9 bytes. */
typedef struct sparkv_bench_bandwidth_result {
    double gbps_median;  /**< median over the passes of bytes / pass time */
    double gbps_min;
    double gbps_max;
    uint64_t bytes;      /**< bytes read per pass (the buffer size, rounded down to whole 4 KiB blocks) */
    int32_t threads;     /**< OpenMP threads that read */
    int32_t passes;      /**< timed passes (one untimed warm-up pass precedes them) */
    int32_t prefetch;    /**< 1 if software prefetch was issued */
    int32_t simd;        /**< read loop used: 0 portable (baseline ISA), 2 AVX2, 3 AVX-512 */
    uint64_t checksum;   /**< sum of the words read (kept so the reads cannot be optimized away) */
} sparkv_bench_bandwidth_result;

/**
 * Streaming-read bandwidth. Allocates `bytes` (64-byte aligned), fills it from the reading threads
 * (first touch, same static partition as the reads), runs one warm-up pass and `passes` timed
 * passes; each pass sums every 64-bit word with several vector accumulators (threads read
 * contiguous slices, OpenMP schedule(static)). `threads` <= 0 means OpenMP's default.
 * `prefetch` != 0 adds software prefetches 1 KiB ahead of the loads (non-temporal hint).
 * The widest read loop the CPU supports is chosen at run time (baseline, AVX2 or AVX-512).
 * Returns 0 on success, -1 if the buffer cannot be allocated or an argument is invalid
 * (bytes < 64 KiB, passes < 1).
 */
int sparkv_bench_bandwidth(uint64_t bytes, int threads, int passes, int prefetch,
                           sparkv_bench_bandwidth_result *out);

/** OpenMP's default thread count (omp_get_max_threads()); 1 in a build without OpenMP. */
int sparkv_bench_default_threads(void);

/** 1 when the C code was built with OpenMP, 0 when without (Package.swift found no omp.h, or
 *  SPARKV_OPENMP=off): every kernel then runs single-threaded. */
int sparkv_bench_openmp(void);

/** A monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
uint64_t sparkv_bench_now_ns(void);

#ifdef __cplusplus
}
#endif

#endif /* SPARKV_BENCH_H */
