/* The fast CPU backend (device "cpu"; the reference stays reachable as "cpu-ref").
 *
 * It starts from the reference backend's op table and replaces the ops where the time goes:
 * - BF16 matrices stay as stored in the mapping (no float32 copy: half the resident memory and
 *   half the bytes a decode step streams). Products widen bf16 -> f32 in registers (exact:
 *   bf16 is the top half of an f32) and accumulate in float32.
 * - Up to DQ_FAST_GEMV_ROWS rows (decode, batched decode): one AVX2 pass over the weights for all
 *   rows, threads over output features. Each row's sum runs in the same order whatever the
 *   number of rows, so the backend promises row invariance (batched decode = decode alone).
 * - More rows (vision, prefill): our packed GEMM (cpu_gemm.c), float32 and bf16 weights alike,
 *   whose results do not depend on the row count either (from DQ_FAST_GEMV_ROWS + 1 rows on),
 *   so the forward pass runs all tiles, all prompts, as one product.
 * - Attention: flash-attention style with GEMM-kernel tiles and online softmax for many query
 *   rows (on AMX, split products on tiles: attn_range_amx; --weights bf16 on AVX512-BF16 alone,
 *   vdpbf16ps: attn_range_dot); for decode, dot products over the KV
 *   cache split over the keys across threads (below).
 * - gelu_tanh and silu_mul in float32 AVX2 with a vector exp: gelu_tanh(x) = x * sigmoid(2u),
 *   the identity 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)), which has no cancellation.
 * Norms, layout ops and memory are the reference's own functions; rope keeps its cos and sin.
 *
 * AVX2+FMA kernels are chosen at run time (dq_cpu_has_avx2); other CPUs get portable C loops
 * with the same results up to float rounding. Where the CPU has AVX-512F the GEMM runs a 12 x 32
 * kernel with the AVX2 kernel's exact results (cpu_gemm.c), and the decode GEMV a 512-bit twin of
 * its AVX2 one (row-invariant, its own summation order); with --weights bf16, vision and prefill
 * products go through AMX tiles or vdpbf16ps where the CPU has them (cpu_gemm_bf16.c).
 */
#include "backend.h"

#include "cpu_gemm.h"
#include "cpu_q8.h"
#include "cpu_simd.h"
#include "dq_error.h"

#include <cpuid.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define DQ_FAST_GEMV_ROWS 8

/* --weights bf16 (weight_init_bf16): bf16 data, mapped or owned, whose products with many rows
 * round the activations to bf16 as well when ctx->bf16_dot. */
#define DQ_WEIGHT_BF16_DOT 0x52

typedef struct {
    DqBackend *ref;
    int threads;
    /* DQ_WEIGHT_BF16_DOT products through AMX or vdpbf16ps (DQ_GEMM_B_WT_BF16_DOT): where the CPU
     * has AVX512-BF16, or with DOCQA_BF16_DOT=emulate (its emulation, slow: to measure the option's
     * accuracy on other CPUs); elsewhere, or with DOCQA_BF16_DOT=0, the bf16 weights times float32
     * activations. */
    gboolean bf16_dot;
    float *pack;         /* [threads][DQ_GEMM_PACK_FLOATS], then DQ_GEMM_SHARED_FLOATS */
    float *attn_scratch; /* [threads][DQ_FAST_ATTN_FLOATS] */
    /* rope's cos and sin of positions 0 .. rope_filled - 1 ([DQ_FAST_ROPE_POSITIONS, half, 2]),
     * for one table (ctx->rope): the model's */
    float *rope_cs;
    int rope_filled;
    DqRope rope; /* the table rope_cs was computed from */
} FastCtx;

/* ---- memory and weights */

static gboolean fast_weight_init(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                                 GError **err) {
    FastCtx *ctx = be->ctx;
    if (t->dtype != DQ_DTYPE_BF16 || rows <= 1 || ((uintptr_t)t->data % 2) != 0)
        return ctx->ref->weight_init(ctx->ref, w, t, rows, cols, err); /* vectors, F32, F16 */
    if (!dq_weight_shape(w, t, rows, cols, err))
        return FALSE;
    w->data = t->data; /* mapped BF16, never copied */
    w->dtype = DQ_DTYPE_BF16;
    return TRUE;
}

/* --weights bf16: matrices as bf16, rounded at load unless stored so. */
static gboolean fast_weight_init_bf16(DqBackend *be, DqWeight *w, const DqTensor *t, int rows,
                                      int cols, GError **err) {
    if (rows <= 1)
        return fast_weight_init(be, w, t, rows, cols, err);
    if (t->dtype == DQ_DTYPE_BF16 && ((uintptr_t)t->data % 2) == 0) {
        if (!fast_weight_init(be, w, t, rows, cols, err))
            return FALSE;
        w->dtype = DQ_WEIGHT_BF16_DOT;
        return TRUE;
    }
    if (!dq_weight_shape(w, t, rows, cols, err))
        return FALSE;
    size_t n = (size_t)rows * cols, esize = dq_dtype_size(t->dtype);
    uint16_t *buf = aligned_alloc(64, (n * sizeof(uint16_t) + 63) / 64 * 64);
    if (buf == NULL)
        return dq_fail(err, DQ_ERR_LIMIT, "%s: out of memory for bf16 tensor '%s' (%d x %d)",
                       t->file, t->name, rows, cols);
    float *row = g_new(float, cols);
    for (int r = 0; r < rows; r++) {
        /* the mapping is not necessarily aligned: dq_convert_to_f32 reads bytes */
        dq_convert_to_f32(row, (const char *)t->data + (size_t)r * cols * esize, t->dtype,
                          (size_t)cols);
        for (int c = 0; c < cols; c++)
            buf[(size_t)r * cols + c] = dq_f32_bf16(row[c]);
    }
    g_free(row);
    *w = (DqWeight){.rows = rows,
                    .cols = cols,
                    .data = (const float *)(void *)buf,
                    .owned = buf,
                    .dtype = DQ_WEIGHT_BF16_DOT};
    return TRUE;
}

/* --weights int8: matrices whose width is a multiple of 32 become int8 blocks (cpu_q8.h). */
static gboolean fast_weight_init_q8(DqBackend *be, DqWeight *w, const DqTensor *t, int rows,
                                    int cols, GError **err) {
    FastCtx *ctx = be->ctx;
    if (rows <= 1 || cols % DQ_Q8_BLOCK != 0)
        return fast_weight_init(be, w, t, rows, cols, err);
    return dq_q8_quantize(w, t, rows, cols, ctx->threads, err);
}

static void fast_weight_free(DqBackend *be, DqWeight *w) {
    FastCtx *ctx = be->ctx;
    if (w->dtype == DQ_WEIGHT_Q8) {
        dq_q8_free(w);
        return;
    }
    if (w->dtype == DQ_DTYPE_BF16 || w->dtype == DQ_WEIGHT_BF16_DOT) {
        free(w->owned); /* NULL when mapped */
        memset(w, 0, sizeof *w);
        return;
    }
    ctx->ref->weight_free(ctx->ref, w);
}

/* ---- products with few rows: y [n, rows] = x [n, cols] . w^T, n <= DQ_FAST_GEMV_ROWS */

/* The bf16 weights are read 16 at a time as eight 32-bit lanes, lane i holding columns 2i (low
 * half) and 2i + 1 (high half); a shift and a mask make them two float32 vectors, the even and
 * the odd columns, with no shuffle (bf16 is the top half of a float32). x is reordered to match
 * once per call (x_split below), so a weight vector costs one load and one ALU op, not the load,
 * widen and shift that held the batched GEMV at a third of the FMA peak. Float32 weights take the
 * same path with x as it is.
 *
 * A tile is R x rows against C weight rows: R * C accumulators, every weight vector used R
 * times from registers (4 x 2 for batched decode, 1 x 4 for one row, where the weights stream
 * from memory and more independent chains keep more loads in flight). Each output's sum runs
 * the same steps in the same order whatever R, C and n are: a row's result does not depend on
 * its batch-mates. */
/* Weights asked for this many columns ahead on each row (16 KiB of bf16, 32 KiB of float32),
 * into L2 (prefetcht1), by the AVX2 and AVX-512 kernels alike: the hardware prefetcher alone
 * left the decode GEMV waiting on memory, and so did 4 KiB ahead into L1 (tuned on the Xeon). On
 * the Zen 4 EPYC this takes 0.6-0.8x the one-row GEMV's CPU time on AVX-512 (bf16 and float32,
 * 256M and 2.2B shapes; session 25) and 0.7x with the AVX2 kernel (bf16; float32, at the read
 * bandwidth either way, measured alike; session 26): bench_gemv, docs/performance.md. Rows are
 * contiguous, so past a row's end it asks for the rows a few tiles on; past the matrix's end a
 * prefetch is harmless. */
#define DQ_FAST_PREFETCH 8192

/* xp [n, cols]: within each group of 16 columns, the 8 even columns then the 8 odd ones. */
DQ_AVX2 static void x_split(float *xp, const float *x, int n, int cols) {
    int c16 = cols & ~15;
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * cols;
        float *pr = xp + (size_t)r * cols;
        for (int k = 0; k < c16; k += 16) {
            __m256 a = _mm256_loadu_ps(xr + k), b = _mm256_loadu_ps(xr + k + 8);
            /* per 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit pairs in order */
            __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
            __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
            _mm256_storeu_ps(pr + k, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                         _mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0))));
            _mm256_storeu_ps(pr + k + 8, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                             _mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0))));
        }
        memcpy(pr + c16, xr + c16, (size_t)(cols - c16) * sizeof(float));
    }
}

/* y rows r0 .. r0 + R - 1, output features o .. o + no - 1 (no <= C; past it the last row is
 * repeated, computed and never stored). */
DQ_AVX2 static inline __attribute__((always_inline)) void
gemv_tile(float *y, const float *xp, const void *wd, gboolean bf16, const float *bias, int o,
          int no, int rows, int cols, int r0, int R, int C) {
    size_t esize = bf16 ? 2 : 4;
    int c16 = cols & ~15;
    const char *w[4];
    for (int j = 0; j < C; j++)
        w[j] = (const char *)wd + (size_t)(o + MIN(j, no - 1)) * cols * esize;
    __m256 a[4][4];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++)
            a[i][j] = _mm256_setzero_ps();
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    for (int k = 0; k < c16; k += 16) {
        __m256 we[4], wo[4];
        for (int j = 0; j < C; j++) {
            const char *at = w[j] + (size_t)k * esize;
            if ((k * esize) % 64 == 0)
                _mm_prefetch(at + DQ_FAST_PREFETCH * esize, _MM_HINT_T1);
            if (bf16) {
                __m256i v = _mm256_loadu_si256((const __m256i *)at);
                DQ_IN_REGISTER(v);
                we[j] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
                wo[j] = _mm256_castsi256_ps(_mm256_and_si256(v, hi));
            } else {
                we[j] = _mm256_loadu_ps((const float *)at);
                wo[j] = _mm256_loadu_ps((const float *)at + 8);
            }
        }
        for (int i = 0; i < R; i++) {
            const float *xr = xp + (size_t)(r0 + i) * cols + k;
            __m256 xe = _mm256_loadu_ps(xr), xo = _mm256_loadu_ps(xr + 8);
            DQ_IN_REGISTER(xe);
            DQ_IN_REGISTER(xo);
            for (int j = 0; j < C; j++) {
                a[i][j] = _mm256_fmadd_ps(we[j], xe, a[i][j]);
                a[i][j] = _mm256_fmadd_ps(wo[j], xo, a[i][j]);
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < no; j++) {
            const float *xr = xp + (size_t)(r0 + i) * cols; /* the tail is not reordered */
            float s = dq_hsum256(a[i][j]);
            for (int k = c16; k < cols; k++)
                /* no <= C: w[j] was set above (the analyzer does not know the callers) */
                // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
                s += (bf16 ? dq_bf16f(((const uint16_t *)w[j])[k]) : ((const float *)w[j])[k]) *
                     xr[k];
            y[(size_t)(r0 + i) * rows + o + j] = bias != NULL ? s + bias[o + j] : s;
        }
}

DQ_AVX2 static inline __attribute__((always_inline)) void
gemv_features(float *y, const float *xp, const void *wd, gboolean bf16, const float *bias, int o0,
              int o1, int rows, int cols, int n) {
    if (n == 1) {
        for (int o = o0; o < o1; o += 4)
            gemv_tile(y, xp, wd, bf16, bias, o, MIN(4, o1 - o), rows, cols, 0, 1, 4);
        return;
    }
    for (int o = o0; o < o1; o += 2) {
        int no = MIN(2, o1 - o), r = 0;
        for (; r + 4 <= n; r += 4)
            gemv_tile(y, xp, wd, bf16, bias, o, no, rows, cols, r, 4, 2);
        for (; r + 2 <= n; r += 2)
            gemv_tile(y, xp, wd, bf16, bias, o, no, rows, cols, r, 2, 2);
        if (r < n)
            gemv_tile(y, xp, wd, bf16, bias, o, no, rows, cols, r, 1, 2);
    }
}

DQ_AVX2 static void gemv_avx2(float *y, const float *xp, const void *wd, gboolean bf16,
                              const float *bias, int o0, int o1, int rows, int cols, int n) {
    if (bf16)
        gemv_features(y, xp, wd, TRUE, bias, o0, o1, rows, cols, n);
    else
        gemv_features(y, xp, wd, FALSE, bias, o0, o1, rows, cols, n);
}

/* The same scheme on AVX-512F, 32 columns a step: a 64-byte load of bf16 is sixteen 32-bit lanes,
 * the 16 even and 16 odd columns of the group; x is reordered by groups of 32 (x_split512). A
 * different summation order from the AVX2 kernel's (16 lanes, not 8), the same for every row
 * whatever R, C and n: still row-invariant. The batched decode's 8-row GEMV is bound by
 * arithmetic, which these twice-as-wide FMAs lift (in L2, one core: 80 -> 110 GFLOP/s). */
DQ_AVX512 static void x_split512(float *xp, const float *x, int n, int cols) {
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    int c32 = cols & ~31;
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * cols;
        float *pr = xp + (size_t)r * cols;
        for (int k = 0; k < c32; k += 32) {
            __m512 a = _mm512_loadu_ps(xr + k), b = _mm512_loadu_ps(xr + k + 16);
            _mm512_storeu_ps(pr + k, _mm512_permutex2var_ps(a, even, b));
            _mm512_storeu_ps(pr + k + 16, _mm512_permutex2var_ps(a, odd, b));
        }
        memcpy(pr + c32, xr + c32, (size_t)(cols - c32) * sizeof(float));
    }
}

