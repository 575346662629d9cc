/* The queue's life cycle, step by step with a controlled clock, then whole workers with the
 * hash answerer (a test double, see jobs_testlib.h). */
#include "clock.h"
#include "dq_error.h"
#include "jobs_testlib.h"
#include "queue.h"
#include "store.h"
#include "store_jobs.h"
#include "testutil.h"

#include <glib/gstdio.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static DqStore *open_store(const char *path) {
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    return s;
}

static void close_store(DqStore *s) {
    store_jobs_finalize(s);
    dq_store_close(s);
}

static gint64 q(const char *db, const char *sql) {
    return jt_query_int(db, sql);
}

/* Runs `sql` as a user would in the sqlite3 shell: its own connection, foreign keys off. */
static void exec_by_hand(const char *db, const char *sql) {
    sqlite3 *raw = NULL;
    g_assert_cmpint(sqlite3_open(db, &raw), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(raw, sql, NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(raw);
}

static DqAskResult ask(DqStore *s, const char *const *questions, int n, const char *model,
                       int max_new_tokens, GError **err) {
    DqAskRequest req = {.questions = questions,
                        .n_questions = n,
                        .model_id = model,
                        .settings = {.max_new_tokens = max_new_tokens}};
    DqAskResult res;
    memset(&res, 0, sizeof(res));
    queue_ask(s, &req, &res, err);
    return res;
}

/* ---- asking ---- */

static void test_ask_idempotent(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 3, 2);
    DqStore *s = open_store(db);
    GError *err = NULL;
    const char *qs[] = {"What is the total?", "Who signed it?"};
    DqAskResult r = ask(s, qs, 2, "model-a", 0, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(r.pages, ==, 6);
    g_assert_cmpint(r.added, ==, 12);
    /* Asking again adds nothing. */
    r = ask(s, qs, 2, "model-a", 0, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(r.added, ==, 0);
    g_assert_cmpint(r.existing, ==, 12);
    /* Another model, or other generation settings, are other jobs. */
    r = ask(s, qs, 1, "model-b", 0, &err);
    g_assert_cmpint(r.added, ==, 6);
    r = ask(s, qs, 1, "model-a", 32, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(r.added, ==, 6);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs"), ==, 24);
    g_assert_cmpint(q(db, "SELECT count(*) FROM questions"), ==, 2);
    /* Page-major order: a batch of consecutive jobs shares pages. */
    g_assert_cmpint(q(db, "SELECT page_id FROM jobs WHERE id = 2"), ==,
                    q(db, "SELECT page_id FROM jobs WHERE id = 1"));

    /* Bad requests name what is wrong. */
    gint64 nodoc = 999;
    DqAskRequest bad = {.document_ids = &nodoc,
                        .n_document_ids = 1,
                        .questions = qs,
                        .n_questions = 1,
                        .model_id = "m"};
    g_assert_false(queue_ask(s, &bad, &r, &err));
    g_assert_nonnull(strstr(err->message, "999"));
    g_clear_error(&err);
    DqAskRequest badprompt = {
        .questions = qs, .n_questions = 1, .model_id = "m", .settings = {.prompt = "nope"}};
    g_assert_false(queue_ask(s, &badprompt, &r, &err));
    g_assert_nonnull(strstr(err->message, "nope"));
    g_clear_error(&err);
    const char *empty[] = {"  "};
    DqAskRequest emptyq = {.questions = empty, .n_questions = 1, .model_id = "m"};
    g_assert_false(queue_ask(s, &emptyq, &r, &err));
    g_clear_error(&err);
    close_store(s);
    g_free(db);
    g_free(dir);
}

/* Questions are trimmed of Unicode whitespace, checked, and asked once however often given. */
static void test_ask_normalizes_questions(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    DqStore *s = open_store(db);
    GError *err = NULL;
    /* U+00A0 and U+2003 around, a tab after: all whitespace. */
    const char *qs[] = {"Dup ", "Dup", "\xc2\xa0Total?\xe2\x80\x83\t", "\nDup\r"};
    DqAskResult r = ask(s, qs, 4, "m", 0, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(r.questions, ==, 2);
    g_assert_cmpint(r.duplicates, ==, 2);
    g_assert_cmpint(r.added, ==, 4);
    g_assert_cmpint(r.existing, ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM questions WHERE text IN ('Dup', 'Total?')"), ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM questions"), ==, 2);
    /* Asked again, trimmed differently: nothing new. */
    const char *again[] = {"Total?"};
    r = ask(s, again, 1, "m", 0, &err);
    g_assert_cmpint(r.added, ==, 0);
    g_assert_cmpint(r.existing, ==, 2);

    const struct {
        const char *text;
        const char *shown;
    } bad[] = {
        {"\xc2\xa0", "'\\u00a0'"},                          /* only a non-breaking space */
        {"\xef\xbb\xbf \xe2\x80\x8b", "'\\ufeff \\u200b'"}, /* BOM, zero-width space */
        {"Qu\xe9?", "'Qu\\xe9?'"},                          /* Latin-1, not UTF-8 */
        /* the page image's marker in the prompt: a second image the model is not given */
        {" Where is <image> on it?", "' Where is <image> on it?'"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        const char *one[] = {"fine", bad[i].text};
        r = ask(s, one, 2, "m2", 0, &err);
        g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
        g_assert_cmpint(r.added, ==, 0);
        g_assert_nonnull(strstr(err->message, "question 2"));
        g_assert_nonnull(strstr(err->message, bad[i].shown));
        g_clear_error(&err);
    }
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE model_id = 'm2'"), ==, 0);
    /* A NUL inside the given length is refused, not cut. */
    g_assert_null(queue_question_normalize("a\0b", 3, "q.json element 1", &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_assert_cmpstr(err->message, ==,
                    "q.json element 1 'a\\u0000b': the question holds a NUL "
                    "character");
    g_clear_error(&err);
    char *t = queue_question_normalize("\xe2\x80\x8b x \xc2\xa0y\xe3\x80\x80", -1, "s", &err);
    dq_assert_no_error(err);
    g_assert_cmpstr(t, ==, "x \xc2\xa0y");
    g_free(t);
    close_store(s);
    g_free(db);
    g_free(dir);
}

static void test_ask_where_is_read_only(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 4, 2);
    DqStore *s = open_store(db);
    GError *err = NULL;
    const char *qs[] = {"Total?"};
    const char *where[] = {"path LIKE '%/2024/%'"};
    DqAskRequest req = {
        .where_sql = where, .n_where = 1, .questions = qs, .n_questions = 1, .model_id = "m"};
    DqAskResult r;
    g_assert_true(queue_ask(s, &req, &r, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(r.pages, ==, 4); /* documents 1 and 3, two pages each */
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs j JOIN pages p ON p.id = j.page_id "
                          "JOIN documents d ON d.id = p.document_id "
                          "WHERE d.path NOT LIKE '%/2024/%'"),
                    ==, 0);
    /* --document and --where together: the union, each page once. */
    gint64 ids[] = {1, 2};
    DqAskRequest both = {.document_ids = ids,
                         .n_document_ids = 2,
                         .where_sql = where,
                         .n_where = 1,
                         .questions = qs,
                         .n_questions = 1,
                         .model_id = "m"};
    g_assert_true(queue_ask(s, &both, &r, &err));
    g_assert_cmpint(r.pages, ==, 6);
    g_assert_cmpint(r.added, ==, 2);

    /* Anything but an expression over documents is refused before it runs. */
    const char *evil[] = {
        "1); DELETE FROM jobs; --",
        "id IN (SELECT page_id FROM jobs)",
        "1) UNION SELECT id FROM pages WHERE (1",
        "load_extension('/tmp/x.so') IS NULL",
        "1 = 1; PRAGMA writable_schema = 1",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(evil); i++) {
        const char *w[] = {evil[i]};
        DqAskRequest e = {
            .where_sql = w, .n_where = 1, .questions = qs, .n_questions = 1, .model_id = "x"};
        g_assert_false(queue_ask(s, &e, &r, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
        g_assert_nonnull(strstr(err->message, "--where"));
        g_clear_error(&err);
    }
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs"), ==, 6);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE model_id = 'x'"), ==, 0);
    close_store(s);
    g_free(db);
    g_free(dir);
}

/* --where is wrapped as (<text>) AND version = newest: a text that escapes the parentheses would
 * ask about old versions too, and is refused; expressions with parentheses, quoted ')' and '--',
 * and quoted names are not. */
static void test_ask_where_is_one_expression(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 4, 2);
    /* Document 2 (/archive/2024/doc-0001.pdf) gets a newer version without pages: of 2024 only
     * document 4's two pages are current. */
    exec_by_hand(db, "INSERT INTO documents (path, sha256, bytes, mtime, kind, page_count, status, "
                     "version) SELECT path, 'new', 1, 1, 'pdf', 0, 'ok', 2 FROM documents "
                     "WHERE id = 2");
    DqStore *s = open_store(db);
    GError *err = NULL;
    const char *qs[] = {"Total?"};
    const char *good[] = {
        "path LIKE '%/2024/%'",
        "(path LIKE '%/2024/%') AND ((id > 0))",
        "path LIKE '%/2024/%' AND path NOT LIKE '%)%'",
        "path <> 'it''s) OR (1' AND path LIKE '%/2024/%'",
        "\"path\" LIKE '%/2024/%' AND path NOT LIKE '%--%' AND path NOT LIKE '%/*%'",
        "[path] LIKE '%/2024/%' AND `path` <> ';'",
        "path LIKE '%/2024/%' ESCAPE '\\'",
        "instr(path, ')') = 0 AND path GLOB '*/2024/*'",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        const char *w1[] = {good[i]};
        DqAskRequest req = {
            .where_sql = w1, .n_where = 1, .questions = qs, .n_questions = 1, .model_id = "m"};
        DqAskResult r;
        if (!queue_ask(s, &req, &r, &err))
            g_error("--where %s: %s", good[i], err->message);
        g_assert_cmpint(r.pages, ==, 2);
    }
    const char *bad[] = {
        "1) OR (1",
        "1) /*",
        "path LIKE '%/2024/%') OR (1",
        "1 -- old versions too",
        "(1",
        "1)",
        "path = 'unterminated",
        "\"path = 1",
        "[path = 1",
        "[x') OR ('] = 1",
        "1; SELECT 1",
        "E'\\'') OR (1 = 1 OR E'\\'' = ''",
        "$$'$$) OR (1$$'$$ = ''",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        const char *w1[] = {bad[i]};
        DqAskRequest e = {
            .where_sql = w1, .n_where = 1, .questions = qs, .n_questions = 1, .model_id = "x"};
        DqAskResult r;
        if (queue_ask(s, &e, &r, &err))
            g_error("--where %s was accepted (%d pages)", bad[i], r.pages);
        g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
        g_assert_true(g_str_has_prefix(err->message, "--where '"));
        g_assert_nonnull(strstr(err->message, bad[i]));
        g_clear_error(&err);
    }
    /* An empty one is said to be empty, not a syntax error near a ')' nobody wrote. */
    const char *empty[] = {"", " \t\n"};
    for (size_t i = 0; i < G_N_ELEMENTS(empty); i++) {
        const char *w1[] = {empty[i]};
        DqAskRequest e = {
            .where_sql = w1, .n_where = 1, .questions = qs, .n_questions = 1, .model_id = "x"};
        DqAskResult r;
        g_assert_false(queue_ask(s, &e, &r, &err));
        g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
        g_assert_nonnull(strstr(err->message, "': an empty expression ("));
        g_clear_error(&err);
    }
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE model_id = 'x'"), ==, 0);
    close_store(s);
    g_free(db);
    g_free(dir);
}

static void test_question_files(void) {
    char *dir = dq_test_tmpdir();
    char *lines = g_build_filename(dir, "q.txt", NULL);
    char *json = g_build_filename(dir, "q.json", NULL);
    char *bad = g_build_filename(dir, "bad.json", NULL);
    g_assert_true(
        g_file_set_contents(lines, "What is the date?\n\n  Who is the payee?  \n", -1, NULL));
    g_assert_true(g_file_set_contents(json, "[\"Total?\", \"Invoice \\\"number\\\"?\"]", -1, NULL));
    g_assert_true(g_file_set_contents(bad, "[\"ok\", 3]", -1, NULL));
    GError *err = NULL;
    char **v = queue_read_questions(lines, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g_strv_length(v), ==, 2);
    g_assert_cmpstr(v[1], ==, "Who is the payee?");
    g_strfreev(v);
    v = queue_read_questions(json, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g_strv_length(v), ==, 2);
    g_assert_cmpstr(v[1], ==, "Invoice \"number\"?");
    g_strfreev(v);
    g_assert_null(queue_read_questions(bad, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_FORMAT);
    g_assert_nonnull(strstr(err->message, bad));
    g_clear_error(&err);
    /* A byte order mark is no part of the first question, nor in the way of a JSON list. */
    const struct {
        const char *name, *text;
        int n;
        const char *first;
    } good[] = {
        {"bom.txt",
         "\xef\xbb\xbf"
         "First?\r\n\xc2\xa0\r\nSecond?\r\n",
         2, "First?"},
        {"bom.json", "\xef\xbb\xbf \n[\"A?\", \" B? \"]", 2, "A?"},
        /* Lines end at a lone CR too, not only at LF or CRLF. */
        {"old-mac.txt", "First?\rSecond?\r\rThird?", 3, "First?"},
        {"mixed.txt", "First?\r\n\r\nSecond?\n\rThird?\r", 3, "First?"},
        {"quoted.txt", "\"Quoted\" question?\nNext?", 2, "\"Quoted\" question?"},
        /* Lines are taken as written: one quoted line is as literal as several. */
        {"one-quoted.txt", "\"What is the total?\"\n", 1, "\"What is the total?\""},
        {"two-quoted.txt", "\"Q1?\"\n\"Q2?\"\n", 2, "\"Q1?\""},
        /* '#' lines are comments, wherever they are; a CSV is lines like any other. */
        {"comments.txt", "# nightly questions\n  # indented\nTotal?\n#x\nDate?\n", 2, "Total?"},
        {"list.csv", "question,expected\nWhat is the total?,42\n", 2, "question,expected"},
        {"escaped.json", "[\"a\\\\u0000b\"]", 1, "a\\u0000b"},
        {"pair.json", "[\"\\ud83d\\ude00 ok\", \"a \\\\ud800\"]", 2, "\xf0\x9f\x98\x80 ok"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        char *f = g_build_filename(dir, good[i].name, NULL);
        g_assert_true(g_file_set_contents(f, good[i].text, -1, NULL));
        v = queue_read_questions(f, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(g_strv_length(v), ==, good[i].n);
        g_assert_cmpstr(v[0], ==, good[i].first);
        g_strfreev(v);
        g_free(f);
    }
    /* Meant as JSON but not a list of strings, or a question that cannot be stored whole: an
     * error naming the file (and where), never lines or a question cut short. */
    const struct {
        const char *name, *text;
        gssize len;
        const char *says;
    } wrong[] = {
        /* shown as written in the file: what json-glib would hand out is cut short or not a
         * character, and it dropped the character after a lone surrogate */
        {"nul.json", "[\"ok\", \"a\\u0000b\"]", -1,
         "nul.json element 2 \"a\\\\u0000b\": the question holds a NUL character"},
        {"lone-high.json", "[\"ok\", \"bad \\ud800X tail\"]", -1,
         "lone-high.json element 2 \"bad \\\\ud800X tail\": \\ud800 is half of a UTF-16 "
         "surrogate pair without its other half"},
        {"lone-low.json", "[\"x \\\"\\uDC00\\\" y\"]", -1,
         "lone-low.json element 1 \"x \\\\\"\\\\uDC00\\\\\" y\": \\uDC00 is half"},
        /* not JSON, though json-glib would read them: a hand-written list in Python's quotes */
        {"comment.json", "[/* \" */ \"a\", \"c\"]", -1,
         "comment.json: not a JSON list of strings: not valid JSON: line 1, column 2: a comment"},
        {"single.json", "[\"a\",\n 'its']", -1,
         "single.json: not a JSON list of strings: not valid JSON: line 2, column 2: a string "
         "in single quotes (JSON's are in double quotes)"},
        /* json-glib refuses a high surrogate before another escape itself */
        {"reversed.json", "[\"\\ude00\\ud83d\\u0041\"]", -1, "malformed surrogate pair"},
        {"object.json", "{\"q\": \"a\"}", -1,
         "object.json line 1: looks like JSON lines/object; give a JSON list of strings or one "
         "question a line"},
        {"lines.jsonl", "\n {\"q\": \"a\"}\n{\"q\": \"b\"}\n", -1,
         "lines.jsonl line 2: looks like JSON lines/object"},
        {"broken.json", "\xef\xbb\xbf[\"a\", ", -1, "broken.json: not a JSON list of strings: "},
        {"utf16le.txt", "\xff\xfeW\0h\0o\0?\0\n\0", 12,
         "utf16le.txt: the file is UTF-16; save it as UTF-8"},
        {"utf16be.txt", "\xfe\xff\0W\0?", 6, "utf16be.txt: the file is UTF-16; save it as UTF-8"},
        {"utf32le.txt", "\xff\xfe\0\0W\0\0\0", 8, "utf32le.txt: the file is UTF-32; save it as"},
        /* no byte order mark (Python's utf-16-le writes none): said as such, not as a NUL */
        {"utf16le-unmarked.txt", "W\0h\0o\0?\0\n\0", 10,
         "utf16le-unmarked.txt: the file looks like UTF-16 without a byte order mark (NUL bytes "
         "beside its letters); save it as UTF-8"},
        {"utf16be-unmarked.json", "\0[\0\"\0a\0\"\0]", 10,
         "utf16be-unmarked.json: the file looks like UTF-16 without a byte order mark"},
        {"utf32le-unmarked.txt", "W\0\0\0?\0\0\0", 8,
         "utf32le-unmarked.txt: the file looks like UTF-32 without"},
        {"utf32be-unmarked.txt", "\0\0\0W\0\0\0?", 8,
         "utf32be-unmarked.txt: the file looks like UTF-32 without"},
        {"only-comments.txt", "# nothing yet\n\n", -1, "only-comments.txt: no questions in it"},
        {"empty.json", "[\"a\", \" \"]", -1, "empty.json element 2 ' ': the question is empty"},
        {"latin1.txt", "ok\nQu\xe9?\n", -1,
         "latin1.txt line 2 'Qu\\xe9?': the question is not UTF-8"},
        {"nul.txt", "ok\n\na\0b\n", 7, "nul.txt line 3 'a\\u0000b': the question holds a NUL"},
        {"nul-in.json", "[\"a\0\"]", 6, "nul-in.json line 1: a NUL byte"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(wrong); i++) {
        char *f = g_build_filename(dir, wrong[i].name, NULL);
        g_assert_true(g_file_set_contents(f, wrong[i].text, wrong[i].len, NULL));
        v = queue_read_questions(f, &err);
        if (v != NULL)
            g_error("%s: read as %u questions, the first '%s'", wrong[i].name, g_strv_length(v),
                    v[0]);
        g_assert_nonnull(err);
        g_assert_true(g_str_has_prefix(err->message, f));
        if (strstr(err->message, wrong[i].says) == NULL)
            g_error("%s: '%s' does not say '%s'", wrong[i].name, err->message, wrong[i].says);
        g_clear_error(&err);
        g_free(f);
    }
    char *missing = g_build_filename(dir, "missing.txt", NULL);
    g_assert_null(queue_read_questions(missing, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_clear_error(&err);
    g_free(missing);
    g_free(lines);
    g_free(json);
    g_free(bad);
    g_free(dir);
}

static void test_job_key(void) {
    char *a = queue_job_key("abc", 1, "q", "m", "{}", "{}");
    char *b = queue_job_key("abc", 1, "q", "m", "{}", "{}");
    char *c = queue_job_key("abc", 11, "q", "m", "{}", "{}");
    char *d = queue_job_key("abc", 1, "1q", "m", "{}", "{}"); /* separators matter */
    g_assert_cmpstr(a, ==, b);
    g_assert_cmpstr(a, !=, c);
    g_assert_cmpstr(c, !=, d);
    g_assert_cmpint(strlen(a), ==, 64);
    g_free(a);
    g_free(b);
    g_free(c);
    g_free(d);
    char *id = queue_model_id("/models/SmolVLM-256M-Instruct//");
    g_assert_cmpstr(id, ==, "SmolVLM-256M-Instruct");
    g_free(id);
    /* "." and a trailing "/." name the directory they stand for, never ".". */
    const char *same[] = {"/models/SmolVLM-256M-Instruct/./", "/models/SmolVLM-256M-Instruct/.",
                          "/models/SmolVLM-256M-Instruct/x/..", "SmolVLM-256M-Instruct"};
    for (size_t i = 0; i < G_N_ELEMENTS(same); i++) {
        id = queue_model_id(same[i]);
        g_assert_cmpstr(id, ==, "SmolVLM-256M-Instruct");
        g_free(id);
    }
    char *cwd = g_get_current_dir(), *cwd_name = g_path_get_basename(cwd);
    id = queue_model_id(".");
    g_assert_cmpstr(id, !=, ".");
    g_assert_cmpstr(id, ==, cwd_name);
    g_free(id);
    g_free(cwd);
    g_free(cwd_name);
}

/* ---- leases, with a controlled clock ---- */

static DqJobAnswer answer_for(gint64 job_id, const char *text) {
    return (DqJobAnswer){.job_id = job_id,
                         .text = text,
                         .started_at = "2026-01-01T00:00:00.000Z",
                         .finished_at = "2026-01-01T00:00:01.000Z"};
}

static void test_leases(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    jt_ask(db, 2, "m", 2);
    DqStore *s = open_store(db);
    GError *err = NULL;
    GPtrArray *a = store_jobs_claim(s, "A", "m", 3, 1000, 100, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(a->len, ==, 3);
    DqClaimedJob *j0 = g_ptr_array_index(a, 0);
    g_assert_cmpint(j0->attempt, ==, 1);
    g_assert_nonnull(j0->image_sha256);
    g_assert_cmpstr(j0->question, ==, "question 1");
    g_assert_cmpstr(j0->document_path, ==, "/archive/2023/doc-0000.pdf");
    GPtrArray *b = store_jobs_claim(s, "B", "m", 10, 1050, 100, NULL, &err);
    g_assert_cmpint(b->len, ==, 1);
    g_ptr_array_free(b, TRUE);
    /* Another model's worker sees nothing. */
    b = store_jobs_claim(s, "C", "other", 10, 1050, 100, NULL, &err);
    g_assert_cmpint(b->len, ==, 0);
    g_ptr_array_free(b, TRUE);

    int held = 0;
    g_assert_true(store_jobs_heartbeat(s, "A", 1090, 100, &held, &err));
    g_assert_cmpint(held, ==, 3);
    g_assert_true(store_jobs_heartbeat(s, "B", 1100, 100, &held, &err));
    g_assert_cmpint(held, ==, 1);
    b = store_jobs_claim(s, "B", "m", 10, 1150, 100, NULL, &err); /* A's leases run to 1190 */
    g_assert_cmpint(b->len, ==, 0);
    g_ptr_array_free(b, TRUE);
    b = store_jobs_claim(s, "B", "m", 10, 1200, 100, NULL, &err); /* expired: B takes them over */
    g_assert_cmpint(b->len, ==, 3);
    g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(b, 0))->attempt, ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'lease_expired' AND "
                          "worker = 'A'"),
                    ==, 3);
    g_assert_true(store_jobs_heartbeat(s, "A", 1200, 100, &held, &err));
    g_assert_cmpint(held, ==, 0);

    /* A finishes late: its lease is gone, nothing is written. */
    DqJobAnswer late[3];
    for (int i = 0; i < 3; i++)
        late[i] = answer_for(((DqClaimedJob *)g_ptr_array_index(a, i))->job_id, "late");
    int written = -1;
    g_assert_true(store_jobs_complete(s, "A", late, 3, &written, &err));
    g_assert_cmpint(written, ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers"), ==, 0);
    /* B completes everything it holds (the fourth job it claimed first, then A's three). */
    DqJobAnswer mine[4];
    for (int i = 0; i < 4; i++)
        mine[i] = answer_for(i + 1, "b");
    g_assert_true(store_jobs_complete(s, "B", mine, 4, &written, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(written, ==, 4);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done' AND lease_owner IS "
                          "NULL AND finished_at IS NOT NULL"),
                    ==, 4);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers WHERE text = 'b' AND worker = 'B'"), ==, 4);
    g_assert_cmpint(q(db, "SELECT count(*) FROM v_answers"), ==, 4);
    g_assert_cmpint(q(db, "SELECT done FROM v_progress WHERE question = 'question 1'"), ==, 2);
    /* Completing twice writes nothing more; the answers are found stored (a retry after a
     * lost COMMIT reply counts them answered). */
    g_assert_true(store_jobs_complete(s, "B", mine, 4, &written, &err));
    g_assert_cmpint(written, ==, 4);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers"), ==, 4);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(b, TRUE);
    close_store(s);
    g_free(db);
    g_free(dir);
}

/* A claimant never takes back its own expired leases: it is alive and still answering them. */
static void test_own_expired_leases(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 3);
    jt_ask(db, 1, "m", 3);
    DqStore *s = open_store(db);
    GError *err = NULL;
    GPtrArray *a = store_jobs_claim(s, "A", "m", 2, 1000, 100, NULL, &err);
    g_assert_cmpint(a->len, ==, 2);
    GPtrArray *again = store_jobs_claim(s, "A", "m", 10, 1200, 100, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(again->len, ==, 1);
    g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(again, 0))->job_id, ==, 3);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'running' AND lease_owner = "
                          "'A' AND attempts = 1"),
                    ==, 3);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors"), ==, 0);
    /* Anyone else does, as before. */
    GPtrArray *b = store_jobs_claim(s, "B", "m", 10, 1200, 100, NULL, &err);
    g_assert_cmpint(b->len, ==, 2);
    g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(b, 0))->attempt, ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'lease_expired'"), ==, 2);
    g_ptr_array_free(a, TRUE);
    g_ptr_array_free(again, TRUE);
    g_ptr_array_free(b, TRUE);
    close_store(s);
    g_free(db);
    g_free(dir);
}

/* SQLITE_TRACE_STMT callback: sleeps *ctx microseconds as a BEGIN IMMEDIATE starts running, inside
 * its sqlite3_step, as a process descheduled there on a loaded machine would. */
static int slow_begin(unsigned type, void *ctx, void *p, void *x) {
    (void)type;
    (void)p;
    if (g_str_has_prefix((const char *)x, "BEGIN IMMEDIATE"))
        g_usleep(*(const gulong *)ctx);
    return 0;
}

/* A BEGIN that takes long without the lock being taken (the machine busy: ctest -j on a loaded
 * host) is no wait for the lock: leases and backoffs run from the caller's time exactly, and a
 * lease that expired while nothing held the lock is taken back, however slow the machine. Here
 * every BEGIN takes longer than a stall (store_jobs.c, STALL_US). Before, such a BEGIN moved
 * not_before_ms and lease ends by its time and counted as a stall, which left expired leases
 * alone: the synthetic-clock tests here failed at random under load. */
static void test_slow_begin_is_no_lock_wait(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    jt_ask(db, 1, "m", 3); /* jobs 1..2, three attempts each */
    DqStore *s = open_store(db);
    static const gulong sleep_us = 300 * 1000;
    sqlite3_trace_v2(dq_store_sqlite(s), SQLITE_TRACE_STMT, slow_begin, (void *)&sleep_us);
    GError *err = NULL;
    GPtrArray *c = store_jobs_claim(s, "W", "m", 1, 0, 10, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, 1);
    g_ptr_array_free(c, TRUE);
    g_assert_cmpint(q(db, "SELECT lease_expires_ms FROM jobs WHERE id = 1"), ==, 10);
    /* W's lease ran out at 10 while nothing held the lock: V takes job 1 back. */
    c = store_jobs_claim(s, "V", "m", 2, 11, 10, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(c->len, ==, 2);
    g_ptr_array_free(c, TRUE);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE job_id = 1 AND worker = 'W'"), ==,
                    1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE lease_owner = 'V' AND "
                          "lease_expires_ms = 21"),
                    ==, 2);
    /* The backoff runs from the failure's time exactly (job 1's second attempt: twice 100). */
    DqJobState st;
    g_assert_true(store_jobs_fail(s, "V", 1, "model", "out of memory", TRUE, 11, 100, &st, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(st, ==, DQ_JOB_QUEUED);
    g_assert_cmpint(q(db, "SELECT not_before_ms FROM jobs WHERE id = 1"), ==, 211);
    int held = 0;
    g_assert_true(store_jobs_heartbeat(s, "V", 50, 10, &held, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(held, ==, 1);
    g_assert_cmpint(q(db, "SELECT lease_expires_ms FROM jobs WHERE id = 2"), ==, 60);
    sqlite3_trace_v2(dq_store_sqlite(s), 0, NULL, NULL);
    close_store(s);
    g_free(db);
    g_free(dir);
}

static void test_failures_backoff_dead(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 3);
    jt_ask(db, 1, "m", 3); /* jobs 1..3 */
    DqStore *s = open_store(db);
    GError *err = NULL;
    DqJobState st;
    gint64 t = 0;
    /* Job 1: three retryable failures, then dead, every error kept. */
    for (int attempt = 1; attempt <= 3; attempt++) {
        GPtrArray *c = store_jobs_claim(s, "W", "m", 1, t, 1000, NULL, &err);
        dq_assert_no_error(err);
        g_assert_cmpint(c->len, ==, 1);
        DqClaimedJob *j = g_ptr_array_index(c, 0);
        g_assert_cmpint(j->job_id, ==, 1);
        g_assert_cmpint(j->attempt, ==, attempt);
        char *msg = g_strdup_printf("out of memory (attempt %d)", attempt);
        g_assert_true(store_jobs_fail(s, "W", 1, "model", msg, TRUE, t, 100, &st, &err));
        g_free(msg);
        g_ptr_array_free(c, TRUE);
        if (attempt < 3) {
            g_assert_cmpint(st, ==, DQ_JOB_QUEUED);
            gint64 backoff = 100 << (attempt - 1);
            g_assert_cmpint(q(db, "SELECT not_before_ms FROM jobs WHERE id = 1"), ==, t + backoff);
            /* Not before the backoff: the claim takes job 2 instead, and gives it back. */
            GPtrArray *early = store_jobs_claim(s, "W", "m", 1, t + backoff - 1, 1000, NULL, &err);
            g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(early, 0))->job_id, !=, 1);
            g_ptr_array_free(early, TRUE);
            int released = 0;
            g_assert_true(store_jobs_release(s, "W", &released, &err));
            g_assert_cmpint(released, ==, 1);
            t += backoff;
        } else {
            g_assert_cmpint(st, ==, DQ_JOB_DEAD);
        }
    }
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE job_id = 1 AND kind = 'model'"),
                    ==, 3);
    g_assert_cmpint(q(db, "SELECT last_error LIKE 'model: out of memory (attempt 3)' FROM jobs "
                          "WHERE id = 1"),
                    ==, 1);
    /* Released jobs did not use an attempt. */
    g_assert_cmpint(q(db, "SELECT attempts FROM jobs WHERE id = 2"), ==, 0);

    /* Job 2: a bad page fails at once. A stranger cannot fail a job it does not hold. */
    GPtrArray *c = store_jobs_claim(s, "W", "m", 1, t, 1000, NULL, &err);
    g_assert_cmpint(((DqClaimedJob *)g_ptr_array_index(c, 0))->job_id, ==, 2);
    g_ptr_array_free(c, TRUE);
    g_assert_true(store_jobs_fail(s, "X", 2, "model", "not mine", TRUE, t, 100, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_N_STATES);
    g_assert_true(
        store_jobs_fail(s, "W", 2, "page_image", "p.png: truncated", FALSE, t, 100, &st, &err));
    g_assert_cmpint(st, ==, DQ_JOB_FAILED);

    /* Job 3 with one attempt: its worker dies, the lease expires, the next claim buries it. */
    g_assert_true(dq_store_exec(s, "UPDATE jobs SET max_attempts = 1 WHERE id = 3", &err));
    c = store_jobs_claim(s, "W", "m", 1, t, 10, NULL, &err);
    g_assert_cmpint(c->len, ==, 1);
    g_ptr_array_free(c, TRUE);
    c = store_jobs_claim(s, "V", "m", 1, t + 11, 10, NULL, &err);
    g_assert_cmpint(c->len, ==, 0);
    g_ptr_array_free(c, TRUE);
    g_assert_cmpint(q(db, "SELECT state = 'dead' FROM jobs WHERE id = 3"), ==, 1);

    DqJobCounts counts;
    g_assert_true(store_jobs_counts(s, NULL, &counts, &err));
    g_assert_cmpint(counts.by_state[DQ_JOB_DEAD], ==, 2);
    g_assert_cmpint(counts.by_state[DQ_JOB_FAILED], ==, 1);
    GPtrArray *top = store_jobs_top_errors(s, 5, &err);
    g_assert_cmpint(top->len, >=, 3);
    g_ptr_array_free(top, TRUE);

    gint64 n = jt_requeue_all(s, 1u << DQ_JOB_DEAD);
    g_assert_cmpint(n, ==, 2);
    n = jt_requeue_all(s, 1u << DQ_JOB_FAILED);
    g_assert_cmpint(n, ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0"), ==,
                    3);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors"), ==, 5); /* history stays */
    close_store(s);
    g_free(db);
    g_free(dir);
}

/* ---- whole workers ---- */

/* Every done job has exactly one answer, and it is the hash answer of its page and question. */
static void assert_answers_correct(const char *db) {
    GError *err = NULL;
    DqStore *s = open_store(db);
    sqlite3 *h = dq_store_sqlite(s);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(h,
                                       "SELECT p.image_sha256, q.text, a.text FROM answers a "
                                       "JOIN jobs j ON j.id = a.job_id JOIN pages p ON "
                                       "p.id = j.page_id JOIN questions q ON q.id = j.question_id",
                                       -1, &st, NULL),
                    ==, SQLITE_OK);
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        char *path = queue_page_image_path(db, (const char *)sqlite3_column_text(st, 0));
        char *want = jt_expected_answer(path, (const char *)sqlite3_column_text(st, 1));
        g_assert_cmpstr((const char *)sqlite3_column_text(st, 2), ==, want);
        g_free(want);
        g_free(path);
        n++;
    }
    sqlite3_finalize(st);
    dq_assert_no_error(err);
    close_store(s);
    g_assert_cmpint(n, ==, q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"));
}

static void test_worker_until_empty_and_missing_image(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 3);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 12);
    /* One page image vanished from the page store: its two jobs fail, naming the file. */
    DqStore *s = open_store(db);
    GPtrArray *c = store_jobs_claim(s, "peek", "m", 1, 0, 1, NULL, NULL);
    char *gone = queue_page_image_path(db, ((DqClaimedJob *)g_ptr_array_index(c, 0))->image_sha256);
    g_ptr_array_free(c, TRUE);
    g_assert_true(store_jobs_release(s, "peek", NULL, NULL));
    close_store(s);
    g_assert_cmpint(g_unlink(gone), ==, 0);

    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {.db_path = db, .model_id = "m", .batch = 5, .until_empty = TRUE};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    g_assert_cmpint(stats.done, ==, 10);
    g_assert_cmpint(stats.failed, ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'failed'"), ==, 2);
    char *sql = g_strdup_printf("SELECT count(*) FROM job_errors WHERE kind = 'page_image' AND "
                                "instr(message, '%s') > 0 AND message LIKE '%%page 1)'",
                                gone);
    g_assert_cmpint(q(db, sql), ==, 2);
    g_free(sql);
    assert_answers_correct(db);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers WHERE ms_total IS NOT NULL AND "
                          "prompt_tokens > 0 AND started_at <= finished_at"),
                    ==, 10);
    dq_answerer_free(a);
    g_free(gone);
    g_free(db);
    g_free(dir);
}

/* A page file that is there but not one (a folder in its place), or whose path cannot be looked
 * up (a file where a folder of the store should be), fails its jobs at once as page_image,
 * saying so rather than that the page is missing. */
static void test_worker_page_not_a_file(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 3);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 6);
    DqStore *s = open_store(db);
    GPtrArray *c = store_jobs_claim(s, "peek", "m", 2, 0, 1, NULL, NULL);
    g_assert_cmpuint(c->len, ==, 2);
    char *folder =
        queue_page_image_path(db, ((DqClaimedJob *)g_ptr_array_index(c, 0))->image_sha256);
    char *blocked =
        queue_page_image_path(db, ((DqClaimedJob *)g_ptr_array_index(c, 1))->image_sha256);
    g_ptr_array_free(c, TRUE);
    g_assert_true(store_jobs_release(s, "peek", NULL, NULL));
    close_store(s);
    g_assert_cmpint(g_unlink(folder), ==, 0);
    g_assert_cmpint(g_mkdir(folder, 0755), ==, 0);
    /* the page's own folder (its sha's last level) replaced by a file */
    char *parent = g_path_get_dirname(blocked);
    char *moved = g_strconcat(parent, ".moved", NULL);
    g_assert_cmpint(g_rename(parent, moved), ==, 0);
    g_assert_true(g_file_set_contents(parent, "x", 1, NULL));

    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    g_assert_cmpint(stats.failed, ==, 2);
    char *sql = g_strdup_printf("SELECT count(*) FROM job_errors WHERE kind = 'page_image' AND "
                                "message LIKE '%s: page image not a regular file (%%'",
                                folder);
    g_assert_cmpint(q(db, sql), ==, 1);
    g_free(sql);
    sql = g_strdup_printf("SELECT count(*) FROM job_errors WHERE kind = 'page_image' AND "
                          "message LIKE '%s: cannot stat image: Not a directory (%%'",
                          blocked);
    g_assert_cmpint(q(db, sql), ==, 1);
    g_free(sql);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE message LIKE '%missing%'"), ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'failed' AND attempts = 1"), ==,
                    2);
    dq_answerer_free(a);
    g_free(moved);
    g_free(parent);
    g_free(blocked);
    g_free(folder);
    g_free(db);
    g_free(dir);
}

