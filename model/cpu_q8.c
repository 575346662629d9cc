/* The fast CPU backend's int8 decoder weights (see cpu_q8.h for the format and the contract). */
#include "cpu_q8.h"

#include "cpu_simd.h"
#include "dq_error.h"

#include <cpuid.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define QB DQ_Q8_BLOCK

/* ---- quantization at load */

/* One row, group by group, its values where dq_q8_at puts them. */
static void quantize_row(const float *w, int cols, int8_t *q, float *scales) {
    int nb = cols / QB;
    for (int b0 = 0, m; b0 < nb; b0 += m) {
        m = dq_q8_group(nb, b0);
        for (int j = 0; j < m; j++) {
            const float *src = w + (size_t)(b0 + j) * QB;
            float amax = 0.0f;
            for (int k = 0; k < QB; k++)
                amax = MAX(amax, fabsf(src[k]));
            float scale = amax / 127.0f;
            scales[b0 + j] = scale;
            for (int k = 0; k < QB; k++) {
                /* |w| <= amax, so |w / scale| <= 127 up to one rounding: clamp for safety */
                long v = scale > 0.0f ? lrintf(src[k] / scale) : 0;
                q[dq_q8_at(b0, m, j, k)] = (int8_t)CLAMP(v, -127, 127);
            }
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
    if (!dq_weight_shape(w, t, rows, cols, err))
        return FALSE;
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
    w->data = (const float *)(void *)buf;
    w->owned = buf;
    w->dtype = DQ_WEIGHT_Q8;
    return TRUE;
}

void dq_q8_free(DqWeight *w) {
    free(w->owned);
    memset(w, 0, sizeof *w);
}

int8_t dq_q8_code(const DqWeight *w, int row, int col) {
    return dq_q8_values(w)[(size_t)row * w->cols + dq_q8_pos(w->cols, col)];
}

/* out [cols] = row `row` of w dequantized. */
static void dequantize_row(const DqWeight *w, int row, float *out) {
    int nb = w->cols / QB;
    const int8_t *q = dq_q8_values(w) + (size_t)row * w->cols;
    const float *s = dq_q8_scales(w) + (size_t)row * nb;
    for (int b0 = 0, m; b0 < nb; b0 += m) {
        m = dq_q8_group(nb, b0);
        for (int j = 0; j < m; j++)
            for (int i = 0; i < QB; i++)
                out[(size_t)(b0 + j) * QB + i] = (float)q[dq_q8_at(b0, m, j, i)] * s[b0 + j];
    }
}

void dq_q8_dequantize(const DqWeight *w, float *out) {
    for (int r = 0; r < w->rows; r++)
        dequantize_row(w, r, out + (size_t)r * w->cols);
}

void dq_q8_embed(const DqWeight *w, const int32_t *ids, int n, float *out) {
    for (int r = 0; r < n; r++)
        dequantize_row(w, ids[r], out + (size_t)r * w->cols);
}

/* ---- few rows (decode): y [n, rows] = x [n, cols] . w^T over output features [o0, o1)
 *
 * Widening int8 weights to float32 costs two instructions per 8 weights before the FMA, which
 * made the float GEMV compute-bound at the speed of the bf16 one (measured: no faster). So the
 * activations are rounded to int16 per block of 32 (scale = the block's max |x| / 32767: half a
 * step is 2^-16 of the block's largest value, far below the weights' 8-bit rounding), and a
 * block's 32 products are summed exactly in int32 (|q x| <= 127 * 32767: 32 of them fit in
 * 2^31), then converted and scaled: y += float(sum) * w_scale * x_scale.
 *
 * x is stored in the weights' layout (dq_q8_pos), so that one vpmaddwd (or vpdpwssd) multiplies
 * pairs of all of a group's m blocks, each 32-bit lane adding into one block's sum: 2m of them
 * leave the group's exact block sums spread over 8 lanes (lane l: block l % m), converted and
 * scaled 8 lanes at a time. Kept block by block, the conversion and scaling took as many
 * instructions as the products: the kernel was bound by arithmetic at 8 rows (70 GFLOP/s a
 * core), where one row streams the weights as fast as memory gives them.
 *
 * One output feature (or two, on 512 bits) at a time against up to 4 (8) x rows: the feature's
 * weights (cols bytes) stay in L1 while the x rows go by, so the weights are streamed from
 * memory once for all rows. Each (row, feature) sum takes the same steps whatever the number of
 * rows and whichever kernel: every row's result is what it would be alone, on any x86-64 with
 * AVX2. */

/* x [n, cols] -> xq [n, cols] int16 (laid out as the weights) and xs [n, cols / 32] scales. */
static void quantize_x(const float *x, int n, int cols, int16_t *xq, float *xs) {
    int nb = cols / QB;
    for (int r = 0; r < n; r++)
        for (int b0 = 0, m; b0 < nb; b0 += m) {
            m = dq_q8_group(nb, b0);
            for (int j = 0; j < m; j++) {
                int b = b0 + j;
                const float *src = x + (size_t)r * cols + (size_t)b * QB;
                float amax = 0.0f;
                for (int k = 0; k < QB; k++)
                    amax = MAX(amax, fabsf(src[k]));
                float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
                xs[(size_t)r * nb + b] = amax / 32767.0f;
                for (int k = 0; k < QB; k++) {
                    long v = lrintf(src[k] * inv);
                    xq[(size_t)r * cols + dq_q8_at(b0, m, j, k)] = (int16_t)CLAMP(v, -32767, 32767);
                }
            }
        }
}

/* The same, eight lanes at a time (vcvtps2dq rounds to nearest even, as lrintf in the default
 * mode, and |x * inv| <= 32767 up to one rounding, so the saturating packs never clip): the
 * scalar loop took about 10 us a product at the 256M widths, a third of an int8 decode step.
 * A block's 16 pairs go to their slots as 32-bit units, m apart. */
DQ_AVX2 static void quantize_x_avx2(const float *x, int n, int cols, int16_t *xq, float *xs) {
    __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    int nb = cols / QB;
    for (int r = 0; r < n; r++)
        for (int b0 = 0, m; b0 < nb; b0 += m) {
            m = dq_q8_group(nb, b0);
            /* the group's pair slots, 32 bits each */
            uint32_t *slots = (uint32_t *)(void *)(xq + (size_t)r * cols + (size_t)b0 * QB);
            for (int j = 0; j < m; j++) {
                int b = b0 + j;
                const float *src = x + (size_t)r * cols + (size_t)b * QB;
                __m256 v[4], mx = _mm256_setzero_ps();
                for (int i = 0; i < 4; i++) {
                    v[i] = _mm256_loadu_ps(src + 8 * i);
                    mx = _mm256_max_ps(mx, _mm256_and_ps(v[i], absmask));
                }
                __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
                h = _mm_max_ps(h, _mm_movehl_ps(h, h));
                h = _mm_max_ss(h, _mm_movehdup_ps(h));
                float amax = _mm_cvtss_f32(h);
                __m256 inv = _mm256_set1_ps(amax > 0.0f ? 32767.0f / amax : 0.0f);
                xs[(size_t)r * nb + b] = amax / 32767.0f;
                for (int i = 0; i < 4; i += 2) {
                    __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
                    __m256i hi = _mm256_cvtps_epi32(_mm256_mul_ps(v[i + 1], inv));
                    /* packs interleave the 128-bit lanes: quadwords 0 2 1 3 restore the order */
                    __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
                    if (m == 1) { /* pairs in order */
                        _mm256_storeu_si256((__m256i *)(slots + 4 * i), p);
                        continue;
                    }
                    uint32_t pairs[8]; /* pairs 4i .. 4i + 7 of the block */
                    _mm256_storeu_si256((__m256i *)pairs, p);
                    for (int k = 0; k < 8; k++)
                        slots[(size_t)(4 * i + k) * m + j] = pairs[k];
                }
            }
        }
}

gboolean dq_cpu_has_avx512vnni(void) {
    static int have = -1;
    if (have < 0) {
        unsigned a, b, c, d;
        have = dq_cpu_has_avx512f() && __get_cpuid_count(7, 0, &a, &b, &c, &d) &&
               (b & bit_AVX512BW) != 0 && (b & bit_AVX512VL) != 0 && (c & bit_AVX512VNNI) != 0 &&
               g_getenv("DOCQA_CPU_NO_AVX512VNNI") == NULL;
    }
    return have;
}

/* Set by dq_q8_force_avx2: the tests compare the two kernels in one process. */
static gboolean vnni_off;

static gboolean cpu_has_vnni(void) {
    return dq_cpu_has_avx512vnni() && !vnni_off;
}

gboolean dq_q8_force_avx2(gboolean on) {
    gboolean was = vnni_off;
    vnni_off = on;
    return was;
}

#define DQ_VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define ALWAYS     __attribute__((always_inline))

/* Lane l of 8 = p[l % m]: a group's block scales as its sums are spread over the lanes. */
DQ_AVX2 static inline ALWAYS __m256 group_scales(const float *p, int m) {
    switch (m) {
    case 8:
        return _mm256_loadu_ps(p);
    case 4:
        return _mm256_broadcast_ps((const __m128 *)(const void *)p);
    case 2:
        return _mm256_castpd_ps(_mm256_broadcast_sd((const double *)(const void *)p));
    default:
        return _mm256_broadcast_ss(p);
    }
}

/* Feature o against x rows r0 .. r0 + R - 1 (R <= 4): each weight vector is widened once for the
 * R rows. One row takes it too (R = 1): a kernel of four features at a time for it, widening
 * each block as it went, ran the 2.2B decoder's products in 102 ms a step on the AMX Xeon against
 * 83-85 ms this way (bench_gemv; the 256M ones alike). */
DQ_AVX2 static inline ALWAYS void gemv_rows_avx2(float *y, const int16_t *xq, const float *xs,
                                                 const DqWeight *w, const float *bias, int o,
                                                 int r0, int R) {
    int rows = w->rows, cols = w->cols, nb = cols / QB;
    const int8_t *qo = dq_q8_values(w) + (size_t)o * cols;
    const float *so = dq_q8_scales(w) + (size_t)o * nb;
    __m256 a[4];
    for (int i = 0; i < R; i++)
        a[i] = _mm256_setzero_ps();
    for (int b0 = 0, m; b0 < nb; b0 += m) {
        m = dq_q8_group(nb, b0);
        const int8_t *qg = qo + (size_t)b0 * QB;
        __m256i sum[4];
        for (int i = 0; i < R; i++)
            sum[i] = _mm256_setzero_si256();
        for (int v = 0; v < 2 * m; v++) { /* 16 values: pairs of the group's blocks */
            /* Into L1, unlike the VNNI kernel's and the bf16 GEMV's prefetches: on the Zen 4 EPYC
             * (DOCQA_CPU_NO_AVX512=1) into L2 took 6-12% more CPU time (1, 2 and 8 rows, 2 to 16
             * KiB ahead); into L1, 2 to 8 KiB ahead measured alike (session 26). */
            if ((v & 3) == 0)
                _mm_prefetch((const char *)(qg + 16 * v) + 4096, _MM_HINT_T0);
            __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qg + 16 * v)));
            DQ_IN_REGISTER(wv);
            for (int i = 0; i < R; i++) {
                const int16_t *xr = xq + (size_t)(r0 + i) * cols + (size_t)b0 * QB + 16 * v;
                sum[i] = _mm256_add_epi32(
                    sum[i], _mm256_madd_epi16(wv, _mm256_loadu_si256((const __m256i *)xr)));
            }
        }
        __m256 ws = group_scales(so + b0, m);
        for (int i = 0; i < R; i++)
            a[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sum[i]), ws),
                                   group_scales(xs + (size_t)(r0 + i) * nb + b0, m), a[i]);
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