DQ_AVX512 static inline __attribute__((always_inline)) void
gemv_tile512(float *y, const float *xp, const void *wd, gboolean bf16, const float *bias, int o,
             int no, int rows, int cols, int r0, int R, int C) {
    size_t esize = bf16 ? 2 : 4;
    int c32 = cols & ~31;
    const char *w[4];
    for (int j = 0; j < C; j++)
        w[j] = (const char *)wd + (size_t)(o + MIN(j, no - 1)) * cols * esize;
    __m512 a[4][4];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++)
            a[i][j] = _mm512_setzero_ps();
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    for (int k = 0; k < c32; k += 32) {
        __m512 we[4], wo[4];
        for (int j = 0; j < C; j++) {
            const char *at = w[j] + (size_t)k * esize;
            _mm_prefetch(at + DQ_FAST_PREFETCH * esize, _MM_HINT_T1);
            if (bf16) {
                __m512i v = _mm512_loadu_si512(at);
                DQ_IN_REGISTER(v);
                we[j] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
                wo[j] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
            } else {
                _mm_prefetch(at + DQ_FAST_PREFETCH * esize + 64, _MM_HINT_T1);
                we[j] = _mm512_loadu_ps((const float *)at);
                wo[j] = _mm512_loadu_ps((const float *)at + 16);
            }
        }
        for (int i = 0; i < R; i++) {
            const float *xr = xp + (size_t)(r0 + i) * cols + k;
            __m512 xe = _mm512_loadu_ps(xr), xo = _mm512_loadu_ps(xr + 16);
            DQ_IN_REGISTER(xe);
            DQ_IN_REGISTER(xo);
            for (int j = 0; j < C; j++) {
                a[i][j] = _mm512_fmadd_ps(we[j], xe, a[i][j]);
                a[i][j] = _mm512_fmadd_ps(wo[j], xo, a[i][j]);
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < no; j++) {
            const float *xr = xp + (size_t)(r0 + i) * cols; /* the tail is not reordered */
            float s = _mm512_reduce_add_ps(a[i][j]);
            for (int k = c32; k < cols; k++)
                s += (bf16 ? dq_bf16f(((const uint16_t *)w[j])[k]) : ((const float *)w[j])[k]) *
                     xr[k];
            y[(size_t)(r0 + i) * rows + o + j] = bias != NULL ? s + bias[o + j] : s;
        }
}

DQ_AVX512 static inline __attribute__((always_inline)) void
gemv_features512(float *y, const float *xp, const void *wd, gboolean bf16, const float *bias,
                 int o0, int o1, int rows, int cols, int n) {
    if (n == 1) {
        for (int o = o0; o < o1; o += 4)
            gemv_tile512(y, xp, wd, bf16, bias, o, MIN(4, o1 - o), rows, cols, 0, 1, 4);
        return;
    }
    for (int o = o0; o < o1; o += 2) {
        int no = MIN(2, o1 - o), r = 0;
        for (; r + 4 <= n; r += 4)
            gemv_tile512(y, xp, wd, bf16, bias, o, no, rows, cols, r, 4, 2);
        for (; r + 2 <= n; r += 2)
            gemv_tile512(y, xp, wd, bf16, bias, o, no, rows, cols, r, 2, 2);
        if (r < n)
            gemv_tile512(y, xp, wd, bf16, bias, o, no, rows, cols, r, 1, 2);
    }
}

DQ_AVX512 static void gemv_avx512(float *y, const float *xp, const void *wd, gboolean bf16,
                                  const float *bias, int o0, int o1, int rows, int cols, int n) {
    if (bf16)
        gemv_features512(y, xp, wd, TRUE, bias, o0, o1, rows, cols, n);
    else
        gemv_features512(y, xp, wd, FALSE, bias, o0, o1, rows, cols, n);
}

static void gemv_portable(float *y, const float *x, const void *wd, gboolean bf16,
                          const float *bias, int o0, int o1, int rows, int cols, int n) {
    for (int o = o0; o < o1; o++)
        for (int r = 0; r < n; r++) {
            const float *xr = x + (size_t)r * cols;
            float s = 0.0f;
            for (int k = 0; k < cols; k++)
                s += (bf16 ? dq_bf16f(((const uint16_t *)wd)[(size_t)o * cols + k])
                           : ((const float *)wd)[(size_t)o * cols + k]) *
                     xr[k];
            y[(size_t)r * rows + o] = bias != NULL ? s + bias[o] : s;
        }
}

/* ys[i] = x . ws[i]^T + biases[i] for count weights of one dtype and width, their blocks of
 * features in one parallel loop. */
static void fast_gemv_many(FastCtx *ctx, float *const *ys, const float *x,
                           const DqWeight *const *ws, const DqWeight *const *biases, int count,
                           int n) {
    gboolean bf16 = ws[0]->dtype == DQ_DTYPE_BF16 || ws[0]->dtype == DQ_WEIGHT_BF16_DOT;
    gboolean avx2 = dq_cpu_has_avx2(), avx512 = avx2 && dq_cpu_has_avx512f();
    int cols = ws[0]->cols;
    /* bf16 columns reordered to the kernel's even / odd split, into the first thread's pack
     * (the GEMV packs nothing); it holds DQ_FAST_GEMV_ROWS rows of any width up to 64k */
    const float *xp = x;
    if (avx2 && bf16 && (size_t)n * cols <= DQ_GEMM_PACK_FLOATS) {
        if (avx512)
            x_split512(ctx->pack, x, n, cols);
        else
            x_split(ctx->pack, x, n, cols);
        xp = ctx->pack;
    } else
        avx2 = avx512 = avx2 && !bf16;
    /* Blocks of up to 64 features, at least 8 a thread: k and v (192 features at 256M) in 64s
     * gave one thread twice the other's work. Each weight keeps its own blocks, whoever takes
     * them: results as from one call a weight. */
    int bs[DQ_GEMV_SPLIT_MAX], rows_of[DQ_GEMV_SPLIT_MAX];
    for (int i = 0; i < count; i++) {
        rows_of[i] = ws[i]->rows;
        bs[i] = CLAMP((rows_of[i] / (8 * ctx->threads)) / 4 * 4, 4, 64);
    }
    DqGemvSplit split = dq_gemv_split(rows_of, bs, count);
#pragma omp parallel num_threads(ctx->threads) if (split.blocks > 1)
    for (int blk = 0, i = 0; blk < split.blocks; blk++) {
        int o0;
        if (!dq_gemv_split_mine(&split, blk, &i, &o0))
            continue;
        const DqWeight *w = ws[i];
        const float *b = biases != NULL && biases[i] != NULL ? biases[i]->data : NULL;
        /* i < count: block blk < split.blocks = split.first[count] (dq_gemv_split_mine) */
        // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult)
        int rows = w->rows, o1 = MIN(rows, o0 + bs[i]);
        if (avx512)
            gemv_avx512(ys[i], xp, w->data, bf16, b, o0, o1, rows, cols, n);
        else if (avx2)
            gemv_avx2(ys[i], xp, w->data, bf16, b, o0, o1, rows, cols, n);
        else
            gemv_portable(ys[i], x, w->data, bf16, b, o0, o1, rows, cols, n);
    }
}

/* ---- products with many rows (vision, prefill): cpu_gemm.c's threaded linear layer */

static void fast_gemm(FastCtx *ctx, float *y, const float *x, const DqWeight *w,
                      const DqWeight *bias, int n) {
    DqGemmB layout = w->dtype == DQ_DTYPE_BF16        ? DQ_GEMM_B_WT_BF16
                     : w->dtype != DQ_WEIGHT_BF16_DOT ? DQ_GEMM_B_WT_F32
                     : ctx->bf16_dot                  ? DQ_GEMM_B_WT_BF16_DOT
                                                      : DQ_GEMM_B_WT_BF16;
    dq_gemm_linear(n, w->rows, w->cols, x, w->data, layout, bias != NULL ? bias->data : NULL, y,
                   ctx->threads, ctx->pack);
}

static void fast_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w,
                        const DqWeight *bias, int n) {
    FastCtx *ctx = be->ctx;
    if (n <= 0)
        return;
    if (w->dtype == DQ_WEIGHT_Q8)
        dq_q8_matmul(y, x, w, bias != NULL ? bias->data : NULL, n, DQ_FAST_GEMV_ROWS, ctx->threads,
                     ctx->pack);
    else if (n <= DQ_FAST_GEMV_ROWS)
        fast_gemv_many(ctx, &y, x, &w, &bias, 1, n);
    else
        fast_gemm(ctx, y, x, w, bias, n);
}

/* Decode's q, k and v (gate and up): one parallel loop for all, x rounded or reordered once.
 * Products with more rows, or weights of mixed storage, go one at a time. */
static void fast_matmul_many(DqBackend *be, float *const *ys, const float *x,
                             const DqWeight *const *ws, const DqWeight *const *biases, int count,
                             int n) {
    FastCtx *ctx = be->ctx;
    gboolean together = n <= DQ_FAST_GEMV_ROWS && count <= DQ_GEMV_SPLIT_MAX;
    for (int i = 1; i < count; i++)
        together = together && ws[i]->dtype == ws[0]->dtype && ws[i]->cols == ws[0]->cols;
    if (!together) {
        for (int i = 0; i < count; i++)
            fast_matmul(be, ys[i], x, ws[i], biases != NULL ? biases[i] : NULL, n);
        return;
    }
    if (ws[0]->dtype == DQ_WEIGHT_Q8) {
        const float *b[DQ_GEMV_SPLIT_MAX];
        for (int i = 0; i < count; i++)
            b[i] = biases != NULL && biases[i] != NULL ? biases[i]->data : NULL;
        dq_q8_matmul_many(ys, x, ws, b, count, n, DQ_FAST_GEMV_ROWS, ctx->threads, ctx->pack);
    } else
        fast_gemv_many(ctx, ys, x, ws, biases, count, n);
}

