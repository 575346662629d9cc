#include "cuda_internal.h"

/* ---- profile (DOCQA_CUDA_PROFILE=1)
 *
 * Each op is bracketed by two events on the stream; every PROF_MARKS ops (and at the end) the
 * host waits for the last one and adds the spans up by op and shape. Nothing is synchronised
 * otherwise, so the GPU runs as it would; time the GPU sat idle waiting for the host is in no
 * op's span and shows as the difference between the wall time and the ops' sum. The table goes
 * to stderr when the backend is freed. */
#define PROF_MARKS 4096

typedef struct {
    double ms;
    long calls;
} ProfSum;

typedef struct Profile {
    cudaEvent_t start[PROF_MARKS], stop[PROF_MARKS];
    char label[PROF_MARKS][64];
    int n;
    GHashTable *sums; /* label -> ProfSum */
    gint64 t0;        /* wall clock at the first op */
} Profile;

Profile *prof_new(void) {
    Profile *p = g_new0(Profile, 1);
    for (int i = 0; i < PROF_MARKS; i++)
        if (cudaEventCreate(&p->start[i]) != cudaSuccess ||
            cudaEventCreate(&p->stop[i]) != cudaSuccess) {
            cudaGetLastError();
            g_warning("DOCQA_CUDA_PROFILE: no CUDA events; profile off");
            /* Only the events made (handles start NULL): destroying a NULL one is an error
             * that a later launch's check (cudaGetLastError) would take for its own. */
            for (int j = 0; j <= i; j++) {
                if (p->start[j] != NULL)
                    cudaEventDestroy(p->start[j]);
                if (p->stop[j] != NULL)
                    cudaEventDestroy(p->stop[j]);
            }
            cudaGetLastError();
            g_free(p);
            return NULL;
        }
    p->sums = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return p;
}

static void prof_add(Profile *p, const char *label, double ms) {
    ProfSum *s = (ProfSum *)g_hash_table_lookup(p->sums, label);
    if (s == NULL) {
        s = g_new0(ProfSum, 1);
        g_hash_table_insert(p->sums, g_strdup(label), s);
    }
    s->ms += ms;
    s->calls++;
}

static void prof_flush(Profile *p) {
    if (p->n == 0)
        return;
    cudaEventSynchronize(p->stop[p->n - 1]);
    for (int i = 0; i < p->n; i++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, p->start[i], p->stop[i]) == cudaSuccess)
            prof_add(p, p->label[i], ms);
    }
    cudaGetLastError();
    p->n = 0;
}

/* The mark an op's span starts at, or -1 (profile off, or a graph being recorded). */
static int prof_begin(CudaCtx *c) {
    Profile *p = c->prof;
    if (p == NULL || c->capturing)
        return -1;
    if (p->t0 == 0)
        p->t0 = g_get_monotonic_time();
    if (p->n == PROF_MARKS)
        prof_flush(p);
    CK(c, cudaEventRecord(p->start[p->n], c->stream));
    return p->n++;
}

static void prof_end(CudaCtx *c, int i, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void prof_end(CudaCtx *c, int i, const char *fmt, ...) {
    if (i < 0)
        return;
    Profile *p = c->prof;
    CK(c, cudaEventRecord(p->stop[i], c->stream));
    va_list ap;
    va_start(ap, fmt);
    g_vsnprintf(p->label[i], sizeof p->label[i], fmt, ap);
    va_end(ap);
}

static gint prof_by_time(gconstpointer a, gconstpointer b, gpointer sums) {
    const ProfSum *x = (const ProfSum *)g_hash_table_lookup((GHashTable *)sums, *(char **)a);
    const ProfSum *y = (const ProfSum *)g_hash_table_lookup((GHashTable *)sums, *(char **)b);
    return x->ms < y->ms ? 1 : x->ms > y->ms ? -1 : 0;
}

void prof_report(CudaCtx *c) {
    Profile *p = c->prof;
    prof_flush(p);
    double wall = p->t0 != 0 ? (double)(g_get_monotonic_time() - p->t0) / 1000.0 : 0.0;
    double total = 0.0;
    GPtrArray *keys = g_ptr_array_new();
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, p->sums);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (!g_str_has_prefix((const char *)k, "host "))
            total += ((ProfSum *)v)->ms;
        g_ptr_array_add(keys, k);
    }
    g_ptr_array_sort_with_data(keys, prof_by_time, p->sums);
    fprintf(stderr, "profile %s: %.1f ms in ops on the GPU, %.1f ms wall since the first op\n",
            c->label, total, wall);
    for (guint i = 0; i < keys->len && i < 60; i++) {
        const ProfSum *s = (const ProfSum *)g_hash_table_lookup(p->sums, keys->pdata[i]);
        fprintf(stderr, "profile %10.2f ms %5.1f%% %8ld calls %10.1f us  %s\n", s->ms,
                total > 0 ? 100.0 * s->ms / total : 0.0, s->calls, 1000.0 * s->ms / s->calls,
                (const char *)keys->pdata[i]);
    }
    g_ptr_array_free(keys, TRUE);
}

