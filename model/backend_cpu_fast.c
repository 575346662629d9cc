/* The fast CPU backend (device "cpu"; the reference stays reachable as "cpu-ref").
 *
 * It starts from the reference backend's op table and replaces the ops where the time goes:
 * - BF16 matrices stay as stored in the mapping (no float32 copy: half the resident memory and
 *   half the bytes a decode step streams). Products convert bf16 -> f32 in registers (exact:
 *   bf16 is the top half of an f32), accumulate in float32.
 * - Up to DQ_FAST_GEMV_ROWS rows (decode, batched decode): one AVX2 pass over the weights for all
 *   rows, threads over output features. Each row's sum runs in the same order whatever the
 *   number of rows, so the backend promises row invariance (batched decode = decode alone).
 * - More rows (vision, prefill): BF16 weights are converted panel by panel into a per-thread
 *   float32 scratch and multiplied by OpenBLAS sgemm inside our own OpenMP loop (the OpenMP
 *   OpenBLAS runs single-threaded there); F32 weights go to threaded sgemm as in the reference.
 * - Attention: tiled with online softmax (flash-attention style): per (sequence, head, block
 *   of query rows) the keys go by in blocks; the score matrix is never larger than one
 *   [DQ_FAST_QB, DQ_FAST_KB] tile per thread, all scratch preallocated.
 * - gelu_tanh and silu_mul in float32 AVX2 with a vector exp: gelu_tanh(x) = x * sigmoid(2u),
 *   the identity 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)), which has no cancellation.
 * Norms, rope, layout ops and memory are the reference's own functions.
 *
 * AVX2+FMA kernels are chosen at run time (__builtin_cpu_supports); other CPUs get portable C
 * loops with the same results up to float rounding. AVX512-BF16 (vdpbf16ps) is not used yet.
 */
#include "backend.h"

#include "dq_error.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define DQ_FAST_GEMV_ROWS 8
#define DQ_FAST_PANEL     128 /* weight rows converted to float32 at a time */
#define DQ_FAST_XBLOCK    1024
#define DQ_FAST_QB        64  /* query rows per attention tile */
#define DQ_FAST_KB        256 /* keys per attention tile */
#define DQ_FAST_HEAD_MAX  256

typedef struct {
    DqBackend *ref;
    int threads;
    gboolean avx2;
    float *panel;        /* [threads][DQ_FAST_PANEL * panel_cols]: bf16 panels as float32 */
    size_t panel_cols;   /* largest bf16 matrix width seen at weight_init */
    float *attn_scratch; /* [threads][QB*KB + QB*HEAD_MAX + 2*QB] */
} FastCtx;

#define DQ_FAST_ATTN_FLOATS                                                                        \
    ((size_t)DQ_FAST_QB * DQ_FAST_KB + (size_t)DQ_FAST_QB * DQ_FAST_HEAD_MAX + 2 * DQ_FAST_QB)

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- memory and weights */

static gboolean fast_weight_init(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                                 GError **err) {
    FastCtx *ctx = be->ctx;
    if (t->dtype != DQ_DTYPE_BF16 || rows <= 1 || ((uintptr_t)t->data % 2) != 0)
        return ctx->ref->weight_init(ctx->ref, w, t, rows, cols, err); /* vectors, F32, F16 */
    memset(w, 0, sizeof *w);
    w->rows = rows;
    w->cols = cols;
    if ((int64_t)rows * cols != t->numel)
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s: tensor '%s' has %" G_GINT64_FORMAT " elements, expected %d x %d",
                       t->file, t->name, t->numel, rows, cols);
    w->data = t->data; /* mapped BF16, never copied */
    w->dtype = DQ_DTYPE_BF16;
    if ((size_t)cols > ctx->panel_cols) {
        /* Grown at load time only, so products never allocate. */
        float *p = ctx->ref->alloc(ctx->ref, (size_t)ctx->threads * DQ_FAST_PANEL * cols);
        if (p == NULL)
            return dq_fail(err, DQ_ERR_LIMIT, "%s: tensor '%s': out of memory for bf16 panels",
                           t->file, t->name);
        ctx->ref->release(ctx->ref, ctx->panel);
        ctx->panel = p;
        ctx->panel_cols = (size_t)cols;
    }
    return TRUE;
}

