/* Decode-step products against the memory stream, for scripts/bench-model.sh: the fast
 * backend's matmul over one decoder's worth of weights (SmolVLM-256M: 30 layers of q, k, v, o,
 * gate, up, down, then lm_head; 2.2B with --2.2b) with 1, 2, 4 and 8 rows (decode, batched
 * decode), bf16 and int8, and the machine's read bandwidth (a threaded sum over a buffer larger
 * than the caches). A decode step reads every weight once, so its floor is bytes / bandwidth.
 *
 *   bench_gemv [--2.2b] [--in-cache] [--attention] [--f32]
 *
 * --in-cache: every product reads the same 512-feature matrix, which stays in L2: the kernel's
 * own compute rate, without the memory stream. --attention: the decode attention lines
 * only. --f32: float32 weights (the same values) in place of bf16, and no int8 lines.
 * One line per (weights, rows): milliseconds a pass (wall, and the process's CPU time a thread),
 * GB/s of weights, share of the stream.
 */
#include "backend.h"
#include "clock.h"
#include "cpu_simd.h"

#include <omp.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    int layers, hidden, kv, inter, vocab;
} Dims;

/* f as IEEE float16 bits, truncated, tiny values flushed to zero (|f| < 1 here). */
static uint16_t half_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    int e = (int)((b >> 23) & 0xFF) - 127 + 15;
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    return e <= 0 ? sign : (uint16_t)(sign | (e << 10) | ((b >> 13) & 0x3FF));
}

/* Sums a buffer larger than the last-level cache with every thread, best of three, GB/s: each
 * thread's share over its own CPU clock, summed, so that on a shared host a thread waiting for a
 * core does not count as slow memory (the products below are on the wall clock: a neighbour's
 * load shows there as a smaller share of the stream). Threads that a busy host ran one after
 * the other each had the memory to themselves, so there it reads high (40.8 GB/s for 2 threads
 * at load average 5 on the EPYC, whose 2 cores read ~34 together). */
static double stream_read_gbs(void) {
    size_t n = (size_t)512 << 20 >> 2; /* 512 MiB of floats */
    float *buf = g_new(float, n);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)(i & 1023);
    double best = 0.0;
    for (int r = 0; r < 3; r++) {
        double total = 0.0, gbs = 0.0;
#pragma omp parallel reduction(+ : total, gbs)
        {
            double t0 = dq_thread_cpu_ms();
            size_t mine = 0;
#pragma omp for schedule(static) nowait
            for (size_t i = 0; i < n; i += 16) {
                float s = 0.0f;
                for (int j = 0; j < 16; j++)
                    s += buf[i + j];
                total += s;
                mine += 16;
            }
            double ms = dq_thread_cpu_ms() - t0;
            gbs += ms > 0 ? mine * 4.0 / ms / 1e6 : 0.0;
        }
        if (total < 0)
            printf("impossible\n");
        best = MAX(best, gbs);
    }
    g_free(buf);
    return best;
}

/* Batched decode's attention (bench_batch's 8 pages): sequence i over batch_len(i) positions. */
#define BATCH_SEQS 8
static int batch_len(int i) {
    return 100 + 150 * i;
}

/* One decode step's attention over `layers` layers for BATCH_SEQS sequences in one
 * attention_segments call a layer, each with its own caches (float32, or float16 with f16), as
 * the model's batched decode makes it; best of 10, milliseconds; *gbs: cache bytes a second.
 * shape: the heads (its kv_f16 is set here). x: the queries and new rows, y: the outputs. */
static double batch_attention_ms(DqBackend *be, const DqAttention *shape, int layers, gboolean f16,
                                 const float *x, float *y, double *gbs, double *cpu_ms) {
    size_t row = (size_t)shape->kv_stride, es = f16 ? 2 : 4, at[BATCH_SEQS + 1] = {0};
    for (int i = 0; i < BATCH_SEQS; i++)
        at[i + 1] = at[i] + (size_t)batch_len(i) * layers * row; /* elements */
    float *k = be->alloc(be, (at[BATCH_SEQS] * es + 3) / 4);
    float *v = be->alloc(be, (at[BATCH_SEQS] * es + 3) / 4);
    for (size_t i = 0; i < at[BATCH_SEQS]; i++) {
        float kv = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        float vv = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
        if (f16) {
            ((uint16_t *)(void *)k)[i] = half_bits(kv);
            ((uint16_t *)(void *)v)[i] = half_bits(vv);
        } else {
            k[i] = kv;
            v[i] = vv;
        }
    }
    DqAttention a = *shape;
    a.kv_f16 = f16;
    DqAttnSegment segs[BATCH_SEQS];
    double best = 1e30;
    *cpu_ms = 1e30;
    for (int r = 0; r < 10; r++) {
        double t0 = dq_now_ms(), c0 = dq_cpu_ms();
        for (int l = 0; l < layers; l++) {
            for (int i = 0; i < BATCH_SEQS; i++) {
                size_t off = (at[i] + (size_t)l * batch_len(i) * row) * es; /* bytes */
                segs[i] = (DqAttnSegment){.k_cache = (float *)(void *)((char *)k + off),
                                          .v_cache = (float *)(void *)((char *)v + off),
                                          .row0 = i,
                                          .n_q = 1,
                                          .n_past = batch_len(i) - 1};
            }
            be->attention_segments(be, y, x, x, x, segs, BATCH_SEQS, &a);
        }
        best = MIN(best, dq_now_ms() - t0);
        *cpu_ms = MIN(*cpu_ms, (dq_cpu_ms() - c0) / omp_get_max_threads());
    }
    *gbs = 2.0 * at[BATCH_SEQS] * es / best / 1e6;
    be->release(be, k);
    be->release(be, v);
    return best;
}

