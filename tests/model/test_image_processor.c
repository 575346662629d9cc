/* Idefics3ImageProcessor: configuration, size rules (image_size_cases.json, every row), and
 * every fixture case end to end: each uint8 stage and tile hash-identical, the float32 pixel
 * values bit-identical at the golden samples and equal in per-tile sum; generated images of
 * awkward sizes against tile hashes transformers computed (processor_size_goldens.py). */
#include "dq_error.h"
#include "../image/image_fixtures.h"
#include "image_processor.h"
#include "testutil.h"

#include <math.h>
#include <string.h>

static DqImageProcessorConfig default_config(int tile, int n_res, gboolean split) {
    DqImageProcessorConfig cfg = {
        .tile_size = tile,
        .longest_edge = n_res * tile,
        .do_split = split,
        .do_resize = TRUE,
        .do_rescale = TRUE,
        .do_normalize = TRUE,
        .rescale_factor = 0.00392156862745098,
        .mean = {0.5f, 0.5f, 0.5f},
        .std = {0.5f, 0.5f, 0.5f},
    };
    return cfg;
}

/* ---- configuration ---- */

static char *write_config(const char *json) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "preprocessor_config.json", NULL);
    g_assert_true(g_file_set_contents(path, json, -1, NULL));
    g_free(path);
    return dir;
}

static void test_config_snapshots(void) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL) {
        g_test_skip("../shared/models absent: no snapshot preprocessor_config.json to read");
        return;
    }
    struct {
        const char *model;
        int tile, longest;
    } want[] = {{"tiny-smolvlm-b512", 512, 2048},
                {"tiny-smolvlm-a384-v1tok", 384, 1536},
                {"SmolVLM-256M-Instruct", 512, 2048}};
    for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
        char *dir = g_build_filename(shared, "models", want[i].model, NULL);
        DqImageProcessorConfig cfg;
        GError *err = NULL;
        g_assert_true(image_processor_config_load(dir, &cfg, &err));
        dq_assert_no_error(err);
        g_assert_cmpint(cfg.tile_size, ==, want[i].tile);
        g_assert_cmpint(cfg.longest_edge, ==, want[i].longest);
        g_assert_true(cfg.do_split && cfg.do_resize && cfg.do_rescale && cfg.do_normalize);
        g_assert_cmpfloat(cfg.rescale_factor, ==, 0.00392156862745098);
        g_assert_cmpfloat(cfg.mean[2], ==, 0.5f);
        g_assert_cmpfloat(cfg.std[0], ==, 0.5f);
        image_processor_set_n_res(&cfg, 5);
        g_assert_cmpint(cfg.longest_edge, ==, 5 * want[i].tile);
        g_free(dir);
    }
}

static void test_config_defaults_and_values(void) {
    char *dir = write_config("{\"image_mean\": 0.25, \"image_std\": [1, 2, 4],"
                             " \"do_image_splitting\": false, \"rescale_factor\": 0.5}");
    DqImageProcessorConfig cfg;
    GError *err = NULL;
    g_assert_true(image_processor_config_load(dir, &cfg, &err));
    dq_assert_no_error(err);
    /* transformers' defaults where absent: 4 x 364 longest edge, 364 tiles. */
    g_assert_cmpint(cfg.tile_size, ==, 364);
    g_assert_cmpint(cfg.longest_edge, ==, 1456);
    g_assert_false(cfg.do_split);
    g_assert_cmpfloat(cfg.rescale_factor, ==, 0.5);
    g_assert_cmpfloat(cfg.mean[1], ==, 0.25f);
    g_assert_cmpfloat(cfg.std[2], ==, 4.0f);
    g_free(dir);
}

