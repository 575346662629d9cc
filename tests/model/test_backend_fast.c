/* The fast CPU backend (device "cpu") op by op against the CPU reference ("cpu-ref").
 *
 * Both load the same tensors (BF16 unless said otherwise: the reference upcasts them exactly, the
 * fast backend keeps them as stored and converts in registers, so both multiply the same
 * values). Tolerances, relative to max(1, max |reference|):
 * - matmul, attention: 2e-5. Both accumulate in float32 but in different orders (AVX2 lanes,
 *   OpenBLAS blocking, attention's online softmax rescaling); with |inputs| <= 1 and up to 1024
 *   terms the reordering error stays near sqrt(k) * 2^-24 * scale ~ 2e-6; 2e-5 leaves margin and
 *   still catches any wrong element (which would be off by O(1)).
 * - gelu_tanh, silu_mul: 1e-5 (float32 vector exp, ~2 ulp, against the reference's
 *   double tanh / float expf). act: the reference's bits (the fast backend keeps its op), but
 *   for tanh's GELU, its gelu_tanh.
 * - everything that only moves data (embed, add_broadcast, patchify ...): exact.
 * - attention with bf16_products (`--weights bf16`) where the CPU has AMX or AVX512-BF16: 1e-2,
 *   bf16 operands; on vdpbf16ps also the instruction's emulation's bits.
 *   Without them on AMX, attention's products are split ones (x6, float32's accuracy): 2e-5 as
 *   the FMA path, which /backend_fast/attention_fma then runs with the split products off.
 * Row invariance (the promise batched decode relies on) is checked bit for bit. The whole
 * model on the tiny snapshots of ../shared: last-prompt logits within 1e-4 of their scale and
 * the same greedy tokens. */
#include "act_ref.h"
#include "backend.h"
#include "backend_cuda.h"
#include "cpu_gemm.h"
#include "cpu_simd.h"
#include "dq_error.h"
#include "pipeline.h"
#include "testutil.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

static DqBackend *ref, *fast;
static GRand *rng;

typedef struct {
    size_t n;
    float *host;
    float *r; /* reference buffer */
    float *f; /* fast buffer */
} Pair;

static Pair pair_new(size_t n, double scale) {
    Pair p = {.n = n, .host = g_new(float, MAX(n, 1))};
    for (size_t i = 0; i < n; i++)
        p.host[i] = (float)(g_rand_double_range(rng, -1, 1) * scale);
    p.r = ref->alloc(ref, n);
    p.f = fast->alloc(fast, n);
    ref->upload(ref, p.r, p.host, n);
    fast->upload(fast, p.f, p.host, n);
    return p;
}

static void pair_free(Pair *p) {
    ref->release(ref, p->r);
    fast->release(fast, p->f);
    g_free(p->host);
}

static void pair_check(Pair *p, double tol, const char *what) {
    double worst = 0, scale = 1;
    size_t at = 0;
    for (size_t i = 0; i < p->n; i++)
        scale = MAX(scale, fabs(p->r[i]));
    for (size_t i = 0; i < p->n; i++) {
        double d = fabs((double)p->f[i] - p->r[i]);
        if (!(d <= worst)) {
            worst = isnan(d) ? INFINITY : d;
            at = i;
        }
    }
    if (!(worst / scale <= tol))
        g_error("%s: max error %.3g (relative to %.3g) at %zu: fast %.7g ref %.7g, tolerance %.3g",
                what, worst, scale, at, p->f[at], p->r[at], tol);
}

typedef struct {
    void *bits;
    DqTensor t;
    DqWeight r, f;
} WPair;

static WPair wpair_new(int rows, int cols, DqDtype dtype) {
    size_t n = (size_t)rows * cols;
    WPair w = {.bits = g_malloc(n * 4)};
    for (size_t i = 0; i < n; i++) {
        float f = (float)g_rand_double_range(rng, -1, 1);
        if (dtype == DQ_DTYPE_F32) {
            ((float *)w.bits)[i] = f;
        } else {
            uint32_t u;
            memcpy(&u, &f, 4);
            ((uint16_t *)w.bits)[i] = (uint16_t)(u >> 16);
        }
    }
    w.t = (DqTensor){.name = "random",
                     .file = "test",
                     .dtype = dtype,
                     .ndim = 2,
                     .shape = {rows, cols},
                     .numel = (int64_t)n,
                     .data = w.bits,
                     .nbytes = n * dq_dtype_size(dtype)};
    GError *err = NULL;
    g_assert_true(ref->weight_init(ref, &w.r, &w.t, rows, cols, &err));
    g_assert_true(fast->weight_init(fast, &w.f, &w.t, rows, cols, &err));
    dq_assert_no_error(err);
    return w;
}

static void wpair_free(WPair *w) {
    ref->weight_free(ref, &w->r);
    fast->weight_free(fast, &w->f);
    g_free(w->bits);
}

