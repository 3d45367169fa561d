/*
 * sparkv_model.h — CPU kernels of a Llama forward pass (the real-model path of SparKV).
 *
 * Not part of the SparKV library API (include/sparkv.h): these are the building blocks the Swift
 * Llama runner (SparKVModel) composes into a forward pass of a GGUF model such as SmolLM2-135M
 * (30 layers, hidden 576, 9 query / 3 KV heads of 64, FFN 1536, RoPE base 1e5, RMSNorm 1e-5).
 *
 * One forward pass over n tokens x[n][hidden], per layer:
 *     h  = svm_rmsnorm(x, attn_norm)
 *     q  = svm_matmul(Wq, h)   k = svm_matmul(Wk, h)   v = svm_matmul(Wv, h)
 *     svm_rope_adjacent(q), svm_rope_adjacent(k)           (positions of the n tokens)
 *     a  = svm_causal_attention(q, k, v)                   (prefill; decode attends the KV cache)
 *     x  = svm_add(x, svm_matmul(Wo, a))
 *     h  = svm_rmsnorm(x, ffn_norm)
 *     x  = svm_add(x, svm_matmul(Wdown, svm_swiglu(svm_matmul(Wgate, h), svm_matmul(Wup, h))))
 * then logits = svm_matmul(Wout or token_embd (tied), svm_rmsnorm(x, output_norm)); the token
 * embedding of id t is svm_embed_row(token_embd, type, t, hidden, out).
 *
 * Conventions (every function below):
 *  - Tensors are float32, row-major, contiguous; shapes are written [outer][...][inner]. The
 *    caller owns every pointer; nothing is kept after a call returns. Outputs must not overlap
 *    inputs unless the function says "in place" or "may alias".
 *  - Fallible calls return an svm_status (SVM_OK = 0, errors negative); they check arguments
 *    before touching any output, so a failed call leaves the outputs unchanged.
 *  - Threading: kernels run on OpenMP threads, svm_set_threads() of them (static schedules only).
 *    Every output element is computed by the same sequence of operations whatever the thread count:
 *    results are bit-identical for 1, 2, ... threads. Calls may run concurrently from several
 *    threads of the caller (scratch memory is per calling thread); the settings (threads, ISA)
 *    are process-wide and must not be changed while a kernel runs.
 *  - SIMD: each kernel has a portable C version, which is the specification, and AVX2 / AVX-512
 *    versions chosen at run time from the CPU (never from build flags). Unless a function says
 *    otherwise, SIMD versions reorder floating-point sums (vector lanes, fused multiply-add), so
 *    they match the portable version to float rounding, not bit for bit (svm_matmul_exact,
 *    svm_swiglu and the Q8 activation rounding of svm_matmul are bit-identical on every path).
 *    svm_set_isa() or the environment variable SVM_ISA
 *    (portable | avx2 | avx512, read once at first use) force a path.
 */
#ifndef SPARKV_MODEL_H
#define SPARKV_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Status, settings                                                                             */
/* ------------------------------------------------------------------------------------------ */

/** Result of fallible calls. Values are stable. */
typedef enum svm_status {
    SVM_OK = 0,
    SVM_ERR_ARG = -1,         /**< a required pointer is NULL or a size is <= 0 / inconsistent */
    SVM_ERR_TYPE = -2,        /**< the weight type is not one of svm_type */
    SVM_ERR_SHAPE = -3,       /**< cols is not a multiple of the type's block size (32 or 256) */
    SVM_ERR_MEMORY = -4,      /**< a scratch allocation failed */
    SVM_ERR_UNSUPPORTED = -5, /**< the requested ISA is not supported by this CPU */
} svm_status;

/** A stable sentence for any status (never NULL, static). */
const char *svm_status_string(svm_status status);

/** Instruction-set paths. AUTO = the best one this CPU supports. */
typedef enum svm_isa {
    SVM_ISA_AUTO = 0,
    SVM_ISA_PORTABLE = 1, /**< plain C (the specification) */
    SVM_ISA_AVX2 = 2,     /**< AVX2 + FMA + F16C (+ BMI2, POPCNT: csrc/platform/cpu_features.h's avx2 level) */
    SVM_ISA_AVX512 = 3,   /**< AVX-512 F/BW/VL/VNNI + the AVX2 set */
} svm_isa;

/** 1 if this CPU can run `isa` (AUTO and PORTABLE: always 1). */
int svm_isa_supported(svm_isa isa);
/** Select the path of every kernel. AUTO = best supported. SVM_ERR_UNSUPPORTED if the CPU lacks it
 *  (the current path is kept). Default: SVM_ISA from the environment if set and supported, else AUTO. */