/* A question the model cannot take fails its job at once, and the message names the job and
 * the question, not the page; docqa status shows the question's failed jobs as one cause. */
static void test_worker_bad_question(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 3);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 6);
    JtAnswererConfig cfg = {.long_question = "question 2"};
    DqAnswerer *a = jt_answerer_new(&cfg);
    DqWorkerOptions opt = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    g_assert_cmpint(stats.done, ==, 3);
    g_assert_cmpint(stats.failed, ==, 3);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs j JOIN questions qu ON qu.id = j.question_id "
                          "WHERE qu.text = 'question 2' AND state = 'failed' AND attempts = 1 AND "
                          "last_error = 'question: job ' || j.id || ': question ''question 2'': "
                          "too long for the model (hash answerer)'"),
                    ==, 3);
    GError *err = NULL;
    DqStore *s = open_store(db);
    GPtrArray *reasons = store_jobs_top_errors(s, 5, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(reasons->len, ==, 1);
    const DqErrorReason *top = g_ptr_array_index(reasons, 0);
    g_assert_cmpstr(top->kind, ==, "question");
    g_assert_cmpint(top->jobs, ==, 3);
    g_assert_cmpstr(top->message, ==,
                    "...: question 'question 2': too long for the model (hash answerer)");
    g_ptr_array_free(reasons, TRUE);
    close_store(s);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* Rows deleted by hand in sqlite3 (foreign keys off there, so nothing cascades): a document (its
 * pages stay), a page, a question. Their jobs fail as 'orphan', each message naming the job and
 * what is gone, and the worker answers the rest instead of stopping at "reading a claimed job". */
static void test_worker_orphan_jobs(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 8);
    exec_by_hand(db, "DELETE FROM documents WHERE id = 1;"
                     "DELETE FROM pages WHERE id = (SELECT min(id) FROM pages WHERE "
                     "document_id = 2);"
                     "DELETE FROM questions WHERE text = 'question 2'");
    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    GError *err = NULL;
    g_assert_cmpint(stats.done, ==, 1);
    g_assert_cmpint(stats.failed, ==, 7);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'failed' AND attempts = 1 AND "
                          "last_error LIKE 'orphan: job %: its % no longer in the database%'"),
                    ==, 7);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'orphan' AND message = "
                          "'job ' || job_id || ': its page is no longer in the database "
                          "(deleted by hand?): nothing to answer'"),
                    ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'orphan' AND message "
                          "LIKE '%its page and question are no longer%'"),
                    ==, 1);
    assert_answers_correct(db);
    /* status groups them by what is gone, whatever the job. */
    DqStore *s = open_store(db);
    GPtrArray *reasons = store_jobs_top_errors(s, 10, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(reasons->len, ==, 5);
    const DqErrorReason *top = g_ptr_array_index(reasons, 0);
    g_assert_cmpstr(top->kind, ==, "orphan");
    g_assert_cmpint(top->jobs, ==, 2);
    g_assert_cmpstr(top->message, ==,
                    "...: its document and question are no longer in the database (deleted by "
                    "hand?): nothing to answer");
    g_ptr_array_free(reasons, TRUE);
    close_store(s);
    /* A second run has nothing left to do. */
    g_assert_cmpint(jt_worker_run(&opt, a).claimed, ==, 0);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* A page whose render settings cannot be read (edited by hand into something that is not
 * JSON, or not an object): its jobs fail as 'settings', naming the page, rather than being
 * answered at the snapshot's own N instead of the N its image was rendered at. A job whose
 * generation settings name no prompt fails as 'settings' too. The other page's jobs are
 * answered. */
static void test_worker_bad_render_settings(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 4);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 4);
    exec_by_hand(db, "UPDATE pages SET render_settings = '{\"n_res\": 5' WHERE page_number = 1;"
                     "UPDATE pages SET render_settings = '[5]' WHERE page_number = 2");
    /* and a job whose generation settings name no prompt */
    exec_by_hand(db, "UPDATE jobs SET generation_settings = '{\"max_new_tokens\": 8}' WHERE "
                     "page_id = (SELECT id FROM pages WHERE page_number = 4)");
    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {.db_path = db, .model_id = "m", .batch = 4, .until_empty = TRUE};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    g_assert_cmpint(stats.done, ==, 1);
    g_assert_cmpint(stats.failed, ==, 3);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs j JOIN pages p ON p.id = j.page_id WHERE "
                          "j.state = 'failed' AND j.attempts = 1 AND p.page_number = 4"),
                    ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'settings' AND message = "
                          "'generation settings ''{\"max_new_tokens\": 8}'': no prompt'"),
                    ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs j JOIN pages p ON p.id = j.page_id WHERE "
                          "j.state = 'failed' AND p.page_number IN (1, 2)"),
                    ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'settings' AND message "
                          "LIKE 'page 1 of /archive/2023/doc-0000.pdf: render settings: not "
                          "valid JSON%'"),
                    ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'settings' AND message = "
                          "'page 2 of /archive/2023/doc-0000.pdf: render settings ''[5]'': not "
                          "an object'"),
                    ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers"), ==, 1);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* A job the answerer refuses at submit (the device out of memory) is failed as a model error:
 * retried after its backoff, then dead; the other question's jobs are answered. */
