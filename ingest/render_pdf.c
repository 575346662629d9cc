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

/* One PDF page being rendered: the page, its size in points and the image's in pixels. */
typedef struct {
    PopplerPage *pp;
    double pw, ph; /* CropBox size with /Rotate applied: what poppler_page_render draws */
    int w, h;      /* the page image */
} PdfPage;

/* The page's size and the image's, refused when the page has no usable size or the image would
 * be over max_pixels. */
static gboolean pdf_page_size(RenderDoc *doc, int page, int longest_edge, gint64 max_pixels,
                              PdfPage *p, GError **err) {
    poppler_page_get_size(p->pp, &p->pw, &p->ph);
    if (!(p->pw > 0 && p->ph > 0 && isfinite(p->pw) && isfinite(p->ph))) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d has size %gx%g",
                    doc->path, page, p->pw, p->ph);
        return FALSE;
    }
    dq_ingest_target_size(p->pw, p->ph, longest_edge, &p->w, &p->h);
    if ((gint64)p->w * p->h > max_pixels) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_TOO_MANY_PIXELS,
                    "%s: page %d: %dx%d pixels is over the limit of %" G_GINT64_FORMAT, doc->path,
                    page, p->w, p->h, max_pixels);
        return FALSE;
    }
    return TRUE;
}

/* Draws the page onto surface (w x h) as pdftocairo draws its PNG output; cairo's status. */
static cairo_status_t pdf_draw_page(const PdfPage *p, cairo_surface_t *surface) {
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
    double x_resolution = 72.0 * p->w / p->pw, y_resolution = 72.0 * p->h / p->ph;
    cairo_scale(cr, x_resolution / 72.0, y_resolution / 72.0);
    poppler_page_render(p->pp, cr);
    cairo_restore(cr);
    /* Blend onto a white page, as pdftocairo does for opaque output. */
    cairo_save(cr);
    cairo_set_operator(cr, CAIRO_OPERATOR_DEST_OVER);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_restore(cr);
    cairo_status_t cst = cairo_status(cr);
    cairo_destroy(cr);
    return cst;
}

/* The drawn (and flushed) surface's pixels as RGB, into img (the surface's size). */
static void pdf_copy_pixels(cairo_surface_t *surface, DqImage *img) {
    const uint8_t *data = cairo_image_surface_get_data(surface);
    int stride = cairo_image_surface_get_stride(surface);
    for (int y = 0; y < img->height; y++) {
        /* ARGB32 is native-endian premultiplied; alpha is 255 everywhere after the white. */
        const uint32_t *row = (const uint32_t *)(const void *)(data + (size_t)y * stride);
        uint8_t *out = img->pixels + (size_t)y * img->width * 3;
        for (int x = 0; x < img->width; x++) {
            uint32_t px = row[x];
            out[3 * x + 0] = (px >> 16) & 0xff;
            out[3 * x + 1] = (px >> 8) & 0xff;
            out[3 * x + 2] = px & 0xff;
        }
    }
}

DqImage *pdf_render_page(RenderDoc *doc, int page, int longest_edge, gint64 max_pixels,
                         double *source_w, double *source_h, GError **err) {
    PdfPage p = {.pp = poppler_document_get_page(doc->pdf, page - 1)};
    if (p.pp == NULL) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d cannot be loaded",
                    doc->path, page);
        return NULL;
    }
    cairo_surface_t *surface = NULL;
    DqImage *img = NULL;
    gboolean sized = pdf_page_size(doc, page, longest_edge, max_pixels, &p, err);
    /* told even when the page is refused: the failed page's row keeps its size (worker.c) */
    *source_w = p.pw;
    *source_h = p.ph;
    if (!sized)
        goto out;
    surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, p.w, p.h);
    if (cairo_surface_status(surface) != CAIRO_STATUS_SUCCESS) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot allocate a %dx%d surface", doc->path, page, p.w, p.h);
        goto out;
    }
    cairo_status_t cst = pdf_draw_page(&p, surface);
    /* the page's memory given back before the image's is taken */
    g_clear_object(&p.pp);
    if (cst != CAIRO_STATUS_SUCCESS) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_DAMAGED, "%s: page %d: cairo: %s", doc->path,
                    page, cairo_status_to_string(cst));
        goto out;
    }
    cairo_surface_flush(surface);
    img = dq_image_new(p.w, p.h);
    if (img == NULL) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUT_OF_MEMORY,
                    "%s: page %d: cannot allocate %dx%d pixels", doc->path, page, p.w, p.h);
        goto out;
    }
    pdf_copy_pixels(surface, img);
out:
    if (surface != NULL)
        cairo_surface_destroy(surface);
    g_clear_object(&p.pp);
    return img;
}

void pdf_doc_close(RenderDoc *doc) {
    if (doc->pdf != NULL)
        g_object_unref(doc->pdf);
    doc->pdf = NULL;
}
