/* The CPU reference backend, op by op, against naive double-precision loops written from the
 * definitions (transformers' math). Faster backends get the same treatment against this one.
 * Random inputs, several shapes (including the row counts where matmul switches from GEMV to
 * GEMM, GQA groups, causal offsets, the 27-patch geometry). */
#include "act_ref.h"
#include "backend.h"
#include "testutil.h"

#include <math.h>
#include <string.h>

static DqBackend *be;
static GRand *rng;

static float *rand_buf(size_t n, double scale) {
    float *b = be->alloc(be, n);
    for (size_t i = 0; i < n; i++)
        b[i] = (float)(g_rand_double_range(rng, -1, 1) * scale);
    return b;
}

static DqWeight rand_weight(int rows, int cols, double scale) {
    float *b = rand_buf((size_t)rows * cols, scale);
    return (DqWeight){.rows = rows, .cols = cols, .data = b, .owned = b};
}

static void assert_close(const float *got, const double *want, size_t n, double tol,
                         const char *what) {
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): set
        worst = MAX(worst, fabs(got[i] - want[i]) / MAX(1.0, fabs(want[i])));
    if (!(worst <= tol))
        g_error("%s: max error %.3g > %.3g", what, worst, tol);
}

static void test_matmul(void) {
    const int shapes[][3] = {{1, 7, 5}, {3, 64, 32}, {8, 33, 17}, {9, 33, 17}, {100, 48, 80}};
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int n = shapes[s][0], out = shapes[s][1], in = shapes[s][2];
        float *x = rand_buf((size_t)n * in, 1);
        DqWeight w = rand_weight(out, in, 1), b = rand_weight(1, out, 1);
        float *y = be->alloc(be, (size_t)n * out);
        double *want = g_new(double, (size_t)n *out);
        for (int withbias = 0; withbias < 2; withbias++) {
            be->matmul(be, y, x, &w, withbias ? &b : NULL, n);
            for (int r = 0; r < n; r++)
                for (int o = 0; o < out; o++) {
                    double acc = withbias ? b.data[o] : 0;
                    for (int i = 0; i < in; i++)
                        acc += (double)x[r * in + i] * w.data[o * in + i];
                    want[r * out + o] = acc;
                }
            assert_close(y, want, (size_t)n * out, 1e-5, "matmul");
        }
        be->release(be, x);
        be->release(be, y);
        be->weight_free(be, &w);
        be->weight_free(be, &b);
        g_free(want);
    }
}

