/* RoPE's frequency table, computed once on the host from the config so that every backend rotates
 * by the same numbers (text_config.rope_scaling included).
 *
 * LlamaRotaryEmbedding (transformers 4.57.6, modeling_rope_utils.py's ROPE_INIT_FUNCTIONS) builds
 * inv_freq [head_dim / 2] in float32 once, then per position: angle = pos * inv_freq (float32),
 * cos = cos(angle) * attention_factor, sin likewise, and rotates with rotate_half (dims i and
 * i + head_dim / 2 pair up). dq_rope_init reproduces inv_freq with the same float32 operations in
 * the same order; attention_factor is yarn's (1 for every other type, and multiplying by 1.0f
 * changes no bit).
 */
#ifndef DQ_ROPE_H
#define DQ_ROPE_H

#include "config.h"

#include <glib.h>

/* config.c's MAX_HEAD_DIM / 2 */
#define DQ_ROPE_MAX_HALF 512

typedef struct {
    int half;               /* head_dim / 2: inv_freq's entries */
    float attention_factor; /* multiplies cos and sin */
    float inv_freq[DQ_ROPE_MAX_HALF];
} DqRope;

/* Plain RoPE: inv_freq[i] = 1 / theta^(2i / head_dim), attention_factor 1. */
void dq_rope_plain(DqRope *r, double theta, int head_dim);

/* The table of cfg's rope_theta, head_dim and rope scaling (default, linear, llama3, yarn; dynamic
 * is plain RoPE within max_position_embeddings, where docqa's sequences end). */
void dq_rope_init(DqRope *r, const SmolvlmConfig *cfg);

/* Whether two tables rotate alike (their used entries and factors, bit for bit). */
gboolean dq_rope_equal(const DqRope *a, const DqRope *b);

#endif
