/* Products on bf16 x bf16 instructions. `--weights bf16`: C = bf16(A) . W^T, bf16 x bf16
 * products summed in float32 (cpu_gemm.h has the summation order; DQ_GEMM_B_WT_BF16_DOT). On
 * AMX also the exact products of the default weights: bf16 or int8-dequantized weights with A
 * split into three bf16 (x3), float32 weights split too (x6); below.
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
 *   A rows  [MC] x [the same pairs]                -> panels of MR rows,    [panel][row][KP];
 * and an MR x NR micro-kernel keeps 24 zmm accumulators (12 rows x 2 x 16 columns) while a
 * panel of B (16 KiB) stays in L1 and the packed rows of A in L2. With the instruction, both are
 * packed with AVX-512 (vcvtne2ps2bf16 for A, 16 x 16 transposes for B): packed a value at a time,
 * they took a fifth of the product's time on Zen 4 (the kernel four fifths, at 88% of the
 * instruction's peak), and the product ran at 57-70% of that peak (bench_gemm, 2 threads). A
 * product on many rows (dq_gemm_bf16_linear: dot_linear) packs B once for all threads, as AMX
 * (amx_product below) does, which packs B the same way and A as plain bf16 rows.
 *
 * The portable kernel emulates the instruction with the same layouts, the same order and the
 * same float32 fused multiply-adds, so the tiling, the scalar packs and the tails are tested on
 * every CPU; only the intrinsics of kernel_dpbf16, the vector packs and the AMX kernel need a
 * CPU with the instructions (test_gemm then compares them with the emulation, which keeps the
 * scalar packs). Differences left: the instructions flush
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
/* Blocks of k whose sums one pass over C takes: C's block of rows (MC x NR floats, 18 KiB) stays
 * in L1 or L2 from one block to the next; with a pass a block, every block read C back from L3 or
 * memory, a sixth of the product's time on the vision shapes (2 threads, Zen 4). */
#define SB 3
/* W's columns packed at a time: their pairs of SB blocks beside MC rows of A's. */
#define NC ((int)((DQ_GEMM_PACK_FLOATS - (size_t)SB * MC * KP) / (SB * KP) / NR * NR))

#define DQ_AVX512BF16 __attribute__((target("avx512f,avx512bf16")))
/* The vector packing of both kernels (vdpbf16ps and AMX): no tile instructions in it, so it also
 * runs on CPUs with AVX512-BF16 alone (every one of them has AVX512-BW too: Cooper Lake, Zen 4). */
#define DQ_BF16_PACK __attribute__((target("avx512f,avx512bw,avx512bf16")))

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
static int force_x3 = -1; /* dq_gemm_bf16_x3: 0 off, else as the CPU and DOCQA_AMX_X3 say */

gboolean dq_gemm_bf16_force_portable(gboolean on) {
    gboolean was = force_portable;
    force_portable = on;
    return was;
}

gboolean dq_gemm_bf16_x3(gboolean on) {
    gboolean was = force_x3 != 0;
    force_x3 = on ? -1 : 0;
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

/* A's element rounded to bf16 as vcvtne2ps2bf16 rounds it (the AMX product's rounding): a
 * denormal is a zero of its sign, NaNs are quieted, the rest go to nearest even (a normal float
 * never rounds to a denormal bf16: the two share their exponents). */
static inline uint32_t round_a(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7f800000u) == 0 ? (u >> 16) & 0x8000u : dq_f32_bf16(x);
}

/* ---- packing */

/* W's pairs [p0, p0 + kp) of columns [n0, n0 + nc) -> [panel][pair][NR]; a pair's even k in
 * the low half; columns past N and the odd half past K zero. */
static void pack_b(uint32_t *dst, size_t bstride, const uint16_t *W, size_t ldw, int N, int K,
                   int n0, int nc, int p0, int kp) {
    for (int c = 0; c < nc; c += NR)
        for (int j = 0; j < NR; j++) {
            uint32_t *o = dst + (size_t)c / NR * bstride + j;
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

/* A's rows [m0, m1), pairs [p0, p0 + kp), rounded to bf16 -> panels of MR rows, each row's
 * pairs in order, KP words apart whatever kp: [panel][row][KP] (the kernel's broadcasts then
 * sit at constant offsets from one pointer, and the vector packing stores a row's 16 pairs as
 * they come out of the conversion, with no transposing); rows past m1 repeat row m0 (computed,
 * never stored). */
static void pack_a(uint32_t *dst, const float *A, size_t lda, int K, int m0, int m1, int p0,
                   int kp) {
    int rows = (m1 - m0 + MR - 1) / MR * MR;
    for (int r = 0; r < rows; r++) {
        const float *a = A + (size_t)(m0 + r < m1 ? m0 + r : m0) * lda;
        uint32_t *o = dst + (size_t)r * KP;
        for (int p = 0; p < kp; p++) {
            int k = 2 * (p0 + p);
            uint32_t hi = k + 1 < K ? round_a(a[k + 1]) : 0;
            o[p] = round_a(a[k]) | hi << 16;
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

/* A's rows `as` words apart (KP in the GEMM's packs; attention's own strides) */
static inline __attribute__((always_inline)) void
portable_body(int kp, const uint32_t *ap, size_t as, int mr, const uint32_t *bp, float *c,
              size_t ldc, int nr, gboolean set, const float *bias) {
    float acc[MR * NR] = {0};
    for (int p = 0; p < kp; p++, ap++, bp += NR)
        for (int r = 0; r < MR; r++) {
            float ah = half_hi(ap[r * as]), al = half_lo(ap[r * as]);
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
    portable_body(kp, ap, KP, mr, bp, c, ldc, nr, set, bias);
}

/* The same loops with fmaf as an instruction, not a libm call. */
DQ_AVX2 static void kernel_portable_avx2(int kp, const uint32_t *ap, int mr, const uint32_t *bp,
                                         float *c, size_t ldc, int nr, gboolean set,
                                         const float *bias) {
    portable_body(kp, ap, KP, mr, bp, c, ldc, nr, set, bias);
}

/* C [mr, nr] (=|+=) the pair products, on vdpbf16ps: 12 rows x 2 x 16 columns, 24 zmm
 * accumulators, each pair step two loads of B and twelve broadcasts of A (the products of a pair
 * do not depend on which operand A is). */
DQ_AVX512BF16 static inline __attribute__((always_inline)) void
dpbf16_body(int kp, const uint32_t *ap, size_t as, int mr, const uint32_t *bp, float *c, size_t ldc,
            int nr, gboolean set, const float *bias) {
    /* C's rows arrive while the products run (a block of k after the first reads them, and they
     * come from L3: the whole product's C is re-read once a block of k) */
    for (int r = 0; r < mr; r++) {
        _mm_prefetch((const char *)(c + (size_t)r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + (size_t)r * ldc + NR - 1), _MM_HINT_T0);
    }
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int p = 0; p < kp; p++, ap++, bp += NR) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp), b1 = (__m512bh)_mm512_loadu_si512(bp + 16);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)ap[r * as]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], b0, a);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], b1, a);
        }
    }
    /* edges through masks, not a scratch tile (whose address kept all 24 accumulators on the
     * stack, stored and loaded again in every call, edge or not) */
    __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    __m512 base0 = _mm512_setzero_ps(), base1 = base0;
    if (set && bias != NULL) {
        base0 = _mm512_maskz_loadu_ps(m0, bias);
        base1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        if (r >= mr)
            break;
        float *cr = c + (size_t)r * ldc;
        if (!set) {
            base0 = _mm512_maskz_loadu_ps(m0, cr);
            base1 = _mm512_maskz_loadu_ps(m1, cr + 16);
        }
        _mm512_mask_storeu_ps(cr, m0, _mm512_add_ps(base0, acc[r][0]));
        _mm512_mask_storeu_ps(cr + 16, m1, _mm512_add_ps(base1, acc[r][1]));
    }
}