/* 8 lanes of a (feature o's) and 8 of b (o + 1's) side by side. */
DQ_VNNI512 static inline ALWAYS __m512 join_ps(__m256 a, __m256 b) {
    return _mm512_castpd_ps(
        _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(a)), _mm256_castps_pd(b), 1));
}

/* Features o and o + 1 against x rows r0 .. r0 + R - 1 (R <= 8) on 512-bit vectors: lanes 0-7
 * hold feature o's group, lanes 8-15 feature o + 1's, both against the same x (a 256-bit load,
 * broadcast). Every lane takes gemv_rows_avx2's operations (vpdpwssd's sums are vpmaddwd's and
 * vpaddd's: exact), and so do the two halves' final sums: the same bits with half the
 * instructions, 8 rows held in 32 registers, and the int32 sums split between even and odd
 * vectors (vpdpwssd's 5-cycle latency would otherwise bound the loop). */
DQ_VNNI512 static inline ALWAYS void gemv_pair_512(float *y, const int16_t *xq, const float *xs,
                                                   const DqWeight *w, const float *bias, int o,
                                                   int r0, int R) {
    int rows = w->rows, cols = w->cols, nb = cols / QB;
    const int8_t *qo = dq_q8_values(w) + (size_t)o * cols;
    const float *so = dq_q8_scales(w) + (size_t)o * nb;
    __m512 a[8];
    for (int i = 0; i < R; i++)
        a[i] = _mm512_setzero_ps();
    for (int b0 = 0, m; b0 < nb; b0 += m) {
        m = dq_q8_group(nb, b0);
        const int8_t *q0 = qo + (size_t)b0 * QB, *q1 = q0 + cols; /* features o, o + 1 */
        __m512i sum[2][8];
        for (int i = 0; i < R; i++)
            sum[0][i] = sum[1][i] = _mm512_setzero_si512();
        for (int v = 0; v < 2 * m; v += 2) { /* two vectors of 16 values each */
            /* Into L2: on the Zen 4 EPYC, as with the bf16 GEMV, prefetching into L1 left the
             * loads waiting (bench_gemv, one row 9.9-10.5 -> 7.0-8.0 ms CPU a pass; 4096 to
             * 16384 bytes ahead measured alike). */
            if ((v & 3) == 0) {
                _mm_prefetch((const char *)(q0 + 16 * v) + 4096, _MM_HINT_T1);
                _mm_prefetch((const char *)(q1 + 16 * v) + 4096, _MM_HINT_T1);
            }
            __m512i wv[2];
            for (int e = 0; e < 2; e++)
                wv[e] = _mm512_cvtepi8_epi16(_mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(q0 + 16 * (v + e)))),
                    _mm_loadu_si128((const __m128i *)(q1 + 16 * (v + e))), 1));
            for (int i = 0; i < R; i++) {
                const int16_t *xr = xq + (size_t)(r0 + i) * cols + (size_t)b0 * QB + 16 * v;
                for (int e = 0; e < 2; e++)
                    sum[e][i] = _mm512_dpwssd_epi32(
                        sum[e][i], wv[e],
                        _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xr + 16 * e))));
            }
        }
        __m512 ws = join_ps(group_scales(so + b0, m), group_scales(so + nb + b0, m));
        for (int i = 0; i < R; i++) {
            __m256 xsv = group_scales(xs + (size_t)(r0 + i) * nb + b0, m);
            a[i] = _mm512_fmadd_ps(
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(sum[0][i], sum[1][i])), ws),
                join_ps(xsv, xsv), a[i]);
        }
    }
    for (int i = 0; i < R; i++) {
        /* dq_hsum256's additions on both halves at once: 128-bit quarters 0 + 1 and 2 + 3,
         * then elements 0 + 2 and 1 + 3 of each, then those two */
        __m512 t = a[i];
        t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(3, 3, 1, 1)));
        t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(3, 2, 3, 2)));
        t = _mm512_add_ps(t, _mm512_movehdup_ps(t));
        float s0 = _mm_cvtss_f32(_mm512_castps512_ps128(t));
        float s1 = _mm_cvtss_f32(_mm512_extractf32x4_ps(t, 2));
        float *yr = y + (size_t)(r0 + i) * rows + o;
        yr[0] = bias != NULL ? s0 + bias[o] : s0;
        yr[1] = bias != NULL ? s1 + bias[o + 1] : s1;
    }
}