static void fast_weight_free(DqBackend *be, DqWeight *w) {
    FastCtx *ctx = be->ctx;
    if (w->dtype == DQ_DTYPE_BF16) {
        memset(w, 0, sizeof *w);
        return;
    }
    ctx->ref->weight_free(ctx->ref, w);
}

/* ---- products with few rows: y [n, rows] = x [n, cols] . w^T, n <= DQ_FAST_GEMV_ROWS */

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four output features at a time (four independent FMA chains: one chain alone waits on the
 * FMA latency), each x row in turn. A row's sums run in the same order whatever n is. */
__attribute__((target("avx2,fma"))) static inline __m256 load_w8(const void *wd, gboolean bf16,
                                                                 size_t at) {
    if (bf16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)wd + at))),
            16));
    return _mm256_loadu_ps((const float *)wd + at);
}

__attribute__((target("avx2,fma"))) static void gemv_avx2(float *y, const float *x, const void *wd,
                                                          gboolean bf16, const float *bias, int o0,
                                                          int o1, int rows, int cols, int n) {
    int c8 = cols & ~7;
    for (int ob = o0; ob < o1; ob += 4) {
        int no = MIN(4, o1 - ob);
        size_t w0 = (size_t)ob * cols, w1 = w0 + (no > 1 ? cols : 0),
               w2 = w0 + (no > 2 ? 2 * (size_t)cols : 0), w3 = w0 + (no > 3 ? 3 * (size_t)cols : 0);
        for (int r = 0; r < n; r++) {
            const float *xr = x + (size_t)r * cols;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int k = 0; k < c8; k += 8) {
                __m256 xv = _mm256_loadu_ps(xr + k);
                a0 = _mm256_fmadd_ps(load_w8(wd, bf16, w0 + k), xv, a0);
                a1 = _mm256_fmadd_ps(load_w8(wd, bf16, w1 + k), xv, a1);
                a2 = _mm256_fmadd_ps(load_w8(wd, bf16, w2 + k), xv, a2);
                a3 = _mm256_fmadd_ps(load_w8(wd, bf16, w3 + k), xv, a3);
            }
            __m256 acc[4] = {a0, a1, a2, a3};
            for (int j = 0; j < no; j++) {
                int o = ob + j;
                float s = hsum256(acc[j]);
                for (int k = c8; k < cols; k++)
                    s += (bf16 ? bf16_to_f32(((const uint16_t *)wd)[(size_t)o * cols + k])
                               : ((const float *)wd)[(size_t)o * cols + k]) *
                         xr[k];
                y[(size_t)r * rows + o] = bias != NULL ? s + bias[o] : s;
            }
        }
    }
}

static void gemv_portable(float *y, const float *x, const void *wd, gboolean bf16,
                          const float *bias, int o0, int o1, int rows, int cols, int n) {
    for (int o = o0; o < o1; o++)
        for (int r = 0; r < n; r++) {
            const float *xr = x + (size_t)r * cols;
            float s = 0.0f;
            for (int k = 0; k < cols; k++)
                s += (bf16 ? bf16_to_f32(((const uint16_t *)wd)[(size_t)o * cols + k])
                           : ((const float *)wd)[(size_t)o * cols + k]) *
                     xr[k];
            y[(size_t)r * rows + o] = bias != NULL ? s + bias[o] : s;
        }
}

static void fast_gemv(FastCtx *ctx, float *y, const float *x, const DqWeight *w,
                      const DqWeight *bias, int n) {
    gboolean bf16 = w->dtype == DQ_DTYPE_BF16;
    const float *b = bias != NULL ? bias->data : NULL;
    int rows = w->rows, cols = w->cols;
    int blocks = (rows + 63) / 64;
#pragma omp parallel for schedule(static) num_threads(ctx->threads) if (blocks > 1)
    for (int blk = 0; blk < blocks; blk++) {
        int o0 = blk * 64, o1 = MIN(rows, o0 + 64);
        if (ctx->avx2)
            gemv_avx2(y, x, w->data, bf16, b, o0, o1, rows, cols, n);
        else
            gemv_portable(y, x, w->data, bf16, b, o0, o1, rows, cols, n);
    }
}

/* ---- products with many rows and BF16 weights: panels of the weight as float32, sgemm */

