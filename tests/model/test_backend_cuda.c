/* The CUDA backend, op by op, against the CPU reference backend on the same random inputs.
 *
 * Both backends load the same weight tensors (stored as BF16, so both see identical values: the
 * CPU upcasts exactly, the GPU keeps them). Tolerances: linear layers round their input to bf16
 * on the GPU, so matmul is held to bf16 accuracy (1e-2 of the output's scale); every other op
 * is float32 on both sides and is held to 1e-5 (attention, with its exponentials, 2e-5; the
 * vision encoder's tensor-core attention for tiles of >= 256 patches, bf16, to 1e-2).
 * The whole model (tiny snapshots of ../shared): last-prompt logits within 6e-2 of their scale
 * (the fixtures README measures 0.26 on logits of ~12 for weights rounded to bf16), and a
 * request's tokens and logits bit-identical alone and in a batch of three different pages.
 * The decode step as a CUDA graph (DOCQA_CUDA_GRAPHS, off by default): every decode row's logits
 * equal those of plain launches bit for bit while the batch grows and shrinks, and a DqGenerator
 * whose requests join mid-way gives the same sampled tokens with graphs on as off.
 *
 * Without a GPU (or in a build without CUDA) every GPU test is skipped with the reason; the
 * device-name parsing and the "no GPU" error path are tested everywhere. */
#include "act_ref.h"
#include "backend.h"
#include "backend_cuda.h"
#include "dq_error.h"
#include "pipeline.h"
#include "snapshot_edit.h"
#include "testutil.h"

#include <immintrin.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

static DqBackend *cpu, *gpu;
static GRand *rng;
static char *no_gpu_reason;

static gboolean need_gpu(void) {
    if (gpu != NULL)
        return TRUE;
    g_test_skip(no_gpu_reason);
    return FALSE;
}

/* ---- paired buffers: the same host data on both backends */

typedef struct {
    size_t n;
    float *host; /* [n] the inputs, then scratch for downloads */
    float *c;    /* CPU backend buffer */
    float *g;    /* GPU backend buffer */
} Pair;

static Pair pair_new(size_t n, double scale) {
    Pair p = {.n = n, .host = g_new(float, MAX(n, 1))};
    for (size_t i = 0; i < n; i++)
        p.host[i] = (float)(g_rand_double_range(rng, -1, 1) * scale);
    p.c = cpu->alloc(cpu, n);
    p.g = gpu->alloc(gpu, n);
    g_assert_nonnull(p.c);
    g_assert_nonnull(p.g);
    cpu->upload(cpu, p.c, p.host, n);
    gpu->upload(gpu, p.g, p.host, n);
    return p;
}

static void pair_free(Pair *p) {
    cpu->release(cpu, p->c);
    gpu->release(gpu, p->g);
    g_free(p->host);
}

/* Compares the GPU buffer with the CPU one: max |gpu - cpu| / max(1, max |cpu|) <= tol. */
static void pair_check(Pair *p, double tol, const char *what) {
    float *want = g_new(float, MAX(p->n, 1));
    cpu->download(cpu, want, p->c, p->n);
    gpu->download(gpu, p->host, p->g, p->n);
    GError *err = NULL;
    g_assert_true(dq_backend_cuda_check(gpu, &err));
    dq_assert_no_error(err);
    double worst = 0, scale = 1;
    size_t at = 0;
    for (size_t i = 0; i < p->n; i++)
        scale = MAX(scale, fabs(want[i]));
    for (size_t i = 0; i < p->n; i++) {
        double d = fabs((double)p->host[i] - want[i]);
        if (!(d <= worst)) { /* NaN counts as worst */
            worst = isnan(d) ? INFINITY : d;
            at = i;
        }
    }
    if (!(worst / scale <= tol))
        g_error("%s: max error %.3g (relative to %.3g) at %zu: gpu %.7g cpu %.7g, tolerance %.3g",
                what, worst, scale, at, p->host[at], want[at], tol);
    g_free(want);
}

/* ---- paired weights: one BF16 tensor loaded by both backends */

typedef struct {
    uint16_t *bits; /* the tensor's bytes */
    DqWeight c, g;
} WPair;

static WPair wpair_new(int rows, int cols, double scale) {
    WPair w = {.bits = g_new(uint16_t, (size_t)rows * cols)};
    for (size_t i = 0; i < (size_t)rows * cols; i++) {
        float f = (float)(g_rand_double_range(rng, -1, 1) * scale);
        uint32_t u;
        memcpy(&u, &f, 4);
        w.bits[i] = (uint16_t)(u >> 16);
    }
    DqTensor t = {.name = "random",
                  .file = "test",
                  .dtype = DQ_DTYPE_BF16,
                  .ndim = 2,
                  .shape = {rows, cols},
                  .numel = (int64_t)rows * cols,
                  .data = w.bits,
                  .nbytes = (size_t)rows * cols * 2};
    GError *err = NULL;
    g_assert_true(cpu->weight_init(cpu, &w.c, &t, rows, cols, &err));
    dq_assert_no_error(err);
    g_assert_true(gpu->weight_init(gpu, &w.g, &t, rows, cols, &err));
    dq_assert_no_error(err);
    return w;
}

static void wpair_free(WPair *w) {
    cpu->weight_free(cpu, &w->c);
    gpu->weight_free(gpu, &w->g);
    g_free(w->bits);
}

/* ---- ops */

static void test_matmul(void) {
    if (!need_gpu())
        return;
    /* rows: a decode row, a few requests, odd sizes, a vision tile's worth (with a bias, from
     * 65 rows on: the bias in cublasLt's epilogue, or fill + GemmEx where it has no algorithm,
     * as for the odd sizes) */
    const int shapes[][3] = {{1, 64, 48},   {3, 96, 64},     {8, 33, 17},   {37, 200, 130},
                             {300, 72, 96}, {1024, 128, 64}, {100, 33, 17}, {200, 96, 200}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int n = shapes[s][0], out = shapes[s][1], in = shapes[s][2];
        Pair x = pair_new((size_t)n * in, 1), y = pair_new((size_t)n * out, 1);
        WPair w = wpair_new(out, in, 1), b = wpair_new(1, out, 1);
        for (int withbias = 0; withbias < 2; withbias++) {
            cpu->matmul(cpu, y.c, x.c, &w.c, withbias ? &b.c : NULL, n);
            gpu->matmul(gpu, y.g, x.g, &w.g, withbias ? &b.g : NULL, n);
            pair_check(&y, 1e-2, withbias ? "matmul+bias" : "matmul");
            if (n > gpu->matmul_row_invariant_max)
                continue;
            /* The promise the forward pass batches decode rows on: each row exactly as alone. */
            float *batched = g_new(float, y.n);
            memcpy(batched, y.host, y.n * sizeof(float));
            for (int r = 0; r < n; r++)
                gpu->matmul(gpu, y.g + (size_t)r * out, x.g + (size_t)r * in, &w.g,
                            withbias ? &b.g : NULL, 1);
            gpu->download(gpu, y.host, y.g, y.n);
            g_assert_cmpmem(y.host, y.n * sizeof(float), batched, y.n * sizeof(float));
            g_free(batched);
        }
        pair_free(&x);
        pair_free(&y);
        wpair_free(&w);
        wpair_free(&b);
    }
}

/* matmul_row_invariant_min's promise, which lets smolvlm put every tile of a vision chunk and
 * every prompt of a batch into one product: from that many rows on, a row's result is the same
 * bits whatever else shares the call. Held on the real models' weight shapes (SmolVLM-256M's
 * vision, connector and decoder, the 2.2B's vision), with and without a bias, for row counts
 * around the tile and prompt sizes and for rows at other offsets in a larger call. */
static void test_matmul_rows_merged(void) {
    if (!need_gpu())
        return;
    if (gpu->matmul_row_invariant_min == 0) {
        g_test_skip("no row-invariant products here (DOCQA_CUDA_F32=1 or DOCQA_CUDA_MERGE=0)");
        return;
    }
    g_assert_cmpint(gpu->matmul_row_invariant_min, ==, gpu->matmul_row_invariant_max + 1);
    const int shapes[][3] = {
        /* out, in, bias */
        {768, 768, 1},   {3072, 768, 1}, {768, 3072, 1},  {576, 576, 0},   {192, 576, 0},
        {1536, 576, 0},  {576, 1536, 0}, {1152, 1152, 1}, {4304, 1152, 1}, {1152, 4304, 1},
        {2048, 2048, 0}, {576, 12288, 0}}; /* the last: 256M's connector, 64 rows a tile */
    const int N = 4160;
    /* (rows, first row) of the smaller calls */
    const int parts[][2] = {{64, 0},   {64, 1000},   {65, 64},     {100, 37},   {729, 729},
                            {1024, 0}, {1024, 2048}, {1416, 1500}, {2085, 2075}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int out = shapes[s][0], in = shapes[s][1];
        Pair x = pair_new((size_t)N * in, 1), y = pair_new((size_t)N * out, 1);
        WPair w = wpair_new(out, in, 1.0 / sqrt(in)), b = wpair_new(1, out, 1);
        const DqWeight *bias = shapes[s][2] ? &b.g : NULL;
        gpu->matmul(gpu, y.g, x.g, &w.g, bias, N);
        float *all = g_new(float, y.n);
        gpu->download(gpu, all, y.g, y.n);
        for (size_t p = 0; p < G_N_ELEMENTS(parts); p++) {
            int n = parts[p][0], r0 = parts[p][1];
            float *part = gpu->alloc(gpu, (size_t)n * out);
            g_assert_nonnull(part);
            gpu->matmul(gpu, part, x.g + (size_t)r0 * in, &w.g, bias, n);
            gpu->download(gpu, y.host, part, (size_t)n * out);
            if (memcmp(y.host, all + (size_t)r0 * out, (size_t)n * out * sizeof(float)) != 0)
                g_error("[%d x %d]%s: rows %d .. %d alone differ from the same rows in a call "
                        "of %d",
                        out, in, bias != NULL ? " + bias" : "", r0, r0 + n - 1, N);
            gpu->release(gpu, part);
        }
        /* and the merged products are still right */
        cpu->matmul(cpu, y.c, x.c, &w.c, shapes[s][2] ? &b.c : NULL, N);
        gpu->upload(gpu, y.g, all, y.n);
        pair_check(&y, 1e-2, "merged matmul");
        g_free(all);
        pair_free(&x);
        pair_free(&y);
        wpair_free(&w);
        wpair_free(&b);
    }
    /* A vision chunk's worth: 32 tiles of 1024 patches, tile 5 alone. */
    int out = 768, in = 768, T = 32, P = 1024;
    Pair x = pair_new((size_t)T * P * in, 1), y = pair_new((size_t)T * P * out, 1);
    WPair w = wpair_new(out, in, 1.0 / sqrt(in)), b = wpair_new(1, out, 1);
    gpu->matmul(gpu, y.g, x.g, &w.g, &b.g, T * P);
    gpu->download(gpu, y.host, y.g, y.n);
    float *tile = gpu->alloc(gpu, (size_t)P * out), *alone = g_new(float, (size_t)P *out);
    gpu->matmul(gpu, tile, x.g + (size_t)5 * P * in, &w.g, &b.g, P);
    gpu->download(gpu, alone, tile, (size_t)P * out);
    g_assert_cmpmem(alone, (size_t)P * out * sizeof(float), y.host + (size_t)5 * P * out,
                    (size_t)P * out * sizeof(float));
    GError *err = NULL;
    g_assert_true(dq_backend_cuda_check(gpu, &err));
    dq_assert_no_error(err);
    gpu->release(gpu, tile);
    g_free(alone);
    pair_free(&x);
    pair_free(&y);
    wpair_free(&w);
    wpair_free(&b);
}

/* matmul_gelu against the reference's matmul then gelu_tanh: the vision MLP's fc1 shapes
 * (256M, 2.2B) at a tile's rows and a merged chunk's (cublasLt's GELU epilogue, from
 * matmul_row_invariant_min rows on), and a few rows (the row-invariant kernel, then the GELU
 * kernel). With the epilogue the products stay row-invariant: rows alone give the bits they
 * get in a larger call. */
