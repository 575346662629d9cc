#include "cli_jobs.h"
#include "cli.h"
#include "text.h"

#include "dq_error.h"
#include "queue.h"
#include "test_point.h"

#include <stdio.h>
#include <string.h>

void dq_job_command_options(GOptionContext *ctx, char **db, DqJobSelection *sel,
                            const GOptionEntry *entries) {
    GOptionEntry common[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"question", 'q', 0, G_OPTION_ARG_FILENAME_ARRAY, &sel->questions, /* bytes, as ask's */
         "the jobs of this question, trimmed as ask stores it (repeatable)", "TEXT"},
        {"document", 'd', 0, G_OPTION_ARG_STRING_ARRAY, &sel->documents,
         "the jobs made for this document's pages, or for the same bytes at another path "
         "(repeatable)",
         "ID"},
        {"where", 'w', 0, G_OPTION_ARG_FILENAME_ARRAY, &sel->where,
         "the jobs of the documents, any version, matching this SQL expression over the "
         "documents table, run read-only, as ask's --where (repeatable)",
         "SQL"},
        {"model", 'm', 0, G_OPTION_ARG_FILENAME, &sel->model,
         "the jobs asked for this model: a snapshot DIR (its name is the model id) or a model id",
         "DIR|ID"},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    /* GLib copies the entries. */
    dq_cli_add_options(ctx, common, entries, NULL);
}

GPtrArray *dq_job_command_change(
    const char *command, const char *db, DqJobSelection *sel, DqJobFilter *filter, gboolean dry_run,
    GPtrArray *(*change)(DqStore *, const DqJobFilter *, gboolean, GError **), DqStore **store) {
    GError *err = NULL;
    GPtrArray *groups = NULL;
    const char *path = db ? db : dq_store_default_location();
    if ((*store = dq_store_open_existing(path, &err)) == NULL) {
        dq_cli_fail_in(command, FALSE, err);
        return NULL;
    }
    if (!dq_job_selection_resolve(sel, command, *store, filter, &err) ||
        (groups = change(*store, filter, dry_run, &err)) == NULL) {
        dq_cli_fail(err);
        return NULL;
    }
    dq_cli_signals_record(); /* committed: the report of it is printed whole */
    char *point = g_strdup_printf("%s:stored", command);
    dq_test_point(point);
    g_free(point);
    return groups;
}

gboolean dq_job_selection_given(const DqJobSelection *sel) {
    return sel->questions != NULL || sel->documents != NULL || sel->where != NULL ||
           sel->model != NULL;
}

gboolean dq_job_selection_check(DqJobSelection *sel, const char *command) {
    GError *err = NULL;
    sel->texts = g_ptr_array_new_with_free_func(g_free);
    sel->question_ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    sel->document_ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    for (char **w = sel->where; w && *w; w++) {
        if (!dq_cli_utf8_option(command, "--where", *w))
            return FALSE;
        if (!queue_check_where(*w, &err)) {
            dq_cli_fail_in(command, FALSE, err);
            return FALSE;
        }
    }
    for (char **q = sel->questions; q && *q; q++) {
        char *text = queue_question_normalize(*q, -1, "--question", &err);
        if (text == NULL) {
            dq_cli_fail_in(command, FALSE, err);
            return FALSE;
        }
        g_ptr_array_add(sel->texts, text);
    }
    for (char **d = sel->documents; d && *d; d++) {
        gint64 id = 0;
        if (!dq_cli_int_option(command, "--document", *d, 1, G_MAXINT64, &id))
            return FALSE;
        g_array_append_val(sel->document_ids, id);
    }
    if (sel->model != NULL && *sel->model == '\0') {
        dq_print_line(stderr,
                      "docqa: %s: --model '': an empty name (give a model snapshot directory, or a "
                      "model id)",
                      command);
        return FALSE;
    }
    if (sel->model != NULL)
        sel->model_id = queue_model_id(sel->model);
    return TRUE;
}

