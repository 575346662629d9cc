/* libdocqa_image: size rule, Pillow-exact LANCZOS on every fixture stage, PNG round trip,
 * decoders on images made here with libpng / libjpeg-turbo, EXIF orientations, bad files. */
#include "dq_error.h"
#include "image.h"
#include "image_fixtures.h"
#include "testutil.h"

#include <png.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

/* ---- size rule ---- */

static void test_fit_longest_edge_cases(void) {
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
        int le = (int)json_object_get_int_member(c, "longest_edge");
        JsonArray *want = json_object_get_array_member(c, "resized_wh");
        int ow = 0, oh = 0;
        dq_image_fit_longest_edge(w, h, le, &ow, &oh);
        if (ow != json_array_get_int_element(want, 0) || oh != json_array_get_int_element(want, 1))
            g_error("%dx%d at longest edge %d: got %dx%d, golden %dx%d", w, h, le, ow, oh,
                    (int)json_array_get_int_element(want, 0),
                    (int)json_array_get_int_element(want, 1));
    }
    g_test_message("%u size cases", n);
    g_object_unref(p);
    g_free(path);
    g_free(dir);
}

static void test_fit_longest_edge_traps(void) {
    int w, h;
    dq_image_fit_longest_edge(2048, 211, 2048, &w, &h); /* 210.99999999999997 -> 210 */
    g_assert_cmpint(w, ==, 2048);
    g_assert_cmpint(h, ==, 210);
    dq_image_fit_longest_edge(2000, 300, 2048, &w, &h); /* 307 is odd -> 308 */
    g_assert_cmpint(h, ==, 308);
    dq_image_fit_longest_edge(850, 1100, 4608, &w, &h); /* capped at 4096 without +1 */
    g_assert_cmpint(w, ==, 3164);
    g_assert_cmpint(h, ==, 4096);
    dq_image_fit_longest_edge(1, 3000, 512, &w, &h);
    g_assert_cmpint(w, ==, 1);
    g_assert_cmpint(h, ==, 512);
}

/* ---- the resampler on every fixture stage ---- */

static void check_fixture_image(const DqFixtureImage *fx, void *user) {
    int *tiles_checked = user;
    char *label = g_strdup_printf("%s/%s image %d", fx->case_name, fx->variant, fx->image_index);
    GError *err = NULL;
    DqImage *rgb = dq_image_load(fx->image_path, DQ_EXIF_APPLY, &err);
    dq_assert_no_error(err);
    char *what = g_strdup_printf("%s stage rgb", label);
    dq_assert_image_matches(rgb, dq_fixture_stage(fx->preprocess, "rgb"), what);
    g_free(what);

    /* Longest-edge resize to the size the rule gives for the golden's longest edge. */
    JsonObject *le = dq_fixture_stage(fx->preprocess, "resize_longest_edge");
    g_assert_nonnull(le);
    int lw = (int)json_object_get_int_member(le, "width");
    int lh = (int)json_object_get_int_member(le, "height");
    int w, h;
    dq_image_fit_longest_edge(rgb->width, rgb->height, MAX(lw, lh), &w, &h);
    DqImage *resized = dq_image_resize_lanczos(rgb, w, h);
    what = g_strdup_printf("%s stage resize_longest_edge", label);
    dq_assert_image_matches(resized, le, what);
    g_free(what);

    JsonArray *tiles = json_object_get_array_member(fx->preprocess, "tiles");
    guint ntiles = json_array_get_length(tiles);
    JsonObject *last = json_array_get_object_element(tiles, ntiles - 1);
    int t = (int)json_object_get_int_member(last, "width");
    JsonObject *ve = dq_fixture_stage(fx->preprocess, "resize_for_vision_encoder");
    if (ve == NULL) {
        /* No split: one straight tile x tile resize of the longest-edge image. */
        g_assert_cmpuint(ntiles, ==, 1);
        DqImage *tile = dq_image_resize_lanczos(resized, t, t);
        what = g_strdup_printf("%s no-split tile", label);
        dq_assert_image_matches(tile, last, what);
        g_free(what);
        dq_image_free(tile);
        (*tiles_checked)++;
    } else {
        /* Sizes come from the golden here; the processor's tests check the size rule. */
        int aw = (int)json_object_get_int_member(ve, "width");
        int ah = (int)json_object_get_int_member(ve, "height");
        DqImage *aligned = dq_image_resize_lanczos(resized, aw, ah);
        what = g_strdup_printf("%s stage resize_for_vision_encoder", label);
        dq_assert_image_matches(aligned, ve, what);
        g_free(what);
        int cols = aw / t, rows = ah / t;
        for (guint i = 0; i < ntiles; i++) {
            JsonObject *rec = json_array_get_object_element(tiles, i);
            DqImage *tile;
            if (json_object_get_boolean_member(rec, "is_global")) {
                g_assert_cmpuint(i, ==, ntiles - 1);
                tile = dq_image_resize_lanczos(aligned, t, t);
            } else {
                g_assert_cmpint((int)i, <, rows * cols);
                tile = dq_image_crop(aligned, ((int)i % cols) * t, ((int)i / cols) * t, t, t);
            }
            what = g_strdup_printf("%s tile %u", label, i);
            dq_assert_image_matches(tile, rec, what);
            g_free(what);
            dq_image_free(tile);
            (*tiles_checked)++;
        }
        dq_image_free(aligned);
    }
    dq_image_free(resized);
    dq_image_free(rgb);
    g_free(label);
}

