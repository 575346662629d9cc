/* libFuzzer target: ingest's PDF path on arbitrary bytes: open through poppler, count pages,
 * take each page's size (CropBox, /Rotate, /UserUnit as poppler gives it), fit it to a small
 * longest edge and render it. poppler's own parser is not ours and is not instrumented; what is
 * fuzzed is docqa's code around it: page sizes of every magnitude (zero, negative, huge, NaN),
 * the pixel limit, the conversion from cairo's surface, and that every failure is an ingest
 * error. Seeds: tests/fuzz/seeds/pdf_page/ (tests/fuzz/make_pdf_seeds.py). */
#include "ingest_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* As tests/lsan.supp: fontconfig's process-wide cache, which poppler fills when it draws text. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libfontconfig.so\n";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* poppler reads files: one temporary file per process, rewritten for each input. */
    static char path[64];
    if (path[0] == '\0')
        snprintf(path, sizeof path, "/tmp/docqa-fuzz-pdf-%d.pdf", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    GError *err = NULL;
    RenderDoc *doc = render_doc_open(path, -1, DOC_KIND_PDF, &err);
    if (doc == NULL) {
        unlink(path);
        if (err == NULL || err->domain != DQ_INGEST_ERROR)
            __builtin_trap();
        g_error_free(err);
        return 0;
    }
    int n = render_doc_page_count(doc);
    for (int p = 1; p <= n && p <= 3; p++) {
        double sw = 0, sh = 0;
        gboolean incomplete = FALSE;
        char *msg = NULL;
        DqImage *img = render_doc_page(doc, p, 48, 1 << 14, &sw, &sh, &incomplete, &msg, &err);
        if (img == NULL) {
            if (err == NULL || err->domain != DQ_INGEST_ERROR)
                __builtin_trap();
            g_clear_error(&err);
        } else if (MAX(img->width, img->height) != 48 || MIN(img->width, img->height) < 1) {
            __builtin_trap();
        }
        dq_image_free(img);
        g_free(msg);
    }
    render_doc_close(doc);
    unlink(path);
    return 0;
}