static void test_weights_mapped(void) {
    /* BF16 matrices are used where they lie (no float32 copy); vectors are upcast. */
    WPair w = wpair_new(40, 24, DQ_DTYPE_BF16), b = wpair_new(1, 24, DQ_DTYPE_BF16);
    g_assert_true(w.f.data == (const float *)w.bits);
    g_assert_null(w.f.owned);
    g_assert_cmpint(w.f.dtype, ==, DQ_DTYPE_BF16);
    g_assert_cmpint(b.f.dtype, ==, DQ_DTYPE_F32);
    GError *err = NULL;
    DqWeight bad;
    g_assert_false(fast->weight_init(fast, &bad, &w.t, 40, 25, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_MODEL);
    g_clear_error(&err);
    wpair_free(&w);
    wpair_free(&b);
}

static void test_matmul(void) {
    /* decode rows (1..8: the AVX2 GEMV), odd widths (the scalar tails), prefill and vision rows
     * (bf16 panels + sgemm, or threaded sgemm for F32) */
    const int shapes[][3] = {{1, 64, 48},    {3, 96, 64},   {8, 33, 17},      {5, 300, 576},
                             {37, 200, 130}, {300, 72, 96}, {1100, 260, 768}, {9, 129, 1024}};
    const DqDtype dtypes[] = {DQ_DTYPE_BF16, DQ_DTYPE_F32};
    for (size_t d = 0; d < G_N_ELEMENTS(dtypes); d++)
        for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
            int n = shapes[s][0], out = shapes[s][1], in = shapes[s][2];
            /* The portable kernels (test_backend_fast_portable) skip the 1100-row product: its
             * edges are the smaller shapes', its split among threads the vector kernels', and
             * its scalar loops take seconds under ASan. */
            if (!dq_cpu_has_avx2() && (size_t)n * out * in > ((size_t)1 << 26))
                continue;
            Pair x = pair_new((size_t)n * in, 1), y = pair_new((size_t)n * out, 1);
            WPair w = wpair_new(out, in, dtypes[d]), b = wpair_new(1, out, dtypes[d]);
            for (int withbias = 0; withbias < 2; withbias++) {
                ref->matmul(ref, y.r, x.r, &w.r, withbias ? &b.r : NULL, n);
                fast->matmul(fast, y.f, x.f, &w.f, withbias ? &b.f : NULL, n);
                pair_check(&y, 2e-5, withbias ? "matmul+bias" : "matmul");
                if (n > fast->matmul_row_invariant_max)
                    continue;
                /* each row exactly as alone */
                float *batched = g_memdup2(y.f, y.n * sizeof(float));
                for (int r = 0; r < n; r++)
                    fast->matmul(fast, y.f + (size_t)r * out, x.f + (size_t)r * in, &w.f,
                                 withbias ? &b.f : NULL, 1);
                g_assert_cmpmem(y.f, y.n * sizeof(float), batched, y.n * sizeof(float));
                g_free(batched);
            }
            pair_free(&x);
            pair_free(&y);
            wpair_free(&w);
            wpair_free(&b);
        }
    g_assert_cmpint(fast->matmul_row_invariant_max, ==, 8);
}

/* matmul_many (decode's q, k, v in one parallel loop; vision's many rows one at a time): the
 * same bits as one matmul a weight, with and without biases, also where the weights' storage
 * differs (one at a time then). */
static void test_matmul_many(void) {
    const int rows_of[3] = {96, 32, 36}, in = 80, ns[] = {1, 3, 8, 20};
    const DqDtype dtypes[] = {DQ_DTYPE_BF16, DQ_DTYPE_F32};
    for (size_t d = 0; d < G_N_ELEMENTS(dtypes); d++)
        for (int mixed = 0; mixed < 2; mixed++)
            for (size_t s = 0; s < G_N_ELEMENTS(ns); s++) {
                int n = ns[s];
                Pair x = pair_new((size_t)n * in, 1);
                WPair w[3], b[3];
                Pair y[3];
                const DqWeight *ws[3], *bs[3];
                float *ys[3];
                for (int i = 0; i < 3; i++) {
                    /* mixed: the last weight in the other storage */
                    DqDtype dt = mixed && i == 2 ? dtypes[1 - d] : dtypes[d];
                    w[i] = wpair_new(rows_of[i], in, dt);
                    b[i] = wpair_new(1, rows_of[i], DQ_DTYPE_F32);
                    y[i] = pair_new((size_t)n * rows_of[i], 1);
                    ws[i] = &w[i].f;
                    bs[i] = i == 1 ? NULL : &b[i].f; /* one without a bias among them */
                    ys[i] = y[i].f;
                }
                for (int withbias = 0; withbias < 2; withbias++) {
                    fast->matmul_many(fast, ys, x.f, ws, withbias ? bs : NULL, 3, n);
                    for (int i = 0; i < 3; i++) {
                        float *alone = fast->alloc(fast, y[i].n);
                        fast->matmul(fast, alone, x.f, ws[i], withbias ? bs[i] : NULL, n);
                        g_assert_cmpmem(alone, y[i].n * sizeof(float), y[i].f,
                                        y[i].n * sizeof(float));
                        fast->release(fast, alone);
                    }
                }
                for (int i = 0; i < 3; i++) {
                    wpair_free(&w[i]);
                    wpair_free(&b[i]);
                    pair_free(&y[i]);
                }
                pair_free(&x);
            }
}

/* Where the CPU has AMX or AVX512-BF16, attention is also run with bf16_products (--weights bf16:
 * q, k, the probabilities and v rounded to bf16 for the tile or vdpbf16ps products) against the
 * exact reference: within 1e-2 of the largest output (measured: 2.8e-3 on AMX; the roundings are
 * ~2^-9 each), and not identical to the float32 path (so the bf16 products did run). */
static gboolean bf16_attention;

static void check_attention(const DqAttention *a0, size_t q_floats, size_t kv_floats,
                            const char *what) {
    DqAttention b = *a0;
    const DqAttention *a = &b;
    b.bf16_products = bf16_attention;
    Pair q = pair_new(q_floats, 2), k = pair_new(kv_floats, 2), v = pair_new(kv_floats, 1);
    Pair out = pair_new((size_t)a->n_seq * a->n_q * a->n_heads * a->head_dim, 1);
    ref->attention(ref, out.r, q.r, k.r, v.r, a);
    fast->attention(fast, out.f, q.f, k.f, v.f, a);
    pair_check(&out, bf16_attention ? 1e-2 : 2e-5, what);
    gboolean tiles = bf16_attention || dq_amx_x6_on();
    if (tiles && a->n_heads / a->n_kv_heads * a->n_q > 16) { /* not decode-sized */
        /* the FMA path's result differs, so the tiles did run */
        float *fma = g_new(float, out.n);
        b.bf16_products = FALSE;
        gboolean was = dq_gemm_bf16_x3(FALSE);
        fast->attention(fast, fma, q.f, k.f, v.f, a);
        dq_gemm_bf16_x3(was);
        g_assert_true(memcmp(fma, out.f, out.n * sizeof(float)) != 0);
        g_free(fma);
    }
    if (bf16_attention && !dq_cpu_has_amx_bf16() && dq_dpbf16_native()) {
        /* vdpbf16ps: the instruction's emulation gives the same bits (no denormal sums here:
         * |q|, |k|, |v| ~ 1, probabilities at most 1) */
        float *emulated = g_new(float, out.n);
        b.bf16_products = TRUE;
        gboolean was = dq_gemm_bf16_force_portable(TRUE);
        g_assert_false(dq_dpbf16_native());
        fast->attention(fast, emulated, q.f, k.f, v.f, a);
        dq_gemm_bf16_force_portable(was);
        g_assert_cmpmem(emulated, out.n * sizeof(float), out.f, out.n * sizeof(float));
        g_free(emulated);
    }
    pair_free(&q);
    pair_free(&k);
    pair_free(&v);
    pair_free(&out);
}