static void fast_embed(DqBackend *be, float *out, const DqWeight *table, const int32_t *ids,
                       int n) {
    FastCtx *ctx = be->ctx;
    if (table->dtype == DQ_WEIGHT_Q8) {
        dq_q8_embed(table, ids, n, out);
        return;
    }
    if (table->dtype != DQ_DTYPE_BF16) {
        ctx->ref->embed(ctx->ref, out, table, ids, n);
        return;
    }
    for (int r = 0; r < n; r++) {
        const uint16_t *src = (const uint16_t *)table->data + (size_t)ids[r] * table->cols;
        for (int i = 0; i < table->cols; i++)
            out[(size_t)r * table->cols + i] = dq_bf16f(src[i]);
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
            y[(size_t)o * inner + i] += dq_bf16f(src[i]);
}

/* ---- attention
 *
 * Many query rows (vision, prefill): flash-attention style. A job is (sequence, head, range of
 * up to DQ_FAST_QR query rows); keys go by in blocks of DQ_FAST_KB, each block of K and V
 * packed once (cpu_gemm.h) and used by every DQ_FAST_QB-row tile of the range: scores by the
 * GEMM kernel, online softmax (running max and sum per row), then P . V added into the range's
 * accumulator. No score matrix larger than one [QB, KB] tile exists.
 *
 * Few query rows (decode): plain dot products, split over the keys (decode_run below). */

#define DQ_FAST_QB           96  /* query rows per score tile */
#define DQ_FAST_KB           256 /* keys per block */
#define DQ_FAST_QR           512 /* query rows per job */
#define DQ_FAST_HEAD_MAX     256
#define DQ_FAST_DECODE_ROWS  16  /* query rows (heads x positions) of one decode job, at most */
#define DQ_FAST_DECODE_SPLIT 256 /* keys per decode job, at least */
#define DQ_FAST_DECODE_KB    64  /* keys per block within a decode job: K and V blocks in L1 */

/* Per thread, float32 attention: [QB*KB] scores, K and V blocks packed, [QR*HEAD_MAX]
 * accumulators, [QR] running max, [QR] running sum. The AMX variants' buffers (below) take more;
 * the scratch is the larger. */
#define DQ_FAST_ATTN_F32_FLOATS                                                                    \
    ((size_t)DQ_FAST_QB * DQ_FAST_KB + 2 * (size_t)DQ_FAST_KB * DQ_FAST_HEAD_MAX +                 \
     (size_t)DQ_FAST_QR * DQ_FAST_HEAD_MAX + 2 * DQ_FAST_QR)
#define DQ_AMX_HEAD_MAX 128
/* attn_range_amx with three planes: scores; K's planes as rows and packed; Q's, V's (packed) and
 * P's planes; accumulators; max and sum */
#define DQ_AMX_ATTN_FLOATS                                                                         \
    ((size_t)DQ_FAST_QB * DQ_FAST_KB + 3 * (size_t)DQ_FAST_KB * DQ_AMX_HEAD_MAX / 2 +              \
     3 * (size_t)DQ_FAST_KB * DQ_AMX_HEAD_MAX / 2 + 3 * (size_t)DQ_FAST_QR * DQ_AMX_HEAD_MAX / 2 + \
     3 * (size_t)DQ_FAST_KB * DQ_AMX_HEAD_MAX / 2 + 3 * (size_t)DQ_FAST_QB * DQ_FAST_KB / 2 +      \
     (size_t)DQ_FAST_QR * DQ_AMX_HEAD_MAX + 2 * DQ_FAST_QR)
#define DQ_FAST_ATTN_FLOATS MAX(DQ_FAST_ATTN_F32_FLOATS, DQ_AMX_ATTN_FLOATS)

/* Online softmax update of one row of scores s [nk] (first `visible` keys count): running max
 * *mx and sum *sum, accumulator acc [d] rescaled, s replaced by the weights (0 past visible). */
DQ_AVX2 static void softmax_row_avx2(float *s, int nk, int visible, float scale, float *mx,
                                     float *sum, float *acc, int d) {
    int j = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY), vs = _mm256_set1_ps(scale);
    for (; j + 8 <= visible; j += 8)
        vmax = _mm256_max_ps(vmax, _mm256_mul_ps(_mm256_loadu_ps(s + j), vs));
    float m = *mx;
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    for (int i = 0; i < 8; i++)
        m = MAX(m, lanes[i]);
    for (; j < visible; j++)
        m = MAX(m, s[j] * scale);
    float corr = expf(*mx - m); /* 0 on the first block (mx = -inf) */
    __m256 vm = _mm256_set1_ps(m), vsum = _mm256_setzero_ps();
    for (j = 0; j + 8 <= visible; j += 8) {
        __m256 p = dq_exp256(_mm256_fmsub_ps(_mm256_loadu_ps(s + j), vs, vm));
        _mm256_storeu_ps(s + j, p);
        vsum = _mm256_add_ps(vsum, p);
    }
    float total = dq_hsum256(vsum);
    for (; j < visible; j++) {
        s[j] = expf(s[j] * scale - m);
        total += s[j];
    }
    for (; j < nk; j++)
        s[j] = 0.0f;
    *sum = *sum * corr + total;
    *mx = m;
    if (corr != 1.0f)
        for (int c = 0; c < d; c++)
            acc[c] *= corr;
}

/* The larger of mx and the row's scaled scores (max is exact: any order gives the same). */
DQ_AVX512 static inline __attribute__((always_inline)) float row_max512(const float *s, int visible,
                                                                        float scale, float mx) {
    int j = 0;
    __m512 vmax = _mm512_set1_ps(-INFINITY), vs = _mm512_set1_ps(scale);
    for (; j + 16 <= visible; j += 16)
        vmax = _mm512_max_ps(vmax, _mm512_mul_ps(_mm512_loadu_ps(s + j), vs));
    float m = MAX(mx, _mm512_reduce_max_ps(vmax));
    for (; j < visible; j++)
        m = MAX(m, s[j] * scale);
    return m;
}

/* softmax_row_avx2 on 16 lanes (AVX-512F): the weights are the AVX2 version's bits; their sum
 * is added in another order. In --weights bf16 vision, with the products on AMX tiles, the AVX2
 * softmax took a seventh of the time. */
DQ_AVX512 static void softmax_row_avx512(float *s, int nk, int visible, float scale, float *mx,
                                         float *sum, float *acc, int d) {
    float m = row_max512(s, visible, scale, *mx);
    float corr = expf(*mx - m); /* 0 on the first block (mx = -inf) */
    __m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(m), vsum = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= visible; j += 16) {
        __m512 p = dq_exp512(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vs, vm));
        _mm512_storeu_ps(s + j, p);
        vsum = _mm512_add_ps(vsum, p);
    }
    float total = _mm512_reduce_add_ps(vsum);
    for (; j < visible; j++) {
        s[j] = expf(s[j] * scale - m);
        total += s[j];
    }
    for (; j < nk; j++)
        s[j] = 0.0f;
    *sum = *sum * corr + total;
    *mx = m;
    if (corr != 1.0f)
        for (int c = 0; c < d; c++)
            acc[c] *= corr;
}

/* softmax_row_avx512 for attn_range_dot on vdpbf16ps, with the weights' rounding to bf16 in
 * its pass: each 16 weights go to pb [0, width) through vcvtneps2bf16 as computed (zeros past
 * visible), not stored to s and read back by dq_dpbf16_round_row after the row. The weights
 * and the sum are softmax_row_avx512's bits, the rounding dq_dpbf16_round_row's (its
 * vcvtne2ps2bf16: nearest even, denormals to zero). s keeps the scores but for the scalar tail.
 * That separate pass was 3.8% of a 256M --weights bf16 page with q, k and v's (perf). */
#define DQ_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16,avx2,fma")))
DQ_AVX512_BF16 static void softmax_row_bf16(float *s, int visible, float scale, float *mx,
                                            float *sum, float *acc, int d, uint16_t *pb,
                                            int width) {
    if (visible <= 0) {
        memset(pb, 0, (size_t)width * sizeof *pb);
        return;
    }
    float m = row_max512(s, visible, scale, *mx);
    float corr = expf(*mx - m); /* 0 on the first block (mx = -inf) */
    __m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(m), vsum = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= visible; j += 16) {
        __m512 p = dq_exp512(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vs, vm));
        _mm256_storeu_si256((__m256i *)(void *)(pb + j), (__m256i)_mm512_cvtneps_pbh(p));
        vsum = _mm512_add_ps(vsum, p);
    }
    float total = _mm512_reduce_add_ps(vsum);
    int tail = j;
    for (; j < visible; j++) {
        s[j] = expf(s[j] * scale - m);
        total += s[j];
    }
    dq_amx_round_row(pb + tail, s + tail, visible - tail, width - tail);
    *sum = *sum * corr + total;
    *mx = m;
    if (corr != 1.0f)
        for (int c = 0; c < d; c++)
            acc[c] *= corr;
}

static void softmax_row_portable(float *s, int nk, int visible, float scale, float *mx, float *sum,
                                 float *acc, int d) {
    float m = *mx;
    for (int j = 0; j < visible; j++)
        m = MAX(m, s[j] * scale);
    float corr = expf(*mx - m), total = 0.0f;
    for (int j = 0; j < visible; j++) {
        s[j] = expf(s[j] * scale - m);
        total += s[j];
    }
    for (int j = visible; j < nk; j++)
        s[j] = 0.0f;
    *sum = *sum * corr + total;
    *mx = m;
    if (corr != 1.0f)
        for (int c = 0; c < d; c++)
            acc[c] *= corr;
}

static void softmax_row(float *s, int nk, int visible, float scale, float *mx, float *sum,
                        float *acc, int d) {
    if (visible <= 0) {
        memset(s, 0, (size_t)nk * sizeof(float));
        return;
    }
    if (dq_cpu_has_avx512f())
        softmax_row_avx512(s, nk, visible, scale, mx, sum, acc, d);
    else if (dq_cpu_has_avx2())
        softmax_row_avx2(s, nk, visible, scale, mx, sum, acc, d);
    else
        softmax_row_portable(s, nk, visible, scale, mx, sum, acc, d);
}

/* Query rows [i_lo, i_hi) of one head of one sequence. */
static void attn_range(const DqAttention *a, const float *qh, const float *kh, const float *vh,
                       float *oh, int out_stride, int i_lo, int i_hi, float *scratch) {
    int d = a->head_dim, nr = i_hi - i_lo;
    float *S = scratch;                                      /* [QB, KB] */
    float *pk = S + (size_t)DQ_FAST_QB * DQ_FAST_KB;         /* K block packed */
    float *pv = pk + (size_t)DQ_FAST_KB * DQ_FAST_HEAD_MAX;  /* V block packed */
    float *acc = pv + (size_t)DQ_FAST_KB * DQ_FAST_HEAD_MAX; /* [nr, d] */
    float *mx = acc + (size_t)DQ_FAST_QR * DQ_FAST_HEAD_MAX; /* [nr] */
    float *sum = mx + DQ_FAST_QR;                            /* [nr] */
    for (int i = 0; i < nr; i++) {
        mx[i] = -INFINITY;
        sum[i] = 0.0f;
    }
    memset(acc, 0, (size_t)nr * d * sizeof(float));
    int kv_end = a->causal ? MIN(a->n_kv, a->q_pos0 + i_hi) : a->n_kv;
    for (int j0 = 0; j0 < kv_end; j0 += DQ_FAST_KB) {
        int nk = MIN(DQ_FAST_KB, kv_end - j0);
        dq_gemm_pack_b(pk, kh + (size_t)j0 * a->kv_stride, a->kv_stride, DQ_GEMM_B_WT_F32, nk, 0,
                       nk, 0, d);
        dq_gemm_pack_b(pv, vh + (size_t)j0 * a->kv_stride, a->kv_stride, DQ_GEMM_B_KN_F32, d, 0, d,
                       0, nk);
        for (int i0 = i_lo; i0 < i_hi; i0 += DQ_FAST_QB) {
            int nq = MIN(DQ_FAST_QB, i_hi - i0);
            if (a->causal && a->q_pos0 + i0 + nq - 1 < j0)
                continue; /* the block is in every row's future */
            dq_gemm_packed(nq, nk, d, qh + (size_t)i0 * a->q_stride, a->q_stride, pk, TRUE, NULL, S,
                           DQ_FAST_KB);
            for (int i = 0; i < nq; i++) {
                int r = i0 - i_lo + i;
                int visible = a->causal ? CLAMP(a->q_pos0 + i0 + i + 1 - j0, 0, nk) : nk;
                softmax_row(S + (size_t)i * DQ_FAST_KB, nk, visible, a->scale, &mx[r], &sum[r],
                            acc + (size_t)r * d, d);
            }
            dq_gemm_packed(nq, d, nk, S, DQ_FAST_KB, pv, FALSE, NULL, acc + (size_t)(i0 - i_lo) * d,
                           d);
        }
    }
    for (int i = 0; i < nr; i++) {
        float inv = sum[i] > 0.0f ? 1.0f / sum[i] : 0.0f;
        for (int c = 0; c < d; c++)
            oh[(size_t)(i_lo + i) * out_stride + c] = acc[(size_t)i * d + c] * inv;
    }
}

/* attn_range on AMX tiles: the same blocks and online softmax, with S = Q K^T and acc += P V as
 * tile products (cpu_gemm.h's dq_amx_*). Q is prepared once a job; a block of keys once for all
 * query rows (K as pairs of dimensions, V as pairs of keys); P after the float32 softmax. Rows
 * are padded to 32, head dims and keys to 32, with zeros, which add nothing.
 * - planes 1, `--weights bf16` (DqAttention.bf16_products): the operands rounded to bf16. On the
 *   256M vision encoder the float32 attention was a third of a --weights bf16 page.
 * - planes 3, the exact modes: each float32 operand split into three bf16 planes, the products
 *   run as x6 (six tile products a step, which reach float32's last bits; P V 16 rows a call).
 *   The FMA kernels' attention was a fifth of a 256M bf16 page.
 * Its buffers take DQ_AMX_ATTN_FLOATS of the scratch (with three planes). */
static const float zeros32[32];

/* n floats of a row into `planes` bf16 planes `plane` apart (zeros on to width). */
static inline void amx_prepare_row(int planes, uint16_t *dst, size_t plane, const float *src, int n,
                                   int width) {
    if (planes == 1)
        dq_amx_round_row(dst, src, n, width);
    else
        dq_amx_split_row(dst, plane, src, n, width);
}

