/* The ops around the products and attention: LayerNorm and RMSNorm, RoPE, element-wise ops,
 * patchify and pixel shuffle, embedding lookups, and argmax of rows (greedy tokens). */
#include "activation.h"
#include "cuda_internal.h"

/* ---- norms */

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

void cuda_layernorm(DqBackend *be, float *y, const float *x, const DqWeight *w, const DqWeight *b,
                    int n, int dim, float eps) {
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

void cuda_rmsnorm(DqBackend *be, float *y, const float *x, const DqWeight *w, int n, int dim,
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
                            int head_dim, float attention_factor) {
    int half = head_dim / 2;
    size_t total = (size_t)n * half;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(t / half), i = (int)(t % half);
        /* As the CPU reference (and transformers): the angle in float32, cos/sin of it, times
         * the factor (yarn's; 1 changes no bit). */
        float angle = (float)pos[r] * inv_freq[i];
        float cs = __fmul_rn((float)cos((double)angle), attention_factor);
        float sn = __fmul_rn((float)sin((double)angle), attention_factor);
        float *xr = x + (size_t)r * n_heads * head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = xr + (size_t)h * head_dim;
            float a = v[i], b = v[i + half];
            v[i] = a * cs - b * sn;
            v[i + half] = b * cs + a * sn;
        }
    }
}

void cuda_rope(DqBackend *be, float *x, const int32_t *pos, int n, int n_heads, int head_dim,
               const DqRope *rope) {
    CudaCtx *c = ctx_of(be);
    if (n <= 0 || c->sticky != cudaSuccess)
        return;
    int half = head_dim / 2;
    if (half > 256) {
        record(c, cudaErrorInvalidValue, "rope: head_dim over 512");
        return;
    }
    /* The table the ops queued so far leave in inv_freq: while recording, a recorded copy's
     * (it runs only if the recording is replayed, so inv_rope waits for graph_end). */
    const gboolean pending = c->capturing && c->cap_inv.half != 0;
    const DqRope *have = pending ? &c->cap_inv : &c->inv_rope;
    if (rope->half != half) {
        record(c, cudaErrorInvalidValue, "rope: the table is not of this head_dim");
        return;
    }
    if (!dq_rope_equal(have, rope)) {
        /* The host's table (rope.h), bit for bit what the CPU backends use. */
        const void *staged = stage_small(c, rope->inv_freq, (size_t)half * sizeof(float));
        if (staged == NULL)
            return;
        CK(c, cudaMemcpyAsync(c->inv_freq, staged, (size_t)half * sizeof(float),
                              cudaMemcpyDeviceToDevice, c->stream));
        if (c->capturing)
            c->cap_inv = *rope;
        else
            c->inv_rope = *rope;
    }
    const int32_t *dpos = (const int32_t *)stage_small(c, pos, (size_t)n * sizeof(int32_t));
    if (dpos == NULL)
        return;
    rope_kernel<<<grid_for((size_t)n * half, 256), 256, 0, c->stream>>>(
        x, dpos, c->inv_freq, n, n_heads, head_dim, rope->attention_factor);
    CK_LAUNCH(c, "rope");
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

/* Any hidden_act, by activation.h's formulas (the ones the CPU reference computes). */
__global__ void act_kernel(float *x, size_t n, SmolvlmAct act) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = dq_act_one(act, x[i]);
}

__global__ void mul_kernel(float *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] *= x[i];
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

void cuda_gelu_tanh(DqBackend *be, float *x, size_t n) {
    CudaCtx *c = ctx_of(be);
    if (n == 0 || c->sticky != cudaSuccess)
        return;
    gelu_tanh_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(x, n);
    CK_LAUNCH(c, "gelu_tanh");
}

void cuda_silu_mul(DqBackend *be, float *gate, const float *up, size_t n) {
    CudaCtx *c = ctx_of(be);
    if (n == 0 || c->sticky != cudaSuccess)
        return;
    silu_mul_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(gate, up, n);
    CK_LAUNCH(c, "silu_mul");
}

void cuda_act(DqBackend *be, float *x, size_t n, SmolvlmAct act) {
    CudaCtx *c = ctx_of(be);
    if (n == 0 || act == DQ_ACT_LINEAR || c->sticky != cudaSuccess)
        return;
    act_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(x, n, act);
    CK_LAUNCH(c, "act");
}

void cuda_mul(DqBackend *be, float *y, const float *x, size_t n) {
    CudaCtx *c = ctx_of(be);
    if (n == 0 || c->sticky != cudaSuccess)
        return;
    mul_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(y, x, n);
    CK_LAUNCH(c, "mul");
}

void add_rows(CudaCtx *c, float *y, const float *x, size_t n) {
    if (n == 0 || c->sticky != cudaSuccess)
        return;
    add_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(y, x, n);
    CK_LAUNCH(c, "add");
}

void cuda_add(DqBackend *be, float *y, const float *x, size_t n) {
    add_rows(ctx_of(be), y, x, n);
}

void cuda_add_broadcast(DqBackend *be, float *y, const DqWeight *w, int n_outer) {
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

void cuda_patchify(DqBackend *be, float *out, const float *pixels, int tiles, int channels,
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

void cuda_pixel_shuffle(DqBackend *be, float *out, const float *in, int tiles, int side, int dim,
                        int s) {
    CudaCtx *c = ctx_of(be);
    int oside = side / s;
    size_t total = (size_t)tiles * oside * oside * dim * s * s;
    if (total == 0 || c->sticky != cudaSuccess)
        return;
    pixel_shuffle_kernel<<<grid_for(total, 256), 256, 0, c->stream>>>(out, in, tiles, side, dim, s);
    CK_LAUNCH(c, "pixel_shuffle");
}

void cuda_embed(DqBackend *be, float *out, const DqWeight *table, const int32_t *ids, int n) {
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

void cuda_argmax_rows(DqBackend *be, int32_t *ids, const float *x, int n, int cols) {
    CudaCtx *c = ctx_of(be);
    for (int r0 = 0; r0 < n; r0 += DQ_CUDA_ARGMAX_ROWS) {
        int rows = MIN(n - r0, DQ_CUDA_ARGMAX_ROWS);
        if (c->sticky == cudaSuccess) {
            argmax_rows_kernel<<<rows, 256, 0, c->stream>>>(c->ids, x + (size_t)r0 * cols, cols);
            CK_LAUNCH(c, "argmax_rows");
        }
        /* 4-byte values: the float download copies their bits (and, recorded, fills ids at the
         * replay, as any download). After an error it gives zeros, as every download does:
         * never the ids a caller's array held from the step before. */
        cuda_download(be, (float *)(void *)(ids + r0), (const float *)(const void *)c->ids, rows);
    }
}
