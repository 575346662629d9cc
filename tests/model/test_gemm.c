/* The fast CPU backend's GEMM kernels (cpu_gemm.c, cpu_gemm_bf16.c).
 *
 * - Where the CPU has AVX-512F: its kernel against the AVX2 kernel, bit for bit (both take every
 *   element's fused multiply-adds in the same order), for every B layout, SET with and without
 *   bias and ADD, shapes with full 12 x 32 tiles and every kind of edge; the same for the
 *   kernels that read A in place (dq_gemm_packed with few columns). Elsewhere skipped, saying
 *   why.
 * - The float32 product against float64 on whichever kernels run (test_gemm_avx2 and
 *   test_gemm_portable: the AVX2 and the portable ones), shapes ending on every tile and block
 *   edge, A's padding NaN and C's columns past N untouched.
 *
 * The bf16 x bf16 product of `--weights bf16` (DQ_GEMM_B_WT_BF16_DOT):
 * - dq_f32_bf16 against an oracle that picks the nearer of the two neighbouring bf16 values in
 *   double precision (ties to the even one): random floats of every exponent, ties, NaN, inf,
 *   overflow, denormals.
 * - dq_gemm on the portable emulation, bit for bit against a scalar oracle that follows
 *   cpu_gemm.h's summation order (pairs of k, the odd one first, blocks of DQ_GEMM_BF16_KP
 *   pairs added to the initial value in order). The shapes cross every blocking edge: odd K,
 *   several k blocks, more rows than a packed block of A (144), more columns than a packed block
 *   of B, row and column tails, strides, SET with and without bias, ADD.
 * - The oracle itself against float64: the error of the float32 sums stays within K * 2^-23 of
 *   sum |a b|, and the product differs from the float32 product (A not rounded) by at most
 *   2^-8 of sum |a b| (A rounded to bf16): it is the product the option promises.
 * - Inputs below the smallest normal are read as zero, by every kernel the CPU has (their packs
 *   with it: the vector packs of vdpbf16ps, the scalar ones of the emulation).
 * - Row invariance, bit for bit: every row alone, and dq_gemm_linear on 2 threads (W packed
 *   once for both, or chunks of features for few rows), give the rows of the whole product; for
 *   the emulation
 *   and for each instruction the CPU has.
 * - Where the CPU has AVX512-BF16, vdpbf16ps, and where it has AMX-BF16, tdpbf16ps (its own
 *   blocking: chunks of B, 32-row blocks of A, a K too long for it left to vdpbf16ps) against
 *   the emulation, within 2^-20 of sum |a b| (vendors round the pair's sum differently; a NaN
 *   fails: reading A's or W's padding past K would give one);
 *   elsewhere those cases are skipped, saying why. */
#include "cpu_gemm.h"
#include "cpu_simd.h"
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Pack buffers as dq_gemm wants them, 32-byte aligned (the packing's aligned stores fault on
 * g_malloc's 16-byte alignment, which glibc gives large blocks). */
static float *pack_new(int packs) {
    return g_aligned_alloc(DQ_GEMM_LINEAR_PACK_FLOATS(packs), sizeof(float), 64);
}

static GRand *rng;

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The bf16 nearest to f, ties to an even mantissa, decided in double precision. */
static uint16_t oracle_bf16(float f) {
    if (isnan(f))
        return 0; /* not compared by value */
    uint32_t u = f_bits(f);
    uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
    if ((u & 0xffff) == 0)
        return lo;
    double dl = fabs((double)f - (double)dq_bf16f(lo));
    double dh = isinf(dq_bf16f(hi)) ? INFINITY : fabs((double)dq_bf16f(hi) - (double)f);
    if ((lo & 0x7f80) == 0x7f00 && (lo & 0x7f) == 0x7f) /* the largest finite: rounds to inf */
        dh = fabs(ldexp(1.0, 128) - fabs((double)f));
    if (dl < dh || (dl == dh && (lo & 1) == 0))
        return lo;
    return hi;
}

static void test_round(void) {
    int checked = 0;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = g_rand_int(rng);
        if (i < 65536) /* every tie and near-tie pattern of the low half once */
            u = (u & 0xffff0000u) | (uint32_t)i;
        float f = bits_f(u);
        if (isnan(f))
            continue;
        uint16_t got = dq_f32_bf16(f), want = oracle_bf16(f);
        if (got != want)
            g_error("dq_f32_bf16(%a = 0x%08x) = 0x%04x, nearest-even is 0x%04x", f, u, got, want);
        checked++;
    }
    g_assert_cmpint(checked, >, 190000);
    /* the edges by name */
    g_assert_cmphex(dq_f32_bf16(1.0f), ==, 0x3f80);
    g_assert_cmphex(dq_f32_bf16(bits_f(0x3f808000u)), ==, 0x3f80); /* tie, even stays */
    g_assert_cmphex(dq_f32_bf16(bits_f(0x3f818000u)), ==, 0x3f82); /* tie, odd goes up */
    g_assert_cmphex(dq_f32_bf16(bits_f(0x3f808001u)), ==, 0x3f81);
    g_assert_cmphex(dq_f32_bf16(INFINITY), ==, 0x7f80);
    g_assert_cmphex(dq_f32_bf16(-INFINITY), ==, 0xff80);
    g_assert_cmphex(dq_f32_bf16(FLT_MAX), ==, 0x7f80); /* past the largest bf16: inf */
    g_assert_cmphex(dq_f32_bf16(-0.0f), ==, 0x8000);
    g_assert_true(isnan(dq_bf16f(dq_f32_bf16(NAN))));
    g_assert_true(
        isnan(dq_bf16f(dq_f32_bf16(bits_f(0x7f800001u))))); /* a NaN never rounds to inf */
}

/* dq_amx_round_row (vcvtne2ps2bf16, as the AMX and the vdpbf16ps products round A) against the
 * rounding cpu_gemm.h gives A: nearest even, float32 denormals to zeros of their sign (the band
 * just below the smallest normal too, which nearest-even alone would round up to it), NaNs
 * quieted; zeros from n to width. */
