/* The CUDA backend: backend.h on one GPU. See backend_cuda.h for what it promises; the notes
 * here say how.
 *
 * - One stream per backend; every op is queued on it with no host synchronisation, so buffer
 *   reuse (the caching pool, the bf16 activation scratch) is safe by stream order alone.
 * - Linear layers: the activation is rounded to bf16 into a scratch buffer, then one cublasLt
 *   product (bf16 x bf16, float32 accumulation, float32 result, the bias in its epilogue) with
 *   one fixed algorithm per weight shape, so that a row's result does not depend on how many
 *   rows share the call (lt_matmul): smolvlm then puts all tiles of a vision chunk and all
 *   prompts of a prefill into one product. Up to 63 rows (decode) a row-invariant kernel of our
 *   own runs instead, so that the decode rows of all requests go into one call too.
 * - Attention: from 64 query rows on (vision tiles, prompts) a tensor-core flash kernel that
 *   keeps scores and probabilities in registers (attn_mma_kernel); a float32 flash kernel for
 *   short chunks and a split-key decode kernel for a handful of query rows over the KV cache.
 *   Nothing of size n_q x n_kv is ever written.
 * - Host arrays an op takes (positions, token ids) and uploads go through a pinned ring buffer
 *   in slots; a slot is reused once the copies queued from it are done (an event a slot), so a
 *   queued DMA never reads bytes that were overwritten and the host runs up to a ring ahead.
 *   The bookkeeping is plain C (staging_ring.h, tested on the CPU): every part is taken, its
 *   copy queued, then committed, which re-records the events of the slots it ran across.
 * - DOCQA_CUDA_PROFILE=1: the GPU time of every op by shape, printed when the backend is freed.
 * - Decode steps as CUDA graphs (graph_begin / graph_end, backend.h; DOCQA_CUDA_GRAPHS=1): the
 *   stream is captured, the graph made for the step's key (and the recording's node count) is
 *   updated in place with the new arguments (cudaGraphExecUpdate; re-instantiated when the
 *   update is refused) and launched. Every step is recorded afresh and its graph updated from
 *   that recording, so no pointer or size of an earlier step is ever replayed.
 *   Capture-safety: graph_begin waits for the stream and empties the ring, so nothing recorded
 *   needs a synchronisation (a ring that would wrap fails the recording instead); the pool never
 *   cudaMallocs while recording (a missing block fails the recording); downloads become async
 *   copies into a pinned download area, copied to their host destinations by graph_end after
 *   the replay. A failed recording is reported to the caller, which redoes the step plainly;
 *   errors while recording are kept apart from the sticky error for that reason.
 */
#include <glib.h>
#include <glib/gstdio.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "backend_cuda.h"
#include "dq_error.h"
#include "safetensors.h"
#include "graph_table.h"
#include "kernel_math.h"
#include "staging_ring.h"
}

/* Pinned staging ring for uploads, downloads and small host arrays, in slots that are reused
 * once the copies that read them are done: the host runs up to a ring ahead of the GPU (a
 * vision chunk of 32 512-pixel tiles is 100 MB). */
#define DQ_CUDA_RING_SLOTS 8
#define DQ_CUDA_RING_SLOT  ((size_t)16 << 20)
#define DQ_CUDA_RING_BYTES (DQ_CUDA_RING_SLOTS * DQ_CUDA_RING_SLOT)
/* Rows a launch of argmax_rows_kernel (its device ids). */
#define DQ_CUDA_ARGMAX_ROWS 1024
/* Device staging for weight conversion at load (F32/F16/BF16 bytes -> bf16 or f32). */
#define DQ_CUDA_LOAD_CHUNK ((size_t)32 << 20)
/* cuBLAS workspace, given explicitly so that cuBLAS never allocates behind our back (which a
 * CUDA graph capture would not allow). */
#define DQ_CUDA_BLAS_WORKSPACE ((size_t)32 << 20)
/* Recordings that fail in a row before graphs are turned off for the backend. */
#define DQ_CUDA_GRAPH_MAX_FAILURES 3
/* Pinned download area for recorded steps, grown (between steps) to what a step needed. */
#define DQ_CUDA_DL_MIN_BYTES ((size_t)4 << 20)
/* cublasLt plans kept (one per product shape and alignment) before they are all dropped. */
#define DQ_CUDA_LT_PLANS_KEPT 4096

/* A download recorded in a graph: bytes at dl_host + off go to dst after the replay. */
typedef struct {
    void *dst;
    size_t off, bytes;
} Deferred;

typedef struct {
    int device;
    char label[320]; /* "cuda:0 (NVIDIA H100 80GB HBM3)" */
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;
    cublasLtHandle_t lt;  /* products with a bias in the epilogue; NULL: fill + GemmEx */
    GHashTable *lt_plans; /* LtKey -> LtPlan */
    gboolean lt_fixed;    /* one algorithm a weight shape: products row-invariant (see lt_matmul) */
    GHashTable *lt_fixed_algos; /* (m, k, bias) -> LtPlan at DQ_CUDA_LT_REF_ROWS */
    /* caching pool */
    GHashTable *live;       /* device ptr -> size class (bytes) of pool blocks in use */
    GHashTable *free_lists; /* size class -> GSList of cached device ptrs */
    size_t pool_bytes;      /* cudaMalloc'ed by the pool */
    /* weights */
    GHashTable *bf16;      /* device ptrs of weights stored as bf16 */
    gboolean f32_weights;  /* DOCQA_CUDA_F32=1: matrices stay float32 (conformance runs) */
    gboolean tc_attn;      /* attention from DQ_CUDA_TC_MIN_ROWS rows on tensor cores (bf16) */
    gboolean attn_mma;     /* ... by attn_mma_kernel where it fits (DOCQA_CUDA_ATTN_MMA=0: not) */
    gboolean decode_group; /* attn_decode_group_kernel (DOCQA_CUDA_DECODE_GROUP=0: not) */
    int attn_rows;         /* query rows a block of attn_mma_kernel: 128, or 64 */
    gboolean attn_staged;  /* attn_mma16_kernel where it fits (DOCQA_CUDA_ATTN_STAGED=0: not) */
    gboolean norm_warp;    /* norm_warp_kernel where it fits (DOCQA_CUDA_NORM_WARP=0: not) */
    gboolean shared_x;     /* matmul_many rounds x once (DOCQA_CUDA_SHARED_X=0: each product) */
    gboolean mlp_bf16;     /* mlp_gelu_add keeps fc1's output bf16 (DOCQA_CUDA_MLP_BF16=1) */
    gboolean fused_add;    /* matmul_add in the product (DOCQA_CUDA_FUSED_ADD=0: not) */
    gboolean lt_bias;      /* biases in cublasLt's epilogue (DOCQA_CUDA_LT_BIAS=0: not) */
    gboolean lt_gelu;      /* matmul_gelu's GELU in cublasLt's epilogue (DOCQA_CUDA_LT_GELU=0) */
    size_t weight_bytes;   /* uploaded so far */
    gboolean preflight_done;
    void *load_stage; /* [DQ_CUDA_LOAD_CHUNK] bytes */
    /* matmul input in bf16 */
    __nv_bfloat16 *xbf; /* [xbf_cap] */
    size_t xbf_cap;
    /* pinned ring (host) and its device twin for small arrays */
    uint8_t *ring_host;
    uint8_t *ring_dev;
    DqStagingRing ring;
    cudaEvent_t ring_ev[DQ_CUDA_RING_SLOTS]; /* a slot's readers are queued before it */
    /* Tiles go up on their own stream (cuda_upload_pixels), beside the vision encoder's work on
     * the previous chunk (NULL: DOCQA_CUDA_COPY_STREAM=0, on the main stream). */
    cudaStream_t copy_stream;
    cudaEvent_t px_copied;    /* recorded on copy_stream after each part of a pixel upload */
    cudaEvent_t px_read;      /* recorded on the main stream after each patchify ... */
    const float *px_read_buf; /* ... from this buffer (NULL once released) */
    cudaEvent_t px_fence;     /* the main stream's work so far, for a buffer new to the uploads */
    /* RoPE inverse frequencies, computed on the host exactly as the CPU reference does */
    float *inv_freq;  /* device [64 * 4] */
    int32_t *ids;     /* device [DQ_CUDA_ARGMAX_ROWS]: argmax_rows' picks, downloaded */
    double inv_theta; /* what inv_freq holds (0: nothing yet) */
    int inv_hd;
    /* the first error; every later op is skipped */
    cudaError_t sticky;
    char sticky_msg[512];
    /* CUDA graphs of recorded steps */
    gboolean graphs_on; /* DOCQA_CUDA_GRAPHS=1 (or dq_backend_cuda_set_graphs) */
    gboolean capturing;
    cudaError_t cap_err; /* the first error while recording: fails the recording only */
    char cap_msg[512];
    uint64_t cap_key;
    double cap_inv_theta; /* inv_freq as the recording leaves it (cap_inv_hd 0: unchanged) */
    int cap_inv_hd;
    DqGraphTable graphs; /* kept by step key and node count (graph_table.h) */
    int graph_failures;  /* in a row */
    uint8_t *dl_host;    /* pinned [dl_cap] */
    size_t dl_cap, dl_pos, dl_need;
    GArray *deferred; /* Deferred, of the step being recorded */
    DqCudaGraphStats gstats;
    /* DOCQA_CUDA_PROFILE=1: GPU time of each op, by op and shape (NULL: off) */
    struct Profile *prof;
} CudaCtx;

static void record(CudaCtx *c, cudaError_t e, const char *what) {
    if (e == cudaSuccess)
        return;
    if (c->capturing) {
        if (c->cap_err == cudaSuccess) {
            c->cap_err = e;
            g_snprintf(c->cap_msg, sizeof c->cap_msg, "%s: %s", what, cudaGetErrorString(e));
        }
        return;
    }
    if (c->sticky != cudaSuccess)
        return;
    c->sticky = e;
    g_snprintf(c->sticky_msg, sizeof c->sticky_msg, "%s: %s failed: %s", c->label, what,
               cudaGetErrorString(e));
    g_warning("%s", c->sticky_msg);
}

static void record_blas(CudaCtx *c, cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS)
        return;
    if (c->capturing) {
        if (c->cap_err == cudaSuccess) {
            c->cap_err = cudaErrorUnknown;
            g_snprintf(c->cap_msg, sizeof c->cap_msg, "%s: cuBLAS status %d", what, (int)s);
        }
        return;
    }
    if (c->sticky != cudaSuccess)
        return;
    c->sticky = cudaErrorUnknown;
    g_snprintf(c->sticky_msg, sizeof c->sticky_msg, "%s: %s failed: cuBLAS status %d", c->label,
               what, (int)s);
    g_warning("%s", c->sticky_msg);
}

#define CK(c, call)        record((c), (call), #call)
#define CK_LAUNCH(c, what) record((c), cudaGetLastError(), what)

static CudaCtx *ctx_of(DqBackend *be) {
    CudaCtx *c = (CudaCtx *)be->ctx;
    /* The current device is per host thread: a backend used from another thread than the one
     * that opened it (or beside a backend on another GPU) must select its own. */
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != c->device)
        record(c, cudaSetDevice(c->device), "cudaSetDevice");
    return c;
}

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

static Profile *prof_new(void) {
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

static void prof_report(CudaCtx *c) {
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

static void prof_free(Profile *p) {
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

static unsigned grid_for(size_t n, unsigned block) {
    size_t g = (n + block - 1) / block;
    return (unsigned)MIN(MAX(g, (size_t)1), (size_t)1 << 20);
}

static double mib(size_t bytes) {
    return (double)bytes / (1024.0 * 1024.0);
}

/* "X MiB free of Y MiB" for out-of-memory messages. */
static void mem_info(char *buf, size_t len) {
    size_t fr = 0, total = 0;
    if (cudaMemGetInfo(&fr, &total) == cudaSuccess)
        g_snprintf(buf, len, "%.0f MiB free of %.0f MiB", mib(fr), mib(total));
    else
        g_snprintf(buf, len, "free memory unknown");
}

/* ---- caching pool */

static size_t size_class(size_t bytes) {
    if (bytes <= 256)
        return 256;
    if (bytes <= ((size_t)1 << 20)) {
        size_t s = 256;
        while (s < bytes)
            s <<= 1;
        return s;
    }
    size_t gran = (size_t)2 << 20;
    return (bytes + gran - 1) / gran * gran;
}

static void pool_trim(CudaCtx *c) {
    /* Hands every cached block back to the driver (after the queued work that may use them).
     * The sync also reports a fault of that work: recorded under this name, not a later op's. */
    CK(c, cudaStreamSynchronize(c->stream));
    GHashTableIter it;
    gpointer key, val;
    g_hash_table_iter_init(&it, c->free_lists);
    while (g_hash_table_iter_next(&it, &key, &val)) {
        for (GSList *l = (GSList *)val; l != NULL; l = l->next) {
            cudaFree(l->data);
            c->pool_bytes -= GPOINTER_TO_SIZE(key);
        }
        g_slist_free((GSList *)val);
        g_hash_table_iter_remove(&it);
    }
}

static void *pool_get(CudaCtx *c, size_t bytes) {
    size_t cls = size_class(bytes);
    gpointer key = GSIZE_TO_POINTER(cls);
    GSList *l = (GSList *)g_hash_table_lookup(c->free_lists, key);
    if (l == NULL && cls > ((size_t)1 << 20)) {
        /* Batches vary in size: a cached block up to twice as large serves too, so that after
         * the first large batch no cudaMalloc is needed. */
        GHashTableIter it;
        gpointer k, v;
        size_t best = 0;
        g_hash_table_iter_init(&it, c->free_lists);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            size_t kc = GPOINTER_TO_SIZE(k);
            if (v != NULL && kc > cls && kc <= 2 * cls && (best == 0 || kc < best))
                best = kc;
        }
        if (best != 0) {
            key = GSIZE_TO_POINTER(best);
            l = (GSList *)g_hash_table_lookup(c->free_lists, key);
        }
    }
    void *p = NULL;
    if (l != NULL) {
        p = l->data;
        g_hash_table_insert(c->free_lists, key, g_slist_delete_link(l, l));
    } else {
        if (c->capturing) {
            /* cudaMalloc is not allowed in a stream capture: the step is redone plainly, which
             * allocates the block for the next recording. */
            record(c, cudaErrorStreamCaptureUnsupported, "a new pool block while recording");
            return NULL;
        }
        if (cudaMalloc(&p, cls) != cudaSuccess) {
            cudaGetLastError(); /* not sticky: out of memory is reported, not fatal */
            pool_trim(c);
            if (cudaMalloc(&p, cls) != cudaSuccess) {
                cudaGetLastError();
                char info[96];
                mem_info(info, sizeof info);
                g_warning("%s: out of GPU memory: a buffer of %.1f MiB is needed, %s "
                          "(%.0f MiB in docqa's pool, %.0f MiB of weights)",
                          c->label, mib(cls), info, mib(c->pool_bytes), mib(c->weight_bytes));
                return NULL;
            }
        }
        c->pool_bytes += cls;
    }
    g_hash_table_insert(c->live, p, key);
    return p;
}

static gboolean pool_put(CudaCtx *c, void *p) {
    gpointer key;
    if (!g_hash_table_lookup_extended(c->live, p, NULL, &key))
        return FALSE;
    g_hash_table_remove(c->live, p);
    GSList *l = (GSList *)g_hash_table_lookup(c->free_lists, key);
    g_hash_table_insert(c->free_lists, key, g_slist_prepend(l, p));
    return TRUE;
}

/* ---- pinned ring */

/* The ring's marks and waits (staging_ring.h) are a slot's event on the main stream. While a
 * graph is recorded neither is needed: graph_begin waited for the stream, and the recorded copies
 * run at the replay, which graph_end waits for. */
static void ring_mark(void *user, int slot) {
    CudaCtx *c = (CudaCtx *)user;
    if (!c->capturing)
        CK(c, cudaEventRecord(c->ring_ev[slot], c->stream));
}

static void ring_wait(void *user, int slot) {
    CudaCtx *c = (CudaCtx *)user;
    if (!c->capturing)
        CK(c, cudaEventSynchronize(c->ring_ev[slot]));
}

static const DqStagingRingOps ring_ops = {ring_mark, ring_wait};

/* The ring is free again (the stream has been waited for). */
static void ring_reset(CudaCtx *c) {
    staging_ring_reset(&c->ring);
}

/* Room for `bytes` in the ring (64-byte aligned) that no queued copy still reads; *ok FALSE when
 * bytes exceed the ring, or when the ring would have to wrap (and wait) while a graph is
 * recorded (recorded as the recording's failure). Once the part's copy is queued, and on the main
 * stream where it was queued on another: ring_commit. */
static size_t ring_take(CudaCtx *c, size_t bytes, gboolean *ok) {
    size_t off = 0;
    if (c->capturing && bytes <= DQ_CUDA_RING_BYTES && !staging_ring_fits(&c->ring, bytes)) {
        /* No waiting inside a capture: the recording fails instead. */
        record(c, cudaErrorStreamCaptureUnsupported, "pinned ring full while recording");
        *ok = FALSE;
        return 0;
    }
    *ok = staging_ring_take(&c->ring, bytes, &off);
    return off;
}

static void ring_commit(CudaCtx *c) {
    staging_ring_commit(&c->ring);
}

/* A device copy of a small host array, valid for the ops queued next. */
static const void *stage_small(CudaCtx *c, const void *host, size_t bytes) {
    gboolean ok;
    size_t off = ring_take(c, bytes, &ok);
    if (!ok) {
        record(c, cudaErrorInvalidValue, "staging a host array larger than the pinned ring");
        return NULL;
    }
    memcpy(c->ring_host + off, host, bytes);
    CK(c, cudaMemcpyAsync(c->ring_dev + off, c->ring_host + off, bytes, cudaMemcpyHostToDevice,
                          c->stream));
    ring_commit(c);
    return c->ring_dev + off;
}

/* ---- memory ops */

static float *cuda_alloc(DqBackend *be, size_t n) {
    CudaCtx *c = ctx_of(be);
    if (c->sticky != cudaSuccess)
        return NULL;
    size_t bytes = MAX(n, (size_t)1) * sizeof(float);
    float *p = (float *)pool_get(c, bytes);
    /* Zero-filled like the CPU backend's buffers. */
    if (p != NULL)
        CK(c, cudaMemsetAsync(p, 0, bytes, c->stream));
    return p;
}

static void cuda_release(DqBackend *be, float *buf) {
    CudaCtx *c = ctx_of(be);
    if (buf != NULL && buf == c->px_read_buf)
        c->px_read_buf = NULL; /* whoever gets it next may use it on the main stream */
    if (buf != NULL && !pool_put(c, buf))
        g_warning("%s: release of a pointer the pool never gave out", c->label);
}

/* Pageable host memory into the pinned ring. One core copies ~5 GB/s, so a batch of 64 pages
 * (~1300 512-pixel tiles, 4 GB) took about as long to stage as the GPU took to encode it: parts
 * from 2 MB on (a tile is 3 MB) are copied by up to 4 threads, 512 KB at a time. */
#define STAGING_BLOCK ((size_t)512 << 10)

static void staging_copy(uint8_t *dst, const uint8_t *src, size_t bytes) {
    const long blocks = (long)((bytes + STAGING_BLOCK - 1) / STAGING_BLOCK);
    if (blocks < 4) {
        memcpy(dst, src, bytes);
        return;
    }
#pragma omp parallel for num_threads(4) schedule(static)
    for (long b = 0; b < blocks; b++) {
        size_t o = (size_t)b * STAGING_BLOCK;
        memcpy(dst + o, src + o, MIN(STAGING_BLOCK, bytes - o));
    }
}

static void cuda_upload(DqBackend *be, float *dst, const float *src, size_t n) {
    CudaCtx *c = ctx_of(be);
    size_t bytes = n * sizeof(float);
    for (size_t done = 0; done < bytes && c->sticky == cudaSuccess;) {
        size_t part = MIN(bytes - done, DQ_CUDA_RING_SLOT);
        gboolean ok;
        size_t off = ring_take(c, part, &ok);
        if (!ok)
            break; /* recording a graph: already recorded as its failure */
        staging_copy(c->ring_host + off, (const uint8_t *)src + done, part);
        CK(c, cudaMemcpyAsync((uint8_t *)dst + done, c->ring_host + off, part,
                              cudaMemcpyHostToDevice, c->stream));
        ring_commit(c);
        done += part;
    }
}

/* Bytes [from, from + n) of the tiles laid end to end into dst, by staging_copy's threads. */
static void staging_gather(uint8_t *dst, const DqPixelTile *tiles, size_t tile_bytes, size_t from,
                           size_t n) {
    const long blocks = (long)((n + STAGING_BLOCK - 1) / STAGING_BLOCK);
#pragma omp parallel for num_threads(4) schedule(static) if (blocks >= 4)
    for (long b = 0; b < blocks; b++) {
        for (size_t i = (size_t)b * STAGING_BLOCK, end = MIN(n, i + STAGING_BLOCK); i < end;) {
            size_t g = from + i, k = g % tile_bytes, run = MIN(end - i, tile_bytes - k);
            memcpy(dst + i, tiles[g / tile_bytes].bytes + k, run);
            i += run;
        }
    }
}

/* A part of a pixel upload queued on stream s: the main stream waits for it. */
static void upload_part_done(CudaCtx *c, cudaStream_t s) {
    if (s == c->stream)
        return;
    CK(c, cudaEventRecord(c->px_copied, s));
    CK(c, cudaStreamWaitEvent(c->stream, c->px_copied, 0));
}

/* The tiles go up as they are (backend.h): dst holds each tile's tables, [n_tiles][channels]
 * [256] floats, then their bytes end to end, and patchify looks the values up. A quarter of
 * the float32 values' bytes to stage and send, half of bf16's, with nothing computed on the
 * host: staging 64 pages as float32 (4 GB for 256M) kept the GPU waiting on the host, and
 * rounding them to bf16 on the host still read all of those 4 GB. */
static void cuda_upload_pixels(DqBackend *be, float *dst, const DqPixelTile *tiles, int n_tiles,
                               int channels, int tile) {
    CudaCtx *c = ctx_of(be);
    /* On the copy stream, the chunk's copies run while the main stream still encodes the chunk
     * before: they wait only for the patchify that last read dst (or, for a buffer new to the
     * uploads, for the main stream's work so far), and the main stream waits for each part.
     * Each wait follows its part's copy, before the part is committed to the ring: the events
     * the ring records on the main stream for the part's slots then cover these copies too. */
    cudaStream_t s = c->copy_stream != NULL && !c->capturing ? c->copy_stream : c->stream;
    if (s != c->stream) {
        if (dst != c->px_read_buf) {
            CK(c, cudaEventRecord(c->px_fence, c->stream));
            CK(c, cudaStreamWaitEvent(s, c->px_fence, 0));
        } else {
            CK(c, cudaStreamWaitEvent(s, c->px_read, 0));
        }
    }
    const size_t lut_bytes = sizeof(float) * 256 * channels;
    const size_t per_part = MAX(DQ_CUDA_RING_SLOT / lut_bytes, (size_t)1);
    for (int t0 = 0; t0 < n_tiles && c->sticky == cudaSuccess; t0 += (int)per_part) {
        int nt = (int)MIN((size_t)(n_tiles - t0), per_part);
        gboolean ok;
        size_t off = ring_take(c, nt * lut_bytes, &ok);
        if (!ok)
            return; /* recording a graph: already recorded as its failure */
        for (int t = 0; t < nt; t++)
            memcpy(c->ring_host + off + t * lut_bytes, tiles[t0 + t].lut, lut_bytes);
        CK(c, cudaMemcpyAsync((uint8_t *)dst + t0 * lut_bytes, c->ring_host + off, nt * lut_bytes,
                              cudaMemcpyHostToDevice, s));
        upload_part_done(c, s);
        ring_commit(c);
    }
    uint8_t *d = (uint8_t *)(dst + (size_t)n_tiles * channels * 256);
    const size_t tile_bytes = (size_t)channels * tile * tile, total = n_tiles * tile_bytes;
    for (size_t done = 0; done < total && c->sticky == cudaSuccess;) {
        size_t part = MIN(total - done, DQ_CUDA_RING_SLOT);
        gboolean ok;
        size_t off = ring_take(c, part, &ok);
        if (!ok)
            return;
        staging_gather(c->ring_host + off, tiles, tile_bytes, done, part);
        CK(c, cudaMemcpyAsync(d + done, c->ring_host + off, part, cudaMemcpyHostToDevice, s));
        upload_part_done(c, s);
        ring_commit(c);
        done += part;
    }
}

static void cuda_download(DqBackend *be, float *dst, const float *src, size_t n) {
    CudaCtx *c = ctx_of(be);
    size_t bytes = n * sizeof(float);
    if (c->sticky != cudaSuccess) {
        memset(dst, 0, bytes);
        return;
    }
    if (c->capturing && bytes == 0)
        return;
    if (c->capturing) {
        /* Recorded: an async copy into the pinned download area; graph_end copies it to dst
         * after the replay. Past the area's end the recording fails, and dl_pos tells graph_end
         * how large the area must grow for the next one. */
        size_t off = c->dl_pos;
        c->dl_pos += (bytes + 63) & ~(size_t)63;
        if (c->dl_pos > c->dl_cap) {
            record(c, cudaErrorStreamCaptureUnsupported, "download area full while recording");
            return;
        }
        CK(c, cudaMemcpyAsync(c->dl_host + off, src, bytes, cudaMemcpyDeviceToHost, c->stream));
        Deferred d = {dst, off, bytes};
        g_array_append_val(c->deferred, d);
        return;
    }
    for (size_t done = 0; done < bytes;) {
        size_t part = MIN(bytes - done, DQ_CUDA_RING_BYTES);
        gboolean ok;
        size_t off = ring_take(c, part, &ok);
        CK(c, cudaMemcpyAsync(c->ring_host + off, (const uint8_t *)src + done, part,
                              cudaMemcpyDeviceToHost, c->stream));
        CK(c, cudaStreamSynchronize(c->stream));
        ring_reset(c); /* the stream is idle: the whole ring is free */
        if (c->sticky != cudaSuccess) {
            /* The copy, or an op before it, failed: zeros, as after any error, and never the
             * bytes the ring holds from another transfer. */
            memset((uint8_t *)dst + done, 0, bytes - done);
            return;
        }
        memcpy((uint8_t *)dst + done, c->ring_host + off, part);
        done += part;
    }
}

static void cuda_copy(DqBackend *be, float *dst, const float *src, size_t n) {
    CudaCtx *c = ctx_of(be);
    if (n > 0 && dst != src)
        CK(c, cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, c->stream));
}

/* ---- weights */

__device__ __forceinline__ float load_src(const void *src, int dtype, size_t i) {
    if (dtype == DQ_DTYPE_F32)
        return ((const float *)src)[i];
    if (dtype == DQ_DTYPE_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)src)[i]);
    return __half2float(((const __half *)src)[i]);
}

