/* The model's tensor operations behind one small interface.
 *
 * The forward pass (smolvlm.c) is written only in terms of these operations, so a backend (the
 * CPU reference here, CUDA, faster CPU paths) implements this struct and nothing else, and each
 * backend is tested op by op against the CPU reference (tests/model/test_backend_cpu.c checks the
 * reference itself against naive double-precision loops).
 *
 * Memory: every float buffer an op touches was obtained from the same backend's alloc() (on the
 * CPU: host memory; on a GPU: device memory). upload()/download() move data between host and
 * backend buffers. Weights are prepared once by weight_init() from a safetensors tensor: the
 * backend decides their storage (CPU reference: F32 tensors are used straight from the mapping
 * when aligned, BF16/F16 are upcast to float32 once at load — exact — and all math is float32).
 *
 * Layouts are row-major; `n` is always a number of rows. Shapes are given in brackets.
 */
#ifndef DQ_BACKEND_H
#define DQ_BACKEND_H

#include "rope.h"
#include "safetensors.h"

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef struct DqBackend DqBackend;

/* A vision tile as the image processor leaves it: uint8 values in channel planes, bytes
 * [channels][tile][tile], and the float32 pixel value of each byte in each channel, lut
 * [channels][256]: pixel (c, y, x) = lut[c * 256 + bytes[(c * tile + y) * tile + x]]. hash: the
 * bytes' XXH3-64 (image_processor.h's dq_tile_hash), computed with the tile, by which smolvlm
 * finds identical tiles to encode once (confirming byte for byte); the backends do not read it. */
typedef struct {
    const uint8_t *bytes;
    const float *lut;
    uint64_t hash;
} DqPixelTile;

/* A prepared weight: a matrix [rows, cols] (a linear layer's [out, in], an embedding table
 * [vocab, dim]) or a vector (rows = 1: biases, norm weights). */
typedef struct {
    int rows, cols;
    const float *data; /* backend memory: mapped file or owned copy */
    void *owned;       /* what weight_free releases; NULL when data points into the mapping */
    int dtype; /* DqDtype of data: DQ_DTYPE_F32 (0) unless a backend keeps another storage (the
                * fast CPU backend keeps BF16 matrices as mapped, and has private tags:
                * DQ_WEIGHT_Q8, int8 blocks of 32 with a float scale each, made by
                * weight_init_q8, cpu_q8.h; and bf16 matrices of weight_init_bf16) */
} DqWeight;

/* Scaled dot-product attention over n_seq independent sequences packed one after another:
 * q [n_seq, n_q, n_heads * head_dim], k and v [n_seq, n_kv, n_kv_heads * head_dim] with row
 * strides q_stride / kv_stride floats (>= the packed width; a KV cache has kv_stride = its row),
 * out [n_seq, n_q, n_heads * head_dim] packed. Query head h reads KV head h / (n_heads /
 * n_kv_heads) (grouped-query attention). Causal: query row i (absolute position q_pos0 + i) sees
 * keys 0 .. q_pos0 + i; otherwise all n_kv keys. Softmax in float32. */
typedef struct {
    int n_seq;
    int n_q, n_kv;
    int n_heads, n_kv_heads, head_dim;
    int q_stride, kv_stride; /* floats between consecutive rows */
    size_t q_seq_stride;     /* floats between sequences in q */
    size_t kv_seq_stride;    /* floats between sequences in k and v */
    int q_pos0;
    gboolean causal;
    float scale;
    /* The KV caches hold IEEE float16 (uint16_t, kv_stride of them a row) instead of float32.
     * Only attention_segments reads it, on backends whose kv_f16 is TRUE; new rows come as
     * float32 and are rounded (to nearest even) as they are written. */
    gboolean kv_f16;
    /* `--weights bf16`: the model's products are bf16 x bf16 anyway, and a backend may round q,
     * k, the probabilities and v to bf16 for attention's two products too (the fast backend on
     * AMX tiles, or on vdpbf16ps where the CPU has AVX512-BF16 alone; softmax stays float32).
     * Others ignore it: the reference is exact. */
    gboolean bf16_products;
} DqAttention;