DQ_AVX512BF16 static void kernel_dpbf16(int kp, const uint32_t *ap, int mr, const uint32_t *bp,
                                        float *c, size_t ldc, int nr, gboolean set,
                                        const float *bias) {
    dpbf16_body(kp, ap, KP, mr, bp, c, ldc, nr, set, bias);
}

/* ---- AMX: tdpbf16ps multiplies a 16 x 16-pair tile of A by a 16-pair x 16 tile of B into a
 * 16 x 16 float32 tile, 8192 multiply-adds an instruction, eight times vdpbf16ps's rate on the
 * cores that have it.
 *
 * Its own order (cpu_gemm.h): an element's accumulator starts at its initial value (the bias,
 * zero, or C) and takes the tile's pair products in k order, in one float32 running sum that
 * rests in C between blocks of k (stored and loaded back exactly).
 *
 * The whole product at once (dq_gemm_bf16_linear), not a row chunk per thread: every thread
 * packing all of W for its rows, and its A once per chunk of W, cost a third of the time of the
 * vision encoder's products. Blocks of up to AMX_KB columns of k (amx_kblocks), in order; in
 * each, W's columns (as many as the shared pack holds) are packed once, by all threads
 * together, into 32-column panels [panel][pair][32] (a 32-bit word a pair, low half the even
 * k); then each thread takes blocks of rows of A, rounds them to bf16 rows in its own pack, and
 * runs every panel over them, C's 32 x 32 block in four tiles. Zeros pad k to whole tiles, and
 * rows and columns to whole blocks; a block that overhangs C goes through a scratch.
 *
 * Split three ways (`x3`, the products of bf16 weights with float32 activations): each float32
 * of A is the exact sum of three bf16, hi = bf16(a), mid = bf16(a - hi), lo = bf16(a - hi - mid)
 * (each difference exact: the operands are within a factor 2), split once a block of k into
 * three planes. Every bf16 x bf16 product is exact in float32, so the sum has float32's
 * accuracy, where one rounding of A to bf16 keeps 8 bits; its order (amx_block_x3): in each
 * block of k, lo's and mid's products in one sum from zero, hi's in another, those two added,
 * then the block's sum added to C. The blocked sums keep a long k in check: at K = 4500 one
 * running sum was twice as far from float64 as the float32 FMA kernel, these are 0.5-0.7x it
 * (test_gemm /gemm_bf16/x3).
 *
 * float32 weights (x6, dq_gemm_f32_linear): W is split the same way while its panels are packed
 * (three planes a panel, no copy kept), and six products run a step: hi.hi, mid.hi and hi.mid
 * into one pair of tiles, lo.hi, mid.mid and hi.lo into the other; lo.mid, mid.lo and lo.lo
 * are at 2^-24 of |a w| and below. test_gemm /gemm_bf16/x6: 0.4-0.6x the FMA kernel's error
 * against float64; bench_gemm 457-505 GFLOP/s against the FMA kernel's 338-383.
 *
 * The split product first ran as a product three times as long (the planes one after another
 * along k, W packed again for each, C through memory between them): 470-580 GFLOP/s on the
 * model's shapes, a third of the plain product. Splitting a block once, the panel's tiles
 * loaded once for the three planes, C once a block: 750-810 (bench_gemm, 2 threads). */

#define AMX_ROWS 32   /* rows of C a kernel call takes: two tiles */
#define AMX_STEP 16   /* pairs of k in a tile's 64-byte row */
#define AMX_KB   2048 /* k a block at most: a panel of 32 columns is 128 KiB */
#define AMX_KB6  1024 /* float32 weights: three planes of W */
#define AMX_R    256  /* rows of A a thread rounds at a time */
#define AMX_R3   64   /* split three ways */
/* a thread's rounded rows, in floats: AMX_R rows of AMX_KB bf16, or AMX_R3 for each part */
#define AMX_A_FLOATS ((size_t)MAX(AMX_R, 3 * AMX_R3) * AMX_KB / 2)

#define DQ_AMX __attribute__((target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16")))

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

/* Bits [0, n) of 32 (n may be below 0 or above 32). */
static inline __mmask32 first32(int n) {
    return n >= 32 ? ~(__mmask32)0 : n > 0 ? ((__mmask32)1 << n) - 1 : 0;
}

/* The rounding of A: round_a's, 32 floats at a time (vcvtne2ps2bf16 rounds to nearest even,
 * reads denormals as zeros and quiets NaNs exactly so); `live` masks the floats that exist. */
