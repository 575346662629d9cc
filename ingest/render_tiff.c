/* TIFF pages with libtiff's RGBA interface: every directory of the main IFD chain is a page. */
#include "ingest_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <tiffio.h>

/* libtiff reports through process-wide handlers; a worker process decodes one file at a time,
 * so the first error since the last reset is the one worth recording. */
static char tiff_first_error[512];
static int tiff_error_count;

static void tiff_on_error(const char *module, const char *fmt, va_list ap) {
    if (tiff_error_count++ == 0) {
        char msg[400];
        vsnprintf(msg, sizeof msg, fmt, ap);
        snprintf(tiff_first_error, sizeof tiff_first_error, "%s%s%s", module ? module : "",
                 module ? ": " : "", msg);
    }
}

static void tiff_on_warning(const char *module, const char *fmt, va_list ap) {
    /* Unknown tags, odd but decodable fields: not worth a line per page. */
}

static void tiff_errors_reset(void) {
    tiff_error_count = 0;
    tiff_first_error[0] = '\0';
}

gboolean tiff_doc_open(RenderDoc *doc, GError **err) {
    TIFFSetErrorHandler(tiff_on_error);
    TIFFSetWarningHandler(tiff_on_warning);
    tiff_errors_reset();
#if TIFFLIB_VERSION >= 20221213 /* libtiff 4.5: open options */
    /* No single allocation inside libtiff above 2 GiB (a 16-bit RGBA strip at the default pixel
     * limit is 1.4 GB): a header claiming 65535 samples per pixel fails here with a message
     * instead of asking the system for hundreds of gigabytes. */
    TIFFOpenOptions *oo = TIFFOpenOptionsAlloc();
    TIFFOpenOptionsSetMaxSingleMemAlloc(oo, (tmsize_t)2 << 30);
    TIFF *tif = TIFFOpenExt(doc->path, "r", oo);
    TIFFOpenOptionsFree(oo);
#else
    TIFF *tif = TIFFOpen(doc->path, "r");
#endif
    if (tif == NULL) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: not a readable TIFF: %s",
                    doc->path, tiff_first_error[0] ? tiff_first_error : "TIFFOpen failed");
        return FALSE;
    }
    doc->tiff = tif;
    /* Count the main chain. TIFFReadDirectory returns 0 both at the normal end and on a broken
     * link; only the second reports an error. libtiff detects IFD loops itself. */
    int n = 1;
    tiff_errors_reset();
    while (TIFFReadDirectory(tif)) {
        n++;
        tiff_errors_reset();
    }
    if (tiff_error_count > 0)
        doc->warning = g_strdup_printf("IFD chain broken after page %d: %s", n, tiff_first_error);
    doc->page_count = n;
    return TRUE;
}

/* Composites libtiff's premultiplied ABGR raster onto white into RGB. */
static DqImage *raster_to_rgb(const uint32_t *raster, int w, int h) {
    DqImage *img = dq_image_new(w, h);
    if (img == NULL)
        return NULL;
    size_t n = (size_t)w * h;
    for (size_t i = 0; i < n; i++) {
        uint32_t px = raster[i];
        unsigned a = TIFFGetA(px);
        unsigned r = TIFFGetR(px) + 255 - a, g = TIFFGetG(px) + 255 - a, b = TIFFGetB(px) + 255 - a;
        img->pixels[3 * i + 0] = r > 255 ? 255 : r;
        img->pixels[3 * i + 1] = g > 255 ? 255 : g;
        img->pixels[3 * i + 2] = b > 255 ? 255 : b;
    }
    return img;
}

/* Decodes the current directory into a white-filled raster with rows top to bottom exactly as
 * stored (orientation is applied afterwards, all eight values, in one place). Returns 0 when
 * decoded, 1 when libtiff refuses the layout (TIFFRGBAImageBegin), 2 when decoding failed. */
static int decode_rgba(TIFF *tif, uint32_t *raster, int w, int h, int stop_on_error,
                       char emsg[1024]) {
    TIFFRGBAImage img;
    memset(&img, 0, sizeof img);
    if (!TIFFRGBAImageBegin(&img, tif, stop_on_error, emsg))
        return 1;
    /* libtiff would flip for Orientation 2-4 but cannot transpose 5-8: ask for the stored
     * layout and do all eight in image_apply_orientation. */
    img.req_orientation = ORIENTATION_TOPLEFT;
    img.orientation = ORIENTATION_TOPLEFT;
    int ok = TIFFRGBAImageGet(&img, raster, (uint32_t)w, (uint32_t)h);
    TIFFRGBAImageEnd(&img);
    if (!ok && emsg[0] == '\0')
        snprintf(emsg, 1024, "%s", tiff_first_error[0] ? tiff_first_error : "decoding failed");
    return ok ? 0 : 2;
}