__attribute__((target("avx2"))) static void bf16_rows_avx2(float *dst, const uint16_t *src,
                                                           size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(
                         _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i))), 16)));
    for (; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}

static void fast_gemm_bf16(FastCtx *ctx, float *y, const float *x, const DqWeight *w,
                           const DqWeight *bias, int n) {
    int rows = w->rows, cols = w->cols;
    int panels = (rows + DQ_FAST_PANEL - 1) / DQ_FAST_PANEL;
    int xblocks = (n + DQ_FAST_XBLOCK - 1) / DQ_FAST_XBLOCK;
    /* Panels outer, x blocks inner: a thread converts its panel once per x block it gets,
     * which is 1/DQ_FAST_XBLOCK of that block's arithmetic. */
#pragma omp parallel num_threads(ctx->threads)
    {
        float *pf = ctx->panel + (size_t)omp_get_thread_num() * DQ_FAST_PANEL * ctx->panel_cols;
#pragma omp for schedule(dynamic) collapse(2)
        for (int xb = 0; xb < xblocks; xb++)
            for (int p = 0; p < panels; p++) {
                int o0 = p * DQ_FAST_PANEL, no = MIN(rows, o0 + DQ_FAST_PANEL) - o0;
                int r0 = xb * DQ_FAST_XBLOCK, nr = MIN(n, r0 + DQ_FAST_XBLOCK) - r0;
                const uint16_t *src = (const uint16_t *)w->data + (size_t)o0 * cols;
                if (ctx->avx2)
                    bf16_rows_avx2(pf, src, (size_t)no * cols);
                else
                    for (size_t i = 0; i < (size_t)no * cols; i++)
                        pf[i] = bf16_to_f32(src[i]);
                float *yb = y + (size_t)r0 * rows + o0;
                float beta = 0.0f;
                if (bias != NULL) {
                    for (int r = 0; r < nr; r++)
                        memcpy(yb + (size_t)r * rows, bias->data + o0, (size_t)no * sizeof(float));
                    beta = 1.0f;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, no, cols, 1.0f,
                            x + (size_t)r0 * cols, cols, pf, cols, beta, yb, rows);
            }
    }
}

static void fast_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w,
                        const DqWeight *bias, int n) {
    FastCtx *ctx = be->ctx;
    if (n <= 0)
        return;
    if (n <= DQ_FAST_GEMV_ROWS)
        fast_gemv(ctx, y, x, w, bias, n);
    else if (w->dtype == DQ_DTYPE_BF16)
        fast_gemm_bf16(ctx, y, x, w, bias, n);
    else
        ctx->ref->matmul(ctx->ref, y, x, w, bias, n); /* threaded OpenBLAS sgemm */
}

static void fast_embed(DqBackend *be, float *out, const DqWeight *table, const int32_t *ids,
                       int n) {
    FastCtx *ctx = be->ctx;
    if (table->dtype != DQ_DTYPE_BF16) {
        ctx->ref->embed(ctx->ref, out, table, ids, n);
        return;
    }
    for (int r = 0; r < n; r++) {
        const uint16_t *src = (const uint16_t *)table->data + (size_t)ids[r] * table->cols;
        for (int i = 0; i < table->cols; i++)
            out[(size_t)r * table->cols + i] = bf16_to_f32(src[i]);
    }
}

static void fast_add_broadcast(DqBackend *be, float *y, const DqWeight *w, int n_outer) {
    FastCtx *ctx = be->ctx;
    if (w->dtype != DQ_DTYPE_BF16) {
        ctx->ref->add_broadcast(ctx->ref, y, w, n_outer);
        return;
    }
    size_t inner = (size_t)w->rows * w->cols;
    const uint16_t *src = (const uint16_t *)w->data;
#pragma omp parallel for num_threads(ctx->threads) if (n_outer > 1)
    for (int o = 0; o < n_outer; o++)
        for (size_t i = 0; i < inner; i++)
            y[(size_t)o * inner + i] += bf16_to_f32(src[i]);
}

/* ---- attention: tiles of queries x keys, online softmax */