static void test_worker_submit_refused(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 2), ==, 4);
    DqAnswerer *a = jt_answerer_new(&(JtAnswererConfig){.refused_question = "question 2"});
    DqWorkerOptions opt = {
        .db_path = db, .model_id = "m", .batch = 2, .backoff_ms = 1, .until_empty = TRUE};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    g_assert_cmpint(stats.done, ==, 2);
    g_assert_cmpint(stats.retried, ==, 2);
    g_assert_cmpint(stats.failed, ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs j JOIN questions q ON q.id = j.question_id "
                          "WHERE q.text = 'question 2' AND j.state = 'dead' AND j.attempts = 2"),
                    ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'model' AND message = "
                          "'refused at submit: out of device memory'"),
                    ==, 4);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers"), ==, 2);
    assert_answers_correct(db);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* A page image the answerer finds bad (an I/O or format error) fails its jobs at once as
 * 'page_image': no retry can mend the file. The other question's jobs are answered. */
static void test_worker_bad_page_image(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    DqAnswerer *a = jt_answerer_new(&(JtAnswererConfig){.bad_question = "question 2"});
    DqWorkerOptions opt = {
        .db_path = db, .model_id = "m", .batch = 2, .backoff_ms = 1, .until_empty = TRUE};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    g_assert_cmpint(stats.done, ==, 2);
    g_assert_cmpint(stats.retried, ==, 0);
    g_assert_cmpint(stats.failed, ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs j JOIN questions q ON q.id = j.question_id "
                          "WHERE q.text = 'question 2' AND j.state = 'failed' AND j.attempts = 1"),
                    ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'page_image' AND message "
                          "= 'hash answerer: this question''s image is bad'"),
                    ==, 2);
    assert_answers_correct(db);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* A database reached through a symbolic link: SQLite opens the link's target, and the page store
 * is the one beside that file, under either name, also for a link whose target is not made yet.
 * A worker given the link answers everything (it stopped, "page store missing", beside the
 * link). */
