/* The CPU reference backend: float32 everywhere, OpenBLAS sgemm for every product, OpenMP over
 * rows / heads elsewhere. Faster paths and the CUDA backend are checked against this one.
 *
 * OpenBLAS is the OpenMP build (Debian's libopenblas0-openmp): an sgemm called from inside an
 * OpenMP parallel region runs single-threaded, so attention parallelises over (sequence, head)
 * and calls sgemm per head, while the big linear layers let OpenBLAS use every thread.
 */
#include "activation.h"
#include "backend.h"

#include "dq_error.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Attention scores per thread: 4 MiB, one 1024-patch tile's full score matrix. */
#define DQ_CPU_SCORES ((size_t)1 << 20)

typedef struct {
    float *scratch; /* attention scores [threads][DQ_CPU_SCORES] */
    int threads;
} CpuCtx;

#define DQ_HUGE_PAGE ((size_t)2 << 20)

/* The vision encoder's chunk (DqBackend.vision_tile_chunk): 2 tiles make products of 2048 or
 * 1458 rows, enough to split over the threads, in a tenth of 32 tiles' memory. */
#define DQ_CPU_VISION_TILES 2

static float *cpu_alloc(DqBackend *be, size_t n) {
    /* 64-byte alignment for the sgemm kernels; zero-filled so that a buffer never carries
     * garbage into a result by accident. Buffers of a huge page or more (KV caches,
     * activations) are asked for in huge pages where the kernel gives them on request: decode
     * attention reads a 2.2B cache one head (256 bytes) of each 8 KiB row at a time, a new 4 KiB
     * page at every key. */
    void *p = NULL;
    size_t bytes = (n > 0 ? n : 1) * sizeof(float);
    gboolean huge = bytes >= DQ_HUGE_PAGE;
    if (posix_memalign(&p, huge ? DQ_HUGE_PAGE : 64, bytes) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (huge)
        madvise(p, bytes / DQ_HUGE_PAGE * DQ_HUGE_PAGE, MADV_HUGEPAGE); /* advice: may fail */
#endif
    memset(p, 0, bytes);
    return p;
}

static void cpu_release(DqBackend *be, float *buf) {
    free(buf);
}

static void cpu_copy(DqBackend *be, float *dst, const float *src, size_t n) {
    if (n > 0)
        memmove(dst, src, n * sizeof(float));
}

static gboolean cpu_weight_init(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                                GError **err) {
    if (!dq_weight_shape(w, t, rows, cols, err))
        return FALSE;
    if (t->dtype == DQ_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        w->data = t->data; /* mapped, never copied */
        return TRUE;
    }
    /* BF16/F16 (and a misaligned F32): upcast once at load, exactly, into float32. The
     * reference computes in float32 only; converting per product would cost more than it
     * saves in memory. */
    float *buf = cpu_alloc(be, (size_t)t->numel);
    if (buf == NULL)
        return dq_fail(err, DQ_ERR_LIMIT, "%s: tensor '%s': out of memory converting %s to F32",
                       t->file, t->name, dq_dtype_name(t->dtype));
    dq_convert_to_f32(buf, t->data, t->dtype, (size_t)t->numel);
    w->data = buf;
    w->owned = buf;
    return TRUE;
}

static void cpu_weight_free(DqBackend *be, DqWeight *w) {
    if (w->owned != NULL)
        cpu_release(be, w->owned);
    memset(w, 0, sizeof *w);
}

static void cpu_upload(DqBackend *be, float *dst, const float *src, size_t n) {
    cpu_copy(be, dst, src, n);
}

/* Host memory is the device: the values go straight into dst. */
static void cpu_upload_pixels(DqBackend *be, float *dst, const DqPixelTile *tiles, int n_tiles,
                              int channels, int tile) {
    (void)be;
    dq_pixels_expand(dst, tiles, n_tiles, channels, tile);
}

static void cpu_download(DqBackend *be, float *dst, const float *src, size_t n) {
    cpu_copy(be, dst, src, n);
}

/* ---- ops */

/* Up to this many rows a product runs row by row as sgemv: no packing of the weight matrix
 * (which for one decode row costs more than the product), and a row's result is then
 * bit-identical whether it is decoded alone or beside up to 7 other requests. */
#define DQ_CPU_GEMV_ROWS 8

static void cpu_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w,
                       const DqWeight *bias, int n) {
    if (n <= 0)
        return;
    float beta = 0.0f;
    if (bias != NULL) {
        /* torch's addmm: C starts as the bias. */
        for (int r = 0; r < n; r++)
            memcpy(y + (size_t)r * w->rows, bias->data, (size_t)w->rows * sizeof(float));
        beta = 1.0f;
    }
    if (n <= DQ_CPU_GEMV_ROWS) {
        for (int r = 0; r < n; r++)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, w->rows, w->cols, 1.0f, w->data, w->cols,
                        x + (size_t)r * w->cols, 1, beta, y + (size_t)r * w->rows, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, w->rows, w->cols, 1.0f, x, w->cols,
                w->data, w->cols, beta, y, w->rows);
}

