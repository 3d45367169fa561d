/* Shared private declarations of the model kernels: half conversion, block layouts, dispatch,
 * scratch memory, the vectorizable exp2.
 *
 * Files: cpu.c (ISA choice, threads, status strings, scratch), quant.c (block formats, reference
 * quantization, Q8 activations), matmul.c (driver, work split, portable and exact paths),
 * matmul_avx2.c / matmul_avx512.c (integer-dot micro-kernels of Q8_0 / Q4_1), matmul_kquant.c
 * with matmul_kquant_avx2.c / matmul_kquant_avx512.c (those of Q5_0 / Q4_K / Q6_K), elementwise.c
 * (RMSNorm, RoPE, SwiGLU, add, softmax), attention.c (prefill attention driver, online softmax) with
 * attention_kernels.h (portable block kernels) and attention_avx2.c / attention_avx512.c,
 * bench.c (timing helpers). */
#ifndef SVM_INTERNAL_H
#define SVM_INTERNAL_H

#include "sparkv_model.h"

#include "cpu_features.h" /* csrc/platform/: the project's one CPU probe */
#include "half.h"         /* csrc/platform/: the project's one fp16 conversion */

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SVM_X86 1
#else
#define SVM_X86 0
#endif

#define SVM_QK 32 /* values per quantized block */

/* Software prefetch distance of the decode matrix-vector product (bytes ahead in the weights):
 * measured on Zen 5, 12 KB keeps one core at ~31 GB/s from DRAM against ~9 GB/s without. */
#define SVM_PREFETCH_BYTES 12288

typedef struct {
    uint16_t d, m;
    uint8_t qs[16];
} svm_block_q4_1; /* 20 bytes */

typedef struct {
    uint16_t d;
    int8_t qs[32];
} svm_block_q8_0; /* 34 bytes */

#define SVM_QK_K 256 /* values per K-quant super-block (8 sub-blocks of 32) */

typedef struct {
    uint16_t d;
    uint8_t qh[4]; /* bit j (little-endian uint32) = 5th bit of value j */
    uint8_t qs[16];
} svm_block_q5_0; /* 22 bytes */

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12]; /* 8 x (6-bit scale, 6-bit min), packed: svm_q4_k_scale_min */
    uint8_t qs[128];
} svm_block_q4_k; /* 144 bytes */

typedef struct {
    uint8_t ql[128];   /* low 4 bits */
    uint8_t qh[64];    /* high 2 bits */
    int8_t scales[16]; /* one per 16 values */
    uint16_t d;
} svm_block_q6_k; /* 210 bytes */

_Static_assert(sizeof(svm_block_q4_1) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(svm_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(svm_block_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(svm_block_q4_k) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(svm_block_q6_k) == 210, "Q6_K block is 210 bytes");

/* 1 for the types whose fast matmul lives in matmul_kquant*.c (Q5_0, Q4_K, Q6_K). */
static inline int svm_is_kquant_path(svm_type type) {
    return type == SVM_Q5_0 || type == SVM_Q4_K || type == SVM_Q6_K;
}

/* Q4_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. Bytes 0-3 hold
 * scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; sub-blocks 4-7 take their low 4 bits from
 * the nibbles of bytes 8-11 (scale low, min high) and their top 2 bits from the spare top bits of
 * bytes 0-3 (scales) and 4-7 (mins). */
static inline void svm_q4_k_scale_min(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q5_0 value index j (0..31) of a block as 0..31 (value = d * (q - 16)). */
static inline int svm_q5_0_q(const svm_block_q5_0 *b, int j) {
    uint32_t qh = (uint32_t)b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 | (uint32_t)b->qh[3] << 24;
    int lo = j < 16 ? (b->qs[j] & 15) : (b->qs[j - 16] >> 4);
    return lo | (int)((qh >> j) & 1u) << 4;
}

/* Q6_K value index v (0..255) of a super-block as 0..63 (value = d * scales[v / 16] * (q - 32)).
 * Each half of 128 values uses 64 ql bytes and 32 qh bytes: value 128h + 32k + l (k = 0..3,
 * l = 0..31) has its low 4 bits in ql[64h + l + 32(k & 1)] (low nibble for k < 2, high for
 * k >= 2) and its top 2 bits in bits 2k..2k+1 of qh[32h + l]. */
static inline int svm_q6_k_q(const svm_block_q6_k *b, int v) {
    int h = v >> 7, k = (v >> 5) & 3, l = v & 31;
    int ql = b->ql[64 * h + l + 32 * (k & 1)];
    int lo = k < 2 ? (ql & 15) : (ql >> 4);
    return lo | ((b->qh[32 * h + l] >> (2 * k)) & 3) << 4;
}

/* Half conversion: csrc/platform/half.h is the project's one definition (IEEE binary16, round to nearest
 * even; F16C gives identical results). */
static inline uint32_t svm_f32_bits(float f) { return sv_f32_bits(f); }
static inline float svm_bits_f32(uint32_t u) { return sv_bits_f32(u); }
static inline float svm_half_to_float(uint16_t h) { return sv_half_to_float(h); }
static inline uint16_t svm_float_to_half(float f) { return sv_float_to_half(f); }

/* ---- Q8 activations --------------------------------------------------------------------------
 * One X row quantized per block b of 32: q[32] int8, d[b] = amax/127 (float), s[b] = d[b] * sum q
 * (float). The specification; every path produces exactly these numbers (in its own layout). */
void svm_quantize_act_row(const float *x, int cols, int8_t *q, float *d, float *s);

/* ---- settings ---- */
svm_isa svm_current_isa(void);
int svm_threads(void);

/* Per-calling-thread scratch buffer `slot` (0..3) of at least `bytes`, 64-byte aligned; NULL on
 * allocation failure. Valid until the next call with the same slot on the same thread. */
void *svm_scratch(int slot, size_t bytes);

/* ---- matmul paths ----
 * The driver (matmul.c) has each X row quantized and laid out by the path (prepare_x, into
 * x_stride(type, cols) bytes, 64-byte aligned), then calls tile() on tiles of up to 4 rows x 4
 * tokens: Y[t * ldy + r] for r < nr, t < nt. Portable and AVX2 share the layout q[cols] int8,
 * d[nb] float, s[nb] float. */
size_t svm_avx2_x_stride(svm_type type, int cols);
void svm_avx2_prepare_x(svm_type type, const float *x, int cols, uint8_t *dst);
void svm_avx2_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                   size_t x_stride, int nt, float *Y, int ldy);
/* Exact path: dequantize one row (svm_dequantize_row's values), and y[r] = dot(w + r*ldw, x) for
 * r < nr in the fixed order of svm_dots_f32 (bit-identical). */
void svm_dequantize_row(svm_type type, const uint8_t *row, int cols, float *out);
void svm_dots_f32(const float *w, size_t ldw, int nr, const float *x, int cols, float *y);
void svm_avx2_dequantize_row(svm_type type, const uint8_t *row, int cols, float *out);
void svm_avx2_dots_f32(const float *w, size_t ldw, int nr, const float *x, int cols, float *y);
size_t svm_avx512_x_stride(svm_type type, int cols);
void svm_avx512_prepare_x(svm_type type, const float *x, int cols, uint8_t *dst);
void svm_avx512_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                     size_t x_stride, int nt, float *Y, int ldy);
/* Q5_0 / Q4_K / Q6_K (matmul_kquant*.c): X in the portable layout on every path (q[cols] int8,
 * d[nb] float, s[nb] float per 32-value block; svm_avx2_prepare_x on both SIMD ISAs), tiles as
 * above. */
void svm_kquant_portable_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                              size_t x_stride, int nt, float *Y, int ldy);
void svm_kquant_avx2_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                          size_t x_stride, int nt, float *Y, int ldy);
void svm_kquant_avx512_tile(svm_type type, const uint8_t *W, size_t row_bytes, int nr, int cols, const uint8_t *X,
                            size_t x_stride, int nt, float *Y, int ldy);

