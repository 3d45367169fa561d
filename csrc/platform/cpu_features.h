/* The project's one CPU-feature probe (x86-64), shared by the SparKV library (cpu.c, convert.c),
 * the model kernels (Sources/CSparKVModel) and the bandwidth probe (Sources/CSparKVBench).
 *
 * Kernels are chosen at run time from these answers, never from build flags: the machine that runs
 * a binary may not be the one that built it. Each function is header-only (static inline) so every
 * target gets the same definition without linking to another; __builtin_cpu_supports is cheap
 * after __builtin_cpu_init and thread-safe. On other architectures every answer is 0. */
#ifndef SPARKV_CPU_FEATURES_H
#define SPARKV_CPU_FEATURES_H

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SV_CPU_X86 1
#else
#define SV_CPU_X86 0
#endif

/** AVX + F16C: the hardware half <-> float conversions (convert.c). */
static inline int sv_cpu_f16c(void) {
#if SV_CPU_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

/** The "avx2" kernel level: AVX2 + FMA + F16C + BMI2 + POPCNT (every AVX2 CPU since Haswell). */
static inline int sv_cpu_avx2(void) {
#if SV_CPU_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
           __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
#else
    return 0;
#endif
}

/** AVX-512 F, BW and VL on top of the avx2 level: the base of both "avx512" kernel levels. */
static inline int sv_cpu_avx512(void) {
#if SV_CPU_X86
    __builtin_cpu_init();
    return sv_cpu_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/** sv_cpu_avx512() + VBMI2 (byte compress/expand): the SparKV attention kernels' avx512 level. */
static inline int sv_cpu_avx512_vbmi2(void) {
#if SV_CPU_X86
    return sv_cpu_avx512() && __builtin_cpu_supports("avx512vbmi2");
#else
    return 0;
#endif
}

/** sv_cpu_avx512() + VNNI (vpdpbusd, 8-bit dot products): the model matmul kernels' avx512 level. */
static inline int sv_cpu_avx512_vnni(void) {
#if SV_CPU_X86
    return sv_cpu_avx512() && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

#endif
