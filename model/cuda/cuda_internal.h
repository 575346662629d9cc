/* What the CUDA backend's files share: its context, error recording and the functions one file
 * calls in another. Private to model/cuda/ (backend_cuda.h is the backend's interface). The
 * files, by what they hold: backend_cuda.cu (the design notes, errors, life cycle),
 * cuda_memory.cu (pool, pinned ring, uploads and downloads, weights), cuda_matmul.cu
 * (products), cuda_attention.cu, cuda_ops.cu (norms, RoPE, element-wise and layout ops,
 * argmax), cuda_graph.cu (recorded decode steps), cuda_profile.cu (DOCQA_CUDA_PROFILE=1). Plain C
 * headers hold what is tested on the CPU: staging_ring.h, graph_table.h, kernel_math.h and
 * launch_plan.h (attention kernels by segment, shared memory, the pool's size classes). */
#ifndef DQ_CUDA_INTERNAL_H
#define DQ_CUDA_INTERNAL_H

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
#include "launch_plan.h"
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

/* Up to this many rows, products with a bf16 weight run the row-invariant kernel of cuda_matmul.cu.
 * 63, not 64: from 64 rows on products take the fixed cublasLt algorithm (row-invariant too, from
 * any row count on), so that SmolVLM-256M's connector, 64 rows a tile, runs as one product a vision
 * chunk; that kernel reads all of x once per output column, which for a tile's [64 x 12288]
 * took 0.6 ms. A decode step of 64 rows becomes two launches (smolvlm splits it 32 + 32: a
 * 1-row launch costs a pass over the weight, ~10 us a product, ~20 ms a 64-page batch). */
#define DQ_CUDA_SKINNY_ROWS 63

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
    /* RoPE inverse frequencies: the host's table (rope.h), which the CPU backends use too */
    float *inv_freq; /* device [64 * 4] */
    int32_t *ids;    /* device [DQ_CUDA_ARGMAX_ROWS]: argmax_rows' picks, downloaded */
    DqRope inv_rope; /* what inv_freq holds (half 0: nothing yet) */
    /* the first error; every later op is skipped */
    cudaError_t sticky;
    char sticky_msg[512];
    /* CUDA graphs of recorded steps */
    gboolean graphs_on; /* DOCQA_CUDA_GRAPHS=1 (or dq_backend_cuda_set_graphs) */
    gboolean capturing;
    cudaError_t cap_err; /* the first error while recording: fails the recording only */
    char cap_msg[512];
    uint64_t cap_key;
    DqRope cap_inv;      /* inv_freq as the recording leaves it (half 0: unchanged) */
    DqGraphTable graphs; /* kept by step key and node count (graph_table.h) */
    int graph_failures;  /* in a row */
    uint8_t *dl_host;    /* pinned [dl_cap] */
    size_t dl_cap, dl_pos, dl_need;
    GArray *deferred; /* Deferred, of the step being recorded */
    DqCudaGraphStats gstats;
    /* DOCQA_CUDA_PROFILE=1: GPU time of each op, by op and shape (NULL: off) */
    struct Profile *prof;
} CudaCtx;

/* The first error a backend meets is kept (sticky: every later op is skipped) and reported with
 * g_warning; while a step is recorded as a graph it fails only the recording (backend_cuda.cu). */
void record(CudaCtx *c, cudaError_t e, const char *what);
void record_blas(CudaCtx *c, cublasStatus_t s, const char *what);

#define CK(c, call)        record((c), (call), #call)
#define CK_LAUNCH(c, what) record((c), cudaGetLastError(), what)

static inline CudaCtx *ctx_of(DqBackend *be) {
    CudaCtx *c = (CudaCtx *)be->ctx;
    /* The current device is per host thread: a backend used from another thread than the one
     * that opened it (or beside a backend on another GPU) must select its own. */
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != c->device)
        record(c, cudaSetDevice(c->device), "cudaSetDevice");
    return c;
}

static inline unsigned grid_for(size_t n, unsigned block) {
    size_t g = (n + block - 1) / block;
    return (unsigned)MIN(MAX(g, (size_t)1), (size_t)1 << 20);
}

