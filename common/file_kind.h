/* What a file is, by its first bytes: for messages that name what was given instead of what
 * was wanted (ingest's walk, the image decoder). */
#ifndef DQ_FILE_KIND_H
#define DQ_FILE_KIND_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

/* What the first len bytes of a file show it is ("a TIFF image", "a WebP image", "HTML",
 * "text"), or NULL. *conclusive is FALSE for "text", behind which poppler may still find a PDF
 * whose header comes later than it looks. A PDF is recognised here only by "%PDF-" at its
 * start (ingest looks further). */
const char *dq_file_kind_name(const uint8_t *head, size_t len, gboolean *conclusive);

#endif