static void attn_tile(const DqAttention *a, const float *qh, const float *kh, const float *vh,
                      float *oh, int out_stride, int i0, int nq, float *scratch) {
    int d = a->head_dim;
    float *sc = scratch;                                     /* [nq, KB] */
    float *acc = sc + (size_t)DQ_FAST_QB * DQ_FAST_KB;       /* [nq, d] */
    float *mx = acc + (size_t)DQ_FAST_QB * DQ_FAST_HEAD_MAX; /* [nq] running max */
    float *sum = mx + DQ_FAST_QB;                            /* [nq] running sum */
    for (int i = 0; i < nq; i++) {
        mx[i] = -INFINITY;
        sum[i] = 0.0f;
    }
    memset(acc, 0, (size_t)nq * d * sizeof(float));
    /* Causal: the tile's last row sees keys up to q_pos0 + i0 + nq - 1. */
    int n_kv = a->causal ? MIN(a->n_kv, a->q_pos0 + i0 + nq) : a->n_kv;
    for (int j0 = 0; j0 < n_kv; j0 += DQ_FAST_KB) {
        int nk = MIN(n_kv, j0 + DQ_FAST_KB) - j0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, d, a->scale, qh, a->q_stride,
                    kh + (size_t)j0 * a->kv_stride, a->kv_stride, 0.0f, sc, DQ_FAST_KB);
        for (int i = 0; i < nq; i++) {
            float *row = sc + (size_t)i * DQ_FAST_KB;
            int visible = a->causal ? MIN(nk, a->q_pos0 + i0 + i + 1 - j0) : nk;
            float m = mx[i];
            for (int j = 0; j < visible; j++)
                m = MAX(m, row[j]);
            if (visible <= 0) {
                memset(row, 0, (size_t)nk * sizeof(float));
                continue;
            }
            float corr = expf(mx[i] - m); /* 0 on the first tile (mx = -inf) */
            float s = 0.0f;
            for (int j = 0; j < visible; j++) {
                row[j] = expf(row[j] - m);
                s += row[j];
            }
            for (int j = visible; j < nk; j++)
                row[j] = 0.0f;
            sum[i] = sum[i] * corr + s;
            mx[i] = m;
            if (corr != 1.0f)
                for (int c = 0; c < d; c++)
                    acc[(size_t)i * d + c] *= corr;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, d, nk, 1.0f, sc, DQ_FAST_KB,
                    vh + (size_t)j0 * a->kv_stride, a->kv_stride, 1.0f, acc, d);
    }
    for (int i = 0; i < nq; i++) {
        float inv = 1.0f / sum[i];
        for (int c = 0; c < d; c++)
            oh[(size_t)i * out_stride + c] = acc[(size_t)i * d + c] * inv;
    }
}

static void fast_attention(DqBackend *be, float *out, const float *q, const float *k,
                           const float *v, const DqAttention *a) {
    FastCtx *ctx = be->ctx;
    if (a->head_dim > DQ_FAST_HEAD_MAX) {
        ctx->ref->attention(ctx->ref, out, q, k, v, a);
        return;
    }
    int group = a->n_heads / a->n_kv_heads;
    int out_stride = a->n_heads * a->head_dim;
    int n_blocks = (a->n_q + DQ_FAST_QB - 1) / DQ_FAST_QB;
    int jobs = a->n_seq * a->n_heads * n_blocks;
#pragma omp parallel for schedule(dynamic) num_threads(ctx->threads) if (jobs > 1)
    for (int job = 0; job < jobs; job++) {
        int s = job / (a->n_heads * n_blocks);
        int h = job / n_blocks % a->n_heads, g = h / group;
        int i0 = job % n_blocks * DQ_FAST_QB, nq = MIN(a->n_q, i0 + DQ_FAST_QB) - i0;
        const float *qh =
            q + s * a->q_seq_stride + (size_t)i0 * a->q_stride + (size_t)h * a->head_dim;
        const float *kh = k + s * a->kv_seq_stride + (size_t)g * a->head_dim;
        const float *vh = v + s * a->kv_seq_stride + (size_t)g * a->head_dim;
        float *oh = out + ((size_t)s * a->n_q + i0) * out_stride + (size_t)h * a->head_dim;
        attn_tile(a, qh, kh, vh, oh, out_stride, i0, nq,
                  ctx->attn_scratch + (size_t)omp_get_thread_num() * DQ_FAST_ATTN_FLOATS);
    }
}