/* One segment of attention_segments(): a sequence with its own KV cache [capacity, kv_stride]
 * (one layer's), its rows row0 .. row0 + n_q - 1 of the call's q, new k / v and out, and the
 * n_past positions its cache already holds. steps: each query row computed as a one-row
 * segment at its position would be, to the bit (speculative decoding's check); only on
 * backends with attention_steps. */
typedef struct {
    float *k_cache, *v_cache;
    int row0, n_q, n_past;
    gboolean steps;
} DqAttnSegment;

struct DqBackend {
    const char *name;
    void *ctx;
    void (*destroy)(DqBackend *be);

    /* ---- memory */
    float *(*alloc)(DqBackend *be, size_t n_floats); /* NULL when out of memory */
    void (*release)(DqBackend *be, float *buf);
    void (*upload)(DqBackend *be, float *dst, const float *host_src, size_t n);
    void (*download)(DqBackend *be, float *host_dst, const float *src, size_t n);
    void (*copy)(DqBackend *be, float *dst, const float *src, size_t n);
    gboolean (*weight_init)(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                            GError **err);
    void (*weight_free)(DqBackend *be, DqWeight *w);

    /* ---- ops */
    /* y [n, w.rows] = x [n, w.cols] . w^T (+ bias [w.rows] when bias != NULL). */
    void (*matmul)(DqBackend *be, float *y, const float *x, const DqWeight *w, const DqWeight *bias,
                   int n);
    /* y [n, dim] = (x - mean) / sqrt(var + eps) * w + b, per row (biased variance). */
    void (*layernorm)(DqBackend *be, float *y, const float *x, const DqWeight *w, const DqWeight *b,
                      int n, int dim, float eps);
    /* y [n, dim] = x * rsqrt(mean(x^2) + eps) * w, per row. */
    void (*rmsnorm)(DqBackend *be, float *y, const float *x, const DqWeight *w, int n, int dim,
                    float eps);
    /* Rotary embedding in place, rotate_half convention (dims i and i + head_dim/2 pair up):
     * x [n, n_heads * head_dim], row r at position pos[r], by the table rope (rope->half ==
     * head_dim / 2): angle = pos * inv_freq[i] in float32, cos and sin of it times
     * attention_factor. */
    void (*rope)(DqBackend *be, float *x, const int32_t *pos, int n, int n_heads, int head_dim,
                 const DqRope *rope);
    void (*attention)(DqBackend *be, float *out, const float *q, const float *k, const float *v,
                      const DqAttention *a);
    /* x [n] = gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place. */
    void (*gelu_tanh)(DqBackend *be, float *x, size_t n);
    /* gate [n] = silu(gate) * up. */
    void (*silu_mul)(DqBackend *be, float *gate, const float *up, size_t n);
    /* x [n] = act(x) in place, any hidden_act (config.h's SmolvlmAct), as torch computes it in
     * float32: model/activation.h's dq_act_one, each step of transformers' formula rounded to
     * float as torch rounds it (within 1.4e-6 of torch's ACT2FN modules over [-30, 30]; NaN
     * stays NaN through gelu_10's and relu6's clips, as torch.clip keeps it). The common
     * activations have fused paths besides (gelu_tanh, silu_mul, matmul_gelu, mlp_gelu_add). */
    void (*act)(DqBackend *be, float *x, size_t n, SmolvlmAct act);
    /* y [n] *= x [n] (a text MLP gated by another activation than SiLU: act(gate) * up). */
    void (*mul)(DqBackend *be, float *y, const float *x, size_t n);
    /* y [n] += x [n]. */
    void (*add)(DqBackend *be, float *y, const float *x, size_t n);
    /* y [n_outer, w.rows * w.cols] += w, repeated over the outer dim (position embeddings). */
    void (*add_broadcast)(DqBackend *be, float *y, const DqWeight *w, int n_outer);
    /* The patch convolution's im2col: pixels [tiles, channels, tile, tile] (as upload_pixels
     * left them) ->
     * out [tiles, side * side, channels * patch * patch], side = tile / patch (floor: pixels past
     * side * patch are never seen), patches row-major, features in conv weight order (c, y, x). */
    void (*patchify)(DqBackend *be, float *out, const float *pixels, int tiles, int channels,
                     int tile, int patch);
    /* Idefics3 pixel shuffle: in [tiles, side * side, dim] -> out [tiles, (side/s)^2, dim*s*s];
     * output token (I, J) = concat over m, k < s of in[(I*s + m) * side + (J*s + k)]. */
    void (*pixel_shuffle)(DqBackend *be, float *out, const float *in, int tiles, int side, int dim,
                          int s);
    /* out [n, table.cols] = table[ids[r]] (ids already validated). */
    void (*embed)(DqBackend *be, float *out, const DqWeight *table, const int32_t *ids, int n);
    /* ids (host) [n] = dq_argmax of each row of x [n, cols]: a greedy step's tokens where its
     * logits are, so that a GPU sends back n ids, not n x vocab floats. */
    void (*argmax_rows)(DqBackend *be, int32_t *ids, const float *x, int n, int cols);

