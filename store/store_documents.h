/* Documents and pages: the rows `docqa ingest` writes (schema/sqlite/0001_documents_pages.sql).
 *
 * A document row is one version of one file. Ingest looks a file up by (path, sha256) first:
 * when the newest version of the path holds these bytes and already has pages for the current
 * render settings, nothing is written. A document and all of its page rows are recorded in one
 * transaction after the pages were rendered and their PNGs renamed into the page store, so a crash
 * leaves either the whole document or nothing (at worst an unreferenced PNG in the page store,
 * reused next time).
 */
#ifndef DQ_STORE_DOCUMENTS_H
#define DQ_STORE_DOCUMENTS_H

#include "store.h"

#include <glib.h>

typedef struct {
    const char *path;   /* absolute */
    const char *sha256; /* hex; NULL when the file could not be read */
    gint64 bytes;
    gint64 mtime;
    const char *kind;       /* "pdf", "tiff", "unknown" */
    int page_count;         /* < 0: unknown (stored as NULL) */
    const char *status;     /* "ok", "partial", "failed" */
    const char *error_code; /* NULL when ok */
    const char *error_message;
} DqDocumentRow;

typedef struct {
    int page_number; /* 1-based */
    int width, height;
    double source_width, source_height; /* PDF points after /Rotate; TIFF pixels */
    const char *image_sha256;           /* NULL when no image was produced */
    const char *status;                 /* "ok", "partial", "failed" */
    const char *error_code;
    const char *error_message;
    /* Already in the database as it is (a page a retry did not render again): not written, but
     * one of the rendering's pages, so not among those past its last page that go. */
    gboolean stored;
} DqPageRow;

typedef struct {
    gint64 id; /* 0: no such version */
    int version;
    char *status;
    char *error_code;
    int pages_with_settings; /* page rows carrying the given render settings */
    int pages_not_ok;        /* of those, 'partial' or 'failed' */
    int pages_any_settings;  /* page rows of the document, whatever their render settings */
    char **failed_codes;     /* distinct error_code of the 'failed' pages with these settings */
} DqDocumentLookup;

/* Finds the newest version of `path` when its bytes hash to `sha256` (NULL, an unreadable file:
 * when the newest version was unreadable too). found->id is 0 when there is none: a path
 * whose bytes went back to an older version's needs a new version. Free with
 * dq_document_lookup_clear(). */
gboolean dq_store_document_find(DqStore *store, const char *path, const char *sha256,
                                const char *render_settings, DqDocumentLookup *found, GError **err);
void dq_document_lookup_clear(DqDocumentLookup *found);

/* A page row that has an image: stored, so rendering the same bytes at the same settings again
 * need not render it. */
typedef struct {
    int page_number;
    int width, height;
    double source_width, source_height;
    char *image_sha256;
    char *status; /* "ok" or "partial" (an image the decoder reported an error on) */
    char *error_code;
    char *error_message; /* as it was recorded (the store's escapes undone) */
} DqStoredPage;
void dq_stored_page_free(DqStoredPage *p);

/* The page rows of document `id` at `render_settings` that have an image, by page number.
 * Returns a GPtrArray of DqStoredPage. */
GPtrArray *dq_store_document_stored_pages(DqStore *store, gint64 id, const char *render_settings,
                                          GError **err);

/* Records a document version and its pages in one transaction. With existing_id > 0 only the
 * pages are added to that document (the same bytes rendered with other settings); with
 * `replace` as well, that document's outcome (status, error, ingested_at; page_count unless
 * unknown now) becomes this rendering's and its pages for these settings are replaced (new
 * render settings, or failed pages retried). A newest
 * version of the same bytes that another process recorded meanwhile is reused, not duplicated.
 * *out_id (may be NULL) receives the document id and *out_version its version (0 when not inserted
 * now). */
gboolean dq_store_document_record(DqStore *store, const DqDocumentRow *doc, gint64 existing_id,
                                  gboolean replace, const char *render_settings,
                                  const DqPageRow *pages, int n_pages, gint64 *out_id,
                                  int *out_version, GError **err);

/* ---- files gone from disk (schema 0009: documents.missing_since) ----
 *
 * A path is gone when `docqa ingest` of a folder above it found no file there; every version of
 * the path is marked (missing_since, the time it was found gone) and documents_current leaves it
 * out. Paths here are as the file system spells them (the store escapes and unescapes them,
 * text.h). */

typedef struct {
    char *path;
    gboolean missing; /* marked gone already */
} DqKnownPath;
void dq_known_path_free(DqKnownPath *k);

/* Every path recorded under `folder` (an absolute folder name; the paths that begin with it and
 * a '/'), once each, in no particular order. Returns a GPtrArray of DqKnownPath. */
GPtrArray *dq_store_document_paths_under(DqStore *store, const char *folder, GError **err);

/* Every path marked gone. Returns a GPtrArray of char*. */
GPtrArray *dq_store_document_paths_gone(DqStore *store, GError **err);

/* In one transaction: marks every version of each path in `gone` as gone now (those marked
 * already keep their time), and clears the mark of each path in `back`. */
gboolean dq_store_document_paths_mark(DqStore *store, const char *const *gone, int n_gone,
                                      const char *const *back, int n_back, GError **err);

/* ---- file stamps (schema 0013: document_stamps) ----
 *
 * What the file looked like (fstat) when the bytes of a document were hashed: when the file's
 * stamp is exactly its newest version's, ingest takes the bytes to be that version's without
 * reading them. */

typedef struct {
    gint64 dev, inode; /* dev_t and ino_t, their bits as signed 64-bit integers */
    gint64 bytes;
    gint64 mtime_ns, ctime_ns; /* since the epoch */
} DqDocumentStamp;

/* The newest version of `path` when it has a stamp: *id (0 when the path has no version, or its
 * newest none), *sha256 (g_free; NULL when unreadable) and *stamp. */
gboolean dq_store_document_stamp_find(DqStore *store, const char *path, gint64 *id, char **sha256,
                                      DqDocumentStamp *stamp, GError **err);

/* Sets (or replaces) document `id`'s stamp. */
gboolean dq_store_document_stamp_set(DqStore *store, gint64 id, const DqDocumentStamp *stamp,
                                     GError **err);

/* ---- the page store's files (docqa prune) ----
 *
 * A page is live while answering a question about it may need its image: its document is the
 * current version of its path and not gone (documents_current), or it has a job not finished
 * ('queued', retries waiting included, or 'running'). */

/* In one snapshot: the image_sha256 of every live page (*live) and of every other page
 * (*retired), each a set of strings (g_hash_table_unref). A file named in neither is named by no
 * page row. */
gboolean dq_store_page_images(DqStore *store, GHashTable **live, GHashTable **retired,
                              GError **err);

/* What became of page `page_id`'s document, for a worker that finds its image missing: *version
 * and *newest (the newest version of its path; 0 and 0 when the page is not there) and
 * *missing_since (g_free; NULL unless its path is marked gone). */
gboolean dq_store_page_document_state(DqStore *store, gint64 page_id, int *version, int *newest,
                                      char **missing_since, GError **err);

#endif