static void test_attention(void) {
    /* vision tiles: SigLIP head dims, a full 1024-patch tile (4 key blocks) */
    const int cfg[][4] = {{3, 100, 4, 64}, {2, 81, 3, 72}, {1, 1024, 2, 64}, {2, 300, 3, 16}};
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
                         .scale = 1.0f / sqrtf((float)hd)};
        check_attention(&a, (size_t)T * P * D, (size_t)T * P * D, "attention (vision)");
    }
    /* causal: prefill from empty, a chunk after a prefix (blocks straddling the diagonal),
     * decode rows, a long cache (split over the keys), grouped heads, a few rows whose last
     * key range is in some rows' future */
    const int cc[][6] = {{50, 0, 4, 2, 64, 64},     {133, 20, 9, 3, 64, 160},
                         {1, 41, 9, 3, 64, 64},     {3, 10, 32, 32, 64, 16},
                         {1, 1700, 9, 3, 64, 1800}, {200, 1000, 4, 1, 72, 1300},
                         {5, 510, 4, 2, 64, 520}};
    for (size_t s = 0; s < G_N_ELEMENTS(cc); s++) {
        int nq = cc[s][0], len = cc[s][1], H = cc[s][2], Hkv = cc[s][3], hd = cc[s][4];
        int cap = MAX(cc[s][5], len + nq);
        DqAttention a = {.n_seq = 1,
                         .n_q = nq,
                         .n_kv = len + nq,
                         .n_heads = H,
                         .n_kv_heads = Hkv,
                         .head_dim = hd,
                         .q_stride = H * hd,
                         .kv_stride = Hkv * hd,
                         .q_pos0 = len,
                         .causal = TRUE,
                         .scale = 1.0f / sqrtf((float)hd)};
        check_attention(&a, (size_t)nq * H * hd, (size_t)cap * Hkv * hd, "attention (causal)");
    }
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
    check_attention(&a, 3 * 7 * 160, 3 * 12 * 80, "attention (strided)");
    /* Batched decode: many sequences of one row each, a job per KV head group. */
    DqAttention d = {.n_seq = 5,
                     .n_q = 1,
                     .n_kv = 300,
                     .n_heads = 9,
                     .n_kv_heads = 3,
                     .head_dim = 64,
                     .q_stride = 9 * 64,
                     .kv_stride = 3 * 64,
                     .q_seq_stride = 9 * 64,
                     .kv_seq_stride = 300 * 3 * 64,
                     .q_pos0 = 299,
                     .causal = TRUE,
                     .scale = 0.125f};
    check_attention(&d, 5 * 9 * 64, 5 * 300 * 3 * 64, "attention (batched decode)");
}

static void test_attention_bf16(void) {
    const char *dot = g_getenv("DOCQA_BF16_DOT");
    if ((!dq_cpu_has_avx512bf16() && g_strcmp0(dot, "emulate") != 0) || g_strcmp0(dot, "0") == 0) {
        g_test_skip("this CPU has neither AMX-BF16 nor AVX512-BF16 (or DOCQA_CPU_NO_AVX512BF16 "
                    "or DOCQA_BF16_DOT=0 is set) and DOCQA_BF16_DOT is not emulate: attention's "
                    "bf16 products not run");
        return;
    }
    bf16_attention = TRUE;
    test_attention();
    bf16_attention = FALSE;
    /* Row invariance (prompt_split_min's promise): a prompt's rows in two calls, the second
     * starting mid-tile and mid-range (rows 0..96 and 97..599 over 620 keys: 3 key blocks), get
     * the bits of one call. */
    const int len = 20, nq = 600, split = 97, H = 4, Hkv = 2, hd = 64;
    DqAttention a = {.n_seq = 1,
                     .n_q = nq,
                     .n_kv = len + nq,
                     .n_heads = H,
                     .n_kv_heads = Hkv,
                     .head_dim = hd,
                     .q_stride = H * hd,
                     .kv_stride = Hkv * hd,
                     .q_pos0 = len,
                     .causal = TRUE,
                     .scale = 0.125f,
                     .bf16_products = TRUE};
    Pair q = pair_new((size_t)nq * H * hd, 2), k = pair_new((size_t)(len + nq) * Hkv * hd, 2);
    Pair v = pair_new((size_t)(len + nq) * Hkv * hd, 1), out = pair_new((size_t)nq * H * hd, 1);
    float *parts = fast->alloc(fast, out.n);
    fast->attention(fast, out.f, q.f, k.f, v.f, &a);
    DqAttention p0 = a, p1 = a;
    p0.n_q = split;
    p0.n_kv = len + split;
    p1.n_q = nq - split;
    p1.q_pos0 = len + split;
    fast->attention(fast, parts, q.f, k.f, v.f, &p0);
    fast->attention(fast, parts + (size_t)split * H * hd, q.f + (size_t)split * H * hd, k.f, v.f,
                    &p1);
    g_assert_cmpmem(parts, out.n * sizeof(float), out.f, out.n * sizeof(float));
    fast->release(fast, parts);
    pair_free(&q);
    pair_free(&k);
    pair_free(&v);
    pair_free(&out);
}

/* Which products a prompt's attention takes. DOCQA_BF16_DOT=0 turns bf16 activations off
 * (bf16_dot FALSE) on AMX too: its attention then takes the exact split products or float32
 * FMAs, as its GEMMs take the exact x3 product, not bf16 operands on tiles. The AMX cases are
 * decided here on any CPU: the decision is a function of the flags. */
static void test_attention_dispatch(void) {
    for (int amx = 0; amx <= 1; amx++)
        for (int x6 = 0; x6 <= amx; x6++) { /* x6 only where AMX runs */
            DqAttnProducts exact = x6 ? DQ_ATTN_X6 : DQ_ATTN_F32;
            g_assert_cmpint(dq_attn_products(TRUE, TRUE, TRUE, amx, x6), ==,
                            amx ? DQ_ATTN_AMX_BF16 : DQ_ATTN_DOT_BF16);
            g_assert_cmpint(dq_attn_products(TRUE, FALSE, TRUE, amx, x6), ==, exact);
            for (int dot = 0; dot <= 1; dot++) {
                g_assert_cmpint(dq_attn_products(FALSE, dot, TRUE, amx, x6), ==, exact);
                for (int bf16 = 0; bf16 <= 1; bf16++) /* heads over 128: float32 */
                    g_assert_cmpint(dq_attn_products(bf16, dot, FALSE, amx, x6), ==, DQ_ATTN_F32);
            }
        }
}

