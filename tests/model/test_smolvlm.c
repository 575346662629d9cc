/* SmolVLM forward pass and generation against transformers' goldens.
 *
 * For every case of the fixtures and every model variant (f32 and bf16 snapshots of both
 * geometries): the image processor's tiles and the golden input_ids go through smolvlm_generate
 * (16 greedy tokens, ignore_eos), with a trace hook capturing vision_patch_embeds,
 * vision_last_hidden, image_features, inputs_embeds and decoder_last_hidden. Each is compared
 * with what the case stores (full, row/tile subsets, logit id subsets, inline last rows):
 * max abs <= 5e-4 (landscape_jpeg: the case's own tolerance), logits cosine >= 0.999999, greedy
 * ids equal up to the first low-margin step.
 *
 * test_smolvlm (unit) takes the text_only and no_split cases of the compact fixtures committed in
 * tests/fixtures, plus sampling, eos and broken-snapshot checks; test_smolvlm_full (slow) takes
 * every case of ../shared/fixtures and checks that batching never changes a request's results.
 * Both need the tiny models in ../shared/models (skipped without).
 */
#include "generate.h"
#include "fixture_case.h"
#include "image_processor.h"
#include "smolvlm.h"
#include "testutil.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOL_HIDDEN 5e-4
#define TOL_LOGITS 5e-4
#define MIN_COSINE 0.999999

typedef struct {
    GHashTable *tensors; /* name -> GArray of float (concatenated over calls) */
    int cols[8];
} Trace;

static void trace_fn(void *user, const char *name, int index, const float *data, int rows,
                     int cols) {
    Trace *t = user;
    GArray *a = g_hash_table_lookup(t->tensors, name);
    if (a == NULL) {
        a = g_array_new(FALSE, FALSE, sizeof(float));
        g_hash_table_insert(t->tensors, g_strdup(name), a);
    }
    g_array_append_vals(a, data, (guint)((size_t)rows * cols));
}

static void free_array(gpointer p) {
    g_array_free(p, TRUE);
}

static char *fixtures_dir(void) {
#ifdef DQ_FULL_FIXTURES
    const char *shared = dq_test_shared_dir();
    return shared ? g_build_filename(shared, "fixtures", NULL) : NULL;
#else
    return g_build_filename(dq_test_source_dir(), "tests", "fixtures", NULL);
#endif
}

typedef struct {
    double max_abs;
    double cosine; /* for logits */
    int compared;
} Diff;

static void diff_add(Diff *d, double a, double b) {
    d->max_abs = MAX(d->max_abs, fabs(a - b));
    d->compared++;
}

/* Compares `mine` (the whole tensor, row-major in full_shape) with the stored golden. */
static Diff compare_entry(const char *case_dir, JsonObject *e, const float *mine, size_t n_mine,
                          const char *what) {
    Diff d = {0};
    const char *stored = json_object_get_string_member(e, "stored");
    JsonArray *full = json_object_get_array_member(
        e, json_object_has_member(e, "full_shape") ? "full_shape" : "shape");
    size_t numel = 1;
    for (guint i = 0; i < json_array_get_length(full); i++)
        numel *= (size_t)json_array_get_int_element(full, i);
    /* The trace appends the decode steps' rows after the prompt's: compare the prompt part. */
    if (numel > n_mine)
        g_error("%s: I computed %zu values, the golden tensor has %zu", what, n_mine, numel);
    size_t cols = (size_t)json_array_get_int_element(full, json_array_get_length(full) - 1);
    if (stored == NULL || strcmp(stored, "full") == 0) {
        size_t len;
        float *g = fixture_read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
        g_assert_cmpuint(len, ==, numel * 4);
        for (size_t i = 0; i < numel; i++)
            diff_add(&d, mine[i], g[i]);
        g_free(g);
    } else if (strcmp(stored, "last_row_inline") == 0) {
        JsonArray *row = json_object_get_array_member(e, "last_row");
        g_assert_cmpuint(json_array_get_length(row), ==, cols);
        for (size_t i = 0; i < cols; i++)
            diff_add(&d, mine[numel - cols + i], json_array_get_double_element(row, (guint)i));
    } else if (strcmp(stored, "stats_only") == 0) {
        JsonObject *stats = json_object_get_object_member(e, "stats");
        double mx = 0;
        for (size_t i = 0; i < numel; i++)
            mx = MAX(mx, fabs(mine[i]));
        diff_add(&d, mx, json_object_get_double_member(stats, "max_abs"));
    } else if (json_object_has_member(e, "ids_file")) {
        size_t len, ilen;
        float *g = fixture_read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
        int32_t *ids =
            fixture_read_binary(case_dir, json_object_get_string_member(e, "ids_file"), &ilen);
        g_assert_cmpuint(len, ==, ilen);
        for (size_t i = 0; i < ilen / 4; i++) {
            g_assert_cmpint(ids[i], <, (int)numel);
            diff_add(&d, mine[ids[i]], g[i]);
        }
        g_free(g);
        g_free(ids);
    } else if (json_object_has_member(e, "row_indices")) {
        size_t len;
        float *g = fixture_read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
        JsonArray *rows = json_object_get_array_member(e, "row_indices");
        for (guint r = 0; r < json_array_get_length(rows); r++) {
            size_t row = (size_t)json_array_get_int_element(rows, r);
            for (size_t c = 0; c < cols; c++)
                diff_add(&d, mine[row * cols + c], g[r * cols + c]);
        }
        g_assert_cmpuint(len, ==, (size_t)d.compared * 4);
        g_free(g);
    } else if (json_object_has_member(e, "tile_indices")) {
        size_t len;
        float *g = fixture_read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
        JsonArray *tiles = json_object_get_array_member(e, "tile_indices");
        JsonArray *patches = json_object_get_array_member(e, "patch_indices");
        size_t P = (size_t)json_array_get_int_element(full, 1);
        size_t k = 0;
        for (guint t = 0; t < json_array_get_length(tiles); t++)
            for (guint p = 0; p < json_array_get_length(patches); p++) {
                size_t tile = (size_t)json_array_get_int_element(tiles, t);
                size_t patch = (size_t)json_array_get_int_element(patches, p);
                for (size_t c = 0; c < cols; c++)
                    diff_add(&d, mine[(tile * P + patch) * cols + c], g[k++]);
            }
        g_assert_cmpuint(len, ==, k * 4);
        g_free(g);
    } else {
        g_error("%s: unknown storage '%s'", what, stored);
    }
    return d;
}

static double logits_cosine(const char *case_dir, JsonObject *e, const float *mine, int vocab) {
    /* Over the stored ids (all of them when stored in full). */
    double dot = 0, na = 0, nb = 0;
    size_t len;
    float *g = fixture_read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
    int32_t *ids = NULL;
    if (json_object_has_member(e, "ids_file"))
        ids = fixture_read_binary(case_dir, json_object_get_string_member(e, "ids_file"), NULL);
    else
        g_assert_cmpuint(len, ==, (size_t)vocab * 4);
    for (size_t i = 0; i < len / 4; i++) {
        double a = mine[ids ? ids[i] : (int)i], b = g[i];
        dot += a * b;
        na += a * a;
        nb += b * b;
    }
    g_free(g);
    g_free(ids);
    return dot / sqrt(na * nb);
}

typedef struct {
    int variants;
    double worst_logits;
} Sweep;