static void cpu_layernorm(DqBackend *be, float *y, const float *x, const DqWeight *w,
                          const DqWeight *b, int n, int dim, float eps) {
#pragma omp parallel for if (n > 16)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double mean = 0, var = 0;
        for (int i = 0; i < dim; i++)
            mean += xr[i];
        mean /= dim;
        for (int i = 0; i < dim; i++)
            var += (xr[i] - mean) * (xr[i] - mean);
        var /= dim;
        float inv = (float)(1.0 / sqrt(var + eps));
        for (int i = 0; i < dim; i++)
            yr[i] = (float)(xr[i] - mean) * inv * w->data[i] + b->data[i];
    }
}

static void cpu_rmsnorm(DqBackend *be, float *y, const float *x, const DqWeight *w, int n, int dim,
                        float eps) {
#pragma omp parallel for if (n > 16)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + eps));
        for (int i = 0; i < dim; i++)
            yr[i] = w->data[i] * (xr[i] * inv);
    }
}

static void cpu_rope(DqBackend *be, float *x, const int32_t *pos, int n, int n_heads, int head_dim,
                     const DqRope *rope) {
    int half = head_dim / 2;
    const float af = rope->attention_factor;
#pragma omp parallel for if (n > 16)
    for (int r = 0; r < n; r++) {
        float *xr = x + (size_t)r * n_heads * head_dim;
        for (int i = 0; i < half; i++) {
            /* As transformers does it: the angle in float32, then cos/sin, then the factor. */
            float angle = (float)pos[r] * rope->inv_freq[i];
            float c = (float)cos(angle) * af, s = (float)sin(angle) * af;
            for (int h = 0; h < n_heads; h++) {
                float *v = xr + (size_t)h * head_dim;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

static void cpu_attention(DqBackend *be, float *out, const float *q, const float *k, const float *v,
                          const DqAttention *a) {
    CpuCtx *ctx = be->ctx;
    int group = a->n_heads / a->n_kv_heads;
    int out_stride = a->n_heads * a->head_dim;
    /* Query rows go in chunks so that one (sequence, head)'s scores fit the fixed per-thread
     * scratch: no allocation while decoding. */
    int chunk = (int)MIN((size_t)a->n_q, MAX((size_t)1, DQ_CPU_SCORES / (size_t)MAX(a->n_kv, 1)));
    int n_chunks = (a->n_q + chunk - 1) / chunk;
    int jobs = a->n_seq * a->n_heads * n_chunks;
#pragma omp parallel for schedule(dynamic) num_threads(ctx->threads)
    for (int job = 0; job < jobs; job++) {
        int s = job / (a->n_heads * n_chunks);
        int h = job / n_chunks % a->n_heads, g = h / group;
        int i0 = job % n_chunks * chunk, i1 = MIN(a->n_q, i0 + chunk);
        /* Causal: no row of this chunk sees keys past q_pos0 + i1 - 1. */
        int n_kv = a->causal ? MIN(a->n_kv, a->q_pos0 + i1) : a->n_kv;
        float *sc = ctx->scratch + (size_t)omp_get_thread_num() * DQ_CPU_SCORES;
        const float *qh =
            q + s * a->q_seq_stride + (size_t)i0 * a->q_stride + (size_t)h * a->head_dim;
        const float *kh = k + s * a->kv_seq_stride + (size_t)g * a->head_dim;
        const float *vh = v + s * a->kv_seq_stride + (size_t)g * a->head_dim;
        float *oh = out + ((size_t)s * a->n_q + i0) * out_stride + (size_t)h * a->head_dim;
        if (n_kv <= 0 || (size_t)(i1 - i0) * n_kv > DQ_CPU_SCORES)
            continue; /* impossible with max_position_embeddings checked at open */
        /* scores [i1 - i0, n_kv] = scale * q_h . k_g^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i1 - i0, n_kv, a->head_dim, a->scale,
                    qh, a->q_stride, kh, a->kv_stride, 0.0f, sc, n_kv);
        for (int i = i0; i < i1; i++) {
            float *row = sc + (size_t)(i - i0) * n_kv;
            int visible = a->causal ? MIN(n_kv, a->q_pos0 + i + 1) : n_kv;
            float mx = -INFINITY;
            for (int j = 0; j < visible; j++)
                mx = MAX(mx, row[j]);
            float sum = 0.0f;
            for (int j = 0; j < visible; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            float inv = 1.0f / sum;
            for (int j = 0; j < visible; j++)
                row[j] *= inv;
            for (int j = visible; j < n_kv; j++)
                row[j] = 0.0f;
        }
        /* out_h [i1 - i0, head_dim] = probs . v_g */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, a->head_dim, n_kv, 1.0f, sc,
                    n_kv, vh, a->kv_stride, 0.0f, oh, out_stride);
    }
}

static void cpu_gelu_tanh(DqBackend *be, float *x, size_t n) {
    const double k = sqrt(2.0 / M_PI);
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        x[i] = (float)(0.5 * v * (1.0 + tanh(k * (v + 0.044715 * v * v * v))));
    }
}

static void cpu_silu_mul(DqBackend *be, float *gate, const float *up, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = (g / (1.0f + expf(-g))) * up[i];
    }
}

/* activation.h's formulas; tanh's GELU as gelu_tanh computes it (in double), the GELU the vision
 * MLP fuses. */
static void cpu_act(DqBackend *be, float *x, size_t n, SmolvlmAct act) {
    if (act == DQ_ACT_GELU_TANH) {
        cpu_gelu_tanh(be, x, n);
        return;
    }
    if (act == DQ_ACT_LINEAR)
        return;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++)
        x[i] = dq_act_one(act, x[i]);
}

