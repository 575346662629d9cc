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
 * test_smolvlm reads the compact fixtures committed in tests/fixtures; test_smolvlm_full (slow)
 * reads ../shared/fixtures. Both need the tiny models in ../shared/models (skipped without).
 */
#include "generate.h"
#include "image_processor.h"
#include "smolvlm.h"
#include "testutil.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void *read_binary(const char *case_dir, const char *file, size_t *len) {
    char *path = g_build_filename(case_dir, file, NULL);
    void *data = dq_test_read_file(path, len);
    g_free(path);
    return data;
}

static JsonObject *parse_file(const char *path, JsonParser **keep) {
    JsonParser *p = json_parser_new();
    GError *err = NULL;
    if (!json_parser_load_from_file(p, path, &err))
        g_error("%s: %s", path, err->message);
    *keep = p;
    return json_node_get_object(json_parser_get_root(p));
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
        float *g = read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
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
        float *g = read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
        int32_t *ids = read_binary(case_dir, json_object_get_string_member(e, "ids_file"), &ilen);
        g_assert_cmpuint(len, ==, ilen);
        for (size_t i = 0; i < ilen / 4; i++) {
            g_assert_cmpint(ids[i], <, (int)numel);
            diff_add(&d, mine[ids[i]], g[i]);
        }
        g_free(g);
        g_free(ids);
    } else if (json_object_has_member(e, "row_indices")) {
        size_t len;
        float *g = read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
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
        float *g = read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
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
    float *g = read_binary(case_dir, json_object_get_string_member(e, "file"), &len);
    int32_t *ids = NULL;
    if (json_object_has_member(e, "ids_file"))
        ids = read_binary(case_dir, json_object_get_string_member(e, "ids_file"), NULL);
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

static void case_cli(JsonObject *case_obj, int *n_res, gboolean *split) {
    *n_res = 4;
    *split = TRUE;
    JsonArray *args = json_object_get_array_member(case_obj, "cli_args");
    for (guint i = 0; args != NULL && i < json_array_get_length(args); i++) {
        const char *a = json_array_get_string_element(args, i);
        if (strcmp(a, "--no-split") == 0)
            *split = FALSE;
        else if (strcmp(a, "--n-res") == 0 && i + 1 < json_array_get_length(args))
            *n_res = atoi(json_array_get_string_element(args, i + 1));
    }
}

/* The tiles of every image of a case, preprocessed for the model in snap. */
static DqImageTiles **case_tiles(const char *fx_dir, JsonObject *case_obj, const char *snap,
                                 int *n_images) {
    JsonArray *imgs = json_object_get_array_member(case_obj, "images");
    *n_images = (int)json_array_get_length(imgs);
    DqImageTiles **tiles = g_new0(DqImageTiles *, MAX(*n_images, 1));
    DqImageProcessorConfig pc;
    GError *err = NULL;
    g_assert_true(image_processor_config_load(snap, &pc, &err));
    dq_assert_no_error(err);
    int n_res;
    gboolean split;
    case_cli(case_obj, &n_res, &split);
    image_processor_set_n_res(&pc, n_res);
    pc.do_split = split;
    for (int i = 0; i < *n_images; i++) {
        JsonObject *im = json_array_get_object_element(imgs, (guint)i);
        char *path = g_build_filename(fx_dir, json_object_get_string_member(im, "file"), NULL);
        DqImage *rgb = dq_image_load(path, DQ_EXIF_APPLY, &err);
        dq_assert_no_error(err);
        tiles[i] = image_processor_run(&pc, rgb, &err);
        dq_assert_no_error(err);
        dq_image_free(rgb);
        g_free(path);
    }
    return tiles;
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
        read_binary(case_dir, json_object_get_string_member(ids_entry, "file"), &ids_len);

    GError *err = NULL;
    Smolvlm *m = smolvlm_open(snap, NULL, &err);
    dq_assert_no_error(err);
    const SmolvlmConfig *cfg = smolvlm_config(m);
    int n_images;
    DqImageTiles **tiles = case_tiles(fx_dir, case_obj, snap, &n_images);

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
    JsonObject *index = parse_file(index_path, &ip);
    JsonArray *cases = json_object_get_array_member(index, "cases");
    const char *only = g_getenv("DQ_TEST_CASE");
    Sweep sweep = {0};
    for (guint c = 0; c < json_array_get_length(cases); c++) {
        const char *name = json_array_get_string_element(cases, c);
        if (only != NULL && strcmp(only, name) != 0)
            continue;
        char *path = g_build_filename(fx, "cases", name, "case.json", NULL);
        JsonParser *cp;
        JsonObject *case_obj = parse_file(path, &cp);
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
    g_assert_cmpint(sweep.variants, >=, only ? 4 : 16);
    g_object_unref(ip);
    g_free(index_path);
    g_free(fx);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/smolvlm/goldens", test_goldens);
    return g_test_run();
}
