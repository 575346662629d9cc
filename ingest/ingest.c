/* The ingest driver: walk, hash, skip what is already stored, hand documents to worker
 * processes, collect their pages, record each document in one transaction. */
#include "ingest_internal.h"

#include "clock.h"
#include "dq_error.h"
#include "json_load.h"
#include "sanitizer.h"
#include "store_documents.h"
#include "test_point.h"
#include "text.h"

#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <poll.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

G_DEFINE_QUARK(dq - ingest - error - quark, dq_ingest_error)

static const char *const reason_names[] = {
    [DQ_INGEST_EMPTY] = "empty",
    [DQ_INGEST_NOT_A_DOCUMENT] = "not_a_document",
    [DQ_INGEST_UNREADABLE] = "unreadable",
    [DQ_INGEST_ENCRYPTED] = "encrypted",
    [DQ_INGEST_DAMAGED] = "damaged",
    [DQ_INGEST_UNSUPPORTED_CODEC] = "unsupported_codec",
    [DQ_INGEST_UNSUPPORTED_FORMAT] = "unsupported_format",
    [DQ_INGEST_TOO_MANY_PIXELS] = "too_many_pixels",
    [DQ_INGEST_TOO_MANY_PAGES] = "too_many_pages",
    [DQ_INGEST_RENDER_CRASHED] = "render_crashed",
    [DQ_INGEST_RENDER_TIMEOUT] = "render_timeout",
    [DQ_INGEST_STORE_FAILED] = "store_failed",
    [DQ_INGEST_OUT_OF_MEMORY] = "out_of_memory",
    [DQ_INGEST_OUTPUT_TOO_LARGE] = "output_too_large",
    [DQ_INGEST_INTERRUPTED] = "interrupted",
};

const char *dq_ingest_reason_name(DqIngestReason reason) {
    if ((int)reason <= 0 || (size_t)reason >= G_N_ELEMENTS(reason_names))
        return "unknown";
    return reason_names[reason];
}

void dq_ingest_options_init(DqIngestOptions *opt) {
    memset(opt, 0, sizeof *opt);
    opt->n_res = 5;
    opt->tile = 512;
    opt->jobs = (int)g_get_num_processors();
    opt->max_pixels = 178956970; /* Pillow's DecompressionBombError threshold */
    opt->max_pages = 10000;
    opt->page_timeout_s = 120;
    opt->mem_limit_mb = 4096;
    opt->doc_timeout_s = 3600;
    opt->max_doc_bytes = (gint64)2 << 30;
    opt->min_free_mb = 256;
}

int dq_ingest_longest_edge(const DqIngestOptions *opt) {
    return opt->n_res * opt->tile;
}

char *dq_ingest_render_settings(const DqIngestOptions *opt) {
    /* Keys sorted, no spaces: the string is compared as a whole in SQL. longest_edge is the pages'
     * longest edge: past the processor's cap, N x tile is not (n_res still tells the model what
     * it is run at, and the pages are its rule's for that N, which may differ by a pixel). */
    return g_strdup_printf("{\"longest_edge\":%d,\"n_res\":%d,\"tile\":%d}",
                           MIN(dq_ingest_longest_edge(opt), DQ_IMAGE_MAX_SIZE), opt->n_res,
                           opt->tile);
}

gboolean dq_ingest_tile_from_model(const char *model_dir, int *tile, GError **err) {
    if (model_dir == NULL || *model_dir == '\0')
        return dq_fail(err, DQ_ERR_ARGS, "the model folder's name is empty");
    char *path = g_build_filename(model_dir, "preprocessor_config.json", NULL);
    JsonParser *parser = dq_json_load_file(path, DQ_JSON_DEFAULT, err);
    gboolean ok = FALSE;
    JsonObject *o = parser != NULL ? dq_json_root_object(parser, path, err) : NULL;
    if (o == NULL)
        goto out;
    JsonNode *misn = json_object_get_member(o, "max_image_size");
    JsonObject *mis =
        misn != NULL && JSON_NODE_HOLDS_OBJECT(misn) ? json_node_get_object(misn) : NULL;
    JsonNode *len = mis != NULL ? json_object_get_member(mis, "longest_edge") : NULL;
    if (len == NULL || !JSON_NODE_HOLDS_VALUE(len) ||
        json_node_get_value_type(len) != G_TYPE_INT64) {
        dq_fail(err, DQ_ERR_MODEL, "%s: no max_image_size.longest_edge (an integer)", path);
        goto out;
    }
    gint64 v = json_node_get_int(len);
    if (v < 16 || v > 8192) {
        dq_fail(err, DQ_ERR_MODEL,
                "%s: max_image_size.longest_edge %" G_GINT64_FORMAT " is out of range", path, v);
        goto out;
    }
    *tile = (int)v;
    ok = TRUE;
out:
    if (parser != NULL)
        g_object_unref(parser);
    g_free(path);
    return ok;
}

static void failure_free(DqIngestFailure *f) {
    g_free(f->path);
    g_free(f->status);
    g_free(f->code);
    g_free(f->message);
    g_free(f);
}

void dq_ingest_summary_clear(DqIngestSummary *sum) {
    if (sum->failures != NULL)
        g_ptr_array_free(sum->failures, TRUE);
    if (sum->busy != NULL)
        g_ptr_array_free(sum->busy, TRUE);
    if (sum->failed_by_code != NULL)
        g_hash_table_destroy(sum->failed_by_code);
    if (sum->partial_by_code != NULL)
        g_hash_table_destroy(sum->partial_by_code);
    if (sum->gone != NULL)
        g_ptr_array_free(sum->gone, TRUE);
    if (sum->empty_roots != NULL)
        g_ptr_array_free(sum->empty_roots, TRUE);
    if (sum->links_not_followed != NULL)
        g_ptr_array_free(sum->links_not_followed, TRUE);
    memset(sum, 0, sizeof *sum);
}

/* ---- per-document state in the parent */

typedef struct {
    gboolean resolved;
    gboolean kept; /* stored already (Doc.stored): not rendered now, its row not written */
    char *status;  /* ok, partial, failed */
    int width, height;
    double source_w, source_h;
    char *sha256;
    char *code;
    char *message;
} PageResult;

/* What tells that a file's bytes changed without reading them again. ctime too: unlike the
 * mtime, no one can set it back. */
typedef struct {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} FileStamp;

static void file_stamp(FileStamp *fs, const struct stat *st) {
    memset(fs, 0, sizeof *fs);
    fs->dev = st->st_dev;
    fs->ino = st->st_ino;
    fs->size = st->st_size;
    fs->mtime = st->st_mtim;
    fs->ctime = st->st_ctim;
}

static gboolean file_stamp_equal(const FileStamp *a, const FileStamp *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static gint64 timespec_ns(struct timespec t) {
    return (gint64)t.tv_sec * G_GINT64_CONSTANT(1000000000) + t.tv_nsec;
}

/* As the database stores it (schema 0013): dev_t and ino_t keep their bits. */
static void file_stamp_row(const FileStamp *fs, DqDocumentStamp *row) {
    row->dev = (gint64)(guint64)fs->dev;
    row->inode = (gint64)(guint64)fs->ino;
    row->bytes = (gint64)fs->size;
    row->mtime_ns = timespec_ns(fs->mtime);
    row->ctime_ns = timespec_ns(fs->ctime);
}

static gboolean stamp_row_equal(const DqDocumentStamp *a, const DqDocumentStamp *b) {
    return a->dev == b->dev && a->inode == b->inode && a->bytes == b->bytes &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

/* A file's timestamps advance in ticks of the file system's clock (a few ms locally, up to 1 or
 * 2 s on some network and FAT file systems): a write in the tick the file was last changed in,
 * after it was read, leaves its stamp as it was. A stamp is only stored once the clock is past
 * its ctime by more than any such tick (git calls such entries "racily clean"). */
#define STAMP_RACY_MS 2000

static gint64 stamp_racy_ms(void) {
    static gsize ms;
    if (g_once_init_enter(&ms)) {
        /* Tests that cannot wait for the clock set it (0: every stamp is stored). */
        const char *t = g_getenv("DOCQA_TEST_STAMP_RACY_MS");
        gint64 v = t ? g_ascii_strtoll(t, NULL, 10) : -1;
        g_once_init_leave(&ms, (gsize)(v >= 0 ? v : STAMP_RACY_MS) + 1);
    }
    return (gint64)ms - 1;
}

static gboolean stamp_racy(const DqDocumentStamp *st) {
    return st->ctime_ns / 1000 > g_get_real_time() - stamp_racy_ms() * 1000;
}

typedef struct {
    WalkEntry *entry;
    int fd; /* the file, opened once: hashed and rendered from here, never by path again */
    char *sha256;
    FileStamp stamp;      /* the file when its hash was taken */
    gboolean stamp_valid; /* stamp was taken (the file was opened and fstat'ed) */
    gint64 stamped_id;    /* the document whose stored stamp is this file's now (0: none) */
    gint64 existing_id;
    gboolean resumed;     /* rendered again for the run's own failures (needs_rendering) */
    WorkerShared *shared; /* MAP_SHARED, one page */
    int page_count;       /* -1 until a worker opened it */
    char *warning;
    char *note;        /* render_doc_note: the message of a document that is ok */
    PageResult *pages; /* [page_count] */
    int resolved;
    int fail_reason; /* document-level, 0 when none */
    char *fail_message;
    int children;
    int restarts;
    double started_ms;    /* when its first worker started: the --doc-timeout clock */
    gboolean out_of_time; /* --doc-timeout ran out: its workers killed, no more started */
    GPtrArray *stored;    /* DqStoredPage*: its pages at these settings stored already, their
                             files there, by page number: not rendered again */
    int *stored_pages;    /* their page numbers, sorted, for the workers [stored->len] */
    gint64 stored_bytes;  /* their PNGs' bytes, counted against --max-doc-bytes */
    int n_kept;           /* of those, resolved as stored (their page numbers exist now) */
    Claim claim;          /* held while it is rendered here (ingest_internal.h) */
} Doc;

typedef struct {
    pid_t pid;
    int fd;
    Doc *doc;
    int current_page;
    double deadline_ms;
    GString *buf;
    gboolean done_seen;
    gboolean fail_seen; /* the document could not be opened, or has too many pages */
    gboolean timed_out;
    gboolean out_of_memory; /* it said so as it died (worker.c) */
    gboolean out_of_time;   /* killed because its document's --doc-timeout ran out */
} Child;

typedef struct {
    DqStore *store;
    const DqIngestOptions *opt;
    DqIngestSummary *sum;
    char *settings;
    char *store_dir;
    char **real_roots;     /* what a walked file must lie inside when it is opened */
    GHashTable *swept;     /* page folders swept of old temporary files in this run */
    GHashTable *came_back; /* paths marked gone that this run found again (char*) */
    GPtrArray *entries;
    guint next_entry;
    GQueue restart;    /* Doc* with pages left and no process */
    GQueue deferred;   /* Doc* (hashed, looked up) another ingest was rendering: tried again */
    GPtrArray *active; /* Doc* with processes */
    Child *kids;       /* [opt->jobs] */
    int n_kids;
    gint64 bytes_total, bytes_done;
    int files_done;
    double t0;
    double last_progress;
    GError *fatal;
} Run;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    interrupted = sig;
}

/* What stops an ingest: Ctrl-C, kill or systemctl stop, a closed terminal. */
static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP};