/* On AMX the exact attention runs on tiles (above); its FMA path, which CPUs without AMX take,
 * against the reference here too. */
static void test_attention_fma(void) {
    if (!dq_amx_x6_on()) {
        g_test_skip("no AMX split products here: /backend_fast/attention ran the FMA path");
        return;
    }
    gboolean was = dq_gemm_bf16_x3(FALSE);
    g_assert_false(dq_amx_x6_on());
    test_attention();
    dq_gemm_bf16_x3(was);
}

/* float16 as F16C converts (round to nearest even). */
__attribute__((target("f16c"))) static uint16_t to_f16(float x) {
    return _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT);
}
__attribute__((target("f16c"))) static float from_f16(uint16_t h) {
    return _cvtsh_ss(h);
}

/* attention_segments: a batch of sequences with their own caches in one call (the decode step's
 * batch) against the reference's loop of copy + attention, and bit for bit against each
 * sequence alone, through attention_segments and (float32) the attention op (a request's
 * result must not depend on its batch-mates).
 * f16: the fast backend's caches are float16 (DqAttention.kv_f16, used with --weights int8).
 * Every key and value is made exact in float16 first, so that the reference (float32 caches of
 * the same values) and the fast backend multiply the same numbers and 2e-5 holds; how values
 * that are not exact are rounded as rows are appended is checked at the end. */
static void check_segments(int n_segs, const int (*seg)[2], int H, int Hkv, int hd, gboolean f16,
                           const char *what) {
    int qd = H * hd, kvd = Hkv * hd, rows = 0;
    for (int s = 0; s < n_segs; s++)
        rows += seg[s][0];
    Pair q = pair_new((size_t)rows * qd, 1), k = pair_new((size_t)rows * kvd, 1);
    Pair v = pair_new((size_t)rows * kvd, 1), out = pair_new((size_t)rows * qd, 0);
    Pair *kc = g_new(Pair, 2 * n_segs); /* K and V caches of each sequence */
    DqAttnSegment *rs = g_new(DqAttnSegment, n_segs), *fs = g_new(DqAttnSegment, n_segs);
    for (int s = 0, r = 0; s < n_segs; r += seg[s][0], s++) {
        size_t cap = (size_t)(seg[s][1] + seg[s][0] + 3) * kvd; /* room past the end */
        kc[2 * s] = pair_new(cap, 1);
        kc[2 * s + 1] = pair_new(cap, 1);
        rs[s] = (DqAttnSegment){.k_cache = kc[2 * s].r,
                                .v_cache = kc[2 * s + 1].r,
                                .row0 = r,
                                .n_q = seg[s][0],
                                .n_past = seg[s][1]};
        fs[s] = (DqAttnSegment){.k_cache = kc[2 * s].f,
                                .v_cache = kc[2 * s + 1].f,
                                .row0 = r,
                                .n_q = seg[s][0],
                                .n_past = seg[s][1]};
    }
    if (f16) { /* exact in float16; the fast caches as float16 in their buffers' first half */
        Pair **all = g_new(Pair *, 2 * n_segs + 2);
        all[0] = &k;
        all[1] = &v;
        for (int i = 0; i < 2 * n_segs; i++)
            all[i + 2] = &kc[i];
        for (int i = 0; i < 2 * n_segs + 2; i++) {
            Pair *p = all[i];
            // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): set
            for (size_t j = 0; j < p->n; j++)
                p->host[j] = from_f16(to_f16(p->host[j]));
            ref->upload(ref, p->r, p->host, p->n);
            fast->upload(fast, p->f, p->host, p->n);
            if (i >= 2)
                for (size_t j = 0; j < p->n; j++)
                    ((uint16_t *)(void *)p->f)[j] = to_f16(p->host[j]);
        }
        g_free(all);
    }
    DqAttention shape = {.n_heads = H,
                         .n_kv_heads = Hkv,
                         .head_dim = hd,
                         .q_stride = qd,
                         .kv_stride = kvd,
                         .scale = 1.0f / sqrtf((float)hd)};
    g_assert_null(ref->attention_segments);
    g_assert_nonnull(fast->attention_segments); /* else this compares the loop with itself */
    dq_attention_segments(ref, out.r, q.r, k.r, v.r, rs, n_segs, &shape);
    shape.kv_f16 = f16;
    dq_attention_segments(fast, out.f, q.f, k.f, v.f, fs, n_segs, &shape);
    pair_check(&out, 2e-5, what);
    for (int i = 0; i < 2 * n_segs; i++) {
        if (!f16) {
            pair_check(&kc[i], 0, "attention_segments: cache");
            continue;
        }
        for (size_t j = 0; j < kc[i].n; j++)
            if (from_f16(((const uint16_t *)(void *)kc[i].f)[j]) != kc[i].r[j])
                g_error("%s: cache %d differs at %zu", what, i, j);
    }
    /* each sequence alone, on its (now filled) caches: appending its rows again is a no-op */
    float *alone = g_new0(float, (size_t)rows *qd), *plain = g_new0(float, (size_t)rows *qd);
    for (int s = 0; s < n_segs; s++) {
        dq_attention_segments(fast, alone, q.f, k.f, v.f, &fs[s], 1, &shape);
        if (f16)
            continue;
        DqAttention a = shape;
        a.n_seq = 1;
        a.n_q = seg[s][0];
        a.n_kv = seg[s][1] + seg[s][0];
        a.q_pos0 = seg[s][1];
        a.causal = TRUE;
        fast->attention(fast, plain + (size_t)fs[s].row0 * qd, q.f + (size_t)fs[s].row0 * qd,
                        kc[2 * s].f, kc[2 * s + 1].f, &a);
    }
    if (memcmp(alone, out.f, (size_t)rows * qd * sizeof(float)) != 0 ||
        (!f16 && memcmp(plain, out.f, (size_t)rows * qd * sizeof(float)) != 0))
        g_error("%s: a sequence's result changed with its batch-mates", what);
    if (f16) { /* values that are not exact in float16 are rounded to nearest even */
        float raw[3] = {1.0f + 1.0f / 4096, -0.1f, 1e-6f};
        uint16_t cache[3] = {0}, vcache[3] = {0};
        fast->upload(fast, k.f, raw, 3);
        DqAttnSegment one = {
            .k_cache = (float *)(void *)cache, .v_cache = (float *)(void *)vcache, .n_q = 1};
        DqAttention tiny = {.n_heads = 1,
                            .n_kv_heads = 1,
                            .head_dim = 3,
                            .q_stride = 3,
                            .kv_stride = 3,
                            .scale = 1.0f,
                            .kv_f16 = TRUE};
        dq_attention_segments(fast, alone, q.f, k.f, v.f, &one, 1, &tiny);
        for (int i = 0; i < 3; i++)
            g_assert_cmpuint(cache[i], ==, to_f16(raw[i]));
        g_assert_cmpuint(cache[0], ==, 0x3C00); /* 1 + 2^-12 is a tie: to even, 1.0 */
    }
    g_free(alone);
    g_free(plain);
    for (int i = 0; i < 2 * n_segs; i++)
        pair_free(&kc[i]);
    g_free(kc);
    g_free(rs);
    g_free(fs);
    pair_free(&q);
    pair_free(&k);
    pair_free(&v);
    pair_free(&out);
}

