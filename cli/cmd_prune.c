/* docqa prune: remove the page images no current document or unfinished job needs
 * (ingest/page_prune.h has the rules and why they are safe beside a running ingest). */
#include "cli.h"

#include "page_prune.h"
#include "store.h"
#include "text.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) {
    stop_requested = sig;
}

static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP};

/* While files are removed a signal only asks to stop after the file in hand: one set aside and
 * not yet removed or put back must not be left in .tmp. Signals ignored at start stay so. */
static void catch_stop_signals(struct sigaction *old) {
    for (size_t i = 0; i < G_N_ELEMENTS(stop_signals); i++) {
        sigaction(stop_signals[i], NULL, &old[i]);
        if (old[i].sa_handler == SIG_IGN)
            continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop;
        sigemptyset(&sa.sa_mask);
        sigaction(stop_signals[i], &sa, NULL);
    }
}

static void restore_stop_signals(const struct sigaction *old) {
    for (size_t i = 0; i < G_N_ELEMENTS(stop_signals); i++)
        sigaction(stop_signals[i], &old[i], NULL);
}

static void print_json(const DqPruneSummary *s, const DqPruneOptions *opt) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "dry_run");
    json_builder_add_boolean_value(b, opt->dry_run);
    dq_cli_json_int(b, "grace_seconds", opt->grace_s);
    dq_cli_json_int(b, "files", s->files);
    /* removed, or with --dry-run those that would be */
    dq_cli_json_int(b, "files_removed", s->files_removed);
    dq_cli_json_int(b, "bytes_removed", s->bytes_removed);
    dq_cli_json_int(b, "orphans_removed", s->orphans_removed);
    dq_cli_json_int(b, "files_kept_live", s->files_kept_live);
    dq_cli_json_int(b, "files_kept_shared", s->files_kept_shared);
    dq_cli_json_int(b, "files_kept_recent", s->files_kept_recent);
    dq_cli_json_int(b, "bytes_kept", s->bytes_kept);
    dq_cli_json_int(b, "files_not_removed", s->files_not_removed);
    json_builder_set_member_name(b, "interrupted");
    json_builder_add_boolean_value(b, s->interrupted);
    json_builder_end_object(b);
    dq_cli_json_print(b, TRUE);
}

static void print_text(const DqPruneSummary *s, const DqPruneOptions *opt) {
    char *removed = g_format_size_full((guint64)s->bytes_removed, G_FORMAT_SIZE_IEC_UNITS);
    char *kept = g_format_size_full((guint64)s->bytes_kept, G_FORMAT_SIZE_IEC_UNITS);
    printf("prune: %s%" G_GINT64_FORMAT " page image%s (%s)%s, %" G_GINT64_FORMAT
           " of them named by no page; kept %" G_GINT64_FORMAT " (%s): %" G_GINT64_FORMAT
           " needed by current documents or unfinished jobs (%" G_GINT64_FORMAT
           " of them shared with old versions or gone files), %" G_GINT64_FORMAT
           " newer than the grace period (%" G_GINT64_FORMAT " s)%s%s\n",
           opt->dry_run ? "would remove " : "", s->files_removed, s->files_removed == 1 ? "" : "s",
           removed, opt->dry_run ? "" : " removed", s->orphans_removed,
           s->files_kept_live + s->files_kept_recent, kept, s->files_kept_live,
           s->files_kept_shared, s->files_kept_recent, opt->grace_s,
           opt->dry_run ? " (--dry-run: nothing was removed)" : "",
           s->interrupted ? "; interrupted, the rest of the store not looked at" : "");
    if (s->files_not_removed > 0)
        printf("prune: %" G_GINT64_FORMAT
               " file%s could not be removed or looked at (said above; kept)\n",
               s->files_not_removed, s->files_not_removed == 1 ? "" : "s");
    g_free(removed);
    g_free(kept);
}

int cmd_prune(int argc, char **argv) {
    char *db = NULL, *grace = NULL;
    gboolean dry_run = FALSE, json = FALSE;
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"grace", 0, 0, G_OPTION_ARG_STRING, &grace,
         "keep files modified less than this many seconds ago (default 86400, a day: longer "
         "than an ingest takes from storing a page to recording it, with --doc-timeout's "
         "default of an hour)",
         "S"},
        {"dry-run", 'n', 0, G_OPTION_ARG_NONE, &dry_run,
         "print what would be removed (files and bytes), remove nothing", NULL},
        {"json", 0, 0, G_OPTION_ARG_NONE, &json, "print what was done as one JSON object on stdout",
         NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new("- remove the page images no current page needs");
    dq_cli_add_options(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "Removes from the page store (<db>.pages, or $DOCQA_PAGES for PostgreSQL) the page "
             "images that only old versions of files, or files gone from disk, name, and those "
             "no page names at all (left by an ingest that was killed), once they are older than "
             "the grace period. A page of a current document, or with a job queued or running, "
             "keeps its image, also where an old version shares it. Nothing in the database is "
             "deleted: answers stay; a job requeued about a pruned page fails, saying how to get "
             "its image back (ingest the file again). Safe beside a running ingest or run.");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    int rc = DQ_EXIT_FATAL;
    DqStore *store = NULL;
    DqPruneOptions opt = {.grace_s = DQ_PRUNE_DEFAULT_GRACE_S, .dry_run = dry_run};
    if (!ok || !dq_cli_no_arguments("prune", argc, argv) ||
        !dq_cli_int_option("prune", "--grace", grace, 0, G_MAXINT32, &opt.grace_s))
        goto out;
    if (opt.grace_s < DQ_PRUNE_SAFE_GRACE_S)
        dq_print_line(stderr,
                      "docqa: prune: --grace %" G_GINT64_FORMAT ": under %d s, a page an ingest "
                      "running now stores may lose its image (its jobs fail; the next ingest "
                      "renders it again): for tests, not beside a running ingest",
                      opt.grace_s, DQ_PRUNE_SAFE_GRACE_S);
    GError *err = NULL;
    store = dq_store_open_reader(db ? db : dq_store_default_location(), &err);
    if (store == NULL) {
        rc = dq_cli_fail_in("prune", FALSE, err);
        goto out;
    }
    char *ignored = dq_store_pages_env_ignored(dq_store_path(store));
    if (ignored != NULL)
        dq_print_line(stderr, "docqa: prune: %s", ignored);
    g_free(ignored);
    struct sigaction old[G_N_ELEMENTS(stop_signals)];
    stop_requested = 0;
    opt.stop = &stop_requested;
    catch_stop_signals(old);
    DqPruneSummary sum;
    gboolean pruned = dq_page_store_prune(store, &opt, &sum, &err);
    restore_stop_signals(old);
    /* What was removed is gone: a signal from here on must not cut the summary short. */
    dq_cli_signals_record();
    if (!pruned) {
        rc = dq_cli_fail(err);
        goto out;
    }
    if (json)
        print_json(&sum, &opt);
    else
        print_text(&sum, &opt);
    rc = sum.interrupted             ? DQ_EXIT_INTERRUPTED
         : sum.files_not_removed > 0 ? DQ_EXIT_PARTIAL
                                     : DQ_EXIT_OK;
out:
    dq_store_close(store);
    g_free(db);
    g_free(grace);
    return rc;
}
