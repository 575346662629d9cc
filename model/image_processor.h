/* Idefics3ImageProcessor (transformers 4.57, the slow PIL one), reproduced exactly.
 *
 *   RGB image -> resize so the longest edge is size.longest_edge (N x tile)
 *             -> split mode: resize_for_vision_encoder (both sides multiples of the tile),
 *                row-major tiles, then the global tile (the aligned image resized to tile x tile)
 *             -> no-split mode: one tile x tile resize
 *             -> float32 (u8 * 1/255 - mean) / std, CHW per tile
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
    float *pixels; /* [n_tiles][3][tile_size][tile_size], normalized */
} DqImageTiles;

DqImageTiles *image_processor_run(const DqImageProcessorConfig *cfg, const DqImage *rgb,
                                  GError **err);
void dq_image_tiles_free(DqImageTiles *tiles);

#endif