static void test_weight_init(void) {
    /* F32 is mapped (not copied); BF16 is upcast exactly. */
    float f[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[6] = {0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0xc0c0};
    DqTensor t = {.name = "t",
                  .file = "f",
                  .dtype = DQ_DTYPE_F32,
                  .ndim = 2,
                  .numel = 6,
                  .data = f,
                  .nbytes = sizeof f};
    DqWeight w;
    GError *err = NULL;
    g_assert_true(be->weight_init(be, &w, &t, 2, 3, &err));
    g_assert_true(w.data == f);
    g_assert_null(w.owned);
    be->weight_free(be, &w);
    t.dtype = DQ_DTYPE_BF16;
    t.data = h;
    g_assert_true(be->weight_init(be, &w, &t, 2, 3, &err));
    g_assert_nonnull(w.owned);
    g_assert_cmpfloat(w.data[1], ==, 2.0f);
    g_assert_cmpfloat(w.data[5], ==, -6.0f);
    be->weight_free(be, &w);
    g_assert_false(be->weight_init(be, &w, &t, 4, 3, &err));
    g_assert_nonnull(strstr(err->message, "'t'"));
    g_clear_error(&err);
}

static void test_norms(void) {
    int n = 37, dim = 48;
    float *x = rand_buf((size_t)n * dim, 3);
    DqWeight w = rand_weight(1, dim, 1), b = rand_weight(1, dim, 1);
    float *y = be->alloc(be, (size_t)n * dim);
    double *want = g_new(double, (size_t)n *dim);
    be->layernorm(be, y, x, &w, &b, n, dim, 1e-6f);
    for (int r = 0; r < n; r++) {
        double mean = 0, var = 0;
        for (int i = 0; i < dim; i++)
            mean += x[r * dim + i];
        mean /= dim;
        for (int i = 0; i < dim; i++)
            var += pow(x[r * dim + i] - mean, 2);
        var /= dim;
        for (int i = 0; i < dim; i++)
            want[r * dim + i] = (x[r * dim + i] - mean) / sqrt(var + 1e-6) * w.data[i] + b.data[i];
    }
    assert_close(y, want, (size_t)n * dim, 1e-5, "layernorm");
    be->rmsnorm(be, y, x, &w, n, dim, 1e-5f);
    for (int r = 0; r < n; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += pow(x[r * dim + i], 2);
        for (int i = 0; i < dim; i++)
            want[r * dim + i] = x[r * dim + i] / sqrt(ss / dim + 1e-5) * w.data[i];
    }
    assert_close(y, want, (size_t)n * dim, 1e-5, "rmsnorm");
    /* eps 0, as transformers computes it: the formula without eps on rows with a spread, NaN on
     * a row of zeros (x * rsqrt(0) = 0 * inf), and on a constant row in the layer norm */
    for (int i = 0; i < dim; i++) {
        x[dim + i] = 0.0f;
        x[2 * dim + i] = 0.25f;
    }
    be->rmsnorm(be, y, x, &w, n, dim, 0.0f);
    for (int r = 0; r < n; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += pow(x[r * dim + i], 2);
        for (int i = 0; i < dim; i++)
            want[r * dim + i] = r == 1 ? 0.0 : x[r * dim + i] / sqrt(ss / dim) * w.data[i];
    }
    for (int i = 0; i < dim; i++)
        g_assert_true(isnan(y[dim + i]) && !isnan(y[2 * dim + i]));
    memset(y + dim, 0, (size_t)dim * sizeof(float)); /* compared: the other rows */
    assert_close(y, want, (size_t)n * dim, 1e-5, "rmsnorm eps 0");
    be->layernorm(be, y, x, &w, &b, n, dim, 0.0f);
    for (int i = 0; i < dim; i++)
        g_assert_true(isnan(y[dim + i]) && isnan(y[2 * dim + i]) && isfinite(y[3 * dim + i]));
    be->release(be, x);
    be->release(be, y);
    be->weight_free(be, &w);
    be->weight_free(be, &b);
    g_free(want);
}

/* Plain RoPE from theta; then a table of other frequencies and a cos/sin factor (yarn's), which
 * the rotation must take as given. */
static void test_rope(void) {
    int n = 5, heads = 3, hd = 16;
    int32_t pos[5] = {0, 1, 7, 1000, 4095};
    double theta = 273768.0;
    DqRope scaled;
    dq_rope_plain(&scaled, theta, hd);
    for (int j = 0; j < hd / 2; j++)
        scaled.inv_freq[j] /= (float)(1 + j % 3);
    scaled.attention_factor = 1.25f;
    for (int t = 0; t < 2; t++) {
        float *x = rand_buf((size_t)n * heads * hd, 1 + t);
        double *want = g_new(double, (size_t)n *heads *hd);
        double factor = t == 0 ? 1.0 : 1.25;
        for (int r = 0; r < n; r++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < hd; i++) {
                    /* q' = q cos + rotate_half(q) sin, rotate_half(x) = [-x2, x1] */
                    int j = i % (hd / 2);
                    double inv = 1.0 / pow(theta, 2.0 * j / hd) / (t == 0 ? 1 : 1 + j % 3);
                    double ang = pos[r] * inv;
                    const float *v = x + (size_t)(r * heads + h) * hd;
                    double rot = i < hd / 2 ? -v[i + hd / 2] : v[i - hd / 2];
                    want[(r * heads + h) * hd + i] = (v[i] * cos(ang) + rot * sin(ang)) * factor;
                }
        DqRope plain;
        dq_rope_plain(&plain, theta, hd);
        be->rope(be, x, pos, n, heads, hd, t == 0 ? &plain : &scaled);
        /* transformers' float32 angles at position 4095 are off by ~1e-4 rad; so are ours. */
        assert_close(x, want, (size_t)n * heads * hd, 1e-3, t == 0 ? "rope" : "rope scaled");
        g_free(want);
        be->release(be, x);
    }
}

static void naive_attention(double *out, const float *q, const float *k, const float *v,
                            const DqAttention *a) {
    int group = a->n_heads / a->n_kv_heads;
    double *p = g_new(double, a->n_kv);
    for (int s = 0; s < a->n_seq; s++)
        for (int h = 0; h < a->n_heads; h++)
            for (int i = 0; i < a->n_q; i++) {
                int g = h / group;
                int visible = a->causal ? MIN(a->n_kv, a->q_pos0 + i + 1) : a->n_kv;
                const float *qi =
                    q + s * a->q_seq_stride + (size_t)i * a->q_stride + h * a->head_dim;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < visible; j++) {
                    const float *kj =
                        k + s * a->kv_seq_stride + (size_t)j * a->kv_stride + g * a->head_dim;
                    double d = 0;
                    for (int e = 0; e < a->head_dim; e++)
                        d += (double)qi[e] * kj[e];
                    p[j] = d * a->scale;
                    mx = MAX(mx, p[j]);
                }
                for (int j = 0; j < visible; j++)
                    sum += (p[j] = exp(p[j] - mx));
                double *o = out + ((size_t)(s * a->n_q + i) * a->n_heads + h) * a->head_dim;
                for (int e = 0; e < a->head_dim; e++) {
                    double acc = 0;
                    for (int j = 0; j < visible; j++)
                        acc += p[j] / sum *
                               v[s * a->kv_seq_stride + (size_t)j * a->kv_stride + g * a->head_dim +
                                 e];
                    o[e] = acc;
                }
            }
    g_free(p);
}