int main(int argc, char **argv) {
    gboolean big = FALSE, in_cache = FALSE, attention_only = FALSE, f32 = FALSE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--2.2b") == 0)
            big = TRUE;
        else if (strcmp(argv[i], "--in-cache") == 0)
            in_cache = TRUE;
        else if (strcmp(argv[i], "--attention") == 0)
            attention_only = TRUE;
        else if (strcmp(argv[i], "--f32") == 0)
            f32 = TRUE;
        else {
            fprintf(stderr, "usage: %s [--2.2b] [--in-cache] [--attention] [--f32]\n", argv[0]);
            return 2;
        }
    }
    Dims d = big ? (Dims){24, 2048, 2048, 8192, 49280} : (Dims){30, 576, 192, 1536, 49280};
    GError *err = NULL;
    DqBackend *be = dq_backend_cpu_fast_new(&err);
    if (be == NULL) {
        fprintf(stderr, "bench_gemv: %s\n", err->message);
        return 2;
    }
    int shapes[7][2] = {{d.hidden, d.hidden}, {d.kv, d.hidden},    {d.kv, d.hidden},
                        {d.hidden, d.hidden}, {d.inter, d.hidden}, {d.inter, d.hidden},
                        {d.hidden, d.inter}};
    int n_w = d.layers * 7 + 1;
    int(*shape)[2] = g_malloc_n(n_w, sizeof *shape);
    for (int l = 0; l < d.layers; l++)
        memcpy(shape[l * 7], shapes, sizeof shapes);
    shape[n_w - 1][0] = d.vocab;
    shape[n_w - 1][1] = d.hidden;

    if (in_cache)
        for (int i = 0; i < n_w; i++) {
            shape[i][0] = 512;
            shape[i][1] = d.hidden;
        }
    double bw = stream_read_gbs();
    printf("threads=%d stream_read_gbs=%.1f\n", omp_get_max_threads(), bw);
    printf("%-5s %4s | %9s %9s %9s %9s | %s\n", "dtype", "rows", "ms/pass", "cpu ms", "GB/s",
           "GFLOP/s", "share of stream");
    float *x = g_new(float, (size_t)8 * d.inter), *y = g_new(float, (size_t)8 * d.vocab);
    for (int i = 0; i < 8 * d.inter; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    double esize = f32 ? 4.0 : 2.0;
    for (int q8 = 0; q8 < (attention_only ? 0 : f32 ? 1 : 2); q8++) {
        DqWeight *w = g_new0(DqWeight, n_w);
        void **data = g_new0(void *, n_w); /* the mapping's stand-in */
        double bytes = 0.0, flops_row = 0.0;
        for (int i = 0; i < n_w; i++) {
            size_t numel = (size_t)shape[i][0] * shape[i][1];
            data[i] = g_malloc(numel * (size_t)esize);
            for (size_t j = 0; j < numel; j++) {
                uint16_t b = (uint16_t)(0x3c00 + (j * 40503u) % 0x400);
                if (f32)
                    ((float *)data[i])[j] = dq_bf16f(b);
                else
                    ((uint16_t *)data[i])[j] = b;
            }
            DqTensor t = {.name = "w",
                          .file = "bench",
                          .dtype = f32 ? DQ_DTYPE_F32 : DQ_DTYPE_BF16,
                          .numel = (int64_t)numel,
                          .data = data[i]};
            if (in_cache && i > 0) { /* one matrix for all: the kernel's compute rate */
                w[i] = w[0];
                bytes += numel * (q8 ? 1.0 + 4.0 / 32 : esize);
                flops_row += 2.0 * numel;
                continue;
            }
            gboolean ok = q8 ? be->weight_init_q8(be, &w[i], &t, shape[i][0], shape[i][1], &err)
                             : be->weight_init(be, &w[i], &t, shape[i][0], shape[i][1], &err);
            if (!ok) {
                fprintf(stderr, "bench_gemv: %s\n", err->message);
                return 2;
            }
            if (q8)
                g_clear_pointer(&data[i], g_free); /* quantized into a copy */
            bytes += numel * (q8 ? 1.0 + 4.0 / 32 : esize);
            flops_row += 2.0 * numel;
        }
        for (int rows = 1; rows <= 8; rows *= 2) {
            double best = 1e30, best_cpu = 1e30;
            for (int r = 0; r < 5; r++) {
                double t0 = dq_now_ms(), c0 = dq_cpu_ms();
                for (int i = 0; i < n_w; i++)
                    be->matmul(be, y, x, &w[i], NULL, rows);
                best = MIN(best, dq_now_ms() - t0);
                best_cpu = MIN(best_cpu, (dq_cpu_ms() - c0) / omp_get_max_threads());
            }
            double gbs = bytes / best / 1e6;
            printf("%-5s %4d | %9.2f %9.2f %9.1f %9.1f | %.0f%%\n",
                   q8    ? "int8"
                   : f32 ? "f32"
                         : "bf16",
                   rows, best, best_cpu, gbs, flops_row * rows / best / 1e6, 100.0 * gbs / bw);
        }
        for (int i = 0; i < (in_cache ? 1 : n_w); i++)
            be->weight_free(be, &w[i]);
        for (int i = 0; i < n_w; i++)
            g_free(data[i]);
        g_free(data);
        g_free(w);
    }
    /* Decode attention: one query row a layer over a cache of `ctx` positions per layer. */
    int heads = big ? 32 : 9, kv_heads = big ? 32 : 3, hd = 64, ctx_len = 1416;
    size_t kv_row = (size_t)kv_heads * hd, layer = (size_t)ctx_len * kv_row;
    /* from the backend, as the model's caches are (it may ask for huge pages) */
    float *kc = be->alloc(be, layer * d.layers), *vc = be->alloc(be, layer * d.layers);
    for (size_t i = 0; i < layer * d.layers; i++) {
        kc[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        vc[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
    }
    DqAttention att = {.n_seq = 1,
                       .n_q = 1,
                       .n_kv = ctx_len,
                       .n_heads = heads,
                       .n_kv_heads = kv_heads,
                       .head_dim = hd,
                       .q_stride = heads * hd,
                       .kv_stride = (int)kv_row,
                       .q_pos0 = ctx_len - 1,
                       .causal = TRUE,
                       .scale = 0.125f};
    double best = 1e30, best_cpu = 1e30;
    for (int r = 0; r < 25; r++) {
        double t0 = dq_now_ms(), c0 = dq_cpu_ms();
        for (int l = 0; l < d.layers; l++)
            be->attention(be, y, x, kc + l * layer, vc + l * layer, &att);
        best = MIN(best, dq_now_ms() - t0);
        best_cpu = MIN(best_cpu, (dq_cpu_ms() - c0) / omp_get_max_threads());
    }
    double gbs = 2.0 * layer * d.layers * sizeof(float) / best / 1e6;
    printf("attention, %d layers over %d positions: %.2f ms (cpu %.2f), %.1f GB/s of cache, %.0f%% "
           "of stream\n",
           d.layers, ctx_len, best, best_cpu, gbs, 100.0 * gbs / bw);
    if (be->kv_f16) {
        /* The same through attention_segments over float16 caches (--weights int8); the
         * caches' last row is the step's new one. */
        uint16_t *kh = (uint16_t *)kc, *vh = (uint16_t *)vc; /* the first half, reused */
        /* the same values as float16 (truncated; in place: a half is written behind the float
         * it comes from): a real cache's values, not float32 bits read as halves, whose NaNs
         * and infinities sent softmax down slow paths */
        for (size_t i = 0; i < layer * d.layers; i++) {
            kh[i] = half_bits(kc[i]);
            vh[i] = half_bits(vc[i]);
        }
        DqAttnSegment seg = {.row0 = 0, .n_q = 1, .n_past = ctx_len - 1};
        att.kv_f16 = TRUE;
        double best16 = 1e30, best16_cpu = 1e30;
        for (int r = 0; r < 25; r++) {
            double t0 = dq_now_ms(), c0 = dq_cpu_ms();
            for (int l = 0; l < d.layers; l++) {
                seg.k_cache = (float *)(void *)(kh + l * layer);
                seg.v_cache = (float *)(void *)(vh + l * layer);
                be->attention_segments(be, y, x, x, x, &seg, 1, &att);
            }
            best16 = MIN(best16, dq_now_ms() - t0);
            best16_cpu = MIN(best16_cpu, (dq_cpu_ms() - c0) / omp_get_max_threads());
        }
        double gbs16 = 2.0 * layer * d.layers * 2 / best16 / 1e6;
        printf("attention, float16 caches: %.2f ms (cpu %.2f), %.1f GB/s of cache, %.0f%% of "
               "stream\n",
               best16, best16_cpu, gbs16, 100.0 * gbs16 / bw);
    }
    be->release(be, kc);
    be->release(be, vc);
    for (int f16 = 0; f16 <= (be->kv_f16 ? 1 : 0); f16++) {
        double gbs_b, cpu_b, ms = batch_attention_ms(be, &att, d.layers, f16, x, y, &gbs_b, &cpu_b);
        printf("attention, %d sequences of %d..%d positions%s: %.2f ms (cpu %.2f), %.1f GB/s of "
               "cache, %.0f%% of stream\n",
               BATCH_SEQS, batch_len(0), batch_len(BATCH_SEQS - 1), f16 ? ", float16 caches" : "",
               ms, cpu_b, gbs_b, 100.0 * gbs_b / bw);
    }
    g_free(x);
    g_free(y);
    g_free(shape);
    dq_backend_free(be);
    return 0;
}
