/* Optional int8 decoder weights of the fast CPU backend (cpu_q8.h, `--weights int8`), and the
 * bf16 option (`--weights bf16`).
 *
 * - Quantization: every value within half a step (scale / 2) of the weight, scale = the block's
 *   max |w| / 127, codes in [-127, 127], all-zero blocks exact; bad shapes are errors.
 * - Products op by op: the fast backend's matmul on the int8 weight against the reference's
 *   matmul on the same weight dequantized to float32 (q * scale): they multiply the same
 *   weights, so the tolerance is test_backend_fast's 2e-5 of the scale (summation order; the
 *   decode GEMV also rounds x to int16 blocks, half a step = 2^-16 of a block's max |x|, which
 *   stays well inside it).
 *   Decode rows (<= 8, the GEMV) and prefill rows (the GEMM with dequantizing packs), with and
 *   without bias, widths that leave a partial group of four output features.
 * - Row invariance, bit for bit: up to 8 rows each row as alone (batched decode), and from 9
 *   rows on any split of the rows (prompts merged into one product).
 * - The model on the goldens (tiny snapshots, f32 and bf16): last-prompt logits cosine >= 0.999
 *   and max abs <= 0.5; greedy picks with teacher forcing (the golden ids fed back, so that one
 *   flip does not decide every later step): equal to the golden at every step whose golden
 *   top1 - top2 margin exceeds GREEDY_MARGIN, and at >= 90% of all steps. Free-running greedy
 *   continuations are reported, not asserted: on these random models rounding the f32 weights
 *   to bf16 alone flips 5 of 24 of them (../shared/fixtures' compare_to_f32_variant). The logits
 *   must also differ from the goldens by more than float32 noise (1e-3): the weights really are
 *   quantized.
 * The same model check runs for `--weights bf16` with its products on bf16 activations (the
 * emulation of vdpbf16ps where the CPU lacks it), and its matmul op by op (/bf16/matmul): f32
 * weights rounded to nearest even, bf16 ones kept, against the reference on those values.
 * test_q8 (unit) takes text_only and no_split of the compact fixtures in tests/fixtures;
 * test_q8_full (slow) every case of ../shared/fixtures; test_q8_portable runs the kernel tests
 * with DOCQA_CPU_NO_AVX2=1 (the portable code). The model parts need ../shared/models. */