static void test_amx_round(void) {
    __builtin_cpu_init();
    if (!dq_cpu_has_avx512bf16() || !__builtin_cpu_supports("avx512bw")) {
        g_test_skip("this CPU has no AVX512-BF16 and BW (or DOCQA_CPU_NO_AVX512BF16 is set): "
                    "dq_amx_round_row does not run here");
        return;
    }
    enum { N = 4099 };
    float *src = g_new(float, N);
    uint16_t *dst = g_new(uint16_t, N + 64);
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < N; i++) {
            uint32_t u = g_rand_int(rng);
            if (i % 4 == 1) /* denormals, the band below the smallest normal among them */
                u = (u & 0x80000000u) | (0x007f0000u + (u & 0xffffu)) * (uint32_t)(i % 8 == 1);
            if (i % 64 == 3)
                u = (u & 0x80000000u) | 0x7f800000u | (u & 0x7fffffu); /* NaN or inf */
            src[i] = bits_f(u);
        }
        int n = N - round * 37, width = n + round % 40;
        memset(dst, 0xab, (N + 64) * sizeof *dst);
        dq_amx_round_row(dst, src, n, width);
        for (int i = 0; i < width; i++) {
            uint32_t u;
            memcpy(&u, &src[i], sizeof u);
            uint16_t want = i >= n                            ? 0
                            : (u & 0x7f800000u) == 0          ? (uint16_t)((u >> 16) & 0x8000u)
                            : (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40)
                                                              : oracle_bf16(src[i]);
            if (dst[i] != want)
                g_error("dq_amx_round_row: element %d of %d (0x%08x) = 0x%04x, want 0x%04x", i, n,
                        u, dst[i], want);
        }
        g_assert_cmphex(dst[width], ==, 0xabab); /* nothing past width */
    }
    g_free(src);
    g_free(dst);
}

/* ---- the product */

typedef struct {
    int M, N, K;
    size_t lda, ldw, ldc;
    float *A, *C0, *bias;
    uint16_t *W;
} Case;

static float rnd(double amp) {
    return (float)g_rand_double_range(rng, -amp, amp);
}

static Case make_case(int M, int N, int K, int pad) {
    Case c = {.M = M,
              .N = N,
              .K = K,
              .lda = (size_t)K + pad,
              .ldw = (size_t)K + 2 * pad,
              .ldc = (size_t)N + pad};
    c.A = g_new(float, (size_t)M *c.lda);
    c.W = g_new(uint16_t, (size_t)N * c.ldw);
    c.C0 = g_new(float, (size_t)M *c.ldc);
    c.bias = g_new(float, N);
    /* the padding past K is NaN: a product that read it would be NaN */
    for (size_t i = 0; i < (size_t)M * c.lda; i++)
        c.A[i] = i % c.lda < (size_t)K ? rnd(2.0) : NAN;
    for (size_t i = 0; i < (size_t)N * c.ldw; i++)
        c.W[i] = i % c.ldw < (size_t)K ? dq_f32_bf16(rnd(0.5)) : 0x7fc0;
    for (size_t i = 0; i < (size_t)M * c.ldc; i++)
        c.C0[i] = rnd(1.0);
    for (int j = 0; j < N; j++)
        c.bias[j] = rnd(1.0);
    return c;
}

static void free_case(Case *c) {
    g_free(c->A);
    g_free(c->W);
    g_free(c->C0);
    g_free(c->bias);
}

static float daz_f(uint16_t h) {
    return (h & 0x7f80) == 0 ? 0.0f * dq_bf16f(h) : dq_bf16f(h);
}

/* C[i][j] by the contract's order. Also its float64 value (`exact`, of the same bf16 inputs),
 * sum |a b| (`mag`) and the float32 product with A unrounded (`f32`), where asked. */
static float oracle(const Case *c, int i, int j, gboolean set, const float *bias, double *exact,
                    double *mag, double *f32) {
    const float *a = c->A + (size_t)i * c->lda;
    const uint16_t *w = c->W + (size_t)j * c->ldw;
    float out = set ? (bias != NULL ? bias[j] : 0.0f) : c->C0[(size_t)i * c->ldc + j];
    double e = out, m = fabs(out), e32 = out;
    int pairs = (c->K + 1) / 2;
    for (int p0 = 0; p0 < pairs; p0 += DQ_GEMM_BF16_KP) {
        float acc = 0.0f;
        for (int p = p0; p < MIN(pairs, p0 + DQ_GEMM_BF16_KP); p++)
            for (int h = 1; h >= 0; h--) { /* odd, then even */
                int k = 2 * p + h;
                float x = k < c->K ? daz_f(dq_f32_bf16(a[k])) : 0.0f;
                float y = k < c->K ? daz_f(w[k]) : 0.0f;
                acc = fmaf(x, y, acc);
                e += (double)x * y;
                m += fabs((double)x * y);
                if (k < c->K)
                    e32 += (double)a[k] * y;
            }
        out += acc;
    }
    if (exact != NULL) {
        *exact = e;
        *mag = m;
        *f32 = e32;
    }
    return out;
}

