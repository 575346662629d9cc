/* docqa requeue: dead, failed, cancelled or approximately answered jobs back into the queue with
 * fresh attempts, all of them or those docqa cancel's selectors pick (cli_jobs.h). */
#include "cli.h"
#include "cli_jobs.h"

#include "store.h"
#include "store_jobs.h"
#include "text.h"

#include <stdio.h>

int cmd_requeue(int argc, char **argv) {
    char *db = NULL;
    gboolean dead = FALSE, failed = FALSE, approximate = FALSE, cancelled = FALSE, dry_run = FALSE;
    DqJobSelection sel = {0};
    GOptionEntry db_entry[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionEntry entries[] = {
        {"dead", 0, 0, G_OPTION_ARG_NONE, &dead,
         "jobs that used all their attempts (model errors, or workers that died or hung: "
         "lease_expired)",
         NULL},
        {"failed", 0, 0, G_OPTION_ARG_NONE, &failed,
         "jobs that failed on their input, not retried: a missing or damaged page image "
         "(page_image), a question the model cannot take, e.g. too long (question), generation "
         "settings a worker cannot use (settings)",
         NULL},
        {"approximate", 0, 0, G_OPTION_ARG_NONE, &approximate,
         "answered jobs whose answer was computed with approximate arithmetic (exact = 0)", NULL},
        {"cancelled", 0, 0, G_OPTION_ARG_NONE, &cancelled, "jobs withdrawn by docqa cancel", NULL},
        {"dry-run", 'n', 0, G_OPTION_ARG_NONE, &dry_run,
         "print what would be queued again, change nothing", NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new(
        "- queue dead, failed, cancelled or approximately answered jobs again");
    g_option_context_add_main_entries(ctx, db_entry, NULL);
    dq_job_selection_add_options(&sel, ctx);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "Every job in the states named, or those of them matching every selector given "
             "(--question, --document, --where, --model, as docqa cancel's; --document and --where "
             "add up). Their recorded errors stay in job_errors. An approximate answer (--weights "
             "int8 or "
             "bf16, a GPU's bf16 products) stays in answers until the job is answered again; the "
             "new answer then moves it to answers_superseded. Run the queue with the exact "
             "settings (the default --weights stored on a CPU) to replace them.");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    int rc = DQ_EXIT_FATAL;
    GError *err = NULL;
    DqStore *store = NULL;
    GPtrArray *groups = NULL;
    DqJobFilter filter = {
        .states = (dead ? 1u << DQ_JOB_DEAD : 0) | (failed ? 1u << DQ_JOB_FAILED : 0) |
                  (approximate ? 1u << DQ_JOB_DONE : 0) | (cancelled ? 1u << DQ_JOB_CANCELLED : 0)};
    if (!ok || !dq_cli_no_arguments("requeue", argc, argv))
        goto out;
    if (filter.states == 0) {
        dq_print_line(
            stderr, "docqa: requeue: say which jobs: --dead, --failed, --cancelled, --approximate");
        goto out;
    }
    if (!dq_job_selection_check(&sel, "requeue"))
        goto out;
    const char *path = db ? db : dq_store_default_location();
    if ((store = dq_store_open_existing(path, &err)) == NULL ||
        !dq_job_selection_resolve(&sel, "requeue", store, path, &filter, &err) ||
        (groups = store_jobs_requeue(store, &filter, dry_run, &err)) == NULL) {
        rc = dq_cli_fail(err);
        goto out;
    }
    gint64 n = 0;
    for (guint i = 0; i < groups->len; i++)
        n += ((const DqJobGroup *)g_ptr_array_index(groups, i))->jobs;
    if (n == 0) {
        char *names = dq_job_states_text(filter.states);
        printf("requeue: no %s job matches: nothing to requeue\n", names);
        g_free(names);
    } else {
        if (dry_run)
            printf("requeue: would queue %" G_GINT64_FORMAT " job%s again (--dry-run: nothing was "
                   "changed)\n",
                   n, n == 1 ? "" : "s");
        else
            printf("requeue: %" G_GINT64_FORMAT " job%s back in the queue\n", n, n == 1 ? "" : "s");
        dq_job_groups_print(groups);
    }
    rc = DQ_EXIT_OK;
out:
    if (groups)
        g_ptr_array_free(groups, TRUE);
    if (store) {
        store_jobs_finalize(store);
        dq_store_close(store);
    }
    dq_job_selection_clear(&sel);
    g_free(db);
    return rc;
}