/* Block reductions of the norms and the softmax kernels. */
/* Sum over the block (blockDim.x a multiple of 32, at most 1024). */
static __device__ inline float block_sum(float v, float *shared32) {
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
static __device__ inline float block_max(float v, float *shared32) {
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

/* backend_cuda.cu */
double mib(size_t bytes);
void mem_info(char *buf, size_t len);

/* cuda_memory.cu */
size_t size_class(size_t bytes);
void pool_trim(CudaCtx *c);
void *pool_get(CudaCtx *c, size_t bytes);
gboolean pool_put(CudaCtx *c, void *p);
void ring_reset(CudaCtx *c);
const void *stage_small(CudaCtx *c, const void *host, size_t bytes);
float *cuda_alloc(DqBackend *be, size_t n);
void cuda_release(DqBackend *be, float *buf);
void cuda_upload(DqBackend *be, float *dst, const float *src, size_t n);
void cuda_upload_pixels(DqBackend *be, float *dst, const DqPixelTile *tiles, int n_tiles,
                        int channels, int tile);
void cuda_download(DqBackend *be, float *dst, const float *src, size_t n);
void cuda_copy(DqBackend *be, float *dst, const float *src, size_t n);
gboolean is_bf16(CudaCtx *c, const DqWeight *w);
gboolean cuda_weight_init(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                          GError **err);
void cuda_weight_free(DqBackend *be, DqWeight *w);

/* cuda_matmul.cu */
/* dst = src rounded to bf16, queued on the main stream (the caller checks the launch). */
void launch_to_bf16(CudaCtx *c, __nv_bfloat16 *dst, const float *src, size_t n);
void lt_plan_free(gpointer data);
gboolean aligned16(const void *p);
gboolean lt_matmul(CudaCtx *c, float *y, const __nv_bfloat16 *xbf, const DqWeight *w,
                   const float *bias, int n, gboolean gelu, gboolean accumulate);
void cuda_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w, const DqWeight *bias,
                 int n);
void cuda_matmul_add(DqBackend *be, float *y, const float *x, const DqWeight *w,
                     const DqWeight *bias, int n, float *scratch);
void cuda_matmul_gelu(DqBackend *be, float *y, const float *x, const DqWeight *w,
                      const DqWeight *bias, int n);
void cuda_matmul_many(DqBackend *be, float *const *ys, const float *x, const DqWeight *const *ws,
                      const DqWeight *const *biases, int count, int n);
void cuda_mlp_gelu_add(DqBackend *be, float *y, const float *x, const DqWeight *w1,
                       const DqWeight *b1, const DqWeight *w2, const DqWeight *b2, int n,
                       float *hidden, float *scratch);

/* cuda_attention.cu */
void cuda_attention(DqBackend *be, float *out, const float *q, const float *k, const float *v,
                    const DqAttention *da);
void cuda_attention_segments(DqBackend *be, float *out, const float *q, const float *k_new,
                             const float *v_new, const DqAttnSegment *segs, int n_segs,
                             const DqAttention *shape);

/* cuda_ops.cu */
void cuda_layernorm(DqBackend *be, float *y, const float *x, const DqWeight *w, const DqWeight *b,
                    int n, int dim, float eps);
void cuda_rmsnorm(DqBackend *be, float *y, const float *x, const DqWeight *w, int n, int dim,
                  float eps);
void cuda_rope(DqBackend *be, float *x, const int32_t *pos, int n, int n_heads, int head_dim,
               const DqRope *rope);
void cuda_gelu_tanh(DqBackend *be, float *x, size_t n);
void cuda_act(DqBackend *be, float *x, size_t n, SmolvlmAct act);
void cuda_mul(DqBackend *be, float *y, const float *x, size_t n);
void cuda_silu_mul(DqBackend *be, float *gate, const float *up, size_t n);
void add_rows(CudaCtx *c, float *y, const float *x, size_t n);
void cuda_add(DqBackend *be, float *y, const float *x, size_t n);
void cuda_add_broadcast(DqBackend *be, float *y, const DqWeight *w, int n_outer);
void cuda_patchify(DqBackend *be, float *out, const float *pixels, int tiles, int channels,
                   int tile, int patch);
void cuda_pixel_shuffle(DqBackend *be, float *out, const float *in, int tiles, int side, int dim,
                        int s);
void cuda_embed(DqBackend *be, float *out, const DqWeight *table, const int32_t *ids, int n);
void cuda_argmax_rows(DqBackend *be, int32_t *ids, const float *x, int n, int cols);

/* cuda_graph.cu */
void graph_exec_drop(DqGraphEntry *e);
gboolean cuda_graph_begin(DqBackend *be, uint64_t key);
gboolean cuda_graph_end(DqBackend *be, gboolean run);

/* cuda_profile.cu */
Profile *prof_new(void);
void prof_report(CudaCtx *c);
void prof_free(Profile *p);
void prof_install(DqBackend *be);

/* cuda_attention.cu */
cudaError_t attention_init(void);

/* cuda_memory.cu */
extern const DqStagingRingOps ring_ops;

#endif
