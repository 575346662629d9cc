/* docqa ask: enqueue one job per (page, question) not yet asked (see jobs/queue.h). */
#include "cli.h"

#include "config.h"
#include "queue.h"
#include "store.h"
#include "test_point.h"
#include "text.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The summary as JSON (README, "Exit statuses, signals and JSON"); notes and warnings stay on
 * stderr. */
static void print_json(const DqAskResult *res, const char *model_id, int n_res) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    dq_cli_json_string(b, "model_id", model_id);
    dq_cli_json_int(b, "questions", res->questions);
    dq_cli_json_int(b, "duplicates", res->duplicates);
    dq_cli_json_int(b, "pages", res->pages);
    dq_cli_json_int(b, "jobs_added", res->added);
    dq_cli_json_int(b, "jobs_existing", res->existing);
    dq_cli_json_int(b, "same_content_pages", res->same_content);
    json_builder_set_member_name(b, "n_res");
    if (n_res > 0)
        json_builder_add_int_value(b, n_res);
    else
        json_builder_add_null_value(b);
    dq_cli_json_int(b, "other_rendering_pages", res->other_renderings);
    json_builder_set_member_name(b, "other_n_res");
    json_builder_begin_array(b);
    for (int n = 1; n <= 64; n++)
        if (res->other_n_res & (G_GUINT64_CONSTANT(1) << (n - 1)))
            json_builder_add_int_value(b, n);
    json_builder_end_array(b);
    dq_cli_json_int(b, "documents_without_n_res", res->no_rendering_documents);
    dq_cli_json_int(b, "documents_gone", res->gone_documents);
    dq_cli_json_int(b, "pages_failed", res->failed_pages);
    json_builder_end_object(b);
    dq_cli_json_print(b, TRUE);
}

/* The summary for a person: one line, and one a page or document left out. */
static void print_text(const DqAskResult *res, const char *model_id, int n_res) {
    char dups[64] = "";
    if (res->duplicates > 0)
        g_snprintf(dups, sizeof dups, " (%d duplicate%s dropped)", res->duplicates,
                   res->duplicates == 1 ? "" : "s");
    char *shown_model = dq_cli_shown(model_id);
    printf("ask: %d question%s%s x %d page%s: %d new job%s, %d already asked (model %s)\n",
           res->questions, res->questions == 1 ? "" : "s", dups, res->pages,
           res->pages == 1 ? "" : "s", res->added, res->added == 1 ? "" : "s", res->existing,
           shown_model);
    g_free(shown_model);
    if (res->same_content > 0)
        printf("ask: %d more page%s hold%s the same bytes as pages above (a copy, a moved file, "
               "an older version): asked once; v_current_answers shows the answers under each "
               "path\n",
               res->same_content, res->same_content == 1 ? "" : "s",
               res->same_content == 1 ? "s" : "");
    GString *n_res_values = g_string_new(NULL);
    for (int n = 1; n <= 64; n++)
        if (res->other_n_res & (G_GUINT64_CONSTANT(1) << (n - 1)))
            g_string_append_printf(n_res_values, "%s%d", n_res_values->len ? ", " : "", n);
    if (res->other_renderings > 0)
        printf("ask: %d page%s of other renderings left out (n_res %s): %s; --n-res N picks "
               "another\n",
               res->other_renderings, res->other_renderings == 1 ? "" : "s", n_res_values->str,
               n_res ? "asked at --n-res only" : "each document's most recent rendering is asked");
    if (res->no_rendering_documents > 0)
        printf("ask: %d document%s ha%s no pages at --n-res %d (rendered at n_res %s), left out "
               "(docqa ingest --n-res %d renders them)\n",
               res->no_rendering_documents, res->no_rendering_documents == 1 ? "" : "s",
               res->no_rendering_documents == 1 ? "s" : "ve", n_res, n_res_values->str, n_res);
    g_string_free(n_res_values, TRUE);
    if (res->gone_documents > 0)
        printf("ask: %d document%s left out: %s file%s gone (documents.missing_since; ingest "
               "found %s gone)\n",
               res->gone_documents, res->gone_documents == 1 ? "" : "s",
               res->gone_documents == 1 ? "its" : "their",
               res->gone_documents == 1 ? " is" : "s are",
               res->gone_documents == 1 ? "it" : "them");
    if (res->failed_pages > 0)
        printf("ask: %d page%s left out: ingest could not render them (see docqa ingest)\n",
               res->failed_pages, res->failed_pages == 1 ? "" : "s");
}

