/* GEMM throughput on the model's shapes, for scripts/bench-gemm.sh: the fast backend's matmul
 * (our packed AVX2 kernels, threaded) against OpenBLAS sgemm (threaded) in the same process,
 * for float32 and bf16 weights, and the machine's float32 FMA peak (a register-only loop, all
 * threads; 512-bit where the CPU has AVX-512F, whose GEMM kernel then runs) to express both as a
 * fraction of it. The peaks are timed on each thread's CPU clock: on a shared host a thread
 * waiting for a core then does not count as a slow core (its wall clock made the peak 36-48
 * GFLOP/s on a 117-GFLOP/s core, and the GEMM "124-185% of peak"); the products are timed on the
 * wall clock, best of three, so there a neighbour's load shows as a smaller share of the peak.
 * Where the CPU has AVX512-BF16, also the product
 * of `--weights bf16` (vdpbf16ps, cpu_gemm_bf16.c) and that instruction's own peak; where it has
 * AMX-BF16 that product runs on tiles, and its share is of the tiles' peak (tdpbf16ps on
 * operands held in tiles). On AMX the float32 and bf16 columns are the split products (x6, x3:
 * cpu_gemm_bf16.c), float32's accuracy on tiles; the float32 column's share is still of the FMA
 * peak, which it can pass (the header line then says f32_on_tiles=x6).
 *
 *   bench_gemm [M N K]...       default: the SmolVLM-256M vision and prefill shapes
 *
 * One line per shape: GFLOP/s of each and their ratio.
 */
