/* docqa ingest: PDFs and TIFFs -> page images + database rows (see ingest/ingest.h). */
#include "cli.h"

#include "ingest.h"
#include "store.h"
#include "text.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* JSON strings must be UTF-8; file names need not be. */
static void add_string(JsonBuilder *b, const char *name, const char *value) {
    char *valid = g_utf8_make_valid(value ? value : "", -1);
    json_builder_set_member_name(b, name);
    json_builder_add_string_value(b, valid);
    g_free(valid);
}

/* `name`: [{path, status?, code?, message}] of DqIngestFailure, the fields a list has. */
static void add_failures(JsonBuilder *b, const char *name, const GPtrArray *list,
                         gboolean with_status, gboolean with_code) {
    json_builder_set_member_name(b, name);
    json_builder_begin_array(b);
    for (guint i = 0; i < list->len; i++) {
        const DqIngestFailure *f = g_ptr_array_index(list, i);
        json_builder_begin_object(b);
        add_string(b, "path", f->path);
        if (with_status)
            add_string(b, "status", f->status);
        if (with_code)
            add_string(b, "code", f->code);
        add_string(b, "message", f->message);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
}

/* The codes of a by-code table, sorted: output that does not change from run to run. */
static GList *sorted_codes(GHashTable *by_code) {
    return g_list_sort(g_hash_table_get_keys(by_code), (GCompareFunc)strcmp);
}

static void add_codes(JsonBuilder *b, const char *name, GHashTable *by_code) {
    json_builder_set_member_name(b, name);
    json_builder_begin_object(b);
    GList *keys = sorted_codes(by_code);
    for (GList *k = keys; k; k = k->next) {
        json_builder_set_member_name(b, k->data);
        json_builder_add_int_value(b, GPOINTER_TO_INT(g_hash_table_lookup(by_code, k->data)));
    }
    g_list_free(keys);
    json_builder_end_object(b);
}

/* " (2 damaged, 1 not_a_document)", or "" when there are none. */
static char *codes_text(GHashTable *by_code) {
    GString *t = g_string_new(NULL);
    GList *keys = sorted_codes(by_code);
    for (GList *k = keys; k; k = k->next)
        g_string_append_printf(t, "%s%d %s", k == keys ? " (" : ", ",
                               GPOINTER_TO_INT(g_hash_table_lookup(by_code, k->data)),
                               (const char *)k->data);
    if (keys != NULL)
        g_string_append_c(t, ')');
    g_list_free(keys);
    return g_string_free(t, FALSE);
}

static void print_json(const DqIngestSummary *s, int n_res, int tile) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    dq_cli_json_int(b, "files", s->files);
    dq_cli_json_int(b, "documents_ok", s->documents_ok);
    dq_cli_json_int(b, "documents_partial", s->documents_partial);
    dq_cli_json_int(b, "documents_failed", s->documents_failed);
    dq_cli_json_int(b, "unchanged", s->unchanged);
    dq_cli_json_int(b, "unchanged_failed_or_partial", s->unchanged_not_ok);
    dq_cli_json_int(b, "not_hashed", s->not_hashed);
    dq_cli_json_int(b, "resumed", s->resumed);
    dq_cli_json_int(b, "changed_during_ingest", s->changed);
    dq_cli_json_int(b, "in_progress_elsewhere", s->elsewhere);
    dq_cli_json_int(b, "not_done", s->not_done);
    dq_cli_json_int(b, "folders_unreadable", s->folders_unreadable);
    dq_cli_json_int(b, "skipped", s->skipped);
    dq_cli_json_int(b, "gone", (int)s->gone->len);
    dq_cli_json_int(b, "pages_ok", s->pages_ok);
    dq_cli_json_int(b, "pages_failed", s->pages_failed);
    dq_cli_json_int(b, "pages_already_stored", s->pages_kept);
    dq_cli_json_int(b, "n_res", n_res);
    dq_cli_json_int(b, "tile", tile);
    add_codes(b, "failed_by_code", s->failed_by_code);
    add_codes(b, "partial_by_code", s->partial_by_code);
    /* to the decimal the summary line shows */
    dq_cli_json_double(b, "seconds", s->seconds, 1);
    dq_cli_json_double(b, "pages_per_second", s->seconds > 0 ? s->pages_ok / s->seconds : 0.0, 1);
    json_builder_set_member_name(b, "interrupted");
    json_builder_add_boolean_value(b, s->interrupted);
    add_failures(b, "failures", s->failures, TRUE, TRUE);
    add_failures(b, "elsewhere", s->busy, FALSE, FALSE);
    add_failures(b, "links_not_followed", s->links_not_followed, FALSE, TRUE);
    json_builder_set_member_name(b, "gone_paths");
    json_builder_begin_array(b);
    for (guint i = 0; i < s->gone->len; i++)
        json_builder_add_string_value(b, g_ptr_array_index(s->gone, i));
    json_builder_end_array(b);
    json_builder_set_member_name(b, "empty_roots");
    json_builder_begin_array(b);
    for (guint i = 0; i < s->empty_roots->len; i++) {
        const DqIngestEmptyRoot *e = g_ptr_array_index(s->empty_roots, i);
        json_builder_begin_object(b);
        add_string(b, "root", e->root);
        dq_cli_json_int(b, "would_be_gone", e->would_be_gone);
        json_builder_set_member_name(b, "missing");
        json_builder_add_boolean_value(b, e->missing);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_end_object(b);
    dq_cli_json_print(b, TRUE);
}

static void print_text(const DqIngestSummary *s) {
    const GPtrArray *lists[] = {s->failures, s->busy, s->links_not_followed};
    for (gsize l = 0; l < G_N_ELEMENTS(lists); l++)
        for (guint i = 0; i < lists[l]->len; i++) {
            const DqIngestFailure *f = g_ptr_array_index(lists[l], i);
            /* Most messages begin with the document's path; those about a page or the page store
             * ("no page could be rendered; page 1: <page store folder>: ...") get it in front. */
            const char *m = f->message ? f->message : "";
            size_t n = strlen(f->path);
            gboolean named = strncmp(m, f->path, n) == 0 && (m[n] == ':' || m[n] == '\0');
            char *path = dq_cli_shown(f->path), *msg = dq_cli_shown(m);
            printf("%-7s %-18s %s%s%s\n", f->status, f->code, named ? "" : path,
                   named || !*m ? "" : ": ", msg);
            g_free(path);
            g_free(msg);
        }
    for (guint i = 0; i < s->gone->len; i++) {
        char *path = dq_cli_shown(g_ptr_array_index(s->gone, i));
        printf("%-7s %-18s %s: no longer there (its answers are kept)\n", "gone", "missing_since",
               path);
        g_free(path);
    }
    char earlier[64] = "", changed[64] = "", folders[64] = "", pages_failed[64] = "",
         not_done[80] = "", gone[64] = "", empty[128] = "", elsewhere[64] = "", kept[64] = "",
         resumed[96] = "", links[64] = "";
    if (s->links_not_followed->len > 0)
        snprintf(links, sizeof links, ", %u link%s not followed", s->links_not_followed->len,
                 s->links_not_followed->len == 1 ? "" : "s");
    if (s->unchanged_not_ok > 0)
        snprintf(earlier, sizeof earlier, ", %d of them failed or partial", s->unchanged_not_ok);
    if (s->resumed > 0)
        snprintf(resumed, sizeof resumed, "; %d resumed (interrupted or out of disk space before)",
                 s->resumed);
    if (s->changed > 0)
        snprintf(changed, sizeof changed, ", %d changed during ingest", s->changed);
    if (s->elsewhere > 0)
        snprintf(elsewhere, sizeof elsewhere, ", %d in progress elsewhere", s->elsewhere);
    if (s->folders_unreadable > 0)
        snprintf(folders, sizeof folders, "; %d folder%s could not be read", s->folders_unreadable,
                 s->folders_unreadable == 1 ? "" : "s");
    if (s->gone->len > 0)
        snprintf(gone, sizeof gone, "; %u file%s gone since the last ingest", s->gone->len,
                 s->gone->len == 1 ? "" : "s");
    guint missing = 0;
    for (guint i = 0; i < s->empty_roots->len; i++)
        missing += ((const DqIngestEmptyRoot *)g_ptr_array_index(s->empty_roots, i))->missing;
    guint held = s->empty_roots->len - missing;
    if (held > 0 && missing > 0)
        snprintf(empty, sizeof empty,
                 "; %u folder%s held no document and %u %s not there (nothing marked gone there)",
                 held, held == 1 ? "" : "s", missing, missing == 1 ? "was" : "were");
    else if (s->empty_roots->len > 0)
        snprintf(empty, sizeof empty, "; %u folder%s %s (nothing marked gone there)",
                 s->empty_roots->len, s->empty_roots->len == 1 ? "" : "s",
                 held > 0       ? "held no document"
                 : missing == 1 ? "was not there"
                                : "were not there");
    if (s->pages_failed > 0)
        snprintf(pages_failed, sizeof pages_failed, " (and %d failed)", s->pages_failed);
    if (s->pages_kept > 0)
        snprintf(kept, sizeof kept, ", %d already stored,", s->pages_kept);
    if (s->interrupted)
        snprintf(not_done, sizeof not_done, "; interrupted, %d file%s not done", s->not_done,
                 s->not_done == 1 ? "" : "s");
    char *partial_codes = codes_text(s->partial_by_code);
    char *failed_codes = codes_text(s->failed_by_code);
    printf("ingest: %d file%s: %d ok, %d partial%s, %d failed%s, %d unchanged%s%s%s (%d other "
           "file%s skipped%s%s)%s%s%s; %d page%s%s%s%s in %.1f s (%.1f pages/s)%s\n",
           s->files, s->files == 1 ? "" : "s", s->documents_ok, s->documents_partial, partial_codes,
           s->documents_failed, failed_codes, s->unchanged, earlier, changed, elsewhere, s->skipped,
           s->skipped == 1 ? "" : "s", links, folders, gone, empty, resumed, s->pages_ok,
           s->pages_ok == 1 ? "" : "s", s->pages_kept > 0 ? " rendered" : "", pages_failed, kept,
           s->seconds, s->seconds > 0 ? s->pages_ok / s->seconds : 0.0, not_done);
    g_free(partial_codes);
    g_free(failed_codes);
}

/* The command line, and what it comes to. */
typedef struct {
    DqIngestOptions opt;
    char *db, *model;
    char **paths;
    int tile; /* G_MININT: not given (--tile and --model exclude each other) */
    gboolean json, hidden, quiet, retry, verify, allow_empty_root, rehash;
    DqStore *store;
} IngestArgs;

static gboolean ingest_parse(IngestArgs *a, int argc, char **argv) {
    DqIngestOptions *opt = &a->opt;
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &a->db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"n-res", 0, 0, G_OPTION_ARG_INT, &opt->n_res,
         "longest edge = N x tile, at most 4096 as in transformers (default 5)", "N"},
        {"model", 0, 0, G_OPTION_ARG_FILENAME, &a->model,
         "take the tile size from this model snapshot's preprocessor_config.json", "DIR"},
        {"tile", 0, 0, G_OPTION_ARG_INT, &a->tile, "tile size in pixels (default 512)", "PX"},
        {"jobs", 'j', 0, G_OPTION_ARG_INT, &opt->jobs, "worker processes (default: all cores)",
         "N"},
        {"hidden", 0, 0, G_OPTION_ARG_NONE, &a->hidden, "also ingest hidden files and folders",
         NULL},
        {"max-pixels", 0, 0, G_OPTION_ARG_INT64, &opt->max_pixels,
         "fail pages that decode, render or resize to more pixels (default 178956970)", "N"},
        {"max-pages", 0, 0, G_OPTION_ARG_INT, &opt->max_pages,
         "fail documents with more pages (default 10000)", "N"},
        {"timeout", 0, 0, G_OPTION_ARG_INT, &opt->page_timeout_s,
         "seconds one page may take before its worker is killed (default 120)", "S"},
        {"mem-limit", 0, 0, G_OPTION_ARG_INT64, &opt->mem_limit_mb,
         "memory a worker may map for rendering, in MiB, on top of what it has mapped when it "
         "starts (libraries), 0 for no limit (default 4096); per worker: --jobs N may use N "
         "times it",
         "MIB"},
        {"doc-timeout", 0, 0, G_OPTION_ARG_INT, &opt->doc_timeout_s,
         "seconds one document may take; past it its pages not done fail as render_timeout "
         "(default 3600, 0 for no limit)",
         "S"},
        {"max-doc-bytes", 0, 0, G_OPTION_ARG_INT64, &opt->max_doc_bytes,
         "bytes of page images one document may add; past it its other pages fail as "
         "output_too_large (default 2147483648, 0 for no limit)",
         "N"},
        {"min-free", 0, 0, G_OPTION_ARG_INT64, &opt->min_free_mb,
         "MiB to leave free on the page store's disk: a page that would leave less fails as "
         "store_failed (default 256)",
         "MIB"},
        {"retry-failed", 0, 0, G_OPTION_ARG_NONE, &a->retry,
         "render again unchanged files that failed, or have pages that failed, on a limit, a "
         "crash, a timeout, memory or the output budget (--max-doc-bytes) (the pages not stored "
         "already only; those interrupted or out of disk space are rendered again without it)",
         NULL},
        {"verify", 0, 0, G_OPTION_ARG_NONE, &a->verify,
         "hash the page images of unchanged files and render again the pages whose images were "
         "replaced or damaged (without it only missing or empty ones are)",
         NULL},
        {"rehash", 0, 0, G_OPTION_ARG_NONE, &a->rehash,
         "read and hash every file, also those whose size, times (ns), inode and device are "
         "those stored when their bytes were last hashed (without it those are not read)",
         NULL},
        {"allow-empty-root", 0, 0, G_OPTION_ARG_NONE, &a->allow_empty_root,
         "mark gone the documents recorded under a folder given that holds no document now, or "
         "is not there (without it such a folder, an unmounted share's mount point, marks "
         "nothing gone and ingest exits 1)",
         NULL},
        {"json", 0, 0, G_OPTION_ARG_NONE, &a->json, "print the summary as JSON on stdout", NULL},
        {"quiet", 'q', 0, G_OPTION_ARG_NONE, &a->quiet, "no progress line", NULL},
        /* Paths here rather than left in argv: GLib leaves a "--" there, which is no path. */
        {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &a->paths, NULL, NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new("PATH... - render PDFs and TIFFs into page images");
    dq_cli_add_options(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "Files and folders (recursively) are ingested; exit status 0: all fine, 1: some "
             "inputs failed (recorded in the database) or changed while being ingested (not "
             "recorded), or a folder given held no document while documents recorded under it "
             "would have been marked gone (see --allow-empty-root), 2: could not run, 130: "
             "interrupted (SIGINT, SIGTERM or SIGHUP; the "
             "summary, or --json, is printed all the same).");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    return ok;
}

static gboolean ingest_check_paths(const IngestArgs *a) {
    int n_paths = a->paths ? (int)g_strv_length(a->paths) : 0;
    if (n_paths == 0) {
        dq_print_line(stderr, "docqa: ingest: no files or folders given (see --help)");
        return FALSE;
    }
    for (int i = 0; i < n_paths; i++)
        if (a->paths[i][0] == '\0') {
            /* an unset shell variable, usually; read as a path it would be the current folder */
            dq_print_line(stderr, "docqa: ingest: path %d of %d is empty", i + 1, n_paths);
            return FALSE;
        }
    return TRUE;
}

/* One line naming the first bad option and the value given, as the other commands' range
 * checks do; 0 means "no limit" for --mem-limit, --doc-timeout and --max-doc-bytes. */
static gboolean ingest_check_limits(const IngestArgs *a) {
    const DqIngestOptions *opt = &a->opt;
    const struct {
        const char *option;
        gint64 value, least, most; /* most: G_MAXINT64 for none */
        const char *rule;
    } checks[] = {
        {"--n-res", opt->n_res, 1, DQ_CLI_MAX_N_RES, "must be 1 to 64"},
        {"--tile", a->tile == G_MININT ? 16 : a->tile, 16, 8192, "must be 16 to 8192"},
        {"--jobs", opt->jobs, 1, G_MAXINT64, "must be at least 1"},
        {"--max-pixels", opt->max_pixels, 1, G_MAXINT64, "must be at least 1"},
        {"--max-pages", opt->max_pages, 1, G_MAXINT64, "must be at least 1"},
        {"--timeout", opt->page_timeout_s, 1, G_MAXINT64, "must be at least 1 second"},
        {"--mem-limit", opt->mem_limit_mb, 0, G_MAXINT64, "must be 0 (no limit) or more"},
        {"--doc-timeout", opt->doc_timeout_s, 0, G_MAXINT64, "must be 0 (no limit) or more"},
        {"--max-doc-bytes", opt->max_doc_bytes, 0, G_MAXINT64, "must be 0 (no limit) or more"},
        {"--min-free", opt->min_free_mb, 0, G_MAXINT64, "must be 0 or more"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(checks); i++)
        if (checks[i].value < checks[i].least || checks[i].value > checks[i].most) {
            dq_print_line(stderr, "docqa: ingest: %s %" G_GINT64_FORMAT ": %s", checks[i].option,
                          checks[i].value, checks[i].rule);
            return FALSE;
        }
    return TRUE;
}

/* The tile size: --tile's, the --model snapshot's, or the default. */
static int ingest_take_tile(IngestArgs *a) {
    const char *model = a->model;
    if (model != NULL && *model == '\0') {
        dq_print_line(stderr, "docqa: ingest: --model '': an empty folder name");
        return DQ_EXIT_FATAL;
    }
    if (model != NULL && a->tile != G_MININT) {
        dq_print_line(stderr, "docqa: ingest: give --model or --tile, not both");
        return DQ_EXIT_FATAL;
    }
    if (model != NULL && !dq_cli_model_dir("ingest", "--model", model))
        return DQ_EXIT_FATAL;
    GError *err = NULL;
    if (model != NULL && !dq_ingest_tile_from_model(model, &a->opt.tile, &err))
        return dq_cli_fail(err);
    if (a->tile != G_MININT)
        a->opt.tile = a->tile;
    return DQ_EXIT_OK;
}

static int ingest_check_options(IngestArgs *a) {
    if (!ingest_check_paths(a) || !ingest_check_limits(a))
        return DQ_EXIT_FATAL;
    int rc = ingest_take_tile(a);
    if (rc != DQ_EXIT_OK)
        return rc;
    a->opt.hidden = a->hidden;
    a->opt.retry_failed = a->retry;
    a->opt.verify = a->verify;
    a->opt.allow_empty_root = a->allow_empty_root;
    a->opt.rehash = a->rehash;
    a->opt.progress = !a->quiet && isatty(STDERR_FILENO);
    return DQ_EXIT_OK;
}

static int ingest_open_store(IngestArgs *a) {
    GError *err = NULL;
    a->store = dq_store_open(a->db ? a->db : dq_store_default_location(), &err);
    if (a->store == NULL)
        return dq_cli_fail_in("ingest", FALSE, err);
    char *ignored = dq_store_pages_env_ignored(dq_store_path(a->store));
    if (ignored != NULL)
        dq_print_line(stderr, "docqa: ingest: %s", ignored);
    g_free(ignored);
    return DQ_EXIT_OK;
}

static void ingest_report(const IngestArgs *a, const DqIngestSummary *sum) {
    for (guint i = 0; i < sum->empty_roots->len; i++) {
        const DqIngestEmptyRoot *e = g_ptr_array_index(sum->empty_roots, i);
        dq_print_line(stderr,
                      "docqa: ingest: %s: %s, but %d document%s recorded under it would be "
                      "marked gone (a share not mounted?); nothing under it was marked gone "
                      "(--allow-empty-root marks them)",
                      e->root, e->missing ? "is not there" : "holds no document", e->would_be_gone,
                      e->would_be_gone == 1 ? "" : "s");
    }
    if (a->json)
        print_json(sum, a->opt.n_res, a->opt.tile);
    else
        print_text(sum);
}

static int ingest_documents(IngestArgs *a) {
    GError *err = NULL;
    DqIngestSummary sum;
    gboolean ran = dq_ingest_run(a->store, (const char *const *)a->paths, &a->opt, &sum, &err);
    /* What was rendered is stored: a signal from here on must not cut the summary short. */
    dq_cli_signals_record();
    if (!ran) {
        dq_ingest_summary_clear(&sum);
        return dq_cli_fail(err);
    }
    ingest_report(a, &sum);
    int rc = sum.interrupted ? DQ_EXIT_INTERRUPTED
             : sum.documents_failed > 0 || sum.documents_partial > 0 || sum.unchanged_not_ok > 0 ||
                     sum.changed > 0 || sum.folders_unreadable > 0 || sum.empty_roots->len > 0
                 ? DQ_EXIT_PARTIAL
                 : DQ_EXIT_OK;
    dq_ingest_summary_clear(&sum);
    return rc;
}

int cmd_ingest(int argc, char **argv) {
    IngestArgs a = {.tile = G_MININT};
    dq_ingest_options_init(&a.opt);
    int rc = ingest_parse(&a, argc, argv) ? ingest_check_options(&a) : DQ_EXIT_FATAL;
    if (rc == DQ_EXIT_OK)
        rc = ingest_open_store(&a);
    if (rc == DQ_EXIT_OK)
        rc = ingest_documents(&a);
    dq_store_close(a.store);
    g_free(a.db);
    g_free(a.model);
    g_strfreev(a.paths);
    return rc;
}
