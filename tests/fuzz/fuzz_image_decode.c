/* libFuzzer target: dq_image_decode on arbitrary bytes (PNG and JPEG decoders, EXIF / XMP
 * orientation parsing and transposition), then a LANCZOS resize of what decodes, so broken
 * headers, truncated streams and odd sizes go through the whole image path.
 * Must never crash, leak or abort: bad input is a GError. Seeds: tests/fuzz/seeds/image_decode/
 * (small PNG and JPEG files in every colour type, with EXIF orientations). */
#include "image.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    GError *err = NULL;
    DqImage *img = dq_image_decode(data, size, "fuzz-input", DQ_EXIF_APPLY, &err);
    if (img == NULL) {
        /* Every failure must explain itself, naming the input. */
        if (err == NULL || err->message == NULL ||
            g_strstr_len(err->message, -1, "fuzz-input") == NULL)
            __builtin_trap();
        g_error_free(err);
        return 0;
    }
    if (err != NULL)
        __builtin_trap();
    /* Keep each run fast: resize only small results, to a size derived from the input. */
    if ((size_t)img->width * (size_t)img->height <= 1u << 16) {
        int w = 1 + (int)(size % 97), h = 1 + (int)((size / 97) % 89);
        DqImage *small = dq_image_resize_lanczos(img, w, h);
        if (small == NULL || small->width != w || small->height != h)
            __builtin_trap();
        dq_image_free(small);
    }
    dq_image_free(img);
    return 0;
}
