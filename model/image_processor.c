/* Idefics3ImageProcessor (transformers 4.57, slow PIL path) on top of libdocqa_image.
 *
 * Stage chain (../shared/fixtures/README.md, pitfalls 5-17):
 *   rgb -> LANCZOS to the longest-edge size (upscaling too)
 *       -> split: LANCZOS to multiples of the tile (resize_for_vision_encoder, from the first
 *          result), row-major crops, then the global tile = the ALIGNED image resized to
 *          tile x tile, last; exactly one tile after alignment = no split (rows = cols = 0)
 *       -> no split: LANCZOS straight to tile x tile
 *       -> float32(u8 * rescale_factor computed in double), then (x - mean) / std in float32.
 * Every resize goes through dq_image_resize_lanczos, which copies when the size is unchanged
 * (PIL's Image.resize does the same).
 */
#include "image_processor.h"

#include "dq_error.h"
#include "json_load.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>
#include <xxhash.h>

/* ---- configuration ---- */

/* A member that must be a JSON number when present; FALSE with an error otherwise. */
static gboolean json_number(JsonObject *o, const char *key, double *out, const char *path,
                            GError **err) {
    JsonNode *n = json_object_get_member(o, key);
    if (n == NULL)
        return TRUE;
    GType t = JSON_NODE_HOLDS_VALUE(n) ? json_node_get_value_type(n) : G_TYPE_INVALID;
    if (t != G_TYPE_INT64 && t != G_TYPE_DOUBLE)
        return dq_fail(err, DQ_ERR_MODEL, "%s: '%s' must be a number", path, key);
    *out = json_node_get_double(n);
    return TRUE;
}

static gboolean json_bool(JsonObject *o, const char *key, gboolean *out, const char *path,
                          GError **err) {
    JsonNode *n = json_object_get_member(o, key);
    if (n == NULL || JSON_NODE_HOLDS_NULL(n))
        return TRUE;
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_BOOLEAN)
        return dq_fail(err, DQ_ERR_MODEL, "%s: '%s' must be true or false", path, key);
    *out = json_node_get_boolean(n);
    return TRUE;
}

/* {"longest_edge": N}; anything else (height/width sizes) is not what Idefics3 checkpoints use. */
static gboolean json_longest_edge(JsonObject *o, const char *key, int *out, const char *path,
                                  GError **err) {
    JsonNode *n = json_object_get_member(o, key);
    if (n == NULL || JSON_NODE_HOLDS_NULL(n))
        return TRUE;
    JsonObject *size = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
    double v = 0;
    if (size == NULL || !json_object_has_member(size, "longest_edge"))
        return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: '%s' must be {\"longest_edge\": N}", path,
                       key);
    if (!json_number(size, "longest_edge", &v, path, err))
        return FALSE;
    if (v < 1 || v > 65536 || v != floor(v))
        return dq_fail(err, DQ_ERR_MODEL, "%s: '%s.longest_edge' %g is not a usable size", path,
                       key, v);
    *out = (int)v;
    return TRUE;
}

/* image_mean / image_std: one number for all channels or one per RGB channel. */
static gboolean json_channels(JsonObject *o, const char *key, float out[3], const char *path,
                              GError **err) {
    JsonNode *n = json_object_get_member(o, key);
    if (n == NULL || JSON_NODE_HOLDS_NULL(n))
        return TRUE;
    if (JSON_NODE_HOLDS_VALUE(n)) {
        double v = 0;
        if (!json_number(o, key, &v, path, err))
            return FALSE;
        out[0] = out[1] = out[2] = (float)v;
        return TRUE;
    }
    JsonArray *a = JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
    if (a == NULL || json_array_get_length(a) != 3)
        return dq_fail(err, DQ_ERR_MODEL, "%s: '%s' must be a number or 3 numbers", path, key);
    for (guint i = 0; i < 3; i++) {
        JsonNode *e = json_array_get_element(a, i);
        GType t = JSON_NODE_HOLDS_VALUE(e) ? json_node_get_value_type(e) : G_TYPE_INVALID;
        if (t != G_TYPE_INT64 && t != G_TYPE_DOUBLE)
            return dq_fail(err, DQ_ERR_MODEL, "%s: '%s[%u]' must be a number", path, key, i);
        /* transformers builds np.array(mean, dtype=float32) for float32 images. */
        out[i] = (float)json_node_get_double(e);
    }
    return TRUE;
}