static void test_worker_database_through_link(void) {
    char *dir = dq_test_tmpdir();
    char *real = g_build_filename(dir, "real", NULL), *other = g_build_filename(dir, "other", NULL);
    g_assert_cmpint(g_mkdir(real, 0755), ==, 0);
    g_assert_cmpint(g_mkdir(other, 0755), ==, 0);
    char *db = jt_make_db(real, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    char *link = g_build_filename(other, "link.db", NULL);
    g_assert_cmpint(symlink("../real/docqa.db", link), ==, 0);
    char *want = g_strconcat(db, ".pages", NULL);
    char *got = dq_store_page_dir_for(link, NULL);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
    got = dq_store_page_dir_for(db, NULL); /* no link: the name as given */
    g_assert_cmpstr(got, ==, want);
    g_free(got);
    /* A link to a database not made yet, through a linked folder */
    char *dangling = g_build_filename(other, "new.db", NULL);
    g_assert_cmpint(symlink("../real/new.db", dangling), ==, 0);
    got = dq_store_page_dir_for(dangling, NULL);
    char *want_new = g_build_filename(real, "new.db.pages", NULL);
    g_assert_cmpstr(got, ==, want_new);
    g_free(got);
    g_free(want_new);
    g_free(dangling);

    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {.db_path = link, .model_id = "m", .batch = 2, .until_empty = TRUE};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    g_assert_cmpint(stats.done, ==, 4);
    g_assert_cmpint(stats.failed, ==, 0);
    assert_answers_correct(db);
    char *beside_link = g_strconcat(link, ".pages", NULL);
    g_assert_false(g_file_test(beside_link, G_FILE_TEST_EXISTS));
    g_free(beside_link);
    dq_answerer_free(a);
    g_free(want);
    g_free(link);
    g_free(db);
    g_free(real);
    g_free(other);
    g_free(dir);
}

/* The whole page store gone (an unmounted share): the worker stops and fails nothing. */
static void test_worker_page_store_gone(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 3);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 6);
    char *pages = g_strconcat(db, ".pages", NULL), *away = g_strconcat(db, ".away", NULL);
    g_assert_cmpint(g_rename(pages, away), ==, 0);
    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE};
    volatile sig_atomic_t stop = 0;
    DqWorkerStats stats;
    GError *err = NULL;
    g_assert_false(queue_worker_run(&opt, a, &stop, &stats, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_IO);
    g_assert_nonnull(strstr(err->message, "page store is missing"));
    g_assert_nonnull(strstr(err->message, pages)); /* the folder it looked at */
    g_clear_error(&err);
    /* DOCQA_PAGES names a page store only for PostgreSQL: set for an SQLite database, the
     * message says so (after `migrate --to sqlite:export.db` with it still exported). */
    g_setenv("DOCQA_PAGES", away, TRUE);
    g_assert_false(queue_worker_run(&opt, a, &stop, &stats, &err));
    g_unsetenv("DOCQA_PAGES");
    g_test_message("%s", err->message);
    char *note = g_strdup_printf("DOCQA_PAGES (%s) is ignored: an SQLite database keeps its page "
                                 "images beside its file, in %s",
                                 away, pages);
    g_assert_nonnull(strstr(err->message, note));
    g_free(note);
    g_clear_error(&err);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0"), ==,
                    6);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors"), ==, 0);
    /* An empty folder in its place (a mount point, unmounted) is no better, nor one that holds
     * only ingest's temporary folder, or files that are not the store's. */
    g_assert_cmpint(g_mkdir(pages, 0755), ==, 0);
    g_assert_false(queue_worker_run(&opt, a, &stop, &stats, &err));
    g_clear_error(&err);
    char *tmp = g_build_filename(pages, ".tmp", NULL),
         *other = g_build_filename(pages, "notes", NULL);
    g_assert_cmpint(g_mkdir(tmp, 0755), ==, 0);
    g_assert_true(g_file_set_contents(other, "x", 1, NULL));
    g_assert_false(queue_worker_run(&opt, a, &stop, &stats, &err));
    g_clear_error(&err);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors"), ==, 0);
    g_assert_cmpint(g_rmdir(tmp), ==, 0);
    g_assert_cmpint(g_unlink(other), ==, 0);
    g_free(tmp);
    g_free(other);
    g_assert_cmpint(g_rmdir(pages), ==, 0);
    g_assert_cmpint(g_rename(away, pages), ==, 0);
    g_assert_true(queue_worker_run(&opt, a, &stop, &stats, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(stats.done, ==, 6);
    assert_answers_correct(db);
    dq_answerer_free(a);
    g_free(pages);
    g_free(away);
    g_free(db);
    g_free(dir);
}

static void test_worker_retries_transient_failures(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 4);
    g_assert_cmpint(jt_ask(db, 2, "m", 10), ==, 16);
    JtAnswererConfig cfg = {.fail_every = 3, .fail_retryable = TRUE};
    DqAnswerer *a = jt_answerer_new(&cfg);
    DqWorkerOptions opt = {.db_path = db,
                           .model_id = "m",
                           .batch = 4,
                           .until_empty = TRUE,
                           .backoff_ms = 1,
                           .poll_ms = 5};
    volatile sig_atomic_t stop = 0;
    DqWorkerStats stats;
    GError *err = NULL;
    g_assert_true(queue_worker_run(&opt, a, &stop, &stats, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(stats.done, ==, 16);
    g_assert_cmpint(stats.retried, >, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'model'"), ==,
                    stats.retried);
    assert_answers_correct(db);
    dq_answerer_free(a);

    /* A model that fails every batch: each job dies after its attempts, errors kept. */
    char *dir2 = dq_test_tmpdir();
    char *db2 = jt_make_db(dir2, 1, 2);
    jt_ask(db2, 1, "m", 2);
    JtAnswererConfig broken = {.batch_fails = TRUE};
    a = jt_answerer_new(&broken);
    opt.db_path = db2;
    g_assert_true(queue_worker_run(&opt, a, &stop, &stats, &err));
    g_assert_cmpint(stats.failed, ==, 2);
    g_assert_cmpint(q(db2, "SELECT count(*) FROM jobs WHERE state = 'dead'"), ==, 2);
    g_assert_cmpint(q(db2, "SELECT count(*) FROM job_errors WHERE message LIKE '%injected%'"), ==,
                    4);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
    g_free(db2);
    g_free(dir2);
}

/* Continuous batching: while the first job takes many steps, the other slot is refilled again
 * and again; every other job is answered and completed before the slow one. */
static void test_worker_continuous_batching(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 3);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 6);
    JtAnswererConfig cfg = {.slow_first = 40, .delay_ms = 5};
    DqAnswerer *a = jt_answerer_new(&cfg);
    DqWorkerOptions opt = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    g_assert_cmpint(stats.claimed, ==, 6);
    g_assert_cmpint(stats.done, ==, 6);
    assert_answers_correct(db);
    /* The slow job finished last, though it started first; the five others finished before. */
    const char *slow = "(SELECT job_id FROM answers ORDER BY finished_at DESC LIMIT 1)";
    char *sql = g_strdup_printf("SELECT count(*) FROM answers a, answers s WHERE s.job_id = %s "
                                "AND a.job_id <> s.job_id AND a.finished_at < s.finished_at "
                                "AND a.started_at >= s.started_at",
                                slow);
    g_assert_cmpint(q(db, sql), ==, 5);
    g_free(sql);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* A batch beyond DQ_MAX_BATCH is refused (batch + lookahead once overflowed an int and the worker
 * died allocating); DQ_MAX_BATCH itself works. */
static void test_worker_batch_limit(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    JtAnswererConfig cfg = {.lookahead = 2};
    DqAnswerer *a = jt_answerer_new(&cfg);
    volatile sig_atomic_t stop = 0;
    DqWorkerStats stats;
    GError *err = NULL;
    DqWorkerOptions opt = {
        .db_path = db, .model_id = "m", .batch = G_MAXINT - 1, .until_empty = TRUE};
    g_assert_false(queue_worker_run(&opt, a, &stop, &stats, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_assert_nonnull(strstr(err->message, "batch 2147483646"));
    g_clear_error(&err);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 4);
    opt.batch = DQ_MAX_BATCH;
    g_assert_true(queue_worker_run(&opt, a, &stop, &stats, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(stats.done, ==, 4);
    assert_answers_correct(db);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* A batch of 0 or less is taken as 1, as queue.h's DqWorkerOptions says callers may leave it:
 * the answerer is told 1 and jobs go through the model one at a time (no lookahead here). A
 * worker that kept 0 held no job and, told to run until the queue is empty, waited for ever:
 * stopped after a while, it answered nothing. */
static gpointer stop_after(gpointer data) {
    volatile sig_atomic_t *stop = data;
    for (int i = 0; i < 1000 && !*stop; i++)
        g_usleep(10000);
    *stop = 1;
    return NULL;
}

static void test_worker_batch_default(void) {
    const int batches[] = {0, -5};
    for (gsize k = 0; k < G_N_ELEMENTS(batches); k++) {
        char *dir = dq_test_tmpdir();
        char *db = jt_make_db(dir, 1, 3);
        g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 3);
        JtAnswererConfig cfg = {.delay_ms = 5};
        DqAnswerer *a = jt_answerer_new(&cfg);
        DqWorkerOptions opt = {
            .db_path = db, .model_id = "m", .batch = batches[k], .until_empty = TRUE};
        volatile sig_atomic_t stop = 0;
        GThread *guard = g_thread_new("stop-after", stop_after, (gpointer)&stop);
        DqWorkerStats stats;
        GError *err = NULL;
        g_assert_true(queue_worker_run(&opt, a, &stop, &stats, &err));
        dq_assert_no_error(err);
        stop = 1;
        g_thread_join(guard);
        g_assert_cmpint(stats.done, ==, 3);
        g_assert_cmpint(a->batch, ==, 1);
        /* One at a time: no answer started before another one's end and ended after its start. */
        g_assert_cmpint(q(db,
                          "SELECT count(*) FROM answers a, answers b WHERE a.job_id <> b.job_id "
                          "AND a.started_at < b.finished_at AND b.started_at < a.finished_at"),
                        ==, 0);
        assert_answers_correct(db);
        dq_answerer_free(a);
        g_free(db);
        g_free(dir);
    }
}

typedef struct {
    DqWorkerOptions opt;
    DqAnswerer *answerer;
    volatile sig_atomic_t stop;
    DqWorkerStats stats;
    gboolean ok;
    GError *err;
} WorkerThread;

static gpointer worker_thread_may_fail(gpointer data) {
    WorkerThread *w = data;
    w->ok = queue_worker_run(&w->opt, w->answerer, &w->stop, &w->stats, &w->err);
    return NULL;
}

static gpointer worker_thread(gpointer data) {
    WorkerThread *w = data;
    GError *err = NULL;
    w->ok = queue_worker_run(&w->opt, w->answerer, &w->stop, &w->stats, &err);
    dq_assert_no_error(err);
    return NULL;
}

/* A job outlives its lease in the model (the heartbeat never comes in time, as when the database
 * is locked or unreachable for longer than a lease). The worker goes on claiming beside it: it
 * must neither take the job back itself nor answer it twice when the queue hands it back. */
static void test_worker_outlives_its_lease(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 4);
    jt_ask(db, 1, "m", 3);
    JtAnswererConfig cfg = {.slow_first = 40, .delay_ms = 5};
    WorkerThread w = {.opt = {.db_path = db,
                              .model_id = "m",
                              .batch = 2,
                              .until_empty = TRUE,
                              .lease_ms = 60,
                              .heartbeat_ms = 600000,
                              .poll_ms = 5},
                      .answerer = jt_answerer_new(&cfg)};
    worker_thread(&w);
    g_assert_true(w.ok);
    g_assert_cmpint(w.stats.done, ==, 4);
    g_assert_cmpint(jt_answerer_submitted(w.answerer), ==, 4);
    g_assert_cmpint(q(db, "SELECT max(attempts) FROM jobs"), ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors"), ==, 0);
    assert_answers_correct(db);
    dq_answerer_free(w.answerer);
    g_free(db);
    g_free(dir);

    /* Now another worker takes the slow job over and gives it back: the queue hands it to the
     * first worker, which still has it in its model. The slow job stays there until the scene
     * is set: a fixed second in the model ran out first on a loaded machine. */
    dir = dq_test_tmpdir();
    db = jt_make_db(dir, 1, 4);
    jt_ask(db, 1, "m", 3);
    cfg.slow_first = G_MAXINT; /* until jt_answerer_hurry */
    w = (WorkerThread){.opt = w.opt, .answerer = jt_answerer_new(&cfg)};
    w.opt.db_path = db;
    GThread *t = g_thread_new("worker", worker_thread, &w);
    while (q(db, "SELECT count(*) FROM jobs WHERE state = 'done'") < 3)
        g_usleep(2000);
    /* the slow job's lease has run out (nothing renews it) */
    while (q(db, "SELECT count(*) FROM jobs WHERE state = 'running' AND lease_expires_ms < "
                 "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)") == 0)
        g_usleep(2000);
    DqStore *s = open_store(db);
    GError *err = NULL;
    GPtrArray *b = store_jobs_claim(s, "B", "m", 10, g_get_real_time() / 1000, 60000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(b->len, ==, 1);
    g_assert_true(store_jobs_release(s, "B", NULL, &err));
    while (q(db, "SELECT count(*) FROM jobs WHERE state = 'queued'") > 0)
        g_usleep(2000);
    jt_answerer_hurry(w.answerer);
    g_thread_join(t);
    g_assert_true(w.ok);
    g_assert_cmpint(jt_answerer_submitted(w.answerer), ==, 4);
    g_assert_cmpint(w.stats.done, ==, 4);
    g_assert_cmpint(w.stats.lost, ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 4);
    assert_answers_correct(db);
    g_ptr_array_free(b, TRUE);
    close_store(s);
    dq_answerer_free(w.answerer);
    g_free(db);
    g_free(dir);
}

typedef struct {
    const char *db;
    const char *moved; /* moved over db; NULL: db deleted */
    gboolean acted;
} Swap;

/* At the worker's first completion, in its thread: the file goes while the worker runs, with
 * jobs left for it (done after a job was seen done, from this thread, the worker could have
 * answered all eight first on a loaded machine). */
static void swap_after_first_answer(const char *point, void *user) {
    Swap *sw = user;
    if (strcmp(point, "worker:after_complete") != 0 || sw->acted)
        return;
    sw->acted = TRUE;
    if (sw->moved != NULL)
        g_assert_cmpint(g_rename(sw->moved, sw->db), ==, 0);
    else
        g_assert_cmpint(g_unlink(sw->db), ==, 0);
}

/* The database file deleted, or replaced by another, under a running worker: it stops, saying
 * so, rather than write answers into a file nobody will read. */
static void test_worker_database_replaced(void) {
    for (int replace = 0; replace < 2; replace++) {
        char *dir = dq_test_tmpdir();
        char *db = jt_make_db(dir, 1, 4);
        jt_ask(db, 2, "m", 3);
        char *other_dir = NULL, *other_db = NULL, *moved = NULL;
        if (replace) {
            /* Another docqa database, to be moved over it. */
            other_dir = dq_test_tmpdir();
            other_db = jt_make_db(other_dir, 1, 1);
            moved = g_strconcat(db, ".other", NULL);
            char *bytes = NULL;
            gsize len = 0;
            g_assert_true(g_file_get_contents(other_db, &bytes, &len, NULL));
            g_assert_true(g_file_set_contents(moved, bytes, (gssize)len, NULL));
            g_free(bytes);
        }
        Swap sw = {.db = db, .moved = moved};
        queue_test_set_callback(swap_after_first_answer, &sw);
        JtAnswererConfig cfg = {.delay_ms = 50};
        WorkerThread w = {
            .opt = {.db_path = db, .model_id = "m", .batch = 1, .until_empty = TRUE, .poll_ms = 5},
            .answerer = jt_answerer_new(&cfg)};
        worker_thread_may_fail(&w);
        queue_test_set_callback(NULL, NULL);
        queue_test_hooks_install();
        g_assert_true(sw.acted);
        g_assert_false(w.ok);
        g_assert_error(w.err, DQ_ERROR, DQ_ERR_DB);
        g_assert_nonnull(strstr(w.err->message, replace ? "was replaced" : "was deleted"));
        g_assert_cmpint(w.stats.done, <, 8);
        if (replace) {
            /* The old database's -wal was not replayed into the new one. */
            g_assert_cmpint(q(db, "SELECT count(*) FROM jobs"), ==, 0);
            g_assert_cmpint(q(db, "SELECT count(*) FROM pragma_integrity_check WHERE "
                                  "integrity_check <> 'ok'"),
                            ==, 0);
            g_free(moved);
            g_free(other_db);
            g_free(other_dir);
        }
        g_clear_error(&w.err);
        dq_answerer_free(w.answerer);
        g_free(db);
        g_free(dir);
    }
}

static void test_run_max_jobs(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 5);
    jt_ask(db, 1, "m", 3);
    DqRunOptions ro = {.worker = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE},
                       .n_workers = 3,
                       .max_jobs = 5};
    DqRunResult res;
    GError *err = NULL;
    int code = queue_run(&ro, jt_open_answerer, NULL, &res, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(code, ==, 0);
    g_assert_cmpint(res.total.done, ==, 5);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers"), ==, 5);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 5);
    /* The rest, to the end. */
    ro.max_jobs = 0;
    code = queue_run(&ro, jt_open_answerer, NULL, &res, &err);
    g_assert_cmpint(code, ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 10);
    assert_answers_correct(db);
    g_free(db);
    g_free(dir);
}

static void callers_handler(int sig) {
    (void)sig;
}

/* run sets its own handlers for SIGINT, SIGTERM and SIGHUP while its workers run, and gives
 * back its caller's when it returns, flags and all. */
static void test_run_restores_handlers(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    jt_ask(db, 1, "m", 3);
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction mine, saved[G_N_ELEMENTS(sigs)];
    memset(&mine, 0, sizeof mine);
    mine.sa_handler = callers_handler;
    mine.sa_flags = SA_RESTART;
    sigemptyset(&mine.sa_mask);
    for (guint i = 0; i < G_N_ELEMENTS(sigs); i++)
        g_assert_cmpint(sigaction(sigs[i], &mine, &saved[i]), ==, 0);
    DqRunOptions ro = {.worker = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE},
                       .n_workers = 1};
    DqRunResult res;
    GError *err = NULL;
    int code = queue_run(&ro, jt_open_answerer, NULL, &res, &err);
    struct sigaction now[G_N_ELEMENTS(sigs)];
    for (guint i = 0; i < G_N_ELEMENTS(sigs); i++)
        g_assert_cmpint(sigaction(sigs[i], &saved[i], &now[i]), ==, 0);
    dq_assert_no_error(err);
    g_assert_cmpint(code, ==, 0);
    g_assert_cmpint(res.total.done, ==, 2);
    for (guint i = 0; i < G_N_ELEMENTS(sigs); i++) {
        g_assert_true(now[i].sa_handler == callers_handler);
        g_assert_cmpint(now[i].sa_flags & SA_RESTART, ==, SA_RESTART);
    }
    g_free(db);
    g_free(dir);
}

/* For test_run_one_worker_cannot_start: worker 2 of 3 has no model. */
static DqAnswerer *open_all_but_second(void *user, int index, GError **err) {
    if (index == 1) {
        dq_fail(err, DQ_ERR_MODEL, "worker %d: the model is not there", index + 1);
        return NULL;
    }
    return jt_answerer_new(user);
}

/* One worker of three that cannot start fails the run (exit 2) with its own error, said as in
 * some workers only; the other two answer every job. */
static void test_run_one_worker_cannot_start(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 3);
    jt_ask(db, 1, "m", 3);
    DqRunOptions ro = {.worker = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE},
                       .n_workers = 3};
    DqRunResult res;
    GError *err = NULL;
    int code = queue_run(&ro, open_all_but_second, NULL, &res, &err);
    g_assert_cmpint(code, ==, 2);
    g_assert_error(err, DQ_ERROR, DQ_ERR_MODEL);
    g_assert_cmpstr(err->message, ==,
                    "worker 2: the model is not there (in some workers; the others went on)");
    g_clear_error(&err);
    g_assert_cmpint(res.total.done, ==, 6);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 6);
    g_free(db);
    g_free(dir);
}