DQ_BF16_PACK static inline __m512i round32(const float *x, __mmask32 live) {
    __m512 lo = _mm512_maskz_loadu_ps((__mmask16)live, x);
    __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(live >> 16), x + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* The blocks of k of a product: n of kb columns each (a multiple of 32), the last one shorter
 * where K ends: as even as whole tiles allow, so that no block is a sliver (576 = 288 + 288,
 * not 512 + 64). They depend on K alone, so every row's sum is the same however many rows. */
typedef struct {
    int n, kb;
} KBlocks;

static KBlocks amx_kblocks(int K, int most) {
    int n = MAX(1, (K + most - 1) / most);
    int kb = ((K + n - 1) / n + 31) / 32 * 32;
    return (KBlocks){.n = (K + kb - 1) / kb, .kb = kb};
}

/* 32 floats (`live` of them; zeros past) -> their three bf16 parts, out[0] lo, [1] mid, [2] hi:
 * hi = bf16(x), then what is left, then what is left of that (each difference exact). */
DQ_BF16_PACK static inline void split3(const float *x, __mmask32 live, __m512i out[3]) {
    __m512 v[2] = {_mm512_maskz_loadu_ps((__mmask16)live, x),
                   _mm512_maskz_loadu_ps((__mmask16)(live >> 16), x + 16)};
    for (int t = 2; t >= 0; t--) {
        __m256i b[2];
        for (int h = 0; h < 2; h++)
            b[h] = (__m256i)_mm512_cvtneps_pbh(v[h]);
        out[t] = _mm512_inserti64x4(_mm512_castsi256_si512(b[0]), b[1], 1);
        if (t > 0)
            for (int h = 0; h < 2; h++) /* v -= bf16(v), exactly */
                v[h] = _mm512_sub_ps(
                    v[h], _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b[h]), 16)));
    }
}

/* Rows [m0, m1) of A, columns [k0, k0 + kb) -> dst, `parts` (1 or 3) planes of rows of kb bf16
 * (part 0 lo, 1 mid, 2 hi; one part: A rounded), part_stride bf16 apart; zeros past K and in
 * the rows from m1 up to a whole AMX_ROWS. */
DQ_AMX static void amx_round_rows(uint16_t *dst, size_t part_stride, int parts, const float *A,
                                  size_t lda, int K, int m0, int m1, int k0, int kb) {
    int rows = (m1 - m0 + AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS;
    for (int r = 0; r < rows; r++) {
        uint16_t *o = dst + (size_t)r * kb;
        if (m0 + r >= m1) {
            for (int t = 0; t < parts; t++)
                memset(o + t * part_stride, 0, (size_t)kb * 2);
            continue;
        }
        const float *a = A + (size_t)(m0 + r) * lda;
        for (int k = 0; k < kb; k += 32) {
            __mmask32 live = first32(K - k0 - k);
            if (parts == 1) {
                _mm512_storeu_si512(o + k, round32(a + k0 + k, live));
                continue;
            }
            __m512i part[3];
            split3(a + k0 + k, live, part);
            for (int t = 0; t < 3; t++)
                _mm512_storeu_si512(o + t * part_stride + k, part[t]);
        }
    }
}

/* 16 words with each bf16 half that is denormal made a zero of its sign. */
DQ_BF16_PACK static inline __m512i daz_pairs(__m512i v) {
    v = _mm512_mask_and_epi32(v, _mm512_testn_epi32_mask(v, _mm512_set1_epi32(0x7f80)), v,
                              _mm512_set1_epi32((int)0xffff8000u));
    return _mm512_mask_and_epi32(v, _mm512_testn_epi32_mask(v, _mm512_set1_epi32(0x7f800000)), v,
                                 _mm512_set1_epi32((int)0x8000ffffu));
}

/* r[j] (word i) -> r[i] (word j), 16 x 16 32-bit words. */
DQ_BF16_PACK static inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* now r[4b + c] holds, in each 128-bit lane L, words (rows 4b..4b+3) x (column 4L + c) */
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[4 + i], 0x88);     /* lanes 0, 2 of each */
        t[4 + i] = _mm512_shuffle_i32x4(r[i], r[4 + i], 0xdd); /* lanes 1, 3 */
        t[8 + i] = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0x88);
        t[12 + i] = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0x88);
        r[8 + i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0xdd);
        r[4 + i] = _mm512_shuffle_i32x4(t[4 + i], t[12 + i], 0x88);
        r[12 + i] = _mm512_shuffle_i32x4(t[4 + i], t[12 + i], 0xdd);
    }
}

/* Where a product's W comes from: bf16 rows as stored, or int8 blocks (cpu_q8.h) dequantized
 * to bf16 while packed (q * scale rounded to nearest even: 2^-9 of each weight, against int8's
 * own 2^-8 of its block's largest; `--weights int8` is approximate). */
typedef struct {
    const uint16_t *bf16; /* [N][ldw] */
    size_t ldw;
    const DqGemmQ8 *q8; /* or this: ldw values a row */
    const float *f32;   /* or this, split in three planes (x6) */
} WSource;

/* Row n's block of 32 int8 weights from column k (a multiple of 32) as 32 bf16. Its pairs are
 * every m-th 16-bit word of its group of m blocks (dq_q8_at): the group's words loaded (masked
 * to its end) and the block's picked out by two permutes. */
DQ_BF16_PACK static inline __m512i q8_block_bf16(const DqGemmQ8 *q8, size_t ldw, int n, int k) {
    int nb = (int)(ldw / DQ_Q8_BLOCK), b = k / DQ_Q8_BLOCK, m;
    int b0 = MIN(b, nb) / 8 * 8; /* the groups before the row's last 8 blocks hold 8 each */
    while (b >= b0 + (m = dq_q8_group(nb, b0)))
        b0 += m;
    const uint16_t *group =
        (const uint16_t *)(const void *)(q8->q + (size_t)n * ldw + (size_t)b0 * DQ_Q8_BLOCK);
    __m512i z[4];
    for (int i = 0; i < 4; i++)
        z[i] = _mm512_maskz_loadu_epi16(first32(16 * m - 32 * i), group + 32 * i);
    const __m512i lanes =
        _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13,
                         12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    /* word p of the block: p m + j of the group (lanes past 15 unused) */
    __m512i at = _mm512_add_epi16(_mm512_mullo_epi16(lanes, _mm512_set1_epi16((short)m)),
                                  _mm512_set1_epi16((short)(b - b0)));
    __m512i words = _mm512_mask_blend_epi16(_mm512_cmpge_epu16_mask(at, _mm512_set1_epi16(64)),
                                            _mm512_permutex2var_epi16(z[0], at, z[1]),
                                            _mm512_permutex2var_epi16(z[2], at, z[3]));
    __m256i values = _mm512_castsi512_si256(words); /* 32 int8, in k order */
    __m512 scale = _mm512_set1_ps(q8->scales[(size_t)n * nb + b]);
    __m512 lo = _mm512_mul_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(values))), scale);
    __m512 hi = _mm512_mul_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(values, 1))), scale);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* Panel q of W's columns from n0 (32 of them; zeros past N), columns [k0, k0 + 2 kp) of k
 * (zeros past K) -> dst [kp][32]: 16 rows of W and 16 pairs at a time, read as words and
 * transposed. */
