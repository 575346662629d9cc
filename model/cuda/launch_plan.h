/* The CUDA backend's host-side shape decisions, apart from CUDA so that they are tested on the
 * CPU (tests/model/test_cuda_plan.c) in sessions without a GPU:
 * - which attention kernel takes a segment of attention_segments (cuda_attention.cu): decode
 *   rows, the float32 flash kernel or the tensor-core kernels, by the segment's own row count;
 * - among decode rows, which segments the group kernel takes (a block a KV head, every query
 *   head of the group a row) and which the per-head kernel, and how the group kernel's runs'
 *   states are laid out (launch_attention);
 * - the shared memory those kernels are launched with: the decode group kernel's asks for no
 *   opt-in, so it must stay within 48 KiB;
 * - the caching pool's size classes and which cached block serves a request (cuda_memory.cu).
 * Header-only, plain C (static inline), as graph_table.h.
 */
#ifndef DQ_CUDA_LAUNCH_PLAN_H
#define DQ_CUDA_LAUNCH_PLAN_H

#include <glib.h>
#include <limits.h>
#include <stddef.h>

#include "backend_cuda.h" /* DQ_CUDA_TC_MIN_ROWS */
#include "kernel_math.h"  /* dq_decode_runs */

/* Query rows up to which a segment is decode rows: the decode kernels parallelise over keys, the
 * flash kernels over query rows. */
#define DQ_CUDA_ATT_DECODE_ROWS 4
/* attn_decode_group_kernel: warps a block, and rows a block (query heads of a KV head x query
 * rows), its registers' bound. */
#define DQ_CUDA_DG_WARPS 4
#define DQ_CUDA_DG_RMAX  16
/* attn_flash_kernel: query rows a block, keys a shared-memory tile. */
#define DQ_CUDA_ATT_BQ 32
#define DQ_CUDA_ATT_BK 32
/* Dynamic shared memory a launch gets without cudaFuncAttributeMaxDynamicSharedMemorySize. */
#define DQ_CUDA_SMEM_DEFAULT ((size_t)48 << 10)

typedef enum { DQ_ATT_DECODE, DQ_ATT_MID, DQ_ATT_TC } DqAttClass;

/* The kernels that take a segment of n_q rows; tc: whether the tensor-core kernels take prompts
 * at all (tensor-core attention on, and a kernel for the head size). Decided by the segment
 * alone, so that its result does not depend on what it is batched with. */
static inline DqAttClass dq_att_class(int n_q, gboolean tc) {
    if (n_q <= DQ_CUDA_ATT_DECODE_ROWS)
        return DQ_ATT_DECODE;
    return tc && n_q >= DQ_CUDA_TC_MIN_ROWS ? DQ_ATT_TC : DQ_ATT_MID;
}

/* The row counts [*lo, *hi] of the segments that a class's launch takes: its blocks of other
 * segments return at once. */
static inline void dq_att_class_rows(DqAttClass k, gboolean tc, int *lo, int *hi) {
    switch (k) {
    case DQ_ATT_DECODE:
        *lo = 1;
        *hi = DQ_CUDA_ATT_DECODE_ROWS;
        break;
    case DQ_ATT_MID:
        *lo = DQ_CUDA_ATT_DECODE_ROWS + 1;
        *hi = tc ? DQ_CUDA_TC_MIN_ROWS - 1 : INT_MAX;
        break;
    default:
        *lo = DQ_CUDA_TC_MIN_ROWS;
        *hi = INT_MAX;
        break;
    }
}

/* The decode launches of a call whose segments have n_q in [q_lo, q_hi] rows, at most max_q
 * (<= DQ_CUDA_ATT_DECODE_ROWS), and at most kv_max keys; group: attn_decode_group_kernel is on
 * for this head size. The group kernel takes the segments of up to group_hi rows, so that a
 * block holds every query head of a KV group for each of their rows; the per-head kernel the
 * rest. Which kernel takes a segment depends on its rows alone; the states' layout (runs and
 * rows) on the whole call, which changes where they are kept, not what is computed. */