DQ_VNNI512 static void gemv_vnni(float *y, const int16_t *xq, const float *xs, const DqWeight *w,
                                 const float *bias, int o0, int o1, int n) {
    int o = o0;
    for (; o + 2 <= o1; o += 2) {
        int r = 0;
        for (; r + 8 <= n; r += 8)
            gemv_pair_512(y, xq, xs, w, bias, o, r, 8);
        for (; r + 4 <= n; r += 4)
            gemv_pair_512(y, xq, xs, w, bias, o, r, 4);
        for (; r + 2 <= n; r += 2)
            gemv_pair_512(y, xq, xs, w, bias, o, r, 2);
        if (r < n)
            gemv_pair_512(y, xq, xs, w, bias, o, r, 1);
    }
    if (o < o1)
        gemv_avx2(y, xq, xs, w, bias, o, o1, n);
}

/* Block by block in k order; x and w share the layout, so their values pair up where stored. */
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
            for (int b0 = 0, m; b0 < nb; b0 += m) {
                m = dq_q8_group(nb, b0);
                for (int j = 0; j < m; j++) {
                    int32_t p = 0;
                    for (int i = 0; i < QB; i++) {
                        size_t at = dq_q8_at(b0, m, j, i);
                        p += (int32_t)qo[at] * xr[at];
                    }
                    int b = b0 + j;
                    s += (float)p * S[(size_t)o * nb + b] * xs[(size_t)r * nb + b];
                }
            }
            y[(size_t)r * rows + o] = bias != NULL ? s + bias[o] : s;
        }
}