/* The command line, and what it comes to. */
typedef struct {
    char *db, *questions_file, *model, *prompt;
    char **doc_ids, **where, **args;
    int max_new_tokens, max_attempts, n_res; /* n_res G_MININT: --n-res not given */
    gboolean json;
    GPtrArray *questions; /* normalized */
    GArray *ids;          /* gint64: --document */
    const char *model_arg;
    char *model_id;
    DqStore *store;
} AskArgs;

static gboolean ask_parse(AskArgs *a, int argc, char **argv) {
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &a->db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"document", 'd', 0, G_OPTION_ARG_STRING_ARRAY, &a->doc_ids,
         "ask about this document (repeatable; default: the newest version of every document)",
         "ID"},
        {"where", 'w', 0, G_OPTION_ARG_FILENAME_ARRAY, &a->where, /* bytes, checked as UTF-8 */
         "ask about the documents matching this SQL expression over the documents table, run "
         "read-only, e.g. \"path LIKE '%/invoices/%'\"; one expression: its parentheses "
         "balanced outside quotes, no comments, ';' or '$' (repeatable)",
         "SQL"},
        {"questions", 'f', 0, G_OPTION_ARG_FILENAME, &a->questions_file,
         "read questions from FILE ('-': standard input), UTF-8 (a leading byte order mark is "
         "skipped): a JSON list of strings when its first non-space character is '[', else one "
         "question a line, as written (quotes kept; a CSV is read as lines too), blank lines and "
         "lines starting with '#' (comments) skipped",
         "FILE"},
        {"model", 'm', 0, G_OPTION_ARG_FILENAME, &a->model,
         "the model that will answer: the snapshot DIR given to `docqa run`, which must hold "
         "config.json (its name is the model id), or a bare model id without '/' (to ask where "
         "the snapshot is not; default $DOCQA_MODEL or SmolVLM-256M-Instruct)",
         "DIR|ID"},
        {"n-res", 0, 0, G_OPTION_ARG_INT, &a->n_res,
         "ask about each document's pages rendered at ingest --n-res N (default: each document's "
         "most recent rendering)",
         "N"},
        {"prompt", 0, 0, G_OPTION_ARG_FILENAME, &a->prompt,
         "prompt template, one of those compiled into docqa from configs/prompts/ (default "
         "docvqa, the only one so far)",
         "NAME"},
        {"max-new-tokens", 0, 0, G_OPTION_ARG_INT, &a->max_new_tokens,
         "longest answer in tokens (default 64)", "N"},
        {"max-attempts", 0, 0, G_OPTION_ARG_INT, &a->max_attempts,
         "tries per job before it is marked dead (default 3)", "N"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &a->json,
         "print the summary as one JSON object on stdout", NULL},
        /* Questions here rather than left in argv: GLib leaves a "--" there (which ends the
         * options, so that `-- '-2+3'` asks "-2+3"), which is no question. Bytes, checked as
         * UTF-8 by queue_question_normalize. */
        {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &a->args, NULL, NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx =
        g_option_context_new("[QUESTION...] - queue questions about ingested pages");
    dq_cli_add_options(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "One job per (page, question). Asking again with the same model and settings adds "
             "nothing: the key is the document's SHA-256, the page number, the question, the "
             "model id, the render settings and the generation settings. Each question, from the "
             "command line or a file, is trimmed of surrounding whitespace (Unicode's too) and "
             "asked once however often it is given; an empty question, one that is not UTF-8 "
             "text, or one holding <image> (the page image's marker in the prompt) is refused. Of "
             "each document one rendering is asked about (--n-res), and a "
             "page whose bytes another path or version holds too is asked once: v_current_answers "
             "shows its answers under every path. Documents whose file ingest found gone are left "
             "out.");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    return ok;
}

/* `docqa ask questions.txt` (--questions forgotten) or `docqa ask invoice.pdf "Total?"` would
 * queue the file's name as a question about every page, and a night of model time would go to
 * it; a question is hardly ever the name of a file where ask runs. */
static gboolean ask_not_a_file(const char *arg, const char *source) {
    GStatBuf st;
    if (g_lstat(arg, &st) != 0)
        return TRUE;
    char *shown = dq_cli_shown(arg);
    dq_print_line(stderr,
                  "docqa: ask: %s '%s' is the name of a %s here, not a question (a file "
                  "of questions is given with --questions FILE, the documents to ask "
                  "about with --document or --where; to ask it as a question all the "
                  "same, put it in a --questions file)",
                  source, shown, S_ISDIR(st.st_mode) ? "folder" : "file");
    g_free(shown);
    return FALSE;
}