static void check_against_oracle(const Case *c, DqGemmMode mode, gboolean with_bias,
                                 const char *what) {
    float *C = g_new(float, (size_t)c->M * c->ldc);
    memcpy(C, c->C0, sizeof(float) * (size_t)c->M * c->ldc);
    const float *bias = with_bias ? c->bias : NULL;
    float *pack = pack_new(1);
    dq_gemm(c->M, c->N, c->K, c->A, c->lda, c->W, c->ldw, DQ_GEMM_B_WT_BF16_DOT, bias, mode, C,
            c->ldc, pack);
    g_aligned_free(pack);
    double worst_sum = 0, worst_rounding = 0;
    for (int i = 0; i < c->M; i++)
        for (int j = 0; j < c->N; j++) {
            double exact, mag, f32;
            float want = oracle(c, i, j, mode == DQ_GEMM_SET, bias, &exact, &mag, &f32);
            float got = C[(size_t)i * c->ldc + j];
            if (f_bits(got) != f_bits(want))
                g_error("%s %dx%dx%d: C[%d][%d] = %.9g, the contract's order gives %.9g", what,
                        c->M, c->N, c->K, i, j, got, want);
            worst_sum = MAX(worst_sum, fabs(want - exact) / (mag * c->K * 0x1p-23));
            worst_rounding = MAX(worst_rounding, fabs(want - f32) / (mag * 0x1p-8));
        }
    /* padding columns of C untouched */
    for (int i = 0; i < c->M; i++)
        for (size_t j = c->N; j < c->ldc; j++)
            g_assert_cmpfloat(C[i * c->ldc + j], ==, c->C0[i * c->ldc + j]);
    g_assert_cmpfloat(worst_sum, <=, 1.0);
    g_assert_cmpfloat(worst_rounding, <=, 1.0);
    g_free(C);
}

typedef enum { KERNEL_EMULATION, KERNEL_DPBF16, KERNEL_AMX } Bf16Kernel;
static const char *const kernel_name[] = {"the emulation", "vdpbf16ps", "AMX tdpbf16ps"};

static gboolean kernel_runs_here(Bf16Kernel k) {
    return k == KERNEL_EMULATION || (k == KERNEL_DPBF16 && dq_cpu_has_avx512bf16()) ||
           (k == KERNEL_AMX && dq_cpu_has_amx_bf16());
}

static void use_kernel(Bf16Kernel k) {
    dq_gemm_bf16_force_portable(k == KERNEL_EMULATION);
    dq_gemm_bf16_force_dpbf16(k == KERNEL_DPBF16);
}

static void test_product(void) {
    gboolean was = dq_gemm_bf16_force_portable(TRUE);
    const int shapes[][4] = {
        /* M, N, K, pad */
        {1, 1, 1, 0},      {5, 7, 3, 1},      {12, 32, 256, 0},  {13, 33, 257, 3},
        {150, 70, 600, 2}, {145, 4000, 5, 0}, {30, 96, 1031, 1}, {2, 3, 2048, 0},
    };
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        Case c = make_case(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3]);
        check_against_oracle(&c, DQ_GEMM_SET, TRUE, "SET+bias");
        check_against_oracle(&c, DQ_GEMM_SET, FALSE, "SET");
        check_against_oracle(&c, DQ_GEMM_ADD, FALSE, "ADD");
        free_case(&c);
    }
    dq_gemm_bf16_force_portable(was);
}

/* Denormal inputs (A's after rounding, W's as stored) count as zeros: each multiplied by a large
 * value, alone in its row, so that it would show; for every kernel the CPU has (their packs
 * flush them, the instructions too). */
static void check_denormals(void) {
    enum { M = 4, N = 4, K = 5 };
    float A[M * K] = {0}, C[M * N];
    uint16_t W[N * K] = {0};
    A[0 * K + 1] = 1e-39f;              /* a denormal float32 */
    A[1 * K + 3] = -3e-40f;             /* a denormal bf16 after rounding */
    A[3 * K + 3] = bits_f(0x007fffffu); /* the largest denormal: nearest even makes it normal */
    A[2 * K + 0] = 1e30f;               /* huge, against denormal weights */
    A[2 * K + 4] = 1e30f;
    for (int j = 0; j < N; j++) {
        W[j * K + 1] = W[j * K + 3] = dq_f32_bf16(1e30f);
        W[j * K + 0] = 0x0001; /* the smallest denormal bf16 */
        W[j * K + 4] = 0x807f; /* the largest negative one */
    }
    float *pack = pack_new(1);
    dq_gemm(M, N, K, A, K, W, K, DQ_GEMM_B_WT_BF16_DOT, NULL, DQ_GEMM_SET, C, N, pack);
    for (int i = 0; i < M * N; i++)
        g_assert_cmpfloat(C[i], ==, 0.0f);
    /* the same values one step above the denormals do count */
    A[0 * K + 1] = 2e-38f;
    W[0 * K + 0] = 0x0080; /* the smallest normal */
    dq_gemm(M, N, K, A, K, W, K, DQ_GEMM_B_WT_BF16_DOT, NULL, DQ_GEMM_SET, C, N, pack);
    g_assert_cmpfloat(fabsf(C[0]), >, 1e-9f);
    g_assert_cmpfloat(fabsf(C[2 * N]), >, 1e-9f);
    g_aligned_free(pack);
}

static void test_denormals(void) {
    for (Bf16Kernel k = KERNEL_EMULATION; k <= KERNEL_AMX; k++) {
        if (!kernel_runs_here(k)) {
            printf("# denormals of %s not checked: this CPU does not have it\n", kernel_name[k]);
            continue;
        }
        use_kernel(k);
        check_denormals();
    }
    use_kernel(KERNEL_EMULATION);
}

static void run_linear(const Case *c, float *y, int threads) {
    float *packs = pack_new(threads);
    dq_gemm_linear(c->M, c->N, c->K, c->A, c->W, DQ_GEMM_B_WT_BF16_DOT, c->bias, y, threads, packs);
    g_aligned_free(packs);
}