DQ_BF16_PACK static void amx_pack_panel(uint32_t *dst, const WSource *w, int N, int K, int n0,
                                        int k0, int kp) {
    if (w->f32 != NULL) { /* three planes, lo, mid, hi, kp x 32 words apart */
        for (int h = 0; h < NR; h += 16)
            for (int p = 0; p < kp; p += 16) {
                int k = k0 + 2 * p;
                __mmask32 live = first32(K - k);
                __m512i r[3][16];
                for (int j = 0; j < 16; j++) {
                    int n = n0 + h + j;
                    __m512i part[3] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
                                       _mm512_setzero_si512()};
                    if (n < N && live != 0)
                        split3(w->f32 + (size_t)n * w->ldw + k, live, part);
                    for (int t = 0; t < 3; t++)
                        r[t][j] = part[t];
                }
                for (int t = 0; t < 3; t++) {
                    transpose16(r[t]);
                    for (int i = 0; i < 16; i++)
                        _mm512_storeu_si512(dst + (size_t)t * kp * NR + (size_t)(p + i) * NR + h,
                                            r[t][i]);
                }
            }
        return;
    }
    for (int h = 0; h < NR; h += 16)
        for (int p = 0; p < kp; p += 16) {
            int k = k0 + 2 * p;
            __mmask32 live = first32(K - k);
            __m512i r[16];
            for (int j = 0; j < 16; j++) {
                int n = n0 + h + j;
                r[j] = n >= N || live == 0 ? _mm512_setzero_si512()
                       : w->q8 != NULL
                           ? q8_block_bf16(w->q8, w->ldw, n, k)
                           : _mm512_maskz_loadu_epi16(live, w->bf16 + (size_t)n * w->ldw + k);
            }
            transpose16(r);
            for (int i = 0; i < 16; i++)
                _mm512_storeu_si512(dst + (size_t)(p + i) * NR + h, daz_pairs(r[i]));
        }
}

/* Tiles 0-3 = a 32 x 32 block's start: zeros, or C (ld floats apart). */
typedef enum { START_ZERO, START_C } AmxStart;

/* One step of a 32 x 32 block on tiles 0-7: tiles 0-3 (C's quarters) += A's 32 rows (a0: rows
 * 0-15, a1: rows 16-31, as bytes apart) . the panel's two tiles at b, 16 pairs of k. */
DQ_AMX static inline __attribute__((always_inline)) void
amx_step_32x32(const uint16_t *a0, const uint16_t *a1, size_t as, const uint32_t *b) {
    _tile_loadd(4, a0, as);
    _tile_loadd(6, b, NR * 4);
    _tile_loadd(7, b + 16, NR * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1, as);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
}

/* Tiles 0-3 -> C [32, 32] (ldc floats apart). */
DQ_AMX static inline __attribute__((always_inline)) void amx_store_32x32(float *c, size_t ldc) {
    size_t cs = ldc * sizeof *c;
    _tile_stored(0, c, cs);
    _tile_stored(1, c + 16, cs);
    _tile_stored(2, c + 16 * ldc, cs);
    _tile_stored(3, c + 16 * ldc + 16, cs);
}

/* C [32, 32] = start + A [32 rows, 2 kp] . B panel [kp][32] on tiles 0-7: A's rows lda bf16
 * apart, C's ldc floats apart. */
DQ_AMX static inline __attribute__((always_inline)) void amx_block(const uint16_t *a, size_t lda,
                                                                   const uint32_t *bp, int kp,
                                                                   float *c, size_t ldc,
                                                                   AmxStart start) {
    size_t as = lda * sizeof *a, cs = ldc * sizeof *c;
    if (start == START_C) {
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
    for (int p = 0; p < kp; p += AMX_STEP)
        amx_step_32x32(a + 2 * p, a1 + 2 * p, as, bp + (size_t)p * NR);
    amx_store_32x32(c, ldc);
}

/* The end of a split product's block: C [16, 32] = start + (tiles 0, 1: the large parts' sum)
 * + (tiles 2, 3: the small parts'). */
DQ_AMX static inline __attribute__((always_inline)) void split_block_end(float *c, size_t ldc,
                                                                         AmxStart start) {
    float big[16 * NR] __attribute__((aligned(64))), small[16 * NR] __attribute__((aligned(64)));
    _tile_stored(0, big, NR * 4);
    _tile_stored(1, big + 16, NR * 4);
    _tile_stored(2, small, NR * 4);
    _tile_stored(3, small + 16, NR * 4);
    for (int r = 0; r < 16; r++)
        for (int h = 0; h < NR; h += 16) {
            float *cr = c + (size_t)r * ldc + h;
            __m512 v =
                _mm512_add_ps(_mm512_load_ps(big + r * NR + h), _mm512_load_ps(small + r * NR + h));
            _mm512_storeu_ps(cr, start == START_C ? _mm512_add_ps(_mm512_loadu_ps(cr), v) : v);
        }
}

/* The split product's block: C [16, 32] = start + (hi . B + (lo + mid) . B) over a block of k,
 * the two sums from zero in tiles 0, 1 and 2, 3 (so the small parts never meet an accumulator
 * as large as C), added at the block's end. The planes are part_stride bf16 apart (lo, mid,
 * hi); each step loads the panel's two tiles once for the three, and runs lo's products, hi's,
 * then mid's, so that the products into one accumulator stand apart in the pipeline. */
DQ_AMX static inline __attribute__((always_inline)) void
amx_block_x3(const uint16_t *a, size_t lda, size_t part_stride, const uint32_t *bp, int kp,
             float *c, size_t ldc, AmxStart start) {
    size_t as = lda * sizeof *a;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint16_t *lo = a, *mid = a + part_stride, *hi = a + 2 * part_stride;
    for (int p = 0; p < kp; p += AMX_STEP) {
        _tile_loadd(6, bp + (size_t)p * NR, NR * 4);
        _tile_loadd(7, bp + (size_t)p * NR + 16, NR * 4);
        _tile_loadd(4, lo + 2 * p, as);
        _tile_dpbf16ps(2, 4, 6);
        _tile_dpbf16ps(3, 4, 7);
        _tile_loadd(5, hi + 2 * p, as);
        _tile_dpbf16ps(0, 5, 6);
        _tile_dpbf16ps(1, 5, 7);
        _tile_loadd(4, mid + 2 * p, as);
        _tile_dpbf16ps(2, 4, 6);
        _tile_dpbf16ps(3, 4, 7);
    }
    split_block_end(c, ldc, start);
}

/* float32 weights, split in three planes too (x6): C [16, 32] = start + the block's products
 * of A's parts and W's whose magnitudes reach float32's last bits (hi.hi, mid.hi, hi.mid in
 * tiles 0, 1; lo.hi, mid.mid, hi.lo in tiles 2, 3; lo.mid, mid.lo and lo.lo, at 2^-24 and
 * below, left out), the two sums added at the block's end. wp: W's planes lo, mid, hi, wstride
 * words apart. */
DQ_AMX static inline __attribute__((always_inline)) void
amx_block_x6(const uint16_t *a, size_t lda, size_t part_stride, const uint32_t *bp, size_t wstride,
             int kp, float *c, size_t ldc, AmxStart start) {
    size_t as = lda * sizeof *a;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint16_t *lo = a, *mid = a + part_stride, *hi = a + 2 * part_stride;
    const uint32_t *wlo = bp, *wmid = bp + wstride, *whi = bp + 2 * wstride;
    for (int p = 0; p < kp; p += AMX_STEP) {
        size_t at = (size_t)p * NR;
        _tile_loadd(6, whi + at, NR * 4);
        _tile_loadd(7, whi + at + 16, NR * 4);
        _tile_loadd(4, hi + 2 * p, as);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, lo + 2 * p, as);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(5, mid + 2 * p, as);
        _tile_dpbf16ps(0, 5, 6);
        _tile_dpbf16ps(1, 5, 7);
        _tile_loadd(6, wmid + at, NR * 4);
        _tile_loadd(7, wmid + at + 16, NR * 4);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(6, wlo + at, NR * 4);
        _tile_loadd(7, wlo + at + 16, NR * 4);
        _tile_dpbf16ps(2, 4, 6);
        _tile_dpbf16ps(3, 4, 7);
    }
    split_block_end(c, ldc, start);
}