static void attn_range_amx(const DqAttention *a, int planes, const float *qh, const float *kh,
                           const float *vh, float *oh, int out_stride, int i_lo, int i_hi,
                           float *scratch) {
    enum { QB = DQ_FAST_QB, KB = DQ_FAST_KB, QR = DQ_FAST_QR };
    int d = a->head_dim, nr = i_hi - i_lo, nr32 = (nr + 31) / 32 * 32;
    int dpad = (d + 31) / 32 * 32, dp = dpad / 2; /* dims padded; their pairs */
    int pv_rows = planes == 1 ? 32 : 16;          /* rows a P V call takes */
    size_t kp_plane = (size_t)KB * dp, kr_plane = (size_t)KB * dpad, qp_plane = (size_t)QR * dpad;
    size_t vp_plane = (size_t)dpad * KB / 2, pp_plane = (size_t)QB * KB;
    float *S = scratch;                                  /* [QB][KB] */
    uint32_t *kp = (uint32_t *)(S + (size_t)QB * KB);    /* planes x [KB / 32][dp][32] */
    uint16_t *kr = (uint16_t *)(kp + planes * kp_plane); /* planes x [KB][dpad] */
    uint16_t *qp = kr + planes * kr_plane;               /* planes x [QR][dpad] */
    uint32_t *vp = (uint32_t *)(qp + planes * qp_plane); /* planes x [dpad / 32][KB / 2][32] */
    uint16_t *pp = (uint16_t *)(vp + planes * vp_plane); /* planes x [QB][KB] */
    float *acc = (float *)(pp + planes * pp_plane);      /* [QR][dpad] */
    float *mx = acc + (size_t)QR * dpad, *sum = mx + QR;
    for (int i = 0; i < nr; i++) {
        mx[i] = -INFINITY;
        sum[i] = 0.0f;
    }
    memset(acc, 0, (size_t)nr32 * dpad * sizeof(float));
    dq_amx_begin();
    for (int i = 0; i < nr32; i++)
        amx_prepare_row(planes, qp + (size_t)i * dpad, qp_plane,
                        qh + (size_t)(i_lo + MIN(i, nr - 1)) * a->q_stride, i < nr ? d : 0, dpad);
    int kv_end = a->causal ? MIN(a->n_kv, a->q_pos0 + i_hi) : a->n_kv;
    for (int j0 = 0; j0 < kv_end; j0 += KB) {
        int nk = MIN(KB, kv_end - j0), nk32 = (nk + 31) / 32 * 32, kpairs = nk32 / 2;
        for (int j = 0; j < nk32; j++)
            amx_prepare_row(planes, kr + (size_t)j * dpad, kr_plane,
                            kh + (size_t)(j0 + MIN(j, nk - 1)) * a->kv_stride, j < nk ? d : 0,
                            dpad);
        for (int t = 0; t < planes; t++)
            for (int q = 0; q < nk32 / 32; q++)
                dq_amx_pack_pairs(kp + t * kp_plane + (size_t)q * dp * 32,
                                  kr + t * kr_plane + (size_t)q * 32 * dpad, dpad, dp);
        for (int c0 = 0; c0 < dpad; c0 += 32)
            for (int p = 0; p < kpairs; p++) {
                int j = j0 + 2 * p;
                const float *r0 = 2 * p < nk ? vh + (size_t)j * a->kv_stride + c0 : zeros32;
                const float *r1 = 2 * p + 1 < nk ? vh + (size_t)(j + 1) * a->kv_stride + c0 : NULL;
                uint32_t *at = vp + ((size_t)(c0 / 32) * kpairs + p) * 32;
                if (planes == 1)
                    dq_amx_pack_interleave(at, r0, r1, MIN(32, d - c0));
                else
                    dq_amx_split_interleave(at, vp_plane, r0, r1, MIN(32, d - c0));
            }
        for (int i0 = i_lo; i0 < i_hi; i0 += QB) {
            int nq = MIN(QB, i_hi - i0), nq32 = (nq + 31) / 32 * 32;
            int nqp = (nq + pv_rows - 1) / pv_rows * pv_rows;
            if (a->causal && a->q_pos0 + i0 + nq - 1 < j0)
                continue; /* the block is in every row's future */
            for (int rb = 0; rb < nq32; rb += 32)
                for (int q = 0; q < nk32 / 32; q++) {
                    const uint16_t *qa = qp + (size_t)(i0 - i_lo + rb) * dpad;
                    const uint32_t *kb = kp + (size_t)q * dp * 32;
                    float *s = S + (size_t)rb * KB + q * 32;
                    if (planes == 1)
                        dq_amx_32x32(qa, dpad, kb, dp, s, KB, FALSE);
                    else
                        dq_amx_32x32_x6(qa, dpad, qp_plane, kb, kp_plane, dp, s, KB);
                }
            for (int i = 0; i < nqp; i++) {
                int r = i0 - i_lo + i;
                if (i < nq) {
                    int visible = a->causal ? CLAMP(a->q_pos0 + i0 + i + 1 - j0, 0, nk) : nk;
                    softmax_row(S + (size_t)i * KB, nk, visible, a->scale, &mx[r], &sum[r],
                                acc + (size_t)r * dpad, d);
                }
                amx_prepare_row(planes, pp + (size_t)i * KB, pp_plane, S + (size_t)i * KB,
                                i < nq ? nk : 0, nk32);
            }
            for (int rb = 0; rb < nqp; rb += pv_rows)
                for (int c0 = 0; c0 < dpad; c0 += 32) {
                    const uint32_t *vb = vp + (size_t)(c0 / 32) * kpairs * 32;
                    float *o = acc + (size_t)(i0 - i_lo + rb) * dpad + c0;
                    if (planes == 1)
                        dq_amx_32x32(pp + (size_t)rb * KB, KB, vb, kpairs, o, dpad, TRUE);
                    else
                        dq_amx_16x32_x6(pp + (size_t)rb * KB, KB, pp_plane, vb, vp_plane, kpairs, o,
                                        dpad, TRUE);
                }
        }
    }
    dq_amx_end();
    for (int i = 0; i < nr; i++) {
        float inv = sum[i] > 0.0f ? 1.0f / sum[i] : 0.0f;
        for (int c = 0; c < d; c++)
            oh[(size_t)(i_lo + i) * out_stride + c] = acc[(size_t)i * dpad + c] * inv;
    }
}

/* attn_range with bf16_products where the CPU has AVX512-BF16 but no AMX (Zen 4): the AMX path's
 * operands (q, k, the probabilities and v rounded to bf16 as there, online softmax in float32),
 * the products on vdpbf16ps by cpu_gemm.h's dq_dpbf16_tile, so both CPUs compute the same
 * approximation (not the same bits: tdpbf16ps rounds inside a pair its own way). Its sums are
 * the instruction's (or its emulation's, bit for bit): a score from 0.0 over the head's pairs
 * of dimensions in order; P V a block of keys' pairs from 0.0, in order, added to the row's
 * rescaled accumulator (DQ_GEMM_B_WT_BF16_DOT's order: a block of DQ_FAST_KB keys is its
 * DQ_GEMM_BF16_KP pairs). On a 256M --weights bf16 page the float32 attention was a quarter of
 * vision and prefill (perf), the GEMM's vdpbf16ps kernel 59%. */
enum { DOT_MR = 12 }; /* the kernel's rows: it reads 12 of A whatever mr */
#define DQ_DOT_ATTN_FLOATS                                                                         \
    ((size_t)DQ_FAST_QB * DQ_FAST_KB + 4 * (size_t)DQ_FAST_KB * DQ_AMX_HEAD_MAX / 2 +              \
     (size_t)(DQ_FAST_QR + DOT_MR) * DQ_AMX_HEAD_MAX / 2 + (size_t)DQ_FAST_QB * DQ_FAST_KB / 2 +   \
     (size_t)DQ_FAST_QR * DQ_AMX_HEAD_MAX + 2 * DQ_FAST_QR)
G_STATIC_ASSERT(DQ_DOT_ATTN_FLOATS <= DQ_FAST_ATTN_FLOATS);
G_STATIC_ASSERT(DQ_FAST_QB % DOT_MR == 0);

/* softmax_row_bf16 runs here: softmax_row takes its AVX-512 version, whose bits it keeps. */
static gboolean softmax_bf16_here(void) {
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have =
            dq_cpu_has_avx512f() && dq_cpu_has_avx512bf16() && __builtin_cpu_supports("avx512bw");
    }
    return have;
}

static void attn_range_dot(const DqAttention *a, const float *qh, const float *kh, const float *vh,
                           float *oh, int out_stride, int i_lo, int i_hi, float *scratch) {
    enum { QB = DQ_FAST_QB, KB = DQ_FAST_KB, KW = DQ_FAST_KB / 2 };
    int d = a->head_dim, nr = i_hi - i_lo, nr12 = (nr + DOT_MR - 1) / DOT_MR * DOT_MR;
    int dp = (d + 1) / 2, d32 = (d + 31) / 32 * 32;        /* pairs of dims; dims in whole panels */
    float *S = scratch;                                    /* [QB][KB] */
    uint16_t *kr = (uint16_t *)(S + (size_t)QB * KB);      /* [KB][2 dp]: K's rows rounded */
    uint32_t *kp = (uint32_t *)(kr + (size_t)KB * 2 * dp); /* [KB / 32][dp][32] */
    uint16_t *vr = (uint16_t *)(kp + (size_t)KB * dp);     /* [KB][d32]: V's rows rounded */
    uint32_t *vp = (uint32_t *)(vr + (size_t)KB * d32);    /* [d32 / 32][KB / 2][32] */
    uint32_t *qp = vp + (size_t)d32 * KW;                  /* [nr12][dp] */
    uint32_t *pp = qp + (size_t)nr12 * dp;                 /* [QB][KW] */
    float *acc = (float *)(pp + (size_t)QB * KW);          /* [nr][d32] */
    float *mx = acc + (size_t)DQ_FAST_QR * d32, *sum = mx + DQ_FAST_QR;
    for (int i = 0; i < nr; i++) {
        mx[i] = -INFINITY;
        sum[i] = 0.0f;
    }
    memset(acc, 0, (size_t)nr * d32 * sizeof(float));
    /* the probabilities rounded in the softmax's pass where the instruction runs (the emulation
     * keeps the separate scalar rounding: /backend_fast/attention_bf16 compares the two) */
    gboolean fused = dq_dpbf16_native() && softmax_bf16_here();
    for (int i = 0; i < nr12; i++)
        dq_dpbf16_round_row((uint16_t *)(qp + (size_t)i * dp),
                            qh + (size_t)(i_lo + MIN(i, nr - 1)) * a->q_stride, i < nr ? d : 0,
                            2 * dp);
    int kv_end = a->causal ? MIN(a->n_kv, a->q_pos0 + i_hi) : a->n_kv;
    for (int j0 = 0; j0 < kv_end; j0 += KB) {
        int nk = MIN(KB, kv_end - j0), nk32 = (nk + 31) / 32 * 32, kpairs = (nk + 1) / 2;
        /* K as panels of 32 keys, a word a pair of dims; V as panels of 32 dims, a word a pair
         * of keys; zeros past nk and d */
        for (int j = 0; j < nk32; j++)
            dq_dpbf16_round_row(kr + (size_t)j * 2 * dp,
                                kh + (size_t)(j0 + MIN(j, nk - 1)) * a->kv_stride, j < nk ? d : 0,
                                2 * dp);
        for (int j = 0; j < nk32; j++) {
            const uint32_t *src = (const uint32_t *)(kr + (size_t)j * 2 * dp);
            uint32_t *dst = kp + (size_t)(j / 32) * dp * 32 + j % 32;
            for (int p = 0; p < dp; p++)
                dst[(size_t)p * 32] = src[p];
        }
        for (int j = 0; j < 2 * kpairs; j++)
            dq_dpbf16_round_row(vr + (size_t)j * d32,
                                vh + (size_t)(j0 + MIN(j, nk - 1)) * a->kv_stride, j < nk ? d : 0,
                                d32);
        for (int c0 = 0; c0 < d32; c0 += 32)
            for (int p = 0; p < kpairs; p++) {
                const uint16_t *r0 = vr + (size_t)2 * p * d32 + c0, *r1 = r0 + d32;
                uint32_t *dst = vp + ((size_t)(c0 / 32) * kpairs + p) * 32;
                for (int c = 0; c < 32; c++)
                    dst[c] = r0[c] | (uint32_t)r1[c] << 16;
            }
        for (int i0 = i_lo; i0 < i_hi; i0 += QB) {
            int nq = MIN(QB, i_hi - i0), nq12 = (nq + DOT_MR - 1) / DOT_MR * DOT_MR;
            if (a->causal && a->q_pos0 + i0 + nq - 1 < j0)
                continue; /* the block is in every row's future */
            for (int rb = 0; rb < nq; rb += DOT_MR)
                for (int q = 0; q < nk32 / 32; q++)
                    dq_dpbf16_tile(dp, qp + (size_t)(i0 - i_lo + rb) * dp, dp, MIN(DOT_MR, nq - rb),
                                   kp + (size_t)q * dp * 32, S + (size_t)rb * KB + q * 32, KB,
                                   MIN(32, nk - q * 32), TRUE);
            for (int i = 0; i < nq12; i++) {
                int r = i0 - i_lo + i;
                uint16_t *pr = (uint16_t *)(pp + (size_t)i * KW);
                int visible = i >= nq     ? 0
                              : a->causal ? CLAMP(a->q_pos0 + i0 + i + 1 - j0, 0, nk)
                                          : nk;
                if (i < nq && fused)
                    softmax_row_bf16(S + (size_t)i * KB, visible, a->scale, &mx[r], &sum[r],
                                     acc + (size_t)r * d32, d, pr, 2 * kpairs);
                else {
                    if (i < nq)
                        softmax_row(S + (size_t)i * KB, nk, visible, a->scale, &mx[r], &sum[r],
                                    acc + (size_t)r * d32, d);
                    dq_dpbf16_round_row(pr, S + (size_t)i * KB, i < nq ? nk : 0, 2 * kpairs);
                }
            }
            for (int rb = 0; rb < nq; rb += DOT_MR)
                for (int c0 = 0; c0 < d32; c0 += 32)
                    dq_dpbf16_tile(kpairs, pp + (size_t)rb * KW, KW, MIN(DOT_MR, nq - rb),
                                   vp + (size_t)(c0 / 32) * kpairs * 32,
                                   acc + (size_t)(i0 - i_lo + rb) * d32 + c0, d32, MIN(32, d - c0),
                                   FALSE);
        }
    }
    for (int i = 0; i < nr; i++) {
        float inv = sum[i] > 0.0f ? 1.0f / sum[i] : 0.0f;
        for (int c = 0; c < d; c++)
            oh[(size_t)(i_lo + i) * out_stride + c] = acc[(size_t)i * d32 + c] * inv;
    }
}