static void test_row_invariance(void) {
    /* The last: off AMX, dq_gemm_linear packs W once for both threads into the shared pack
     * (5440 columns of three blocks of k): 5470 columns take two packs, the second a partial
     * panel; 385 pairs of k three blocks and then one pair; 290 rows, blocks of 144, 144 and 2. */
    const int shapes[][3] = {{300, 80, 200}, {20, 300, 130}, {70, 40, 700}, {290, 5470, 770}};
    for (Bf16Kernel k = KERNEL_EMULATION; k <= KERNEL_AMX; k++) {
        if (!kernel_runs_here(k)) {
            printf("# row invariance of %s not checked: this CPU does not have it\n",
                   kernel_name[k]);
            continue;
        }
        use_kernel(k);
        for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
            Case c = make_case(shapes[s][0], shapes[s][1], shapes[s][2], 0);
            size_t n = (size_t)c.M * c.N;
            float *whole = g_new(float, n), *split = g_new(float, n), *alone = g_new(float, n);
            float *pack = pack_new(1);
            dq_gemm(c.M, c.N, c.K, c.A, c.K, c.W, c.K, DQ_GEMM_B_WT_BF16_DOT, c.bias, DQ_GEMM_SET,
                    whole, c.N, pack);
            gboolean rows = c.N < 1000; /* the last shape's rows alone: minutes under ASan */
            for (int i = 0; rows && i < c.M; i++)
                dq_gemm(1, c.N, c.K, c.A + (size_t)i * c.K, c.K, c.W, c.K, DQ_GEMM_B_WT_BF16_DOT,
                        c.bias, DQ_GEMM_SET, alone + (size_t)i * c.N, c.N, pack);
            run_linear(&c, split, 2);
            if (rows)
                g_assert_cmpmem(alone, n * sizeof(float), whole, n * sizeof(float));
            g_assert_cmpmem(split, n * sizeof(float), whole, n * sizeof(float));
            g_free(whole);
            g_free(split);
            g_free(alone);
            g_aligned_free(pack);
            free_case(&c);
        }
    }
    use_kernel(KERNEL_EMULATION);
}

/* The worst error of got [M][N] against A W^T + bias in float64, in units of float32
 * accumulation's bound (K 2^-24 sum |a w|, K at least 2); W [N][K] as floats. */
static double error_vs_f64(const float *got, const float *A, const float *W, const float *bias,
                           int M, int N, int K) {
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double exact = bias[j], mag = fabs(bias[j]);
            for (int k = 0; k < K; k++) {
                // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult)
                double t = (double)A[(size_t)i * K + k] * W[(size_t)j * K + k];
                exact += t;
                mag += fabs(t);
            }
            double bound = mag * MAX(K, 2) * 0x1p-24;
            worst = MAX(worst, fabs(got[(size_t)i * N + j] - exact) / bound);
        }
    return worst;
}

/* DQ_GEMM_B_WT_BF16 on AMX (dq_gemm_bf16_linear's x3): float32 activations split into three
 * bf16 each. Against float64: within float32 accumulation's bound (K x 2^-24 of sum |a w|), no
 * further than the float32 FMA kernel it replaces (dropping the lo part fails that), and over
 * 100 times closer than rounding A to bf16 once (DQ_GEMM_B_WT_BF16_DOT); rows alone or on 2
 * threads give the whole product's bits. */
static void test_x3(void) {
    if (!dq_cpu_has_amx_bf16()) {
        g_test_skip("this CPU has no AMX-BF16 (or DOCQA_CPU_NO_AMX is set): DQ_GEMM_B_WT_BF16 "
                    "runs on float32 FMAs here (test_backend_fast checks them)");
        return;
    }
    use_kernel(KERNEL_AMX);
    /* one block of k, three (4500 = 3 x 1500), and W in several chunks of the shared pack */
    const int shapes[][3] = {{300, 80, 200}, {70, 40, 700},   {33, 65, 1031},
                             {1, 1, 1},      {70, 300, 4500}, {3, 2900, 4500}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        Case c = make_case(shapes[s][0], shapes[s][1], shapes[s][2], 0);
        size_t n = (size_t)c.M * c.N;
        float *x3 = g_new(float, n), *fma = g_new(float, n), *dot = g_new(float, n);
        float *alone = g_new(float, n), *two = g_new(float, n);
        float *packs = pack_new(2);
        dq_gemm_linear(c.M, c.N, c.K, c.A, c.W, DQ_GEMM_B_WT_BF16, c.bias, x3, 1, packs);
        dq_gemm_linear(c.M, c.N, c.K, c.A, c.W, DQ_GEMM_B_WT_BF16, c.bias, two, 2, packs);
        for (int i = 0; i < c.M; i++)
            dq_gemm_linear(1, c.N, c.K, c.A + (size_t)i * c.K, c.W, DQ_GEMM_B_WT_BF16, c.bias,
                           alone + (size_t)i * c.N, 1, packs);
        dq_gemm_linear(c.M, c.N, c.K, c.A, c.W, DQ_GEMM_B_WT_BF16_DOT, c.bias, dot, 1, packs);
        gboolean was = dq_gemm_bf16_x3(FALSE);
        dq_gemm_linear(c.M, c.N, c.K, c.A, c.W, DQ_GEMM_B_WT_BF16, c.bias, fma, 1, packs);
        dq_gemm_bf16_x3(was);
        g_assert_cmpmem(alone, n * sizeof(float), x3, n * sizeof(float));
        g_assert_cmpmem(two, n * sizeof(float), x3, n * sizeof(float));
        float *wf = g_new(float, (size_t)c.N *c.K);
        for (size_t i = 0; i < (size_t)c.N * c.K; i++)
            wf[i] = daz_f(c.W[i]);
        double worst_x3 = error_vs_f64(x3, c.A, wf, c.bias, c.M, c.N, c.K);
        double worst_fma = error_vs_f64(fma, c.A, wf, c.bias, c.M, c.N, c.K);
        double worst_dot = error_vs_f64(dot, c.A, wf, c.bias, c.M, c.N, c.K);
        g_free(wf);
        printf("# x3 %dx%dx%d: worst error / (K 2^-24 sum |a w|): x3 %.3g, float32 FMA %.3g, A "
               "rounded once %.3g\n",
               c.M, c.N, c.K, worst_x3, worst_fma, worst_dot);
        g_assert_cmpfloat(worst_x3, <=, 1.0);
        g_assert_cmpfloat(worst_fma, <=, 1.0);
        g_assert_cmpfloat(worst_x3, <=, 2 * worst_fma); /* as close as the FMA kernel, or closer */
        if (c.K > 1)
            g_assert_cmpfloat(worst_x3 * 100, <, worst_dot);
        g_free(x3);
        g_free(fma);
        g_free(dot);
        g_free(alone);
        g_free(two);
        g_aligned_free(packs);
        free_case(&c);
    }
    use_kernel(KERNEL_EMULATION);
}

