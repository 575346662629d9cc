/* The matrix product of `--weights bf16`: C = bf16(A) . W^T, bf16 x bf16 products summed in
 * float32 (cpu_gemm.h has the summation order; DQ_GEMM_B_WT_BF16_DOT).
 *
 * Why a second GEMM: vdpbf16ps (AVX512-BF16) does 32 multiply-adds an instruction where a
 * float32 FMA does 16, so on CPUs that have it the vision encoder and the prefill, which are
 * GEMM-bound, can run at up to twice the float32 peak. The price is A rounded to bf16 (8-bit
 * mantissas), which moves the logits by far more than the fixtures' float32 tolerance: it is an
 * option, like int8 weights, never the default.
 *
 * Both operands are packed as pairs of k in 32-bit lanes, the instruction's unit:
 *   B block [DQ_GEMM_BF16_KP pairs] x [nc columns] -> panels of NR columns, [panel][pair][NR];
 *   A rows  [MC] x [the same pairs]                -> panels of MR rows,    [panel][pair][MR];
 * and an MR x NR micro-kernel keeps 24 zmm accumulators (12 rows x 2 x 16 columns) while a
 * panel of B (16 KiB) stays in L1 and the packed rows of A in L2.
 *
 * The portable kernel emulates the instruction with the same packs, the same order and the same
 * float32 fused multiply-adds, so the tiling, the packs and the tails are tested on every CPU;
 * only the few lines of intrinsics in kernel_dpbf16 need a CPU with AVX512-BF16 (test_gemm
 * then compares the two). One difference is left: the instruction flushes a denormal sum to 0,
 * the emulation keeps it. */
#include "cpu_gemm.h"

#include "cpu_simd.h"

#include <cpuid.h>
#include <glib.h>
#include <math.h>

#define MR 12
#define NR 32
#define MC 144 /* rows of A packed at a time: 144 x 128 pairs = 72 KiB, in L2 */
#define KP DQ_GEMM_BF16_KP
#define NC ((int)((DQ_GEMM_PACK_FLOATS * sizeof(float) - (size_t)MC * KP * 4) / (KP * 4) / NR * NR))

#define DQ_AVX512BF16 __attribute__((target("avx512f,avx512bf16")))

gboolean dq_cpu_has_avx512bf16(void) {
    static int have = -1;
    if (have < 0) {
        unsigned a, b, c, d;
        have = dq_cpu_has_avx512f() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && a >= 1 &&
               __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5)) != 0 && /* AVX512_BF16 */
               g_getenv("DOCQA_CPU_NO_AVX512BF16") == NULL;
    }
    return have;
}

static gboolean force_portable;

gboolean dq_gemm_bf16_force_portable(gboolean on) {
    gboolean was = force_portable;
    force_portable = on;
    return was;
}

/* bf16 bits as the instruction reads them: a denormal is a zero of the same sign. */
static inline uint32_t daz(uint16_t h) {
    return (h & 0x7f80) == 0 ? (uint32_t)(h & 0x8000) : h;
}

/* ---- packing */

/* W's pairs [p0, p0 + kp) of columns [n0, n0 + nc) -> [panel][pair][NR]; a pair's even k in
 * the low half; columns past N and the odd half past K zero. */
static void pack_b(uint32_t *dst, const uint16_t *W, size_t ldw, int N, int K, int n0, int nc,
                   int p0, int kp) {
    for (int c = 0; c < nc; c += NR)
        for (int j = 0; j < NR; j++) {
            uint32_t *o = dst + (size_t)c * kp + j;
            int n = n0 + c + j;
            if (n >= N) {
                for (int p = 0; p < kp; p++)
                    o[(size_t)p * NR] = 0;
                continue;
            }
            const uint16_t *w = W + (size_t)n * ldw;
            for (int p = 0; p < kp; p++) {
                int k = 2 * (p0 + p);
                uint32_t hi = k + 1 < K ? daz(w[k + 1]) : 0;
                o[(size_t)p * NR] = daz(w[k]) | hi << 16;
            }
        }
}

/* A's rows [m0, m1), pairs [p0, p0 + kp), rounded to bf16 -> [panel][pair][MR]; rows past m1
 * repeat row m0 (computed, never stored). */
static void pack_a(uint32_t *dst, const float *A, size_t lda, int K, int m0, int m1, int p0,
                   int kp) {
    for (int i = m0; i < m1; i += MR)
        for (int r = 0; r < MR; r++) {
            const float *a = A + (size_t)(i + r < m1 ? i + r : m0) * lda;
            uint32_t *o = dst + (size_t)(i - m0) * kp + r;
            for (int p = 0; p < kp; p++) {
                int k = 2 * (p0 + p);
                uint32_t hi = k + 1 < K ? daz(dq_f32_bf16(a[k + 1])) : 0;
                o[(size_t)p * MR] = daz(dq_f32_bf16(a[k])) | hi << 16;
            }
        }
}

/* ---- micro-kernels: C [mr, nr] (=|+=) A panel [kp pairs, MR] . B panel [kp pairs, NR]; `set`:
 * C = bias (or 0) + sum, else C += sum. */

