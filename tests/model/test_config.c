/* config.json / generation_config.json: both geometries, the real 256M file with its leftovers,
 * transformers' defaults for absent fields, and clear errors. */
#include "config.h"
#include "rope.h"
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void load_shared(const char *model, SmolvlmConfig *c) {
    char *dir = g_build_filename(dq_test_shared_dir(), "models", model, NULL);
    GError *err = NULL;
    g_assert_true(smolvlm_config_load(dir, c, &err));
    dq_assert_no_error(err);
    g_free(dir);
}

static void test_real_configs(void) {
    if (dq_test_shared_dir() == NULL) {
        g_test_skip("../shared (model configs) not found");
        return;
    }
    SmolvlmConfig c;
    /* The authentic 256M config (perceiver_config, _flash_attn_2_enabled, vision size/... are
     * ignored). */
    load_shared("SmolVLM-256M-Instruct", &c);
    g_assert_cmpint(c.vision_hidden, ==, 768);
    g_assert_cmpint(c.vision_intermediate, ==, 3072);
    g_assert_cmpint(c.vision_layers, ==, 12);
    g_assert_cmpint(c.vision_heads, ==, 12);
    g_assert_cmpint(c.image_size, ==, 512);
    g_assert_cmpint(c.patch_size, ==, 16);
    g_assert_cmpfloat(c.vision_layer_norm_eps, ==, 1e-6);
    g_assert_cmpint(c.text_hidden, ==, 576);
    g_assert_cmpint(c.text_intermediate, ==, 1536);
    g_assert_cmpint(c.text_layers, ==, 30);
    g_assert_cmpint(c.text_heads, ==, 9);
    g_assert_cmpint(c.text_kv_heads, ==, 3);
    g_assert_cmpint(c.head_dim, ==, 64);
    g_assert_cmpint(c.vocab_size, ==, 49280);
    g_assert_cmpfloat(c.rope_theta, ==, 100000.0);
    g_assert_cmpfloat(c.rms_norm_eps, ==, 1e-5);
    g_assert_false(c.tie_word_embeddings);
    g_assert_cmpint(c.scale_factor, ==, 4);
    g_assert_cmpint(c.image_token_id, ==, 49190);
    g_assert_cmpint(c.patches_per_side, ==, 32);
    g_assert_cmpint(c.tokens_per_tile, ==, 64);
    g_assert_cmpint(c.connector_in, ==, 768 * 16);
    g_assert_cmpint(c.n_eos, ==, 1);
    g_assert_cmpint(c.eos_ids[0], ==, 49279); /* generation_config, not text_config's 2 */
    g_assert_true(smolvlm_config_is_eos(&c, 49279));
    g_assert_false(smolvlm_config_is_eos(&c, 2));

    /* The 2.2B geometry: 384 / 14 -> 27 patches a side (6 px unused), scale 3 -> 81 tokens. */
    load_shared("SmolVLM-Instruct-config", &c);
    g_assert_cmpint(c.image_size, ==, 384);
    g_assert_cmpint(c.patch_size, ==, 14);
    g_assert_cmpint(c.patches_per_side, ==, 27);
    g_assert_cmpint(c.num_patches, ==, 729);
    g_assert_cmpint(c.tokens_per_tile, ==, 81);
    g_assert_cmpint(c.vision_hidden, ==, 1152);
    g_assert_cmpint(c.vision_layers, ==, 27);
    g_assert_cmpint(c.text_hidden, ==, 2048);
    g_assert_cmpint(c.text_kv_heads, ==, 32);
    g_assert_cmpfloat(c.rope_theta, ==, 273768.0);
    g_assert_cmpint(c.eos_ids[0], ==, 49154);
    g_assert_cmpint(c.max_position_embeddings, ==, 16384);

    load_shared("tiny-smolvlm-a384-v1tok", &c);
    g_assert_true(c.tie_word_embeddings);
    g_assert_cmpint(c.tokens_per_tile, ==, 81);
    g_assert_cmpint(c.head_dim, ==, 16);
    g_assert_cmpint(c.text_kv_heads, ==, 2);
    load_shared("tiny-smolvlm-b512-bf16", &c);
    g_assert_cmpint(c.tokens_per_tile, ==, 64);
}