/* DQ_GEMM_B_WT_F32 on AMX (x6): float32 weights and activations each split into three bf16,
 * the six products of the parts that reach float32's last bits. Against float64: within float32
 * accumulation's bound, no further than the float32 FMA kernel; rows alone or on 2 threads give
 * the whole product's bits. */
static void test_x6(void) {
    if (!dq_cpu_has_amx_bf16()) {
        g_test_skip("this CPU has no AMX-BF16 (or DOCQA_CPU_NO_AMX is set): DQ_GEMM_B_WT_F32 "
                    "runs on float32 FMAs here");
        return;
    }
    const int shapes[][3] = {{300, 80, 200}, {70, 40, 700},   {33, 65, 1031},
                             {1, 1, 1},      {70, 300, 4500}, {3, 2900, 2100}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        Case c = make_case(shapes[s][0], shapes[s][1], shapes[s][2], 0);
        size_t n = (size_t)c.M * c.N;
        float *W = g_new(float, (size_t)c.N *c.K);
        for (size_t i = 0; i < (size_t)c.N * c.K; i++)
            W[i] = rnd(0.5);
        float *x6 = g_new(float, n), *fma = g_new(float, n), *alone = g_new(float, n),
              *two = g_new(float, n);
        float *packs = pack_new(2);
        dq_gemm_linear(c.M, c.N, c.K, c.A, W, DQ_GEMM_B_WT_F32, c.bias, x6, 1, packs);
        dq_gemm_linear(c.M, c.N, c.K, c.A, W, DQ_GEMM_B_WT_F32, c.bias, two, 2, packs);
        for (int i = 0; i < c.M; i++)
            dq_gemm_linear(1, c.N, c.K, c.A + (size_t)i * c.K, W, DQ_GEMM_B_WT_F32, c.bias,
                           alone + (size_t)i * c.N, 1, packs);
        gboolean was = dq_gemm_bf16_x3(FALSE);
        dq_gemm_linear(c.M, c.N, c.K, c.A, W, DQ_GEMM_B_WT_F32, c.bias, fma, 1, packs);
        dq_gemm_bf16_x3(was);
        g_assert_cmpmem(alone, n * sizeof(float), x6, n * sizeof(float));
        g_assert_cmpmem(two, n * sizeof(float), x6, n * sizeof(float));
        double worst_x6 = error_vs_f64(x6, c.A, W, c.bias, c.M, c.N, c.K);
        double worst_fma = error_vs_f64(fma, c.A, W, c.bias, c.M, c.N, c.K);
        printf("# x6 %dx%dx%d: worst error / (K 2^-24 sum |a w|): x6 %.3g, float32 FMA %.3g\n", c.M,
               c.N, c.K, worst_x6, worst_fma);
        g_assert_cmpfloat(worst_x6, <=, 1.0);
        g_assert_cmpfloat(worst_x6, <=, 2 * worst_fma);
        g_free(W);
        g_free(x6);
        g_free(fma);
        g_free(alone);
        g_free(two);
        g_aligned_free(packs);
        free_case(&c);
    }
}

/* One instruction's products against the emulation's. */
static void check_native(Bf16Kernel k) {
    /* full tiles; tails of everything; AMX: B in several chunks, K past its pack (vdpbf16ps) */
    const int shapes[][3] = {{12, 32, 256},  {13, 33, 257},    {150, 70, 600},
                             {145, 4000, 5}, {40, 2000, 1500}, {33, 40, 20000}};
    int identical = 0, total = 0;
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        Case c = make_case(shapes[s][0], shapes[s][1], shapes[s][2], 1);
        size_t n = (size_t)c.M * c.ldc;
        float *native = g_memdup2(c.C0, n * sizeof(float)),
              *emul = g_memdup2(c.C0, n * sizeof(float));
        float *pack = pack_new(1);
        DqGemmMode mode = s % 2 == 0 ? DQ_GEMM_SET : DQ_GEMM_ADD;
        for (int pass = 0; pass < 2; pass++) {
            use_kernel(pass == 0 ? k : KERNEL_EMULATION);
            dq_gemm(c.M, c.N, c.K, c.A, c.lda, c.W, c.ldw, DQ_GEMM_B_WT_BF16_DOT, c.bias, mode,
                    pass == 0 ? native : emul, c.ldc, pack);
        }
        for (int i = 0; i < c.M; i++)
            for (size_t j = 0; j < c.ldc; j++) {
                float a = native[(size_t)i * c.ldc + j], b = emul[(size_t)i * c.ldc + j];
                if (j >= (size_t)c.N) { /* padding columns untouched */
                    g_assert_cmpfloat(a, ==, c.C0[(size_t)i * c.ldc + j]);
                    continue;
                }
                double exact, mag, f32;
                oracle(&c, i, (int)j, mode == DQ_GEMM_SET, c.bias, &exact, &mag, &f32);
                if (!(fabs((double)a - b) <= mag * 0x1p-20)) /* a NaN fails too */
                    g_error("%s %dx%dx%d: C[%d][%zu] = %.9g, emulation %.9g", kernel_name[k], c.M,
                            c.N, c.K, i, j, a, b);
                identical += f_bits(a) == f_bits(b);
                total++;
            }
        g_free(native);
        g_free(emul);
        g_aligned_free(pack);
        free_case(&c);
    }
    use_kernel(KERNEL_EMULATION);
    printf("# %s: %d of %d elements bit-identical to the emulation\n", kernel_name[k], identical,
           total);
}

static void test_native(void) {
    if (!kernel_runs_here(KERNEL_DPBF16)) {
        g_test_skip("this CPU has no AVX512-BF16 (or DOCQA_CPU_NO_AVX512BF16 is set): neither "
                    "vdpbf16ps nor AMX run; the portable emulation was checked above");
        return;
    }
    check_native(KERNEL_DPBF16);
    if (kernel_runs_here(KERNEL_AMX))
        check_native(KERNEL_AMX);
    else
        printf("# AMX tdpbf16ps not checked: this CPU has no AMX-BF16, the kernel refused it, or "
               "DOCQA_CPU_NO_AMX is set\n");
}