void prof_free(Profile *p) {
    if (p == NULL)
        return;
    for (int i = 0; i < PROF_MARKS; i++) {
        cudaEventDestroy(p->start[i]);
        cudaEventDestroy(p->stop[i]);
    }
    g_hash_table_destroy(p->sums);
    g_free(p);
}

/* Row counts in the profile's labels: exact up to 64, else the next power of two. */
static int prof_rows(long n) {
    if (n <= 64)
        return (int)n;
    long b = 128;
    while (b < n && b < (1L << 30))
        b *= 2;
    return (int)b;
}

/* ---- the ops as profiled (DOCQA_CUDA_PROFILE=1): each the plain op inside a span */

#define PROF_SPAN(be, call, ...)                                                                   \
    do {                                                                                           \
        CudaCtx *pc_ = ctx_of(be);                                                                 \
        int pi_ = prof_begin(pc_);                                                                 \
        call;                                                                                      \
        prof_end(pc_, pi_, __VA_ARGS__);                                                           \
    } while (0)

static void prof_upload(DqBackend *be, float *dst, const float *src, size_t n) {
    gint64 t = g_get_monotonic_time();
    PROF_SPAN(be, cuda_upload(be, dst, src, n), "upload %s", n >= 262144 ? ">= 1 MiB" : "small");
    CudaCtx *c = ctx_of(be);
    if (!c->capturing) /* the host's own time in it: staging copies and waits for the ring */
        prof_add(c->prof, n >= 262144 ? "host upload >= 1 MiB" : "host upload small",
                 (double)(g_get_monotonic_time() - t) / 1000.0);
}

static void prof_upload_pixels(DqBackend *be, float *dst, const DqPixelTile *tiles, int n_tiles,
                               int channels, int tile) {
    gint64 t = g_get_monotonic_time();
    PROF_SPAN(be, cuda_upload_pixels(be, dst, tiles, n_tiles, channels, tile), "upload pixels");
    CudaCtx *c = ctx_of(be);
    if (!c->capturing)
        prof_add(c->prof, "host upload pixels", (double)(g_get_monotonic_time() - t) / 1000.0);
}

static void prof_download(DqBackend *be, float *dst, const float *src, size_t n) {
    PROF_SPAN(be, cuda_download(be, dst, src, n), "download");
}

static void prof_copy(DqBackend *be, float *dst, const float *src, size_t n) {
    PROF_SPAN(be, cuda_copy(be, dst, src, n), "copy");
}

static void prof_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w,
                        const DqWeight *bias, int n) {
    PROF_SPAN(be, cuda_matmul(be, y, x, w, bias, n), "matmul %dx%d%s rows %d", w->rows, w->cols,
              bias != NULL ? " +bias" : "", prof_rows(n));
}

static void prof_matmul_gelu(DqBackend *be, float *y, const float *x, const DqWeight *w,
                             const DqWeight *bias, int n) {
    PROF_SPAN(be, cuda_matmul_gelu(be, y, x, w, bias, n), "matmul_gelu %dx%d%s rows %d", w->rows,
              w->cols, bias != NULL ? " +bias" : "", prof_rows(n));
}

static void prof_matmul_add(DqBackend *be, float *y, const float *x, const DqWeight *w,
                            const DqWeight *bias, int n, float *scratch) {
    PROF_SPAN(be, cuda_matmul_add(be, y, x, w, bias, n, scratch), "matmul_add %dx%d%s rows %d",
              w->rows, w->cols, bias != NULL ? " +bias" : "", prof_rows(n));
}

static void prof_matmul_many(DqBackend *be, float *const *ys, const float *x,
                             const DqWeight *const *ws, const DqWeight *const *biases, int count,
                             int n) {
    PROF_SPAN(be, cuda_matmul_many(be, ys, x, ws, biases, count, n),
              "matmul_many %d x %dx%d%s rows %d", count, ws[0]->rows, ws[0]->cols,
              biases[0] != NULL ? " +bias" : "", prof_rows(n));
}

static void prof_mlp_gelu_add(DqBackend *be, float *y, const float *x, const DqWeight *w1,
                              const DqWeight *b1, const DqWeight *w2, const DqWeight *b2, int n,
                              float *hidden, float *scratch) {
    PROF_SPAN(be, cuda_mlp_gelu_add(be, y, x, w1, b1, w2, b2, n, hidden, scratch),
              "mlp_gelu_add %dx%d rows %d", w1->rows, w1->cols, prof_rows(n));
}