static void cpu_mul(DqBackend *be, float *y, const float *x, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++)
        y[i] *= x[i];
}

static void cpu_add(DqBackend *be, float *y, const float *x, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

static void cpu_add_broadcast(DqBackend *be, float *y, const DqWeight *w, int n_outer) {
    size_t inner = (size_t)w->rows * w->cols;
#pragma omp parallel for if (n_outer > 1)
    for (int o = 0; o < n_outer; o++)
        for (size_t i = 0; i < inner; i++)
            y[(size_t)o * inner + i] += w->data[i];
}

static void cpu_patchify(DqBackend *be, float *out, const float *pixels, int tiles, int channels,
                         int tile, int patch) {
    int side = tile / patch;
    size_t feat = (size_t)channels * patch * patch;
#pragma omp parallel for collapse(2)
    for (int t = 0; t < tiles; t++)
        for (int py = 0; py < side; py++)
            for (int px = 0; px < side; px++) {
                float *o = out + (((size_t)t * side + py) * side + px) * feat;
                for (int c = 0; c < channels; c++)
                    for (int y = 0; y < patch; y++) {
                        const float *src =
                            pixels +
                            (((size_t)t * channels + c) * tile + (size_t)py * patch + y) * tile +
                            (size_t)px * patch;
                        memcpy(o + ((size_t)c * patch + y) * patch, src, patch * sizeof(float));
                    }
            }
}

static void cpu_pixel_shuffle(DqBackend *be, float *out, const float *in, int tiles, int side,
                              int dim, int s) {
    int oside = side / s;
#pragma omp parallel for collapse(2)
    for (int t = 0; t < tiles; t++)
        for (int oi = 0; oi < oside; oi++)
            for (int oj = 0; oj < oside; oj++) {
                float *o = out + (((size_t)t * oside + oi) * oside + oj) * dim * s * s;
                for (int m = 0; m < s; m++)
                    for (int kk = 0; kk < s; kk++) {
                        const float *src = in + ((size_t)t * side * side +
                                                 (size_t)(oi * s + m) * side + oj * s + kk) *
                                                    dim;
                        memcpy(o + (size_t)(m * s + kk) * dim, src, dim * sizeof(float));
                    }
            }
}

static void cpu_embed(DqBackend *be, float *out, const DqWeight *table, const int32_t *ids, int n) {
    for (int r = 0; r < n; r++)
        memcpy(out + (size_t)r * table->cols, table->data + (size_t)ids[r] * table->cols,
               (size_t)table->cols * sizeof(float));
}

static void cpu_argmax_rows(DqBackend *be, int32_t *ids, const float *x, int n, int cols) {
    (void)be;
    for (int r = 0; r < n; r++)
        ids[r] = dq_argmax(x + (size_t)r * cols, cols);
}

static void cpu_destroy(DqBackend *be) {
    CpuCtx *ctx = be->ctx;
    free(ctx->scratch);
    g_free(ctx);
    g_free(be);
}

DqBackend *dq_backend_cpu_new(GError **err) {
    CpuCtx *ctx = g_new0(CpuCtx, 1);
    ctx->threads = omp_get_max_threads();
    ctx->scratch = cpu_alloc(NULL, DQ_CPU_SCORES * (size_t)ctx->threads);
    if (ctx->scratch == NULL) {
        g_free(ctx);
        dq_fail(err, DQ_ERR_LIMIT, "cpu backend: out of memory for attention scratch");
        return NULL;
    }
    DqBackend *be = g_new0(DqBackend, 1);
    be->name = "cpu";
    be->ctx = ctx;
    be->destroy = cpu_destroy;
    be->alloc = cpu_alloc;
    be->release = cpu_release;
    be->upload = cpu_upload;
    be->upload_pixels = cpu_upload_pixels;
    be->download = cpu_download;
    be->copy = cpu_copy;
    be->weight_init = cpu_weight_init;
    be->weight_free = cpu_weight_free;
    be->matmul = cpu_matmul;
    be->layernorm = cpu_layernorm;
    be->rmsnorm = cpu_rmsnorm;
    be->rope = cpu_rope;
    be->attention = cpu_attention;
    be->gelu_tanh = cpu_gelu_tanh;
    be->silu_mul = cpu_silu_mul;
    be->act = cpu_act;
    be->mul = cpu_mul;
    be->add = cpu_add;
    be->add_broadcast = cpu_add_broadcast;
    be->patchify = cpu_patchify;
    be->pixel_shuffle = cpu_pixel_shuffle;
    be->embed = cpu_embed;
    be->argmax_rows = cpu_argmax_rows;
    be->vision_tile_chunk = DQ_CPU_VISION_TILES;
    return be;
}

void dq_backend_free(DqBackend *be) {
    if (be != NULL)
        be->destroy(be);
}

gboolean dq_weight_shape(DqWeight *w, const DqTensor *t, int rows, int cols, GError **err) {
    memset(w, 0, sizeof *w);
    w->rows = rows;
    w->cols = cols;
    if ((int64_t)rows * cols != t->numel)
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s: tensor '%s' has %" G_GINT64_FORMAT " elements, expected %d x %d",
                       t->file, t->name, t->numel, rows, cols);
    return TRUE;
}

