/* docqa requeue: dead, failed, cancelled or approximately answered jobs back into the queue with
 * fresh attempts. */
#include "cli.h"

#include "store.h"
#include "store_jobs.h"

#include <stdio.h>

int cmd_requeue(int argc, char **argv) {
    char *db = NULL;
    gboolean dead = FALSE, failed = FALSE, approximate = FALSE, cancelled = FALSE;
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
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
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new(
        "- queue dead, failed, cancelled or approximately answered jobs again");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "Their recorded errors stay in job_errors. An approximate answer (--weights int8 or "
             "bf16, a GPU's bf16 products) stays in answers until the job is answered again; the "
             "new answer then moves it to answers_superseded. Run the queue with the exact "
             "settings (the default --weights stored on a CPU) to replace them.");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    int rc = DQ_EXIT_FATAL;
    GError *err = NULL;
    DqStore *store = NULL;
    if (!ok || !dq_cli_no_arguments("requeue", argc, argv))
        goto out;
    if (!dead && !failed && !approximate && !cancelled) {
        fprintf(stderr,
                "docqa: requeue: say which jobs: --dead, --failed, --cancelled, --approximate\n");
        goto out;
    }
    const char *path = db ? db : dq_store_default_location();
    gint64 n = 0;
    if ((store = dq_store_open_existing(path, &err)) == NULL ||
        !store_jobs_requeue(store,
                            (dead ? DQ_REQUEUE_DEAD : 0) | (failed ? DQ_REQUEUE_FAILED : 0) |
                                (approximate ? DQ_REQUEUE_APPROXIMATE : 0) |
                                (cancelled ? DQ_REQUEUE_CANCELLED : 0),
                            &n, &err)) {
        rc = dq_cli_fail(err);
        goto out;
    }
    printf("requeue: %" G_GINT64_FORMAT " job%s back in the queue\n", n, n == 1 ? "" : "s");
    rc = DQ_EXIT_OK;
out:
    if (store) {
        store_jobs_finalize(store);
        dq_store_close(store);
    }
    g_free(db);
    return rc;
}
