/* The "host" backend of bench_gpu: every op does no arithmetic, so a batch through it costs what
 * the host alone spends on it. A GPU worker's GPU waits for that host work (the generator's
 * bookkeeping, smolvlm's segments and duplicate search, staging tiles for their copies) wherever
 * the host cannot queue work far enough ahead, so this is how a session without a GPU measures,
 * and profiles, the part of a GPU batch that happens on the host.
 *
 * It makes the CUDA backend's promises (row-invariant products up to 63 rows and from 64,
 * 16384 prompt rows a call, 32 tiles a vision chunk, segment attention), so the model takes the
 * same path it takes on a GPU, and it does the host side of the CUDA backend's copies: uploads
 * are copied into a staging ring as into the CUDA backend's pinned one, tiles gathered into it
 * with their tables. What it cannot include is the driver's side: each op counted here is at
 * least one kernel launch there (a few microseconds each). Buffers are zero-filled and never
 * written, so the tokens it picks are all 0 (bench_gpu ignores end-of-sequence). */
#include "backend_host.h"

#include "dq_error.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* As the CUDA backend's: 8 slots of 16 MB. */
#define RING_BYTES ((size_t)128 << 20)

typedef struct {
    uint8_t *ring;
    size_t ring_pos;
    uint64_t ops;
} HostCtx;

static HostCtx *host_of(DqBackend *be) {
    return be->ctx;
}

static void op(DqBackend *be) {
    host_of(be)->ops++;
}

/* Room for bytes in the ring (at most RING_BYTES), from its start again when they do not fit
 * before its end. */
static uint8_t *ring_take(HostCtx *c, size_t bytes) {
    if (c->ring_pos + bytes > RING_BYTES)
        c->ring_pos = 0;
    uint8_t *p = c->ring + c->ring_pos;
    c->ring_pos += (bytes + 63) & ~(size_t)63;
    return p;
}

/* Buffers are mapped afresh, zero pages until written, and nothing here writes them: the KV
 * caches of 64 pages cost nothing, and no buffer's size decides whether it is cleared (calloc
 * clears what it takes from the heap, and glibc's threshold for mapping moves as buffers are
 * freed, which made the host's prefill time jump between 1 and 11 ms with the batch size). The
 * CUDA backend takes its buffers from a pool instead; neither costs the host a pass over them. */
#define HOST_HEADER 64 /* the mapping's size, and the buffer's alignment */

static float *host_alloc(DqBackend *be, size_t n) {
    (void)be;
    size_t bytes = HOST_HEADER + MAX(n, (size_t)1) * sizeof(float);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    *(size_t *)p = bytes;
    return (float *)((uint8_t *)p + HOST_HEADER);
}

static void host_release(DqBackend *be, float *buf) {
    (void)be;
    if (buf != NULL) {
        uint8_t *p = (uint8_t *)buf - HOST_HEADER;
        munmap(p, *(size_t *)p);
    }
}

static void host_upload(DqBackend *be, float *dst, const float *src, size_t n) {
    (void)dst;
    HostCtx *c = host_of(be);
    c->ops++;
    const uint8_t *s = (const uint8_t *)src;
    for (size_t bytes = n * sizeof(float); bytes > 0;) {
        size_t part = MIN(bytes, RING_BYTES);
        memcpy(ring_take(c, part), s, part);
        s += part;
        bytes -= part;
    }
}

static void host_upload_pixels(DqBackend *be, float *dst, const DqPixelTile *tiles, int n_tiles,
                               int channels, int tile) {
    (void)dst;
    HostCtx *c = host_of(be);
    c->ops++;
    const size_t lut_bytes = sizeof(float) * 256 * channels;
    const size_t tile_bytes = (size_t)channels * tile * tile;
    uint8_t *luts = ring_take(c, n_tiles * lut_bytes);
    for (int t = 0; t < n_tiles; t++)
        memcpy(luts + t * lut_bytes, tiles[t].lut, lut_bytes);
    /* The bytes by 4 threads, as the CUDA backend's staging_gather copies them. */
    uint8_t *bytes = ring_take(c, n_tiles * tile_bytes);
#pragma omp parallel for num_threads(4) schedule(static)
    for (int t = 0; t < n_tiles; t++)
        memcpy(bytes + t * tile_bytes, tiles[t].bytes, tile_bytes);
}

static void host_download(DqBackend *be, float *dst, const float *src, size_t n) {
    (void)src;
    op(be);
    memset(dst, 0, n * sizeof(float));
}

static void host_copy(DqBackend *be, float *dst, const float *src, size_t n) {
    (void)dst, (void)src, (void)n;
    op(be);
}

static gboolean host_weight_init(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                                 GError **err) {
    (void)be;
    if (!dq_weight_shape(w, t, rows, cols, err))
        return FALSE;
    w->data = t->data; /* never read */
    w->dtype = t->dtype;
    return TRUE;
}

static void host_weight_free(DqBackend *be, DqWeight *w) {
    (void)be;
    memset(w, 0, sizeof *w);
}

static void host_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w,
                        const DqWeight *bias, int n) {
    (void)y, (void)x, (void)w, (void)bias, (void)n;
    op(be);
}

static void host_matmul_add(DqBackend *be, float *y, const float *x, const DqWeight *w,
                            const DqWeight *bias, int n, float *scratch) {
    (void)y, (void)x, (void)w, (void)bias, (void)n, (void)scratch;
    op(be);
}