static void test_defaults(void) {
    SmolvlmConfig c;
    GError *err = NULL;
    /* text_config present but empty: LlamaConfig's defaults (rms_norm_eps 1e-6). */
    g_assert_true(smolvlm_config_parse("{\"model_type\": \"idefics3\", \"scale_factor\": 7, "
                                       "\"text_config\": {\"model_type\": \"llama\"}}",
                                       NULL, "c.json", &c, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(c.vision_hidden, ==, 1152);
    g_assert_cmpint(c.vision_intermediate, ==, 3072);
    g_assert_cmpint(c.vision_layers, ==, 12);
    g_assert_cmpint(c.vision_heads, ==, 16);
    g_assert_cmpint(c.image_size, ==, 224);
    g_assert_cmpint(c.patch_size, ==, 32);
    g_assert_cmpint(c.text_hidden, ==, 4096);
    g_assert_cmpint(c.text_intermediate, ==, 11008);
    g_assert_cmpint(c.text_layers, ==, 32);
    g_assert_cmpint(c.text_heads, ==, 32);
    g_assert_cmpint(c.text_kv_heads, ==, 32);
    g_assert_cmpint(c.head_dim, ==, 128);
    g_assert_cmpint(c.vocab_size, ==, 32000);
    g_assert_cmpint(c.max_position_embeddings, ==, 2048);
    g_assert_cmpfloat(c.rms_norm_eps, ==, 1e-6);
    g_assert_cmpfloat(c.rope_theta, ==, 10000.0);
    g_assert_false(c.tie_word_embeddings);
    g_assert_cmpint(c.image_token_id, ==, 128257);
    /* No generation_config.json: eos from text_config (default 2), GenerationConfig defaults. */
    g_assert_cmpint(c.n_eos, ==, 1);
    g_assert_cmpint(c.eos_ids[0], ==, 2);
    g_assert_false(c.do_sample);
    g_assert_cmpint(c.top_k, ==, 50);
    g_assert_cmpfloat(c.top_p, ==, 1.0);
    g_assert_cmpint(c.max_new_tokens, ==, -1);

    /* No text_config at all: Idefics3Config's default Llama uses rms_norm_eps 1e-5. */
    g_assert_true(smolvlm_config_parse("{\"model_type\": \"idefics3\", \"scale_factor\": 7}", NULL,
                                       "c.json", &c, &err));
    dq_assert_no_error(err);
    g_assert_cmpfloat(c.rms_norm_eps, ==, 1e-5);

    /* generation_config: a list of eos ids; without eos_token_id there is none. */
    g_assert_true(smolvlm_config_parse(
        "{\"model_type\": \"idefics3\", \"scale_factor\": 7}",
        "{\"eos_token_id\": [5, 7], \"do_sample\": true, \"temperature\": 0.7, \"top_p\": 0.9, "
        "\"max_new_tokens\": 12}",
        "c.json", &c, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(c.n_eos, ==, 2);
    g_assert_true(smolvlm_config_is_eos(&c, 7));
    g_assert_true(c.do_sample);
    g_assert_cmpfloat(c.temperature, ==, 0.7);
    g_assert_cmpfloat(c.top_p, ==, 0.9);
    g_assert_cmpint(c.max_new_tokens, ==, 12);
    g_assert_true(smolvlm_config_parse("{\"model_type\": \"idefics3\", \"scale_factor\": 7}",
                                       "{\"pad_token_id\": 2}", "c.json", &c, &err));
    g_assert_cmpint(c.n_eos, ==, 0);
}

static void expect_error(const char *json, const char *gen, const char *needle) {
    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_false(smolvlm_config_parse(json, gen, "snap/config.json", &c, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, gen != NULL && strstr(needle, "generation_config.json")
                                              ? "snap/generation_config.json: "
                                              : "snap/config.json: "));
    if (strstr(err->message, needle) == NULL)
        g_error("error '%s' does not mention '%s'", err->message, needle);
    g_error_free(err);
}

static void test_errors(void) {
    expect_error("{\"model_type\": \"idefics3\", \"text_config\": {\"hidden_size\": \"64\"}}", NULL,
                 "text_config.hidden_size must be an integer");
    expect_error("{\"model_type\": \"idefics3\", \"vision_config\": {\"layer_norm_eps\": \"x\"}}",
                 NULL, "vision_config.layer_norm_eps must be a number");
    expect_error("{\"model_type\": \"idefics3\", \"text_config\": {\"tie_word_embeddings\": 1}}",
                 NULL, "true or false");
    expect_error("{\"model_type\": \"idefics3\", \"vision_config\": []}", NULL,
                 "vision_config must be an object");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 4}", NULL,
                 "not divisible by scale_factor");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"text_config\": "
                 "{\"num_attention_heads\": 8, "
                 "\"num_key_value_heads\": 3}}",
                 NULL, "not a multiple of num_key_value_heads");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"text_config\": "
                 "{\"rope_scaling\": {\"type\": \"x\"}}}",
                 NULL, "text_config.rope_scaling 'x' is not supported");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"vision_config\": "
                 "{\"hidden_act\": \"relu6 \"}}",
                 NULL, "hidden_act 'relu6 '");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"vision_config\": "
                 "{\"patch_size\": 0}}",
                 NULL, "patch_size 0");
    /* fuzz_config's first finding: the connector's width overflowed int before any check */
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 8192, \"vision_config\": "
                 "{\"image_size\": 8192, "
                 "\"patch_size\": 1}}",
                 NULL, "too large for a connector");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"vision_config\": "
                 "{\"num_channels\": 4}}",
                 NULL, "num_channels 4 is not supported");
    /* transformers 4.57.6 fails on both (a size mismatch in apply_rotary_pos_emb; None**2);
     * docqa ran full rotary and a scale factor of 2 (the s32 differential test) */
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"text_config\": "
                 "{\"partial_rotary_factor\": 0.5}}",
                 NULL, "text_config.partial_rotary_factor must be 1.0 or absent");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"text_config\": "
                 "{\"partial_rotary_factor\": null}}",
                 NULL, "text_config.partial_rotary_factor must be 1.0 or absent");
    {
        SmolvlmConfig c;
        GError *err = NULL;
        g_assert_true(smolvlm_config_parse("{\"model_type\": \"idefics3\", \"scale_factor\": 7, "
                                           "\"text_config\": {\"partial_rotary_factor\": 1}}",
                                           NULL, "snap/config.json", &c, &err));
        g_assert_no_error(err);
    }
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": null}", NULL,
                 "scale_factor must be an integer, not null");
    expect_error("[1]", NULL, "not a JSON object");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": ", NULL, "config.json");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7}",
                 "{\"eos_token_id\": [\"a\"]}", "generation_config.json: eos_token_id");
    /* 2^32 + 2 in a list was kept as 2 (the cast wrapped it), a real token's id */
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7}",
                 "{\"eos_token_id\": [4294967298]}",
                 "generation_config.json: eos_token_id must be a list of 32-bit integers");

    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_false(smolvlm_config_load("/nonexistent/snapshot", &c, &err));
    g_assert_nonnull(strstr(err->message, "/nonexistent/snapshot/config.json"));
    g_clear_error(&err);
}

