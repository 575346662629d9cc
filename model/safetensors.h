/* safetensors: memory-mapped tensor files, as Hugging Face snapshots store weights.
 *
 * File format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes]  N, little-endian uint64: length of the JSON header
 *   [N bytes]  JSON object: { "__metadata__": {str: str},            (optional)
 *                             "<tensor name>": { "dtype": "F32" | "BF16" | "F16" | ...,
 *                                                "shape": [d0, d1, ...],
 *                                                "data_offsets": [begin, end] }, ... }
 *   [rest]     the data section; a tensor's bytes are data[begin, end), row-major, little-endian
 *
 * Everything in the header is checked against the file before a tensor is handed out, by the
 * safetensors library's own rules: the header fits the file and is nested at most 128 deep,
 * end - begin equals the element count times the element size (with overflow checks), sorted by
 * offsets the tensors lie back to back from byte 0 to the end of the file (no two share a byte,
 * no junk after them), keys are unique, __metadata__ maps strings to strings. One rule stricter
 * than the library: it keeps the last of two identical entries of one name, docqa refuses the
 * file. Only F32, BF16 and F16 are accepted
 * (the dtypes SmolVLM snapshots use); any other dtype is an error naming the tensor.
 *
 * A snapshot directory holds either `model.safetensors` or shards
 * `model-0000i-of-0000n.safetensors` listed in `model.safetensors.index.json` ("weight_map":
 * {tensor: shard file}); safetensors_open_snapshot() handles both and presents one flat set of
 * tensors.
 *
 *   GError *err = NULL;
 *   DqSafeTensors *st = safetensors_open_snapshot("/models/SmolVLM-256M-Instruct", &err);
 *   const DqTensor *t = safetensors_require(st, "model.text_model.norm.weight", 1,
 *                                           (const int64_t[]){576}, &err);
 *   ... t->data points into the mapping; valid until safetensors_free(st) ...
 */
#ifndef DQ_SAFETENSORS_H
#define DQ_SAFETENSORS_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    DQ_DTYPE_F32 = 0,
    DQ_DTYPE_BF16 = 1,
    DQ_DTYPE_F16 = 2,
} DqDtype;

#define DQ_TENSOR_MAX_DIMS 8

typedef struct {
    const char *name;
    const char *file; /* the shard it lives in (for error messages) */
    DqDtype dtype;
    int ndim;
    int64_t shape[DQ_TENSOR_MAX_DIMS];
    int64_t numel;
    const void *data; /* inside the mapping; not necessarily aligned to the element size */
    size_t nbytes;
} DqTensor;

typedef struct DqSafeTensors DqSafeTensors;

/* One .safetensors file, memory-mapped. */
DqSafeTensors *safetensors_open(const char *path, GError **err);

/* A snapshot directory: model.safetensors, or the shards of model.safetensors.index.json where
 * there is no model.safetensors file (transformers' order). */
DqSafeTensors *safetensors_open_snapshot(const char *dir, GError **err);

/* The bytes of the files a snapshot directory's weights are in, the files
 * safetensors_open_snapshot would open: model.safetensors, else the shards its
 * model.safetensors.index.json names; 0 when it has neither or the index is unreadable. Other
 * .safetensors files beside them (another variant, a draft model) are not the model's and do not
 * count. An estimate for memory checks before loading: the loader says what is wrong with a
 * snapshot. */
guint64 safetensors_snapshot_bytes(const char *dir);

/* The bytes the tensors of st take once loaded as the CUDA backend keeps them: matrices (2 dims
 * or more) at matrix_bytes a parameter (2: bf16, 4: float32), the rest (norm weights, biases)
 * float32; summed tensor by tensor, whatever each is stored as (a snapshot may mix F32 and BF16
 * tensors: its file bytes over one dtype's size would miscount its parameters). */
guint64 safetensors_loaded_bytes(const DqSafeTensors *st, size_t matrix_bytes);

/* Parses a safetensors image already in memory (not copied: `data` must outlive the result).
 * `name` labels error messages. The fuzz target drives this. */
DqSafeTensors *safetensors_parse(const uint8_t *data, size_t len, const char *name, GError **err);

void safetensors_free(DqSafeTensors *st);

/* Feeds `c` what identifies the files st was opened from without reading all their tensors: for
 * each file, by base name (shards in any order hash alike), its base name and a NUL, its size
 * (8 bytes, little-endian), its first 8 + N bytes (the header's length and the header, which
 * names every tensor's dtype, shape and offsets), then the tensor data: whole when it is at most
 * 4 MiB, else 1024 windows of 4096 bytes at offsets w * (len - 4096) / 1023 of it (w = 0..1023),
 * which tell a fine-tune from its base model. A 4.5 GB snapshot costs about 4 MiB of hashing.
 * Nothing for safetensors_parse's images, which have no file. */
void safetensors_fingerprint_update(const DqSafeTensors *st, GChecksum *c);

/* Number of tensors and their names (sorted; g_free the array, not the strings). */
guint safetensors_count(const DqSafeTensors *st);
const char **safetensors_names(const DqSafeTensors *st);

/* The tensor, or NULL when absent. */
const DqTensor *safetensors_get(const DqSafeTensors *st, const char *name);

/* The tensor, checked: it must exist and have exactly `ndim` dims equal to `shape`. The error
 * names the file, the tensor, its shape and the expected one ("implied by config.json"). */
const DqTensor *safetensors_require(const DqSafeTensors *st, const char *name, int ndim,
                                    const int64_t *shape, GError **err);

/* "F32", "BF16", "F16". */
const char *dq_dtype_name(DqDtype dtype);
size_t dq_dtype_size(DqDtype dtype);

/* Exact conversions to float32 (bf16: bits << 16; f16: IEEE half incl. subnormals, inf, nan).
 * `src` may be unaligned. */
void dq_convert_to_f32(float *dst, const void *src, DqDtype dtype, size_t n);
float dq_bf16_to_f32(uint16_t h);
float dq_f16_to_f32(uint16_t h);

/* float32 -> bf16, rounded to nearest even (as torch, vcvtneps2bf16 and __float2bfloat16_rn
 * do); a NaN stays a NaN. Inline: the kernels' packing loops call it per value. */
static inline uint16_t dq_f32_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

#endif
