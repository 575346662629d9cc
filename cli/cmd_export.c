/* docqa export: the answers (v_answers, or with --current v_current_answers) as CSV or JSON lines
 * on stdout. Columns are only ever appended: spreadsheets and scripts read a CSV by position.
 * With --after or --checkpoint-file, only the answers committed since an earlier export, by
 * answers.commit_seq (schema/sqlite/0012_answers_commit_order.sql says why not finished_at or
 * id). */
#include "cli.h"

#include "dq_error.h"
#include "json_write.h"
#include "mapped_file.h"
#include "queue.h"
#include "store.h"
#include "store_jobs.h"
#include "store_migrate.h"
#include "test_point.h"
#include "text.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    gboolean csv;
    gboolean spreadsheet_safe;
    gboolean tty;     /* stdout is a terminal: control characters escaped */
    gboolean current; /* v_current_answers: asked_document_id and asked_path too */
    gint64 rows;
    /* The errno of the first write to stdout that failed, taken as it failed: by the end of the
     * row errno may hold anything (number formatting once set it to 0, "Success"). */
    int write_errno;
} Export;

static void ex_putc(Export *ex, char c) {
    if (putchar(c) == EOF && ex->write_errno == 0)
        ex->write_errno = dq_cli_write_errno();
}

static void ex_puts(Export *ex, const char *s) {
    if (fputs(s, stdout) == EOF && ex->write_errno == 0)
        ex->write_errno = dq_cli_write_errno();
}

static gboolean is_plain_number(const char *s) {
    const char *p = s + (*s == '+' || *s == '-');
    gboolean digits = FALSE;
    for (; g_ascii_isdigit(*p); p++)
        digits = TRUE;
    if (*p == '.')
        for (p++; g_ascii_isdigit(*p); p++)
            digits = TRUE;
    if (digits && (*p == 'e' || *p == 'E')) {
        p += 1 + (p[1] == '+' || p[1] == '-');
        if (!g_ascii_isdigit(*p))
            return FALSE;
        while (g_ascii_isdigit(*p))
            p++;
    }
    return digits && *p == '\0';
}

/* A spreadsheet runs a cell that starts with one of these as a formula (OWASP's list), so text
 * the model read off an untrusted page could reach a user's Excel as =HYPERLINK(...). A cell that
 * is a plain number (-42, +3.5) is no formula and stays as it is. */
static gboolean reads_as_formula(const char *s) {
    return s[0] != '\0' && strchr("=+-@\t\r", s[0]) != NULL && !is_plain_number(s);
}

/* RFC 4180: quote a field when it holds a comma, a quote or a line break; double the quotes.
 * With spreadsheet_safe, a field that would read as a formula gets a leading apostrophe, which
 * spreadsheets show as text and do not display. */
static void csv_field(Export *ex, const char *s, gboolean last) {
    if (s == NULL)
        s = "";
    /* on a terminal, control characters escaped (dq_cli_put_data), quoted as the cell shown */
    char *shown = NULL;
    if (ex->tty)
        s = shown = dq_text_show(
            s, -1, DQ_SHOW_KEEP_NEWLINES | DQ_SHOW_KEEP_TABS | DQ_SHOW_CONTROLS_ONLY, 0);
    gboolean guard = ex->spreadsheet_safe && reads_as_formula(s);
    if (strpbrk(s, ",\"\r\n") == NULL) {
        if (guard)
            ex_putc(ex, '\'');
        ex_puts(ex, s);
    } else {
        ex_putc(ex, '"');
        if (guard)
            ex_putc(ex, '\'');
        for (const char *p = s; *p; p++) {
            if (*p == '"')
                ex_putc(ex, '"');
            ex_putc(ex, *p);
        }
        ex_putc(ex, '"');
    }
    g_free(shown);
    ex_puts(ex, last ? "\r\n" : ",");
}