#include "backend.h"
#include "cpu_gemm.h"
#include "cpu_q8.h"
#include "cpu_simd.h"
#include "dq_error.h"
#include "generate.h"
#include "fixture_case.h"
#include "image_processor.h"
#include "smolvlm.h"
#include "testutil.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* A forced greedy step may pick another token than the golden only where the golden top1 - top2
 * margin is at most this: the largest change int8 makes to such a margin on the fixtures is 0.28
 * (test_q8_full, 768 steps), the size of what rounding the f32 weights to bf16 alone does to a
 * logit on these random models (0.10-0.20, ../shared/fixtures' compare_to_f32_variant). */
#define GREEDY_MARGIN 0.3

static DqBackend *ref, *fast;
static GRand *rng;

/* A [rows, cols] tensor of random values in (-amp, amp), as F32 or BF16 bits. */
typedef struct {
    void *bits;
    DqTensor t;
} RandTensor;

static RandTensor rand_tensor(int rows, int cols, DqDtype dtype, double amp) {
    size_t n = (size_t)rows * cols;
    RandTensor r = {.bits = g_malloc(n * 4)};
    for (size_t i = 0; i < n; i++) {
        float f = (float)g_rand_double_range(rng, -amp, amp);
        if (dtype == DQ_DTYPE_F32) {
            ((float *)r.bits)[i] = f;
        } else {
            uint32_t u;
            memcpy(&u, &f, 4);
            ((uint16_t *)r.bits)[i] = (uint16_t)(u >> 16);
        }
    }
    r.t = (DqTensor){.name = "random",
                     .file = "test",
                     .dtype = dtype,
                     .ndim = 2,
                     .shape = {rows, cols},
                     .numel = (int64_t)n,
                     .data = r.bits,
                     .nbytes = n * dq_dtype_size(dtype)};
    return r;
}

/* element i of r = f (exact in bf16 for the values used) */
static void set_value(RandTensor *r, size_t i, float f) {
    if (r->t.dtype == DQ_DTYPE_F32) {
        ((float *)r->bits)[i] = f;
    } else {
        uint32_t u;
        memcpy(&u, &f, 4);
        ((uint16_t *)r->bits)[i] = (uint16_t)(u >> 16);
    }
}

static void test_quantize(void) {
    const int shapes[][2] = {{1, 32}, {7, 64}, {40, 576}, {3, 1536}};
    const DqDtype dtypes[] = {DQ_DTYPE_F32, DQ_DTYPE_BF16};
    GError *err = NULL;
    for (size_t d = 0; d < G_N_ELEMENTS(dtypes); d++)
        for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
            int rows = shapes[s][0], cols = shapes[s][1];
            RandTensor r = rand_tensor(rows, cols, dtypes[d], 0.05 * (s + 1));
            if (rows > 2) /* an all-zero block, and one with a single non-zero value */
                for (int k = 0; k < 32; k++) {
                    set_value(&r, (size_t)cols + k, 0.0f);
                    set_value(&r, 2 * (size_t)cols + k, k == 5 ? -0.75f : 0.0f);
                }
            size_t n = (size_t)rows * cols;
            float *w = g_new(float, n), *deq = g_new(float, n);
            dq_convert_to_f32(w, r.bits, dtypes[d], n);
            DqWeight q;
            g_assert_true(dq_q8_quantize(&q, &r.t, rows, cols, 2, &err));
            dq_assert_no_error(err);
            g_assert_cmpint(q.dtype, ==, DQ_WEIGHT_Q8);
            g_assert_cmpint(q.rows, ==, rows);
            g_assert_nonnull(q.owned);
            dq_q8_dequantize(&q, deq);
            const float *scales = dq_q8_scales(&q);
            for (size_t b = 0; b < n / 32; b++) {
                float amax = 0;
                for (int k = 0; k < 32; k++)
                    amax = MAX(amax, fabsf(w[b * 32 + k]));
                g_assert_cmpfloat(scales[b], ==, amax / 127.0f);
                for (int k = 0; k < 32; k++) {
                    size_t i = b * 32 + k;
                    // NOLINTNEXTLINE(bugprone-signed-char-misuse): codes are signed
                    int code = dq_q8_code(&q, (int)(i / cols), (int)(i % cols));
                    g_assert_cmpint(code, >=, -127);
                    g_assert_cmpint(code, <=, 127);
                    g_assert_cmpfloat(deq[i], ==, code * scales[b]);
                    if (!(fabsf(deq[i] - w[i]) <= scales[b] * 0.5f * (1 + 1e-5f)))
                        g_error("quantize %dx%d: w %.9g dequantized %.9g, scale %.9g", rows, cols,
                                w[i], deq[i], scales[b]);
                }
            }
            if (rows > 2) {
                for (int k = 0; k < 32; k++) {
                    g_assert_cmpfloat(deq[k + (size_t)cols], ==, 0.0f);
                    g_assert_cmpfloat(deq[k + 2 * (size_t)cols], ==, k == 5 ? -0.75f : 0.0f);
                }
            }
            /* embedding lookup on a quantized table: the dequantized rows */
            int32_t ids[2] = {rows - 1, 0};
            float *emb = g_new(float, 2 * (size_t)cols);
            fast->embed(fast, emb, &q, ids, 2);
            g_assert_cmpmem(emb, cols * sizeof(float), deq + (size_t)(rows - 1) * cols,
                            cols * sizeof(float));
            g_assert_cmpmem(emb + cols, cols * sizeof(float), deq, cols * sizeof(float));
            g_free(emb);
            fast->weight_free(fast, &q);
            g_assert_null(q.data);
            g_free(w);
            g_free(deq);
            g_free(r.bits);
        }
    /* widths that are no multiple of 32, or a wrong element count: errors naming the tensor */
    RandTensor r = rand_tensor(4, 48, DQ_DTYPE_F32, 1);
    DqWeight q;
    g_assert_false(dq_q8_quantize(&q, &r.t, 4, 48, 1, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_MODEL);
    g_assert_nonnull(strstr(err->message, "random"));
    g_clear_error(&err);
    g_assert_false(dq_q8_quantize(&q, &r.t, 5, 32, 1, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_MODEL);
    g_clear_error(&err);
    /* the backend hook keeps what it cannot quantize as weight_init would (vectors, odd widths) */
    g_assert_nonnull(fast->weight_init_q8);
    g_assert_null(ref->weight_init_q8);
    g_assert_true(fast->weight_init_q8(fast, &q, &r.t, 4, 48, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(q.dtype, ==, DQ_DTYPE_F32);
    fast->weight_free(fast, &q);
    g_free(r.bits);
    /* one row is a vector (kept), two rows a matrix (quantized) */
    for (int rows = 1; rows <= 2; rows++) {
        RandTensor v = rand_tensor(rows, 32, DQ_DTYPE_F32, 1.0);
        g_assert_true(fast->weight_init_q8(fast, &q, &v.t, rows, 32, &err));
        dq_assert_no_error(err);
        int want = rows == 1 ? DQ_DTYPE_F32 : DQ_WEIGHT_Q8;
        g_assert_cmpint(q.dtype, ==, want);
        fast->weight_free(fast, &q);
        g_free(v.bits);
    }
}

/* max |a - b| relative to max(1, max |b|) */
static double rel_err(const float *a, const float *b, size_t n, size_t *at) {
    double worst = 0, scale = 1;
    for (size_t i = 0; i < n; i++)
        scale = MAX(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= worst)) {
            worst = isnan(d) ? INFINITY : d;
            *at = i;
        }
    }
    return worst / scale;
}

static void test_matmul(void) {
    /* decode rows (1..8: the GEMV; every tail of its tiles of 8, 4 and 2 rows), then prefill
     * rows (the GEMM); output widths that leave a partial group of four (67, 33) or an odd
     * feature (35, 17); input widths of interleaved groups of 8 blocks only (256, 1536: the 256M
     * MLP), none (64, 96), and both (576: the 256M hidden size; 2080). The row past n must stay
     * as it was (a tile of rows that overhangs n would write it). */
    const int shapes[][3] = {{1, 64, 64},   {3, 67, 96},    {8, 33, 576},     {5, 300, 1536},
                             {4, 40, 256},  {8, 24, 2080},  {9, 129, 576},    {37, 200, 1536},
                             {300, 72, 96}, {20, 16, 2080}, {1100, 260, 576}, {2, 35, 96},
                             {6, 17, 576},  {7, 40, 64}};
    GError *err = NULL;
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int n = shapes[s][0], out = shapes[s][1], in = shapes[s][2];
        DqDtype dtype = s % 2 ? DQ_DTYPE_BF16 : DQ_DTYPE_F32;
        RandTensor wt = rand_tensor(out, in, dtype, 0.1), bt = rand_tensor(1, out, DQ_DTYPE_F32, 1);
        DqWeight q, wr, br, bf;
        g_assert_true(fast->weight_init_q8(fast, &q, &wt.t, out, in, &err));
        dq_assert_no_error(err);
        g_assert_cmpint(q.dtype, ==, DQ_WEIGHT_Q8);
        /* the reference gets the dequantized values as an F32 tensor */
        float *deq = g_new(float, (size_t)out *in);
        dq_q8_dequantize(&q, deq);
        DqTensor dt = wt.t;
        dt.dtype = DQ_DTYPE_F32;
        dt.data = deq;
        dt.nbytes = (size_t)out * in * 4;
        g_assert_true(ref->weight_init(ref, &wr, &dt, out, in, &err));
        /* and rounded to bf16: what the prefill's product multiplies on AMX tiles */
        float *deqr = g_new(float, (size_t)out *in);
        for (size_t i = 0; i < (size_t)out * in; i++)
            deqr[i] = dq_bf16f(dq_f32_bf16(deq[i]));
        DqWeight wrr;
        dt.data = deqr;
        g_assert_true(ref->weight_init(ref, &wrr, &dt, out, in, &err));
        g_assert_true(ref->weight_init(ref, &br, &bt.t, 1, out, &err));
        g_assert_true(fast->weight_init(fast, &bf, &bt.t, 1, out, &err));
        dq_assert_no_error(err);
        size_t nx = (size_t)n * in, ny = (size_t)n * out;
        float *x = g_new(float, nx), *yr = g_new(float, ny), *yf = g_new(float, ny + out);
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)g_rand_double_range(rng, -1, 1);
        for (int j = 0; j < out; j++)
            yf[ny + j] = -12345.0f;
        /* prefill rows on AMX: the x3 product of the weights rounded to bf16; then (amx 0)
         * the float32 GEMM of the dequantized weights, as every CPU without AMX runs it */
        gboolean tiles = n > fast->matmul_row_invariant_max && dq_cpu_has_amx_bf16();
        for (int withbias = 0; withbias < 2; withbias++)
            for (int amx = tiles; amx >= 0; amx--) {
                gboolean was = dq_gemm_bf16_x3(amx);
                ref->matmul(ref, yr, x, amx ? &wrr : &wr, withbias ? &br : NULL, n);
                fast->matmul(fast, yf, x, &q, withbias ? &bf : NULL, n);
                dq_gemm_bf16_x3(was);
                size_t at = 0;
                double e = rel_err(yf, yr, ny, &at);
                if (!(e <= 2e-5))
                    g_error("q8 matmul %dx%dx%d%s%s: error %.3g at %zu (int8 %.7g, reference "
                            "%.7g)",
                            n, out, in, withbias ? "+bias" : "", amx ? " (AMX)" : "", e, at, yf[at],
                            yr[at]);
            }
        for (int withbias = 0; withbias < 2; withbias++) {
            fast->matmul(fast, yf, x, &q, withbias ? &bf : NULL, n);
            /* row invariance: decode rows each as alone; prefill rows split in two parts of at
             * least fast->matmul_row_invariant_min rows */
            float *part = g_new(float, ny);
            if (n <= fast->matmul_row_invariant_max) {
                /* the VNNI kernels (where the CPU has them) give the AVX2 kernel's bits: the
                 * same exact integer sums, scaled in the same order */
                gboolean was = dq_q8_force_avx2(TRUE);
                fast->matmul(fast, part, x, &q, withbias ? &bf : NULL, n);
                dq_q8_force_avx2(was);
                g_assert_cmpmem(part, ny * sizeof(float), yf, ny * sizeof(float));
                for (int r = 0; r < n; r++)
                    fast->matmul(fast, part + (size_t)r * out, x + (size_t)r * in, &q,
                                 withbias ? &bf : NULL, 1);
                g_assert_cmpmem(part, ny * sizeof(float), yf, ny * sizeof(float));
            } else if (n >= 2 * fast->matmul_row_invariant_min) {
                int m = n / 2;
                fast->matmul(fast, part, x, &q, withbias ? &bf : NULL, m);
                fast->matmul(fast, part + (size_t)m * out, x + (size_t)m * in, &q,
                             withbias ? &bf : NULL, n - m);
                g_assert_cmpmem(part, ny * sizeof(float), yf, ny * sizeof(float));
            }
            g_free(part);
        }
        for (int j = 0; j < out; j++)
            if (yf[ny + j] != -12345.0f)
                g_error("q8 matmul %dx%dx%d: y's row %d (past n) written at %d", n, out, in, n, j);
        g_free(x);
        g_free(yr);
        g_free(yf);
        ref->weight_free(ref, &wr);
        ref->weight_free(ref, &wrr);
        g_free(deqr);
        ref->weight_free(ref, &br);
        fast->weight_free(fast, &bf);
        fast->weight_free(fast, &q);
        g_free(deq);
        g_free(wt.bits);
        g_free(bt.bits);
    }
    g_assert_cmpint(fast->matmul_row_invariant_max, ==, 8);
}

