/* config.json / generation_config.json at the edges of what is accepted: each bound is tried on
 * both sides (the last value accepted, the first refused), so that a bound moved by one fails a
 * test. Kept apart from test_config.c, whose sections cover the usual files and errors. */
#include "config.h"
#include "testutil.h"

#include <string.h>

#define CFG "{\"model_type\": \"idefics3\", \"scale_factor\": 7"

static void expect_error(const char *json, const char *gen, const char *needle) {
    SmolvlmConfig c;
    GError *err = NULL;
    g_assert_false(smolvlm_config_parse(json, gen, "snap/config.json", &c, &err));
    g_assert_nonnull(err);
    if (strstr(err->message, needle) == NULL)
        g_error("error '%s' does not mention '%s'", err->message, needle);
    g_error_free(err);
}

static void expect_ok(const char *json, const char *gen, SmolvlmConfig *c) {
    GError *err = NULL;
    if (!smolvlm_config_parse(json, gen, "snap/config.json", c, &err))
        g_error("%s / %s refused: %s", json, gen ? gen : "(none)", err->message);
}

/* generation_config.json's eos_token_id list: up to DQ_MAX_EOS_IDS ids, each a 32-bit int. A
 * longer list was refused without saying so once (the refusal's message deleted: the parse
 * failed with no error); the ids at the ends of int's range are real ids, kept as they are. */
static void test_eos_list(void) {
    SmolvlmConfig c;
    GString *ids = g_string_new("{\"eos_token_id\": [");
    for (int i = 0; i < DQ_MAX_EOS_IDS; i++)
        g_string_append_printf(ids, "%s%d", i ? ", " : "", 100 + i);
    GString *more = g_string_new(ids->str);
    g_string_append(ids, "]}");
    g_string_append(more, ", 999]}");
    expect_ok(CFG "}", ids->str, &c);
    g_assert_cmpint(c.n_eos, ==, DQ_MAX_EOS_IDS);
    g_assert_true(smolvlm_config_is_eos(&c, 100 + DQ_MAX_EOS_IDS - 1));
    expect_error(CFG "}", more->str, "eos_token_id must be a list of at most 8 ids");
    g_string_free(ids, TRUE);
    g_string_free(more, TRUE);

    expect_ok(CFG "}", "{\"eos_token_id\": [2147483647, -2147483648]}", &c);
    g_assert_cmpint(c.n_eos, ==, 2);
    g_assert_cmpint(c.eos_ids[0], ==, G_MAXINT);
    g_assert_cmpint(c.eos_ids[1], ==, G_MININT);
    expect_error(CFG "}", "{\"eos_token_id\": [2147483648]}", "a list of 32-bit integers");
    expect_error(CFG "}", "{\"eos_token_id\": [-2147483649]}", "a list of 32-bit integers");

    /* bos_token_id is unused (a prompt is always given) but checked: transformers' generate()
     * fails on one that is not a number. */
    expect_ok(CFG "}", "{\"bos_token_id\": 0}", &c);
    expect_ok(CFG "}", "{\"bos_token_id\": null}", &c);
    expect_error(CFG "}", "{\"bos_token_id\": \"<s>\"}", "bos_token_id must be an integer");
    expect_error(CFG "}", "{\"bos_token_id\": {}}", "bos_token_id must be an integer");
}

/* The lower bounds of the sizes and epsilons: 1 is a size, 0 is not. An epsilon of 0 is what
 * transformers 4.57.6 runs as given (x * rsqrt(mean(x^2)), (x - mean) / sqrt(var): s34's
 * differential test gave its logits within 2.4e-5 on cpu and cpu-ref); a negative one, which
 * makes the norm of any row smaller than it NaN, is refused. */
static void test_lower_bounds(void) {
    SmolvlmConfig c;
    expect_error(CFG ", \"text_config\": {\"vocab_size\": 0}}", NULL,
                 "text_config.vocab_size 0 is outside 1..");
    expect_ok(CFG ", \"text_config\": {\"vocab_size\": 1}}", NULL, &c);
    g_assert_cmpint(c.vocab_size, ==, 1);
    expect_ok(CFG ", \"vision_config\": {\"layer_norm_eps\": 0}}", NULL, &c);
    g_assert_cmpfloat(c.vision_layer_norm_eps, ==, 0.0);
    expect_ok(CFG ", \"text_config\": {\"rms_norm_eps\": 0.0}}", NULL, &c);
    g_assert_cmpfloat(c.rms_norm_eps, ==, 0.0);
    expect_error(CFG ", \"text_config\": {\"rms_norm_eps\": -1e-6}}", NULL,
                 "text_config.rms_norm_eps -1e-06 and vision_config.layer_norm_eps 1e-06 must be "
                 "in [0, 1)");
    expect_error(CFG ", \"vision_config\": {\"layer_norm_eps\": -0.0001}}", NULL,
                 "vision_config.layer_norm_eps -0.0001 must be in [0, 1)");
    expect_error(CFG ", \"text_config\": {\"rms_norm_eps\": 1}}", NULL,
                 "text_config.rms_norm_eps 1 and");
    expect_error(CFG ", \"vision_config\": {\"layer_norm_eps\": 1.0}}", NULL,
                 "vision_config.layer_norm_eps 1 must be in [0, 1)");
    expect_ok(CFG ", \"text_config\": {\"rms_norm_eps\": 1e-30}, \"vision_config\": "
                  "{\"layer_norm_eps\": 0.999}}",
              NULL, &c);
    g_assert_cmpfloat(c.rms_norm_eps, ==, 1e-30);
    g_assert_cmpfloat(c.vision_layer_norm_eps, ==, 0.999);
}

/* An error after an accepted rope_scaling names its key under text_config, not under
 * text_config.rope_scaling (the reader's scope is restored once rope_scaling is read). */
static void test_scope_after_rope_scaling(void) {
    expect_error(CFG ", \"text_config\": {\"rope_scaling\": {\"rope_type\": \"default\"}, "
                     "\"partial_rotary_factor\": 0.5}}",
                 NULL, "snap/config.json: text_config.partial_rotary_factor must be 1.0");
    expect_error(CFG ", \"text_config\": {\"rope_scaling\": {\"type\": \"dynamic\", "
                     "\"factor\": 2.0}, \"partial_rotary_factor\": 0.5}}",
                 NULL, "snap/config.json: text_config.partial_rotary_factor must be 1.0");
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/config-limits/eos-list", test_eos_list);
    g_test_add_func("/config-limits/lower-bounds", test_lower_bounds);
    g_test_add_func("/config-limits/scope-after-rope-scaling", test_scope_after_rope_scaling);
    return g_test_run();
}