__global__ void convert_to_bf16_kernel(__nv_bfloat16 *dst, const void *src, int dtype, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(load_src(src, dtype, i));
}

__global__ void convert_to_f32_kernel(float *dst, const void *src, int dtype, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = load_src(src, dtype, i);
}

static gboolean is_bf16(CudaCtx *c, const DqWeight *w) {
    return g_hash_table_contains(c->bf16, w->data);
}

/* Before the first weight: does the snapshot fit? Its weight files (safetensors_snapshot_bytes
 * of the first tensor's folder) give the parameter count; on the GPU they take 2 bytes each (bf16),
 * 4 with DOCQA_CUDA_F32=1. Failing here names the whole need instead of some tensor midway. */
static gboolean weights_preflight(CudaCtx *c, const DqTensor *t, GError **err) {
    char *dir = g_path_get_dirname(t->file);
    /* The model's files only: another variant or a draft model beside them would overstate the
     * need and refuse a model that fits. A lone file (not a snapshot's): its own size. */
    guint64 on_disk = safetensors_snapshot_bytes(dir);
    GStatBuf st;
    if (on_disk == 0 && g_stat(t->file, &st) == 0)
        on_disk = (guint64)st.st_size;
    size_t need = (size_t)(on_disk / dq_dtype_size(t->dtype)) * (c->f32_weights ? 4 : 2);
    size_t fr = 0, total = 0;
    gboolean ok = TRUE;
    if (need > 0 && cudaMemGetInfo(&fr, &total) == cudaSuccess && need > fr)
        ok = dq_fail(err, DQ_ERR_DEVICE,
                     "%s: the weights in %s need about %.0f MiB on the GPU (%s), but only %.0f "
                     "MiB of %.0f MiB are free",
                     c->label, dir, mib(need), c->f32_weights ? "float32" : "bf16", mib(fr),
                     mib(total));
    g_free(dir);
    return ok;
}

static gboolean cuda_weight_init(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                                 GError **err) {
    CudaCtx *c = ctx_of(be);
    if (!dq_weight_shape(w, t, rows, cols, err))
        return FALSE;
    if (c->sticky != cudaSuccess)
        return dq_fail(err, DQ_ERR_DEVICE, "%s", c->sticky_msg);
    if (!c->preflight_done) {
        c->preflight_done = TRUE;
        if (!weights_preflight(c, t, err))
            return FALSE;
    }
    /* Matrices (linear layers, embedding tables) in bf16: half the memory and the tensor-core
     * path; vectors (norm weights, biases) stay float32 since they cost nothing. */
    gboolean to_bf16 = rows > 1 && !c->f32_weights;
    size_t n = (size_t)t->numel, esz = dq_dtype_size(t->dtype);
    size_t bytes = n * (to_bf16 ? sizeof(__nv_bfloat16) : sizeof(float));
    void *dst = NULL;
    if (cudaMalloc(&dst, MAX(bytes, (size_t)1)) != cudaSuccess) {
        cudaGetLastError();
        pool_trim(c);
        if (cudaMalloc(&dst, MAX(bytes, (size_t)1)) != cudaSuccess) {
            cudaGetLastError();
            char info[96];
            mem_info(info, sizeof info);
            return dq_fail(err, DQ_ERR_DEVICE,
                           "%s: out of GPU memory loading tensor '%s' of %s: it needs %.1f MiB "
                           "beyond the %.0f MiB of weights loaded so far, with %s (the model's "
                           "bf16 matrices need about 2 bytes a parameter plus activations)",
                           c->label, t->name, t->file, mib(bytes), mib(c->weight_bytes), info);
        }
    }
    /* The file's bytes go up in chunks and are converted on the GPU. */
    size_t per_chunk = DQ_CUDA_LOAD_CHUNK / esz;
    for (size_t i0 = 0; i0 < n; i0 += per_chunk) {
        size_t m = MIN(per_chunk, n - i0);
        CK(c, cudaMemcpyAsync(c->load_stage, (const uint8_t *)t->data + i0 * esz, m * esz,
                              cudaMemcpyHostToDevice, c->stream));
        if (to_bf16)
            convert_to_bf16_kernel<<<grid_for(m, 256), 256, 0, c->stream>>>(
                (__nv_bfloat16 *)dst + i0, c->load_stage, (int)t->dtype, m);
        else
            convert_to_f32_kernel<<<grid_for(m, 256), 256, 0, c->stream>>>(
                (float *)dst + i0, c->load_stage, (int)t->dtype, m);
        CK_LAUNCH(c, "weight conversion");
        /* The stage is reused by the next chunk; pageable copies are not ordered with it. */
        CK(c, cudaStreamSynchronize(c->stream));
    }
    if (c->sticky != cudaSuccess) {
        cudaFree(dst);
        return dq_fail(err, DQ_ERR_DEVICE, "%s: loading tensor '%s' of %s: %s", c->label, t->name,
                       t->file, c->sticky_msg);
    }
    c->weight_bytes += bytes;
    w->data = (const float *)dst;
    w->owned = dst;
    if (to_bf16)
        g_hash_table_add(c->bf16, dst);
    return TRUE;
}

static void cuda_weight_free(DqBackend *be, DqWeight *w) {
    CudaCtx *c = ctx_of(be);
    if (w->owned != NULL) {
        /* smolvlm builds some weights from alloc()ed buffers (gathered position embeddings). */
        if (!pool_put(c, w->owned)) {
            g_hash_table_remove(c->bf16, w->owned);
            CK(c, cudaStreamSynchronize(c->stream));
            cudaFree(w->owned);
        }
    }
    memset(w, 0, sizeof *w);
}

/* ---- matmul */

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void fill_rows_kernel(float *y, const float *bias, int n, int cols) {
    size_t total = (size_t)n * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = bias[i % cols];
}

/* Up to this many rows, products with a bf16 weight run the row-invariant kernel below. 63, not
 * 64: from 64 rows on products take the fixed cublasLt algorithm (row-invariant too, from any
 * row count on), so that SmolVLM-256M's connector, 64 rows a tile, runs as one product a vision
 * chunk; the kernel below reads all of x once per output column, which for a tile's [64 x 12288]
 * took 0.6 ms. A decode step of 64 rows becomes two launches (smolvlm splits it 32 + 32: a
 * 1-row launch costs a pass over the weight, ~10 us a product, ~20 ms a 64-page batch). */
#define DQ_CUDA_SKINNY_ROWS 63
#define SKINNY_R            8 /* rows a warp carries */
#define SKINNY_WARPS        8 /* output columns a block computes */

/* y [n, out] = x [n, in] . W^T (+ bias) for a few rows (decode): warp = one output column for
 * SKINNY_R rows, lanes stride over `in`, then a fixed butterfly reduction. Each row's sum is
 * formed by the same explicit FMAs in the same order whatever n or the row's slot, so a row's
 * result never depends on the other rows in the call (what matmul_row_invariant_max promises).
 * x stays float32 here (no rounding to bf16); the weight row is read once per SKINNY_R rows. */
__global__ void __launch_bounds__(SKINNY_WARPS * 32)
    skinny_bf16_kernel(float *y, const float *x, const __nv_bfloat16 *w, const float *bias, int n,
                       int out, int in, int paired, int accumulate) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int o = blockIdx.x * SKINNY_WARPS + warp, r0 = blockIdx.y * SKINNY_R;
    if (o >= out)
        return; /* warp-uniform */
    const __nv_bfloat16 *wr = w + (size_t)o * in;
    float acc[SKINNY_R];
#pragma unroll
    for (int r = 0; r < SKINNY_R; r++)
        acc[r] = 0.0f;
    if (paired) {
        const __nv_bfloat162 *w2 = (const __nv_bfloat162 *)wr; /* 4-byte aligned: in is even */
        for (int k2 = lane; k2 < in / 2; k2 += 32) {
            const float2 wv = __bfloat1622float2(w2[k2]);
#pragma unroll
            for (int r = 0; r < SKINNY_R; r++)
                if (r0 + r < n) {
                    const float2 xv = *(const float2 *)(x + (size_t)(r0 + r) * in + 2 * k2);
                    acc[r] = __fmaf_rn(wv.x, xv.x, acc[r]);
                    acc[r] = __fmaf_rn(wv.y, xv.y, acc[r]);
                }
        }
    } else {
        for (int k = lane; k < in; k += 32) {
            const float wv = __bfloat162float(wr[k]);
#pragma unroll
            for (int r = 0; r < SKINNY_R; r++)
                if (r0 + r < n)
                    acc[r] = __fmaf_rn(wv, x[(size_t)(r0 + r) * in + k], acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < SKINNY_R; r++) {
        float v = acc[r];
        for (int off = 16; off > 0; off >>= 1)
            v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, off));
        if (lane == 0 && r0 + r < n) {
            /* as the add kernel would: y + (x . w + bias) */
            float *yo = y + (size_t)(r0 + r) * out + o;
            const float val = bias != NULL ? __fadd_rn(v, bias[o]) : v;
            *yo = accumulate ? __fadd_rn(*yo, val) : val;
        }
    }
}

/* y = xbf . W^T (+ bias) through cublasLt, the bias added in the GEMM's epilogue: the
 * alternative (bias rows written first, then the GEMM reading them back as C with beta 1) moves
 * the output through memory twice more, which for the vision encoder's float32 activations is
 * a quarter of its traffic.
 *
 * Row-invariant mode (c->lt_fixed, the default with bf16 products): every product with a given
 * weight shape runs ONE algorithm, chosen once by the heuristic for DQ_CUDA_LT_REF_ROWS rows with
 * 16-byte alignment and no split-K reduction, whatever the call's row count. Without split-K a
 * GEMM kernel forms each output element from its row and column alone, in an order fixed by the
 * kernel, so a row's result no longer depends on how many rows share the call (the heuristic's
 * per-shape choice is what made it depend: another n, another kernel). smolvlm may then put all
 * tiles of a vision chunk, and all prompts of a batch, into one product
 * (matmul_row_invariant_min). test_backend_cuda's /backend_cuda/matmul_rows_merged holds this
 * to bit equality on the GPU it runs on.
 *
 * Otherwise the heuristic picks per shape and alignment, for products with a bias only.
 * Plans (descriptors and the algorithm) are kept per shape. FALSE (nothing queued) when
 * cublasLt has no algorithm for it. */
#define DQ_CUDA_LT_REF_ROWS 16384

typedef struct {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
    gboolean ok;
} LtPlan;

static void lt_plan_free(gpointer data) {
    LtPlan *p = (LtPlan *)data;
    if (p->desc != NULL)
        cublasLtMatmulDescDestroy(p->desc);
    if (p->a != NULL)
        cublasLtMatrixLayoutDestroy(p->a);
    if (p->b != NULL)
        cublasLtMatrixLayoutDestroy(p->b);
    if (p->d != NULL)
        cublasLtMatrixLayoutDestroy(p->d);
    g_free(p);
}

static gboolean aligned16(const void *p) {
    return ((uintptr_t)p % 16) == 0;
}

static unsigned ptr_align(const void *p) {
    uintptr_t u = (uintptr_t)p;
    unsigned a = 256;
    while (a > 1 && u % a != 0)
        a /= 2;
    return a;
}

/* Descriptors for D [m, n] = op(A) [m, k] . B [k, n] (column-major: A the row-major weight
 * [m, k] read as [k, m] and transposed, B the row-major x [n, k] read as [k, n]), with the bias
 * epilogue when has_bias, then GELU when gelu (cublasLt's is the tanh form, as
 * torch's _addmm_activation relies on). */
static gboolean lt_plan_describe(LtPlan *p, int m, int n, int k, gboolean has_bias, gboolean gelu,
                                 gboolean out_bf16) {
    const cudaDataType_t bias_type = CUDA_R_32F; /* our biases, whatever D is */
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = gelu
                                 ? (has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                             : has_bias ? CUBLASLT_EPILOGUE_BIAS
                                        : CUBLASLT_EPILOGUE_DEFAULT;
    return cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) ==
               CUBLAS_STATUS_SUCCESS &&
           cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ==
               CUBLAS_STATUS_SUCCESS &&
           cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ==
               CUBLAS_STATUS_SUCCESS &&
           cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                          sizeof epi) == CUBLAS_STATUS_SUCCESS &&
           (!out_bf16 || !has_bias ||
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                           sizeof bias_type) == CUBLAS_STATUS_SUCCESS) &&
           cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, k, m, k) == CUBLAS_STATUS_SUCCESS &&
           cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, k, n, k) == CUBLAS_STATUS_SUCCESS &&
           cublasLtMatrixLayoutCreate(&p->d, out_bf16 ? CUDA_R_16BF : CUDA_R_32F, m, n, m) ==
               CUBLAS_STATUS_SUCCESS;
}

/* The heuristic's first algorithm for plan p (align: the pointers' alignment in bytes; fixed:
 * no split-K reduction). */
static gboolean lt_heuristic(CudaCtx *c, LtPlan *p, unsigned align, gboolean fixed) {
    cublasLtMatmulPreference_t pref = NULL;
    size_t ws = DQ_CUDA_BLAS_WORKSPACE;
    uint32_t al = align, no_reduction = CUBLASLT_REDUCTION_SCHEME_NONE;
    int found = 0;
    cublasLtMatmulHeuristicResult_t res;
    gboolean ok =
        cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                             sizeof ws) == CUBLAS_STATUS_SUCCESS &&
        (!fixed || cublasLtMatmulPreferenceSetAttribute(
                       pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &no_reduction,
                       sizeof no_reduction) == CUBLAS_STATUS_SUCCESS) &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al,
                                             sizeof al) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al,
                                             sizeof al) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al,
                                             sizeof al) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al,
                                             sizeof al) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &res,
                                       &found) == CUBLAS_STATUS_SUCCESS &&
        found > 0;
    if (pref != NULL)
        cublasLtMatmulPreferenceDestroy(pref);
    if (ok)
        p->algo = res.algo;
    return ok;
}

static LtPlan *lt_plan_new(CudaCtx *c, int m, int n, int k, unsigned align, gboolean has_bias,
                           gboolean gelu, gboolean out_bf16) {
    LtPlan *p = g_new0(LtPlan, 1);
    if (!lt_plan_describe(p, m, n, k, has_bias, gelu, out_bf16))
        return p;
    if (!c->lt_fixed) {
        p->ok = lt_heuristic(c, p, align, FALSE);
        return p;
    }
    /* The weight shape's one algorithm, chosen at the reference row count, checked for n. */
    const gint64 key = (gint64)m | (gint64)k << 20 | (gint64)has_bias << 40 | (gint64)gelu << 41 |
                       (gint64)out_bf16 << 42;
    LtPlan *ref = (LtPlan *)g_hash_table_lookup(c->lt_fixed_algos, &key);
    if (ref == NULL) {
        ref = g_new0(LtPlan, 1);
        ref->ok = lt_plan_describe(ref, m, DQ_CUDA_LT_REF_ROWS, k, has_bias, gelu, out_bf16) &&
                  lt_heuristic(c, ref, 16, TRUE);
        /* Said once a shape: an opt-in bf16 output (DOCQA_CUDA_MLP_BF16) that cublasLt has no
         * algorithm for falls back to float32, and the fallback alone would show as "slower". */
        if (!ref->ok && out_bf16)
            g_message("%s: cublasLt has no algorithm for [%d x %d] with bf16 output%s%s: those "
                      "products write float32",
                      c->label, m, k, gelu ? ", GELU" : "", has_bias ? ", a float32 bias" : "");
        g_hash_table_insert(c->lt_fixed_algos, g_memdup2(&key, sizeof key), ref);
    }
    cublasLtMatmulHeuristicResult_t res;
    p->algo = ref->algo;
    p->ok = ref->ok && cublasLtMatmulAlgoCheck(c->lt, p->desc, p->a, p->b, p->d, p->d, &p->algo,
                                               &res) == CUBLAS_STATUS_SUCCESS;
    if (ref->ok && !p->ok)
        g_warning("%s: the fixed GEMM algorithm for [%d x %d] refuses %d rows: those rows take "
                  "the slower row-invariant kernel",
                  c->label, m, k, n);
    return p;
}