/* matmul_many on int8 weights (x quantized once for all): the same bits as one matmul a
 * weight, for decode rows and prefill rows, with and without biases. */
static void test_matmul_many(void) {
    const int rows_of[3] = {96, 32, 36}, in = 576, ns[] = {1, 5, 8, 12};
    GError *err = NULL;
    for (size_t s = 0; s < G_N_ELEMENTS(ns); s++) {
        int n = ns[s];
        DqWeight q[3], b[3];
        RandTensor wt[3], bt[3];
        float *ys[3], *alone = g_new(float, (size_t)n * 96);
        const DqWeight *ws[3], *bs[3];
        float *x = g_new(float, (size_t)n *in);
        for (size_t i = 0; i < (size_t)n * in; i++)
            x[i] = (float)g_rand_double_range(rng, -1, 1);
        for (int i = 0; i < 3; i++) {
            wt[i] = rand_tensor(rows_of[i], in, DQ_DTYPE_BF16, 0.1);
            bt[i] = rand_tensor(1, rows_of[i], DQ_DTYPE_F32, 1);
            g_assert_true(fast->weight_init_q8(fast, &q[i], &wt[i].t, rows_of[i], in, &err));
            g_assert_true(fast->weight_init(fast, &b[i], &bt[i].t, 1, rows_of[i], &err));
            dq_assert_no_error(err);
            ws[i] = &q[i];
            bs[i] = i == 1 ? NULL : &b[i];
            ys[i] = g_new(float, (size_t)n *rows_of[i]);
        }
        for (int withbias = 0; withbias < 2; withbias++) {
            fast->matmul_many(fast, ys, x, ws, withbias ? bs : NULL, 3, n);
            for (int i = 0; i < 3; i++) {
                fast->matmul(fast, alone, x, ws[i], withbias ? bs[i] : NULL, n);
                g_assert_cmpmem(alone, (size_t)n * rows_of[i] * sizeof(float), ys[i],
                                (size_t)n * rows_of[i] * sizeof(float));
            }
        }
        for (int i = 0; i < 3; i++) {
            fast->weight_free(fast, &q[i]);
            fast->weight_free(fast, &b[i]);
            g_free(wt[i].bits);
            g_free(bt[i].bits);
            g_free(ys[i]);
        }
        g_free(x);
        g_free(alone);
    }
}