/* C [rows of the kernel, 32] from `parts` planes of A: amx_block or amx_block_x3. */
DQ_AMX static inline __attribute__((always_inline)) void
amx_kernel(int parts, int wplanes, const uint16_t *a, size_t lda, size_t part_stride,
           const uint32_t *bp, int kp, float *c, size_t ldc, AmxStart start) {
    if (parts == 1)
        amx_block(a, lda, bp, kp, c, ldc, start);
    else if (wplanes == 1)
        amx_block_x3(a, lda, part_stride, bp, kp, c, ldc, start);
    else
        amx_block_x6(a, lda, part_stride, bp, (size_t)kp * NR, kp, c, ldc, start);
}

/* bias [32] added to the rows of a 32-column block of C. */
DQ_AMX static inline void add_bias(float *c, size_t ldc, int rows, const float *b32) {
    __m512 b0 = _mm512_load_ps(b32), b1 = _mm512_load_ps(b32 + 16);
    for (int r = 0; r < rows; r++, c += ldc) {
        _mm512_storeu_ps(c, _mm512_add_ps(_mm512_loadu_ps(c), b0));
        _mm512_storeu_ps(c + 16, _mm512_add_ps(_mm512_loadu_ps(c + 16), b1));
    }
}

/* One block of k for rows [m0, m1) of C (A's parts rounded in ap, part_stride bf16 apart, rows
 * of 2 kp) against the packed panels of columns [n0, n0 + nc): `first` is k's first block (C
 * then starts from zero, or from itself with DQ_GEMM_ADD), else C holds the sum so far; after
 * the `last`, a SET adds the bias. */
DQ_AMX static void amx_rows(const uint16_t *ap, size_t part_stride, int parts, int wplanes, int kp,
                            const uint32_t *wp, float *C, size_t ldc, int m0, int m1, int n0,
                            int nc, const float *bias, DqGemmMode mode, gboolean first,
                            gboolean last) {
    AmxStart start = !first || mode == DQ_GEMM_ADD ? START_C : START_ZERO;
    gboolean add = last && mode == DQ_GEMM_SET && bias != NULL;
    int step = parts == 1 ? AMX_ROWS : 16; /* rows a kernel call takes */
    for (int q = 0; q < nc; q += NR) {
        int cols = MIN(NR, nc - q);
        float b32[NR] __attribute__((aligned(64))) = {0};
        if (add)
            memcpy(b32, bias + n0 + q, (size_t)cols * sizeof *b32);
        const uint32_t *bp = wp + (size_t)q * kp * wplanes;
        for (int i = m0; i < m1; i += step) {
            int rows = MIN(step, m1 - i);
            const uint16_t *a = ap + (size_t)(i - m0) * 2 * kp;
            float *c = C + (size_t)i * ldc + n0 + q;
            if (rows == step && cols == NR) {
                amx_kernel(parts, wplanes, a, 2 * (size_t)kp, part_stride, bp, kp, c, ldc, start);
                if (add)
                    add_bias(c, ldc, step, b32);
                continue;
            }
            float t[AMX_ROWS * NR] __attribute__((aligned(64)));
            if (start == START_C)
                for (int r = 0; r < rows; r++)
                    memcpy(t + r * NR, c + (size_t)r * ldc, (size_t)cols * sizeof *t);
            amx_kernel(parts, wplanes, a, 2 * (size_t)kp, part_stride, bp, kp, t, NR, start);
            if (add)
                add_bias(t, NR, rows, b32);
            for (int r = 0; r < rows; r++)
                memcpy(c + (size_t)r * ldc, t + r * NR, (size_t)cols * sizeof *t);
        }
    }
}

/* The product on `threads` threads: thread t rounds rows of A into abufs + t * astride floats
 * (AMX_A_FLOATS), all of them pack W into wpack (wbytes, >= one panel of AMX_KB). x3: A split
 * three ways. */
DQ_AMX static void amx_product(int M, int N, int K, const float *A, size_t lda, const WSource *w,
                               const float *bias, DqGemmMode mode, float *C, size_t ldc,
                               gboolean x3, int threads, float *abufs, size_t astride,
                               uint32_t *wpack, size_t wbytes) {
    int parts = x3 ? 3 : 1, wplanes = w->f32 != NULL ? 3 : 1;
    KBlocks kb = amx_kblocks(K, wplanes == 3 ? AMX_KB6 : AMX_KB);
    int kp = kb.kb / 2, R = x3 ? AMX_R3 : AMX_R, mblocks = (M + R - 1) / R;
    size_t part_stride = (size_t)R * kb.kb;
    int ncmax =
        (int)MIN(wbytes / ((size_t)kp * NR * 4 * wplanes) * NR, (size_t)(N + NR - 1) / NR * NR);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        amx_configure();
        uint16_t *ap = (uint16_t *)(void *)(abufs + (size_t)omp_get_thread_num() * astride);
        for (int b = 0; b < kb.n; b++) {
            int k0 = b * kb.kb;
            for (int n0 = 0; n0 < N; n0 += ncmax) {
                int nc = MIN(ncmax, N - n0), panels = (nc + NR - 1) / NR;
#pragma omp for schedule(static)
                for (int q = 0; q < panels; q++)
                    amx_pack_panel(wpack + (size_t)q * NR * kp * wplanes, w, N, K, n0 + q * NR, k0,
                                   kp);
#pragma omp for schedule(dynamic)
                for (int r = 0; r < mblocks; r++) {
                    int m0 = r * R, m1 = MIN(M, m0 + R);
                    amx_round_rows(ap, part_stride, parts, A, lda, K, m0, m1, k0, kb.kb);
                    amx_rows(ap, part_stride, parts, wplanes, kp, wpack, C, ldc, m0, m1, n0, nc,
                             bias, mode, b == 0, b == kb.n - 1);
                }
            }
        }
        dq_amx_end(); /* a call: clang gives the region's outlined body no AMX target */
    }
}