static void host_matmul_many(DqBackend *be, float *const *ys, const float *x,
                             const DqWeight *const *ws, const DqWeight *const *biases, int count,
                             int n) {
    (void)ys, (void)x, (void)ws, (void)biases, (void)count, (void)n;
    op(be);
}

static void host_mlp_gelu_add(DqBackend *be, float *y, const float *x, const DqWeight *w1,
                              const DqWeight *b1, const DqWeight *w2, const DqWeight *b2, int n,
                              float *hidden, float *scratch) {
    (void)y, (void)x, (void)w1, (void)b1, (void)w2, (void)b2, (void)n, (void)hidden;
    (void)scratch;
    op(be);
}

static void host_layernorm(DqBackend *be, float *y, const float *x, const DqWeight *w,
                           const DqWeight *b, int n, int dim, float eps) {
    (void)y, (void)x, (void)w, (void)b, (void)n, (void)dim, (void)eps;
    op(be);
}

static void host_rmsnorm(DqBackend *be, float *y, const float *x, const DqWeight *w, int n, int dim,
                         float eps) {
    (void)y, (void)x, (void)w, (void)n, (void)dim, (void)eps;
    op(be);
}

static void host_rope(DqBackend *be, float *x, const int32_t *pos, int n, int n_heads, int head_dim,
                      const DqRope *rope) {
    (void)x, (void)pos, (void)n, (void)n_heads, (void)head_dim, (void)rope;
    op(be);
}

static void host_attention(DqBackend *be, float *out, const float *q, const float *k,
                           const float *v, const DqAttention *a) {
    (void)out, (void)q, (void)k, (void)v, (void)a;
    op(be);
}

static void host_attention_segments(DqBackend *be, float *out, const float *q, const float *k_new,
                                    const float *v_new, const DqAttnSegment *segs, int n_segs,
                                    const DqAttention *shape) {
    (void)out, (void)q, (void)k_new, (void)v_new, (void)segs, (void)n_segs, (void)shape;
    op(be);
}

static void host_elementwise(DqBackend *be, float *x, size_t n) {
    (void)x, (void)n;
    op(be);
}

static void host_act(DqBackend *be, float *x, size_t n, SmolvlmAct act) {
    (void)x, (void)n, (void)act;
    op(be);
}

static void host_binary(DqBackend *be, float *y, const float *x, size_t n) {
    (void)y, (void)x, (void)n;
    op(be);
}

static void host_add_broadcast(DqBackend *be, float *y, const DqWeight *w, int n_outer) {
    (void)y, (void)w, (void)n_outer;
    op(be);
}

static void host_patchify(DqBackend *be, float *out, const float *pixels, int tiles, int channels,
                          int tile, int patch) {
    (void)out, (void)pixels, (void)tiles, (void)channels, (void)tile, (void)patch;
    op(be);
}

static void host_pixel_shuffle(DqBackend *be, float *out, const float *in, int tiles, int side,
                               int dim, int s) {
    (void)out, (void)in, (void)tiles, (void)side, (void)dim, (void)s;
    op(be);
}

static void host_embed(DqBackend *be, float *out, const DqWeight *table, const int32_t *ids,
                       int n) {
    (void)out, (void)table, (void)ids, (void)n;
    op(be);
}

static void host_argmax_rows(DqBackend *be, int32_t *ids, const float *x, int n, int cols) {
    (void)x, (void)cols;
    op(be);
    memset(ids, 0, sizeof(int32_t) * (size_t)n);
}

static void host_destroy(DqBackend *be) {
    HostCtx *c = host_of(be);
    free(c->ring);
    g_free(c);
    g_free(be);
}

DqBackend *dq_backend_host_new(GError **err) {
    HostCtx *c = g_new0(HostCtx, 1);
    c->ring = malloc(RING_BYTES);
    if (c->ring == NULL) {
        g_free(c);
        dq_fail(err, DQ_ERR_LIMIT, "host backend: out of memory for its staging ring");
        return NULL;
    }
    memset(c->ring, 0, RING_BYTES); /* as a pinned ring is: resident before the first copy */
    DqBackend *be = g_new0(DqBackend, 1);
    be->name = "host";
    be->ctx = c;
    be->destroy = host_destroy;
    be->alloc = host_alloc;
    be->release = host_release;
    be->upload = host_upload;
    be->upload_pixels = host_upload_pixels;
    be->download = host_download;
    be->copy = host_copy;
    be->weight_init = host_weight_init;
    be->weight_free = host_weight_free;
    be->matmul = host_matmul;
    be->matmul_gelu = host_matmul;
    be->matmul_add = host_matmul_add;
    be->matmul_many = host_matmul_many;
    be->mlp_gelu_add = host_mlp_gelu_add;
    be->layernorm = host_layernorm;
    be->rmsnorm = host_rmsnorm;
    be->rope = host_rope;
    be->attention = host_attention;
    be->attention_segments = host_attention_segments;
    be->gelu_tanh = host_elementwise;
    be->silu_mul = host_binary;
    be->act = host_act;
    be->mul = host_binary;
    be->add = host_binary;
    be->add_broadcast = host_add_broadcast;
    be->patchify = host_patchify;
    be->pixel_shuffle = host_pixel_shuffle;
    be->embed = host_embed;
    be->argmax_rows = host_argmax_rows;
    be->matmul_row_invariant_max = 63;
    be->matmul_row_invariant_min = 64;
    be->prefill_rows = 16384;
    return be;
}

uint64_t dq_backend_host_ops(DqBackend *be) {
    return host_of(be)->ops;
}