/* D = x . W^T (+ bias) (then GELU) into y, float32 or bf16 (out_bf16; not accumulating). */
static gboolean lt_matmul_to(CudaCtx *c, void *y, gboolean out_bf16, const __nv_bfloat16 *xbf,
                             const DqWeight *w, const float *bias, int n, gboolean gelu,
                             gboolean accumulate) {
    if (c->lt == NULL || (out_bf16 && accumulate))
        return FALSE;
    const int m = w->rows, k = w->cols;
    unsigned align = MIN(MIN(ptr_align(y), ptr_align(xbf)), ptr_align(w->data));
    if (bias != NULL)
        align = MIN(align, ptr_align(bias));
    if (align < 16 || m >= (1 << 20) || k >= (1 << 20) || n >= (1 << 18))
        return FALSE;
    if (c->lt_fixed)
        align = 16; /* one algorithm whatever the pointers' alignment */
    /* m, k: 20 bits each, n: 18, bf16 output: 1, accumulating: 1 (a refusal of beta 1 in place
     * then spares the plain products), GELU: 1, the bias: 1, the alignment class (16 .. 256
     * bytes: 0 .. 4): 2 */
    const guint64 ukey = (guint64)m | (guint64)k << 20 | (guint64)n << 40 |
                         (guint64)out_bf16 << 58 | (guint64)accumulate << 59 | (guint64)gelu << 60 |
                         (guint64)(bias != NULL) << 61 |
                         (guint64)MIN(__builtin_ctz(align) - 4, 3) << 62;
    const gint64 key = (gint64)ukey;
    LtPlan *p = (LtPlan *)g_hash_table_lookup(c->lt_plans, &key);
    if (p == NULL) {
        if (g_hash_table_size(c->lt_plans) >= DQ_CUDA_LT_PLANS_KEPT)
            g_hash_table_remove_all(c->lt_plans); /* a long job's many prompt lengths */
        p = lt_plan_new(c, m, n, k, align, bias != NULL, gelu, out_bf16);
        g_hash_table_insert(c->lt_plans, g_memdup2(&key, sizeof key), p);
    }
    if (!p->ok || (bias != NULL &&
                   cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                  sizeof bias) != CUBLAS_STATUS_SUCCESS))
        return FALSE;
    /* accumulate: y is C as well as D (in place, the same layout): D = x . W^T + y + bias */
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    cublasStatus_t s =
        cublasLtMatmul(c->lt, p->desc, &alpha, w->data, p->a, xbf, p->b, &beta, y, p->d, y, p->d,
                       &p->algo, c->blas_ws, DQ_CUDA_BLAS_WORKSPACE, c->stream);
    if (s != CUBLAS_STATUS_SUCCESS) {
        p->ok = FALSE; /* not again for this shape */
        return FALSE;
    }
    return TRUE;
}

static gboolean lt_matmul(CudaCtx *c, float *y, const __nv_bfloat16 *xbf, const DqWeight *w,
                          const float *bias, int n, gboolean gelu, gboolean accumulate) {
    return lt_matmul_to(c, y, FALSE, xbf, w, bias, n, gelu, accumulate);
}

/* The row-invariant kernel over any number of rows, a grid row per SKINNY_R of them. */
static void skinny_matmul(CudaCtx *c, float *y, const float *x, const DqWeight *w,
                          const DqWeight *bias, int n, gboolean accumulate) {
    /* Pairs of columns when rows of x are 8-byte aligned (even `in`, aligned base: always so
     * for smolvlm's pool buffers), which fixes the summation order for a given x. */
    int paired = (w->cols % 2) == 0 && ((uintptr_t)x % 8) == 0;
    for (int r0 = 0; r0 < n; r0 += 65535 * SKINNY_R) { /* the grid's y limit */
        int rows = MIN(n - r0, 65535 * SKINNY_R);
        dim3 grid((w->rows + SKINNY_WARPS - 1) / SKINNY_WARPS, (rows + SKINNY_R - 1) / SKINNY_R);
        skinny_bf16_kernel<<<grid, SKINNY_WARPS * 32, 0, c->stream>>>(
            y + (size_t)r0 * w->rows, x + (size_t)r0 * w->cols, (const __nv_bfloat16 *)w->data,
            bias != NULL ? bias->data : NULL, rows, w->rows, w->cols, paired, accumulate);
        CK_LAUNCH(c, "matmul (row-invariant kernel)");
    }
}

static void add_rows(CudaCtx *c, float *y, const float *x, size_t n);

/* y = x . W^T (+ bias), and GELU in the same cublasLt call when gelu and it can: TRUE when the
 * GELU was applied. With acc (n x w.rows floats of scratch): y += x . W^T (+ bias), in the product
 * where the path can (the row-invariant kernel; cublasLt with y as C), else into acc and an add
 * after (cublasGemmEx's path, whose bias goes in as C). */
/* x [nx] rounded to bf16 into the context's input buffer (valid until the next call), or NULL
 * (the error recorded) when there is no memory for it. */
static const __nv_bfloat16 *input_bf16(CudaCtx *c, const float *x, size_t nx) {
    if (nx > c->xbf_cap) {
        if (c->xbf != NULL)
            pool_put(c, c->xbf);
        c->xbf = (__nv_bfloat16 *)pool_get(c, nx * sizeof(__nv_bfloat16));
        c->xbf_cap = c->xbf != NULL ? size_class(nx * sizeof(__nv_bfloat16)) / 2 : 0;
        if (c->xbf == NULL) {
            record(c, cudaErrorMemoryAllocation, "matmul input buffer");
            return NULL;
        }
    }
    f32_to_bf16_kernel<<<grid_for(nx, 256), 256, 0, c->stream>>>(c->xbf, x, nx);
    CK_LAUNCH(c, "matmul input to bf16");
    return c->xbf;
}

static gboolean matmul_core(CudaCtx *c, float *y, const float *x, const __nv_bfloat16 *xb,
                            const DqWeight *w, const DqWeight *bias, int n, gboolean gelu,
                            float *acc);

static gboolean matmul_run(CudaCtx *c, float *y, const float *x, const DqWeight *w,
                           const DqWeight *bias, int n, gboolean gelu, float *acc) {
    if (n <= DQ_CUDA_SKINNY_ROWS && is_bf16(c, w)) {
        skinny_matmul(c, y, x, w, bias, n, acc != NULL);
        return FALSE;
    }
    const __nv_bfloat16 *xb = NULL;
    if (is_bf16(c, w) && (xb = input_bf16(c, x, (size_t)n * w->cols)) == NULL)
        return FALSE;
    return matmul_core(c, y, x, xb, w, bias, n, gelu, acc);
}

/* matmul_run past the row-invariant kernel, with x already in bf16 where w is bf16 (xb). */
static gboolean matmul_core(CudaCtx *c, float *y, const float *x, const __nv_bfloat16 *xb,
                            const DqWeight *w, const DqWeight *bias, int n, gboolean gelu,
                            float *acc) {
    g_assert(!(gelu && acc != NULL)); /* GELU of the sum is nobody's layer */
    const gboolean accumulate = acc != NULL;
    float alpha = 1.0f, beta = 0.0f;
    if (xb != NULL) {
        gelu = gelu && c->lt_gelu;
        const float *b = bias != NULL ? bias->data : NULL;
        if ((c->lt_fixed || (bias != NULL && c->lt_bias) || gelu || accumulate) &&
            lt_matmul(c, y, xb, w, b, n, gelu, accumulate))
            return gelu;
        if (accumulate && lt_matmul(c, acc, xb, w, b, n, FALSE, FALSE)) {
            add_rows(c, y, acc, (size_t)n * w->rows); /* cublasLt refused y as C */
            return FALSE;
        }
        if (gelu && lt_matmul(c, y, xb, w, b, n, FALSE, FALSE))
            return FALSE; /* no algorithm with the GELU epilogue: the GELU kernel follows */
        if (c->lt_fixed) {
            /* No fixed algorithm for this shape: rows must still not depend on n. */
            skinny_matmul(c, y, x, w, bias, n, accumulate);
            return FALSE;
        }
    }
    float *dst = y;
    if (accumulate) {
        dst = acc; /* the product alone, then y += it below */
    }
    if (bias != NULL) {
        /* torch's addmm: C starts as the bias. */
        fill_rows_kernel<<<grid_for((size_t)n * w->rows, 256), 256, 0, c->stream>>>(dst, bias->data,
                                                                                    n, w->rows);
        CK_LAUNCH(c, "bias");
        beta = 1.0f;
    }
    /* Row-major y [n, out] = x [n, in] . W^T is column-major y^T [out, n] = W [out, in] . x^T,
     * where the row-major W read column-major is W^T: op(A) = T. */
    cublasStatus_t s;
    if (xb != NULL) {
        s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->rows, n, w->cols, &alpha, w->data,
                         CUDA_R_16BF, w->cols, xb, CUDA_R_16BF, w->cols, &beta, dst, CUDA_R_32F,
                         w->rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    } else {
        s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->rows, n, w->cols, &alpha, w->data,
                         CUDA_R_32F, w->cols, x, CUDA_R_32F, w->cols, &beta, dst, CUDA_R_32F,
                         w->rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    record_blas(c, s, "cublasGemmEx");
    if (accumulate)
        add_rows(c, y, acc, (size_t)n * w->rows);
    return FALSE;
}

static void cuda_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w,
                        const DqWeight *bias, int n) {
    CudaCtx *c = ctx_of(be);
    if (n > 0 && c->sticky == cudaSuccess)
        matmul_run(c, y, x, w, bias, n, FALSE, NULL);
}

/* y += x . W^T (+ bias): the residual add in the product (matmul_run). */
static void cuda_matmul_add(DqBackend *be, float *y, const float *x, const DqWeight *w,
                            const DqWeight *bias, int n, float *scratch) {
    CudaCtx *c = ctx_of(be);
    if (n <= 0 || c->sticky != cudaSuccess)
        return;
    if (c->fused_add) {
        matmul_run(c, y, x, w, bias, n, FALSE, scratch);
    } else {
        matmul_run(c, scratch, x, w, bias, n, FALSE, NULL);
        add_rows(c, y, scratch, (size_t)n * w->rows);
    }
}

/* ---- norms */

/* Sum over the block (blockDim.x a multiple of 32, at most 1024). */
__device__ float block_sum(float v, float *shared32) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads(); /* shared32 may still be read from a previous call */
    if (lane == 0)
        shared32[warp] = v;
    __syncthreads();
    int n_warps = blockDim.x / 32;
    float t = lane < n_warps ? shared32[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1)
        t += __shfl_xor_sync(0xffffffffu, t, o);
    return t;
}

/* Max over the block, as block_sum. */
__device__ float block_max(float v, float *shared32) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0)
        shared32[warp] = v;
    __syncthreads();
    int n_warps = blockDim.x / 32;
    float t = lane < n_warps ? shared32[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1)
        t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
    return t;
}

__global__ void layernorm_kernel(float *y, const float *x, const float *w, const float *b, int dim,
                                 float eps) {
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        s += xr[i];
    float mean = block_sum(s, red) / (float)dim;
    float v = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float d = xr[i] - mean;
        v += d * d;
    }
    float var = block_sum(v, red) / (float)dim;
    float inv = rsqrtf(var + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
}

__global__ void rmsnorm_kernel(float *y, const float *x, const float *w, int dim, float eps) {
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        s += xr[i] * xr[i];
    float inv = rsqrtf(block_sum(s, red) / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        yr[i] = w[i] * (xr[i] * inv);
}

static int norm_threads(int dim) {
    return dim >= 1024 ? 256 : dim >= 256 ? 128 : 64;
}

/* The norms a warp a row, the row in registers (VPL float4s a lane): one read of x and no
 * block barriers. A block a row (the kernels above) kept the 256M vision encoder's LayerNorm
 * at 88 us for 32768 rows of 768 on an H200, about half of what streaming 200 MB takes.
 * Needs dim % 4 == 0 and 16-byte aligned rows and weights (norm_warp_fits). */
#define NORM_ROWS 8 /* rows (warps) a block */

template <int VPL, bool RMS>
__global__ void __launch_bounds__(NORM_ROWS * 32)
    norm_warp_kernel(float *y, const float *x, const float *w, const float *b, int n, int dim,
                     float eps) {
    const int row = blockIdx.x * NORM_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n)
        return; /* warp-uniform */
    const int d4 = dim / 4;
    const float4 *xr = (const float4 *)(x + (size_t)row * dim);
    float4 v[VPL];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < VPL; i++) {
        const int c = lane + 32 * i;
        v[i] = c < d4 ? xr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        s += RMS ? v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w
                 : v[i].x + v[i].y + v[i].z + v[i].w;
    }
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    float mean = 0.0f, inv;
    if (RMS) {
        inv = rsqrtf(s / (float)dim + eps);
    } else {
        mean = s / (float)dim;
        float q = 0.0f; /* the variance about the mean, as the block kernel: no cancellation */
#pragma unroll
        for (int i = 0; i < VPL; i++) {
            if (lane + 32 * i < d4) {
                const float a = v[i].x - mean, bb = v[i].y - mean, cc = v[i].z - mean,
                            dd = v[i].w - mean;
                q += a * a + bb * bb + cc * cc + dd * dd;
            }
        }
        for (int o = 16; o > 0; o >>= 1)
            q += __shfl_xor_sync(0xffffffffu, q, o);
        inv = rsqrtf(q / (float)dim + eps);
    }
    float4 *yr = (float4 *)(y + (size_t)row * dim);
#pragma unroll
    for (int i = 0; i < VPL; i++) {
        const int c = lane + 32 * i;
        if (c >= d4)
            continue;
        const float4 wv = ((const float4 *)w)[c];
        float4 o;
        if (RMS) {
            o = make_float4(wv.x * (v[i].x * inv), wv.y * (v[i].y * inv), wv.z * (v[i].z * inv),
                            wv.w * (v[i].w * inv));
        } else {
            const float4 bv = ((const float4 *)b)[c];
            o = make_float4(
                (v[i].x - mean) * inv * wv.x + bv.x, (v[i].y - mean) * inv * wv.y + bv.y,
                (v[i].z - mean) * inv * wv.z + bv.z, (v[i].w - mean) * inv * wv.w + bv.w);
        }
        yr[c] = o;
    }
}

typedef void (*NormWarpKernel)(float *, const float *, const float *, const float *, int, int,
                               float);

/* norm_warp_kernel for dim (<= 2048), or NULL when it does not fit. */
static NormWarpKernel norm_warp_pick(const CudaCtx *c, bool rms, int dim, const float *y,
                                     const float *x, const float *w, const float *b) {
    if (!c->norm_warp || dim % 4 != 0 || dim > 2048 || !aligned16(y) || !aligned16(x) ||
        !aligned16(w) || (b != NULL && !aligned16(b)))
        return NULL;
    const int vpl = (dim / 4 + 31) / 32;
    static const NormWarpKernel ln[] = {norm_warp_kernel<1, false>, norm_warp_kernel<2, false>,
                                        norm_warp_kernel<4, false>, norm_warp_kernel<8, false>,
                                        norm_warp_kernel<16, false>};
    static const NormWarpKernel rm[] = {norm_warp_kernel<1, true>, norm_warp_kernel<2, true>,
                                        norm_warp_kernel<4, true>, norm_warp_kernel<8, true>,
                                        norm_warp_kernel<16, true>};
    const int i = vpl <= 1 ? 0 : vpl <= 2 ? 1 : vpl <= 4 ? 2 : vpl <= 8 ? 3 : 4;
    return rms ? rm[i] : ln[i];
}

static void cuda_layernorm(DqBackend *be, float *y, const float *x, const DqWeight *w,
                           const DqWeight *b, int n, int dim, float eps) {
    CudaCtx *c = ctx_of(be);
    if (n <= 0 || c->sticky != cudaSuccess)
        return;
    NormWarpKernel k = norm_warp_pick(c, false, dim, y, x, w->data, b->data);
    if (k != NULL)
        k<<<(n + NORM_ROWS - 1) / NORM_ROWS, NORM_ROWS * 32, 0, c->stream>>>(y, x, w->data, b->data,
                                                                             n, dim, eps);
    else
        layernorm_kernel<<<n, norm_threads(dim), 0, c->stream>>>(y, x, w->data, b->data, dim, eps);
    CK_LAUNCH(c, "layernorm");
}

static void cuda_rmsnorm(DqBackend *be, float *y, const float *x, const DqWeight *w, int n, int dim,
                         float eps) {
    CudaCtx *c = ctx_of(be);
    if (n <= 0 || c->sticky != cudaSuccess)
        return;
    NormWarpKernel k = norm_warp_pick(c, true, dim, y, x, w->data, NULL);
    if (k != NULL)
        k<<<(n + NORM_ROWS - 1) / NORM_ROWS, NORM_ROWS * 32, 0, c->stream>>>(y, x, w->data, NULL, n,
                                                                             dim, eps);
    else
        rmsnorm_kernel<<<n, norm_threads(dim), 0, c->stream>>>(y, x, w->data, dim, eps);
    CK_LAUNCH(c, "rmsnorm");
}

/* ---- rope */

__global__ void rope_kernel(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                            int head_dim) {
    int half = head_dim / 2;
    size_t total = (size_t)n * half;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(t / half), i = (int)(t % half);
        /* As the CPU reference (and transformers): the angle in float32, cos/sin of it. */
        float angle = (float)pos[r] * inv_freq[i];
        float cs = (float)cos((double)angle), sn = (float)sin((double)angle);
        float *xr = x + (size_t)r * n_heads * head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = xr + (size_t)h * head_dim;
            float a = v[i], b = v[i + half];
            v[i] = a * cs - b * sn;
            v[i + half] = b * cs + a * sn;
        }
    }
}

static void cuda_rope(DqBackend *be, float *x, const int32_t *pos, int n, int n_heads, int head_dim,
                      double theta) {
    CudaCtx *c = ctx_of(be);
    if (n <= 0 || c->sticky != cudaSuccess)
        return;
    int half = head_dim / 2;
    if (half > 256) {
        record(c, cudaErrorInvalidValue, "rope: head_dim over 512");
        return;
    }
    /* The table the ops queued so far leave in inv_freq: while recording, a recorded copy's
     * (it runs only if the recording is replayed, so inv_theta waits for graph_end). */
    const gboolean pending = c->capturing && c->cap_inv_hd != 0;
    const double have_theta = pending ? c->cap_inv_theta : c->inv_theta;
    const int have_hd = pending ? c->cap_inv_hd : c->inv_hd;
    if (have_theta != theta || have_hd != head_dim) {
        /* The inverse frequencies with the host's powf, bit for bit what the CPU uses. */
        float host[256];
        for (int i = 0; i < half; i++)
            host[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)head_dim);
        const void *staged = stage_small(c, host, (size_t)half * sizeof(float));
        if (staged == NULL)
            return;
        CK(c, cudaMemcpyAsync(c->inv_freq, staged, (size_t)half * sizeof(float),
                              cudaMemcpyDeviceToDevice, c->stream));
        if (c->capturing) {
            c->cap_inv_theta = theta;
            c->cap_inv_hd = head_dim;
        } else {
            c->inv_theta = theta;
            c->inv_hd = head_dim;
        }
    }
    const int32_t *dpos = (const int32_t *)stage_small(c, pos, (size_t)n * sizeof(int32_t));
    if (dpos == NULL)
        return;
    rope_kernel<<<grid_for((size_t)n * half, 256), 256, 0, c->stream>>>(x, dpos, c->inv_freq, n,
                                                                        n_heads, head_dim);
    CK_LAUNCH(c, "rope");
}

/* ---- attention */

typedef struct {
    int n_q, n_kv, n_heads, n_kv_heads, head_dim;
    int q_stride, kv_stride, q_pos0, causal;
    size_t q_seq_stride, kv_seq_stride;
    float scale;
    int q_lo, q_hi; /* blocks of sequences whose n_q lies outside [q_lo, q_hi] do nothing */
    int kv_max;     /* the most keys of any sequence (the decode kernel's runs) */
    int part_runs, part_rows; /* the decode runs' states: runs and rows a (sequence, KV head) */
    int kv_f16;               /* the caches (segments) hold float16 */
} AttArgs;