/* ---- the float32 kernels: AVX-512F against AVX2 */

static void test_avx512(void) {
    if (!dq_cpu_has_avx512f()) {
        g_test_skip("this CPU has no AVX-512F (or DOCQA_CPU_NO_AVX512 is set): its kernel not run");
        return;
    }
    const int shapes[][3] = {{12, 32, 256},   {24, 64, 512}, {150, 80, 300}, {13, 33, 7},
                             {300, 2100, 40}, {7, 200, 260}, {145, 48, 256}};
    const DqGemmB layouts[] = {DQ_GEMM_B_WT_F32, DQ_GEMM_B_WT_BF16, DQ_GEMM_B_KN_F32};
    float *pack = pack_new(1);
    int compared = 0;
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = g_new(float, (size_t)M *K), *Bf = g_new(float, (size_t)N *K);
        uint16_t *Bh = g_new(uint16_t, (size_t)N * K);
        float *bias = g_new(float, N), *C0 = g_new(float, (size_t)M *N);
        float *c1 = g_new(float, (size_t)M *N), *c2 = g_new(float, (size_t)M *N);
        for (size_t i = 0; i < (size_t)M * K; i++)
            A[i] = rnd(1.0);
        for (size_t i = 0; i < (size_t)N * K; i++) {
            Bh[i] = dq_f32_bf16(rnd(1.0));
            Bf[i] = rnd(1.0);
        }
        for (int j = 0; j < N; j++)
            bias[j] = rnd(1.0);
        for (size_t i = 0; i < (size_t)M * N; i++)
            C0[i] = rnd(1.0);
        for (size_t l = 0; l < G_N_ELEMENTS(layouts); l++)
            for (int mode = 0; mode < 3; mode++) {
                const void *B = layouts[l] == DQ_GEMM_B_WT_BF16 ? (const void *)Bh : Bf;
                size_t ldb = layouts[l] == DQ_GEMM_B_KN_F32 ? (size_t)N : (size_t)K;
                DqGemmMode m = mode == 2 ? DQ_GEMM_ADD : DQ_GEMM_SET;
                const float *b = mode == 0 ? bias : NULL;
                for (int pass = 0; pass < 2; pass++) {
                    float *c = pass == 0 ? c1 : c2;
                    memcpy(c, C0, sizeof(float) * (size_t)M * N);
                    gboolean was = dq_gemm_force_avx2(pass == 1);
                    dq_gemm(M, N, K, A, K, B, ldb, layouts[l], b, m, c, N, pack);
                    dq_gemm_force_avx2(was);
                }
                for (size_t i = 0; i < (size_t)M * N; i++)
                    if (f_bits(c1[i]) != f_bits(c2[i]))
                        g_error("AVX-512 %dx%dx%d layout %d mode %d: C[%zu] = %.9g, AVX2 %.9g", M,
                                N, K, (int)layouts[l], mode, i, c1[i], c2[i]);
                compared++;
            }
        g_free(A);
        g_free(Bf);
        g_free(Bh);
        g_free(bias);
        g_free(C0);
        g_free(c1);
        g_free(c2);
    }
    g_aligned_free(pack);
    printf("# AVX-512F kernel: %d products bit-identical to the AVX2 kernel's\n", compared);
}

/* dq_gemm_packed on products of at most four panels (attention's P . V), whose A is read in
 * place: the AVX-512F rows kernel against the AVX2 one, bit for bit; odd panel counts, row
 * tails, SET with and without bias, ADD. */
static void test_avx512_rows(void) {
    if (!dq_cpu_has_avx512f()) {
        g_test_skip("this CPU has no AVX-512F (or DOCQA_CPU_NO_AVX512 is set): its kernel not run");
        return;
    }
    const int shapes[][3] = {{96, 64, 256}, {30, 48, 100}, {12, 32, 7}, {37, 64, 256}, {24, 20, 9}};
    float *pack = pack_new(1);
    int compared = 0;
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int M = shapes[s][0], nc = shapes[s][1], kc = shapes[s][2], lda = kc + 3;
        float *A = g_new(float, (size_t)M *lda), *B = g_new(float, (size_t)kc *nc);
        float *bias = g_new(float, nc), *C0 = g_new(float, (size_t)M *nc);
        float *c1 = g_new(float, (size_t)M *nc), *c2 = g_new(float, (size_t)M *nc);
        for (size_t i = 0; i < (size_t)M * lda; i++)
            A[i] = rnd(1.0);
        for (size_t i = 0; i < (size_t)kc * nc; i++)
            B[i] = rnd(1.0);
        for (int j = 0; j < nc; j++)
            bias[j] = rnd(1.0);
        for (size_t i = 0; i < (size_t)M * nc; i++)
            C0[i] = rnd(1.0);
        dq_gemm_pack_b(pack, B, nc, DQ_GEMM_B_KN_F32, nc, 0, nc, 0, kc);
        for (int mode = 0; mode < 3; mode++) {
            for (int pass = 0; pass < 2; pass++) {
                float *c = pass == 0 ? c1 : c2;
                memcpy(c, C0, sizeof(float) * (size_t)M * nc);
                gboolean was = dq_gemm_force_avx2(pass == 1);
                dq_gemm_packed(M, nc, kc, A, lda, pack, mode < 2, mode == 0 ? bias : NULL, c, nc);
                dq_gemm_force_avx2(was);
            }
            for (size_t i = 0; i < (size_t)M * nc; i++)
                if (f_bits(c1[i]) != f_bits(c2[i]))
                    g_error("AVX-512 rows %dx%dx%d mode %d: C[%zu] = %.9g, AVX2 %.9g", M, nc, kc,
                            mode, i, c1[i], c2[i]);
            compared++;
        }
        g_free(A);
        g_free(B);
        g_free(bias);
        g_free(C0);
        g_free(c1);
        g_free(c2);
    }
    g_aligned_free(pack);
    printf("# AVX-512F rows kernel: %d products bit-identical to the AVX2 kernel's\n", compared);
}