/* hidden_act by transformers' ACT2CLS names (activations.py, 4.57.6): every parameter-free one
 * runs in either tower (on tiny random snapshots transformers gave each family's logits within
 * 3.6e-5, float32 and bfloat16, text and image prompts, and the same greedy ids: s34's
 * differential test); gelu_accurate is gelu_new's formula, the same torch ops in the same order.
 * prelu and xielu (learned parameters of their own), a wrong case and unknown names are refused
 * naming the key and the value. */
static void test_activations(void) {
    const struct {
        const char *name;
        SmolvlmAct act;
    } ok[] = {{"gelu_pytorch_tanh", DQ_ACT_GELU_TANH},
              {"gelu_python_tanh", DQ_ACT_GELU_TANH},
              {"gelu_new", DQ_ACT_GELU_TANH},
              {"gelu_accurate", DQ_ACT_GELU_TANH},
              {"gelu_fast", DQ_ACT_GELU_TANH},
              {"gelu", DQ_ACT_GELU_ERF},
              {"gelu_python", DQ_ACT_GELU_ERF},
              {"gelu_10", DQ_ACT_GELU_10},
              {"silu", DQ_ACT_SILU},
              {"swish", DQ_ACT_SILU},
              {"quick_gelu", DQ_ACT_QUICK_GELU},
              {"relu", DQ_ACT_RELU},
              {"relu6", DQ_ACT_RELU6},
              {"relu2", DQ_ACT_RELU2},
              {"leaky_relu", DQ_ACT_LEAKY_RELU},
              {"sigmoid", DQ_ACT_SIGMOID},
              {"tanh", DQ_ACT_TANH},
              {"mish", DQ_ACT_MISH},
              {"laplace", DQ_ACT_LAPLACE},
              {"linear", DQ_ACT_LINEAR}};
    gboolean seen[DQ_ACT_COUNT] = {FALSE};
    for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
        /* each name in the vision tower, and the list's next one in the decoder */
        const char *text = ok[(i + 1) % G_N_ELEMENTS(ok)].name;
        char *json = g_strdup_printf(
            "{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"vision_config\": "
            "{\"hidden_act\": \"%s\"}, \"text_config\": {\"hidden_act\": \"%s\"}}",
            ok[i].name, text);
        SmolvlmConfig c;
        GError *err = NULL;
        if (!smolvlm_config_parse(json, NULL, "snap/config.json", &c, &err))
            g_error("%s / %s: %s", ok[i].name, text, err->message);
        g_assert_cmpint(c.vision_act, ==, ok[i].act);
        g_assert_cmpint(c.text_act, ==, ok[(i + 1) % G_N_ELEMENTS(ok)].act);
        seen[ok[i].act] = TRUE;
        g_free(json);
    }
    for (int a = 0; a < DQ_ACT_COUNT; a++)
        g_assert_true(seen[a]); /* no activation without a name */
    const struct {
        const char *name, *why;
    } refused[] = {{"prelu", "an activation with learned parameters"},
                   {"xielu", "an activation with learned parameters"},
                   {"GELU", "not an activation transformers knows"},
                   {"softplus", "not an activation transformers knows"},
                   {"", "not an activation transformers knows"}};
    for (size_t i = 0; i < G_N_ELEMENTS(refused); i++) {
        for (int tower = 0; tower < 2; tower++) {
            const char *key = tower == 0 ? "vision_config" : "text_config";
            char *json = g_strdup_printf("{\"model_type\": \"idefics3\", \"scale_factor\": 7, "
                                         "\"%s\": {\"hidden_act\": \"%s\"}}",
                                         key, refused[i].name);
            char *needle = g_strdup_printf("%s.hidden_act '%s' is not supported (%s", key,
                                           refused[i].name, refused[i].why);
            expect_error(json, NULL, needle);
            g_free(needle);
            g_free(json);
        }
    }
}

/* text_config.tie_word_embeddings null unties lm_head as false does: PreTrainedModel reads it
 * through getattr(config, "tie_word_embeddings", True), which finds None (transformers 4.57.6
 * then reads lm_head.weight from the file, s34's differential test: logits within 1e-5). */
static void test_tie_null(void) {
    const char *values[] = {"null", "false", "true"};
    for (size_t i = 0; i < G_N_ELEMENTS(values); i++) {
        char *json = g_strdup_printf("{\"model_type\": \"idefics3\", \"scale_factor\": 7, "
                                     "\"tie_word_embeddings\": true, \"text_config\": "
                                     "{\"tie_word_embeddings\": %s}}",
                                     values[i]);
        SmolvlmConfig c;
        GError *err = NULL;
        g_assert_true(smolvlm_config_parse(json, NULL, "snap/config.json", &c, &err));
        g_assert_cmpint(c.tie_word_embeddings, ==, i == 2);
        g_free(json);
    }
}

static gboolean parse_rope(const char *rope_scaling, SmolvlmConfig *c, GError **err) {
    char *json = g_strdup_printf("{\"model_type\": \"idefics3\", \"scale_factor\": 7, "
                                 "\"text_config\": {\"rope_theta\": 5000, \"rope_scaling\": %s}}",
                                 rope_scaling);
    gboolean ok = smolvlm_config_parse(json, NULL, "snap/config.json", c, err);
    g_free(json);
    return ok;
}

/* rope_scaling as LlamaRotaryEmbedding reads it: a legacy "type" wins over "rope_type"
 * (LlamaConfig copies it over); "default" and "dynamic" (within max_position_embeddings, where
 * docqa's sequences end) are plain RoPE; "linear", "llama3" and "yarn" are read with their keys'
 * defaults; the rest is refused naming the type, and what transformers refuses or fails on (no
 * type, a required key missing or null, a division by zero, a logarithm of a non-positive number)
 * is refused naming the key. */
