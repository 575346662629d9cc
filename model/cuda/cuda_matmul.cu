/* Linear layers: cublasLt products with one fixed algorithm a weight shape (row-invariant), a
 * kernel of our own up to DQ_CUDA_SKINNY_ROWS rows, and the fused forms: a bias, GELU or the
 * residual add in the product, products sharing one input, the vision MLP. */
#include "cuda_internal.h"

/* ---- matmul */

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

void launch_to_bf16(CudaCtx *c, __nv_bfloat16 *dst, const float *src, size_t n) {
    f32_to_bf16_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(dst, src, n);
}

__global__ void fill_rows_kernel(float *y, const float *bias, int n, int cols) {
    size_t total = (size_t)n * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = bias[i % cols];
}

#define SKINNY_R     8 /* rows a warp carries */
#define SKINNY_WARPS 8 /* output columns a block computes */

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

void lt_plan_free(gpointer data) {
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

gboolean aligned16(const void *p) {
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

gboolean lt_matmul(CudaCtx *c, float *y, const __nv_bfloat16 *xbf, const DqWeight *w,
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

void cuda_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w, const DqWeight *bias,
                 int n) {
    CudaCtx *c = ctx_of(be);
    if (n > 0 && c->sticky == cudaSuccess)
        matmul_run(c, y, x, w, bias, n, FALSE, NULL);
}

/* y += x . W^T (+ bias): the residual add in the product (matmul_run). */
void cuda_matmul_add(DqBackend *be, float *y, const float *x, const DqWeight *w,
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

/* matmul, then GELU: in the product's epilogue where cublasLt has it, else the kernel above. */
void cuda_matmul_gelu(DqBackend *be, float *y, const float *x, const DqWeight *w,
                      const DqWeight *bias, int n) {
    CudaCtx *c = ctx_of(be);
    if (n > 0 && c->sticky == cudaSuccess && !matmul_run(c, y, x, w, bias, n, TRUE, NULL))
        cuda_gelu_tanh(be, y, (size_t)n * w->rows);
}

/* ys[i] = x . ws[i]^T + biases[i]: x rounded to bf16 once for all the products, each then as
 * matmul_run would do it (the same results as separate calls). */
void cuda_matmul_many(DqBackend *be, float *const *ys, const float *x, const DqWeight *const *ws,
                      const DqWeight *const *biases, int count, int n) {
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
void cuda_matmul_gelu(DqBackend *be, float *y, const float *x, const DqWeight *w,
                      const DqWeight *bias, int n);
void cuda_matmul_add(DqBackend *be, float *y, const float *x, const DqWeight *w,
                     const DqWeight *bias, int n, float *scratch);

void cuda_mlp_gelu_add(DqBackend *be, float *y, const float *x, const DqWeight *w1,
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