static void test_config_edge_limit(void) {
    char *dir = write_config("{\"size\": {\"longest_edge\": 65536}}");
    DqImageProcessorConfig cfg;
    GError *err = NULL;
    g_assert_true(image_processor_config_load(dir, &cfg, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(cfg.longest_edge, ==, 65536);
    g_free(dir);
}

static void expect_config_error(const char *json, int code, const char *fragment) {
    char *dir = write_config(json);
    DqImageProcessorConfig cfg;
    GError *err = NULL;
    g_assert_false(image_processor_config_load(dir, &cfg, &err));
    g_assert_error(err, DQ_ERROR, code);
    if (strstr(err->message, "preprocessor_config.json") == NULL ||
        strstr(err->message, fragment) == NULL)
        g_error("message '%s' lacks the file name or '%s'", err->message, fragment);
    g_error_free(err);
    g_free(dir);
}

static void test_config_errors(void) {
    expect_config_error("{\"resample\": 3}", DQ_ERR_UNSUPPORTED, "resample 3");
    expect_config_error("{\"size\": {\"height\": 10, \"width\": 10}}", DQ_ERR_UNSUPPORTED, "size");
    expect_config_error("{\"max_image_size\": {\"longest_edge\": \"big\"}}", DQ_ERR_MODEL,
                        "longest_edge");
    /* 65536 is the largest longest_edge accepted (test_config_edge_limit). */
    expect_config_error("{\"size\": {\"longest_edge\": 65537}}", DQ_ERR_MODEL, "65537");
    expect_config_error("{\"do_resize\": 1}", DQ_ERR_MODEL, "do_resize");
    expect_config_error("{\"image_std\": [0.5, 0, 0.5]}", DQ_ERR_MODEL, "image_std");
    expect_config_error("{\"image_std\": [0, 0.5, 0.5]}", DQ_ERR_MODEL, "image_std");
    expect_config_error("{\"image_std\": [0.5, 0.5, 0]}", DQ_ERR_MODEL, "image_std");
    expect_config_error("{\"image_mean\": [0.5, 0.5]}", DQ_ERR_MODEL, "image_mean");
    expect_config_error("{not json", DQ_ERR_FORMAT, "");
    expect_config_error("[1, 2]", DQ_ERR_FORMAT, "not a JSON object");
    DqImageProcessorConfig cfg;
    GError *err = NULL;
    g_assert_false(image_processor_config_load("/nonexistent/snapshot", &cfg, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_assert_nonnull(strstr(err->message, "/nonexistent/snapshot/preprocessor_config.json"));
    g_error_free(err);
}

/* ---- size rules ---- */

static void test_plan_size_cases(void) {
    char *dir = dq_fixture_dir();
    char *path = g_build_filename(dir, "tokenizer", "image_size_cases.json", NULL);
    JsonParser *p = json_parser_new();
    GError *err = NULL;
    json_parser_load_from_file(p, path, &err);
    dq_assert_no_error(err);
    JsonArray *cases =
        json_object_get_array_member(json_node_get_object(json_parser_get_root(p)), "cases");
    guint n = json_array_get_length(cases);
    g_assert_cmpuint(n, >=, 100);
    for (guint i = 0; i < n; i++) {
        JsonObject *c = json_array_get_object_element(cases, i);
        int w = (int)json_object_get_int_member(c, "width");
        int h = (int)json_object_get_int_member(c, "height");
        int tile = (int)json_object_get_int_member(c, "tile");
        DqImageProcessorConfig cfg = default_config(tile, 1, TRUE);
        cfg.longest_edge = (int)json_object_get_int_member(c, "longest_edge");
        DqImagePlan plan;
        image_processor_plan(&cfg, w, h, &plan);
        JsonArray *rw = json_object_get_array_member(c, "resized_wh");
        JsonArray *vw = json_object_get_array_member(c, "vision_encoder_wh");
        gboolean same = plan.resized_width == json_array_get_int_element(rw, 0) &&
                        plan.resized_height == json_array_get_int_element(rw, 1) &&
                        plan.aligned_width == json_array_get_int_element(vw, 0) &&
                        plan.aligned_height == json_array_get_int_element(vw, 1) &&
                        plan.rows == json_object_get_int_member(c, "rows") &&
                        plan.cols == json_object_get_int_member(c, "cols") &&
                        plan.n_tiles == json_object_get_int_member(c, "n_tiles");
        if (!same)
            g_error("%dx%d L=%d T=%d: got %dx%d -> %dx%d, %dx%d grid, %d tiles; golden "
                    "%dx%d -> %dx%d, %dx%d, %d",
                    w, h, cfg.longest_edge, tile, plan.resized_width, plan.resized_height,
                    plan.aligned_width, plan.aligned_height, plan.rows, plan.cols, plan.n_tiles,
                    (int)json_array_get_int_element(rw, 0), (int)json_array_get_int_element(rw, 1),
                    (int)json_array_get_int_element(vw, 0), (int)json_array_get_int_element(vw, 1),
                    (int)json_object_get_int_member(c, "rows"),
                    (int)json_object_get_int_member(c, "cols"),
                    (int)json_object_get_int_member(c, "n_tiles"));
        /* do_resize false: transformers splits the input as it is, so the case's longest-edge
         * size as input gives the same vision-encoder size and grid. */
        cfg.do_resize = FALSE;
        int rw0 = (int)json_array_get_int_element(rw, 0),
            rh0 = (int)json_array_get_int_element(rw, 1);
        image_processor_plan(&cfg, rw0, rh0, &plan);
        g_assert_cmpint(plan.resized_width, ==, rw0);
        g_assert_cmpint(plan.resized_height, ==, rh0);
        g_assert_cmpint(plan.aligned_width, ==, json_array_get_int_element(vw, 0));
        g_assert_cmpint(plan.aligned_height, ==, json_array_get_int_element(vw, 1));
        g_assert_cmpint(plan.n_tiles, ==, json_object_get_int_member(c, "n_tiles"));
        cfg.do_resize = TRUE;
        cfg.do_split = FALSE;
        image_processor_plan(&cfg, w, h, &plan);
        g_assert_cmpint(plan.n_tiles, ==, json_object_get_int_member(c, "no_split_tiles"));
        g_assert_cmpint(plan.rows, ==, 0);
        g_assert_cmpint(plan.cols, ==, 0);
    }
    g_test_message("%u size cases", n);
    g_object_unref(p);
    g_free(path);
    g_free(dir);
}

/* ---- fixture cases end to end ---- */

typedef struct {
    int images, tiles, samples;
} SweepCounts;

/* The configuration the fixture case used: its model variant's tile size, N from --n-res,
 * splitting off for --no-split. Read from the snapshot when ../shared/models exists. */
static DqImageProcessorConfig fixture_config(const DqFixtureImage *fx) {
    JsonArray *tiles = json_object_get_array_member(fx->preprocess, "tiles");
    int tile = (int)json_object_get_int_member(json_array_get_object_element(tiles, 0), "width");
    int n_res = 4;
    gboolean split = TRUE;
    JsonArray *args = json_object_get_array_member(fx->case_obj, "cli_args");
    for (guint i = 0; i < json_array_get_length(args); i++) {
        const char *a = json_array_get_string_element(args, i);
        if (strcmp(a, "--no-split") == 0)
            split = FALSE;
        else if (strcmp(a, "--n-res") == 0 && i + 1 < json_array_get_length(args))
            n_res = atoi(json_array_get_string_element(args, i + 1));
    }
    DqImageProcessorConfig cfg = default_config(tile, n_res, split);
    const char *shared = dq_test_shared_dir();
    if (shared != NULL) {
        char *snap = g_build_filename(
            shared, json_object_get_string_member(fx->variant_obj, "model_dir"), NULL);
        DqImageProcessorConfig loaded;
        GError *err = NULL;
        g_assert_true(image_processor_config_load(snap, &loaded, &err));
        dq_assert_no_error(err);
        g_assert_cmpint(loaded.tile_size, ==, tile);
        image_processor_set_n_res(&loaded, n_res);
        loaded.do_split = split;
        cfg = loaded;
        g_free(snap);
    }
    return cfg;
}

static void check_fixture_case(const DqFixtureImage *fx, void *user) {
    SweepCounts *counts = user;
    char *label = g_strdup_printf("%s/%s image %d", fx->case_name, fx->variant, fx->image_index);
    DqImageProcessorConfig cfg = fixture_config(fx);
    GError *err = NULL;
    DqImage *rgb = dq_image_load(fx->image_path, DQ_EXIF_APPLY, &err);
    dq_assert_no_error(err);
    DqImageStages st;
    DqImageTiles *tiles = image_processor_run_stages(&cfg, rgb, &st, &err);
    dq_assert_no_error(err);
    g_assert_nonnull(tiles);

    g_assert_cmpint(tiles->rows, ==, json_object_get_int_member(fx->preprocess, "rows"));
    g_assert_cmpint(tiles->cols, ==, json_object_get_int_member(fx->preprocess, "cols"));
    g_assert_cmpint(tiles->n_tiles, ==, json_object_get_int_member(fx->preprocess, "n_tiles"));
    g_assert_cmpint(st.n_tiles, ==, tiles->n_tiles);
    char *what = g_strdup_printf("%s resize_longest_edge", label);
    dq_assert_image_matches(st.resized, dq_fixture_stage(fx->preprocess, "resize_longest_edge"),
                            what);
    g_free(what);
    JsonObject *ve = dq_fixture_stage(fx->preprocess, "resize_for_vision_encoder");
    g_assert_true((ve != NULL) == (st.aligned != NULL));
    if (ve != NULL) {
        what = g_strdup_printf("%s resize_for_vision_encoder", label);
        dq_assert_image_matches(st.aligned, ve, what);
        g_free(what);
    }
    JsonArray *trec = json_object_get_array_member(fx->preprocess, "tiles");
    g_assert_cmpint((int)json_array_get_length(trec), ==, tiles->n_tiles);
    for (int i = 0; i < tiles->n_tiles; i++) {
        what = g_strdup_printf("%s tile %d", label, i);
        dq_assert_image_matches(st.tiles[i], json_array_get_object_element(trec, i), what);
        g_free(what);
    }

    /* pixel_values covers all images of the case; this image's tiles start at tile_offset. */
    JsonObject *pv = json_object_get_object_member(fx->variant_obj, "pixel_values");
    JsonArray *sums = json_object_get_array_member(pv, "tile_sums_f64");
    size_t tile_floats = (size_t)3 * tiles->tile_size * tiles->tile_size;
    float *pixels = g_new(float, tiles->n_tiles *tile_floats); /* transformers' pixel_values */
    for (int i = 0; i < tiles->n_tiles; i++)
        dq_image_tiles_expand(tiles, i, pixels + i * tile_floats);
    for (int i = 0; i < tiles->n_tiles; i++) {
        double sum = 0;
        const float *p = pixels + i * tile_floats;
        for (size_t k = 0; k < tile_floats; k++)
            sum += p[k];
        double want = json_array_get_double_element(sums, fx->tile_offset + i);
        /* float64 sums of identical floats differ only by summation order (numpy is pairwise) */
        if (fabs(sum - want) > 1e-6 * MAX(1.0, fabs(want)))
            g_error("%s tile %d: pixel sum %.9f, golden %.9f", label, i, sum, want);
    }
    JsonArray *samples = json_object_get_array_member(pv, "samples");
    int T = tiles->tile_size;
    for (guint s = 0; s < json_array_get_length(samples); s++) {
        JsonObject *o = json_array_get_object_element(samples, s);
        int tile = (int)json_object_get_int_member(o, "tile") - fx->tile_offset;
        if (tile < 0 || tile >= tiles->n_tiles)
            continue; /* another image's tile */
        int c = (int)json_object_get_int_member(o, "c");
        int y = (int)json_object_get_int_member(o, "y");
        int x = (int)json_object_get_int_member(o, "x");
        float got = pixels[tile * tile_floats + ((size_t)c * T + y) * T + x];
        float want = (float)json_object_get_double_member(o, "value");
        if (memcmp(&got, &want, sizeof got) != 0)
            g_error("%s pixel (tile %d, c %d, y %d, x %d) = %.9g, golden %.9g", label, tile, c, y,
                    x, got, want);
        counts->samples++;
    }
    counts->images++;
    counts->tiles += tiles->n_tiles;
    g_free(pixels);
    dq_image_tiles_free(tiles);
    dq_image_stages_clear(&st);
    dq_image_free(rgb);
    g_free(label);
}

static void test_fixture_cases(void) {
    SweepCounts counts = {0};
    int images = dq_fixture_foreach_image(check_fixture_case, &counts);
    g_assert_cmpint(images, >, 0);
    g_assert_cmpint(counts.samples, >, 0);
    g_test_message("%d images, %d tiles, %d pixel samples bit-exact", counts.images, counts.tiles,
                   counts.samples);
}

/* ---- small cases ---- */

static void test_pixel_value_formula(void) {
    /* One flat 8x8 tile: every value is float32(v/255 in double), then (x - 0.5f) / 0.5f. */
    DqImageProcessorConfig cfg = default_config(8, 1, TRUE);
    DqImage *img = dq_image_new(8, 8);
    for (int i = 0; i < 8 * 8 * 3; i++)
        img->pixels[i] = (uint8_t)(i % 3 == 0 ? 0 : i % 3 == 1 ? 128 : 255);
    GError *err = NULL;
    DqImageTiles *t = image_processor_run(&cfg, img, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(t->n_tiles, ==, 1);
    g_assert_cmpint(t->rows, ==, 0);
    g_assert_cmpint(t->cols, ==, 0);
    float x128 = (float)(128 * 0.00392156862745098);
    float want[3] = {-1.0f, (x128 - 0.5f) / 0.5f, 1.0f};
    float px[3 * 64];
    dq_image_tiles_expand(t, 0, px);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 64; i++) {
            g_assert_cmpint(t->bytes[c * 64 + i], ==, c == 0 ? 0 : c == 1 ? 128 : 255);
            g_assert_cmpfloat(px[c * 64 + i], ==, want[c]);
        }
    dq_image_tiles_free(t);

    /* Off switches: no rescale and no normalize give the raw byte values. */
    cfg.do_rescale = cfg.do_normalize = FALSE;
    t = image_processor_run(&cfg, img, &err);
    dq_assert_no_error(err);
    dq_image_tiles_expand(t, 0, px);
    g_assert_cmpfloat(px[64], ==, 128.0f);
    dq_image_tiles_free(t);
    dq_image_free(img);
}

static void test_grid_order(void) {
    /* 16x8 at tile 8, longest edge 16: 1 row x 2 cols + global; the left crop is the left half. */
    DqImageProcessorConfig cfg = default_config(8, 2, TRUE);
    DqImage *img = dq_image_new(16, 8);
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 16; x++)
            img->pixels[(y * 16 + x) * 3] = (uint8_t)(x < 8 ? 0 : 255);
    GError *err = NULL;
    DqImageStages st;
    DqImageTiles *t = image_processor_run_stages(&cfg, img, &st, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(t->rows, ==, 1);
    g_assert_cmpint(t->cols, ==, 2);
    g_assert_cmpint(t->n_tiles, ==, 3);
    g_assert_cmpint(st.tiles[0]->pixels[0], ==, 0);
    g_assert_cmpint(st.tiles[1]->pixels[0], ==, 255);
    g_assert_cmpint(st.tiles[2]->width, ==, 8);
    dq_image_tiles_free(t);
    dq_image_stages_clear(&st);
    /* a cleared DqImageStages is empty: clearing it again frees nothing twice */
    g_assert_cmpint(st.n_tiles, ==, 0);
    g_assert_null(st.tiles);
    g_assert_null(st.resized);
    dq_image_stages_clear(&st);
    g_assert_null(image_processor_run(&cfg, NULL, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_clear_error(&err);
    dq_image_free(img);
}

/* Tiles of generated images against transformers 4.57.6 + Pillow 12.3.0: the sizes around tile
 * multiples and the extreme aspect ratios of the session-31 differential test, both geometries,
 * so that CI (no PyPI) still checks them. Goldens from processor_size_goldens.py, which says how.
 */
static void test_size_goldens(void) {
    static const struct {
        int w, h, tile, rows, cols, n_tiles;
        const char *sha256; /* of every tile's HWC bytes, feed order */
    } cases[] = {
        {511, 513, 512, 4, 4, 17,
         "5f48d6d41114d02657ff4fce8ca7013e65b32763960e9e075456dbfe585e3692"},
        {513, 512, 512, 4, 4, 17,
         "2453bb87c1a747c4b2cd5e8698b4760fc63179ed52ba2e726c031be889791034"},
        {2561, 2560, 512, 4, 4, 17,
         "8b646d3e29103be41370e0d53a958ba83ce8e0bee99c461d4e894cf032add7fb"},
        {2048, 211, 512, 1, 4, 5,
         "7a1e3e7127b3542fe5d8f57ab60f1fabed8d597c60d118b7be759609df76f2a8"},
        {5000, 2, 512, 1, 4, 5, "5354fd540177fbca6f1d0e161a576fa2b9a95fefb9c4853428a6a493782ac2b0"},
        {2, 5000, 384, 4, 1, 5, "554bb961028038b574c2364e4bb38b872974e1b1c51cb1483e0ba57f0943fbdf"},
        {385, 1537, 384, 4, 1, 5,
         "6487f6289a95aea7e4b692f17e02cb7a6469f92e91cea513f85c08ec7db5aef3"},
        {1537, 1536, 384, 4, 4, 17,
         "ad6d2c473f59f5654a272d9f178294f5c6fb3f49bcfc0729701bcba537145af1"},
        {383, 384, 384, 4, 4, 17,
         "847e05f6675f7e878c9fd7892d9fee6815e36bb0955d84acb6b2b7f60c216515"},
        {1, 101, 384, 4, 1, 5, "35d3329601736e4ee4c41d18be086ce983ba800fff927705f3e851308fd518c6"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        DqImageProcessorConfig cfg = default_config(cases[i].tile, 4, TRUE);
        DqImage *img = dq_image_new(cases[i].w, cases[i].h);
        for (int y = 0; y < img->height; y++)
            for (int x = 0; x < img->width; x++)
                for (int c = 0; c < 3; c++)
                    img->pixels[((size_t)y * img->width + x) * 3 + c] =
                        (uint8_t)((x * 7 + y * 13 + c * 101 + (x * y) % 17) & 255);
        GError *err = NULL;
        DqImageStages st;
        DqImageTiles *t = image_processor_run_stages(&cfg, img, &st, &err);
        dq_assert_no_error(err);
        g_assert_nonnull(t);
        if (t->rows != cases[i].rows || t->cols != cases[i].cols || t->n_tiles != cases[i].n_tiles)
            g_error("%dx%d tile %d: %dx%d grid, %d tiles; transformers %dx%d, %d", cases[i].w,
                    cases[i].h, cases[i].tile, t->rows, t->cols, t->n_tiles, cases[i].rows,
                    cases[i].cols, cases[i].n_tiles);
        GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
        for (int k = 0; k < st.n_tiles; k++)
            g_checksum_update(sum, st.tiles[k]->pixels,
                              (gssize)st.tiles[k]->width * st.tiles[k]->height * 3);
        if (strcmp(g_checksum_get_string(sum), cases[i].sha256) != 0)
            g_error("%dx%d tile %d: tiles differ from transformers 4.57.6 + Pillow 12.3",
                    cases[i].w, cases[i].h, cases[i].tile);
        g_checksum_free(sum);
        dq_image_tiles_free(t);
        dq_image_stages_clear(&st);
        dq_image_free(img);
    }
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/image_processor/config/snapshots", test_config_snapshots);
    g_test_add_func("/image_processor/config/defaults", test_config_defaults_and_values);
    g_test_add_func("/image_processor/config/errors", test_config_errors);
    g_test_add_func("/image_processor/config/edge_limit", test_config_edge_limit);
    g_test_add_func("/image_processor/plan/size_cases", test_plan_size_cases);
    g_test_add_func("/image_processor/pixel_formula", test_pixel_value_formula);
    g_test_add_func("/image_processor/grid_order", test_grid_order);
    g_test_add_func("/image_processor/size_goldens", test_size_goldens);
    g_test_add_func("/image_processor/fixture_cases", test_fixture_cases);
    return g_test_run();
}