#define ATT_BQ    32 /* query rows per block of the flash kernel */
#define ATT_BK    32 /* keys per shared-memory tile (one per lane) */
#define ATT_WARPS 8

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* One query row's online-softmax step over a tile of 32 keys in shared memory, a lane a key:
 * the score qr . kr where this lane's key is visible to the row, then the row's running max m
 * and sum l updated and its accumulator (NCH dims a lane) rescaled. false, with nothing changed,
 * when no key of the tile is visible to the row; else p is this lane's key's probability, for
 * O += P V. */
template <int NCH>
__device__ __forceinline__ bool softmax_step(const float *qr, const float *kr, int hd, bool visible,
                                             float &m, float &l, float (&acc)[NCH], float &p) {
    float sc = -INFINITY;
    if (visible) {
        float dot = 0.0f;
        for (int d = 0; d < hd; d++)
            dot += qr[d] * kr[d];
        sc = dot;
    }
    const float tmax = warp_max(sc);
    if (tmax == -INFINITY)
        return false; /* every key of this tile is in the row's future */
    const float mnew = fmaxf(m, tmax);
    const float corr = __expf(m - mnew);
    p = visible ? __expf(sc - mnew) : 0.0f;
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int ch = 0; ch < NCH; ch++)
        acc[ch] *= corr;
    m = mnew;
    return true;
}

/* What one block attends: sequence s of a uniform packed batch (segs NULL: attention()), or
 * segment s of attention_segments(), whose rows sit at row0 and whose keys are its cache. */
struct SeqView {
    const float *q, *k, *v;
    float *out;
    int n_q, n_kv, q_pos0;
};

__device__ __forceinline__ SeqView seq_view(const AttArgs &a, const DqAttnSegment *segs, int s,
                                            float *out, const float *q, const float *k,
                                            const float *v) {
    const size_t out_stride = (size_t)a.n_heads * a.head_dim;
    SeqView w;
    if (segs == NULL) {
        w.q = q + s * a.q_seq_stride;
        w.k = k + s * a.kv_seq_stride;
        w.v = v + s * a.kv_seq_stride;
        w.out = out + (size_t)s * a.n_q * out_stride;
        w.n_q = a.n_q;
        w.n_kv = a.n_kv;
        w.q_pos0 = a.q_pos0;
    } else {
        const DqAttnSegment g = segs[s];
        w.q = q + (size_t)g.row0 * a.q_stride;
        w.k = g.k_cache;
        w.v = g.v_cache;
        w.out = out + (size_t)g.row0 * out_stride;
        w.n_q = g.n_q;
        w.n_kv = g.n_past + g.n_q;
        w.q_pos0 = g.n_past;
    }
    return w;
}

/* A cache value as float: KV is float, or __half where the caches hold float16
 * (DqAttention.kv_f16); w.k and w.v then point at halves. */
__device__ __forceinline__ float kv_f(float x) {
    return x;
}
__device__ __forceinline__ float kv_f(__half x) {
    return __half2float(x);
}
/* Four values from p (16-byte aligned floats, 8-byte aligned halves). */
__device__ __forceinline__ float4 kv_f4(const float *p) {
    return *(const float4 *)p;
}
__device__ __forceinline__ float4 kv_f4(const __half *p) {
    const uint2 u = *(const uint2 *)p;
    const float2 a = __half22float2(*(const __half2 *)&u.x),
                 b = __half22float2(*(const __half2 *)&u.y);
    return make_float4(a.x, a.y, b.x, b.y);
}

/* Flash-style attention: block (q tile, head, sequence); 8 warps, each owning 4 query rows.
 * Per K/V tile of 32 keys in shared memory, lane j scores key j for a row, the warp updates the
 * row's running max / sum, and lane d accumulates output dims d, d + 32, ... (NCH of them). */
template <int NCH, typename KV>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attn_flash_kernel(float *out, const float *q, const float *k, const float *v, AttArgs a,
                      const DqAttnSegment *segs) {
    extern __shared__ float smem[];
    const int hd = a.head_dim, kp = hd + 1; /* K rows padded: lane j reads row j conflict-free */
    float *sq = smem;                       /* [ATT_BQ, hd] scaled queries */
    float *sk = sq + ATT_BQ * hd;           /* [ATT_BK, hd + 1] */
    float *sv = sk + ATT_BK * kp;           /* [ATT_BK, hd] */
    const int s = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * ATT_BQ;
    const SeqView w = seq_view(a, segs, s, out, q, k, v);
    if (i0 >= w.n_q || w.n_q < a.q_lo || w.n_q > a.q_hi)
        return; /* block-uniform: a shorter segment than the longest, or another kernel's */
    const int g = h / (a.n_heads / a.n_kv_heads);
    const float *qb = w.q + (size_t)h * hd;
    const KV *kb = (const KV *)(const void *)w.k + (size_t)g * hd;
    const KV *vb = (const KV *)(const void *)w.v + (size_t)g * hd;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int RPW = ATT_BQ / ATT_WARPS;

    for (int idx = threadIdx.x; idx < ATT_BQ * hd; idx += blockDim.x) {
        int r = idx / hd, d = idx % hd, i = i0 + r;
        sq[idx] = i < w.n_q ? qb[(size_t)i * a.q_stride + d] * a.scale : 0.0f;
    }
    const int i_last = min(i0 + ATT_BQ, w.n_q) - 1;
    const int kv_end = a.causal ? min(w.n_kv, w.q_pos0 + i_last + 1) : w.n_kv;

    float m[RPW], l[RPW], acc[RPW][NCH];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int ch = 0; ch < NCH; ch++)
            acc[r][ch] = 0.0f;
    }
    for (int j0 = 0; j0 < kv_end; j0 += ATT_BK) {
        __syncthreads(); /* the previous tile is no longer read */
        for (int idx = threadIdx.x; idx < ATT_BK * hd; idx += blockDim.x) {
            int jj = idx / hd, d = idx % hd, j = j0 + jj;
            gboolean in = j < kv_end;
            sk[jj * kp + d] = in ? kv_f(kb[(size_t)j * a.kv_stride + d]) : 0.0f;
            sv[jj * hd + d] = in ? kv_f(vb[(size_t)j * a.kv_stride + d]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int rr = warp * RPW + r, i = i0 + rr;
            if (i >= w.n_q)
                continue; /* warp-uniform */
            const int visible = a.causal ? min(w.n_kv, w.q_pos0 + i + 1) : w.n_kv;
            float p;
            if (!softmax_step<NCH>(sq + rr * hd, sk + lane * kp, hd, j0 + lane < visible, m[r],
                                   l[r], acc[r], p))
                continue;
            for (int jj = 0; jj < ATT_BK; jj++) {
                const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
                for (int ch = 0; ch < NCH; ch++) {
                    const int d = lane + 32 * ch;
                    if (d < hd)
                        acc[r][ch] += pj * sv[jj * hd + d];
                }
            }
        }
    }
    const size_t out_stride = (size_t)a.n_heads * hd;
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        const int i = i0 + warp * RPW + r;
        if (i >= w.n_q)
            continue;
        float *o = w.out + (size_t)i * out_stride + (size_t)h * hd;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
        for (int ch = 0; ch < NCH; ch++) {
            const int d = lane + 32 * ch;
            if (d < hd)
                o[d] = acc[r][ch] * inv;
        }
    }
}

/* Decode attention: block (query row, head, sequence) for a few query rows over a long KV
 * cache. Each warp takes every 8th tile of 32 keys with its own running max / sum; the warps'
 * partial results are merged at the end. */
template <int NCH, typename KV>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attn_decode_kernel(float *out, const float *q, const float *k, const float *v, AttArgs a,
                       const DqAttnSegment *segs) {
    __shared__ float sq[NCH * 32];
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float sacc[ATT_WARPS][NCH * 32];
    const int hd = a.head_dim;
    const int i = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    const SeqView w = seq_view(a, segs, s, out, q, k, v);
    if (i >= w.n_q || w.n_q < a.q_lo || w.n_q > a.q_hi)
        return; /* block-uniform */
    const int g = h / (a.n_heads / a.n_kv_heads);
    const float *qr = w.q + (size_t)i * a.q_stride + (size_t)h * hd;
    const KV *kb = (const KV *)(const void *)w.k + (size_t)g * hd;
    const KV *vb = (const KV *)(const void *)w.v + (size_t)g * hd;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        sq[d] = qr[d] * a.scale;
    __syncthreads();
    const int visible = a.causal ? min(w.n_kv, w.q_pos0 + i + 1) : w.n_kv;
    float m = -INFINITY, l = 0.0f, acc[NCH];
#pragma unroll
    for (int ch = 0; ch < NCH; ch++)
        acc[ch] = 0.0f;
    for (int j0 = warp * 32; j0 < visible; j0 += ATT_WARPS * 32) {
        const int j = j0 + lane;
        float sc = -INFINITY;
        if (j < visible) {
            const KV *kr = kb + (size_t)j * a.kv_stride;
            float dot = 0.0f;
            for (int d = 0; d < hd; d++)
                dot += sq[d] * kv_f(kr[d]);
            sc = dot;
        }
        const float mnew = fmaxf(m, warp_max(sc)); /* finite: key j0 is visible */
        const float corr = __expf(m - mnew);
        const float p = j < visible ? __expf(sc - mnew) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int ch = 0; ch < NCH; ch++)
            acc[ch] *= corr;
        const int n_here = min(32, visible - j0);
        for (int jj = 0; jj < n_here; jj++) {
            const float pj = __shfl_sync(0xffffffffu, p, jj);
            const KV *vr = vb + (size_t)(j0 + jj) * a.kv_stride;
#pragma unroll
            for (int ch = 0; ch < NCH; ch++) {
                const int d = lane + 32 * ch;
                if (d < hd)
                    acc[ch] += pj * kv_f(vr[d]);
            }
        }
        m = mnew;
    }
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int ch = 0; ch < NCH; ch++)
        sacc[warp][lane + 32 * ch] = acc[ch];
    __syncthreads();
    float mt = -INFINITY;
    for (int wi = 0; wi < ATT_WARPS; wi++)
        mt = fmaxf(mt, sm[wi]);
    float lt = 0.0f;
    for (int wi = 0; wi < ATT_WARPS; wi++)
        lt += sm[wi] == -INFINITY ? 0.0f : sl[wi] * __expf(sm[wi] - mt);
    float *o = w.out + (size_t)i * ((size_t)a.n_heads * hd) + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float t = 0.0f;
        for (int wi = 0; wi < ATT_WARPS; wi++)
            if (sm[wi] != -INFINITY)
                t += sacc[wi][d] * __expf(sm[wi] - mt);
        o[d] = lt > 0.0f ? t / lt : 0.0f;
    }
}

/* Decode attention by KV group: block (KV head g, sequence s) for a segment's few query rows
 * (n_q <= ATT_DECODE_ROWS) of every head that shares g, so that each cached key and value is
 * read from memory once a step rather than once a query head (SmolVLM-256M: 3 query heads a KV
 * head; attn_decode_kernel reads them 3 times, with a lane a key row). DG_WARPS warps take every
 * DG_WARPS-th tile of 32 keys: the tile's K rows are copied to the warp's shared memory with
 * coalesced loads, lane j scores key j for every row, and lane d accumulates dims d, d + 32 of
 * every row from V rows read straight from memory (coalesced). The warps' partial softmax
 * states are merged at the end.
 * A sequence's keys are split into runs of DG_SPLIT, a block (grid z) each: with a block per KV
 * head and sequence alone, a 64-page step of the 256M model was 192 blocks of 4 warps, too few
 * loads in flight to stream the caches (~0.5 TB/s). The runs' merged states go to `part`, and
 * attn_decode_merge_kernel merges them in order. Where a sequence has keys for one run only, its
 * block writes the result itself. The runs depend on the sequence's length alone, so a row's
 * result depends on its query and the keys only, not on its batch-mates. */
#define DG_WARPS 4
#define DG_RMAX  16                   /* rows a block: query heads a KV head x query rows */
#define DG_SPLIT DQ_CUDA_DECODE_SPLIT /* keys a block: DG_WARPS tiles of 32, twice */

/* The keys a decode block attends over (every key of the rows in the past). */
__device__ __forceinline__ int decode_kv_end(const AttArgs &a, const SeqView &w) {
    return a.causal ? min(w.n_kv, w.q_pos0 + w.n_q) : w.n_kv;
}

/* Row r's state of run z of (sequence s, KV head g): [head_dim] sums, the max, the total. */
__device__ __forceinline__ float *decode_part(const float *part, const AttArgs &a, int s, int g,
                                              int z, int r) {
    return (float *)part + ((((size_t)s * a.n_kv_heads + g) * a.part_runs + z) * a.part_rows + r) *
                               (a.head_dim + 2);
}

template <int NCH, typename KV>
__global__ void __launch_bounds__(DG_WARPS * 32)
    attn_decode_group_kernel(float *out, const float *q, const float *k, const float *v, AttArgs a,
                             const DqAttnSegment *segs, float *part) {
    extern __shared__ float smem[];
    const int hd = a.head_dim, kp = hd + 1, G = a.n_heads / a.n_kv_heads;
    const int g = blockIdx.x, s = blockIdx.y, z = blockIdx.z;
    const SeqView w = seq_view(a, segs, s, out, q, k, v);
    if (w.n_q < a.q_lo || w.n_q > a.q_hi)
        return; /* block-uniform: another kernel's segment */
    const int kv_end = decode_kv_end(a, w), runs = dq_decode_runs(kv_end);
    if (z >= runs)
        return; /* block-uniform: a shorter sequence than the longest */
    const int j_lo = z * DG_SPLIT, j_hi = min(kv_end, j_lo + DG_SPLIT);
    const int R = G * w.n_q; /* row r: head g * G + r / n_q, query r % n_q */
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *sq = smem;          /* [R, hd] scaled queries */
    float *work = sq + R * hd; /* the warps' K tiles [32, hd + 1], then their partial states */
    for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
        const int r = idx / hd, d = idx % hd;
        sq[idx] =
            w.q[(size_t)(r % w.n_q) * a.q_stride + (size_t)(g * G + r / w.n_q) * hd + d] * a.scale;
    }
    __syncthreads();
    const KV *kb = (const KV *)(const void *)w.k + (size_t)g * hd;
    const KV *vb = (const KV *)(const void *)w.v + (size_t)g * hd;
    float *sk = work + (size_t)warp * 32 * kp;
    float m[DG_RMAX], l[DG_RMAX], acc[DG_RMAX][NCH];
#pragma unroll
    for (int r = 0; r < DG_RMAX; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int ch = 0; ch < NCH; ch++)
            acc[r][ch] = 0.0f;
    }
    for (int j0 = j_lo + warp * 32; j0 < j_hi; j0 += DG_WARPS * 32) {
        const int nk = min(32, j_hi - j0), j = j0 + lane;
        /* unrolled: several rows' loads in flight, where a block has only 4 warps to hide
         * the memory's latency with */
#pragma unroll 8
        for (int jj = 0; jj < nk; jj++) {
            const KV *kr = kb + (size_t)(j0 + jj) * a.kv_stride;
#pragma unroll
            for (int ch = 0; ch < NCH; ch++)
                if (lane + 32 * ch < hd)
                    sk[jj * kp + lane + 32 * ch] = kv_f(kr[lane + 32 * ch]);
        }
        __syncwarp();
        float p[DG_RMAX];
#pragma unroll
        for (int r = 0; r < DG_RMAX; r++) {
            p[r] = 0.0f;
            if (r >= R)
                continue; /* uniform */
            const int visible =
                min(j_hi, a.causal ? min(w.n_kv, w.q_pos0 + r % w.n_q + 1) : w.n_kv);
            /* j < visible means lane < nk: its K row is in the tile; no visible key: p[r]
             * stays 0 */
            softmax_step<NCH>(sq + r * hd, sk + lane * kp, hd, j < visible, m[r], l[r], acc[r],
                              p[r]);
        }
#pragma unroll 4
        for (int jj = 0; jj < nk; jj++) {
            const KV *vr = vb + (size_t)(j0 + jj) * a.kv_stride;
            float vv[NCH];
#pragma unroll
            for (int ch = 0; ch < NCH; ch++)
                vv[ch] = lane + 32 * ch < hd ? kv_f(vr[lane + 32 * ch]) : 0.0f;
#pragma unroll
            for (int r = 0; r < DG_RMAX; r++) {
                if (r >= R)
                    break; /* uniform */
                const float pj = __shfl_sync(0xffffffffu, p[r], jj);
#pragma unroll
                for (int ch = 0; ch < NCH; ch++)
                    acc[r][ch] += pj * vv[ch];
            }
        }
        __syncwarp(); /* the next tile rewrites sk */
    }
    __syncthreads(); /* no warp reads its K tile any more: work holds the partial states */
    float *pm = work, *pl = work + DG_WARPS * R, *pa = work + 2 * DG_WARPS * R;
#pragma unroll
    for (int r = 0; r < DG_RMAX; r++) {
        if (r >= R)
            break;
        if (lane == 0) {
            pm[warp * R + r] = m[r];
            pl[warp * R + r] = l[r];
        }
#pragma unroll
        for (int ch = 0; ch < NCH; ch++)
            if (lane + 32 * ch < hd)
                pa[(size_t)(warp * R + r) * hd + lane + 32 * ch] = acc[r][ch];
    }
    __syncthreads();
    const size_t out_stride = (size_t)a.n_heads * hd;
    float *state = runs > 1 ? decode_part(part, a, s, g, z, 0) : NULL;
    for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
        const int r = idx / hd, d = idx % hd;
        float mt, lt, t;
        dq_merge_states(pm + r, pl + r, R, pa + (size_t)r * hd + d, (size_t)R * hd, DG_WARPS, &mt,
                        &lt, &t);
        if (state != NULL) {
            float *pr = state + (size_t)r * (hd + 2); /* the run's state: [hd] sums, max, total */
            pr[d] = t;
            if (d == 0) {
                pr[hd] = mt;
                pr[hd + 1] = lt;
            }
        } else {
            w.out[(size_t)(r % w.n_q) * out_stride + (size_t)(g * G + r / w.n_q) * hd + d] =
                lt > 0.0f ? t / lt : 0.0f;
        }
    }
}

/* Merges the runs' states of attn_decode_group_kernel, in run order: block (KV head, sequence),
 * as that kernel's grid without z. Sequences of one run were written by the kernel itself. */
__global__ void attn_decode_merge_kernel(float *out, const float *q, AttArgs a,
                                         const DqAttnSegment *segs, const float *part) {
    const int hd = a.head_dim, G = a.n_heads / a.n_kv_heads;
    const int g = blockIdx.x, s = blockIdx.y;
    const SeqView w = seq_view(a, segs, s, out, q, NULL, NULL);
    if (w.n_q < a.q_lo || w.n_q > a.q_hi)
        return;
    const int runs = dq_decode_runs(decode_kv_end(a, w));
    if (runs <= 1)
        return;
    const int R = G * w.n_q;
    const size_t out_stride = (size_t)a.n_heads * hd;
    for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
        const int r = idx / hd, d = idx % hd;
        const float *pr = decode_part(part, a, s, g, 0, r); /* run z at pr + z * stride */
        const size_t stride = (size_t)a.part_rows * (hd + 2);
        float mt, lt, t;
        dq_merge_states(pr + hd, pr + hd + 1, stride, pr + d, stride, runs, &mt, &lt, &t);
        w.out[(size_t)(r % w.n_q) * out_stride + (size_t)(g * G + r / w.n_q) * hd + d] =
            lt > 0.0f ? t / lt : 0.0f;
    }
}

/* Shared memory of attn_decode_group_kernel for up to max_q rows a segment. */
static size_t decode_group_smem(const AttArgs &a, int max_q) {
    const size_t hd = a.head_dim, R = (size_t)(a.n_heads / a.n_kv_heads) * max_q;
    return (R * hd + MAX(DG_WARPS * 32 * (hd + 1), DG_WARPS * R * (2 + hd))) * sizeof(float);
}

/* Flash attention on tensor cores (bf16 products, float32 softmax and accumulation): block =
 * 64 query rows of one head and sequence, 4 warps of 16 rows. Per tile of 64 keys: S = Q K^T
 * with WMMA into shared memory, the online softmax by lane pairs (a row each), P rounded to
 * bf16, P V with WMMA, and each lane rescales and accumulates its half of its row of O in
 * registers (WMMA fragments have no documented row layout, so the rescale goes through shared
 * memory). Each row's result depends on its own query and the keys only, not on the rows beside
 * it. HDP: head_dim rounded up to 16 (padding dims are zero in Q, K and V). */
#define TC_Q     64
#define TC_K     64
#define TC_WARPS 4

template <int HDP> struct TcLayout {
    static constexpr int LDH = HDP + 8;                       /* bf16 Q/K/V rows */
    static constexpr int LDS = (HDP > TC_K ? HDP : TC_K) + 4; /* float S / PV rows */
    static constexpr int LDP = TC_K + 8;                      /* bf16 P rows */
    static constexpr size_t Q = (size_t)TC_Q * LDH * 2, KV = (size_t)TC_K * LDH * 2;
    static constexpr size_t S = (size_t)TC_WARPS * 16 * LDS * 4,
                            P = (size_t)TC_WARPS * 16 * LDP * 2;
    static constexpr size_t BYTES = Q + 2 * KV + S + P;
};