svm_status svm_set_isa(svm_isa isa);
/** The path in use (never AUTO). */
svm_isa svm_get_isa(void);
/** "auto", "portable", "avx2", "avx512". */
const char *svm_isa_name(svm_isa isa);

/** Free the calling thread's scratch buffers (kept between calls to avoid re-allocation; the
 *  largest is svm_attention's, about n_kv * n_kv_heads * head_dim * 4 bytes). Optional. */
void svm_release_scratch(void);

/** Number of OpenMP threads the kernels use; <= 0 means omp_get_max_threads(). Default: 0. */
void svm_set_threads(int threads);
/** The thread count the kernels will use (resolved, >= 1). */
int svm_get_threads(void);

/* ------------------------------------------------------------------------------------------ */
/* Weight formats (ggml block formats; the enum values are ggml's type ids)                    */
/* ------------------------------------------------------------------------------------------ */

/**
 * A weight matrix W of shape [rows][cols] is stored row-major; each row is cols/B blocks along cols
 * (B = block size: 1 for F32/F16, 32 for Q4_1/Q5_0/Q8_0, 256 for the K-quants Q4_K/Q6_K). Rows
 * are contiguous: row r starts at byte r * svm_row_bytes(type, cols). Scales are IEEE fp16,
 * little-endian; bit fields are little-endian.
 *  - SVM_F32:  float.
 *  - SVM_F16:  IEEE half.
 *  - SVM_Q4_1: 20-byte blocks of 32 values: fp16 d, fp16 m, 16 bytes qs; byte i holds element i in
 *              its low nibble and element i+16 in its high nibble; value = d*q + m (q in 0..15).
 *  - SVM_Q5_0: 22-byte blocks of 32 values: fp16 d, 4 bytes qh (a little-endian uint32 whose bit j
 *              is bit 4 of element j), 16 bytes qs (byte i: low 4 bits of element i in its low
 *              nibble, of element i+16 in its high nibble); value = d*(q - 16) (q in 0..31).
 *  - SVM_Q8_0: 34-byte blocks of 32 values: fp16 d, 32 int8 q; value = d*q.
 *  - SVM_Q4_K: 144-byte super-blocks of 256 values = 8 sub-blocks j of 32: fp16 d, fp16 dmin,
 *              12 bytes of 6-bit scales sc[j] and mins m[j] (j < 4: sc = byte[j] & 63,
 *              m = byte[j+4] & 63; j >= 4: sc = (byte[j+4] & 15) | (byte[j-4] >> 6) << 4,
 *              m = (byte[j+4] >> 4) | (byte[j] >> 6) << 4), then 128 bytes qs: sub-blocks 2i and
 *              2i+1 are the low and high nibbles of qs[32i .. 32i+31];
 *              value = (d*sc[j])*q - dmin*m[j] (q in 0..15).
 *  - SVM_Q6_K: 210-byte super-blocks of 256 values: ql[128], qh[64], int8 scales[16], fp16 d.
 *              Value v = 128h + 32k + l (h < 2, k < 4, l < 32) has its low 4 bits in
 *              ql[64h + 32(k & 1) + l] (low nibble for k < 2, high nibble for k >= 2) and its top
 *              2 bits in bits 2k, 2k+1 of qh[32h + l]; value = (d*scales[v/16])*(q - 32) (q in 0..63).
 * Dequantized values are computed in float as written (d*q + m, no fused multiply-add).
 */
typedef enum svm_type {
    SVM_F32 = 0,
    SVM_F16 = 1,
    SVM_Q4_1 = 3,
    SVM_Q5_0 = 6,
    SVM_Q8_0 = 8,
    SVM_Q4_K = 12,
    SVM_Q6_K = 14,
} svm_type;

/** Values per block (1 for F32/F16, 32 for Q4_1/Q5_0/Q8_0, 256 for Q4_K/Q6_K); 0 for an unknown type. */
int svm_block_size(svm_type type);
/** Bytes of one row of `cols` values; 0 if the type is unknown or cols is not a multiple of the block. */
size_t svm_row_bytes(svm_type type, int cols);
/** "f32", "f16", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k" or "unknown". */
const char *svm_type_name(svm_type type);

/** Quantize `rows` rows of `cols` floats into `type` blocks (ggml's reference rounding:
 *  Q8_0 d = amax/127, q = round(x/d); Q4_1 d = (max-min)/15, m = min, q = round((x-m)/d) clamped;
 *  Q5_0 d = -(signed value of largest magnitude)/16, q = x/d + 16 rounded, clamped to 31).
 *  Q4_K and Q6_K use a plain quantizer, not ggml's searched one: Q4_K per sub-block step
 *  (max - min(min, 0))/15 and offset -min(min, 0), as 6-bit multiples of d = max step/63 and
 *  dmin = max offset/63; Q6_K per 16 values step -(signed value of largest magnitude)/32, as int8
 *  multiples of d = max |step|/127. Real weights come from GGUF files.
 *  For building weights in tests and benchmarks; dst holds rows * svm_row_bytes(type, cols) bytes. */