typedef struct {
    int group;     /* attn_decode_group_kernel launched, over n_q in [MAX(q_lo, 1), group_hi] */
    int group_hi;  /* ... */
    int group_q;   /* the most rows of its segments: its shared memory, part_rows / G */
    int part_runs; /* its grid's z: runs of DQ_CUDA_DECODE_SPLIT keys a (sequence, KV head) */
    int part_rows; /* rows a run's states hold; states are kept when part_runs > 1 */
    int head;      /* attn_decode_kernel launched, over n_q in [head_lo, q_hi] */
    int head_lo;   /* ... */
} DqDecodePlan;

static inline DqDecodePlan dq_decode_plan(int q_lo, int q_hi, int max_q, int kv_max, int n_heads,
                                          int n_kv_heads, gboolean group) {
    DqDecodePlan p = {0, 0, 0, 1, 0, 0, 0};
    const int G = n_heads / n_kv_heads;
    const int group_hi = group ? MIN(q_hi, DQ_CUDA_DG_RMAX / G) : 0;
    if (group_hi >= MAX(q_lo, 1)) {
        p.group = 1;
        p.group_hi = group_hi;
        p.group_q = MIN(max_q, group_hi);
        p.part_runs = dq_decode_runs(kv_max);
        p.part_rows = G * p.group_q;
        if (max_q > group_hi) { /* segments of more rows: the per-head kernel */
            p.head = 1;
            p.head_lo = MAX(q_lo, group_hi + 1);
        }
    } else {
        p.head = 1;
        p.head_lo = q_lo;
    }
    return p;
}

/* Bytes of dynamic shared memory of attn_decode_group_kernel for segments of up to max_q rows:
 * the scaled queries [R][hd], then either the warps' K tiles [32][hd + 1] or their partial
 * states [R][hd + 2] (R = G * max_q). */
static inline size_t dq_decode_group_smem(int head_dim, int G, int max_q) {
    const size_t hd = (size_t)head_dim, R = (size_t)G * (size_t)max_q;
    const size_t tiles = (size_t)DQ_CUDA_DG_WARPS * 32 * (hd + 1);
    const size_t states = (size_t)DQ_CUDA_DG_WARPS * R * (2 + hd);
    return (R * hd + MAX(tiles, states)) * sizeof(float);
}

/* Bytes of dynamic shared memory of attn_flash_kernel: queries [ATT_BQ][hd], keys
 * [ATT_BK][hd + 1], values [ATT_BK][hd]. */
static inline size_t dq_flash_smem(int head_dim) {
    const size_t hd = (size_t)head_dim;
    return ((size_t)DQ_CUDA_ATT_BQ * hd + (size_t)DQ_CUDA_ATT_BK * (hd + 1) +
            (size_t)DQ_CUDA_ATT_BK * hd) *
           sizeof(float);
}

/* ---- the caching pool */

/* The size class a request of `bytes` is served from: powers of two from 256 bytes to 1 MiB,
 * multiples of 2 MiB beyond. */
static inline size_t dq_pool_size_class(size_t bytes) {
    if (bytes <= 256)
        return 256;
    if (bytes <= ((size_t)1 << 20)) {
        size_t s = 256;
        while (s < bytes)
            s <<= 1;
        return s;
    }
    const size_t gran = (size_t)2 << 20;
    return (bytes + gran - 1) / gran * gran;
}

/* Whether a cached block of class `cached` serves a request of class `want` that has no block
 * of its own class cached: past 1 MiB, one up to twice as large (batches vary in size, and
 * after the first large batch no cudaMalloc is needed). */
static inline gboolean dq_pool_serves(size_t cached, size_t want) {
    return want > ((size_t)1 << 20) && cached > want && cached <= 2 * want;
}

#endif