/* A setting's number as text; empty (NULL) where it is not known (-1). */
static const char *known_int(char *buf, size_t n, int v) {
    if (v < 0)
        return NULL;
    g_snprintf(buf, n, "%d", v);
    return buf;
}

static void json_known_int(JsonBuilder *b, const char *name, int v) {
    json_builder_set_member_name(b, name);
    if (v < 0)
        json_builder_add_null_value(b);
    else
        json_builder_add_int_value(b, v);
}

static void write_csv_row(Export *ex, const DqAnswerRow *r, const char *ms_text) {
    char page[32], doc[32], job[32], n_res[16], tile[16], edge[16], max_new[16], page_id[32],
        tokens[16], asked_doc[32];
    g_snprintf(page, sizeof(page), "%d", r->page);
    g_snprintf(doc, sizeof(doc), "%" G_GINT64_FORMAT, r->document_id);
    g_snprintf(job, sizeof(job), "%" G_GINT64_FORMAT, r->job_id);
    g_snprintf(page_id, sizeof(page_id), "%" G_GINT64_FORMAT, r->page_id);
    g_snprintf(tokens, sizeof(tokens), "%d", r->generated_tokens);
    g_snprintf(asked_doc, sizeof(asked_doc), "%" G_GINT64_FORMAT, r->asked_document_id);
    csv_field(ex, r->document_path, FALSE);
    csv_field(ex, page, FALSE);
    csv_field(ex, r->question, FALSE);
    csv_field(ex, r->answer, FALSE);
    csv_field(ex, r->model, FALSE);
    csv_field(ex, r->finished_at, FALSE);
    csv_field(ex, doc, FALSE);
    csv_field(ex, r->document_sha256, FALSE);
    csv_field(ex, job, FALSE);
    csv_field(ex, r->device, FALSE);
    csv_field(ex, r->weights, FALSE);
    csv_field(ex, r->exact < 0 ? NULL : r->exact ? "1" : "0", FALSE);
    csv_field(ex, known_int(n_res, sizeof n_res, r->n_res), FALSE);
    csv_field(ex, known_int(tile, sizeof tile, r->tile), FALSE);
    csv_field(ex, known_int(edge, sizeof edge, r->longest_edge), FALSE);
    csv_field(ex, r->prompt, FALSE);
    csv_field(ex, known_int(max_new, sizeof max_new, r->max_new_tokens), FALSE);
    csv_field(ex, r->do_sample < 0 ? NULL : r->do_sample ? "1" : "0", FALSE);
    csv_field(ex, r->model_fingerprint, FALSE);
    csv_field(ex, page_id, FALSE);
    csv_field(ex, tokens, FALSE);
    csv_field(ex, ms_text, !ex->current);
    if (ex->current) {
        csv_field(ex, asked_doc, FALSE);
        csv_field(ex, r->asked_path, TRUE);
    }
}

