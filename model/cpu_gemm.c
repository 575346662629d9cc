/* The fast CPU backend's matrix product (see cpu_gemm.h for the contract). */
#include "cpu_gemm.h"

#include "cpu_simd.h"

#include <cpuid.h>
#include <glib.h>
#include <omp.h>

#define MR 6
#define NR 16
#define MC 144 /* rows of A swept per B panel: 144 x KC floats stay in L2 */

gboolean dq_cpu_has_avx2(void) {
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               g_getenv("DOCQA_CPU_NO_AVX2") == NULL;
    }
    return have;
}

gboolean dq_cpu_has_avx512f(void) {
    static int have = -1;
    if (have < 0) {
        unsigned a, b, c, d, lo = 0, hi = 0;
        gboolean f = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX512F) != 0;
        /* the OS saves the opmask and ZMM state too: XCR0 bits 1, 2 (SSE, AVX), 5, 6, 7 */
        if (f && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE) != 0)
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        have = f && (lo & 0xe6) == 0xe6 && dq_cpu_has_avx2() &&
               g_getenv("DOCQA_CPU_NO_AVX512") == NULL;
    }
    return have;
}

static gboolean avx512_off;

gboolean dq_gemm_force_avx2(gboolean on) {
    gboolean was = avx512_off;
    avx512_off = on;
    return was;
}

/* Values k0 .. k0 + kc - 1 of the int8 row starting at q8's element `row` (cols of them),
 * dequantized in k order, walking the row's groups once (asking dq_q8_pos for each value walked
 * them again every time, which made an int8 prefill a quarter slower). */
static void q8_segment(float *out, const DqGemmQ8 *q8, size_t row, int cols, int k0, int kc) {
    const int8_t *q = q8->q + row;
    const float *sc = q8->scales + row / DQ_Q8_BLOCK;
    int nb = cols / DQ_Q8_BLOCK, b0 = 0, m = dq_q8_group(nb, 0);
    for (int b = k0 / DQ_Q8_BLOCK; b * DQ_Q8_BLOCK < k0 + kc; b++) {
        while (b >= b0 + m) {
            b0 += m;
            m = dq_q8_group(nb, b0);
        }
        for (int i = 0; i < DQ_Q8_BLOCK; i++) {
            int k = b * DQ_Q8_BLOCK + i;
            if (k >= k0 && k < k0 + kc)
                out[k - k0] = (float)q[dq_q8_at(b0, m, b - b0, i)] * sc[b];
        }
    }
}

/* ---- packing: B block [k0, k0+kc) x [n0, n0+nc) -> panels of NR columns, [panel][k][NR],
 * columns past N zero so the kernel needs no column tests. */

/* A full panel of a W^T operand, kc a multiple of 8: 8 x 8 transposes in registers (the scalar
 * loop's strided stores made packing a tenth of a prefill). */