#include "backend.h"
#include "clock.h"
#include "cpu_gemm.h"
#include "cpu_simd.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* Twelve independent accumulators in registers, each `step`ped once an iteration: named
 * variables, not an array (GCC kept an array of __m512 on the stack, and the loop then measured
 * store-to-load forwarding, which docqa's GEMM then "exceeded" by 1.7x on a Xeon), each with its
 * own start value (equal ones are folded into one chain, which measures the FMA's latency). */
#define DQ_PEAK_LOOP(T, init, step, iters)                                                         \
    T a0 = init(1), a1 = init(2), a2 = init(3), a3 = init(4), a4 = init(5), a5 = init(6),          \
      a6 = init(7), a7 = init(8), a8 = init(9), a9 = init(10), a10 = init(11), a11 = init(12);     \
    for (long i = 0; i < (iters); i++) {                                                           \
        a0 = step(a0);                                                                             \
        a1 = step(a1);                                                                             \
        a2 = step(a2);                                                                             \
        a3 = step(a3);                                                                             \
        a4 = step(a4);                                                                             \
        a5 = step(a5);                                                                             \
        a6 = step(a6);                                                                             \
        a7 = step(a7);                                                                             \
        a8 = step(a8);                                                                             \
        a9 = step(a9);                                                                             \
        a10 = step(a10);                                                                           \
        a11 = step(a11);                                                                           \
    }

DQ_AVX2 static double fma_peak_one_thread(void) {
    const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
    const long iters = 20000000;
    double t0 = dq_thread_cpu_ms();
#define STEP(x) _mm256_fmadd_ps(x, m, c)
#define INIT(k) _mm256_set1_ps(0.01f * (k))
    DQ_PEAK_LOOP(__m256, INIT, STEP, iters)
#undef INIT
#undef STEP
    double ms = dq_thread_cpu_ms() - t0;
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    volatile float sink = dq_hsum256(s);
    (void)sink;
    return iters * 12.0 * 16 / ms / 1e6;
}

/* The same with 512-bit FMAs, where the GEMM uses them (12 chains: the latency of two units). */
DQ_AVX512 static double fma512_peak_one_thread(void) {
    const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-4f);
    const long iters = 10000000;
    double t0 = dq_thread_cpu_ms();
#define STEP(x) _mm512_fmadd_ps(x, m, c)
#define INIT(k) _mm512_set1_ps(0.01f * (k))
    DQ_PEAK_LOOP(__m512, INIT, STEP, iters)
#undef INIT
#undef STEP
    double ms = dq_thread_cpu_ms() - t0;
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return iters * 12.0 * 32 / ms / 1e6;
}

static double fma_peak(void) {
    if (!dq_cpu_has_avx2())
        return 0.0;
    gboolean wide = dq_cpu_has_avx512f();
    double total = 0.0;
#pragma omp parallel reduction(+ : total)
    total += wide ? fma512_peak_one_thread() : fma_peak_one_thread();
    return total;
}

/* vdpbf16ps: 32 multiply-adds (64 flops) an instruction, 12 independent chains. */
__attribute__((target("avx512f,avx512bf16"))) static double dot_peak_one_thread(void) {
    const __m512bh m = (__m512bh)_mm512_set1_epi32(0x3f7f3f7f),
                   c = (__m512bh)_mm512_set1_epi32(0x38d1);
    const long iters = 10000000;
    double t0 = dq_thread_cpu_ms();
#define STEP(x) _mm512_dpbf16_ps(x, m, c)
#define INIT(k) _mm512_set1_ps(0.01f * (k))
    DQ_PEAK_LOOP(__m512, INIT, STEP, iters)
#undef INIT
#undef STEP
    double ms = dq_thread_cpu_ms() - t0;
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return iters * 12.0 * 64 / ms / 1e6;
}

/* AMX tdpbf16ps: 16 x 16 x 32 multiply-adds (16384 flops) an instruction, four C tiles in turn
 * (the GEMM's 2 x 2 block) on operands already in tiles: no loads, the tile unit's own rate. */
__attribute__((target("amx-tile,amx-bf16"))) static double amx_peak_one_thread(void) {
    static const uint16_t zero[16 * 32] __attribute__((aligned(64)));
    const long iters = 2000000;
    dq_amx_begin();
    _tile_loadd(4, zero, 64);
    _tile_loadd(5, zero, 64);
    _tile_loadd(6, zero, 64);
    _tile_loadd(7, zero, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    double t0 = dq_thread_cpu_ms();
    for (long i = 0; i < iters; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    double ms = dq_thread_cpu_ms() - t0;
    dq_amx_end();
    return iters * 4.0 * 16384 / ms / 1e6;
}

static double amx_peak(void) {
    double total = 0.0;
#pragma omp parallel reduction(+ : total)
    total += amx_peak_one_thread();
    return total;
}

static double dot_peak(void) {
    double total = 0.0;
#pragma omp parallel reduction(+ : total)
    total += dot_peak_one_thread();
    return total;
}

static double best_gflops(DqBackend *be, const DqWeight *w, const float *x, float *y, int M) {
    double best = 0.0;
    for (int r = 0; r < 3; r++) {
        double t0 = dq_now_ms();
        be->matmul(be, y, x, w, NULL, M);
        double ms = dq_now_ms() - t0;
        best = MAX(best, 2.0 * M * w->rows * w->cols / ms / 1e6);
    }
    return best;
}

static double openblas_gflops(const float *x, const float *wf, float *y, int M, int N, int K) {
    double best = 0.0;
    for (int r = 0; r < 3; r++) {
        double t0 = dq_now_ms();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, wf, K, 0.0f, y,
                    N);
        double ms = dq_now_ms() - t0;
        best = MAX(best, 2.0 * M * N * K / ms / 1e6);
    }
    return best;
}

int main(int argc, char **argv) {
    static const int defaults[][3] = {
        {21504, 768, 768},  /* vision q/k/v/o, 21 tiles of 1024 patches */
        {21504, 3072, 768}, /* vision fc1 */
        {21504, 768, 3072}, /* vision fc2 */
        {1416, 576, 576},   /* prefill q/o */
        {1416, 1536, 576},  /* prefill gate/up */
        {1416, 576, 1536},  /* prefill down */
    };
    int n_shapes = argc > 1 ? (argc - 1) / 3 : (int)G_N_ELEMENTS(defaults);
    GError *err = NULL;
    DqBackend *be = dq_backend_cpu_fast_new(&err);
    if (be == NULL) {
        fprintf(stderr, "bench_gemm: %s\n", err->message);
        return 2;
    }
    double peak = fma_peak();
    gboolean dot = dq_cpu_has_avx512bf16();
    double dpeak = dot ? dot_peak() : 0.0;
    printf("threads=%d fma_peak_gflops=%.1f", omp_get_max_threads(), peak);
    /* where bf16 dot runs on AMX tiles, its share is of the tiles' peak */
    gboolean amx = dq_cpu_has_amx_bf16();
    if (amx)
        dpeak = amx_peak();
    if (dot)
        printf(" %s_peak_gflops=%.1f%s\n", amx ? "amx_tdpbf16ps" : "vdpbf16ps", dpeak,
               amx && g_strcmp0(g_getenv("DOCQA_AMX_X6"), "0") != 0 &&
                       g_strcmp0(g_getenv("DOCQA_AMX_X3"), "0") != 0
                   ? " f32_on_tiles=x6"
                   : "");
    else
        printf(" (no AVX512-BF16: the --weights bf16 column is not measured)\n");
    printf("%6s %5s %5s | %9s %9s %9s %9s | %s\n", "M", "N", "K", "openblas", "docqa f32",
           "docqa bf16", "bf16 dot",
           "docqa/openblas f32, bf16; f32 share of peak; bf16 dot's; bf16 dot / docqa f32");
    for (int s = 0; s < n_shapes; s++) {
        int M = argc > 1 ? atoi(argv[1 + 3 * s]) : defaults[s][0];
        int N = argc > 1 ? atoi(argv[2 + 3 * s]) : defaults[s][1];
        int K = argc > 1 ? atoi(argv[3 + 3 * s]) : defaults[s][2];
        float *x = g_new(float, (size_t)M *K), *wf = g_new(float, (size_t)N *K);
        float *y = g_new(float, (size_t)M *N);
        uint16_t *wb = g_new(uint16_t, (size_t)N * K);
        for (size_t i = 0; i < (size_t)M * K; i++)
            x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        for (size_t i = 0; i < (size_t)N * K; i++) {
            wb[i] = (uint16_t)(0x3c00 + (i * 40503u) % 0x400); /* bf16 in [2^-7, 2^-6) */
            wf[i] = dq_bf16f(wb[i]);
        }
        DqTensor tf = {.name = "w",
                       .file = "bench",
                       .dtype = DQ_DTYPE_F32,
                       .numel = (int64_t)N * K,
                       .data = wf};
        DqTensor tb = tf;
        tb.dtype = DQ_DTYPE_BF16;
        tb.data = wb;
        DqWeight w32, w16, wd;
        if (!be->weight_init(be, &w32, &tf, N, K, &err) ||
            !be->weight_init(be, &w16, &tb, N, K, &err) ||
            !be->weight_init_bf16(be, &wd, &tb, N, K, &err)) {
            fprintf(stderr, "bench_gemm: %s\n", err->message);
            exit(2); /* what main holds is the process's to free */
        }
        double ob = openblas_gflops(x, wf, y, M, N, K);
        double f32 = best_gflops(be, &w32, x, y, M);
        double b16 = best_gflops(be, &w16, x, y, M);
        double bd = dot ? best_gflops(be, &wd, x, y, M) : 0.0;
        printf("%6d %5d %5d | %9.1f %9.1f %9.1f %9.1f | %.2fx %.2fx; %.0f%%; %.0f%%; %.2fx\n", M, N,
               K, ob, f32, b16, bd, f32 / ob, b16 / ob, peak > 0 ? 100.0 * f32 / peak : 0.0,
               dpeak > 0 ? 100.0 * bd / dpeak : 0.0, bd / f32);
        be->weight_free(be, &w32);
        be->weight_free(be, &w16);
        be->weight_free(be, &wd);
        g_free(x);
        g_free(wf);
        g_free(wb);
        g_free(y);
    }
    dq_backend_free(be);
    return 0;
}