static void write_json_row(Export *ex, const DqAnswerRow *r) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "document_path");
    json_builder_add_string_value(b, r->document_path);
    dq_cli_json_int(b, "page", r->page);
    json_builder_set_member_name(b, "question");
    json_builder_add_string_value(b, r->question);
    json_builder_set_member_name(b, "answer");
    json_builder_add_string_value(b, r->answer);
    json_builder_set_member_name(b, "model");
    json_builder_add_string_value(b, r->model);
    json_builder_set_member_name(b, "finished_at");
    json_builder_add_string_value(b, r->finished_at);
    dq_cli_json_int(b, "document_id", r->document_id);
    json_builder_set_member_name(b, "document_sha256");
    json_builder_add_string_value(b, r->document_sha256);
    dq_cli_json_int(b, "job_id", r->job_id);
    /* null where the answer predates schema 0003 */
    dq_cli_json_string(b, "device", r->device);
    dq_cli_json_string(b, "weights", r->weights);
    dq_cli_json_known_bool(b, "exact", r->exact);
    /* How the answer was made (schema 0008): null where not recorded */
    json_known_int(b, "n_res", r->n_res);
    json_known_int(b, "tile", r->tile);
    json_known_int(b, "longest_edge", r->longest_edge);
    dq_cli_json_string(b, "prompt", r->prompt);
    json_known_int(b, "max_new_tokens", r->max_new_tokens);
    dq_cli_json_known_bool(b, "do_sample", r->do_sample);
    dq_cli_json_string(b, "model_fingerprint", r->model_fingerprint);
    dq_cli_json_int(b, "page_id", r->page_id);
    dq_cli_json_int(b, "generated_tokens", r->generated_tokens);
    json_builder_set_member_name(b, "ms_total");
    if (isfinite(r->ms_total)) /* written in the fewest digits that read back as it */
        json_builder_add_double_value(b, r->ms_total);
    else
        json_builder_add_null_value(b);
    if (ex->current) {
        dq_cli_json_int(b, "asked_document_id", r->asked_document_id);
        json_builder_set_member_name(b, "asked_path");
        json_builder_add_string_value(b, r->asked_path);
    }
    json_builder_end_object(b);
    int failed = dq_cli_json_print(b, FALSE);
    if (failed != 0 && ex->write_errno == 0)
        ex->write_errno = failed;
}

static gboolean write_row(const DqAnswerRow *r, void *user, GError **err) {
    Export *ex = user;
    char ms[G_ASCII_DTOSTR_BUF_SIZE];
    /* the stored double in the fewest digits that read back as it */
    const char *ms_text = isfinite(r->ms_total) ? dq_json_number(r->ms_total, ms) : NULL;
    if (ex->csv)
        write_csv_row(ex, r, ms_text);
    else
        write_json_row(ex, r);
    ex->rows++;
    if (ex->rows == 1)
        dq_test_point("export:row");
    if (ex->write_errno == 0 && ferror(stdout))
        ex->write_errno = EIO; /* a failure no call above returned: none known to have */
    if (ex->write_errno != 0)
        return dq_fail(err, DQ_ERR_IO, "export: standard output: %s", g_strerror(ex->write_errno));
    return TRUE;
}

/* The checkpoint --checkpoint-file left in `file`: *after 0 (every answer) when there is no such
 * file yet. Anything but one whole number is refused, an empty file too: starting again from 0
 * would hand every answer over a second time. */
static gboolean read_checkpoint(const char *file, gint64 *after) {
    char *text = NULL;
    gsize len = 0;
    GError *err = NULL;
    if (!g_file_get_contents(file, &text, &len, &err)) {
        gboolean missing = g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT);
        if (missing) {
            dq_print_line(stderr,
                          "docqa: export: %s does not exist yet: exporting every answer, from the "
                          "first",
                          file);
            *after = 0;
        } else {
            dq_print_line(stderr, "docqa: export: --checkpoint-file %s: %s", file, err->message);
        }
        g_error_free(err);
        return missing;
    }
    g_strstrip(text);
    gint64 v = 0;
    gboolean ok = len <= 64 && *text != '\0' && strspn(text, "0123456789") == strlen(text) &&
                  g_ascii_string_to_signed(text, 10, 0, G_MAXINT64, &v, NULL);
    if (ok)
        *after = v;
    else
        dq_print_line(stderr,
                      "docqa: export: %s: not an export checkpoint (one whole number, as "
                      "--checkpoint-file writes it); delete it to export every answer again",
                      file);
    g_free(text);
    return ok;
}

/* The file `path` names through its symbolic links (a dangling one: where it points), so that
 * the checkpoint is written there: replacing the link itself would leave its target, which
 * another job may read, at the old checkpoint. */
