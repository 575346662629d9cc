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
    /* threads only for the largest matrices (lm_head): a parallel region a layer matrix cost more
     * than it saved on a busy machine (~10 ns a weight on one core) */
#pragma omp parallel num_threads(threads) if (n >= ((size_t)1 << 24))
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
 * Widening int8 weights to float32 costs two instructions per 8 weights before the FMA, which
 * made the float GEMV compute-bound at the speed of the bf16 one (measured: no faster). So the
 * activations are rounded to int16 per block of 32 (scale = the block's max |x| / 32767: half a
 * step is 2^-16 of the block's largest value, far below the weights' 8-bit rounding), and a
 * block's 32 products are summed exactly in int32 by vpmaddwd (|q x| <= 127 * 32767: 32 of them
 * fit in 2^31), then converted and scaled once: y += float(sum) * w_scale * x_scale.
 *
 * One output feature at a time against up to four x rows: the feature's weights (cols bytes) stay
 * in L1 while the x rows go by, so the weights are streamed from memory once for all rows. A
 * row's sums run in the same order whatever n is. */

/* x [n, cols] -> xq [n, cols] int16 and xs [n, cols / 32] scales. */
static void quantize_x(const float *x, int n, int cols, int16_t *xq, float *xs) {
    for (size_t b = 0; b < (size_t)n * cols / QB; b++) {
        const float *src = x + b * QB;
        float amax = 0.0f;
        for (int k = 0; k < QB; k++)
            amax = MAX(amax, fabsf(src[k]));
        float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        xs[b] = amax / 32767.0f;
        for (int k = 0; k < QB; k++) {
            long v = lrintf(src[k] * inv);
            xq[b * QB + k] = (int16_t)CLAMP(v, -32767, 32767);
        }
    }
}

/* The same, eight lanes at a time (vcvtps2dq rounds to nearest even, as lrintf in the default
 * mode, and |x * inv| <= 32767 up to one rounding, so the saturating packs never clip): the
 * scalar loop took about 10 us a product at the 256M widths, a third of an int8 decode step. */
DQ_AVX2 static void quantize_x_avx2(const float *x, int n, int cols, int16_t *xq, float *xs) {
    __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (size_t b = 0; b < (size_t)n * cols / QB; b++) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(x + b * QB + 8 * i);
            m = _mm256_max_ps(m, _mm256_and_ps(v[i], absmask));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h);
        __m256 inv = _mm256_set1_ps(amax > 0.0f ? 32767.0f / amax : 0.0f);
        xs[b] = amax / 32767.0f;
        for (int i = 0; i < 4; i += 2) {
            __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
            __m256i hi = _mm256_cvtps_epi32(_mm256_mul_ps(v[i + 1], inv));
            /* packs interleave the 128-bit lanes: quadwords 0 2 1 3 restore the order */
            __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
            _mm256_storeu_si256((__m256i *)(xq + b * QB + 8 * i), p);
        }
    }
}

/* Feature o against x rows r0 .. r0 + R - 1: the weight block is widened once for the R rows.
 * Each (row, feature) sum takes the same steps whatever R, so a row's result does not depend on
 * how many rows came with it. One row takes it too (R = 1): a kernel of four features at a time
 * for it, widening each block as it went, ran the 2.2B decoder's products in 102 ms a step on
 * the AMX Xeon against 83-85 ms this way (bench_gemv; the 256M ones alike). */