/* float16 caches (DqAttention.kv_f16; F16C widens 8 values an instruction). */
#define DQ_F16C __attribute__((target("avx2,fma,f16c")))

/* cpuid leaf 1, ECX bit 29 (clang has no "f16c" for __builtin_cpu_supports); AVX's OS support
 * is dq_cpu_has_avx2's check. */
static gboolean cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return dq_cpu_has_avx2() && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

DQ_F16C static inline __m256 load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* dq_dot_rows_avx2 and dq_weighted_sum_avx2 (cpu_simd.h) on float16 rows: four keys, or eight
 * accumulators of output columns, at a time, so that the FMA chains overlap (one key at a time
 * waited on the FMA latency). */
DQ_F16C static void dot_rows_f16(float *out, const float *q, const uint16_t *k, size_t stride,
                                 int n, int d) {
    int d8 = d & ~7, j = 0;
    for (; j + 4 <= n; j += 4) {
        const uint16_t *k0 = k + (size_t)j * stride, *k1 = k0 + stride, *k2 = k1 + stride,
                       *k3 = k2 + stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < d8; c += 8) {
            __m256 qv = _mm256_loadu_ps(q + c);
            a0 = _mm256_fmadd_ps(qv, load_f16x8(k0 + c), a0);
            a1 = _mm256_fmadd_ps(qv, load_f16x8(k1 + c), a1);
            a2 = _mm256_fmadd_ps(qv, load_f16x8(k2 + c), a2);
            a3 = _mm256_fmadd_ps(qv, load_f16x8(k3 + c), a3);
        }
        float s0 = dq_hsum256(a0), s1 = dq_hsum256(a1), s2 = dq_hsum256(a2), s3 = dq_hsum256(a3);
        for (int c = d8; c < d; c++) {
            s0 += q[c] * _cvtsh_ss(k0[c]);
            s1 += q[c] * _cvtsh_ss(k1[c]);
            s2 += q[c] * _cvtsh_ss(k2[c]);
            s3 += q[c] * _cvtsh_ss(k3[c]);
        }
        out[j] = s0;
        out[j + 1] = s1;
        out[j + 2] = s2;
        out[j + 3] = s3;
    }
    for (; j < n; j++) {
        const uint16_t *kj = k + (size_t)j * stride;
        __m256 acc = _mm256_setzero_ps();
        for (int c = 0; c < d8; c += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), load_f16x8(kj + c), acc);
        float s = dq_hsum256(acc);
        for (int c = d8; c < d; c++)
            s += q[c] * _cvtsh_ss(kj[c]);
        out[j] = s;
    }
}

DQ_F16C static void weighted_sum_f16(float *acc, const float *p, const uint16_t *v, size_t stride,
                                     int n, int d) {
    int c0 = 0;
    for (; c0 + 64 <= d; c0 += 64) {
        __m256 a[8];
        for (int i = 0; i < 8; i++)
            a[i] = _mm256_loadu_ps(acc + c0 + 8 * i);
        for (int j = 0; j < n; j++) {
            __m256 pj = _mm256_set1_ps(p[j]);
            const uint16_t *vj = v + (size_t)j * stride + c0;
            for (int i = 0; i < 8; i++)
                a[i] = _mm256_fmadd_ps(pj, load_f16x8(vj + 8 * i), a[i]);
        }
        for (int i = 0; i < 8; i++)
            _mm256_storeu_ps(acc + c0 + 8 * i, a[i]);
    }
    for (; c0 + 8 <= d; c0 += 8) {
        __m256 a = _mm256_loadu_ps(acc + c0);
        for (int j = 0; j < n; j++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), load_f16x8(v + (size_t)j * stride + c0), a);
        _mm256_storeu_ps(acc + c0, a);
    }
    for (; c0 < d; c0++)
        for (int j = 0; j < n; j++)
            acc[c0] += p[j] * _cvtsh_ss(v[(size_t)j * stride + c0]);
}

/* rows [n, width] of float32 -> float16 (round to nearest even) at dst, dst_stride apart. */
DQ_F16C static void rows_to_f16(uint16_t *dst, size_t dst_stride, const float *src,
                                size_t src_stride, int n, int width) {
    for (int r = 0; r < n; r++) {
        const float *x = src + (size_t)r * src_stride;
        uint16_t *o = dst + (size_t)r * dst_stride;
        int c = 0;
        for (; c + 8 <= width; c += 8)
            _mm_storeu_si128((__m128i *)(o + c),
                             _mm256_cvtps_ph(_mm256_loadu_ps(x + c), _MM_FROUND_TO_NEAREST_INT));
        for (; c < width; c++)
            o[c] = _cvtss_sh(x[c], _MM_FROUND_TO_NEAREST_INT);
    }
}

DQ_F16C static void rows_from_f16(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, load_f16x8(src + i));
    for (; i < n; i++)
        dst[i] = _cvtsh_ss(src[i]);
}

/* ---- decode attention on AVX-512F
 *
 * attn_decode_part's blocks on 16 lanes, every query row of the KV group against 4 keys at a time
 * (from L1 after the first row), and each value added into the accumulators of up to 4 rows at
 * once (loaded once for them).
 * The cache streams from memory once a step (decode attention waits on memory, not on FMAs), so
 * what counts most is how early its lines are asked for: into L2 (prefetcht1), the keys two
 * blocks ahead and the values one block ahead, a few lines every 4 keys scored, past the job's
 * end into the next range of the same head (another job's, soon) up to the sequence's last key.
 * The AVX2 path asked for this block's values and the next block's keys into L1 at once, 512
 * lines, at the start of each block; on Zen 4 (bench_gemv --attention, CPU time) that took
 * 1.7-2x as long as this, and the 16-lane kernels alone gain 0-10%. The AVX2 path now
 * prefetches as this one does (attn_decode_part). */

/* 16 floats of a key or value row at element i: float32, or float16 widened (exact). */
DQ_AVX512 static inline __attribute__((always_inline)) __m512 kv_load16(const char *row, int i,
                                                                        gboolean f16) {
    return f16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 2 * (size_t)i)))
               : _mm512_loadu_ps((const float *)(row + 4 * (size_t)i));
}

/* The four vectors' sums of their 16 lanes, in that order. Each one's lanes are added by the same
 * tree whichever of the four it is (lane i + lane i+8, then + 4, + 2, + 1), so a key's score
 * depends on its own row only: not on the keys beside it, nor on where a block starts or ends. */
DQ_AVX512 static inline __attribute__((always_inline)) __m128 hsum4_avx512(__m512 a, __m512 b,
                                                                           __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
    /* a's 8 partial sums in 128-bit lanes 0 and 1 of ab, b's in 2 and 3 (and c, d in cd) */
    __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
    /* a's 4 in 128-bit lane 0, b's in 1, c's in 2, d's in 3 */
    x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(1, 0, 3, 2)));
    x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), x));
}

/* S [rows, s_stride]: the scores of query rows q[r] against the block's nk keys at kb
 * (row_bytes apart), four keys at a time (the last four padded with the last key, its
 * duplicates' scores dropped), d % 16 == 0. While scoring key j, asks for rows j of pf_k
 * (j < n_pf_k) and pf_v (j < n_pf_v) into L2. */
DQ_AVX512 static inline __attribute__((always_inline)) void
dot_group_avx512(float *S, int s_stride, const float *const *q, int rows, const char *kb,
                 size_t row_bytes, int nk, int d, gboolean f16, const char *pf_k, int n_pf_k,
                 const char *pf_v, int n_pf_v) {
    size_t line_bytes = (size_t)d * (f16 ? 2 : 4);
    for (int j = 0; j < nk; j += 4) {
        const char *k0 = kb + (size_t)j * row_bytes;
        const char *k1 = kb + (size_t)MIN(j + 1, nk - 1) * row_bytes;
        const char *k2 = kb + (size_t)MIN(j + 2, nk - 1) * row_bytes;
        const char *k3 = kb + (size_t)MIN(j + 3, nk - 1) * row_bytes;
        for (int i = j; i < j + 4; i++)
            for (size_t c = 0; c < line_bytes; c += 64) {
                if (i < n_pf_k)
                    __builtin_prefetch(pf_k + i * row_bytes + c, 0, 2);
                if (i < n_pf_v)
                    __builtin_prefetch(pf_v + i * row_bytes + c, 0, 2);
            }
        for (int r = 0; r < rows; r++) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int c = 0; c < d; c += 16) {
                __m512 qv = _mm512_loadu_ps(q[r] + c);
                a0 = _mm512_fmadd_ps(qv, kv_load16(k0, c, f16), a0);
                a1 = _mm512_fmadd_ps(qv, kv_load16(k1, c, f16), a1);
                a2 = _mm512_fmadd_ps(qv, kv_load16(k2, c, f16), a2);
                a3 = _mm512_fmadd_ps(qv, kv_load16(k3, c, f16), a3);
            }
            __m128 s = hsum4_avx512(a0, a1, a2, a3);
            float *out = S + (size_t)r * s_stride + j;
            if (j + 4 <= nk)
                _mm_storeu_ps(out, s);
            else {
                float t[4];
                _mm_storeu_ps(t, s);
                memcpy(out, t, (size_t)(nk - j) * sizeof(float));
            }
        }
    }
}

/* acc[r] [64 columns from c0] += sum over j < nk of p[r][j] * v_j for nr (1..4) rows: each
 * value loaded once for the rows. The same FMA chain a column as dq_weighted_sum_avx2, so the
 * AVX2 path's bits. */
DQ_AVX512 static inline __attribute__((always_inline)) void
wsum64_rows_avx512(float *const *acc, const float *const *p, const int nr, const char *vb,
                   size_t row_bytes, int nk, int c0, gboolean f16) {
    __m512 a[4][4];
    for (int r = 0; r < nr; r++)
        for (int i = 0; i < 4; i++)
            a[r][i] = _mm512_loadu_ps(acc[r] + c0 + 16 * i);
    for (int j = 0; j < nk; j++) {
        const char *vj = vb + (size_t)j * row_bytes;
        __m512 v0 = kv_load16(vj, c0, f16), v1 = kv_load16(vj, c0 + 16, f16);
        __m512 v2 = kv_load16(vj, c0 + 32, f16), v3 = kv_load16(vj, c0 + 48, f16);
        for (int r = 0; r < nr; r++) {
            __m512 pj = _mm512_set1_ps(p[r][j]);
            a[r][0] = _mm512_fmadd_ps(pj, v0, a[r][0]);
            a[r][1] = _mm512_fmadd_ps(pj, v1, a[r][1]);
            a[r][2] = _mm512_fmadd_ps(pj, v2, a[r][2]);
            a[r][3] = _mm512_fmadd_ps(pj, v3, a[r][3]);
        }
    }
    for (int r = 0; r < nr; r++)
        for (int i = 0; i < 4; i++)
            _mm512_storeu_ps(acc[r] + c0 + 16 * i, a[r][i]);
}

/* The same for 16 columns from c0. */
DQ_AVX512 static inline __attribute__((always_inline)) void
wsum16_rows_avx512(float *const *acc, const float *const *p, const int nr, const char *vb,
                   size_t row_bytes, int nk, int c0, gboolean f16) {
    __m512 a[4];
    for (int r = 0; r < nr; r++)
        a[r] = _mm512_loadu_ps(acc[r] + c0);
    for (int j = 0; j < nk; j++) {
        __m512 v = kv_load16(vb + (size_t)j * row_bytes, c0, f16);
        for (int r = 0; r < nr; r++)
            a[r] = _mm512_fmadd_ps(_mm512_set1_ps(p[r][j]), v, a[r]);
    }
    for (int r = 0; r < nr; r++)
        _mm512_storeu_ps(acc[r] + c0, a[r]);
}

/* acc[r] [d] += sum over j < nk of p[r][j] * v_j for every row r < rows, d % 16 == 0: the rows
 * four at a time (the compiler keeps a constant count's accumulators in registers). */
