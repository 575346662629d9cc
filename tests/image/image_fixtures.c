#include "image_fixtures.h"
#include "testutil.h"

#include <string.h>

char *dq_fixture_dir(void) {
#ifdef DQ_FULL_FIXTURES
    const char *shared = dq_test_shared_dir();
    if (shared != NULL) {
        char *dir = g_build_filename(shared, "fixtures", NULL);
        if (g_file_test(dir, G_FILE_TEST_IS_DIR))
            return dir;
        g_free(dir);
    }
    g_test_message("../shared/fixtures absent: using the compact fixtures in tests/fixtures");
#endif
    return g_build_filename(dq_test_source_dir(), "tests", "fixtures", NULL);
}

char *dq_image_sha256(const DqImage *img) {
    GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(sum, img->pixels, (gssize)((size_t)img->width * img->height * 3));
    char *hex = g_strdup(g_checksum_get_string(sum));
    g_checksum_free(sum);
    return hex;
}

void dq_assert_image_matches(const DqImage *img, JsonObject *record, const char *what) {
    g_assert_nonnull(img);
    int w = (int)json_object_get_int_member(record, "width");
    int h = (int)json_object_get_int_member(record, "height");
    if (img->width != w || img->height != h)
        g_error("%s: size %dx%d, golden %dx%d", what, img->width, img->height, w, h);
    char *sha = dq_image_sha256(img);
    const char *want = json_object_get_string_member(record, "sha256_hwc_u8");
    if (strcmp(sha, want) != 0) {
        /* Name the first golden sample that differs: it says how far off the pixels are. */
        JsonArray *samples = json_object_get_array_member(record, "samples");
        GString *diff = g_string_new("");
        for (guint i = 0; samples != NULL && i < json_array_get_length(samples); i++) {
            JsonObject *s = json_array_get_object_element(samples, i);
            int y = (int)json_object_get_int_member(s, "y");
            int x = (int)json_object_get_int_member(s, "x");
            JsonArray *v = json_object_get_array_member(s, "value");
            const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
            for (int c = 0; c < 3; c++)
                if (p[c] != json_array_get_int_element(v, c))
                    g_string_append_printf(diff, " (%d,%d,c%d)=%d want %d", y, x, c, p[c],
                                           (int)json_array_get_int_element(v, c));
        }
        g_error("%s: sha256 %s, golden %s;%s", what, sha, want,
                diff->len ? diff->str : " golden samples agree");
    }
    g_free(sha);
}

JsonObject *dq_fixture_stage(JsonObject *preprocess, const char *stage) {
    JsonArray *stages = json_object_get_array_member(preprocess, "stages");
    for (guint i = 0; i < json_array_get_length(stages); i++) {
        JsonObject *s = json_array_get_object_element(stages, i);
        if (strcmp(json_object_get_string_member(s, "stage"), stage) == 0)
            return s;
    }
    return NULL;
}

int dq_fixture_foreach_image(DqFixtureImageFn fn, void *user) {
    char *dir = dq_fixture_dir();
    char *index_path = g_build_filename(dir, "index.json", NULL);
    JsonParser *index = json_parser_new();
    GError *err = NULL;
    json_parser_load_from_file(index, index_path, &err);
    dq_assert_no_error(err);
    JsonObject *root = json_node_get_object(json_parser_get_root(index));
    JsonArray *cases = json_object_get_array_member(root, "cases");
    JsonArray *variants = json_object_get_array_member(root, "variants_f32");
    int visited = 0;
    for (guint c = 0; c < json_array_get_length(cases); c++) {
        const char *case_name = json_array_get_string_element(cases, c);
        char *case_path = g_build_filename(dir, "cases", case_name, "case.json", NULL);
        JsonParser *cp = json_parser_new();
        json_parser_load_from_file(cp, case_path, &err);
        dq_assert_no_error(err);
        JsonObject *case_obj = json_node_get_object(json_parser_get_root(cp));
        JsonArray *images = json_object_get_array_member(case_obj, "images");
        JsonObject *vmap = json_object_get_object_member(case_obj, "variants");
        for (guint v = 0; v < json_array_get_length(variants); v++) {
            const char *variant = json_array_get_string_element(variants, v);
            JsonObject *vobj = json_object_get_object_member(vmap, variant);
            g_assert_nonnull(vobj);
            if (json_array_get_length(images) == 0)
                continue;
            JsonArray *pre = json_object_get_array_member(vobj, "preprocess");
            g_assert_nonnull(pre);
            g_assert_cmpuint(json_array_get_length(pre), ==, json_array_get_length(images));
            int tile_offset = 0;
            for (guint i = 0; i < json_array_get_length(images); i++) {
                JsonObject *im = json_array_get_object_element(images, i);
                char *path = g_build_filename(dir, json_object_get_string_member(im, "file"), NULL);
                DqFixtureImage fx = {
                    .fixtures_dir = dir,
                    .case_name = case_name,
                    .variant = variant,
                    .case_obj = case_obj,
                    .variant_obj = vobj,
                    .image_index = (int)i,
                    .image_path = path,
                    .preprocess = json_array_get_object_element(pre, i),
                    .tile_offset = tile_offset,
                };
                fn(&fx, user);
                tile_offset += (int)json_object_get_int_member(fx.preprocess, "n_tiles");
                visited++;
                g_free(path);
            }
        }
        g_object_unref(cp);
        g_free(case_path);
    }
    g_object_unref(index);
    g_free(index_path);
    g_free(dir);
    return visited;
}
