/* The arithmetic of the CUDA backend's reductions that decide results (cuda_attention.cu,
 * cuda_ops.cu), apart from the kernels' memory traffic, so that it compiles for the host too and
 * is tested on the CPU (tests/model/test_cuda_math.c) in sessions without a GPU:
 * - the merge of partial softmax states: decode attention splits a sequence's keys among warps
 *   and among blocks (runs of DQ_CUDA_DECODE_SPLIT keys) and merges their states in order;
 * - argmax_rows's reduction: a thread's stride, then merges by value and index, which must give
 *   what the CPU's sequential dq_argmax gives (greedy tokens), NaN and ties included.
 * Header-only: under nvcc the functions are __host__ __device__, under a C compiler plain static
 * inline ones.
 */
#ifndef DQ_CUDA_KERNEL_MATH_H
#define DQ_CUDA_KERNEL_MATH_H

#include <math.h>
#include <stddef.h>

#ifdef __CUDACC__
#define DQ_KM_FN static __host__ __device__ __forceinline__
#else
#define DQ_KM_FN static inline
#endif

/* Keys a decode block attends over: a sequence's keys are split into runs of this many, a
 * block each, and the runs' states are merged (attn_decode_merge_kernel). The runs depend on
 * the sequence's length alone, so a row's result depends on its query and keys only. */
#define DQ_CUDA_DECODE_SPLIT 256

/* Runs of a sequence whose rows see kv_end keys (at least one). */
DQ_KM_FN int dq_decode_runs(int kv_end) {
    int runs = (kv_end + DQ_CUDA_DECODE_SPLIT - 1) / DQ_CUDA_DECODE_SPLIT;
    return runs > 1 ? runs : 1;
}

/* exp as the kernels take it: the fast intrinsic on the GPU (its error, ~2 ulp for the
 * arguments here, is inside the bf16 tolerances), libm's on the host. */
DQ_KM_FN float dq_km_exp(float x) {
#ifdef __CUDA_ARCH__
    return __expf(x);
#else
    return expf(x);
#endif
}

/* Merges count partial softmax states of a row, in order: maxima m[i * ms], totals l[i * ms]
 * (sums of exp(score - max)) and one dim's weighted sums tp[i * ts], into *mt, *lt and *t. A
 * state that saw no visible key (max -inf) counts for nothing; when none did, *lt is 0 and the
 * caller writes 0 (a row with no key to attend). */
DQ_KM_FN void dq_merge_states(const float *m, const float *l, size_t ms, const float *tp, size_t ts,
                              int count, float *mt, float *lt, float *t) {
    float mx = -INFINITY, lsum = 0.0f, tsum = 0.0f;
    for (int i = 0; i < count; i++)
        mx = fmaxf(mx, m[i * ms]);
    for (int i = 0; i < count; i++) {
        if (m[i * ms] == -INFINITY)
            continue;
        const float e = dq_km_exp(m[i * ms] - mx);
        lsum += l[i * ms] * e;
        tsum += tp[i * ts] * e;
    }
    *mt = mx;
    *lt = lsum;
    *t = tsum;
}

/* The better of two (value, index) candidates of a row's argmax: the larger value, then the
 * lower index; index -1: none (a stride of NaN only). Order-free, so any merge tree gives the
 * first maximum. */
DQ_KM_FN void dq_argmax_merge(float *v, int *i, float ov, int oi) {
    if (oi >= 0 && (*i < 0 || ov > *v || (ov == *v && oi < *i))) {
        *v = ov;
        *i = oi;
    }
}

/* One thread's part of a row's argmax: the first maximum of x[k0], x[k0 + step], ... below
 * cols, NaN never taken; *i = -1 when there is none. */
DQ_KM_FN void dq_argmax_stride(const float *x, int cols, int k0, int step, float *v, int *i) {
    *v = 0.0f;
    *i = -1;
    for (int k = k0; k < cols; k += step) {
        const float xk = x[k];
        if (!isnan(xk) && (*i < 0 || xk > *v)) {
            *v = xk;
            *i = k;
        }
    }
}

/* The row's id from its merged candidate: dq_argmax's sequential scan starts at x[0] and
 * compares with >, so a NaN there keeps 0 whatever follows; a row of NaN only gives 0. */
DQ_KM_FN int dq_argmax_result(const float *x, int i) {
    return isnan(x[0]) || i < 0 ? 0 : i;
}

#endif