static void test_rope_scaling(void) {
    const char *plain[] = {"null", "{\"rope_type\": \"default\"}", "{\"type\": \"default\"}",
                           "{\"rope_type\": \"dynamic\", \"factor\": 2.0}",
                           "{\"rope_type\": \"linear\", \"type\": \"dynamic\", \"factor\": 2}"};
    for (size_t i = 0; i < G_N_ELEMENTS(plain); i++) {
        SmolvlmConfig c;
        GError *err = NULL;
        if (!parse_rope(plain[i], &c, &err))
            g_error("rope_scaling %s: %s", plain[i], err->message);
        g_assert_cmpfloat(c.rope_theta, ==, 5000.0);
        g_assert_cmpint(c.rope_type, ==, DQ_ROPE_DEFAULT);
        g_assert_cmpfloat(c.rope_attention_factor, ==, 1.0);
    }
    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_true(
        parse_rope("{\"type\": \"linear\", \"rope_type\": \"yarn\", \"factor\": 3}", &c, &err));
    g_assert_cmpint(c.rope_type, ==, DQ_ROPE_LINEAR);
    g_assert_cmpfloat(c.rope_factor, ==, 3.0);
    g_assert_true(parse_rope("{\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
                             "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 64}",
                             &c, &err));
    g_assert_cmpint(c.rope_type, ==, DQ_ROPE_LLAMA3);
    g_assert_cmpfloat(c.rope_low_freq_factor, ==, 1.0);
    g_assert_cmpfloat(c.rope_high_freq_factor, ==, 4.0);
    g_assert_cmpfloat(c.rope_original_max_pos, ==, 64.0);
    /* yarn's defaults: beta_fast 32, beta_slow 1 (also for null and 0: `get(key) or default`),
     * truncate true, attention factor 0.1 ln(factor) + 1 */
    g_assert_true(parse_rope("{\"rope_type\": \"yarn\", \"factor\": 4.0, \"beta_fast\": null, "
                             "\"beta_slow\": 0}",
                             &c, &err));
    g_assert_cmpint(c.rope_type, ==, DQ_ROPE_YARN);
    g_assert_cmpfloat(c.rope_beta_fast, ==, 32.0);
    g_assert_cmpfloat(c.rope_beta_slow, ==, 1.0);
    g_assert_true(c.rope_truncate);
    g_assert_cmpfloat(c.rope_original_max_pos, ==, 0.0);
    g_assert_cmpfloat_with_epsilon(c.rope_attention_factor, 0.1 * log(4.0) + 1.0, 1e-15);
    /* a null truncate is Python's None: no truncation; mscale over mscale_all_dim */
    g_assert_true(parse_rope("{\"rope_type\": \"yarn\", \"factor\": 4.0, \"truncate\": null, "
                             "\"mscale\": 2, \"mscale_all_dim\": 1}",
                             &c, &err));
    g_assert_false(c.rope_truncate);
    g_assert_cmpfloat_with_epsilon(c.rope_attention_factor,
                                   (0.2 * log(4.0) + 1.0) / (0.1 * log(4.0) + 1.0), 1e-15);
    g_assert_true(parse_rope("{\"rope_type\": \"yarn\", \"factor\": 4.0, \"attention_factor\": 0.5,"
                             " \"mscale\": 2, \"mscale_all_dim\": 1}",
                             &c, &err));
    g_assert_cmpfloat(c.rope_attention_factor, ==, 0.5);
    dq_assert_no_error(err);

    const char *refused[][2] = {
        {"{\"rope_type\": \"longrope\", \"short_factor\": [1], \"long_factor\": [1]}",
         "rope_scaling 'longrope' is not supported"},
        {"{\"rope_type\": \"default\", \"type\": \"ntk\"}", "rope_scaling 'ntk'"},
        {"{\"factor\": 2.0}", "text_config.rope_scaling.rope_type must be given"},
        {"{\"rope_type\": \"dynamic\"}", "text_config.rope_scaling.factor must be given"},
        {"{\"rope_type\": \"dynamic\", \"factor\": \"2\"}",
         "text_config.rope_scaling.factor must be a number"},
        {"{\"rope_type\": 3}", "text_config.rope_scaling.rope_type must be a string"},
        {"\"linear\"", "text_config.rope_scaling must be an object"},
        {"{\"rope_type\": \"linear\"}",
         "text_config.rope_scaling.factor must be given for \"linear\" (transformers refuses"},
        {"{\"rope_type\": \"yarn\", \"factor\": null}",
         "text_config.rope_scaling.factor must be a number, not null"},
        {"{\"rope_type\": \"linear\", \"factor\": 0}",
         "text_config.rope_scaling.factor must be positive"},
        {"{\"rope_type\": \"linear\", \"factor\": 1e400}",
         "text_config.rope_scaling.factor must be finite"},
        {"{\"rope_type\": \"llama3\", \"factor\": 8, \"high_freq_factor\": 4, "
         "\"original_max_position_embeddings\": 64}",
         "text_config.rope_scaling.low_freq_factor must be given for \"llama3\""},
        {"{\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
         "\"high_freq_factor\": 4}",
         "text_config.rope_scaling.original_max_position_embeddings must be given for "
         "\"llama3\""},
        {"{\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 0, "
         "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 64}",
         "text_config.rope_scaling.low_freq_factor must be other than 0"},
        {"{\"rope_type\": \"yarn\", \"factor\": 4, \"beta_fast\": -1}",
         "text_config.rope_scaling.beta_fast must be positive"},
        {"{\"rope_type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": -5}",
         "text_config.rope_scaling.original_max_position_embeddings must be positive"},
        {"{\"rope_type\": \"yarn\", \"factor\": 4, \"truncate\": \"yes\"}",
         "text_config.rope_scaling.truncate must be true or false"},
        {"{\"rope_type\": \"yarn\", \"factor\": 4, \"attention_factor\": \"1\"}",
         "text_config.rope_scaling.attention_factor must be a number"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(refused); i++) {
        g_assert_false(parse_rope(refused[i][0], &c, &err));
        g_assert_nonnull(err);
        if (strstr(err->message, "snap/config.json: ") != err->message ||
            strstr(err->message, refused[i][1]) == NULL)
            g_error("rope_scaling %s: '%s' does not say '%s'", refused[i][0], err->message,
                    refused[i][1]);
        g_clear_error(&err);
    }
    /* yarn divides by log(rope_theta) */
    g_assert_false(smolvlm_config_parse(
        "{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"text_config\": {\"rope_theta\": 1, "
        "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2}}}",
        NULL, "snap/config.json", &c, &err));
    g_assert_nonnull(strstr(err->message, "rope_theta 1 does not work with rope_scaling \"yarn\""));
    g_clear_error(&err);
}

