#include "fixture_case.h"

#include "testutil.h"

#include <stdlib.h>
#include <string.h>

JsonObject *fixture_parse_file(const char *path, JsonParser **keep) {
    JsonParser *p = json_parser_new();
    GError *err = NULL;
    if (!json_parser_load_from_file(p, path, &err))
        g_error("%s: %s", path, err->message);
    *keep = p;
    return json_node_get_object(json_parser_get_root(p));
}

void *fixture_read_binary(const char *case_dir, const char *file, size_t *len) {
    char *path = g_build_filename(case_dir, file, NULL);
    void *data = dq_test_read_file(path, len);
    g_free(path);
    return data;
}

void fixture_case_cli(JsonObject *case_obj, int *n_res, gboolean *split) {
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

DqImageTiles **fixture_case_tiles(const char *fx_dir, JsonObject *case_obj, const char *snap,
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
    fixture_case_cli(case_obj, &n_res, &split);
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
