/* JPEG through libjpeg-turbo, configured as Pillow's JpegDecode.c leaves it: the library's
 * defaults (ISLOW integer IDCT, fancy upsampling, colour space guessed from JFIF/Adobe markers),
 * so the RGB output equals Pillow's byte for byte.
 *
 * 4-component files are decoded to CMYK and handled as Pillow does: it assumes Adobe's inverted
 * convention for every CMYK JPEG (rawmode "CMYK;I"), then convert("RGB") applies
 * nk = 255 - K, out = clip(nk - nk * C / 255) with its rounded MULDIV255.
 */
#include "dq_error.h"
#include "image_private.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#ifndef LIBJPEG_TURBO_VERSION /* another libjpeg */
#define LIBJPEG_TURBO_VERSION unknown version
#endif

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    gboolean reading; /* image data still being read: a premature end is an error */
} JpegErr;

/* libjpeg's default error_exit calls exit(); ours returns to the decoder instead. */
static void jpeg_error_exit_cb(j_common_ptr cinfo) {
    JpegErr *e = (JpegErr *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_emit_message_cb(j_common_ptr cinfo, int level) {
    JpegErr *e = (JpegErr *)cinfo->err;
    /* Pillow ignores libjpeg's warnings (corrupt data is decoded as well as it can be), but
     * its suspending reader reports a file that ends early as truncated. jpeg_mem_src instead
     * inserts a fake EOI and warns JWRN_JPEG_EOF: turn that into the same error. */
    if (level < 0 && e->pub.msg_code == JWRN_JPEG_EOF && e->reading) {
        g_strlcpy(e->msg, "file is truncated", sizeof e->msg);
        longjmp(e->jump, 1);
    }
}

static void jpeg_output_message_cb(j_common_ptr cinfo) {}

gboolean dq_image_is_jpeg(const uint8_t *data, size_t len) {
    return len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

typedef struct {
    struct jpeg_decompress_struct cinfo;
    JpegErr err;
    DqImage *img;
    uint8_t *row;
} JpegReader;

static void jpeg_collect_meta(struct jpeg_decompress_struct *cinfo, DqImageMeta *meta) {
    static const char xmp_id[] = "http://ns.adobe.com/xap/1.0/"; /* then a NUL */
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m != NULL; m = m->next) {
        if (m->marker != JPEG_APP0 + 1)
            continue;
        if (m->data_length >= 6 && memcmp(m->data, "Exif\0\0", 6) == 0) {
            /* Pillow keeps the first segment whole and appends later ones without their
             * header (extended EXIF). */
            if (meta->exif == NULL) {
                meta->exif = g_byte_array_new();
                g_byte_array_append(meta->exif, m->data, m->data_length);
            } else {
                g_byte_array_append(meta->exif, m->data + 6, m->data_length - 6);
            }
        } else if (m->data_length >= sizeof xmp_id && memcmp(m->data, xmp_id, sizeof xmp_id) == 0) {
            /* info["xmp"]: the last XMP segment wins. */
            if (meta->xmp != NULL)
                g_byte_array_unref(meta->xmp);
            meta->xmp = g_byte_array_new();
            g_byte_array_append(meta->xmp, m->data + sizeof xmp_id, m->data_length - sizeof xmp_id);
        }
    }
}

static inline uint8_t muldiv255(int a, int b) {
    int tmp = a * b + 128;
    return (uint8_t)(((tmp >> 8) + tmp) >> 8);
}

static void cmyk_row_to_rgb(const uint8_t *in, uint8_t *out, int width) {
    for (int x = 0; x < width; x++) {
        /* "CMYK;I" unpacking inverts every sample; then Pillow's cmyk2rgb. */
        int c = 255 - in[4 * x], m = 255 - in[4 * x + 1], y = 255 - in[4 * x + 2];
        int nk = in[4 * x + 3]; /* 255 - (255 - K) */
        int r = nk - muldiv255(c, nk), g = nk - muldiv255(m, nk), b = nk - muldiv255(y, nk);
        out[3 * x] = (uint8_t)CLAMP(r, 0, 255);
        out[3 * x + 1] = (uint8_t)CLAMP(g, 0, 255);
        out[3 * x + 2] = (uint8_t)CLAMP(b, 0, 255);
    }
}

/* State changed after setjmp lives in *r, so a longjmp leaves nothing indeterminate. */
static DqImage *jpeg_decode_with(JpegReader *r, const uint8_t *data, size_t len, const char *name,
                                 DqImageMeta *meta, GError **err) {
    struct jpeg_decompress_struct *cinfo = &r->cinfo;
    cinfo->err = jpeg_std_error(&r->err.pub);
    r->err.pub.error_exit = jpeg_error_exit_cb;
    r->err.pub.emit_message = jpeg_emit_message_cb;
    r->err.pub.output_message = jpeg_output_message_cb;
    if (setjmp(r->err.jump)) {
        int sof = r->err.pub.msg_parm.i[0];
        if (r->err.pub.msg_code == JERR_SOF_UNSUPPORTED)
            /* Not damage: a coding process this libjpeg-turbo lacks. Lossless JPEG came with
             * libjpeg-turbo 3.0, which Pillow 12 wheels bundle; hierarchical JPEG no one reads. */
            dq_fail(err, DQ_ERR_UNSUPPORTED,
                    "%s: a %s JPEG (SOF 0x%02x), which the libjpeg-turbo docqa is built with (%s) "
                    "does not decode%s; convert it to PNG",
                    name, sof == 0xc3 || sof == 0xcb ? "lossless" : "hierarchical", sof,
                    G_STRINGIFY(LIBJPEG_TURBO_VERSION),
                    sof == 0xc3 || sof == 0xcb ? " (libjpeg-turbo 3 does)" : "");
        else
            dq_fail(err, DQ_ERR_FORMAT, "%s: bad JPEG: %s", name, r->err.msg);
        jpeg_destroy_decompress(cinfo);
        return NULL;
    }
    jpeg_create_decompress(cinfo);
    jpeg_mem_src(cinfo, data, (unsigned long)len);
    jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
    r->err.reading = TRUE;
    jpeg_read_header(cinfo, TRUE);

    long long pixels = (long long)cinfo->image_width * (long long)cinfo->image_height;
    if (pixels > DQ_IMAGE_MAX_PIXELS) {
        dq_fail(err, DQ_ERR_LIMIT, "%s: JPEG of %ux%u pixels exceeds the limit of %lld pixels",
                name, cinfo->image_width, cinfo->image_height, DQ_IMAGE_MAX_PIXELS);
        jpeg_destroy_decompress(cinfo);
        return NULL;
    }
    /* Pillow maps 1/3/4 components to L/RGB/CMYK and refuses anything else. */
    int comps = cinfo->num_components;
    if (comps == 1)
        cinfo->out_color_space = JCS_GRAYSCALE;
    else if (comps == 3)
        cinfo->out_color_space = JCS_RGB;
    else if (comps == 4)
        cinfo->out_color_space = JCS_CMYK;
    else {
        dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: JPEG with %d colour components is not supported",
                name, comps);
        jpeg_destroy_decompress(cinfo);
        return NULL;
    }
    jpeg_start_decompress(cinfo);
    int w = (int)cinfo->output_width, h = (int)cinfo->output_height;
    r->img = dq_image_new(w, h);
    r->row = g_try_malloc((size_t)w * (size_t)cinfo->output_components);
    if (r->img == NULL || r->row == NULL) {
        dq_fail(err, DQ_ERR_LIMIT, "%s: out of memory for a %dx%d image", name, w, h);
        jpeg_destroy_decompress(cinfo);
        return NULL;
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        uint8_t *out = r->img->pixels + (size_t)cinfo->output_scanline * (size_t)w * 3;
        JSAMPROW rows[1] = {comps == 3 ? out : r->row};
        if (jpeg_read_scanlines(cinfo, rows, 1) != 1)
            break;
        if (comps == 1) {
            for (int x = 0; x < w; x++)
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = r->row[x];
        } else if (comps == 4) {
            cmyk_row_to_rgb(r->row, out, w);
        }
    }
    /* Like Pillow, stop once every row is decoded: bytes after the image data are not read. */
    r->err.reading = FALSE;
    jpeg_collect_meta(cinfo, meta);
    jpeg_destroy_decompress(cinfo);
    DqImage *img = r->img;
    r->img = NULL;
    return img;
}

DqImage *dq_jpeg_decode(const uint8_t *data, size_t len, const char *name, DqImageMeta *meta,
                        GError **err) {
    JpegReader *r = g_new0(JpegReader, 1);
    DqImage *img = jpeg_decode_with(r, data, len, name, meta, err);
    dq_image_free(r->img);
    g_free(r->row);
    g_free(r);
    return img;
}