/* ---- the model against the goldens */

typedef struct {
    int runs;
    double worst_cosine, worst_abs, worst_margin_err, flip_margin;
    int steps, equal, free_equal;
} Sweep;

/* The logits of every golden step [steps, vocab]: the prompt, then the golden ids fed one by one
 * (teacher forcing), so that each step is compared on the golden prefix and one flipped pick
 * does not change every later comparison. */
static float *forced_logits(Smolvlm *m, const int32_t *ids, int n_ids, DqImageTiles **tiles,
                            int n_images, const int32_t *gold, int steps) {
    const SmolvlmConfig *cfg = smolvlm_config(m);
    DqBackend *be = smolvlm_backend(m);
    GError *err = NULL;
    int n_tiles = 0;
    for (int i = 0; i < n_images; i++)
        n_tiles += tiles[i]->n_tiles;
    DqPixelTile *tp = g_new0(DqPixelTile, MAX(n_tiles, 1));
    for (int i = 0, t = 0; i < n_images; i++)
        for (int k = 0; k < tiles[i]->n_tiles; k++)
            tp[t++] = (DqPixelTile){dq_image_tiles_tile(tiles[i], k), &tiles[i]->lut[0][0],
                                    tiles[i]->hashes[k]};
    int n_features = n_tiles * cfg->tokens_per_tile;
    float *features = NULL;
    if (n_tiles > 0) {
        features = be->alloc(be, (size_t)n_features * cfg->text_hidden);
        g_assert_true(smolvlm_encode_tiles(m, tp, n_tiles, features, NULL, &err));
        dq_assert_no_error(err);
    }
    SmolvlmKV *kv = smolvlm_kv_new(m, n_ids + steps, &err);
    SmolvlmWorkspace *ws = smolvlm_workspace_new(m, n_ids, &err);
    dq_assert_no_error(err);
    float *logits = g_new(float, (size_t)steps * cfg->vocab_size);
    int cursor = 0;
    for (int i = 0; i < steps; i++) {
        const int32_t *in = i == 0 ? ids : gold + i - 1;
        int n = i == 0 ? n_ids : 1;
        g_assert_true(smolvlm_embed(m, ws, 0, in, n, features, n_features, &cursor, &err));
        SmolvlmSegment seg = {
            .kv = kv, .n_rows = n, .logits = logits + (size_t)i * cfg->vocab_size};
        g_assert_true(smolvlm_forward(m, ws, &seg, 1, &err));
        dq_assert_no_error(err);
    }
    g_assert_cmpint(cursor, ==, n_features);
    smolvlm_workspace_free(m, ws);
    smolvlm_kv_free(m, kv);
    if (features != NULL)
        be->release(be, features);
    g_free(tp);
    return logits;
}