gboolean dq_job_selection_resolve(DqJobSelection *sel, const char *command, DqStore *store,
                                  DqJobFilter *filter, GError **err) {
    for (guint i = 0; i < sel->texts->len; i++) {
        gint64 id = 0;
        const char *text = g_ptr_array_index(sel->texts, i);
        if (!store_jobs_find_question(store, text, &id, err))
            return FALSE;
        if (id == 0) {
            char *quoted = queue_question_quote(text);
            dq_fail(err, DQ_ERR_ARGS,
                    "%s: --question \"%s\": no such question was asked (v_progress lists those "
                    "that were)",
                    command, quoted);
            g_free(quoted);
            return FALSE;
        }
        g_array_append_val(sel->question_ids, id);
    }
    for (guint i = 0; i < sel->document_ids->len; i++) {
        gboolean exists = FALSE;
        gint64 id = g_array_index(sel->document_ids, gint64, i);
        if (!store_jobs_document_exists(store, id, &exists, err))
            return FALSE;
        if (!exists)
            return dq_fail(err, DQ_ERR_ARGS,
                           "%s: --document %" G_GINT64_FORMAT
                           ": no document with id %" G_GINT64_FORMAT " in %s",
                           command, id, id, dq_store_path(store));
    }
    for (char **w = sel->where; w && *w; w++)
        if (!store_jobs_where_documents(store, *w, sel->document_ids, err)) {
            if (g_error_matches(*err, DQ_ERROR, DQ_ERR_ARGS)) /* the expression's fault */
                g_prefix_error(err, "%s: ", command);
            return FALSE;
        }
    gboolean known = TRUE;
    if (sel->model_id != NULL) {
        if (!store_jobs_model_known(store, sel->model_id, &known, err))
            return FALSE;
        if (!known)
            return dq_fail(err, DQ_ERR_ARGS,
                           "%s: --model %s: no job was asked for the model id '%s'", command,
                           sel->model, sel->model_id);
    }
    filter->question_ids = (const gint64 *)sel->question_ids->data;
    filter->n_question_ids = (int)sel->question_ids->len;
    filter->document_ids = (const gint64 *)sel->document_ids->data;
    filter->n_document_ids = (int)sel->document_ids->len;
    filter->documents_given = sel->documents != NULL || sel->where != NULL;
    filter->model_id = sel->model_id;
    return TRUE;
}

void dq_job_selection_clear(DqJobSelection *sel) {
    g_strfreev(sel->questions);
    g_strfreev(sel->documents);
    g_strfreev(sel->where);
    g_free(sel->model);
    if (sel->texts)
        g_ptr_array_free(sel->texts, TRUE);
    if (sel->question_ids)
        g_array_free(sel->question_ids, TRUE);
    if (sel->document_ids)
        g_array_free(sel->document_ids, TRUE);
    g_free(sel->model_id);
    memset(sel, 0, sizeof *sel);
}

const char *dq_job_done_word(guint done) {
    if (done == 0 || done == DQ_DONE_APPROXIMATE)
        return "approximate";
    return done == DQ_DONE_STALE ? "stale" : "answered";
}

static const char *state_word(int state, const char *done_word) {
    return state == DQ_JOB_DONE ? done_word : dq_job_state_name(state);
}

char *dq_job_states_text(guint states, const char *done_word) {
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
                                   state_word(i, done_word));
    return g_string_free(names, FALSE);
}

/* "10 queued, 2 failed" for the groups [from, to) of one question and model. */
static void print_states(const GPtrArray *groups, guint from, guint to, const char *done_word) {
    gint64 by_state[DQ_JOB_N_STATES] = {0};
    for (guint i = from; i < to; i++) {
        const DqJobGroup *g = g_ptr_array_index(groups, i);
        if (g->state < DQ_JOB_N_STATES)
            by_state[g->state] += g->jobs;
    }
    gboolean first = TRUE;
    for (int i = 0; i < DQ_JOB_N_STATES; i++)
        if (by_state[i] > 0) {
            printf("%s%" G_GINT64_FORMAT " %s", first ? "" : ", ", by_state[i],
                   state_word(i, done_word));
            first = FALSE;
        }
}