    /* ---- optional ops and promises (0 / NULL: none) */
    /* As weight_init, but a matrix may be stored quantized to 8 bits (`--weights int8`: the
     * decoder's linear layers), its products then approximate (cosine >= 0.999 to float32 on
     * the fixtures); vectors and matrices the backend cannot quantize are kept as weight_init
     * keeps them. NULL: the backend has no 8-bit weights (the reference, CUDA). */
    gboolean (*weight_init_q8)(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                               GError **err);
    /* As weight_init, but a matrix is kept as bf16 (`--weights bf16`: a float32 or float16 one
     * rounded to nearest even at load; a bf16 one as stored), and its products with many rows
     * may round the activations to bf16 too (AMX or vdpbf16ps where the CPU has them): results
     * approximate. Vectors as weight_init keeps them. NULL: no such option (the reference; CUDA,
     * whose linear layers are bf16 anyway). */
    gboolean (*weight_init_bf16)(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                                 GError **err);
    /* Up to this many rows, matmul computes every row exactly as it would alone, whatever n
     * is: the forward pass may then put rows of several requests into one call (the decode
     * step's batch) without changing any request's result. 0 for the CPU reference. */
    int matmul_row_invariant_max;
    /* From this many rows on, matmul computes every row the same whatever n is (>= this): calls
     * whose parts each have at least this many rows (tiles, prompts) may be merged into one.
     * 0: no such promise (the reference: OpenBLAS's rounding depends on the row count). */
    int matmul_row_invariant_min;
    /* A prompt prefilled in parts: rows [0, p) in earlier calls (their KV cache rows possibly
     * copied into another sequence's cache: the generator's prefix cache, generate.h), rows
     * [p, n) in later ones. Returns how many rows of the prompt each call must compute for every
     * row to get the bits a single call gives it (products row-invariant from that many rows
     * on, and a row's attention independent of the row its call starts at), for the model's
     * attention `shape` (heads, head_dim, kv_f16, bf16_products). NULL or 0: no such promise
     * (the reference: OpenBLAS's rounding depends on the row count). */
    int (*prompt_split_min)(DqBackend *be, const DqAttention *shape);
    /* Tiles the vision encoder takes at a time (0: 32, what fills a GPU). A chunk's activations
     * are allocated for it (256M: 35 MB a tile) and pass through each layer a dozen times, so
     * a CPU wants few: at 2 tiles the fast backend's 256M page took 13.3 s against 15.6 s at
     * 32 (`--weights bf16`: 4.9 s against 7.3 s), and 1232 MB of peak RSS against 1825 MB. */
    int vision_tile_chunk;
    /* Prompt rows the backend would take in one forward call (0: the generator's default,
     * 2048): larger calls make larger products, which a GPU needs to be filled. Activations
     * grow with it (2.2B: 112 KB of workspace a row). */
    int prefill_rows;
    /* The decoder's attention for a batch of sequences in one call: each segment's new rows of
     * k_new / v_new are written into its caches at n_past .., then its queries (positions n_past
     * + i) attend causally over n_past + n_q keys, as attention() with n_seq 1 would. shape
     * gives the heads, head_dim, q_stride (q and out rows), kv_stride (k_new, v_new and cache
     * rows) and scale; its n_seq, n_q, n_kv, q_pos0 and causal fields are not read. NULL: the
     * caller loops over copy() and attention() (dq_attention_segments does either), which is
     * what a GPU would spend a launch a sequence and layer on. */
    void (*attention_segments)(DqBackend *be, float *out, const float *q, const float *k_new,
                               const float *v_new, const DqAttnSegment *segs, int n_segs,
                               const DqAttention *shape);
    /* attention_segments takes DqAttnSegment.steps (the fast CPU backend: the rows together in
     * one decode job, each key read once for all of them). FALSE: the caller passes such rows
     * as one-row segments. */
    gboolean attention_steps;
    /* y = gelu_tanh(x . w^T + bias): matmul then gelu_tanh, which a backend may fuse (the CUDA
     * backend: cublasLt's GELU epilogue, saving a pass over the vision MLP's widest
     * activations). NULL: matmul, then gelu_tanh. */
    void (*matmul_gelu)(DqBackend *be, float *y, const float *x, const DqWeight *w,
                        const DqWeight *bias, int n);
    /* y += x . w^T + bias: the residual add after a product, which a backend may do in the
     * product (the CUDA backend: cublasLt with y as C, or the row-invariant kernel), sparing a
     * pass over y and x . w^T. scratch: n x w.rows floats it may use. NULL: matmul into
     * scratch, then add. */
    void (*matmul_add)(DqBackend *be, float *y, const float *x, const DqWeight *w,
                       const DqWeight *bias, int n, float *scratch);
    /* ys[i] = x . ws[i]^T + biases[i] (NULL: none) for i < count, weights of one width: the
     * products of one input (q, k and v; gate and up), which a backend may prepare once (the
     * CUDA backend rounds x to bf16 once, not once a product). NULL: matmul each. */
    void (*matmul_many)(DqBackend *be, float *const *ys, const float *x, const DqWeight *const *ws,
                        const DqWeight *const *biases, int count, int n);
    /* y += fc2(gelu_tanh(fc1(x))): the vision MLP with its residual add (w1 [hidden, dim],
     * w2 [dim, hidden]). hidden: n x w1.rows floats the backend may use in any precision (the
     * CUDA backend keeps fc1's output there as bf16, which fc2 rounds its input to anyway);
     * scratch: n x w2.rows floats, which may be x itself (x is not read once fc1 is done).
     * NULL: matmul_gelu into hidden, then matmul_add. */
    void (*mlp_gelu_add)(DqBackend *be, float *y, const float *x, const DqWeight *w1,
                         const DqWeight *b1, const DqWeight *w2, const DqWeight *b2, int n,
                         float *hidden, float *scratch);
    /* Uploads a vision chunk's tiles into dst (dq_pixel_buffer_floats() floats) in the form
     * patchify() reads: float32 pixel values [n_tiles, channels, tile, tile] for the CPU
     * backends; the bytes and tables as they are for the CUDA backend, whose patchify looks the
     * values up (a quarter of float32's bytes to stage and send; the same values). The CUDA
     * backend copies on a stream of its own, beside the work queued before: dst must be used
     * by nothing but upload_pixels and patchify until it is released. NULL: the values
     * expanded on the host, then upload() a tile at a time. */
    void (*upload_pixels)(DqBackend *be, float *dst, const DqPixelTile *tiles, int n_tiles,
                          int channels, int tile);
    /* attention_segments takes float16 caches (DqAttention.kv_f16): half the bytes a decode
     * step streams from its caches. Approximate (11-bit mantissas), so the model uses it only
     * where results are approximate anyway (--weights int8). FALSE: float32 caches only. */
    gboolean kv_f16;
    /* float16 caches with the stored weights too, not only in the approximate modes: for a
     * backend whose products are approximate anyway (CUDA with DOCQA_CUDA_KV_F16=1: half the
     * caches' memory, and half what a decode step streams from them). */
    gboolean kv_f16_stored;

