/* Attention: tensor-core flash kernels for vision tiles and prompts, a float32 flash kernel for
 * short chunks, the decode kernels over the KV cache (by KV group, keys split in runs and merged),
 * the KV cache appends, and the segments of a decoder batch in two launches a layer. */
#include "cuda_internal.h"

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

#define ATT_BQ    DQ_CUDA_ATT_BQ /* query rows per block of the flash kernel */
#define ATT_BK    DQ_CUDA_ATT_BK /* keys per shared-memory tile (one per lane) */
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
#define DG_WARPS DQ_CUDA_DG_WARPS
#define DG_RMAX  DQ_CUDA_DG_RMAX      /* rows a block: query heads a KV head x query rows */
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
        /* Marked only once it took: a call that failed while a step was recorded is kept
         * apart from the sticky error, and the step's plain redo must ask again. */
        cudaError_t e = cudaFuncSetAttribute(
            attn_tc_kernel<HDP, KV>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
        record(c, e, "cudaFuncSetAttribute(attn_tc_kernel, MaxDynamicSharedMemorySize)");
        opted_in[c->device % 64] = e == cudaSuccess;
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

#define ATT_DECODE_ROWS DQ_CUDA_ATT_DECODE_ROWS /* launch_plan.h */

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
        launch_to_bf16(c, qb, q, n_in);
        launch_to_bf16(c, kb, k, n_in);
        launch_to_bf16(c, vb, v, n_in);
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
    /* Decode rows: a segment goes to the group kernel when its rows of every head of a group
     * fit a block, and to the per-head kernel else; decided by the segment's own row count
     * (q_lo, q_hi), so that its result does not depend on its batch-mates' (launch_plan.h) */
    if (max_q <= ATT_DECODE_ROWS) {
        const DqDecodePlan pl = dq_decode_plan(a.q_lo, a.q_hi, max_q, a.kv_max, a.n_heads,
                                               a.n_kv_heads, c->decode_group && NCH <= 2);
        if (pl.group) {
            AttArgs b = a;
            b.q_hi = pl.group_hi;
            b.part_runs = pl.part_runs;
            b.part_rows = pl.part_rows;
            float *part = NULL;
            if (b.part_runs > 1) {
                part = (float *)pool_get(c, (size_t)n_seq * a.n_kv_heads * b.part_runs *
                                                b.part_rows * (a.head_dim + 2) * sizeof(float));
                if (part == NULL) {
                    record(c, cudaErrorMemoryAllocation, "decode attention's run states");
                    return;
                }
            }
            dim3 grid(a.n_kv_heads, n_seq, b.part_runs);
            const size_t smem =
                dq_decode_group_smem(a.head_dim, a.n_heads / a.n_kv_heads, pl.group_q);
            attn_decode_group_kernel<NCH, KV>
                <<<grid, DG_WARPS * 32, smem, c->stream>>>(out, q, k, v, b, segs, part);
            CK_LAUNCH(c, "attention (decode by KV group)");
            if (part != NULL) {
                attn_decode_merge_kernel<<<dim3(a.n_kv_heads, n_seq), 128, 0, c->stream>>>(
                    out, q, b, segs, part);
                CK_LAUNCH(c, "attention (decode runs)");
                pool_put(c, part); /* the stream orders its next user after the merge */
            }
        }
        if (pl.head) {
            AttArgs r = a;
            r.q_lo = pl.head_lo;
            dim3 grid(max_q, a.n_heads, n_seq);
            attn_decode_kernel<NCH, KV>
                <<<grid, ATT_WARPS * 32, 0, c->stream>>>(out, q, k, v, r, segs);
        }
    } else {
        dim3 grid((max_q + ATT_BQ - 1) / ATT_BQ, a.n_heads, n_seq);
        attn_flash_kernel<NCH, KV>
            <<<grid, ATT_WARPS * 32, dq_flash_smem(a.head_dim), c->stream>>>(out, q, k, v, a, segs);
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
    return dq_att_class(n_q, c->tc_attn && tc_head_ok(head_dim)) == DQ_ATT_TC;
}

void cuda_attention(DqBackend *be, float *out, const float *q, const float *k, const float *v,
                    const DqAttention *da) {
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
void cuda_attention_segments(DqBackend *be, float *out, const float *q, const float *k_new,
                             const float *v_new, const DqAttnSegment *segs, int n_segs,
                             const DqAttention *shape) {
    CudaCtx *c = ctx_of(be);
    if (n_segs <= 0 || c->sticky != cudaSuccess || !head_layout_ok(c, shape, n_segs))
        return;
    /* Three kernels, each over the segments of its class (the others' blocks return at once):
     * decode rows, short chunks (the float32 flash kernel), prompts (tensor cores). */
    const gboolean tc = c->tc_attn && tc_head_ok(shape->head_dim);
    int max_of[3] = {0, 0, 0}, kv_max = 0; /* by DqAttClass */
    gboolean caches_aligned = TRUE;
    for (int s = 0; s < n_segs; s++) {
        const int nq = segs[s].n_q;
        caches_aligned = caches_aligned && aligned16(segs[s].k_cache) && aligned16(segs[s].v_cache);
        kv_max = MAX(kv_max, segs[s].n_past + nq);
        const DqAttClass k = dq_att_class(nq, tc);
        max_of[k] = MAX(max_of[k], nq);
    }
    const int max_dec = max_of[DQ_ATT_DECODE], max_mid = max_of[DQ_ATT_MID],
              max_tc = max_of[DQ_ATT_TC];
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
        dq_att_class_rows(DQ_ATT_DECODE, tc, &a.q_lo, &a.q_hi);
        dispatch_attention(c, out, q, NULL, NULL, max_dec, n_segs, a, dsegs);
    }
    if (max_mid > 0) {
        dq_att_class_rows(DQ_ATT_MID, tc, &a.q_lo, &a.q_hi);
        dispatch_attention(c, out, q, NULL, NULL, max_mid, n_segs, a, dsegs);
    }
    if (max_tc > 0) {
        dq_att_class_rows(DQ_ATT_TC, tc, &a.q_lo, &a.q_hi);
        dispatch_tc(c, out, q, NULL, NULL, max_tc, n_segs, a, dsegs, caches_aligned);
    }
}

/* The flash kernels take more shared memory than a launch may by default. */
cudaError_t attention_init(void) {
    cudaError_t e;
    if ((e = cudaFuncSetAttribute(attn_flash_kernel<4, float>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)dq_flash_smem(128))) != cudaSuccess ||
        (e = cudaFuncSetAttribute(attn_flash_kernel<3, float>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)dq_flash_smem(96))) != cudaSuccess ||
        (e = cudaFuncSetAttribute(attn_flash_kernel<4, __half>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)dq_flash_smem(128))) != cudaSuccess ||
        (e = cudaFuncSetAttribute(attn_flash_kernel<3, __half>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)dq_flash_smem(96))) != cudaSuccess)
        return e;
    return cudaSuccess;
}