/* ---- AMX building blocks for attention's two products (backend_cpu_fast.c) */

DQ_AMX void dq_amx_begin(void) {
    amx_configure();
}

DQ_AMX void dq_amx_end(void) {
    _tile_release();
}

DQ_BF16_PACK void dq_amx_round_row(uint16_t *dst, const float *src, int n, int width) {
    for (int k = 0; k < width; k += 32) {
        __mmask32 room = first32(width - k);
        _mm512_mask_storeu_epi16(dst + k, room, round32(src + k, first32(n - k) & room));
    }
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
            lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x)));
            hi = _mm512_slli_epi32(
                _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(y))), 16);
        }
        _mm512_storeu_si512(dst + c, _mm512_or_si512(lo, hi));
    }
}

DQ_AMX void dq_amx_32x32(const uint16_t *a, size_t lda, const uint32_t *bp, int kp, float *c,
                         size_t ldc, gboolean accumulate) {
    amx_block(a, lda, bp, kp, c, ldc, accumulate ? START_C : START_ZERO);
}

DQ_AMX void dq_amx_split_row(uint16_t *dst, size_t plane, const float *src, int n, int width) {
    for (int k = 0; k < width; k += 32) {
        __mmask32 room = first32(width - k);
        __m512i part[3];
        split3(src + k, first32(n - k) & room, part);
        for (int t = 0; t < 3; t++)
            _mm512_mask_storeu_epi16(dst + t * plane + k, room, part[t]);
    }
}

DQ_AMX void dq_amx_split_interleave(uint32_t *dst, size_t plane, const float *r0, const float *r1,
                                    int n) {
    for (int c = 0; c < 32; c += 16) {
        __m512i lo[3], hi[3];
        __mmask32 live = c < n ? first32(MIN(16, n - c)) : 0;
        split3(r0 + c, live, lo);
        if (r1 != NULL)
            split3(r1 + c, live, hi);
        for (int t = 0; t < 3; t++) {
            /* split3 leaves each float's bf16 part in the low 16 words of its 32-word vector */
            __m512i a = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(lo[t]));
            __m512i b =
                r1 != NULL
                    ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi[t])), 16)
                    : _mm512_setzero_si512();
            _mm512_storeu_si512(dst + t * plane + c, _mm512_or_si512(a, b));
        }
    }
}

/* C [32, 32] = the six products of amx_block_x6 over a short k (attention's head dims), all into
 * one accumulator per quarter: the split sums and their stack bounce cost more than 2 steps of
 * products, and at a head's k the error stays under a float32 FMA chain's (test_gemm
 * /gemm_bf16/x6_attention: 0.4x). */
DQ_AMX void dq_amx_32x32_x6(const uint16_t *a, size_t lda, size_t a_plane, const uint32_t *bp,
                            size_t w_plane, int kp, float *c, size_t ldc) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    /* (A plane, B plane): hi.hi, mid.hi, lo.hi | hi.mid, mid.mid | hi.lo, smallest first */
    static const int pa[6] = {2, 1, 0, 2, 1, 2}, pb[6] = {2, 2, 2, 1, 1, 0};
    for (int p = 0; p < kp; p += AMX_STEP)
        for (int u = 5; u >= 0; u--) {
            const uint16_t *ap = a + pa[u] * a_plane + 2 * p;
            amx_step_32x32(ap, ap + 16 * lda, lda * sizeof *a,
                           bp + pb[u] * w_plane + (size_t)p * NR);
        }
    amx_store_32x32(c, ldc);
}

DQ_AMX void dq_amx_16x32_x6(const uint16_t *a, size_t lda, size_t a_plane, const uint32_t *bp,
                            size_t w_plane, int kp, float *c, size_t ldc, gboolean accumulate) {
    amx_block_x6(a, lda, a_plane, bp, w_plane, kp, c, ldc, accumulate ? START_C : START_ZERO);
}

static gboolean use_amx(void) {
    return !force_portable && !force_dpbf16 && dq_cpu_has_amx_bf16();
}

static gboolean use_x3(void) {
    static int on = -1;
    if (on < 0)
        on = g_strcmp0(g_getenv("DOCQA_AMX_X3"), "0") != 0;
    return on && force_x3 != 0 && dq_cpu_has_amx_bf16();
}

DqAttnProducts dq_attn_products(gboolean bf16_products, gboolean bf16_dot, gboolean fits,
                                gboolean amx, gboolean x6) {
    /* bf16_dot, not only the CPU, decides: with DOCQA_BF16_DOT=0 an AMX CPU took bf16 tiles for
     * attention while its GEMMs took the exact x3 product */
    if (!fits)
        return DQ_ATTN_F32;
    if (bf16_products && bf16_dot)
        return amx ? DQ_ATTN_AMX_BF16 : DQ_ATTN_DOT_BF16;
    return x6 ? DQ_ATTN_X6 : DQ_ATTN_F32;
}

gboolean dq_amx_x6_on(void) {
    static int on = -1;
    if (on < 0)
        on = g_strcmp0(g_getenv("DOCQA_AMX_X6"), "0") != 0;
    return on && use_x3();
}

static gboolean dot_linear(int M, int N, int K, const float *x, const uint16_t *W,
                           const float *bias, float *y, int threads, float *packs);