/* Jobs stay in flight for three leases' time, in the model or waiting beyond it (lookahead):
 * only the heartbeat keeps other workers off them. */
static void test_heartbeat_keeps_leases(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 4);
    jt_ask(db, 1, "m", 3);
    JtAnswererConfig cfg = {.delay_ms = 400, .lookahead = 2};
    DqRunOptions ro = {.worker = {.db_path = db,
                                  .model_id = "m",
                                  .batch = 4,
                                  .until_empty = TRUE,
                                  .lease_ms = 600,
                                  .heartbeat_ms = 50,
                                  .poll_ms = 10},
                       .n_workers = 2};
    DqRunResult res;
    GError *err = NULL;
    g_assert_cmpint(queue_run(&ro, jt_open_answerer, &cfg, &res, &err), ==, 0);
    dq_assert_no_error(err);
    g_assert_cmpint(res.total.done, ==, 8);
    g_assert_cmpint(res.total.lost, ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors"), ==, 0);
    g_assert_cmpint(q(db, "SELECT max(attempts) FROM jobs"), ==, 1);
    g_free(db);
    g_free(dir);
}

/* A worker elsewhere died holding a job on its last attempt; this run's claim finds its lease
 * expired and buries the job: one input failed during the run, so run says so (exit 1). */
