/* docqa cancel: withdraw queued (and, when asked, running) jobs, chosen by question, document,
 * model and state. They keep their rows as 'cancelled' (schema 0011); `docqa requeue --cancelled`
 * queues them again. */
#include "cli.h"
#include "cli_jobs.h"

#include "store.h"
#include "store_jobs.h"
#include "text.h"

#include <stdio.h>
#include <string.h>

/* The states --state takes, and those taken without it: every job not answered and not in a
 * worker's hands. A running job is cancelled only when asked for by name. */
#define CANCELLABLE                                                                                \
    ((1u << DQ_JOB_QUEUED) | (1u << DQ_JOB_FAILED) | (1u << DQ_JOB_DEAD) | (1u << DQ_JOB_RUNNING))
#define DEFAULT_STATES ((1u << DQ_JOB_QUEUED) | (1u << DQ_JOB_FAILED) | (1u << DQ_JOB_DEAD))

static gboolean parse_states(char **given, guint *states) {
    *states = 0;
    for (char **s = given; s && *s; s++) {
        guint bit = 0;
        for (int i = 0; i < DQ_JOB_N_STATES; i++)
            if (strcmp(*s, dq_job_state_name(i)) == 0)
                bit = 1u << i;
        if ((bit & CANCELLABLE) == 0) {
            dq_print_line(stderr,
                          "docqa: cancel: --state '%s': expected queued, failed, dead or running%s",
                          *s,
                          bit == (1u << DQ_JOB_DONE) ? " (an answered job is not cancelled)"
                          : bit != 0                 ? " (those jobs are cancelled already)"
                                                     : "");
            return FALSE;
        }
        *states |= bit;
    }
    if (*states == 0)
        *states = DEFAULT_STATES;
    return TRUE;
}

static void count_result(const GPtrArray *groups, gint64 *cancelled, gint64 *answered,
                         gint64 *running) {
    *cancelled = *answered = *running = 0;
    for (guint i = 0; i < groups->len; i++) {
        const DqJobGroup *g = g_ptr_array_index(groups, i);
        if (g->answered)
            *answered += g->jobs;
        else
            *cancelled += g->jobs;
        if (g->state == DQ_JOB_RUNNING)
            *running += g->jobs;
    }
}

static void print_json(const GPtrArray *groups, gboolean dry_run, guint states) {
    gint64 cancelled, answered, running;
    count_result(groups, &cancelled, &answered, &running);
    JsonBuilder *b = dq_job_result_json_begin(dry_run, states, dq_job_done_word(0));
    /* what was done, or with --dry-run what would be */
    dq_cli_json_int(b, "cancelled", cancelled);
    dq_cli_json_int(b, "back_to_done", answered);
    dq_cli_json_int(b, "running", running);
    dq_job_result_json_print(b, groups, dq_job_done_word(0));
}

static void print_result(const GPtrArray *groups, gboolean dry_run) {
    gint64 cancelled, answered, running;
    count_result(groups, &cancelled, &answered, &running);
    printf("cancel: %s%" G_GINT64_FORMAT " job%s%s\n", dry_run ? "would cancel " : "", cancelled,
           cancelled == 1 ? "" : "s", dry_run ? " (--dry-run: nothing was changed)" : " cancelled");
    dq_job_groups_print(groups, dq_job_done_word(0));
    if (answered > 0)
        printf("cancel: %" G_GINT64_FORMAT " of them %s an answer already (queued again by "
               "requeue --approximate): %s back to done with it, not cancelled\n",
               answered, answered == 1 ? "has" : "have", dry_run ? "would go" : "went");
    /* Its worker hears of it at its next heartbeat (worker.c) and drops it from the model;
     * until then it computes on, and an answer it finishes first is kept (queue.h). */
    if (running == 1)
        printf("cancel: 1 of them was running: its worker %s it at its next heartbeat (a third "
               "of a lease) and %s nothing for it; an answer finished before then is kept (its "
               "job is then done)\n",
               dry_run ? "would drop" : "drops", dry_run ? "store" : "stores");
    else if (running > 1)
        printf("cancel: %" G_GINT64_FORMAT " of them were running: their workers %s them at their "
               "next heartbeat (a third of a lease) and store nothing for them; an answer "
               "finished before then is kept (its job is then done)\n",
               running, dry_run ? "would drop" : "drop");
}

int cmd_cancel(int argc, char **argv) {
    char *db = NULL;
    char **state_names = NULL;
    gboolean dry_run = FALSE, json = FALSE;
    DqJobSelection sel = {0};
    GOptionEntry entries[] = {
        {"state", 0, 0, G_OPTION_ARG_STRING_ARRAY, &state_names,
         "only jobs in this state: queued (retrying ones included), failed, dead or running "
         "(repeatable; default queued, failed and dead: running jobs only when named)",
         "STATE"},
        {"dry-run", 'n', 0, G_OPTION_ARG_NONE, &dry_run,
         "print what would be cancelled, change nothing", NULL},
        {"json", 0, 0, G_OPTION_ARG_NONE, &json, "print what was done as one JSON object on stdout",
         NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new("- withdraw jobs that are not answered yet");
    dq_job_command_options(ctx, &db, &sel, entries);
    g_option_context_set_description(
        ctx, "The jobs matching every selector given (--question, --document, --where, --model; at "
             "least one; --document and --where add up) become 'cancelled': no worker takes them, "
             "status counts them apart, and `docqa requeue --cancelled` queues them again. Nothing "
             "stored is deleted: their errors stay in job_errors, and a job that has an answer "
             "already (queued again by requeue --approximate) goes back to done with it. A running "
             "job's worker drops it at its next heartbeat (a third of a lease) without an "
             "answer; one it finished before then is kept, and the job is then done.");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    int rc = DQ_EXIT_FATAL;
    DqStore *store = NULL;
    GPtrArray *groups = NULL;
    DqJobFilter filter = {0};
    if (!ok || !dq_cli_no_arguments("cancel", argc, argv) ||
        !parse_states(state_names, &filter.states))
        goto out;
    if (!dq_job_selection_given(&sel)) {
        dq_print_line(stderr, "docqa: cancel: say which jobs: --question, --document, --where or "
                              "--model (--state narrows them)");
        goto out;
    }
    if (!dq_job_selection_check(&sel, "cancel"))
        goto out;
    if ((groups = dq_job_command_change("cancel", db, &sel, &filter, dry_run, store_jobs_cancel,
                                        &store)) == NULL)
        goto out;
    if (json) {
        print_json(groups, dry_run, filter.states);
    } else if (groups->len == 0) {
        dq_job_groups_print_none("cancel", filter.states, dq_job_done_word(0));
    } else {
        print_result(groups, dry_run);
    }
    rc = DQ_EXIT_OK;
out:
    dq_job_command_free(groups, store, &sel, db);
    g_strfreev(state_names);
    return rc;
}
