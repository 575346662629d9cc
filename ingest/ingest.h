/* Ingest: PDFs and TIFFs -> the page images the model will see, registered in the database.
 *
 *   DqIngestOptions opt;
 *   dq_ingest_options_init(&opt);              // N = 5, tile 512, all cores
 *   DqIngestSummary sum;
 *   dq_ingest_run(store, paths, &opt, &sum, &err);   // FALSE only when it could not run
 *   ... sum.documents_failed, sum.failures ...
 *   dq_ingest_summary_clear(&sum);
 *
 * Render size. Every page image has longest edge N x tile (N = n_res, 5 by default; tile is
 * max_image_size.longest_edge of the model's preprocessor_config.json, 512 when not given) and
 * the other side given by dq_image_fit_longest_edge, the rule transformers' Idefics3 image
 * processor uses when it resizes to that longest edge. So for a model run at the same N the
 * processor's first resize is a no-op and no page is resampled twice.
 *   PDF:  poppler-glib renders straight at that size, the way pdftocairo does: an ARGB32 cairo
 *         surface of exactly the target size, scaled by (72 x target / page size in points) / 72
 *         as pdftocairo computes it (CropBox, /Rotate applied by poppler), antialiasing fixed to
 *         cairo's default, then white painted behind (DEST_OVER). CalRGB, CalGray and Lab
 *         colours differ from pdftocairo's (README, "Ingesting documents").
 *   TIFF: libtiff's RGBA interface decodes each directory at its own size (all codecs and
 *         layouts libtiff was built with), alpha is composited onto white (a document viewer
 *         shows transparency as paper, and that is what the PDF path does too) as transformers'
 *         convert_to_rgb does, with ExtraSamples read as Pillow reads them (render_tiff.c), the
 * Orientation tag (1-8) is applied as Pillow's exif_transpose does, then dq_image_resize_lanczos
 * (Pillow's LANCZOS, the model's own resampler) brings it to the target size.
 *
 * Page store. Page images are PNG files in a content-addressed folder beside the database
 * (<db>.pages/ab/cd/<sha256 of the PNG>.png), written to a temporary name, fsynced and renamed
 * before the row naming them commits. Why files rather than blobs: identical pages are stored
 * once, the database stays small and fast to copy/back up, worker processes read pages in
 * parallel without going through SQLite, and the same folder can be shared when the database is
 * PostgreSQL.
 *
 * Isolation. Each document is opened in a worker process (fork) with an address-space limit
 * (RLIMIT_AS: mem_limit_mb above what the process has mapped when it starts) and a per-page time
 * limit; a crash or hang inside poppler or libtiff costs one
 * page (recorded as render_crashed / render_timeout), never the ingest. One process renders one
 * page at a time, so poppler never renders two pages of one document object at once; documents
 * run in parallel on all cores, and when no new document is waiting, extra processes open a long
 * document again and take its remaining pages from a shared counter.
 *
 * Idempotence. A file is identified by (absolute path, sha256 of its bytes): the bytes of the
 * newest version at the same path add nothing (when pages for the current render settings
 * exist); other bytes, an older version's too, add a new document version and keep the old.
 * Hashing reads the whole archive, so a document's stamp (the file's device, inode, size, mtime
 * and ctime in ns, as fstat gave them when it was hashed) is stored with it: a file whose stamp
 * is exactly its newest version's is taken to hold that version's bytes without being read
 * (unless opt->rehash). Any write sets the ctime to the current time and nobody can set it back,
 * so only a file system that lies (or a clock set back) hides a change; a stamp whose ctime is
 * within STAMP_RACY_MS of the clock when it is stored is not stored, as a write in the same
 * timestamp tick would leave it the same.
 * A document of unchanged bytes rendered again (--retry-failed, a page file gone, a rendering
 * interrupted or short of disk) renders only the pages not stored at these settings (no image,
 * or its file missing or, with --verify, not its bytes); the others keep their rows, and count
 * toward --max-doc-bytes as they did, so the outcome is the one a whole rendering gives.
 *
 * Concurrency. Two ingests at once (overlapping cron runs) split the work: a document is
 * rendered under its claim (ingest_internal.h: an flock() in <page store>/.claims, which dies
 * with its process), and one that another live ingest renders is put off to the end of this
 * run, then looked up again once free (recorded by the other: unchanged), or, still claimed
 * when nothing else is left, left to the other (DqIngestSummary.elsewhere).
 */
#ifndef DQ_INGEST_H
#define DQ_INGEST_H

#include "store.h"

#include <glib.h>