static char *follow_links(const char *path) {
    char *p = g_strdup(path);
    for (int hops = 0; hops < 40; hops++) { /* Linux's own limit (ELOOP) */
        char *to = g_file_read_link(p, NULL);
        if (to == NULL)
            break;
        if (!g_path_is_absolute(to)) {
            char *dir = g_path_get_dirname(p);
            char *joined = g_build_filename(dir, to, NULL);
            g_free(dir);
            g_free(to);
            to = joined;
        }
        g_free(p);
        p = to;
    }
    return p;
}

/* Whether `file` can be replaced as it is once the rows are out (g_file_set_contents_full: a
 * temporary FILE.XXXXXX beside it, renamed over it): one is made and removed. access(2) on the
 * folder says less: root passes it where a read-only export or a full disk refuses the file, and
 * the temporary's name can be too long where FILE's is not. */
static gboolean checkpoint_replaceable(const char *file) {
    char *tmp = g_strdup_printf("%s.XXXXXX", file);
    int fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0666);
    if (fd >= 0) {
        close(fd);
        g_unlink(tmp);
    } else {
        int e = errno;
        char *folder = g_path_get_dirname(file);
        dq_print_line(stderr,
                      "docqa: export: --checkpoint-file %s: no file can be made beside it in its "
                      "folder %s: %s; nothing was exported",
                      file, folder, g_strerror(e));
        g_free(folder);
    }
    g_free(tmp);
    return fd >= 0;
}

/* The rows are on stdout for good before the checkpoint moves past them: a file is synced (a
 * pipe or a terminal cannot be, and is not). */
static gboolean stdout_flushed(Export *ex) {
    if (fflush(stdout) == 0)
        return TRUE;
    int e = dq_cli_write_errno();
    if (ex->write_errno == 0)
        ex->write_errno = e;
    return FALSE;
}

static gboolean stdout_durable(Export *ex) {
    struct stat st;
    if (!stdout_flushed(ex))
        return FALSE;
    if (fstat(STDOUT_FILENO, &st) != 0 || !S_ISREG(st.st_mode))
        return TRUE;
    if (fsync(STDOUT_FILENO) != 0) {
        ex->write_errno = errno;
        return FALSE;
    }
    /* The file's name too: the shell made it (`> out`) as the export started, and a power loss
     * forgets a name its folder was not synced with, and the rows with it. */
    char *path = g_file_read_link("/proc/self/fd/1", NULL);
    if (path != NULL && g_path_is_absolute(path) && !g_str_has_suffix(path, " (deleted)")) {
        char *folder = g_path_get_dirname(path);
        int e = dq_sync_folder(folder, NULL);
        g_free(folder);
        if (e != 0) {
            ex->write_errno = e;
            g_free(path);
            return FALSE;
        }
    }
    g_free(path);
    return TRUE;
}

/* What the command line asked for, and what the export finds along the way. */
typedef struct {
    char *db, *format, *after_text, *checkpoint_file; /* checkpoint_file: through its links */
    char **where, **question_args;
    gboolean spreadsheet_safe, current;
    GPtrArray *questions; /* the --question texts, normalized */
    gint64 after;         /* -1: no range, every answer */
    Export ex;
    DqStore *store;
    GArray *question_ids, *where_ids; /* NULL: no --question, no --where */
    DqAnswerRange range;
} ExportRun;