gboolean image_processor_config_load(const char *snapshot_dir, DqImageProcessorConfig *cfg,
                                     GError **err) {
    /* Idefics3ImageProcessor.__init__ defaults. */
    *cfg = (DqImageProcessorConfig){
        .tile_size = 364,
        .longest_edge = 4 * 364,
        .do_split = TRUE,
        .do_resize = TRUE,
        .do_rescale = TRUE,
        .do_normalize = TRUE,
        .rescale_factor = 1.0 / 255.0,
        .mean = {0.5f, 0.5f, 0.5f},
        .std = {0.5f, 0.5f, 0.5f},
    };
    char *path = g_build_filename(snapshot_dir, "preprocessor_config.json", NULL);
    JsonParser *parser = dq_json_load_file(path, DQ_JSON_DEFAULT, err);
    gboolean ok = FALSE;
    JsonObject *o = parser != NULL ? dq_json_root_object(parser, path, err) : NULL;
    if (o == NULL)
        goto out;
    double resample = 1;
    if (!json_number(o, "resample", &resample, path, err))
        goto out;
    /* PILImageResampling: 1 = LANCZOS, the only filter reproduced exactly here. */
    if (resample != 1) {
        dq_fail(err, DQ_ERR_UNSUPPORTED,
                "%s: resample %g is not supported (only 1 = LANCZOS, as in SmolVLM snapshots)",
                path, resample);
        goto out;
    }
    if (!json_longest_edge(o, "size", &cfg->longest_edge, path, err) ||
        !json_longest_edge(o, "max_image_size", &cfg->tile_size, path, err) ||
        !json_bool(o, "do_image_splitting", &cfg->do_split, path, err) ||
        !json_bool(o, "do_resize", &cfg->do_resize, path, err) ||
        !json_bool(o, "do_rescale", &cfg->do_rescale, path, err) ||
        !json_bool(o, "do_normalize", &cfg->do_normalize, path, err) ||
        !json_number(o, "rescale_factor", &cfg->rescale_factor, path, err) ||
        !json_channels(o, "image_mean", cfg->mean, path, err) ||
        !json_channels(o, "image_std", cfg->std, path, err))
        goto out;
    if (cfg->do_normalize && (cfg->std[0] == 0 || cfg->std[1] == 0 || cfg->std[2] == 0)) {
        dq_fail(err, DQ_ERR_MODEL, "%s: image_std has a zero entry", path);
        goto out;
    }
    ok = TRUE;
out:
    if (parser != NULL)
        g_object_unref(parser);
    g_free(path);
    return ok;
}

void image_processor_set_n_res(DqImageProcessorConfig *cfg, int n_res) {
    cfg->longest_edge = n_res * cfg->tile_size;
}

/* ---- sizes ---- */

/* math.ceil(v / t) * t for a non-negative int, with Python's true division. */
static int ceil_to_tile(int v, int t) {
    return (int)ceil((double)v / (double)t) * t;
}

/* resize_for_vision_encoder: the long side up to a tile multiple, the other side from the
 * double aspect ratio, truncated, then up to a tile multiple. */
static void vision_encoder_size(int w, int h, int t, int *ow, int *oh) {
    double aspect = (double)w / (double)h;
    int W, H;
    if (w >= h) {
        W = ceil_to_tile(w, t);
        H = ceil_to_tile((int)(W / aspect), t);
    } else {
        H = ceil_to_tile(h, t);
        W = ceil_to_tile((int)(H * aspect), t);
    }
    /* transformers would crash on a zero side; a one-tile side is the only sensible result. */
    *ow = MAX(W, t);
    *oh = MAX(H, t);
}

void image_processor_plan(const DqImageProcessorConfig *cfg, int width, int height,
                          DqImagePlan *plan) {
    int t = cfg->tile_size;
    memset(plan, 0, sizeof *plan);
    plan->resized_width = width;
    plan->resized_height = height;
    if (cfg->do_resize)
        dq_image_fit_longest_edge(width, height, cfg->longest_edge, &plan->resized_width,
                                  &plan->resized_height);
    if (!cfg->do_split) {
        plan->aligned_width = plan->aligned_height = t;
        plan->n_tiles = 1;
        return;
    }
    vision_encoder_size(plan->resized_width, plan->resized_height, t, &plan->aligned_width,
                        &plan->aligned_height);
    if (plan->aligned_width > t || plan->aligned_height > t) {
        plan->rows = plan->aligned_height / t;
        plan->cols = plan->aligned_width / t;
        plan->n_tiles = plan->rows * plan->cols + 1;
    } else {
        plan->n_tiles = 1;
    }
}