static void test_attention_segments(void) {
    /* {new rows, cached rows}: a decode step (one row each: a long cache split over many jobs,
     * an empty one, short ones of a single job), prompts and decode rows mixed, and more
     * sequences than one planning turn holds (DQ_FAST_DECODE_BATCH, 64). tails: every
     * remainder of the kernels' 4 keys and 16 lanes beside a full block of 64 keys (the
     * backend's DQ_FAST_DECODE_KB) and a job of 256 (DQ_FAST_DECODE_SPLIT), and a sequence
     * of 2 rows (grouped heads make 6 rows a job); a prompt over a cache of one row (float16:
     * the cached rows widened, not only the new ones). */
    const int decode[][2] = {{1, 0}, {1, 1700}, {1, 37}, {1, 31}, {1, 1}, {1, 300}};
    const int tails[][2] = {{1, 2},   {1, 3},   {1, 4},   {1, 14},  {1, 15},  {1, 16},
                            {1, 62},  {1, 63},  {1, 64},  {1, 65},  {1, 66},  {1, 127},
                            {1, 254}, {1, 255}, {1, 256}, {1, 257}, {1, 258}, {1, 511},
                            {1, 512}, {1, 513}, {2, 62},  {2, 255}};
    const int mixed[][2] = {{70, 0}, {1, 500}, {33, 20}, {3, 9}, {1, 0}, {200, 130}, {40, 1}};
    int many[150][2];
    for (int s = 0; s < 150; s++) {
        many[s][0] = s % 7 == 3 ? 2 : 1;
        many[s][1] = (s * 37) % 600;
    }
    for (int f16 = 0; f16 < 2; f16++) {
        if (f16 && !fast->kv_f16) {
            g_test_message("no float16 caches here (no F16C, or DOCQA_CPU_NO_AVX2): not tested");
            return;
        }
        const char *kind = f16 ? "float16" : "float32";
        char *what[7];
        what[0] = g_strdup_printf("attention_segments %s (decode)", kind);
        what[1] = g_strdup_printf("attention_segments %s (mixed)", kind);
        what[2] = g_strdup_printf("attention_segments %s (hd 72)", kind);
        what[3] = g_strdup_printf("attention_segments %s (hd 20)", kind);
        what[4] = g_strdup_printf("attention_segments %s (150 sequences)", kind);
        what[5] = g_strdup_printf("attention_segments %s (block tails)", kind);
        what[6] =
            g_strdup_printf("attention_segments %s (block tails, hd 16, 4 heads a KV head)", kind);
        check_segments(G_N_ELEMENTS(decode), decode, 9, 3, 64, f16, what[0]);
        check_segments(G_N_ELEMENTS(mixed), mixed, 9, 3, 64, f16, what[1]);
        check_segments(G_N_ELEMENTS(mixed), mixed, 4, 4, 72, f16, what[2]);
        check_segments(G_N_ELEMENTS(decode), decode, 4, 2, 20, f16, what[3]);
        check_segments(150, many, 9, 3, 64, f16, what[4]);
        check_segments(G_N_ELEMENTS(tails), tails, 9, 3, 64, f16, what[5]);
        check_segments(G_N_ELEMENTS(tails), tails, 8, 2, 16, f16, what[6]);
        for (int i = 0; i < 7; i++)
            g_free(what[i]);
    }
}

/* A steps segment (speculative decoding's check) gives each row what a one-row segment at its
 * position gives, bit for bit: its rows in one decode job (9 heads over 3: 5 rows make 15 job
 * rows) or one a row (7 rows make 21, more than a job takes), over caches that cross the
 * 256-key job boundary, float32 and float16. In one job a row's keys are scored in blocks that
 * hold the later rows' keys too, alone in blocks that end at its own last key: the rows that
 * end on each side of a multiple of 4 and 16 keys (the kernels' keys at a time and lanes), of
 * 64 (a block) and of 256 (a job) show that a key's score does not depend on the keys scored
 * with it. The last shapes put 16 and 7 rows in a job (the 2.2B's heads, 1 a KV head). */
