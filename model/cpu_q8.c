/* The fast CPU backend's int8 decoder weights (see cpu_q8.h for the format and the contract). */
#include "cpu_q8.h"

#include "cpu_simd.h"
#include "dq_error.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define QB DQ_Q8_BLOCK

/* ---- quantization at load */

static void quantize_row(const float *w, int cols, int8_t *q, float *scales) {
    for (int b = 0; b < cols / QB; b++) {
        const float *src = w + (size_t)b * QB;
        float amax = 0.0f;
        for (int k = 0; k < QB; k++)
            amax = MAX(amax, fabsf(src[k]));
        float scale = amax / 127.0f;
        scales[b] = scale;
        for (int k = 0; k < QB; k++) {
            /* |w| <= amax, so |w / scale| <= 127 up to one rounding: clamp for safety */
            long v = scale > 0.0f ? lrintf(src[k] / scale) : 0;
            q[(size_t)b * QB + k] = (int8_t)CLAMP(v, -127, 127);
        }
    }
}

gboolean dq_q8_quantize(DqWeight *w, const DqTensor *t, int rows, int cols, int threads,
                        GError **err) {
    memset(w, 0, sizeof *w);
    if (rows <= 0 || cols <= 0 || cols % QB != 0)
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s: tensor '%s': %d columns is not a positive multiple of %d (int8 blocks)",
                       t->file, t->name, cols, QB);
    if ((int64_t)rows * cols != t->numel)
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s: tensor '%s' has %" G_GINT64_FORMAT " elements, expected %d x %d",
                       t->file, t->name, t->numel, rows, cols);
    size_t n = (size_t)rows * cols, esize = dq_dtype_size(t->dtype);
    /* q then scales; n is a multiple of 32, so the scales stay 32-byte aligned */
    int8_t *buf = aligned_alloc(64, (n + n / QB * sizeof(float) + 63) / 64 * 64);
    if (buf == NULL)
        return dq_fail(err, DQ_ERR_LIMIT, "%s: out of memory for int8 tensor '%s' (%d x %d)",
                       t->file, t->name, rows, cols);
    float *scales = (float *)(buf + n);
#pragma omp parallel num_threads(threads) if (rows >= 64)
    {
        float *row = g_new(float, cols);
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            /* the mapping is not necessarily aligned: dq_convert_to_f32 reads bytes */
            dq_convert_to_f32(row, (const char *)t->data + (size_t)r * cols * esize, t->dtype,
                              (size_t)cols);
            quantize_row(row, cols, buf + (size_t)r * cols, scales + (size_t)r * (cols / QB));
        }
        g_free(row);
    }
    w->rows = rows;
    w->cols = cols;
    w->data = (const float *)(void *)buf;
    w->owned = buf;
    w->dtype = DQ_WEIGHT_Q8;
    return TRUE;
}

void dq_q8_free(DqWeight *w) {
    free(w->owned);
    memset(w, 0, sizeof *w);
}

void dq_q8_dequantize(const DqWeight *w, float *out) {
    const int8_t *q = dq_q8_values(w);
    const float *s = dq_q8_scales(w);
    size_t n = (size_t)w->rows * w->cols;
    for (size_t i = 0; i < n; i++)
        out[i] = (float)q[i] * s[i / QB];
}

void dq_q8_embed(const DqWeight *w, const int32_t *ids, int n, float *out) {
    const int8_t *q = dq_q8_values(w);
    const float *s = dq_q8_scales(w);
    for (int r = 0; r < n; r++)
        for (int c = 0; c < w->cols; c++) {
            size_t i = (size_t)ids[r] * w->cols + c;
            out[(size_t)r * w->cols + c] = (float)q[i] * s[i / QB];
        }
}

/* ---- few rows (decode): y [n, rows] = x [n, cols] . w^T over output features [o0, o1)
 *
 * Four output features at a time (independent FMA chains), each x row in turn, as the bf16 GEMV:
 * the four rows of weights (4 x cols bytes) stay in L1 while the x rows go by, so the weights are
 * streamed from memory once for all rows. Per block: 32 int8 widened to float32 in registers,
 * multiplied by x in float32, the block's sum scaled and added. */

DQ_AVX2 static inline __m256 load_q8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

DQ_AVX2 static inline __m256 block_dot(const int8_t *q, __m256 x0, __m256 x1, __m256 x2,
                                       __m256 x3) {
    __m256 p = _mm256_mul_ps(load_q8x8(q), x0);
    p = _mm256_fmadd_ps(load_q8x8(q + 8), x1, p);
    p = _mm256_fmadd_ps(load_q8x8(q + 16), x2, p);
    return _mm256_fmadd_ps(load_q8x8(q + 24), x3, p);
}