/* The end of the run of groups from `from` that share its question and model. */
static guint group_end(const GPtrArray *groups, guint from) {
    const DqJobGroup *first = g_ptr_array_index(groups, from);
    guint end = from + 1;
    while (end < groups->len) {
        const DqJobGroup *g = g_ptr_array_index(groups, end);
        if (g_strcmp0(g->question, first->question) != 0 ||
            g_strcmp0(g->model_id, first->model_id) != 0)
            break;
        end++;
    }
    return end;
}

void dq_job_groups_print(const GPtrArray *groups, const char *done_word) {
    for (guint i = 0; i < groups->len;) {
        const DqJobGroup *first = g_ptr_array_index(groups, i);
        guint end = group_end(groups, i);
        char *quoted = first->question ? queue_question_quote(first->question) : NULL;
        char *model = dq_text_show(first->model_id, -1, DQ_SHOW_LINE, 0);
        printf("  %s%s%s (model %s): ", quoted ? "\"" : "", quoted ? quoted : "(question deleted)",
               quoted ? "\"" : "", model);
        print_states(groups, i, end, done_word);
        printf("\n");
        g_free(model);
        g_free(quoted);
        i = end;
    }
}

static void groups_json(JsonBuilder *b, const GPtrArray *groups, const char *done_word) {
    json_builder_set_member_name(b, "groups");
    json_builder_begin_array(b);
    for (guint i = 0; i < groups->len;) {
        const DqJobGroup *first = g_ptr_array_index(groups, i);
        guint end = group_end(groups, i);
        gint64 by_state[DQ_JOB_N_STATES] = {0}, jobs = 0, answered = 0;
        for (guint k = i; k < end; k++) {
            const DqJobGroup *g = g_ptr_array_index(groups, k);
            if (g->state < DQ_JOB_N_STATES)
                by_state[g->state] += g->jobs;
            jobs += g->jobs;
            answered += g->answered ? g->jobs : 0;
        }
        json_builder_begin_object(b);
        dq_cli_json_string(b, "question", first->question);
        dq_cli_json_string(b, "model", first->model_id);
        dq_cli_json_int(b, "jobs", jobs);
        json_builder_set_member_name(b, "by_state");
        json_builder_begin_object(b);
        for (int s = 0; s < DQ_JOB_N_STATES; s++)
            if (by_state[s] > 0) {
                json_builder_set_member_name(b, state_word(s, done_word));
                json_builder_add_int_value(b, by_state[s]);
            }
        json_builder_end_object(b);
        dq_cli_json_int(b, "answered", answered);
        json_builder_end_object(b);
        i = end;
    }
    json_builder_end_array(b);
}

static void states_json(JsonBuilder *b, const char *name, guint states, const char *done_word) {
    json_builder_set_member_name(b, name);
    json_builder_begin_array(b);
    for (int i = 0; i < DQ_JOB_N_STATES; i++)
        if (states & (1u << i))
            json_builder_add_string_value(b, state_word(i, done_word));
    json_builder_end_array(b);
}

JsonBuilder *dq_job_result_json_begin(gboolean dry_run, guint states, const char *done_word) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "dry_run");
    json_builder_add_boolean_value(b, dry_run);
    states_json(b, "states", states, done_word);
    return b;
}

void dq_job_result_json_print(JsonBuilder *b, const GPtrArray *groups, const char *done_word) {
    groups_json(b, groups, done_word);
    json_builder_end_object(b);
    dq_cli_json_print(b, TRUE);
}

void dq_job_groups_print_none(const char *command, guint states, const char *done_word) {
    char *names = dq_job_states_text(states, done_word);
    printf("%s: no %s job matches: nothing to %s\n", command, names, command);
    g_free(names);
}

void dq_job_command_free(GPtrArray *groups, DqStore *store, DqJobSelection *sel, char *db) {
    if (groups != NULL)
        g_ptr_array_free(groups, TRUE);
    if (store != NULL) {
        store_jobs_finalize(store);
        dq_store_close(store);
    }
    dq_job_selection_clear(sel);
    g_free(db);
}