DqImage *tiff_render_page(RenderDoc *doc, int page, int longest_edge, gint64 max_pixels,
                          double *source_w, double *source_h, gboolean *incomplete,
                          char **incomplete_msg, GError **err) {
    TIFF *tif = doc->tiff;
    tiff_errors_reset();
    if (!TIFFSetDirectory(tif, (tdir_t)(page - 1))) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d: cannot read IFD: %s",
                    doc->path, page, tiff_first_error[0] ? tiff_first_error : "?");
        return NULL;
    }
    uint32_t w32 = 0, h32 = 0;
    uint16_t compression = COMPRESSION_NONE, orientation = ORIENTATION_TOPLEFT;
    TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w32);
    TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h32);
    TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &compression);
    TIFFGetFieldDefaulted(tif, TIFFTAG_ORIENTATION, &orientation);
    if (orientation < 1 || orientation > 8)
        orientation = ORIENTATION_TOPLEFT;
    gboolean swap = orientation >= 5;
    *source_w = swap ? h32 : w32;
    *source_h = swap ? w32 : h32;
    if (w32 == 0 || h32 == 0 || w32 > G_MAXINT || h32 > G_MAXINT) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d: size %ux%u", doc->path,
                    page, w32, h32);
        return NULL;
    }
    if (!TIFFIsCODECConfigured(compression)) {
        const TIFFCodec *c = TIFFFindCODEC(compression);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_UNSUPPORTED_CODEC,
                    "%s: page %d: compression %u (%s) is not built into libtiff", doc->path, page,
                    compression, c && c->name ? c->name : "unknown");
        return NULL;
    }
    /* Before allocating anything: a header can claim any size. */
    if ((gint64)w32 * h32 > max_pixels) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_TOO_MANY_PIXELS,
                    "%s: page %d: %ux%u pixels is over the limit of %" G_GINT64_FORMAT, doc->path,
                    page, w32, h32, max_pixels);
        return NULL;
    }
    char emsg[1024] = "";
    if (!TIFFRGBAImageOK(tif, emsg)) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_UNSUPPORTED_FORMAT,
                    "%s: page %d: pixel format not supported: %s", doc->path, page, emsg);
        return NULL;
    }
    int w = (int)w32, h = (int)h32;
    size_t n = (size_t)w * h;
    uint32_t *raster = g_try_malloc(n * sizeof *raster);
    if (raster == NULL) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot allocate %dx%d pixels", doc->path, page, w, h);
        return NULL;
    }
    memset(raster, 0xff, n * sizeof *raster);
    int rc = decode_rgba(tif, raster, w, h, 1, emsg);
    if (rc == 1) {
        g_free(raster);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_UNSUPPORTED_FORMAT,
                    "%s: page %d: pixel format not supported: %s", doc->path, page, emsg);
        return NULL;
    }
    if (rc != 0) {
        /* Keep what decodes (a truncated strip, a damaged fax line) and report the error. */
        char first[1024];
        snprintf(first, sizeof first, "%s", emsg);
        memset(raster, 0xff, n * sizeof *raster);
        emsg[0] = '\0';
        tiff_errors_reset();
        if (!TIFFSetDirectory(tif, (tdir_t)(page - 1)) ||
            decode_rgba(tif, raster, w, h, 0, emsg) != 0) {
            g_free(raster);
            g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d: %s", doc->path, page,
                        first);
            return NULL;
        }
        *incomplete = TRUE;
        *incomplete_msg = g_strdup_printf("%s: page %d: incomplete: %s", doc->path, page, first);
    }
    DqImage *rgb = raster_to_rgb(raster, w, h);
    g_free(raster);
    if (rgb != NULL && orientation != ORIENTATION_TOPLEFT) {
        DqImage *o = image_apply_orientation(rgb, orientation);
        dq_image_free(rgb);
        rgb = o;
    }
    if (rgb == NULL) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot allocate %dx%d pixels", doc->path, page, w, h);
        return NULL;
    }
    int tw = 0, th = 0;
    dq_ingest_target_size(rgb->width, rgb->height, longest_edge, &tw, &th);
    if (tw == rgb->width && th == rgb->height)
        return rgb;
    DqImage *out = dq_image_resize_lanczos(rgb, tw, th);
    dq_image_free(rgb);
    if (out == NULL)
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot resize to %dx%d", doc->path, page, tw, th);
    return out;
}

void tiff_doc_close(RenderDoc *doc) {
    if (doc->tiff != NULL)
        TIFFClose(doc->tiff);
    doc->tiff = NULL;
}
