/* The matrix product of `--weights bf16`: C = bf16(A) . W^T, bf16 x bf16 products summed in
 * float32 (cpu_gemm.h has the summation order; DQ_GEMM_B_WT_BF16_DOT).
 *
 * Why a second GEMM: bf16 x bf16 instructions multiply more than float32 FMAs do. vdpbf16ps
 * (AVX512-BF16) does 32 multiply-adds an instruction where an FMA does 16 (though on Sapphire
 * Rapids it issues at half the FMA's rate, so it only matches it); AMX's tdpbf16ps does 8192
 * (a 16 x 32 by 32 x 16 tile product), 3.5-6x the float32 GEMM on the vision and prompt shapes
 * there. The price is A rounded to bf16 (8-bit mantissas), which moves the logits by far more
 * than the fixtures' float32 tolerance: it is an option, like int8 weights, never the default.
 *
 * vdpbf16ps: both operands are packed as pairs of k in 32-bit lanes, the instruction's unit:
 *   B block [DQ_GEMM_BF16_KP pairs] x [nc columns] -> panels of NR columns, [panel][pair][NR];
 *   A rows  [MC] x [the same pairs]                -> panels of MR rows,    [panel][pair][MR];
 * and an MR x NR micro-kernel keeps 24 zmm accumulators (12 rows x 2 x 16 columns) while a
 * panel of B (16 KiB) stays in L1 and the packed rows of A in L2. AMX (gemm_amx below) packs B
 * the same way and A as plain bf16 rows.
 *
 * The portable kernel emulates the instruction with the same packs, the same order and the same
 * float32 fused multiply-adds, so the tiling, the packs and the tails are tested on every CPU;
 * only the few lines of intrinsics in kernel_dpbf16 and the AMX kernel need a CPU with the
 * instructions (test_gemm then compares them with it). Differences left: the instructions flush
 * a denormal sum to 0, the emulation keeps it; AMX rounds inside a pair's sum its own way (a
 * tenth of the elements differ in the last bits, within 2^-20 of sum |a b|). */
#include "cpu_gemm.h"

#include "cpu_simd.h"

#include <cpuid.h>
#include <glib.h>
#include <math.h>
#include <sys/syscall.h>
#include <unistd.h>

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

gboolean dq_cpu_has_amx_bf16(void) {
    static gsize once;
    static gboolean have;
    if (g_once_init_enter(&once)) {
        unsigned a, b, c, d;
        gboolean h = dq_cpu_has_avx512bf16() && __get_cpuid_count(7, 0, &a, &b, &c, &d) &&
                     (d & (1u << 22)) != 0 && (d & (1u << 24)) != 0 && /* AMX-BF16, AMX-TILE */
                     g_getenv("DOCQA_CPU_NO_AMX") == NULL;
        /* Linux gives a process the tiles' 8 KiB of state a thread only when it asks
         * (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); a kernel that says no means no AMX. */
        have = h && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
        g_once_init_leave(&once, 1);
    }
    return have;
}

static gboolean force_portable, force_dpbf16;

gboolean dq_gemm_bf16_force_portable(gboolean on) {
    gboolean was = force_portable;
    force_portable = on;
    return was;
}

