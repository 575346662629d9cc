/* Internals of libdocqa_ingest shared by its files: the walk, the decoders, the worker. */
#ifndef DQ_INGEST_INTERNAL_H
#define DQ_INGEST_INTERNAL_H

#include "image.h"
#include "ingest.h"

#include <glib.h>
#include <stdint.h>

/* ---- walk */

typedef enum { DOC_KIND_UNKNOWN = 0, DOC_KIND_PDF, DOC_KIND_TIFF } DocKind;

const char *doc_kind_name(DocKind kind);

/* Kind from the first bytes ("%PDF-" within the first 1024 bytes, as poppler accepts it; TIFF
 * and BigTIFF byte-order marks), else from the name's extension (*by_name set, unless the file
 * is shorter than the magic and begins it: then it is that kind, cut short), else unknown. */
DocKind doc_kind_sniff(const uint8_t *head, size_t len, const char *name, gboolean *by_name);

typedef struct {
    char *path;        /* absolute */
    gboolean explicit; /* named on the command line */
    gboolean is_link;  /* a symlink the walk followed (to a file inside the roots) */
    int open_errno;    /* != 0: could not stat or open it */
    gboolean regular;  /* a regular file (not a device, FIFO or socket named explicitly) */
    gint64 bytes;
    gint64 mtime;
    DocKind kind;
    gboolean kind_by_name; /* no PDF or TIFF header: the kind is the extension's */
    const char *content;   /* what the first bytes show it is when not PDF/TIFF, or NULL */
    gboolean content_conclusive;
} WalkEntry;

void walk_entry_free(WalkEntry *e);

/* Expands files and folders into the documents to ingest, in a stable (sorted) order. Folders
 * are walked recursively; a symlink is followed only when its target lies inside one of the
 * roots (so nothing outside what was named is read, and loops end), after everything else, and
 * one to a file already taken adds nothing; a path is taken once, and a hard link is a path like
 * any other (the same bytes as another path: a document of its own, as a copy would be); hidden
 * entries are skipped unless `hidden`; files that are neither PDF nor TIFF (FIFOs, sockets and
 * devices too, which are never opened) are counted in *skipped when found in a folder and returned
 * (kind unknown) when named. Folders that cannot be listed (the roots too) are added to
 * `unreadable` (WalkEntry*: path, open_errno). Files and folders that are those `exclude` names
 * (NULL-terminated; the database's files and its page store, when the walk passes them) are left
 * out, not counted. Links found in folders that are not followed are added to `links_not_followed`
 * (WalkEntry*, may be NULL): open_errno 0 for one that leads outside the roots, stat's errno for
 * one whose target cannot be reached (not there, a loop). Returns WalkEntry*. */
GPtrArray *ingest_walk(const char *const *roots, gboolean hidden, const char *const *exclude,
                       int *skipped, GPtrArray *unreadable, GPtrArray *links_not_followed);

/* The real path (realpath) of each root that exists, NULL-terminated (g_strfreev). */
char **ingest_real_roots(const char *const *roots);

/* Whether the real path `real` is one of real_roots or inside one. */
gboolean ingest_path_inside(const char *real, char *const *real_roots);

/* ---- decoders (run inside worker processes) */

typedef struct RenderDoc {
    DocKind kind;
    char *path;
    int fd; /* the file, opened by the caller, or -1: opened by path */
    int page_count;
    char *warning; /* see render_doc_warning */
    char *note;    /* see render_doc_note */
    void *pdf;     /* PopplerDocument* */
    void *tiff;    /* TIFF* */
} RenderDoc;

/* Opens a document: the file open at fd (which the document then owns), or path when fd is -1
 * (path still names it in messages). Errors are DQ_INGEST_ERROR with a DqIngestReason code. */
RenderDoc *render_doc_open(const char *path, int fd, DocKind kind, GError **err);
int render_doc_page_count(RenderDoc *doc);
/* A document-level problem that still leaves pages usable (a broken TIFF IFD chain after valid
 * pages), or NULL. */
const char *render_doc_warning(RenderDoc *doc);
/* Something odd about the document that costs no page (a TIFF IFD chain that loops back after
 * its last page), or NULL: the document stays ok, with this as its message. */
const char *render_doc_note(RenderDoc *doc);
/* Renders page `page` (1-based) at the target size for `longest_edge`. *source_w/h: PDF page
 * size in points after /Rotate, TIFF pixels after Orientation. *incomplete is set (with
 * *incomplete_msg) when an image was produced but the decoder reported an error. */
DqImage *render_doc_page(RenderDoc *doc, int page, int longest_edge, gint64 max_pixels,
                         double *source_w, double *source_h, gboolean *incomplete,
                         char **incomplete_msg, GError **err);
void render_doc_close(RenderDoc *doc);

/* PDF and TIFF halves of the above (they fill doc->pdf / doc->tiff and doc->page_count). */
gboolean pdf_doc_open(RenderDoc *doc, GError **err);
DqImage *pdf_render_page(RenderDoc *doc, int page, int longest_edge, gint64 max_pixels,
                         double *source_w, double *source_h, GError **err);