static void prof_layernorm(DqBackend *be, float *y, const float *x, const DqWeight *w,
                           const DqWeight *b, int n, int dim, float eps) {
    PROF_SPAN(be, cuda_layernorm(be, y, x, w, b, n, dim, eps), "layernorm %d rows %d", dim,
              prof_rows(n));
}

static void prof_rmsnorm(DqBackend *be, float *y, const float *x, const DqWeight *w, int n, int dim,
                         float eps) {
    PROF_SPAN(be, cuda_rmsnorm(be, y, x, w, n, dim, eps), "rmsnorm %d rows %d", dim, prof_rows(n));
}

static void prof_rope(DqBackend *be, float *x, const int32_t *pos, int n, int n_heads, int head_dim,
                      const DqRope *rope) {
    PROF_SPAN(be, cuda_rope(be, x, pos, n, n_heads, head_dim, rope), "rope rows %d", prof_rows(n));
}

static void prof_attention(DqBackend *be, float *out, const float *q, const float *k,
                           const float *v, const DqAttention *a) {
    PROF_SPAN(be, cuda_attention(be, out, q, k, v, a), "attention %d x %d rows%s", a->n_seq, a->n_q,
              a->causal ? " causal" : "");
}

static void prof_attention_segments(DqBackend *be, float *out, const float *q, const float *k_new,
                                    const float *v_new, const DqAttnSegment *segs, int n_segs,
                                    const DqAttention *shape) {
    int rows = 0;
    for (int s = 0; s < n_segs; s++)
        rows += segs[s].n_q;
    PROF_SPAN(be, cuda_attention_segments(be, out, q, k_new, v_new, segs, n_segs, shape),
              "attention_segments %d seqs, rows %d", prof_rows(n_segs), prof_rows(rows));
}

static void prof_gelu_tanh(DqBackend *be, float *x, size_t n) {
    PROF_SPAN(be, cuda_gelu_tanh(be, x, n), "gelu_tanh");
}

static void prof_silu_mul(DqBackend *be, float *gate, const float *up, size_t n) {
    PROF_SPAN(be, cuda_silu_mul(be, gate, up, n), "silu_mul");
}

static void prof_act(DqBackend *be, float *x, size_t n, SmolvlmAct act) {
    PROF_SPAN(be, cuda_act(be, x, n, act), "act");
}

static void prof_mul(DqBackend *be, float *y, const float *x, size_t n) {
    PROF_SPAN(be, cuda_mul(be, y, x, n), "mul");
}

static void prof_add_op(DqBackend *be, float *y, const float *x, size_t n) {
    PROF_SPAN(be, cuda_add(be, y, x, n), "add");
}

static void prof_add_broadcast(DqBackend *be, float *y, const DqWeight *w, int n_outer) {
    PROF_SPAN(be, cuda_add_broadcast(be, y, w, n_outer), "add_broadcast");
}

static void prof_patchify(DqBackend *be, float *out, const float *pixels, int tiles, int channels,
                          int tile, int patch) {
    PROF_SPAN(be, cuda_patchify(be, out, pixels, tiles, channels, tile, patch), "patchify");
}

static void prof_pixel_shuffle(DqBackend *be, float *out, const float *in, int tiles, int side,
                               int dim, int s) {
    PROF_SPAN(be, cuda_pixel_shuffle(be, out, in, tiles, side, dim, s), "pixel_shuffle");
}

static void prof_embed(DqBackend *be, float *out, const DqWeight *table, const int32_t *ids,
                       int n) {
    PROF_SPAN(be, cuda_embed(be, out, table, ids, n), "embed");
}

static void prof_argmax_rows(DqBackend *be, int32_t *ids, const float *x, int n, int cols) {
    PROF_SPAN(be, cuda_argmax_rows(be, ids, x, n, cols), "argmax_rows %d", prof_rows(n));
}

void prof_install(DqBackend *be) {
    be->upload = prof_upload;
    be->upload_pixels = prof_upload_pixels;
    be->download = prof_download;
    be->copy = prof_copy;
    be->matmul = prof_matmul;
    be->matmul_gelu = prof_matmul_gelu;
    be->matmul_add = prof_matmul_add;
    be->matmul_many = prof_matmul_many;
    be->mlp_gelu_add = prof_mlp_gelu_add;
    be->layernorm = prof_layernorm;
    be->rmsnorm = prof_rmsnorm;
    be->rope = prof_rope;
    be->attention = prof_attention;
    if (be->attention_segments != NULL)
        be->attention_segments = prof_attention_segments;
    be->gelu_tanh = prof_gelu_tanh;
    be->silu_mul = prof_silu_mul;
    be->act = prof_act;
    be->mul = prof_mul;
    be->add = prof_add_op;
    be->add_broadcast = prof_add_broadcast;
    be->patchify = prof_patchify;
    be->pixel_shuffle = prof_pixel_shuffle;
    be->embed = prof_embed;
    be->argmax_rows = prof_argmax_rows;
}
