/* Internals of libdocqa_image shared between its decoders; not part of the public API. */
#ifndef DQ_IMAGE_PRIVATE_H
#define DQ_IMAGE_PRIVATE_H

#include "image.h"

/* Pillow raises DecompressionBombError above 2 x MAX_IMAGE_PIXELS (2 x 89478485) pixels; the
 * decoders refuse the same images before allocating anything. */
#define DQ_IMAGE_MAX_PIXELS 178956970LL

/* The orientation metadata a decoder found, resolved as Pillow's Image.getexif() does: the EXIF
 * Orientation tag when there is one, else an XMP tiff:Orientation. */
typedef struct {
    GByteArray *exif; /* TIFF-structured EXIF bytes (a leading "Exif\0\0" is allowed), or NULL */
    GByteArray *xmp;  /* XMP packet, or NULL */
} DqImageMeta;

void dq_image_meta_clear(DqImageMeta *meta);

/* The Orientation value as found (exif_transpose acts on 2..8 only); 1 when the metadata has no
 * orientation or cannot be parsed. */
int dq_image_meta_orientation(const DqImageMeta *meta);

gboolean dq_image_is_png(const uint8_t *data, size_t len);
gboolean dq_image_is_jpeg(const uint8_t *data, size_t len);

DqImage *dq_png_decode(const uint8_t *data, size_t len, const char *name, DqImageMeta *meta,
                       GError **err);
DqImage *dq_jpeg_decode(const uint8_t *data, size_t len, const char *name, DqImageMeta *meta,
                        GError **err);

#endif