static void test_attention_steps(void) {
    g_assert_true(fast->attention_steps);
    /* {heads, KV heads, head dim, rows, cached rows} */
    const int cases[][5] = {{9, 3, 64, 5, 300}, {9, 3, 64, 7, 250}, {9, 3, 64, 2, 0},
                            {9, 3, 64, 5, 509}, {9, 3, 64, 5, 1},   {9, 3, 64, 5, 13},
                            {9, 3, 64, 5, 61},  {9, 3, 64, 4, 126}, {9, 3, 64, 5, 253},
                            {4, 1, 64, 4, 60},  {2, 2, 32, 7, 59},  {1, 1, 64, 16, 250},
                            {3, 3, 80, 5, 62}};
    for (int f16 = 0; f16 < 2 && (f16 == 0 || fast->kv_f16); f16++)
        for (size_t c = 0; c < G_N_ELEMENTS(cases); c++) {
            int H = cases[c][0], Hkv = cases[c][1], hd = cases[c][2], qd = H * hd, kvd = Hkv * hd;
            int n_q = cases[c][3], past = cases[c][4];
            size_t cap = (size_t)(past + n_q) * kvd;
            Pair q = pair_new((size_t)n_q * qd, 1), k = pair_new((size_t)n_q * kvd, 1);
            Pair v = pair_new((size_t)n_q * kvd, 1);
            Pair cache = pair_new(2 * cap, 1); /* K then V, the same start for both runs */
            float *kc[2], *vc[2], *out[2];
            for (int run = 0; run < 2; run++) {
                kc[run] = g_memdup2(cache.host, cap * sizeof(float));
                vc[run] = g_memdup2(cache.host + cap, cap * sizeof(float));
                if (f16) /* the float16 caches in the buffers' first half */
                    for (size_t j = 0; j < cap; j++) {
                        ((uint16_t *)(void *)kc[run])[j] = to_f16(cache.host[j]);
                        ((uint16_t *)(void *)vc[run])[j] = to_f16(cache.host[cap + j]);
                    }
                out[run] = g_new0(float, (size_t)n_q *qd);
            }
            DqAttention shape = {.n_heads = H,
                                 .n_kv_heads = Hkv,
                                 .head_dim = hd,
                                 .q_stride = qd,
                                 .kv_stride = kvd,
                                 .scale = 1.0f / sqrtf((float)hd),
                                 .kv_f16 = f16};
            DqAttnSegment steps = {
                .k_cache = kc[0], .v_cache = vc[0], .n_q = n_q, .n_past = past, .steps = TRUE};
            dq_attention_segments(fast, out[0], q.host, k.host, v.host, &steps, 1, &shape);
            for (int i = 0; i < n_q; i++) {
                DqAttnSegment one = {
                    .k_cache = kc[1], .v_cache = vc[1], .row0 = i, .n_q = 1, .n_past = past + i};
                dq_attention_segments(fast, out[1], q.host, k.host, v.host, &one, 1, &shape);
            }
            if (memcmp(out[0], out[1], (size_t)n_q * qd * sizeof(float)) != 0)
                g_error("attention steps (%d rows after %d, %d heads over %d of %d, %s): not the "
                        "one-row results",
                        n_q, past, H, Hkv, hd, f16 ? "float16" : "float32");
            g_assert_cmpmem(kc[0], cap * sizeof(float), kc[1], cap * sizeof(float));
            for (int run = 0; run < 2; run++) {
                g_free(kc[run]);
                g_free(vc[run]);
                g_free(out[run]);
            }
            pair_free(&q);
            pair_free(&k);
            pair_free(&v);
            pair_free(&cache);
        }
}

/* rope keeps the reference's cos and sin a position: the reference's bits, for prompt rows,
 * decode rows, positions past its table, another head size and another theta. */
static void test_rope(void) {
    const struct {
        int n, heads, hd, pos0, step;
        double theta;
    } cases[] = {
        {1416, 9, 64, 0, 1, 100000.0},  /* a 256M prompt */
        {8, 3, 64, 1416, 97, 100000.0}, /* decode rows of several requests */
        {3, 2, 64, 32766, 1, 100000.0}, /* across the table's end */
        {5, 4, 96, 10, 3, 100000.0},    /* another head size */
        {5, 4, 64, 10, 3, 10000.0},     /* another theta */
        {70, 32, 64, 200, 1, 273768.0}, /* a 2.2B-like head count */
    };
    for (size_t c = 0; c < G_N_ELEMENTS(cases); c++) {
        int n = cases[c].n, width = cases[c].heads * cases[c].hd;
        Pair x = pair_new((size_t)n * width, 3);
        int32_t *pos = g_new(int32_t, n);
        for (int r = 0; r < n; r++)
            pos[r] = cases[c].pos0 + r * cases[c].step;
        DqRope rope;
        dq_rope_plain(&rope, cases[c].theta, cases[c].hd);
        ref->rope(ref, x.r, pos, n, cases[c].heads, cases[c].hd, &rope);
        fast->rope(fast, x.f, pos, n, cases[c].heads, cases[c].hd, &rope);
        if (memcmp(x.r, x.f, x.n * sizeof(float)) != 0)
            g_error("rope case %zu: not the reference's bits", c);
        pair_free(&x);
        g_free(pos);
    }
}

/* A scaled table (yarn's: other frequencies and a cos/sin factor) kept by a fresh fast backend,
 * whose first table it is: the reference's bits from the kept cos and sin; then a linear
 * table, which is another: the reference's path. */
static void test_rope_scaled(void) {
    GError *err = NULL;
    DqBackend *own = dq_backend_cpu_fast_new(&err);
    g_assert_no_error(err);
    SmolvlmConfig c = {.head_dim = 64,
                       .rope_theta = 100000.0,
                       .max_position_embeddings = 8192,
                       .rope_type = DQ_ROPE_YARN,
                       .rope_factor = 4.0,
                       .rope_beta_fast = 32,
                       .rope_beta_slow = 1,
                       .rope_truncate = TRUE,
                       .rope_attention_factor = 0.1 * log(4.0) + 1.0};
    for (int t = 0; t < 2; t++) {
        if (t == 1) {
            c.rope_type = DQ_ROPE_LINEAR;
            c.rope_attention_factor = 1.0;
        }
        DqRope rope;
        dq_rope_init(&rope, &c);
        int n = 40, heads = 3, width = heads * 64;
        Pair x = pair_new((size_t)n * width, 3);
        float *got = g_new(float, x.n);
        float *own_x = own->alloc(own, x.n);
        own->upload(own, own_x, x.host, x.n);
        int32_t *pos = g_new(int32_t, n);
        for (int r = 0; r < n; r++)
            pos[r] = 3 + r * 211;
        ref->rope(ref, x.r, pos, n, heads, 64, &rope);
        own->rope(own, own_x, pos, n, heads, 64, &rope);
        own->download(own, got, own_x, x.n);
        if (memcmp(x.r, got, x.n * sizeof(float)) != 0)
            g_error("rope %s: not the reference's bits", t == 0 ? "yarn" : "linear");
        own->release(own, own_x);
        g_free(got);
        pair_free(&x);
        g_free(pos);
    }
    dq_backend_free(own);
}

