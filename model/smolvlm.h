/* SmolVLM (transformers' Idefics3ForConditionalGeneration) inference: weights, vision encoder,
 * connector, decoder with a KV cache, over the backend interface (backend.h).
 *
 *   tiles [T, 3, S, S] --patch conv (im2col + GEMM) + position embeddings--> [T, P, Dv]
 *        --SigLIP encoder (pre-LN, gelu_tanh MLP), post_layernorm--> [T, P, Dv]
 *        --pixel shuffle (s)--> [T, P/s^2, Dv*s^2] --proj--> image features [T, P/s^2, Dt]
 *   input_ids [n] --embed_tokens, features written into the <image> rows--> [n, Dt]
 *        --Llama decoder (RMSNorm, RoPE, GQA, SwiGLU), final norm, lm_head--> logits [V]
 *
 * Most callers want generate.h (batched prefill + decode). This header exposes the stages so that
 * generate.c and the tests can drive them:
 *
 *   Smolvlm *m = smolvlm_open("/models/SmolVLM-256M-Instruct", NULL, &err);
 *   SmolvlmWorkspace *ws = smolvlm_workspace_new(m, max_rows, &err);
 *   smolvlm_encode_tiles(m, tiles, n_tiles, features, &err);          // features [T*S_tok, Dt]
 *   smolvlm_embed(m, ws, ids, n, features, n_features, &cursor, &err); // fills the workspace input
 *   smolvlm_forward(m, ws, segments, n_segments, &err);                // appends to KV caches
 *
 * Weights: F32 tensors are used from the memory mapping; BF16/F16 are upcast to float32 at open
 * (exact; the CPU reference computes in float32 only).
 */
#ifndef DQ_SMOLVLM_H
#define DQ_SMOLVLM_H

#include "backend.h"
#include "config.h"
#include "safetensors.h"

#include <glib.h>
#include <stdint.h>

typedef struct {
    const char *device; /* "cpu" (default; NULL means cpu) or "cuda" */
    /* NULL or "stored": weights as the snapshot stores them. "int8": the decoder's linear layers
     * (q, k, v, o, gate, up, down and lm_head; embed_tokens stays exact) quantized at load to
     * int8 blocks (cpu_q8.h; device cpu only): faster decode, logits approximate. "bf16": every
     * matrix a product uses, vision and text, as bf16 (rounded at load unless stored so), their
     * products with many rows on bf16 activations where the CPU has AVX512-BF16 (cpu_gemm.h;
     * device cpu only): logits approximate. Both also take float16 KV caches. */
    const char *weights;
    /* NULL or "none": no draft. "int8": a second copy of the decoder's linear layers quantized
     * to int8 blocks, which smolvlm_forward_draft uses to guess tokens for speculative decoding
     * (generate.h). The guesses are checked by the model as loaded, so what it generates does
     * not change. Device cpu, with weights stored or bf16. */
    const char *draft;
    /* NULL: the backend `device` names. Otherwise a backend made by the caller, which the model
     * then owns (frees, even when smolvlm_open fails), device only naming it in messages:
     * bench_gpu's "host" backend, whose ops do no arithmetic, measures the host's share of a GPU
     * batch that way. */
    DqBackend *backend;
} SmolvlmOptions;

typedef struct Smolvlm Smolvlm;

/* Opens a snapshot directory: config.json, generation_config.json, model.safetensors (or shards).
 * Every tensor is checked against config.json (a missing tensor or a wrong shape is an error
 * naming the file and the tensor). */
Smolvlm *smolvlm_open(const char *dir, const SmolvlmOptions *opts, GError **err);
void smolvlm_free(Smolvlm *m);

const SmolvlmConfig *smolvlm_config(const Smolvlm *m);
DqBackend *smolvlm_backend(const Smolvlm *m);
const char *smolvlm_dir(const Smolvlm *m);

/* What answers record as answers.model_fingerprint: a hex SHA-256 (64 characters, g_free) that
 * tells snapshots apart whatever their folders are called (`docqa run --model-id X --model DIR`
 * lets any snapshot answer X's jobs). It hashes "docqa-snapshot-v1" and a NUL; then every file a
 * load reads, in this order: config.json, generation_config.json, preprocessor_config.json,
 * processor_config.json, chat_template.json, tokenizer.json, tokenizer_config.json, each as its
 * name, a NUL, its size (8 bytes, little-endian) and its bytes, or where an optional one is not
 * there its name, a NUL and 8 bytes 0xff; then the safetensors files as
 * safetensors_fingerprint_update does: headers, sizes and 4 MiB of windows over the weights
 * (all of a 2.2B snapshot's 4.5 GB would take half a minute; a fine-tune changes nearly every
 * weight, so the windows tell it from its base model, whose header it shares).
 * smolvlm_fingerprint hashes the safetensors files m has mapped (what it computes with); the
 * snapshot version maps a folder's without loading any weights. Errors name the file. */
char *smolvlm_fingerprint(const Smolvlm *m, GError **err);
char *smolvlm_snapshot_fingerprint(const char *dir, GError **err);

/* Debug/test hook: called with intermediate tensors copied to the host. `index` is -1 for the
 * vision batch (names "vision_patch_embeds", "vision_last_hidden" [T*P, Dv], "image_features"
 * [T*S_tok, Dt]) and the segment index for the decoder ("inputs_embeds",
 * "decoder_last_hidden" [rows, Dt]). */
typedef void (*SmolvlmTraceFn)(void *user, const char *name, int index, const float *data, int rows,
                               int cols);
void smolvlm_set_trace(Smolvlm *m, SmolvlmTraceFn fn, void *user);

/* ---- vision + connector */