DQ_AVX2 static inline __attribute__((always_inline)) void
gemv_rows_avx2(float *y, const int16_t *xq, const float *xs, const DqWeight *w, const float *bias,
               int o, int r0, int R) {
    int rows = w->rows, cols = w->cols, nb = cols / QB;
    const int8_t *qo = dq_q8_values(w) + (size_t)o * cols;
    const float *so = dq_q8_scales(w) + (size_t)o * nb;
    __m256 a[4];
    for (int i = 0; i < R; i++)
        a[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        size_t at = (size_t)b * QB;
        if ((b & 1) == 0)
            _mm_prefetch((const char *)(qo + at) + 4096, _MM_HINT_T0);
        __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qo + at)));
        __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qo + at + 16)));
        DQ_IN_REGISTER(w0);
        DQ_IN_REGISTER(w1);
        __m256 ws = _mm256_broadcast_ss(so + b);
        for (int i = 0; i < R; i++) {
            const int16_t *xr = xq + (size_t)(r0 + i) * cols + at;
            __m256i x0 = _mm256_loadu_si256((const __m256i *)xr);
            __m256i x1 = _mm256_loadu_si256((const __m256i *)(xr + 16));
            __m256 dot = _mm256_cvtepi32_ps(
                _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1)));
            a[i] = _mm256_fmadd_ps(_mm256_mul_ps(dot, ws),
                                   _mm256_broadcast_ss(xs + (size_t)(r0 + i) * nb + b), a[i]);
        }
    }
    for (int i = 0; i < R; i++) {
        float s = dq_hsum256(a[i]);
        y[(size_t)(r0 + i) * rows + o] = bias != NULL ? s + bias[o] : s;
    }
}

DQ_AVX2 static void gemv_avx2(float *y, const int16_t *xq, const float *xs, const DqWeight *w,
                              const float *bias, int o0, int o1, int n) {
    for (int o = o0; o < o1; o++) {
        int r = 0;
        for (; r + 4 <= n; r += 4)
            gemv_rows_avx2(y, xq, xs, w, bias, o, r, 4);
        for (; r + 2 <= n; r += 2)
            gemv_rows_avx2(y, xq, xs, w, bias, o, r, 2);
        if (r < n)
            gemv_rows_avx2(y, xq, xs, w, bias, o, r, 1);
    }
}

static void gemv_portable(float *y, const int16_t *xq, const float *xs, const DqWeight *w,
                          const float *bias, int o0, int o1, int n) {
    int rows = w->rows, cols = w->cols, nb = cols / QB;
    const int8_t *Q = dq_q8_values(w);
    const float *S = dq_q8_scales(w);
    for (int o = o0; o < o1; o++)
        for (int r = 0; r < n; r++) {
            const int16_t *xr = xq + (size_t)r * cols;
            const int8_t *qo = Q + (size_t)o * cols;
            float s = 0.0f;
            for (int b = 0; b < nb; b++) {
                int32_t p = 0;
                for (int k = b * QB; k < (b + 1) * QB; k++)
                    p += (int32_t)qo[k] * xr[k];
                s += (float)p * S[(size_t)o * nb + b] * xs[(size_t)r * nb + b];
            }
            y[(size_t)r * rows + o] = bias != NULL ? s + bias[o] : s;
        }
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
        /* x quantized once, into the first thread's pack (unused by the GEMV) */
        float *xs = pack;
        int16_t *xq = (int16_t *)(pack + ((size_t)n * (cols / QB) + 7) / 8 * 8);
        gboolean avx2 = dq_cpu_has_avx2();
        if (avx2)
            quantize_x_avx2(x, n, cols, xq, xs);
        else
            quantize_x(x, n, cols, xq, xs);
        /* at least 8 blocks a thread (backend_cpu_fast.c's fast_gemv) */
        int bs = CLAMP((rows / (8 * T)) / 4 * 4, 4, 64);
        int blocks = (rows + bs - 1) / bs;
#pragma omp parallel for schedule(static) num_threads(T) if (blocks > 1)
        for (int blk = 0; blk < blocks; blk++) {
            int o0 = blk * bs, o1 = MIN(rows, o0 + bs);
            if (avx2)
                gemv_avx2(y, xq, xs, w, bias, o0, o1, n);
            else
                gemv_portable(y, xq, xs, w, bias, o0, o1, n);
        }
        return;
    }
    DqGemmQ8 b = {dq_q8_values(w), dq_q8_scales(w)};
    dq_gemm_linear(n, rows, cols, x, &b, DQ_GEMM_B_WT_Q8, bias, y, T, pack);
}