static void check_attention(DqAttention a, const char *what) {
    size_t qn = (size_t)a.n_seq * a.n_q * a.q_stride;
    size_t kn = (size_t)a.n_seq * a.kv_seq_stride;
    float *q = rand_buf(qn, 2), *k = rand_buf(kn, 2), *v = rand_buf(kn, 1);
    size_t on = (size_t)a.n_seq * a.n_q * a.n_heads * a.head_dim;
    float *out = be->alloc(be, on);
    double *want = g_new(double, on);
    be->attention(be, out, q, k, v, &a);
    naive_attention(want, q, k, v, &a);
    assert_close(out, want, on, 1e-5, what);
    be->release(be, q);
    be->release(be, k);
    be->release(be, v);
    be->release(be, out);
    g_free(want);
}

static void test_attention(void) {
    /* Vision: 3 tiles of 27x27 patches, 2 heads of 16, no mask. */
    check_attention((DqAttention){.n_seq = 3,
                                  .n_q = 729,
                                  .n_kv = 729,
                                  .n_heads = 2,
                                  .n_kv_heads = 2,
                                  .head_dim = 16,
                                  .q_stride = 32,
                                  .kv_stride = 32,
                                  .q_seq_stride = 729 * 32,
                                  .kv_seq_stride = 729 * 32,
                                  .scale = 0.25f},
                    "vision attention");
    /* Prefill: GQA 4 q heads on 2 KV heads, causal from position 0, KV rows wider (cache). */
    check_attention((DqAttention){.n_seq = 1,
                                  .n_q = 50,
                                  .n_kv = 50,
                                  .n_heads = 4,
                                  .n_kv_heads = 2,
                                  .head_dim = 16,
                                  .q_stride = 64,
                                  .kv_stride = 32,
                                  .q_seq_stride = 0,
                                  .kv_seq_stride = 60 * 32,
                                  .causal = TRUE,
                                  .scale = 0.25f},
                    "prefill attention");
    /* A prefill chunk after 30 cached positions, and a decode step (9 heads on 3). */
    check_attention((DqAttention){.n_seq = 1,
                                  .n_q = 20,
                                  .n_kv = 50,
                                  .n_heads = 4,
                                  .n_kv_heads = 2,
                                  .head_dim = 16,
                                  .q_stride = 64,
                                  .kv_stride = 32,
                                  .kv_seq_stride = 50 * 32,
                                  .q_pos0 = 30,
                                  .causal = TRUE,
                                  .scale = 0.25f},
                    "chunked prefill attention");
    check_attention((DqAttention){.n_seq = 1,
                                  .n_q = 1,
                                  .n_kv = 77,
                                  .n_heads = 9,
                                  .n_kv_heads = 3,
                                  .head_dim = 8,
                                  .q_stride = 72,
                                  .kv_stride = 24,
                                  .kv_seq_stride = 77 * 24,
                                  .q_pos0 = 76,
                                  .causal = TRUE,
                                  .scale = 1 / sqrtf(8)},
                    "decode attention");
}

