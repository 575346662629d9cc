/* 8-bit RGB images: decoding, PNG encoding, and Pillow-exact LANCZOS resampling.
 *
 * One implementation of the resampler serves both ingest (page images at N x tile) and the
 * model's image processor, so a page ingested at the processor's longest edge is never
 * resampled twice and the tiles equal transformers' bit for bit.
 *
 * Decoding follows transformers' `load_image`: PIL.Image.open -> ImageOps.exif_transpose ->
 * convert("RGB"): gray is replicated, palette looked up (its transparency ignored), alpha
 * dropped without compositing, 16-bit reduced to 8 as Pillow does, CMYK JPEG converted as Pillow
 * does.
 */
#ifndef DQ_IMAGE_H
#define DQ_IMAGE_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int width;
    int height;
    uint8_t *pixels; /* [height][width][3], RGB interleaved, row-major, no padding */
} DqImage;

/* A width x height image, zero-filled. Sizes must be positive. */
DqImage *dq_image_new(int width, int height);
/* The same with its pixels unset: for producers that write every one (resizes, crops). */
DqImage *dq_image_new_uninit(int width, int height);
/* A copy of img. */
DqImage *dq_image_copy(const DqImage *img);
void dq_image_free(DqImage *img);

typedef enum {
    DQ_EXIF_APPLY = 0, /* rotate/flip by the EXIF Orientation tag, as load_image does */
    DQ_EXIF_IGNORE = 1,
} DqExifMode;

/* Decodes a PNG or JPEG file (sniffed from its bytes, not its name) to RGB. */
DqImage *dq_image_load(const char *path, DqExifMode exif, GError **err);
/* The same from memory; `name` only labels error messages. */
DqImage *dq_image_decode(const uint8_t *data, size_t len, const char *name, DqExifMode exif,
                         GError **err);

/* Lossless PNG (8-bit RGB). */
gboolean dq_image_write_png(const DqImage *img, const char *path, GError **err);
GBytes *dq_image_encode_png(const DqImage *img, GError **err);

/* Pillow 12.x Image.resize(size, LANCZOS) on 8-bit RGB: horizontal pass then vertical pass,
 * 22-bit fixed-point weights, intermediate rounded to uint8. A same-size resize is a copy. */
DqImage *dq_image_resize_lanczos(const DqImage *src, int width, int height);

/* A width x height crop at (x, y); the rectangle must lie inside src. */
DqImage *dq_image_crop(const DqImage *src, int x, int y, int width, int height);

/* transformers' MAX_IMAGE_SIZE: no longest edge asked for goes past it. */
#define DQ_IMAGE_MAX_SIZE 4096

/* transformers' Idefics3 `get_resize_output_image_size`: the size after resizing (w, h) so that
 * its longest edge is `longest_edge` (double arithmetic, truncation, odd short side + 1, the 4096
 * cap). Ingest renders pages at exactly this size so the processor's first resize is a no-op. */
void dq_image_fit_longest_edge(int width, int height, int longest_edge, int *out_width,
                               int *out_height);

/* ImageOps.exif_transpose's transposition for orientation 2..8 (EXIF's and TIFF's Orientation
 * values; any other value copies): a new image, or NULL when out of memory. */
DqImage *dq_image_orient(const DqImage *img, int orientation);

#endif
