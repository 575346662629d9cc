/* The fast CPU backend's matrix product: C = A . B (+ bias | + C), float32 arithmetic.
 *
 * A is float32 row-major. B comes in one of the layouts the model needs, read straight from
 * where it lives (a mapped weight, a KV cache):
 *   DQ_GEMM_B_WT_F32 / _BF16  B = W^T, W [N, K] row-major: a linear layer's weight [out, in]
 *                             or attention's keys [n_kv, head_dim];
 *   DQ_GEMM_B_WT_BF16_DOT     as _BF16, but A is rounded to bf16 as well and the products
 *                             bf16 x bf16 are summed in float32 a pair of k at a time, as the
 *                             AVX512-BF16 instruction vdpbf16ps and AMX's tdpbf16ps do
 *                             (`--weights bf16`); approximate (cpu_gemm_bf16.c);
 *   DQ_GEMM_B_KN_F32          B [K, N] row-major: attention's values [n_kv, head_dim];
 *   DQ_GEMM_B_WT_Q8           B = W^T, W [N, K] as int8 blocks (cpu_q8.h): B points to a
 *                             DqGemmQ8, ldb is W's row stride in values; dequantized (q * scale,
 *                             float32) into the panels.
 * On CPUs with AMX-BF16, dq_gemm_linear runs DQ_GEMM_B_WT_BF16 on tiles instead, each activation
 * split into three bf16 that sum to it exactly (cpu_gemm_bf16.c: float32's accuracy in another
 * order), and DQ_GEMM_B_WT_BF16_DOT on tiles too.
 * B is packed block by block (KC x NC, bf16 widened on the way) into 16-column panels, and a
 * 6 x 16 AVX2 micro-kernel keeps 12 accumulators in registers (the BLIS scheme: a B panel in L1,
 * rows of A from L2); where the CPU has AVX-512F, a 12 x 32 kernel takes 2 x 2 of those tiles at
 * once with the same operations on every element (the same bits).
 *
 * Each C element is summed in the same order whatever M, the row offset or the part of N a
 * call covers: k in blocks of DQ_GEMM_KC, each block's products accumulated in k order, blocks
 * added to the initial value in order. So results do not depend on how rows are batched or how
 * the work is split among threads (the backend's row-invariance promise, backend.h).
 *
 * Single-threaded: callers split C among threads, each with its own pack buffer. */
#ifndef DQ_CPU_GEMM_H
#define DQ_CPU_GEMM_H

#include <glib.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    DQ_GEMM_B_WT_F32,
    DQ_GEMM_B_WT_BF16,
    DQ_GEMM_B_WT_BF16_DOT,
    DQ_GEMM_B_KN_F32,
    DQ_GEMM_B_WT_Q8,
} DqGemmB;

/* int8 weights: W[n][k] = q[n * ldb + dq_q8_pos(ldb, k)] * scales[n * (ldb / DQ_Q8_BLOCK) +
 * k / DQ_Q8_BLOCK]. */
#define DQ_Q8_BLOCK 32
typedef struct {
    const int8_t *q;
    const float *scales;
} DqGemmQ8;

/* The blocks of a row of int8 weights are stored in groups of 8, then one each of 4, 2 and 1 as
 * the remainder needs (18 blocks: 8, 8, 2). The group of the blocks from b0 on, in a row of nb. */
