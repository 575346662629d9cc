/* PDF pages with poppler-glib + cairo, set up as pdftocairo sets up its PNG output. */
#include "ingest_internal.h"

#include "dq_error.h"

#include <cairo.h>
#include <errno.h>
#include <math.h>
#include <poppler.h>
#include <string.h>
#include <unistd.h>

gboolean pdf_doc_open(RenderDoc *doc, GError **err) {
    GError *perr = NULL;
    PopplerDocument *pd = NULL;
    if (doc->fd >= 0) {
        /* poppler owns (and closes) the descriptor it is given; doc->fd stays the caller's. */
        int fd = dup(doc->fd);
        if (fd < 0)
            g_set_error(&perr, G_FILE_ERROR, g_file_error_from_errno(errno), "%s",
                        g_strerror(errno));
        else
            pd = poppler_document_new_from_fd(fd, NULL, &perr);
    } else {
        char *uri = g_filename_to_uri(doc->path, NULL, &perr);
        pd = uri ? poppler_document_new_from_file(uri, NULL, &perr) : NULL;
        g_free(uri);
    }
    if (pd == NULL) {
        DqIngestReason why = DQ_INGEST_DAMAGED;
        if (perr != NULL && perr->domain == POPPLER_ERROR && perr->code == POPPLER_ERROR_ENCRYPTED)
            why = DQ_INGEST_ENCRYPTED;
        else if (perr != NULL && perr->domain == G_FILE_ERROR)
            why = DQ_INGEST_UNREADABLE;
        g_set_error(err, DQ_INGEST_ERROR, why, "%s: %s", doc->path,
                    why == DQ_INGEST_ENCRYPTED ? "PDF needs a user password"
                    : perr                     ? perr->message
                                               : "cannot open PDF");
        g_clear_error(&perr);
        return FALSE;
    }
    doc->pdf = pd;
    doc->page_count = poppler_document_get_n_pages(pd);
    if (doc->page_count <= 0) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: PDF has no pages", doc->path);
        return FALSE;
    }
    return TRUE;
}

DqImage *pdf_render_page(RenderDoc *doc, int page, int longest_edge, gint64 max_pixels,
                         double *source_w, double *source_h, GError **err) {
    PopplerPage *pp = poppler_document_get_page(doc->pdf, page - 1);
    if (pp == NULL) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d cannot be loaded",
                    doc->path, page);
        return NULL;
    }
    /* CropBox size with /Rotate applied: what poppler_page_render draws. */
    double pw = 0, ph = 0;
    poppler_page_get_size(pp, &pw, &ph);
    *source_w = pw;
    *source_h = ph;
    if (!(pw > 0 && ph > 0 && isfinite(pw) && isfinite(ph))) {
        g_object_unref(pp);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d has size %gx%g",
                    doc->path, page, pw, ph);
        return NULL;
    }
    int w = 0, h = 0;
    dq_ingest_target_size(pw, ph, longest_edge, &w, &h);
    if ((gint64)w * h > max_pixels) {
        g_object_unref(pp);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_TOO_MANY_PIXELS,
                    "%s: page %d: %dx%d pixels is over the limit of %" G_GINT64_FORMAT, doc->path,
                    page, w, h, max_pixels);
        return NULL;
    }
    cairo_surface_t *surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, w, h);
    if (cairo_surface_status(surface) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(surface);
        g_object_unref(pp);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot allocate a %dx%d surface", doc->path, page, w, h);
        return NULL;
    }
    cairo_t *cr = cairo_create(surface);
    /* Fixed antialiasing (cairo's default, which is pdftocairo's default) so that a page renders
     * to the same pixels on every machine, whatever the desktop's font settings. */
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_DEFAULT);
    cairo_font_options_t *fo = cairo_font_options_create();
    cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_DEFAULT);
    cairo_set_font_options(cr, fo);
    cairo_font_options_destroy(fo);
    cairo_save(cr);
    /* Scale each axis so the page fills exactly w x h pixels (the two factors differ by less
     * than a pixel over the page: the short side is rounded to the processor's even size).
     * The factors are computed as pdftocairo -scale-to-x W -scale-to-y H computes them, through
     * a resolution in dpi: (72 W / pw) / 72 is not always W / pw to the last bit (396 / 612 is
     * one ulp above it), and cairo rounds each glyph's origin to a whole pixel, so with the other
     * factor a glyph on a half pixel moves by one (and image samples shift by a level). */
    double x_resolution = 72.0 * w / pw, y_resolution = 72.0 * h / ph;
    cairo_scale(cr, x_resolution / 72.0, y_resolution / 72.0);
    poppler_page_render(pp, cr);
    cairo_restore(cr);
    /* Blend onto a white page, as pdftocairo does for opaque output. */
    cairo_save(cr);
    cairo_set_operator(cr, CAIRO_OPERATOR_DEST_OVER);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_restore(cr);
    cairo_status_t cst = cairo_status(cr);
    cairo_destroy(cr);
    g_object_unref(pp);
    if (cst != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(surface);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d: cairo: %s", doc->path,
                    page, cairo_status_to_string(cst));
        return NULL;
    }
    cairo_surface_flush(surface);
    DqImage *img = dq_image_new(w, h);
    if (img == NULL) {
        cairo_surface_destroy(surface);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot allocate %dx%d pixels", doc->path, page, w, h);
        return NULL;
    }
    const uint8_t *data = cairo_image_surface_get_data(surface);
    int stride = cairo_image_surface_get_stride(surface);
    for (int y = 0; y < h; y++) {
        /* ARGB32 is native-endian premultiplied; alpha is 255 everywhere after the white. */
        const uint32_t *row = (const uint32_t *)(const void *)(data + (size_t)y * stride);
        uint8_t *out = img->pixels + (size_t)y * w * 3;
        for (int x = 0; x < w; x++) {
            uint32_t px = row[x];
            out[3 * x + 0] = (px >> 16) & 0xff;
            out[3 * x + 1] = (px >> 8) & 0xff;
            out[3 * x + 2] = px & 0xff;
        }
    }
    cairo_surface_destroy(surface);
    return img;
}

void pdf_doc_close(RenderDoc *doc) {
    if (doc->pdf != NULL)
        g_object_unref(doc->pdf);
    doc->pdf = NULL;
}