static void run_case_variant(const char *fx_dir, const char *case_name, JsonObject *case_obj,
                             const char *variant, Sweep *sweep) {
    const char *shared = dq_test_shared_dir();
    JsonObject *vars = json_object_get_object_member(case_obj, "variants");
    JsonObject *v = json_object_get_object_member(vars, variant);
    char *case_dir = g_build_filename(fx_dir, "cases", case_name, NULL);
    char *snap = g_build_filename(shared, json_object_get_string_member(v, "model_dir"), NULL);
    JsonObject *files = json_object_get_object_member(v, "files");
    /* bf16 variants share the f32 variant's input ids. */
    JsonObject *ids_entry = json_object_has_member(files, "input_ids")
                                ? json_object_get_object_member(files, "input_ids")
                                : NULL;
    if (ids_entry == NULL) {
        char *base = g_strndup(variant, strlen(variant) - strlen("-bf16"));
        JsonObject *bv = json_object_get_object_member(vars, base);
        ids_entry =
            json_object_get_object_member(json_object_get_object_member(bv, "files"), "input_ids");
        g_free(base);
    }
    size_t ids_len;
    int32_t *ids =
        fixture_read_binary(case_dir, json_object_get_string_member(ids_entry, "file"), &ids_len);

    GError *err = NULL;
    Smolvlm *m = smolvlm_open(snap, NULL, &err);
    dq_assert_no_error(err);
    const SmolvlmConfig *cfg = smolvlm_config(m);
    int n_images;
    DqImageTiles **tiles = fixture_case_tiles(fx_dir, case_obj, snap, &n_images);

    Trace tr = {.tensors = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, free_array)};
    smolvlm_set_trace(m, trace_fn, &tr);
    SmolvlmRequest req = {.input_ids = ids,
                          .n_input_ids = (int)(ids_len / 4),
                          .images = (const DqImageTiles *const *)tiles,
                          .n_images = n_images,
                          .want_logits = TRUE};
    dq_generate_options_init(&req.options, cfg);
    req.options.do_sample = FALSE;
    req.options.max_new_tokens = (int)json_object_get_int_member(case_obj, "max_new_tokens");
    req.options.ignore_eos = TRUE;
    DqGenerateResult res;
    DqGenerateTimings tm;
    g_assert_true(smolvlm_generate(m, &req, 1, &res, &tm, &err));
    dq_assert_no_error(err);

    /* Tolerances: the README's, or the case's own (landscape_jpeg). */
    double tol = TOL_LOGITS, min_cos = MIN_COSINE, margin_limit = 0.01;
    if (json_object_has_member(case_obj, "tolerance")) {
        JsonObject *t = json_object_get_object_member(case_obj, "tolerance");
        if (json_object_has_member(t, "logits_max_abs"))
            tol = json_object_get_double_member(t, "logits_max_abs");
        if (json_object_has_member(t, "logits_cosine_min"))
            min_cos = json_object_get_double_member(t, "logits_cosine_min");
        if (json_object_has_member(t, "greedy_margin"))
            margin_limit = json_object_get_double_member(t, "greedy_margin");
    }
    double htol = MAX(tol, TOL_HIDDEN);

    GString *report = g_string_new(NULL);
    const char *names[] = {"vision_patch_embeds", "vision_last_hidden", "image_features",
                           "inputs_embeds", "decoder_last_hidden"};
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        if (!json_object_has_member(files, names[i]))
            continue;
        GArray *a = g_hash_table_lookup(tr.tensors, names[i]);
        char *what = g_strdup_printf("%s/%s %s", case_name, variant, names[i]);
        if (a == NULL)
            g_error("%s: the forward pass produced no such tensor", what);
        Diff d = compare_entry(case_dir, json_object_get_object_member(files, names[i]),
                               (const float *)a->data, a->len, what);
        g_string_append_printf(report, " %s %.2e", names[i], d.max_abs);
        if (!(d.max_abs <= htol) || d.compared == 0)
            g_error("%s: max abs diff %.3g > %.3g over %d values", what, d.max_abs, htol,
                    d.compared);
        g_free(what);
    }
    JsonObject *le = json_object_get_object_member(files, "logits_last");
    Diff d = compare_entry(case_dir, le, res.last_logits, (size_t)cfg->vocab_size, "logits");
    double cosv = logits_cosine(case_dir, le, res.last_logits, cfg->vocab_size);
    g_string_append_printf(report, " logits %.2e cos-1 %.1e", d.max_abs, cosv - 1);
    if (!(d.max_abs <= tol) || !(cosv >= min_cos))
        g_error("%s/%s: logits max abs %.3g (limit %.3g), cosine %.9f", case_name, variant,
                d.max_abs, tol, cosv);
    sweep->worst_logits = MAX(sweep->worst_logits, d.max_abs);

    /* Greedy ids up to (not including) the first step with a golden margin <= the limit. */
    JsonObject *gen = json_object_get_object_member(v, "generation");
    JsonArray *out = json_object_get_array_member(gen, "output_ids");
    JsonArray *steps = json_object_get_array_member(gen, "steps");
    int compared = 0;
    for (guint i = 0; i < json_array_get_length(out); i++) {
        double margin =
            json_object_get_double_member(json_array_get_object_element(steps, i), "margin");
        if (margin <= margin_limit)
            break;
        g_assert_cmpint(res.n_output_ids, >, (int)i);
        if (res.output_ids[i] != json_array_get_int_element(out, i))
            g_error("%s/%s: greedy token %u is %d, golden %d", case_name, variant, i,
                    res.output_ids[i], (int)json_array_get_int_element(out, i));
        compared++;
    }
    g_assert_cmpint(res.n_output_ids, ==, req.options.max_new_tokens);
    g_test_message("%s/%s: tiles %d%s; greedy %d/%d equal; vision %.0f ms prefill %.0f ms "
                   "decode %.0f ms",
                   case_name, variant, tm.n_tiles, report->str, compared,
                   (int)json_array_get_length(out), tm.vision_ms, tm.prefill_ms, tm.decode_ms);
    if (g_getenv("DQ_TEST_VERBOSE"))
        printf("%s/%s:%s greedy %d/%d\n", case_name, variant, report->str, compared,
               (int)json_array_get_length(out));
    sweep->variants++;

    g_string_free(report, TRUE);
    dq_generate_result_clear(&res);
    g_hash_table_destroy(tr.tensors);
    for (int i = 0; i < n_images; i++)
        dq_image_tiles_free(tiles[i]);
    g_free(tiles);
    smolvlm_free(m);
    g_free(ids);
    g_free(snap);
    g_free(case_dir);
}

static void test_goldens(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *fx = fixtures_dir();
    char *index_path = g_build_filename(fx, "index.json", NULL);
    JsonParser *ip;
    JsonObject *index = fixture_parse_file(index_path, &ip);
    JsonArray *cases = json_object_get_array_member(index, "cases");
    const char *only = g_getenv("DQ_TEST_CASE");
#ifndef DQ_FULL_FIXTURES
    /* The unit program (also run under ASan) takes the two one-tile-or-less cases; the slow
     * program takes every case. */
    const char *unit_cases[] = {"text_only", "no_split"};
#endif
    Sweep sweep = {0};
    for (guint c = 0; c < json_array_get_length(cases); c++) {
        const char *name = json_array_get_string_element(cases, c);
        if (only != NULL && strcmp(only, name) != 0)
            continue;
#ifndef DQ_FULL_FIXTURES
        if (only == NULL && strcmp(name, unit_cases[0]) != 0 && strcmp(name, unit_cases[1]) != 0)
            continue;
#endif
        char *path = g_build_filename(fx, "cases", name, "case.json", NULL);
        JsonParser *cp;
        JsonObject *case_obj = fixture_parse_file(path, &cp);
        const char *lists[] = {"variants_f32", "variants_bf16"};
        for (int l = 0; l < 2; l++) {
            JsonArray *vs = json_object_get_array_member(index, lists[l]);
            for (guint i = 0; i < json_array_get_length(vs); i++)
                run_case_variant(fx, name, case_obj, json_array_get_string_element(vs, i), &sweep);
        }
        g_object_unref(cp);
        g_free(path);
    }
    g_test_message("%d case/variant runs, worst logits max abs %.3g", sweep.variants,
                   sweep.worst_logits);
#ifdef DQ_FULL_FIXTURES
    g_assert_cmpint(sweep.variants, >=, only ? 4 : 16);
#else
    g_assert_cmpint(sweep.variants, ==, 8);
#endif
    g_object_unref(ip);
    g_free(index_path);
    g_free(fx);
}