DQ_AVX512 static inline __attribute__((always_inline)) void
wsum_group_avx512(float *const *acc, const float *const *p, int rows, const char *vb,
                  size_t row_bytes, int nk, int d, gboolean f16) {
    for (int r = 0; r < rows; r += 4) {
        int c0 = 0;
        for (; c0 + 64 <= d; c0 += 64)
            switch (MIN(4, rows - r)) {
            case 1:
                wsum64_rows_avx512(acc + r, p + r, 1, vb, row_bytes, nk, c0, f16);
                break;
            case 2:
                wsum64_rows_avx512(acc + r, p + r, 2, vb, row_bytes, nk, c0, f16);
                break;
            case 3:
                wsum64_rows_avx512(acc + r, p + r, 3, vb, row_bytes, nk, c0, f16);
                break;
            default:
                wsum64_rows_avx512(acc + r, p + r, 4, vb, row_bytes, nk, c0, f16);
                break;
            }
        for (; c0 < d; c0 += 16)
            switch (MIN(4, rows - r)) {
            case 1:
                wsum16_rows_avx512(acc + r, p + r, 1, vb, row_bytes, nk, c0, f16);
                break;
            case 2:
                wsum16_rows_avx512(acc + r, p + r, 2, vb, row_bytes, nk, c0, f16);
                break;
            case 3:
                wsum16_rows_avx512(acc + r, p + r, 3, vb, row_bytes, nk, c0, f16);
                break;
            default:
                wsum16_rows_avx512(acc + r, p + r, 4, vb, row_bytes, nk, c0, f16);
                break;
            }
    }
}

/* attn_decode_part's block loop on AVX-512F (its caller checked d % 16 == 0): the same
 * softmax, the AVX2 path's weighted sums to the bit, scores summed in 16 lanes. f16: the
 * caches are float16 (a constant in each of the two copies). */
DQ_AVX512 static inline __attribute__((always_inline)) void
decode_blocks_avx512(const DqAttention *a, const float *const *qr, const char *kg, const char *vg,
                     int rows, int j_lo, int j_hi, float *const *pr, float *S, gboolean f16) {
    const int KB = DQ_FAST_DECODE_KB;
    int d = a->head_dim, kv_end = a->causal ? MIN(a->n_kv, a->q_pos0 + a->n_q) : a->n_kv;
    size_t row_bytes = (size_t)a->kv_stride * (f16 ? 2 : 4);
    const float *sr[DQ_FAST_DECODE_ROWS];
    for (int r = 0; r < rows; r++)
        sr[r] = S + (size_t)r * KB;
    /* the job's first two blocks of keys and first of values: no block before asked for them
     * (unless this thread's previous job was the range before) */
    for (int j = j_lo; j < MIN(j_hi, j_lo + 2 * KB); j++)
        for (size_t c = 0; c < (size_t)d * (f16 ? 2 : 4); c += 64) {
            __builtin_prefetch(kg + j * row_bytes + c, 0, 2);
            if (j < j_lo + KB)
                __builtin_prefetch(vg + j * row_bytes + c, 0, 2);
        }
    for (int j0 = j_lo; j0 < j_hi; j0 += KB) {
        int nk = MIN(KB, j_hi - j0);
        const char *kb = kg + j0 * row_bytes, *vb = vg + j0 * row_bytes;
        dot_group_avx512(S, KB, qr, rows, kb, row_bytes, nk, d, f16, kb + 2 * KB * row_bytes,
                         CLAMP(kv_end - j0 - 2 * KB, 0, KB), vb + KB * row_bytes,
                         CLAMP(kv_end - j0 - KB, 0, KB));
        for (int r = 0; r < rows; r++) {
            float *p = S + (size_t)r * KB;
            int visible = a->causal ? CLAMP(a->q_pos0 + r % a->n_q + 1 - j0, 0, nk) : nk;
            softmax_row(p, nk, visible, a->scale, &pr[r][d], &pr[r][d + 1], pr[r], d);
        }
        wsum_group_avx512(pr, sr, rows, vb, row_bytes, nk, d, f16);
    }
}

DQ_AVX512 static void decode_blocks_avx512_f32(const DqAttention *a, const float *const *qr,
                                               const char *kg, const char *vg, int rows, int j_lo,
                                               int j_hi, float *const *pr, float *S) {
    decode_blocks_avx512(a, qr, kg, vg, rows, j_lo, j_hi, pr, S, FALSE);
}

DQ_AVX512 static void decode_blocks_avx512_f16(const DqAttention *a, const float *const *qr,
                                               const char *kg, const char *vg, int rows, int j_lo,
                                               int j_hi, float *const *pr, float *S) {
    decode_blocks_avx512(a, qr, kg, vg, rows, j_lo, j_hi, pr, S, TRUE);
}

/* Every query row of the `group` heads sharing KV head g against keys [j_lo, j_hi): the
 * unnormalized accumulators and the running max and sum of each row, into part [rows, d + 2].
 * kg, vg: the head's first key and value, float32 or float16 (a->kv_f16). */
static void attn_decode_part(const DqAttention *a, const float *q, const void *kg, const void *vg,
                             int h0, int nh, int j_lo, int j_hi, float *part, float *scratch) {
    int d = a->head_dim, rows = nh * a->n_q;
    float *S = scratch; /* [rows, DQ_FAST_DECODE_KB] */
    gboolean avx2 = dq_cpu_has_avx2(), f16 = a->kv_f16;
    size_t es = f16 ? 2 : 4, row_bytes = (size_t)a->kv_stride * es;
    for (int r = 0; r < rows; r++) {
        float *pr = part + (size_t)r * (d + 2);
        memset(pr, 0, (size_t)d * sizeof(float));
        pr[d] = -INFINITY; /* running max */
        pr[d + 1] = 0.0f;  /* running sum */
    }
    if (d % 16 == 0 && dq_cpu_has_avx512f()) {
        /* row r = (head h0 + r / n_q, query r % n_q) */
        const float *qr[DQ_FAST_DECODE_ROWS];
        float *pr[DQ_FAST_DECODE_ROWS];
        g_assert(rows <= DQ_FAST_DECODE_ROWS);
        for (int r = 0; r < rows; r++) {
            qr[r] = q + (size_t)(r % a->n_q) * a->q_stride + (size_t)(h0 + r / a->n_q) * d;
            pr[r] = part + (size_t)r * (d + 2);
        }
        (f16 ? decode_blocks_avx512_f16 : decode_blocks_avx512_f32)(a, qr, kg, vg, rows, j_lo, j_hi,
                                                                    pr, S);
        return;
    }
    /* The AVX-512 path's prefetching (decode_blocks_avx512): into L2, the keys two blocks ahead
     * and the values one, a few lines for each 4 keys scored, up to the sequence's last key;
     * the job's first two blocks of keys and first of values at its start. On Zen 4 with
     * DOCQA_CPU_NO_AVX512 it halved decode attention's CPU time against 512 lines into L1 at
     * each block's start (bench_gemv --attention: 3.9-4.2 -> 2.1-2.3 ms a step at 256M). */
    const int KB = DQ_FAST_DECODE_KB;
    int kv_end = a->causal ? MIN(a->n_kv, a->q_pos0 + a->n_q) : a->n_kv;
    size_t line_bytes = (size_t)d * es;
    for (int j = j_lo; j < MIN(j_hi, j_lo + 2 * KB); j++)
        for (size_t c = 0; c < line_bytes; c += 64) {
            __builtin_prefetch((const char *)kg + j * row_bytes + c, 0, 2);
            if (j < j_lo + KB)
                __builtin_prefetch((const char *)vg + j * row_bytes + c, 0, 2);
        }
    for (int j0 = j_lo; j0 < j_hi; j0 += KB) {
        int nk = MIN(KB, j_hi - j0);
        const char *kb = (const char *)kg + j0 * row_bytes, *vb = (const char *)vg + j0 * row_bytes;
        const char *pf_k = kb + 2 * KB * row_bytes, *pf_v = vb + KB * row_bytes;
        int n_pf_k = CLAMP(kv_end - j0 - 2 * KB, 0, KB), n_pf_v = CLAMP(kv_end - j0 - KB, 0, KB);
        /* row r = (head h0 + r / n_q, query r % n_q); four keys at a time for all rows (from
         * L1 after the first): a key's score does not depend on the keys scored with it */
        for (int j = 0; j < nk; j += 4) {
            int n4 = MIN(4, nk - j);
            for (int i = j; i < j + 4; i++)
                for (size_t c = 0; c < line_bytes; c += 64) {
                    if (i < n_pf_k)
                        __builtin_prefetch(pf_k + i * row_bytes + c, 0, 2);
                    if (i < n_pf_v)
                        __builtin_prefetch(pf_v + i * row_bytes + c, 0, 2);
                }
            const char *k4 = kb + j * row_bytes;
            for (int r = 0; r < rows; r++) {
                const float *qr =
                    q + (size_t)(r % a->n_q) * a->q_stride + (size_t)(h0 + r / a->n_q) * d;
                float *sr = S + (size_t)r * KB + j;
                if (f16)
                    dot_rows_f16(sr, qr, (const uint16_t *)k4, a->kv_stride, n4, d);
                else if (avx2)
                    dq_dot_rows_avx2(sr, qr, (const float *)k4, a->kv_stride, n4, d);
                else
                    for (int jj = 0; jj < n4; jj++) {
                        const float *kj = (const float *)(k4 + jj * row_bytes);
                        float s = 0.0f;
                        for (int c = 0; c < d; c++)
                            s += qr[c] * kj[c];
                        sr[jj] = s;
                    }
            }
        }
        for (int r = 0; r < rows; r++) {
            float *sr = S + (size_t)r * KB, *pr = part + (size_t)r * (d + 2);
            int visible = a->causal ? CLAMP(a->q_pos0 + r % a->n_q + 1 - j0, 0, nk) : nk;
            softmax_row(sr, nk, visible, a->scale, &pr[d], &pr[d + 1], pr, d);
        }
        for (int r = 0; r < rows; r++) {
            const float *sr = S + (size_t)r * DQ_FAST_DECODE_KB;
            float *pr = part + (size_t)r * (d + 2);
            if (f16)
                weighted_sum_f16(pr, sr, (const uint16_t *)vb, a->kv_stride, nk, d);
            else if (avx2)
                dq_weighted_sum_avx2(pr, sr, (const float *)vb, a->kv_stride, nk, d);
            else
                for (int j = 0; j < nk; j++) {
                    const float *vj = (const float *)(vb + j * row_bytes);
                    for (int c = 0; c < d; c++)
                        pr[c] += sr[j] * vj[c];
                }
        }
    }
}

/* Decode attention, flash-decoding style: a job is (sequence, KV head, range of
 * DQ_FAST_DECODE_SPLIT keys or more) with every query row of the heads sharing that KV head,
 * so each key and value is read once a step and the threads get equal shares even when the
 * heads are fewer than the threads want (3 KV heads at 256M). The ranges' partial softmax
 * states are merged in order afterwards. The split depends on the sequence's own length and
 * the model's shape only, and so do its jobs and its merge: a sequence's result does not depend
 * on its batch-mates, nor on whether they came in the same call. */
typedef struct {
    DqAttention a; /* one sequence: n_seq 1 */
    float *out;
    const float *q;
    const void *k, *v; /* float32, or float16 where a.kv_f16 */
    int kv_end, split, n_split;
} DecodeSeq;

#define DQ_FAST_DECODE_BATCH 64 /* sequences planned at once (a stack array; more go in turns) */

static size_t decode_part_floats(const DqAttention *a) {
    return (size_t)(a->n_heads / a->n_kv_heads) * a->n_q * (a->head_dim + 2);
}

/* Parts fit in the GEMM's pack (idle during attention), all threads' shares. */
static size_t decode_max_parts(const FastCtx *ctx, const DqAttention *a) {
    return DQ_GEMM_PACK_FLOATS * (size_t)ctx->threads / decode_part_floats(a);
}

/* Keys per job: DQ_FAST_DECODE_SPLIT, doubled until the parts of a sequence of kv_end keys fit
 * (only for contexts of hundreds of thousands of keys). */
static int decode_split(const FastCtx *ctx, const DqAttention *a, int kv_end) {
    int split = DQ_FAST_DECODE_SPLIT;
    while ((size_t)a->n_kv_heads * ((kv_end + split - 1) / split) > decode_max_parts(ctx, a))
        split *= 2;
    return split;
}

static void decode_plan(const FastCtx *ctx, DecodeSeq *s) {
    const DqAttention *a = &s->a;
    s->kv_end = a->causal ? MIN(a->n_kv, a->q_pos0 + a->n_q) : a->n_kv;
    int split = decode_split(ctx, a, s->kv_end);
    s->split = split;
    s->n_split = MAX(1, (s->kv_end + split - 1) / split);
}

/* Floats of partial states a planned sequence needs: one part a (KV head, key range) job. */
static size_t decode_seq_parts(const DecodeSeq *s) {
    return (size_t)s->a.n_kv_heads * s->n_split * decode_part_floats(&s->a);
}

