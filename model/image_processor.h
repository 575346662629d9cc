/* Idefics3ImageProcessor (transformers 4.57, the slow PIL one), reproduced exactly.
 *
 *   RGB image -> resize so the longest edge is size.longest_edge (N x tile)
 *             -> split mode: resize_for_vision_encoder (both sides multiples of the tile),
 *                row-major tiles, then the global tile (the aligned image resized to tile x tile)
 *             -> no-split mode: one tile x tile resize
 *             -> float32 (u8 * 1/255 - mean) / std, CHW per tile
 *
 * The tiles are kept as their uint8 values in channel planes, with the float32 value of each
 * byte in each channel (a 256-entry table a channel): a quarter of float32's bytes to hold,
 * hash and send to a GPU, and the same pixel values wherever they are expanded.
 *
 * See ../shared/fixtures/README.md, pitfalls 5-17.
 */
#ifndef DQ_IMAGE_PROCESSOR_H
#define DQ_IMAGE_PROCESSOR_H

#include "image.h"

#include <glib.h>

typedef struct {
    int tile_size;         /* max_image_size.longest_edge: 512 (256M/500M) or 384 (2.2B) */
    int longest_edge;      /* size.longest_edge: N x tile_size (4 x by default in the snapshots) */
    gboolean do_split;     /* do_image_splitting */
    gboolean do_resize;    /* the longest-edge resize */
    gboolean do_rescale;   /* x * rescale_factor */
    gboolean do_normalize; /* (x - mean) / std */
    double rescale_factor; /* 1/255 */
    float mean[3];
    float std[3];
} DqImageProcessorConfig;

/* Reads preprocessor_config.json from a snapshot directory, with transformers' defaults for
 * absent fields. */
gboolean image_processor_config_load(const char *snapshot_dir, DqImageProcessorConfig *cfg,
                                     GError **err);

/* Sets longest_edge = n_res x tile_size (the pipeline's N). */
void image_processor_set_n_res(DqImageProcessorConfig *cfg, int n_res);

typedef struct {
    int rows, cols; /* the split grid; 0, 0 when the image is one tile (no split, or exactly
                       one tile after alignment): the prompt then uses the single-image form */
    int n_tiles;    /* rows * cols + 1 (global tile last), or 1 */
    int tile_size;
    uint8_t *bytes;    /* [n_tiles][3][tile_size][tile_size]: the resized tiles' uint8 values */
    uint64_t *hashes;  /* [n_tiles]: each tile's dq_tile_hash, computed here, on
                          the thread that prepares the page, not before the vision encoder */
    float lut[3][256]; /* pixel value of byte b in channel c: (b * rescale - mean[c]) / std[c],
                          computed as transformers computes it */
} DqImageTiles;

/* One difference from transformers, kept on purpose: an image 1, 3 or 4 pixels tall is
 * processed as it is. transformers guesses the channel dimension from the array's shape and
 * takes such an (H, W, 3) array for channels-first, processing another image altogether. */
DqImageTiles *image_processor_run(const DqImageProcessorConfig *cfg, const DqImage *rgb,
                                  GError **err);
void dq_image_tiles_free(DqImageTiles *tiles);

/* Tile k's pixel values, [3][tile_size][tile_size] floats (transformers' pixel_values). */
void dq_image_tiles_expand(const DqImageTiles *tiles, int k, float *out);

/* The hash DqImageTiles.hashes and DqPixelTile.hash hold: XXH3-64 of a tile's bytes. */
uint64_t dq_tile_hash(const uint8_t *bytes, size_t n);

/* Tile k's bytes, [3][tile_size][tile_size]. */
static inline const uint8_t *dq_image_tiles_tile(const DqImageTiles *tiles, int k) {
    return tiles->bytes + (size_t)k * 3 * tiles->tile_size * tiles->tile_size;
}

/* The sizes image_processor_run will use for a width x height RGB image, computed without
 * touching pixels (transformers' size rules, pitfalls 5-9): prompt expansion needs rows/cols. */
typedef struct {
    int resized_width, resized_height; /* after the longest-edge resize (the input size when
                                          do_resize is off) */
    int aligned_width, aligned_height; /* after resize_for_vision_encoder (split mode), else
                                          tile_size x tile_size */
    int rows, cols;                    /* as in DqImageTiles */
    int n_tiles;
} DqImagePlan;

void image_processor_plan(const DqImageProcessorConfig *cfg, int width, int height,
                          DqImagePlan *plan);

/* The uint8 images behind the pixel values, for tests and debugging (the fixtures hash each). */
typedef struct {
    DqImage *resized; /* stage resize_longest_edge (a copy of the input when do_resize is off) */
    DqImage *aligned; /* stage resize_for_vision_encoder; NULL in no-split mode */
    DqImage **tiles;  /* [n_tiles] tile_size x tile_size, feed order, global tile last */
    int n_tiles;
} DqImageStages;

/* image_processor_run that also hands back the uint8 stages (stages may be NULL). */
DqImageTiles *image_processor_run_stages(const DqImageProcessorConfig *cfg, const DqImage *rgb,
                                         DqImageStages *stages, GError **err);
void dq_image_stages_clear(DqImageStages *stages);

#endif