static void test_fixture_stages(void) {
    int tiles = 0;
    int images = dq_fixture_foreach_image(check_fixture_image, &tiles);
    g_assert_cmpint(images, >, 0);
    g_assert_cmpint(tiles, >, 0);
    g_test_message("%d images, %d tiles bit-exact", images, tiles);
}

/* ---- resampler properties ---- */

static DqImage *pattern_image(int w, int h, unsigned seed) {
    DqImage *img = dq_image_new(w, h);
    g_assert_nonnull(img);
    GRand *r = g_rand_new_with_seed(seed);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        img->pixels[i] = (uint8_t)g_rand_int_range(r, 0, 256);
    g_rand_free(r);
    return img;
}

static void test_resize_same_size_is_copy(void) {
    DqImage *a = pattern_image(37, 23, 1);
    DqImage *b = dq_image_resize_lanczos(a, 37, 23);
    g_assert_cmpmem(a->pixels, 37 * 23 * 3, b->pixels, 37 * 23 * 3);
    dq_image_free(b);
    dq_image_free(a);
}

static void test_resize_flat_stays_flat(void) {
    DqImage *a = dq_image_new(50, 30);
    memset(a->pixels, 200, 50 * 30 * 3);
    int sizes[][2] = {{5, 90}, {123, 7}, {50, 61}, {17, 30}, {1, 1}};
    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
        DqImage *b = dq_image_resize_lanczos(a, sizes[s][0], sizes[s][1]);
        g_assert_cmpint(b->width, ==, sizes[s][0]);
        g_assert_cmpint(b->height, ==, sizes[s][1]);
        for (size_t i = 0; i < (size_t)b->width * b->height * 3; i++)
            g_assert_cmpint(b->pixels[i], ==, 200);
        dq_image_free(b);
    }
    dq_image_free(a);
}

static void test_resize_one_axis_skips_other_pass(void) {
    /* Only the width changes: every column mix stays within its own row. */
    DqImage *a = dq_image_new(40, 3);
    memset(a->pixels + 40 * 3, 255, 40 * 3); /* row 1 white, rows 0 and 2 black */
    DqImage *b = dq_image_resize_lanczos(a, 97, 3);
    for (int x = 0; x < 97 * 3; x++) {
        g_assert_cmpint(b->pixels[x], ==, 0);
        g_assert_cmpint(b->pixels[97 * 3 + x], ==, 255);
    }
    dq_image_free(b);
    dq_image_free(a);
}

static void test_bad_arguments(void) {
    g_assert_null(dq_image_new(0, 5));
    g_assert_null(dq_image_new(5, -1));
    DqImage *a = pattern_image(8, 8, 2);
    g_assert_null(dq_image_crop(a, 4, 4, 5, 4));
    g_assert_null(dq_image_crop(a, -1, 0, 2, 2));
    g_assert_null(dq_image_resize_lanczos(a, 0, 3));
    DqImage *c = dq_image_crop(a, 3, 2, 5, 6);
    g_assert_cmpmem(c->pixels, 15, a->pixels + (2 * 8 + 3) * 3, 15);
    g_assert_cmpmem(c->pixels + 5 * 15, 15, a->pixels + (7 * 8 + 3) * 3, 15);
    dq_image_free(c);
    dq_image_free(a);
    dq_image_free(NULL);
}

/* ---- PNG writing ---- */

static void test_png_round_trip(void) {
    DqImage *a = pattern_image(61, 17, 3);
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "rt.png", NULL);
    GError *err = NULL;
    g_assert_true(dq_image_write_png(a, path, &err));
    dq_assert_no_error(err);
    DqImage *b = dq_image_load(path, DQ_EXIF_APPLY, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(b->width, ==, 61);
    g_assert_cmpint(b->height, ==, 17);
    g_assert_cmpmem(a->pixels, 61 * 17 * 3, b->pixels, 61 * 17 * 3);
    GBytes *bytes = dq_image_encode_png(a, &err);
    dq_assert_no_error(err);
    gsize n;
    const uint8_t *d = g_bytes_get_data(bytes, &n);
    DqImage *c = dq_image_decode(d, n, "mem.png", DQ_EXIF_IGNORE, &err);
    dq_assert_no_error(err);
    g_assert_cmpmem(a->pixels, 61 * 17 * 3, c->pixels, 61 * 17 * 3);
    g_assert_false(dq_image_write_png(a, "/nonexistent-dir/x.png", &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_assert_nonnull(strstr(err->message, "/nonexistent-dir/x.png"));
    g_clear_error(&err);
    g_bytes_unref(bytes);
    dq_image_free(c);
    dq_image_free(b);
    dq_image_free(a);
    g_free(path);
    g_free(dir);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/image/size/fixture_cases", test_fit_longest_edge_cases);
    g_test_add_func("/image/size/traps", test_fit_longest_edge_traps);
    g_test_add_func("/image/resize/fixture_stages", test_fixture_stages);
    g_test_add_func("/image/resize/same_size_copy", test_resize_same_size_is_copy);
    g_test_add_func("/image/resize/flat_stays_flat", test_resize_flat_stays_flat);
    g_test_add_func("/image/resize/one_axis", test_resize_one_axis_skips_other_pass);
    g_test_add_func("/image/bad_arguments", test_bad_arguments);
    g_test_add_func("/image/png/round_trip", test_png_round_trip);
    return g_test_run();
}