/* The questions of the command line, then those of --questions FILE. */
static int ask_read_questions(AskArgs *a) {
    GError *err = NULL;
    for (int i = 0; a->args != NULL && a->args[i] != NULL; i++) {
        char *source = g_strdup_printf("command-line question %d", i + 1);
        char *q = queue_question_normalize(a->args[i], -1, source, &err);
        if (q == NULL) {
            g_free(source);
            return dq_cli_fail_in("ask", FALSE, err);
        }
        gboolean question = ask_not_a_file(a->args[i], source);
        g_free(source);
        if (!question) {
            g_free(q);
            return DQ_EXIT_FATAL;
        }
        g_ptr_array_add(a->questions, q);
    }
    if (a->questions_file != NULL) {
        char **qs = queue_read_questions(a->questions_file, &err);
        if (qs == NULL)
            return dq_cli_fail_in("ask", FALSE, err); /* each a fault of the file */
        for (char **q = qs; *q; q++)
            g_ptr_array_add(a->questions, g_strdup(*q));
        g_strfreev(qs);
    }
    if (a->questions->len == 0) {
        dq_print_line(stderr, "docqa: ask: no question given (arguments or --questions FILE)");
        return DQ_EXIT_FATAL;
    }
    return DQ_EXIT_OK;
}

static gboolean ask_check_options(AskArgs *a) {
    for (char **w = a->where; w && *w; w++)
        if (!dq_cli_utf8_option("ask", "--where", *w))
            return FALSE;
    if (!dq_cli_utf8_option("ask", "--prompt", a->prompt))
        return FALSE;
    for (char **d = a->doc_ids; d && *d; d++) {
        gint64 id = 0;
        if (!dq_cli_int_option("ask", "--document", *d, 1, G_MAXINT64, &id))
            return FALSE;
        g_array_append_val(a->ids, id);
    }
    if (a->max_new_tokens < 1) {
        dq_print_line(stderr, "docqa: ask: --max-new-tokens %d: must be positive",
                      a->max_new_tokens);
        return FALSE;
    }
    if (a->n_res != G_MININT && (a->n_res < 1 || a->n_res > DQ_CLI_MAX_N_RES)) {
        dq_print_line(stderr, "docqa: ask: --n-res %d: must be 1 to %d, as ingest's", a->n_res,
                      DQ_CLI_MAX_N_RES);
        return FALSE;
    }
    if (a->n_res == G_MININT)
        a->n_res = 0;
    if (a->max_attempts < 1) {
        dq_print_line(stderr, "docqa: ask: --max-attempts %d: must be positive", a->max_attempts);
        return FALSE;
    }
    return TRUE;
}

/* A value with a '/' is a path: a typo in it would queue jobs for a model id that no `docqa
 * run --model DIR` answers. A bare id is taken on trust (queue_model_id). */
static gboolean ask_check_model_dir(const AskArgs *a) {
    const char *model_arg = a->model_arg;
    if (model_arg == NULL || (strchr(model_arg, '/') == NULL && strcmp(model_arg, ".") != 0 &&
                              strcmp(model_arg, "..") != 0))
        return TRUE;
    if (!dq_cli_model_dir("ask", a->model ? "--model" : "DOCQA_MODEL", model_arg))
        return FALSE;
    char *cfg_file = g_build_filename(model_arg, "config.json", NULL);
    const char *why =
        !g_file_test(cfg_file, G_FILE_TEST_IS_REGULAR) ? "no config.json in it" : NULL;
    g_free(cfg_file);
    if (why != NULL) {
        dq_print_line(stderr,
                      "docqa: ask: %s %s: %s (give a model snapshot directory, or a bare model "
                      "id without '/')",
                      a->model ? "--model" : "DOCQA_MODEL", model_arg, why);
        return FALSE;
    }
    return TRUE;
}