void dq_matmul_gelu(DqBackend *be, float *y, const float *x, const DqWeight *w,
                    const DqWeight *bias, int n) {
    if (be->matmul_gelu != NULL) {
        be->matmul_gelu(be, y, x, w, bias, n);
        return;
    }
    be->matmul(be, y, x, w, bias, n);
    be->gelu_tanh(be, y, (size_t)n * w->rows);
}

void dq_matmul_add(DqBackend *be, float *y, const float *x, const DqWeight *w, const DqWeight *bias,
                   int n, float *scratch) {
    if (be->matmul_add != NULL) {
        be->matmul_add(be, y, x, w, bias, n, scratch);
        return;
    }
    be->matmul(be, scratch, x, w, bias, n);
    be->add(be, y, scratch, (size_t)n * w->rows);
}

void dq_matmul_many(DqBackend *be, float *const *ys, const float *x, const DqWeight *const *ws,
                    const DqWeight *const *biases, int count, int n) {
    if (be->matmul_many != NULL) {
        be->matmul_many(be, ys, x, ws, biases, count, n);
        return;
    }
    for (int i = 0; i < count; i++)
        be->matmul(be, ys[i], x, ws[i], biases[i], n);
}

void dq_mlp_gelu_add(DqBackend *be, float *y, const float *x, const DqWeight *w1,
                     const DqWeight *b1, const DqWeight *w2, const DqWeight *b2, int n,
                     float *hidden, float *scratch) {
    if (be->mlp_gelu_add != NULL) {
        be->mlp_gelu_add(be, y, x, w1, b1, w2, b2, n, hidden, scratch);
        return;
    }
    dq_matmul_gelu(be, hidden, x, w1, b1, n);
    dq_matmul_add(be, y, hidden, w2, b2, n, scratch);
}