static inline float half_hi(uint32_t p) {
    uint32_t u = p & 0xffff0000u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float half_lo(uint32_t p) {
    uint32_t u = p << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline __attribute__((always_inline)) void portable_body(int kp, const uint32_t *ap, int mr,
                                                                const uint32_t *bp, float *c,
                                                                size_t ldc, int nr, gboolean set,
                                                                const float *bias) {
    float acc[MR * NR] = {0};
    for (int p = 0; p < kp; p++, ap += MR, bp += NR)
        for (int r = 0; r < MR; r++) {
            float ah = half_hi(ap[r]), al = half_lo(ap[r]);
            float *ar = acc + r * NR;
            for (int j = 0; j < NR; j++) { /* the odd k first, as the instruction */
                ar[j] = fmaf(ah, half_hi(bp[j]), ar[j]);
                ar[j] = fmaf(al, half_lo(bp[j]), ar[j]);
            }
        }
    dq_gemm_store_tile(acc, NR, c, ldc, mr, nr, set, bias);
}

static void kernel_portable(int kp, const uint32_t *ap, int mr, const uint32_t *bp, float *c,
                            size_t ldc, int nr, gboolean set, const float *bias) {
    portable_body(kp, ap, mr, bp, c, ldc, nr, set, bias);
}

/* The same loops with fmaf as an instruction, not a libm call. */
DQ_AVX2 static void kernel_portable_avx2(int kp, const uint32_t *ap, int mr, const uint32_t *bp,
                                         float *c, size_t ldc, int nr, gboolean set,
                                         const float *bias) {
    portable_body(kp, ap, mr, bp, c, ldc, nr, set, bias);
}

DQ_AVX512BF16 static void kernel_dpbf16(int kp, const uint32_t *ap, int mr, const uint32_t *bp,
                                        float *c, size_t ldc, int nr, gboolean set,
                                        const float *bias) {
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int p = 0; p < kp; p++, ap += MR, bp += NR) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp), b1 = (__m512bh)_mm512_loadu_si512(bp + 16);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)ap[r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
        }
    }
    if (mr == MR && nr == NR) {
        __m512 base0 = _mm512_setzero_ps(), base1 = base0;
        if (set && bias != NULL) {
            base0 = _mm512_loadu_ps(bias);
            base1 = _mm512_loadu_ps(bias + 16);
        }
        for (int r = 0; r < MR; r++) {
            float *cr = c + (size_t)r * ldc;
            if (!set) {
                base0 = _mm512_loadu_ps(cr);
                base1 = _mm512_loadu_ps(cr + 16);
            }
            _mm512_storeu_ps(cr, _mm512_add_ps(base0, acc[r][0]));
            _mm512_storeu_ps(cr + 16, _mm512_add_ps(base1, acc[r][1]));
        }
        return;
    }
    float tmp[MR * NR];
    for (int r = 0; r < MR; r++) {
        _mm512_storeu_ps(tmp + r * NR, acc[r][0]);
        _mm512_storeu_ps(tmp + r * NR + 16, acc[r][1]);
    }
    dq_gemm_store_tile(tmp, NR, c, ldc, mr, nr, set, bias);
}

typedef void (*Kernel)(int kp, const uint32_t *ap, int mr, const uint32_t *bp, float *c, size_t ldc,
                       int nr, gboolean set, const float *bias);

/* dq_gemm has dealt with empty products. */
void dq_gemm_bf16(int M, int N, int K, const float *A, size_t lda, const uint16_t *W, size_t ldw,
                  const float *bias, DqGemmMode mode, float *C, size_t ldc, void *pack) {
    Kernel kernel = !force_portable && dq_cpu_has_avx512bf16() ? kernel_dpbf16
                    : dq_cpu_has_avx2()                        ? kernel_portable_avx2
                                                               : kernel_portable;
    int pairs = (K + 1) / 2;
    uint32_t *bpack = pack, *apack = bpack + (size_t)KP * NC;
    for (int n0 = 0; n0 < N; n0 += NC) {
        int nc = MIN(NC, N - n0), panels = (nc + NR - 1) / NR;
        for (int p0 = 0; p0 < pairs; p0 += KP) {
            int kp = MIN(KP, pairs - p0);
            gboolean set = mode == DQ_GEMM_SET && p0 == 0;
            pack_b(bpack, W, ldw, N, K, n0, nc, p0, kp);
            for (int m0 = 0; m0 < M; m0 += MC) {
                int m1 = MIN(M, m0 + MC);
                pack_a(apack, A, lda, K, m0, m1, p0, kp);
                for (int q = 0; q < panels; q++)
                    for (int i = m0; i < m1; i += MR)
                        kernel(kp, apack + (size_t)(i - m0) * kp, MIN(MR, m1 - i),
                               bpack + (size_t)q * NR * kp, C + (size_t)i * ldc + n0 + q * NR, ldc,
                               MIN(NR, nc - q * NR), set, bias != NULL ? bias + n0 + q * NR : NULL);
            }
        }
    }
}