gboolean dq_gemm_bf16_force_dpbf16(gboolean on) {
    gboolean was = force_dpbf16;
    force_dpbf16 = on;
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

/* ---- AMX: tdpbf16ps multiplies a 16 x 16-pair tile of A by a 16-pair x 16 tile of B into a
 * 16 x 16 float32 tile, 8192 multiply-adds an instruction, eight times vdpbf16ps's rate on the
 * cores that have it; per element it runs the same pairs in the same order (odd k, then even).
 *
 * A different blocking: an AMX kernel outruns the memory that C lives in, so C is written once.
 * B [columns of a chunk] x [all pairs] is packed as for vdpbf16ps (32-column panels, pairs of a
 * column 128 bytes apart: the two 16-column tiles of a panel are 64 bytes apart); A 32 rows at a
 * time as plain bf16 rows (a tile row is 16 pairs of one row of A). A 32 x 32 block of C takes
 * its DQ_GEMM_BF16_KP-pair blocks one after the other, each summed from zero in four tiles,
 * stored, and added to the block's running value in L1: the order cpu_gemm.h promises. Pairs
 * are padded with zeros to whole tiles, rows of A with zero rows (computed, never stored). */

#define AMX_ROWS 32 /* rows of A a kernel call takes: two tiles */
#define AMX_STEP 16 /* pairs of k in a tile's 64-byte row */

#define DQ_AMX __attribute__((target("avx512f,avx512bw,amx-tile,amx-bf16")))

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

/* Tiles 0-3: C's four 16 x 16 quarters; 4, 5: A's two row tiles; 6, 7: B's two column tiles;
 * every one 16 rows of 64 bytes. The configuration is a thread's: each call loads its own. */
DQ_AMX static void amx_configure(void) {
    TileConfig cfg __attribute__((aligned(64))) = {.palette = 1};
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    /* Not _tile_loadconfig: GCC 12's declares a read of 8 bytes, so the stores to rows and colsb
     * were dropped as dead where it inlined (and the first tile instruction faulted). */
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
}

/* 16 floats -> daz(dq_f32_bf16(x)), bit for bit. */
DQ_AMX static inline __m256i bf16x16(const float *x) {
    __m512i u = _mm512_loadu_si512(x);
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(
            u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)))),
        16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, nan,
                              _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
    __mmask16 den = _mm512_testn_epi32_mask(r, _mm512_set1_epi32(0x7f80));
    r = _mm512_mask_and_epi32(r, den, r, _mm512_set1_epi32(0x8000));
    return _mm512_cvtepi32_epi16(r);
}

/* Rows [0, rows) of A (all K) -> dst, `width` bf16 a row (2 x the padded pairs), zeros past K;
 * rows past `rows` up to AMX_ROWS all zeros. */
DQ_AMX static void amx_pack_a(uint16_t *dst, size_t width, const float *A, size_t lda, int K,
                              int rows) {
    for (int r = 0; r < AMX_ROWS; r++) {
        uint16_t *o = dst + (size_t)r * width;
        int k = 0;
        if (r < rows) {
            const float *a = A + (size_t)r * lda;
            for (; k + 16 <= K; k += 16)
                _mm256_storeu_si256((__m256i *)(o + k), bf16x16(a + k));
            for (; k < K; k++)
                o[k] = (uint16_t)daz(dq_f32_bf16(a[k]));
        }
        memset(o + k, 0, (width - (size_t)k) * sizeof *o);
    }
}

/* 16 words with each bf16 half that is denormal made a zero of its sign. */
DQ_AMX static inline __m512i daz_pairs(__m512i v) {
    v = _mm512_mask_and_epi32(v, _mm512_testn_epi32_mask(v, _mm512_set1_epi32(0x7f80)), v,
                              _mm512_set1_epi32((int)0xffff8000u));
    return _mm512_mask_and_epi32(v, _mm512_testn_epi32_mask(v, _mm512_set1_epi32(0x7f800000)), v,
                                 _mm512_set1_epi32((int)0x8000ffffu));
}

/* W's columns [n0, n0 + nc) (nc a multiple of NR), all pairs, zero pairs up to kpad ->
 * [panel][pair][NR], as pack_b. A row's pairs are 32-bit words in place (low half the even k):
 * a gather takes one pair of 16 columns, where element by element (pack_b's way) the packing
 * cost a tenth of the product's time on the vision encoder's shapes. */
DQ_AMX static void amx_pack_b(uint32_t *dst, const uint16_t *W, size_t ldw, int N, int K, int n0,
                              int nc, int kpad) {
    int full = K / 2; /* pairs wholly inside K */
    for (int c = 0; c < nc; c += NR)
        for (int h = 0; h < NR; h += 16) {
            int n = n0 + c + h, cols = CLAMP(N - n, 0, 16);
            uint32_t *o = dst + (size_t)c * kpad + h;
            __mmask16 live = (__mmask16)((1u << cols) - 1);
            /* rows of W as offsets in bf16 from row n, gathered 2 bytes a unit */
            __m512i rows = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32((int)ldw));
            const uint16_t *w = W + (size_t)MIN(n, N - 1) * ldw;
            int p = 0;
            for (; p < full; p++) {
                __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, rows, w, 2);
                _mm512_storeu_si512(o + (size_t)p * NR, daz_pairs(v));
                w += 2;
            }
            for (; p < kpad; p++)
                for (int j = 0; j < 16; j++)
                    o[(size_t)p * NR + j] =
                        2 * p < K && j < cols ? daz(W[(size_t)(n + j) * ldw + 2 * p]) : 0;
        }
}