static void test_matmul_gelu(void) {
    if (!need_gpu())
        return;
    const int shapes[][4] = {/* rows, out, in, bias */
                             {1024, 3072, 768, 1},
                             {2048, 3072, 768, 1},
                             {729, 4304, 1152, 1},
                             {300, 96, 64, 0},
                             {5, 3072, 768, 1}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int n = shapes[s][0], out = shapes[s][1], in = shapes[s][2];
        Pair x = pair_new((size_t)n * in, 1), y = pair_new((size_t)n * out, 1);
        /* pre-activations of a few units: GELU's bend, not only its linear arms */
        WPair w = wpair_new(out, in, 2.0 / sqrt(in)), b = wpair_new(1, out, 1);
        const DqWeight *bc = shapes[s][3] ? &b.c : NULL, *bg = shapes[s][3] ? &b.g : NULL;
        cpu->matmul(cpu, y.c, x.c, &w.c, bc, n);
        cpu->gelu_tanh(cpu, y.c, y.n);
        dq_matmul_gelu(gpu, y.g, x.g, &w.g, bg, n);
        pair_check(&y, 1e-2, "matmul_gelu");
        if (gpu->matmul_row_invariant_min > 0 && n >= 2 * gpu->matmul_row_invariant_min) {
            int half = n / 2;
            float *all = g_new(float, y.n), *part = gpu->alloc(gpu, (size_t)(n - half) * out);
            g_assert_nonnull(part);
            gpu->download(gpu, all, y.g, y.n);
            dq_matmul_gelu(gpu, part, x.g + (size_t)half * in, &w.g, bg, n - half);
            gpu->download(gpu, y.host, part, (size_t)(n - half) * out);
            g_assert_cmpmem(y.host, (size_t)(n - half) * out * sizeof(float),
                            all + (size_t)half * out, (size_t)(n - half) * out * sizeof(float));
            gpu->release(gpu, part);
            g_free(all);
        }
        pair_free(&x);
        pair_free(&y);
        wpair_free(&w);
        wpair_free(&b);
    }
}

/* matmul_add (the residual add in the product) against the reference's matmul then add: decode
 * rows (the row-invariant kernel adds as the add kernel would: the GPU's own matmul + add, bit
 * for bit), a tile's and a merged chunk's rows (cublasLt with y as C), with and without a bias,
 * and row invariance from matmul_row_invariant_min rows on. */
static void test_matmul_add(void) {
    if (!need_gpu())
        return;
    /* with a bias at decode rows (the row-invariant kernel adding y + (x . w + bias)) and
     * prompt rows: a decoder's o_proj and down_proj with attention_bias / mlp_bias (session 33) */
    const int shapes[][4] = {/* rows, out, in, bias */
                             {1, 576, 576, 0},    {9, 576, 1536, 0},    {63, 192, 576, 0},
                             {1024, 768, 768, 1}, {2048, 768, 3072, 1}, {729, 1152, 4304, 1},
                             {300, 96, 64, 0},    {9, 576, 1536, 1},    {63, 192, 576, 1},
                             {1, 2048, 8192, 1},  {150, 576, 1536, 1}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int n = shapes[s][0], out = shapes[s][1], in = shapes[s][2];
        Pair x = pair_new((size_t)n * in, 1), y = pair_new((size_t)n * out, 1);
        Pair scratch = pair_new((size_t)n * out, 0);
        WPair w = wpair_new(out, in, 1.0 / sqrt(in)), b = wpair_new(1, out, 1);
        const DqWeight *bc = shapes[s][3] ? &b.c : NULL, *bg = shapes[s][3] ? &b.g : NULL;
        float *y0 = g_memdup2(y.host, y.n * sizeof(float));
        cpu->matmul(cpu, scratch.c, x.c, &w.c, bc, n);
        cpu->add(cpu, y.c, scratch.c, y.n);
        dq_matmul_add(gpu, y.g, x.g, &w.g, bg, n, scratch.g);
        float *fused = g_new(float, y.n);
        gpu->download(gpu, fused, y.g, y.n);
        pair_check(&y, 1e-2, "matmul_add");
        if (n <= gpu->matmul_row_invariant_max) {
            gpu->upload(gpu, y.g, y0, y.n);
            gpu->matmul(gpu, scratch.g, x.g, &w.g, bg, n);
            gpu->add(gpu, y.g, scratch.g, y.n);
            gpu->download(gpu, y.host, y.g, y.n);
            g_assert_cmpmem(y.host, y.n * sizeof(float), fused, y.n * sizeof(float));
        }
        if (gpu->matmul_row_invariant_min > 0 && n >= 2 * gpu->matmul_row_invariant_min) {
            int half = n / 2;
            size_t off = (size_t)half * out, rest = (size_t)(n - half) * out;
            gpu->upload(gpu, y.g, y0, y.n);
            dq_matmul_add(gpu, y.g + off, x.g + (size_t)half * in, &w.g, bg, n - half, scratch.g);
            gpu->download(gpu, y.host, y.g, y.n);
            g_assert_cmpmem(y.host + off, rest * sizeof(float), fused + off, rest * sizeof(float));
        }
        g_free(y0);
        g_free(fused);
        pair_free(&x);
        pair_free(&y);
        pair_free(&scratch);
        wpair_free(&w);
        wpair_free(&b);
    }
}

/* matmul_many (x rounded to bf16 once for q, k and v): the same bits as one matmul a weight,
 * for a merged vision chunk with biases, a prompt without, and decode rows (no rounding); and a
 * decoder's q, k and v with attention_bias (session 33) at a prompt's rows and decode rows. */
static void test_matmul_many(void) {
    if (!need_gpu())
        return;
    const int shapes[][5] = {/* rows, out of the first weight, of the others, in, bias */
                             {2048, 768, 768, 768, 1},
                             {700, 576, 192, 576, 0},
                             {3, 2048, 2048, 2048, 0},
                             {150, 576, 192, 576, 1},
                             {5, 576, 192, 576, 1}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        const int n = shapes[s][0], in = shapes[s][3], has_bias = shapes[s][4];
        const int outs[3] = {shapes[s][1], shapes[s][2], shapes[s][2]};
        Pair x = pair_new((size_t)n * in, 1);
        WPair w[3], b[3];
        Pair y[3];
        float *ys[3], *apart[3];
        const DqWeight *wg[3], *bg[3];
        for (int i = 0; i < 3; i++) {
            w[i] = wpair_new(outs[i], in, 1.0 / sqrt(in));
            b[i] = wpair_new(1, outs[i], 1);
            y[i] = pair_new((size_t)n * outs[i], 0);
            ys[i] = y[i].g;
            wg[i] = &w[i].g;
            bg[i] = has_bias ? &b[i].g : NULL;
            cpu->matmul(cpu, y[i].c, x.c, &w[i].c, has_bias ? &b[i].c : NULL, n);
        }
        dq_matmul_many(gpu, ys, x.g, wg, bg, 3, n);
        for (int i = 0; i < 3; i++) {
            pair_check(&y[i], 1e-2, "matmul_many");
            apart[i] = g_new(float, y[i].n);
            gpu->matmul(gpu, y[i].g, x.g, wg[i], bg[i], n);
            gpu->download(gpu, apart[i], y[i].g, y[i].n);
            g_assert_cmpmem(apart[i], y[i].n * sizeof(float), y[i].host, y[i].n * sizeof(float));
            g_free(apart[i]);
            pair_free(&y[i]);
            wpair_free(&w[i]);
            wpair_free(&b[i]);
        }
        pair_free(&x);
    }
}

/* A second GPU backend made with one of the backend's switches set (read when it is made). */
static DqBackend *backend_with(const char *var, const char *value) {
    GError *err = NULL;
    g_setenv(var, value, TRUE);
    DqBackend *be = dq_backend_cuda_new(0, &err);
    g_unsetenv(var);
    dq_assert_no_error(err);
    return be;
}

/* check() with be standing in for the shared GPU backend. */
static void run_on(DqBackend *be, void (*check)(void)) {
    DqBackend *shared = gpu;
    gpu = be;
    check();
    gpu = shared;
}

/* mlp_gelu_add (y += fc2(gelu(fc1(x)))) against the reference's composition: the
 * 256M and 2.2B vision MLPs and a few rows; rows alone give the bits they get in a larger call;
 * x as the scratch, as the model passes it. */
static void check_mlp_gelu_add(void) {
    const int shapes[][3] = {/* rows, dim, hidden */
                             {2048, 768, 3072},
                             {729, 1152, 4304},
                             {5, 768, 3072}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        const int n = shapes[s][0], dim = shapes[s][1], hid = shapes[s][2];
        Pair x = pair_new((size_t)n * dim, 1), y = pair_new((size_t)n * dim, 1);
        Pair h = pair_new((size_t)n * hid, 0), xs = pair_new((size_t)n * dim, 0);
        WPair w1 = wpair_new(hid, dim, 2.0 / sqrt(dim)), b1 = wpair_new(1, hid, 1);
        WPair w2 = wpair_new(dim, hid, 1.0 / sqrt(hid)), b2 = wpair_new(1, dim, 1);
        float *y0 = g_memdup2(y.host, y.n * sizeof(float));
        dq_mlp_gelu_add(cpu, y.c, x.c, &w1.c, &b1.c, &w2.c, &b2.c, n, h.c, xs.c);
        gpu->upload(gpu, xs.g, x.host, x.n);
        dq_mlp_gelu_add(gpu, y.g, xs.g, &w1.g, &b1.g, &w2.g, &b2.g, n, h.g, xs.g);
        pair_check(&y, 1e-2, "mlp_gelu_add");
        if (gpu->matmul_row_invariant_min > 0 && n >= 2 * gpu->matmul_row_invariant_min) {
            const int half = n / 2;
            const size_t off = (size_t)half * dim, rest = (size_t)(n - half) * dim;
            float *all = g_new(float, y.n);
            gpu->download(gpu, all, y.g, y.n);
            gpu->upload(gpu, y.g, y0, y.n);
            gpu->upload(gpu, xs.g, x.host, x.n);
            dq_mlp_gelu_add(gpu, y.g + off, xs.g + off, &w1.g, &b1.g, &w2.g, &b2.g, n - half, h.g,
                            xs.g + off);
            gpu->download(gpu, y.host, y.g, y.n);
            g_assert_cmpmem(y.host + off, rest * sizeof(float), all + off, rest * sizeof(float));
            g_free(all);
        }
        g_free(y0);
        pair_free(&x);
        pair_free(&y);
        pair_free(&h);
        pair_free(&xs);
        wpair_free(&w1);
        wpair_free(&b1);
        wpair_free(&w2);
        wpair_free(&b2);
    }
}

static void test_mlp_gelu_add(void) {
    if (need_gpu())
        check_mlp_gelu_add();
}

/* The same with fc1's output kept bf16 (DOCQA_CUDA_MLP_BF16=1, off by default): a second
 * backend stands in for the shared one meanwhile. */
static void test_mlp_gelu_add_bf16(void) {
    if (!need_gpu())
        return;
    DqBackend *bf16 = backend_with("DOCQA_CUDA_MLP_BF16", "1");
    run_on(bf16, check_mlp_gelu_add);
    dq_backend_free(bf16);
}

