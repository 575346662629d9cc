/* docqa cancel: withdraw queued (and, when asked, running) jobs, chosen by question, document,
 * model and state. They keep their rows as 'cancelled' (schema 0011); `docqa requeue --cancelled`
 * queues them again. */
#include "cli.h"
#include "text.h"

#include "dq_error.h"
#include "queue.h"
#include "store.h"
#include "store_jobs.h"

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
            fprintf(stderr,
                    "docqa: cancel: --state '%s': expected queued, failed, dead or running%s\n", *s,
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

/* "10 queued, 2 failed" for the groups [from, to) of one question and model. */
static void print_states(const GPtrArray *groups, guint from, guint to) {
    gint64 by_state[DQ_JOB_N_STATES] = {0};
    for (guint i = from; i < to; i++) {
        const DqCancelGroup *g = g_ptr_array_index(groups, i);
        if (g->state < DQ_JOB_N_STATES)
            by_state[g->state] += g->jobs;
    }
    gboolean first = TRUE;
    for (int i = 0; i < DQ_JOB_N_STATES; i++)
        if (by_state[i] > 0) {
            printf("%s%" G_GINT64_FORMAT " %s", first ? "" : ", ", by_state[i],
                   dq_job_state_name(i));
            first = FALSE;
        }
}

static void print_result(const GPtrArray *groups, gboolean dry_run) {
    gint64 cancelled = 0, answered = 0, running = 0;
    for (guint i = 0; i < groups->len; i++) {
        const DqCancelGroup *g = g_ptr_array_index(groups, i);
        if (g->answered)
            answered += g->jobs;
        else
            cancelled += g->jobs;
        if (g->state == DQ_JOB_RUNNING)
            running += g->jobs;
    }
    printf("cancel: %s%" G_GINT64_FORMAT " job%s%s\n", dry_run ? "would cancel " : "", cancelled,
           cancelled == 1 ? "" : "s", dry_run ? " (--dry-run: nothing was changed)" : " cancelled");
    for (guint i = 0; i < groups->len;) {
        const DqCancelGroup *first = g_ptr_array_index(groups, i);
        guint end = i + 1;
        while (end < groups->len) {
            const DqCancelGroup *g = g_ptr_array_index(groups, end);
            if (g_strcmp0(g->question, first->question) != 0 ||
                g_strcmp0(g->model_id, first->model_id) != 0)
                break;
            end++;
        }
        char *quoted = first->question ? queue_question_quote(first->question) : NULL;
        char *model = dq_text_show(first->model_id, -1, DQ_SHOW_LINE, 0);
        printf("  %s%s%s (model %s): ", quoted ? "\"" : "", quoted ? quoted : "(question deleted)",
               quoted ? "\"" : "", model);
        print_states(groups, i, end);
        printf("\n");
        g_free(model);
        g_free(quoted);
        i = end;
    }
    if (answered > 0)
        printf("cancel: %" G_GINT64_FORMAT " of them %s an answer already (queued again by "
               "requeue --approximate): %s back to done with it, not cancelled\n",
               answered, answered == 1 ? "has" : "have", dry_run ? "would go" : "went");
    if (running > 0)
        printf("cancel: %" G_GINT64_FORMAT " of them %s running: %s worker%s %s not stopped, and "
               "an answer that still comes is kept (its job is then done)\n",
               running, running == 1 ? "was" : "were", running == 1 ? "its" : "their",
               running == 1 ? "" : "s", running == 1 ? "is" : "are");
}

int cmd_cancel(int argc, char **argv) {
    char *db = NULL, *model = NULL;
    char **questions = NULL, **doc_ids = NULL, **where = NULL, **state_names = NULL;
    gboolean dry_run = FALSE;
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"question", 'q', 0, G_OPTION_ARG_FILENAME_ARRAY, &questions, /* bytes, as ask's */
         "the jobs of this question, trimmed as ask stores it (repeatable)", "TEXT"},
        {"document", 'd', 0, G_OPTION_ARG_STRING_ARRAY, &doc_ids,
         "the jobs made for this document's pages, or for the same bytes at another path "
         "(repeatable)",
         "ID"},
        {"where", 'w', 0, G_OPTION_ARG_FILENAME_ARRAY, &where,
         "the jobs of the documents, any version, matching this SQL expression over the "
         "documents table, run read-only, as ask's --where (repeatable)",
         "SQL"},
        {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model,
         "the jobs asked for this model: a snapshot DIR (its name is the model id) or a model id",
         "DIR|ID"},
        {"state", 0, 0, G_OPTION_ARG_STRING_ARRAY, &state_names,
         "only jobs in this state: queued (retrying ones included), failed, dead or running "
         "(repeatable; default queued, failed and dead: running jobs only when named)",
         "STATE"},
        {"dry-run", 'n', 0, G_OPTION_ARG_NONE, &dry_run,
         "print what would be cancelled, change nothing", NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new("- withdraw jobs that are not answered yet");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "The jobs matching every selector given (--question, --document, --where, --model; at "
             "least one; --document and --where add up) become 'cancelled': no worker takes them, "
             "status counts them apart, and `docqa requeue --cancelled` queues them again. Nothing "
             "stored is deleted: their errors stay in job_errors, and a job that has an answer "
             "already (queued again by requeue --approximate) goes back to done with it. A running "
             "job's worker goes on; its answer, if it comes, is kept and the job is then done.");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    int rc = DQ_EXIT_FATAL;
    GError *err = NULL;
    DqStore *store = NULL;
    GArray *question_ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    GArray *document_ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    GPtrArray *groups = NULL;
    char *model_id = NULL;
    guint states = 0;
    if (!ok || !dq_cli_no_arguments("cancel", argc, argv) || !parse_states(state_names, &states))
        goto out;
    if (questions == NULL && doc_ids == NULL && where == NULL && model == NULL) {
        fprintf(stderr, "docqa: cancel: say which jobs: --question, --document, --where or "
                        "--model (--state narrows them)\n");
        goto out;
    }
    for (char **w = where; w && *w; w++) {
        if (!dq_cli_utf8_option("cancel", "--where", *w))
            goto out;
        if (!queue_check_where(*w, &err)) {
            rc = dq_cli_fail(err);
            goto out;
        }
    }
    GPtrArray *texts = g_ptr_array_new_with_free_func(g_free);
    for (char **q = questions; q && *q; q++) {
        char *text = queue_question_normalize(*q, -1, "--question", &err);
        if (text == NULL) {
            g_ptr_array_free(texts, TRUE);
            rc = dq_cli_fail(err);
            goto out;
        }
        g_ptr_array_add(texts, text);
    }
    for (char **d = doc_ids; d && *d; d++) {
        gint64 id = 0;
        if (!dq_cli_int_option("cancel", "--document", *d, 1, G_MAXINT64, &id)) {
            g_ptr_array_free(texts, TRUE);
            goto out;
        }
        g_array_append_val(document_ids, id);
    }
    if (model != NULL && *model == '\0') {
        fprintf(stderr, "docqa: cancel: --model '': an empty name (give a model snapshot "
                        "directory, or a model id)\n");
        g_ptr_array_free(texts, TRUE);
        goto out;
    }
    if (model != NULL)
        model_id = queue_model_id(model);
    const char *path = db ? db : dq_store_default_location();
    store = dq_store_open_existing(path, &err);
    /* A selector that names nothing is a typo, not "nothing to cancel": said, naming it. */
    for (guint i = 0; store != NULL && err == NULL && i < texts->len; i++) {
        gint64 id = 0;
        if (store_jobs_find_question(store, g_ptr_array_index(texts, i), &id, &err) && id == 0) {
            char *quoted = queue_question_quote(g_ptr_array_index(texts, i));
            dq_fail(&err, DQ_ERR_ARGS,
                    "cancel: --question \"%s\": no such question was asked (v_progress "
                    "lists those that were)",
                    quoted);
            g_free(quoted);
        }
        g_array_append_val(question_ids, id);
    }
    g_ptr_array_free(texts, TRUE);
    for (guint i = 0; store != NULL && err == NULL && i < document_ids->len; i++) {
        gboolean exists = FALSE;
        gint64 id = g_array_index(document_ids, gint64, i);
        if (store_jobs_document_exists(store, id, &exists, &err) && !exists)
            dq_fail(&err, DQ_ERR_ARGS, "%s: no document with id %" G_GINT64_FORMAT, path, id);
    }
    for (char **w = where; store != NULL && err == NULL && w && *w; w++)
        store_jobs_where_documents(store, *w, document_ids, &err);
    gboolean known = TRUE;
    if (store != NULL && err == NULL && model_id != NULL &&
        store_jobs_model_known(store, model_id, &known, &err) && !known)
        dq_fail(&err, DQ_ERR_ARGS, "cancel: --model %s: no job was asked for the model id '%s'",
                model, model_id);
    if (store == NULL || err != NULL) {
        rc = dq_cli_fail(err);
        goto out;
    }
    DqJobFilter filter = {.question_ids = (const gint64 *)question_ids->data,
                          .n_question_ids = (int)question_ids->len,
                          .document_ids = (const gint64 *)document_ids->data,
                          .n_document_ids = (int)document_ids->len,
                          .documents_given = doc_ids != NULL || where != NULL,
                          .model_id = model_id,
                          .states = states};
    if ((groups = store_jobs_cancel(store, &filter, dry_run, &err)) == NULL) {
        rc = dq_cli_fail(err);
        goto out;
    }
    if (groups->len == 0) {
        GString *names = g_string_new(NULL);
        int n = 0, total = 0;
        for (int i = 0; i < DQ_JOB_N_STATES; i++)
            total += (states & (1u << i)) != 0;
        for (int i = 0; i < DQ_JOB_N_STATES; i++)
            if (states & (1u << i))
                g_string_append_printf(names, "%s%s",
                                       n++ == 0     ? ""
                                       : n == total ? " or "
                                                    : ", ",
                                       dq_job_state_name(i));
        printf("cancel: no %s job matches: nothing to cancel\n", names->str);
        g_string_free(names, TRUE);
    } else {
        print_result(groups, dry_run);
    }
    rc = DQ_EXIT_OK;
out:
    if (groups)
        g_ptr_array_free(groups, TRUE);
    if (store) {
        store_jobs_finalize(store);
        dq_store_close(store);
    }
    g_array_free(question_ids, TRUE);
    g_array_free(document_ids, TRUE);
    g_strfreev(questions);
    g_strfreev(doc_ids);
    g_strfreev(where);
    g_strfreev(state_names);
    g_free(model_id);
    g_free(model);
    g_free(db);
    return rc;
}