static void test_run_counts_buried_jobs(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 4);
    jt_ask(db, 1, "m", 1);
    DqStore *s = open_store(db);
    GError *err = NULL;
    GPtrArray *gone =
        store_jobs_claim(s, "gone", "m", 1, g_get_real_time() / 1000 - 10000, 1000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(gone->len, ==, 1);
    g_ptr_array_free(gone, TRUE);
    close_store(s);
    DqRunOptions ro = {.worker = {.db_path = db, .model_id = "m", .batch = 2, .until_empty = TRUE},
                       .n_workers = 2};
    DqRunResult res;
    int code = queue_run(&ro, jt_open_answerer, NULL, &res, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'dead'"), ==, 1);
    g_assert_cmpint(res.total.done, ==, 3);
    g_assert_cmpint(res.total.failed, ==, 1);
    g_assert_cmpint(res.total.buried, ==, 1);
    g_assert_cmpint(code, ==, 1);
    g_free(db);
    g_free(dir);
}

/* The worker holding a job on its last attempt is slow to renew its lease (here it never does:
 * its heartbeat comes once a minute), the other worker's claim buries the job, then the slow
 * worker's answer comes and is kept (nobody else holds or answered the job). The job is done,
 * with its answer in v_answers: the run counts it answered, not also failed, and exits 0. */
static void test_run_buried_then_answered(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "m", 1), ==, 1);
    DqRunResult res;
    int code = jt_run_buried_then_answered(db, &res);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'lease_expired'"), ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM v_answers"), ==, 1);
    assert_answers_correct(db);
    g_assert_cmpint(res.total.done, ==, 1);
    g_assert_cmpint(res.total.failed, ==, 0);
    g_assert_cmpint(res.total.buried, ==, 0);
    g_assert_cmpint(res.buried_answered, ==, 1);
    g_assert_cmpint(code, ==, 0);
    g_free(db);
    g_free(dir);
}

/* A run of two workers on db in a child process (short leases, frequent heartbeats), each job
 * taking delay_ms to answer; then, once a job is running, a third connection takes the write
 * lock `times` times, each for hold_us after a 200 ms pause. Returns the run's exit status once
 * it has ended: 0 when every job was answered. */
static int run_while_locked(const char *db, int delay_ms, int times, gulong hold_us) {
    fflush(NULL);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        JtAnswererConfig cfg = {.delay_ms = delay_ms};
        DqRunOptions ro = {.worker = {.db_path = db,
                                      .model_id = "m",
                                      .batch = 1,
                                      .until_empty = TRUE,
                                      .lease_ms = 800,
                                      .heartbeat_ms = 200,
                                      .poll_ms = 20},
                           .n_workers = 2};
        DqRunResult res;
        int code = queue_run(&ro, jt_open_answerer, &cfg, &res, NULL);
        _exit(code);
    }
    gint64 give_up = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    while (q(db, "SELECT count(*) FROM jobs WHERE state = 'running'") == 0 &&
           g_get_monotonic_time() < give_up)
        g_usleep(20000);
    sqlite3 *c = NULL;
    g_assert_cmpint(sqlite3_open(db, &c), ==, SQLITE_OK);
    sqlite3_busy_timeout(c, 10000);
    for (int i = 0; i < times; i++) {
        g_usleep(200000);
        g_assert_cmpint(sqlite3_exec(c, "BEGIN IMMEDIATE", NULL, NULL, NULL), ==, SQLITE_OK);
        g_usleep(hold_us);
        g_assert_cmpint(sqlite3_exec(c, "COMMIT", NULL, NULL, NULL), ==, SQLITE_OK);
    }
    sqlite3_close(c);
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Two workers, one holding a job, the other idle and claiming; a third connection (a user's
 * long write, a big ingest) holds the write lock for longer than a lease, several times. Both
 * workers wait on it; when it ends, the idle one's claim may get the lock before the holder's
 * heartbeat, and finds the holder's lease expired. The holder was alive, only waiting as it was:
 * the job keeps its lease and its attempt, and is answered once. */
static void test_run_locked_database_spends_no_attempt(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 1);
    int code = run_while_locked(db, 9000, 4, 1800000); /* over two leases each time */
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors"), ==, 0);
    g_assert_cmpint(q(db, "SELECT max(attempts) FROM jobs"), ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 1);
    g_assert_cmpint(code, ==, 0);
    assert_answers_correct(db);
    g_free(db);
    g_free(dir);
}

/* The write lock held past the busy limit (a user's sqlite3 shell left in a transaction; the
 * limit cut to 300 ms here): the workers say they are waiting and wait on, as for a lost
 * server, rather than stopping with their jobs; every job is answered once, no attempt spent.
 * In a subprocess: the limit is read once a process. */
static void test_run_locked_past_busy_limit(void) {
    if (!g_test_subprocess()) {
        g_setenv("DOCQA_TEST_BUSY_LIMIT_MS", "300", TRUE);
        g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_unsetenv("DOCQA_TEST_BUSY_LIMIT_MS");
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr("*database is locked (another connection held its write lock "
                                  "for 0 s*; waiting*");
        return;
    }
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 4);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 4);
    int code = run_while_locked(db, 300, 1, 2500000); /* eight busy limits, three leases */
    g_assert_cmpint(code, ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors"), ==, 0);
    g_assert_cmpint(q(db, "SELECT max(attempts) FROM jobs"), ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 4);
    assert_answers_correct(db);
    g_free(db);
    g_free(dir);
}

/* ... and one held for good (a shell left in a transaction over the night): the worker gives up
 * once the database has been locked for ten busy limits (10 minutes; 2 s here, the limit cut to
 * 200 ms), exit 2 with what it waited for, having claimed nothing. In a subprocess: the limit
 * is read once a process. */
static void test_worker_gives_up_on_lock_held_for_good(void) {
    if (!g_test_subprocess()) {
        g_setenv("DOCQA_TEST_BUSY_LIMIT_MS", "200", TRUE);
        g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_unsetenv("DOCQA_TEST_BUSY_LIMIT_MS");
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr("*database is locked*; waiting*");
        return;
    }
    g_assert_cmpint(dq_store_outage_limit_ms(), ==, 2000);
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 2);
    sqlite3 *holder = NULL;
    g_assert_cmpint(sqlite3_open(db, &holder), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), ==, SQLITE_OK);
    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {.db_path = db, .model_id = "m", .batch = 1, .until_empty = TRUE};
    DqWorkerStats stats;
    GError *err = NULL;
    volatile sig_atomic_t stop = 0;
    gint64 t0 = g_get_monotonic_time();
    g_assert_false(queue_worker_run(&opt, a, &stop, &stats, &err));
    gint64 waited_ms = (g_get_monotonic_time() - t0) / 1000;
    g_assert_nonnull(err);
    g_test_message("after %" G_GINT64_FORMAT " ms: %s", waited_ms, err->message);
    g_assert_true(g_str_has_prefix(err->message, "gave up after "));
    g_assert_nonnull(strstr(err->message, " more s waiting for the write lock: "));
    g_assert_cmpint(waited_ms, >=, 2000);
    g_clear_error(&err);
    g_assert_cmpint(stats.claimed, ==, 0);
    g_assert_cmpint(sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(holder);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0"), ==,
                    2);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* ---- a broken device (answerer.h, worker.c "a broken device") ---- */

#define DEVICE_ERROR "cuda:0: a decode step failed: out of memory (injected by the hash answerer)"

/* A device that fails for good stops its worker at once instead of failing the queue: the two
 * requests in the model when it broke spend their attempt (retried), the two it held beyond them
 * go back without spending one, nothing more is claimed, and stderr says which device failed and
 * why. Before, the worker went on claiming, and every job failed with the device's error. */
static void test_worker_device_failed(void) {
    if (!g_test_subprocess()) {
        g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr("*docqa: worker *: device cuda:0 failed and cannot recover in "
                                  "this process: " DEVICE_ERROR "; the worker stops*");
        return;
    }
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 4);
    g_assert_cmpint(jt_ask(db, 3, "m", 3), ==, 12);
    DqAnswerer *a =
        jt_answerer_new(&(JtAnswererConfig){.device_question = "question 2", .lookahead = 2});
    DqWorkerOptions opt = {
        .db_path = db, .model_id = "m", .batch = 2, .backoff_ms = 1, .until_empty = TRUE};
    DqWorkerStats stats;
    GError *err = NULL;
    volatile sig_atomic_t stop = 0;
    g_assert_false(queue_worker_run(&opt, a, &stop, &stats, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DEVICE);
    g_assert_cmpstr(err->message, ==, DEVICE_ERROR);
    g_clear_error(&err);
    g_assert_cmpint(stats.device_failed, ==, 1);
    /* In the model when it broke: failed, back in the queue with the attempt spent. */
    g_assert_cmpint(stats.retried, ==, 2);
    g_assert_cmpint(stats.failed, ==, 0);
    g_assert_cmpint(
        q(db,
          "SELECT count(*) FROM job_errors WHERE kind = 'model' AND message = '" DEVICE_ERROR "'"),
        ==, 2);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 1 AND "
                          "id IN (SELECT job_id FROM job_errors)"),
                    ==, 2);
    /* Held beyond the model (the lookahead): given back, no attempt spent, no error. */
    g_assert_cmpint(stats.released, ==, 2);
    g_assert_cmpint(stats.claimed, ==, stats.done + 4);
    g_assert_cmpint(jt_answerer_submitted(a), ==, stats.claimed);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'running'"), ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, stats.done);
    /* The released ones and those never claimed: queued, untouched. */
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0 AND "
                          "lease_owner IS NULL AND id NOT IN (SELECT job_id FROM job_errors)"),
                    ==, 12 - stats.done - 2);
    assert_answers_correct(db);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* `docqa run`: a worker whose device failed is replaced by a fresh process (a fresh CUDA
 * context), at most DQ_RUN_DEVICE_RESTARTS times. A job that breaks every device it meets spends
 * an attempt each time and ends dead (it does not loop); the others are answered, uncharged. */
static void test_run_device_failed_restarts(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 4, "m", 2), ==, 4);
    JtAnswererConfig cfg = {.device_question = "question 2"};
    DqRunOptions ro = {.worker = {.db_path = db,
                                  .model_id = "m",
                                  .batch = 1,
                                  .backoff_ms = 1,
                                  .until_empty = TRUE},
                       .n_workers = 1};
    DqRunResult res;
    GError *err = NULL;
    int code = queue_run(&ro, jt_open_answerer, &cfg, &res, &err);
    g_assert_no_error(err);
    g_assert_cmpint(code, ==, 1); /* one job dead */
    g_assert_cmpint(res.device_failures, ==, 2);
    g_assert_cmpint(res.device_restarts, ==, 2);
    g_assert_cmpint(res.total.device_failed, ==, 2);
    g_assert_cmpint(res.total.done, ==, 3);
    g_assert_cmpint(res.total.failed, ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs j JOIN questions q ON q.id = j.question_id "
                          "WHERE q.text = 'question 2' AND j.state = 'dead' AND j.attempts = 2"),
                    ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done' AND attempts = 1"), ==,
                    3);
    char *summary = queue_run_summary(&res, 1.0);
    g_assert_nonnull(strstr(summary, ", 2 workers stopped by a failed device (2 replaced)"));
    g_free(summary);
    assert_answers_correct(db);
    g_free(db);
    g_free(dir);
}