static void test_matmul_f32_tensor(void) {
    if (!need_gpu())
        return;
    /* An F32 snapshot: converted to bf16 once at load on the GPU. */
    int n = 5, out = 40, in = 24;
    float *wf = g_new(float, out *in);
    for (int i = 0; i < out * in; i++)
        wf[i] = (float)g_rand_double_range(rng, -1, 1);
    DqTensor t = {.name = "f32",
                  .file = "test",
                  .dtype = DQ_DTYPE_F32,
                  .ndim = 2,
                  .shape = {out, in},
                  .numel = out * in,
                  .data = wf,
                  .nbytes = sizeof(float) * out * in};
    DqWeight wc, wg;
    GError *err = NULL;
    g_assert_true(cpu->weight_init(cpu, &wc, &t, out, in, &err));
    g_assert_true(gpu->weight_init(gpu, &wg, &t, out, in, &err));
    dq_assert_no_error(err);
    Pair x = pair_new((size_t)n * in, 1), y = pair_new((size_t)n * out, 1);
    cpu->matmul(cpu, y.c, x.c, &wc, NULL, n);
    gpu->matmul(gpu, y.g, x.g, &wg, NULL, n);
    pair_check(&y, 1e-2, "matmul (F32 tensor)");
    /* A shape mismatch is an error, not a crash. */
    DqWeight bad;
    g_assert_false(gpu->weight_init(gpu, &bad, &t, out, in + 1, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_MODEL);
    g_clear_error(&err);
    pair_free(&x);
    pair_free(&y);
    cpu->weight_free(cpu, &wc);
    gpu->weight_free(gpu, &wg);
    g_free(wf);
}

static void test_norms(void) {
    if (!need_gpu())
        return;
    /* a warp a row where dim % 4 == 0 (the last block part-filled), a block a row else */
    const int shapes[][2] = {{1, 64},   {7, 576},   {33, 768}, {5, 1152},
                             {3, 2048}, {300, 768}, {9, 50},   {2, 4096}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int n = shapes[s][0], dim = shapes[s][1];
        Pair x = pair_new((size_t)n * dim, 3), y = pair_new((size_t)n * dim, 1);
        /* an offset so that the mean matters */
        for (size_t i = 0; i < x.n; i++)
            x.host[i] += 0.5f;
        cpu->upload(cpu, x.c, x.host, x.n);
        gpu->upload(gpu, x.g, x.host, x.n);
        WPair w = wpair_new(1, dim, 1), b = wpair_new(1, dim, 1);
        cpu->layernorm(cpu, y.c, x.c, &w.c, &b.c, n, dim, 1e-6f);
        gpu->layernorm(gpu, y.g, x.g, &w.g, &b.g, n, dim, 1e-6f);
        pair_check(&y, 1e-5, "layernorm");
        cpu->rmsnorm(cpu, y.c, x.c, &w.c, n, dim, 1e-5f);
        gpu->rmsnorm(gpu, y.g, x.g, &w.g, n, dim, 1e-5f);
        pair_check(&y, 1e-5, "rmsnorm");
        pair_free(&x);
        pair_free(&y);
        wpair_free(&w);
        wpair_free(&b);
    }
}

/* Plain tables of three thetas, then scaled ones (rope.h): linear's frequencies and yarn's, whose
 * attention factor multiplies cos and sin in the kernel. */
static void test_rope(void) {
    if (!need_gpu())
        return;
    const int cfg[][3] = {{5, 4, 16}, {40, 9, 64}, {17, 3, 64}, {3, 32, 64}};
    const double thetas[] = {10000.0, 100000.0, 273768.0};
    const SmolvlmRopeType types[] = {DQ_ROPE_DEFAULT, DQ_ROPE_LINEAR, DQ_ROPE_YARN};
    for (size_t s = 0; s < G_N_ELEMENTS(cfg); s++)
        for (size_t th = 0; th < G_N_ELEMENTS(thetas); th++)
            for (size_t ty = 0; ty < G_N_ELEMENTS(types); ty++) {
                int n = cfg[s][0], heads = cfg[s][1], hd = cfg[s][2];
                SmolvlmConfig c = {.head_dim = hd,
                                   .rope_theta = thetas[th],
                                   .max_position_embeddings = 8192,
                                   .rope_type = types[ty],
                                   .rope_factor = 4.0,
                                   .rope_beta_fast = 32,
                                   .rope_beta_slow = 1,
                                   .rope_truncate = TRUE,
                                   .rope_attention_factor =
                                       types[ty] == DQ_ROPE_YARN ? 0.1 * log(4.0) + 1 : 1};
                DqRope rope;
                dq_rope_init(&rope, &c);
                Pair x = pair_new((size_t)n * heads * hd, 2);
                int32_t *pos = g_new(int32_t, n);
                for (int r = 0; r < n; r++)
                    pos[r] = r == 0 ? 0 : g_rand_int_range(rng, 0, 8192);
                cpu->rope(cpu, x.c, pos, n, heads, hd, &rope);
                gpu->rope(gpu, x.g, pos, n, heads, hd, &rope);
                pair_check(&x, 1e-5, "rope");
                g_free(pos);
                pair_free(&x);
            }
}

static void check_attention(const DqAttention *a, size_t q_floats, size_t kv_floats, double tol,
                            const char *what) {
    Pair q = pair_new(q_floats, 1), k = pair_new(kv_floats, 1), v = pair_new(kv_floats, 1);
    Pair out = pair_new((size_t)a->n_seq * a->n_q * a->n_heads * a->head_dim, 1);
    cpu->attention(cpu, out.c, q.c, k.c, v.c, a);
    gpu->attention(gpu, out.g, q.g, k.g, v.g, a);
    pair_check(&out, tol, what);
    pair_free(&q);
    pair_free(&k);
    pair_free(&v);
    pair_free(&out);
}

static void test_attention_vision(void) {
    if (!need_gpu())
        return;
    /* Packed tiles, bidirectional: the SigLIP shapes (hd 64 and 72, the tiny models' 16) with
     * fewer patches (the flash kernel, float32), then real tiles of 1024 and 729 patches (from
     * DQ_CUDA_TC_MIN_ROWS rows the tensor-core kernel: bf16 inputs and probabilities, so bf16
     * accuracy, unless DOCQA_CUDA_F32=1 keeps the float32 flash kernel). */
    const int cfg[][4] = {{3, 100, 4, 64},  {2, 81, 3, 72},  {4, 37, 2, 16},
                          {1, 1024, 2, 64}, {3, 729, 2, 72}, {2, 300, 3, 16}};
    gboolean f32 = g_strcmp0(g_getenv("DOCQA_CUDA_F32"), "1") == 0;
    for (size_t s = 0; s < G_N_ELEMENTS(cfg); s++) {
        int T = cfg[s][0], P = cfg[s][1], H = cfg[s][2], hd = cfg[s][3], D = H * hd;
        DqAttention a = {.n_seq = T,
                         .n_q = P,
                         .n_kv = P,
                         .n_heads = H,
                         .n_kv_heads = H,
                         .head_dim = hd,
                         .q_stride = D,
                         .kv_stride = D,
                         .q_seq_stride = (size_t)P * D,
                         .kv_seq_stride = (size_t)P * D,
                         .causal = FALSE,
                         .scale = 1.0f / sqrtf((float)hd)};
        check_attention(&a, (size_t)T * P * D, (size_t)T * P * D,
                        P >= DQ_CUDA_TC_MIN_ROWS && !f32 ? 1e-2 : 2e-5, "attention (vision)");
    }
}

/* Attention without segments stages K and V in bf16 once (attn_mma16_kernel); the float32
 * ones, rounded tile by tile (attn_mma_kernel, DOCQA_CUDA_ATTN_STAGED=0), must give the same
 * bits: the same roundings in the same order. */
static void test_attention_staged(void) {
    if (!need_gpu())
        return;
    if (g_strcmp0(g_getenv("DOCQA_CUDA_F32"), "1") == 0) {
        g_test_skip("DOCQA_CUDA_F32=1: no tensor-core attention");
        return;
    }
    GError *err = NULL;
    DqBackend *plain = backend_with("DOCQA_CUDA_ATTN_STAGED", "0");
    /* {tiles, rows, heads, kv heads, hd, keys before (causal when > 0)}: 256M and 2.2B tiles,
     * heads of 32 and 48, and a prompt after a prefix with shared KV heads */
    const int cfg[][6] = {{3, 1024, 3, 3, 64, 0},
                          {2, 729, 2, 2, 72, 0},
                          {2, 200, 2, 2, 32, 0},
                          {1, 150, 2, 2, 48, 0},
                          {1, 300, 4, 2, 64, 37}};
    for (size_t i = 0; i < G_N_ELEMENTS(cfg); i++) {
        const int T = cfg[i][0], P = cfg[i][1], H = cfg[i][2], Hkv = cfg[i][3], hd = cfg[i][4];
        const int past = cfg[i][5], nkv = past + P, qd = H * hd, kvd = Hkv * hd;
        DqAttention a = {.n_seq = T,
                         .n_q = P,
                         .n_kv = nkv,
                         .n_heads = H,
                         .n_kv_heads = Hkv,
                         .head_dim = hd,
                         .q_stride = qd,
                         .kv_stride = kvd,
                         .q_seq_stride = (size_t)P * qd,
                         .kv_seq_stride = (size_t)nkv * kvd,
                         .q_pos0 = past,
                         .causal = past > 0,
                         .scale = 1.0f / sqrtf((float)hd)};
        const size_t nq = (size_t)T * P * qd, nk = (size_t)T * nkv * kvd;
        float *host[3] = {g_new(float, nq), g_new(float, nk), g_new(float, nk)};
        const size_t len[3] = {nq, nk, nk};
        float *bufs[2][4];
        DqBackend *be[2] = {gpu, plain};
        for (int b = 0; b < 2; b++)
            for (int j = 0; j < 4; j++)
                bufs[b][j] = be[b]->alloc(be[b], j < 3 ? len[j] : nq);
        for (int j = 0; j < 3; j++) {
            for (size_t e = 0; e < len[j]; e++)
                host[j][e] = (float)g_rand_double_range(rng, -2, 2);
            for (int b = 0; b < 2; b++)
                be[b]->upload(be[b], bufs[b][j], host[j], len[j]);
        }
        float *got[2] = {g_new(float, nq), g_new(float, nq)};
        for (int b = 0; b < 2; b++) {
            be[b]->attention(be[b], bufs[b][3], bufs[b][0], bufs[b][1], bufs[b][2], &a);
            be[b]->download(be[b], got[b], bufs[b][3], nq);
            g_assert_true(dq_backend_cuda_check(be[b], &err));
            dq_assert_no_error(err);
        }
        for (size_t e = 0; e < nq; e++)
            if (memcmp(&got[0][e], &got[1][e], sizeof(float)) != 0)
                g_error("attention (staged bf16), case %zu: element %zu is %.9g staged, %.9g "
                        "rounded tile by tile",
                        i, e, got[0][e], got[1][e]);
        for (int b = 0; b < 2; b++) {
            for (int j = 0; j < 4; j++)
                be[b]->release(be[b], bufs[b][j]);
            g_free(got[b]);
        }
        for (int j = 0; j < 3; j++)
            g_free(host[j]);
    }
    dq_backend_free(plain);
}

static void test_attention_causal(void) {
    if (!need_gpu())
        return;
    /* {n_q, cache length before, heads, kv heads, hd, cache capacity}: prefill from empty,
     * a chunk after a prefix, decode rows (1 and 3: the decode kernel), a long cache. */
    const int cfg[][6] = {{50, 0, 4, 2, 64, 64},       {33, 20, 9, 3, 64, 80},
                          {1, 41, 9, 3, 64, 64},       {3, 10, 32, 32, 64, 16},
                          {1, 1700, 9, 3, 64, 1800},   {5, 300, 4, 2, 16, 310},
                          {200, 1000, 4, 1, 72, 1300}, {300, 0, 9, 3, 64, 300},
                          {64, 0, 4, 2, 16, 64},       {130, 7, 3, 3, 128, 140}};
    gboolean f32 = g_strcmp0(g_getenv("DOCQA_CUDA_F32"), "1") == 0;
    for (size_t s = 0; s < G_N_ELEMENTS(cfg); s++) {
        int nq = cfg[s][0], len = cfg[s][1], H = cfg[s][2], Hkv = cfg[s][3], hd = cfg[s][4];
        int cap = MAX(cfg[s][5], len + nq);
        int qd = H * hd, kvd = Hkv * hd;
        DqAttention a = {.n_seq = 1,
                         .n_q = nq,
                         .n_kv = len + nq,
                         .n_heads = H,
                         .n_kv_heads = Hkv,
                         .head_dim = hd,
                         .q_stride = qd,
                         .kv_stride = kvd,
                         .q_pos0 = len,
                         .causal = TRUE,
                         .scale = 1.0f / sqrtf((float)hd)};
        /* prompts of DQ_CUDA_TC_MIN_ROWS rows and more: the tensor-core kernel (bf16) */
        check_attention(&a, (size_t)nq * qd, (size_t)cap * kvd,
                        nq >= DQ_CUDA_TC_MIN_ROWS && !f32 ? 1e-2 : 2e-5, "attention (causal)");
    }
    /* Rows wider than the packed width (kv_stride > Hkv * hd) and several sequences. */
    DqAttention a = {.n_seq = 3,
                     .n_q = 7,
                     .n_kv = 12,
                     .n_heads = 4,
                     .n_kv_heads = 2,
                     .head_dim = 32,
                     .q_stride = 160,
                     .kv_stride = 80,
                     .q_seq_stride = 7 * 160,
                     .kv_seq_stride = 12 * 80,
                     .q_pos0 = 5,
                     .causal = TRUE,
                     .scale = 0.2f};
    check_attention(&a, 3 * 7 * 160, 3 * 12 * 80, 2e-5, "attention (strided)");
}

/* float16 as F16C converts, and as the GPU's __float2half rounds (to nearest even). */
__attribute__((target("f16c"))) static uint16_t to_f16(float x) {
    return _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT);
}
__attribute__((target("f16c"))) static float from_f16(uint16_t h) {
    return _cvtsh_ss(h);
}

/* A float16 backend's operand: every value made exact in float16 on the host, so that the
 * reference (float32) and the GPU see the same numbers; a cache (`packed`) goes to the GPU as
 * the halves it holds, [cap] of them in the first half of its buffer, as kv_append writes them. */
static void pair_to_f16(Pair *p, gboolean packed) {
    for (size_t j = 0; j < p->n; j++)
        p->host[j] = from_f16(to_f16(p->host[j]));
    cpu->upload(cpu, p->c, p->host, p->n);
    if (!packed) {
        gpu->upload(gpu, p->g, p->host, p->n);
        return;
    }
    uint16_t *h = g_new0(uint16_t, p->n + 1);
    for (size_t j = 0; j < p->n; j++)
        h[j] = to_f16(p->host[j]);
    gpu->upload(gpu, p->g, (const float *)(const void *)h, (p->n + 1) / 2);
    g_free(h);
}

/* A float16 cache after the call: its halves are the reference's float32 values, to the bit
 * (rows appended from exact inputs, and the untouched ones). */
static void check_f16_cache(const Pair *p, const char *what) {
    float *want = g_new(float, MAX(p->n, 1));
    uint16_t *h = g_new0(uint16_t, p->n + 1);
    cpu->download(cpu, want, p->c, p->n);
    gpu->download(gpu, (float *)(void *)h, p->g, (p->n + 1) / 2);
    for (size_t j = 0; j < p->n; j++)
        if (from_f16(h[j]) != want[j])
            g_error("%s: float16 cache differs at %zu: gpu %.7g cpu %.7g", what, j, from_f16(h[j]),
                    want[j]);
    g_free(h);
    g_free(want);
}