static void decode_merge(const DecodeSeq *s, const float *parts) {
    const DqAttention *a = &s->a;
    int d = a->head_dim, group = a->n_heads / a->n_kv_heads, rows = group * a->n_q;
    int out_stride = a->n_heads * d;
    size_t part_floats = decode_part_floats(a);
    for (int g = 0; g < a->n_kv_heads; g++)
        for (int r = 0; r < rows; r++) {
            const float *p0 = parts + (size_t)g * s->n_split * part_floats + (size_t)r * (d + 2);
            float m = -INFINITY;
            for (int sp = 0; sp < s->n_split; sp++)
                m = MAX(m, p0[(size_t)sp * part_floats + d]);
            float *o =
                s->out + (size_t)(r % a->n_q) * out_stride + (size_t)(g * group + r / a->n_q) * d;
            float total = 0.0f;
            for (int c = 0; c < d; c++)
                o[c] = 0.0f;
            for (int sp = 0; sp < s->n_split; sp++) {
                const float *p = p0 + (size_t)sp * part_floats;
                if (p[d + 1] == 0.0f)
                    continue; /* no key of the range visible to this row */
                float w = expf(p[d] - m);
                total += p[d + 1] * w;
                for (int c = 0; c < d; c++)
                    o[c] += p[c] * w;
            }
            float inv = total > 0.0f ? 1.0f / total : 0.0f;
            for (int c = 0; c < d; c++)
                o[c] *= inv;
        }
}

/* Every job of seqs[0 .. n) in one parallel loop (planned; their parts must fit together). */
static void decode_run(FastCtx *ctx, const DecodeSeq *seqs, int n) {
    int first_job[DQ_FAST_DECODE_BATCH + 1];
    size_t first_part[DQ_FAST_DECODE_BATCH + 1];
    first_job[0] = 0;
    first_part[0] = 0;
    for (int i = 0; i < n; i++) {
        first_job[i + 1] = first_job[i] + seqs[i].a.n_kv_heads * seqs[i].n_split;
        first_part[i + 1] = first_part[i] + decode_seq_parts(&seqs[i]);
    }
    float *parts = ctx->pack;
    int jobs = first_job[n];
    /* the merges too: done by one thread, they had the other wait 1-2% of a batched step */
#pragma omp parallel num_threads(ctx->threads) if (jobs > 1)
    {
#pragma omp for schedule(dynamic)
        for (int job = 0; job < jobs; job++) {
            int i = 0;
            while (job >= first_job[i + 1])
                i++;
            const DecodeSeq *s = &seqs[i];
            int d = s->a.head_dim, group = s->a.n_heads / s->a.n_kv_heads;
            /* Range-major: jobs taken together (one a thread) read the same positions' heads,
             * neighbouring bytes of the cache, where head-major ones read ranges far apart. */
            int local = job - first_job[i], g = local % s->a.n_kv_heads,
                sp = local / s->a.n_kv_heads;
            size_t head = (size_t)g * d * (s->a.kv_f16 ? 2 : 4); /* bytes */
            attn_decode_part(
                &s->a, s->q, (const char *)s->k + head, (const char *)s->v + head, g * group, group,
                sp * s->split, MIN(s->kv_end, (sp + 1) * s->split),
                parts + first_part[i] + (size_t)(g * s->n_split + sp) * decode_part_floats(&s->a),
                ctx->attn_scratch + (size_t)omp_get_thread_num() * DQ_FAST_ATTN_FLOATS);
        }
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++)
            decode_merge(&seqs[i], parts + first_part[i]);
    }
}

/* Plans and runs the sequences in turns of as many as fit in the parts buffer (one always fits:
 * decode_plan widens its split until it does). */
static void decode_batch(FastCtx *ctx, DecodeSeq *seqs, int n) {
    int i = 0;
    while (i < n) {
        size_t used = 0, cap = DQ_GEMM_PACK_FLOATS * (size_t)ctx->threads;
        int j = i;
        for (; j < n && j - i < DQ_FAST_DECODE_BATCH; j++) {
            decode_plan(ctx, &seqs[j]);
            size_t need = decode_seq_parts(&seqs[j]);
            if (j > i && used + need > cap)
                break;
            used += need;
        }
        decode_run(ctx, seqs + i, j - i);
        i = j;
    }
}

/* A decode call's sequence s as a DecodeSeq. */
static DecodeSeq decode_seq(const DqAttention *a, float *out, const float *q, const void *k,
                            const void *v) {
    DecodeSeq s = {.a = *a, .out = out, .q = q, .k = k, .v = v};
    s.a.n_seq = 1;
    s.a.q_seq_stride = s.a.kv_seq_stride = 0;
    return s;
}

static void fast_attention(DqBackend *be, float *out, const float *q, const float *k,
                           const float *v, const DqAttention *a) {
    FastCtx *ctx = be->ctx;
    int group = a->n_heads / a->n_kv_heads;
    g_assert(!a->kv_f16); /* float16 caches come through attention_segments only */
    if (a->head_dim > DQ_FAST_HEAD_MAX) {
        ctx->ref->attention(ctx->ref, out, q, k, v, a);
        return;
    }
    int out_stride = a->n_heads * a->head_dim;
    if (group * a->n_q <= DQ_FAST_DECODE_ROWS) {
        DecodeSeq seqs[DQ_FAST_DECODE_BATCH];
        for (int s0 = 0; s0 < a->n_seq; s0 += DQ_FAST_DECODE_BATCH) {
            int n = MIN(DQ_FAST_DECODE_BATCH, a->n_seq - s0);
            for (int i = 0; i < n; i++) {
                int s = s0 + i;
                seqs[i] =
                    decode_seq(a, out + (size_t)s * a->n_q * out_stride, q + s * a->q_seq_stride,
                               k + s * a->kv_seq_stride, v + s * a->kv_seq_stride);
            }
            decode_batch(ctx, seqs, n);
        }
        return;
    }
    int ranges = (a->n_q + DQ_FAST_QR - 1) / DQ_FAST_QR;
    int jobs = a->n_seq * a->n_heads * ranges;
    DqAttnProducts how =
        dq_attn_products(a->bf16_products, ctx->bf16_dot, a->head_dim <= DQ_AMX_HEAD_MAX,
                         dq_cpu_has_amx_bf16(), dq_amx_x6_on());
#pragma omp parallel for schedule(dynamic) num_threads(ctx->threads) if (jobs > 1)
    for (int job = 0; job < jobs; job++) {
        int s = job / (a->n_heads * ranges), h = job / ranges % a->n_heads, g = h / group;
        int i_lo = job % ranges * DQ_FAST_QR, i_hi = MIN(a->n_q, i_lo + DQ_FAST_QR);
        const float *qh = q + s * a->q_seq_stride + (size_t)h * a->head_dim;
        const float *kh = k + s * a->kv_seq_stride + (size_t)g * a->head_dim;
        const float *vh = v + s * a->kv_seq_stride + (size_t)g * a->head_dim;
        float *oh = out + (size_t)s * a->n_q * out_stride + (size_t)h * a->head_dim;
        float *scratch = ctx->attn_scratch + (size_t)omp_get_thread_num() * DQ_FAST_ATTN_FLOATS;
        if (how == DQ_ATTN_AMX_BF16 || how == DQ_ATTN_X6)
            attn_range_amx(a, how == DQ_ATTN_AMX_BF16 ? 1 : 3, qh, kh, vh, oh, out_stride, i_lo,
                           i_hi, scratch);
        else if (how == DQ_ATTN_DOT_BF16)
            attn_range_dot(a, qh, kh, vh, oh, out_stride, i_lo, i_hi, scratch);
        else
            attn_range(a, qh, kh, vh, oh, out_stride, i_lo, i_hi, scratch);
    }
}

/* A prompt segment over float16 caches: its keys and values as float32 (the earlier rows
 * widened, its own new rows as given, unrounded), then the float32 attention. Prompts are not
 * the decode loop: the copy may allocate. */
static void prompt_over_f16(DqBackend *be, float *out, const float *q, const float *k_new,
                            const float *v_new, const DqAttnSegment *g, const DqAttention *a) {
    if (g->n_past == 0) { /* the usual case: the new rows are all the keys */
        DqAttention f = *a;
        f.kv_f16 = FALSE;
        fast_attention(be, out, q, k_new, v_new, &f);
        return;
    }
    size_t kvs = (size_t)a->kv_stride, past = (size_t)g->n_past * kvs;
    size_t all = (size_t)a->n_kv * kvs;
    float *k = g_new(float, 2 * all), *v = k + all;
    rows_from_f16(k, (const uint16_t *)(const void *)g->k_cache, past);
    rows_from_f16(v, (const uint16_t *)(const void *)g->v_cache, past);
    memcpy(k + past, k_new, (size_t)g->n_q * kvs * sizeof(float));
    memcpy(v + past, v_new, (size_t)g->n_q * kvs * sizeof(float));
    DqAttention f = *a;
    f.kv_f16 = FALSE;
    fast_attention(be, out, q, k, v, &f);
    g_free(k);
}

/* One segment's attention (its keys and values already in its cache): a decode-sized one
 * joins seqs[0 .. n) (run when full), a longer one (a prompt) runs at once. Returns n. */
static int attend_segment(DqBackend *be, DecodeSeq *seqs, int n, float *out, const float *q,
                          const float *k_new, const float *v_new, const DqAttnSegment *g,
                          DqAttention a) {
    FastCtx *ctx = be->ctx;
    int group = a.n_heads / a.n_kv_heads;
    size_t kv_row = (size_t)a.kv_stride, out_row = (size_t)a.n_heads * a.head_dim;
    a.n_q = g->n_q;
    a.n_kv = g->n_past + g->n_q;
    a.q_pos0 = g->n_past;
    float *o = out + (size_t)g->row0 * out_row;
    const float *qs = q + (size_t)g->row0 * a.q_stride;
    if (group * a.n_q > DQ_FAST_DECODE_ROWS || a.head_dim > DQ_FAST_HEAD_MAX) {
        if (a.kv_f16)
            prompt_over_f16(be, o, qs, k_new + (size_t)g->row0 * kv_row,
                            v_new + (size_t)g->row0 * kv_row, g, &a);
        else
            fast_attention(be, o, qs, g->k_cache, g->v_cache, &a);
        return n;
    }
    seqs[n++] = decode_seq(&a, o, qs, g->k_cache, g->v_cache);
    if (n == DQ_FAST_DECODE_BATCH) {
        decode_batch(ctx, seqs, n);
        n = 0;
    }
    return n;
}

/* Whether a steps segment's rows may share one decode job: attn_decode_part gives a row the
 * bits it gives it alone (its keys in the same blocks, scores and weights of the keys it does
 * not see left out of the sums, which only add zeros), as long as the job's key ranges are the
 * row's own: the same split. */
static gboolean steps_together(const FastCtx *ctx, const DqAttnSegment *g, DqAttention a) {
    int group = a.n_heads / a.n_kv_heads;
    if (group * g->n_q > DQ_FAST_DECODE_ROWS || a.head_dim > DQ_FAST_HEAD_MAX)
        return FALSE;
    a.n_q = g->n_q;
    int split = decode_split(ctx, &a, g->n_past + g->n_q);
    a.n_q = 1;
    for (int i = 0; i < g->n_q; i++)
        if (decode_split(ctx, &a, g->n_past + i + 1) != split)
            return FALSE;
    return TRUE;
}

/* The decoder's batch: each sequence's new keys and values appended to its own cache, then
 * the decode-sized sequences' attention as one set of jobs (per sequence, the loop of
 * dq_attention_segments paid a parallel region a layer, and short sequences with 3 jobs
 * left a thread idle). Longer segments (prompts) run one by one as in that loop. A steps
 * segment's rows (speculative decoding's check) go into one job where steps_together allows,
 * each key then read once for all of them; else one a row. */
static void fast_attention_segments(DqBackend *be, float *out, const float *q, const float *k_new,
                                    const float *v_new, const DqAttnSegment *segs, int n_segs,
                                    const DqAttention *shape) {
    FastCtx *ctx = be->ctx;
    DqAttention a = *shape;
    a.n_seq = 1;
    a.causal = TRUE;
    a.q_seq_stride = a.kv_seq_stride = 0;
    g_assert(!a.kv_f16 || be->kv_f16);
    size_t kv_row = (size_t)a.kv_stride;
    DecodeSeq seqs[DQ_FAST_DECODE_BATCH];
    int n = 0;
    for (int s = 0; s < n_segs; s++) {
        const DqAttnSegment *g = &segs[s];
        const float *kn = k_new + (size_t)g->row0 * kv_row, *vn = v_new + (size_t)g->row0 * kv_row;
        if (a.kv_f16) {
            uint16_t *kc = (uint16_t *)(void *)g->k_cache, *vc = (uint16_t *)(void *)g->v_cache;
            rows_to_f16(kc + (size_t)g->n_past * kv_row, kv_row, kn, kv_row, g->n_q, a.kv_stride);
            rows_to_f16(vc + (size_t)g->n_past * kv_row, kv_row, vn, kv_row, g->n_q, a.kv_stride);
        } else {
            memcpy(g->k_cache + (size_t)g->n_past * kv_row, kn,
                   (size_t)g->n_q * kv_row * sizeof(float));
            memcpy(g->v_cache + (size_t)g->n_past * kv_row, vn,
                   (size_t)g->n_q * kv_row * sizeof(float));
        }
        if (!g->steps || g->n_q == 1 || steps_together(ctx, g, a)) {
            n = attend_segment(be, seqs, n, out, q, k_new, v_new, g, a);
            continue;
        }
        for (int i = 0; i < g->n_q; i++) {
            DqAttnSegment one = *g;
            one.row0 += i;
            one.n_past += i;
            one.n_q = 1;
            one.steps = FALSE;
            n = attend_segment(be, seqs, n, out, q, k_new, v_new, &one, a);
        }
    }
    decode_batch(ctx, seqs, n);
}