int dq_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

size_t dq_pixel_buffer_floats(int n_tiles, int channels, int tile) {
    /* float32 values, or (CUDA) a table of 256 floats a channel and a byte a value */
    return (size_t)n_tiles * channels * ((size_t)tile * tile + 256);
}

void dq_pixels_expand(float *dst, const DqPixelTile *tiles, int n_tiles, int channels, int tile) {
    const size_t plane = (size_t)tile * tile;
#pragma omp parallel for collapse(2) if ((size_t)n_tiles * channels * plane >= 65536)
    for (int t = 0; t < n_tiles; t++)
        for (int c = 0; c < channels; c++) {
            const uint8_t *b = tiles[t].bytes + c * plane;
            const float *lut = tiles[t].lut + c * 256;
            float *o = dst + ((size_t)t * channels + c) * plane;
            for (size_t i = 0; i < plane; i++)
                o[i] = lut[b[i]];
        }
}

void dq_upload_pixels(DqBackend *be, float *dst, const DqPixelTile *tiles, int n_tiles,
                      int channels, int tile) {
    if (be->upload_pixels != NULL) {
        be->upload_pixels(be, dst, tiles, n_tiles, channels, tile);
        return;
    }
    const size_t tile_floats = (size_t)channels * tile * tile;
    float *host = g_new(float, tile_floats);
    for (int t = 0; t < n_tiles; t++) {
        dq_pixels_expand(host, tiles + t, 1, channels, tile);
        be->upload(be, dst + (size_t)t * tile_floats, host, tile_floats);
    }
    g_free(host);
}

void dq_attention_segments(DqBackend *be, float *out, const float *q, const float *k_new,
                           const float *v_new, const DqAttnSegment *segs, int n_segs,
                           const DqAttention *shape) {
    if (be->attention_segments != NULL) {
        be->attention_segments(be, out, q, k_new, v_new, segs, n_segs, shape);
        return;
    }
    g_assert(!shape->kv_f16); /* float16 caches exist only on backends that read them */
    DqAttention a = *shape;
    a.n_seq = 1;
    a.causal = TRUE;
    a.q_seq_stride = a.kv_seq_stride = 0;
    for (int s = 0; s < n_segs; s++) {
        const DqAttnSegment *g = &segs[s];
        size_t kv_row = (size_t)a.kv_stride;
        be->copy(be, g->k_cache + (size_t)g->n_past * kv_row, k_new + (size_t)g->row0 * kv_row,
                 (size_t)g->n_q * kv_row);
        be->copy(be, g->v_cache + (size_t)g->n_past * kv_row, v_new + (size_t)g->row0 * kv_row,
                 (size_t)g->n_q * kv_row);
        a.n_q = g->n_q;
        a.n_kv = g->n_past + g->n_q;
        a.q_pos0 = g->n_past;
        be->attention(be, out + (size_t)g->row0 * a.n_heads * a.head_dim,
                      q + (size_t)g->row0 * a.q_stride, g->k_cache, g->v_cache, &a);
    }
}