/* attention_segments: a batch of sequences with their own caches in one call (the decode step's
 * batch, prompts of different lengths) against the reference's copy + attention a sequence.
 * On a backend with float16 caches (DOCQA_CUDA_KV_F16=1) the caches hold halves: they and the
 * new keys and values are made exact in float16 first (pair_to_f16). */
static void check_segments(int n_segs, const int (*seg)[2], int H, int Hkv, int hd,
                           const char *what) {
    int qd = H * hd, kvd = Hkv * hd, rows = 0;
    gboolean tc = FALSE; /* a prompt long enough for the tensor-core kernel (bf16) */
    for (int s = 0; s < n_segs; s++) {
        rows += seg[s][0];
        tc |= seg[s][0] >= DQ_CUDA_TC_MIN_ROWS;
    }
    tc &= g_strcmp0(g_getenv("DOCQA_CUDA_F32"), "1") != 0;
    Pair q = pair_new((size_t)rows * qd, 1), k = pair_new((size_t)rows * kvd, 1);
    Pair v = pair_new((size_t)rows * kvd, 1), out = pair_new((size_t)rows * qd, 0);
    Pair *kc = g_new(Pair, n_segs), *vc = g_new(Pair, n_segs);
    const gboolean f16 = gpu->kv_f16_stored;
    if (f16) {
        pair_to_f16(&k, FALSE);
        pair_to_f16(&v, FALSE);
    }
    DqAttnSegment *cs = g_new(DqAttnSegment, n_segs), *gs = g_new(DqAttnSegment, n_segs);
    for (int s = 0, r = 0; s < n_segs; r += seg[s][0], s++) {
        size_t cap = (size_t)(seg[s][1] + seg[s][0] + 3) * kvd; /* room past the end */
        kc[s] = pair_new(cap, 1);
        vc[s] = pair_new(cap, 1);
        if (f16) {
            pair_to_f16(&kc[s], TRUE);
            pair_to_f16(&vc[s], TRUE);
        }
        cs[s] = (DqAttnSegment){.k_cache = kc[s].c,
                                .v_cache = vc[s].c,
                                .row0 = r,
                                .n_q = seg[s][0],
                                .n_past = seg[s][1]};
        gs[s] = (DqAttnSegment){.k_cache = kc[s].g,
                                .v_cache = vc[s].g,
                                .row0 = r,
                                .n_q = seg[s][0],
                                .n_past = seg[s][1]};
    }
    DqAttention shape = {.n_heads = H,
                         .n_kv_heads = Hkv,
                         .head_dim = hd,
                         .q_stride = qd,
                         .kv_stride = kvd,
                         .scale = 1.0f / sqrtf((float)hd)};
    g_assert_nonnull(gpu->attention_segments); /* else this compares the loop with itself */
    dq_attention_segments(cpu, out.c, q.c, k.c, v.c, cs, n_segs, &shape);
    shape.kv_f16 = f16;
    dq_attention_segments(gpu, out.g, q.g, k.g, v.g, gs, n_segs, &shape);
    /* float16 caches hold the same (exact) values, and every kernel widens them to float32 */
    pair_check(&out, tc ? 1e-2 : 2e-5, what);
    /* Each decode segment again alone: its rows bit for bit as in the batch (the decode
     * kernel's runs of keys depend on the sequence, never on the batch's longest). */
    float *batched = g_new(float, out.n), *alone = g_new(float, out.n);
    gpu->download(gpu, batched, out.g, out.n);
    for (int s = 0; s < n_segs && n_segs > 1; s++) {
        if (seg[s][0] > 4)
            continue;
        dq_attention_segments(gpu, out.g, q.g, k.g, v.g, &gs[s], 1, &shape);
        gpu->download(gpu, alone, out.g, out.n);
        size_t at = (size_t)gs[s].row0 * qd, len = (size_t)seg[s][0] * qd;
        if (memcmp(alone + at, batched + at, len * sizeof(float)) != 0)
            g_error("%s: segment %d (%d rows after %d) differs alone and in its batch", what, s,
                    seg[s][0], seg[s][1]);
    }
    g_free(batched);
    g_free(alone);
    for (int s = 0; s < n_segs; s++) {
        if (f16) {
            check_f16_cache(&kc[s], "attention_segments: K cache");
            check_f16_cache(&vc[s], "attention_segments: V cache");
        } else {
            pair_check(&kc[s], 0, "attention_segments: K cache");
            pair_check(&vc[s], 0, "attention_segments: V cache");
        }
        pair_free(&kc[s]);
        pair_free(&vc[s]);
    }
    g_free(kc);
    g_free(vc);
    g_free(cs);
    g_free(gs);
    pair_free(&q);
    pair_free(&k);
    pair_free(&v);
    pair_free(&out);
}

static void test_attention_segments(void) {
    if (!need_gpu())
        return;
    /* {new rows, cached rows}: a decode step (one row each, a long and an empty cache), then
     * prompts and decode rows mixed (the flash grid sized by the longest, shorter ones idle). */
    const int decode[][2] = {{1, 0}, {1, 1700}, {1, 37}, {1, 31}, {1, 1}, {1, 300}};
    check_segments(G_N_ELEMENTS(decode), decode, 9, 3, 64, "attention_segments (decode)");
    const int mixed[][2] = {{70, 0}, {1, 500}, {33, 20}, {3, 9}, {1, 0}, {200, 130}};
    const int prompts[][2] = {{5, 0}, {33, 0}, {63, 0}}; /* the float32 kernels alone */
    check_segments(G_N_ELEMENTS(prompts), prompts, 9, 3, 64, "attention_segments (short)");
    check_segments(G_N_ELEMENTS(mixed), mixed, 9, 3, 64, "attention_segments (mixed)");
    check_segments(G_N_ELEMENTS(mixed), mixed, 4, 4, 72, "attention_segments (hd 72)");
    check_segments(G_N_ELEMENTS(decode), decode, 4, 2, 16, "attention_segments (hd 16)");
    /* decode rows by KV group: the 2.2B's heads (no sharing), and 8 query heads a KV head
     * with 3 rows a segment, more rows than a group block takes (the per-head kernel then) */
    check_segments(G_N_ELEMENTS(decode), decode, 32, 32, 64, "attention_segments (32 heads)");
    /* several decode rows whose keys cross a run of 256 (the last row sees a key of the next
     * run, the others none there), and lengths either side of a run's end */
    const int runs[][2] = {{4, 253}, {3, 600}, {2, 1000}, {1, 255}, {1, 256}, {1, 511}};
    check_segments(G_N_ELEMENTS(runs), runs, 9, 3, 64, "attention_segments (decode runs)");
    const int wide[][2] = {{3, 40}, {2, 700}, {1, 5}};
    check_segments(G_N_ELEMENTS(wide), wide, 8, 1, 64, "attention_segments (8 heads a KV head)");
}

/* The same cases over float16 caches: a second backend, made with DOCQA_CUDA_KV_F16=1 (off by
 * default), stands in for the shared one; each kernel reads halves (decode by group and by
 * head, the float32 flash kernel, the tensor-core kernels). */
static void test_attention_segments_f16(void) {
    if (!need_gpu())
        return;
    if (g_strcmp0(g_getenv("DOCQA_CUDA_F32"), "1") == 0) {
        g_test_skip("DOCQA_CUDA_F32=1: float32 caches only");
        return;
    }
    DqBackend *f16 = backend_with("DOCQA_CUDA_KV_F16", "1");
    g_assert_true(f16->kv_f16 && f16->kv_f16_stored);
    run_on(f16, test_attention_segments);
    dq_backend_free(f16);
}

static void test_elementwise(void) {
    if (!need_gpu())
        return;
    const size_t sizes[] = {1, 1000, 3 * 1024 * 77 + 5};
    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
        size_t n = sizes[s];
        Pair x = pair_new(n, 6), u = pair_new(n, 2);
        cpu->gelu_tanh(cpu, x.c, n);
        gpu->gelu_tanh(gpu, x.g, n);
        pair_check(&x, 1e-5, "gelu_tanh");
        cpu->silu_mul(cpu, x.c, u.c, n);
        gpu->silu_mul(gpu, x.g, u.g, n);
        pair_check(&x, 1e-5, "silu_mul");
        /* every hidden_act (vision and text MLPs) over [-14, 14], past gelu_10's and relu6's
         * clips, then the gated text MLP's act(gate) * up: the GPU's libm (erff, expf, tanhf,
         * log1pf: a few ulp) against the reference's */
        Pair w = pair_new(n, 14);
        float *in = g_memdup2(w.host, MAX(n, 1) * sizeof(float)); /* pair_check takes host */
        for (int a = 0; a < DQ_ACT_COUNT; a++) {
            cpu->upload(cpu, w.c, in, n);
            gpu->upload(gpu, w.g, in, n);
            cpu->act(cpu, w.c, n, (SmolvlmAct)a);
            gpu->act(gpu, w.g, n, (SmolvlmAct)a);
            pair_check(&w, 1e-5, act_ref_name((SmolvlmAct)a));
            cpu->mul(cpu, w.c, u.c, n);
            gpu->mul(gpu, w.g, u.g, n);
            pair_check(&w, 1e-5, "mul");
        }
        g_free(in);
        pair_free(&w);
        cpu->add(cpu, x.c, u.c, n);
        gpu->add(gpu, x.g, u.g, n);
        pair_check(&x, 1e-6, "add");
        pair_free(&x);
        pair_free(&u);
    }
}

static void test_add_broadcast(void) {
    if (!need_gpu())
        return;
    int outer = 5, rows = 49, cols = 24;
    Pair y = pair_new((size_t)outer * rows * cols, 1);
    WPair w = wpair_new(rows, cols, 1); /* bf16 on the GPU */
    cpu->add_broadcast(cpu, y.c, &w.c, outer);
    gpu->add_broadcast(gpu, y.g, &w.g, outer);
    pair_check(&y, 1e-6, "add_broadcast (weight)");
    /* an alloc()ed float32 matrix, as smolvlm's gathered position embeddings */
    Pair f = pair_new((size_t)rows * cols, 1);
    DqWeight fc = {.rows = rows, .cols = cols, .data = f.c};
    DqWeight fg = {.rows = rows, .cols = cols, .data = f.g};
    cpu->add_broadcast(cpu, y.c, &fc, outer);
    gpu->add_broadcast(gpu, y.g, &fg, outer);
    pair_check(&y, 1e-6, "add_broadcast (buffer)");
    pair_free(&f);
    pair_free(&y);
    wpair_free(&w);
}

static void test_layout(void) {
    if (!need_gpu())
        return;
    /* 384/14 (the last 6 pixel rows/cols unused) and 512/16, 2 tiles */
    const int geo[][2] = {{384, 14}, {512, 16}, {30, 7}};
    for (size_t s = 0; s < G_N_ELEMENTS(geo); s++) {
        int tile = geo[s][0], patch = geo[s][1], side = tile / patch, T = 2;
        size_t tb = (size_t)3 * tile * tile;
        Pair px = pair_new(dq_pixel_buffer_floats(T, 3, tile), 1);
        Pair out = pair_new((size_t)T * side * side * 3 * patch * patch, 1);
        /* Bytes and tables as the image processor leaves them, each tile its own table: the
         * reference's patchify reads them expanded, the GPU's looks them up. */
        uint8_t *bytes = g_new(uint8_t, T * tb);
        float *luts = g_new(float, T * 3 * 256);
        DqPixelTile tiles[2];
        for (size_t i = 0; i < T * tb; i++)
            bytes[i] = (uint8_t)g_rand_int_range(rng, 0, 256);
        for (int i = 0; i < T * 3 * 256; i++)
            luts[i] = (float)g_rand_double_range(rng, -1, 1);
        for (int t = 0; t < T; t++)
            tiles[t] = (DqPixelTile){bytes + t * tb, luts + t * 3 * 256, 0};
        dq_upload_pixels(cpu, px.c, tiles, T, 3, tile);
        dq_upload_pixels(gpu, px.g, tiles, T, 3, tile);
        cpu->patchify(cpu, out.c, px.c, T, 3, tile, patch);
        gpu->patchify(gpu, out.g, px.g, T, 3, tile, patch);
        pair_check(&out, 0, "patchify");
        g_free(bytes);
        g_free(luts);
        pair_free(&px);
        pair_free(&out);
    }
    const int shuf[][3] = {{32, 24, 4}, {27, 20, 3}, {6, 5, 2}};
    for (size_t s = 0; s < G_N_ELEMENTS(shuf); s++) {
        int side = shuf[s][0], dim = shuf[s][1], sc = shuf[s][2], T = 3;
        Pair in = pair_new((size_t)T * side * side * dim, 1);
        Pair out = pair_new((size_t)T * side * side * dim, 1);
        cpu->pixel_shuffle(cpu, out.c, in.c, T, side, dim, sc);
        gpu->pixel_shuffle(gpu, out.g, in.g, T, side, dim, sc);
        pair_check(&out, 0, "pixel_shuffle");
        pair_free(&in);
        pair_free(&out);
    }
}