/* C [32, 32] (+)= A [32 rows, 2 kp] . a B panel [kp pairs][NR] on tiles 0-7 (amx_configure's):
 * A's rows lda bf16 apart, C's ldc floats apart; `accumulate`: C is read first. */
DQ_AMX static inline __attribute__((always_inline)) void tiles_32x32(const uint16_t *a, size_t lda,
                                                                     const uint32_t *bp, int kp,
                                                                     float *c, size_t ldc,
                                                                     gboolean accumulate) {
    size_t as = lda * sizeof *a, cs = ldc * sizeof *c;
    if (accumulate) {
        _tile_loadd(0, c, cs);
        _tile_loadd(1, c + 16, cs);
        _tile_loadd(2, c + 16 * ldc, cs);
        _tile_loadd(3, c + 16 * ldc + 16, cs);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    const uint16_t *a1 = a + 16 * lda;
    for (int p = 0; p < kp; p += AMX_STEP) {
        _tile_loadd(4, a + 2 * p, as);
        _tile_loadd(6, bp + (size_t)p * NR, NR * 4);
        _tile_loadd(7, bp + (size_t)p * NR + 16, NR * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a1 + 2 * p, as);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, cs);
    _tile_stored(1, c + 16, cs);
    _tile_stored(2, c + 16 * ldc, cs);
    _tile_stored(3, c + 16 * ldc + 16, cs);
}

/* C [mr, nr] (=|+=) the AMX_ROWS x NR block: ap the packed rows (width bf16 apart), bp a
 * packed panel; `set`: C = bias (or 0) + product. */
DQ_AMX static void amx_kernel(const uint16_t *ap, size_t width, const uint32_t *bp, int pairs,
                              int kpad, float *c, size_t ldc, int mr, int nr, gboolean set,
                              const float *bias) {
    float acc[AMX_ROWS * NR] __attribute__((aligned(64)));
    float sum[AMX_ROWS * NR] __attribute__((aligned(64)));
    for (int r = 0; r < AMX_ROWS; r++)
        for (int j = 0; j < NR; j++)
            sum[r * NR + j] = r >= mr || j >= nr ? 0.0f
                              : !set             ? c[(size_t)r * ldc + j]
                              : bias != NULL     ? bias[j]
                                                 : 0.0f;
    for (int p0 = 0; p0 < pairs; p0 += KP) {
        tiles_32x32(ap + 2 * p0, width, bp + (size_t)p0 * NR, MIN(kpad, p0 + KP) - p0, acc, NR,
                    FALSE);
        for (int i = 0; i < AMX_ROWS * NR; i += 16)
            _mm512_store_ps(sum + i,
                            _mm512_add_ps(_mm512_load_ps(sum + i), _mm512_load_ps(acc + i)));
    }
    for (int r = 0; r < mr; r++)
        memcpy(c + (size_t)r * ldc, sum + r * NR, (size_t)nr * sizeof *c);
}

/* The whole product on AMX; FALSE (nothing done) when K is too long for one panel of B and one
 * block of A to share the pack buffer. */
DQ_AMX static gboolean gemm_amx(int M, int N, int K, const float *A, size_t lda, const uint16_t *W,
                                size_t ldw, const float *bias, DqGemmMode mode, float *C,
                                size_t ldc, void *pack) {
    int pairs = (K + 1) / 2, kpad = (pairs + AMX_STEP - 1) / AMX_STEP * AMX_STEP;
    size_t width = 2 * (size_t)kpad, budget = DQ_GEMM_PACK_FLOATS * sizeof(float);
    size_t a_bytes = (AMX_ROWS * width * sizeof(uint16_t) + 63) / 64 * 64;
    size_t panel_bytes = (size_t)kpad * NR * sizeof(uint32_t);
    if (a_bytes + panel_bytes > budget)
        return FALSE;
    int ncmax = (int)MIN((budget - a_bytes) / panel_bytes, (size_t)(N + NR - 1) / NR) * NR;
    uint32_t *bpack = pack;
    uint16_t *apack = (uint16_t *)((char *)pack + budget - a_bytes);
    gboolean set = mode == DQ_GEMM_SET;
    amx_configure();
    for (int n0 = 0; n0 < N; n0 += ncmax) {
        int nc = MIN(ncmax, N - n0), panels = (nc + NR - 1) / NR;
        amx_pack_b(bpack, W, ldw, N, K, n0, panels * NR, kpad);
        for (int m0 = 0; m0 < M; m0 += AMX_ROWS) {
            int mr = MIN(AMX_ROWS, M - m0);
            amx_pack_a(apack, width, A + (size_t)m0 * lda, lda, K, mr);
            for (int q = 0; q < panels; q++)
                amx_kernel(apack, width, bpack + (size_t)q * NR * kpad, pairs, kpad,
                           C + (size_t)m0 * ldc + n0 + q * NR, ldc, mr, MIN(NR, nc - q * NR), set,
                           bias != NULL && set ? bias + n0 + q * NR : NULL);
        }
    }
    _tile_release();
    return TRUE;
}

/* ---- AMX building blocks for attention's two products (backend_cpu_fast.c) */

DQ_AMX void dq_amx_begin(void) {
    amx_configure();
}

DQ_AMX void dq_amx_end(void) {
    _tile_release();
}

DQ_AMX void dq_amx_round_row(uint16_t *dst, const float *src, int n, int width) {
    int k = 0;
    for (; k + 16 <= n; k += 16)
        _mm256_storeu_si256((__m256i *)(dst + k), bf16x16(src + k));
    for (; k < n; k++)
        dst[k] = (uint16_t)daz(dq_f32_bf16(src[k]));
    memset(dst + k, 0, (size_t)(width - k) * sizeof *dst);
}

DQ_AMX void dq_amx_pack_pairs(uint32_t *dst, const uint16_t *rows, size_t ld, int pairs) {
    const __m512i at =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)ld));
    for (int h = 0; h < 32; h += 16)
        for (int p = 0; p < pairs; p++)
            _mm512_storeu_si512(dst + (size_t)p * 32 + h,
                                _mm512_i32gather_epi32(at, rows + (size_t)h * ld + 2 * p, 2));
}

