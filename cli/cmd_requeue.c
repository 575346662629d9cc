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

int cmd_requeue(int argc, char **argv) {
    char *db = NULL;
    gboolean dead = FALSE, failed = FALSE, approximate = FALSE, cancelled = FALSE, dry_run = FALSE,
             done = FALSE, stale = FALSE, json = FALSE;
    char *fingerprint_not = NULL, *fingerprint = NULL;
    DqJobSelection sel = {0};
    GOptionEntry entries[] = {
        {"dead", 0, 0, G_OPTION_ARG_NONE, &dead,
         "jobs that used all their attempts (model errors, or workers that died or hung: "
         "lease_expired)",
         NULL},
        {"failed", 0, 0, G_OPTION_ARG_NONE, &failed,
         "jobs that failed on their input, not retried: a missing or damaged page image "
         "(page_image), a question the model cannot take, e.g. too long (question), generation "
         "settings a worker cannot use (settings), a document, page or question deleted by hand "
         "(orphan)",
         NULL},
        {"approximate", 0, 0, G_OPTION_ARG_NONE, &approximate,
         "answered jobs whose answer was computed with approximate arithmetic (exact = 0)", NULL},
        {"cancelled", 0, 0, G_OPTION_ARG_NONE, &cancelled, "jobs withdrawn by docqa cancel", NULL},
        {"done", 0, 0, G_OPTION_ARG_NONE, &done,
         "answered jobs, whatever answered them (to answer them again, e.g. with another "
         "snapshot in the model folder)",
         NULL},
        {"stale", 0, 0, G_OPTION_ARG_NONE, &stale,
         "answered jobs whose answer came from another snapshot than the one --model DIR holds "
         "now (v_answers.model_fingerprint), or from one not recorded (answers before schema 8)",
         NULL},
        {"fingerprint-not", 0, 0, G_OPTION_ARG_STRING, &fingerprint_not,
         "--stale against this snapshot fingerprint (hex, whole or its first 12 or more digits, "
         "as run and status print it) instead of --model DIR's: where the folder is not at hand",
         "HEX"},
        {"dry-run", 'n', 0, G_OPTION_ARG_NONE, &dry_run,
         "print what would be queued again, change nothing", NULL},
        {"json", 0, 0, G_OPTION_ARG_NONE, &json, "print what was done as one JSON object on stdout",
         NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new(
        "- queue dead, failed, cancelled or answered (approximately, stale, any) jobs again");
    dq_job_command_options(ctx, &db, &sel, entries);
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
    int rc = DQ_EXIT_FATAL;
    GError *err = NULL;
    DqStore *store = NULL;
    GPtrArray *groups = NULL;
    stale = stale || fingerprint_not != NULL;
    DqJobFilter filter = {.states = (dead ? 1u << DQ_JOB_DEAD : 0) |
                                    (failed ? 1u << DQ_JOB_FAILED : 0) |
                                    (cancelled ? 1u << DQ_JOB_CANCELLED : 0),
                          .done = (approximate ? DQ_DONE_APPROXIMATE : 0) |
                                  (done ? DQ_DONE_ANY : 0) | (stale ? DQ_DONE_STALE : 0)};
    if (filter.done != 0)
        filter.states |= 1u << DQ_JOB_DONE;
    if (!ok || !dq_cli_no_arguments("requeue", argc, argv))
        goto out;
    if (filter.states == 0) {
        dq_print_line(stderr, "docqa: requeue: say which jobs: --dead, --failed, --cancelled, "
                              "--approximate, --stale, --done");
        goto out;
    }
    if (!dq_job_selection_check(&sel, "requeue"))
        goto out;
    /* Stale is said of one model id's answers: other ids' came from other snapshots anyway. */
    if (stale && sel.model == NULL) {
        dq_print_line(stderr,
                      "docqa: requeue: --%s needs --model DIR: the snapshot folder whose "
                      "answers are current (its name is the model id)",
                      fingerprint_not ? "fingerprint-not" : "stale");
        goto out;
    }
    if (fingerprint_not != NULL) {
        if ((fingerprint = fingerprint_option(fingerprint_not)) == NULL)
            goto out;
    } else if (stale) {
        if (!g_file_test(sel.model, G_FILE_TEST_IS_DIR)) {
            dq_print_line(stderr,
                          "docqa: requeue: --stale: --model %s is no snapshot folder here: give "
                          "the folder, or its fingerprint with --fingerprint-not HEX",
                          sel.model);
            goto out;
        }
        /* What a worker loading this folder now would record as its answers' fingerprint. */
        if ((fingerprint = smolvlm_snapshot_fingerprint(sel.model, &err)) == NULL) {
            rc = dq_cli_fail(err);
            goto out;
        }
    }
    filter.fingerprint = fingerprint;
    if ((groups = dq_job_command_change("requeue", db, &sel, &filter, dry_run, store_jobs_requeue,
                                        &store)) == NULL)
        goto out;
    gint64 n = 0;
    for (guint i = 0; i < groups->len; i++)
        n += ((const DqJobGroup *)g_ptr_array_index(groups, i))->jobs;
    if (json) {
        JsonBuilder *b =
            dq_job_result_json_begin(dry_run, filter.states, dq_job_done_word(filter.done));
        /* queued again, or with --dry-run those that would be */
        dq_cli_json_int(b, "jobs", n);
        dq_job_result_json_print(b, groups, dq_job_done_word(filter.done));
    } else if (n == 0) {
        dq_job_groups_print_none("requeue", filter.states, dq_job_done_word(filter.done));
    } else {
        if (dry_run)
            printf("requeue: would queue %" G_GINT64_FORMAT " job%s again (--dry-run: nothing was "
                   "changed)\n",
                   n, n == 1 ? "" : "s");
        else
            printf("requeue: %" G_GINT64_FORMAT " job%s back in the queue\n", n, n == 1 ? "" : "s");
        dq_job_groups_print(groups, dq_job_done_word(filter.done));
    }
    rc = DQ_EXIT_OK;
out:
    dq_job_command_free(groups, store, &sel, db);
    g_free(fingerprint_not);
    g_free(fingerprint);
    return rc;
}
