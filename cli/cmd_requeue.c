/* docqa requeue: dead, failed, cancelled or answered jobs (approximately, by another snapshot, or
 * any) back into the queue with fresh attempts, all of them or those docqa cancel's selectors
 * pick (cli_jobs.h). */
#include "cli.h"
#include "cli_jobs.h"

#include "smolvlm.h"
#include "store.h"
#include "store_jobs.h"
#include "text.h"

#include <stdio.h>
#include <string.h>

/* A snapshot fingerprint as the user gives it: hex, whole or its first digits (12 at least:
 * what run and status print), in lower case as stored; NULL, said, when it is not one. */
static char *fingerprint_option(const char *text) {
    size_t n = strlen(text);
    gboolean hex = n >= 12 && n <= 64;
    for (size_t i = 0; hex && i < n; i++)
        hex = g_ascii_isxdigit(text[i]);
    if (!hex) {
        dq_print_line(stderr,
                      "docqa: requeue: --fingerprint-not %s: expected a snapshot fingerprint, 12 "
                      "to 64 hex digits (v_answers.model_fingerprint, or the first 12 that run "
                      "and status print)",
                      text);
        return NULL;
    }
    return g_ascii_strdown(text, -1);
}

/* What requeue was asked, and what it comes to. */
typedef struct {
    char *db;
    gboolean dead, failed, approximate, cancelled, done, stale, dry_run, json;
    char *fingerprint_not; /* --fingerprint-not as given */
    char *fingerprint;     /* the snapshot whose answers are current, lower-case hex */
    DqJobSelection sel;
    DqJobFilter filter;
    DqStore *store;
    /* DqJobGroup *: the jobs queued again, or with --dry-run those that would be */
    GPtrArray *groups;
} Requeue;