/* The float32 product against float64, on the kernels this CPU runs (and the AVX2 ones forced
 * where it has AVX-512F; test_gemm_portable runs it on the portable ones), every B layout, SET
 * with and without bias, ADD. The shapes end on every edge: one row, row tails past a 6- and a
 * 12-row tile and past a 144-row block of A, column tails past a 16- and a 32-column panel and
 * past a 1024-column block of B, K of 0, 1, odd, not a multiple of 8, past a 256 block; few
 * columns (N <= 64: A read in place) and many. A's columns past K are NaN (a read of one gives
 * NaN), C's past N must stay as they were: attention's P . V writes a head's columns beside
 * the other heads' (the AVX2 and AVX-512 kernels agreeing bit for bit does not see a tile that
 * both write too wide, or a sum both get wrong). */
static void test_f32_edges(void) {
    const int shapes[][3] = {{1, 1, 1},     {1, 17, 9},     {5, 16, 8},      {7, 33, 257},
                             {13, 20, 9},   {24, 20, 9},    {25, 64, 300},   {12, 48, 16},
                             {37, 80, 100}, {145, 65, 257}, {150, 1030, 24}, {3, 5, 0}};
    const DqGemmB layouts[] = {DQ_GEMM_B_WT_F32, DQ_GEMM_B_WT_BF16, DQ_GEMM_B_KN_F32};
    float *pack = pack_new(1);
    gboolean two = dq_cpu_has_avx512f();
    int products = 0;
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        size_t lda = (size_t)K + 3, ldc = (size_t)N + 13, ldw = (size_t)K + 5, ldn = (size_t)N + 7;
        float *A = g_new(float, (size_t)M *lda), *Bf = g_new(float, (size_t)N *ldw);
        float *Bkn = g_new(float, (size_t)K *ldn), *bias = g_new(float, N);
        float *C0 = g_new(float, (size_t)M *ldc), *C = g_new(float, (size_t)M *ldc);
        uint16_t *Bh = g_new(uint16_t, (size_t)N * ldw);
        double *exact = g_new(double, (size_t)M *N), *mag = g_new(double, (size_t)M *N);
        for (size_t i = 0; i < (size_t)M * lda; i++)
            A[i] = i % lda < (size_t)K ? rnd(2.0) : NAN;
        for (size_t i = 0; i < (size_t)N * ldw; i++) {
            Bh[i] = i % ldw < (size_t)K ? dq_f32_bf16(rnd(1.0)) : 0x7fc0;
            Bf[i] = i % ldw < (size_t)K ? rnd(1.0) : NAN;
        }
        for (size_t i = 0; i < (size_t)K * ldn; i++)
            Bkn[i] = i % ldn < (size_t)N ? rnd(1.0) : NAN;
        for (int j = 0; j < N; j++)
            bias[j] = rnd(1.0);
        for (size_t i = 0; i < (size_t)M * ldc; i++)
            C0[i] = rnd(1.0);
        for (size_t l = 0; l < G_N_ELEMENTS(layouts); l++) {
            const void *B = layouts[l] == DQ_GEMM_B_WT_F32    ? (const void *)Bf
                            : layouts[l] == DQ_GEMM_B_WT_BF16 ? (const void *)Bh
                                                              : (const void *)Bkn;
            size_t ldb = layouts[l] == DQ_GEMM_B_KN_F32 ? ldn : ldw;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double e = 0, m = 0;
                    for (int k = 0; k < K; k++) {
                        double w = layouts[l] == DQ_GEMM_B_KN_F32 ? Bkn[(size_t)k * ldn + j]
                                   : layouts[l] == DQ_GEMM_B_WT_F32
                                       ? Bf[(size_t)j * ldw + k]
                                       : dq_bf16f(Bh[(size_t)j * ldw + k]);
                        e += A[(size_t)i * lda + k] * w;
                        m += fabs(A[(size_t)i * lda + k] * w);
                    }
                    exact[(size_t)i * N + j] = e;
                    mag[(size_t)i * N + j] = m;
                }
            for (int mode = 0; mode < 3; mode++)
                for (int pass = 0; pass < (two ? 2 : 1); pass++) {
                    const float *b = mode == 0 ? bias : NULL;
                    memcpy(C, C0, sizeof(float) * (size_t)M * ldc);
                    gboolean was = dq_gemm_force_avx2(pass == 1);
                    dq_gemm(M, N, K, A, lda, B, ldb, layouts[l], b,
                            mode == 2 ? DQ_GEMM_ADD : DQ_GEMM_SET, C, ldc, pack);
                    dq_gemm_force_avx2(was);
                    for (int i = 0; i < M; i++)
                        for (size_t j = 0; j < ldc; j++) {
                            float got = C[(size_t)i * ldc + j], c0 = C0[(size_t)i * ldc + j];
                            if (j >= (size_t)N) {
                                if (f_bits(got) != f_bits(c0))
                                    g_error("%dx%dx%d layout %d mode %d pass %d: C[%d][%zu] past N "
                                            "written (%.9g, was %.9g)",
                                            M, N, K, (int)layouts[l], mode, pass, i, j, got, c0);
                                continue;
                            }
                            double base = mode == 0 ? bias[j] : mode == 1 ? 0.0 : c0;
                            double want = base + exact[(size_t)i * N + j];
                            double bound =
                                (fabs(base) + mag[(size_t)i * N + j]) * (K + 1) * 0x1p-23;
                            if (!(fabs(got - want) <= bound))
                                g_error("%dx%dx%d layout %d mode %d pass %d: C[%d][%zu] = %.9g, "
                                        "float64 %.9g (bound %.3g)",
                                        M, N, K, (int)layouts[l], mode, pass, i, j, got, want,
                                        bound);
                        }
                    products++;
                }
        }
        g_free(A);
        g_free(Bf);
        g_free(Bkn);
        g_free(Bh);
        g_free(bias);
        g_free(C0);
        g_free(C);
        g_free(exact);
        g_free(mag);
    }
    g_aligned_free(pack);
    printf("# float32 GEMM: %d products within K 2^-23 sum |a b| of float64, C past N untouched\n",
           products);
}

