/* OpenMP's runtime API, or single-threaded stand-ins when the code is built without OpenMP (no
 * -fopenmp, e.g. SPARKV_OPENMP=off or no omp.h found by Package.swift): the `#pragma omp` lines are
 * then ignored and every loop runs on the calling thread. Shared by csrc/ and the CLI's C targets. */
#ifndef SPARKV_OMP_COMPAT_H
#define SPARKV_OMP_COMPAT_H

#ifdef _OPENMP
#include <omp.h>
#else
#include <time.h>
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline double omp_get_wtime(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC); /* C11; wall clock is enough for the benchmark timers */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#endif

#endif