static void run_case(const char *fx, const char *case_name, JsonObject *case_obj,
                     const char *variant, const char *weights, Sweep *sw) {
    JsonObject *vars = json_object_get_object_member(case_obj, "variants");
    JsonObject *v = json_object_get_object_member(vars, variant);
    char *case_dir = g_build_filename(fx, "cases", case_name, NULL);
    char *snap =
        g_build_filename(dq_test_shared_dir(), json_object_get_string_member(v, "model_dir"), NULL);
    JsonObject *files = json_object_get_object_member(v, "files");
    /* bf16 variants share the f32 variant's input ids */
    JsonObject *ids_entry = NULL;
    if (json_object_has_member(files, "input_ids")) {
        ids_entry = json_object_get_object_member(files, "input_ids");
    } else {
        char *base = g_strndup(variant, strlen(variant) - strlen("-bf16"));
        ids_entry = json_object_get_object_member(
            json_object_get_object_member(json_object_get_object_member(vars, base), "files"),
            "input_ids");
        g_free(base);
    }
    size_t ids_len;
    int32_t *ids =
        fixture_read_binary(case_dir, json_object_get_string_member(ids_entry, "file"), &ids_len);
    int n_ids = (int)(ids_len / 4);
    GError *err = NULL;
    Smolvlm *m = smolvlm_open(snap, &(SmolvlmOptions){.device = "cpu", .weights = weights}, &err);
    dq_assert_no_error(err);
    const SmolvlmConfig *cfg = smolvlm_config(m);
    int V = cfg->vocab_size;
    int n_images;
    DqImageTiles **tiles = fixture_case_tiles(fx, case_obj, snap, &n_images);

    JsonObject *gen = json_object_get_object_member(v, "generation");
    JsonArray *out = json_object_get_array_member(gen, "output_ids");
    JsonArray *steps = json_object_get_array_member(gen, "steps");
    int total = (int)json_array_get_length(out);
    int32_t *gold = g_new(int32_t, total);
    for (int i = 0; i < total; i++)
        gold[i] = (int32_t)json_array_get_int_element(out, (guint)i);
    float *lg = forced_logits(m, ids, n_ids, tiles, n_images, gold, total);

    /* step 0 = the last prompt position: against the stored logits */
    JsonObject *le = json_object_get_object_member(files, "logits_last");
    size_t glen;
    float *g = fixture_read_binary(case_dir, json_object_get_string_member(le, "file"), &glen);
    int32_t *gids =
        json_object_has_member(le, "ids_file")
            ? fixture_read_binary(case_dir, json_object_get_string_member(le, "ids_file"), NULL)
            : NULL;
    g_assert_true(gids != NULL || glen == (size_t)V * 4);
    double dot = 0, na = 0, nb = 0, max_abs = 0;
    for (size_t i = 0; i < glen / 4; i++) {
        double a = lg[gids ? gids[i] : (int)i], b = g[i];
        dot += a * b;
        na += a * a;
        nb += b * b;
        max_abs = MAX(max_abs, fabs(a - b));
    }
    double cosv = dot / sqrt(na * nb);

    /* every step: my margin between the golden top1 and top2 ids against the golden margin,
     * and my greedy pick against the golden one wherever the golden margin exceeds
     * GREEDY_MARGIN */
    int equal = 0;
    double margin_err = 0;
    for (int i = 0; i < total; i++) {
        JsonObject *st = json_array_get_object_element(steps, (guint)i);
        const float *li = lg + (size_t)i * V;
        int top1 = (int)json_object_get_int_member(st, "top1");
        int top2 = (int)json_object_get_int_member(st, "top2");
        double gm = json_object_get_double_member(st, "margin");
        margin_err = MAX(margin_err, fabs((li[top1] - li[top2]) - gm));
        int best = 0;
        for (int k = 1; k < V; k++)
            if (li[k] > li[best])
                best = k;
        if (best == gold[i])
            equal++;
        else
            sw->flip_margin = MAX(sw->flip_margin, gm);
        if (best != gold[i] && gm > GREEDY_MARGIN)
            g_error("%s/%s %s: step %d picks %d, golden %d with margin %.3g > %.3g", case_name,
                    variant, weights, i, best, gold[i], gm, GREEDY_MARGIN);
    }
    /* and free-running generation, for the report: how many leading tokens equal the goldens */
    SmolvlmRequest req = {.input_ids = ids,
                          .n_input_ids = n_ids,
                          .images = (const DqImageTiles *const *)tiles,
                          .n_images = n_images};
    dq_generate_options_init(&req.options, cfg);
    req.options.do_sample = FALSE;
    req.options.max_new_tokens = total;
    req.options.ignore_eos = TRUE;
    DqGenerateResult res;
    g_assert_true(smolvlm_generate(m, &req, 1, &res, NULL, &err));
    dq_assert_no_error(err);
    int lead = 0;
    while (lead < res.n_output_ids && lead < total && res.output_ids[lead] == gold[lead])
        lead++;

    char *line = g_strdup_printf("%s/%s %s: logits cosine %.7f max abs %.3f; forced greedy "
                                 "%d/%d equal, margin error <= %.3f; free-running %d/%d equal",
                                 case_name, variant, weights, cosv, max_abs, equal, total,
                                 margin_err, lead, total);
    g_test_message("%s", line);
    if (g_getenv("DQ_TEST_VERBOSE"))
        printf("%s\n", line);
    g_free(line);
    if (!(cosv >= 0.999) || !(max_abs <= 0.5))
        g_error("%s/%s %s: logits cosine %.7f (limit 0.999), max abs %.3g (limit 0.5)", case_name,
                variant, weights, cosv, max_abs);
    if (!(max_abs > 1e-3))
        g_error("%s/%s %s: logits within %.3g of float32: not approximated?", case_name, variant,
                weights, max_abs);
    sw->runs++;
    sw->worst_cosine = MIN(sw->worst_cosine, cosv);
    sw->worst_abs = MAX(sw->worst_abs, max_abs);
    sw->worst_margin_err = MAX(sw->worst_margin_err, margin_err);
    sw->steps += total;
    sw->equal += equal;
    sw->free_equal += lead;

    dq_generate_result_clear(&res);
    g_free(lg);
    g_free(gold);
    g_free(g);
    g_free(gids);
    for (int i = 0; i < n_images; i++)
        dq_image_tiles_free(tiles[i]);
    g_free(tiles);
    smolvlm_free(m);
    g_free(ids);
    g_free(snap);
    g_free(case_dir);
}