/* The options, and the filter they make: the states named, and which answered jobs. */
static gboolean requeue_parse(Requeue *rq, int argc, char **argv) {
    GOptionEntry entries[] = {
        {"dead", 0, 0, G_OPTION_ARG_NONE, &rq->dead,
         "jobs that used all their attempts (model errors, page files the system could not "
         "read: page_read, or workers that died or hung: lease_expired)",
         NULL},
        {"failed", 0, 0, G_OPTION_ARG_NONE, &rq->failed,
         "jobs that failed on their input, not retried: a missing or damaged page image "
         "(page_image), a question the model cannot take, e.g. too long (question), generation "
         "settings a worker cannot use (settings), a document, page or question deleted by hand "
         "(orphan)",
         NULL},
        {"approximate", 0, 0, G_OPTION_ARG_NONE, &rq->approximate,
         "answered jobs whose answer was computed with approximate arithmetic (exact = 0)", NULL},
        {"cancelled", 0, 0, G_OPTION_ARG_NONE, &rq->cancelled, "jobs withdrawn by docqa cancel",
         NULL},
        {"done", 0, 0, G_OPTION_ARG_NONE, &rq->done,
         "answered jobs, whatever answered them (to answer them again, e.g. with another "
         "snapshot in the model folder)",
         NULL},
        {"stale", 0, 0, G_OPTION_ARG_NONE, &rq->stale,
         "answered jobs whose answer came from another snapshot than the one --model DIR holds "
         "now (v_answers.model_fingerprint), or from one not recorded (answers before schema 8)",
         NULL},
        {"fingerprint-not", 0, 0, G_OPTION_ARG_STRING, &rq->fingerprint_not,
         "--stale against this snapshot fingerprint (hex, whole or its first 12 or more digits, "
         "as run and status print it) instead of --model DIR's: where the folder is not at hand",
         "HEX"},
        {"dry-run", 'n', 0, G_OPTION_ARG_NONE, &rq->dry_run,
         "print what would be queued again, change nothing", NULL},
        {"json", 0, 0, G_OPTION_ARG_NONE, &rq->json,
         "print what was done as one JSON object on stdout", NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new(
        "- queue dead, failed, cancelled or answered (approximately, stale, any) jobs again");
    dq_job_command_options(ctx, &rq->db, &rq->sel, entries);
    g_option_context_set_description(
        ctx, "Every job in the states named, or those of them matching every selector given "
             "(--question, --document, --where, --model, as docqa cancel's; --document and --where "
             "add up). Their recorded errors stay in job_errors. An answer (--approximate: "
             "--weights int8 or bf16, a GPU's bf16 products; --stale: another snapshot's; --done: "
             "any) stays in answers until the job is answered again; the new answer then moves it "
             "to answers_superseded, and a job that fails for good instead goes back to done with "
             "it. Run the queue with the exact settings (the default --weights stored on a CPU) "
             "to replace approximate answers, with the current snapshot to replace stale ones.");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    rq->stale = rq->stale || rq->fingerprint_not != NULL;
    DqJobFilter *f = &rq->filter;
    f->states = (rq->dead ? 1u << DQ_JOB_DEAD : 0) | (rq->failed ? 1u << DQ_JOB_FAILED : 0) |
                (rq->cancelled ? 1u << DQ_JOB_CANCELLED : 0);
    f->done = (rq->approximate ? DQ_DONE_APPROXIMATE : 0) | (rq->done ? DQ_DONE_ANY : 0) |
              (rq->stale ? DQ_DONE_STALE : 0);
    if (f->done != 0)
        f->states |= 1u << DQ_JOB_DONE;
    return ok && dq_cli_no_arguments("requeue", argc, argv);
}

/* Refusals before the database is opened: no state named, a bad selector, --stale without the
 * model it is said of. */
static gboolean requeue_check(Requeue *rq) {
    if (rq->filter.states == 0) {
        dq_print_line(stderr, "docqa: requeue: say which jobs: --dead, --failed, --cancelled, "
                              "--approximate, --stale, --done");
        return FALSE;
    }
    if (!dq_job_selection_check(&rq->sel, "requeue"))
        return FALSE;
    /* Stale is said of one model id's answers: other ids' came from other snapshots anyway. */
    if (rq->stale && rq->sel.model == NULL) {
        dq_print_line(stderr,
                      "docqa: requeue: --%s needs --model DIR: the snapshot folder whose "
                      "answers are current (its name is the model id)",
                      rq->fingerprint_not ? "fingerprint-not" : "stale");
        return FALSE;
    }
    return TRUE;
}

/* The current snapshot's fingerprint for --stale: --fingerprint-not's, or that of the folder
 * --model names. FALSE when there is none, *rc set where it is not DQ_EXIT_FATAL. */
static gboolean requeue_fingerprint(Requeue *rq, int *rc) {
    if (rq->fingerprint_not != NULL)
        return (rq->fingerprint = fingerprint_option(rq->fingerprint_not)) != NULL;
    if (!rq->stale)
        return TRUE;
    if (!g_file_test(rq->sel.model, G_FILE_TEST_IS_DIR)) {
        dq_print_line(stderr,
                      "docqa: requeue: --stale: --model %s is no snapshot folder here: give "
                      "the folder, or its fingerprint with --fingerprint-not HEX",
                      rq->sel.model);
        return FALSE;
    }
    /* What a worker loading this folder now would record as its answers' fingerprint. */
    GError *err = NULL;
    if ((rq->fingerprint = smolvlm_snapshot_fingerprint(rq->sel.model, &err)) == NULL) {
        *rc = dq_cli_fail(err);
        return FALSE;
    }
    return TRUE;
}

static void requeue_report(const Requeue *rq) {
    const char *done_word = dq_job_done_word(rq->filter.done);
    gint64 n = 0;
    for (guint i = 0; i < rq->groups->len; i++)
        n += ((const DqJobGroup *)g_ptr_array_index(rq->groups, i))->jobs;
    if (rq->json) {
        JsonBuilder *b = dq_job_result_json_begin(rq->dry_run, rq->filter.states, done_word);
        /* queued again, or with --dry-run those that would be */
        dq_cli_json_int(b, "jobs", n);
        dq_job_result_json_print(b, rq->groups, done_word);
    } else if (n == 0) {
        dq_job_groups_print_none("requeue", rq->filter.states, done_word);
    } else {
        if (rq->dry_run)
            printf("requeue: would queue %" G_GINT64_FORMAT " job%s again (--dry-run: nothing was "
                   "changed)\n",
                   n, n == 1 ? "" : "s");
        else
            printf("requeue: %" G_GINT64_FORMAT " job%s back in the queue\n", n, n == 1 ? "" : "s");
        dq_job_groups_print(rq->groups, done_word);
    }
}

int cmd_requeue(int argc, char **argv) {
    Requeue rq = {0};
    int rc = DQ_EXIT_FATAL;
    if (!requeue_parse(&rq, argc, argv) || !requeue_check(&rq) || !requeue_fingerprint(&rq, &rc))
        goto out;
    rq.filter.fingerprint = rq.fingerprint;
    rq.groups = dq_job_command_change("requeue", rq.db, &rq.sel, &rq.filter, rq.dry_run,
                                      store_jobs_requeue, &rq.store);
    if (rq.groups == NULL)
        goto out;
    requeue_report(&rq);
    rc = DQ_EXIT_OK;
out:
    dq_job_command_free(rq.groups, rq.store, &rq.sel, rq.db);
    g_free(rq.fingerprint_not);
    g_free(rq.fingerprint);
    return rc;
}