DQ_AMX void dq_amx_pack_interleave(uint32_t *dst, const float *r0, const float *r1, int n) {
    for (int c = 0; c < 32; c += 16) {
        __m512i lo = _mm512_setzero_si512(), hi = lo;
        if (c < n) {
            float a[16] = {0}, b[16] = {0};
            const float *x = r0 + c, *y = r1 != NULL ? r1 + c : NULL;
            if (c + 16 > n || y == NULL) { /* a tail, or no odd row: zeros past them */
                memcpy(a, x, (size_t)MIN(16, n - c) * sizeof(float));
                if (y != NULL)
                    memcpy(b, y, (size_t)MIN(16, n - c) * sizeof(float));
                x = a;
                y = b;
            }
            lo = _mm512_cvtepu16_epi32(bf16x16(x));
            hi = _mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16x16(y)), 16);
        }
        _mm512_storeu_si512(dst + c, _mm512_or_si512(lo, hi));
    }
}

DQ_AMX void dq_amx_32x32(const uint16_t *a, size_t lda, const uint32_t *bp, int kp, float *c,
                         size_t ldc, gboolean accumulate) {
    tiles_32x32(a, lda, bp, kp, c, ldc, accumulate);
}

typedef void (*Kernel)(int kp, const uint32_t *ap, int mr, const uint32_t *bp, float *c, size_t ldc,
                       int nr, gboolean set, const float *bias);

/* dq_gemm has dealt with empty products. */
void dq_gemm_bf16(int M, int N, int K, const float *A, size_t lda, const uint16_t *W, size_t ldw,
                  const float *bias, DqGemmMode mode, float *C, size_t ldc, void *pack) {
    if (!force_portable && !force_dpbf16 && dq_cpu_has_amx_bf16() &&
        gemm_amx(M, N, K, A, lda, W, ldw, bias, mode, C, ldc, pack))
        return;
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