/* ---- pixels ---- */

void dq_image_stages_clear(DqImageStages *stages) {
    if (stages == NULL)
        return;
    dq_image_free(stages->resized);
    dq_image_free(stages->aligned);
    for (int i = 0; i < stages->n_tiles; i++)
        dq_image_free(stages->tiles[i]);
    g_free(stages->tiles);
    memset(stages, 0, sizeof *stages);
}

void dq_image_tiles_free(DqImageTiles *tiles) {
    if (tiles == NULL)
        return;
    g_free(tiles->bytes);
    g_free(tiles->hashes);
    g_free(tiles);
}

uint64_t dq_tile_hash(const uint8_t *bytes, size_t n) {
    return XXH3_64bits(bytes, n);
}

void dq_image_tiles_expand(const DqImageTiles *tiles, int k, float *out) {
    const size_t plane = (size_t)tiles->tile_size * tiles->tile_size;
    const uint8_t *b = dq_image_tiles_tile(tiles, k);
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++)
            out[c * plane + i] = tiles->lut[c][b[c * plane + i]];
}

static void pixel_lut(const DqImageProcessorConfig *cfg, float lut[3][256]) {
    for (int c = 0; c < 3; c++) {
        for (int v = 0; v < 256; v++) {
            /* rescale: np.float64 multiply, then astype(float32); normalize in float32. */
            float x = cfg->do_rescale ? (float)((double)v * cfg->rescale_factor) : (float)v;
            if (cfg->do_normalize)
                x = (x - cfg->mean[c]) / cfg->std[c];
            lut[c][v] = x;
        }
    }
}

/* The t x t square of img at (x0, y0) (HWC, as resized) -> channel planes, read in place: the
 * grid's tiles are not cropped into images of their own first. */
static void row_to_planes(const uint8_t *restrict p, uint8_t *restrict r, uint8_t *restrict g,
                          uint8_t *restrict b, int n) {
    for (int x = 0; x < n; x++) { /* (restrict: the compiler's shuffles, not a byte at a time) */
        r[x] = p[3 * x];
        g[x] = p[3 * x + 1];
        b[x] = p[3 * x + 2];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* row_to_planes 16 pixels (48 bytes, three vectors) at a time: byte 3i + c of the block goes to
 * position i of channel c, picked from its vector by a shuffle; the three picks are or-ed.
 * (The baseline build has no byte shuffle, and made this a byte at a time, a tenth of the
 * preprocessing.) */
__attribute__((target("ssse3"))) static void row_to_planes_ssse3(const uint8_t *p, uint8_t *r,
                                                                 uint8_t *g, uint8_t *b, int n) {
    /* [channel][vector]: byte 3i + c of the block is byte (3i + c) % 16 of vector (3i + c) / 16 */
    static const int8_t pick[3][3][16] = {
        {{0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 4, 7, 10, 13}},
        {{1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14}},
        {{2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, 1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15}}};
    __m128i mask[3][3];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 3; v++)
            mask[c][v] = _mm_loadu_si128((const __m128i *)pick[c][v]);
    uint8_t *dst[3] = {r, g, b};
    int x = 0;
    for (; x + 16 <= n; x += 16) {
        const __m128i v[3] = {_mm_loadu_si128((const __m128i *)(p + 3 * x)),
                              _mm_loadu_si128((const __m128i *)(p + 3 * x + 16)),
                              _mm_loadu_si128((const __m128i *)(p + 3 * x + 32))};
        for (int c = 0; c < 3; c++) {
            __m128i o = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(v[0], mask[c][0]),
                                                  _mm_shuffle_epi8(v[1], mask[c][1])),
                                     _mm_shuffle_epi8(v[2], mask[c][2]));
            _mm_storeu_si128((__m128i *)(dst[c] + x), o);
        }
    }
    row_to_planes(p + 3 * x, r + x, g + x, b + x, n - x);
}
#endif

static void square_to_planes(const DqImage *img, int x0, int y0, int t, uint8_t *out) {
    const size_t plane = (size_t)t * t;
    void (*row)(const uint8_t *, uint8_t *, uint8_t *, uint8_t *, int) = row_to_planes;
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("ssse3"))
        row = row_to_planes_ssse3;
#endif
    for (int y = 0; y < t; y++) {
        const uint8_t *p = img->pixels + ((size_t)(y0 + y) * img->width + (size_t)x0) * 3;
        uint8_t *r = out + (size_t)y * t;
        row(p, r, r + plane, r + 2 * plane, t);
    }
}