svm_status svm_quantize(svm_type type, const float *src, int rows, int cols, void *dst);

/** Dequantize row `row` of W [rows][cols] into out[cols]: the token-embedding lookup (token_embd
 *  row = token id). Exact (values as defined above). */
svm_status svm_embed_row(const void *W, svm_type type, int row, int cols, float *out);

/* ------------------------------------------------------------------------------------------ */
/* Matrix multiplication                                                                        */
/* ------------------------------------------------------------------------------------------ */

/**
 * Y[n][rows] = X[n][cols] . W^T, with W [rows][cols] in `type` (the layout above). Y must not
 * overlap X. Fast path, the one a forward pass uses:
 *  - Quantized weights: each row of X is first quantized to 8-bit blocks of 32 ("Q8
 *    activations": dx = amax/127 in float, qx = x*(1/dx) rounded to nearest-even, qsum = sum qx;
 *    dx = 0 and qx = 0 for an all-zero block), then per block b of 32 columns of row r and token t
 *    the integer dot isum = sum qw*qx is exact and, in float,
 *        Q8_0: y += (dw*dx) * isum           Q4_1: y += (dw*dx) * isum + mw * (dx*qsum)
 *        Q5_0: y += (dw*dx) * isum           (qw = q - 16)
 *        Q4_K: y += (d*dx) * (sc[j]*isum) - (dmin*m[j]) * (dx*qsum)   (qw = q, sub-block j = b mod 8)
 *        Q6_K: y += (d*dx) * (sc[2j]*isum_lo + sc[2j+1]*isum_hi)      (qw = q - 32; lo/hi = the two
 *              halves of 16, each with its own scale; the integer combination is exact)
 *    The K-quants thus use the same 32-value activation blocks as the others (not ggml's Q8_K
 *    256-blocks): one activation layout for every type. The portable path adds the blocks in
 *    order; SIMD paths in vector lanes. The error against the exact product is at most
 *    sum_b (dx_b/2) * sum_{k in b} |w_k| plus float rounding: the same 8-bit activation rounding
 *    llama.cpp uses.
 *  - F32 / F16 weights: same as svm_matmul_exact.
 * Work split: threads take contiguous groups of 4 rows (tokens too when rows are few); each walks
 * 16-row x 64-token cache tiles in register tiles of up to 4 rows x 4 tokens (AVX2: 2 x 2), so a
 * weight block loaded is reused for several tokens (prefill) and n = 1 (decode) streams the
 * weights once (Q5_0/Q4_K/Q6_K: each row's block is unpacked once per tile and reused for its
 * tokens). The AVX-512 path needs VNNI (vpdpbusd); AVX2 uses vpmaddubsw + vpmaddwd.
 * Errors: SVM_ERR_ARG (NULL, rows/cols/n <= 0), SVM_ERR_TYPE, SVM_ERR_SHAPE, SVM_ERR_MEMORY.
 */
svm_status svm_matmul(const void *W, svm_type type, int rows, int cols, const float *X, int n, float *Y);

/**
 * The exact reference product: each weight row is dequantized to float (values as defined above)
 * and dotted with X in float: products summed in 8 interleaved partial sums (lane k mod 8, each
 * acc = acc + w*x, no fused multiply-add), combined as ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)).
 * No activation quantization. The AVX2 version (used on AVX2 and AVX-512 machines) performs the
 * same operations 8 lanes at a time, so results are bit-identical on every path and thread count.
 * Several times slower than svm_matmul (n = 1: ~20 GFLOP/s per core). Same arguments and errors.
 */
svm_status svm_matmul_exact(const void *W, svm_type type, int rows, int cols, const float *X, int n, float *Y);

/* ------------------------------------------------------------------------------------------ */
/* Element-wise and row-wise kernels                                                            */
/* ------------------------------------------------------------------------------------------ */

/** RMSNorm of n rows of `dim`: out[i][j] = (x[i][j] * s_i) * weight[j], s_i = (float)(1 / sqrt(
 *  sum_j x^2 / dim + eps)) with the sum in double. weight may be NULL (no scaling). out may alias x. */
void svm_rmsnorm(const float *x, const float *weight, int n, int dim, float eps, float *out);