/* ---- batching, sampling, broken snapshots */

typedef struct {
    int32_t *ids;
    int n_ids;
    DqImageTiles **tiles;
    int n_images;
} Prompt;

static Prompt load_prompt(const char *case_name, const char *snap) {
    char *fx = g_build_filename(dq_test_source_dir(), "tests", "fixtures", NULL);
    char *case_dir = g_build_filename(fx, "cases", case_name, NULL);
    char *path = g_build_filename(case_dir, "case.json", NULL);
    JsonParser *p;
    JsonObject *case_obj = fixture_parse_file(path, &p);
    Prompt pr = {0};
    size_t len;
    pr.ids = fixture_read_binary(case_dir, "tiny-smolvlm-b512/input_ids.i32", &len);
    pr.n_ids = (int)(len / 4);
    pr.tiles = fixture_case_tiles(fx, case_obj, snap, &pr.n_images);
    g_object_unref(p);
    g_free(path);
    g_free(case_dir);
    g_free(fx);
    return pr;
}

static void free_prompt(Prompt *pr) {
    for (int i = 0; i < pr->n_images; i++)
        dq_image_tiles_free(pr->tiles[i]);
    g_free(pr->tiles);
    g_free(pr->ids);
}

static SmolvlmRequest prompt_request(const Prompt *pr, const SmolvlmConfig *cfg, int max_new) {
    SmolvlmRequest r = {.input_ids = pr->ids,
                        .n_input_ids = pr->n_ids,
                        .images = (const DqImageTiles *const *)pr->tiles,
                        .n_images = pr->n_images,
                        .want_logits = TRUE};
    dq_generate_options_init(&r.options, cfg);
    r.options.do_sample = FALSE;
    r.options.max_new_tokens = max_new;
    r.options.ignore_eos = TRUE;
    return r;
}

/* The tiny b512 snapshot of ../shared, opened (its directory in *snap, g_free it); NULL, with the
 * test skipped, where ../shared is missing. */
G_GNUC_UNUSED static Smolvlm *open_tiny_b512(char **snap) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return NULL;
    }
    *snap = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    GError *err = NULL;
    Smolvlm *m = smolvlm_open(*snap, NULL, &err);
    dq_assert_no_error(err);
    return m;
}

/* A request's tokens and logits are the same alone and in a batch of 4 with other images. */
G_GNUC_UNUSED static void test_batch_independent(void) {
    char *snap = NULL;
    Smolvlm *m = open_tiny_b512(&snap);
    if (m == NULL)
        return;
    GError *err = NULL;
    const SmolvlmConfig *cfg = smolvlm_config(m);
    const char *cases[4] = {"no_split", "extreme_aspect", "text_only", "rgba_alpha"};
    const int max_new[4] = {12, 16, 5, 9}; /* different lengths: requests finish apart */
    Prompt pr[4];
    SmolvlmRequest req[4];
    DqGenerateResult alone[4], batch[4];
    for (int i = 0; i < 4; i++) {
        pr[i] = load_prompt(cases[i], snap);
        req[i] = prompt_request(&pr[i], cfg, max_new[i]);
        g_assert_true(smolvlm_generate(m, &req[i], 1, &alone[i], NULL, &err));
        dq_assert_no_error(err);
    }
    DqGenerateTimings tm;
    g_assert_true(smolvlm_generate(m, req, 4, batch, &tm, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(tm.n_tiles, ==, 1 + 5 + 0 + 13);
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(batch[i].n_output_ids, ==, max_new[i]);
        g_assert_cmpmem(batch[i].output_ids, batch[i].n_output_ids * 4, alone[i].output_ids,
                        alone[i].n_output_ids * 4);
        double worst = 0;
        for (int v = 0; v < cfg->vocab_size; v++)
            worst = MAX(worst, fabs(batch[i].last_logits[v] - alone[i].last_logits[v]));
        g_test_message("%s: batch vs alone logits max abs %.3g", cases[i], worst);
        g_assert_cmpfloat(worst, ==, 0); /* bit-identical */
        dq_generate_result_clear(&alone[i]);
        dq_generate_result_clear(&batch[i]);
    }
    /* The same request twice in one batch gives the same tokens twice. */
    SmolvlmRequest twice[2] = {req[0], req[0]};
    g_assert_true(smolvlm_generate(m, twice, 2, batch, NULL, &err));
    g_assert_cmpmem(batch[0].output_ids, batch[0].n_output_ids * 4, batch[1].output_ids,
                    batch[1].n_output_ids * 4);
    dq_generate_result_clear(&batch[0]);
    dq_generate_result_clear(&batch[1]);
    for (int i = 0; i < 4; i++)
        free_prompt(&pr[i]);
    smolvlm_free(m);
    g_free(snap);
}

G_GNUC_UNUSED static void test_sampling_and_eos(void) {
    char *snap = NULL;
    Smolvlm *m = open_tiny_b512(&snap);
    if (m == NULL)
        return;
    GError *err = NULL;
    const SmolvlmConfig *cfg = smolvlm_config(m);
    Prompt pr = load_prompt("text_only", snap);
    SmolvlmRequest greedy = prompt_request(&pr, cfg, 16);
    DqGenerateResult g, a, b, c;
    g_assert_true(smolvlm_generate(m, &greedy, 1, &g, NULL, &err));

    /* Same seed, same tokens; top_k = 1 is greedy whatever the temperature. */
    SmolvlmRequest s = greedy;
    s.options.do_sample = TRUE;
    s.options.temperature = 1.5;
    s.options.top_p = 0.95;
    s.options.top_k = 0;
    s.options.seed = 7;
    g_assert_true(smolvlm_generate(m, &s, 1, &a, NULL, &err));
    g_assert_true(smolvlm_generate(m, &s, 1, &b, NULL, &err));
    g_assert_cmpmem(a.output_ids, 64, b.output_ids, 64);
    g_assert_true(memcmp(a.output_ids, g.output_ids, 64) != 0);
    s.options.seed = 8;
    g_assert_true(smolvlm_generate(m, &s, 1, &c, NULL, &err));
    g_assert_true(memcmp(a.output_ids, c.output_ids, 64) != 0);
    dq_generate_result_clear(&b);
    dq_generate_result_clear(&c);
    s.options.top_k = 1;
    g_assert_true(smolvlm_generate(m, &s, 1, &b, NULL, &err));
    g_assert_cmpmem(b.output_ids, 64, g.output_ids, 64);
    dq_generate_result_clear(&b);

    /* Temperature sampling draws in proportion to softmax(logits / T). */
    float logits[4] = {0.0f, (float)log(2.0), (float)log(5.0), -INFINITY};
    DqGenerateOptions o = {
        .max_new_tokens = 1, .do_sample = TRUE, .temperature = 1.0, .top_p = 1.0};
    void *scratch = g_malloc(4 * 8);
    uint64_t rng = 1;
    int counts[4] = {0};
    for (int i = 0; i < 80000; i++)
        counts[dq_sample_token(logits, 4, &o, &rng, scratch)]++;
    g_assert_cmpint(counts[3], ==, 0);
    g_assert_cmpfloat(fabs(counts[2] / 80000.0 - 5.0 / 8), <, 0.01);
    g_assert_cmpfloat(fabs(counts[0] / 80000.0 - 1.0 / 8), <, 0.01);
    /* top_p 0.6: only the 5/8 token is kept. */
    o.top_p = 0.6;
    for (int i = 0; i < 1000; i++)
        g_assert_cmpint(dq_sample_token(logits, 4, &o, &rng, scratch), ==, 2);
    /* top_p 0.8: the 5/8 and 2/8 tokens (their 7/8 is the first mass to reach it), drawn 5:2
     * from that mass renormalized; the 1/8 token, whose mass ascending is <= 1 - top_p, never. */
    o.top_p = 0.8;
    memset(counts, 0, sizeof counts);
    for (int i = 0; i < 70000; i++)
        counts[dq_sample_token(logits, 4, &o, &rng, scratch)]++;
    g_assert_cmpint(counts[0] + counts[3], ==, 0);
    g_assert_cmpfloat(fabs(counts[2] / 70000.0 - 5.0 / 7), <, 0.01);
    g_assert_cmpfloat(fabs(counts[1] / 70000.0 - 2.0 / 7), <, 0.01);
    /* top_p 0 is not "off": transformers' TopPLogitsWarper keeps min_tokens_to_keep = 1 token,
     * the best, even where it holds little of the mass (here the 1/3 of three near ties). */
    float flat[4] = {0.0f, 0.01f, -0.01f, -INFINITY};
    o.top_p = 0.0;
    rng = 7;
    for (int i = 0; i < 1000; i++)
        g_assert_cmpint(dq_sample_token(flat, 4, &o, &rng, scratch), ==, 1);
    g_free(scratch);

    /* Without ignore_eos generation stops at generation_config's eos: make the golden's 4th
     * greedy token the eos by asking a model whose eos it is. */
    char *dir = dq_test_tmpdir();
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *src = g_build_filename(snap, files[i], NULL);
        char *dst = g_build_filename(dir, files[i], NULL);
        g_assert_cmpint(symlink(src, dst), ==, 0);
        g_free(src);
        g_free(dst);
    }
    char *gen = g_build_filename(dir, "generation_config.json", NULL);
    char *json = g_strdup_printf("{\"eos_token_id\": [1, %d]}", g.output_ids[3]);
    g_assert_true(g_file_set_contents(gen, json, -1, NULL));
    Smolvlm *m2 = smolvlm_open(dir, NULL, &err);
    dq_assert_no_error(err);
    SmolvlmRequest e = prompt_request(&pr, smolvlm_config(m2), 16);
    e.options.ignore_eos = FALSE;
    g_assert_true(smolvlm_generate(m2, &e, 1, &b, NULL, &err));
    g_assert_true(b.stopped_on_eos);
    g_assert_cmpint(b.n_output_ids, ==, 4);
    g_assert_cmpmem(b.output_ids, 16, g.output_ids, 16);
    dq_generate_result_clear(&b);
    smolvlm_free(m2);

    /* Requests that do not add up fail cleanly. */
    SmolvlmRequest bad = greedy;
    bad.options.max_new_tokens = 0;
    g_assert_false(smolvlm_generate(m, &bad, 1, &b, NULL, &err));
    g_assert_nonnull(strstr(err->message, "max_new_tokens"));
    g_clear_error(&err);
    int32_t img_ids[3] = {1, cfg->image_token_id, 2};
    bad = greedy;
    bad.input_ids = img_ids;
    bad.n_input_ids = 3;
    g_assert_false(smolvlm_generate(m, &bad, 1, &b, NULL, &err));
    g_assert_nonnull(strstr(err->message, "<image> tokens"));
    g_clear_error(&err);
    int32_t oov[2] = {1, cfg->vocab_size};
    bad.input_ids = oov;
    bad.n_input_ids = 2;
    g_assert_false(smolvlm_generate(m, &bad, 1, &b, NULL, &err));
    g_assert_nonnull(strstr(err->message, "outside the vocabulary"));
    g_clear_error(&err);

    g_free(json);
    g_free(gen);
    g_free(dir);
    dq_generate_result_clear(&a);
    dq_generate_result_clear(&g);
    free_prompt(&pr);
    smolvlm_free(m);
    g_free(snap);
}