/* Vision chunks through one pixel buffer, as smolvlm's encoder sends them: an upload runs on the
 * upload stream while the main stream still works on the chunk before, so the second upload
 * must wait for the first chunk's patchify, queued here behind a long run of other work (a
 * copy that did not wait would land before that patchify read the buffer). */
static void test_pixel_chunks(void) {
    if (!need_gpu())
        return;
    const int tile = 512, patch = 16, side = tile / patch, T = 4;
    const size_t tb = (size_t)3 * tile * tile, n_out = (size_t)T * side * side * 3 * patch * patch;
    Pair px = pair_new(dq_pixel_buffer_floats(T, 3, tile), 1);
    Pair out[2] = {pair_new(n_out, 1), pair_new(n_out, 1)};
    Pair busy = pair_new((size_t)1 << 26, 1e-3);
    uint8_t *bytes = g_new(uint8_t, 2 * T * tb);
    float lut[3 * 256];
    for (size_t i = 0; i < 2 * T * tb; i++)
        bytes[i] = (uint8_t)g_rand_int_range(rng, 0, 256);
    for (int i = 0; i < 3 * 256; i++)
        lut[i] = (float)g_rand_double_range(rng, -1, 1);
    DqPixelTile tiles[2][4];
    for (int k = 0; k < 2; k++)
        for (int t = 0; t < T; t++)
            tiles[k][t] = (DqPixelTile){bytes + (k * T + t) * tb, lut, 0};
    for (int k = 0; k < 2; k++) {
        dq_upload_pixels(cpu, px.c, tiles[k], T, 3, tile);
        cpu->patchify(cpu, out[k].c, px.c, T, 3, tile, patch);
        dq_upload_pixels(gpu, px.g, tiles[k], T, 3, tile);
        for (int i = 0; k == 0 && i < 32; i++)
            gpu->add(gpu, busy.g, busy.g, busy.n);
        gpu->patchify(gpu, out[k].g, px.g, T, 3, tile, patch);
    }
    pair_check(&out[0], 0, "patchify of the first chunk");
    pair_check(&out[1], 0, "patchify of the second chunk");
    g_free(bytes);
    pair_free(&busy);
    pair_free(&out[0]);
    pair_free(&out[1]);
    pair_free(&px);
}

/* More tiles in one upload than the pinned ring holds (200 tiles of 512: 157 MB of bytes, the
 * ring 128 MiB), queued on the upload stream behind a long run of work on the main stream, so
 * that the host laps the ring while the copies still wait. After the tables every part runs
 * across a slot boundary: a slot written again before the copy that crossed it had read it
 * (staging_ring.h) would show as wrong bytes in the buffer. */
static void test_pixel_ring(void) {
    if (!need_gpu())
        return;
    const int tile = 512, T = 200;
    const size_t tb = (size_t)3 * tile * tile, lut_n = (size_t)T * 3 * 256;
    const size_t nf = dq_pixel_buffer_floats(T, 3, tile);
    float *px = gpu->alloc(gpu, nf);
    g_assert_nonnull(px);
    Pair busy = pair_new((size_t)1 << 26, 0);
    uint8_t *bytes = g_new(uint8_t, T * tb);
    float *luts = g_new(float, lut_n), *back = g_new(float, nf);
    guint32 x = g_rand_int(rng) | 1;
    for (size_t i = 0; i < T * tb; i++) { /* xorshift: g_rand per byte would take seconds */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes[i] = (uint8_t)x;
    }
    for (size_t i = 0; i < lut_n; i++)
        luts[i] = (float)g_rand_double_range(rng, -1, 1);
    DqPixelTile *tiles = g_new(DqPixelTile, T);
    for (int t = 0; t < T; t++)
        tiles[t] = (DqPixelTile){bytes + t * tb, luts + (size_t)t * 3 * 256, 0};
    for (int i = 0; i < 400; i++)
        gpu->add(gpu, busy.g, busy.g, busy.n);
    dq_upload_pixels(gpu, px, tiles, T, 3, tile);
    gpu->download(gpu, back, px, nf);
    GError *err = NULL;
    g_assert_true(dq_backend_cuda_check(gpu, &err));
    dq_assert_no_error(err);
    g_assert_cmpmem(back, lut_n * sizeof(float), luts, lut_n * sizeof(float));
    const uint8_t *got = (const uint8_t *)(back + lut_n);
    for (size_t i = 0; i < T * tb; i++)
        if (got[i] != bytes[i])
            g_error("pixel upload over the ring: byte %zu of the tiles (tile %zu) is %u, not %u", i,
                    i / tb, got[i], bytes[i]);
    gpu->release(gpu, px);
    pair_free(&busy);
    g_free(tiles);
    g_free(bytes);
    g_free(luts);
    g_free(back);
}

/* argmax_rows against the reference on rows a greedy step could meet: ties (the first index
 * wins), NaN (never wins, except at index 0, where the sequential scan never leaves it), all
 * -inf, infinities, signed zeros; and more rows than one launch takes. */
static void check_argmax(int n, int cols, const char *what) {
    Pair x = pair_new((size_t)n * cols, 10);
    float *h = x.host;
    const float inf = INFINITY, nan = NAN;
    if (n >= 8 && cols >= 200) {
        float *r[8];
        for (int i = 0; i < 8; i++)
            r[i] = h + (size_t)i * cols;
        for (int k = 0; k < cols; k++) {
            r[0][k] = 1.0f;
            r[3][k] = k % 3 == 1 ? nan : -1.0f;
            r[4][k] = -inf;
            r[5][k] = -inf;
            r[7][k] = -1.0f;
        }
        r[1][100] = r[1][cols - 50] = 1e6f;
        r[2][0] = nan;
        r[2][5] = 1e6f;
        r[3][cols - 1] = 2.0f;
        r[5][150] = -1e30f;
        r[6][3] = r[6][7] = inf;
        r[7][5] = -0.0f;
        r[7][2] = 0.0f;
    }
    cpu->upload(cpu, x.c, h, x.n);
    gpu->upload(gpu, x.g, h, x.n);
    int32_t *want = g_new(int32_t, n), *got = g_new(int32_t, n);
    cpu->argmax_rows(cpu, want, x.c, n, cols);
    gpu->argmax_rows(gpu, got, x.g, n, cols);
    GError *err = NULL;
    g_assert_true(dq_backend_cuda_check(gpu, &err));
    if (n >= 8 && cols >= 200) {
        const int expect[8] = {0, 100, 0, cols - 1, 0, 150, 3, 2};
        for (int i = 0; i < 8; i++)
            g_assert_cmpint(want[i], ==, expect[i]);
    }
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            g_error("argmax_rows (%s) row %d: %d, the reference %d", what, i, got[i], want[i]);
    g_free(want);
    g_free(got);
    pair_free(&x);
}

static void test_argmax_rows(void) {
    if (!need_gpu())
        return;
    check_argmax(70, 49152, "a decode step's logits");
    check_argmax(1500, 37, "more rows than a launch");
}

static void test_embed(void) {
    if (!need_gpu())
        return;
    int vocab = 1000, dim = 96, n = 77;
    WPair table = wpair_new(vocab, dim, 1);
    int32_t *ids = g_new(int32_t, n);
    for (int i = 0; i < n; i++)
        ids[i] = i == 0 ? vocab - 1 : g_rand_int_range(rng, 0, vocab);
    Pair out = pair_new((size_t)n * dim, 1);
    cpu->embed(cpu, out.c, &table.c, ids, n);
    gpu->embed(gpu, out.g, &table.g, ids, n);
    pair_check(&out, 0, "embed (bf16 table: exact)");
    g_free(ids);
    pair_free(&out);
    wpair_free(&table);
}

static void test_memory(void) {
    if (!need_gpu())
        return;
    /* alloc() is zero-filled, copy() and a large upload/download round trip are exact, and
     * released blocks are reused (the pool) rather than leaked. */
    size_t n = (size_t)9 << 20; /* 36 MB: more than the pinned ring */
    float *a = gpu->alloc(gpu, n), *b = gpu->alloc(gpu, n);
    float *host = g_new(float, n), *back = g_new(float, n);
    gpu->download(gpu, back, a, n);
    for (size_t i = 0; i < n; i += 4099)
        g_assert_cmpfloat(back[i], ==, 0.0f);
    for (size_t i = 0; i < n; i++)
        host[i] = (float)i * 0.5f;
    gpu->upload(gpu, a, host, n);
    gpu->copy(gpu, b, a, n);
    gpu->download(gpu, back, b, n);
    g_assert_cmpmem(back, n * sizeof(float), host, n * sizeof(float));
    gpu->release(gpu, b);
    float *c = gpu->alloc(gpu, n);
    g_assert_true(c == b); /* the same size class comes back from the pool */
    gpu->release(gpu, a);
    gpu->release(gpu, c);
    g_free(host);
    g_free(back);
    GError *err = NULL;
    g_assert_true(dq_backend_cuda_check(gpu, &err));
    dq_assert_no_error(err);
}

/* ---- the whole model: tiny snapshots from ../shared on both devices */

/* Generates for each image (one request each, batched together), max_new greedy tokens; with
 * want_logits, each request's last prompt logits come back (else its first token is picked on
 * the device, as the later ones are). */
static void generate_pages(SmolvlmPipeline *p, DqImage **imgs, int n, int max_new,
                           gboolean want_logits, DqGenerateResult *res) {
    SmolvlmPrompt *prompts = g_new0(SmolvlmPrompt, n);
    SmolvlmRequest *reqs = g_new0(SmolvlmRequest, n);
    SmolvlmPrepareOptions po = {.n_res = 2};
    GError *err = NULL;
    for (int i = 0; i < n; i++) {
        g_assert_true(smolvlm_prompt_build(p, (const DqImage *const *)&imgs[i], 1,
                                           "What is the date?", NULL, &po, &prompts[i], &err));
        dq_assert_no_error(err);
        smolvlm_request_init(p, &prompts[i], &reqs[i]);
        reqs[i].options.do_sample = FALSE;
        reqs[i].options.max_new_tokens = max_new;
        reqs[i].options.ignore_eos = TRUE;
        reqs[i].want_logits = want_logits;
    }
    g_assert_true(smolvlm_generate(p->model, reqs, n, res, NULL, &err));
    dq_assert_no_error(err);
    g_assert_true(dq_backend_cuda_check(smolvlm_backend(p->model), &err));
    dq_assert_no_error(err);
    for (int i = 0; i < n; i++)
        smolvlm_prompt_clear(&prompts[i]);
    g_free(prompts);
    g_free(reqs);
}

static void test_model(void) {
    if (!need_gpu())
        return;
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tiny models are not here");
        return;
    }
    const char *snaps[] = {"tiny-smolvlm-b512", "tiny-smolvlm-a384-v1tok-bf16"};
    const char *pages[] = {"portrait_page.png", "gray_receipt.png", "small_chart.png"};
    DqImage *imgs[3];
    GError *err = NULL;
    for (int i = 0; i < 3; i++) {
        char *path = g_build_filename(shared, "fixtures", "images", pages[i], NULL);
        imgs[i] = dq_image_load(path, DQ_EXIF_APPLY, &err);
        dq_assert_no_error(err);
        g_free(path);
    }
    for (size_t s = 0; s < G_N_ELEMENTS(snaps); s++) {
        char *dir = g_build_filename(shared, "models", snaps[s], NULL);
        SmolvlmPipeline *pc = smolvlm_pipeline_open(dir, &(SmolvlmOptions){.device = "cpu"}, &err);
        dq_assert_no_error(err);
        SmolvlmPipeline *pg = smolvlm_pipeline_open(dir, &(SmolvlmOptions){.device = "cuda"}, &err);
        dq_assert_no_error(err);
        int vocab = smolvlm_config(pc->model)->vocab_size, max_new = 6;
        DqGenerateResult rc[1] = {0}, alone[1] = {0}, batch[3] = {{0}};
        generate_pages(pc, imgs, 1, max_new, TRUE, rc);
        generate_pages(pg, imgs, 1, max_new, TRUE, alone);
        /* The GPU against the CPU: logits within bf16 accuracy of the logits' scale. */
        double worst = 0, scale = 1;
        for (int v = 0; v < vocab; v++) {
            scale = MAX(scale, fabs(rc[0].last_logits[v]));
            worst = MAX(worst, fabs(rc[0].last_logits[v] - alone[0].last_logits[v]));
        }
        g_test_message("%s: last-prompt logits max |gpu - cpu| = %.3g (scale %.3g)", snaps[s],
                       worst, scale);
        if (!(worst <= 6e-2 * scale))
            g_error("%s: logits differ by %.3g (scale %.3g)", snaps[s], worst, scale);
        int agree = 0;
        while (agree < rc[0].n_output_ids && agree < alone[0].n_output_ids &&
               rc[0].output_ids[agree] == alone[0].output_ids[agree])
            agree++;
        g_test_message("%s: greedy ids agree for %d of %d steps", snaps[s], agree, max_new);
        /* A request's tokens and logits do not depend on its batch-mates: bit-identical alone
         * and first in a batch of three different pages. */
        generate_pages(pg, imgs, 3, max_new, TRUE, batch);
        g_assert_cmpint(batch[0].n_output_ids, ==, alone[0].n_output_ids);
        g_assert_cmpmem(batch[0].output_ids, batch[0].n_output_ids * sizeof(int32_t),
                        alone[0].output_ids, alone[0].n_output_ids * sizeof(int32_t));
        g_assert_cmpmem(batch[0].last_logits, vocab * sizeof(float), alone[0].last_logits,
                        vocab * sizeof(float));
        /* The first tokens picked on the GPU (argmax_rows) are those of the logits. */
        DqGenerateResult ids[3] = {{0}};
        generate_pages(pg, imgs, 3, max_new, FALSE, ids);
        for (int i = 0; i < 3; i++) {
            g_assert_null(ids[i].last_logits);
            g_assert_cmpint(ids[i].n_output_ids, ==, batch[i].n_output_ids);
            g_assert_cmpmem(ids[i].output_ids, ids[i].n_output_ids * sizeof(int32_t),
                            batch[i].output_ids, batch[i].n_output_ids * sizeof(int32_t));
            dq_generate_result_clear(&ids[i]);
        }
        dq_generate_result_clear(&rc[0]);
        dq_generate_result_clear(&alone[0]);
        for (int i = 0; i < 3; i++)
            dq_generate_result_clear(&batch[i]);
        smolvlm_pipeline_free(pc);
        smolvlm_pipeline_free(pg);
        g_free(dir);
    }
    for (int i = 0; i < 3; i++)
        dq_image_free(imgs[i]);
}

