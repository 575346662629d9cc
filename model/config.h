/* SmolVLM (Idefics3) configuration: config.json and generation_config.json of a snapshot.
 *
 * Every field the forward pass and generation use, with transformers 4.57's defaults where a field
 * is absent (Idefics3Config, Idefics3VisionConfig, LlamaConfig, GenerationConfig). model_type
 * must be "idefics3" and text_config's "llama" (or absent), the classes transformers builds for
 * SmolVLM. text_config.rope_scaling may be null, "default", "dynamic" (the same frequencies as
 * plain RoPE within max_position_embeddings, where docqa's sequences end), "linear", "llama3" or
 * "yarn" (rope.h computes their tables); "longrope" and unknown types are refused.
 * attention_bias and mlp_bias may be true; hidden_act may name any parameter-free activation of
 * transformers' ACT2CLS in either tower (SmolvlmAct; config.c lists the names); "prelu" and
 * "xielu", which carry learned parameters, and unknown names are refused.
 * Leftovers in real files (perceiver_config, _flash_attn_2_enabled, vision `size`/`max_image_size`,
 * vision model_type, which Idefics3Config ignores) are ignored.
 *
 * The two geometries in use:
 *   SmolVLM-256M/500M: tile 512, patch 16 -> 32x32 patches, scale_factor 4 -> 64 tokens a tile
 *   SmolVLM-Instruct:  tile 384, patch 14 -> 27x27 patches, scale_factor 3 -> 81 tokens a tile
 */
#ifndef DQ_CONFIG_H
#define DQ_CONFIG_H

#include <glib.h>

#define DQ_MAX_EOS_IDS 8

/* The activations docqa computes, each as transformers' ACT2CLS class computes it in float32
 * (config.c lists the names of each; model/activation.h computes them). */
typedef enum {
    DQ_ACT_SILU,       /* x sigmoid(x) */
    DQ_ACT_GELU_TANH,  /* 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) */
    DQ_ACT_GELU_ERF,   /* 0.5x(1 + erf(x / sqrt 2)) */
    DQ_ACT_GELU_10,    /* GELU (erf) clipped to [-10, 10] */
    DQ_ACT_QUICK_GELU, /* x sigmoid(1.702x) */
    DQ_ACT_RELU,       /* max(x, 0) */
    DQ_ACT_RELU6,      /* min(max(x, 0), 6) */
    DQ_ACT_RELU2,      /* max(x, 0)^2 */
    DQ_ACT_LEAKY_RELU, /* x > 0 ? x : 0.01x */
    DQ_ACT_SIGMOID,    /* 1 / (1 + exp(-x)) */
    DQ_ACT_TANH,       /* tanh(x) */
    DQ_ACT_MISH,       /* x tanh(log(1 + exp(x))) */
    DQ_ACT_LAPLACE,    /* 0.5(1 + erf((x - 0.707107) / (0.282095 sqrt 2))) */
    DQ_ACT_LINEAR,     /* x */
    DQ_ACT_COUNT
} SmolvlmAct;

/* The RoPE types docqa computes; "dynamic" is DQ_ROPE_DEFAULT (see config.c). */
typedef enum { DQ_ROPE_DEFAULT, DQ_ROPE_LINEAR, DQ_ROPE_LLAMA3, DQ_ROPE_YARN } SmolvlmRopeType;

typedef struct {
    /* vision_config (SigLIP) */
    int vision_hidden;       /* hidden_size */
    int vision_intermediate; /* intermediate_size */
    int vision_layers;       /* num_hidden_layers */
    int vision_heads;        /* num_attention_heads */
    int vision_channels;     /* num_channels */
    int image_size;          /* tile side in pixels (512 or 384) */
    int patch_size;          /* 16 or 14 */
    double vision_layer_norm_eps;
    SmolvlmAct vision_act; /* hidden_act of fc1's output */

    /* text_config (Llama) */
    int text_hidden;
    int text_intermediate;
    int text_layers;
    int text_heads;
    int text_kv_heads;
    int head_dim;
    int vocab_size;
    int max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    /* text_config.rope_scaling as LlamaRotaryEmbedding reads it (rope.h makes the table) */
    SmolvlmRopeType rope_type;
    double rope_factor;           /* linear, llama3, yarn */
    double rope_low_freq_factor;  /* llama3 */
    double rope_high_freq_factor; /* llama3 */
    double rope_original_max_pos; /* llama3; yarn (0: max_position_embeddings) */
    double rope_beta_fast;        /* yarn (32 when absent, null or 0) */
    double rope_beta_slow;        /* yarn (1 when absent, null or 0) */
    gboolean rope_truncate;       /* yarn: floor/ceil the correction range */
    double rope_attention_factor; /* yarn: multiplies cos and sin (1 otherwise) */
    gboolean tie_word_embeddings; /* text_config's, which decides lm_head tying */
    SmolvlmAct text_act;          /* hidden_act of the MLP's gate */
    gboolean attention_bias;      /* q, k, v and o_proj have biases */
    gboolean mlp_bias;            /* gate, up and down_proj have biases */

    /* top level */
    int scale_factor;
    int image_token_id;
    int pad_token_id; /* -1 when none */

    /* derived */
    int patches_per_side; /* image_size / patch_size (floor: 384/14 = 27, 6 px unused) */
    int num_patches;      /* patches_per_side^2 */
    int tokens_per_tile;  /* num_patches / scale_factor^2 */
    int connector_in;     /* vision_hidden * scale_factor^2 */

    /* generation_config.json */
    int eos_ids[DQ_MAX_EOS_IDS];
    int n_eos;
    gboolean do_sample;
    double temperature;
    double top_p;
    int top_k;
    int max_new_tokens; /* -1 when unset */
} SmolvlmConfig;

/* Reads DIR/config.json and DIR/generation_config.json (the latter may be absent: then eos is
 * text_config's eos_token_id). Checks the values the forward pass relies on (sizes within sane
 * bounds, so that no product of them overflows or allocates absurdly, heads dividing hidden
 * sizes, patches divisible by scale_factor) and the generation values transformers refuses
 * (max_new_tokens <= 0; when sampling, a temperature, top_k or top_p it would not take). */
gboolean smolvlm_config_load(const char *dir, SmolvlmConfig *cfg, GError **err);

/* The same from JSON strings (generation_json may be NULL); `label` names them in errors. */
gboolean smolvlm_config_parse(const char *config_json, const char *generation_json,
                              const char *label, SmolvlmConfig *cfg, GError **err);

gboolean smolvlm_config_is_eos(const SmolvlmConfig *cfg, int id);

#endif
