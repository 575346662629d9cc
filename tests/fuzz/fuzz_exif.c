/* libFuzzer target: the EXIF / XMP orientation parser (dq_image_meta_orientation) on arbitrary
 * metadata, and the transposition it leads to (dq_image_orient). fuzz_image_decode reaches the
 * parser only through a PNG or JPEG that decodes, a few hundred inputs a second spent mostly in
 * the codecs; here every byte is the parser's. The transposition is checked pixel by pixel
 * against ImageOps.exif_transpose's map on an image of up to 256x256 (several 64x64 tiles).
 * Input: byte 0 says which metadata there is (bit 0 EXIF, bit 1 XMP), bytes 1 and 2 the image's
 * width and height less one, byte 3 where the EXIF part ends when there are both; the rest is
 * the metadata. Seeds: tests/fuzz/seeds/exif/. */
#include "image_private.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Where exif_transpose moves the pixel at (x, y) of a w x h image, written out per method
 * (PIL's Transpose), independently of dq_image_orient's affine map. */
static void transposed(int o, int w, int h, int x, int y, int *ox, int *oy) {
    switch (o) {
    case 2: /* FLIP_LEFT_RIGHT */
        *ox = w - 1 - x, *oy = y;
        break;
    case 3: /* ROTATE_180 */
        *ox = w - 1 - x, *oy = h - 1 - y;
        break;
    case 4: /* FLIP_TOP_BOTTOM */
        *ox = x, *oy = h - 1 - y;
        break;
    case 5: /* TRANSPOSE */
        *ox = y, *oy = x;
        break;
    case 6: /* ROTATE_270 */
        *ox = h - 1 - y, *oy = x;
        break;
    case 7: /* TRANSVERSE */
        *ox = h - 1 - y, *oy = w - 1 - x;
        break;
    case 8: /* ROTATE_90 */
        *ox = y, *oy = w - 1 - x;
        break;
    default:
        *ox = x, *oy = y;
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4)
        return 0;
    const int w = 1 + data[1], h = 1 + data[2];
    const uint8_t *rest = data + 4;
    const size_t n = size - 4;
    size_t exif_len = 0;
    if ((data[0] & 3) == 3)
        exif_len = n * data[3] / 255;
    else if (data[0] & 1)
        exif_len = n;
    /* Each part in its own exact-size buffer, so ASan sees any read past its end. */
    DqImageMeta meta = {0};
    if (data[0] & 1) {
        meta.exif = g_byte_array_new();
        g_byte_array_append(meta.exif, rest, (guint)exif_len);
    }
    if (data[0] & 2) {
        meta.xmp = g_byte_array_new();
        g_byte_array_append(meta.xmp, rest + exif_len, (guint)(n - exif_len));
    }
    int o = dq_image_meta_orientation(&meta);
    dq_image_meta_clear(&meta);
    /* EXIF gives 2..8 or nothing (1); an XMP digit may be 0..9, 0 reading as 1. */
    if (o < 1 || o > 9)
        __builtin_trap();

    DqImage *img = dq_image_new(w, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img->pixels + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)x, p[1] = (uint8_t)y, p[2] = (uint8_t)(x ^ y);
        }
    DqImage *out = dq_image_orient(img, o);
    gboolean swap = o >= 5 && o <= 8;
    if (out == NULL || out->width != (swap ? h : w) || out->height != (swap ? w : h))
        __builtin_trap();
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int ox, oy;
            transposed(o, w, h, x, y, &ox, &oy);
            const uint8_t *p = out->pixels + ((size_t)oy * out->width + ox) * 3;
            if (p[0] != (uint8_t)x || p[1] != (uint8_t)y || p[2] != (uint8_t)(x ^ y))
                __builtin_trap();
        }
    dq_image_free(out);
    dq_image_free(img);
    return 0;
}