static void test_elementwise(void) {
    size_t n = 1000;
    float *x = rand_buf(n, 6), *y = rand_buf(n, 3);
    float *x0 = g_memdup2(x, n * 4), *y0 = g_memdup2(y, n * 4);
    double *want = g_new(double, n);
    be->gelu_tanh(be, x, n);
    for (size_t i = 0; i < n; i++) {
        double v = x0[i];
        want[i] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    }
    assert_close(x, want, n, 1e-6, "gelu_tanh");
    memcpy(x, x0, n * 4);
    be->silu_mul(be, x, y, n);
    for (size_t i = 0; i < n; i++)
        want[i] = x0[i] / (1 + exp(-(double)x0[i])) * y0[i];
    assert_close(x, want, n, 1e-6, "silu_mul");
    /* every hidden_act over [-14, 14], past gelu_10's and relu6's clips: torch's float32 steps
     * against the formula in double, within a few ulp (laplace's and quick_gelu's rounded
     * constants: 1e-6 relative at most) */
    float *wide = rand_buf(n, 14);
    for (int a = 0; a < DQ_ACT_COUNT; a++) {
        memcpy(x, wide, n * 4);
        be->act(be, x, n, (SmolvlmAct)a);
        for (size_t i = 0; i < n; i++)
            want[i] = act_ref((SmolvlmAct)a, wide[i]);
        assert_close(x, want, n, 2e-6, act_ref_name((SmolvlmAct)a));
    }
    be->release(be, wide);
    memcpy(x, x0, n * 4);
    be->mul(be, x, y, n);
    for (size_t i = 0; i < n; i++)
        want[i] = (double)x0[i] * y0[i];
    assert_close(x, want, n, 1e-7, "mul");
    memcpy(x, x0, n * 4);
    be->add(be, x, y, n);
    for (size_t i = 0; i < n; i++)
        want[i] = (double)x0[i] + y0[i];
    assert_close(x, want, n, 1e-7, "add");
    DqWeight w = rand_weight(10, 25, 1);
    memcpy(x, x0, n * 4);
    be->add_broadcast(be, x, &w, 4);
    for (size_t i = 0; i < n; i++)
        want[i] = (double)x0[i] + w.data[i % 250];
    assert_close(x, want, n, 1e-7, "add_broadcast");
    be->weight_free(be, &w);
    be->release(be, x);
    be->release(be, y);
    g_free(x0);
    g_free(y0);
    g_free(want);
}

/* upload_pixels gives each tile's values by its own table: pixel (c, y, x) =
 * lut[c * 256 + byte], through the CPU backend's op and through the fallback a backend without
 * the op gets (dq_upload_pixels: expanded on the host, uploaded a tile at a time). */