/* ---- elementwise: float32 vector exp (Cephes' polynomial, ~1 ulp on the range used) */

__attribute__((target("avx2,fma"))) static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

#define DQ_GELU_K 0.7978845608028654f /* sqrt(2 / pi) */

__attribute__((target("avx2,fma"))) static void gelu_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
        __m256 u = _mm256_mul_ps(_mm256_set1_ps(DQ_GELU_K),
                                 _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
        __m256 e = exp256(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f)));
        _mm256_storeu_ps(x + i, _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e)));
    }
    for (; i < n; i++) {
        float v = x[i], u = DQ_GELU_K * (v + 0.044715f * v * v * v);
        x[i] = v / (1.0f + expf(-2.0f * u));
    }
}

__attribute__((target("avx2,fma"))) static void silu_mul_avx2(float *g, const float *up, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
        __m256 s = _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++)
        g[i] = (g[i] / (1.0f + expf(-g[i]))) * up[i];
}

#define DQ_FAST_CHUNK ((size_t)16384)

static void fast_gelu_tanh(DqBackend *be, float *x, size_t n) {
    FastCtx *ctx = be->ctx;
    if (!ctx->avx2) {
        ctx->ref->gelu_tanh(ctx->ref, x, n);
        return;
    }
    size_t chunks = (n + DQ_FAST_CHUNK - 1) / DQ_FAST_CHUNK;
#pragma omp parallel for num_threads(ctx->threads) if (chunks > 1)
    for (size_t c = 0; c < chunks; c++)
        gelu_avx2(x + c * DQ_FAST_CHUNK, MIN(DQ_FAST_CHUNK, n - c * DQ_FAST_CHUNK));
}

static void fast_silu_mul(DqBackend *be, float *gate, const float *up, size_t n) {
    FastCtx *ctx = be->ctx;
    if (!ctx->avx2) {
        ctx->ref->silu_mul(ctx->ref, gate, up, n);
        return;
    }
    size_t chunks = (n + DQ_FAST_CHUNK - 1) / DQ_FAST_CHUNK;
#pragma omp parallel for num_threads(ctx->threads) if (chunks > 1)
    for (size_t c = 0; c < chunks; c++)
        silu_mul_avx2(gate + c * DQ_FAST_CHUNK, up + c * DQ_FAST_CHUNK,
                      MIN(DQ_FAST_CHUNK, n - c * DQ_FAST_CHUNK));
}

static void fast_destroy(DqBackend *be) {
    FastCtx *ctx = be->ctx;
    ctx->ref->release(ctx->ref, ctx->panel);
    ctx->ref->release(ctx->ref, ctx->attn_scratch);
    dq_backend_free(ctx->ref);
    g_free(ctx);
    g_free(be);
}

DqBackend *dq_backend_cpu_fast_new(GError **err) {
    DqBackend *ref = dq_backend_cpu_new(err);
    if (ref == NULL)
        return NULL;
    FastCtx *ctx = g_new0(FastCtx, 1);
    ctx->ref = ref;
    ctx->threads = omp_get_max_threads();
    __builtin_cpu_init();
    ctx->avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                g_getenv("DOCQA_CPU_NO_AVX2") == NULL;
    ctx->attn_scratch = ref->alloc(ref, DQ_FAST_ATTN_FLOATS * (size_t)ctx->threads);
    if (ctx->attn_scratch == NULL) {
        dq_backend_free(ref);
        g_free(ctx);
        dq_fail(err, DQ_ERR_LIMIT, "cpu backend: out of memory for attention scratch");
        return NULL;
    }
    DqBackend *be = g_new0(DqBackend, 1);
    *be = *ref; /* memory, norms, rope, layout ops: the reference's */
    be->name = "cpu";
    be->ctx = ctx;
    be->destroy = fast_destroy;
    be->weight_init = fast_weight_init;
    be->weight_free = fast_weight_free;
    be->matmul = fast_matmul;
    be->embed = fast_embed;
    be->add_broadcast = fast_add_broadcast;
    be->attention = fast_attention;
    be->gelu_tanh = fast_gelu_tanh;
    be->silu_mul = fast_silu_mul;
    be->matmul_row_invariant_max = DQ_FAST_GEMV_ROWS;
    return be;
}