static gboolean ask_find_model(AskArgs *a) {
    if (a->model != NULL && *a->model == '\0') {
        dq_print_line(stderr,
                      "docqa: ask: --model '': an empty name (give a model snapshot directory, "
                      "or a bare model id)");
        return FALSE;
    }
    a->model_arg = a->model ? a->model : g_getenv("DOCQA_MODEL");
    const char *model_arg = a->model_arg;
    if (!ask_check_model_dir(a))
        return FALSE;
    a->model_id = queue_model_id(model_arg && *model_arg ? model_arg : "SmolVLM-256M-Instruct");
    /* With the snapshot at hand, answers the model could never give are refused now, not job by
     * job at run time (ask needs only the model's id, so without it nothing is checked). */
    SmolvlmConfig cfg;
    char *cfg_path = model_arg ? g_build_filename(model_arg, "config.json", NULL) : NULL;
    gboolean too_long = cfg_path != NULL && g_file_test(cfg_path, G_FILE_TEST_IS_REGULAR) &&
                        smolvlm_config_load(model_arg, &cfg, NULL) &&
                        a->max_new_tokens >= cfg.max_position_embeddings;
    g_free(cfg_path);
    if (too_long)
        dq_print_line(stderr,
                      "docqa: ask: --max-new-tokens %d: %s takes at most %d positions, the prompt "
                      "and its page included (config.json's text_config.max_position_embeddings)",
                      a->max_new_tokens, model_arg, cfg.max_position_embeddings);
    return !too_long;
}

/* The jobs are queued all the same (the store may be an unmounted share, back by the time the
 * workers run), but said now rather than when no worker gets on: a worker stops on a missing
 * page store. On PostgreSQL only where DOCQA_PAGES says where it is: ask may run on a machine
 * that does not mount it. */
static void ask_check_page_store(const AskArgs *a, const DqAskResult *res) {
    GError *no_pages = NULL;
    const char *location = a->db ? a->db : dq_store_default_location();
    if (res->pages > 0 &&
        (dq_store_kind(a->store) == DQ_STORE_SQLITE || g_getenv("DOCQA_PAGES") != NULL) &&
        !queue_page_store_usable(location, &no_pages))
        dq_print_line(stderr,
                      "docqa: ask: warning: %s; the jobs are queued, but `docqa run` stops on them "
                      "until the page store is there",
                      no_pages->message);
    g_clear_error(&no_pages);
}

static int ask_queue(AskArgs *a) {
    GError *err = NULL;
    a->store = dq_store_open_existing(a->db ? a->db : dq_store_default_location(), &err);
    if (a->store == NULL)
        return dq_cli_fail_in("ask", FALSE, err);
    DqAskRequest req = {.document_ids = (const gint64 *)a->ids->data,
                        .n_document_ids = (int)a->ids->len,
                        .where_sql = (const char *const *)a->where,
                        .n_where = a->where ? (int)g_strv_length(a->where) : 0,
                        .questions = (const char *const *)a->questions->pdata,
                        .n_questions = (int)a->questions->len,
                        .model_id = a->model_id,
                        .settings = {.prompt = a->prompt,
                                     .max_new_tokens = a->max_new_tokens,
                                     .max_attempts = a->max_attempts},
                        .n_res = a->n_res};
    DqAskResult res;
    if (!queue_ask(a->store, &req, &res, &err))
        return dq_cli_fail_in("ask", TRUE, err);
    /* The jobs are stored: a signal from here on must not cut the report of them short. */
    dq_cli_signals_record();
    dq_test_point("ask:stored");
    if (a->json)
        print_json(&res, a->model_id, a->n_res);
    else
        print_text(&res, a->model_id, a->n_res);
    if (res.pages == 0)
        dq_print_line(stderr, "docqa: ask: no ingested pages match; run `docqa ingest` first or "
                              "widen --document/--where/--n-res");
    ask_check_page_store(a, &res);
    return DQ_EXIT_OK;
}

static void ask_args_clear(AskArgs *a) {
    if (a->store) {
        store_jobs_finalize(a->store);
        dq_store_close(a->store);
    }
    g_ptr_array_free(a->questions, TRUE);
    g_array_free(a->ids, TRUE);
    g_strfreev(a->doc_ids);
    g_strfreev(a->where);
    g_strfreev(a->args);
    g_free(a->db);
    g_free(a->questions_file);
    g_free(a->model);
    g_free(a->model_id);
    g_free(a->prompt);
}

int cmd_ask(int argc, char **argv) {
    AskArgs a = {.max_new_tokens = 64,
                 .max_attempts = 3,
                 .n_res = G_MININT,
                 .questions = g_ptr_array_new_with_free_func(g_free),
                 .ids = g_array_new(FALSE, FALSE, sizeof(gint64))};
    int rc = ask_parse(&a, argc, argv) ? ask_read_questions(&a) : DQ_EXIT_FATAL;
    if (rc == DQ_EXIT_OK && (!ask_check_options(&a) || !ask_find_model(&a)))
        rc = DQ_EXIT_FATAL;
    if (rc == DQ_EXIT_OK)
        rc = ask_queue(&a);
    ask_args_clear(&a);
    return rc;
}