template <int HDP, typename KV>
__global__ void __launch_bounds__(TC_WARPS * 32)
    attn_tc_kernel(float *out, const float *q, const float *k, const float *v, AttArgs a,
                   const DqAttnSegment *segs) {
    using namespace nvcuda;
    typedef TcLayout<HDP> L;
    extern __shared__ __align__(128) unsigned char tc_smem[];
    __nv_bfloat16 *sq = (__nv_bfloat16 *)tc_smem;
    __nv_bfloat16 *sk = (__nv_bfloat16 *)(tc_smem + L::Q);
    __nv_bfloat16 *sv = (__nv_bfloat16 *)(tc_smem + L::Q + L::KV);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *ss = (float *)(tc_smem + L::Q + 2 * L::KV) + (size_t)warp * 16 * L::LDS;
    __nv_bfloat16 *sp =
        (__nv_bfloat16 *)(tc_smem + L::Q + 2 * L::KV + L::S) + (size_t)warp * 16 * L::LDP;

    const int s = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * TC_Q;
    const SeqView w = seq_view(a, segs, s, out, q, k, v);
    if (i0 >= w.n_q || w.n_q < a.q_lo || w.n_q > a.q_hi)
        return; /* block-uniform */
    const int hd = a.head_dim, g = h / (a.n_heads / a.n_kv_heads);
    const float *qb = w.q + (size_t)h * hd;
    const KV *kb = (const KV *)(const void *)w.k + (size_t)g * hd;
    const KV *vb = (const KV *)(const void *)w.v + (size_t)g * hd;

    for (int idx = threadIdx.x; idx < TC_Q * HDP; idx += blockDim.x) {
        const int r = idx / HDP, d = idx % HDP, i = i0 + r;
        const float x = i < w.n_q && d < hd ? qb[(size_t)i * a.q_stride + d] * a.scale : 0.0f;
        sq[r * L::LDH + d] = __float2bfloat16_rn(x);
    }
    const int i_last = min(i0 + TC_Q, w.n_q) - 1;
    const int kv_end = a.causal ? min(w.n_kv, w.q_pos0 + i_last + 1) : w.n_kv;

    const int row = lane >> 1, half = lane & 1, c0 = half * (TC_K / 2);
    const int i = i0 + warp * 16 + row;
    const int visible = i >= w.n_q ? 0 : a.causal ? min(w.n_kv, w.q_pos0 + i + 1) : w.n_kv;
    float m = -INFINITY, l = 0.0f, o[HDP / 2];
#pragma unroll
    for (int c = 0; c < HDP / 2; c++)
        o[c] = 0.0f;

    for (int j0 = 0; j0 < kv_end; j0 += TC_K) {
        __syncthreads(); /* the previous tile's K and V are no longer read (and Q is written) */
        for (int idx = threadIdx.x; idx < TC_K * HDP; idx += blockDim.x) {
            const int jj = idx / HDP, d = idx % HDP, j = j0 + jj;
            const bool in = j < kv_end && d < hd;
            sk[jj * L::LDH + d] =
                __float2bfloat16_rn(in ? kv_f(kb[(size_t)j * a.kv_stride + d]) : 0.0f);
            sv[jj * L::LDH + d] =
                __float2bfloat16_rn(in ? kv_f(vb[(size_t)j * a.kv_stride + d]) : 0.0f);
        }
        __syncthreads();

        /* S [16, TC_K] for this warp's rows */
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[TC_K / 16];
#pragma unroll
        for (int n = 0; n < TC_K / 16; n++)
            wmma::fill_fragment(acc[n], 0.0f);
#pragma unroll
        for (int kk = 0; kk < HDP / 16; kk++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
            wmma::load_matrix_sync(fa, sq + (size_t)warp * 16 * L::LDH + kk * 16, L::LDH);
#pragma unroll
            for (int n = 0; n < TC_K / 16; n++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
                wmma::load_matrix_sync(fb, sk + (size_t)n * 16 * L::LDH + kk * 16, L::LDH);
                wmma::mma_sync(acc[n], fa, fb, acc[n]);
            }
        }
#pragma unroll
        for (int n = 0; n < TC_K / 16; n++)
            wmma::store_matrix_sync(ss + n * 16, acc[n], L::LDS, wmma::mem_row_major);
        __syncwarp();

        /* online softmax: lanes 2r and 2r + 1 share row r, half the keys each */
        const float *sr = ss + row * L::LDS + c0;
        float mx = -INFINITY;
        for (int c = 0; c < TC_K / 2; c++)
            if (j0 + c0 + c < visible)
                mx = fmaxf(mx, sr[c]);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float mnew = fmaxf(m, mx);
        const float corr = mnew == -INFINITY ? 1.0f : __expf(m - mnew);
        float sum = 0.0f;
        __nv_bfloat16 *pr = sp + row * L::LDP + c0;
        for (int c = 0; c < TC_K / 2; c++) {
            const float p = j0 + c0 + c < visible ? __expf(sr[c] - mnew) : 0.0f;
            pr[c] = __float2bfloat16_rn(p);
            sum += p;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * corr + sum;
        m = mnew;
        __syncwarp();

        /* P V [16, HDP] into ss, then into each lane's o */
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> pv[HDP / 16];
#pragma unroll
        for (int n = 0; n < HDP / 16; n++)
            wmma::fill_fragment(pv[n], 0.0f);
#pragma unroll
        for (int ks = 0; ks < TC_K / 16; ks++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
            wmma::load_matrix_sync(fa, sp + ks * 16, L::LDP);
#pragma unroll
            for (int n = 0; n < HDP / 16; n++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
                wmma::load_matrix_sync(fb, sv + (size_t)ks * 16 * L::LDH + n * 16, L::LDH);
                wmma::mma_sync(pv[n], fa, fb, pv[n]);
            }
        }
#pragma unroll
        for (int n = 0; n < HDP / 16; n++)
            wmma::store_matrix_sync(ss + n * 16, pv[n], L::LDS, wmma::mem_row_major);
        __syncwarp();
        const float *pvr = ss + row * L::LDS + half * (HDP / 2);
#pragma unroll
        for (int c = 0; c < HDP / 2; c++)
            o[c] = o[c] * corr + pvr[c];
        __syncwarp(); /* ss is written again by the next tile */
    }
    if (i < w.n_q) {
        float *orow = w.out + (size_t)i * ((size_t)a.n_heads * hd) + (size_t)h * hd;
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
        for (int c = 0; c < HDP / 2; c++) {
            const int d = half * (HDP / 2) + c;
            if (d < hd)
                orow[d] = o[c] * inv;
        }
    }
}

template <int HDP, typename KV>
static void launch_tc(CudaCtx *c, float *out, const float *q, const float *k, const float *v,
                      int max_q, int n_seq, const AttArgs &a, const DqAttnSegment *segs) {
    static bool opted_in[64]; /* per device: the attribute is a property of the function */
    const size_t bytes = TcLayout<HDP>::BYTES;
    if (bytes > 48 * 1024 && !opted_in[c->device % 64]) {
        CK(c, cudaFuncSetAttribute(attn_tc_kernel<HDP, KV>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        opted_in[c->device % 64] = true;
    }
    dim3 grid((max_q + TC_Q - 1) / TC_Q, a.n_heads, n_seq);
    attn_tc_kernel<HDP, KV><<<grid, TC_WARPS * 32, bytes, c->stream>>>(out, q, k, v, a, segs);
    CK_LAUNCH(c, "attention (tensor cores)");
}

typedef void (*TcLaunch)(CudaCtx *c, float *out, const float *q, const float *k, const float *v,
                         int max_q, int n_seq, const AttArgs &a, const DqAttnSegment *segs);

/* The same attention as attn_tc_kernel, kept in registers (FlashAttention-2's scheme): each
 * warp holds its 16 query rows as mma.sync A fragments, its scores S = Q K^T as accumulators,
 * does the online softmax on them where they are, and feeds the probabilities back as the A
 * fragments of O += P V (an m16n8k16 accumulator's layout is the A layout of the next product),
 * so that neither S nor P ever goes through shared memory. K and V tiles are read from the float32
 * activations or caches with 16-byte loads and rounded to bf16 into shared memory, V transposed so
 * that its B fragments are 32-bit loads too. Same roundings as attn_tc_kernel: Q * scale, K, V
 * and P in bf16, scores, softmax, sums and O in float32.
 * A block is WARPS warps of 16 query rows, which share each K/V tile.
 * Needs head_dim % 4 == 0 and 16-byte aligned rows (mma_fits); attn_tc_kernel takes the rest, and
 * DOCQA_CUDA_ATTN_MMA=0 all of it. */
#define MMA_BN 64

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (low half): the lower column */
    return *(uint32_t *)&v;
}

__device__ __forceinline__ void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0,
                                               uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* A warp's 16 query rows in attn_mma_kernel and attn_mma16_kernel: rows ra = r0 + g and
 * rb = ra + 8 of this thread, their Q as A fragments, O accumulators and softmax states. */
template <int HDP> struct MmaRows {
    uint32_t qf[HDP / 16][4];
    float o[HDP / 8][4];
    float m_a, m_b, l_a, l_b; /* l: this thread's part */
    int ra, rb, vis_a, vis_b;
};

/* Loads the rows' scaled queries (rounded to bf16) and sets their visible key counts. */
template <int HDP>
__device__ __forceinline__ void mma_rows_init(MmaRows<HDP> &R, const AttArgs &a, const SeqView &w,
                                              const float *qb, int r0) {
    const int g = (threadIdx.x % 32) >> 2, t4 = threadIdx.x & 3, hd = a.head_dim;
    R.ra = r0 + g;
    R.rb = R.ra + 8;
#pragma unroll
    for (int kk = 0; kk < HDP / 16; kk++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int d = kk * 16 + half * 8 + 2 * t4; /* hd % 4 == 0: d < hd means d + 1 < hd */
            float2 xa = make_float2(0.0f, 0.0f), xb = xa;
            if (d < hd && R.ra < w.n_q)
                xa = *(const float2 *)(qb + (size_t)R.ra * a.q_stride + d);
            if (d < hd && R.rb < w.n_q)
                xb = *(const float2 *)(qb + (size_t)R.rb * a.q_stride + d);
            R.qf[kk][2 * half] = pack_bf16(xa.x * a.scale, xa.y * a.scale);
            R.qf[kk][2 * half + 1] = pack_bf16(xb.x * a.scale, xb.y * a.scale);
        }
    R.vis_a = R.ra >= w.n_q ? 0 : a.causal ? min(w.n_kv, w.q_pos0 + R.ra + 1) : w.n_kv;
    R.vis_b = R.rb >= w.n_q ? 0 : a.causal ? min(w.n_kv, w.q_pos0 + R.rb + 1) : w.n_kv;
#pragma unroll
    for (int n = 0; n < HDP / 8; n++)
        R.o[n][0] = R.o[n][1] = R.o[n][2] = R.o[n][3] = 0.0f;
    R.m_a = R.m_b = -INFINITY;
    R.l_a = R.l_b = 0.0f;
}

/* One tile of MMA_BN keys from j0: K rows in sk [MMA_BN][HDP + 8] and V^T in svt
 * [HDP][MMA_BN + 8] (bf16, shared memory). */
template <int HDP>
__device__ __forceinline__ void mma_rows_tile(MmaRows<HDP> &R, const __nv_bfloat16 *sk,
                                              const __nv_bfloat16 *svt, int j0) {
    constexpr int LDK = HDP + 8, LDV = MMA_BN + 8;
    const int g = (threadIdx.x % 32) >> 2, t4 = threadIdx.x & 3;
    /* S [16, MMA_BN]: n-tile n holds keys j0 + 8n + 2 t4 (+1) of rows ra (0, 1), rb (2, 3) */
    float sc[MMA_BN / 8][4];
#pragma unroll
    for (int n = 0; n < MMA_BN / 8; n++) {
        sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
        const __nv_bfloat16 *kr = sk + (n * 8 + g) * LDK + 2 * t4;
#pragma unroll
        for (int kk = 0; kk < HDP / 16; kk++)
            mma_bf16_16816(sc[n], R.qf[kk], *(const uint32_t *)(kr + kk * 16),
                           *(const uint32_t *)(kr + kk * 16 + 8));
    }
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int n = 0; n < MMA_BN / 8; n++) {
        const int j = j0 + n * 8 + 2 * t4;
        if (j >= R.vis_a)
            sc[n][0] = -INFINITY;
        if (j + 1 >= R.vis_a)
            sc[n][1] = -INFINITY;
        if (j >= R.vis_b)
            sc[n][2] = -INFINITY;
        if (j + 1 >= R.vis_b)
            sc[n][3] = -INFINITY;
        mx_a = fmaxf(mx_a, fmaxf(sc[n][0], sc[n][1]));
        mx_b = fmaxf(mx_b, fmaxf(sc[n][2], sc[n][3]));
    }
    /* the quad (lanes 4g .. 4g + 3) holds the row's keys */
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
    const float mn_a = fmaxf(R.m_a, mx_a), mn_b = fmaxf(R.m_b, mx_b);
    const float corr_a = mn_a == -INFINITY ? 1.0f : __expf(R.m_a - mn_a);
    const float corr_b = mn_b == -INFINITY ? 1.0f : __expf(R.m_b - mn_b);
    float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
    for (int n = 0; n < MMA_BN / 8; n++) {
        sc[n][0] = mn_a == -INFINITY ? 0.0f : __expf(sc[n][0] - mn_a);
        sc[n][1] = mn_a == -INFINITY ? 0.0f : __expf(sc[n][1] - mn_a);
        sc[n][2] = mn_b == -INFINITY ? 0.0f : __expf(sc[n][2] - mn_b);
        sc[n][3] = mn_b == -INFINITY ? 0.0f : __expf(sc[n][3] - mn_b);
        sum_a += sc[n][0] + sc[n][1];
        sum_b += sc[n][2] + sc[n][3];
    }
    R.l_a = R.l_a * corr_a + sum_a;
    R.l_b = R.l_b * corr_b + sum_b;
    R.m_a = mn_a;
    R.m_b = mn_b;
#pragma unroll
    for (int n = 0; n < HDP / 8; n++) {
        R.o[n][0] *= corr_a;
        R.o[n][1] *= corr_a;
        R.o[n][2] *= corr_b;
        R.o[n][3] *= corr_b;
    }
    /* O += P V: keys 16 kc .. 16 kc + 15 are the S n-tiles 2 kc and 2 kc + 1 */
#pragma unroll
    for (int kc = 0; kc < MMA_BN / 16; kc++) {
        const uint32_t pf[4] = {pack_bf16(sc[2 * kc][0], sc[2 * kc][1]),
                                pack_bf16(sc[2 * kc][2], sc[2 * kc][3]),
                                pack_bf16(sc[2 * kc + 1][0], sc[2 * kc + 1][1]),
                                pack_bf16(sc[2 * kc + 1][2], sc[2 * kc + 1][3])};
#pragma unroll
        for (int n = 0; n < HDP / 8; n++) {
            const __nv_bfloat16 *vr = svt + (n * 8 + g) * LDV + kc * 16 + 2 * t4;
            mma_bf16_16816(R.o[n], pf, *(const uint32_t *)vr, *(const uint32_t *)(vr + 8));
        }
    }
}

/* O / l into the rows of head h. */
template <int HDP>
__device__ __forceinline__ void mma_rows_store(MmaRows<HDP> &R, const AttArgs &a, const SeqView &w,
                                               int h) {
    const int t4 = threadIdx.x & 3, hd = a.head_dim;
    R.l_a += __shfl_xor_sync(0xffffffffu, R.l_a, 1);
    R.l_a += __shfl_xor_sync(0xffffffffu, R.l_a, 2);
    R.l_b += __shfl_xor_sync(0xffffffffu, R.l_b, 1);
    R.l_b += __shfl_xor_sync(0xffffffffu, R.l_b, 2);
    const size_t out_stride = (size_t)a.n_heads * hd;
    const float inv_a = R.l_a > 0.0f ? 1.0f / R.l_a : 0.0f;
    const float inv_b = R.l_b > 0.0f ? 1.0f / R.l_b : 0.0f;
#pragma unroll
    for (int n = 0; n < HDP / 8; n++) {
        const int d = n * 8 + 2 * t4;
        if (d >= hd)
            continue;
        if (R.ra < w.n_q)
            *(float2 *)(w.out + (size_t)R.ra * out_stride + (size_t)h * hd + d) =
                make_float2(R.o[n][0] * inv_a, R.o[n][1] * inv_a);
        if (R.rb < w.n_q)
            *(float2 *)(w.out + (size_t)R.rb * out_stride + (size_t)h * hd + d) =
                make_float2(R.o[n][2] * inv_b, R.o[n][3] * inv_b);
    }
}

/* The keys a block of query rows i0 .. i0 + rows - 1 sees, and those of a warp's 16 from r0. */
__device__ __forceinline__ int mma_kv_end(const AttArgs &a, const SeqView &w, int i0, int rows) {
    return a.causal ? min(w.n_kv, w.q_pos0 + min(i0 + rows, w.n_q)) : w.n_kv;
}

__device__ __forceinline__ int mma_warp_end(const AttArgs &a, const SeqView &w, int r0) {
    return r0 >= w.n_q ? 0 : mma_kv_end(a, w, r0, 16);
}

template <int HDP, int WARPS, typename KV>
__global__ void __launch_bounds__(WARPS * 32)
    attn_mma_kernel(float *out, const float *q, const float *k, const float *v, AttArgs a,
                    const DqAttnSegment *segs) {
    constexpr int LDK = HDP + 8;    /* bf16 K rows: [MMA_BN][LDK] (the 8: no bank conflicts) */
    constexpr int LDV = MMA_BN + 8; /* bf16 V^T rows: [HDP][LDV] */
    __shared__ __align__(16) __nv_bfloat16 sk[MMA_BN * LDK];
    __shared__ __align__(16) __nv_bfloat16 svt[HDP * LDV];
    const int warp = threadIdx.x / 32;
    const int s = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * (WARPS * 16);
    const SeqView w = seq_view(a, segs, s, out, q, k, v);
    if (i0 >= w.n_q || w.n_q < a.q_lo || w.n_q > a.q_hi)
        return; /* block-uniform */
    const int hd = a.head_dim, kvh = h / (a.n_heads / a.n_kv_heads);
    const KV *kb = (const KV *)(const void *)w.k + (size_t)kvh * hd;
    const KV *vb = (const KV *)(const void *)w.v + (size_t)kvh * hd;
    const int r0 = i0 + warp * 16;
    MmaRows<HDP> R;
    mma_rows_init<HDP>(R, a, w, w.q + (size_t)h * hd, r0);
    const int kv_end = mma_kv_end(a, w, i0, WARPS * 16), warp_end = mma_warp_end(a, w, r0);

    for (int j0 = 0; j0 < kv_end; j0 += MMA_BN) {
        __syncthreads(); /* the previous tile is no longer read */
        for (int idx = threadIdx.x; idx < MMA_BN * (HDP / 4); idx += blockDim.x) {
            const int jj = idx / (HDP / 4), d = (idx % (HDP / 4)) * 4, j = j0 + jj;
            float4 kx = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vx = kx;
            if (j < kv_end && d < hd) {
                kx = kv_f4(kb + (size_t)j * a.kv_stride + d);
                vx = kv_f4(vb + (size_t)j * a.kv_stride + d);
            }
            *(uint2 *)&sk[jj * LDK + d] = make_uint2(pack_bf16(kx.x, kx.y), pack_bf16(kx.z, kx.w));
            svt[(d + 0) * LDV + jj] = __float2bfloat16_rn(vx.x);
            svt[(d + 1) * LDV + jj] = __float2bfloat16_rn(vx.y);
            svt[(d + 2) * LDV + jj] = __float2bfloat16_rn(vx.z);
            svt[(d + 3) * LDV + jj] = __float2bfloat16_rn(vx.w);
        }
        __syncthreads();
        if (j0 < warp_end) /* warp-uniform: else every key of the tile is past this warp's rows */
            mma_rows_tile<HDP>(R, sk, svt, j0);
    }
    mma_rows_store<HDP>(R, a, w, h);
}

/* K and V of a packed batch (attention() without segments) rounded to bf16 once, in the
 * layouts attn_mma16_kernel copies tiles from as they are: K [seq][KV head][n_kv_pad][HDP] and
 * V^T [seq][KV head][HDP][n_kv_pad], zero past head_dim and n_kv (n_kv_pad: n_kv rounded up to
 * MMA_BN). The same roundings attn_mma_kernel does per tile. Block: MMA_BN keys of a KV head
 * and sequence; V goes through shared memory to be written transposed in 16-byte rows. */
template <int HDP>
__global__ void __launch_bounds__(256)
    kv_stage_bf16_kernel(__nv_bfloat16 *kt, __nv_bfloat16 *vt, const float *k, const float *v,
                         AttArgs a, int n_kv_pad) {
    constexpr int LDV = MMA_BN + 8;
    __shared__ __align__(16) __nv_bfloat16 tv[HDP * LDV];
    const int j0 = blockIdx.x * MMA_BN, kvh = blockIdx.y, s = blockIdx.z, hd = a.head_dim;
    const size_t head = (size_t)s * a.n_kv_heads + kvh;
    const float *kb = k + s * a.kv_seq_stride + (size_t)kvh * hd;
    const float *vb = v + s * a.kv_seq_stride + (size_t)kvh * hd;
    for (int idx = threadIdx.x; idx < MMA_BN * (HDP / 4); idx += blockDim.x) {
        const int jj = idx / (HDP / 4), d = (idx % (HDP / 4)) * 4, j = j0 + jj;
        float4 kx = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vx = kx;
        if (j < a.n_kv && d < hd) {
            kx = *(const float4 *)(kb + (size_t)j * a.kv_stride + d);
            vx = *(const float4 *)(vb + (size_t)j * a.kv_stride + d);
        }
        *(uint2 *)&kt[(head * n_kv_pad + j) * HDP + d] =
            make_uint2(pack_bf16(kx.x, kx.y), pack_bf16(kx.z, kx.w));
        tv[(d + 0) * LDV + jj] = __float2bfloat16_rn(vx.x);
        tv[(d + 1) * LDV + jj] = __float2bfloat16_rn(vx.y);
        tv[(d + 2) * LDV + jj] = __float2bfloat16_rn(vx.z);
        tv[(d + 3) * LDV + jj] = __float2bfloat16_rn(vx.w);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < HDP * (MMA_BN / 8); idx += blockDim.x) {
        const int d = idx / (MMA_BN / 8), c = (idx % (MMA_BN / 8)) * 8;
        *(uint4 *)&vt[(head * HDP + d) * n_kv_pad + j0 + c] = *(const uint4 *)&tv[d * LDV + c];
    }
}

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem));
}