/* ---- the backend's matmul: the same splits as the bf16 / f32 paths of backend_cpu_fast.c
 * (features in blocks of 64 for the GEMV; rows or features in chunks for the GEMM, whose sums
 * never depend on the split). */

void dq_q8_matmul_many(float *const *ys, const float *x, const DqWeight *const *ws,
                       const float *const *biases, int count, int n, int gemv_rows, int threads,
                       float *pack) {
    int cols = ws[0]->cols, T = threads;
    g_assert(count >= 1 && count <= DQ_Q8_MANY_MAX);
    if (n <= 0)
        return;
    if (n > gemv_rows) {
        for (int i = 0; i < count; i++) {
            DqGemmQ8 b = {dq_q8_values(ws[i]), dq_q8_scales(ws[i])};
            dq_gemm_linear(n, ws[i]->rows, cols, x, &b, DQ_GEMM_B_WT_Q8,
                           biases != NULL ? biases[i] : NULL, ys[i], T, pack);
        }
        return;
    }
    /* x quantized once for all the weights, into the first thread's pack (unused by the GEMV) */
    float *xs = pack;
    int16_t *xq = (int16_t *)(pack + ((size_t)n * (cols / QB) + 7) / 8 * 8);
    gboolean avx2 = dq_cpu_has_avx2(), vnni = avx2 && cpu_has_vnni();
    if (avx2)
        quantize_x_avx2(x, n, cols, xq, xs);
    else
        quantize_x(x, n, cols, xq, xs);
    /* Each weight in blocks of features, at least 8 a thread (backend_cpu_fast.c's fast_gemv),
     * all the weights' blocks in one parallel loop: a fork and join for q, k and v together,
     * where k and v (192 features at 256M) are too small to pay for their own. */
    int bs[DQ_Q8_MANY_MAX], rows[DQ_Q8_MANY_MAX];
    for (int i = 0; i < count; i++) {
        g_assert(ws[i]->cols == cols && ws[i]->dtype == DQ_WEIGHT_Q8);
        rows[i] = ws[i]->rows;
        bs[i] = CLAMP((rows[i] / (8 * T)) / 4 * 4, 4, 64);
    }
    DqGemvSplit split = dq_gemv_split(rows, bs, count);
#pragma omp parallel num_threads(T) if (split.blocks > 1)
    for (int blk = 0, i = 0; blk < split.blocks; blk++) {
        int o0;
        if (!dq_gemv_split_mine(&split, blk, &i, &o0))
            continue;
        const DqWeight *w = ws[i];
        const float *bias = biases != NULL ? biases[i] : NULL;
        int o1 = MIN(w->rows, o0 + bs[i]);
        if (vnni)
            gemv_vnni(ys[i], xq, xs, w, bias, o0, o1, n);
        else if (avx2)
            gemv_avx2(ys[i], xq, xs, w, bias, o0, o1, n);
        else
            gemv_portable(ys[i], xq, xs, w, bias, o0, o1, n);
    }
}

void dq_q8_matmul(float *y, const float *x, const DqWeight *w, const float *bias, int n,
                  int gemv_rows, int threads, float *pack) {
    dq_q8_matmul_many(&y, x, &w, &bias, 1, n, gemv_rows, threads, pack);
}