/* prompt_split_min: from matmul_row_invariant_min rows a product's rows are the GEMM's whatever
 * the count; a prompt segment's attention (attn_range, attn_range_amx) takes the keys in blocks
 * of DQ_FAST_KB counted from key 0, whatever row its call starts at, each row's online softmax
 * over the same blocks in the same order and the keys it does not see weighted 0, which adds
 * nothing. That holds on the prompts' path only, more than DQ_FAST_DECODE_ROWS rows (heads
 * sharing a KV head x positions); fewer take decode's, whose sums run in another order. Float16
 * caches break it: a prompt attends over its own new rows unrounded (prompt_over_f16), over an
 * earlier call's rounded; and heads wider than DQ_FAST_HEAD_MAX take the reference's attention,
 * which promises nothing. */
static int fast_prompt_split_min(DqBackend *be, const DqAttention *shape) {
    if (shape->kv_f16 || shape->head_dim > DQ_FAST_HEAD_MAX || shape->n_kv_heads <= 0)
        return 0;
    int group = MAX(shape->n_heads / shape->n_kv_heads, 1);
    return MAX(be->matmul_row_invariant_min, DQ_FAST_DECODE_ROWS / group + 1);
}

/* ---- elementwise: float32 vector exp (Cephes' polynomial, ~1 ulp on the range used) */

#define DQ_GELU_K 0.7978845608028654f /* sqrt(2 / pi) */

__attribute__((target("avx2,fma"))) static void gelu_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
        __m256 u = _mm256_mul_ps(_mm256_set1_ps(DQ_GELU_K),
                                 _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
        __m256 e = dq_exp256(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f)));
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
        __m256 e = dq_exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
        __m256 s = _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++)
        g[i] = (g[i] / (1.0f + expf(-g[i]))) * up[i];
}

/* gelu_avx2 and silu_mul_avx2 on 16 lanes, lane for lane the same bits. */
DQ_AVX512 static void gelu_avx512(float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
        __m512 u = _mm512_mul_ps(_mm512_set1_ps(DQ_GELU_K),
                                 _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), v3, v));
        __m512 e = dq_exp512(_mm512_mul_ps(u, _mm512_set1_ps(-2.0f)));
        _mm512_storeu_ps(x + i, _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    }
    gelu_avx2(x + i, n - i);
}

DQ_AVX512 static void silu_mul_avx512(float *g, const float *up, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(g + i);
        __m512 e = dq_exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
        __m512 s = _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(s, _mm512_loadu_ps(up + i)));
    }
    silu_mul_avx2(g + i, up + i, n - i);
}

#define DQ_FAST_CHUNK ((size_t)16384)

static void fast_gelu_tanh(DqBackend *be, float *x, size_t n) {
    FastCtx *ctx = be->ctx;
    gboolean avx512 = dq_cpu_has_avx512f();
    if (!dq_cpu_has_avx2()) {
        ctx->ref->gelu_tanh(ctx->ref, x, n);
        return;
    }
    size_t chunks = (n + DQ_FAST_CHUNK - 1) / DQ_FAST_CHUNK;
#pragma omp parallel for num_threads(ctx->threads) if (chunks > 1)
    for (size_t c = 0; c < chunks; c++)
        (avx512 ? gelu_avx512 : gelu_avx2)(x + c * DQ_FAST_CHUNK,
                                           MIN(DQ_FAST_CHUNK, n - c * DQ_FAST_CHUNK));
}

static void fast_silu_mul(DqBackend *be, float *gate, const float *up, size_t n) {
    FastCtx *ctx = be->ctx;
    gboolean avx512 = dq_cpu_has_avx512f();
    if (!dq_cpu_has_avx2()) {
        ctx->ref->silu_mul(ctx->ref, gate, up, n);
        return;
    }
    size_t chunks = (n + DQ_FAST_CHUNK - 1) / DQ_FAST_CHUNK;
#pragma omp parallel for num_threads(ctx->threads) if (chunks > 1)
    for (size_t c = 0; c < chunks; c++)
        (avx512 ? silu_mul_avx512 : silu_mul_avx2)(gate + c * DQ_FAST_CHUNK, up + c * DQ_FAST_CHUNK,
                                                   MIN(DQ_FAST_CHUNK, n - c * DQ_FAST_CHUNK));
}

/* ---- layer norm
 *
 * The reference's arithmetic, its sums in double lanes: mean and variance summed in double,
 * then each element (float)(x - mean) * inv * w + b in float, multiplies and adds rounded one
 * by one as the reference is compiled (the _round_ forms: a compiler may fuse a plain multiply
 * and add into an FMA). A float row's sum in double is exact while the row spans less than 2^29
 * in magnitude, so the lanes' other order nearly always gives the reference's bits
 * (test_backend_fast /backend_fast/layernorm). The reference's loop, one double a step, was 6%
 * of a `--weights bf16` page. Rows go 8 floats at a time, the last 8 masked. */
#define RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* Bits [0, n) of 8, n > 0. */
static inline __mmask8 first8(int n) {
    return n >= 8 ? 0xff : (__mmask8)((1u << n) - 1);
}

/* Floats [0, 8) of p that `live` marks, zeros elsewhere. */
DQ_AVX512 static inline __m256 load8(const float *p, __mmask8 live) {
    return _mm512_castps512_ps256(_mm512_maskz_loadu_ps(live, p));
}

DQ_AVX512 static void layernorm_row_avx512(float *y, const float *x, const float *w, const float *b,
                                           int dim, float eps) {
    __m512d sum = _mm512_setzero_pd();
    for (int i = 0; i < dim; i += 8) {
        __mmask8 live = first8(dim - i);
        sum = _mm512_add_round_pd(sum, _mm512_cvtps_pd(load8(x + i, live)), RN);
    }
    double mean = _mm512_reduce_add_pd(sum) / dim;
    __m512d m = _mm512_set1_pd(mean);
    sum = _mm512_setzero_pd();
    for (int i = 0; i < dim; i += 8) {
        __mmask8 live = first8(dim - i);
        __m512d d = _mm512_sub_round_pd(_mm512_cvtps_pd(load8(x + i, live)), m, RN);
        sum = _mm512_mask_add_round_pd(sum, live, sum, _mm512_mul_round_pd(d, d, RN), RN);
    }
    float inv = (float)(1.0 / sqrt(_mm512_reduce_add_pd(sum) / dim + eps));
    __m512 vi = _mm512_set1_ps(inv);
    for (int i = 0; i < dim; i += 8) {
        __mmask8 live = first8(dim - i);
        __m512d d = _mm512_sub_round_pd(_mm512_cvtps_pd(load8(x + i, live)), m, RN);
        /* float32 arithmetic on 8 lanes: the _round_ forms are 512 bits wide */
        __m512 t = _mm512_zextps256_ps512(_mm512_cvtpd_ps(d));
        t = _mm512_mul_round_ps(_mm512_mul_round_ps(t, vi, RN), _mm512_maskz_loadu_ps(live, w + i),
                                RN);
        t = _mm512_add_round_ps(t, _mm512_maskz_loadu_ps(live, b + i), RN);
        _mm512_mask_storeu_ps(y + i, live, t);
    }
}
#undef RN

static void fast_layernorm(DqBackend *be, float *y, const float *x, const DqWeight *w,
                           const DqWeight *b, int n, int dim, float eps) {
    FastCtx *ctx = be->ctx;
    if (!dq_cpu_has_avx512f() || w->dtype != DQ_DTYPE_F32 || b->dtype != DQ_DTYPE_F32) {
        ctx->ref->layernorm(ctx->ref, y, x, w, b, n, dim, eps);
        return;
    }
#pragma omp parallel for num_threads(ctx->threads) if (n > 16)
    for (int r = 0; r < n; r++)
        layernorm_row_avx512(y + (size_t)r * dim, x + (size_t)r * dim, w->data, b->data, dim, eps);
}

/* ---- rotary embedding */

/* The reference's rope computes powf, cos and sin for every row, head pair and call: 30 layers
 * x 2 calls a forward, on one thread below 17 rows (7% of a batched decode step, perf). The same
 * values, computed once a position by the same expressions, are kept; the rotation is the
 * reference's own arithmetic (no fused multiply-add here: the same bits). Positions past the
 * table, or another table (theta, scaling or head size), take the reference's path. */
#define DQ_FAST_ROPE_POSITIONS 32768

static void rope_fill(FastCtx *ctx, int upto) {
    const DqRope *rope = &ctx->rope;
    int half = rope->half;
    for (int p = ctx->rope_filled; p < upto; p++)
        for (int i = 0; i < half; i++) {
            float angle = (float)p * rope->inv_freq[i];
            float *cs = ctx->rope_cs + ((size_t)p * half + i) * 2;
            cs[0] = (float)cos(angle) * rope->attention_factor;
            cs[1] = (float)sin(angle) * rope->attention_factor;
        }
    ctx->rope_filled = MAX(ctx->rope_filled, upto);
}

static void fast_rope(DqBackend *be, float *x, const int32_t *pos, int n, int n_heads, int head_dim,
                      const DqRope *rope) {
    FastCtx *ctx = be->ctx;
    int half = head_dim / 2, top = 0;
    gboolean ok = head_dim % 2 == 0 && half > 0;
    for (int r = 0; r < n && ok; r++) {
        ok = pos[r] >= 0 && pos[r] < DQ_FAST_ROPE_POSITIONS;
        top = MAX(top, pos[r] + 1);
    }
    if (ok && ctx->rope_cs == NULL) {
        ctx->rope_cs = g_new(float, (size_t)DQ_FAST_ROPE_POSITIONS *half * 2);
        ctx->rope = *rope;
    }
    if (!ok || half != ctx->rope.half || !dq_rope_equal(rope, &ctx->rope)) {
        ctx->ref->rope(ctx->ref, x, pos, n, n_heads, head_dim, rope);
        return;
    }
    if (top > ctx->rope_filled)
        rope_fill(ctx, top);
#pragma omp parallel for num_threads(ctx->threads) if (n > 64)
    for (int r = 0; r < n; r++) {
        float *xr = x + (size_t)r * n_heads * head_dim;
        const float *cs = ctx->rope_cs + (size_t)pos[r] * half * 2;
        for (int h = 0; h < n_heads; h++) {
            float *v = xr + (size_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], c = cs[2 * i], s = cs[2 * i + 1];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

static void fast_destroy(DqBackend *be) {
    FastCtx *ctx = be->ctx;
    g_free(ctx->rope_cs);
    ctx->ref->release(ctx->ref, ctx->pack);
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
    const char *dot = g_getenv("DOCQA_BF16_DOT");
    ctx->bf16_dot =
        g_strcmp0(dot, "0") != 0 && (dq_cpu_has_avx512bf16() || g_strcmp0(dot, "emulate") == 0);
    /* All scratch up front: no op allocates. */
    ctx->attn_scratch = ref->alloc(ref, DQ_FAST_ATTN_FLOATS * (size_t)ctx->threads);
    ctx->pack = ref->alloc(ref, DQ_GEMM_LINEAR_PACK_FLOATS(ctx->threads));
    if (ctx->attn_scratch == NULL || ctx->pack == NULL) {
        if (ctx->attn_scratch != NULL)
            ref->release(ref, ctx->attn_scratch);
        if (ctx->pack != NULL)
            ref->release(ref, ctx->pack);
        dq_backend_free(ref);
        g_free(ctx);
        dq_fail(err, DQ_ERR_LIMIT, "cpu backend: out of memory for %d threads' scratch",
                omp_get_max_threads());
        return NULL;
    }
    DqBackend *be = g_new0(DqBackend, 1);
    *be = *ref; /* memory, norms, layout ops: the reference's */
    be->name = "cpu";
    be->ctx = ctx;
    be->destroy = fast_destroy;
    be->weight_init = fast_weight_init;
    be->weight_free = fast_weight_free;
    be->weight_init_q8 = fast_weight_init_q8;
    be->matmul_many = fast_matmul_many;
    be->weight_init_bf16 = fast_weight_init_bf16;
    be->matmul = fast_matmul;
    be->embed = fast_embed;
    be->add_broadcast = fast_add_broadcast;
    be->attention = fast_attention;
    be->attention_segments = fast_attention_segments;
    be->kv_f16 = cpu_has_f16c();
    be->gelu_tanh = fast_gelu_tanh;
    be->layernorm = fast_layernorm;
    be->silu_mul = fast_silu_mul;
    be->rope = fast_rope;
    be->matmul_row_invariant_max = DQ_FAST_GEMV_ROWS;
    be->attention_steps = TRUE;
    be->matmul_row_invariant_min = DQ_FAST_GEMV_ROWS + 1;
    be->prompt_split_min = fast_prompt_split_min;
    return be;
}
