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

/* What status reads, in one snapshot, and the numbers it derives. */
typedef struct {
    char *db;
    gboolean json;
    const char *path;
    DqStore *store;
    gboolean snapshot; /* a read transaction is open */
    gint64 now;        /* ms, the one now every time is compared with */
    DqJobCounts c;
    gint64 left, running;
    double rate, eta;
    GPtrArray *errs, *engines, *snaps, *gone_paths, *progress;
} Status;

static gboolean status_parse(Status *st, int argc, char **argv) {
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &st->db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &st->json, "print JSON on stdout", NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new("- jobs per state, speed, ETA, failure reasons");
    dq_cli_add_options(ctx, entries, NULL);
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    return ok && dq_cli_no_arguments("status", argc, argv);
}

/* The counts, the speed and the lists the report shows, and what they come to. */
static int status_read(Status *st) {
    GError *err = NULL;
    gint64 recent = 0;
    double span = 0;
    /* One snapshot for every number: read while workers commit, "jobs" would not add up to
     * "progress" (v_progress), nor the answers to the jobs done. And one now for every time
     * compared: a lease that expires between two reads would be stalled in one and running in
     * the other. */
    st->now = dq_wall_ms();
    if (!(st->snapshot = dq_store_begin_snapshot(st->store, &err)) ||
        !store_jobs_counts_at(st->store, NULL, st->now, &st->c, &err) ||
        !store_jobs_recent_rate_at(st->store, RATE_WINDOW_S, st->now, &recent, &span, &err) ||
        (st->engines = store_jobs_answer_engines(st->store, &err)) == NULL ||
        (st->snaps = store_jobs_model_snapshots(st->store, NULL, &err)) == NULL ||
        (st->errs = store_jobs_top_errors(st->store, 5, &err)) == NULL ||
        (st->gone_paths = dq_store_document_paths_gone(st->store, &err)) == NULL)
        return dq_cli_fail(err);
    dq_test_point("status:read");
    const DqJobCounts *c = &st->c;
    st->rate = span > 0 ? (double)recent / span : 0;
    st->left = c->by_state[DQ_JOB_QUEUED] + c->by_state[DQ_JOB_RUNNING];
    /* Running jobs whose lease expired are not work in progress: their worker stopped. */
    st->running = c->by_state[DQ_JOB_RUNNING] - c->stalled;
    /* The recent rate says nothing of the future when no worker is at work. */
    st->eta = st->left == 0                     ? 0
              : st->rate > 0 && st->running > 0 ? (double)st->left / st->rate
                                                : -1;
    return DQ_EXIT_OK;
}

/* v_progress is derived (a user may have dropped it): without it, the rest is shown */
static int status_read_progress(Status *st) {
    GError *err = NULL;
    char **missing = dq_store_missing_views(st->store, &err);
    if (missing == NULL)
        return dq_cli_fail(err);
    if (g_strv_contains((const char *const *)missing, "v_progress")) {
        char *advice = dq_cli_views_advice(st->path);
        dq_print_line(stderr, "docqa: status: the view v_progress is missing (dropped?): %s; %s",
                      st->json ? "\"progress\" is null" : "no progress per question", advice);
        g_free(advice);
    } else if ((st->progress = store_jobs_progress_at(st->store, st->now, &err)) == NULL) {
        g_strfreev(missing);
        return dq_cli_fail(err);
    }
    g_strfreev(missing);
    return DQ_EXIT_OK;
}

static void print_jobs(const Status *st) {
    const DqJobCounts *c = &st->c;
    printf("jobs: %" G_GINT64_FORMAT " total: %" G_GINT64_FORMAT " done, %" G_GINT64_FORMAT
           " queued (%" G_GINT64_FORMAT " retrying), %" G_GINT64_FORMAT
           " running, %" G_GINT64_FORMAT " stalled, %" G_GINT64_FORMAT " failed, %" G_GINT64_FORMAT
           " dead, %" G_GINT64_FORMAT " cancelled\n",
           c->total, c->by_state[DQ_JOB_DONE], c->by_state[DQ_JOB_QUEUED], c->retrying, st->running,
           c->stalled, c->by_state[DQ_JOB_FAILED], c->by_state[DQ_JOB_DEAD],
           c->by_state[DQ_JOB_CANCELLED]);
    if (c->stalled > 0)
        printf("  (%" G_GINT64_FORMAT " stalled: their worker stopped, and their lease "
               "expired; another worker of their model takes them over at its next claim)\n",
               c->stalled);
    if (st->progress != NULL)
        print_progress(st->progress);
    char eta_s[32];
    format_duration(st->eta, eta_s, sizeof(eta_s));
    printf("speed: %.2f answers/s (the last %d min); ETA %s\n", st->rate, RATE_WINDOW_S / 60,
           st->left > 0 && st->running == 0 ? "unknown (no job running)" : eta_s);
}