static void test_elementwise(void) {
    const size_t sizes[] = {1, 1000, 3 * 1024 * 77 + 5};
    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
        size_t n = sizes[s];
        Pair x = pair_new(n, 12), u = pair_new(n, 2);
        ref->gelu_tanh(ref, x.r, n);
        fast->gelu_tanh(fast, x.f, n);
        pair_check(&x, 1e-5, "gelu_tanh");
        /* silu from the same inputs on both sides */
        fast->copy(fast, x.f, x.r, n);
        ref->silu_mul(ref, x.r, u.r, n);
        fast->silu_mul(fast, x.f, u.f, n);
        pair_check(&x, 1e-5, "silu_mul");
        /* every hidden_act over [-14, 14] (past gelu_10's and relu6's clips): the reference's
         * bits, and within a few ulp of the formula in double; then act(gate) * up */
        Pair w = pair_new(n, 14);
        for (int a = 0; a < DQ_ACT_COUNT; a++) {
            const char *name = act_ref_name((SmolvlmAct)a);
            ref->upload(ref, w.r, w.host, n);
            fast->upload(fast, w.f, w.host, n);
            ref->act(ref, w.r, n, (SmolvlmAct)a);
            fast->act(fast, w.f, n, (SmolvlmAct)a);
            /* tanh's GELU, which the vision MLP fuses, keeps its fast path: 1e-5 as gelu_tanh */
            pair_check(&w, a == DQ_ACT_GELU_TANH ? 1e-5 : 0, name);
            for (size_t i = 0; i < n; i++) {
                double want = act_ref((SmolvlmAct)a, w.host[i]);
                if (!(fabs(w.f[i] - want) <= 2e-6 * MAX(1.0, fabs(want))))
                    g_error("act %s(%.9g): %.9g, the formula %.9g", name, w.host[i], w.f[i], want);
            }
            fast->mul(fast, w.f, u.f, n);
            ref->mul(ref, w.r, u.r, n);
            pair_check(&w, a == DQ_ACT_GELU_TANH ? 1e-5 : 0, "mul");
        }
        pair_free(&w);
        pair_free(&x);
        pair_free(&u);
    }
}

/* Layer norm against the reference, bit for bit: row widths with and without a tail, rows
 * with an offset (a mean far from 0) and a wide range, weights stored f32 and bf16. */
static void test_layernorm(void) {
    const int dims[] = {768, 1152, 37, 5};
    for (size_t d = 0; d < G_N_ELEMENTS(dims); d++)
        for (int dt = 0; dt < 2; dt++) {
            int dim = dims[d], n = 300;
            DqDtype dtype = dt == 0 ? DQ_DTYPE_F32 : DQ_DTYPE_BF16;
            WPair w = wpair_new(1, dim, dtype), b = wpair_new(1, dim, dtype);
            Pair x = pair_new((size_t)n * dim, 3), y = pair_new((size_t)n * dim, 1);
            for (int r = 0; r < n; r++) /* some rows off-centre, some with large values */
                for (int i = 0; i < dim; i++) {
                    float v = x.host[(size_t)r * dim + i];
                    v = r % 3 == 1 ? v + 40.0f : r % 3 == 2 ? v * (i % 7 == 0 ? 500.0f : 0.01f) : v;
                    x.host[(size_t)r * dim + i] = v;
                }
            ref->upload(ref, x.r, x.host, x.n);
            fast->upload(fast, x.f, x.host, x.n);
            ref->layernorm(ref, y.r, x.r, &w.r, &b.r, n, dim, 1e-6f);
            fast->layernorm(fast, y.f, x.f, &w.f, &b.f, n, dim, 1e-6f);
            pair_check(&y, 0, "layernorm");
            pair_free(&x);
            pair_free(&y);
            wpair_free(&w);
            wpair_free(&b);
        }
}

/* eps 0 (config.json may say so: transformers runs it as given): rows with a spread keep the
 * reference's bits; a row of zeros (both norms) and a constant row (the layer norm) give NaN in
 * every element, as torch's x * rsqrt(0) and (x - mean) * rsqrt(0) do, on both backends. */
static void test_norms_eps0(void) {
    const int dims[] = {768, 37};
    for (size_t d = 0; d < G_N_ELEMENTS(dims); d++) {
        int dim = dims[d], n = 4;
        WPair w = wpair_new(1, dim, DQ_DTYPE_F32), b = wpair_new(1, dim, DQ_DTYPE_F32);
        Pair x = pair_new((size_t)n * dim, 3), y = pair_new((size_t)n * dim, 1);
        for (int i = 0; i < dim; i++) {
            x.host[dim + i] = 0.0f;     /* row 1: zeros */
            x.host[2 * dim + i] = 5.0f; /* row 2: constant */
        }
        ref->upload(ref, x.r, x.host, x.n);
        fast->upload(fast, x.f, x.host, x.n);
        for (int norm = 0; norm < 2; norm++) {
            if (norm == 0) {
                ref->layernorm(ref, y.r, x.r, &w.r, &b.r, n, dim, 0.0f);
                fast->layernorm(fast, y.f, x.f, &w.f, &b.f, n, dim, 0.0f);
            } else {
                ref->rmsnorm(ref, y.r, x.r, &w.r, n, dim, 0.0f);
                fast->rmsnorm(fast, y.f, x.f, &w.f, n, dim, 0.0f);
            }
            for (int r = 0; r < n; r++) {
                gboolean nan = r == 1 || (r == 2 && norm == 0);
                for (int i = 0; i < dim; i++) {
                    size_t k = (size_t)r * dim + i;
                    if (nan ? !(isnan(y.r[k]) && isnan(y.f[k]))
                            : memcmp(&y.r[k], &y.f[k], 4) != 0 || !isfinite(y.r[k]))
                        g_error("%s eps 0, dim %d, row %d [%d]: ref %g fast %g",
                                norm == 0 ? "layernorm" : "rmsnorm", dim, r, i, y.r[k], y.f[k]);
                }
            }
        }
        pair_free(&x);
        pair_free(&y);
        wpair_free(&w);
        wpair_free(&b);
    }
}

