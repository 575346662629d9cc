/* libFuzzer target: dq_image_decode on arbitrary bytes (PNG and JPEG decoders, EXIF / XMP
 * orientation parsing and transposition), then a LANCZOS resize of what decodes, so broken
 * headers, truncated streams and odd sizes go through the whole image path.
 * Must never crash, leak or abort: bad input is a GError. Seeds: tests/fuzz/seeds/image_decode/
 * (small PNG and JPEG files in every colour type, with EXIF orientations). */
#include "image.h"

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE */

#include <jpeglib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A JPEG decodes to the size its header claims even when its data stops at once: libjpeg pads
 * a scan cut short by an EOI marker with zeros, as it does for Pillow. A 1 kB input claiming
 * 30000x3000 CMYK pixels (under the decode limit, as it is for Pillow) took over 10 s under ASan
 * and held the run there. Such inputs are skipped: the size checks themselves are reached from
 * PNG and from JPEGs over the limit. */
#define FUZZ_JPEG_MAX_PIXELS (1LL << 22)

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
} HeaderErr;

static void header_error_exit(j_common_ptr cinfo) {
    longjmp(((HeaderErr *)cinfo->err)->jump, 1);
}

static void header_quiet(j_common_ptr cinfo, int level) {}

/* Whether the input is a JPEG whose header claims more than FUZZ_JPEG_MAX_PIXELS (and less than
 * the decoder's own limit, which refuses it before decoding). */
static int jpeg_too_slow(const uint8_t *data, size_t size) {
    if (size < 3 || data[0] != 0xFF || data[1] != 0xD8 || data[2] != 0xFF)
        return 0;
    struct jpeg_decompress_struct cinfo;
    HeaderErr e;
    cinfo.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = header_error_exit;
    e.pub.emit_message = header_quiet;
    volatile long long pixels = 0;
    if (setjmp(e.jump) == 0) {
        jpeg_create_decompress(&cinfo);
        jpeg_mem_src(&cinfo, data, (unsigned long)size);
        if (jpeg_read_header(&cinfo, TRUE) == JPEG_HEADER_OK)
            pixels = (long long)cinfo.image_width * cinfo.image_height;
    }
    jpeg_destroy_decompress(&cinfo);
    return pixels > FUZZ_JPEG_MAX_PIXELS && pixels <= 178956970LL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (jpeg_too_slow(data, size))
        return 0;
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
