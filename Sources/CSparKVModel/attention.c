/* Dense causal GQA attention for prefill, flash-attention style on the CPU.
 *
 * Work unit (one OpenMP task): one KV head x one block of QB query tokens; its rows are the
 * QB tokens x G query heads of the group (row i = token * G + g), so every key block is loaded
 * once for the whole group. Keys go by in blocks of 64, transposed once up front to
 * Kt[kv head][key block][dim][64] so the score kernel is a broadcast-multiply-add over 64 keys.
 * Per block: S = Qs . Kt, causal mask, online softmax in base 2 (Qs carries scale * log2 e; running
 * max m and sum l per row, both rescaled by alpha = exp2(m_old - m_new)), O = alpha O + P . V. Finally out = O / l. Tasks are dealt round-robin (static, 1) so the triangle's
 * uneven rows spread over the threads; each task's arithmetic is independent of the thread count. */
#include "attention_kernels.h"

#include <math.h>
#include "omp_compat.h" /* csrc/platform/: OpenMP or single-threaded stand-ins */

#define QB 16 /* query tokens per task */

static void scores_portable(const float *Q, int nq, int hd, const float *Kt, float *S) {
    scores_body(Q, nq, hd, Kt, S);
}
static void softmax_portable(float *S, int nq, const int *visible, float *m, float *l, float *alpha) {
    softmax_body(S, nq, visible, m, l, alpha);
}
static void accumulate_portable(const float *P, int nq, int nk, const float *V, size_t ldv, int hd,
                                const float *alpha, float *O) {
    accumulate_body(P, nq, nk, V, ldv, hd, alpha, O);
}
const svm_attn_path svm_attn_portable = {scores_portable, softmax_portable, accumulate_portable};


svm_status svm_attention(const float *q, int n_q, const float *k, const float *v, int n_kv, int n_q_heads,
                         int n_kv_heads, int head_dim, float scale, float *out) {
    if (!q || !k || !v || !out || n_q <= 0 || n_kv <= 0 || n_q > n_kv || n_q_heads <= 0 || n_kv_heads <= 0 ||
        head_dim <= 0 || n_q_heads % n_kv_heads)
        return SVM_ERR_ARG;
    const svm_attn_path *path = &svm_attn_portable;
#if SVM_X86
    const svm_isa isa = svm_current_isa();
    if (isa == SVM_ISA_AVX512 && head_dim % 16 == 0) path = &svm_attn_avx512;
    else if ((isa == SVM_ISA_AVX2 || isa == SVM_ISA_AVX512) && head_dim % 8 == 0) path = &svm_attn_avx2;
#endif

    const int G = n_q_heads / n_kv_heads, D = head_dim, HD = n_kv_heads * D;
    const int nkb = (n_kv + SVM_KB - 1) / SVM_KB, nqb = (n_q + QB - 1) / QB;
    const int rows = QB * G, q0 = n_kv - n_q;
    const size_t kt_floats = (size_t)n_kv_heads * nkb * D * SVM_KB;
    /* per thread: Qs [rows][D], O [rows][D], S [rows][64], m, l, alpha, visible [rows] */
    const size_t th_floats = ((size_t)rows * (2 * D + SVM_KB + 4) + 15) & ~(size_t)15;
    int nth = svm_threads();
    const int tasks = nqb * n_kv_heads;
    if (nth > tasks) nth = tasks;
    float *kt = svm_scratch(1, sizeof(float) * (kt_floats + th_floats * nth));
    if (!kt) return SVM_ERR_MEMORY;
    const float qscale = scale * 1.44269504088896341f;

#pragma omp parallel num_threads(nth)
    {
#pragma omp for schedule(static)
        for (int hb = 0; hb < n_kv_heads * nkb; hb++) {
            const int h = hb / nkb, b = hb % nkb;
            float *dst = kt + (size_t)hb * D * SVM_KB;
            for (int j = 0; j < SVM_KB; j++) {
                const int t = b * SVM_KB + j;
                const float *src = k + (size_t)HD * t + (size_t)h * D;
                for (int d = 0; d < D; d++) dst[(size_t)SVM_KB * d + j] = t < n_kv ? src[d] : 0.0f;
            }
        }

        float *Qs = kt + kt_floats + th_floats * omp_get_thread_num();
        float *O = Qs + (size_t)rows * D, *S = O + (size_t)rows * D, *m = S + (size_t)rows * SVM_KB,
              *l = m + rows, *alpha = l + rows;
        int *vis = (int *)(alpha + rows);
#pragma omp for schedule(static, 1)
        for (int task = 0; task < tasks; task++) {
            const int qb = nqb - 1 - task / n_kv_heads; /* longest rows first */
            const int h = task % n_kv_heads;
            const int tok0 = qb * QB, ntok = n_q - tok0 < QB ? n_q - tok0 : QB, nr = ntok * G;
            for (int tq = 0; tq < ntok; tq++)
                for (int g = 0; g < G; g++) {
                    const float *src = q + ((size_t)(tok0 + tq) * n_q_heads + (size_t)h * G + g) * D;
                    float *dq = Qs + (size_t)(tq * G + g) * D;
                    for (int d = 0; d < D; d++) dq[d] = src[d] * qscale;
                }
            for (int i = 0; i < nr; i++) {
                m[i] = -INFINITY;
                l[i] = 0.0f;
            }
            memset(O, 0, sizeof(float) * (size_t)nr * D);
            const int last = q0 + tok0 + ntok - 1; /* last key position any row of the task sees */
            for (int b = 0; b <= last / SVM_KB; b++) {
                const int key0 = b * SVM_KB;
                const int nk = n_kv - key0 < SVM_KB ? n_kv - key0 : SVM_KB;
                path->scores(Qs, nr, D, kt + ((size_t)h * nkb + b) * D * SVM_KB, S);
                for (int tq = 0; tq < ntok; tq++) {
                    int visible = q0 + tok0 + tq - key0 + 1; /* keys key0 .. the row's position */
                    if (visible > nk) visible = nk;
                    for (int g = 0; g < G; g++) vis[tq * G + g] = visible;
                }
                path->softmax(S, nr, vis, m, l, alpha);
                path->accumulate(S, nr, nk, v + (size_t)key0 * HD + (size_t)h * D, (size_t)HD, D, alpha, O);
            }
            for (int tq = 0; tq < ntok; tq++)
                for (int g = 0; g < G; g++) {
                    const int i = tq * G + g;
                    const float inv = 1.0f / l[i];
                    const float *oi = O + (size_t)D * i;
                    float *dst = out + ((size_t)(tok0 + tq) * n_q_heads + (size_t)h * G + g) * D;
                    for (int d = 0; d < D; d++) dst[d] = oi[d] * inv;
                }
        }
    }
    return SVM_OK;
}

svm_status svm_causal_attention(const float *q, const float *k, const float *v, int n_tokens, int n_q_heads,
                                int n_kv_heads, int head_dim, float scale, float *out) {
    return svm_attention(q, n_tokens, k, v, n_tokens, n_q_heads, n_kv_heads, head_dim, scale, out);
}