static void goldens(const char *weights) {
#ifdef DQ_Q8_KERNELS_ONLY
    g_test_skip("test_q8_portable: kernels only (test_q8 runs the model)");
    return;
#endif
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tiny models are not here");
        return;
    }
#ifdef DQ_FULL_FIXTURES
    char *fx = g_build_filename(shared, "fixtures", NULL);
#else
    char *fx = g_build_filename(dq_test_source_dir(), "tests", "fixtures", NULL);
#endif
    char *index_path = g_build_filename(fx, "index.json", NULL);
    JsonParser *ip;
    JsonObject *index = fixture_parse_file(index_path, &ip);
    JsonArray *cases = json_object_get_array_member(index, "cases");
    Sweep sw = {.worst_cosine = 1};
    for (guint c = 0; c < json_array_get_length(cases); c++) {
        const char *name = json_array_get_string_element(cases, c);
#ifndef DQ_FULL_FIXTURES
        /* the unit program (also under ASan): the two cheapest cases */
        if (strcmp(name, "text_only") != 0 && strcmp(name, "no_split") != 0)
            continue;
#endif
        char *path = g_build_filename(fx, "cases", name, "case.json", NULL);
        JsonParser *cp;
        JsonObject *case_obj = fixture_parse_file(path, &cp);
        const char *lists[] = {"variants_f32", "variants_bf16"};
        for (int l = 0; l < 2; l++) {
            JsonArray *vs = json_object_get_array_member(index, lists[l]);
            for (guint i = 0; i < json_array_get_length(vs); i++)
                run_case(fx, name, case_obj, json_array_get_string_element(vs, i), weights, &sw);
        }
        g_object_unref(cp);
        g_free(path);
    }
    char *line =
        g_strdup_printf("%s, %d runs: worst logits cosine %.7f, worst max abs %.3f; forced "
                        "greedy %d of %d steps equal (the others at golden margins <= "
                        "%.3f; worst margin error %.3f); free-running %d of %d leading "
                        "tokens equal",
                        weights, sw.runs, sw.worst_cosine, sw.worst_abs, sw.equal, sw.steps,
                        sw.flip_margin, sw.worst_margin_err, sw.free_equal, sw.steps);
    g_test_message("%s", line);
    if (g_getenv("DQ_TEST_VERBOSE"))
        printf("%s\n", line);
    g_free(line);