/* tiles[i]: host bytes [3, S, S] (S = vision image_size) and their values (backend.h), one
 * entry a tile so that the tiles of several images and requests are batched without copying
 * them together first (image_processor.h's tiles: dq_image_tiles_tile and their lut). features: a
 * backend buffer [n_tiles * tokens_per_tile, text_hidden]. Tiles are encoded independently (in
 * chunks of up to 32 tiles to bound memory; the result does not depend on the chunking).
 * Identical tiles are encoded once; *distinct (when not NULL): how many were encoded. */
gboolean smolvlm_encode_tiles(Smolvlm *m, const DqPixelTile *tiles, int n_tiles, float *features,
                              int *distinct, GError **err);

/* Position ids of an nb_h x nb_w patch grid (the unmasked part of a tile) in a model with
 * n_side patches a side: transformers' bucketed ids, ids [nb_h * nb_w]. Tiles from the image
 * processor are always full (nb = n_side). */
void smolvlm_vision_position_ids(int n_side, int nb_h, int nb_w, int32_t *ids);

/* ---- decoder */

/* One sequence's KV cache: room for `capacity` positions. */
typedef struct SmolvlmKV SmolvlmKV;
SmolvlmKV *smolvlm_kv_new(Smolvlm *m, int capacity, GError **err);
void smolvlm_kv_free(Smolvlm *m, SmolvlmKV *kv);
int smolvlm_kv_len(const SmolvlmKV *kv);
/* Forgets positions len .. of the cache (len <= its length): what a rejected guess wrote. */
void smolvlm_kv_truncate(SmolvlmKV *kv, int len);
/* The backend memory a cache of `capacity` positions takes (keys and values). */
size_t smolvlm_kv_bytes(const Smolvlm *m, int capacity);
/* dst's positions 0 .. rows - 1 become src's (copied in backend memory), and dst's length rows:
 * a prompt's prefix computed for another sequence (rows <= src's length, <= dst's capacity). */
gboolean smolvlm_kv_copy_prefix(Smolvlm *m, SmolvlmKV *dst, const SmolvlmKV *src, int rows,
                                GError **err);

/* Activation buffers for forward calls of up to max_rows rows (allocated once, reused by every
 * prefill chunk and decode step). */
typedef struct SmolvlmWorkspace SmolvlmWorkspace;
SmolvlmWorkspace *smolvlm_workspace_new(Smolvlm *m, int max_rows, GError **err);
void smolvlm_workspace_free(Smolvlm *m, SmolvlmWorkspace *ws);

/* Writes the embeddings of ids[0..n) into the workspace input at row `row0`: embed_tokens rows,
 * except that each <image> id takes the next row of `features` ([n_features, Dt], backend
 * memory; *cursor counts the rows used so far). Fails on an id outside the vocabulary or when
 * the features run out. Without features (features NULL: generated tokens) an <image> id is
 * embedded as any other token, as transformers does at a decode step, where no image features
 * come with the call. */
gboolean smolvlm_embed(Smolvlm *m, SmolvlmWorkspace *ws, int row0, const int32_t *ids, int n,
                       const float *features, int n_features, int *cursor, GError **err);

/* A forward call runs consecutive rows of the workspace input, segment by segment: segment i's
 * n_rows rows are new tokens of its sequence at positions kv_len .. kv_len + n_rows - 1; they are
 * appended to its KV cache. When logits != NULL the logits of the segment's last row are written
 * there (host [vocab_size]); when token != NULL (and logits == NULL) the greedy pick of them,
 * dq_argmax, made where the logits are (a GPU sends back one id, not vocab_size floats).
 *
 * `steps`: the rows are computed as that many one-row calls in a row would compute them, to the
 * bit (each row's attention as a decode step's, over the cache up to itself; products on the
 * backend's row-invariant path), and logits != NULL receives every row's logits
 * ([n_rows, vocab_size]) (token != NULL: every row's pick, [n_rows]). Speculative decoding checks
 * its guesses so. Needs n_rows <= smolvlm_steps_max(). */
typedef struct {
    SmolvlmKV *kv;
    int n_rows;
    float *logits;
    int32_t *token;
    gboolean steps;
} SmolvlmSegment;

gboolean smolvlm_forward(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs, int n_segs,
                         GError **err);

/* Rows each forward call must give a prompt so that the prompt may be prefilled in parts, its
 * first rows' KV copied from another sequence that computed them (smolvlm_kv_copy_prefix), with
 * the bits of one call (DqBackend.prompt_split_min for this model's attention); 0: never (the
 * reference backend, float16 caches). */
int smolvlm_prompt_split_min(const Smolvlm *m);

/* The most rows a `steps` segment may have (the backend's matmul_row_invariant_max; 0: none). */
int smolvlm_steps_max(const Smolvlm *m);

/* smolvlm_forward with the draft's linear layers (SmolvlmOptions.draft), everything else as
 * loaded: the draft reads and appends to the same KV caches, so it needs no prompt of its own;
 * what it appends is approximate, and the caller truncates it (smolvlm_kv_truncate) before the
 * model proper writes those positions. Fails when the model was opened without a draft. */
gboolean smolvlm_forward_draft(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs,
                               int n_segs, GError **err);
gboolean smolvlm_has_draft(const Smolvlm *m);

/* smolvlm_forward for a decode step (each segment a row or a few): where the backend records
 * steps (backend.h graph_begin: CUDA graphs), the whole call is recorded and replayed as one
 * launch, keyed by the step's shape; when the recording fails the call is redone with plain ops
 * (the KV lengths restored first), so the result is the same either way. Without tracing only:
 * a trace reads activations mid-way, which a recorded step cannot give. */
gboolean smolvlm_forward_step(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs,
                              int n_segs, GError **err);

#endif