/* img resized to width x height, or img itself when it already has that size (*owned FALSE):
 * a page rendered at N already has the longest-edge size, and copying it cost a tenth of the
 * preprocessing. */
static const DqImage *resize_or_same(const DqImage *img, int width, int height, gboolean *owned) {
    *owned = img->width != width || img->height != height;
    return *owned ? dq_image_resize_lanczos(img, width, height) : img;
}

DqImageTiles *image_processor_run_stages(const DqImageProcessorConfig *cfg, const DqImage *rgb,
                                         DqImageStages *stages, GError **err) {
    if (stages != NULL)
        memset(stages, 0, sizeof *stages);
    if (cfg == NULL || rgb == NULL || rgb->width <= 0 || rgb->height <= 0 || cfg->tile_size <= 0 ||
        cfg->longest_edge <= 0) {
        dq_fail(err, DQ_ERR_ARGS, "image processor: empty image or unset configuration");
        return NULL;
    }
    const int t = cfg->tile_size;
    DqImagePlan plan;
    image_processor_plan(cfg, rgb->width, rgb->height, &plan);
    gboolean own_resized = FALSE, own_aligned = FALSE;
    const DqImage *resized =
        resize_or_same(rgb, plan.resized_width, plan.resized_height, &own_resized);
    const DqImage *aligned = NULL;
    DqImage *global = NULL; /* the global tile (or the only one) */
    gboolean ok = resized != NULL;
    if (ok && cfg->do_split) {
        aligned = resize_or_same(resized, plan.aligned_width, plan.aligned_height, &own_aligned);
        /* The global tile: the aligned image, not the original, to T x T. */
        ok = aligned != NULL && (global = dq_image_resize_lanczos(aligned, t, t)) != NULL;
    } else if (ok) {
        ok = (global = dq_image_resize_lanczos(resized, t, t)) != NULL;
    }

    DqImageTiles *out = NULL;
    size_t tile_bytes = (size_t)3 * t * t;
    uint8_t *bytes = ok ? g_try_malloc(tile_bytes * plan.n_tiles) : NULL;
    if (bytes == NULL) {
        dq_fail(err, DQ_ERR_LIMIT, "image processor: out of memory for a %dx%d image (%d tiles)",
                rgb->width, rgb->height, plan.n_tiles);
    } else {
        /* row-major grid tiles (none without do_split, where aligned is NULL), then the global
         * tile */
        g_assert(aligned != NULL || plan.rows == 0);
        for (int r = 0; r < plan.rows; r++)
            for (int c = 0; c < plan.cols; c++)
                square_to_planes(aligned, c * t, r * t, t,
                                 bytes + (r * plan.cols + c) * tile_bytes);
        square_to_planes(global, 0, 0, t, bytes + (plan.n_tiles - 1) * tile_bytes);
        out = g_new0(DqImageTiles, 1);
        out->rows = plan.rows;
        out->cols = plan.cols;
        out->n_tiles = plan.n_tiles;
        out->tile_size = t;
        out->bytes = bytes;
        out->hashes = g_new(uint64_t, plan.n_tiles);
        for (int i = 0; i < plan.n_tiles; i++)
            out->hashes[i] = dq_tile_hash(bytes + i * tile_bytes, tile_bytes);
        pixel_lut(cfg, out->lut);
    }

    if (out != NULL && stages != NULL) {
        /* copies where the stages are the input itself; the grid's tiles cropped */
        stages->resized = own_resized ? (DqImage *)resized : dq_image_copy(resized);
        own_resized = FALSE;
        if (aligned != NULL) {
            stages->aligned = own_aligned ? (DqImage *)aligned : dq_image_copy(aligned);
            own_aligned = FALSE;
        }
        stages->n_tiles = plan.n_tiles;
        stages->tiles = g_new0(DqImage *, plan.n_tiles);
        for (int r = 0; r < plan.rows; r++)
            for (int c = 0; c < plan.cols; c++)
                stages->tiles[r * plan.cols + c] =
                    dq_image_crop(stages->aligned, c * t, r * t, t, t);
        stages->tiles[plan.n_tiles - 1] = global;
        global = NULL;
    }
    if (own_resized)
        dq_image_free((DqImage *)resized);
    if (own_aligned)
        dq_image_free((DqImage *)aligned);
    dq_image_free(global);
    return out;
}

DqImageTiles *image_processor_run(const DqImageProcessorConfig *cfg, const DqImage *rgb,
                                  GError **err) {
    return image_processor_run_stages(cfg, rgb, NULL, err);
}