gboolean dq_gemm_bf16_linear(int M, int N, int K, const float *x, const uint16_t *W, gboolean x3,
                             const float *bias, float *y, int threads, float *packs) {
    if (x3 ? !use_x3() : !use_amx())
        return !x3 && dot_linear(M, N, K, x, W, bias, y, threads, packs);
    float *shared = packs + (size_t)threads * DQ_GEMM_PACK_FLOATS;
    WSource w = {.bf16 = W, .ldw = (size_t)K};
    amx_product(M, N, K, x, K, &w, bias, DQ_GEMM_SET, y, N, x3, threads, packs, DQ_GEMM_PACK_FLOATS,
                (uint32_t *)(void *)shared, DQ_GEMM_SHARED_FLOATS * sizeof(float));
    return TRUE;
}

gboolean dq_gemm_f32_linear(int M, int N, int K, const float *x, const float *W, const float *bias,
                            float *y, int threads, float *packs) {
    if (!use_x3() || g_strcmp0(g_getenv("DOCQA_AMX_X6"), "0") == 0)
        return FALSE;
    float *shared = packs + (size_t)threads * DQ_GEMM_PACK_FLOATS;
    WSource w = {.f32 = W, .ldw = (size_t)K};
    amx_product(M, N, K, x, K, &w, bias, DQ_GEMM_SET, y, N, TRUE, threads, packs,
                DQ_GEMM_PACK_FLOATS, (uint32_t *)(void *)shared,
                DQ_GEMM_SHARED_FLOATS * sizeof(float));
    return TRUE;
}

gboolean dq_gemm_q8_linear(int M, int N, int K, const float *x, const DqGemmQ8 *W,
                           const float *bias, float *y, int threads, float *packs) {
    if (!use_x3() || K % DQ_Q8_BLOCK != 0)
        return FALSE;
    float *shared = packs + (size_t)threads * DQ_GEMM_PACK_FLOATS;
    WSource w = {.q8 = W, .ldw = (size_t)K};
    amx_product(M, N, K, x, K, &w, bias, DQ_GEMM_SET, y, N, TRUE, threads, packs,
                DQ_GEMM_PACK_FLOATS, (uint32_t *)(void *)shared,
                DQ_GEMM_SHARED_FLOATS * sizeof(float));
    return TRUE;
}

typedef void (*Kernel)(int kp, const uint32_t *ap, int mr, const uint32_t *bp, float *c, size_t ldc,
                       int nr, gboolean set, const float *bias);

/* pack_a with vcvtne2ps2bf16: 32 floats of a row a store (the same bits as round_a). */
DQ_BF16_PACK static void pack_a_avx512(uint32_t *dst, const float *A, size_t lda, int K, int m0,
                                       int m1, int p0, int kp) {
    int rows = (m1 - m0 + MR - 1) / MR * MR;
    for (int r = 0; r < rows; r++) {
        const float *a = A + (size_t)(m0 + r < m1 ? m0 + r : m0) * lda + 2 * (size_t)p0;
        uint32_t *o = dst + (size_t)r * KP;
        for (int p = 0; p < kp; p += 16) /* p + 16 <= KP: the row's room */
            _mm512_storeu_si512(
                o + p, round32(a + 2 * p, first32(K - 2 * (p0 + p)) & first32(2 * (kp - p))));
    }
}

/* pack_b with amx_pack_panel (16 columns x 16 pairs a transpose in registers): each panel's
 * pairs rounded up to whole 16 (zeros past K; the kernel stops at kp), panels bstride words
 * apart. */
DQ_BF16_PACK static void pack_b_avx512(uint32_t *dst, size_t bstride, const uint16_t *W, size_t ldw,
                                       int N, int K, int n0, int nc, int p0, int kp) {
    WSource w = {.bf16 = W, .ldw = ldw};
    for (int c = 0; c < nc; c += NR)
        amx_pack_panel(dst + (size_t)c / NR * bstride, &w, N, K, n0 + c, 2 * p0,
                       (kp + 15) / 16 * 16);
}

static gboolean vector_packs(void) {
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512bw");
    }
    return have;
}

/* The vdpbf16ps product's kernel and packs: the instruction with the vector packs, or its
 * emulation with the scalar ones (test_gemm compares the vector packs with them). */
typedef struct {
    Kernel kernel;
    gboolean vec;
} DotPath;

static DotPath dot_path(void) {
    gboolean dot = !force_portable && dq_cpu_has_avx512bf16();
    return (DotPath){.kernel = dot                 ? kernel_dpbf16
                               : dq_cpu_has_avx2() ? kernel_portable_avx2
                                                   : kernel_portable,
                     .vec = dot && vector_packs()};
}

/* Words a panel of W takes in the pack for the pairs [s0, s0 + sp) (at most SB blocks): its
 * block b at b KP NR, the last block rounded up to whole 16 pairs by the vector pack. */
static size_t dot_panel_words(DotPath d, int sp) {
    int nb = (sp + KP - 1) / KP, kp_last = sp - (nb - 1) * KP;
    return ((size_t)(nb - 1) * KP + (d.vec ? (kp_last + 15) / 16 * 16 : kp_last)) * NR;
}

/* W's columns [n0, n0 + nc), pairs [s0, s0 + sp) -> panels bq words apart. */
static void dot_pack_w(DotPath d, uint32_t *bpack, size_t bq, const uint16_t *W, size_t ldw, int N,
                       int K, int n0, int nc, int s0, int sp) {
    for (int b = 0; b < (sp + KP - 1) / KP; b++) {
        int p0 = s0 + b * KP, kp = MIN(KP, s0 + sp - p0);
        if (d.vec)
            pack_b_avx512(bpack + (size_t)b * KP * NR, bq, W, ldw, N, K, n0, nc, p0, kp);
        else
            pack_b(bpack + (size_t)b * KP * NR, bq, W, ldw, N, K, n0, nc, p0, kp);
    }
}

/* C's rows [m0, m1) (at most MC) x the packed columns [n0, n0 + nc), pairs [s0, s0 + sp): A's
 * rows packed into apack, then each 32-column panel takes its blocks of k in order (C's block
 * of rows stays in L1 or L2 from one to the next). */
static void dot_rows(DotPath d, uint32_t *apack, const uint32_t *bpack, size_t bq, const float *A,
                     size_t lda, int K, int m0, int m1, int n0, int nc, int s0, int sp,
                     const float *bias, DqGemmMode mode, float *C, size_t ldc) {
    int nb = (sp + KP - 1) / KP;
    for (int b = 0; b < nb; b++) {
        int p0 = s0 + b * KP, kp = MIN(KP, s0 + sp - p0);
        uint32_t *ab = apack + (size_t)b * MC * KP;
        if (d.vec)
            pack_a_avx512(ab, A, lda, K, m0, m1, p0, kp);
        else
            pack_a(ab, A, lda, K, m0, m1, p0, kp);
    }
    for (int q = 0; q < (nc + NR - 1) / NR; q++)
        for (int b = 0; b < nb; b++) {
            int p0 = s0 + b * KP, kp = MIN(KP, s0 + sp - p0);
            gboolean set = mode == DQ_GEMM_SET && p0 == 0;
            const uint32_t *bp = bpack + (size_t)q * bq + (size_t)b * KP * NR;
            for (int i = m0; i < m1; i += MR)
                d.kernel(kp, apack + (size_t)b * MC * KP + (size_t)(i - m0) * KP, MIN(MR, m1 - i),
                         bp, C + (size_t)i * ldc + n0 + q * NR, ldc, MIN(NR, nc - q * NR), set,
                         bias != NULL ? bias + n0 + q * NR : NULL);
        }
}