/* attn_mma_kernel over K and V staged in bf16 by kv_stage_bf16_kernel: each tile is copied into
 * shared memory with cp.async as it is (no conversion, no transposing stores), and the next
 * tile's copy is in flight while the warps work on this one (two buffers). The same roundings
 * and the same order of operations: results bit for bit those of attn_mma_kernel. */
template <int HDP, int WARPS>
__global__ void __launch_bounds__(WARPS * 32)
    attn_mma16_kernel(float *out, const float *q, const __nv_bfloat16 *kt, const __nv_bfloat16 *vt,
                      AttArgs a, int n_kv_pad) {
    constexpr int LDK = HDP + 8, LDV = MMA_BN + 8;
    __shared__ __align__(16) __nv_bfloat16 sk[2][MMA_BN * LDK];
    __shared__ __align__(16) __nv_bfloat16 svt[2][HDP * LDV];
    const int warp = threadIdx.x / 32;
    const int s = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * (WARPS * 16);
    const SeqView w = seq_view(a, NULL, s, out, q, NULL, NULL);
    if (i0 >= w.n_q)
        return; /* block-uniform */
    const int kvh = h / (a.n_heads / a.n_kv_heads);
    const size_t head = (size_t)s * a.n_kv_heads + kvh;
    const __nv_bfloat16 *kh = kt + head * n_kv_pad * HDP, *vh = vt + head * HDP * n_kv_pad;
    const int r0 = i0 + warp * 16;
    MmaRows<HDP> R;
    mma_rows_init<HDP>(R, a, w, w.q + (size_t)h * a.head_dim, r0);
    const int kv_end = mma_kv_end(a, w, i0, WARPS * 16), warp_end = mma_warp_end(a, w, r0);
    const int tiles = (kv_end + MMA_BN - 1) / MMA_BN;

    /* Tile t into buffer t % 2: K rows of HDP bf16 and V^T rows of MMA_BN, in 16-byte pieces. */
    auto copy_tile = [&](int t) {
        const int j0 = t * MMA_BN, b = t & 1;
        for (int idx = threadIdx.x; idx < MMA_BN * (HDP / 8); idx += blockDim.x) {
            const int jj = idx / (HDP / 8), c = (idx % (HDP / 8)) * 8;
            cp_async16(&sk[b][jj * LDK + c], kh + (size_t)(j0 + jj) * HDP + c);
        }
        for (int idx = threadIdx.x; idx < HDP * (MMA_BN / 8); idx += blockDim.x) {
            const int d = idx / (MMA_BN / 8), c = (idx % (MMA_BN / 8)) * 8;
            cp_async16(&svt[b][d * LDV + c], vh + (size_t)d * n_kv_pad + j0 + c);
        }
        asm volatile("cp.async.commit_group;\n" ::);
    };
    if (tiles > 0)
        copy_tile(0);
    for (int t = 0; t < tiles; t++) {
        if (t + 1 < tiles) {
            copy_tile(t + 1); /* its buffer was last read in tile t - 1, before the barrier */
            asm volatile("cp.async.wait_group 1;\n" ::);
        } else {
            asm volatile("cp.async.wait_group 0;\n" ::);
        }
        __syncthreads(); /* tile t has landed for every thread */
        if (t * MMA_BN < warp_end)
            mma_rows_tile<HDP>(R, sk[t & 1], svt[t & 1], t * MMA_BN);
        __syncthreads(); /* tile t's buffer is free for tile t + 2 */
    }
    mma_rows_store<HDP>(R, a, w, h);
}

template <int HDP, typename KV>
static void launch_mma(CudaCtx *c, float *out, const float *q, const float *k, const float *v,
                       int max_q, int n_seq, const AttArgs &a, const DqAttnSegment *segs) {
    /* 128 query rows a block (8 warps) by default: each K/V tile, read from float32 and
     * rounded, then serves twice the rows of 64 (DOCQA_CUDA_ATTN_ROWS=64) */
    if (c->attn_rows == 128) {
        dim3 grid((max_q + 127) / 128, a.n_heads, n_seq);
        attn_mma_kernel<HDP, 8, KV><<<grid, 8 * 32, 0, c->stream>>>(out, q, k, v, a, segs);
    } else {
        dim3 grid((max_q + 63) / 64, a.n_heads, n_seq);
        attn_mma_kernel<HDP, 4, KV><<<grid, 4 * 32, 0, c->stream>>>(out, q, k, v, a, segs);
    }
    CK_LAUNCH(c, "attention (mma)");
}

/* attn_mma16_kernel after staging K and V in bf16 (attention() without segments). FALSE when
 * there is no memory for the staged copies: attn_mma_kernel then reads the float32 ones. */
template <int HDP>
static gboolean launch_mma16(CudaCtx *c, float *out, const float *q, const float *k, const float *v,
                             int max_q, int n_seq, const AttArgs &a) {
    const int n_kv_pad = (a.n_kv + MMA_BN - 1) / MMA_BN * MMA_BN;
    const size_t per = (size_t)n_seq * a.n_kv_heads * n_kv_pad * HDP;
    __nv_bfloat16 *kt = (__nv_bfloat16 *)pool_get(c, 2 * per * sizeof(__nv_bfloat16));
    if (kt == NULL)
        return FALSE;
    __nv_bfloat16 *vt = kt + per;
    kv_stage_bf16_kernel<HDP><<<dim3(n_kv_pad / MMA_BN, a.n_kv_heads, n_seq), 256, 0, c->stream>>>(
        kt, vt, k, v, a, n_kv_pad);
    CK_LAUNCH(c, "attention: K and V to bf16");
    if (c->attn_rows == 128) {
        dim3 grid((max_q + 127) / 128, a.n_heads, n_seq);
        attn_mma16_kernel<HDP, 8><<<grid, 8 * 32, 0, c->stream>>>(out, q, kt, vt, a, n_kv_pad);
    } else {
        dim3 grid((max_q + 63) / 64, a.n_heads, n_seq);
        attn_mma16_kernel<HDP, 4><<<grid, 4 * 32, 0, c->stream>>>(out, q, kt, vt, a, n_kv_pad);
    }
    CK_LAUNCH(c, "attention (mma, staged bf16)");
    pool_put(c, kt); /* the stream orders its next user after the kernel */
    return TRUE;
}

typedef gboolean (*Mma16Launch)(CudaCtx *c, float *out, const float *q, const float *k,
                                const float *v, int max_q, int n_seq, const AttArgs &a);

/* By head_dim rounded up to 16, in 16s; NULL: none (two tiles of larger heads overflow the
 * 48 KB of static shared memory). */
static const Mma16Launch mma16_launch[9] = {
    NULL, NULL, launch_mma16<32>, launch_mma16<48>, launch_mma16<64>, launch_mma16<80>, NULL,
    NULL, NULL};

/* By head_dim rounded up to 16, in 16s; NULL: none for that size. */
static const TcLaunch mma_launch[2][9] = {
    {NULL, NULL, launch_mma<32, float>, launch_mma<48, float>, launch_mma<64, float>,
     launch_mma<80, float>, launch_mma<96, float>, NULL, launch_mma<128, float>},
    {NULL, NULL, launch_mma<32, __half>, launch_mma<48, __half>, launch_mma<64, __half>,
     launch_mma<80, __half>, launch_mma<96, __half>, NULL, launch_mma<128, __half>}};

/* Whether attn_mma_kernel can take this call: float4 rows (head_dim, strides and the heads'
 * offsets in fours of floats, 16-byte aligned bases; `caches_aligned`: every segment's caches,
 * checked by the caller on the host). */
static gboolean mma_fits(const CudaCtx *c, const AttArgs &a, const float *out, const float *q,
                         const float *k, const float *v, gboolean caches_aligned) {
    const int chunks = (a.head_dim + 15) / 16;
    return c->attn_mma && chunks <= 8 && mma_launch[0][chunks] != NULL && a.head_dim % 4 == 0 &&
           a.q_stride % 4 == 0 && a.kv_stride % 4 == 0 && a.q_seq_stride % 4 == 0 &&
           a.kv_seq_stride % 4 == 0 && aligned16(out) && aligned16(q) &&
           (k == NULL || aligned16(k)) && (v == NULL || aligned16(v)) && caches_aligned;
}

/* By head_dim rounded up to 16, in 16s; NULL: no tensor-core kernel for that size. */
static const TcLaunch tc_launch[2][9] = {
    {NULL, launch_tc<16, float>, launch_tc<32, float>, launch_tc<48, float>, launch_tc<64, float>,
     launch_tc<80, float>, launch_tc<96, float>, NULL, launch_tc<128, float>},
    {NULL, launch_tc<16, __half>, launch_tc<32, __half>, launch_tc<48, __half>,
     launch_tc<64, __half>, launch_tc<80, __half>, launch_tc<96, __half>, NULL,
     launch_tc<128, __half>}};

static gboolean tc_head_ok(int head_dim) {
    const int chunks = (head_dim + 15) / 16;
    return chunks >= 1 && chunks <= 8 && tc_launch[0][chunks] != NULL;
}

static void dispatch_tc(CudaCtx *c, float *out, const float *q, const float *k, const float *v,
                        int max_q, int n_seq, const AttArgs &a, const DqAttnSegment *segs,
                        gboolean caches_aligned) {
    const int chunks = (a.head_dim + 15) / 16;
    if (mma_fits(c, a, out, q, k, v, caches_aligned)) {
        if (segs == NULL && c->attn_staged && mma16_launch[chunks] != NULL &&
            mma16_launch[chunks](c, out, q, k, v, max_q, n_seq, a))
            return;
        mma_launch[a.kv_f16 ? 1 : 0][chunks](c, out, q, k, v, max_q, n_seq, a, segs);
    } else
        tc_launch[a.kv_f16 ? 1 : 0][chunks](c, out, q, k, v, max_q, n_seq, a, segs);
}

static size_t flash_smem(int hd) {
    return ((size_t)ATT_BQ * hd + (size_t)ATT_BK * (hd + 1) + (size_t)ATT_BK * hd) * sizeof(float);
}

/* Query rows up to which the decode kernel is used: it parallelises over keys, the flash
 * kernel over query rows. */
#define ATT_DECODE_ROWS 4

/* Softmax of each row of s [rows, cols] (float32) into p (bf16), for the tensor-core path. */
__global__ void softmax_rows_bf16_kernel(__nv_bfloat16 *p, const float *s, int cols) {
    __shared__ float red[32];
    const float *row = s + (size_t)blockIdx.x * cols;
    __nv_bfloat16 *out = p + (size_t)blockIdx.x * cols;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        mx = fmaxf(mx, row[i]);
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        sum += expf(row[i] - mx);
    const float inv = 1.0f / block_sum(sum, red);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        out[i] = __float2bfloat16_rn(expf(row[i] - mx) * inv);
}

/* The vision encoder's attention (bidirectional, every tile the same length, no GQA) on tensor
 * cores: per head, S = scale Q K^T for all tiles in one strided-batched bf16 GEMM (float32
 * scores), a row softmax to bf16, O = P V in a second one. The scores of one head for the
 * chunk's tiles (<= 32 x 1024 x 1024 floats) are the only intermediate; the SIMT flash kernel
 * would spend ~5x longer in the exponentials and dot products of 1024-patch tiles. With
 * DOCQA_CUDA_F32=1 the flash kernel is used instead (float32 end to end). */
static gboolean vision_attention_gemm(CudaCtx *c, float *out, const float *q, const float *k,
                                      const float *v, const DqAttention *da) {
    const int T = da->n_seq, P = da->n_q, H = da->n_heads, hd = da->head_dim, D = da->q_stride;
    const size_t n_in = (size_t)T * P * D, n_s = (size_t)T * P * P;
    __nv_bfloat16 *qkv = (__nv_bfloat16 *)pool_get(c, 3 * n_in * sizeof(__nv_bfloat16));
    float *sc = (float *)pool_get(c, n_s * sizeof(float));
    __nv_bfloat16 *pb = (__nv_bfloat16 *)pool_get(c, n_s * sizeof(__nv_bfloat16));
    gboolean ok = qkv != NULL && sc != NULL && pb != NULL;
    if (ok) {
        __nv_bfloat16 *qb = qkv, *kb = qkv + n_in, *vb = qkv + 2 * n_in;
        f32_to_bf16_kernel<<<grid_for(n_in, 256), 256, 0, c->stream>>>(qb, q, n_in);
        f32_to_bf16_kernel<<<grid_for(n_in, 256), 256, 0, c->stream>>>(kb, k, n_in);
        f32_to_bf16_kernel<<<grid_for(n_in, 256), 256, 0, c->stream>>>(vb, v, n_in);
        CK_LAUNCH(c, "attention inputs to bf16");
        const float alpha = da->scale, one = 1.0f, zero = 0.0f;
        for (int h = 0; h < H && c->sticky == cudaSuccess; h++) {
            /* Column-major: S^T [P_kv, P_q] = K_h . Q_h^T, i.e. row-major S [P_q, P_kv]. */
            record_blas(c,
                        cublasGemmStridedBatchedEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, P, P, hd,
                                                   &alpha, kb + (size_t)h * hd, CUDA_R_16BF, D,
                                                   (long long)P * D, qb + (size_t)h * hd,
                                                   CUDA_R_16BF, D, (long long)P * D, &zero, sc,
                                                   CUDA_R_32F, P, (long long)P * P, T,
                                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                        "attention scores GEMM");
            softmax_rows_bf16_kernel<<<T * P, 256, 0, c->stream>>>(pb, sc, P);
            CK_LAUNCH(c, "attention softmax");
            /* Column-major: O_h^T [hd, P_q] = V_h^T . P^T, i.e. row-major O_h [P_q, hd]. */
            record_blas(c,
                        cublasGemmStridedBatchedEx(
                            c->blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, P, P, &one, vb + (size_t)h * hd,
                            CUDA_R_16BF, D, (long long)P * D, pb, CUDA_R_16BF, P, (long long)P * P,
                            &zero, out + (size_t)h * hd, CUDA_R_32F, H * hd, (long long)P * H * hd,
                            T, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                        "attention output GEMM");
        }
    }
    if (qkv != NULL)
        pool_put(c, qkv);
    if (sc != NULL)
        pool_put(c, sc);
    if (pb != NULL)
        pool_put(c, pb);
    return ok;
}

/* Bidirectional attention over equal-length packed sequences without GQA of at least this
 * many rows goes through vision_attention_gemm. */
#define ATT_GEMM_MIN_ROWS 256

template <int NCH, typename KV>
static void launch_attention(CudaCtx *c, float *out, const float *q, const float *k, const float *v,
                             int max_q, int n_seq, const AttArgs &a, const DqAttnSegment *segs) {
    const int max_q_all = max_q;
    /* Decode rows: a segment goes to the group kernel when its rows of every head of a group
     * fit a block, and to the per-head kernel else; decided by the segment's own row count
     * (q_lo, q_hi), so that its result does not depend on its batch-mates' */
    const int group_hi = c->decode_group && NCH <= 2
                             ? MIN(a.q_hi, DG_RMAX / (a.n_heads / a.n_kv_heads))
                             : 0; /* the most rows a segment the group kernel takes */
    if (max_q <= ATT_DECODE_ROWS && group_hi >= MAX(a.q_lo, 1)) {
        AttArgs b = a;
        b.q_hi = group_hi;
        max_q = MIN(max_q, group_hi);
        b.part_runs = dq_decode_runs(a.kv_max);
        b.part_rows = (a.n_heads / a.n_kv_heads) * max_q;
        float *part = NULL;
        if (b.part_runs > 1) {
            part = (float *)pool_get(c, (size_t)n_seq * a.n_kv_heads * b.part_runs * b.part_rows *
                                            (a.head_dim + 2) * sizeof(float));
            if (part == NULL) {
                record(c, cudaErrorMemoryAllocation, "decode attention's run states");
                return;
            }
        }
        dim3 grid(a.n_kv_heads, n_seq, b.part_runs);
        attn_decode_group_kernel<NCH, KV>
            <<<grid, DG_WARPS * 32, decode_group_smem(a, max_q), c->stream>>>(out, q, k, v, b, segs,
                                                                              part);
        if (part != NULL) {
            CK_LAUNCH(c, "attention (decode runs)");
            attn_decode_merge_kernel<<<dim3(a.n_kv_heads, n_seq), 128, 0, c->stream>>>(out, q, b,
                                                                                       segs, part);
            pool_put(c, part); /* the stream orders its next user after the merge */
        }
        if (max_q_all > group_hi) { /* segments of more rows: the per-head kernel */
            CK_LAUNCH(c, "attention (decode by KV group)");
            AttArgs r = a;
            r.q_lo = MAX(a.q_lo, group_hi + 1);
            dim3 grid(max_q_all, a.n_heads, n_seq);
            attn_decode_kernel<NCH, KV>
                <<<grid, ATT_WARPS * 32, 0, c->stream>>>(out, q, k, v, r, segs);
        }
    } else if (max_q <= ATT_DECODE_ROWS) {
        dim3 grid(max_q, a.n_heads, n_seq);
        attn_decode_kernel<NCH, KV><<<grid, ATT_WARPS * 32, 0, c->stream>>>(out, q, k, v, a, segs);
    } else {
        dim3 grid((max_q + ATT_BQ - 1) / ATT_BQ, a.n_heads, n_seq);
        attn_flash_kernel<NCH, KV>
            <<<grid, ATT_WARPS * 32, flash_smem(a.head_dim), c->stream>>>(out, q, k, v, a, segs);
    }
    CK_LAUNCH(c, "attention");
}

/* launch_attention for the head size. */
static void dispatch_attention(CudaCtx *c, float *out, const float *q, const float *k,
                               const float *v, int max_q, int n_seq, const AttArgs &a,
                               const DqAttnSegment *segs) {
    typedef void (*Launch)(CudaCtx *, float *, const float *, const float *, const float *, int,
                           int, const AttArgs &, const DqAttnSegment *);
    static const Launch by_dims[2][4] = {{launch_attention<1, float>, launch_attention<2, float>,
                                          launch_attention<3, float>, launch_attention<4, float>},
                                         {launch_attention<1, __half>, launch_attention<2, __half>,
                                          launch_attention<3, __half>,
                                          launch_attention<4, __half>}};
    if (a.head_dim <= 0 || a.head_dim > 128) {
        record(c, cudaErrorInvalidValue, "attention: head_dim over 128");
        return;
    }
    by_dims[a.kv_f16 ? 1 : 0][(a.head_dim + 31) / 32 - 1](c, out, q, k, v, max_q, n_seq, a, segs);
}

static gboolean head_layout_ok(CudaCtx *c, const DqAttention *da, int n_seq) {
    if (da->n_kv_heads <= 0 || da->n_heads % da->n_kv_heads != 0 || n_seq > 65535 ||
        da->n_heads > 65535) {
        record(c, cudaErrorInvalidValue, "attention: unsupported head layout");
        return FALSE;
    }
    return TRUE;
}

/* Whether a sequence of n_q query rows goes to the tensor-core kernel (decided per sequence,
 * never per call, so that a sequence's result does not depend on what it is batched with). */
static gboolean tc_takes(const CudaCtx *c, int n_q, int head_dim) {
    return c->tc_attn && n_q >= DQ_CUDA_TC_MIN_ROWS && tc_head_ok(head_dim);
}

static void cuda_attention(DqBackend *be, float *out, const float *q, const float *k,
                           const float *v, const DqAttention *da) {
    CudaCtx *c = ctx_of(be);
    if (da->n_seq <= 0 || da->n_q <= 0 || c->sticky != cudaSuccess)
        return;
    if (!head_layout_ok(c, da, da->n_seq))
        return;
    AttArgs a = {da->n_q,
                 da->n_kv,
                 da->n_heads,
                 da->n_kv_heads,
                 da->head_dim,
                 da->q_stride,
                 da->kv_stride,
                 da->q_pos0,
                 da->causal,
                 da->q_seq_stride,
                 da->kv_seq_stride,
                 da->scale,
                 0,
                 INT_MAX,
                 da->n_kv,
                 0,
                 0,
                 0 /* float32: attention() has no caches */};
    if (tc_takes(c, da->n_q, da->head_dim)) {
        dispatch_tc(c, out, q, k, v, da->n_q, da->n_seq, a, NULL, TRUE);
        return;
    }
    if (!c->f32_weights && !da->causal && da->n_q == da->n_kv && da->n_q >= ATT_GEMM_MIN_ROWS &&
        da->n_heads == da->n_kv_heads && da->q_stride == da->kv_stride &&
        da->q_stride >= da->n_heads * da->head_dim &&
        da->q_seq_stride == (size_t)da->n_q * da->q_stride &&
        da->kv_seq_stride == (size_t)da->n_kv * da->kv_stride &&
        vision_attention_gemm(c, out, q, k, v, da))
        return; /* else (no memory for the scores): the flash kernel below */
    dispatch_attention(c, out, q, k, v, da->n_q, da->n_seq, a, NULL);
}

/* Each segment's new K / V rows into its caches (float32, or float16 rounded to nearest even):
 * block row y = segment. */
__device__ __forceinline__ void kv_store(float *d, float x) {
    *d = x;
}
__device__ __forceinline__ void kv_store(__half *d, float x) {
    *d = __float2half_rn(x);
}

template <typename KV>
__global__ void kv_append_kernel(const DqAttnSegment *segs, const float *k_new, const float *v_new,
                                 int kvd) {
    const DqAttnSegment g = segs[blockIdx.y];
    const size_t n = (size_t)g.n_q * kvd;
    const float *ks = k_new + (size_t)g.row0 * kvd, *vs = v_new + (size_t)g.row0 * kvd;
    KV *kd = (KV *)(void *)g.k_cache + (size_t)g.n_past * kvd;
    KV *vd = (KV *)(void *)g.v_cache + (size_t)g.n_past * kvd;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        kv_store(kd + i, ks[i]);
        kv_store(vd + i, vs[i]);
    }
}