/* Why a document or a page failed; stored as the name (documents.error_code, pages.error_code). */
typedef enum {
    DQ_INGEST_EMPTY = 1,          /* zero-byte file */
    DQ_INGEST_NOT_A_DOCUMENT,     /* named explicitly, or .pdf/.tif, but neither */
    DQ_INGEST_UNREADABLE,         /* cannot be opened or read (permissions, vanished) */
    DQ_INGEST_ENCRYPTED,          /* PDF needs a user password */
    DQ_INGEST_DAMAGED,            /* cannot be parsed, no usable page, page fails to decode */
    DQ_INGEST_UNSUPPORTED_CODEC,  /* TIFF compression not built into libtiff */
    DQ_INGEST_UNSUPPORTED_FORMAT, /* TIFF pixel format libtiff's RGBA interface refuses */
    DQ_INGEST_TOO_MANY_PIXELS,    /* source raster or output over max_pixels */
    DQ_INGEST_TOO_MANY_PAGES,     /* document over max_pages */
    DQ_INGEST_RENDER_CRASHED,     /* the worker process died (signal, memory limit) */
    DQ_INGEST_RENDER_TIMEOUT,     /* the worker took longer than page_timeout_s on one page */
    DQ_INGEST_STORE_FAILED,       /* the page image could not be written */
    DQ_INGEST_OUT_OF_MEMORY,      /* an allocation failed under the worker's memory limit */
    DQ_INGEST_OUTPUT_TOO_LARGE,   /* the document's page images over max_doc_bytes */
    DQ_INGEST_INTERRUPTED,        /* page not rendered: the ingest was interrupted */
} DqIngestReason;

#define DQ_INGEST_ERROR (dq_ingest_error_quark())
GQuark dq_ingest_error_quark(void);

/* "encrypted", "damaged", ... */
const char *dq_ingest_reason_name(DqIngestReason reason);

typedef struct {
    int n_res;             /* N: longest edge = n_res x tile (default 5) */
    int tile;              /* model tile size, max_image_size.longest_edge (default 512) */
    int jobs;              /* worker processes (default: online CPUs) */
    gboolean hidden;       /* walk into hidden files and folders */
    gint64 max_pixels;     /* per page: the decoded TIFF, the rendered PDF and the output image
                              each at most (default 178956970, Pillow's) */
    int max_pages;         /* per document (default 10000) */
    int page_timeout_s;    /* per page and per document open (default 120) */
    int doc_timeout_s;     /* per document, from its first worker's start to its last page
                              (default 3600; 0 = none): past it the pages not done fail as
                              render_timeout and the document is recorded partial or failed */
    gint64 mem_limit_mb;   /* what a worker may map beyond its size when it starts: its RLIMIT_AS
                              is that size + this (default 4096; 0 = none) */
    gint64 max_doc_bytes;  /* per document: bytes of page PNGs (default 2 GiB; 0 = none); the
                              pages past it fail as output_too_large, unrendered */
    gint64 min_free_mb;    /* a page is not written when the page store's file system would be
                              left with less free (default 1024), nor with less than twice the
                              page's size: store_failed */
    gboolean progress;     /* progress line on stderr */
    gboolean retry_failed; /* render again documents of unchanged bytes that failed, or have a
                              page at these settings that failed, for a reason that may pass
                              now: too_many_pages, too_many_pixels, render_timeout,
                              render_crashed, store_failed, out_of_memory, output_too_large,
                              interrupted (their pages not stored only; the rows are
                              updated in place). Without it, those that failed only for the
                              run's own reasons (interrupted, store_failed) are rendered again
                              all the same (DqIngestSummary.resumed) */
    gboolean verify; /* hash the page files of unchanged documents at these settings and render
                        again those whose files are not the page they are named for (replaced,
                        damaged); without it only a missing or empty file is noticed */
    gboolean rehash; /* read and hash every file, even one whose stamp is its newest version's
                        (see Idempotence above) */
    gboolean allow_empty_root; /* mark gone the documents under a folder given that holds no
                                  document now (see DqIngestSummary.empty_roots) */
} DqIngestOptions;

void dq_ingest_options_init(DqIngestOptions *opt);

/* Reads max_image_size.longest_edge from <model_dir>/preprocessor_config.json. */
gboolean dq_ingest_tile_from_model(const char *model_dir, int *tile, GError **err);

/* The longest edge asked for (n_res x tile; the pages' is at most DQ_IMAGE_MAX_SIZE, 4096, as
 * transformers caps it) and the canonical JSON stored in pages.render_settings, whose
 * longest_edge is the pages'. */
int dq_ingest_longest_edge(const DqIngestOptions *opt);
char *dq_ingest_render_settings(const DqIngestOptions *opt);

/* The size a w x h source (any unit) is rendered at: longest edge `longest_edge`, the short side
 * by dq_image_fit_longest_edge, and a fixed point of that rule. */