/* The RoPE tables (rope.h) of each type against LlamaRotaryEmbedding's own: inv_freq and
 * attention_scaling as float32 bits, printed by tests/model/rope_table_goldens.py (transformers
 * 4.57.6, torch on CPU; its cases are these). Bit for bit: the table is computed by the same
 * float32 operations in the same order. Then each table against the formulas in double, computed
 * here independently of rope.c, within float32 rounding. */
static void test_rope_tables(void) {
    const struct {
        int head_dim;
        double theta;
        int max_pos;
        const char *rope_scaling;
        const char *bits; /* attention factor, then inv_freq */
    } cases[] = {
        {64, 100000.0, 8192, "null",
         "3f800000 3f800000 3f32a506 3ef953cf 3eadfcff 3e72d423 3e297409 3dec7fd6 "
         "3da50956 3d6655c2 3d20bc1d 3ce054d2 3c9c8b97 3c5a7bf2 3c187705 3bd4ca15 "
         "3b947dae 3b4f3e38 3b109edb 3ac9d75c 3a8cd9db 3a44948c 3a092e02 39bf74d7 "
         "39859aa9 393a7753 39021f2b 38b59b1b 387d75d4 3830df52 37f6da96 37ac431d "
         "37706b6d"},
        {64, 100000.0, 8192, "{\"rope_type\": \"linear\", \"factor\": 2.0}",
         "3f800000 3f000000 3eb2a506 3e7953cf 3e2dfcff 3df2d423 3da97409 3d6c7fd6 "
         "3d250956 3ce655c2 3ca0bc1d 3c6054d2 3c1c8b97 3bda7bf2 3b987705 3b54ca15 "
         "3b147dae 3acf3e38 3a909edb 3a49d75c 3a0cd9db 39c4948c 39892e02 393f74d7 "
         "39059aa9 38ba7753 38821f2b 38359b1b 37fd75d4 37b0df52 3776da96 372c431d "
         "36f06b6d"},
        {16, 10000.0, 2048, "{\"type\": \"linear\", \"factor\": 3.5}",
         "3f800000 3e924925 3db909d6 3cea0ea1 3c1407df 3b3b3ee7 3a6cd965 3995cbed "
         "38bd7ab7"},
        {64, 500000.0, 131072,
         "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
         "3f800000 3f800000 3f29e1c6 3ee177bc 3e959ee3 3e4693b0 3e03c6a0 3daee4ad "
         "3d681e67 3d1a08c8 3ccc6f49 3c87a9c3 3c340d6d 3beef74f 3b9e9402 3b527720 "
         "3ab3d11d 3a0995d2 393b2dd2 38a3418d 3858ac81 380fc8f8 37bed4f4 377d45c3 "
         "3728126b 36df10c4 369406cb 36447610 36025f34 35ad07a7 3565a54d 351864a7 "
         "34ca41b0"},
        {16, 100000.0, 8192,
         "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}",
         "3f800000 3f800000 3e029a8a 3be655c2 3ada7bf2 39cf3e38 38c4948c 37ba7753 "
         "36b0df52"},
        {64, 100000.0, 8192, "{\"rope_type\": \"yarn\", \"factor\": 4.0}",
         "3f91be9c 3f800000 3f32a506 3ef953cf 3eadfcff 3e72d423 3e297409 3dec7fd6 "
         "3da50956 3d6655c2 3d20bc1d 3ce054d2 3c90cdec 3c39b628 3bec5214 3b94f3dc "
         "3b399d1a 3ae3f7a3 3a8963b7 3a217916 39b71b37 3944948c 39092e02 38bf74d7 "
         "38859aa9 383a7753 38021f2b 37b59b1b 377d75d4 3730df52 36f6da96 36ac431d "
         "36706b6d"},
        {64, 10000.0, 32768,
         "{\"rope_type\": \"yarn\", \"factor\": 4.0, \"beta_fast\": 16.0, \"beta_slow\": 2.0, "
         "\"original_max_position_embeddings\": 8192, \"truncate\": false, \"mscale\": 1.0, "
         "\"mscale_all_dim\": 0.5}",
         "3f884c13 3f800000 3f3ff911 3f0ff59a 3ed7e89b 3ea1e89b 3e72d423 3e361887 "
         "3e088d77 3dcccccd 3d99940d 3d6655c2 3d2cba15 3d0186e3 3cc2434f 3c91ad39 "
         "3c5a7bf2 3c17be0c 3bca129a 3b84677a 3b29e393 3ad3c506 3a7d13ae 3a0d635e "
         "39aec98e 3983126f 3944948c 39136a16 38dd1725 38a5cb60 3878a815 383a7753 "
         "380bd472"},
        {16, 100000.0, 8192,
         "{\"rope_type\": \"yarn\", \"factor\": 2.0, \"attention_factor\": 0.75}",
         "3f400000 3f800000 3e72d423 3d6655c2 3c3611f4 3b0a297a 39c4948c 38ba7753 "
         "37b0df52"},
        /* the correction range clamped at both ends: below 0, beyond dim - 1 */
        {16, 3.0, 64, "{\"rope_type\": \"yarn\", \"factor\": 2.0}",
         "3f88df4e 3f800000 3f57b68e 3f358cd2 3f189a45 3f001844 3ed6ba45 3eb3b01e "
         "3e961ae8"},
        /* ... and empty (both ends 0): linear_ramp_factor's guard against dividing by 0 */
        {16, 10000.0, 6, "{\"rope_type\": \"yarn\", \"factor\": 2.0}",
         "3f88df4e 3f800000 3e21e89b 3d4ccccd 3c8186e3 3ba3d70a 3acf3e38 3a03126f "
         "3925cb60"},
    };
    for (size_t t = 0; t < G_N_ELEMENTS(cases); t++) {
        char *json =
            g_strdup_printf("{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"text_config\": {"
                            "\"hidden_size\": %d, "
                            "\"num_attention_heads\": 4, \"head_dim\": %d, \"rope_theta\": %.1f, "
                            "\"max_position_embeddings\": %d, \"rope_scaling\": %s}}",
                            4 * cases[t].head_dim, cases[t].head_dim, cases[t].theta,
                            cases[t].max_pos, cases[t].rope_scaling);
        SmolvlmConfig c;
        GError *err = NULL;
        if (!smolvlm_config_parse(json, NULL, "snap/config.json", &c, &err))
            g_error("%s: %s", cases[t].rope_scaling, err->message);
        g_free(json);
        DqRope r;
        dq_rope_init(&r, &c);
        int half = cases[t].head_dim / 2;
        g_assert_cmpint(r.half, ==, half);
        gchar **words = g_strsplit(cases[t].bits, " ", -1);
        g_assert_cmpint(g_strv_length(words), ==, half + 1);
        for (int i = 0; i <= half; i++) {
            uint32_t want = (uint32_t)g_ascii_strtoull(words[i], NULL, 16), got;
            memcpy(&got, i == 0 ? &r.attention_factor : &r.inv_freq[i - 1], sizeof got);
            if (got != want)
                g_error("%s: %s %d is %08x, transformers' %08x", cases[t].rope_scaling,
                        i == 0 ? "attention factor" : "inv_freq", i - 1, got, want);
        }
        g_strfreev(words);

        /* the formulas (modeling_rope_utils.py), in double */
        double theta = cases[t].theta, f = c.rope_factor, af = 1.0;
        for (int i = 0; i < half; i++) {
            double inv = 1.0 / pow(theta, 2.0 * i / cases[t].head_dim);
            if (c.rope_type == DQ_ROPE_LINEAR)
                inv /= f;
            else if (c.rope_type == DQ_ROPE_LLAMA3) {
                double wavelen = 2 * M_PI / inv, old = c.rope_original_max_pos;
                double lo = c.rope_low_freq_factor, hi = c.rope_high_freq_factor;
                if (wavelen > old / lo)
                    inv /= f;
                else if (wavelen >= old / hi) {
                    double s = (old / wavelen - lo) / (hi - lo);
                    inv = (1 - s) * inv / f + s * inv;
                }
            } else if (c.rope_type == DQ_ROPE_YARN) {
                int dim = cases[t].head_dim;
                double mp = c.rope_original_max_pos ? c.rope_original_max_pos : cases[t].max_pos;
                double lo = dim * log(mp / (c.rope_beta_fast * 2 * M_PI)) / (2 * log(theta));
                double hi = dim * log(mp / (c.rope_beta_slow * 2 * M_PI)) / (2 * log(theta));
                if (c.rope_truncate) {
                    lo = floor(lo);
                    hi = ceil(hi);
                }
                lo = MAX(lo, 0);
                hi = MIN(hi, dim - 1);
                if (lo == hi)
                    hi += 0.001;
                double ramp = CLAMP((i - lo) / (hi - lo), 0, 1);
                inv = inv / f * ramp + inv * (1 - ramp);
                af = c.rope_attention_factor;
            }
            if (fabs(r.inv_freq[i] - inv) > 1e-6 * inv)
                g_error("%s: inv_freq %d %.9g, the formula's %.9g", cases[t].rope_scaling, i,
                        r.inv_freq[i], inv);
        }
        g_assert_cmpfloat_with_epsilon(r.attention_factor, af, 1e-7);
    }
}