/* The split kernels of exact attention on AMX (backend_cpu_fast.c's attn_range_x6): scores
 * (32 x 32 over a head's 64 dims, all six products in one accumulator) and probabilities times
 * values (16 x 32 over 256 keys, v interleaved in pairs of keys, added to C), each against
 * float64: within float32's accumulation bound, and no further from it than a float32 FMA chain
 * (twice its error at most; leaving out hi.lo of the scores is 10x it). */
static double x6_error(const float *got, const float *a, size_t as, size_t ak, const float *b,
                       size_t bs, size_t bk, const float *c0, int rows, int K, double *fma) {
    double worst = 0;
    *fma = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < 32; j++) {
            double exact = c0 != NULL ? c0[i * 32 + j] : 0, mag = fabs(exact);
            float chain = c0 != NULL ? c0[i * 32 + j] : 0;
            for (int k = 0; k < K; k++) {
                float x = a[i * as + k * ak], y = b[j * bs + k * bk];
                exact += (double)x * y;
                mag += fabs((double)x * y);
                chain = fmaf(x, y, chain);
            }
            double bound = mag * K * 0x1p-24;
            worst = MAX(worst, fabs(got[i * 32 + j] - exact) / bound);
            *fma = MAX(*fma, fabs(chain - exact) / bound);
        }
    return worst;
}

static void test_x6_attention(void) {
    if (!dq_amx_x6_on()) {
        g_test_skip("no AMX split products on this CPU (or DOCQA_CPU_NO_AMX, DOCQA_AMX_X6=0): "
                    "attention runs on float32 FMAs here");
        return;
    }
    enum { D = 64, KEYS = 256 };
    static float q[32 * D], k[32 * D], p[16 * KEYS], v[KEYS * 32], c[32 * 32], c0[16 * 32];
    static uint16_t qp[3][32 * D], kr[3][32 * D], pp[3][16 * KEYS];
    static uint32_t kp[3][D / 2 * 32], vp[3][KEYS / 2 * 32];
    double most[4] = {0};
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 32 * D; i++) {
            q[i] = rnd(2.0);
            k[i] = rnd(2.0);
        }
        for (int i = 0; i < 16 * KEYS; i++)
            p[i] = fabsf(rnd(1.0));
        for (int i = 0; i < KEYS * 32; i++)
            v[i] = rnd(2.0);
        for (int i = 0; i < 16 * 32; i++)
            c0[i] = rnd(2.0);
        dq_amx_begin();
        for (int i = 0; i < 32; i++) {
            dq_amx_split_row(qp[0] + i * D, 32 * D, q + i * D, D, D);
            dq_amx_split_row(kr[0] + i * D, 32 * D, k + i * D, D, D);
        }
        for (int t = 0; t < 3; t++)
            dq_amx_pack_pairs(kp[t], kr[t], D, D / 2);
        dq_amx_32x32_x6(qp[0], D, 32 * D, kp[0], D / 2 * 32, D / 2, c, 32);
        double fma, worst = x6_error(c, q, D, 1, k, D, 1, NULL, 32, D, &fma);
        g_assert_cmpfloat(worst, <=, 1.0);
        g_assert_cmpfloat(worst, <=, 2 * fma + 0x1p-10);
        most[0] = MAX(most[0], worst);
        most[1] = MAX(most[1], fma);
        for (int i = 0; i < 16; i++)
            dq_amx_split_row(pp[0] + i * KEYS, 16 * KEYS, p + i * KEYS, KEYS, KEYS);
        for (int j = 0; j < KEYS; j += 2)
            dq_amx_split_interleave(vp[0] + j / 2 * 32, KEYS / 2 * 32, v + j * 32, v + (j + 1) * 32,
                                    32);
        memcpy(c, c0, sizeof c0);
        dq_amx_16x32_x6(pp[0], KEYS, 16 * KEYS, vp[0], KEYS / 2 * 32, KEYS / 2, c, 32, TRUE);
        dq_amx_end();
        worst = x6_error(c, p, KEYS, 1, v, 1, 32, c0, 16, KEYS, &fma);
        g_assert_cmpfloat(worst, <=, 1.0);
        g_assert_cmpfloat(worst, <=, 2 * fma + 0x1p-10);
        most[2] = MAX(most[2], worst);
        most[3] = MAX(most[3], fma);
    }
    printf("# x6 attention, worst of 20 rounds, error / (K 2^-24 sum |a b|): scores %.3g (float32 "
           "FMA %.3g), p.v %.3g (%.3g)\n",
           most[0], most[1], most[2], most[3]);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    rng = g_rand_new_with_seed(20261126);
    g_test_add_func("/gemm_bf16/round", test_round);
    g_test_add_func("/gemm_bf16/amx_round", test_amx_round);
    g_test_add_func("/gemm_bf16/product", test_product);
    g_test_add_func("/gemm_bf16/denormals", test_denormals);
    g_test_add_func("/gemm_bf16/row_invariance", test_row_invariance);
    g_test_add_func("/gemm_bf16/native", test_native);
    g_test_add_func("/gemm_bf16/x3", test_x3);
    g_test_add_func("/gemm_bf16/x6", test_x6);
    g_test_add_func("/gemm_bf16/x6_attention", test_x6_attention);
    g_test_add_func("/gemm/avx512", test_avx512);
    g_test_add_func("/gemm/avx512_rows", test_avx512_rows);
    g_test_add_func("/gemm/f32_edges", test_f32_edges);
    int rc = g_test_run();
    g_rand_free(rng);
    return rc;
}