/* The decoder's batch in two launches whatever the number of sequences: the caches' appends,
 * then one attention grid over (query tile, head, segment). A launch a sequence and layer left
 * a 64-page decode step at a few blocks per launch, ~160 ms on an H200 for the 256M model. */
static void cuda_attention_segments(DqBackend *be, float *out, const float *q, const float *k_new,
                                    const float *v_new, const DqAttnSegment *segs, int n_segs,
                                    const DqAttention *shape) {
    CudaCtx *c = ctx_of(be);
    if (n_segs <= 0 || c->sticky != cudaSuccess || !head_layout_ok(c, shape, n_segs))
        return;
    /* Three kernels, each over the segments of its class (the others' blocks return at once):
     * decode rows, short chunks (the float32 flash kernel), prompts (tensor cores). */
    int max_dec = 0, max_mid = 0, max_tc = 0, kv_max = 0;
    gboolean caches_aligned = TRUE;
    for (int s = 0; s < n_segs; s++) {
        const int nq = segs[s].n_q;
        caches_aligned = caches_aligned && aligned16(segs[s].k_cache) && aligned16(segs[s].v_cache);
        kv_max = MAX(kv_max, segs[s].n_past + nq);
        if (nq <= ATT_DECODE_ROWS)
            max_dec = MAX(max_dec, nq);
        else if (tc_takes(c, nq, shape->head_dim))
            max_tc = MAX(max_tc, nq);
        else
            max_mid = MAX(max_mid, nq);
    }
    const int max_q = MAX(max_dec, MAX(max_mid, max_tc));
    if (max_q <= 0)
        return;
    const DqAttnSegment *dsegs =
        (const DqAttnSegment *)stage_small(c, segs, (size_t)n_segs * sizeof *segs);
    if (dsegs == NULL)
        return;
    const int kvd = shape->kv_stride;
    unsigned gx = MIN(grid_for((size_t)max_q * kvd, 256), 1024u);
    if (shape->kv_f16)
        kv_append_kernel<__half><<<dim3(gx, n_segs), 256, 0, c->stream>>>(dsegs, k_new, v_new, kvd);
    else
        kv_append_kernel<float><<<dim3(gx, n_segs), 256, 0, c->stream>>>(dsegs, k_new, v_new, kvd);
    CK_LAUNCH(c, "KV cache append");
    AttArgs a;
    memset(&a, 0, sizeof a);
    a.n_q = max_q; /* the segments' own counts are read through dsegs */
    a.n_heads = shape->n_heads;
    a.n_kv_heads = shape->n_kv_heads;
    a.head_dim = shape->head_dim;
    a.q_stride = shape->q_stride;
    a.kv_stride = kvd;
    a.causal = TRUE;
    a.scale = shape->scale;
    a.kv_max = kv_max;
    a.kv_f16 = shape->kv_f16;
    if (max_dec > 0) {
        a.q_lo = 1;
        a.q_hi = ATT_DECODE_ROWS;
        dispatch_attention(c, out, q, NULL, NULL, max_dec, n_segs, a, dsegs);
    }
    if (max_mid > 0) {
        a.q_lo = ATT_DECODE_ROWS + 1;
        a.q_hi =
            tc_takes(c, DQ_CUDA_TC_MIN_ROWS, shape->head_dim) ? DQ_CUDA_TC_MIN_ROWS - 1 : INT_MAX;
        dispatch_attention(c, out, q, NULL, NULL, max_mid, n_segs, a, dsegs);
    }
    if (max_tc > 0) {
        a.q_lo = DQ_CUDA_TC_MIN_ROWS;
        a.q_hi = INT_MAX;
        dispatch_tc(c, out, q, NULL, NULL, max_tc, n_segs, a, dsegs, caches_aligned);
    }
}

/* ---- element-wise */

__global__ void gelu_tanh_kernel(float *x, size_t n) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

__global__ void silu_mul_kernel(float *gate, const float *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        gate[i] = (g / (1.0f + expf(-g))) * up[i];
    }
}

__global__ void add_kernel(float *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

template <typename T>
__global__ void add_broadcast_kernel(float *y, const T *w, size_t inner, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += (float)w[i % inner];
}

static void cuda_gelu_tanh(DqBackend *be, float *x, size_t n) {
    CudaCtx *c = ctx_of(be);
    if (n == 0 || c->sticky != cudaSuccess)
        return;
    gelu_tanh_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(x, n);
    CK_LAUNCH(c, "gelu_tanh");
}

/* matmul, then GELU: in the product's epilogue where cublasLt has it, else the kernel above. */
static void cuda_matmul_gelu(DqBackend *be, float *y, const float *x, const DqWeight *w,
                             const DqWeight *bias, int n) {
    CudaCtx *c = ctx_of(be);
    if (n > 0 && c->sticky == cudaSuccess && !matmul_run(c, y, x, w, bias, n, TRUE, NULL))
        cuda_gelu_tanh(be, y, (size_t)n * w->rows);
}

/* ys[i] = x . ws[i]^T + biases[i]: x rounded to bf16 once for all the products, each then as
 * matmul_run would do it (the same results as separate calls). */
static void cuda_matmul_many(DqBackend *be, float *const *ys, const float *x,
                             const DqWeight *const *ws, const DqWeight *const *biases, int count,
                             int n) {
    CudaCtx *c = ctx_of(be);
    if (n <= 0 || c->sticky != cudaSuccess)
        return;
    gboolean shared = c->shared_x && n > DQ_CUDA_SKINNY_ROWS;
    for (int i = 0; i < count && shared; i++)
        shared = is_bf16(c, ws[i]) && ws[i]->cols == ws[0]->cols;
    if (!shared) {
        for (int i = 0; i < count; i++)
            matmul_run(c, ys[i], x, ws[i], biases[i], n, FALSE, NULL);
        return;
    }
    const __nv_bfloat16 *xb = input_bf16(c, x, (size_t)n * ws[0]->cols);
    for (int i = 0; i < count && xb != NULL; i++)
        matmul_core(c, ys[i], x, xb, ws[i], biases[i], n, FALSE, NULL);
}

/* y += fc2(gelu_tanh(fc1(x))). With DOCQA_CUDA_MLP_BF16=1, bf16 weights and cublasLt: fc1
 * writes its GELU output as bf16 into hidden (half the bytes, and the rounding fc2 would do to
 * its input anyway), which fc2 reads as it is, accumulating into y. Off by default: on an H200
 * the 256M batch was slower with it (the op took 945 us a 32-tile call against 867 for fc1 and
 * fc2 apart), most likely because cublasLt has no plan for bf16 output with a float32 bias and
 * the call fell back; not yet looked into on a GPU. Where there is no such plan (or y cannot be
 * C), the float32 path: fc1 with its GELU, then fc2 adding into y, x rounded once for both. */
static void cuda_matmul_gelu(DqBackend *be, float *y, const float *x, const DqWeight *w,
                             const DqWeight *bias, int n);
static void cuda_matmul_add(DqBackend *be, float *y, const float *x, const DqWeight *w,
                            const DqWeight *bias, int n, float *scratch);

static void cuda_mlp_gelu_add(DqBackend *be, float *y, const float *x, const DqWeight *w1,
                              const DqWeight *b1, const DqWeight *w2, const DqWeight *b2, int n,
                              float *hidden, float *scratch) {
    CudaCtx *c = ctx_of(be);
    if (n <= 0 || c->sticky != cudaSuccess)
        return;
    if (c->mlp_bf16 && c->lt_gelu && c->fused_add && n > DQ_CUDA_SKINNY_ROWS && is_bf16(c, w1) &&
        is_bf16(c, w2) && w2->cols == w1->rows) {
        const __nv_bfloat16 *xb = input_bf16(c, x, (size_t)n * w1->cols);
        if (xb == NULL)
            return;
        __nv_bfloat16 *hb = (__nv_bfloat16 *)hidden;
        if (lt_matmul_to(c, hb, TRUE, xb, w1, b1 != NULL ? b1->data : NULL, n, TRUE, FALSE)) {
            const float *bb = b2 != NULL ? b2->data : NULL;
            if (lt_matmul(c, y, hb, w2, bb, n, FALSE, TRUE))
                return;
            if (lt_matmul(c, scratch, hb, w2, bb, n, FALSE, FALSE)) {
                add_rows(c, y, scratch, (size_t)n * w2->rows); /* cublasLt refused y as C */
                return;
            }
            /* fc2 has no plan from bf16 (not expected: fc1 had one): fc1 again in float32 */
        }
        /* x is still in the input buffer: fc1 from it, as cuda_matmul_gelu would */
        if (!matmul_core(c, hidden, x, xb, w1, b1, n, TRUE, NULL))
            cuda_gelu_tanh(be, hidden, (size_t)n * w1->rows);
        cuda_matmul_add(be, y, hidden, w2, b2, n, scratch);
        return;
    }
    cuda_matmul_gelu(be, hidden, x, w1, b1, n);
    cuda_matmul_add(be, y, hidden, w2, b2, n, scratch);
}

static void cuda_silu_mul(DqBackend *be, float *gate, const float *up, size_t n) {
    CudaCtx *c = ctx_of(be);
    if (n == 0 || c->sticky != cudaSuccess)
        return;
    silu_mul_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(gate, up, n);
    CK_LAUNCH(c, "silu_mul");
}

static void add_rows(CudaCtx *c, float *y, const float *x, size_t n) {
    if (n == 0 || c->sticky != cudaSuccess)
        return;
    add_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(y, x, n);
    CK_LAUNCH(c, "add");
}

static void cuda_add(DqBackend *be, float *y, const float *x, size_t n) {
    add_rows(ctx_of(be), y, x, n);
}

static void cuda_add_broadcast(DqBackend *be, float *y, const DqWeight *w, int n_outer) {
    CudaCtx *c = ctx_of(be);
    size_t inner = (size_t)w->rows * w->cols, total = inner * (size_t)MAX(n_outer, 0);
    if (total == 0 || c->sticky != cudaSuccess)
        return;
    if (is_bf16(c, w))
        add_broadcast_kernel<__nv_bfloat16><<<grid_for(total, 256), 256, 0, c->stream>>>(
            y, (const __nv_bfloat16 *)w->data, inner, total);
    else
        add_broadcast_kernel<float>
            <<<grid_for(total, 256), 256, 0, c->stream>>>(y, w->data, inner, total);
    CK_LAUNCH(c, "add_broadcast");
}

/* ---- layout ops */

/* A block a patch: its channels x patch x patch values, in conv weight order, looked up from
 * the tile's bytes and tables as cuda_upload_pixels left them. */
__global__ void patchify_kernel(float *out, const float *lut, const uint8_t *bytes, int channels,
                                int tile, int patch) {
    const int side = tile / patch, pp = patch * patch, feat = channels * pp;
    const int t = blockIdx.x / (side * side), pr = blockIdx.x % (side * side);
    const int py = pr / side, pxi = pr % side;
    const uint8_t *src = bytes + (size_t)t * channels * tile * tile + (size_t)py * patch * tile +
                         (size_t)pxi * patch;
    const float *tl = lut + (size_t)t * channels * 256;
    float *o = out + (size_t)blockIdx.x * feat;
    for (int f = threadIdx.x; f < feat; f += blockDim.x) {
        int ch = f / pp, yy = (f % pp) / patch, xx = f % patch;
        o[f] = tl[ch * 256 + src[((size_t)ch * tile + yy) * tile + xx]];
    }
}

__global__ void pixel_shuffle_kernel(float *out, const float *in, int tiles, int side, int dim,
                                     int s) {
    const int oside = side / s;
    const size_t odim = (size_t)dim * s * s;
    const size_t total = (size_t)tiles * oside * oside * odim;
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < total;
         o += (size_t)gridDim.x * blockDim.x) {
        size_t f = o % odim, tok = o / odim;
        int t = (int)(tok / ((size_t)oside * oside)), tr = (int)(tok % ((size_t)oside * oside));
        int oi = tr / oside, oj = tr % oside;
        int mk = (int)(f / dim), d = (int)(f % dim);
        int mm = mk / s, kk = mk % s;
        out[o] =
            in[((size_t)t * side * side + (size_t)(oi * s + mm) * side + oj * s + kk) * dim + d];
    }
}

template <typename T>
__global__ void embed_kernel(float *out, const T *table, const int32_t *ids, int n, int cols) {
    const size_t total = (size_t)n * cols;
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < total;
         o += (size_t)gridDim.x * blockDim.x) {
        size_t r = o / cols, ci = o % cols;
        out[o] = (float)table[(size_t)ids[r] * cols + ci];
    }
}

static void cuda_patchify(DqBackend *be, float *out, const float *pixels, int tiles, int channels,
                          int tile, int patch) {
    CudaCtx *c = ctx_of(be);
    int side = tile / patch;
    size_t blocks = (size_t)tiles * side * side;
    if (blocks == 0 || c->sticky != cudaSuccess)
        return;
    if (blocks > INT_MAX) {
        record(c, cudaErrorInvalidValue, "patchify: too many patches for one call");
        return;
    }
    const uint8_t *bytes = (const uint8_t *)(pixels + (size_t)tiles * channels * 256);
    patchify_kernel<<<(unsigned)blocks, 256, 0, c->stream>>>(out, pixels, bytes, channels, tile,
                                                             patch);
    CK_LAUNCH(c, "patchify");
    if (c->copy_stream != NULL && !c->capturing) {
        /* the next upload into this buffer may start once this has read it */
        CK(c, cudaEventRecord(c->px_read, c->stream));
        c->px_read_buf = pixels;
    }
}

static void cuda_pixel_shuffle(DqBackend *be, float *out, const float *in, int tiles, int side,
                               int dim, int s) {
    CudaCtx *c = ctx_of(be);
    int oside = side / s;
    size_t total = (size_t)tiles * oside * oside * dim * s * s;
    if (total == 0 || c->sticky != cudaSuccess)
        return;
    pixel_shuffle_kernel<<<grid_for(total, 256), 256, 0, c->stream>>>(out, in, tiles, side, dim, s);
    CK_LAUNCH(c, "pixel_shuffle");
}

static void cuda_embed(DqBackend *be, float *out, const DqWeight *table, const int32_t *ids,
                       int n) {
    CudaCtx *c = ctx_of(be);
    if (n <= 0 || c->sticky != cudaSuccess)
        return;
    const int32_t *dids = (const int32_t *)stage_small(c, ids, (size_t)n * sizeof(int32_t));
    if (dids == NULL)
        return;
    size_t total = (size_t)n * table->cols;
    if (is_bf16(c, table))
        embed_kernel<__nv_bfloat16><<<grid_for(total, 256), 256, 0, c->stream>>>(
            out, (const __nv_bfloat16 *)table->data, dids, n, table->cols);
    else
        embed_kernel<float>
            <<<grid_for(total, 256), 256, 0, c->stream>>>(out, table->data, dids, n, table->cols);
    CK_LAUNCH(c, "embed");
}

/* dq_argmax of each row, a block a row: each thread the first maximum of its stride (NaN never
 * taken), merged by value then index; the first maximum of the row's non-NaN values is what the
 * sequential scan gives, unless x[0] is NaN, where it stays at 0. */
__global__ void argmax_rows_kernel(int32_t *ids, const float *x, int cols) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *r = x + (size_t)blockIdx.x * cols;
    float v;
    int i;
    dq_argmax_stride(r, cols, threadIdx.x, blockDim.x, &v, &i);
    for (int o = 16; o > 0; o >>= 1)
        dq_argmax_merge(&v, &i, __shfl_xor_sync(0xffffffffu, v, o),
                        __shfl_xor_sync(0xffffffffu, i, o));
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? sv[lane] : 0.0f;
        i = lane < n_warps ? si[lane] : -1;
        for (int o = 16; o > 0; o >>= 1)
            dq_argmax_merge(&v, &i, __shfl_xor_sync(0xffffffffu, v, o),
                            __shfl_xor_sync(0xffffffffu, i, o));
        if (lane == 0)
            ids[blockIdx.x] = dq_argmax_result(r, i);
    }
}

static void cuda_argmax_rows(DqBackend *be, int32_t *ids, const float *x, int n, int cols) {
    CudaCtx *c = ctx_of(be);
    for (int r0 = 0; r0 < n && c->sticky == cudaSuccess; r0 += DQ_CUDA_ARGMAX_ROWS) {
        int rows = MIN(n - r0, DQ_CUDA_ARGMAX_ROWS);
        argmax_rows_kernel<<<rows, 256, 0, c->stream>>>(c->ids, x + (size_t)r0 * cols, cols);
        CK_LAUNCH(c, "argmax_rows");
        /* 4-byte values: the float download copies their bits (and, recorded, fills ids at the
         * replay, as any download) */
        cuda_download(be, (float *)(void *)(ids + r0), (const float *)(const void *)c->ids, rows);
    }
}

/* ---- recorded steps: CUDA graphs */

static void graph_exec_drop(DqGraphEntry *e) {
    if (e->exec != NULL)
        cudaGraphExecDestroy((cudaGraphExec_t)e->exec);
    e->exec = NULL;
}

static gboolean cuda_graph_begin(DqBackend *be, uint64_t key) {
    CudaCtx *c = ctx_of(be);
    if (!c->graphs_on || c->capturing || c->sticky != cudaSuccess)
        return FALSE;
    /* The stream idle and the ring empty: nothing recorded will need to wait for earlier work,
     * and the pinned bytes that recorded uploads read stay as written until the replay. A
     * recorded patchify marks no buffer: the next upload waits for the whole stream. */
    c->px_read_buf = NULL;
    CK(c, cudaStreamSynchronize(c->stream));
    if (c->sticky != cudaSuccess)
        return FALSE;
    ring_reset(c);
    if (c->dl_host == NULL || c->dl_need > c->dl_cap) {
        size_t cap = MAX(c->dl_need + c->dl_need / 4, DQ_CUDA_DL_MIN_BYTES);
        if (c->dl_host != NULL)
            cudaFreeHost(c->dl_host);
        c->dl_cap = 0;
        if (cudaHostAlloc((void **)&c->dl_host, cap, cudaHostAllocDefault) != cudaSuccess) {
            cudaGetLastError();
            c->dl_host = NULL;
            g_warning("%s: no pinned memory for a download area of %.1f MiB: CUDA graphs off",
                      c->label, mib(cap));
            c->graphs_on = FALSE;
            return FALSE;
        }
        c->dl_cap = cap;
    }
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cudaGetLastError();
        g_warning("%s: stream capture refused (%s): CUDA graphs off", c->label,
                  cudaGetErrorString(e));
        c->graphs_on = FALSE;
        return FALSE;
    }
    c->capturing = TRUE;
    c->cap_err = cudaSuccess;
    c->cap_msg[0] = '\0';
    c->cap_key = key;
    c->cap_inv_hd = 0;
    c->dl_pos = 0;
    g_array_set_size(c->deferred, 0);
    return TRUE;
}