static void test_embed_broadcast(void) {
    int vocab = 1000, dim = 96, n = 77;
    WPair table = wpair_new(vocab, dim, DQ_DTYPE_BF16);
    int32_t *ids = g_new(int32_t, n);
    for (int i = 0; i < n; i++)
        ids[i] = i == 0 ? vocab - 1 : g_rand_int_range(rng, 0, vocab);
    Pair out = pair_new((size_t)n * dim, 1);
    ref->embed(ref, out.r, &table.r, ids, n);
    fast->embed(fast, out.f, &table.f, ids, n);
    pair_check(&out, 0, "embed");
    Pair y = pair_new((size_t)5 * vocab * dim, 1);
    ref->add_broadcast(ref, y.r, &table.r, 5);
    fast->add_broadcast(fast, y.f, &table.f, 5);
    pair_check(&y, 0, "add_broadcast");
    pair_free(&y);
    pair_free(&out);
    g_free(ids);
    wpair_free(&table);
}

static void generate_page(SmolvlmPipeline *p, DqImage *img, int max_new, DqGenerateResult *res) {
    SmolvlmPrompt prompt = {0};
    SmolvlmRequest req = {0};
    SmolvlmPrepareOptions po = {.n_res = 2};
    GError *err = NULL;
    g_assert_true(smolvlm_prompt_build(p, (const DqImage *const *)&img, 1, "What is the date?",
                                       NULL, &po, &prompt, &err));
    dq_assert_no_error(err);
    smolvlm_request_init(p, &prompt, &req);
    req.options.do_sample = FALSE;
    req.options.max_new_tokens = max_new;
    req.options.ignore_eos = TRUE;
    req.want_logits = TRUE;
    g_assert_true(smolvlm_generate(p->model, &req, 1, res, NULL, &err));
    dq_assert_no_error(err);
    smolvlm_prompt_clear(&prompt);
}

static void test_model(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared is absent: the tiny models are not here");
        return;
    }
    const char *snaps[] = {"tiny-smolvlm-b512", "tiny-smolvlm-a384-v1tok-bf16"};
    GError *err = NULL;
    char *path = g_build_filename(shared, "fixtures", "images", "portrait_page.png", NULL);
    DqImage *img = dq_image_load(path, DQ_EXIF_APPLY, &err);
    dq_assert_no_error(err);
    g_free(path);
    for (size_t s = 0; s < G_N_ELEMENTS(snaps); s++) {
        char *dir = g_build_filename(shared, "models", snaps[s], NULL);
        SmolvlmPipeline *pr =
            smolvlm_pipeline_open(dir, &(SmolvlmOptions){.device = "cpu-ref"}, &err);
        dq_assert_no_error(err);
        SmolvlmPipeline *pf = smolvlm_pipeline_open(dir, &(SmolvlmOptions){.device = "cpu"}, &err);
        dq_assert_no_error(err);
        int vocab = smolvlm_config(pr->model)->vocab_size, max_new = 6;
        DqGenerateResult rr = {0}, rf = {0};
        generate_page(pr, img, max_new, &rr);
        generate_page(pf, img, max_new, &rf);
        double worst = 0, scale = 1;
        for (int v = 0; v < vocab; v++) {
            scale = MAX(scale, fabs(rr.last_logits[v]));
            worst = MAX(worst, fabs(rr.last_logits[v] - rf.last_logits[v]));
        }
        g_test_message("%s: last-prompt logits max |fast - ref| = %.3g (scale %.3g)", snaps[s],
                       worst, scale);
        if (!(worst <= 1e-4 * scale))
            g_error("%s: logits differ by %.3g (scale %.3g)", snaps[s], worst, scale);
        g_assert_cmpint(rr.n_output_ids, ==, rf.n_output_ids);
        g_assert_cmpmem(rr.output_ids, rr.n_output_ids * sizeof(int32_t), rf.output_ids,
                        rf.n_output_ids * sizeof(int32_t));
        dq_generate_result_clear(&rr);
        dq_generate_result_clear(&rf);
        smolvlm_pipeline_free(pr);
        smolvlm_pipeline_free(pf);
        g_free(dir);
    }
    dq_image_free(img);
}

static void test_device_names(void) {
    GError *err = NULL;
    DqBackend *be = dq_backend_open_device("cpu-ref", &err);
    dq_assert_no_error(err);
    g_assert_nonnull(be);
    g_assert_cmpint(be->matmul_row_invariant_max, ==, 0); /* the reference */
    dq_backend_free(be);
    be = dq_backend_open_device("cpu", &err);
    dq_assert_no_error(err);
    g_assert_cmpint(be->matmul_row_invariant_max, ==, 8); /* the fast backend */
    dq_backend_free(be);
    g_assert_null(dq_backend_open_device("cpu-fast", &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_clear_error(&err);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    rng = g_rand_new_with_seed(20261125);
    GError *err = NULL;
    ref = dq_backend_cpu_new(&err);
    dq_assert_no_error(err);
    fast = dq_backend_cpu_fast_new(&err);
    dq_assert_no_error(err);
    g_test_add_func("/backend_fast/weights_mapped", test_weights_mapped);
    g_test_add_func("/backend_fast/matmul", test_matmul);
    g_test_add_func("/backend_fast/matmul_many", test_matmul_many);
    g_test_add_func("/backend_fast/attention", test_attention);
    g_test_add_func("/backend_fast/attention_fma", test_attention_fma);
    g_test_add_func("/backend_fast/attention_bf16", test_attention_bf16);
    g_test_add_func("/backend_fast/attention_dispatch", test_attention_dispatch);
    g_test_add_func("/backend_fast/attention_segments", test_attention_segments);
    g_test_add_func("/backend_fast/attention_steps", test_attention_steps);
    g_test_add_func("/backend_fast/rope", test_rope);
    g_test_add_func("/backend_fast/rope-scaled", test_rope_scaled);
    g_test_add_func("/backend_fast/elementwise", test_elementwise);
    g_test_add_func("/backend_fast/norms_eps0", test_norms_eps0);
    g_test_add_func("/backend_fast/layernorm", test_layernorm);
    g_test_add_func("/backend_fast/embed_broadcast", test_embed_broadcast);
    g_test_add_func("/backend_fast/device_names", test_device_names);
    g_test_add_func("/backend_fast/model", test_model);
    int rc = g_test_run();
    dq_backend_free(ref);
    dq_backend_free(fast);
    g_rand_free(rng);
    return rc;
}