/* ... and one that fails once more is not replaced: the run exits 2 with the device's error,
 * saying so on stderr; the jobs are back in the queue, none dead. */
static void test_run_device_failed_gives_up(void) {
    if (!g_test_subprocess()) {
        g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr(
            "*docqa: worker 1 stopped: its device failed (" DEVICE_ERROR "); its jobs went back "
            "to the queue; starting a fresh worker process in its place*docqa: worker 1 stopped: "
            "its device failed (" DEVICE_ERROR "); its jobs went back to the queue; not "
            "replaced: it failed too often*");
        return;
    }
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 4, "m", 9), ==, 4);
    JtAnswererConfig cfg = {.device_question = "question 2"};
    DqRunOptions ro = {.worker = {.db_path = db,
                                  .model_id = "m",
                                  .batch = 1,
                                  .backoff_ms = 1,
                                  .until_empty = TRUE},
                       .n_workers = 1};
    DqRunResult res;
    GError *err = NULL;
    int code = queue_run(&ro, jt_open_answerer, &cfg, &res, &err);
    g_assert_cmpint(code, ==, 2);
    g_assert_error(err, DQ_ERROR, DQ_ERR_DEVICE);
    g_assert_cmpstr(err->message, ==, DEVICE_ERROR);
    g_clear_error(&err);
    g_assert_cmpint(res.device_failures, ==, DQ_RUN_DEVICE_RESTARTS + 1);
    g_assert_cmpint(res.device_restarts, ==, DQ_RUN_DEVICE_RESTARTS);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs j JOIN questions q ON q.id = j.question_id "
                          "WHERE q.text = 'question 2' AND j.state = 'queued' AND j.attempts = 3"),
                    ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state IN ('running', 'dead', 'failed')"),
                    ==, 0);
    char *summary = queue_run_summary(&res, 1.0);
    g_assert_nonnull(strstr(summary, ", 3 workers stopped by a failed device (2 replaced)"));
    g_free(summary);
    g_free(db);
    g_free(dir);
}

/* A run of one worker over two jobs (run_device_child: this test program again), held at
 * pause_at and sent SIGTERM there; its jobs break the device unless `answers`. */
typedef struct {
    char *dir, *db, *out, *errout;
    int status;
} HeldRun;

static HeldRun held_run(const char *pause_at, gboolean answers) {
    HeldRun r = {.dir = dq_test_tmpdir()};
    r.db = jt_make_db(r.dir, 1, 1);
    g_assert_cmpint(jt_ask(r.db, 2, "m", 9), ==, 2);
    char *self = g_file_read_link("/proc/self/exe", NULL);
    g_assert_nonnull(self);
    const char *argv[] = {self, "-q", "-p", "/queue/run/device-stop-child", NULL};
    char *db_env = g_strconcat("JT_DEVICE_STOP_DB=", r.db, NULL);
    const char *env[] = {db_env, answers ? "JT_RUN_CHILD_ANSWERS=1" : NULL, NULL};
    r.status = dq_test_run_signalled(argv, env, pause_at, SIGTERM, &r.out, &r.errout);
    g_test_message("%s\n%s", r.out, r.errout);
    g_free(db_env);
    g_free(self);
    return r;
}

static void held_run_clear(HeldRun *r) {
    g_free(r->out);
    g_free(r->errout);
    g_free(r->db);
    g_free(r->dir);
}

/* A device that fails while `docqa run` is being stopped: the run is interrupted (130) whichever
 * came first, says the failure on stderr and counts it alike, and starts no fresh worker. Each
 * order is forced by holding a process at a named point (common/test_point.h): the worker just
 * after its claim, before the broken request is polled (the stop first: the worker reported 130
 * and its device failure went uncounted), or the run as it has reaped the worker whose device
 * failed (the failure first: a stop that came after the loop's last check was never forwarded,
 * and a run with one worker ended 0). The run is this test program again, in run_device_child. */
static void run_device_stopped(const char *pause_at) {
    HeldRun r = held_run(pause_at, FALSE);
    g_assert_true(WIFEXITED(r.status));
    g_assert_cmpint(WEXITSTATUS(r.status), ==, 130);
    g_assert_nonnull(strstr(r.out, "device failures 1, replaced 0, interrupted 1"));
    g_assert_nonnull(strstr(r.errout, "docqa: worker 1 stopped: its device failed (" DEVICE_ERROR
                                      "); its jobs went back to the queue; not replaced "
                                      "(interrupted)"));
    g_assert_null(strstr(r.errout, "starting a fresh worker"));
    /* the job in the model spent its attempt, the other is back untouched; none held */
    g_assert_cmpint(q(r.db, "SELECT count(*) FROM jobs WHERE state = 'running'"), ==, 0);
    g_assert_cmpint(q(r.db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 2);
    g_assert_cmpint(q(r.db, "SELECT sum(attempts) FROM jobs"), ==, 1);
    held_run_clear(&r);
}

static void test_run_device_failed_after_stop(void) {
    run_device_stopped("worker:claimed");
}

static void test_run_stopped_after_device_failed(void) {
    run_device_stopped("run:device_failed");
}

/* A stop that comes once every worker has ended finds none to forward it to: the run was still
 * told to stop (130, said in its result), and every job stays answered. */
static void test_run_stopped_after_workers_ended(void) {
    HeldRun r = held_run("run:workers_ended", TRUE);
    g_assert_true(WIFEXITED(r.status));
    g_assert_cmpint(WEXITSTATUS(r.status), ==, 130);
    g_assert_nonnull(strstr(r.out, "device failures 0, replaced 0, interrupted 1"));
    g_assert_cmpint(q(r.db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 2);
    held_run_clear(&r);
}

/* The run that run_device_stopped holds and stops: every job breaks the device (or, with
 * JT_RUN_CHILD_ANSWERS, every job is answered). */
static void run_device_child(void) {
    JtAnswererConfig cfg = {.device_question =
                                g_getenv("JT_RUN_CHILD_ANSWERS") != NULL ? NULL : "question"};
    DqRunOptions ro = {.worker = {.db_path = g_getenv("JT_DEVICE_STOP_DB"),
                                  .model_id = "m",
                                  .batch = 1,
                                  .backoff_ms = 1,
                                  .until_empty = TRUE},
                       .n_workers = 1};
    DqRunResult res;
    GError *err = NULL;
    int code = queue_run(&ro, jt_open_answerer, &cfg, &res, &err);
    printf("device failures %d, replaced %d, interrupted %d\n", res.device_failures,
           res.device_restarts, res.interrupted);
    fflush(stdout);
    _exit(code);
}

static DqAnswerer *open_failing(void *user, int index, GError **err) {
    (void)index;
    dq_fail(err, DQ_ERR_MODEL, "/models/x: config.json missing");
    return NULL;
}

static void test_run_reports_unusable_model(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    jt_ask(db, 1, "m", 3);
    DqRunOptions ro = {.worker = {.db_path = db, .model_id = "m", .until_empty = TRUE},
                       .n_workers = 2};
    DqRunResult res;
    GError *err = NULL;
    g_assert_cmpint(queue_run(&ro, open_failing, NULL, &res, &err), ==, 2);
    g_assert_error(err, DQ_ERROR, DQ_ERR_MODEL);
    g_assert_nonnull(strstr(err->message, "config.json"));
    g_clear_error(&err);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0"), ==,
                    1);
    g_free(db);
    g_free(dir);
}

/* SIGTERM: workers finish or release their batch and the run exits 130; nothing stays leased. */
static void test_run_sigterm(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 4, 5);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 40);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        JtAnswererConfig cfg = {.delay_ms = 60};
        DqRunOptions ro = {
            .worker = {.db_path = db, .model_id = "m", .batch = 3, .until_empty = TRUE},
            .n_workers = 2};
        DqRunResult res;
        int code = queue_run(&ro, jt_open_answerer, &cfg, &res, NULL);
        _exit(code);
    }
    /* Interrupt once work is under way (however slow this machine is to start). */
    gint64 give_up = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    while (q(db, "SELECT count(*) FROM jobs WHERE state = 'done'") == 0 &&
           g_get_monotonic_time() < give_up)
        g_usleep(20000);
    kill(pid, SIGTERM);
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 130);
    gint64 done = q(db, "SELECT count(*) FROM jobs WHERE state = 'done'");
    g_assert_cmpint(done, >, 0);
    g_assert_cmpint(done, <, 40);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'running'"), ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0"), ==,
                    40 - done);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers"), ==, done);
    assert_answers_correct(db);
    g_free(db);
    g_free(dir);
}

/* ---- jobs withdrawn while they run ----
 *
 * A scene: at one named point of a worker's life (queue_test_set_callback) the test acts once
 * (cancels the job, takes it over as another worker would) and then waits there for two of the
 * worker's heartbeats, so that the heartbeat has looked at the job since; what the worker does
 * next is then the same on every run, however fast this machine is. */

typedef struct Scene Scene;
struct Scene {
    const char *db;
    const char *act_at;
    void (*act)(Scene *sc);
    /* Once the worker is done with the job (withdrawn, or completed), may be NULL. */
    void (*then)(Scene *sc);
    gint64 document_id, job_id;
    gboolean acted, then_done;
    GMutex lock;
    GCond cond;
    int beats;
};

static void scene_callback(const char *point, void *user) {
    Scene *sc = user;
    if (strcmp(point, "heartbeat:beat") == 0) {
        g_mutex_lock(&sc->lock);
        sc->beats++;
        g_cond_broadcast(&sc->cond);
        g_mutex_unlock(&sc->lock);
    } else if (strcmp(point, sc->act_at) == 0 && !sc->acted) {
        sc->acted = TRUE;
        sc->act(sc);
        g_mutex_lock(&sc->lock);
        /* The first may have begun before the act: the second began after it. */
        for (int until = sc->beats + 2; sc->beats < until;)
            g_cond_wait(&sc->cond, &sc->lock);
        g_mutex_unlock(&sc->lock);
    } else if ((strcmp(point, "worker:withdrawn") == 0 ||
                strcmp(point, "worker:after_complete") == 0) &&
               sc->then != NULL && !sc->then_done) {
        sc->then_done = TRUE;
        sc->then(sc);
    }
}

static void scene_begin(Scene *sc) {
    g_mutex_init(&sc->lock);
    g_cond_init(&sc->cond);
    queue_test_set_callback(scene_callback, sc);
}

static void scene_end(Scene *sc) {
    queue_test_set_callback(NULL, NULL);
    queue_test_hooks_install();
    g_mutex_clear(&sc->lock);
    g_cond_clear(&sc->cond);
}

/* docqa cancel --document ID --state running, as the command does it. */
static void cancel_running(Scene *sc) {
    DqStore *s = open_store(sc->db);
    GError *err = NULL;
    DqJobFilter running = {.document_ids = &sc->document_id,
                           .n_document_ids = 1,
                           .documents_given = TRUE,
                           .states = 1u << DQ_JOB_RUNNING};
    GPtrArray *g = store_jobs_cancel(s, &running, FALSE, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g->len, ==, 1);
    g_assert_cmpint(((DqJobGroup *)g_ptr_array_index(g, 0))->jobs, ==, 1);
    g_ptr_array_free(g, TRUE);
    close_store(s);
}

/* A job whose first request stays in the model for a million steps is cancelled there; the
 * heartbeat tells its worker, which drops it from the model, stores nothing for it and counts
 * it withdrawn; the other job is answered; `run` says so. Without the withdrawal the job would
 * be finished and its answer kept, as a late one. */
static void test_run_cancelled_while_running(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 1);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 2);
    Scene sc = {.db = db, .act_at = "answerer:inference", .act = cancel_running, .document_id = 1};
    scene_begin(&sc);
    JtAnswererConfig cfg = {.slow_first = 1000000};
    DqRunOptions ro = {.worker = {.db_path = db,
                                  .model_id = "m",
                                  .batch = 2,
                                  .until_empty = TRUE,
                                  .heartbeat_ms = 10},
                       .n_workers = 1};
    DqRunResult res;
    GError *err = NULL;
    int code = queue_run(&ro, jt_open_answerer, &cfg, &res, &err);
    dq_assert_no_error(err);
    scene_end(&sc); /* it acted in the worker process: the counts below say what it did */
    g_assert_cmpint(code, ==, 0);
    g_assert_cmpint(res.workers_crashed, ==, 0);
    g_assert_cmpint(res.total.withdrawn, ==, 1);
    g_assert_cmpint(res.total.done, ==, 1);
    g_assert_cmpint(res.total.failed + res.total.lost + res.total.released, ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs j JOIN pages p ON p.id = j.page_id WHERE "
                          "p.document_id = 1 AND j.state = 'cancelled'"),
                    ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers a JOIN jobs j ON j.id = a.job_id JOIN "
                          "pages p ON p.id = j.page_id WHERE p.document_id = 1"),
                    ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors"), ==, 0);
    assert_answers_correct(db);
    char *line = queue_run_summary(&res, 2.0);
    g_test_message("%s", line);
    g_assert_cmpstr(line, ==,
                    "run: 1 answered, 0 failed, 0 retried, 0 given back, 1 withdrawn (cancelled or "
                    "taken over while running) in 2.0 s (0.50 answers/s)");
    g_free(line);
    g_free(db);
    g_free(dir);
}