/* ---- attention block kernels ----
 * scores:      S[i][j] = sum_d Q[i][d] * Kt[d][j]   (i < nq, j < 64; Kt is a 64-key block
 *              transposed, ld 64)
 * softmax:     the online-softmax step of rows i < nq of S: keys j >= visible[i] are masked
 *              (visible[i] <= 0: the row sees none of the block: S row = 0, alpha = 1); else
 *              m_new = max(m[i], max_j S[i][j]), S[i][j] = exp2(S[i][j] - m_new) (0 if masked),
 *              alpha[i] = exp2(m[i] - m_new) (0 when m[i] = -inf), l[i] = l[i] * alpha[i] + sum_j S[i][j],
 *              m[i] = m_new.
 * accumulate:  O[i][d] = alpha[i] * O[i][d] + sum_{j < nk} P[i][j] * V[j][d]  (V rows with stride ldv) */
typedef struct {
    void (*scores)(const float *Q, int nq, int hd, const float *Kt, float *S);
    void (*softmax)(float *S, int nq, const int *visible, float *m, float *l, float *alpha);
    void (*accumulate)(const float *P, int nq, int nk, const float *V, size_t ldv, int hd, const float *alpha,
                       float *O);
} svm_attn_path;

extern const svm_attn_path svm_attn_portable;
extern const svm_attn_path svm_attn_avx2;
extern const svm_attn_path svm_attn_avx512;

/* ---- vectorizable exp2 ----
 * exp2(x) for float x: 2^round(x) * p(f), f = x - round(x) in [-0.5, 0.5], p a degree-6 minimax-
 * style polynomial (Taylor of 2^f, error < 2e-7 relative). x < -126 gives 0, x > 127.99 gives +inf
 * territory clamped to 2^128 (not reached after max subtraction). Branch-free so compilers
 * vectorize it; identical results at every vector width (no fused multiply-add: -ffp-contract=off). */
static inline float svm_exp2f(float x) {
    if (!(x >= -126.0f)) x = -126.0f - 1.0f; /* also maps NaN/-inf to the underflow branch */
    if (x > 127.0f) x = 127.0f;
    float r = x + 12582912.0f; /* 1.5 * 2^23: round to nearest integer */
    float n = r - 12582912.0f;
    float f = x - n;
    float p = 1.5403530393381606e-4f;
    p = p * f + 1.3333558146428443e-3f;
    p = p * f + 9.6181291076284772e-3f;
    p = p * f + 5.5504108664821580e-2f;
    p = p * f + 2.4022650695910071e-1f;
    p = p * f + 6.9314718055994531e-1f;
    p = p * f + 1.0f;
    int32_t e = (int32_t)n + 127;
    float scale = svm_bits_f32((uint32_t)(e > 0 ? e : 0) << 23);
    return p * scale;
}

#endif