static void catch_stop_signals(struct sigaction old[G_N_ELEMENTS(stop_signals)]) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    for (size_t i = 0; i < G_N_ELEMENTS(stop_signals); i++) {
        sigaction(stop_signals[i], NULL, &old[i]);
        /* one ignored when docqa started (nohup) stays ignored */
        if (old[i].sa_handler != SIG_IGN)
            sigaction(stop_signals[i], &sa, NULL);
    }
}

static void restore_stop_signals(const struct sigaction old[G_N_ELEMENTS(stop_signals)]) {
    for (size_t i = 0; i < G_N_ELEMENTS(stop_signals); i++)
        sigaction(stop_signals[i], &old[i], NULL);
}

static void doc_free(Doc *d) {
    if (d == NULL)
        return;
    for (int i = 0; d->pages && i < d->page_count; i++) {
        g_free(d->pages[i].status);
        g_free(d->pages[i].sha256);
        g_free(d->pages[i].code);
        g_free(d->pages[i].message);
    }
    g_free(d->pages);
    if (d->stored != NULL)
        g_ptr_array_free(d->stored, TRUE);
    g_free(d->stored_pages);
    /* After the document is recorded (or given up): one who waited for it finds it done. */
    page_store_release(&d->claim);
    if (d->shared != NULL)
        munmap(d->shared, sizeof *d->shared);
    if (d->fd >= 0)
        close(d->fd);
    g_free(d->sha256);
    g_free(d->warning);
    g_free(d->note);
    g_free(d->fail_message);
    g_free(d);
}

static void doc_fail(Doc *d, int reason, const char *msg) {
    if (d->fail_reason != 0)
        return;
    d->fail_reason = reason;
    d->fail_message = g_strdup(msg);
}

static void page_resolve(Doc *d, int page, const char *status, int w, int h, double sw, double sh,
                         const char *sha, const char *code, const char *msg) {
    if (d->pages == NULL || page < 1 || page > d->page_count || d->pages[page - 1].resolved)
        return;
    PageResult *p = &d->pages[page - 1];
    p->resolved = TRUE;
    p->status = g_strdup(status);
    p->width = w;
    p->height = h;
    p->source_w = sw;
    p->source_h = sh;
    p->sha256 = sha && strcmp(sha, "-") != 0 ? g_strdup(sha) : NULL;
    p->code = code && strcmp(code, "-") != 0 ? g_strdup(code) : NULL;
    p->message = msg && *msg ? g_strdup(msg) : NULL;
    d->resolved++;
}

static gboolean doc_complete(const Doc *d) {
    return d->fail_reason != 0 || (d->page_count >= 0 && d->resolved == d->page_count);
}

/* ---- recording */

static void add_to(GPtrArray *list, const char *path, const char *status, const char *code,
                   const char *message) {
    DqIngestFailure *f = g_new0(DqIngestFailure, 1);
    /* As the database holds them (text.h): --json stays valid, and both name a file alike. */
    f->path = dq_utf8_escape_invalid(path);
    f->status = g_strdup(status);
    f->code = g_strdup(code);
    f->message = dq_utf8_escape_invalid(message);
    g_ptr_array_add(list, f);
}

static void add_failure(DqIngestSummary *sum, const char *path, const char *status,
                        const char *code, const char *message) {
    add_to(sum->failures, path, status, code, message);
}

/* The links the walk left, said with where each leads, so that the user can name that folder. */
static void add_links_not_followed(DqIngestSummary *sum, const GPtrArray *links) {
    for (guint i = 0; i < links->len; i++) {
        const WalkEntry *e = g_ptr_array_index(links, i);
        char *to = g_file_read_link(e->path, NULL);
        char *m = e->open_errno == 0
                      ? g_strdup_printf("%s: a symbolic link to %s, outside the folders being "
                                        "ingested: not followed (name that folder or file to "
                                        "ingest it)",
                                        e->path, to ? to : "?")
                      : g_strdup_printf("%s: a symbolic link to %s, which cannot be reached: %s",
                                        e->path, to ? to : "?", g_strerror(e->open_errno));
        add_to(sum->links_not_followed, e->path, "skipped",
               e->open_errno == 0 ? "link_outside" : "link_broken", m);
        g_free(m);
        g_free(to);
    }
}

static void sweep_page_folder(Run *r, const char *image_sha256) {
    char *png = dq_ingest_page_path(r->store_dir, image_sha256);
    char *folder = g_path_get_dirname(png);
    g_free(png);
    if (g_hash_table_add(r->swept, folder))
        page_store_sweep_folder(folder, 3600);
}

/* Stores the stamp of the file whose bytes document `id` holds (hashed, or settled by its stamp),
 * unless it is stored already or racy. */
static gboolean store_stamp(Run *r, Doc *d, gint64 id, GError **err) {
    if (id <= 0 || !d->stamp_valid || d->sha256 == NULL || d->stamped_id == id)
        return TRUE;
    DqDocumentStamp row;
    file_stamp_row(&d->stamp, &row);
    if (stamp_racy(&row))
        return TRUE;
    if (!dq_store_document_stamp_set(r->store, id, &row, err))
        return FALSE;
    d->stamped_id = id;
    return TRUE;
}

/* A document's outcome as recorded: its status, error code and message (NULL when ok). */
typedef struct {
    const char *status, *code;
    char *message;
    int n_img, n_bad, first_bad; /* pages with an image, pages not ok, the first of those (-1) */
} DocOutcome;

/* The rows of the pages resolved, and their tally in `out`. */
static DqPageRow *page_rows(const Doc *d, int *n_rows, DocOutcome *out) {
    DqPageRow *rows = g_new0(DqPageRow, d->pages != NULL && d->page_count > 0 ? d->page_count : 1);
    *n_rows = 0;
    out->first_bad = -1;
    for (int i = 0; d->pages && i < d->page_count; i++) {
        const PageResult *p = &d->pages[i];
        if (!p->resolved)
            continue;
        DqPageRow *row = &rows[(*n_rows)++];
        row->page_number = i + 1;
        row->width = p->width;
        row->height = p->height;
        row->source_width = p->source_w;
        row->source_height = p->source_h;
        row->image_sha256 = p->sha256;
        row->status = p->status;
        row->error_code = p->code;
        row->error_message = p->message;
        row->stored = p->kept;
        if (p->sha256 != NULL)
            out->n_img++;
        if (strcmp(p->status, "ok") != 0) {
            out->n_bad++;
            if (out->first_bad < 0)
                out->first_bad = i;
        }
    }
    return rows;
}

/* ok, partial or failed, from the document's failure and its pages' tally. */
static void doc_outcome(const Doc *d, DocOutcome *o) {
    const WalkEntry *e = d->entry;
    const int first_bad = o->first_bad, n_bad = o->n_bad;
    o->status = "ok";
    if (d->fail_reason != 0 && d->resolved == 0) {
        o->status = "failed";
        o->code = dq_ingest_reason_name(d->fail_reason);
        o->message = g_strdup(d->fail_message);
    } else if (o->n_img == 0) {
        o->status = "failed";
        const PageResult *p = first_bad >= 0 ? &d->pages[first_bad] : NULL;
        o->code = p && p->code ? p->code : dq_ingest_reason_name(DQ_INGEST_DAMAGED);
        o->message = g_strdup_printf("no page could be rendered; page %d: %s", first_bad + 1,
                                     p && p->message ? p->message : "?");
    } else if (n_bad > 0 || d->warning != NULL) {
        o->status = "partial";
        if (first_bad >= 0) {
            const PageResult *p = &d->pages[first_bad];
            o->code = p->code ? p->code : dq_ingest_reason_name(DQ_INGEST_DAMAGED);
            o->message = g_strdup_printf("%d of %d page%s failed or %s incomplete; page %d: %s%s%s",
                                         n_bad, d->page_count, d->page_count == 1 ? "" : "s",
                                         n_bad == 1 ? "is" : "are", first_bad + 1,
                                         p->message ? p->message : "?", d->warning ? "; " : "",
                                         d->warning ? d->warning : "");
        } else {
            o->code = dq_ingest_reason_name(DQ_INGEST_DAMAGED);
            o->message = g_strdup_printf("%s: %s", e->path, d->warning);
        }
    }
    if (d->note != NULL && strcmp(o->status, "failed") != 0) {
        char *m = o->message != NULL ? g_strdup_printf("%s; %s", o->message, d->note)
                                     : g_strdup_printf("%s: %s", e->path, d->note);
        g_free(o->message);
        o->message = m;
    }
}