/* The answers by device and weights, and how many were answered approximately. */
static void print_engines(const GPtrArray *engines) {
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
}

/* Workers stop on a missing page store rather than fail its jobs: say it here, where one looks
 * when nothing moves. A PostgreSQL database's is wherever DOCQA_PAGES says on the machines
 * that ingest and run: unset here (status may run on any machine), it is said not to be
 * checked, and why, rather than nothing, which would read as "found". */
static void print_page_store(const Status *st) {
    if (st->left == 0)
        return;
    const char *env = g_getenv("DOCQA_PAGES");
    if (dq_store_kind(st->store) != DQ_STORE_SQLITE && (env == NULL || *env == '\0')) {
        printf("page store: not checked: DOCQA_PAGES is unset here (a PostgreSQL database's page "
               "images are in the folder it names, shared by the machines that ingest and run, "
               "which refuse to start without it)\n");
        return;
    }
    GError *gone = NULL;
    if (!queue_page_store_usable(st->path, &gone)) {
        char *msg = dq_cli_shown(gone->message);
        printf("page store: %s\n", msg);
        g_free(msg);
    }
    g_clear_error(&gone);
}

static void print_errors(const GPtrArray *errs) {
    if (errs->len == 0)
        return;
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

static void print_text(const Status *st) {
    print_jobs(st);
    print_engines(st->engines);
    print_snapshots(st->snaps);
    /* Ingest marks them (documents.missing_since): ask leaves them out from then on, and
     * what was answered about them stays, which a count of answers alone does not say. */
    if (st->gone_paths->len > 0)
        printf("%u document%s gone from disk since ingest (their answers kept: v_answers "
               "shows them, v_current_answers does not)\n",
               st->gone_paths->len, st->gone_paths->len == 1 ? "" : "s");
    print_page_store(st);
    print_errors(st->errs);
}

static void status_clear(Status *st) {
    /* only read: nothing to keep or lose, whichever way it ends */
    if (st->snapshot)
        dq_store_exec(st->store, "COMMIT", NULL);
    if (st->errs)
        g_ptr_array_free(st->errs, TRUE);
    if (st->progress)
        g_ptr_array_free(st->progress, TRUE);
    if (st->gone_paths)
        g_ptr_array_free(st->gone_paths, TRUE);
    if (st->snaps)
        g_ptr_array_free(st->snaps, TRUE);
    if (st->engines)
        g_ptr_array_free(st->engines, TRUE);
    if (st->store) {
        store_jobs_finalize(st->store);
        dq_store_close(st->store);
    }
    g_free(st->db);
}

static int status_open(Status *st) {
    GError *err = NULL;
    st->path = st->db ? st->db : dq_store_default_location();
    if ((st->store = dq_store_open_reader(st->path, &err)) == NULL)
        return dq_cli_fail_in("status", FALSE, err);
    return DQ_EXIT_OK;
}

/* Read past a full disk as immutable, what was read may mix two moments if the file changed
 * since (dq_store_check_unchanged): checked once everything is read. */
static int status_check_unchanged(Status *st) {
    GError *err = NULL;
    if (!dq_store_check_unchanged(st->store, &err))
        return dq_cli_fail(err);
    return DQ_EXIT_OK;
}

int cmd_status(int argc, char **argv) {
    Status st = {0};
    int rc = status_parse(&st, argc, argv) ? status_open(&st) : DQ_EXIT_FATAL;
    if (rc == DQ_EXIT_OK)
        rc = status_read(&st);
    if (rc == DQ_EXIT_OK)
        rc = status_read_progress(&st);
    if (rc == DQ_EXIT_OK)
        rc = status_check_unchanged(&st);
    if (rc == DQ_EXIT_OK && st.json)
        print_json(&st.c, st.running, st.rate, st.eta, st.engines, st.snaps, st.errs,
                   st.gone_paths->len, st.progress);
    else if (rc == DQ_EXIT_OK)
        print_text(&st);
    status_clear(&st);
    return rc;
}