/* ---- the decode step as a CUDA graph: the same results as plain launches, bit for bit */

/* A snapshot of ../shared's models by name, or a test's own (a directory). */
static SmolvlmPipeline *open_gpu_pipeline(const char *snap) {
    char *dir = g_path_is_absolute(snap)
                    ? g_strdup(snap)
                    : g_build_filename(dq_test_shared_dir(), "models", snap, NULL);
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(dir, &(SmolvlmOptions){.device = "cuda"}, &err);
    dq_assert_no_error(err);
    g_free(dir);
    return p;
}

static void graph_stats_print(DqBackend *be, const char *snap, DqCudaGraphStats *st) {
    g_assert_true(dq_backend_cuda_graph_stats(be, st));
    g_test_message("%s: graphs instantiated %d, updated %d (refused %d), replayed %d, failed %d",
                   snap, st->instantiated, st->updated, st->update_refused, st->replayed,
                   st->failed);
}

/* A text prompt of n ids for sequence s (no <image> id). */
static void prompt_ids(const SmolvlmConfig *cfg, int s, int32_t *ids, int n) {
    for (int i = 0; i < n; i++) {
        ids[i] = (int32_t)(((uint64_t)s * 7919 + (uint64_t)i * 104729 + 17) % cfg->vocab_size);
        if (ids[i] == cfg->image_token_id)
            ids[i] = (ids[i] + 1) % cfg->vocab_size;
    }
}

/* Three sequences decoded step by step through smolvlm_forward (plain launches) and through
 * smolvlm_forward_step with graphs on, each on its own KV caches: the second joins at step 2,
 * the third at step 4, the first leaves after step 8 (batch shapes 1, 2, 3, then 2 again: a
 * graph kept for a shape is updated after another shape ran). Each step feeds the plain run's
 * greedy pick to both, and the logits of every row must be equal bit for bit. */
static void graph_forward_case(const char *snap) {
    SmolvlmPipeline *p = open_gpu_pipeline(snap);
    Smolvlm *m = p->model;
    DqBackend *be = smolvlm_backend(m);
    const SmolvlmConfig *cfg = smolvlm_config(m);
    const int n_seq = 3, prompt = 5, steps = 12, V = cfg->vocab_size;
    const int join[3] = {0, 2, 4}, leave[3] = {8, steps, steps};
    GError *err = NULL;
    SmolvlmKV *kv[2][3];
    SmolvlmWorkspace *ws = smolvlm_workspace_new(m, prompt, &err);
    dq_assert_no_error(err);
    float *logits[2][3];
    int32_t next[3], ids[5];
    for (int r = 0; r < 2; r++)
        for (int s = 0; s < n_seq; s++) {
            kv[r][s] = smolvlm_kv_new(m, prompt + steps, &err);
            dq_assert_no_error(err);
            logits[r][s] = g_new0(float, V);
            /* The prompt, plainly (prefill is never recorded). */
            dq_backend_cuda_set_graphs(be, FALSE);
            int cursor = 0;
            prompt_ids(cfg, s, ids, prompt);
            g_assert_true(smolvlm_embed(m, ws, 0, ids, prompt, NULL, 0, &cursor, &err));
            SmolvlmSegment seg = {.kv = kv[r][s], .n_rows = prompt, .logits = logits[r][s]};
            g_assert_true(smolvlm_forward(m, ws, &seg, 1, &err));
            dq_assert_no_error(err);
        }
    for (int s = 0; s < n_seq; s++) {
        g_assert_cmpmem(logits[0][s], V * 4, logits[1][s], V * 4);
        next[s] = dq_sample_token(logits[0][s], V, &(DqGenerateOptions){0}, NULL, NULL);
    }
    int replays = 0;
    for (int t = 0; t < steps; t++) {
        for (int r = 0; r < 2; r++) {
            SmolvlmSegment segs[3];
            int n = 0;
            for (int s = 0; s < n_seq; s++) {
                if (t < join[s] || t >= leave[s])
                    continue;
                int cursor = 0;
                g_assert_true(smolvlm_embed(m, ws, n, &next[s], 1, NULL, 0, &cursor, &err));
                segs[n++] = (SmolvlmSegment){.kv = kv[r][s], .n_rows = 1, .logits = logits[r][s]};
            }
            g_assert_cmpint(n, <=, prompt);
            dq_backend_cuda_set_graphs(be, r == 1);
            if (r == 0)
                g_assert_true(smolvlm_forward(m, ws, segs, n, &err));
            else
                g_assert_true(smolvlm_forward_step(m, ws, segs, n, &err));
            dq_assert_no_error(err);
            replays += r == 1;
        }
        g_assert_true(dq_backend_cuda_check(be, &err));
        dq_assert_no_error(err);
        for (int s = 0; s < n_seq; s++) {
            if (t < join[s] || t >= leave[s])
                continue;
            g_assert_cmpint(smolvlm_kv_len(kv[0][s]), ==, smolvlm_kv_len(kv[1][s]));
            if (memcmp(logits[0][s], logits[1][s], (size_t)V * 4) != 0)
                g_error("%s: step %d, sequence %d: logits with graphs differ from without", snap, t,
                        s);
            next[s] = dq_sample_token(logits[0][s], V, &(DqGenerateOptions){0}, NULL, NULL);
        }
    }
    DqCudaGraphStats st;
    graph_stats_print(be, snap, &st);
    g_assert_cmpint(st.failed, ==, 0);
    g_assert_cmpint(st.replayed, ==, replays); /* every graphed step ran as a graph */
    g_assert_cmpint(st.updated, >, 0);         /* and known shapes were updated, not rebuilt */
    for (int r = 0; r < 2; r++)
        for (int s = 0; s < n_seq; s++) {
            smolvlm_kv_free(m, kv[r][s]);
            g_free(logits[r][s]);
        }
    smolvlm_workspace_free(m, ws);
    smolvlm_pipeline_free(p);
}

static void test_graph_forward(void) {
    if (!need_gpu())
        return;
    if (dq_test_shared_dir() == NULL) {
        g_test_skip("../shared is absent: the tiny models are not here");
        return;
    }
    graph_forward_case("tiny-smolvlm-b512");
    graph_forward_case("tiny-smolvlm-a384-v1tok-bf16");
}

typedef struct {
    SmolvlmPrompt prompt;
    SmolvlmRequest req;
} GraphCase;

/* A joins alone; after 3 steps B and C join; D takes the first slot that frees. Sampled
 * (temperature 1, own seeds), so the tokens follow the decode logits closely. res[i] gets the
 * result of request i. */
static void join_midway_run(SmolvlmPipeline *p, GraphCase *cs, DqGenerateResult *res) {
    GError *err = NULL;
    DqGenerator *g = dq_generator_new(p->model, 3, 0, &err);
    dq_assert_no_error(err);
    int slot_of[4] = {-1, -1, -1, -1}, slots[2], n_done = 0;
    g_assert_true(dq_generator_add(g, &cs[0].req, 1, slots, &err));
    slot_of[0] = slots[0];
    for (int i = 0; i < 3; i++)
        g_assert_true(dq_generator_step(g, &err));
    SmolvlmRequest two[2] = {cs[1].req, cs[2].req};
    g_assert_true(dq_generator_add(g, two, 2, slots, &err));
    dq_assert_no_error(err);
    slot_of[1] = slots[0];
    slot_of[2] = slots[1];
    DqGeneratorDone done[3];
    while (n_done < 4) {
        g_assert_cmpint(dq_generator_n_active(g), >, 0);
        g_assert_true(dq_generator_step(g, &err));
        dq_assert_no_error(err);
        int k = dq_generator_take_finished(g, done, 3);
        for (int i = 0; i < k; i++) {
            int which = -1;
            for (int j = 0; j < 4; j++)
                if (slot_of[j] == done[i].slot && res[j].output_ids == NULL)
                    which = j;
            g_assert_cmpint(which, >=, 0);
            res[which] = done[i].result;
            n_done++;
        }
        if (k > 0 && slot_of[3] < 0) {
            g_assert_true(dq_generator_add(g, &cs[3].req, 1, slots, &err));
            slot_of[3] = slots[0];
        }
    }
    g_assert_true(dq_backend_cuda_check(smolvlm_backend(p->model), &err));
    dq_assert_no_error(err);
    dq_generator_free(g);
}

/* The four requests of join_midway_run, sampled (temperature 1, each its own seed) so that the
 * tokens follow the decode logits closely. */
static void graph_cases_init(SmolvlmPipeline *p, GraphCase *cs) {
    const char *images[4] = {"portrait_page.png", "banner_wide.png", NULL, "logo_rgba.png"};
    const char *questions[4] = {"What is the title?", "Who wrote it?", "Say hello.",
                                "What colour is it?"};
    const int max_new[4] = {10, 4, 7, 5};
    GError *err = NULL;
    for (int i = 0; i < 4; i++) {
        DqImage *img = NULL;
        if (images[i] != NULL) {
            char *path = g_build_filename(dq_test_source_dir(), "tests", "fixtures", "images",
                                          images[i], NULL);
            img = dq_image_load(path, DQ_EXIF_APPLY, &err);
            dq_assert_no_error(err);
            g_free(path);
        }
        SmolvlmPrepareOptions po = {.n_res = 1};
        g_assert_true(smolvlm_prompt_build(p, (const DqImage *const *)&img, img ? 1 : 0,
                                           questions[i], NULL, &po, &cs[i].prompt, &err));
        dq_assert_no_error(err);
        if (img != NULL)
            dq_image_free(img);
        smolvlm_request_init(p, &cs[i].prompt, &cs[i].req);
        cs[i].req.options.do_sample = TRUE;
        cs[i].req.options.temperature = 1.0;
        cs[i].req.options.top_k = 0;
        cs[i].req.options.top_p = 1.0;
        cs[i].req.options.seed = 1000 + (uint64_t)i;
        cs[i].req.options.ignore_eos = TRUE;
        cs[i].req.options.max_new_tokens = max_new[i];
        cs[i].req.want_logits = TRUE;
    }
}

/* Both runs gave each request the same tokens and prompt logits; clears them and the cases. */
static void graph_results_compare(GraphCase *cs, DqGenerateResult *a, DqGenerateResult *b, int V) {
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(a[i].n_output_ids, ==, cs[i].req.options.max_new_tokens);
        g_assert_cmpint(a[i].n_output_ids, ==, b[i].n_output_ids);
        g_assert_cmpmem(a[i].output_ids, a[i].n_output_ids * 4, b[i].output_ids,
                        b[i].n_output_ids * 4);
        g_assert_cmpmem(a[i].last_logits, V * 4, b[i].last_logits, V * 4);
        dq_generate_result_clear(&a[i]);
        dq_generate_result_clear(&b[i]);
        smolvlm_prompt_clear(&cs[i].prompt);
    }
}