/* The race: the job is cancelled just as its answer is ready, before its worker has acted on
 * the heartbeat that saw the cancel. The answer wins: it is stored and the job is done
 * (store_jobs_complete keeps a late answer to a job nobody holds nor answered, a cancelled one
 * included), since it is computed by then; the worker withdraws nothing. */
static void test_worker_cancelled_as_it_finishes(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 1);
    Scene sc = {
        .db = db, .act_at = "worker:before_complete", .act = cancel_running, .document_id = 1};
    scene_begin(&sc);
    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {
        .db_path = db, .model_id = "m", .batch = 1, .until_empty = TRUE, .heartbeat_ms = 10};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    scene_end(&sc);
    g_assert_true(sc.acted);
    g_assert_cmpint(stats.done, ==, 1);
    g_assert_cmpint(stats.withdrawn, ==, 0);
    g_assert_cmpint(jt_answerer_withdrawn(a), ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM v_answers"), ==, 1);
    assert_answers_correct(db);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* Another worker's claim, made as if a lease later (this worker seemed dead), takes the job
 * over while it is still in this worker's model: this worker drops it rather than compute an
 * answer nobody would store; the other answers it. */
static void take_over(Scene *sc) {
    DqStore *s = open_store(sc->db);
    GError *err = NULL;
    GPtrArray *b = store_jobs_claim(s, "B", "m", 1, dq_wall_ms() + 600000, 60000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(b->len, ==, 1);
    sc->job_id = ((DqClaimedJob *)g_ptr_array_index(b, 0))->job_id;
    g_ptr_array_free(b, TRUE);
    close_store(s);
}

static void b_answers(Scene *sc) {
    DqStore *s = open_store(sc->db);
    GError *err = NULL;
    DqJobAnswer ans = {.job_id = sc->job_id,
                       .text = "B's answer",
                       .started_at = "2026-01-01T00:00:00.000Z",
                       .finished_at = "2026-01-01T00:00:01.000Z",
                       .exact = -1};
    int written = 0;
    g_assert_true(store_jobs_complete(s, "B", &ans, 1, &written, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(written, ==, 1);
    close_store(s);
}

static void test_worker_taken_over_while_running(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 1);
    Scene sc = {.db = db, .act_at = "answerer:inference", .act = take_over, .then = b_answers};
    scene_begin(&sc);
    JtAnswererConfig cfg = {.slow_first = 1000000};
    DqAnswerer *a = jt_answerer_new(&cfg);
    DqWorkerOptions opt = {
        .db_path = db, .model_id = "m", .batch = 1, .until_empty = TRUE, .heartbeat_ms = 10};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    scene_end(&sc);
    g_assert_true(sc.acted);
    g_assert_cmpint(stats.withdrawn, ==, 1);
    g_assert_cmpint(jt_answerer_withdrawn(a), ==, 1);
    g_assert_cmpint(stats.done + stats.lost + stats.failed, ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers WHERE text = 'B''s answer' AND worker = "
                          "'B'"),
                    ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers"), ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM job_errors WHERE kind = 'lease_expired'"), ==, 1);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

static void take_over_and_answer(Scene *sc) {
    take_over(sc);
    b_answers(sc);
}

/* Taken over and answered by another worker just as this one had its answer: nothing of this
 * one's is written, and it says so (its answer counted lost, not done). */
static void test_worker_answer_lost(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 1);
    Scene sc = {.db = db, .act_at = "worker:before_complete", .act = take_over_and_answer};
    scene_begin(&sc);
    DqAnswerer *a = jt_answerer_new(NULL);
    DqWorkerOptions opt = {
        .db_path = db, .model_id = "m", .batch = 1, .until_empty = TRUE, .heartbeat_ms = 10};
    DqWorkerStats stats = jt_worker_run(&opt, a);
    scene_end(&sc);
    g_assert_true(sc.acted);
    g_assert_cmpint(stats.claimed, ==, 1);
    g_assert_cmpint(stats.lost, ==, 1);
    g_assert_cmpint(stats.done + stats.failed + stats.withdrawn, ==, 0);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers WHERE worker = 'B'"), ==, 1);
    g_assert_cmpint(q(db, "SELECT count(*) FROM answers"), ==, 1);
    dq_answerer_free(a);
    g_free(db);
    g_free(dir);
}

/* ask says which n_res the renderings it left out were made at: a rendering whose settings name
 * none (edited by hand) adds no value to that list (its 0 shifted by n - 1 would set bit 63:
 * "n_res 64"). */
static void test_ask_other_rendering_n_res(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    /* a newer rendering of both pages (higher ids: the one asked), the first left without n_res */
    exec_by_hand(db, "INSERT INTO pages (document_id, page_number, width, height, "
                     "render_settings, image_sha256, status) SELECT document_id, page_number, "
                     "width, height, replace(render_settings, '\"n_res\":4', '\"n_res\":5'), "
                     "image_sha256, status FROM pages ORDER BY id;"
                     "UPDATE pages SET render_settings = '{}' WHERE id <= 2");
    DqStore *s = open_store(db);
    GError *err = NULL;
    const char *qs[] = {"Total?"};
    DqAskResult r = ask(s, qs, 1, "m", 0, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(r.pages, ==, 2);
    g_assert_cmpint(r.other_renderings, ==, 2);
    g_assert_cmpuint(r.other_n_res, ==, 0);
    close_store(s);
    exec_by_hand(db, "UPDATE pages SET render_settings = '{\"n_res\":3}' WHERE id <= 2");
    s = open_store(db);
    r = ask(s, qs, 1, "m", 0, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(r.other_renderings, ==, 2);
    g_assert_cmpuint(r.other_n_res, ==, G_GUINT64_CONSTANT(1) << 2);
    close_store(s);
    g_free(db);
    g_free(dir);
}

/* --where's checks, character by character: what is refused says why; what only looks like it
 * (a minus, a division, "--" or ";" inside a string, a name in brackets) passes. */
static void test_where_check(void) {
    const char *ok[] = {
        "page_count - 1 > 0",
        "size / 2 > 3",
        "path LIKE '%--%'",
        "path = 'a;b$'",
        "[path] = 'x'",
        "\"path\" = 'x'",
        "(a = 1) OR (b = 2)",
        "path = 'it''s'",
        "note = E'x'",
        "name = 'E\\'",
        "type = e'x'",
        "a-b=1",
        /* a name ending in E before a quote: no E'...' string, so a backslash is a character */
        "xE'a\\b' IS NULL",
        "col = xE'a\\b'",
        ("\xc3\x80" /* split: \x would take the E as a hex digit */
         "E'a\\b' IS NULL"),
        /* '-', '/' and '*' alone inside brackets; a quote first */
        "[a-b] = 1",
        "[a/b] = 1",
        "[a*b] = 1",
        "'x' = path",
    };
    for (guint i = 0; i < G_N_ELEMENTS(ok); i++) {
        GError *err = NULL;
        if (!queue_check_where(ok[i], &err))
            g_error("--where %s refused: %s", ok[i], err->message);
    }
    const char *bad[][2] = {
        {"a -- b", "SQL comments"},
        {"a /* b */", "SQL comments"},
        {"a = 1; b", "';' is not allowed"},
        {"a = $1", "'$' is not allowed"},
        {"(a = 1", "a '(' is never closed"},
        {"a = 1)", "a ')' closes a parenthesis it did not open"},
        {"a = 1) OR (b", "a ')' closes"},
        {"path = 'x", "a quote is never closed"},
        {"\"path = 1", "a quote is never closed"},
        {"note = E'a\\'b'", "backslash escapes"},
        {"note = e'a\\b'", "backslash escapes"},
        {"[pa(th] = 1", "[...] may hold a column name only"},
        {"[pa--th] = 1", "[...] may hold a column name only"},
        {"[a/*b] = 1", "[...] may hold a column name only"},
        {"E'a\\b' = note", "backslash escapes"},
        {"[path = 1", "a '[' is never closed"},
        {" \t", "an empty expression"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        GError *err = NULL;
        if (queue_check_where(bad[i][0], &err))
            g_error("--where %s accepted", bad[i][0]);
        g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
        if (strstr(err->message, bad[i][1]) == NULL)
            g_error("--where %s: '%s' does not say '%s'", bad[i][0], err->message, bad[i][1]);
        g_error_free(err);
    }
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/queue/ask/idempotent", test_ask_idempotent);
    g_test_add_func("/queue/ask/normalized-questions", test_ask_normalizes_questions);
    g_test_add_func("/queue/ask/where-read-only", test_ask_where_is_read_only);
    g_test_add_func("/queue/ask/where-one-expression", test_ask_where_is_one_expression);
    g_test_add_func("/queue/ask/question-files", test_question_files);
    g_test_add_func("/queue/ask/job-key", test_job_key);
    g_test_add_func("/queue/lease/claim-heartbeat-reclaim", test_leases);
    g_test_add_func("/queue/lease/own-expired", test_own_expired_leases);
    g_test_add_func("/queue/lease/failures-backoff-dead", test_failures_backoff_dead);
    g_test_add_func("/queue/lease/slow-begin-is-no-lock-wait", test_slow_begin_is_no_lock_wait);
    g_test_add_func("/queue/worker/until-empty-missing-image",
                    test_worker_until_empty_and_missing_image);
    g_test_add_func("/queue/worker/page-store-gone", test_worker_page_store_gone);
    g_test_add_func("/queue/worker/bad-question", test_worker_bad_question);
    g_test_add_func("/queue/worker/orphan-jobs", test_worker_orphan_jobs);
    g_test_add_func("/queue/worker/bad-render-settings", test_worker_bad_render_settings);
    g_test_add_func("/queue/worker/submit-refused", test_worker_submit_refused);
    g_test_add_func("/queue/worker/bad-page-image", test_worker_bad_page_image);
    g_test_add_func("/queue/worker/page-not-a-file", test_worker_page_not_a_file);
    g_test_add_func("/queue/worker/answer-lost", test_worker_answer_lost);
    g_test_add_func("/queue/worker/database-through-link", test_worker_database_through_link);
    g_test_add_func("/queue/worker/retries", test_worker_retries_transient_failures);
    g_test_add_func("/queue/worker/continuous-batching", test_worker_continuous_batching);
    g_test_add_func("/queue/worker/batch-limit", test_worker_batch_limit);
    g_test_add_func("/queue/worker/batch-default", test_worker_batch_default);
    g_test_add_func("/queue/worker/outlives-its-lease", test_worker_outlives_its_lease);
    g_test_add_func("/queue/worker/database-replaced", test_worker_database_replaced);
    g_test_add_func("/queue/run/max-jobs", test_run_max_jobs);
    g_test_add_func("/queue/run/restores-handlers", test_run_restores_handlers);
    g_test_add_func("/queue/run/one-worker-cannot-start", test_run_one_worker_cannot_start);
    g_test_add_func("/queue/run/heartbeat-keeps-leases", test_heartbeat_keeps_leases);
    g_test_add_func("/queue/run/buried-jobs-failed", test_run_counts_buried_jobs);
    g_test_add_func("/queue/run/buried-then-answered", test_run_buried_then_answered);
    g_test_add_func("/queue/run/locked-past-busy-limit", test_run_locked_past_busy_limit);
    g_test_add_func("/queue/run/locked-database-spends-no-attempt",
                    test_run_locked_database_spends_no_attempt);
    g_test_add_func("/queue/run/unusable-model", test_run_reports_unusable_model);
    g_test_add_func("/queue/worker/gives-up-on-lock-held-for-good",
                    test_worker_gives_up_on_lock_held_for_good);
    g_test_add_func("/queue/worker/device-failed", test_worker_device_failed);
    g_test_add_func("/queue/run/device-failed-restarts", test_run_device_failed_restarts);
    g_test_add_func("/queue/run/device-failed-gives-up", test_run_device_failed_gives_up);
    g_test_add_func("/queue/run/device-failed-after-stop", test_run_device_failed_after_stop);
    g_test_add_func("/queue/run/stopped-after-device-failed", test_run_stopped_after_device_failed);
    g_test_add_func("/queue/run/stopped-after-workers-ended", test_run_stopped_after_workers_ended);
    if (g_getenv("JT_DEVICE_STOP_DB") != NULL)
        g_test_add_func("/queue/run/device-stop-child", run_device_child);
    g_test_add_func("/queue/run/sigterm", test_run_sigterm);
    g_test_add_func("/queue/run/cancelled-while-running", test_run_cancelled_while_running);
    g_test_add_func("/queue/worker/cancelled-as-it-finishes", test_worker_cancelled_as_it_finishes);
    g_test_add_func("/queue/worker/taken-over-while-running", test_worker_taken_over_while_running);
    g_test_add_func("/queue/where-check", test_where_check);
    g_test_add_func("/queue/ask/other-rendering-n-res", test_ask_other_rendering_n_res);
    return g_test_run();
}