/* dq_rope_equal: the same table, bit for bit, or not: any entry, the attention factor or the
 * size differing makes them differ; entries past the size do not count. */
static void test_rope_equal(void) {
    DqRope a, b;
    dq_rope_plain(&a, 10000.0, 64);
    dq_rope_plain(&b, 10000.0, 64);
    g_assert_true(dq_rope_equal(&a, &b));
    b.inv_freq[b.half - 1] = nextafterf(b.inv_freq[b.half - 1], 1.0f);
    g_assert_false(dq_rope_equal(&a, &b));
    dq_rope_plain(&b, 10000.0, 64);
    b.inv_freq[0] = nextafterf(1.0f, 2.0f);
    g_assert_false(dq_rope_equal(&a, &b));
    dq_rope_plain(&b, 10000.0, 64);
    b.attention_factor = nextafterf(1.0f, 2.0f);
    g_assert_false(dq_rope_equal(&a, &b));
    dq_rope_plain(&b, 10000.0, 64);
    b.inv_freq[b.half] = 5.0f; /* past the table */
    g_assert_true(dq_rope_equal(&a, &b));
    b.half--;
    g_assert_false(dq_rope_equal(&a, &b));
    g_assert_false(dq_rope_equal(&b, &a));
}

/* text_config.attention_bias and mlp_bias: false when absent or null (LlamaConfig's defaults),
 * read as given, refused when not true or false. */
