/* Benchmark utilities of the sparkv CLI (not part of the SparKV library API). */
#ifndef SPARKV_BENCH_H
#define SPARKV_BENCH_H
#endif