void dq_ingest_target_size(double width, double height, int longest_edge, int *out_width,
                           int *out_height);

/* Where the page store lives for a database file, and where one page's PNG is in it. */
char *dq_ingest_page_store_dir(const char *db_path);
char *dq_ingest_page_path(const char *store_dir, const char *image_sha256);

typedef struct {
    char *path;
    char *status; /* "failed", "partial" or "changed" (see DqIngestSummary.changed); "busy" and
                     "skipped" in the lists of those (busy, links_not_followed) */
    char *code;
    char *message;
} DqIngestFailure;

/* A folder given to ingest in which the walk found no document, or which is not there at all,
 * while documents recorded under it would be marked gone: an unmounted share looks so. */
typedef struct {
    char *root;        /* as given on the command line */
    int would_be_gone; /* documents under it not marked gone for that */
    gboolean missing;  /* not there at all (else: there, holding no document) */
} DqIngestEmptyRoot;

typedef struct {
    int files;                   /* candidate files (documents) considered */
    int documents_ok;            /* recorded now, every page fine */
    int documents_partial;       /* recorded now, some pages failed */
    int documents_failed;        /* recorded now as failed */
    GHashTable *failed_by_code;  /* error_code -> count (GINT_TO_POINTER) of documents_failed */
    GHashTable *partial_by_code; /* error_code -> count of documents_partial */
    int unchanged;               /* already in the database: nothing added */
    int unchanged_not_ok;        /* of those, recorded earlier as failed or partial */
    int not_hashed; /* files whose stamp was their newest version's: taken to hold its bytes,
                       not read to hash them (most are counted in `unchanged` too) */
    int resumed;    /* unchanged files whose earlier rendering failed for the run's own reasons
                       (interrupted, store_failed: a full disk), rendered again without
                       retry_failed: counted as what they are now (ok, partial, failed) and here */
    int changed;    /* bytes changed while being ingested: nothing recorded, listed in
                       failures with status "changed" */
    int not_done;   /* interrupted before they were settled (running ones abandoned, the
                       rest not started): nothing recorded */
    int skipped; /* files in folders that are neither PDF nor TIFF (FIFOs, sockets, devices too) */
    int folders_unreadable; /* folders that could not be listed (in failures, code unreadable) */
    int elsewhere; /* being rendered by another ingest (see Concurrency above) when this one came
                      to them and still when it had nothing else left: left to that one, nothing
                      recorded here; listed in `busy` */
    int pages_ok;  /* page images written now */
    int pages_failed;
    int pages_kept; /* pages of the documents rendered now that were stored already (an image and
                       its row at these settings, the file there): not rendered again */
    double seconds;
    gboolean interrupted; /* SIGINT, SIGTERM or SIGHUP: a running document with pages done was
                             recorded partial (its other pages `interrupted`), one without was
                             abandoned; after the walk, nothing is marked gone */
    GPtrArray *failures;  /* DqIngestFailure*, for failed, partial and changed documents */
    GPtrArray *busy;      /* DqIngestFailure* (status "busy", code "in_progress_elsewhere") for
                             the documents counted in `elsewhere` */
    /* Paths (char*, as text: store escapes) recorded under a folder given to this ingest whose
     * files are gone since: marked (documents.missing_since) now, in name order. Those marked
     * by an earlier ingest are not listed again; a path found again is unmarked. */
    GPtrArray *gone;
    /* DqIngestEmptyRoot*: folders given that held no document, or were not there, while
     * documents recorded under them are not there; without allow_empty_root nothing under them is
     * marked gone (the other folders given are ingested as usual), and the CLI exits 1. */
    GPtrArray *empty_roots;
    /* DqIngestFailure* (status "skipped"), in the order the walk met them, of the symbolic links
     * found in the folders walked that were not followed: code "link_outside" (its target lies
     * outside the paths given: nothing outside them is read) or "link_broken" (its target is not
     * there, or cannot be reached). Not failures: the exit status stays as it is. */
    GPtrArray *links_not_followed;
} DqIngestSummary;

void dq_ingest_summary_clear(DqIngestSummary *sum);

/* Ingests files and folders. Returns FALSE (err set) only when ingest could not run at all (no
 * page store, database error); failures of single inputs are recorded and listed in *sum.
 * Documents recorded under a folder it is given whose files are no longer there (no such file;
 * a file the walk leaves out, hidden or no longer a document, is still there) are marked gone,
 * with their answers kept, and listed in sum->gone; every path the walk finds is unmarked. A
 * folder in which the walk found no document at all marks nothing gone unless
 * opt->allow_empty_root (sum->empty_roots). */
gboolean dq_ingest_run(DqStore *store, const char *const *paths, const DqIngestOptions *opt,
                       DqIngestSummary *sum, GError **err);

#endif