/* The recorded document in the summary: its outcome, its pages, its failure. */
static void count_recorded(Run *r, const Doc *d, const DocOutcome *o, const DqPageRow *rows,
                           int n_rows) {
    DqIngestSummary *s = r->sum;
    if (strcmp(o->status, "ok") == 0)
        s->documents_ok++;
    else if (strcmp(o->status, "partial") == 0)
        s->documents_partial++;
    else
        s->documents_failed++;
    for (int i = 0; i < n_rows; i++) {
        if (rows[i].stored) {
            s->pages_kept++;
        } else if (rows[i].image_sha256 != NULL) {
            s->pages_ok++;
            sweep_page_folder(r, rows[i].image_sha256);
        } else {
            s->pages_failed++;
        }
    }
    if (strcmp(o->status, "ok") != 0) {
        add_failure(s, d->entry->path, o->status, o->code, o->message);
        GHashTable *by = strcmp(o->status, "partial") == 0 ? s->partial_by_code : s->failed_by_code;
        const char *key = o->code ? o->code : "unknown";
        g_hash_table_insert(by, g_strdup(key),
                            GINT_TO_POINTER(GPOINTER_TO_INT(g_hash_table_lookup(by, key)) + 1));
    }
}

/* Just before the rows commit, each page file a worker wrote or found stored is touched: a
 * docqa prune that read the live pages before this commit then takes it for new, whatever time
 * the rendering took (page_store_touch). One no longer there (a prune removed it after the
 * worker's check, the grace period shorter than the rendering) fails as store_failed, which
 * the next ingest renders again, rather than commit a row naming nothing. */
static void keep_page_files(Run *r, Doc *d) {
    for (int i = 0; d->pages != NULL && i < d->page_count; i++) {
        PageResult *p = &d->pages[i];
        if (!p->resolved || p->kept || p->sha256 == NULL)
            continue;
        char *png = dq_ingest_page_path(r->store_dir, p->sha256);
        int e = page_store_touch(png);
        if (e != 0) {
            g_free(p->status);
            g_free(p->code);
            g_free(p->message);
            p->status = g_strdup("failed");
            p->code = g_strdup(dq_ingest_reason_name(DQ_INGEST_STORE_FAILED));
            p->message = g_strdup_printf("%s: page %d: its image %s was removed before its row "
                                         "was stored (%s; docqa prune?); the next ingest renders "
                                         "it again",
                                         d->entry->path, i + 1, png, g_strerror(e));
            g_clear_pointer(&p->sha256, g_free);
        }
        g_free(png);
    }
}

static void record_doc(Run *r, Doc *d) {
    WalkEntry *e = d->entry;
    /* Pages nobody could render after a document-level failure of a later process. */
    if (d->fail_reason != 0 && d->resolved > 0)
        for (int p = 1; p <= d->page_count; p++)
            page_resolve(d, p, "failed", 0, 0, 0, 0, NULL, dq_ingest_reason_name(d->fail_reason),
                         d->fail_message);
    keep_page_files(r, d);
    DocOutcome o = {0};
    int n_rows = 0;
    DqPageRow *rows = page_rows(d, &n_rows, &o);
    doc_outcome(d, &o);
    DqDocumentRow doc = {
        .path = e->path,
        .sha256 = d->sha256,
        .bytes = e->bytes,
        .mtime = e->mtime,
        .kind = doc_kind_name(e->kind),
        .page_count = d->page_count,
        .status = o.status,
        .error_code = o.code,
        .error_message = o.message,
    };
    GError *err = NULL;
    /* An existing document is rendered again only for these settings (new, or retried): its
     * outcome becomes this rendering's and its pages at these settings are replaced. */
    gint64 id = 0;
    if (!dq_store_document_record(r->store, &doc, d->existing_id, d->existing_id > 0, r->settings,
                                  rows, n_rows, &id, NULL, &err) ||
        !store_stamp(r, d, id, &err)) {
        if (r->fatal == NULL)
            r->fatal = err;
        else
            g_error_free(err);
    } else {
        count_recorded(r, d, &o, rows, n_rows);
    }
    g_free(o.message);
    g_free(rows);
    r->files_done++;
    r->bytes_done += e->bytes;
}

/* Records a document that failed before any worker was needed. */
static void record_prefailed(Run *r, Doc *d, DqIngestReason why, const char *msg) {
    doc_fail(d, why, msg);
    record_doc(r, d);
    doc_free(d);
}

/* ---- preparing a document: hash, look up, cheap failures */

/* The SHA-256 of the file's bytes and its stamp before reading them; *changed when the stamp
 * differs after reading (the hash may mix old and new bytes). */
static char *hash_file(int fd, FileStamp *stamp, gboolean *changed, int *err_no) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        *err_no = errno;
        return NULL;
    }
    file_stamp(stamp, &st);
    GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
    uint8_t *buf = g_malloc(1 << 20);
    ssize_t n = 0;
    /* A large file takes a while: Ctrl-C must not wait for its end. */
    while (!interrupted && ((n = read(fd, buf, 1 << 20)) > 0 || (n < 0 && errno == EINTR)))
        if (n > 0)
            g_checksum_update(ck, buf, n);
    if (interrupted) {
        n = -1;
        errno = EINTR;
    }
    if (n < 0)
        *err_no = errno;
    FileStamp after;
    if (n >= 0 && fstat(fd, &st) == 0) {
        file_stamp(&after, &st);
        *changed = !file_stamp_equal(stamp, &after);
    }
    g_free(buf);
    char *hex = n < 0 ? NULL : g_strdup(g_checksum_get_string(ck));
    g_checksum_free(ck);
    return hex;
}

/* Settles a document whose bytes changed while it was ingested: nothing is recorded (the hash
 * and the pages may come from different bytes), and the output says to ingest it again. */
static void report_changed(Run *r, Doc *d, const char *why) {
    char *m = g_strdup_printf("%s: %s; nothing recorded, ingest it again", d->entry->path,
                              why != NULL ? why : "changed while it was being ingested");
    add_failure(r->sum, d->entry->path, "changed", "changed_during_ingest", m);
    g_free(m);
    r->sum->changed++;
    r->files_done++;
    r->bytes_done += d->entry->bytes;
}

/* "x.tif: a JPEG image, not a TIFF": what the file is, when its first bytes tell. */
static char *not_a_document_message(const WalkEntry *e) {
    const char *claimed = e->kind_by_name ? (e->kind == DOC_KIND_PDF ? "not a PDF" : "not a TIFF")
                                          : "neither a PDF nor a TIFF";
    if (e->content != NULL)
        return g_strdup_printf("%s: %s, %s", e->path, e->content, claimed);
    if (e->kind_by_name)
        return g_strdup_printf("%s: %s (it does not begin with a %s header)", e->path, claimed,
                               e->kind == DOC_KIND_PDF ? "PDF" : "TIFF");
    return g_strdup_printf("%s: %s", e->path, claimed);
}

/* Named explicitly but neither PDF nor TIFF, or named .pdf or .tif without the header: libtiff
 * opens nothing else, and what the first bytes show to be another format (a photo saved as .tif,
 * an error page saved as .pdf) is not worth a worker; a PDF whose header poppler finds further
 * in still gets one. */
static gboolean entry_not_a_document(const WalkEntry *e) {
    return e->kind == DOC_KIND_UNKNOWN ||
           (e->kind_by_name && (e->kind == DOC_KIND_TIFF || e->content_conclusive));
}

/* Whether the page store file `png` holds the bytes its name, `sha256`, says. */
static gboolean page_file_matches(const char *png, const char *sha256) {
    char *data = NULL;
    gsize len = 0;
    if (!g_file_get_contents(png, &data, &len, NULL))
        return FALSE;
    char *got = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
    gboolean same = g_ascii_strcasecmp(got, sha256) == 0;
    g_free(got);
    g_free(data);
    return same;
}

/* Opens a file the walk found, once: it is hashed and rendered from this descriptor, never by
 * its path again. Between the walk and now the path may have come to lead elsewhere (a link
 * retargeted, a folder swapped for a link to outside the roots): a file the walk saw as one is
 * opened without following a link in its place, and what was opened must lie inside the roots,
 * by the real path the kernel gives the open file. Files named on the command line are what the
 * user named. Returns the descriptor, or -1 with *err_no, or with *escaped naming why the file
 * is not read (then it is reported as changed). */