DQ_AVX2 static void gemv_avx2(float *y, const float *x, const DqWeight *w, const float *bias,
                              int o0, int o1, int n) {
    int rows = w->rows, cols = w->cols, nb = cols / QB;
    const int8_t *Q = dq_q8_values(w);
    const float *S = dq_q8_scales(w);
    for (int ob = o0; ob < o1; ob += 4) {
        int no = MIN(4, o1 - ob);
        /* past o1: repeat the last feature (computed, never stored) */
        int oj[4] = {ob, ob + MIN(1, no - 1), ob + MIN(2, no - 1), ob + MIN(3, no - 1)};
        const int8_t *q0 = Q + (size_t)oj[0] * cols, *q1 = Q + (size_t)oj[1] * cols,
                     *q2 = Q + (size_t)oj[2] * cols, *q3 = Q + (size_t)oj[3] * cols;
        const float *s0 = S + (size_t)oj[0] * nb, *s1 = S + (size_t)oj[1] * nb,
                    *s2 = S + (size_t)oj[2] * nb, *s3 = S + (size_t)oj[3] * nb;
        for (int r = 0; r < n; r++) {
            const float *xr = x + (size_t)r * cols;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int b = 0; b < nb; b++) {
                const float *xb = xr + (size_t)b * QB;
                __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8),
                       x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
                size_t at = (size_t)b * QB;
                a0 = _mm256_fmadd_ps(block_dot(q0 + at, x0, x1, x2, x3), _mm256_set1_ps(s0[b]), a0);
                a1 = _mm256_fmadd_ps(block_dot(q1 + at, x0, x1, x2, x3), _mm256_set1_ps(s1[b]), a1);
                a2 = _mm256_fmadd_ps(block_dot(q2 + at, x0, x1, x2, x3), _mm256_set1_ps(s2[b]), a2);
                a3 = _mm256_fmadd_ps(block_dot(q3 + at, x0, x1, x2, x3), _mm256_set1_ps(s3[b]), a3);
            }
            __m256 acc[4] = {a0, a1, a2, a3};
            for (int j = 0; j < no; j++) {
                float s = dq_hsum256(acc[j]);
                y[(size_t)r * rows + ob + j] = bias != NULL ? s + bias[ob + j] : s;
            }
        }
    }
}

static void gemv_portable(float *y, const float *x, const DqWeight *w, const float *bias, int o0,
                          int o1, int n) {
    int rows = w->rows, cols = w->cols, nb = cols / QB;
    const int8_t *Q = dq_q8_values(w);
    const float *S = dq_q8_scales(w);
    for (int o = o0; o < o1; o++)
        for (int r = 0; r < n; r++) {
            const float *xr = x + (size_t)r * cols;
            const int8_t *qo = Q + (size_t)o * cols;
            float s = 0.0f;
            for (int b = 0; b < nb; b++) {
                float p = 0.0f;
                for (int k = b * QB; k < (b + 1) * QB; k++)
                    p += (float)qo[k] * xr[k];
                s += p * S[(size_t)o * nb + b];
            }
            y[(size_t)r * rows + o] = bias != NULL ? s + bias[o] : s;
        }
}

void dq_q8_gemv(float *y, const float *x, const DqWeight *w, const float *bias, int o0, int o1,
                int n) {
    if (dq_cpu_has_avx2())
        gemv_avx2(y, x, w, bias, o0, o1, n);
    else
        gemv_portable(y, x, w, bias, o0, o1, n);
}

/* ---- the backend's matmul: the same splits as the bf16 / f32 paths of backend_cpu_fast.c
 * (features in blocks of 64 for the GEMV; rows or features in chunks for the GEMM, whose sums
 * never depend on the split). */

void dq_q8_matmul(float *y, const float *x, const DqWeight *w, const float *bias, int n,
                  int gemv_rows, int threads, float *pack) {
    int rows = w->rows, cols = w->cols, T = threads;
    if (n <= 0)
        return;
    if (n <= gemv_rows) {
        int blocks = (rows + 63) / 64;
#pragma omp parallel for schedule(static) num_threads(T) if (blocks > 1)
        for (int blk = 0; blk < blocks; blk++)
            dq_q8_gemv(y, x, w, bias, blk * 64, MIN(rows, blk * 64 + 64), n);
        return;
    }
    int mchunk = n, nchunk = rows;
    if (n >= 96 * T)
        mchunk = MAX(144, (n + 4 * T - 1) / (4 * T) + 5) / 6 * 6;
    else
        nchunk = MAX(64, (rows + 4 * T - 1) / (4 * T) + 15) / 16 * 16;
    int mjobs = (n + mchunk - 1) / mchunk, njobs = (rows + nchunk - 1) / nchunk;
    const int8_t *Q = dq_q8_values(w);
    const float *S = dq_q8_scales(w);
#pragma omp parallel for schedule(dynamic) num_threads(T) if (mjobs * njobs > 1)
    for (int job = 0; job < mjobs * njobs; job++) {
        int m0 = job / njobs * mchunk, n0 = job % njobs * nchunk;
        int mc = MIN(n, m0 + mchunk) - m0, nc = MIN(rows, n0 + nchunk) - n0;
        DqGemmQ8 b = {Q + (size_t)n0 * cols, S + (size_t)n0 * (cols / QB)};
        dq_gemm(mc, nc, cols, x + (size_t)m0 * cols, cols, &b, cols, DQ_GEMM_B_WT_Q8,
                bias != NULL ? bias + n0 : NULL, DQ_GEMM_SET, y + (size_t)m0 * rows + n0, rows,
                pack + (size_t)omp_get_thread_num() * DQ_GEMM_PACK_FLOATS);
    }
}
