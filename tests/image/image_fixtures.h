/* Walks the golden fixtures' image preprocessing records (case.json `preprocess`), shared by the
 * image library's and the image processor's tests.
 *
 * Unit builds read the compact set committed under tests/fixtures (4 cases, fast enough under
 * sanitizers); builds with DQ_FULL_FIXTURES (the `slow` *_full tests) read all 12 cases from
 * ../shared/fixtures, falling back to the compact set, with a message, where it is absent. */
#ifndef DQ_TEST_IMAGE_FIXTURES_H
#define DQ_TEST_IMAGE_FIXTURES_H

#include "image.h"

#include <json-glib/json-glib.h>

typedef struct {
    const char *fixtures_dir; /* the fixtures folder in use */
    const char *case_name;
    const char *variant;  /* a float32 variant (the bf16 twins share preprocessing) */
    JsonObject *case_obj; /* case.json */
    JsonObject *variant_obj;
    int image_index;        /* index into case.json images[] and the variant's preprocess[] */
    const char *image_path; /* absolute */
    JsonObject *preprocess; /* preprocess[image_index] */
    int tile_offset;        /* index of this image's first tile in pixel_values */
} DqFixtureImage;

/* Calls fn for every image of every case and float32 variant; returns the number of images
 * visited (the caller asserts it is not zero). */
typedef void (*DqFixtureImageFn)(const DqFixtureImage *fx, void *user);
int dq_fixture_foreach_image(DqFixtureImageFn fn, void *user);

/* The fixtures folder in use (see above). g_free the result. */
char *dq_fixture_dir(void);

/* SHA-256 of the image's raw HxWx3 bytes, lowercase hex. g_free the result. */
char *dq_image_sha256(const DqImage *img);

/* Asserts width, height and sha256_hwc_u8 of a stage/tile record; `what` labels failures. */
void dq_assert_image_matches(const DqImage *img, JsonObject *record, const char *what);

/* preprocess.stages[] entry by its name, or NULL. */
JsonObject *dq_fixture_stage(JsonObject *preprocess, const char *stage);

#endif