    /* ---- optional: a step recorded and replayed as one unit (NULL: not supported; the CPU
     * backends). The CUDA backend records the ops into a CUDA graph, so that the decode step's
     * hundreds of small kernels cost one launch (see backend_cuda.h: off unless
     * DOCQA_CUDA_GRAPHS=1).
     *
     * graph_begin(be, key): from here to graph_end, ops are recorded instead of run. TRUE when
     * recording started; FALSE when the backend runs ops plainly (graphs off, or not possible
     * now): then nothing changes and graph_end must not be called. `key` names the step's
     * shape (the same key, the same sequence of ops with other arguments: the recording then
     * updates the graph made for that key instead of building a new one). While recording:
     * alloc() and release() must not be called, and download() fills its host destination only
     * when graph_end returns TRUE.
     * graph_end(be, run): stops recording; with run, replays the recorded ops and waits for
     * them. TRUE when they ran (the downloads' destinations are filled; errors are reported as
     * for plain ops); FALSE when the recording failed or run was FALSE: nothing ran, and the
     * caller redoes the step with plain ops. */
    gboolean (*graph_begin)(DqBackend *be, uint64_t key);
    gboolean (*graph_end)(DqBackend *be, gboolean run);
};

/* The CPU reference backend (OpenBLAS sgemm + OpenMP, float32). */
DqBackend *dq_backend_cpu_new(GError **err);
/* The fast CPU backend (backend_cpu_fast.c; device "cpu", the reference is "cpu-ref"): BF16
 * weights kept as stored, AVX2 kernels, tiled attention; tested op by op against the reference. */
