/* docqa status: jobs per state, pages per second, ETA, how the answers were computed (exact or
 * approximate), the most common failure reasons. */
#include "cli.h"

#include "clock.h"

#include "store.h"
#include "store_documents.h"
#include "store_jobs.h"
#include "store_migrate.h"
#include "queue.h"
#include "test_point.h"
#include "text.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>

#define RATE_WINDOW_S 600
/* The per-question table: its rows at most, and its text columns' widths. */
#define PROGRESS_ROWS          20
#define PROGRESS_QUESTION_COLS 30
#define PROGRESS_MODEL_COLS    16

static void format_duration(double s, char *buf, size_t n) {
    if (s < 0 || s > 1e8)
        g_strlcpy(buf, "unknown", n);
    else if (s < 60)
        g_snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        g_snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        g_snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static const char *exactness(int exact) {
    return exact < 0 ? "not recorded" : exact ? "exact" : "approximate";
}

/* v_progress's rows (NULL: the view is missing: null) */
static void add_progress(JsonBuilder *b, const GPtrArray *progress) {
    json_builder_set_member_name(b, "progress");
    if (progress == NULL) {
        json_builder_add_null_value(b);
        return;
    }
    json_builder_begin_array(b);
    for (guint i = 0; i < progress->len; i++) {
        const DqProgressRow *r = g_ptr_array_index(progress, i);
        json_builder_begin_object(b);
        dq_cli_json_string(b, "question", r->question);
        dq_cli_json_string(b, "model", r->model_id);
        dq_cli_json_int(b, "total", r->total);
        dq_cli_json_int(b, "queued", r->queued);
        dq_cli_json_int(b, "running", r->running);
        dq_cli_json_int(b, "done", r->done);
        dq_cli_json_int(b, "failed", r->failed);
        dq_cli_json_int(b, "dead", r->dead);
        dq_cli_json_int(b, "retrying", r->retrying);
        dq_cli_json_int(b, "stalled", r->stalled);
        dq_cli_json_int(b, "cancelled", r->cancelled);
        /* v_progress's one decimal (NULL: every job cancelled) */
        if (r->percent_done < 0)
            dq_cli_json_string(b, "percent_done", NULL);
        else
            dq_cli_json_double(b, "percent_done", r->percent_done, 1);
        dq_cli_json_string(b, "asked_at", r->asked_at);
        dq_cli_json_string(b, "last_finished_at", r->last_finished_at);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
}

static void print_json(const DqJobCounts *c, gint64 running, double rate, double eta,
                       const GPtrArray *engines, const GPtrArray *snaps, const GPtrArray *errs,
                       gint64 gone, const GPtrArray *progress) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    /* which docqa wrote this (its keys grow with versions) */
    dq_cli_json_string(b, "version", DOCQA_VERSION);
    json_builder_set_member_name(b, "jobs");
    json_builder_begin_object(b);
    /* "running": leases alive, "stalled": expired (as v_progress's columns) */
    for (int i = 0; i < DQ_JOB_N_STATES; i++) {
        json_builder_set_member_name(b, dq_job_state_name(i));
        json_builder_add_int_value(b, i == DQ_JOB_RUNNING ? running : c->by_state[i]);
    }
    dq_cli_json_int(b, "stalled", c->stalled);
    dq_cli_json_int(b, "retrying", c->retrying);
    dq_cli_json_int(b, "total", c->total);
    json_builder_end_object(b);
    /* paths whose file ingest found gone (documents.missing_since); their answers are kept */
    dq_cli_json_int(b, "documents_gone", gone);
    /* as the text shows them: answers/s to 2 decimals, the ETA in whole seconds */
    dq_cli_json_double(b, "answers_per_second", rate, 2);
    if (eta >= 0)
        dq_cli_json_double(b, "eta_seconds", eta, 0);
    else
        dq_cli_json_string(b, "eta_seconds", NULL);
    /* device, weights and exact are null for answers from before schema 0003 */
    json_builder_set_member_name(b, "answers_by_engine");
    json_builder_begin_array(b);
    for (guint i = 0; i < engines->len; i++) {
        const DqAnswerEngine *e = g_ptr_array_index(engines, i);
        json_builder_begin_object(b);
        dq_cli_json_string(b, "device", e->device);
        dq_cli_json_string(b, "weights", e->weights);
        dq_cli_json_known_bool(b, "exact", e->exact);
        dq_cli_json_int(b, "answers", e->answers);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    /* answers without a recorded snapshot (before schema 0008) are left out */
    json_builder_set_member_name(b, "answers_by_snapshot");
    json_builder_begin_array(b);
    for (guint i = 0; i < snaps->len; i++) {
        const DqModelSnapshot *m = g_ptr_array_index(snaps, i);
        json_builder_begin_object(b);
        dq_cli_json_string(b, "model", m->model_id);
        dq_cli_json_string(b, "model_fingerprint", m->fingerprint);
        dq_cli_json_int(b, "answers", m->answers);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "failure_reasons");
    json_builder_begin_array(b);
    for (guint i = 0; i < errs->len; i++) {
        const DqErrorReason *r = g_ptr_array_index(errs, i);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "kind");
        json_builder_add_string_value(b, r->kind);
        json_builder_set_member_name(b, "message");
        json_builder_add_string_value(b, r->message);
        json_builder_set_member_name(b, "example");
        json_builder_add_string_value(b, r->example);
        dq_cli_json_int(b, "jobs", r->jobs);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    add_progress(b, progress);
    json_builder_end_object(b);
    dq_cli_json_print(b, TRUE);
}

/* Terminal columns of shown (valid UTF-8, printable): a wide (CJK) character takes two, a
 * combining mark none, so that the columns after a question line up whatever its script. */
static int columns_of(const char *shown, const char **cut, int max) {
    int cols = 0;
    for (const char *p = shown; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        int w = g_unichar_iszerowidth(c) ? 0 : g_unichar_iswide(c) ? 2 : 1;
        if (cut != NULL && cols + w > max) {
            *cut = p;
            return cols;
        }
        cols += w;
    }
    if (cut != NULL)
        *cut = NULL;
    return cols;
}

/* text (the database's) escaped and fitted to `width` columns: cut on a character with "…",
 * padded with spaces. */
static void put_cell(GString *line, const char *text, int width) {
    char *shown = dq_cli_shown(text ? text : "");
    const char *cut = NULL;
    int cols = columns_of(shown, NULL, 0);
    if (cols > width) {
        cols = columns_of(shown, &cut, width - 1);
        g_string_append_len(line, shown, cut - shown);
        g_string_append(line, "\u2026");
        cols++;
    } else
        g_string_append(line, shown);
    for (; cols < width; cols++)
        g_string_append_c(line, ' ');
    g_free(shown);
}

/* v_progress's rows as a table, in the order asked: enough rows for a night's questions, then a
 * count of the rest (--json has every row). */
static void print_progress(const GPtrArray *progress) {
    if (progress->len == 0)
        return;
    printf("per question (done of total; %% of the jobs not cancelled):\n");
    printf("  %-*s  %-*s %12s %6s %7s %7s %6s %6s\n", PROGRESS_QUESTION_COLS, "question",
           PROGRESS_MODEL_COLS, "model", "done/total", "%", "running", "stalled", "failed", "dead");
    guint shown = MIN(progress->len, PROGRESS_ROWS);
    for (guint i = 0; i < shown; i++) {
        const DqProgressRow *r = g_ptr_array_index(progress, i);
        GString *line = g_string_new("  ");
        put_cell(line, r->question, PROGRESS_QUESTION_COLS);
        g_string_append(line, "  ");
        put_cell(line, r->model_id, PROGRESS_MODEL_COLS);
        char done[48], percent[16];
        g_snprintf(done, sizeof done, "%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT, r->done, r->total);
        /* v_progress's one decimal; NULL when every job is cancelled */
        if (r->percent_done < 0)
            g_strlcpy(percent, "-", sizeof percent);
        else
            g_snprintf(percent, sizeof percent, "%.1f", r->percent_done);
        g_string_append_printf(line,
                               " %12s %6s %7" G_GINT64_FORMAT " %7" G_GINT64_FORMAT
                               " %6" G_GINT64_FORMAT " %6" G_GINT64_FORMAT,
                               done, percent, r->running, r->stalled, r->failed, r->dead);
        puts(line->str);
        g_string_free(line, TRUE);
    }
    if (progress->len > shown)
        printf("  ... %u more (status --json has them all)\n", progress->len - shown);
}

/* A model id whose answers came from more than one snapshot (answers.model_fingerprint): its
 * answers are not all of one model, whatever their model column says. snaps is by model id. */
static void print_snapshots(const GPtrArray *snaps) {
    for (guint i = 0; i < snaps->len;) {
        const DqModelSnapshot *first = g_ptr_array_index(snaps, i);
        guint end = i + 1;
        while (end < snaps->len &&
               strcmp(((DqModelSnapshot *)g_ptr_array_index(snaps, end))->model_id,
                      first->model_id) == 0)
            end++;
        if (end - i > 1) {
            /* the model id and the fingerprints are the database's: the line is escaped whole */
            GString *line = g_string_new(NULL);
            for (guint k = i; k < end; k++) {
                const DqModelSnapshot *m = g_ptr_array_index(snaps, k);
                g_string_append_printf(line, "%s %" G_GINT64_FORMAT " from %.12s", k > i ? "," : "",
                                       m->answers, m->fingerprint);
            }
            dq_print_line(stdout,
                          "model '%s': answers from %u snapshots:%s (v_answers.model_fingerprint "
                          "tells them apart)",
                          first->model_id, end - i, line->str);
            g_string_free(line, TRUE);
        }
        i = end;
    }
}

int cmd_status(int argc, char **argv) {
    char *db = NULL;
    gboolean json = FALSE;
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &json, "print JSON on stdout", NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new("- jobs per state, speed, ETA, failure reasons");
    dq_cli_add_options(ctx, entries, NULL);
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    int rc = DQ_EXIT_FATAL;
    GError *err = NULL;
    DqStore *store = NULL;
    gboolean snapshot = FALSE;
    GPtrArray *errs = NULL, *engines = NULL, *snaps = NULL, *gone_paths = NULL, *progress = NULL;
    if (!ok || !dq_cli_no_arguments("status", argc, argv))
        goto out;
    const char *path = db ? db : dq_store_default_location();
    if ((store = dq_store_open_reader(path, &err)) == NULL) {
        rc = dq_cli_fail_in("status", FALSE, err);
        goto out;
    }
    DqJobCounts c;
    gint64 recent = 0;
    double span = 0;
    /* One snapshot for every number: read while workers commit, "jobs" would not add up to
     * "progress" (v_progress), nor the answers to the jobs done. And one now for every time
     * compared: a lease that expires between two reads would be stalled in one and running in
     * the other. */
    gint64 now = dq_wall_ms();
    if (!(snapshot = dq_store_begin_snapshot(store, &err)) ||
        !store_jobs_counts_at(store, NULL, now, &c, &err) ||
        !store_jobs_recent_rate_at(store, RATE_WINDOW_S, now, &recent, &span, &err) ||
        (engines = store_jobs_answer_engines(store, &err)) == NULL ||
        (snaps = store_jobs_model_snapshots(store, NULL, &err)) == NULL ||
        (errs = store_jobs_top_errors(store, 5, &err)) == NULL ||
        (gone_paths = dq_store_document_paths_gone(store, &err)) == NULL) {
        rc = dq_cli_fail(err);
        goto out;
    }
    dq_test_point("status:read");
    double rate = span > 0 ? (double)recent / span : 0;
    gint64 left = c.by_state[DQ_JOB_QUEUED] + c.by_state[DQ_JOB_RUNNING];
    /* Running jobs whose lease expired are not work in progress: their worker stopped. */
    gint64 running = c.by_state[DQ_JOB_RUNNING] - c.stalled;
    /* The recent rate says nothing of the future when no worker is at work. */
    double eta = left == 0 ? 0 : rate > 0 && running > 0 ? (double)left / rate : -1;
    /* v_progress is derived (a user may have dropped it): without it, the rest is shown */
    char **missing = dq_store_missing_views(store, &err);
    if (missing == NULL) {
        rc = dq_cli_fail(err);
        goto out;
    }
    if (g_strv_contains((const char *const *)missing, "v_progress"))
        dq_print_line(stderr,
                      "docqa: status: the view v_progress is missing (dropped?): %s; `docqa "
                      "migrate --from %s` makes docqa's views again",
                      json ? "\"progress\" is null" : "no progress per question", path);
    else if ((progress = store_jobs_progress_at(store, now, &err)) == NULL) {
        g_strfreev(missing);
        rc = dq_cli_fail(err);
        goto out;
    }
    g_strfreev(missing);
    if (!dq_store_check_unchanged(store, &err)) {
        rc = dq_cli_fail(err);
        goto out;
    }
    if (json) {
        print_json(&c, running, rate, eta, engines, snaps, errs, gone_paths->len, progress);
    } else {
        printf("jobs: %" G_GINT64_FORMAT " total: %" G_GINT64_FORMAT " done, %" G_GINT64_FORMAT
               " queued (%" G_GINT64_FORMAT " retrying), %" G_GINT64_FORMAT
               " running, %" G_GINT64_FORMAT " stalled, %" G_GINT64_FORMAT
               " failed, %" G_GINT64_FORMAT " dead, %" G_GINT64_FORMAT " cancelled\n",
               c.total, c.by_state[DQ_JOB_DONE], c.by_state[DQ_JOB_QUEUED], c.retrying, running,
               c.stalled, c.by_state[DQ_JOB_FAILED], c.by_state[DQ_JOB_DEAD],
               c.by_state[DQ_JOB_CANCELLED]);
        if (c.stalled > 0)
            printf("  (%" G_GINT64_FORMAT " stalled: their worker stopped, and their lease "
                   "expired; another worker of their model takes them over at its next claim)\n",
                   c.stalled);
        if (progress != NULL)
            print_progress(progress);
        char eta_s[32];
        format_duration(eta, eta_s, sizeof(eta_s));
        printf("speed: %.2f answers/s (the last %d min); ETA %s\n", rate, RATE_WINDOW_S / 60,
               left > 0 && running == 0 ? "unknown (no job running)" : eta_s);
        gint64 approximate = 0;
        for (guint i = 0; i < engines->len; i++) {
            const DqAnswerEngine *e = g_ptr_array_index(engines, i);
            /* Those already queued again (requeue --approximate) need no second requeue. */
            if (e->exact == 0)
                approximate += e->answers - e->pending;
            if (i == 0)
                printf("answers:");
            if (e->device != NULL) {
                char *device = dq_cli_shown(e->device), *weights = dq_cli_shown(e->weights);
                printf(" %" G_GINT64_FORMAT " %s (%s, weights %s)", e->answers, exactness(e->exact),
                       device,
                       g_strcmp0(e->weights, "stored") == 0 ? "as stored"
                       : e->weights                         ? weights
                                                            : "unknown");
                g_free(device);
                g_free(weights);
            } else
                printf(" %" G_GINT64_FORMAT " %s", e->answers, exactness(e->exact));
            printf(i + 1 < engines->len ? "," : "\n");
        }
        if (approximate > 0)
            printf("  (docqa requeue --approximate: queue the %" G_GINT64_FORMAT
                   " job%s answered approximately again, to answer %s exactly)\n",
                   approximate, approximate == 1 ? "" : "s", approximate == 1 ? "it" : "them");
        print_snapshots(snaps);
        /* Ingest marks them (documents.missing_since): ask leaves them out from then on, and
         * what was answered about them stays, which a count of answers alone does not say. */
        if (gone_paths->len > 0)
            printf("%u document%s gone from disk since ingest (their answers kept: v_answers "
                   "shows them, v_current_answers does not)\n",
                   gone_paths->len, gone_paths->len == 1 ? "" : "s");
        /* Workers stop on a missing page store rather than fail its jobs: say it here, where
         * one looks when nothing moves. */
        GError *gone = NULL;
        if (left > 0 && (dq_store_kind(store) == DQ_STORE_SQLITE || g_getenv("DOCQA_PAGES")) &&
            !queue_page_store_usable(path, &gone)) {
            char *msg = dq_cli_shown(gone->message);
            printf("page store: %s\n", msg);
            g_free(msg);
        }
        g_clear_error(&gone);
        if (errs->len > 0) {
            printf("why jobs are failed, dead or retrying now (most common first; every error "
                   "ever recorded is in job_errors):\n");
            for (guint i = 0; i < errs->len; i++) {
                const DqErrorReason *r = g_ptr_array_index(errs, i);
                /* kind and messages are the database's: escaped, the kind too */
                dq_print_line(stdout, "  %6" G_GINT64_FORMAT " job%s  %s: %s", r->jobs,
                              r->jobs == 1 ? " " : "s", r->kind, r->message);
                /* The cause with its paths taken out: one of its messages says where. */
                if (g_strcmp0(r->message, r->example) != 0)
                    dq_print_line(stdout, "              e.g. %s", r->example);
            }
        }
    }
    rc = DQ_EXIT_OK;
out:
    /* only read: nothing to keep or lose, whichever way it ends */
    if (snapshot)
        dq_store_exec(store, "COMMIT", NULL);
    if (errs)
        g_ptr_array_free(errs, TRUE);
    if (progress)
        g_ptr_array_free(progress, TRUE);
    if (gone_paths)
        g_ptr_array_free(gone_paths, TRUE);
    if (snaps)
        g_ptr_array_free(snaps, TRUE);
    if (engines)
        g_ptr_array_free(engines, TRUE);
    if (store) {
        store_jobs_finalize(store);
        dq_store_close(store);
    }
    g_free(db);
    return rc;
}