DQ_AVX2 static void pack_wt_avx2(float *dst, const void *B, size_t ldb, gboolean bf16, int c0,
                                 int k0, int kc) {
    for (int h = 0; h < NR / 8; h++)
        for (int k = 0; k < kc; k += 8) {
            __m256 r[8];
            for (int j = 0; j < 8; j++) {
                size_t at = (size_t)(c0 + 8 * h + j) * ldb + k0 + k;
                r[j] = bf16 ? dq_load_bf16x8((const uint16_t *)B + at)
                            : _mm256_loadu_ps((const float *)B + at);
            }
            __m256 t[8], u[8];
            for (int j = 0; j < 8; j += 2) {
                t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
                t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
            }
            for (int j = 0; j < 8; j += 4) {
                u[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
                u[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xEE);
                u[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
                u[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
            }
            float *o = dst + (size_t)k * NR + 8 * h;
            for (int i = 0; i < 4; i++) {
                _mm256_store_ps(o + (size_t)i * NR, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
                _mm256_store_ps(o + (size_t)(i + 4) * NR,
                                _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
            }
        }
}

void dq_gemm_pack_b(float *pack, const void *B, size_t ldb, DqGemmB layout, int N, int n0, int nc,
                    int k0, int kc) {
    int panels = (nc + NR - 1) / NR;
    for (int p = 0; p < panels; p++) {
        float *dst = pack + (size_t)p * kc * NR;
        int c0 = n0 + p * NR, nr = MIN(NR, N - c0);
        if (layout == DQ_GEMM_B_KN_F32) {
            for (int k = 0; k < kc; k++) {
                const float *src = (const float *)B + (size_t)(k0 + k) * ldb + c0;
                memcpy(dst + (size_t)k * NR, src, (size_t)nr * sizeof(float));
                for (int j = nr; j < NR; j++)
                    dst[(size_t)k * NR + j] = 0.0f;
            }
            continue;
        }
        if (nr == NR && kc % 8 == 0 &&
            (layout == DQ_GEMM_B_WT_F32 || layout == DQ_GEMM_B_WT_BF16) && dq_cpu_has_avx2()) {
            pack_wt_avx2(dst, B, ldb, layout == DQ_GEMM_B_WT_BF16, c0, k0, kc);
            continue;
        }
        for (int j = 0; j < NR; j++) {
            if (j >= nr) {
                for (int k = 0; k < kc; k++)
                    dst[(size_t)k * NR + j] = 0.0f;
                continue;
            }
            size_t row = (size_t)(c0 + j) * ldb + k0;
            if (layout == DQ_GEMM_B_WT_F32) {
                const float *src = (const float *)B + row;
                for (int k = 0; k < kc; k++)
                    dst[(size_t)k * NR + j] = src[k];
            } else if (layout == DQ_GEMM_B_WT_Q8) {
                float seg[DQ_GEMM_KC];
                q8_segment(seg, B, (size_t)(c0 + j) * ldb, (int)ldb, k0, kc);
                for (int k = 0; k < kc; k++)
                    dst[(size_t)k * NR + j] = seg[k];
            } else {
                const uint16_t *src = (const uint16_t *)B + row;
                for (int k = 0; k < kc; k++)
                    dst[(size_t)k * NR + j] = dq_bf16f(src[k]);
            }
        }
    }
}

/* ---- micro-kernels: C[mr, nr] (=|+=) A[mr, kc] . panel[kc, NR]. `set`: the first k block of
 * a SET product, C = bias (or 0) + sum; otherwise C += sum. Rows past mr read row 0 (computed,
 * never stored). */

void dq_gemm_store_tile(const float *acc, int acc_stride, float *c, size_t ldc, int mr, int nr,
                        gboolean set, const float *bias) {
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            float base = set ? (bias != NULL ? bias[j] : 0.0f) : c[(size_t)r * ldc + j];
            c[(size_t)r * ldc + j] = base + acc[r * acc_stride + j];
        }
}

/* Row r of A at ar[r], element k at ar[r][k * ks]: packed A (ks = MR) or A's own rows (ks = 1). */
DQ_AVX2 static inline __attribute__((always_inline)) void
kernel_body(int kc, const float *const ar[MR], const int ks, int mr, const float *bp, float *c,
            size_t ldc, int nr, gboolean set, const float *bias) {
    const float *a0 = ar[0], *a1 = ar[1], *a2 = ar[2], *a3 = ar[3], *a4 = ar[4], *a5 = ar[5];
    /* C's rows arrive while the products run (they come from L3 or memory). */
    for (int r = 0; r < mr; r++) {
        _mm_prefetch((const char *)(c + (size_t)r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + (size_t)r * ldc + NR - 1), _MM_HINT_T0);
    }
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8), t;
        t = _mm256_broadcast_ss(a0 + (size_t)k * ks);
        c00 = _mm256_fmadd_ps(t, b0, c00);
        c01 = _mm256_fmadd_ps(t, b1, c01);
        t = _mm256_broadcast_ss(a1 + (size_t)k * ks);
        c10 = _mm256_fmadd_ps(t, b0, c10);
        c11 = _mm256_fmadd_ps(t, b1, c11);
        t = _mm256_broadcast_ss(a2 + (size_t)k * ks);
        c20 = _mm256_fmadd_ps(t, b0, c20);
        c21 = _mm256_fmadd_ps(t, b1, c21);
        t = _mm256_broadcast_ss(a3 + (size_t)k * ks);
        c30 = _mm256_fmadd_ps(t, b0, c30);
        c31 = _mm256_fmadd_ps(t, b1, c31);
        t = _mm256_broadcast_ss(a4 + (size_t)k * ks);
        c40 = _mm256_fmadd_ps(t, b0, c40);
        c41 = _mm256_fmadd_ps(t, b1, c41);
        t = _mm256_broadcast_ss(a5 + (size_t)k * ks);
        c50 = _mm256_fmadd_ps(t, b0, c50);
        c51 = _mm256_fmadd_ps(t, b1, c51);
        bp += NR;
    }
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (mr == MR && nr == NR) {
        __m256 base0 = _mm256_setzero_ps(), base1 = base0;
        if (set && bias != NULL) {
            base0 = _mm256_loadu_ps(bias);
            base1 = _mm256_loadu_ps(bias + 8);
        }
        for (int r = 0; r < MR; r++) {
            float *cr = c + (size_t)r * ldc;
            if (!set) {
                base0 = _mm256_loadu_ps(cr);
                base1 = _mm256_loadu_ps(cr + 8);
            }
            _mm256_storeu_ps(cr, _mm256_add_ps(base0, acc[r][0]));
            _mm256_storeu_ps(cr + 8, _mm256_add_ps(base1, acc[r][1]));
        }
        return;
    }
    float tmp[MR * NR];
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_ps(tmp + r * NR, acc[r][0]);
        _mm256_storeu_ps(tmp + r * NR + 8, acc[r][1]);
    }
    dq_gemm_store_tile(tmp, NR, c, ldc, mr, nr, set, bias);
}

DQ_AVX2 static void kernel_avx2(int kc, const float *ap, int mr, const float *bp, float *c,
                                size_t ldc, int nr, gboolean set, const float *bias) {
    const float *ar[MR] = {ap, ap + 1, ap + 2, ap + 3, ap + 4, ap + 5};
    kernel_body(kc, ar, MR, mr, bp, c, ldc, nr, set, bias);
}

/* A read where it lies (rows past mr read row 0): for products with few columns, where packing
 * A would cost as much as the arithmetic (attention's P . V, N = head_dim). */
DQ_AVX2 static void kernel_avx2_rows(int kc, const float *a, size_t lda, int mr, const float *bp,
                                     float *c, size_t ldc, int nr, gboolean set,
                                     const float *bias) {
    const float *ar[MR];
    for (int r = 0; r < MR; r++)
        ar[r] = a + (r < mr ? r * lda : 0);
    kernel_body(kc, ar, 1, mr, bp, c, ldc, nr, set, bias);
}

static void kernel_portable(int kc, const float *ap, int mr, const float *bp, float *c, size_t ldc,
                            int nr, gboolean set, const float *bias) {
    float acc[MR * NR] = {0};
    for (int k = 0; k < kc; k++)
        for (int r = 0; r < mr; r++) {
            float ar = ap[(size_t)k * MR + r];
            for (int j = 0; j < NR; j++)
                acc[r * NR + j] += ar * bp[(size_t)k * NR + j];
        }
    dq_gemm_store_tile(acc, NR, c, ldc, mr, nr, set, bias);
}

/* AVX-512F: a 2 x 2 block of the AVX2 kernel's tiles, 12 rows (two packed A panels) x 32
 * columns (two B panels), 24 zmm accumulators; each broadcast of A feeds two FMAs of 16 lanes
 * where the AVX2 kernel's feeds two of 8. Every element takes the same fused multiply-adds in the
 * same order as there (from 0 over k, then added to its base), so the two kernels give the same
 * bits and mix freely at the edges. Full tiles only. */
DQ_AVX512 static inline __attribute__((always_inline)) void
avx512_body(int kc, const float *const ar[2 * MR], size_t ks, const float *b0p, const float *b1p,
            float *c, size_t ldc, gboolean set, const float *bias) {
    for (int r = 0; r < 2 * MR; r++) {
        _mm_prefetch((const char *)(c + (size_t)r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + (size_t)r * ldc + 2 * NR - 1), _MM_HINT_T0);
    }
    __m512 acc[2 * MR][2];
    for (int r = 0; r < 2 * MR; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++, b0p += NR, b1p += NR) {
        __m512 b0 = _mm512_loadu_ps(b0p), b1 = _mm512_loadu_ps(b1p);
#pragma GCC unroll 12
        for (int r = 0; r < 2 * MR; r++) {
            __m512 t = _mm512_set1_ps(ar[r][(size_t)k * ks]);
            acc[r][0] = _mm512_fmadd_ps(t, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(t, b1, acc[r][1]);
        }
    }
    __m512 base0 = _mm512_setzero_ps(), base1 = base0;
    if (set && bias != NULL) {
        base0 = _mm512_loadu_ps(bias);
        base1 = _mm512_loadu_ps(bias + NR);
    }
    for (int r = 0; r < 2 * MR; r++) {
        float *cr = c + (size_t)r * ldc;
        if (!set) {
            base0 = _mm512_loadu_ps(cr);
            base1 = _mm512_loadu_ps(cr + NR);
        }
        _mm512_storeu_ps(cr, _mm512_add_ps(base0, acc[r][0]));
        _mm512_storeu_ps(cr + NR, _mm512_add_ps(base1, acc[r][1]));
    }
}

/* AVX-512F: a 2 x 2 block of the AVX2 kernel's tiles, 12 rows (two packed A panels) x 32
 * columns (two B panels), 24 zmm accumulators; each broadcast of A feeds two FMAs of 16 lanes
 * where the AVX2 kernel's feeds two of 8. Every element takes the same fused multiply-adds in the
 * same order as there (from 0 over k, then added to its base), so the two kernels give the same
 * bits and mix freely at the edges. Full tiles only. */
DQ_AVX512 static void kernel_avx512(int kc, const float *a0, const float *a1, const float *b0p,
                                    const float *b1p, float *c, size_t ldc, gboolean set,
                                    const float *bias) {
    const float *ar[2 * MR] = {a0, a0 + 1, a0 + 2, a0 + 3, a0 + 4, a0 + 5,
                               a1, a1 + 1, a1 + 2, a1 + 3, a1 + 4, a1 + 5};
    avx512_body(kc, ar, MR, b0p, b1p, c, ldc, set, bias);
}

/* kernel_avx512 with A read where it lies, as kernel_avx2_rows: attention's P . V (N = 64) spent
 * a sixth of the vision encoder's time in the AVX2 one on AVX-512 cores. */
DQ_AVX512 static void kernel_avx512_rows(int kc, const float *a, size_t lda, const float *b0p,
                                         const float *b1p, float *c, size_t ldc, gboolean set,
                                         const float *bias) {
    const float *ar[2 * MR];
    for (int r = 0; r < 2 * MR; r++)
        ar[r] = a + (size_t)r * lda;
    avx512_body(kc, ar, 1, b0p, b1p, c, ldc, set, bias);
}

/* A's rows [m0, m1) x [0, kc) -> [row panel][k][MR]; rows past m1 repeat row m0 (computed,
 * never stored). */
static void pack_a(float *ap, const float *A, size_t lda, int m0, int m1, int kc) {
    for (int i = m0; i < m1; i += MR)
        for (int r = 0; r < MR; r++) {
            const float *src = A + (size_t)(i + r < m1 ? i + r : m0) * lda;
            float *dst = ap + (size_t)(i - m0) * kc + r;
            for (int k = 0; k < kc; k++)
                dst[(size_t)k * MR] = src[k];
        }
}

/* pack_a with AVX2: six rows of eight k at a time, transposed as an 8 x 8 block (the last two
 * rows ignored), each k's six values stored as eight whose last two the next store overwrites
 * (the panel's very last store is masked). Packed a float at a time, A took 7% of the vision
 * encoder's time (perf, 256M page); this packing takes 6% off the cycles of the 768 x 768
 * products there, 14% off fc2's (bench: cycles:u of dq_gemm_linear, one thread). */
DQ_AVX2 static void pack_a_avx2(float *ap, const float *A, size_t lda, int m0, int m1, int kc) {
    const __m256i six = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
    for (int i = m0; i < m1; i += MR) {
        const float *src[MR];
        for (int r = 0; r < MR; r++)
            src[r] = A + (size_t)(i + r < m1 ? i + r : m0) * lda;
        float *dst = ap + (size_t)(i - m0) * kc;
        int k = 0;
        for (; k + 8 <= kc; k += 8) {
            __m256 r0 = _mm256_loadu_ps(src[0] + k), r1 = _mm256_loadu_ps(src[1] + k);
            __m256 r2 = _mm256_loadu_ps(src[2] + k), r3 = _mm256_loadu_ps(src[3] + k);
            __m256 r4 = _mm256_loadu_ps(src[4] + k), r5 = _mm256_loadu_ps(src[5] + k);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
            __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
            __m256 s4 = _mm256_shuffle_ps(t4, t4, 0x44), s5 = _mm256_shuffle_ps(t4, t4, 0xee);
            __m256 s6 = _mm256_shuffle_ps(t5, t5, 0x44), s7 = _mm256_shuffle_ps(t5, t5, 0xee);
            __m256 c[8] = {
                _mm256_permute2f128_ps(s0, s4, 0x20), _mm256_permute2f128_ps(s1, s5, 0x20),
                _mm256_permute2f128_ps(s2, s6, 0x20), _mm256_permute2f128_ps(s3, s7, 0x20),
                _mm256_permute2f128_ps(s0, s4, 0x31), _mm256_permute2f128_ps(s1, s5, 0x31),
                _mm256_permute2f128_ps(s2, s6, 0x31), _mm256_permute2f128_ps(s3, s7, 0x31)};
            for (int j = 0; j < 7; j++)
                _mm256_storeu_ps(dst + (size_t)(k + j) * MR, c[j]);
            if (k + 8 < kc)
                _mm256_storeu_ps(dst + (size_t)(k + 7) * MR, c[7]);
            else
                _mm256_maskstore_ps(dst + (size_t)(k + 7) * MR, six, c[7]);
        }
        for (; k < kc; k++)
            for (int r = 0; r < MR; r++)
                dst[(size_t)k * MR + r] = src[r][k];
    }
}

void dq_gemm_packed(int M, int nc, int kc, const float *A, size_t lda, const float *pack,
                    gboolean set, const float *bias, float *C, size_t ldc) {
    gboolean avx2 = dq_cpu_has_avx2();
    int panels = (nc + NR - 1) / NR;
    if (avx2 && panels <= 4) {
        int i = 0;
        if (!avx512_off && dq_cpu_has_avx512f())
            for (; i + 2 * MR <= M; i += 2 * MR) {
                int p = 0;
                for (; p + 2 <= panels && (p + 2) * NR <= nc; p += 2)
                    kernel_avx512_rows(kc, A + (size_t)i * lda, lda, pack + (size_t)p * kc * NR,
                                       pack + (size_t)(p + 1) * kc * NR,
                                       C + (size_t)i * ldc + (size_t)p * NR, ldc, set,
                                       bias != NULL ? bias + p * NR : NULL);
                for (; p < panels; p++)
                    for (int h = 0; h < 2; h++)
                        kernel_avx2_rows(
                            kc, A + (size_t)(i + h * MR) * lda, lda, MR, pack + (size_t)p * kc * NR,
                            C + (size_t)(i + h * MR) * ldc + (size_t)p * NR, ldc,
                            MIN(NR, nc - p * NR), set, bias != NULL ? bias + p * NR : NULL);
            }
        for (; i < M; i += MR)
            for (int p = 0; p < panels; p++)
                kernel_avx2_rows(kc, A + (size_t)i * lda, lda, MIN(MR, M - i),
                                 pack + (size_t)p * kc * NR, C + (size_t)i * ldc + (size_t)p * NR,
                                 ldc, MIN(NR, nc - p * NR), set,
                                 bias != NULL ? bias + p * NR : NULL);
        return;
    }
    gboolean avx512 = avx2 && !avx512_off && dq_cpu_has_avx512f();
    float apack[MC * DQ_GEMM_KC] __attribute__((aligned(64)));
    for (int m0 = 0; m0 < M; m0 += MC) {
        int m1 = MIN(M, m0 + MC);
        if (avx2)
            pack_a_avx2(apack, A, lda, m0, m1, kc);
        else
            pack_a(apack, A, lda, m0, m1, kc);
        int p = 0;
        /* pairs of full panels x pairs of full row panels; the rest below, tile by tile */
        for (; avx512 && p + 2 <= panels && (p + 2) * NR <= nc; p += 2) {
            const float *bp = pack + (size_t)p * kc * NR;
            const float *bias_p = bias != NULL ? bias + p * NR : NULL;
            int i = m0;
            for (; i + 2 * MR <= m1; i += 2 * MR) {
                const float *ap = apack + (size_t)(i - m0) * kc;
                kernel_avx512(kc, ap, ap + (size_t)MR * kc, bp, bp + (size_t)kc * NR,
                              C + (size_t)i * ldc + (size_t)p * NR, ldc, set, bias_p);
            }
            for (; i < m1; i += MR)
                for (int h = 0; h < 2; h++)
                    kernel_avx2(kc, apack + (size_t)(i - m0) * kc, MIN(MR, m1 - i),
                                bp + (size_t)h * kc * NR,
                                C + (size_t)i * ldc + (size_t)(p + h) * NR, ldc, NR, set,
                                bias_p != NULL ? bias_p + h * NR : NULL);
        }
        for (; p < panels; p++) {
            int nr = MIN(NR, nc - p * NR);
            const float *bp = pack + (size_t)p * kc * NR;
            const float *bias_p = bias != NULL ? bias + p * NR : NULL;
            for (int i = m0; i < m1; i += MR) {
                int mr = MIN(MR, m1 - i);
                const float *ap = apack + (size_t)(i - m0) * kc;
                float *c = C + (size_t)i * ldc + (size_t)p * NR;
                if (avx2)
                    kernel_avx2(kc, ap, mr, bp, c, ldc, nr, set, bias_p);
                else
                    kernel_portable(kc, ap, mr, bp, c, ldc, nr, set, bias_p);
            }
        }
    }
}

void dq_gemm(int M, int N, int K, const float *A, size_t lda, const void *B, size_t ldb,
             DqGemmB layout, const float *bias, DqGemmMode mode, float *C, size_t ldc,
             float *pack) {
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        if (mode == DQ_GEMM_SET)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    C[(size_t)i * ldc + j] = bias != NULL ? bias[j] : 0.0f;
        return;
    }
    if (layout == DQ_GEMM_B_WT_BF16_DOT) {
        dq_gemm_bf16(M, N, K, A, lda, B, ldb, bias, mode, C, ldc, pack);
        return;
    }
    for (int n0 = 0; n0 < N; n0 += DQ_GEMM_NC) {
        int nc = MIN(DQ_GEMM_NC, N - n0);
        for (int k0 = 0; k0 < K; k0 += DQ_GEMM_KC) {
            int kc = MIN(DQ_GEMM_KC, K - k0);
            dq_gemm_pack_b(pack, B, ldb, layout, N, n0, nc, k0, kc);
            dq_gemm_packed(M, nc, kc, A + k0, lda, pack, mode == DQ_GEMM_SET && k0 == 0,
                           bias != NULL ? bias + n0 : NULL, C + n0, ldc);
        }
    }
}

/* Rows a chunk should have before there are more chunks than threads: each chunk packs the
 * whole weight for itself. A prompt's products (1416-1937 rows) in 4 chunks a thread ran 6-12%
 * slower in float32, 10-17% on AMX, than in one (bench_gemm, 2 threads). */
#define DQ_GEMM_CHUNK_ROWS 1024
void dq_gemm_linear(int M, int N, int K, const float *x, const void *W, DqGemmB layout,
                    const float *bias, float *y, int threads, float *packs) {
    /* Chunks of rows when every thread gets whole MC blocks, up to 4 a thread where they are tall
     * (dynamic: a busy core takes fewer), their count a multiple of the threads (357 prompt rows
     * in 3 chunks left one thread idle a third of the time); few rows: chunks of features. */
    if ((layout == DQ_GEMM_B_WT_BF16_DOT || layout == DQ_GEMM_B_WT_BF16) &&
        dq_gemm_bf16_linear(M, N, K, x, W, layout == DQ_GEMM_B_WT_BF16, bias, y, threads, packs))
        return;
    if (layout == DQ_GEMM_B_WT_Q8 && dq_gemm_q8_linear(M, N, K, x, W, bias, y, threads, packs))
        return;
    if (layout == DQ_GEMM_B_WT_F32 && dq_gemm_f32_linear(M, N, K, x, W, bias, y, threads, packs))
        return;
    gboolean bf16 = layout == DQ_GEMM_B_WT_BF16 || layout == DQ_GEMM_B_WT_BF16_DOT;
    int mr = layout == DQ_GEMM_B_WT_BF16_DOT ? 12 : MR; /* whole panels of the kernel's rows */
    int T = threads, mchunk = M, nchunk = N, mjobs = MAX(T, MIN(4 * T, M / DQ_GEMM_CHUNK_ROWS));
    mjobs = MIN(M / MC, mjobs);
    if (mjobs >= T) {
        mjobs -= mjobs % T;
        mchunk = ((M + mjobs - 1) / mjobs + mr - 1) / mr * mr;
    } else
        nchunk = MAX(4 * NR, (N + 4 * T - 1) / (4 * T) + NR - 1) / NR * NR;
    mjobs = (M + mchunk - 1) / mchunk;
    int njobs = (N + nchunk - 1) / nchunk;
#pragma omp parallel for schedule(dynamic) num_threads(T) if (mjobs * njobs > 1)
    for (int job = 0; job < mjobs * njobs; job++) {
        int m0 = job / njobs * mchunk, n0 = job % njobs * nchunk;
        int mc = MIN(M, m0 + mchunk) - m0, nc = MIN(N, n0 + nchunk) - n0;
        size_t at = (size_t)n0 * K; /* W's first row of the chunk */
        const void *b =
            bf16 ? (const void *)((const uint16_t *)W + at) : (const void *)((const float *)W + at);
        DqGemmQ8 q8;
        if (layout == DQ_GEMM_B_WT_Q8) {
            const DqGemmQ8 *all = W;
            q8 = (DqGemmQ8){all->q + at, all->scales + at / DQ_Q8_BLOCK};
            b = &q8;
        }
        dq_gemm(mc, nc, K, x + (size_t)m0 * K, K, b, K, layout, bias != NULL ? bias + n0 : NULL,
                DQ_GEMM_SET, y + (size_t)m0 * N + n0, N,
                packs + (size_t)omp_get_thread_num() * DQ_GEMM_PACK_FLOATS);
    }
}