DqBackend *dq_backend_cpu_fast_new(GError **err);
void dq_backend_free(DqBackend *be);

/* The start of every weight_init: w zeroed with its shape, TRUE when t has rows x cols
 * elements (else an error naming the tensor and its file). */
gboolean dq_weight_shape(DqWeight *w, const DqTensor *t, int rows, int cols, GError **err);

/* be->matmul_gelu when the backend has it, else matmul and gelu_tanh. */
void dq_matmul_gelu(DqBackend *be, float *y, const float *x, const DqWeight *w,
                    const DqWeight *bias, int n);

/* be->matmul_add when the backend has it, else matmul into scratch and add. */
void dq_matmul_add(DqBackend *be, float *y, const float *x, const DqWeight *w, const DqWeight *bias,
                   int n, float *scratch);

/* be->matmul_many when the backend has it, else be->matmul for each weight. */
void dq_matmul_many(DqBackend *be, float *const *ys, const float *x, const DqWeight *const *ws,
                    const DqWeight *const *biases, int count, int n);

/* be->mlp_gelu_add when the backend has it, else dq_matmul_gelu into hidden and dq_matmul_add. */
void dq_mlp_gelu_add(DqBackend *be, float *y, const float *x, const DqWeight *w1,
                     const DqWeight *b1, const DqWeight *w2, const DqWeight *b2, int n,
                     float *hidden, float *scratch);

/* The first index of x's maximum (torch.argmax; the greedy pick): index i > 0 wins when
 * x[i] > every value before it, so NaN never wins past index 0, and wins there. */
int dq_argmax(const float *x, int n);

/* The floats a buffer needs to hold n_tiles tiles in any backend's upload_pixels form. */
size_t dq_pixel_buffer_floats(int n_tiles, int channels, int tile);

/* Tiles' pixel values into dst [n_tiles, channels, tile, tile] (host memory). */
void dq_pixels_expand(float *dst, const DqPixelTile *tiles, int n_tiles, int channels, int tile);

/* be->upload_pixels when the backend has it, else dq_pixels_expand and be->upload a tile at a
 * time. */
void dq_upload_pixels(DqBackend *be, float *dst, const DqPixelTile *tiles, int n_tiles,
                      int channels, int tile);

/* be->attention_segments when the backend has it, else the same with copy() and attention()
 * a segment at a time. */
void dq_attention_segments(DqBackend *be, float *out, const float *q, const float *k_new,
                           const float *v_new, const DqAttnSegment *segs, int n_segs,
                           const DqAttention *shape);

#endif