static int open_walked(Run *r, const WalkEntry *e, int *err_no, const char **escaped) {
    gboolean nofollow = !e->explicit && !e->is_link;
    int fd = open(e->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (nofollow ? O_NOFOLLOW : 0));
    if (fd < 0) {
        if (nofollow && errno == ELOOP)
            *escaped = "became a symbolic link after the folder was read; not read";
        else
            *err_no = errno;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *escaped = "is no longer a regular file; not read";
        return -1;
    }
    if (e->explicit)
        return fd;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    char *real = g_file_read_link(proc, NULL);
    if (real == NULL) {
        /* No /proc: the path's real path, if it names the file that is open. */
        char *rp = realpath(e->path, NULL);
        struct stat a, b;
        if (rp != NULL && stat(rp, &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino)
            real = g_strdup(rp);
        free(rp);
    }
    gboolean inside = real != NULL && ingest_path_inside(real, r->real_roots);
    g_free(real);
    if (!inside) {
        close(fd);
        *escaped = "leads outside the folders being ingested since the walk (a link or folder "
                   "replaced); not read";
        return -1;
    }
    return fd;
}

/* Which of the document's stored pages (`pages`, DqStoredPage*) are there to keep: their files
 * there and not empty (with --verify, holding the bytes they are named for). Sets d->stored
 * (and the rest) to those; returns whether any is missing. A stat a page is cheap next to
 * rendering; hashing every page of an archive on every run is not (README: --verify), so only
 * --verify finds a file replaced or damaged in place (the worker finds it too, when it answers a
 * question about it, and fails the job saying so). */
static gboolean keep_stored_pages(Run *r, Doc *d, GPtrArray *pages) {
    gboolean missing = FALSE;
    /* A path marked gone until this run unmarked it: a docqa prune that read the pages before
     * the unmark committed may be removing their files now; touched, they are new to it
     * (page_store_touch), and one removed already is missing here, so rendered again. */
    gboolean came_back = g_hash_table_contains(r->came_back, d->entry->path);
    d->stored = g_ptr_array_new_with_free_func((GDestroyNotify)dq_stored_page_free);
    d->stored_bytes = 0;
    for (guint i = 0; i < pages->len; i++) {
        DqStoredPage *sp = g_ptr_array_index(pages, i);
        char *png = dq_ingest_page_path(r->store_dir, sp->image_sha256);
        struct stat st;
        gboolean there = png != NULL && (!came_back || page_store_touch(png) == 0) &&
                         stat(png, &st) == 0 && st.st_size > 0 &&
                         (!r->opt->verify || page_file_matches(png, sp->image_sha256));
        g_free(png);
        if (!there) {
            missing = TRUE;
            continue;
        }
        /* Each page counts its own PNG, as a whole rendering counts it (worker.c). */
        d->stored_bytes += st.st_size;
        pages->pdata[i] = NULL;
        g_ptr_array_add(d->stored, sp);
    }
    d->stored_pages = g_new(int, MAX(d->stored->len, 1));
    for (guint i = 0; i < d->stored->len; i++)
        d->stored_pages[i] = ((DqStoredPage *)g_ptr_array_index(d->stored, i))->page_number;
    return missing;
}

static void forget_stored_pages(Doc *d) {
    if (d->stored != NULL)
        g_ptr_array_free(d->stored, TRUE);
    d->stored = NULL;
    g_clear_pointer(&d->stored_pages, g_free);
    d->stored_bytes = 0;
}

/* Looks a hashed document up. Returns TRUE when it is to be rendered (d->existing_id and
 * d->stored set), FALSE when it is settled (unchanged: counted, not freed) or the database
 * failed (r->fatal set). */
static gboolean needs_rendering(Run *r, Doc *d) {
    WalkEntry *e = d->entry;
    forget_stored_pages(d);
    d->resumed = FALSE;
    DqDocumentLookup found;
    GError *err = NULL;
    if (!dq_store_document_find(r->store, e->path, d->sha256, r->settings, &found, &err)) {
        r->fatal = err;
        return FALSE;
    }
    static const char *const retryable[] = {"too_many_pages",   "too_many_pixels", "render_timeout",
                                            "render_crashed",   "store_failed",    "out_of_memory",
                                            "output_too_large", "interrupted",     NULL};
    /* Failures of the run rather than of the file: the ingest was stopped (a signal) or the
     * page store's disk was full. They say nothing about the bytes, so the next plain ingest
     * finishes the document; the file's own (damaged, a crash or timeout, a limit) wait for
     * --retry-failed, as rendering them again costs the same each night. --doc-timeout's
     * render_timeout stays with the file: a document past its budget would spend it again. */
    static const char *const run_own[] = {"store_failed", "interrupted", NULL};
    if (found.id != 0) {
        /* The same bytes as the path's newest version. A document that failed as a whole
         * (nothing rendered at any settings: encrypted, too many pages, ...) fails alike at
         * every render settings; otherwise what counts is its pages at these settings. */
        gboolean whole_failed =
            strcmp(found.status, "failed") == 0 && found.pages_any_settings == 0;
        gboolean not_ok = FALSE, retry = FALSE, render = FALSE, resume = FALSE;
        if (whole_failed) {
            not_ok = TRUE;
            retry = found.error_code != NULL && g_strv_contains(retryable, found.error_code);
            resume = found.error_code != NULL && g_strv_contains(run_own, found.error_code);
            /* Versions that sent misnamed files to a worker recorded them as damaged: the same
             * bytes now say what they are, in place. */
            render = g_strcmp0(found.error_code, "damaged") == 0 && entry_not_a_document(e);
        } else if (found.pages_with_settings == 0) {
            render = TRUE; /* new render settings add pages */
        } else {
            /* The document's status is its latest rendering's: it speaks for these settings
             * only when they are the only ones (a TIFF whose pages are fine but whose IFD chain
             * broke is partial without a failed page). */
            not_ok =
                found.pages_not_ok > 0 || (strcmp(found.status, "ok") != 0 &&
                                           found.pages_any_settings == found.pages_with_settings);
            for (char **c = found.failed_codes; c && *c; c++) {
                retry = retry || g_strv_contains(retryable, *c);
                resume = resume || g_strv_contains(run_own, *c);
            }
            /* The page store is only files: one deleted or emptied behind our back would leave
             * rows naming nothing; the document renders again, those pages only. */
            GPtrArray *pages =
                dq_store_document_stored_pages(r->store, found.id, r->settings, &err);
            if (pages == NULL) {
                r->fatal = err;
                dq_document_lookup_clear(&found);
                return FALSE;
            }
            render = keep_stored_pages(r, d, pages);
            g_ptr_array_free(pages, TRUE);
        }
        d->resumed = !render && !r->opt->retry_failed && resume && d->sha256 != NULL;
        if (!d->resumed && !render && !(retry && r->opt->retry_failed && d->sha256 != NULL)) {
            if (not_ok)
                r->sum->unchanged_not_ok++;
            /* Hashed (a first run, a file touched): the next run need not read it. */
            if (!store_stamp(r, d, found.id, &err)) {
                r->fatal = err;
                dq_document_lookup_clear(&found);
                return FALSE;
            }
            dq_document_lookup_clear(&found);
            r->sum->unchanged++;
            r->files_done++;
            r->bytes_done += e->bytes;
            return FALSE;
        }
    }
    d->existing_id = found.id;
    dq_document_lookup_clear(&found);
    return TRUE;
}

/* The name of a document's claim: its path, bytes and render settings (two paths holding the
 * same bytes are two documents, each rendered by whoever ingests it). */
static char *claim_key(Run *r, Doc *d) {
    GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(ck, (const guchar *)d->entry->path, (gssize)strlen(d->entry->path) + 1);
    g_checksum_update(ck, (const guchar *)d->sha256, (gssize)strlen(d->sha256) + 1);
    g_checksum_update(ck, (const guchar *)r->settings, (gssize)strlen(r->settings));
    char *key = g_strdup(g_checksum_get_string(ck));
    g_checksum_free(ck);
    return key;
}

/* Left to another ingest that renders it: nothing recorded here. */
static void report_elsewhere(Run *r, Doc *d, const char *holder) {
    DqIngestFailure *f = g_new0(DqIngestFailure, 1);
    f->path = dq_utf8_escape_invalid(d->entry->path);
    f->status = g_strdup("busy");
    f->code = g_strdup("in_progress_elsewhere");
    char *m = g_strdup_printf("%s: being rendered by another ingest (%s); left to it",
                              d->entry->path, holder != NULL ? holder : "its claim is held");
    f->message = dq_utf8_escape_invalid(m);
    g_free(m);
    g_ptr_array_add(r->sum->busy, f);
    r->sum->elsewhere++;
    r->files_done++;
    r->bytes_done += d->entry->bytes;
}

/* Claims a document to render and makes it ready for workers; NULL when it is settled or put
 * off. Another ingest that holds its claim renders it now: with `may_defer` it is put off
 * (r->deferred), else left to that one. Once claimed it is looked up again: the ingest that held
 * it may have recorded it just before letting go. */
static Doc *claim_doc(Run *r, Doc *d, gboolean may_defer) {
    char *key = claim_key(r, d), *holder = NULL;
    ClaimResult c = page_store_claim(r->store_dir, key, &d->claim, &holder);
    g_free(key);
    if (c == CLAIM_BUSY) {
        if (may_defer)
            g_queue_push_tail(&r->deferred, d);
        else {
            report_elsewhere(r, d, holder);
            doc_free(d);
        }
        g_free(holder);
        return NULL;
    }
    /* CLAIM_UNAVAILABLE (no locks on this file system): rendered as if nobody else were. */
    if (c == CLAIM_TAKEN && !needs_rendering(r, d)) {
        doc_free(d);
        return NULL;
    }
    d->shared =
        mmap(NULL, sizeof *d->shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (d->shared == MAP_FAILED) {
        d->shared = NULL;
        dq_fail(&r->fatal, DQ_ERR_IO, "cannot map shared memory: %s", g_strerror(errno));
        doc_free(d);
        return NULL;
    }
    d->shared->next_page = 0;
    d->shared->page_count = -1;
    d->shared->png_bytes = d->stored_bytes;
    if (d->resumed)
        r->sum->resumed++;
    g_ptr_array_add(r->active, d);
    return d;
}

/* Whether the open file's stamp is its path's newest version's: then that version's SHA-256 is
 * taken as its bytes' (d->sha256, d->stamp, d->stamped_id set), and nothing is read. FALSE
 * otherwise, or with r->fatal set when the database failed. */
static gboolean stamp_known(Run *r, Doc *d) {
    struct stat st;
    if (fstat(d->fd, &st) != 0)
        return FALSE; /* hash_file says why */
    FileStamp now;
    file_stamp(&now, &st);
    DqDocumentStamp mine, stored;
    file_stamp_row(&now, &mine);
    gint64 id = 0;
    char *sha = NULL;
    GError *err = NULL;
    if (!dq_store_document_stamp_find(r->store, d->entry->path, &id, &sha, &stored, &err)) {
        r->fatal = err;
        return FALSE;
    }
    if (id <= 0 || sha == NULL || !stamp_row_equal(&mine, &stored)) {
        g_free(sha);
        return FALSE;
    }
    d->sha256 = sha;
    d->stamp = now;
    d->stamp_valid = TRUE;
    d->stamped_id = id;
    r->sum->not_hashed++;
    return TRUE;
}

/* Returns a document that needs workers, or NULL when this entry is settled (unchanged,
 * or failed without rendering, and recorded) or put off (another ingest renders it). */
static Doc *prepare_doc(Run *r, WalkEntry *e) {
    Doc *d = g_new0(Doc, 1);
    d->entry = e;
    d->fd = -1;
    d->page_count = -1;
    d->claim.fd = -1;
    int err_no = e->open_errno;
    /* Only regular files are hashed: /dev/zero named on the command line would never end. */
    gboolean changed = FALSE;
    const char *escaped = NULL;
    if (err_no == 0 && e->regular)
        d->fd = open_walked(r, e, &err_no, &escaped);
    if (escaped != NULL) {
        report_changed(r, d, escaped);
        doc_free(d);
        return NULL;
    }
    /* An unchanged file is not read again: most of an archive, most nights. */
    if (d->fd >= 0 && !r->opt->rehash && !stamp_known(r, d) && r->fatal != NULL) {
        doc_free(d);
        return NULL;
    }
    if (d->fd >= 0 && d->sha256 == NULL) {
        d->sha256 = hash_file(d->fd, &d->stamp, &changed, &err_no);
        d->stamp_valid = d->sha256 != NULL;
    }
    if (d->sha256 != NULL) {
        /* The row describes the bytes that were hashed, not those the walk saw. */
        e->bytes = d->stamp.size;
        e->mtime = d->stamp.mtime.tv_sec;
    }
    if (interrupted) { /* abandoned, like the documents being rendered */
        doc_free(d);
        return NULL;
    }
    if (changed) {
        report_changed(r, d, NULL);
        doc_free(d);
        return NULL;
    }
    if (!needs_rendering(r, d)) {
        doc_free(d);
        return NULL;
    }
    if (d->sha256 == NULL && err_no == 0) {
        char *m = g_strdup_printf("%s: not a regular file", e->path);
        record_prefailed(r, d, DQ_INGEST_NOT_A_DOCUMENT, m);
        g_free(m);
        return NULL;
    }
    if (d->sha256 == NULL) {
        char *m = g_strdup_printf("%s: %s", e->path, g_strerror(err_no));
        record_prefailed(r, d, DQ_INGEST_UNREADABLE, m);
        g_free(m);
        return NULL;
    }
    if (e->bytes == 0) {
        char *m = g_strdup_printf("%s: file is empty", e->path);
        record_prefailed(r, d, DQ_INGEST_EMPTY, m);
        g_free(m);
        return NULL;
    }
    if (entry_not_a_document(e)) {
        char *m = not_a_document_message(e);
        e->kind = DOC_KIND_UNKNOWN;
        record_prefailed(r, d, DQ_INGEST_NOT_A_DOCUMENT, m);
        g_free(m);
        return NULL;
    }
    return claim_doc(r, d, TRUE);
}

/* ---- worker processes */

static gboolean spawn_child(Run *r, Doc *d) {
    int fds[2];
    if (pipe(fds) != 0) {
        dq_fail(&r->fatal, DQ_ERR_IO, "cannot create a pipe: %s", g_strerror(errno));
        return FALSE;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        dq_fail(&r->fatal, DQ_ERR_IO, "cannot start a worker process: %s", g_strerror(errno));
        return FALSE;
    }
    if (pid == 0) {
        close(fds[0]);
        /* A worker outlives nothing: killed with its parent however the parent dies (kill -9,
         * a hangup), not left rendering a page bomb under PID 1. A parent gone before the
         * death signal was set is seen by getppid. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(3);
        /* Ctrl-C reaches the whole process group: the parent alone decides, so that a worker
         * killed by the user is never recorded as a crashed page. */
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGTERM, SIG_DFL);
        /* The claims are the ingest's: they end with it, not with the last of its workers. */
        for (guint i = 0; i < r->active->len; i++) {
            Doc *a = g_ptr_array_index(r->active, i);
            if (a->claim.fd >= 0)
                close(a->claim.fd);
        }
        WorkerTask task = {
            .path = d->entry->path,
            .fd = d->fd,
            .kind = d->entry->kind,
            .store_dir = r->store_dir,
            .longest_edge = dq_ingest_longest_edge(r->opt),
            .max_pixels = r->opt->max_pixels,
            .max_pages = r->opt->max_pages,
            .mem_limit_mb = r->opt->mem_limit_mb,
            .max_doc_bytes = r->opt->max_doc_bytes,
            .min_free_mb = r->opt->min_free_mb,
            .page_timeout_s = r->opt->page_timeout_s,
            .doc_timeout_s = r->opt->doc_timeout_s,
            .stored = d->stored_pages,
            .n_stored = d->stored != NULL ? (int)d->stored->len : 0,
            .shared = d->shared,
        };
        worker_main(&task, fds[1]);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    Child *c = &r->kids[r->n_kids++];
    memset(c, 0, sizeof *c);
    c->pid = pid;
    c->fd = fds[0];
    c->doc = d;
    c->buf = g_string_new(NULL);
    c->deadline_ms = dq_now_ms() + 1000.0 * r->opt->page_timeout_s;
    d->children++;
    if (d->started_ms == 0)
        d->started_ms = dq_now_ms();
    return TRUE;
}

static void handle_line(Run *r, Child *c, char *line) {
    Doc *d = c->doc;
    char **f = g_strsplit(line, "\t", 10);
    guint n = g_strv_length(f);
    if (n >= 2 && strcmp(f[0], "count") == 0) {
        int count = atoi(f[1]);
        if (d->page_count < 0 && count > r->opt->max_pages) {
            /* Decided here too, before allocating anything for a count a file can fake. */
            d->page_count = count;
            char *m = g_strdup_printf("%s: %d pages is over the limit of %d", d->entry->path, count,
                                      r->opt->max_pages);
            doc_fail(d, DQ_INGEST_TOO_MANY_PAGES, m);
            g_free(m);
        } else if (d->page_count < 0 && count >= 0) {
            d->page_count = count;
            d->pages = g_new0(PageResult, count > 0 ? count : 1);
            if (n >= 3 && f[2][0] != '\0')
                d->warning = g_strdup(f[2]);
            if (n >= 4 && f[3][0] != '\0')
                d->note = g_strdup(f[3]);
            /* The pages stored already are this rendering's as they are (the workers skip
             * them); one past the count (the same bytes cannot give fewer pages) is not. */
            for (guint i = 0; d->stored != NULL && i < d->stored->len; i++) {
                const DqStoredPage *sp = g_ptr_array_index(d->stored, i);
                if (sp->page_number < 1 || sp->page_number > count)
                    continue;
                page_resolve(d, sp->page_number, sp->status, sp->width, sp->height,
                             sp->source_width, sp->source_height, sp->image_sha256, sp->error_code,
                             sp->error_message);
                d->pages[sp->page_number - 1].kept = TRUE;
                d->n_kept++;
            }
        }
    } else if (n >= 3 && strcmp(f[0], "fail") == 0) {
        c->fail_seen = TRUE;
        int reason = DQ_INGEST_DAMAGED;
        for (size_t i = 1; i < G_N_ELEMENTS(reason_names); i++)
            if (reason_names[i] && strcmp(reason_names[i], f[1]) == 0)
                reason = (int)i;
        if (reason == DQ_INGEST_DAMAGED && d->entry->kind_by_name) {
            /* Named .pdf, no header where poppler looks, and poppler found no PDF further in
             * either, yet the first bytes are no format we know (text, noise): a PDF damaged
             * at its start for all we can tell, as the corpus manifest calls such a file. */
            char *m = g_strdup_printf("%s (it does not begin with a PDF header)", f[2]);
            doc_fail(d, reason, m);
            g_free(m);
        } else {
            doc_fail(d, reason, f[2]);
        }
    } else if (n >= 2 && strcmp(f[0], "begin") == 0) {
        c->current_page = atoi(f[1]);
    } else if (n >= 10 && strcmp(f[0], "page") == 0) {
        page_resolve(d, atoi(f[1]), f[2], atoi(f[3]), atoi(f[4]), g_ascii_strtod(f[5], NULL),
                     g_ascii_strtod(f[6], NULL), f[7], f[8], f[9]);
        c->current_page = 0;
    } else if (n >= 1 && strcmp(f[0], "done") == 0) {
        c->done_seen = TRUE;
    } else if (n >= 1 && strcmp(f[0], "oom") == 0) {
        c->out_of_memory = TRUE;
    }
    g_strfreev(f);
}

static char *doc_timeout_message(Run *r) {
    return g_strdup_printf("the document took more than %d s (--doc-timeout); not rendered",
                           r->opt->doc_timeout_s);
}

/* Pages not done when the document ran out of time (or the ingest was interrupted) fail as
 * `why`; those done are kept. */
static void resolve_rest(Doc *d, DqIngestReason why, const char *how) {
    char *msg = g_strdup_printf("%s: %s", d->entry->path, how);
    if (d->page_count < 0)
        doc_fail(d, why, msg);
    for (int p = 1; p <= d->page_count; p++)
        page_resolve(d, p, "failed", 0, 0, 0, 0, NULL, dq_ingest_reason_name(why), msg);
    g_free(msg);
}

static void settle_doc(Run *r, Doc *d);

static void finish_if_complete(Run *r, Doc *d) {
    if (d->children > 0)
        return;
    if (d->out_of_time && !doc_complete(d)) {
        char *how = doc_timeout_message(r);
        resolve_rest(d, DQ_INGEST_RENDER_TIMEOUT, how);
        g_free(how);
    }
    if (!doc_complete(d)) {
        /* Pages remain and no process is on them (the last one died): start another, but not
         * forever. Each restart resolves at least the page that killed its predecessor. */
        if (d->restarts++ <= d->page_count + 2) {
            g_queue_push_tail(&r->restart, d);
            return;
        }
        for (int p = 1; p <= d->page_count; p++)
            page_resolve(d, p, "failed", 0, 0, 0, 0, NULL,
                         dq_ingest_reason_name(DQ_INGEST_RENDER_CRASHED),
                         "worker processes kept dying");
    }
    g_ptr_array_remove(r->active, d);
    settle_doc(r, d);
}

/* Records a document whose pages are all resolved, unless its file changed meanwhile; frees it. */
static void settle_doc(Run *r, Doc *d) {
    /* Workers read the file hashed (its descriptor) as they render: the pages are of the hashed
     * bytes only if it is as it was when hashed; and they are the path's only if the path
     * still names that file (not one put in its place). */
    struct stat st;
    FileStamp now, at_path;
    memset(&now, 0, sizeof now);
    memset(&at_path, 0, sizeof at_path);
    if (fstat(d->fd, &st) == 0)
        file_stamp(&now, &st);
    if (stat(d->entry->path, &st) == 0)
        file_stamp(&at_path, &st);
    if (file_stamp_equal(&d->stamp, &now) && file_stamp_equal(&d->stamp, &at_path))
        record_doc(r, d);
    else
        report_changed(r, d, NULL);
    doc_free(d);
}

static void reap_child(Run *r, int i) {
    Child *c = &r->kids[i];
    Doc *d = c->doc;
    int status = 0;
    while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
        ;
#ifdef DQ_UNDER_ASAN
    /* A worker that said its last line and then did not exit 0 had a sanitizer report at its
     * exit (worker_exit: LeakSanitizer's check), on stderr above. Its document is settled, so
     * nothing else would show it: the sanitizer runs must fail as on any process's report. One
     * this process killed (a clock ran out during that slow check, on a loaded machine) had
     * none. */
    if ((c->done_seen || c->fail_seen) && !c->timed_out && !c->out_of_time &&
        !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        g_printerr("ingest: the render worker for %s failed at its exit (a sanitizer report)\n",
                   d->entry->path);
        abort();
    }
#endif
    /* spawn_child set c->doc and c->buf before it counted the child in n_kids; the analyzer
     * loses that across the poll loop (here, read_child and run's loop). */
    // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
    if (!c->done_seen && d->fail_reason == 0) {
        /* SIGXCPU: the worker's CPU limit (worker.c) ran out before this process's clock did
         * (this process was stopped, or too busy to look). */
        gboolean cpu = WIFSIGNALED(status) && WTERMSIG(status) == SIGXCPU;
        gboolean oom = !c->timed_out && !cpu && c->out_of_memory;
        DqIngestReason why = c->timed_out || cpu || c->out_of_time ? DQ_INGEST_RENDER_TIMEOUT
                             : oom                                 ? DQ_INGEST_OUT_OF_MEMORY
                                                                   : DQ_INGEST_RENDER_CRASHED;
        char *how =
            c->out_of_time ? doc_timeout_message(r)
            : c->timed_out
                ? g_strdup_printf("no progress for %d s, worker killed", r->opt->page_timeout_s)
            : cpu ? g_strdup_printf("over %d s of CPU time, worker stopped",
                                    r->opt->page_timeout_s + WORKER_CPU_SLACK_S)
            : oom ? g_strdup_printf("out of memory under the limit of %" G_GINT64_FORMAT
                                    " MiB per render process (--mem-limit); worker "
                                    "died: %s",
                                    r->opt->mem_limit_mb,
                                    WIFSIGNALED(status) ? g_strsignal(WTERMSIG(status)) : "exited")
            : WIFSIGNALED(status)
                ? g_strdup_printf("worker died: %s", g_strsignal(WTERMSIG(status)))
                : g_strdup_printf("worker exited with status %d", WEXITSTATUS(status));
        char *msg = c->current_page > 0
                        ? g_strdup_printf("%s: page %d: %s", d->entry->path, c->current_page, how)
                        : g_strdup_printf("%s: %s", d->entry->path, how);
        if (c->current_page > 0)
            page_resolve(d, c->current_page, "failed", 0, 0, 0, 0, NULL, dq_ingest_reason_name(why),
                         msg);
        else if (d->page_count < 0)
            doc_fail(d, why, msg);
        g_free(how);
        g_free(msg);
    }
    close(c->fd);
    g_string_free(c->buf, TRUE);
    d->children--;
    r->kids[i] = r->kids[--r->n_kids];
    finish_if_complete(r, d);
}

/* Reads what a child wrote; returns FALSE at end of file. */
static gboolean read_child(Run *r, Child *c) {
    char buf[4096];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return TRUE;
    if (n <= 0)
        return FALSE;
    g_string_append_len(c->buf, buf, n);
    char *nl;
    // NOLINTNEXTLINE(clang-analyzer-core.NullDereference): see reap_child
    while ((nl = memchr(c->buf->str, '\n', c->buf->len)) != NULL) {
        *nl = '\0';
        handle_line(r, c, c->buf->str);
        g_string_erase(c->buf, 0, nl - c->buf->str + 1);
    }
    c->deadline_ms = dq_now_ms() + 1000.0 * r->opt->page_timeout_s;
    return TRUE;
}

/* Pages of a document no process has taken yet, less those stored already (never rendered). */
static int pages_left(const Doc *d) {
    int next = __atomic_load_n(&d->shared->next_page, __ATOMIC_SEQ_CST);
    int left = d->page_count - next;
    for (guint i = 0; d->stored != NULL && i < d->stored->len; i++)
        if (d->stored_pages[i] > next && d->stored_pages[i] <= d->page_count)
            left--;
    return left;
}

/* The next document to give a free process: a restart, a new file, one another ingest was
 * rendering when we came to it, or extra hands for a long document once no new file is
 * waiting. */
static Doc *next_work(Run *r) {
    Doc *d = g_queue_pop_head(&r->restart);
    if (d != NULL)
        return d;
    while (r->next_entry < r->entries->len && r->fatal == NULL && !interrupted) {
        d = prepare_doc(r, g_ptr_array_index(r->entries, r->next_entry++));
        if (d != NULL)
            return d;
    }
    if (r->fatal != NULL || interrupted)
        return NULL;
    /* Put off: tried again whenever a process is free (the other ingest may be done with it);
     * once this one has nothing else to do, those still claimed are left to the other. */
    for (guint n = g_queue_get_length(&r->deferred); n > 0 && r->fatal == NULL; n--)
        if ((d = claim_doc(r, g_queue_pop_head(&r->deferred), TRUE)) != NULL)
            return d;
    while (r->n_kids == 0 && r->fatal == NULL && !g_queue_is_empty(&r->deferred))
        if ((d = claim_doc(r, g_queue_pop_head(&r->deferred), FALSE)) != NULL)
            return d;
    if (r->fatal != NULL)
        return NULL;
    Doc *best = NULL;
    int best_left = 1;
    for (guint i = 0; i < r->active->len; i++) {
        Doc *a = g_ptr_array_index(r->active, i);
        if (a->fail_reason != 0 || a->page_count < 0 || a->out_of_time)
            continue;
        int left = pages_left(a);
        if (left > best_left) {
            best = a;
            best_left = left;
        }
    }
    return best;
}

static void show_progress(Run *r, gboolean final) {
    double now = dq_now_ms();
    if (!final && now - r->last_progress < 250)
        return;
    r->last_progress = now;
    double secs = (now - r->t0) / 1000.0;
    int pages = r->sum->pages_ok + r->sum->pages_failed;
    for (guint i = 0; i < r->active->len; i++) {
        const Doc *a = g_ptr_array_index(r->active, i);
        pages += a->resolved - a->n_kept;
    }
    char eta[32] = "?";
    if (r->bytes_done > 0 && r->bytes_total > r->bytes_done) {
        int left = (int)(secs * (double)(r->bytes_total - r->bytes_done) / (double)r->bytes_done);
        snprintf(eta, sizeof eta, "%d:%02d", left / 60, left % 60);
    } else if (r->bytes_total <= r->bytes_done) {
        snprintf(eta, sizeof eta, "0:00");
    }
    fprintf(stderr, "\r\033[Kingest: files %d/%u  pages %d  %.1f pages/s  ETA %s%s", r->files_done,
            r->entries->len, pages, secs > 0 ? pages / secs : 0.0, eta, final ? "\n" : "");
    fflush(stderr);
}

static gint compare_paths(gconstpointer a, gconstpointer b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether the file a recorded path names is gone: no such file (a dangling link included). Any
 * other answer (no permission on a folder, an I/O error) is no proof of that. */
static gboolean file_gone(const char *path) {
    struct stat st;
    return stat(path, &st) != 0 && (errno == ENOENT || errno == ENOTDIR);
}

/* Whether `path` lies inside the absolute folder `folder`. */
static gboolean path_under(const char *path, const char *folder) {
    size_t n = strlen(folder);
    return strncmp(path, folder, n) == 0 && (n > 0 && (folder[n - 1] == '/' || path[n] == '/'));
}

static void empty_root_free(DqIngestEmptyRoot *e) {
    g_free(e->root);
    g_free(e);
}

/* Adds `folder` to `mine` (the paths to mark gone) when its newest version is recorded as an
 * unreadable path, not among the paths `marked` gone already. */
static gboolean unreadable_row_gone(Run *r, const char *folder, const GPtrArray *marked,
                                    GPtrArray *mine, GError **err) {
    DqDocumentLookup found = {0};
    if (!dq_store_document_find(r->store, folder, NULL, r->settings, &found, err))
        return FALSE;
    gboolean gone = FALSE;
    for (guint i = 0; found.id != 0 && i < marked->len && !gone; i++)
        gone = strcmp(g_ptr_array_index(marked, i), folder) == 0;
    if (found.id != 0 && !gone)
        g_ptr_array_add(mine, g_strdup(folder));
    dq_document_lookup_clear(&found);
    return TRUE;
}

/* The walk's entries for the folders given that are not there, while documents are recorded
 * under them: failures of folders that cannot be listed, not documents. */
static void drop_missing_folders(Run *r, GPtrArray *missing_folders) {
    for (guint f = 0; f < missing_folders->len; f++) {
        const char *folder = g_ptr_array_index(missing_folders, f);
        for (guint i = 0; i < r->entries->len; i++) {
            WalkEntry *e = g_ptr_array_index(r->entries, i);
            if (!e->explicit || strcmp(e->path, folder) != 0)
                continue;
            char *m = g_strdup_printf("%s: cannot list the folder: %s", e->path,
                                      g_strerror(e->open_errno));
            add_failure(r->sum, e->path, "failed", dq_ingest_reason_name(DQ_INGEST_UNREADABLE), m);
            g_free(m);
            r->sum->folders_unreadable++;
            r->sum->files--;
            g_ptr_array_remove_index(r->entries, i);
            break;
        }
    }
}

/* What the walk found (a file named on the command line is an entry even when it is not
 * there): the paths, owned by the entries. */
static GHashTable *walked_paths(const Run *r) {
    GHashTable *walked = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < r->entries->len; i++) {
        const WalkEntry *e = g_ptr_array_index(r->entries, i);
        if (e->open_errno != ENOENT && e->open_errno != ENOTDIR)
            g_hash_table_add(walked, e->path);
    }
    return walked;
}

/* What note_gone_files gathers over the roots before it marks anything. */
typedef struct {
    Run *r;
    GHashTable *walked;         /* the paths the walk found */
    GPtrArray *marked;          /* the paths recorded as gone already (char*) */
    GPtrArray *candidates;      /* per root: the paths it would mark gone (char*) */
    GPtrArray *guarded;         /* the folders held back (char*) */
    GPtrArray *missing_folders; /* the roots given that are not there (char*) */
} GoneScan;

/* The paths recorded under `folder` whose files are gone and that the walk did not find, added
 * to `mine`; *n_known: how many paths are recorded under it. */
static gboolean gone_under(const GoneScan *g, const char *folder, GPtrArray *mine, guint *n_known,
                           GError **err) {
    GPtrArray *known = dq_store_document_paths_under(g->r->store, folder, err);
    if (known == NULL)
        return FALSE;
    for (guint i = 0; i < known->len; i++) {
        DqKnownPath *k = g_ptr_array_index(known, i);
        if (k->missing || g_hash_table_contains(g->walked, k->path) || !file_gone(k->path))
            continue;
        g_ptr_array_add(mine, g_steal_pointer(&k->path));
    }
    *n_known = known->len;
    g_ptr_array_free(known, TRUE);
    return TRUE;
}

/* Whether the root `folder` is to be held back as empty: it would mark paths gone, while the
 * walk found no document under it. */
static gboolean root_held_back(const GoneScan *g, const char *folder, GPtrArray *mine,
                               gboolean is_dir, gboolean missing) {
    gboolean empty = mine->len > 0 && !g->r->opt->allow_empty_root && (is_dir || missing);
    for (guint i = 0; empty && i < g->r->entries->len; i++) {
        const WalkEntry *e = g_ptr_array_index(g->r->entries, i);
        if (g_hash_table_contains(g->walked, e->path) && path_under(e->path, folder))
            empty = FALSE;
    }
    for (guint i = 0; empty && i < g->guarded->len; i++)
        if (strcmp(g_ptr_array_index(g->guarded, i), folder) == 0) {
            empty = FALSE; /* the same folder named twice: said once */
            g_ptr_array_set_size(mine, 0);
        }
    return empty;
}

/* One root given: the paths under it to mark gone, appended to the candidates, unless it is held
 * back (then reported in the summary's empty roots). */
static gboolean scan_root(GoneScan *g, const char *root, const char *cwd, GError **err) {
    GPtrArray *mine = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(g->candidates, mine);
    if (*root == '\0')
        return TRUE;
    /* As the walk names what it finds (walk.c): the stored paths begin so. */
    char *folder = g_canonicalize_filename(root, cwd);
    guint n_known = 0;
    if (!gone_under(g, folder, mine, &n_known, err)) {
        g_free(folder);
        return FALSE;
    }
    /* A folder not there at all (a share's mount point that was never made, or removed with
     * the share) is held back as an empty one. Documents recorded under the name say it was
     * a folder: it is reported as one that cannot be listed, not recorded as a document
     * (which would stay in documents_current, failed, once the folder is back). */
    struct stat st;
    gboolean there = stat(folder, &st) == 0;
    gboolean missing = !there && n_known > 0 && file_gone(folder);
    if (missing)
        g_ptr_array_add(g->missing_folders, g_strdup(folder));
    /* A path recorded as unreadable that is a folder now (a mistyped path made later, or a
     * missing root recorded before such roots were held back): that row names no file. */
    if (there && S_ISDIR(st.st_mode) && !unreadable_row_gone(g->r, folder, g->marked, mine, err)) {
        g_free(folder);
        return FALSE;
    }
    if (root_held_back(g, folder, mine, there && S_ISDIR(st.st_mode), missing)) {
        DqIngestEmptyRoot *er = g_new0(DqIngestEmptyRoot, 1);
        er->root = g_strdup(root);
        er->would_be_gone = (int)mine->len;
        er->missing = missing;
        g_ptr_array_add(g->r->sum->empty_roots, er);
        g_ptr_array_add(g->guarded, g_steal_pointer(&folder));
        g_ptr_array_set_size(mine, 0);
    }
    g_free(folder);
    return TRUE;
}

/* The candidates of every root, each path once, sorted. A folder held back is held back when a
 * folder above it is given too. */
static GPtrArray *gone_not_held(const GoneScan *g) {
    GPtrArray *gone = g_ptr_array_new_with_free_func(g_free);
    GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint c = 0; c < g->candidates->len; c++) {
        GPtrArray *mine = g_ptr_array_index(g->candidates, c);
        for (guint i = 0; i < mine->len; i++) {
            char *path = g_ptr_array_index(mine, i);
            gboolean held = g_hash_table_contains(seen, path);
            for (guint j = 0; !held && j < g->guarded->len; j++)
                held = path_under(path, g_ptr_array_index(g->guarded, j));
            if (held)
                continue;
            g_hash_table_add(seen, path);
            g_ptr_array_add(gone, g_strdup(path));
        }
    }
    g_hash_table_destroy(seen);
    g_ptr_array_sort(gone, compare_paths);
    return gone;
}

/* Marks the paths recorded under the folders named in `roots` whose files are gone, and unmarks
 * those the walk found: a file that came back (or bytes of another version there now) is what
 * its path holds again. One transaction, before any rendering: what is gone is known once the
 * walk is done. A folder that is there but in which the walk found no document, while documents
 * are recorded under it, marks nothing gone without allow_empty_root: that is what the mount
 * point of a share that failed to mount looks like, and marking a whole archive gone (its
 * documents leave documents_current and ask) for that is the costly mistake; a folder that
 * merely holds fewer files marks those gone. A folder given that is not there at all is held
 * back the same way. */
static gboolean note_gone_files(Run *r, const char *const *roots, GError **err) {
    GoneScan g = {
        .r = r,
        .walked = walked_paths(r),
        .candidates = g_ptr_array_new_with_free_func((GDestroyNotify)g_ptr_array_unref),
        .guarded = g_ptr_array_new_with_free_func(g_free),
        .missing_folders = g_ptr_array_new_with_free_func(g_free),
    };
    GPtrArray *back = g_ptr_array_new(), *gone = NULL;
    gboolean ok = FALSE;
    g.marked = dq_store_document_paths_gone(r->store, err);
    if (g.marked == NULL)
        goto out;
    for (guint i = 0; i < g.marked->len; i++)
        if (g_hash_table_contains(g.walked, g_ptr_array_index(g.marked, i)))
            g_ptr_array_add(back, g_ptr_array_index(g.marked, i));
    char *cwd = g_get_current_dir();
    for (const char *const *root = roots; *root; root++)
        if (!scan_root(&g, *root, cwd, err)) {
            g_free(cwd);
            goto out;
        }
    g_free(cwd);
    gone = gone_not_held(&g);
    if (!dq_store_document_paths_mark(r->store, (const char *const *)gone->pdata, (int)gone->len,
                                      (const char *const *)back->pdata, (int)back->len, err))
        goto out;
    for (guint i = 0; i < gone->len; i++)
        g_ptr_array_add(r->sum->gone, dq_utf8_escape_invalid(g_ptr_array_index(gone, i)));
    for (guint i = 0; i < back->len; i++)
        g_hash_table_add(r->came_back, g_strdup(g_ptr_array_index(back, i)));
    drop_missing_folders(r, g.missing_folders);
    ok = TRUE;
out:
    if (g.marked)
        g_ptr_array_free(g.marked, TRUE);
    g_hash_table_destroy(g.walked);
    g_ptr_array_free(back, TRUE);
    if (gone)
        g_ptr_array_free(gone, TRUE);
    g_ptr_array_free(g.candidates, TRUE);
    g_ptr_array_free(g.guarded, TRUE);
    g_ptr_array_free(g.missing_folders, TRUE);
    return ok;
}

static void summary_init(DqIngestSummary *sum) {
    memset(sum, 0, sizeof *sum);
    sum->failures = g_ptr_array_new_with_free_func((GDestroyNotify)failure_free);
    sum->busy = g_ptr_array_new_with_free_func((GDestroyNotify)failure_free);
    sum->failed_by_code = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    sum->partial_by_code = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    sum->gone = g_ptr_array_new_with_free_func(g_free);
    sum->empty_roots = g_ptr_array_new_with_free_func((GDestroyNotify)empty_root_free);
    sum->links_not_followed = g_ptr_array_new_with_free_func((GDestroyNotify)failure_free);
}

/* The page store beside the database, made if need be and swept of what earlier runs left. */
static gboolean open_page_store(Run *r, GError **err) {
    r->settings = dq_ingest_render_settings(r->opt);
    r->store_dir = dq_store_page_dir_for(dq_store_path(r->store), err);
    if (r->store_dir == NULL)
        return FALSE;
    GError *made = NULL;
    if (!page_store_make(r->store_dir, &made)) {
        dq_fail(err, DQ_ERR_IO, "cannot make the page store: %s", made->message);
        g_error_free(made);
        return FALSE;
    }
    page_store_sweep(r->store_dir, 3600);
    page_store_sweep_claims(r->store_dir);
    r->swept = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    r->came_back = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return TRUE;
}

static void note_unreadable_folders(DqIngestSummary *sum, const GPtrArray *unreadable) {
    for (guint i = 0; i < unreadable->len; i++) {
        const WalkEntry *e = g_ptr_array_index(unreadable, i);
        char *m =
            g_strdup_printf("%s: cannot list the folder: %s", e->path, g_strerror(e->open_errno));
        add_failure(sum, e->path, "failed", dq_ingest_reason_name(DQ_INGEST_UNREADABLE), m);
        g_free(m);
    }
    sum->folders_unreadable = (int)unreadable->len;
}

/* The files to ingest under `paths`; the stop signals caught from here on. */
static void walk_archive(Run *r, const char *const *paths, struct sigaction *old_handlers) {
    DqIngestSummary *sum = r->sum;
    GPtrArray *unreadable = g_ptr_array_new_with_free_func((GDestroyNotify)walk_entry_free);
    /* A folder that holds the database: its own files and page images are not the archive's
     * (the PNGs would be counted as other files, the database as a file skipped). */
    char *db_file = dq_store_real_file(dq_store_path(r->store));
    char *wal = g_strconcat(db_file, "-wal", NULL), *shm = g_strconcat(db_file, "-shm", NULL),
         *journal = g_strconcat(db_file, "-journal", NULL);
    const char *exclude[] = {r->store_dir, db_file, wal, shm, journal, NULL};
    /* Caught from the walk on, so that a signal at any point leaves a summary (and the exit
     * status 130); the walk itself (directory listings) is finished first. */
    catch_stop_signals(old_handlers);
    GPtrArray *links = g_ptr_array_new_with_free_func((GDestroyNotify)walk_entry_free);
    r->entries = ingest_walk(paths, r->opt->hidden, exclude, &sum->skipped, unreadable, links);
    add_links_not_followed(sum, links);
    g_ptr_array_free(links, TRUE);
    dq_test_point("ingest:walked");
    r->real_roots = ingest_real_roots(paths);
    g_free(wal);
    g_free(shm);
    g_free(journal);
    g_free(db_file);
    note_unreadable_folders(sum, unreadable);
    g_ptr_array_free(unreadable, TRUE);
    sum->files = (int)r->entries->len;
    for (guint i = 0; i < r->entries->len; i++)
        r->bytes_total += ((WalkEntry *)g_ptr_array_index(r->entries, i))->bytes;
}

/* Kills child i when its page's deadline or its document's --doc-timeout has passed; reaps it
 * when its pipe closed. */
static void watch_child(Run *r, int i, gboolean readable, double now) {
    const DqIngestOptions *opt = r->opt;
    Child *c = &r->kids[i];
    gboolean open = TRUE;
    if (readable)
        open = read_child(r, c);
    Doc *d = c->doc;
    // NOLINTNEXTLINE(clang-analyzer-core.NullDereference): see reap_child
    if (opt->doc_timeout_s > 0 && d->started_ms > 0 &&
        now > d->started_ms + 1000.0 * opt->doc_timeout_s)
        d->out_of_time = TRUE;
    // NOLINTNEXTLINE(clang-analyzer-core.NullDereference): see reap_child
    if (open && d->out_of_time && !c->out_of_time && !c->timed_out) {
        c->out_of_time = TRUE;
        kill(c->pid, SIGKILL);
    }
    if (open && now > c->deadline_ms && !c->timed_out && !c->out_of_time) {
        c->timed_out = TRUE;
        kill(c->pid, SIGKILL);
    }
    if (!open)
        reap_child(r, i);
}

/* One wait for the children (until the nearest deadline, at most 250 ms) and what they said.
 * FALSE: stop rendering (a signal, or poll failed). */
static gboolean poll_children(Run *r) {
    struct pollfd pfd[r->n_kids];
    double now = dq_now_ms();
    double wait = 250;
    for (int i = 0; i < r->n_kids; i++) {
        pfd[i].fd = r->kids[i].fd;
        pfd[i].events = POLLIN;
        pfd[i].revents = 0;
        wait = MIN(wait, r->kids[i].deadline_ms - now);
    }
    int pr = poll(pfd, r->n_kids, wait < 0 ? 0 : (int)wait + 1);
    if (pr < 0 && errno != EINTR) {
        dq_fail(&r->fatal, DQ_ERR_IO, "poll: %s", g_strerror(errno));
        return FALSE;
    }
    if (interrupted)
        return FALSE;
    now = dq_now_ms();
    /* Walk backwards: reap_child moves the last child into the freed slot. */
    for (int i = r->n_kids - 1; i >= 0; i--)
        watch_child(r, i, pr > 0 && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)), now);
    return TRUE;
}