static void graph_generator_case(const char *snap) {
    SmolvlmPipeline *p = open_gpu_pipeline(snap);
    DqBackend *be = smolvlm_backend(p->model);
    GraphCase cs[4];
    graph_cases_init(p, cs);
    DqGenerateResult plain[4] = {{0}}, graphed[4] = {{0}};
    dq_backend_cuda_set_graphs(be, FALSE);
    join_midway_run(p, cs, plain);
    DqCudaGraphStats before;
    g_assert_true(dq_backend_cuda_graph_stats(be, &before));
    dq_backend_cuda_set_graphs(be, TRUE);
    join_midway_run(p, cs, graphed);
    DqCudaGraphStats st;
    graph_stats_print(be, snap, &st);
    g_assert_cmpint(st.failed, ==, before.failed);
    g_assert_cmpint(st.replayed - before.replayed, >, 0);
    graph_results_compare(cs, graphed, plain, smolvlm_config(p->model)->vocab_size);
    smolvlm_pipeline_free(p);
}

static void test_graph_generator(void) {
    if (!need_gpu())
        return;
    if (dq_test_shared_dir() == NULL) {
        g_test_skip("../shared is absent: the tiny models are not here");
        return;
    }
    graph_generator_case("tiny-smolvlm-b512");
    graph_generator_case("tiny-smolvlm-a384-v1tok-bf16");
}

/* Fake graph hooks on a CPU backend: a "recording" runs nothing (the ops are swapped for
 * no-ops, downloads fill NaN) and always fails, as a failed stream capture does; graph_begin
 * refuses every third step. smolvlm_forward_step must then redo each recorded step plainly,
 * the KV lengths restored, so that the tokens equal those of plain steps. */
static DqBackend fake_saved;
static int fake_begins, fake_redos;

static void nop_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w,
                       const DqWeight *bias, int n) {}
static void nop_rmsnorm(DqBackend *be, float *y, const float *x, const DqWeight *w, int n, int dim,
                        float eps) {}
static void nop_rope(DqBackend *be, float *x, const int32_t *pos, int n, int n_heads, int head_dim,
                     const DqRope *rope) {}
static void nop_attention(DqBackend *be, float *out, const float *q, const float *k, const float *v,
                          const DqAttention *a) {}
static void nop_copy(DqBackend *be, float *dst, const float *src, size_t n) {}
static void nop_add(DqBackend *be, float *y, const float *x, size_t n) {}
static void nop_silu_mul(DqBackend *be, float *gate, const float *up, size_t n) {}
static void nan_download(DqBackend *be, float *host_dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        host_dst[i] = NAN;
}

static gboolean fake_graph_begin(DqBackend *be, uint64_t key) {
    g_assert_cmpuint(key, !=, 0);
    if (fake_begins++ % 3 == 2)
        return FALSE;
    fake_saved = *be;
    be->matmul = nop_matmul;
    be->rmsnorm = nop_rmsnorm;
    be->rope = nop_rope;
    be->attention = nop_attention;
    be->copy = nop_copy;
    be->add = nop_add;
    be->silu_mul = nop_silu_mul;
    be->download = nan_download;
    return TRUE;
}

static gboolean fake_graph_end(DqBackend *be, gboolean run) {
    g_assert_true(run);
    gboolean (*begin)(DqBackend *, uint64_t) = be->graph_begin;
    gboolean (*end)(DqBackend *, gboolean) = be->graph_end;
    *be = fake_saved;
    be->graph_begin = begin;
    be->graph_end = end;
    fake_redos++;
    return FALSE;
}

static void test_graph_redo_cpu(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tiny models are not here");
        return;
    }
    char *dir = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(dir, &(SmolvlmOptions){.device = "cpu"}, &err);
    dq_assert_no_error(err);
    g_free(dir);
    DqBackend *be = smolvlm_backend(p->model);
    g_assert_null(be->graph_begin); /* the CPU backends record nothing */
    GraphCase cs[4];
    graph_cases_init(p, cs);
    DqGenerateResult plain[4] = {{0}}, redone[4] = {{0}};
    join_midway_run(p, cs, plain);
    be->graph_begin = fake_graph_begin;
    be->graph_end = fake_graph_end;
    join_midway_run(p, cs, redone);
    be->graph_begin = NULL;
    be->graph_end = NULL;
    g_test_message("fake graphs: %d steps, %d redone", fake_begins, fake_redos);
    g_assert_cmpint(fake_redos, >, 2);
    g_assert_cmpint(fake_redos, <, fake_begins);
    graph_results_compare(cs, redone, plain, smolvlm_config(p->model)->vocab_size);
    smolvlm_pipeline_free(p);
}

/* ---- recorded steps at the op level */

/* A recording that is dropped (graph_end without run) ran nothing, not even the copy of RoPE's
 * frequency table that it recorded, so the next plain rope must still copy the table: on a fresh
 * backend whose first rope is recorded, after a plain rope with another theta, and (third
 * round) after a recording that was replayed. */
static void test_graph_rope_dropped(void) {
    if (!need_gpu())
        return;
    DqBackend *be = backend_with("DOCQA_CUDA_GRAPHS", "1"), *shared = gpu;
    gpu = be; /* the pairs' GPU side */
    const int n = 6, heads = 3, hd = 64;
    const double thetas[3] = {10000.0, 100000.0, 10000.0};
    const int32_t pos[6] = {0, 1, 7, 100, 2000, 8191};
    for (int t = 0; t < 3; t++) {
        Pair x = pair_new((size_t)n * heads * hd, 2);
        const gboolean run = t == 2;
        DqRope rope;
        dq_rope_plain(&rope, thetas[t], hd);
        g_assert_true(be->graph_begin(be, 42));
        be->rope(be, x.g, pos, n, heads, hd, &rope);
        g_assert_true(be->graph_end(be, run) == run);
        if (run)
            cpu->rope(cpu, x.c, pos, n, heads, hd, &rope);
        cpu->rope(cpu, x.c, pos, n, heads, hd, &rope);
        be->rope(be, x.g, pos, n, heads, hd, &rope);
        pair_check(&x, 1e-5,
                   run ? "rope after a replayed recording" : "rope after a dropped recording");
        pair_free(&x);
    }
    gpu = shared;
    dq_backend_free(be);
}

/* Decode steps recorded under one key whose shape alternates: a segment's keys within one run
 * of 256, then across two (attn_decode_merge_kernel and the runs' states join the step). Every
 * replay gives the bits of plain launches, and each shape keeps a graph of its own, updated in
 * place from then on (the key alone made each change of shape a refused update and a new
 * graph). */
static void test_graph_decode_runs(void) {
    if (!need_gpu())
        return;
    DqBackend *be = backend_with("DOCQA_CUDA_GRAPHS", "1"), *shared = gpu;
    gpu = be;
    const int H = 9, Hkv = 3, hd = 64, qd = H * hd, kvd = Hkv * hd, cap = 700;
    const int past[2][2] = {{100, 50}, {400, 50}}; /* kv_max 101: one run; 401: two */
    Pair q = pair_new(2 * (size_t)qd, 1), k = pair_new(2 * (size_t)kvd, 1);
    Pair v = pair_new(2 * (size_t)kvd, 1), out = pair_new(2 * (size_t)qd, 0);
    Pair kc[2], vc[2];
    for (int s = 0; s < 2; s++) {
        kc[s] = pair_new((size_t)cap * kvd, 1);
        vc[s] = pair_new((size_t)cap * kvd, 1);
    }
    DqAttention shape = {.n_heads = H,
                         .n_kv_heads = Hkv,
                         .head_dim = hd,
                         .q_stride = qd,
                         .kv_stride = kvd,
                         .scale = 1.0f / sqrtf((float)hd)};
    float *zero = g_new0(float, out.n), *want[2], *got = g_new(float, out.n);
    /* Plainly first: the reference bits, and the runs' states' block left in the pool (a
     * recording cannot allocate one). */
    for (int step = 0; step < 8; step++) {
        const int sh = step % 2, plain = step < 2;
        DqAttnSegment gs[2];
        for (int s = 0; s < 2; s++)
            gs[s] = (DqAttnSegment){
                .k_cache = kc[s].g, .v_cache = vc[s].g, .row0 = s, .n_q = 1, .n_past = past[sh][s]};
        be->upload(be, out.g, zero, out.n);
        if (!plain)
            g_assert_true(be->graph_begin(be, 7));
        dq_attention_segments(be, out.g, q.g, k.g, v.g, gs, 2, &shape);
        if (!plain)
            g_assert_true(be->graph_end(be, TRUE));
        be->download(be, got, out.g, out.n);
        if (plain) {
            want[sh] = g_memdup2(got, out.n * sizeof(float));
        } else if (memcmp(got, want[sh], out.n * sizeof(float)) != 0) {
            g_error("decode step %d (%d keys): the replayed graph's output differs from plain "
                    "launches",
                    step, past[sh][0] + 1);
        }
    }
    GError *err = NULL;
    g_assert_true(dq_backend_cuda_check(be, &err));
    dq_assert_no_error(err);
    DqCudaGraphStats st;
    graph_stats_print(be, "decode runs", &st);
    g_assert_cmpint(st.failed, ==, 0);
    g_assert_cmpint(st.replayed, ==, 6);
    g_assert_cmpint(st.instantiated, ==, 2); /* one a shape */
    g_assert_cmpint(st.update_refused, ==, 0);
    g_assert_cmpint(st.updated, ==, 4);
    for (int s = 0; s < 2; s++) {
        pair_free(&kc[s]);
        pair_free(&vc[s]);
    }
    pair_free(&q);
    pair_free(&k);
    pair_free(&v);
    pair_free(&out);
    g_free(want[0]);
    g_free(want[1]);
    g_free(got);
    g_free(zero);
    gpu = shared;
    dq_backend_free(be);
}

/* ---- session 33's model paths, which no GPU has run */

/* tiny-smolvlm-b512 with what session 33 taught the model: text_config.attention_bias and
 * mlp_bias (the biases appended to model.safetensors, entry i of bias k of layer l
 * ((37 i + 11 l + 5 k) % 41 - 20) / 100 as test_generator's /generator/biases makes them),
 * hidden_act "gelu" in both configs (the vision MLP's erf GELU out of the product; the text MLP
 * GELU-gated: act, then mul) and yarn's rope_scaling, whose attention factor multiplies cos
 * and sin. */
static char *variant_snapshot(void) {
    const char *const edits[][2] = {
        {"\"attention_bias\": false", "\"attention_bias\": true"},
        {"\"mlp_bias\": false", "\"mlp_bias\": true"},
        {"\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""},
        {"\"hidden_act\": \"gelu_pytorch_tanh\"", "\"hidden_act\": \"gelu\""},
        {"\"rope_scaling\": null",
         "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0, "
         "\"original_max_position_embeddings\": 32, \"attention_factor\": 1.2}"}};
    return dq_test_edited_snapshot(edits, G_N_ELEMENTS(edits), TRUE, TRUE);
}

/* The model with decoder biases, erf GELUs and yarn RoPE on the GPU (variant_snapshot): its
 * last-prompt logits within bf16 accuracy of the CPU's, as /backend_cuda/model holds the plain
 * model; a request's tokens and logits bit-identical alone and first in a batch of three pages
 * (the biased products row-invariant: prompts in cublasLt's bias epilogue, decode rows in the
 * row-invariant kernel); and its decode steps recorded as graphs give the plain launches' logits
 * bit for bit (graph_forward_case: the biases' products, the GELU kernels and the yarn table's
 * rope in the recorded step). The tolerance is /backend_cuda/model's: on the CPU, this snapshot
 * with --weights bf16 is within 1.0e-2 of the reference's logit scale, the plain model within
 * 2.0e-2. */
static void test_model_variants(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tiny models are not here");
        return;
    }
    /* The snapshot and the reference's run everywhere: a GPU session must not be the first to
     * meet a broken snapshot. */
    char *snap = variant_snapshot();
    GError *err = NULL;
    SmolvlmPipeline *pc = smolvlm_pipeline_open(snap, &(SmolvlmOptions){.device = "cpu"}, &err);
    dq_assert_no_error(err);
    const SmolvlmConfig *cfg = smolvlm_config(pc->model);
    g_assert_true(cfg->attention_bias && cfg->mlp_bias);
    g_assert_cmpint(cfg->text_act, ==, DQ_ACT_GELU_ERF);
    g_assert_cmpint(cfg->vision_act, ==, DQ_ACT_GELU_ERF);
    g_assert_cmpint(cfg->rope_type, ==, DQ_ROPE_YARN);
    const char *pages[] = {"portrait_page.png", "gray_receipt.png", "small_chart.png"};
    DqImage *imgs[3];
    for (int i = 0; i < 3; i++) {
        char *path = g_build_filename(shared, "fixtures", "images", pages[i], NULL);
        imgs[i] = dq_image_load(path, DQ_EXIF_APPLY, &err);
        dq_assert_no_error(err);
        g_free(path);
    }
    const int vocab = cfg->vocab_size, max_new = 6;
    DqGenerateResult rc[1] = {0}, alone[1] = {0}, batch[3] = {{0}};
    generate_pages(pc, imgs, 1, max_new, TRUE, rc);
    g_assert_cmpint(rc[0].n_output_ids, ==, max_new);
    g_test_message("biases, erf GELUs, yarn: the reference's ids %d %d %d ...", rc[0].output_ids[0],
                   rc[0].output_ids[1], rc[0].output_ids[2]);
    if (gpu != NULL) {
        SmolvlmPipeline *pg =
            smolvlm_pipeline_open(snap, &(SmolvlmOptions){.device = "cuda"}, &err);
        dq_assert_no_error(err);
        generate_pages(pg, imgs, 1, max_new, TRUE, alone);
        double worst = 0, scale = 1;
        for (int v = 0; v < vocab; v++) {
            scale = MAX(scale, fabs(rc[0].last_logits[v]));
            worst = MAX(worst, fabs(rc[0].last_logits[v] - alone[0].last_logits[v]));
        }
        g_test_message("biases, erf GELUs, yarn: last-prompt logits max |gpu - cpu| = %.3g "
                       "(scale %.3g)",
                       worst, scale);
        if (!(worst <= 6e-2 * scale))
            g_error("biases, erf GELUs, yarn: logits differ by %.3g (scale %.3g)", worst, scale);
        generate_pages(pg, imgs, 3, max_new, TRUE, batch);
        g_assert_cmpint(batch[0].n_output_ids, ==, alone[0].n_output_ids);
        g_assert_cmpmem(batch[0].output_ids, batch[0].n_output_ids * sizeof(int32_t),
                        alone[0].output_ids, alone[0].n_output_ids * sizeof(int32_t));
        g_assert_cmpmem(batch[0].last_logits, vocab * sizeof(float), alone[0].last_logits,
                        vocab * sizeof(float));
        dq_generate_result_clear(&alone[0]);
        for (int i = 0; i < 3; i++)
            dq_generate_result_clear(&batch[i]);
        smolvlm_pipeline_free(pg);
        graph_forward_case(snap);
    } else {
        g_test_skip(no_gpu_reason); /* after the snapshot and the reference's run */
    }
    dq_generate_result_clear(&rc[0]);
    for (int i = 0; i < 3; i++)
        dq_image_free(imgs[i]);
    smolvlm_pipeline_free(pc);
    g_free(snap);
}

