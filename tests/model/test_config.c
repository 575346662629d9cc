/* config.json / generation_config.json: both geometries, the real 256M file with its leftovers,
 * transformers' defaults for absent fields, and clear errors. */
#include "config.h"
#include "testutil.h"

#include <string.h>

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
    g_assert_true(
        smolvlm_config_parse("{\"scale_factor\": 7, \"text_config\": {\"model_type\": \"llama\"}}",
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
    g_assert_true(smolvlm_config_parse("{\"scale_factor\": 7}", NULL, "c.json", &c, &err));
    dq_assert_no_error(err);
    g_assert_cmpfloat(c.rms_norm_eps, ==, 1e-5);

    /* generation_config: a list of eos ids; without eos_token_id there is none. */
    g_assert_true(smolvlm_config_parse(
        "{\"scale_factor\": 7}",
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
    g_assert_true(
        smolvlm_config_parse("{\"scale_factor\": 7}", "{\"pad_token_id\": 2}", "c.json", &c, &err));
    g_assert_cmpint(c.n_eos, ==, 0);
}

static void expect_error(const char *json, const char *gen, const char *needle) {
    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_false(smolvlm_config_parse(json, gen, "snap/config.json", &c, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "snap/config.json"));
    if (strstr(err->message, needle) == NULL)
        g_error("error '%s' does not mention '%s'", err->message, needle);
    g_error_free(err);
}

static void test_errors(void) {
    expect_error("{\"text_config\": {\"hidden_size\": \"64\"}}", NULL,
                 "text_config.hidden_size must be an integer");
    expect_error("{\"vision_config\": {\"layer_norm_eps\": \"x\"}}", NULL,
                 "vision_config.layer_norm_eps must be a number");
    expect_error("{\"text_config\": {\"tie_word_embeddings\": 1}}", NULL, "true or false");
    expect_error("{\"vision_config\": []}", NULL, "vision_config must be an object");
    expect_error("{\"scale_factor\": 4}", NULL, "not divisible by scale_factor");
    expect_error("{\"scale_factor\": 7, \"text_config\": {\"num_attention_heads\": 8, "
                 "\"num_key_value_heads\": 3}}",
                 NULL, "not a multiple of num_key_value_heads");
    expect_error("{\"scale_factor\": 7, \"text_config\": {\"rope_scaling\": {\"type\": \"x\"}}}",
                 NULL, "rope_scaling is not supported");
    expect_error("{\"scale_factor\": 7, \"vision_config\": {\"hidden_act\": \"relu\"}}", NULL,
                 "hidden_act 'relu'");
    expect_error("{\"scale_factor\": 7, \"vision_config\": {\"patch_size\": 0}}", NULL,
                 "patch_size 0");
    /* fuzz_config's first finding: the connector's width overflowed int before any check */
    expect_error("{\"scale_factor\": 8192, \"vision_config\": {\"image_size\": 8192, "
                 "\"patch_size\": 1}}",
                 NULL, "too large for a connector");
    expect_error("{\"scale_factor\": 7, \"vision_config\": {\"num_channels\": 4}}", NULL,
                 "num_channels 4 is not supported");
    expect_error("[1]", NULL, "not a JSON object");
    expect_error("{\"scale_factor\": ", NULL, "config.json");
    expect_error("{\"scale_factor\": 7}", "{\"eos_token_id\": [\"a\"]}", "eos_token_id");

    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_false(smolvlm_config_load("/nonexistent/snapshot", &c, &err));
    g_assert_nonnull(strstr(err->message, "/nonexistent/snapshot/config.json"));
    g_error_free(err);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/config/real", test_real_configs);
    g_test_add_func("/config/defaults", test_defaults);
    g_test_add_func("/config/errors", test_errors);
    return g_test_run();
}
