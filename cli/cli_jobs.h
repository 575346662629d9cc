/* What docqa cancel and docqa requeue share: the selectors that pick jobs (--question,
 * --document, --where, --model), turned into one DqJobFilter (store/store_jobs.h), and the
 * per-question summary of what was done with them. */
#ifndef DQ_CLI_JOBS_H
#define DQ_CLI_JOBS_H

#include "store.h"
#include "store_jobs.h"

#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct {
    /* the options, as parsed */
    char **questions, **documents, **where;
    char *model;
    /* what they name, found by dq_job_selection_check and dq_job_selection_resolve */
    GPtrArray *texts; /* the questions, trimmed as ask stores them */
    GArray *question_ids, *document_ids;
    char *model_id;
} DqJobSelection;

/* Whether any selector was given. */
gboolean dq_job_selection_given(const DqJobSelection *sel);

/* What can be checked before the database opens (UTF-8, --where's SQL, the questions, the
 * document ids, an empty --model): FALSE, with "docqa: <command>: ..." printed, when a value is
 * wrong. */
gboolean dq_job_selection_check(DqJobSelection *sel, const char *command);

/* Looks the selectors up in store and fills filter's selectors (its states are the caller's;
 * filter points into sel). A selector that names nothing, a question never asked, a document id
 * that does not exist, a model no job was asked for, is an error naming it: a typo, not "nothing
 * to do". A --where that matches no document is not: its jobs are none. */
gboolean dq_job_selection_resolve(DqJobSelection *sel, const char *command, DqStore *store,
                                  DqJobFilter *filter, GError **err);

void dq_job_selection_clear(DqJobSelection *sel);

/* cancel's and requeue's options, in the order --help lists them: --db (into *db), the
 * selectors --question, --document, --where and --model (into sel), then the command's own
 * `entries`. */
void dq_job_command_options(GOptionContext *ctx, char **db, DqJobSelection *sel,
                            const GOptionEntry *entries);

/* What cancel and requeue do once their options are checked: open the database `db` (NULL: the
 * default), resolve sel into filter's selectors, and `change` (store_jobs_cancel or
 * store_jobs_requeue) the jobs it takes. Then the change is committed: from here a signal is
 * only noted (dq_cli_signals_record), and the test point "<command>:stored" is passed. The
 * groups changed (*store is left open for the caller to close), or NULL with the error printed
 * (dq_cli_fail). */
GPtrArray *dq_job_command_change(
    const char *command, const char *db, DqJobSelection *sel, DqJobFilter *filter, gboolean dry_run,
    GPtrArray *(*change)(DqStore *, const DqJobFilter *, gboolean, GError **), DqStore **store);

/* The word for the done jobs a filter takes (DqJobFilter's `done`): "approximate", "stale" or
 * "answered". */
const char *dq_job_done_word(guint done);

/* The states in `states` for a sentence: "queued, failed or dead"; done ones are named
 * `done_word`. Free it. */
char *dq_job_states_text(guint states, const char *done_word);

/* One line a question and model of groups (DqJobGroup, as store_jobs_cancel returns them):
 * `  "Total?" (model tiny): 10 queued, 2 failed`; done ones are named `done_word`. */
void dq_job_groups_print(const GPtrArray *groups, const char *done_word);

/* cancel's and requeue's line when no job matched, on stdout: "<command>: no queued or failed
 * job matches: nothing to <command>"; done ones are named `done_word`. */
void dq_job_groups_print_none(const char *command, guint states, const char *done_word);

/* cancel's and requeue's --json object, begun: {"dry_run": ..., "states": an array of the
 * names in `states`, done ones named `done_word`; the command then adds its counts, and
 * dq_job_result_json_print ends it with "groups" (one object a question and model:
 * {"question" (null when the question was deleted), "model", "jobs", "by_state": {"queued": 10,
 * "failed": 2}, "answered": jobs that have an answer already}) and prints it. */
JsonBuilder *dq_job_result_json_begin(gboolean dry_run, guint states, const char *done_word);
void dq_job_result_json_print(JsonBuilder *b, const GPtrArray *groups, const char *done_word);

/* What cancel and requeue hold at their end, each NULL or not: the groups, the store (its
 * statements finalized and closed), the selection and the --db value. */
void dq_job_command_free(GPtrArray *groups, DqStore *store, DqJobSelection *sel, char *db);

#endif