void pdf_doc_close(RenderDoc *doc);
gboolean tiff_doc_open(RenderDoc *doc, GError **err);
DqImage *tiff_render_page(RenderDoc *doc, int page, int longest_edge, gint64 max_pixels,
                          double *source_w, double *source_h, gboolean *incomplete,
                          char **incomplete_msg, GError **err);
void tiff_doc_close(RenderDoc *doc);

/* ---- page store */

/* Folder of the page store that holds PNGs being written. */
#define PAGE_STORE_TMP ".tmp"

/* Writes png under store_dir by its sha256 (hex, 65 bytes), atomically, unless the file system
 * would be left with less than min_free_mb MiB free or less than the PNG's size, or its folder
 * cannot be synced after the rename (then DQ_INGEST_STORE_FAILED, naming the folder). */
/* The page store's folder and those above it that are not there yet, each made synced into its
 * parent (a power loss forgets a folder whose parent was not synced, with every page in it). */
gboolean page_store_make(const char *store_dir, GError **err);

gboolean page_store_put(const char *store_dir, GBytes *png, gint64 min_free_mb, char sha256_out[65],
                        GError **err);

/* Refreshes the modification time of the page file at path (docqa prune's grace period counts
 * from it): 0, or the errno (ENOENT: it is gone); 0 too when this process may not change it. */
int page_store_touch(const char *path);

/* Tests: the fsync page_store_put runs on a page's folder (NULL: fsync), to make it fail. */
void page_store_set_dir_fsync_for_test(int (*fn)(int fd));

/* Removes temporary files older than max_age_s that writers killed mid-page left behind (a
 * younger one may be another ingest's, being written now). */
void page_store_sweep(const char *store_dir, gint64 max_age_s);

/* Removes from one page folder the temporary files (.tmp-XXXXXX) older than max_age_s that
 * docqa versions before <store>/.tmp wrote beside the pages, and their killed workers left.
 * Reading every folder of a large store at each ingest would cost more than it saves: ingest
 * sweeps the folders it writes pages into, each once a run. */
void page_store_sweep_folder(const char *folder, gint64 max_age_s);

/* ---- claims: which ingest renders a document now
 *
 * Two ingests of one folder at once (overlapping cron runs) would both render every file. An
 * ingest that is to render a document first takes its claim: an flock() on a file in the page
 * store's PAGE_STORE_CLAIMS folder named for the document (path, bytes' SHA-256, render
 * settings). The kernel drops the lock when the process ends however it ends (kill -9
 * included), so a claim dies with its ingest and never needs a timeout. The holder removes the
 * file as it lets go (after the document is recorded): one who opened the file before that and
 * locks the removed file sees it is no longer the one the name leads to and opens it again. */

#define PAGE_STORE_CLAIMS ".claims"

typedef enum {
    CLAIM_TAKEN,      /* this process renders it */
    CLAIM_BUSY,       /* another live process holds it */
    CLAIM_UNAVAILABLE /* the file system gives no lock (some network mounts): nobody is told */
} ClaimResult;

typedef struct {
    int fd; /* -1: none held */
    char *path;
} Claim;

/* Tries, without waiting, to claim `key` (a file name: hex) in store_dir. CLAIM_BUSY sets
 * *holder (g_free) to what the holder wrote in it ("pid N on HOST"), or NULL. */
ClaimResult page_store_claim(const char *store_dir, const char *key, Claim *claim, char **holder);

/* Lets a claim go (its file removed first, see above); nothing when none is held. */
void page_store_release(Claim *claim);

/* Removes the claim files nobody holds (those a killed ingest left). */
void page_store_sweep_claims(const char *store_dir);

/* ---- worker process */

/* Page-claiming state shared by all processes working on one document (MAP_SHARED). */
typedef struct {
    int next_page; /* pages handed out so far; a process takes next_page + 1 */
    int page_count;
    gint64 png_bytes; /* bytes of page PNGs the document's pages have taken so far */
} WorkerShared;

typedef struct {
    const char *path;
    int fd; /* the file as ingest opened and hashed it: the worker reads these bytes, never the
               path again (which may lead elsewhere by now) */
    DocKind kind;
    const char *store_dir;
    int longest_edge;
    gint64 max_pixels;
    int max_pages;
    gint64 mem_limit_mb;
    gint64 max_doc_bytes;
    gint64 min_free_mb;
    int page_timeout_s; /* the parent's clock per page; the CPU limit is a little above it */
    int doc_timeout_s;  /* the parent's clock per document (0: none); the CPU limit's ceiling */
    const int *stored;  /* pages stored already, not rendered again: sorted, [n_stored] */
    int n_stored;
    WorkerShared *shared;
} WorkerTask;

/* Seconds of CPU time a worker may use beyond the parent's clocks before the kernel stops it
 * (RLIMIT_CPU): the parent's kill comes first whenever the parent is there to send it. */
#define WORKER_CPU_SLACK_S 2

/* Body of a worker process: renders pages of task->path claimed from task->shared and writes
 * one line per event to fd (see worker.c for the protocol). Never returns. */
G_GNUC_NORETURN void worker_main(const WorkerTask *task, int fd);

#endif
