/* libFuzzer target: ingest's TIFF path on arbitrary bytes: open, count the IFD chain, decode
 * every page through libtiff's RGBA interface, composite alpha, apply the Orientation tag and
 * resize to a small target. Must never crash, leak or abort (a worker process would survive it,
 * but a crash is still a bug): bad input is a GError with a reason code. Small pixel limit so
 * each run stays fast. Seeds: tests/fuzz/seeds/tiff_page/ (small TIFFs from the corpus). */
#include "ingest_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* libtiff reads files: one temporary file per process, rewritten for each input. */
    static char path[64];
    if (path[0] == '\0')
        snprintf(path, sizeof path, "/tmp/docqa-fuzz-tiff-%d.tif", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    GError *err = NULL;
    RenderDoc *doc = render_doc_open(path, -1, DOC_KIND_TIFF, &err);
    unlink(path); /* libtiff keeps its descriptor; nothing is left behind in /tmp */
    if (doc == NULL) {
        if (err == NULL || err->domain != DQ_INGEST_ERROR)
            __builtin_trap();
        g_error_free(err);
        return 0;
    }
    int n = render_doc_page_count(doc);
    for (int p = 1; p <= n && p <= 4; p++) {
        double sw = 0, sh = 0;
        gboolean incomplete = FALSE;
        char *msg = NULL;
        /* 2^18 pixels: at 2^20 a 1.2 kB file (16x65520 RGBA) cost seconds a page under ASan and
         * coverage tracing, and such inputs held the run at 25 inputs a second. */
        DqImage *img = render_doc_page(doc, p, 64, 1 << 18, &sw, &sh, &incomplete, &msg, &err);
        if (img == NULL) {
            if (err == NULL || err->domain != DQ_INGEST_ERROR)
                __builtin_trap();
            g_clear_error(&err);
        } else if (MAX(img->width, img->height) != 64) {
            __builtin_trap();
        }
        dq_image_free(img);
        g_free(msg);
    }
    render_doc_close(doc);
    return 0;
}