/** RoPE, adjacent-pair form (GGUF Llama Q/K), in place on x[n_tokens][n_heads][head_dim]:
 *  for pair i in [0, head_dim/2), angle a = positions[t] * base^(-2i/head_dim) (in double),
 *  (x[2i], x[2i+1]) <- (x0*c - x1*s, x0*s + x1*c) with c = (float)cos a, s = (float)sin a.
 *  head_dim must be even. positions[n_tokens] are absolute token positions.
 *  Same as svm_rope_table + svm_rope_apply. Errors: SVM_ERR_ARG, SVM_ERR_MEMORY. */
svm_status svm_rope_adjacent(float *x, int n_tokens, int n_heads, int head_dim, const int32_t *positions, float base);

/** The cos/sin table of svm_rope_adjacent: table[t][2i] = c, table[t][2i+1] = s ([n_tokens][head_dim]
 *  floats). Compute it once per forward pass and apply it to Q and K of every layer. */
svm_status svm_rope_table(const int32_t *positions, int n_tokens, int head_dim, float base, float *table);

/** Apply a table of svm_rope_table to x[n_tokens][n_heads][head_dim] in place (no-op on bad args). */
void svm_rope_apply(float *x, int n_tokens, int n_heads, int head_dim, const float *table);

/** SwiGLU: out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)), i < n (all elements).
 *  exp(-g) is computed as svm's vectorizable exp2(-g * log2 e): relative error ~2e-7 plus the
 *  rounding of the product (~|g| * 1e-7); identical on every ISA path.
 *  out may alias gate or up. */
void svm_swiglu(const float *gate, const float *up, int64_t n, float *out);

/** out[i] = a[i] + b[i], i < n. out may alias a or b (the residual add: svm_add(x, y, n, x)). */
void svm_add(const float *a, const float *b, int64_t n, float *out);

/** Softmax of each of n rows of `dim`, in place, numerically stable (max subtracted; libm expf;
 *  sum in double). */
void svm_softmax(float *x, int n, int dim);

/* ------------------------------------------------------------------------------------------ */
/* Dense causal attention (prefill)                                                             */
/* ------------------------------------------------------------------------------------------ */

/**
 * Causal GQA attention of n_q queries against n_kv keys (n_q <= n_kv): the queries are the LAST
 * n_q positions, so query i (position p = n_kv - n_q + i) sees keys 0..p.
 *   q[n_q][n_q_heads][head_dim], k/v[n_kv][n_kv_heads][head_dim], out[n_q][n_q_heads][head_dim]
 * (the token-major layouts svm_matmul produces). Query head h uses KV head h / (n_q_heads /
 * n_kv_heads). out = softmax(scale * q.k) . v per query head. Keys are processed in blocks of 64
 * with an online (running max) softmax, queries in blocks of 16 tokens x the GQA group; OpenMP over
 * (KV head x query block). Probabilities are exp2(scale*log2(e)*q.k - running max) with svm's
 * vectorizable exp2 (relative error ~2e-7); outputs match a double-precision softmax reference to
 * about 1e-6 of max |v| (the tests allow 2e-5).
 * Errors: SVM_ERR_ARG (NULL, sizes <= 0, n_q > n_kv, n_q_heads % n_kv_heads != 0), SVM_ERR_MEMORY.
 */
svm_status svm_attention(const float *q, int n_q, const float *k, const float *v, int n_kv, int n_q_heads,
                         int n_kv_heads, int head_dim, float scale, float *out);

/** Prefill attention over a whole prompt: svm_attention with n_q = n_kv = n_tokens. */
svm_status svm_causal_attention(const float *q, const float *k, const float *v, int n_tokens, int n_q_heads,
                                int n_kv_heads, int head_dim, float scale, float *out);

/* ------------------------------------------------------------------------------------------ */
/* Benchmark                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/**
 * Time svm_matmul (exact = 0) or svm_matmul_exact (exact = 1) on random weights of `type`
 * [rows][cols] and random X[n][cols], with the current ISA and thread settings: one warm-up call,
 * then `iters` calls. Returns the seconds of the fastest call (negative svm_status on error): on a
 * shared machine the minimum is the stable statistic.
 * GFLOP/s = 2 * rows * cols * n / seconds / 1e9.
 */
double svm_bench_matmul(svm_type type, int rows, int cols, int n, int iters, int exact);

/** Same for svm_causal_attention with n_tokens tokens (FLOPs ~ 2 * 2 * n^2/2 * n_q_heads * head_dim). */
double svm_bench_attention(int n_tokens, int n_q_heads, int n_kv_heads, int head_dim, int iters);

#ifdef __cplusplus
}
#endif

#endif /* SPARKV_MODEL_H */