/* The graph for the recorded key and node count, updated to `graph` or instantiated from it;
 * NULL on failure (the message in c->cap_msg). */
static cudaGraphExec_t graph_exec_for(CudaCtx *c, cudaGraph_t graph) {
    size_t nodes = 0;
    if (cudaGraphGetNodes(graph, NULL, &nodes) != cudaSuccess) {
        cudaGetLastError();
        nodes = 0; /* matched by key alone: at worst an update refused */
    }
    DqGraphEntry *slot = dq_graph_table_find(&c->graphs, c->cap_key, nodes);
    if (slot != NULL) {
        cudaGraphExec_t kept = (cudaGraphExec_t)slot->exec;
#if CUDART_VERSION >= 12000
        cudaGraphExecUpdateResultInfo info;
        cudaError_t e = cudaGraphExecUpdate(kept, graph, &info);
#else
        cudaGraphNode_t bad = NULL;
        cudaGraphExecUpdateResult info;
        cudaError_t e = cudaGraphExecUpdate(kept, graph, &bad, &info);
#endif
        if (e == cudaSuccess) {
            c->gstats.updated++;
            dq_graph_table_touch(&c->graphs, slot);
            return kept;
        }
        /* Refused (a changed kernel, another topology of as many nodes): a new one. */
        cudaGetLastError();
        c->gstats.update_refused++;
    } else {
        slot = dq_graph_table_take(&c->graphs); /* the least recently used when full */
    }
    graph_exec_drop(slot);
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaGraphInstantiateWithFlags(&exec, graph, 0);
    if (e != cudaSuccess) {
        cudaGetLastError();
        g_snprintf(c->cap_msg, sizeof c->cap_msg, "cudaGraphInstantiate: %s",
                   cudaGetErrorString(e));
        dq_graph_table_remove(&c->graphs, slot); /* no exec: not kept */
        return NULL;
    }
    c->gstats.instantiated++;
    dq_graph_table_set(&c->graphs, slot, c->cap_key, nodes, exec);
    return exec;
}

static gboolean cuda_graph_end(DqBackend *be, gboolean run) {
    CudaCtx *c = ctx_of(be);
    if (!c->capturing)
        return FALSE;
    c->capturing = FALSE;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (e != cudaSuccess && c->cap_err == cudaSuccess) {
        c->cap_err = e;
        g_snprintf(c->cap_msg, sizeof c->cap_msg, "cudaStreamEndCapture: %s",
                   cudaGetErrorString(e));
    }
    if (c->dl_pos > c->dl_cap)
        c->dl_need = c->dl_pos; /* the next graph_begin grows the area */
    cudaGraphExec_t exec = NULL;
    if (run && c->cap_err == cudaSuccess && graph != NULL)
        exec = graph_exec_for(c, graph);
    if (graph != NULL)
        cudaGraphDestroy(graph);
    cudaGetLastError(); /* a failed capture's errors are not the stream's */
    if (!run)
        return FALSE;
    if (exec == NULL) {
        c->gstats.failed++;
        if (++c->graph_failures >= DQ_CUDA_GRAPH_MAX_FAILURES) {
            g_warning("%s: recording a step as a CUDA graph failed %d times in a row (last: %s): "
                      "CUDA graphs off for this backend",
                      c->label, c->graph_failures, c->cap_msg[0] ? c->cap_msg : "no graph");
            c->graphs_on = FALSE;
        }
        return FALSE;
    }
    c->graph_failures = 0;
    CK(c, cudaGraphLaunch(exec, c->stream));
    CK(c, cudaStreamSynchronize(c->stream));
    c->gstats.replayed++;
    if (c->cap_inv_hd != 0 && c->sticky == cudaSuccess) {
        c->inv_theta = c->cap_inv_theta; /* the recorded table copy has run */
        c->inv_hd = c->cap_inv_hd;
    }
    for (guint i = 0; i < c->deferred->len; i++) {
        const Deferred *d = &g_array_index(c->deferred, Deferred, i);
        if (c->sticky != cudaSuccess)
            memset(d->dst, 0, d->bytes);
        else
            memcpy(d->dst, c->dl_host + d->off, d->bytes);
    }
    g_array_set_size(c->deferred, 0);
    return TRUE;
}

/* ---- life cycle */

static void ctx_free(CudaCtx *c) {
    if (c == NULL)
        return;
    if (c->capturing) {
        cudaGraph_t graph = NULL;
        cudaStreamEndCapture(c->stream, &graph);
        if (graph != NULL)
            cudaGraphDestroy(graph);
        cudaGetLastError();
        c->capturing = FALSE;
    }
    for (int i = 0; i < c->graphs.n; i++)
        graph_exec_drop(&c->graphs.e[i]);
    if (c->copy_stream != NULL) /* (the main stream waits for its copies, unless an error...) */
        cudaStreamSynchronize(c->copy_stream);
    if (c->stream != NULL)
        cudaStreamSynchronize(c->stream);
    if (c->prof != NULL) {
        prof_report(c);
        prof_free(c->prof);
    }
    if (c->free_lists != NULL)
        pool_trim(c);
    if (c->live != NULL) {
        GHashTableIter it;
        gpointer key;
        g_hash_table_iter_init(&it, c->live);
        while (g_hash_table_iter_next(&it, &key, NULL))
            cudaFree(key);
        g_hash_table_destroy(c->live);
    }
    if (c->free_lists != NULL)
        g_hash_table_destroy(c->free_lists);
    if (c->bf16 != NULL)
        g_hash_table_destroy(c->bf16);
    if (c->lt_plans != NULL)
        g_hash_table_destroy(c->lt_plans);
    if (c->lt_fixed_algos != NULL)
        g_hash_table_destroy(c->lt_fixed_algos);
    if (c->lt != NULL)
        cublasLtDestroy(c->lt);
    if (c->blas != NULL)
        cublasDestroy(c->blas);
    cudaFree(c->blas_ws);
    cudaFree(c->load_stage);
    cudaFree(c->ring_dev);
    cudaFree(c->inv_freq);
    cudaFree(c->ids);
    if (c->ring_host != NULL)
        cudaFreeHost(c->ring_host);
    for (int i = 0; i < DQ_CUDA_RING_SLOTS; i++)
        if (c->ring_ev[i] != NULL)
            cudaEventDestroy(c->ring_ev[i]);
    if (c->dl_host != NULL)
        cudaFreeHost(c->dl_host);
    if (c->deferred != NULL)
        g_array_free(c->deferred, TRUE);
    cudaEvent_t evs[] = {c->px_copied, c->px_read, c->px_fence};
    for (size_t i = 0; i < G_N_ELEMENTS(evs); i++)
        if (evs[i] != NULL)
            cudaEventDestroy(evs[i]);
    if (c->copy_stream != NULL)
        cudaStreamDestroy(c->copy_stream);
    if (c->stream != NULL)
        cudaStreamDestroy(c->stream);
    g_free(c);
}

static void cuda_destroy(DqBackend *be) {
    ctx_free(ctx_of(be));
    g_free(be);
}

static gboolean device_error(GError **err, int device, const char *what, cudaError_t e) {
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    if (drv == 0 && e != cudaSuccess && e != cudaErrorNoDevice)
        return dq_fail(err, DQ_ERR_DEVICE,
                       "cuda:%d: no NVIDIA driver is installed (libcuda could not be loaded: %s), "
                       "so no GPU can be used",
                       device, cudaGetErrorString(e));
    if (e == cudaErrorInsufficientDriver || (drv > 0 && drv < rt))
        return dq_fail(err, DQ_ERR_DEVICE,
                       "cuda:%d: the NVIDIA driver supports CUDA %d.%d, but docqa was built "
                       "with the CUDA %d.%d runtime: update the driver or rebuild with an older "
                       "toolkit",
                       device, drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
    if (e == cudaErrorNoDevice)
        return dq_fail(
            err, DQ_ERR_DEVICE, "cuda:%d: no CUDA GPU is visible (%s; CUDA_VISIBLE_DEVICES=%s)",
            device, cudaGetErrorString(e),
            g_getenv("CUDA_VISIBLE_DEVICES") ? g_getenv("CUDA_VISIBLE_DEVICES") : "unset");
    if (e == cudaErrorMemoryAllocation)
        return dq_fail(err, DQ_ERR_DEVICE, "cuda:%d: %s: out of GPU memory", device, what);
    return dq_fail(err, DQ_ERR_DEVICE, "cuda:%d: %s failed: %s", device, what,
                   cudaGetErrorString(e));
}

extern "C" int dq_cuda_device_count(char **why) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        if (why != NULL) {
            GError *err = NULL;
            device_error(&err, 0, "cudaGetDeviceCount", e == cudaSuccess ? cudaErrorNoDevice : e);
            *why = g_strdup(err->message);
            g_error_free(err);
        }
        return 0;
    }
    return n;
}

extern "C" gboolean dq_backend_cuda_check(DqBackend *be, GError **err) {
    if (!dq_backend_is_cuda(be))
        return TRUE;
    CudaCtx *c = ctx_of(be);
    CK(c, cudaStreamSynchronize(c->stream));
    if (c->sticky != cudaSuccess)
        return dq_fail(err, DQ_ERR_DEVICE, "%s", c->sticky_msg);
    return TRUE;
}

extern "C" gboolean dq_backend_is_cuda(const DqBackend *be) {
    return be != NULL && be->destroy == cuda_destroy;
}

extern "C" void dq_backend_cuda_set_graphs(DqBackend *be, gboolean on) {
    if (!dq_backend_is_cuda(be))
        return;
    CudaCtx *c = ctx_of(be);
    c->graphs_on = on;
    c->graph_failures = 0;
}

extern "C" gboolean dq_backend_cuda_graph_stats(DqBackend *be, DqCudaGraphStats *out) {
    memset(out, 0, sizeof *out);
    if (!dq_backend_is_cuda(be))
        return FALSE;
    CudaCtx *c = ctx_of(be);
    *out = c->gstats;
    out->on = c->graphs_on;
    return TRUE;
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
                      double theta) {
    PROF_SPAN(be, cuda_rope(be, x, pos, n, n_heads, head_dim, theta), "rope rows %d", prof_rows(n));
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

static void prof_install(DqBackend *be) {
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
    be->add = prof_add_op;
    be->add_broadcast = prof_add_broadcast;
    be->patchify = prof_patchify;
    be->pixel_shuffle = prof_pixel_shuffle;
    be->embed = prof_embed;
    be->argmax_rows = prof_argmax_rows;
}

extern "C" DqBackend *dq_backend_cuda_new(int device, GError **err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        device_error(err, device, "cudaGetDeviceCount", e == cudaSuccess ? cudaErrorNoDevice : e);
        return NULL;
    }
    if (device < 0 || device >= count) {
        dq_fail(err, DQ_ERR_DEVICE, "cuda:%d: no such GPU (%d visible: cuda:0 .. cuda:%d)", device,
                count, count - 1);
        return NULL;
    }
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
        device_error(err, device, "cudaSetDevice", e);
        return NULL;
    }
    if (prop.major < 8) {
        dq_fail(err, DQ_ERR_DEVICE,
                "cuda:%d (%s): compute capability %d.%d; docqa's CUDA kernels need 8.0 or newer "
                "(bf16 tensor cores)",
                device, prop.name, prop.major, prop.minor);
        return NULL;
    }
    CudaCtx *c = g_new0(CudaCtx, 1);
    staging_ring_init(&c->ring, DQ_CUDA_RING_SLOT, DQ_CUDA_RING_SLOTS, &ring_ops, c);
    c->device = device;
    g_snprintf(c->label, sizeof c->label, "cuda:%d (%s)", device, prop.name);
    c->live = g_hash_table_new(g_direct_hash, g_direct_equal);
    c->free_lists = g_hash_table_new(g_direct_hash, g_direct_equal);
    c->bf16 = g_hash_table_new(g_direct_hash, g_direct_equal);
    c->f32_weights = g_strcmp0(g_getenv("DOCQA_CUDA_F32"), "1") == 0;
    /* bf16 products only; DOCQA_CUDA_TC_ATTN=0 keeps the earlier kernels (for comparison). */
    c->tc_attn = !c->f32_weights && g_strcmp0(g_getenv("DOCQA_CUDA_TC_ATTN"), "0") != 0;
    c->attn_mma = g_strcmp0(g_getenv("DOCQA_CUDA_ATTN_MMA"), "0") != 0;
    c->decode_group = g_strcmp0(g_getenv("DOCQA_CUDA_DECODE_GROUP"), "0") != 0;
    c->attn_rows = g_strcmp0(g_getenv("DOCQA_CUDA_ATTN_ROWS"), "64") == 0 ? 64 : 128;
    c->attn_staged = g_strcmp0(g_getenv("DOCQA_CUDA_ATTN_STAGED"), "0") != 0;
    c->norm_warp = g_strcmp0(g_getenv("DOCQA_CUDA_NORM_WARP"), "0") != 0;
    c->shared_x = g_strcmp0(g_getenv("DOCQA_CUDA_SHARED_X"), "0") != 0;
    c->mlp_bf16 = g_strcmp0(g_getenv("DOCQA_CUDA_MLP_BF16"), "1") == 0;
    c->fused_add = g_strcmp0(g_getenv("DOCQA_CUDA_FUSED_ADD"), "0") != 0;
    c->lt_bias = g_strcmp0(g_getenv("DOCQA_CUDA_LT_BIAS"), "0") != 0;
    c->lt_gelu = g_strcmp0(g_getenv("DOCQA_CUDA_LT_GELU"), "0") != 0;
    c->lt_plans = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, lt_plan_free);
    c->lt_fixed_algos = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, lt_plan_free);
    /* Off by default: the recorded decode step has not yet run on a GPU (no GPU where it was
     * written). Turn the default on once scripts/check-gpu.sh passes with it on a GPU. */
    c->graphs_on = g_strcmp0(g_getenv("DOCQA_CUDA_GRAPHS"), "1") == 0;
    c->deferred = g_array_new(FALSE, FALSE, sizeof(Deferred));
    const char *step = "cudaStreamCreate";
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
        goto fail;
    step = "device buffers";
    if ((e = cudaMalloc(&c->blas_ws, DQ_CUDA_BLAS_WORKSPACE)) != cudaSuccess ||
        (e = cudaMalloc(&c->load_stage, DQ_CUDA_LOAD_CHUNK)) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->ring_dev, DQ_CUDA_RING_BYTES)) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->inv_freq, 256 * sizeof(float))) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->ids, DQ_CUDA_ARGMAX_ROWS * sizeof(int32_t))) != cudaSuccess)
        goto fail;
    step = "pinned host buffer";
    if ((e = cudaHostAlloc((void **)&c->ring_host, DQ_CUDA_RING_BYTES, cudaHostAllocDefault)) !=
        cudaSuccess)
        goto fail;
    step = "ring events";
    for (int i = 0; i < DQ_CUDA_RING_SLOTS; i++)
        if ((e = cudaEventCreateWithFlags(&c->ring_ev[i], cudaEventDisableTiming)) != cudaSuccess)
            goto fail;
    if (g_strcmp0(g_getenv("DOCQA_CUDA_COPY_STREAM"), "0") != 0) {
        step = "the upload stream";
        if ((e = cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking)) !=
                cudaSuccess ||
            (e = cudaEventCreateWithFlags(&c->px_copied, cudaEventDisableTiming)) != cudaSuccess ||
            (e = cudaEventCreateWithFlags(&c->px_read, cudaEventDisableTiming)) != cudaSuccess ||
            (e = cudaEventCreateWithFlags(&c->px_fence, cudaEventDisableTiming)) != cudaSuccess)
            goto fail;
    }
    step = "flash attention shared memory";
    if ((e = cudaFuncSetAttribute(attn_flash_kernel<4, float>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)flash_smem(128))) != cudaSuccess ||
        (e = cudaFuncSetAttribute(attn_flash_kernel<3, float>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)flash_smem(96))) != cudaSuccess ||
        (e = cudaFuncSetAttribute(attn_flash_kernel<4, __half>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)flash_smem(128))) != cudaSuccess ||
        (e = cudaFuncSetAttribute(attn_flash_kernel<3, __half>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)flash_smem(96))) != cudaSuccess)
        goto fail;
    {
        cublasStatus_t s = cublasCreate(&c->blas);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSetStream(c->blas, c->stream);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSetWorkspace(c->blas, c->blas_ws, DQ_CUDA_BLAS_WORKSPACE);
        /* bf16 products accumulate in float32; float32 products stay true float32 (no TF32),
         * so that an f32 weight gives f32 results. */
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
        if (s != CUBLAS_STATUS_SUCCESS) {
            dq_fail(err, DQ_ERR_DEVICE, "%s: cuBLAS initialisation failed (status %d)", c->label,
                    (int)s);
            c->blas = s == CUBLAS_STATUS_NOT_INITIALIZED ? NULL : c->blas;
            ctx_free(c);
            return NULL;
        }
        if (cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS)
            c->lt = NULL; /* biases then go through fill + GemmEx */
        /* DOCQA_CUDA_MERGE=0: the heuristic's choice per row count, products one tile or one
         * prompt at a time (for comparison) */
        c->lt_fixed =
            c->lt != NULL && !c->f32_weights && g_strcmp0(g_getenv("DOCQA_CUDA_MERGE"), "0") != 0;
    }
    {
        DqBackend *be = g_new0(DqBackend, 1);
        be->name = "cuda";
        be->ctx = c;
        be->destroy = cuda_destroy;
        be->alloc = cuda_alloc;
        be->release = cuda_release;
        be->upload = cuda_upload;
        be->upload_pixels = cuda_upload_pixels;
        /* float16 caches, opt-in until measured on a GPU: approximate like the bf16 products */
        be->kv_f16 = be->kv_f16_stored =
            !c->f32_weights && g_strcmp0(g_getenv("DOCQA_CUDA_KV_F16"), "1") == 0;
        be->download = cuda_download;
        be->copy = cuda_copy;
        be->weight_init = cuda_weight_init;
        be->weight_free = cuda_weight_free;
        be->matmul = cuda_matmul;
        be->matmul_gelu = cuda_matmul_gelu;
        be->matmul_add = cuda_matmul_add;
        be->matmul_many = cuda_matmul_many;
        be->mlp_gelu_add = cuda_mlp_gelu_add;
        be->layernorm = cuda_layernorm;
        be->rmsnorm = cuda_rmsnorm;
        be->rope = cuda_rope;
        be->attention = cuda_attention;
        /* DOCQA_CUDA_SEGMENTS=0: a launch a sequence instead (for comparison). */
        if (g_strcmp0(g_getenv("DOCQA_CUDA_SEGMENTS"), "0") != 0)
            be->attention_segments = cuda_attention_segments;
        be->gelu_tanh = cuda_gelu_tanh;
        be->silu_mul = cuda_silu_mul;
        be->add = cuda_add;
        be->add_broadcast = cuda_add_broadcast;
        be->patchify = cuda_patchify;
        be->pixel_shuffle = cuda_pixel_shuffle;
        be->embed = cuda_embed;
        be->argmax_rows = cuda_argmax_rows;
        be->graph_begin = cuda_graph_begin;
        be->graph_end = cuda_graph_end;
        /* float32 weights go through cuBLAS, whose rounding may depend on the row count */
        be->matmul_row_invariant_max = c->f32_weights ? 0 : DQ_CUDA_SKINNY_ROWS;
        be->matmul_row_invariant_min = c->lt_fixed ? DQ_CUDA_SKINNY_ROWS + 1 : 0; /* 64 */
        /* prompt_split_min stays NULL (no prefix reuse, generate.h): the caches would copy
         * (be->copy), but a prompt segment's attention kernel is chosen by its rows (decode's,
         * the middle one, tensor-core tiles from DQ_CUDA_TC_MIN_ROWS) and whether a row gets the
         * same bits when its prompt is split between calls has never been checked on a GPU. */
        be->prefill_rows = 16384;
        if (g_strcmp0(g_getenv("DOCQA_CUDA_PROFILE"), "1") == 0 && (c->prof = prof_new()) != NULL)
            prof_install(be);
        return be;
    }
fail:
    cudaGetLastError();
    {
        char info[96];
        mem_info(info, sizeof info);
        if (e == cudaErrorMemoryAllocation)
            dq_fail(err, DQ_ERR_DEVICE,
                    "%s: out of GPU memory for the backend's fixed buffers (%s: about %.0f MiB "
                    "needed, %s)",
                    c->label, step,
                    mib(DQ_CUDA_BLAS_WORKSPACE + DQ_CUDA_LOAD_CHUNK + DQ_CUDA_RING_BYTES), info);
        else
            device_error(err, device, step, e);
    }
    ctx_free(c);
    return NULL;
}
