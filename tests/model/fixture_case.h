/* Reading ../shared/fixtures' cases (and the compact copies in tests/fixtures) for the model
 * tests: a case's JSON, its binary arrays, its command-line options and its images, preprocessed
 * as transformers did for the goldens. Failures fail the test (g_error / assertions). */
#ifndef DQ_FIXTURE_CASE_H
#define DQ_FIXTURE_CASE_H

#include "image_processor.h"

#include <json-glib/json-glib.h>
#include <stddef.h>

/* A JSON file's root object; *keep owns it (g_object_unref when done). */
JsonObject *fixture_parse_file(const char *path, JsonParser **keep);

/* The bytes of case_dir/file (len may be NULL). g_free the result. */
void *fixture_read_binary(const char *case_dir, const char *file, size_t *len);

/* The case's cli_args: --n-res N (default 4) and --no-split. */
void fixture_case_cli(JsonObject *case_obj, int *n_res, gboolean *split);

/* The tiles of every image of a case, preprocessed for the model in snap; *n_images of them
 * (free each with dq_image_tiles_free, then the array with g_free). */
DqImageTiles **fixture_case_tiles(const char *fx_dir, JsonObject *case_obj, const char *snap,
                                  int *n_images);

#endif