/* Up to opt->jobs render processes at a time until every document is done, a signal comes or
 * an error stops the run. */
static void render_all(Run *r) {
    r->active = g_ptr_array_new();
    g_queue_init(&r->restart);
    g_queue_init(&r->deferred);
    r->kids = g_new0(Child, r->opt->jobs);
    for (;;) {
        while (!interrupted && r->fatal == NULL && r->n_kids < r->opt->jobs) {
            Doc *d = next_work(r);
            if (d == NULL || !spawn_child(r, d))
                break;
        }
        if (r->n_kids == 0 || interrupted || r->fatal != NULL || !poll_children(r))
            break;
        if (r->opt->progress)
            show_progress(r, FALSE);
    }
}

/* Interrupted or fatal: stop what runs. Interrupted, a document with pages done is recorded
 * partial, the rest of its pages failed as `interrupted` (--retry-failed renders them); one with
 * none done is abandoned, as is everything after a fatal error. Pages a worker reported before
 * the interrupt came are taken first: the signal may have cut short the poll that would have
 * read them. */
static void stop_children(Run *r) {
    for (int i = 0; interrupted && r->fatal == NULL && i < r->n_kids; i++) {
        struct pollfd p = {.fd = r->kids[i].fd, .events = POLLIN};
        while (poll(&p, 1, 0) > 0 && (p.revents & POLLIN) && read_child(r, &r->kids[i]))
            ;
    }
    for (int i = 0; i < r->n_kids; i++) {
        kill(r->kids[i].pid, SIGKILL);
        waitpid(r->kids[i].pid, NULL, 0);
        close(r->kids[i].fd);
        g_string_free(r->kids[i].buf, TRUE);
    }
    for (guint i = 0; i < r->active->len; i++) {
        Doc *d = g_ptr_array_index(r->active, i);
        if (r->fatal == NULL && interrupted && d->fail_reason == 0 && d->resolved > 0) {
            resolve_rest(d, DQ_INGEST_INTERRUPTED, "the ingest was interrupted; not rendered");
            settle_doc(r, d);
        } else {
            doc_free(d);
        }
    }
    g_ptr_array_free(r->active, TRUE);
    g_queue_clear(&r->restart);
    /* Put off and not come back to (interrupted, or a fatal error): not done. */
    g_queue_clear_full(&r->deferred, (GDestroyNotify)doc_free);
}

