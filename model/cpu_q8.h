/* The fast CPU backend's optional 8-bit decoder weights (`--weights int8`).
 *
 * Format: symmetric int8 in blocks of DQ_Q8_BLOCK (32) consecutive input features of one output
 * row, one float32 scale a block: w[o][k] ~ q[o][k] * scale[o][k / 32], scale = max |w| of the
 * block / 127, q = round-to-nearest(w / scale). Blocks of 32 rather than one scale an output
 * channel: a single large weight then coarsens only its own 32 neighbours instead of the whole
 * row (llama.cpp's Q8_0 makes the same choice), and the float scales cost 4/32 = 0.125 byte a
 * weight: 1.125 bytes against bf16's 2, so a decode step streams 44% fewer bytes. Measured on
 * the tiny snapshots' decoder weights (Gaussian, no outliers: the case least in favour of
 * blocks), the relative RMS rounding error is 0.53% with blocks of 32, 0.59% with 64, 0.60%
 * per output channel; real checkpoints have outlier weights, where blocks matter more. 64 would
 * save 0.06 byte a weight (5% of the stream) for that accuracy: not worth it.
 *
 * Storage: one owned allocation, q [rows, cols] int8 then scales [rows, cols / 32] float32; the
 * DqWeight's data points at its start and its dtype is DQ_WEIGHT_Q8, a backend-private tag next
 * to DqDtype's values (backend.h). Within a row, each whole group of 8 blocks (256 values) is
 * interleaved by pairs: pair p of block j at pair slot 8p + j (dq_q8_pos, cpu_gemm.h), so that
 * one 16-lane product in the decode GEMV adds a pair of each of the 8 blocks; the blocks past
 * the last whole group stay in order (576 = 2 groups + 2 blocks). Only matrices whose cols is a
 * multiple of 32 are quantized (every SmolVLM decoder matrix is); the caller keeps the others as
 * stored.
 *
 * Products with few rows (decode): the activations are rounded to int16 in blocks of 32 (half a
 * step = 2^-16 of the block's max |x|, noise far below the weights' own), each block's 32
 * products summed exactly in int32 (vpmaddwd), then scaled by both blocks' scales and added to
 * the row's float32 sum, block after block: every row is computed in the same order whatever
 * the number of rows (the backend's row invariance up to DQ_FAST_GEMV_ROWS). More rows
 * (prefill) go through cpu_gemm.c with float32 activations and weights dequantized into its
 * packed panels (DQ_GEMM_B_WT_Q8), row invariant from then on as every dq_gemm product. Where
 * the CPU has AMX, that product is the x3 one of cpu_gemm_bf16.c (dq_gemm_q8_linear) with the
 * dequantized weights rounded to bf16 while packed: 2^-9 of each weight more, against int8's
 * 2^-8 of its block's largest (check-approx.py int8's worst cosine 0.99935 -> 0.99934), for a
 * prefill 1.8-2x faster (256M 1.37 -> 0.76 s, 2.2B 23.4 -> 11.4 s).
 *
 * With int8 weights the model also keeps its KV caches in float16 where the backend can
 * (DqBackend.kv_f16: the fast backend with F16C): at 1416 prompt tokens a 256M decode step
 * streams 65 MB of float32 cache against 152 MB of int8 weights, so the cache would otherwise
 * cap the gain. float16's 11-bit mantissas round far finer than the weights' 8 bits. */
#ifndef DQ_CPU_Q8_H
#define DQ_CPU_Q8_H

#include "backend.h"
#include "cpu_gemm.h"

#include <glib.h>
#include <stdint.h>

/* DqWeight.dtype of an int8-block matrix (not a DqDtype: never found in a file). */
#define DQ_WEIGHT_Q8 0x51

/* w = tensor t ([rows, cols] of F32, BF16 or F16) quantized. cols must be a multiple of
 * DQ_Q8_BLOCK and rows * cols the tensor's size (else an error naming the tensor). `threads`:
 * OpenMP threads for the conversion. */
gboolean dq_q8_quantize(DqWeight *w, const DqTensor *t, int rows, int cols, int threads,
                        GError **err);
void dq_q8_free(DqWeight *w);

static inline const int8_t *dq_q8_values(const DqWeight *w) {
    return (const int8_t *)w->data;
}
static inline const float *dq_q8_scales(const DqWeight *w) {
    return (const float *)(dq_q8_values(w) + (size_t)w->rows * w->cols);
}

/* AVX512-VNNI (and BW, VL) present, and not switched off with DOCQA_CPU_NO_AVX512VNNI: the
 * int8 decode GEMV's fast kernel. */
gboolean dq_cpu_has_avx512vnni(void);

/* on: the decode GEMV keeps to AVX2 where the CPU has AVX512-VNNI too (tests: the two must give
 * the same bits). Returns the previous setting. */
gboolean dq_q8_force_avx2(gboolean on);

/* The int8 code of w[row][col] (wherever the layout stores it). */
int8_t dq_q8_code(const DqWeight *w, int row, int col);

/* out [rows, cols] = q * scale (what the products multiply; for tests and checks). */
void dq_q8_dequantize(const DqWeight *w, float *out);

/* out [n, w.cols] = rows ids[0..n) dequantized (an embedding lookup on a quantized table; the
 * model keeps its embed_tokens exact and never asks for this). */
void dq_q8_embed(const DqWeight *w, const int32_t *ids, int n, float *out);

/* The backend's matmul on a DQ_WEIGHT_Q8 weight: gemv split over `threads` for n <= gemv_rows,
 * cpu_gemm.c otherwise (pack: threads x DQ_GEMM_PACK_FLOATS floats, 32-byte aligned; the GEMV
 * keeps its int16 activations in the first). */
void dq_q8_matmul(float *y, const float *x, const DqWeight *w, const float *bias, int n,
                  int gemv_rows, int threads, float *pack);

/* ys[i] = x . ws[i]^T + biases[i] (NULL: none) for count (<= DQ_Q8_MANY_MAX) int8 weights of
 * x's width: as dq_q8_matmul each, with x quantized once and the GEMV's blocks of all of them
 * in one parallel loop (the same results). */
#define DQ_Q8_MANY_MAX DQ_GEMV_SPLIT_MAX
void dq_q8_matmul_many(float *const *ys, const float *x, const DqWeight *const *ws,
                       const float *const *biases, int count, int n, int gemv_rows, int threads,
                       float *pack);

#endif