static gboolean export_parse(ExportRun *run, int argc, char **argv) {
    GOptionEntry entries[] = {
        {"db", 0, 0, G_OPTION_ARG_FILENAME, &run->db,
         "database file or postgresql:// URI (default $DOCQA_DB or docqa.db)", "DB"},
        {"format", 0, 0, G_OPTION_ARG_STRING, &run->format, "csv (default) or jsonl", "FORMAT"},
        {"question", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &run->question_args,
         "only the answers to this question, trimmed as ask stores it (UTF-8; repeatable: any of "
         "them)",
         "TEXT"},
        {"where", 'w', 0, G_OPTION_ARG_FILENAME_ARRAY, &run->where, /* bytes, checked as UTF-8 */
         "only the answers about the documents, any version, matching this SQL expression over "
         "the documents table, run read-only, as ask's --where (repeatable: any of them); with "
         "--current, matched against the current path and version each row is listed under",
         "SQL"},
        {"current", 0, 0, G_OPTION_ARG_NONE, &run->current,
         "the answers under the documents as they are now (v_current_answers): every current "
         "path and version holding a page's bytes, gone files left out; default: each answer "
         "once, under the document it was asked for (v_answers)",
         NULL},
        {"spreadsheet-safe", 0, 0, G_OPTION_ARG_NONE, &run->spreadsheet_safe,
         "CSV: an apostrophe before a cell a spreadsheet would run as a formula (=, +, -, @)",
         NULL},
        {"after", 0, 0, G_OPTION_ARG_STRING, &run->after_text,
         "only the answers committed after the export that printed this checkpoint (0: every "
         "answer); the checkpoint for the next export is printed on stderr",
         "CHECKPOINT"},
        {"checkpoint-file", 0, 0, G_OPTION_ARG_FILENAME, &run->checkpoint_file,
         "--after the checkpoint kept in FILE (every answer when FILE does not exist), and FILE "
         "replaced by the new checkpoint once every row is written (and synced, to a file)",
         "FILE"},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx =
        g_option_context_new("- write the answers (v_answers, or v_current_answers) to stdout");
    dq_cli_add_options(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "Incremental exports: every answer is in exactly one of a chain of exports each "
             "given the checkpoint the one before printed (or kept in --checkpoint-file), "
             "whatever finished_at says and however workers' commits interleave. An answer "
             "that replaces an earlier one of its job (requeue) is a new answer: it comes again, "
             "with the same job_id, in the export after it was stored. Keep one checkpoint per "
             "kind of export (--question, --where, --current). --where is read when each export "
             "runs: a document that comes to match it later does not bring its older answers.");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    return ok && dq_cli_no_arguments("export", argc, argv) &&
           dq_cli_int_option("export", "--after", run->after_text, 0, G_MAXINT64, &run->after);
}

/* The checks of the options, in this order, are all made before the database is opened (and so
 * before any output); each step below returns the exit status, DQ_EXIT_OK to go on. */

/* ask's checks. */
static int export_check_where(const ExportRun *run) {
    GError *err = NULL;
    for (char **w = run->where; w && *w; w++) {
        if (!dq_cli_utf8_option("export", "--where", *w))
            return DQ_EXIT_FATAL;
        if (!queue_check_where(*w, &err))
            return dq_cli_fail_in("export", FALSE, err);
    }
    return DQ_EXIT_OK;
}

static int export_read_checkpoint_file(ExportRun *run) {
    if (run->after_text != NULL && run->checkpoint_file != NULL) {
        dq_print_line(stderr,
                      "docqa: export: --after and --checkpoint-file: give one (the file holds "
                      "the checkpoint)");
        return DQ_EXIT_FATAL;
    }
    if (run->checkpoint_file == NULL)
        return DQ_EXIT_OK;
    char *target = follow_links(run->checkpoint_file);
    g_free(run->checkpoint_file);
    run->checkpoint_file = target;
    /* Refused before anything is written: rows exported whose checkpoint cannot be kept
     * would be exported again next time. */
    if (!checkpoint_replaceable(run->checkpoint_file) ||
        !read_checkpoint(run->checkpoint_file, &run->after))
        return DQ_EXIT_FATAL;
    return DQ_EXIT_OK;
}

/* Stored questions are normalized (docqa ask): " Total? " must find "Total?". */
static int export_normalize_questions(ExportRun *run) {
    GError *err = NULL;
    for (char **q = run->question_args; q && *q; q++) {
        if (!dq_cli_utf8_option("export", "--question", *q))
            return DQ_EXIT_FATAL;
        char *normal = queue_question_normalize(*q, -1, "--question", &err);
        if (normal == NULL)
            return dq_cli_fail(err);
        g_ptr_array_add(run->questions, normal);
    }
    return DQ_EXIT_OK;
}

static int export_check_format(ExportRun *run) {
    run->ex = (Export){.csv = TRUE,
                       .spreadsheet_safe = run->spreadsheet_safe,
                       .tty = isatty(STDOUT_FILENO),
                       .current = run->current};
    if (run->format != NULL && strcmp(run->format, "jsonl") == 0)
        run->ex.csv = FALSE;
    else if (run->format != NULL && strcmp(run->format, "csv") != 0) {
        dq_print_line(stderr, "docqa: export: --format %s: use csv or jsonl", run->format);
        return DQ_EXIT_FATAL;
    }
    if (run->spreadsheet_safe && !run->ex.csv) {
        dq_print_line(stderr, "docqa: export: --spreadsheet-safe is for --format csv");
        return DQ_EXIT_FATAL;
    }
    return DQ_EXIT_OK;
}

static int export_check_options(ExportRun *run) {
    int rc = export_check_where(run);
    if (rc == DQ_EXIT_OK)
        rc = export_read_checkpoint_file(run);
    if (rc == DQ_EXIT_OK)
        rc = export_normalize_questions(run);
    if (rc == DQ_EXIT_OK)
        rc = export_check_format(run);
    return rc;
}

static int export_open_store(ExportRun *run) {
    GError *err = NULL;
    const char *path = run->db ? run->db : dq_store_default_location();
    if ((run->store = dq_store_open_reader(path, &err)) == NULL)
        return dq_cli_fail_in("export", FALSE, err);
    /* A view dropped by hand: said before the header, so that no output looks like an export.
     * --current reads v_current_answers, which reads documents_current. */
    char **missing = dq_store_missing_views(run->store, &err);
    const char *needed[] = {run->current ? "v_current_answers" : "v_answers",
                            run->current ? "documents_current" : NULL};
    const char *gone = NULL;
    for (size_t i = 0; missing != NULL && gone == NULL && i < G_N_ELEMENTS(needed); i++)
        if (needed[i] != NULL && g_strv_contains((const char *const *)missing, needed[i]))
            gone = needed[i];
    if (missing == NULL || gone != NULL) {
        if (missing != NULL) {
            char *advice = dq_cli_views_advice(path);
            dq_fail(&err, DQ_ERR_DB,
                    "%s: the view %s is missing (dropped?); nothing stored is lost: %s",
                    dq_store_path(run->store), gone, advice);
            g_free(advice);
        }
        g_strfreev(missing);
        return dq_cli_fail(err);
    }
    g_strfreev(missing);
    return DQ_EXIT_OK;
}

/* Any of the questions, by id; one never asked is named, and refuses a chain (below). */
static int export_find_questions(ExportRun *run) {
    GError *err = NULL;
    if (run->questions->len > 0)
        run->question_ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    for (guint i = 0; i < run->questions->len; i++) {
        const char *question = g_ptr_array_index(run->questions, i);
        gint64 id = 0;
        if (!store_jobs_find_question(run->store, question, &id, &err))
            return dq_cli_fail(err);
        if (id != 0) {
            g_array_append_val(run->question_ids, id);
            continue;
        }
        /* A mistyped question in a chain of exports is refused before its checkpoint moves:
         * otherwise the answers to the right one committed meanwhile would be skipped by the
         * corrected chain. */
        if (run->after >= 0) {
            dq_print_line(stderr,
                          "docqa: export: --question \"%s\": no such question was asked "
                          "(v_progress lists those that were); the checkpoint was not moved",
                          question);
            return DQ_EXIT_FATAL;
        }
        dq_print_line(stderr,
                      "docqa: export: no answers to the question \"%s\": no such question was "
                      "asked (v_progress lists those that were)",
                      question);
    }
    return DQ_EXIT_OK;
}

/* With a checkpoint, the range of answers: those committed after it, up to the newest. */
static int export_set_range(ExportRun *run) {
    GError *err = NULL;
    run->range.after = run->after;
    if (run->after < 0)
        return DQ_EXIT_OK;
    if (!store_jobs_commit_checkpoint(run->store, &run->range.upto, &err))
        return dq_cli_fail(err);
    /* Numbers only grow: one past the newest is another database's, or this one's before it
     * was restored from an older backup, where answers numbered up to it since would be
     * skipped for good. */
    if (run->after > run->range.upto) {
        dq_print_line(stderr,
                      "docqa: export: checkpoint %" G_GINT64_FORMAT " is past the newest answer "
                      "of %s (checkpoint %" G_GINT64_FORMAT "): a checkpoint of another database, "
                      "or of this one before it was restored from a backup? --after 0 exports "
                      "every answer",
                      run->after, dq_store_path(run->store), run->range.upto);
        return DQ_EXIT_FATAL;
    }
    return DQ_EXIT_OK;
}

/* Read after the checkpoint: every answer numbered up to it hangs on a document that exists
 * by now. Any version: v_answers lists an answer under the version it was asked for. */
static int export_find_documents(ExportRun *run) {
    GError *err = NULL;
    if (run->where == NULL)
        return DQ_EXIT_OK;
    run->where_ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    for (char **w = run->where; *w; w++)
        if (!store_jobs_where_documents(run->store, *w, run->where_ids, &err))
            return dq_cli_fail_in("export", TRUE, err);
    return DQ_EXIT_OK;
}

static int export_write_rows(ExportRun *run) {
    GError *err = NULL;
    Export *ex = &run->ex;
    if (ex->csv &&
        printf("document_path,page,question,answer,model,finished_at,document_id,"
               "document_sha256,job_id,device,weights,exact,n_res,tile,longest_edge,prompt,"
               "max_new_tokens,do_sample,model_fingerprint,page_id,generated_tokens,ms_total%s\r\n",
               run->current ? ",asked_document_id,asked_path" : "") < 0)
        ex->write_errno = dq_cli_write_errno();
    /* In a chain the rows handed on must never be rolled back by a power loss: the answers
     * would be made again under the same commit numbers, which the checkpoint has passed. */
    if (!store_jobs_each_answer(run->store, run->question_ids, run->current,
                                run->after >= 0 ? &run->range : NULL, run->where_ids, write_row, ex,
                                &err) ||
        !dq_store_check_unchanged(run->store, &err) ||
        (run->after >= 0 && !dq_store_sync_committed(run->store, &err)))
        return dq_cli_fail(err);
    if (run->after >= 0 ? !stdout_durable(ex) : !stdout_flushed(ex)) {
        dq_print_line(stderr, "docqa: export: standard output: %s", g_strerror(ex->write_errno));
        return DQ_EXIT_FATAL;
    }
    return DQ_EXIT_OK;
}

/* An empty export is no failure (nothing may be answered yet), but a mistyped question
 * would otherwise look like one nobody answered. */
static void export_say_empty(const ExportRun *run) {
    const GPtrArray *questions = run->questions;
    if (run->question_ids != NULL && run->question_ids->len > 0 && run->ex.rows == 0 &&
        run->after < 0)
        dq_print_line(stderr,
                      "docqa: export: no answers to the question%s \"%s\"%s (docqa status shows "
                      "the jobs; export without --question lists the questions answered)",
                      questions->len > 1 ? "s" : "", (const char *)g_ptr_array_index(questions, 0),
                      questions->len > 1 ? ", ..." : "");
    if (run->where_ids != NULL && run->where_ids->len == 0)
        dq_print_line(stderr, "docqa: export: --where matches no document, so no answer was "
                              "written");
}

static int export_keep_checkpoint(const ExportRun *run) {
    if (run->checkpoint_file == NULL)
        return DQ_EXIT_OK;
    /* The rows are out; the checkpoint moving past them seals the export. A signal from
     * here on is noted, not acted on at once: one that came before it moves leaves it where
     * it was (exit 130, and the next export gives the rows again); once it has moved, the
     * export is complete whatever comes (exit 0). A wrapper that keeps the rows on 0 and
     * drops them otherwise so loses none: exit 130 after the checkpoint moved lost them. */
    dq_cli_signals_record();
    dq_test_point("export:checkpoint");
    int sig = dq_cli_signal_caught();
    if (sig != 0) {
        dq_print_line(stderr,
                      "docqa: export: interrupted (%s) before the checkpoint moved: it stays "
                      "at %" G_GINT64_FORMAT " in %s, and the next export gives these rows "
                      "again",
                      dq_cli_signal_name(sig), run->after, run->checkpoint_file);
        return DQ_EXIT_INTERRUPTED;
    }
    GError *err = NULL;
    char *text = g_strdup_printf("%" G_GINT64_FORMAT "\n", run->range.upto);
    gboolean kept = g_file_set_contents_full(
        run->checkpoint_file, text, -1,
        G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE, 0666, &err);
    g_free(text);
    if (!kept) {
        dq_print_line(stderr,
                      "docqa: export: %s (the rows were written, the checkpoint stays at "
                      "%" G_GINT64_FORMAT ": the next export gives them again)",
                      err->message, run->after);
        g_clear_error(&err);
        return DQ_EXIT_FATAL;
    }
    dq_cli_signals_sealed();
    dq_test_point("export:checkpoint-kept");
    return DQ_EXIT_OK;
}

/* The checkpoint for the next export of the chain. */
static void export_say_checkpoint(const ExportRun *run) {
    if (run->after < 0)
        return;
    const char *file = run->checkpoint_file;
    dq_print_line(stderr,
                  "docqa: export: %" G_GINT64_FORMAT " row%s of the answers committed after "
                  "checkpoint %" G_GINT64_FORMAT "; checkpoint now %" G_GINT64_FORMAT "%s%s "
                  "(next: --after %" G_GINT64_FORMAT ")",
                  run->ex.rows, run->ex.rows == 1 ? "" : "s", run->after, run->range.upto,
                  file ? ", kept in " : "", file ? file : "", run->range.upto);
}

static void export_run_clear(ExportRun *run) {
    if (run->store) {
        store_jobs_finalize(run->store);
        dq_store_close(run->store);
    }
    g_free(run->db);
    g_free(run->format);
    g_strfreev(run->question_args);
    g_ptr_array_free(run->questions, TRUE);
    if (run->question_ids != NULL)
        g_array_free(run->question_ids, TRUE);
    g_free(run->after_text);
    g_free(run->checkpoint_file);
    g_strfreev(run->where);
    if (run->where_ids != NULL)
        g_array_free(run->where_ids, TRUE);
}

int cmd_export(int argc, char **argv) {
    ExportRun run = {.questions = g_ptr_array_new_with_free_func(g_free), .after = -1};
    int rc = export_parse(&run, argc, argv) ? export_check_options(&run) : DQ_EXIT_FATAL;
    if (rc == DQ_EXIT_OK)
        rc = export_open_store(&run);
    if (rc == DQ_EXIT_OK)
        rc = export_find_questions(&run);
    if (rc == DQ_EXIT_OK)
        rc = export_set_range(&run);
    if (rc == DQ_EXIT_OK)
        rc = export_find_documents(&run);
    if (rc == DQ_EXIT_OK)
        rc = export_write_rows(&run);
    if (rc == DQ_EXIT_OK) {
        export_say_empty(&run);
        rc = export_keep_checkpoint(&run);
    }
    if (rc == DQ_EXIT_OK)
        export_say_checkpoint(&run);
    export_run_clear(&run);
    return rc;
}