static void run_clear(Run *r) {
    g_free(r->kids);
    if (r->entries != NULL)
        g_ptr_array_free(r->entries, TRUE);
    g_free(r->settings);
    g_free(r->store_dir);
    g_strfreev(r->real_roots);
    if (r->swept != NULL)
        g_hash_table_destroy(r->swept);
    if (r->came_back != NULL)
        g_hash_table_destroy(r->came_back);
}

gboolean dq_ingest_run(DqStore *store, const char *const *paths, const DqIngestOptions *opt,
                       DqIngestSummary *sum, GError **err) {
    summary_init(sum);
    if (opt->n_res < 1 || opt->tile < 16 || opt->jobs < 1 || opt->max_pixels < 1 ||
        opt->max_pages < 1 || opt->page_timeout_s < 1)
        return dq_fail(err, DQ_ERR_ARGS, "ingest: invalid options (n_res %d, tile %d, jobs %d)",
                       opt->n_res, opt->tile, opt->jobs);
    Run r = {.store = store, .opt = opt, .sum = sum};
    r.t0 = dq_now_ms();
    if (!open_page_store(&r, err)) {
        run_clear(&r);
        return FALSE;
    }
    struct sigaction old_handlers[G_N_ELEMENTS(stop_signals)];
    walk_archive(&r, paths, old_handlers);
    /* Interrupted, nothing is concluded from the walk: the files are looked at next time. */
    if (!interrupted && !note_gone_files(&r, paths, err)) {
        restore_stop_signals(old_handlers);
        run_clear(&r);
        return FALSE;
    }
    render_all(&r);
    stop_children(&r);
    restore_stop_signals(old_handlers);
    sum->interrupted = interrupted != 0;
    /* Every file is counted once: settled one way or another, or left undone. */
    sum->not_done =
        sum->files - (sum->documents_ok + sum->documents_partial + sum->documents_failed +
                      sum->unchanged + sum->changed + sum->elsewhere);
    sum->seconds = (dq_now_ms() - r.t0) / 1000.0;
    if (opt->progress)
        show_progress(&r, TRUE);
    run_clear(&r);
    if (r.fatal != NULL) {
        g_propagate_error(err, r.fatal);
        return FALSE;
    }
    return TRUE;
}