/* dq_gemm has dealt with empty products. */
void dq_gemm_bf16(int M, int N, int K, const float *A, size_t lda, const uint16_t *W, size_t ldw,
                  const float *bias, DqGemmMode mode, float *C, size_t ldc, void *pack) {
    if (use_amx()) { /* the pack: a thread's A block, then W's panels */
        float *wp = (float *)pack + AMX_A_FLOATS;
        WSource w = {.bf16 = W, .ldw = ldw};
        amx_product(M, N, K, A, lda, &w, bias, mode, C, ldc, FALSE, 1, pack, 0,
                    (uint32_t *)(void *)wp, (DQ_GEMM_PACK_FLOATS - AMX_A_FLOATS) * sizeof(float));
        return;
    }
    DotPath d = dot_path();
    int pairs = (K + 1) / 2;
    uint32_t *apack = pack, *bpack = apack + (size_t)SB * MC * KP;
    for (int n0 = 0; n0 < N; n0 += NC) {
        int nc = MIN(NC, N - n0);
        for (int s0 = 0; s0 < pairs; s0 += SB * KP) {
            int sp = MIN(SB * KP, pairs - s0);
            size_t bq = dot_panel_words(d, sp);
            dot_pack_w(d, bpack, bq, W, ldw, N, K, n0, nc, s0, sp);
            for (int m0 = 0; m0 < M; m0 += MC)
                dot_rows(d, apack, bpack, bq, A, lda, K, m0, MIN(M, m0 + MC), n0, nc, s0, sp, bias,
                         mode, C, ldc);
        }
    }
}

/* dq_gemm_bf16_linear off AMX: all threads on one product, as there. W's panels are packed once
 * for all of them, into the shared part of packs (8 MiB: 5440 columns of three blocks of k, the
 * vision MLP's 3072 whole), each thread its share of the panels; then the threads take blocks
 * of MC rows as they come, each packing its rows of A into its own pack. Before, every chunk
 * of rows packed all of W for itself (3.6% of a 256M --weights bf16 page on Zen 4, perf), and
 * its A once for each of W's 1216-column blocks. The elements' sums are dq_gemm_bf16's, bit for
 * bit: the blocks of k, their order and the kernel do not depend on the rows or columns taken
 * together. Few rows (fewer blocks of MC than threads): FALSE, dq_gemm_linear's chunks of
 * features keep every thread busy. */
static gboolean dot_linear(int M, int N, int K, const float *x, const uint16_t *W,
                           const float *bias, float *y, int threads, float *packs) {
    if (M / MC < threads)
        return FALSE;
    DotPath d = dot_path();
    uint32_t *shared = (uint32_t *)(void *)(packs + (size_t)threads * DQ_GEMM_PACK_FLOATS);
    int pairs = (K + 1) / 2, mblocks = (M + MC - 1) / MC;
    int ncmax = (int)MIN(DQ_GEMM_SHARED_FLOATS / dot_panel_words(d, MIN(SB * KP, pairs)) * NR,
                         (size_t)(N + NR - 1) / NR * NR);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        uint32_t *apack =
            (uint32_t *)(void *)(packs + (size_t)omp_get_thread_num() * DQ_GEMM_PACK_FLOATS);
        for (int n0 = 0; n0 < N; n0 += ncmax) {
            int nc = MIN(ncmax, N - n0), panels = (nc + NR - 1) / NR;
            for (int s0 = 0; s0 < pairs; s0 += SB * KP) {
                int sp = MIN(SB * KP, pairs - s0);
                size_t bq = dot_panel_words(d, sp);
#pragma omp for schedule(static)
                for (int q = 0; q < panels; q++)
                    dot_pack_w(d, shared + (size_t)q * bq, bq, W, (size_t)K, N, K, n0 + q * NR,
                               MIN(NR, nc - q * NR), s0, sp);
#pragma omp for schedule(dynamic)
                for (int r = 0; r < mblocks; r++)
                    dot_rows(d, apack, shared, bq, x, (size_t)K, K, r * MC, MIN(M, r * MC + MC), n0,
                             nc, s0, sp, bias, DQ_GEMM_SET, y, (size_t)N);
            }
        }
    }
    return TRUE;
}

/* ---- attention's two products on vdpbf16ps (cpu_gemm.h) */

gboolean dq_dpbf16_native(void) {
    return !force_portable && dq_cpu_has_avx512bf16();
}

void dq_dpbf16_round_row(uint16_t *dst, const float *src, int n, int width) {
    if (dq_dpbf16_native() && vector_packs()) {
        dq_amx_round_row(dst, src, n, width);
        return;
    }
    for (int k = 0; k < width; k++)
        dst[k] = k < n ? (uint16_t)round_a(src[k]) : 0;
}

DQ_AVX512BF16 static void tile_dpbf16(int kp, const uint32_t *a, size_t lda, int mr,
                                      const uint32_t *bp, float *c, size_t ldc, int nr,
                                      gboolean set) {
    dpbf16_body(kp, a, lda, mr, bp, c, ldc, nr, set, NULL);
}

DQ_AVX2 static void tile_portable_avx2(int kp, const uint32_t *a, size_t lda, int mr,
                                       const uint32_t *bp, float *c, size_t ldc, int nr,
                                       gboolean set) {
    portable_body(kp, a, lda, mr, bp, c, ldc, nr, set, NULL);
}

void dq_dpbf16_tile(int kp, const uint32_t *a, size_t lda, int mr, const uint32_t *bp, float *c,
                    size_t ldc, int nr, gboolean set) {
    if (dq_dpbf16_native())
        tile_dpbf16(kp, a, lda, mr, bp, c, ldc, nr, set);
    else if (dq_cpu_has_avx2())
        tile_portable_avx2(kp, a, lda, mr, bp, c, ldc, nr, set);
    else
        portable_body(kp, a, lda, mr, bp, c, ldc, nr, set, NULL);
}
