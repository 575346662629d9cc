#include "file_kind.h"

#include <string.h>

/* The formats that turn up misnamed in document archives (a photo saved as .tif, an error page
 * downloaded as .pdf) and given where docqa wants a page image.
 * A small table rather than GLib's g_content_type_guess, whose answers come from the
 * shared-mime-info database, which docqa does not depend on. */
typedef struct {
    size_t offset;
    const char *magic;
    size_t len;
    const char *what;
} Magic;

static const Magic formats[] = {
    /* docqa's documents (a walk tells them apart before it asks, the image decoder does not) */
    {0, "%PDF-", 5, "a PDF document"},
    {0, "II*\0", 4, "a TIFF image"},
    {0, "MM\0*", 4, "a TIFF image"},
    {0, "II+\0", 4, "a BigTIFF image"},
    {0, "MM\0+", 4, "a BigTIFF image"},
    {0, "\xff\xd8\xff", 3, "a JPEG image"},
    {0, "\x89PNG\r\n\x1a\n", 8, "a PNG image"},
    {0, "GIF87a", 6, "a GIF image"},
    {0, "GIF89a", 6, "a GIF image"},
    {8, "WEBP", 4, "a WebP image"}, /* after "RIFF" and a size, checked below */
    {0, "\0\0\0\x0cjP  \r\n\x87\n", 12, "a JPEG 2000 image"},
    {0, "\xff\x4f\xff\x51", 4, "a JPEG 2000 codestream"},
    {0, "AT&TFORM", 8, "a DjVu document"},
    {0, "%!PS", 4, "a PostScript file"},
    {0, "{\\rtf", 5, "an RTF document"},
    {0, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 8, "an old Microsoft Office (OLE2) document"},
    {0, "PK\x03\x04", 4, "a ZIP archive (or an Office or OpenDocument file)"},
    {0, "\x1f\x8b", 2, "a gzip archive"},
    {0, "7z\xbc\xaf\x27\x1c", 6, "a 7-Zip archive"},
    {0, "Rar!\x1a\x07", 6, "a RAR archive"},
};

const char *dq_file_kind_name(const uint8_t *head, size_t len, gboolean *conclusive) {
    *conclusive = TRUE;
    for (size_t i = 0; i < G_N_ELEMENTS(formats); i++) {
        const Magic *m = &formats[i];
        if (len >= m->offset + m->len && memcmp(head + m->offset, m->magic, m->len) == 0 &&
            (m->offset == 0 || memcmp(head, "RIFF", 4) == 0))
            return m->what;
    }
    /* BMP's "BM" is short: the size of the header after it must be one of BMP's. */
    if (len >= 18 && head[0] == 'B' && head[1] == 'M') {
        guint32 dib = head[14] | head[15] << 8 | head[16] << 16 | (guint32)head[17] << 24;
        if (dib == 12 || dib == 40 || dib == 52 || dib == 56 || dib == 64 || dib == 108 ||
            dib == 124)
            return "a BMP image";
    }
    /* Markup, after a UTF-8 byte order mark and white space. */
    size_t i = len >= 3 && memcmp(head, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    while (i < len && g_ascii_isspace(head[i]))
        i++;
    static const char *const html[] = {"<!doctype html", "<html", "<head", "<body", "<title"};
    for (size_t k = 0; k < G_N_ELEMENTS(html); k++) {
        size_t n = strlen(html[k]);
        if (len - i >= n && g_ascii_strncasecmp((const char *)head + i, html[k], n) == 0)
            return "HTML";
    }
    if (len - i >= 5 && memcmp(head + i, "<?xml", 5) == 0)
        return "XML";
    /* Text: a PDF can hide behind text (poppler opens one whose header is further than it looks,
     * after a mail's or a web server's headers), so text alone proves nothing. */
    *conclusive = FALSE;
    if (len == 0)
        return NULL;
    for (size_t k = 0; k < len; k++)
        if (head[k] < 0x20 && head[k] != '\t' && head[k] != '\n' && head[k] != '\r' &&
            head[k] != '\f')
            return NULL;
    const char *end = NULL;
    /* The head may end inside a character. */
    if (!g_utf8_validate((const char *)head, (gssize)len, &end) &&
        (size_t)(end - (const char *)head) + 4 <= len)
        return NULL;
    return "text";
}