static inline int dq_q8_group(int nb, int b0) {
    int left = nb - b0;
    return left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

/* Where value i of block b0 + j of the group of m blocks from b0 is stored in its row: pair p
 * (values 2p, 2p + 1) of the group's block j at pair slot p * m + j. Loops over a row's values
 * walk its groups (dq_q8_group) and ask this. */
static inline size_t dq_q8_at(int b0, int m, int j, int i) {
    return (size_t)b0 * DQ_Q8_BLOCK + (size_t)(i / 2) * (2 * m) + 2 * j + (i & 1);
}

/* Where value k of a row of `cols` int8 values is stored (cpu_q8.h). It walks the row's groups
 * from the start: for single values (tests, checks), not for loops over a row. */
static inline size_t dq_q8_pos(int cols, int k) {
    int nb = cols / DQ_Q8_BLOCK, b = k / DQ_Q8_BLOCK, b0 = 0, m;
    while (b >= b0 + (m = dq_q8_group(nb, b0)))
        b0 += m;
    return dq_q8_at(b0, m, b - b0, k % DQ_Q8_BLOCK);
}

typedef enum {
    DQ_GEMM_SET, /* C = A . B (+ bias) */
    DQ_GEMM_ADD, /* C += A . B (bias ignored) */
} DqGemmMode;

#define DQ_GEMM_KC 256
/* Columns of B packed at a time. A block of a mapped weight reads NC rows of W, each on its own
 * 4 KiB pages (file mappings get no huge pages): 1024 of them stay within the second-level TLB,
 * 2048 did not, and the 2.2B decoder's float32 products ran 5-20% slower from the mapping than
 * from a huge-page copy. */
#define DQ_GEMM_NC 1024
/* Floats of pack buffer one dq_gemm call needs; cpu_gemm_bf16.c packs twice as many columns. */
#define DQ_GEMM_PACK_FLOATS ((size_t)DQ_GEMM_KC * 2048)
/* dq_gemm_linear's packs: a pack each thread, then DQ_GEMM_SHARED_FLOATS all threads share (the
 * AMX product packs W there once for all of them: 8 MiB, the vision MLP's weights whole). */
#define DQ_GEMM_SHARED_FLOATS ((size_t)2 << 20)
#define DQ_GEMM_LINEAR_PACK_FLOATS(threads)                                                        \
    ((size_t)(threads)*DQ_GEMM_PACK_FLOATS + DQ_GEMM_SHARED_FLOATS)

/* C [M, N] (row stride ldc) = A [M, K] (lda) . B (+ bias [N] when mode is SET and bias is not
 * NULL). B's leading dimension ldb is W's row stride (WT layouts) or B's row stride (KN).
 * `pack` holds DQ_GEMM_PACK_FLOATS floats, 32-byte aligned. Uses AVX2+FMA when the CPU has them
 * (dq_cpu_has_avx2), else portable loops with the same blocking (row-invariant too, rounded
 * without fused multiply-adds). */
void dq_gemm(int M, int N, int K, const float *A, size_t lda, const void *B, size_t ldb,
             DqGemmB layout, const float *bias, DqGemmMode mode, float *C, size_t ldc, float *pack);

/* A linear layer y [M, N] = x [M, K] . W^T (+ bias), W [N, K] in a WT layout, on `threads`
 * threads, thread t packing into packs + t * DQ_GEMM_PACK_FLOATS (packs holds
 * DQ_GEMM_LINEAR_PACK_FLOATS(threads) floats). Large M: chunks of rows, each
 * packing the weight for itself (a weight pass per chunk is a few per mille of the arithmetic);
 * small M: chunks of output features, so that every thread has work. The summation order of an
 * element never depends on the split, so neither does the result. */
void dq_gemm_linear(int M, int N, int K, const float *x, const void *W, DqGemmB layout,
                    const float *bias, float *y, int threads, float *packs);

/* The two halves of dq_gemm (float32 arithmetic: not DQ_GEMM_B_WT_BF16_DOT), for callers that reuse
 * one packed block of B for many products (attention packs a block of keys once for all its query
 * rows). Packs B's block [k0, k0 + kc) x [n0, n0 + nc) (kc <= DQ_GEMM_KC, nc <= DQ_GEMM_NC) of a B
 * with N columns. */
void dq_gemm_pack_b(float *pack, const void *B, size_t ldb, DqGemmB layout, int N, int n0, int nc,
                    int k0, int kc);
/* C [M, nc] (=|+=) A [M, kc] . packed block. set: C = (bias or 0) + product; else C += product.
 * bias, when given, is the block's own [nc]. */
void dq_gemm_packed(int M, int nc, int kc, const float *A, size_t lda, const float *pack,
                    gboolean set, const float *bias, float *C, size_t ldc);

/* Tests: the AVX2 kernel alone even where the CPU has AVX-512F (whose kernel gives the same
 * bits); returns the previous setting. */
gboolean dq_gemm_force_avx2(gboolean on);

/* The micro-kernels' edge tiles: C [mr, nr] (=|+=) acc (rows acc_stride apart); `set`: C = bias
 * (or 0) + acc, else C += acc. */
void dq_gemm_store_tile(const float *acc, int acc_stride, float *c, size_t ldc, int mr, int nr,
                        gboolean set, const float *bias);

/* ---- DQ_GEMM_B_WT_BF16_DOT (cpu_gemm_bf16.c)
 *
 * Every C element is, for each block of DQ_GEMM_BF16_KP pairs of k in order, an accumulator
 * from 0.0 that takes, pair by pair, the product of the odd k and then of the even k (each a
 * float32 fused multiply-add of exact bf16 x bf16 products); the blocks are added to the
 * initial value in order. On AMX tiles instead, one accumulator from 0.0 (DQ_GEMM_SET) or C
 * (DQ_GEMM_ADD) takes the tile's pair products in k order, and a SET's bias is added last (added
 * first, a large bias swallowed the low bits of every product: the fixtures' logits moved
 * 0.99982 -> 0.99976 in cosine). A is rounded to bf16 as vcvtne2ps2bf16 rounds (nearest even;
 * denormals read as zeros, as the instructions read both operands); the order, hence the result,
 * does not depend on M, the rows' offset or the split of N (row invariance as above). A K that
 * is odd ends with a pair whose odd half is 0. */
#define DQ_GEMM_BF16_KP 128

/* dq_cpu_has_avx512f, and AVX512-BF16 too, not switched off with DOCQA_CPU_NO_AVX512BF16. */
gboolean dq_cpu_has_avx512bf16(void);

/* dq_cpu_has_avx512bf16, AMX-BF16 tiles too, the kernel lets this process use them, and not
 * switched off with DOCQA_CPU_NO_AMX. */
gboolean dq_cpu_has_amx_bf16(void);

/* DQ_GEMM_B_WT_BF16_DOT runs on AMX's tdpbf16ps where dq_cpu_has_amx_bf16, on vdpbf16ps where
 * dq_cpu_has_avx512bf16, else on a portable emulation of the instruction (slow: for tests and
 * accuracy measurements on other CPUs). Tests force the emulation, or vdpbf16ps on an AMX CPU,
 * with these (each returns its previous setting). */
gboolean dq_gemm_bf16_force_portable(gboolean on);
gboolean dq_gemm_bf16_force_dpbf16(gboolean on);

/* dq_gemm_linear for DQ_GEMM_B_WT_BF16_DOT, all threads on one product (W packed once, in the
 * shared part of packs): on AMX, else on vdpbf16ps or its emulation where M has a block of 144
 * rows for every thread; FALSE, nothing done, otherwise (dq_gemm_linear then splits the
 * features). With x3, the
 * product of DQ_GEMM_B_WT_BF16 instead (bf16 weights, float32 activations): each activation
 * split into three bf16 whose sum it is exactly, so that every product is exact and the sum has
 * float32's accuracy, in tdpbf16ps's order (not dq_gemm's: results differ from it in the last
 * bits, not in accuracy); FALSE where AMX does not run, DOCQA_AMX_X3=0 is set, or
 * dq_gemm_bf16_x3(FALSE) said so. */
gboolean dq_gemm_bf16_linear(int M, int N, int K, const float *x, const uint16_t *W, gboolean x3,
                             const float *bias, float *y, int threads, float *packs);
/* dq_gemm_linear for DQ_GEMM_B_WT_F32 on AMX (x6): float32 weights split into three bf16 as
 * the activations are, while packed, and the six products of the parts that reach float32's
 * last bits (hi.hi, hi.mid, mid.hi, mid.mid, hi.lo, lo.hi; the others are below 2^-24 of
 * |a w|): float32's accuracy (test_gemm /gemm_bf16/x6: closer to float64 than the FMA kernel),
 * 1.3x its speed. FALSE where the x3 product does not run, or DOCQA_AMX_X6=0. */
gboolean dq_gemm_f32_linear(int M, int N, int K, const float *x, const float *W, const float *bias,
                            float *y, int threads, float *packs);
/* dq_gemm_linear for DQ_GEMM_B_WT_Q8 on AMX: the x3 product with W's int8 blocks dequantized
 * to bf16 while packed (q * scale rounded to nearest even); FALSE, nothing done, where the x3
 * product does not run or K is not a multiple of DQ_Q8_BLOCK. */
gboolean dq_gemm_q8_linear(int M, int N, int K, const float *x, const DqGemmQ8 *W,
                           const float *bias, float *y, int threads, float *packs);
/* Tests: FALSE turns the x3 product off (DQ_GEMM_B_WT_BF16 then runs on float32 FMAs); returns
 * the previous setting. */
gboolean dq_gemm_bf16_x3(gboolean on);

/* dq_gemm for DQ_GEMM_B_WT_BF16_DOT (dq_gemm calls it); W [N, K] bf16 with row stride ldw. */
void dq_gemm_bf16(int M, int N, int K, const float *A, size_t lda, const uint16_t *W, size_t ldw,
                  const float *bias, DqGemmMode mode, float *C, size_t ldc, void *pack);

/* ---- attention's two products on vdpbf16ps (backend_cpu_fast.c: `--weights bf16` where the CPU
 * has AVX512-BF16 but no AMX), or on the instruction's emulation (dq_gemm_bf16_force_portable, or
 * a CPU without it): DQ_GEMM_B_WT_BF16_DOT's kernel, with its sums. */
/* TRUE where dq_dpbf16_tile runs the instruction (not forced to the emulation). */
gboolean dq_dpbf16_native(void);
/* dst [0, n) = src rounded to bf16 as dq_amx_round_row rounds (vcvtne2ps2bf16: nearest even,
 * denormals to zero), dst [n, width) = 0; scalar where the instruction is emulated. */
void dq_dpbf16_round_row(uint16_t *dst, const float *src, int n, int width);
/* C [mr <= 12, nr <= 32] (set: =, else +=) A . B over kp pairs: A 12 rows of pairs (a 32-bit
 * word a pair, the even element low), lda words apart, all 12 readable; B a panel [kp][32] of
 * pairs. Each element: an accumulator from 0.0 takes each pair's odd product, then its even
 * one, as float32 fused multiply-adds (vdpbf16ps), pairs in order; then C = sum or C + sum. */
void dq_dpbf16_tile(int kp, const uint32_t *a, size_t lda, int mr, const uint32_t *bp, float *c,
                    size_t ldc, int nr, gboolean set);

/* ---- AMX tiles for attention's products (cpu_gemm_bf16.c; only where dq_cpu_has_amx_bf16).
 * Operands are bf16 (rounded to nearest even, denormals to zero, as dq_gemm_bf16 rounds A),
 * products summed in float32 by tdpbf16ps. A thread brackets its tile work with begin / end
 * (the tile configuration is per thread). */
void dq_amx_begin(void);
void dq_amx_end(void);
/* dst [0, n) = src rounded to bf16, dst [n, width) = 0. No tiles: it runs wherever
 * dq_cpu_has_avx512bf16 (and AVX512-BW), with the vcvtne2ps2bf16 that rounds A for vdpbf16ps. */
void dq_amx_round_row(uint16_t *dst, const float *src, int n, int width);
/* A B panel from 32 rows of bf16 (ld apart), each `pairs` pairs long: dst [pair][32] of 32-bit
 * words, word (p, j) = row j's elements 2p (low half) and 2p + 1. */
void dq_amx_pack_pairs(uint32_t *dst, const uint16_t *rows, size_t ld, int pairs);
/* One pair row of a B panel from two float32 rows of n <= 32 columns: word j = bf16(r0[j]) |
 * bf16(r1[j]) << 16; r1 NULL reads zeros; columns past n zero. */
void dq_amx_pack_interleave(uint32_t *dst, const float *r0, const float *r1, int n);
/* C [32, 32] (+)= A [32, 2 kp] . B panel [kp][32]: A bf16 rows lda apart, kp a multiple of 16;
 * C rows ldc floats apart, read first when `accumulate`, else overwritten. */
void dq_amx_32x32(const uint16_t *a, size_t lda, const uint32_t *bp, int kp, float *c, size_t ldc,
                  gboolean accumulate);

/* The same for exact float32 attention on tiles (the x6 product: each float32 operand in three
 * bf16 planes, lo, mid and hi, `plane` elements apart; six products reach float32's last bits).
 * TRUE where the CPU has AMX and the split products are on (DOCQA_AMX_X3, DOCQA_AMX_X6). */
gboolean dq_amx_x6_on(void);
/* How a prompt's attention multiplies (backend_cpu_fast.c), from the call's bf16_products
 * (`--weights bf16`), the backend's bf16_dot (where the CPU has AVX512-BF16, unless
 * DOCQA_BF16_DOT=0; or DOCQA_BF16_DOT=emulate), whether the head fits the tile paths
 * (head_dim <= 128), dq_cpu_has_amx_bf16 and dq_amx_x6_on: bf16 operands on tiles or on
 * vdpbf16ps only where bf16 products are asked for and bf16_dot allows them; else the exact
 * split products on tiles (x6) where on, or float32 FMAs. */
typedef enum { DQ_ATTN_F32, DQ_ATTN_X6, DQ_ATTN_AMX_BF16, DQ_ATTN_DOT_BF16 } DqAttnProducts;
DqAttnProducts dq_attn_products(gboolean bf16_products, gboolean bf16_dot, gboolean fits,
                                gboolean amx, gboolean x6);
/* dq_amx_round_row into three planes (dst, dst + plane, dst + 2 plane). */
void dq_amx_split_row(uint16_t *dst, size_t plane, const float *src, int n, int width);
/* dq_amx_pack_interleave into three planes (words `plane` apart). */
void dq_amx_split_interleave(uint32_t *dst, size_t plane, const float *r0, const float *r1, int n);
/* C [16, 32] (+)= A [16, 2 kp] . B [kp][32] on split planes: A's a_plane apart (rows lda apart),
 * B's panels w_plane words apart; kp a multiple of 16. */
/* C [32, 32] = the same products over a short k (kp <= 64), all six into one accumulator. */
void dq_amx_32x32_x6(const uint16_t *a, size_t lda, size_t a_plane, const uint32_t *bp,
                     size_t w_plane, int kp, float *c, size_t ldc);
void dq_amx_16x32_x6(const uint16_t *a, size_t lda, size_t a_plane, const uint32_t *bp,
                     size_t w_plane, int kp, float *c, size_t ldc, gboolean accumulate);

/* The decode GEMVs' division of work: the products of one or more weights (q, k and v), each
 * weight's output features in blocks of its own size, the blocks in order, every thread a
 * contiguous run of them holding about as many features as the others: the threads stream
 * neighbouring weights, and k and v's small blocks do not leave one thread half idle. Which
 * thread takes a block never changes its results. */
#define DQ_GEMV_SPLIT_MAX 8
typedef struct {
    int count, blocks;
    int rows[DQ_GEMV_SPLIT_MAX], bs[DQ_GEMV_SPLIT_MAX];
    int first[DQ_GEMV_SPLIT_MAX + 1]; /* weight i's first block */
    long total;                       /* features in all */
} DqGemvSplit;

static inline DqGemvSplit dq_gemv_split(const int *rows, const int *bs, int count) {
    DqGemvSplit s = {.count = count};
    g_assert(count >= 1 && count <= DQ_GEMV_SPLIT_MAX);
    /* cppcheck takes the callers' arrays for unset: they fill exactly rows[0..count). */
    for (int i = 0; i < count; i++) {
        // cppcheck-suppress uninitvar
        s.rows[i] = rows[i];
        // cppcheck-suppress uninitvar
        s.bs[i] = bs[i];
        s.first[i + 1] = s.first[i] + (rows[i] + bs[i] - 1) / bs[i];
        s.total += rows[i];
    }
    s.blocks = s.first[count];
    return s;
}

/* In a parallel region, blocks taken in order: TRUE when block blk is the calling thread's, with
 * *i its weight (advanced from the previous call's) and *o0 its first feature. */
static inline gboolean dq_gemv_split_mine(const DqGemvSplit *s, int blk, int *i, int *o0) {
    while (blk >= s->first[*i + 1])
        (*i)++;
    *o0 = (blk - s->first[*i]) * s->bs[*i];
    long at = *o0; /* the block's first feature among all the weights' */
    for (int j = 0; j < *i; j++)
        at += s->rows[j];
    return at * omp_get_num_threads() / s->total == omp_get_thread_num();
}

#endif