/* A device error while requests decode fails the next step, naming the error, instead of
 * handing the requests tokens from the zeros every op gives after an error (until session 30 the
 * generator never learnt of it: greedy requests went on with the ids of the step before, to
 * their max_new_tokens, and came back as answers). Graphs off and on; a pipeline each, since the
 * error is kept for the backend's life; the error is a failing download, as in download_error
 * (and, like it, skipped by the device script's full memcheck). */
static void test_model_error(void) {
    if (!need_gpu())
        return;
    if (dq_test_shared_dir() == NULL) {
        g_test_skip("../shared is absent: the tiny models are not here");
        return;
    }
    for (int graphs = 0; graphs <= 1; graphs++) {
        SmolvlmPipeline *p = open_gpu_pipeline("tiny-smolvlm-b512");
        DqBackend *be = smolvlm_backend(p->model);
        dq_backend_cuda_set_graphs(be, graphs);
        GraphCase cs[4];
        graph_cases_init(p, cs);
        SmolvlmRequest req = cs[0].req;
        req.options.do_sample = FALSE; /* greedy: the ids come from argmax_rows */
        req.want_logits = FALSE;
        GError *err = NULL;
        DqGenerator *g = dq_generator_new(p->model, 2, 0, &err);
        dq_assert_no_error(err);
        int slot;
        g_assert_true(dq_generator_add(g, &req, 1, &slot, &err));
        dq_assert_no_error(err);
        g_assert_true(dq_generator_step(g, &err));
        dq_assert_no_error(err);
        float dst[4];
        g_test_expect_message(NULL, G_LOG_LEVEL_WARNING, "*failed*");
        be->download(be, dst, NULL, 4); /* refused by cudaMemcpyAsync: the backend's error */
        g_test_assert_expected_messages();
        g_assert_false(dq_generator_step(g, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_DEVICE);
        g_test_message("graphs %s: the step after the error: %s", graphs ? "on" : "off",
                       err->message);
        g_assert_nonnull(strstr(err->message, "failed"));
        g_clear_error(&err);
        g_assert_cmpint(dq_generator_n_active(g), ==, 0); /* every request dropped */
        /* Buffers wanted after the error (a workspace, a KV cache): the kept device error, not
         * "out of memory" (which hid it, and read as a failure that may clear). */
        g_assert_null(smolvlm_workspace_new(p->model, 4096, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_DEVICE);
        g_assert_null(strstr(err->message, "out of"));
        g_clear_error(&err);
        g_assert_null(smolvlm_kv_new(p->model, 64, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_DEVICE);
        g_clear_error(&err);
        dq_generator_free(g);
        for (int i = 0; i < 4; i++)
            smolvlm_prompt_clear(&cs[i].prompt);
        smolvlm_pipeline_free(p);
    }
}

/* A download whose copy fails gives zeros, as every op after an error does, and not the bytes
 * the pinned ring still holds from the download before it; so does argmax_rows after it (it
 * left the caller's ids as they were); the backend reports the error. A
 * backend of its own (the error is kept), registered last in case a driver tries the copy and
 * spoils the device for the process; the device script's full memcheck run skips it. */
static void test_download_error(void) {
    if (!need_gpu())
        return;
    DqBackend *be = backend_with("DOCQA_CUDA_GRAPHS", "0");
    const size_t n = 1000;
    float *src = g_new(float, n), *dst = g_new(float, n);
    for (size_t i = 0; i < n; i++)
        src[i] = (float)i + 1.0f;
    float *d = be->alloc(be, n);
    g_assert_nonnull(d);
    be->upload(be, d, src, n);
    be->download(be, dst, d, n);
    g_assert_cmpmem(dst, n * sizeof(float), src, n * sizeof(float)); /* and so does the ring */
    /* The backend warns once, at its first error; g_test makes an unexpected warning fatal. */
    g_test_expect_message(NULL, G_LOG_LEVEL_WARNING, "*failed*");
    be->download(be, dst, NULL, n); /* refused by cudaMemcpyAsync */
    g_test_assert_expected_messages();
    GError *err = NULL;
    g_assert_false(dq_backend_cuda_check(be, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DEVICE);
    g_test_message("the failed download: %s", err->message);
    g_clear_error(&err);
    for (size_t i = 0; i < n; i++)
        if (dst[i] != 0.0f)
            g_error("a failed download left %g at %zu, not 0", dst[i], i);
    /* argmax_rows after the error: zeros as well, not the ids the array held (a greedy step's
     * tokens of the step before) */
    const int n_ids = 100;
    int32_t *ids = g_new(int32_t, n_ids);
    for (int i = 0; i < n_ids; i++)
        ids[i] = 7;
    be->argmax_rows(be, ids, d, n_ids, 10);
    for (int i = 0; i < n_ids; i++)
        if (ids[i] != 0)
            g_error("argmax_rows after an error left id %d at row %d, not 0", ids[i], i);
    g_free(ids);
    be->release(be, d);
    g_free(src);
    g_free(dst);
    dq_backend_free(be);
}

/* ---- everywhere */

static void test_device_names(void) {
    int i = 7;
    GError *err = NULL;
    g_assert_true(dq_device_parse("cpu", &i, &err));
    g_assert_cmpint(i, ==, -1);
    g_assert_true(dq_device_parse(NULL, &i, &err));
    g_assert_cmpint(i, ==, -1);
    g_assert_true(dq_device_parse("cuda", &i, &err));
    g_assert_cmpint(i, ==, 0);
    g_assert_true(dq_device_parse("cuda:3", &i, &err));
    g_assert_cmpint(i, ==, 3);
    const char *bad[] = {"gpu", "cuda:", "cuda:-1", "cuda:1x", "cuda:99999", "CUDA", ""};
    for (size_t k = 0; k < G_N_ELEMENTS(bad); k++) {
        g_assert_false(dq_device_parse(bad[k], &i, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
        g_assert_nonnull(strstr(err->message, "cuda or cuda:I"));
        g_clear_error(&err);
    }
}

static void test_device_errors(void) {
    GError *err = NULL;
    /* A GPU index that cannot exist: a clear DQ_ERR_DEVICE whatever the machine has (no
     * build support, no driver, no GPU, or too few GPUs). */
    DqBackend *be = dq_backend_open_device("cuda:1000", &err);
    g_assert_null(be);
    g_assert_error(err, DQ_ERROR, DQ_ERR_DEVICE);
    g_assert_nonnull(strstr(err->message, "cuda:1000"));
    g_test_message("cuda:1000 -> %s", err->message);
    g_clear_error(&err);
    if (gpu == NULL) {
        /* No usable GPU here: "cuda" must fail the same way, naming why. */
        be = dq_backend_open_device("cuda", &err);
        g_assert_null(be);
        g_assert_error(err, DQ_ERROR, DQ_ERR_DEVICE);
        g_test_message("cuda -> %s", err->message);
        g_clear_error(&err);
    }
    be = dq_backend_open_device("cpu", &err);
    dq_assert_no_error(err);
    g_assert_nonnull(be);
    g_assert_false(dq_backend_is_cuda(be));
    dq_backend_free(be);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    rng = g_rand_new_with_seed(20261125);
    GError *err = NULL;
    cpu = dq_backend_cpu_new(&err);
    dq_assert_no_error(err);
    if (dq_cuda_device_count(&no_gpu_reason) > 0) {
        gpu = dq_backend_cuda_new(0, &err);
        if (gpu == NULL) {
            /* A GPU is visible but unusable: that is a failure to report, not a skip. */
            g_printerr("cuda:0 is visible but the backend failed: %s\n", err->message);
            return 1;
        }
        g_assert_true(dq_backend_is_cuda(gpu));
        if (g_strcmp0(g_getenv("DOCQA_CUDA_F32"), "1") != 0) /* bf16 weights: skinny kernel */
            g_assert_cmpint(gpu->matmul_row_invariant_max, ==, 63);
    } else {
        g_print("# no GPU: the CUDA op tests are skipped (%s)\n", no_gpu_reason);
    }
    g_test_add_func("/backend_cuda/device_names", test_device_names);
    g_test_add_func("/backend_cuda/device_errors", test_device_errors);
    g_test_add_func("/backend_cuda/matmul", test_matmul);
    g_test_add_func("/backend_cuda/matmul_rows_merged", test_matmul_rows_merged);
    g_test_add_func("/backend_cuda/matmul_gelu", test_matmul_gelu);
    g_test_add_func("/backend_cuda/matmul_add", test_matmul_add);
    g_test_add_func("/backend_cuda/matmul_many", test_matmul_many);
    g_test_add_func("/backend_cuda/mlp_gelu_add", test_mlp_gelu_add);
    g_test_add_func("/backend_cuda/mlp_gelu_add_bf16", test_mlp_gelu_add_bf16);
    g_test_add_func("/backend_cuda/matmul_f32_tensor", test_matmul_f32_tensor);
    g_test_add_func("/backend_cuda/norms", test_norms);
    g_test_add_func("/backend_cuda/rope", test_rope);
    g_test_add_func("/backend_cuda/attention_vision", test_attention_vision);
    g_test_add_func("/backend_cuda/attention_staged", test_attention_staged);
    g_test_add_func("/backend_cuda/attention_causal", test_attention_causal);
    g_test_add_func("/backend_cuda/attention_segments", test_attention_segments);
    g_test_add_func("/backend_cuda/attention_segments_f16", test_attention_segments_f16);
    g_test_add_func("/backend_cuda/elementwise", test_elementwise);
    g_test_add_func("/backend_cuda/add_broadcast", test_add_broadcast);
    g_test_add_func("/backend_cuda/layout", test_layout);
    g_test_add_func("/backend_cuda/pixel_chunks", test_pixel_chunks);
    g_test_add_func("/backend_cuda/pixel_ring", test_pixel_ring);
    g_test_add_func("/backend_cuda/embed", test_embed);
    g_test_add_func("/backend_cuda/argmax_rows", test_argmax_rows);
    g_test_add_func("/backend_cuda/memory", test_memory);
    g_test_add_func("/backend_cuda/model", test_model);
    g_test_add_func("/backend_cuda/graph_forward", test_graph_forward);
    g_test_add_func("/backend_cuda/graph_generator", test_graph_generator);
    g_test_add_func("/backend_cuda/graph_redo_cpu", test_graph_redo_cpu);
    g_test_add_func("/backend_cuda/graph_rope_dropped", test_graph_rope_dropped);
    g_test_add_func("/backend_cuda/graph_decode_runs", test_graph_decode_runs);
    g_test_add_func("/backend_cuda/model_variants", test_model_variants);
    g_test_add_func("/backend_cuda/model_error", test_model_error);
    g_test_add_func("/backend_cuda/download_error", test_download_error); /* last */
    int rc = g_test_run();
    dq_backend_free(gpu);
    dq_backend_free(cpu);
    g_free(no_gpu_reason);
    g_rand_free(rng);
    return rc;
}