/* A snapshot whose config disagrees with its tensors is refused with the tensor's name. */
G_GNUC_UNUSED static void test_broken_snapshots(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *snap = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    char *cfg_path = g_build_filename(snap, "config.json", NULL);
    char *orig = dq_test_read_file(cfg_path, NULL);
    struct {
        const char *from, *to, *needle;
    } cases[] = {
        {"\"intermediate_size\": 128", "\"intermediate_size\": 96",
         "tensor 'model.text_model.layers.0.mlp.gate_proj.weight' has shape [128, 64], "
         "config.json implies [96, 64]"},
        {"\"patch_size\": 16", "\"patch_size\": 8", "patch_embedding.weight' has shape"},
        {"\"tie_word_embeddings\": true,\n    \"use_cache\"",
         "\"tie_word_embeddings\": false,\n    \"use_cache\"",
         "'lm_head.weight' is missing and config.json's text_config.tie_word_embeddings is not "
         "true"},
        /* null unties too: transformers then draws lm_head at random at every load */
        {"\"tie_word_embeddings\": true,\n    \"use_cache\"",
         "\"tie_word_embeddings\": null,\n    \"use_cache\"",
         "text_config.tie_word_embeddings is not true (false, null or absent: lm_head is its own "
         "tensor, which transformers would draw at random at every load)"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *dir = dq_test_tmpdir();
        char *src = g_build_filename(snap, "model.safetensors", NULL);
        char *dst = g_build_filename(dir, "model.safetensors", NULL);
        g_assert_cmpint(symlink(src, dst), ==, 0);
        g_assert_nonnull(strstr(orig, cases[i].from));
        GString *s = g_string_new(orig);
        g_string_replace(s, cases[i].from, cases[i].to, 1);
        char *cp = g_build_filename(dir, "config.json", NULL);
        g_assert_true(g_file_set_contents(cp, s->str, -1, NULL));
        GError *err = NULL;
        g_assert_null(smolvlm_open(dir, NULL, &err));
        g_assert_nonnull(err);
        if (strstr(err->message, cases[i].needle) == NULL)
            g_error("error '%s' does not mention '%s'", err->message, cases[i].needle);
        g_clear_error(&err);
        g_string_free(s, TRUE);
        g_free(cp);
        g_free(src);
        g_free(dst);
        g_free(dir);
    }
    /* A truncated weights file. */
    char *dir = dq_test_tmpdir();
    char *src = g_build_filename(snap, "model.safetensors", NULL);
    size_t len;
    char *bytes = dq_test_read_file(src, &len);
    char *dst = g_build_filename(dir, "model.safetensors", NULL);
    g_assert_true(g_file_set_contents(dst, bytes, (gssize)(len - 1000), NULL));
    char *cp = g_build_filename(dir, "config.json", NULL);
    g_assert_true(g_file_set_contents(cp, orig, -1, NULL));
    GError *err = NULL;
    g_assert_null(smolvlm_open(dir, NULL, &err));
    g_assert_nonnull(strstr(err->message, "overruns the data section"));
    g_assert_nonnull(strstr(err->message, dst));
    g_clear_error(&err);
    g_assert_null(smolvlm_open(snap, &(SmolvlmOptions){.device = "tpu"}, &err));
    g_assert_nonnull(strstr(err->message, "device 'tpu'"));
    g_clear_error(&err);
    g_free(bytes);
    g_free(src);
    g_free(dst);
    g_free(cp);
    g_free(dir);
    g_free(orig);
    g_free(cfg_path);
    g_free(snap);
}

/* Position ids: the goldens' bucketing (see smolvlm_vision_position_ids). */
G_GNUC_UNUSED static void test_position_ids(void) {
    int32_t ids[32 * 32];
    smolvlm_vision_position_ids(32, 32, 32, ids);
    g_assert_cmpint(ids[0], ==, 0);
    g_assert_cmpint(ids[1], ==, 0);
    g_assert_cmpint(ids[2], ==, 1);
    g_assert_cmpint(ids[32], ==, 0);
    g_assert_cmpint(ids[1023], ==, 30 * 32 + 30);
    smolvlm_vision_position_ids(27, 27, 27, ids);
    g_assert_cmpint(ids[5], ==, 4);
    g_assert_cmpint(ids[728], ==, 25 * 27 + 25);
    /* A half-masked tile spreads its 16 columns over the 32 positions. */
    smolvlm_vision_position_ids(32, 1, 16, ids);
    g_assert_cmpint(ids[1], ==, 1);
    g_assert_cmpint(ids[2], ==, 3);
    g_assert_cmpint(ids[15], ==, 29);
}

/* Identical tiles are encoded once (smolvlm_encode_tiles): the features of a mix of tiles
 * equal A's, B's, C's and D's encoded alone, tile for tile, bit for bit, where C differs from A
 * in two bytes only, D has A's bytes under another table (a copy of A's table, in other memory,
 * maps them to the same values as A), and E has B's bytes under A's hash (a collision: compared
 * with A, and encoded). */
G_GNUC_UNUSED static void test_duplicate_tiles(void) {
    char *snap = NULL;
    Smolvlm *m = open_tiny_b512(&snap);
    if (m == NULL)
        return;
    GError *err = NULL;
    const SmolvlmConfig *c = smolvlm_config(m);
    size_t tb = (size_t)c->vision_channels * c->image_size * c->image_size;
    size_t ff = (size_t)c->tokens_per_tile * c->text_hidden;
    uint8_t *a = g_new(uint8_t, tb), *b = g_new(uint8_t, tb);
    for (size_t i = 0; i < tb; i++) {
        a[i] = (uint8_t)((i * 7919) % 255);
        b[i] = (uint8_t)((i * 104729) % 255);
    }
    uint8_t *cc = g_memdup2(a, tb);
    cc[64 * 5] += 1;
    cc[tb - 1] += 1;
    float lut[3 * 256], other[3 * 256];
    for (int i = 0; i < 3 * 256; i++) {
        lut[i] = (float)(i % 256) / 127.5f - 1.0f;
        other[i] = (float)(255 - i % 256) / 127.5f - 1.0f;
    }
    float *lut_copy = g_memdup2(lut, sizeof lut);
    const uint64_t ha = dq_tile_hash(a, tb), hb = dq_tile_hash(b, tb), hc = dq_tile_hash(cc, tb);
    const DqPixelTile ta = {a, lut, ha}, tb_ = {b, lut, hb}, tc = {cc, lut, hc},
                      td = {a, other, ha}, te = {b, lut, ha};
    const DqPixelTile mixed[9] = {ta, tb_, ta, {a, lut_copy, ha}, tc, td, te, ta, te};
    const int want[9] = {0, 1, 0, 0, 2, 3, 1, 0, 1}; /* which of A, B, C, D each is */
    DqBackend *be = smolvlm_backend(m);
    float *fm = be->alloc(be, 9 * ff), *alone[4];
    const DqPixelTile singles[4] = {ta, tb_, tc, td};
    for (int i = 0; i < 4; i++) {
        alone[i] = be->alloc(be, ff);
        g_assert_true(smolvlm_encode_tiles(m, &singles[i], 1, alone[i], NULL, &err));
    }
    int distinct = 0;
    g_assert_true(smolvlm_encode_tiles(m, mixed, 9, fm, &distinct, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(distinct, ==, 5); /* A, B, C, D and E */
    for (int t = 0; t < 9; t++)
        g_assert_cmpmem(fm + t * ff, ff * sizeof(float), alone[want[t]], ff * sizeof(float));
    for (int i = 1; i < 4; i++)
        g_assert_true(memcmp(alone[0], alone[i], ff * sizeof(float)) != 0);
    /* a collision as the very first tile with a seen hash is compared too, not taken as A */
    const DqPixelTile pair[2] = {ta, te};
    g_assert_true(smolvlm_encode_tiles(m, pair, 2, fm, &distinct, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(distinct, ==, 2);
    g_assert_cmpmem(fm + ff, ff * sizeof(float), alone[1], ff * sizeof(float));
    for (int i = 0; i < 4; i++)
        be->release(be, alone[i]);
    be->release(be, fm);
    g_free(lut_copy);
    g_free(cc);
    g_free(a);
    g_free(b);
    smolvlm_free(m);
    g_free(snap);
}

/* A decode step of more single-row segments than the backend's row-invariant bound goes into
 * products of even sizes (9 rows under the fast backend's 8: 5 + 4, not 8 + 1, whose 1-row
 * product costs a whole pass over the weight), and each row's logits are what the row gives
 * alone. */
static void (*split_matmul_orig)(DqBackend *, float *, const float *, const DqWeight *,
                                 const DqWeight *, int);
static int split_rows[4096], split_calls, split_out, split_in;

static void split_matmul_record(DqBackend *be, float *y, const float *x, const DqWeight *w,
                                const DqWeight *b, int n) {
    if (w->rows == split_out && w->cols == split_in && split_calls < 4096)
        split_rows[split_calls++] = n;
    split_matmul_orig(be, y, x, w, b, n);
}

G_GNUC_UNUSED static void test_decode_split(void) {
    char *snap = NULL;
    Smolvlm *m = open_tiny_b512(&snap);
    if (m == NULL)
        return;
    GError *err = NULL;
    const SmolvlmConfig *c = smolvlm_config(m);
    DqBackend *be = smolvlm_backend(m);
    const int inv = be->matmul_row_invariant_max, n = inv + 1, V = c->vocab_size;
    g_assert_cmpint(inv, >, 1);
    SmolvlmWorkspace *ws = smolvlm_workspace_new(m, n, &err);
    dq_assert_no_error(err);
    SmolvlmKV *kv[64];
    SmolvlmSegment segs[64];
    float *together = g_new(float, (size_t)n *V), *alone = g_new(float, V);
    g_assert_cmpint(n, <=, 64);
    for (int r = 0; r < n; r++) {
        int32_t id = 100 + 7 * r, cursor = 0;
        kv[r] = smolvlm_kv_new(m, 4, &err);
        dq_assert_no_error(err);
        g_assert_true(smolvlm_embed(m, ws, r, &id, 1, NULL, 0, &cursor, &err));
        segs[r] = (SmolvlmSegment){.kv = kv[r], .n_rows = 1, .logits = together + (size_t)r * V};
    }
    split_matmul_orig = be->matmul;
    be->matmul = split_matmul_record;
    split_out = c->text_heads * c->head_dim; /* q_proj (and o_proj where square) */
    split_in = c->text_hidden;
    split_calls = 0;
    g_assert_true(smolvlm_forward(m, ws, segs, n, &err));
    be->matmul = split_matmul_orig;
    dq_assert_no_error(err);
    g_assert_cmpint(split_calls, >, 0);
    int lo = n / 2, hi = n - n / 2;
    for (int i = 0; i < split_calls; i++)
        if (split_rows[i] != lo && split_rows[i] != hi)
            g_error("a product of %d rows in a %d-row decode step (bound %d): want %d and %d",
                    split_rows[i], n, inv, hi, lo);
    for (int r = 0; r < n; r++) {
        int32_t id = 100 + 7 * r, cursor = 0;
        SmolvlmKV *fresh = smolvlm_kv_new(m, 4, &err);
        dq_assert_no_error(err);
        g_assert_true(smolvlm_embed(m, ws, 0, &id, 1, NULL, 0, &cursor, &err));
        SmolvlmSegment one = {.kv = fresh, .n_rows = 1, .logits = alone};
        g_assert_true(smolvlm_forward(m, ws, &one, 1, &err));
        dq_assert_no_error(err);
        g_assert_cmpmem(alone, V * sizeof(float), together + (size_t)r * V, V * sizeof(float));
        smolvlm_kv_free(m, fresh);
    }
    for (int r = 0; r < n; r++)
        smolvlm_kv_free(m, kv[r]);
    smolvlm_workspace_free(m, ws);
    g_free(together);
    g_free(alone);
    smolvlm_free(m);
    g_free(snap);
}

/* A run of short segments after a long one is split afresh: a prompt of exactly the bound's rows
 * (8 on the fast backend), a 20-row prompt, then 9 decode rows go in products of 8, 20, 5 and 4
 * rows; a split left over from the first run (8: 8 + 1) or a run's end mistaken for a split of
 * one row (1 + 1 + ...) costs a whole pass over the weight for each 1-row product. */
G_GNUC_UNUSED static void test_decode_split_runs(void) {
    char *snap = NULL;
    Smolvlm *m = open_tiny_b512(&snap);
    if (m == NULL)
        return;
    GError *err = NULL;
    const SmolvlmConfig *c = smolvlm_config(m);
    DqBackend *be = smolvlm_backend(m);
    const int inv = be->matmul_row_invariant_max;
    g_assert_cmpint(inv, ==, 8);
    g_assert_cmpint(be->matmul_row_invariant_min, ==, 9);
    enum { N_SEGS = 11, ROWS = 8 + 20 + 9 };
    const int rows[N_SEGS] = {8, 20, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    SmolvlmWorkspace *ws = smolvlm_workspace_new(m, ROWS, &err);
    dq_assert_no_error(err);
    SmolvlmKV *kv[N_SEGS];
    SmolvlmSegment segs[N_SEGS];
    float *logits = g_new(float, (size_t)N_SEGS * c->vocab_size);
    int32_t ids[ROWS];
    for (int r = 0; r < ROWS; r++)
        ids[r] = 100 + 7 * r;
    int cursor = 0;
    g_assert_true(smolvlm_embed(m, ws, 0, ids, ROWS, NULL, 0, &cursor, &err));
    dq_assert_no_error(err);
    for (int i = 0; i < N_SEGS; i++) {
        kv[i] = smolvlm_kv_new(m, 32, &err);
        dq_assert_no_error(err);
        segs[i] = (SmolvlmSegment){
            .kv = kv[i], .n_rows = rows[i], .logits = logits + (size_t)i * c->vocab_size};
    }
    split_matmul_orig = be->matmul;
    be->matmul = split_matmul_record;
    split_out = c->text_heads * c->head_dim;
    split_in = c->text_hidden;
    split_calls = 0;
    g_assert_true(smolvlm_forward(m, ws, segs, N_SEGS, &err));
    be->matmul = split_matmul_orig;
    dq_assert_no_error(err);
    g_assert_cmpint(split_calls, >, 0);
    int seen[21] = {0};
    for (int i = 0; i < split_calls; i++) {
        if (split_rows[i] != 8 && split_rows[i] != 20 && split_rows[i] != 5 && split_rows[i] != 4)
            g_error("a product of %d rows (segments of 8, 20 and 9 x 1 rows, bound %d)",
                    split_rows[i], inv);
        seen[split_rows[i]]++;
    }
    g_assert_cmpint(seen[20], >, 0);
    g_assert_cmpint(seen[8], ==, seen[20]);
    g_assert_cmpint(seen[5], ==, seen[20]);
    g_assert_cmpint(seen[4], ==, seen[20]);
    for (int i = 0; i < N_SEGS; i++)
        smolvlm_kv_free(m, kv[i]);
    smolvlm_workspace_free(m, ws);
    g_free(logits);
    smolvlm_free(m);
    g_free(snap);
}

/* 40 tiles in one call go through the encoder in two chunks (32 + 8) on buffers the chunks
 * share; each tile's features are what it gives encoded alone, bit for bit. */
G_GNUC_UNUSED static void test_vision_chunks(void) {
    char *snap = NULL;
    Smolvlm *m = open_tiny_b512(&snap);
    if (m == NULL)
        return;
    GError *err = NULL;
    const SmolvlmConfig *c = smolvlm_config(m);
    DqBackend *be = smolvlm_backend(m);
    const int n = 40;
    size_t tile_bytes = (size_t)3 * c->image_size * c->image_size;
    size_t feat = (size_t)c->tokens_per_tile * c->text_hidden;
    uint8_t *px = g_new(uint8_t, n * tile_bytes);
    float lut[3 * 256];
    DqPixelTile *tiles = g_new(DqPixelTile, n);
    GRand *rng = g_rand_new_with_seed(40);
    for (size_t i = 0; i < n * tile_bytes; i++)
        px[i] = (uint8_t)g_rand_int_range(rng, 0, 256);
    for (int i = 0; i < 3 * 256; i++)
        lut[i] = (float)g_rand_double_range(rng, -1, 1);
    for (int t = 0; t < n; t++)
        tiles[t] =
            (DqPixelTile){px + t * tile_bytes, lut, dq_tile_hash(px + t * tile_bytes, tile_bytes)};
    float *all = be->alloc(be, n * feat), *one = be->alloc(be, feat);
    g_assert_true(smolvlm_encode_tiles(m, tiles, n, all, NULL, &err));
    dq_assert_no_error(err);
    float *host_all = g_new(float, n *feat), *host_one = g_new(float, feat);
    be->download(be, host_all, all, n * feat);
    const int picks[] = {0, 13, 31, 32, 39}; /* both chunks, and their edges */
    for (size_t i = 0; i < G_N_ELEMENTS(picks); i++) {
        int t = picks[i];
        g_assert_true(smolvlm_encode_tiles(m, &tiles[t], 1, one, NULL, &err));
        dq_assert_no_error(err);
        be->download(be, host_one, one, feat);
        if (memcmp(host_one, host_all + t * feat, feat * sizeof(float)) != 0)
            g_error("tile %d: features differ encoded alone and among %d", t, n);
    }
    be->release(be, all);
    be->release(be, one);
    g_free(host_all);
    g_free(host_one);
    g_free(tiles);
    g_free(px);
    g_rand_free(rng);
    smolvlm_free(m);
    g_free(snap);
}

/* A steps segment (speculative decoding's check) computes each of its rows as that many
 * one-row forward calls would, to the bit, on the fast backend with weights as stored and with
 * an int8 draft loaded beside them; the draft's own forward appends approximate rows that
 * smolvlm_kv_truncate takes back. */
static void steps_case(const char *model, const char *weights) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *snap = g_build_filename(shared, "models", model, NULL);
    GError *err = NULL;
    Smolvlm *m = smolvlm_open(snap, &(SmolvlmOptions){.weights = weights, .draft = "int8"}, &err);
    dq_assert_no_error(err);
    g_assert_true(smolvlm_has_draft(m));
    const SmolvlmConfig *c = smolvlm_config(m);
    const int V = c->vocab_size, rows = smolvlm_steps_max(m), prompt = 37;
    g_assert_cmpint(rows, >=, 2);
    SmolvlmWorkspace *ws = smolvlm_workspace_new(m, prompt, &err);
    dq_assert_no_error(err);
    int32_t ids[64];
    for (int i = 0; i < prompt + rows; i++)
        ids[i] = (int32_t)((31 + 97 * i) % V);
    // cppcheck-suppress uninitvar -- set above
    // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): set above
    if (ids[0] == c->image_token_id)
        ids[0]++;
    for (int i = 0; i < prompt + rows; i++)
        if (ids[i] == c->image_token_id)
            ids[i] = ids[0];
    SmolvlmKV *a = smolvlm_kv_new(m, prompt + rows, &err),
              *b = smolvlm_kv_new(m, prompt + rows, &err);
    dq_assert_no_error(err);
    float *last = g_new(float, V), *steps = g_new(float, (size_t)rows *V), *one = g_new(float, V);
    SmolvlmKV *kvs[2] = {a, b};
    for (int i = 0; i < 2; i++) { /* the same prompt in both caches */
        int cursor = 0;
        g_assert_true(smolvlm_embed(m, ws, 0, ids, prompt, NULL, 0, &cursor, &err));
        SmolvlmSegment seg = {.kv = kvs[i], .n_rows = prompt, .logits = last};
        g_assert_true(smolvlm_forward(m, ws, &seg, 1, &err));
        dq_assert_no_error(err);
    }
    /* b: the draft runs ahead 3 rows, then they are taken back */
    for (int i = 0; i < 3; i++) {
        int cursor = 0;
        g_assert_true(smolvlm_embed(m, ws, 0, &ids[prompt + i], 1, NULL, 0, &cursor, &err));
        SmolvlmSegment seg = {.kv = b, .n_rows = 1, .logits = one};
        g_assert_true(smolvlm_forward_draft(m, ws, &seg, 1, &err));
        dq_assert_no_error(err);
    }
    g_assert_cmpint(smolvlm_kv_len(b), ==, prompt + 3);
    smolvlm_kv_truncate(b, prompt);
    g_assert_cmpint(smolvlm_kv_len(b), ==, prompt);
    /* b: all rows as one steps segment; a: one row a call */
    int cursor = 0;
    g_assert_true(smolvlm_embed(m, ws, 0, &ids[prompt], rows, NULL, 0, &cursor, &err));
    SmolvlmSegment seg = {.kv = b, .n_rows = rows, .logits = steps, .steps = TRUE};
    g_assert_true(smolvlm_forward(m, ws, &seg, 1, &err));
    dq_assert_no_error(err);
    gboolean draft_differs = FALSE;
    for (int i = 0; i < rows; i++) {
        cursor = 0;
        g_assert_true(smolvlm_embed(m, ws, 0, &ids[prompt + i], 1, NULL, 0, &cursor, &err));
        SmolvlmSegment s1 = {.kv = a, .n_rows = 1, .logits = one};
        g_assert_true(smolvlm_forward(m, ws, &s1, 1, &err));
        dq_assert_no_error(err);
        g_assert_cmpmem(steps + (size_t)i * V, V * sizeof(float), one, V * sizeof(float));
        if (i == 0) { /* the draft's logits at the same place: close, not equal */
            smolvlm_kv_truncate(a, prompt);
            cursor = 0;
            g_assert_true(smolvlm_embed(m, ws, 0, &ids[prompt], 1, NULL, 0, &cursor, &err));
            float *d = g_new(float, V);
            SmolvlmSegment sd = {.kv = a, .n_rows = 1, .logits = d};
            g_assert_true(smolvlm_forward_draft(m, ws, &sd, 1, &err));
            draft_differs = memcmp(d, one, V * sizeof(float)) != 0;
            double dot = 0, na = 0, nb = 0;
            for (int j = 0; j < V; j++) {
                dot += (double)d[j] * one[j];
                na += (double)d[j] * d[j];
                nb += (double)one[j] * one[j];
            }
            g_assert_cmpfloat(dot / sqrt(na * nb), >, 0.999);
            g_free(d);
            /* a's row prompt is the draft's now: the model's own again */
            smolvlm_kv_truncate(a, prompt);
            cursor = 0;
            g_assert_true(smolvlm_embed(m, ws, 0, &ids[prompt], 1, NULL, 0, &cursor, &err));
            g_assert_true(smolvlm_forward(m, ws, &s1, 1, &err));
        }
    }
    g_assert_true(draft_differs);
    /* more rows than the backend keeps row-invariant: refused */
    SmolvlmSegment big = {.kv = b, .n_rows = rows + 1, .logits = NULL, .steps = TRUE};
    smolvlm_kv_truncate(b, 0);
    g_assert_false(smolvlm_forward(m, ws, &big, 1, &err));
    g_assert_nonnull(strstr(err->message, "row-invariant"));
    g_clear_error(&err);
    g_free(last);
    g_free(steps);
    g_free(one);
    smolvlm_kv_free(m, a);
    smolvlm_kv_free(m, b);
    smolvlm_workspace_free(m, ws);
    smolvlm_free(m);
    g_free(snap);
}

G_GNUC_UNUSED static void test_steps_stored(void) {
    steps_case("tiny-smolvlm-b512", NULL);
}

G_GNUC_UNUSED static void test_steps_bf16(void) {
    steps_case("tiny-smolvlm-a384-v1tok-bf16", "bf16");
}

/* A draft is refused where it cannot work, with the reason. */
G_GNUC_UNUSED static void test_draft_errors(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *snap = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    struct {
        SmolvlmOptions o;
        const char *says;
    } bad[] = {
        {{.draft = "int4"}, "unknown draft 'int4'"},
        {{.device = "cpu-ref", .draft = "int8"}, "device cpu-ref has no int8 kernels"},
        {{.weights = "int8", .draft = "int8"}, "int8 already"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        GError *err = NULL;
        g_assert_null(smolvlm_open(snap, &bad[i].o, &err));
        g_assert_nonnull(err);
        if (strstr(err->message, bad[i].says) == NULL)
            g_error("draft error %zu: '%s' does not say '%s'", i, err->message, bad[i].says);
        g_error_free(err);
    }
    GError *err = NULL;
    Smolvlm *m = smolvlm_open(snap, &(SmolvlmOptions){.draft = "none"}, &err);
    dq_assert_no_error(err);
    g_assert_false(smolvlm_has_draft(m));
    SmolvlmWorkspace *ws = smolvlm_workspace_new(m, 1, &err);
    SmolvlmKV *kv = smolvlm_kv_new(m, 1, &err);
    int32_t id = 5, cursor = 0;
    g_assert_true(smolvlm_embed(m, ws, 0, &id, 1, NULL, 0, &cursor, &err));
    SmolvlmSegment seg = {.kv = kv, .n_rows = 1};
    g_assert_false(smolvlm_forward_draft(m, ws, &seg, 1, &err));
    g_assert_nonnull(strstr(err->message, "without a draft"));
    g_clear_error(&err);
    smolvlm_kv_free(m, kv);
    smolvlm_workspace_free(m, ws);
    smolvlm_free(m);
    g_free(snap);
}

/* A vision product goes in one call over all the tiles only where the backend's products do not
 * depend on the row count (matmul_row_invariant_min): the reference backend (0: OpenBLAS's
 * rounding may change with it) gets a call a tile, the fast one a single call a chunk. */
static int tile_rows[64], tile_calls_seen, tile_out, tile_in;

static void tile_matmul_record(DqBackend *be, float *y, const float *x, const DqWeight *w,
                               const DqWeight *b, int n) {
    if (w->rows == tile_out && w->cols == tile_in && tile_calls_seen < 64)
        tile_rows[tile_calls_seen++] = n;
    split_matmul_orig(be, y, x, w, b, n);
}

static void tile_calls_case(const char *device, int want_calls) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *snap = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    GError *err = NULL;
    Smolvlm *m = smolvlm_open(snap, &(SmolvlmOptions){.device = device}, &err);
    dq_assert_no_error(err);
    const SmolvlmConfig *c = smolvlm_config(m);
    DqBackend *be = smolvlm_backend(m);
    const int n = 2, P = c->num_patches; /* the CPU backends' chunk: one chunk of 2 tiles */
    size_t tile_bytes = (size_t)3 * c->image_size * c->image_size;
    uint8_t *px = g_new(uint8_t, n * tile_bytes);
    float lut[3 * 256];
    for (size_t i = 0; i < n * tile_bytes; i++)
        px[i] = (uint8_t)((i * 2654435761u) >> 13);
    for (int i = 0; i < 3 * 256; i++)
        lut[i] = (float)(i % 256) / 127.5f - 1.0f;
    DqPixelTile tiles[2];
    for (int t = 0; t < n; t++)
        tiles[t] =
            (DqPixelTile){px + t * tile_bytes, lut, dq_tile_hash(px + t * tile_bytes, tile_bytes)};
    float *feat = be->alloc(be, (size_t)n * c->tokens_per_tile * c->text_hidden);
    split_matmul_orig = be->matmul;
    be->matmul = tile_matmul_record;
    tile_out = c->vision_hidden; /* the patch embedding: [Dv, 3 p p] */
    tile_in = 3 * c->patch_size * c->patch_size;
    tile_calls_seen = 0;
    int distinct = 0;
    g_assert_true(smolvlm_encode_tiles(m, tiles, n, feat, &distinct, &err));
    be->matmul = split_matmul_orig;
    dq_assert_no_error(err);
    g_assert_cmpint(distinct, ==, n);
    g_assert_cmpint(tile_calls_seen, ==, want_calls);
    for (int i = 0; i < tile_calls_seen; i++)
        g_assert_cmpint(tile_rows[i], ==, n * P / want_calls);
    be->release(be, feat);
    g_free(px);
    smolvlm_free(m);
    g_free(snap);
}

G_GNUC_UNUSED static void test_vision_tile_calls(void) {
    tile_calls_case("cpu-ref", 2);
    tile_calls_case("cpu", 1);
}

/* smolvlm_kv_bytes, which the prefix cache's budget counts entries by, is what a cache holds:
 * keys and values, every layer, float32 on the reference backend. */
G_GNUC_UNUSED static void test_kv_bytes(void) {
    char *snap = NULL;
    Smolvlm *m = open_tiny_b512(&snap);
    if (m == NULL)
        return;
    const SmolvlmConfig *c = smolvlm_config(m);
    size_t per_position = (size_t)c->text_layers * c->text_kv_heads * c->head_dim;
    g_assert_cmpuint(smolvlm_kv_bytes(m, 10), ==, 2 * 10 * per_position * sizeof(float));
    g_assert_cmpuint(smolvlm_kv_bytes(m, 1), ==, 2 * per_position * sizeof(float));
    smolvlm_free(m);
    g_free(snap);
}

/* The limits of a forward call and of a KV cache, each on both sides: caches of
 * max_position_embeddings positions and of 1 are made, of one more and of none refused; a
 * one-row segment that fills its cache exactly runs, one row more is refused; a segment of no
 * rows is refused (its logits row would be another segment's last). */
G_GNUC_UNUSED static void test_forward_limits(void) {
    char *snap = NULL;
    Smolvlm *m = open_tiny_b512(&snap);
    if (m == NULL)
        return;
    GError *err = NULL;
    const SmolvlmConfig *c = smolvlm_config(m);
    const int max_pos = c->max_position_embeddings;
    SmolvlmKV *kv = smolvlm_kv_new(m, max_pos, &err);
    dq_assert_no_error(err);
    smolvlm_kv_free(m, kv);
    g_assert_null(smolvlm_kv_new(m, max_pos + 1, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "exceeds max_position_embeddings"));
    g_clear_error(&err);
    g_assert_null(smolvlm_kv_new(m, 0, &err));
    g_clear_error(&err);
    kv = smolvlm_kv_new(m, 1, &err);
    dq_assert_no_error(err);
    smolvlm_kv_free(m, kv);

    SmolvlmWorkspace *ws = smolvlm_workspace_new(m, 4, &err);
    dq_assert_no_error(err);
    int32_t ids[4] = {100, 101, 102, 103};
    int cursor = 0;
    g_assert_true(smolvlm_embed(m, ws, 0, ids, 4, NULL, 0, &cursor, &err));
    dq_assert_no_error(err);
    float *logits = g_new(float, c->vocab_size);
    kv = smolvlm_kv_new(m, 4, &err);
    dq_assert_no_error(err);
    SmolvlmSegment seg = {.kv = kv, .n_rows = 5, .logits = logits};
    g_assert_false(smolvlm_forward(m, ws, &seg, 1, &err));
    g_assert_nonnull(strstr(err->message, "segment 0: 5 new rows do not fit its KV cache"));
    g_clear_error(&err);
    g_assert_cmpint(smolvlm_kv_len(kv), ==, 0);
    seg.n_rows = 0;
    g_assert_false(smolvlm_forward(m, ws, &seg, 1, &err));
    g_assert_nonnull(strstr(err->message, "segment 0: 0 new rows do not fit"));
    g_clear_error(&err);
    seg.n_rows = 3;
    g_assert_true(smolvlm_forward(m, ws, &seg, 1, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(smolvlm_kv_len(kv), ==, 3);
    seg.n_rows = 1; /* the last position */
    g_assert_true(smolvlm_forward(m, ws, &seg, 1, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(smolvlm_kv_len(kv), ==, 4);
    g_assert_false(smolvlm_forward(m, ws, &seg, 1, &err));
    g_assert_nonnull(strstr(err->message, "1 new rows do not fit its KV cache (4 of 4 used)"));
    g_clear_error(&err);
    smolvlm_kv_free(m, kv);
    smolvlm_workspace_free(m, ws);
    g_free(logits);
    smolvlm_free(m);
    g_free(snap);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/smolvlm/goldens", test_goldens);
#ifdef DQ_FULL_FIXTURES
    g_test_add_func("/smolvlm/batch-independent", test_batch_independent);
#else
    g_test_add_func("/smolvlm/sampling-and-eos", test_sampling_and_eos);
    g_test_add_func("/smolvlm/broken-snapshots", test_broken_snapshots);
    g_test_add_func("/smolvlm/position-ids", test_position_ids);
    g_test_add_func("/smolvlm/duplicate-tiles", test_duplicate_tiles);
    g_test_add_func("/smolvlm/decode-split", test_decode_split);
    g_test_add_func("/smolvlm/decode-split-runs", test_decode_split_runs);
    g_test_add_func("/smolvlm/vision-chunks", test_vision_chunks);
    g_test_add_func("/smolvlm/vision-tile-calls", test_vision_tile_calls);
    g_test_add_func("/smolvlm/kv-bytes", test_kv_bytes);
    g_test_add_func("/smolvlm/forward-limits", test_forward_limits);
    g_test_add_func("/smolvlm/steps/stored", test_steps_stored);
    g_test_add_func("/smolvlm/steps/bf16", test_steps_bf16);
    g_test_add_func("/smolvlm/draft-errors", test_draft_errors);
#endif
    return g_test_run();
}