static void test_biases(void) {
    const struct {
        const char *text_config;
        gboolean attn, mlp;
    } ok[] = {
        {"{}", FALSE, FALSE},
        {"{\"attention_bias\": true}", TRUE, FALSE},
        {"{\"mlp_bias\": true, \"attention_bias\": null}", FALSE, TRUE},
        {"{\"attention_bias\": true, \"mlp_bias\": true}", TRUE, TRUE},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
        char *json = g_strdup_printf(
            "{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"text_config\": %s}",
            ok[i].text_config);
        SmolvlmConfig c;
        GError *err = NULL;
        if (!smolvlm_config_parse(json, NULL, "snap/config.json", &c, &err))
            g_error("%s: %s", ok[i].text_config, err->message);
        g_assert_cmpint(c.attention_bias, ==, ok[i].attn);
        g_assert_cmpint(c.mlp_bias, ==, ok[i].mlp);
        g_free(json);
    }
    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_false(smolvlm_config_parse("{\"model_type\": \"idefics3\", \"scale_factor\": 7, "
                                        "\"text_config\": {\"mlp_bias\": 1}}",
                                        NULL, "snap/config.json", &c, &err));
    g_assert_nonnull(strstr(err->message, "text_config.mlp_bias must be true or false"));
    g_clear_error(&err);
}

/* transformers builds the architecture model_type names (AutoConfig: "llava" a LlavaConfig,
 * text_config "qwen2" a Qwen2 decoder) and fails without one; these loaded as SmolVLM. The
 * vision model_type is ignored by Idefics3Config, and here. */
static void test_model_types(void) {
    expect_error("{\"model_type\": \"llava\", \"scale_factor\": 7}", NULL,
                 "config.json: model_type 'llava' is not supported (docqa runs \"idefics3\"");
    expect_error("{\"model_type\": \"smolvlm\", \"scale_factor\": 7}", NULL,
                 "model_type 'smolvlm' is not supported");
    expect_error("{\"scale_factor\": 7}", NULL, "config.json: model_type is missing");
    expect_error("{\"model_type\": 3, \"scale_factor\": 7}", NULL, "model_type must be a string");
    /* the architecture is named before another architecture's sizes are judged */
    expect_error("{\"model_type\": \"llava\", \"text_config\": {\"hidden_size\": \"x\"}}", NULL,
                 "model_type 'llava'");
    expect_error("{\"model_type\": \"idefics3\", \"scale_factor\": 7, "
                 "\"text_config\": {\"model_type\": \"qwen2\"}}",
                 NULL,
                 "config.json: text_config.model_type 'qwen2' is not supported (\"llama\" is");
    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_true(
        smolvlm_config_parse("{\"model_type\": \"idefics3\", \"scale_factor\": 7, "
                             "\"vision_config\": {\"model_type\": \"siglip_vision_model\"}, "
                             "\"text_config\": {\"model_type\": \"llama\"}}",
                             NULL, "c.json", &c, &err));
    dq_assert_no_error(err);
}

/* Every size is bounded before anything is allocated by it, and named: 2147483647 layers made
 * smolvlm_open try to allocate 600 GB; 268435460 heads x head_dim 16 wrapped to 64 in int. */