#ifdef DQ_FULL_FIXTURES
    g_assert_cmpint(sw.runs, >=, 48);
#else
    g_assert_cmpint(sw.runs, ==, 8);
#endif
    /* not vacuous: nearly every forced step picks the golden token */
    g_assert_cmpint(10 * sw.equal, >=, 9 * sw.steps);
    g_object_unref(ip);
    g_free(index_path);
    g_free(fx);
}

/* --weights bf16, op by op: weight_init_bf16 keeps a bf16 matrix as stored and rounds a float32
 * one to nearest even, and matmul multiplies what it keeps. Against the reference on the same
 * bf16 values: decode rows (the GEMV) with x as it is; prefill rows with x as it is where the
 * products are float32 (this backend without AVX512-BF16), or rounded to bf16 where they are
 * bf16 x bf16 (a backend made under DOCQA_BF16_DOT=emulate, or a CPU with the instruction).
 * Tolerance 2e-5 of the scale, as test_backend_fast's: the same products, another order. */
static void check_bf16_matmul(DqBackend *be, gboolean dot) {
    const int shapes[][3] = {{1, 64, 64},   {3, 67, 96},     {8, 33, 576},
                             {9, 129, 577}, {37, 200, 1536}, {300, 72, 96}};
    GError *err = NULL;
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
        int n = shapes[s][0], out = shapes[s][1], in = shapes[s][2];
        DqDtype dtype = s % 2 ? DQ_DTYPE_BF16 : DQ_DTYPE_F32;
        RandTensor wt = rand_tensor(out, in, dtype, 0.1);
        size_t nw = (size_t)out * in, nx = (size_t)n * in, ny = (size_t)n * out;
        /* the reference's weight: the values rounded as the option rounds them */
        float *wf = g_new(float, nw);
        dq_convert_to_f32(wf, wt.bits, dtype, nw);
        for (size_t i = 0; i < nw; i++)
            wf[i] = dq_bf16f(dq_f32_bf16(wf[i]));
        DqTensor rt = wt.t;
        rt.dtype = DQ_DTYPE_F32;
        rt.data = wf;
        rt.nbytes = nw * 4;
        DqWeight w, wr;
        g_assert_true(be->weight_init_bf16(be, &w, &wt.t, out, in, &err));
        g_assert_true(ref->weight_init(ref, &wr, &rt, out, in, &err));
        dq_assert_no_error(err);
        g_assert_true(dtype == DQ_DTYPE_F32 ? w.owned != NULL : w.owned == NULL);
        float *x = g_new(float, nx), *xr = g_new(float, nx), *yr = g_new(float, ny),
              *yf = g_new(float, ny);
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)g_rand_double_range(rng, -1, 1);
        gboolean rounded = dot && n > be->matmul_row_invariant_max;
        for (size_t i = 0; i < nx; i++)
            xr[i] = rounded ? dq_bf16f(dq_f32_bf16(x[i])) : x[i];
        ref->matmul(ref, yr, xr, &wr, NULL, n);
        be->matmul(be, yf, x, &w, NULL, n);
        size_t at = 0;
        double e = rel_err(yf, yr, ny, &at);
        if (!(e <= 2e-5))
            g_error("bf16%s matmul %dx%dx%d from %s: error %.3g at %zu (%.7g, reference %.7g)",
                    dot ? " dot" : "", n, out, in, dtype == DQ_DTYPE_F32 ? "f32" : "bf16", e, at,
                    yf[at], yr[at]);
        be->weight_free(be, &w);
        ref->weight_free(ref, &wr);
        g_free(wf);
        g_free(x);
        g_free(xr);
        g_free(yr);
        g_free(yf);
        g_free(wt.bits);
    }
}