static void test_upload_pixels(void) {
    const int T = 3, C = 3, S = 20;
    const size_t tb = (size_t)C * S * S;
    uint8_t *bytes = g_new(uint8_t, T * tb);
    float *luts = g_new(float, T *C * 256);
    DqPixelTile tiles[3];
    for (size_t i = 0; i < T * tb; i++)
        bytes[i] = (uint8_t)g_rand_int_range(rng, 0, 256);
    for (int i = 0; i < T * C * 256; i++)
        luts[i] = (float)g_rand_double_range(rng, -1, 1);
    for (int t = 0; t < T; t++)
        tiles[t] = (DqPixelTile){bytes + t * tb, luts + t * C * 256, 0};
    DqBackend plain = *be; /* the same backend without the op */
    plain.upload_pixels = NULL;
    DqBackend *which[2] = {be, &plain};
    for (int w = 0; w < 2; w++) {
        float *px = be->alloc(be, dq_pixel_buffer_floats(T, C, S));
        dq_upload_pixels(which[w], px, tiles, T, C, S);
        for (int t = 0; t < T; t++)
            for (size_t i = 0; i < tb; i++)
                g_assert_cmpfloat(px[t * tb + i], ==,
                                  luts[(t * C + (int)(i / (S * S))) * 256 + bytes[t * tb + i]]);
        be->release(be, px);
    }
    g_free(bytes);
    g_free(luts);
}

static void test_patchify_shuffle_embed(void) {
    /* 2 tiles of 3 x 20 x 20, patch 6: 3x3 patches, the last 2 px never read. */
    int T = 2, C = 3, S = 20, p = 6, side = 3;
    float *px = rand_buf((size_t)T * C * S * S, 1);
    size_t F = (size_t)C * p * p;
    float *out = be->alloc(be, (size_t)T * side * side * F);
    be->patchify(be, out, px, T, C, S, p);
    for (int t = 0; t < T; t++)
        for (int py = 0; py < side; py++)
            for (int pxx = 0; pxx < side; pxx++)
                for (int c = 0; c < C; c++)
                    for (int y = 0; y < p; y++)
                        for (int x = 0; x < p; x++)
                            g_assert_cmpfloat(
                                out[((size_t)(t * side + py) * side + pxx) * F + (c * p + y) * p +
                                    x],
                                ==, px[((size_t)(t * C + c) * S + py * p + y) * S + pxx * p + x]);
    be->release(be, px);
    be->release(be, out);

    /* Pixel shuffle against pitfall 27's definition: n = 6, s = 3, D = 4. */
    int n = 6, s = 3, D = 4, os = n / s;
    float *in = rand_buf((size_t)T * n * n * D, 1);
    float *sh = be->alloc(be, (size_t)T * n * n * D);
    be->pixel_shuffle(be, sh, in, T, n, D, s);
    for (int t = 0; t < T; t++)
        for (int I = 0; I < os; I++)
            for (int J = 0; J < os; J++)
                for (int m = 0; m < s; m++)
                    for (int k = 0; k < s; k++)
                        for (int d = 0; d < D; d++)
                            g_assert_cmpfloat(
                                sh[((size_t)(t * os + I) * os + J) * D * s * s + (m * s + k) * D +
                                   d],
                                ==,
                                in[((size_t)t * n * n + (I * s + m) * n + (J * s + k)) * D + d]);
    be->release(be, in);
    be->release(be, sh);

    DqWeight table = rand_weight(10, 5, 1);
    int32_t ids[3] = {9, 0, 9};
    float *e = be->alloc(be, 15);
    be->embed(be, e, &table, ids, 3);
    g_assert_cmpmem(e, 20, table.data + 45, 20);
    g_assert_cmpmem(e + 5, 20, table.data, 20);
    be->release(be, e);
    be->weight_free(be, &table);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    GError *err = NULL;
    be = dq_backend_cpu_new(&err);
    dq_assert_no_error(err);
    rng = g_rand_new_with_seed(42);
    g_test_add_func("/backend-cpu/matmul", test_matmul);
    g_test_add_func("/backend-cpu/weight-init", test_weight_init);
    g_test_add_func("/backend-cpu/norms", test_norms);
    g_test_add_func("/backend-cpu/rope", test_rope);
    g_test_add_func("/backend-cpu/attention", test_attention);
    g_test_add_func("/backend-cpu/elementwise", test_elementwise);
    g_test_add_func("/backend-cpu/upload-pixels", test_upload_pixels);
    g_test_add_func("/backend-cpu/patchify-shuffle-embed", test_patchify_shuffle_embed);
    int rc = g_test_run();
    g_rand_free(rng);
    dq_backend_free(be);
    return rc;
}