static void test_bounds(void) {
    const char *base = "{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"%s\": {\"%s\": %s}}";
    static const char *const cases[][4] = {
        {"text_config", "num_hidden_layers", "2147483647",
         "text_config.num_hidden_layers 2147483647 is outside 1..1024"},
        {"vision_config", "num_hidden_layers", "100000000",
         "vision_config.num_hidden_layers 100000000 is outside 1..1024"},
        {"text_config", "num_attention_heads", "268435460",
         "text_config.num_attention_heads 268435460 is outside 1..1024"},
        {"text_config", "num_key_value_heads", "2048", "num_key_value_heads 2048 is outside"},
        {"text_config", "head_dim", "1048576", "text_config.head_dim 1048576 is outside"},
        {"text_config", "hidden_size", "1099511627776", "hidden_size must be a 32-bit integer"},
        {"text_config", "hidden_size", "-64", "text_config.hidden_size -64 is outside 1..65536"},
        {"vision_config", "hidden_size", "131072", "vision_config.hidden_size 131072 is outside"},
        {"text_config", "intermediate_size", "2000000000", "intermediate_size 2000000000"},
        {"vision_config", "intermediate_size", "0", "vision_config.intermediate_size 0"},
        {"text_config", "vocab_size", "1000000000", "text_config.vocab_size 1000000000"},
        {"text_config", "max_position_embeddings", "2147483647", "max_position_embeddings"},
        {"text_config", "rope_theta", "1e400", "rope_theta inf must be positive and finite"},
        {"text_config", "rms_norm_eps", "1.5", "rms_norm_eps 1.5"},
        {"vision_config", "layer_norm_eps", "-1", "layer_norm_eps -1"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *json = g_strdup_printf(base, cases[i][0], cases[i][1], cases[i][2]);
        expect_error(json, NULL, cases[i][3]);
        g_free(json);
    }
    /* the largest values allowed still load */
    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_true(smolvlm_config_parse(
        "{\"model_type\": \"idefics3\", \"scale_factor\": 7, \"text_config\": "
        "{\"num_hidden_layers\": 1024, "
        "\"num_attention_heads\": 1024, \"num_key_value_heads\": 1, \"head_dim\": 1024, "
        "\"vocab_size\": 4194304, \"max_position_embeddings\": 268435456}}",
        NULL, "c.json", &c, &err));
    dq_assert_no_error(err);
}

/* generation_config.json values transformers refuses (GenerationConfig.validate at load, the
 * sampling warpers at generate) are refused at load, naming the file; they used to be replaced
 * silently (max_new_tokens 0 -> 256). */
static void test_generation_values(void) {
    const char *cfg = "{\"model_type\": \"idefics3\", \"scale_factor\": 7}";
    expect_error(cfg, "{\"max_new_tokens\": 0}",
                 "generation_config.json: max_new_tokens 0 must be greater than 0");
    expect_error(cfg, "{\"max_new_tokens\": -5}", "generation_config.json: max_new_tokens -5");
    expect_error(cfg, "{\"max_new_tokens\": -1}", "generation_config.json: max_new_tokens -1");
    expect_error(cfg, "{\"do_sample\": true, \"temperature\": 0.0}",
                 "generation_config.json: temperature 0 must be positive");
    expect_error(cfg, "{\"do_sample\": true, \"top_k\": -3}",
                 "generation_config.json: top_k -3 must be positive");
    expect_error(cfg, "{\"do_sample\": true, \"top_p\": -0.5}",
                 "generation_config.json: top_p -0.5 must not be negative");
    expect_error(cfg, "{\"max_new_tokens\": ", "generation_config.json: not valid JSON");
    expect_error(cfg, "", "generation_config.json: empty");
    /* greedy: transformers only warns about sampling values, and so does nothing here */
    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_true(smolvlm_config_parse(
        cfg, "{\"temperature\": 0.0, \"top_k\": -3, \"top_p\": 2.0, \"max_new_tokens\": 1}",
        "c.json", &c, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(c.max_new_tokens, ==, 1);
    g_assert_true(smolvlm_config_parse(
        cfg, "{\"do_sample\": true, \"top_k\": 0, \"top_p\": 2.0, \"temperature\": 1.0}", "c.json",
        &c, &err));
    dq_assert_no_error(err);
}

/* A fresh folder with copies of the tiny snapshot's config.json and generation_config.json. */
static char *config_dir(void) {
    char *dir = dq_test_tmpdir();
    const char *files[] = {"config.json", "generation_config.json"};
    for (int i = 0; i < 2; i++) {
        char *src =
            g_build_filename(dq_test_shared_dir(), "models", "tiny-smolvlm-b512", files[i], NULL);
        char *dst = g_build_filename(dir, files[i], NULL);
        size_t len = 0;
        char *text = dq_test_read_file(src, &len);
        g_assert_true(g_file_set_contents(dst, text, (gssize)len, NULL));
        g_free(text);
        g_free(src);
        g_free(dst);
    }
    return dir;
}

static void expect_load_error(const char *dir, const char *needle) {
    SmolvlmConfig c;
    GError *err = NULL;
    alarm(30); /* a FIFO used to block the load forever */
    g_assert_false(smolvlm_config_load(dir, &c, &err));
    alarm(0);
    g_assert_nonnull(err);
    if (strstr(err->message, needle) == NULL)
        g_error("error '%s' does not mention '%s'", err->message, needle);
    g_error_free(err);
}

/* Damaged files: deep nesting (json-glib's recursion overflowed the stack), FIFOs (open()
 * blocked), devices (read until memory ran out), huge sparse files (read whole), a missing
 * file (its path printed twice). */
static void test_damaged_files(void) {
    if (dq_test_shared_dir() == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *dir = config_dir();
    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_true(smolvlm_config_load(dir, &c, &err));
    dq_assert_no_error(err);
    char *cfg = g_build_filename(dir, "config.json", NULL);
    char *gen = g_build_filename(dir, "generation_config.json", NULL);
    GString *deep = g_string_new(NULL);
    for (int i = 0; i < 2000000; i++)
        g_string_append(deep, "{\"a\":");
    g_assert_true(g_file_set_contents(cfg, deep->str, (gssize)deep->len, NULL));
    expect_load_error(dir, "config.json: JSON nested deeper than 128 levels");
    g_assert_true(g_file_set_contents(gen, deep->str, (gssize)deep->len, NULL));
    g_string_free(deep, TRUE);
    g_assert_cmpint(unlink(cfg), ==, 0);
    char *want = g_strdup_printf("%s: cannot open: No such file or directory", cfg);
    expect_load_error(dir, want);
    g_assert_cmpint(mkfifo(cfg, 0600), ==, 0);
    expect_load_error(dir, "config.json: a FIFO, not a regular file");
    g_assert_cmpint(unlink(cfg), ==, 0);
    g_assert_cmpint(truncate(gen, 0), ==, 0);
    char *real =
        g_build_filename(dq_test_shared_dir(), "models", "tiny-smolvlm-b512", "config.json", NULL);
    g_assert_cmpint(symlink(real, cfg), ==, 0);
    expect_load_error(dir, "generation_config.json: empty");
    g_assert_cmpint(unlink(gen), ==, 0);
    g_assert_cmpint(symlink("/dev/zero", gen), ==, 0);
    expect_load_error(dir, "generation_config.json: a device, not a regular file");
    g_assert_cmpint(unlink(gen), ==, 0);
    g_assert_true(g_file_set_contents(gen, "{}", -1, NULL));
    g_assert_cmpint(truncate(gen, (off_t)2 << 30), ==, 0);
    expect_load_error(dir, "generation_config.json: 2147483648 bytes, more than the 64 MiB");
    g_free(real);
    g_free(want);
    g_free(cfg);
    g_free(gen);
    g_free(dir);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/config/real", test_real_configs);
    g_test_add_func("/config/defaults", test_defaults);
    g_test_add_func("/config/errors", test_errors);
    g_test_add_func("/config/rope-scaling", test_rope_scaling);
    g_test_add_func("/config/rope-tables", test_rope_tables);
    g_test_add_func("/config/rope-equal", test_rope_equal);
    g_test_add_func("/config/biases", test_biases);
    g_test_add_func("/config/activations", test_activations);
    g_test_add_func("/config/tie-null", test_tie_null);
    g_test_add_func("/config/model-types", test_model_types);
    g_test_add_func("/config/bounds", test_bounds);
    g_test_add_func("/config/generation-values", test_generation_values);
    g_test_add_func("/config/damaged-files", test_damaged_files);
    return g_test_run();
}