static void test_bf16_matmul(void) {
    check_bf16_matmul(fast, dq_cpu_has_avx512bf16());
    g_setenv("DOCQA_BF16_DOT", "emulate", TRUE);
    GError *err = NULL;
    DqBackend *emul = dq_backend_cpu_fast_new(&err);
    dq_assert_no_error(err);
    g_unsetenv("DOCQA_BF16_DOT");
    check_bf16_matmul(emul, TRUE);
    dq_backend_free(emul);
}

static void test_goldens_int8(void) {
    goldens("int8");
}

/* --weights bf16 where its products round the activations to bf16: vdpbf16ps, or on CPUs
 * without it the emulation (cpu_gemm_bf16.c; DOCQA_BF16_DOT is read as a backend is made). */
static void test_goldens_bf16(void) {
    g_setenv("DOCQA_BF16_DOT", "emulate", TRUE);
    goldens("bf16");
    g_unsetenv("DOCQA_BF16_DOT");
}

static void test_options(void) {
#ifdef DQ_Q8_KERNELS_ONLY
    g_test_skip("test_q8_portable: kernels only (test_q8 runs the model)");
    return;
#endif
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tiny models are not here");
        return;
    }
    char *snap = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    GError *err = NULL;
    g_assert_null(smolvlm_open(snap, &(SmolvlmOptions){.weights = "int4"}, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_assert_nonnull(strstr(err->message, "int4"));
    g_clear_error(&err);
    /* the reference has no int8 kernels nor bf16 products: said, not ignored */
    const char *modes[] = {"int8", "bf16"};
    for (int i = 0; i < 2; i++) {
        g_assert_null(
            smolvlm_open(snap, &(SmolvlmOptions){.device = "cpu-ref", .weights = modes[i]}, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
        g_assert_nonnull(strstr(err->message, modes[i]));
        g_clear_error(&err);
    }
    Smolvlm *m = smolvlm_open(snap, &(SmolvlmOptions){.weights = "stored"}, &err);
    dq_assert_no_error(err);
    smolvlm_free(m);
    g_free(snap);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    rng = g_rand_new_with_seed(20261126);
    GError *err = NULL;
    ref = dq_backend_cpu_new(&err);
    dq_assert_no_error(err);
    fast = dq_backend_cpu_fast_new(&err);
    dq_assert_no_error(err);
    g_test_add_func("/q8/quantize", test_quantize);
    g_test_add_func("/q8/matmul", test_matmul);
    g_test_add_func("/q8/matmul_many", test_matmul_many);
    g_test_add_func("/q8/options", test_options);
    g_test_add_func("/q8/goldens", test_goldens_int8);
    g_test_add_func("/bf16/matmul", test_bf16_matmul);
    g_test_add_func("/bf16/goldens", test_goldens_bf16);
#ifdef DQ_Q8_KERNELS_ONLY
    g_assert_false(dq_cpu_has_avx2()); /* test_q8_portable runs with DOCQA_CPU_NO_AVX2=1 */
#endif
    int rc = g_test_run();
    dq_backend_free(ref);
    dq_backend_free(fast);
    g_rand_free(rng);
    return rc;
}
