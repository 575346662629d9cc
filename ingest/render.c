/* Document-kind dispatch, the render size rule and orientation: shared by the PDF and TIFF
 * decoders. */
#include "ingest_internal.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

void dq_ingest_target_size(double width, double height, int longest_edge, int *out_width,
                           int *out_height) {
    /* The processor sees integer pixel sizes; feed it the source aspect with sub-point
     * precision (x 64), then iterate towards a fixed point so that resizing the result to the
     * same longest edge changes nothing. Up to 4096 an even short side always is one. Above it
     * (n_res x tile > 4096: --n-res 9 and up at 512 px tiles) the processor's cap to 4096 takes
     * about a pixel off the short side a round, and a fixed point can be up to ~33 rounds away:
     * after 4 the size is kept, and the processor resizes such a page by a pixel when it is
     * asked about (simulated: 20-43% of random page sizes at n_res 15-21 and 512 or 384 px
     * tiles; none at 9 or below).
     * Going on would bend the page's aspect by up to ~1% instead. */
    double k = 64.0;
    double lim = (double)G_MAXINT / 2;
    int w = (int)fmin(lim, fmax(1.0, round(width * k)));
    int h = (int)fmin(lim, fmax(1.0, round(height * k)));
    for (int i = 0; i < 4; i++) {
        int nw = 0, nh = 0;
        dq_image_fit_longest_edge(w, h, longest_edge, &nw, &nh);
        if (i > 0 && nw == w && nh == h)
            break;
        w = nw;
        h = nh;
    }
    *out_width = w;
    *out_height = h;
}

RenderDoc *render_doc_open(const char *path, int fd, DocKind kind, GError **err) {
    RenderDoc *doc = g_new0(RenderDoc, 1);
    doc->kind = kind;
    doc->path = g_strdup(path);
    doc->fd = fd;
    gboolean ok = kind == DOC_KIND_PDF    ? pdf_doc_open(doc, err)
                  : kind == DOC_KIND_TIFF ? tiff_doc_open(doc, err)
                                          : FALSE;
    if (kind != DOC_KIND_PDF && kind != DOC_KIND_TIFF)
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_NOT_A_DOCUMENT, "%s: neither PDF nor TIFF",
                    path);
    if (!ok) {
        render_doc_close(doc);
        return NULL;
    }
    return doc;
}

int render_doc_page_count(RenderDoc *doc) {
    return doc->page_count;
}

const char *render_doc_warning(RenderDoc *doc) {
    return doc->warning;
}

const char *render_doc_note(RenderDoc *doc) {
    return doc->note;
}

DqImage *render_doc_page(RenderDoc *doc, int page, int longest_edge, gint64 max_pixels,
                         double *source_w, double *source_h, gboolean *incomplete,
                         char **incomplete_msg, GError **err) {
    *incomplete = FALSE;
    *incomplete_msg = NULL;
    *source_w = *source_h = 0;
    if (doc->kind == DOC_KIND_PDF)
        return pdf_render_page(doc, page, longest_edge, max_pixels, source_w, source_h, err);
    return tiff_render_page(doc, page, longest_edge, max_pixels, source_w, source_h, incomplete,
                            incomplete_msg, err);
}

void render_doc_close(RenderDoc *doc) {
    if (doc == NULL)
        return;
    if (doc->kind == DOC_KIND_PDF)
        pdf_doc_close(doc);
    else if (doc->kind == DOC_KIND_TIFF)
        tiff_doc_close(doc);
    if (doc->fd >= 0)
        close(doc->fd);
    g_free(doc->warning);
    g_free(doc->note);
    g_free(doc->path);
    g_free(doc);
}
