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

/* The summary as JSON (README, "Machine-readable output"); notes and warnings stay on stderr. */
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

int cmd_ask(int argc, char **argv) {
    char *db = NULL, *questions_file = NULL, *model = NULL, *prompt = NULL;
    char **doc_ids = NULL, **where = NULL, **args = NULL;
    /* G_MININT: --n-res not given */
    int max_new_tokens = 64, max_attempts = 3, n_res = G_MININT;
    gboolean json = FALSE;
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"document", 'd', 0, G_OPTION_ARG_STRING_ARRAY, &doc_ids,
         "ask about this document (repeatable; default: the newest version of every document)",
         "ID"},
        {"where", 'w', 0, G_OPTION_ARG_FILENAME_ARRAY, &where, /* bytes, checked as UTF-8 */
         "ask about the documents matching this SQL expression over the documents table, run "
         "read-only, e.g. \"path LIKE '%/invoices/%'\"; one expression: its parentheses "
         "balanced outside quotes, no comments, ';' or '$' (repeatable)",
         "SQL"},
        {"questions", 'f', 0, G_OPTION_ARG_FILENAME, &questions_file,
         "read questions from FILE ('-': standard input), UTF-8 (a leading byte order mark is "
         "skipped): a JSON list of strings when its first non-space character is '[', else one "
         "question a line, as written (quotes kept; a CSV is read as lines too), blank lines and "
         "lines starting with '#' (comments) skipped",
         "FILE"},
        {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model,
         "the model that will answer: the snapshot DIR given to `docqa run`, which must hold "
         "config.json (its name is the model id), or a bare model id without '/' (to ask where "
         "the snapshot is not; default $DOCQA_MODEL or SmolVLM-256M-Instruct)",
         "DIR|ID"},
        {"n-res", 0, 0, G_OPTION_ARG_INT, &n_res,
         "ask about each document's pages rendered at ingest --n-res N (default: each document's "
         "most recent rendering)",
         "N"},
        {"prompt", 0, 0, G_OPTION_ARG_FILENAME, &prompt,
         "prompt template, one of those compiled into docqa from configs/prompts/ (default "
         "docvqa, the only one so far)",
         "NAME"},
        {"max-new-tokens", 0, 0, G_OPTION_ARG_INT, &max_new_tokens,
         "longest answer in tokens (default 64)", "N"},
        {"max-attempts", 0, 0, G_OPTION_ARG_INT, &max_attempts,
         "tries per job before it is marked dead (default 3)", "N"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &json, "print the summary as one JSON object on stdout",
         NULL},
        /* Questions here rather than left in argv: GLib leaves a "--" there (which ends the
         * options, so that `-- '-2+3'` asks "-2+3"), which is no question. Bytes, checked as
         * UTF-8 by queue_question_normalize. */
        {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &args, NULL, NULL},
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
    int rc = DQ_EXIT_FATAL;
    GError *err = NULL;
    DqStore *store = NULL;
    GPtrArray *questions = g_ptr_array_new_with_free_func(g_free);
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    char *model_id = NULL;
    if (!ok)
        goto out;
    for (int i = 0; args != NULL && args[i] != NULL; i++) {
        char *source = g_strdup_printf("command-line question %d", i + 1);
        char *q = queue_question_normalize(args[i], -1, source, &err);
        if (q == NULL) {
            g_free(source);
            rc = dq_cli_fail_in("ask", FALSE, err);
            goto out;
        }
        /* `docqa ask questions.txt` (--questions forgotten) or `docqa ask invoice.pdf "Total?"`
         * would queue the file's name as a question about every page, and a night of model
         * time would go to it; a question is hardly ever the name of a file where ask runs. */
        GStatBuf st;
        if (g_lstat(args[i], &st) == 0) {
            char *shown = dq_cli_shown(args[i]);
            dq_print_line(stderr,
                          "docqa: ask: %s '%s' is the name of a %s here, not a question (a file "
                          "of questions is given with --questions FILE, the documents to ask "
                          "about with --document or --where; to ask it as a question all the "
                          "same, put it in a --questions file)",
                          source, shown, S_ISDIR(st.st_mode) ? "folder" : "file");
            g_free(shown);
            g_free(source);
            g_free(q);
            goto out;
        }
        g_free(source);
        g_ptr_array_add(questions, q);
    }
    if (questions_file != NULL) {
        char **qs = queue_read_questions(questions_file, &err);
        if (qs == NULL) {
            rc = dq_cli_fail_in("ask", FALSE, err); /* each a fault of the file */
            goto out;
        }
        for (char **q = qs; *q; q++)
            g_ptr_array_add(questions, g_strdup(*q));
        g_strfreev(qs);
    }
    if (questions->len == 0) {
        dq_print_line(stderr, "docqa: ask: no question given (arguments or --questions FILE)");
        goto out;
    }
    for (char **w = where; w && *w; w++)
        if (!dq_cli_utf8_option("ask", "--where", *w))
            goto out;
    if (!dq_cli_utf8_option("ask", "--prompt", prompt))
        goto out;
    for (char **d = doc_ids; d && *d; d++) {
        gint64 id = 0;
        if (!dq_cli_int_option("ask", "--document", *d, 1, G_MAXINT64, &id))
            goto out;
        g_array_append_val(ids, id);
    }
    if (max_new_tokens < 1) {
        dq_print_line(stderr, "docqa: ask: --max-new-tokens %d: must be positive", max_new_tokens);
        goto out;
    }
    if (n_res != G_MININT && (n_res < 1 || n_res > DQ_CLI_MAX_N_RES)) {
        dq_print_line(stderr, "docqa: ask: --n-res %d: must be 1 to %d, as ingest's", n_res,
                      DQ_CLI_MAX_N_RES);
        goto out;
    }
    if (n_res == G_MININT)
        n_res = 0;
    if (max_attempts < 1) {
        dq_print_line(stderr, "docqa: ask: --max-attempts %d: must be positive", max_attempts);
        goto out;
    }
    if (model != NULL && *model == '\0') {
        dq_print_line(stderr,
                      "docqa: ask: --model '': an empty name (give a model snapshot directory, "
                      "or a bare model id)");
        goto out;
    }
    const char *model_arg = model ? model : g_getenv("DOCQA_MODEL");
    /* A value with a '/' is a path: a typo in it would queue jobs for a model id that no `docqa
     * run --model DIR` answers. A bare id is taken on trust (queue_model_id). */
    if (model_arg != NULL && (strchr(model_arg, '/') != NULL || strcmp(model_arg, ".") == 0 ||
                              strcmp(model_arg, "..") == 0)) {
        if (!dq_cli_model_dir("ask", model ? "--model" : "DOCQA_MODEL", model_arg))
            goto out;
        char *cfg_file = g_build_filename(model_arg, "config.json", NULL);
        const char *why =
            !g_file_test(cfg_file, G_FILE_TEST_IS_REGULAR) ? "no config.json in it" : NULL;
        g_free(cfg_file);
        if (why != NULL) {
            dq_print_line(
                stderr,
                "docqa: ask: %s %s: %s (give a model snapshot directory, or a bare model id "
                "without '/')",
                model ? "--model" : "DOCQA_MODEL", model_arg, why);
            goto out;
        }
    }
    model_id = queue_model_id(model_arg && *model_arg ? model_arg : "SmolVLM-256M-Instruct");
    /* With the snapshot at hand, answers the model could never give are refused now, not job by
     * job at run time (ask needs only the model's id, so without it nothing is checked). */
    SmolvlmConfig cfg;
    char *cfg_path = model_arg ? g_build_filename(model_arg, "config.json", NULL) : NULL;
    if (cfg_path != NULL && g_file_test(cfg_path, G_FILE_TEST_IS_REGULAR) &&
        smolvlm_config_load(model_arg, &cfg, NULL) &&
        max_new_tokens >= cfg.max_position_embeddings) {
        dq_print_line(stderr,
                      "docqa: ask: --max-new-tokens %d: %s takes at most %d positions, the prompt "
                      "and its page included (config.json's text_config.max_position_embeddings)",
                      max_new_tokens, model_arg, cfg.max_position_embeddings);
        g_free(cfg_path);
        goto out;
    }
    g_free(cfg_path);
    store = dq_store_open_existing(db ? db : dq_store_default_location(), &err);
    if (store == NULL) {
        rc = dq_cli_fail_in("ask", FALSE, err);
        goto out;
    }
    DqAskRequest req = {.document_ids = (const gint64 *)ids->data,
                        .n_document_ids = (int)ids->len,
                        .where_sql = (const char *const *)where,
                        .n_where = where ? (int)g_strv_length(where) : 0,
                        .questions = (const char *const *)questions->pdata,
                        .n_questions = (int)questions->len,
                        .model_id = model_id,
                        .settings = {.prompt = prompt,
                                     .max_new_tokens = max_new_tokens,
                                     .max_attempts = max_attempts},
                        .n_res = n_res};
    DqAskResult res;
    if (!queue_ask(store, &req, &res, &err)) {
        rc = dq_cli_fail_in("ask", TRUE, err);
        goto out;
    }
    /* The jobs are stored: a signal from here on must not cut the report of them short. */
    dq_cli_signals_record();
    dq_test_point("ask:stored");
    if (json)
        print_json(&res, model_id, n_res);
    else
        print_text(&res, model_id, n_res);
    if (res.pages == 0)
        dq_print_line(stderr, "docqa: ask: no ingested pages match; run `docqa ingest` first or "
                              "widen --document/--where/--n-res");
    /* The jobs are queued all the same (the store may be an unmounted share, back by the time
     * the workers run), but said now rather than when no worker gets on: a worker stops on a
     * missing page store. On PostgreSQL only where DOCQA_PAGES says where it is: ask may run
     * on a machine that does not mount it. */
    GError *no_pages = NULL;
    const char *location = db ? db : dq_store_default_location();
    if (res.pages > 0 &&
        (dq_store_kind(store) == DQ_STORE_SQLITE || g_getenv("DOCQA_PAGES") != NULL) &&
        !queue_page_store_usable(location, &no_pages))
        dq_print_line(stderr,
                      "docqa: ask: warning: %s; the jobs are queued, but `docqa run` stops on them "
                      "until the page store is there",
                      no_pages->message);
    g_clear_error(&no_pages);
    rc = DQ_EXIT_OK;
out:
    if (store) {
        store_jobs_finalize(store);
        dq_store_close(store);
    }
    g_ptr_array_free(questions, TRUE);
    g_array_free(ids, TRUE);
    g_strfreev(doc_ids);
    g_strfreev(where);
    g_strfreev(args);
    g_free(db);
    g_free(questions_file);
    g_free(model);
    g_free(model_id);
    g_free(prompt);
    return rc;
}
