/* The CUDA backend, and picking a backend from a device name.
 *
 *   DqBackend *be = dq_backend_open_device("cuda:1", &err);   // or "cpu", "cuda" (= cuda:0)
 *   ... smolvlm's forward pass drives it through backend.h ...
 *   dq_backend_free(be);
 *
 * What the CUDA backend does with the interface of backend.h:
 * - Buffers from alloc() are device memory (float32 activations). They come from a caching pool:
 *   release() keeps a block for the next alloc() of the same size class, so after the first
 *   batch no cudaMalloc happens per batch or per token (only the backend's destroy frees them).
 * - Weights: matrices (rows > 1: linear layers, embedding tables) are converted to bf16 once at
 *   load, whatever the file holds (F32, BF16 or F16), and uploaded once; vectors (norm weights,
 *   biases) stay float32. matmul runs cuBLAS bf16 x bf16 with float32 accumulation and a float32
 *   result; the activation is rounded to bf16 on the way in. Attention from 64 query rows on
 *   rounds Q, K, V and the probabilities to bf16 (tensor cores). Everything else (norms,
 *   softmax, RoPE, residual adds) is float32.
 * - A row of a product never depends on the other rows of the call (matmul_row_invariant_max
 *   and _min, backend.h): tiles, prompts and decode rows of different requests share products
 *   without changing any request's result.
 * - DOCQA_CUDA_F32=1 in the environment keeps the matrices float32 and the products true float32
 *   (no TF32): slower, but within the float32 conformance tolerances of
 *   ../shared/conformance/check.py (scripts/check-gpu.sh runs it both ways).
 * - All ops are queued on one CUDA stream with no host synchronisation, except download()
 *   (which returns once the data is on the host), weight_init, and staging that finds the
 *   pinned ring a lap ahead of the GPU (it waits for the copies still reading the slots it
 *   needs). Uploads and the host arrays an op takes (RoPE positions, token ids) are staged
 *   through that ring; tiles (upload_pixels) go up on a second stream, which the first waits
 *   for.
 * - Ops cannot fail through the interface (they return void): the first CUDA error is kept and
 *   reported by dq_backend_cuda_check() and by every later alloc (which then returns NULL);
 *   every later op is skipped and every download gives zeros. smolvlm's forward calls check it
 *   whenever results come back, so that a step after an error fails instead of handing on zeros.
 * - Decode steps as CUDA graphs (backend.h graph_begin / graph_end, called by
 *   smolvlm_forward_step for every DqGenerator step): the step's kernels are captured, the graph
 *   kept for the step's shape is updated with the new arguments (cudaGraphExecUpdate) and
 *   launched as one. OFF BY DEFAULT: DOCQA_CUDA_GRAPHS=1 in the environment turns it on. On an
 *   H200 it gives the same tokens and logits, bit for bit, as plain launches (test_backend_cuda's
 *   graph tests, check.py), but was not faster: the step is recorded again every time. A
 *   recording that fails is redone with plain launches; after 3 failures in a row graphs are
 *   turned off with a warning.
 * - DOCQA_CUDA_PROFILE=1: every op is timed on the GPU (events around it) and the sums by op and
 *   shape go to stderr when the backend is freed. DOCQA_CUDA_MERGE=0 (products with the
 *   heuristic's algorithm per row count, one tile or prompt at a time) and
 *   DOCQA_CUDA_ATTN_MMA=0 (the earlier tensor-core attention) are there for comparison.
 * - Too little GPU memory: loading fails before the first weight, naming the MiB the weights
 *   need and the MiB free; a KV cache or activation buffer that does not fit fails its request
 *   naming its size (and the pool's warning names the free memory).
 *
 * Built without CUDA (no nvcc at configure time), dq_backend_cuda_new() fails with
 * DQ_ERR_DEVICE "built without CUDA".
 */
#ifndef DQ_BACKEND_CUDA_H
#define DQ_BACKEND_CUDA_H

/* From this many query rows a sequence's attention runs on tensor cores (bf16 Q, K, V and
 * probabilities, float32 softmax and sums) unless DOCQA_CUDA_F32=1 or DOCQA_CUDA_TC_ATTN=0. */
#define DQ_CUDA_TC_MIN_ROWS 64

#include "backend.h"

#include <glib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA backend on GPU `device` (0-based). Fails with DQ_ERR_DEVICE and a message saying
 * why: built without CUDA, no GPU visible, device index out of range, the driver too old for
 * this build's CUDA runtime (both versions named), or too little GPU memory. */
DqBackend *dq_backend_cuda_new(int device, GError **err);

/* TRUE when `be` is a CUDA backend. */
gboolean dq_backend_is_cuda(const DqBackend *be);

/* Waits for the queued work (not while a step is recorded) and reports the first CUDA error seen
 * so far (DQ_ERR_DEVICE); TRUE for any other backend. */
gboolean dq_backend_cuda_check(DqBackend *be, GError **err);

/* Turns the recording of decode steps as CUDA graphs on or off for `be` (the default comes
 * from DOCQA_CUDA_GRAPHS); no effect on other backends. For tests and benchmarks. */
void dq_backend_cuda_set_graphs(DqBackend *be, gboolean on);

/* What the graphs of `be` did so far. */
typedef struct {
    gboolean on;      /* graphs currently on */
    int instantiated; /* graphs built (a new step shape, or an update refused) */
    int updated;      /* graphs updated in place for a step of a known shape */
    int update_refused;
    int replayed; /* steps run as a graph */
    int failed;   /* recordings that failed: those steps were redone with plain launches */
} DqCudaGraphStats;

/* FALSE (and *out zeroed) when `be` is not a CUDA backend. */
gboolean dq_backend_cuda_graph_stats(DqBackend *be, DqCudaGraphStats *out);

/* Number of CUDA devices this process can use: 0 without CUDA, without a driver or without a
 * GPU. When it is 0 and `why` is not NULL, *why is set to the reason (g_free it). */
int dq_cuda_device_count(char **why);

/* Parses a device name: "cpu", "cuda" (GPU 0) or "cuda:I". *cuda_index is -1 for the CPU
 * (the fast backend) and -2 for "cpu-ref" (the reference). */
gboolean dq_device_parse(const char *device, int *cuda_index, GError **err);

/* The backend for a device name (NULL means "cpu"). */
DqBackend *dq_backend_open_device(const char *device, GError **err);

#ifdef __cplusplus
}
#endif

#endif
