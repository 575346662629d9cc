/* The queue's commands as a user runs them: docqa ask, status, export, requeue, run. Answers come
 * from a worker with the hash answerer (a test double; docqa run itself needs the model). */
#include "backend_cuda.h"
#include "clock.h"
#include "jobs_testlib.h"
#include "queue.h"
#include "smolvlm.h"
#include "testutil.h"

#include <errno.h>
#include <grp.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sqlite3.h>
#include <string.h>

/* A directory that passes for a model snapshot with ask (which reads only config.json). */
static char *make_snapshot(const char *dir, const char *name) {
    char *snap = g_build_filename(dir, "models", name, NULL);
    g_assert_cmpint(g_mkdir_with_parents(snap, 0755), ==, 0);
    char *cfg = g_build_filename(snap, "config.json", NULL);
    g_assert_true(g_file_set_contents(cfg, "{}", -1, NULL));
    g_free(cfg);
    return snap;
}

static void test_ask_status_export_requeue(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 3, 2);
    char *qfile = g_build_filename(dir, "questions.json", NULL);
    g_assert_true(g_file_set_contents(
        qfile, "[\"What is the total, in \\\"EUR\\\"?\", \"Who signed?\"]", -1, NULL));
    char *out = NULL, *err = NULL;

    /* ask: from a file and the command line; again adds nothing. */
    char *snapshot = make_snapshot(dir, "tiny");
    char *snapshot_slash = g_strconcat(snapshot, "/", NULL);
    g_assert_cmpint(dq_test_docqa(&out, &err, "ask", "--db", db, "--model", snapshot_slash,
                                  "--questions", qfile, "Date?", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "3 questions x 6 pages: 18 new jobs"));
    g_assert_nonnull(strstr(out, "model tiny"));
    g_free(out);
    g_free(err);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "--model", "tiny", "--questions",
                                  qfile, "Date?", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "0 new jobs, 18 already asked"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "--where",
                                  "path LIKE '%/2024/%'", "--document", "1", "Page count?", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "1 question x 4 pages: 4 new jobs"));
    g_free(out);
    /* User SQL that is not an expression over documents is refused, nothing is written. */
    g_assert_cmpint(dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "--where",
                                  "id IN (SELECT page_id FROM jobs)", "x", NULL),
                    ==, 2);
    g_assert_nonnull(strstr(err, "--where"));
    g_free(err);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "ask", "--db", db, "--document", "abc", "x", NULL),
                    ==, 2);
    g_assert_nonnull(strstr(err, "abc"));
    g_free(err);
    /* With the snapshot at hand, answers longer than the model's positions are refused. */
    const char *shared = dq_test_shared_dir();
    if (shared != NULL) {
        char *snap = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
        g_assert_cmpint(dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", snap, "--max-new-tokens",
                                      "8192", "Long?", NULL),
                        ==, 2);
        g_assert_nonnull(strstr(err, "at most 8192 positions, the prompt and its page included "
                                     "(config.json's text_config.max_position_embeddings)"));
        g_free(err);
        g_free(snap);
    }
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 22);

    /* One page image is gone: its jobs fail, status names the reason. */
    char *sha = NULL;
    {
        GError *e = NULL;
        DqStore *s = dq_store_open(db, &e);
        dq_assert_no_error(e);
        GPtrArray *c = store_jobs_claim(s, "peek", "tiny", 1, 0, 1, NULL, &e);
        sha = g_strdup(((DqClaimedJob *)g_ptr_array_index(c, 0))->image_sha256);
        g_ptr_array_free(c, TRUE);
        g_assert_true(store_jobs_release(s, "peek", NULL, &e));
        store_jobs_finalize(s);
        dq_store_close(s);
    }
    char *gone = queue_page_image_path(db, sha);
    char *kept = g_strconcat(gone, ".kept", NULL);
    g_assert_cmpint(g_rename(gone, kept), ==, 0);
    jt_run_worker(db, "tiny");

    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "22 total: 18 done"));
    g_assert_nonnull(strstr(out, "4 failed"));
    g_assert_nonnull(strstr(out, "page image missing"));
    /* the reason has the image's path taken out: one of its messages says where */
    g_assert_nonnull(strstr(out, "\n              e.g. "));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    JsonObject *jobs = json_object_get_object_member(o, "jobs");
    g_assert_cmpint(json_object_get_int_member(jobs, "done"), ==, 18);
    g_assert_cmpint(json_object_get_int_member(jobs, "failed"), ==, 4);
    g_assert_cmpint(json_object_get_int_member(jobs, "total"), ==, 22);
    JsonArray *reasons = json_object_get_array_member(o, "failure_reasons");
    g_assert_cmpint(json_array_get_length(reasons), ==, 1);
    g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(reasons, 0), "jobs"),
                    ==, 4);
    g_assert_cmpfloat(json_object_get_double_member(o, "answers_per_second"), >, 0);
    /* The stand-in answerer says nothing of its numerics: one group, all unknown. */
    JsonArray *engines = json_object_get_array_member(o, "answers_by_engine");
    g_assert_cmpint(json_array_get_length(engines), ==, 1);
    JsonObject *e0 = json_array_get_object_element(engines, 0);
    g_assert_true(json_object_get_null_member(e0, "device"));
    g_assert_true(json_object_get_null_member(e0, "exact"));
    g_assert_cmpint(json_object_get_int_member(e0, "answers"), ==, 18);
    g_object_unref(p);
    g_free(out);

    /* export: CSV with RFC 4180 quoting; JSON lines filtered by question. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, NULL), ==, 0);
    char **lines = g_strsplit(out, "\r\n", -1);
    g_assert_cmpint(g_strv_length(lines), ==, 18 + 2); /* header, rows, the empty tail */
    g_assert_true(g_str_has_prefix(lines[0], "document_path,page,question,answer,model"));
    /* Columns are appended, never moved: a CSV is read by position. */
    g_assert_true(g_str_has_suffix(lines[0], ",job_id,device,weights,exact,n_res,tile,longest_edge,"
                                             "prompt,max_new_tokens,do_sample,model_fingerprint,"
                                             "page_id,generated_tokens,ms_total"));
    /* The stand-in answerer is no model: it records no device, weights or snapshot, so
     * exactness is unknown (empty); the settings are the page's and the job's. */
    g_assert_nonnull(strstr(lines[1], ",,,,4,512,2048,docvqa,64,0,,"));
    g_assert_nonnull(strstr(out, ",\"What is the total, in \"\"EUR\"\"?\","));
    g_strfreev(lines);
    g_free(out);
    /* --question is normalized as ask stores it: surrounding spaces do not matter. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, "--format", "jsonl",
                                  "--question", " \tWho signed?  ", NULL),
                    ==, 0);
    lines = g_strsplit(g_strchomp(out), "\n", -1);
    g_assert_cmpint(g_strv_length(lines), ==, 5); /* 6 pages, one without its image */
    for (char **l = lines; *l; l++) {
        JsonParser *lp = json_parser_new();
        g_assert_true(json_parser_load_from_data(lp, *l, -1, NULL));
        JsonObject *row = json_node_get_object(json_parser_get_root(lp));
        g_assert_cmpstr(json_object_get_string_member(row, "question"), ==, "Who signed?");
        g_assert_cmpstr(json_object_get_string_member(row, "model"), ==, "tiny");
        g_assert_cmpint(strlen(json_object_get_string_member(row, "answer")), ==, 16);
        g_assert_true(json_object_get_null_member(row, "device"));
        g_assert_true(json_object_get_null_member(row, "exact"));
        g_assert_cmpint(json_object_get_int_member(row, "n_res"), ==, 4);
        g_assert_cmpint(json_object_get_int_member(row, "tile"), ==, 512);
        g_assert_cmpint(json_object_get_int_member(row, "longest_edge"), ==, 2048);
        g_assert_cmpstr(json_object_get_string_member(row, "prompt"), ==, "docvqa");
        g_assert_cmpint(json_object_get_int_member(row, "max_new_tokens"), ==, 64);
        g_assert_false(json_object_get_boolean_member(row, "do_sample"));
        g_assert_true(json_object_get_null_member(row, "model_fingerprint"));
        g_object_unref(lp);
    }
    g_strfreev(lines);
    g_free(out);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "export", "--db", db, "--format", "xml", NULL), ==,
                    2);
    /* A question nobody answered: nothing to export, no failure, but a note says so. */
    g_assert_cmpint(dq_test_docqa(&out, &err, "export", "--db", db, "--format", "jsonl",
                                  "--question", "Who signed it?", NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==, "");
    g_assert_nonnull(strstr(err, "no answers to the question \"Who signed it?\""));
    g_free(out);
    g_free(err);

    /* requeue --failed after the image is back: everything gets answered. */
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "requeue", "--db", db, NULL), ==, 2);
    g_assert_cmpint(g_rename(kept, gone), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--failed", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "4 jobs back"));
    g_free(out);
    jt_run_worker(db, "tiny");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 22);
    g_assert_cmpint(jt_query_int(db, "SELECT sum(done) FROM v_progress"), ==, 22);
    /* Nothing fails now: the answered jobs' old errors are history (job_errors), no reason. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_null(strstr(out, "page image missing"));
    g_assert_null(strstr(out, "failure reasons"));
    /* Nothing left to do: the ETA is none, not unknown (a script waits on it). */
    g_assert_nonnull(strstr(out, "; ETA 0s\n"));
    /* every question's row shown: no line for more */
    g_assert_nonnull(strstr(out, "per question"));
    g_assert_null(strstr(out, " more (status --json"));
    g_assert_null(strstr(out, "stalled: their worker stopped"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\"eta_seconds\" : 0.0,\n"));
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM job_errors"), ==, 4);

    /* requeue --approximate: three answers marked as a GPU's go back; they stay readable until
     * answered again, then wait in answers_superseded. */
    sqlite3 *w = NULL;
    g_assert_cmpint(sqlite3_open(db, &w), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(w,
                                 "UPDATE answers SET device = 'cuda:0', weights = 'stored', "
                                 "exact = 0 WHERE id IN (SELECT id FROM answers ORDER BY id "
                                 "LIMIT 3)",
                                 NULL, NULL, NULL),
                    ==, SQLITE_OK);
    sqlite3_close(w);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "3 approximate (cuda:0, weights as stored)"));
    g_assert_nonnull(strstr(out, "requeue --approximate: queue the 3 jobs answered approximately"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\"device\" : \"cuda:0\",\n"));
    g_assert_nonnull(strstr(out, "\"exact\" : false,\n"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--approximate", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "3 jobs back"));
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers WHERE exact = 0"), ==, 3);
    g_assert_cmpint(jt_query_int(db, "SELECT sum(queued) FROM v_progress"), ==, 3);
    /* Cancelled, they would go back to done with their answers, not be cancelled. */
    g_assert_cmpint(
        dq_test_docqa(&out, NULL, "cancel", "--db", db, "-m", "tiny", "--dry-run", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "cancel: would cancel 0 jobs (--dry-run: nothing was changed)\n"));
    g_assert_nonnull(strstr(out, "cancel: 3 of them have an answer already (queued again by "
                                 "requeue --approximate): would go back to done with it"));
    g_free(out);
    /* Queued again already: status asks for no second requeue. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "3 approximate (cuda:0, weights as stored)"));
    g_assert_null(strstr(out, "requeue --approximate"));
    g_free(out);
    jt_run_worker(db, "tiny");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 22);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers WHERE exact = 0"), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM answers_superseded WHERE exact = 0"), ==,
                    3);
    g_assert_cmpint(jt_query_int(db, "SELECT sum(done) FROM v_progress"), ==, 22);

    g_free(snapshot);
    g_free(snapshot_slash);
    g_free(sha);
    g_free(gone);
    g_free(kept);
    g_free(qfile);
    /* Work queued, no worker at it: the last minutes' speed is no forecast. */
    g_assert_cmpint(
        dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "tiny", "Anything else?", NULL), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "ETA unknown (no job running)"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    JsonParser *p2 = json_parser_new();
    g_assert_true(json_parser_load_from_data(p2, out, -1, NULL));
    g_assert_true(
        json_object_get_null_member(json_node_get_object(json_parser_get_root(p2)), "eta_seconds"));
    g_object_unref(p2);
    g_free(out);
    g_free(db);
    g_free(dir);
}

/* export --spreadsheet-safe: a cell a spreadsheet would run as a formula gets an apostrophe;
 * numbers and plain text are left as they are, and plain CSV is the stored text. */
static void test_export_spreadsheet_safe(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "tiny", "--",
                                  "=HYPERLINK(\"http://x\",\"y\")", "-42", "@SUM(A1)", "-1+2",
                                  "Total?", NULL),
                    ==, 0);
    jt_run_worker(db, "tiny");
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, "--spreadsheet-safe", NULL), ==,
                    0);
    g_assert_nonnull(strstr(out, ",\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\","));
    g_assert_nonnull(strstr(out, ",'@SUM(A1),"));
    g_assert_nonnull(strstr(out, ",'-1+2,"));
    g_assert_nonnull(strstr(out, ",-42,"));
    g_assert_nonnull(strstr(out, ",Total?,"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, ",\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\","));
    g_assert_nonnull(strstr(out, ",@SUM(A1),"));
    g_assert_null(strstr(out, "'"));
    g_free(out);
    char *err = NULL;
    g_assert_cmpint(dq_test_docqa(NULL, &err, "export", "--db", db, "--format", "jsonl",
                                  "--spreadsheet-safe", NULL),
                    ==, 2);
    g_assert_nonnull(strstr(err, "--spreadsheet-safe"));
    g_free(err);
    g_free(db);
    g_free(dir);
}

/* No raw control character in a JSON string, U+001F (the unit separator) included: json-glib
 * writes that one raw, and strict parsers (Python's json, jq) refuse the whole line. A model can
 * emit the byte, a question can hold it. */
static void json_has_no_raw_controls(const char *out, const char *what, const char *want) {
    for (const char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\n' && *p != ' ')
            g_error("%s: raw control character 0x%02x in its JSON", what, (unsigned char)*p);
    g_assert_nonnull(strstr(out, want));
}

static void test_json_unit_separator(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "tiny", "--",
                                  "Total\x1f"
                                  "due?",
                                  NULL),
                    ==, 0);
    jt_run_worker(db, "tiny");
    sqlite3 *w = NULL;
    g_assert_cmpint(sqlite3_open(db, &w), ==, SQLITE_OK);
    g_assert_cmpint(
        sqlite3_exec(w, "UPDATE answers SET text = 'EUR' || char(31) || '42'", NULL, NULL, NULL),
        ==, SQLITE_OK);
    sqlite3_close(w);
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, "--format", "jsonl", NULL), ==,
                    0);
    json_has_no_raw_controls(out, "export --format jsonl", "\"answer\":\"EUR\\u001f42\"");
    g_assert_nonnull(strstr(out, "\"question\":\"Total\\u001fdue?\""));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    json_has_no_raw_controls(out, "status --json", "\"Total\\u001fdue?\"");
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonArray *progress =
        json_object_get_array_member(json_node_get_object(json_parser_get_root(p)), "progress");
    g_assert_cmpstr(
        json_object_get_string_member(json_array_get_object_element(progress, 0), "question"), ==,
        "Total\x1f"
        "due?");
    g_object_unref(p);
    g_free(out);
    g_free(db);
    g_free(dir);
}

static void cancel_question_1(void *db) {
    g_assert_cmpint(
        dq_test_docqa(NULL, NULL, "cancel", "--db", db, "--question", "question 1", NULL), ==, 0);
}

static gint64 progress_sum(JsonArray *progress, const char *column) {
    gint64 sum = 0;
    for (guint i = 0; i < json_array_get_length(progress); i++)
        sum += json_object_get_int_member(json_array_get_object_element(progress, i), column);
    return sum;
}

/* status reads one snapshot: jobs cancelled while it reads (or answered, by workers that run on)
 * show in none of its numbers, not in "progress" alone, so that they add up to "jobs". */
static void test_status_one_snapshot(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    char *docqa = dq_test_docqa_path();
    const char *argv[] = {docqa, "status", "--db", db, "--json", NULL};
    /* held after the job counts, before v_progress is read */
    char *out = NULL;
    int status = dq_test_run_paused(argv, NULL, "status:read", cancel_question_1, db, &out, NULL);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==, 2);
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    JsonObject *jobs = json_object_get_object_member(o, "jobs");
    JsonArray *progress = json_object_get_array_member(o, "progress");
    g_assert_cmpint(json_object_get_int_member(jobs, "queued"), ==, 4);
    g_assert_cmpint(progress_sum(progress, "queued"), ==, 4);
    g_assert_cmpint(json_object_get_int_member(jobs, "cancelled"), ==, 0);
    g_assert_cmpint(progress_sum(progress, "cancelled"), ==, 0);
    g_object_unref(p);
    g_free(out);
    g_free(docqa);
    g_free(db);
    g_free(dir);
}

static void test_run_refuses_clearly(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *err = NULL;
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "run", "--db", db, "--model", "/nonexistent/model", NULL), ==, 2);
    g_assert_nonnull(strstr(err, "/nonexistent/model"));
    g_free(err);
    g_unsetenv("DOCQA_MODEL");
    g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, NULL), ==, 2);
    g_assert_nonnull(strstr(err, "--model"));
    g_free(err);
    /* Each out-of-range option is refused by name, before any worker starts. */
    const char *bad[][2] = {
        {"--batch", "0"},         {"--batch", "2147483646"}, {"--batch", "4097"},
        {"--workers", "0"},       {"--workers", "257"},      {"--workers", "x"},
        {"--max-jobs", "-1"},     {"--max-jobs", "0"},       {"--lease", "0"},
        {"--max-jobs", "1e3"},    {"--prefix-cache", "-1"},  {"--prefix-cache", "1048577"},
        {"--prefix-cache", "1G"}, {"--retry-delay", "0"},    {"--retry-delay", "3601"},
        {"--retry-delay", "1.5"}};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", dir, bad[i][0],
                                      bad[i][1], NULL),
                        ==, 2);
        char *want = g_strdup_printf("docqa: run: %s ", bad[i][0]);
        g_assert_true(g_str_has_prefix(err, want));
        g_assert_nonnull(strstr(err, bad[i][1]));
        g_assert_true(strchr(err, '\n') == err + strlen(err) - 1); /* one line */
        g_free(want);
        g_free(err);
    }
    /* The largest first step is taken: what stops this run is the model folder, not it. */
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "run", "--db", db, "--model", dir, "--retry-delay", "3600", NULL),
        ==, 2);
    g_assert_null(strstr(err, "--retry-delay"));
    g_free(err);
    /* The prefix cache's default from the environment too, by name. */
    g_setenv("DOCQA_PREFIX_CACHE_MB", "lots", TRUE);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", dir, NULL), ==, 2);
    g_assert_true(g_str_has_prefix(err, "docqa: run: DOCQA_PREFIX_CACHE_MB 'lots'"));
    g_free(err);
    g_unsetenv("DOCQA_PREFIX_CACHE_MB");
    const char *bad_prep[] = {"65", "0", "-1"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad_prep); i++) {
        g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", dir,
                                      "--prep-threads", bad_prep[i], NULL),
                        ==, 2);
        g_assert_nonnull(strstr(err, "--prep-threads"));
        g_free(err);
    }
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "run", "--db", db, "--model", dir, "--device", "cpu,tpu:0", NULL),
        ==, 2);
    g_assert_true(g_str_has_prefix(err, "docqa: run: --device: unknown device 'tpu:0'"));
    g_free(err);
    /* An empty value names no device: refused, not a worker dividing by zero devices. */
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "run", "--db", db, "--model", dir, "--device", "", NULL), ==, 2);
    g_assert_true(g_str_has_prefix(err, "docqa: run: --device '': names no device"));
    g_free(err);
    if (dq_cuda_device_count(NULL) == 0) {
        /* Said before any worker starts, with the driver's reason. */
        g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", dir, "--device",
                                      "cuda:all", NULL),
                        ==, 2);
        g_assert_true(g_str_has_prefix(err, "docqa: run: --device cuda:all: no GPU ("));
        g_free(err);
    }
    g_free(db);
    g_free(dir);
}

/* ask --model with a '/' must name a snapshot directory (a typo would queue jobs for a model
 * id nobody answers); a bare id is taken as it is. */
static void test_ask_checks_model(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *empty = g_build_filename(dir, "models", "empty", NULL);
    g_assert_cmpint(g_mkdir_with_parents(empty, 0755), ==, 0);
    char *snap = make_snapshot(dir, "tiny-2");
    char *out = NULL, *err = NULL;
    const char *bad[][2] = {{"/nonexistent/typo-model", "no such directory"},
                            {"/etc/passwd", "not a directory"},
                            {"/", "no config.json"},
                            {empty, "no config.json"}};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_assert_cmpint(
            dq_test_docqa(NULL, &err, "ask", "--db", db, "--model", bad[i][0], "Q?", NULL), ==, 2);
        char *want = g_strdup_printf("docqa: ask: --model %s: %s", bad[i][0], bad[i][1]);
        g_assert_true(g_str_has_prefix(err, want));
        g_free(want);
        g_free(err);
    }
    g_setenv("DOCQA_MODEL", "/nonexistent/typo-model", TRUE);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "ask", "--db", db, "Q?", NULL), ==, 2);
    g_assert_true(g_str_has_prefix(err, "docqa: ask: DOCQA_MODEL /nonexistent/typo-model: "));
    g_free(err);
    g_unsetenv("DOCQA_MODEL");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "--model", snap, "Q?", NULL), ==,
                    0);
    g_assert_nonnull(strstr(out, "(model tiny-2)"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "--model", "not-here", "Q?", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "(model not-here)"));
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(DISTINCT model_id) FROM jobs"), ==, 2);
    g_free(empty);
    g_free(snap);
    g_free(db);
    g_free(dir);
}

/* Questions from the command line go through the same checks as a file's, and are asked once. */
static void test_ask_normalizes_questions(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *qfile = g_build_filename(dir, "q.txt", NULL);
    g_assert_true(g_file_set_contents(qfile, "Date?\n Dup\n", -1, NULL));
    char *out = NULL, *err = NULL;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "--questions", qfile,
                                  "Dup ", "Dup",
                                  "\xc2\xa0"
                                  "Date?",
                                  NULL),
                    ==, 0);
    g_assert_nonnull(strstr(
        out, "ask: 2 questions (3 duplicates dropped) x 1 page: 2 new jobs, 0 already asked"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "Qu\xe9?", NULL), ==,
                    2);
    g_assert_cmpstr(err, ==,
                    "docqa: ask: command-line question 1 'Qu\\xe9?': the question is not UTF-8 "
                    "text\n");
    g_free(err);
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "Fine?", "\xc2\xa0", NULL), ==,
        2);
    g_assert_nonnull(strstr(err, "command-line question 2 '\\u00a0'"));
    g_free(err);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 2);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM questions"), ==, 2);
    g_free(qfile);
    g_free(db);
    g_free(dir);
}

/* A command-line question that is the name of a file or folder where ask runs (--questions
 * forgotten, or a document named as if ask took one) is refused, nothing queued: it was asked
 * about every page. The same text from a questions file is asked. */
static void test_ask_refuses_a_file_name(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *qfile = g_build_filename(dir, "questions.txt", NULL);
    g_assert_true(g_file_set_contents(qfile, "Date?\n", -1, NULL));
    char *sub = g_build_filename(dir, "scans", NULL);
    g_assert_cmpint(g_mkdir(sub, 0755), ==, 0);
    const struct {
        const char *arg, *kind;
    } cases[] = {{"questions.txt", "file"}, {"scans", "folder"}, {qfile, "file"}};
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const char *args[] = {"ask", "--db", db, "-m", "tiny", "Total?", cases[i].arg, NULL};
        char *err = NULL;
        g_assert_cmpint(dq_test_docqa_in(dir, NULL, args, NULL, &err), ==, 2);
        char *want = g_strdup_printf("docqa: ask: command-line question 2 '%s' is the name of a %s "
                                     "here, not a question (a file of questions is given with "
                                     "--questions FILE, the documents to ask about with "
                                     "--document or --where; to ask it as a question all the "
                                     "same, put it in a --questions file)\n",
                                     cases[i].arg, cases[i].kind);
        g_assert_cmpstr(err, ==, want);
        g_free(want);
        g_free(err);
    }
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM questions"), ==, 0);
    /* elsewhere the name is no file: a question like any other; so it is from a file */
    char *named = g_build_filename(dir, "named.txt", NULL);
    g_assert_true(g_file_set_contents(named, "questions.txt\n", -1, NULL));
    const char *elsewhere[] = {"ask", "--db", db, "-m", "tiny", "questions.txt", NULL};
    g_assert_cmpint(dq_test_docqa_in(sub, NULL, elsewhere, NULL, NULL), ==, 0);
    const char *from_file[] = {"ask", "--db", db, "-m", "tiny", "--questions", "named.txt", NULL};
    g_assert_cmpint(dq_test_docqa_in(dir, NULL, from_file, NULL, NULL), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM questions"), ==, 1);
    g_free(named);
    g_free(sub);
    g_free(qfile);
    g_free(db);
    g_free(dir);
}

/* generate --image with a document or another image format says what the file is and what to
 * do, for the project's own TIFF and PDF examples (before the model is opened: there is none). */
static void test_generate_names_file_kind(void) {
    char *dir = dq_test_tmpdir();
    const struct {
        const char *file, *said;
    } cases[] = {{"scanned-letter.tif", "a TIFF image, not a PNG or JPEG image (`docqa ingest` "
                                        "renders PDFs and TIFFs into page images)"},
                 {"letter.pdf", "a PDF document, not a PNG or JPEG image (`docqa ingest` renders "
                                "PDFs and TIFFs into page images)"}};
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *doc = g_build_filename(dq_test_source_dir(), "examples", "docs", cases[i].file, NULL);
        char *err = NULL;
        g_assert_cmpint(
            dq_test_docqa(NULL, &err, "generate", "--model", dir, "--image", doc, "-p", "hi", NULL),
            ==, 2);
        char *want = g_strdup_printf("docqa: %s: %s\n", doc, cases[i].said);
        g_assert_cmpstr(err, ==, want);
        g_free(want);
        g_free(err);
        g_free(doc);
    }
    g_free(dir);
}

/* Numbers out of range are refused with the option's name, none clamped or replaced by a
 * default; sampling options without --sample draw a note. */
static void test_numbers_refused_by_name(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *err = NULL;
    const char *bad[][3] = {{"--max-new-tokens", "0", NULL},
                            {"--temperature", "0", "--sample"},
                            {"--temperature", "-1", "--sample"},
                            {"--top-p", "-0.1", "--sample"},
                            {"--top-p", "1.5", "--sample"},
                            {"--top-k", "-2", "--sample"},
                            {"--n-res", "0", NULL},
                            {"--n-res", "65", NULL},
                            {"--n-res", "2147483647", NULL},
                            {"--seed", "99999999999999999999", "--sample"}};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_assert_cmpint(dq_test_docqa(NULL, &err, "generate", "--model", dir, "-p", "hi", bad[i][0],
                                      bad[i][1], bad[i][2], NULL),
                        ==, 2);
        char *want = g_strdup_printf("docqa: generate: %s %s: ", bad[i][0], bad[i][1]);
        if (!g_str_has_prefix(err, want))
            g_error("%s %s: said '%s'", bad[i][0], bad[i][1], err);
        g_free(want);
        g_free(err);
    }
    /* The ends of each range are taken: what stops these runs is the missing model. */
    const char *edge[][3] = {{"--max-new-tokens", "1", NULL}, {"--n-res", "1", NULL},
                             {"--n-res", "64", NULL},         {"--top-p", "0", "--sample"},
                             {"--top-p", "1", "--sample"},    {"--top-k", "0", "--sample"}};
    for (size_t i = 0; i < G_N_ELEMENTS(edge); i++) {
        g_assert_cmpint(dq_test_docqa(NULL, &err, "generate", "--model", dir, "-p", "hi",
                                      edge[i][0], edge[i][1], edge[i][2], NULL),
                        ==, 2);
        if (strstr(err, edge[i][0]) != NULL)
            g_error("%s %s: said '%s'", edge[i][0], edge[i][1], err);
        g_free(err);
    }
    /* Checked before the model is opened (there is none here): the note comes first. */
    g_assert_cmpint(dq_test_docqa(NULL, &err, "generate", "--model", dir, "-p", "hi", "--seed", "3",
                                  "--top-k", "5", NULL),
                    ==, 2);
    g_assert_true(g_str_has_prefix(err, "docqa: generate: note: --top-k, --seed have no effect "
                                        "without --sample"));
    g_free(err);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "-d",
                                  "99999999999999999999", "Q?", NULL),
                    ==, 2);
    g_assert_cmpstr(err, ==, "docqa: ask: --document 99999999999999999999: out of range\n");
    g_free(err);
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "-d", "0", "Q?", NULL), ==, 2);
    g_assert_cmpstr(err, ==, "docqa: ask: --document 0: must be at least 1\n");
    g_free(err);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 0);
    g_free(db);
    g_free(dir);
}

/* Integer options read decimal only, as Python's int() does (cli.h, dq_cli_add_options): GLib's
 * own parser read "010" as 8 and "0x10" as 16. Leading zeros are decimal; hex, exponents, spaces
 * and an empty value are refused, naming the option and the value, before anything runs. */
static void test_numbers_in_decimal(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *err = NULL;
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "tiny", "--max-new-tokens",
                                  "010", "--max-attempts", "+09", "Q?", NULL),
                    ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT json_extract(generation_settings, "
                                     "'$.max_new_tokens') FROM jobs"),
                    ==, 10);
    g_assert_cmpint(jt_query_int(db, "SELECT max_attempts FROM jobs"), ==, 9);
    const char *bad[][3] = {{"ask", "--max-new-tokens", "0x10"},
                            {"ask", "--max-attempts", "1e3"},
                            {"ask", "--n-res", " 5"},
                            {"ask", "--n-res", "5 "},
                            {"ask", "--max-new-tokens", ""},
                            {"ask", "--max-new-tokens", "-"},
                            {"run", "--batch", "0x10"},
                            {"run", "-b", "010x"},
                            {"run", "--lease", "1.5"},
                            {"run", "--prep-threads", "0b1"}};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_assert_cmpint(dq_test_docqa(NULL, &err, bad[i][0], "--db", db, "-m", "tiny", bad[i][1],
                                      bad[i][2], "Q?", NULL),
                        ==, 2);
        char *want = g_strdup_printf("docqa: %s: %s '%s': expected a whole number in decimal "
                                     "(see --help)\n",
                                     bad[i][0], bad[i][1], bad[i][2]);
        g_assert_cmpstr(err, ==, want);
        g_free(want);
        g_free(err);
    }
    /* Past an int: out of range, as GLib said it (the command's own limits come after). */
    g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--batch", "99999999999", NULL),
                    ==, 2);
    g_assert_cmpstr(err, ==, "docqa: run: --batch 99999999999: out of range (see --help)\n");
    g_free(err);
    /* The least int is one: the command's own limit refuses it. */
    g_assert_cmpint(dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "--max-attempts",
                                  "-2147483648", "Q?", NULL),
                    ==, 2);
    g_assert_cmpstr(err, ==, "docqa: ask: --max-attempts -2147483648: must be positive\n");
    g_free(err);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 1);
    /* The least and the most each option takes are taken. */
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "tiny", "--max-new-tokens",
                                  "1", "--max-attempts", "2147483647", "Short?", NULL),
                    ==, 0);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "tiny", "--max-new-tokens",
                                  "2147483647", "--max-attempts", "1", "Short?", NULL),
                    ==, 0);
    g_assert_cmpint(jt_query_int(db,
                                 "SELECT count(*) FROM jobs WHERE max_attempts = 2147483647 "
                                 "AND json_extract(generation_settings, '$.max_new_tokens') = 1"),
                    ==, 1);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE max_attempts = 1 AND "
                                     "json_extract(generation_settings, '$.max_new_tokens') = "
                                     "2147483647"),
                    ==, 1);
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "--n-res", "64", "Q?", NULL), ==,
        0);
    g_assert_nonnull(strstr(err, "no ingested pages match"));
    g_free(err);
    g_free(db);
    g_free(dir);
}

/* ask -f - reads the questions from standard input. */
static void test_ask_questions_from_stdin(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *bin = dq_test_docqa_path();
    GError *e = NULL;
    GSubprocess *p =
        g_subprocess_new(G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE, &e, bin,
                         "ask", "--db", db, "-m", "tiny", "-f", "-", NULL);
    dq_assert_no_error(e);
    char *out = NULL;
    g_assert_true(g_subprocess_communicate_utf8(p, "\xef\xbb\xbf[\"From stdin?\", \"Second?\"]",
                                                NULL, &out, NULL, &e));
    dq_assert_no_error(e);
    g_assert_true(g_subprocess_get_if_exited(p));
    g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
    g_assert_nonnull(strstr(out, "ask: 2 questions x 1 page: 2 new jobs"));
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM questions WHERE text = 'From stdin?'"),
                    ==, 1);
    g_free(out);
    g_object_unref(p);
    g_free(bin);
    g_free(db);
    g_free(dir);
}

/* Commands that take options only refuse a stray argument (a database path typed without --db)
 * instead of acting on the default database. */
static void test_commands_refuse_stray_arguments(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *stray = g_build_filename(dir, "other.db", NULL);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "tiny", "Total?", NULL), ==,
                    0);
    sqlite3 *w = NULL;
    g_assert_cmpint(sqlite3_open(db, &w), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(w, "UPDATE jobs SET state = 'failed'", NULL, NULL, NULL), ==,
                    SQLITE_OK);
    sqlite3_close(w);
    const char *cmds[][4] = {{"status", "--db", db, NULL},
                             {"export", "--db", db, NULL},
                             {"requeue", "--db", db, "--failed"},
                             {"version", NULL}};
    for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
        char *out = NULL, *err = NULL;
        const char *const *c = cmds[i];
        int rc = !c[1]   ? dq_test_docqa(&out, &err, c[0], stray, NULL)
                 : !c[3] ? dq_test_docqa(&out, &err, c[0], c[1], c[2], stray, NULL)
                         : dq_test_docqa(&out, &err, c[0], c[1], c[2], c[3], stray, NULL);
        g_assert_cmpint(rc, ==, 2);
        char *want =
            g_strdup_printf("docqa: %s: unexpected argument '%s' (see --help)\n", c[0], stray);
        g_assert_cmpstr(err, ==, want);
        g_assert_cmpstr(out, ==, "");
        g_free(want);
        g_free(out);
        g_free(err);
    }
    char *copy = g_build_filename(dir, "copy.db", NULL), *err = NULL;
    g_assert_cmpint(dq_test_docqa(NULL, &err, "migrate", "--from", db, "--to", copy, stray, NULL),
                    ==, 2);
    char *want = g_strdup_printf("docqa: migrate: unexpected argument '%s' (see --help)\n", stray);
    g_assert_cmpstr(err, ==, want);
    g_assert_false(g_file_test(copy, G_FILE_TEST_EXISTS));
    g_free(want);
    g_free(err);
    g_free(copy);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'failed'"), ==, 1);
    g_assert_false(g_file_test(stray, G_FILE_TEST_EXISTS));
    g_free(stray);
    g_free(db);
    g_free(dir);
}

/* docqa with args, an environment (NULL-terminated "NAME=value" pairs added to this one's) and
 * stdout sent to stdout_path (NULL: captured into *out); returns the exit status, stderr in
 * *errout. */
static int docqa_with(const char *const *env, const char *stdout_path, char **out, char **errout,
                      const char *const *args) {
    return dq_test_docqa_run(&(DqTestRun){.env = env, .stdout_path = stdout_path}, args, out,
                             errout);
}

/* A refused command line: its arguments after "COMMAND --db DB", and what its message says. */
typedef struct {
    const char *args[6];
    const char *says;
} Refusal;

/* Each refused `docqa COMMAND --db DB ARGS...` exits 2 with what it says in its message. */
static void assert_refused(const char *command, const char *db, const Refusal *refused, guint n) {
    for (guint i = 0; i < n; i++) {
        const char *args[10] = {command, "--db", db};
        for (int k = 0; refused[i].args[k]; k++)
            args[3 + k] = refused[i].args[k];
        char *err = NULL;
        g_assert_cmpint(docqa_with(NULL, NULL, NULL, &err, args), ==, 2);
        g_test_message("%s", err);
        g_assert_nonnull(strstr(err, refused[i].says));
        g_free(err);
    }
}

/* run --until-empty for a model whose jobs are all answered, while other models' wait: it
 * answers nothing, and says so as a failure (exit 1), naming what the model has (not "no jobs")
 * and the model ids that have work, so that a nightly whose ask and run name different models
 * does not succeed every night. --other-models-ok: a queue shared on purpose, exit 0. */
static void test_run_nothing_queued_note(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 2);
    g_assert_cmpint(jt_drain(db, 1), ==, 0);
    g_assert_cmpint(jt_ask(db, 1, "other", 3), ==, 1);
    g_assert_cmpint(jt_ask(db, 2, "third", 3), ==, 2);
    char *out = NULL, *err = NULL;
    g_assert_cmpint(dq_test_docqa(&out, &err, "run", "--db", db, "--model", model, "--model-id",
                                  "m", "--until-empty", "-q", NULL),
                    ==, 1);
    g_assert_nonnull(strstr(out, "run: 0 answered, 0 failed"));
    g_assert_nonnull(strstr(err, "docqa: run: nothing queued (2 done, 0 failed, 0 dead, 0 "
                                 "cancelled) for model 'm', but 3 jobs queued or running for "
                                 "other model ids: 'third' (2 queued), 'other' (1 queued): "
                                 "nothing was answered; ask with --model "));
    g_assert_nonnull(strstr(err, "--other-models-ok"));
    g_free(out);
    g_free(err);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", model, "--model-id",
                                  "m", "--until-empty", "--other-models-ok", "-q", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(err, "for model 'm', but 3 jobs queued or running for other model "
                                 "ids: 'third' (2 queued), 'other' (1 queued): ask with --model "));
    g_free(err);
    /* Five other model ids are named; of six, the first five and "...". The most --batch and
     * --prep-threads (DQ_MAX_PREP_THREADS) take and the least --lease and --prep-threads are
     * taken. */
    const char *more[] = {"m4", "m5", "m6", "m7"};
    for (size_t i = 0; i < 3; i++)
        g_assert_cmpint(jt_ask(db, 1, more[i], 3), ==, 1);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", model, "--model-id",
                                  "m", "--until-empty", "--other-models-ok", "-q", "--batch",
                                  G_STRINGIFY(DQ_MAX_BATCH), "--lease", "1", "--prep-threads", "1",
                                  NULL),
                    ==, 0);
    g_assert_nonnull(strstr(err, "ids: 'third' (2 queued), 'm4' (1 queued), 'm5' (1 queued), 'm6' "
                                 "(1 queued), 'other' (1 queued): ask with --model "));
    g_free(err);
    g_assert_cmpint(jt_ask(db, 1, more[3], 3), ==, 1);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", model, "--model-id",
                                  "m", "--until-empty", "--other-models-ok", "-q", "--prep-threads",
                                  G_STRINGIFY(DQ_MAX_PREP_THREADS), NULL),
                    ==, 0);
    g_assert_nonnull(strstr(err, "'m6' (1 queued), 'm7' (1 queued), ...: ask with --model "));
    g_free(err);
    for (size_t i = 0; i < G_N_ELEMENTS(more); i++)
        g_assert_cmpint(dq_test_docqa(NULL, NULL, "cancel", "--db", db, "--model", more[i], NULL),
                        ==, 0);
    /* A model nobody asked about at all. */
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "run", "--db", db, "--model", model, "--until-empty", "-q", NULL),
        ==, 1);
    g_assert_nonnull(strstr(err, "docqa: run: no jobs for model 'tiny-smolvlm-b512', but 3 jobs"));
    g_free(err);
    /* Nothing queued anywhere: an empty queue is no failure. */
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "cancel", "--db", db, "--model", "other", NULL), ==,
                    0);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "cancel", "--db", db, "--model", "third", NULL), ==,
                    0);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", model, "--model-id",
                                  "m", "--until-empty", "-q", NULL),
                    ==, 0);
    g_assert_null(strstr(err, "other model ids"));
    g_free(err);
    g_free(db);
    g_free(dir);
    g_free(model);
}

/* Runs `docqa COMMAND --db DB` where DIR (DB's folder) is read-only: a read-only bind mount
 * for root (whom permissions do not stop), a folder without write permission otherwise.
 * -1 when neither can be arranged here. */
static int docqa_read_only_with(const char *dir, const char *db, const char *command,
                                const char *option, const char *value, char **out, char **errout) {
    char *bin = dq_test_docqa_path();
    int status = 0;
    GError *err = NULL;
    if (geteuid() == 0) {
        const char *argv[] = {"unshare",
                              "-m",
                              "sh",
                              "-c",
                              "mount --bind -o ro \"$0\" \"$0\" 2>/dev/null || exit 77; "
                              "touch \"$0/probe\" 2>/dev/null && exit 77; exec \"$@\"",
                              dir,
                              bin,
                              command,
                              "--db",
                              db,
                              option,
                              value,
                              NULL};
        if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, out, errout,
                          &status, &err)) {
            g_clear_error(&err);
            status = -1;
        } else
            status = WIFEXITED(status) && WEXITSTATUS(status) != 77 ? WEXITSTATUS(status) : -1;
    } else {
        g_assert_cmpint(g_chmod(dir, 0555), ==, 0);
        const char *argv[] = {bin, command, "--db", db, option, value, NULL};
        g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, out,
                                   errout, &status, &err));
        dq_assert_no_error(err);
        g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
        status = WIFEXITED(status) ? WEXITSTATUS(status) : -2;
    }
    g_free(bin);
    return status;
}

static int docqa_read_only(const char *dir, const char *db, const char *command, char **out,
                           char **errout) {
    return docqa_read_only_with(dir, db, command, NULL, NULL, out, errout);
}

/* status and export only read: a database on read-only media (its folder not writable, so
 * SQLite cannot make the WAL's -shm beside it) is read, not refused. */
static void test_read_only_database(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 2);
    g_assert_cmpint(jt_drain(db, 1), ==, 0);
    char *out = NULL;
    int rc = docqa_read_only(dir, db, "status", &out, NULL);
    if (rc == -1) {
        g_test_skip("no read-only folder here: root, and no read-only bind mount allowed");
        g_free(db);
        g_free(dir);
        return;
    }
    g_assert_cmpint(rc, ==, 0);
    g_assert_nonnull(strstr(out, "jobs: 2 total: 2 done"));
    g_free(out);
    g_assert_cmpint(docqa_read_only(dir, db, "export", &out, NULL), ==, 0);
    char **lines = g_strsplit(out, "\r\n", -1);
    g_assert_cmpint(g_strv_length(lines), ==, 2 + 2); /* header, rows, the empty tail */
    g_strfreev(lines);
    g_free(out);
    /* --where reads the database on a connection of its own, opened as export's is. */
    char *err = NULL;
    g_assert_cmpint(
        docqa_read_only_with(dir, db, "export", "--where", "path LIKE '%/2023/%'", &out, &err), ==,
        0);
    g_test_message("%s", err);
    lines = g_strsplit(out, "\r\n", -1);
    g_assert_cmpint(g_strv_length(lines), ==, 2 + 2);
    g_strfreev(lines);
    g_free(out);
    g_free(err);
    g_free(db);
    g_free(dir);
}

/* Whether strace can trace here (ptrace may be refused in a container). */
static gboolean strace_works(void) {
    const char *probe[] = {"strace", "-qq", "-o", "/dev/null", "true", NULL};
    int status = -1;
    return g_spawn_sync(NULL, (char **)probe, NULL,
                        G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL |
                            G_SPAWN_STDERR_TO_DEV_NULL,
                        NULL, NULL, NULL, NULL, &status, NULL) &&
           g_spawn_check_wait_status(status, NULL);
}

/* The environment for docqa under strace: LeakSanitizer cannot run under ptrace, and in a
 * sanitizer build would fail the traced process at exit. */
static char **traced_env(void) {
    char **env = g_get_environ();
    const char *asan = g_environ_getenv(env, "ASAN_OPTIONS");
    char *off = g_strconcat(asan ? asan : "", asan ? ":" : "", "detect_leaks=0", NULL);
    env = g_environ_setenv(env, "ASAN_OPTIONS", off, TRUE);
    g_free(off);
    return env;
}

/* docqa run with its arguments (NULL-terminated) under strace, the calls `syscall` makes on
 * `path` failed as `inject` says ("EIO:when=1" for the first): its stderr in *err, its exit
 * status back (it must exit, not die). By path, so no count moves with the code. */
static int docqa_injected(const char *path, const char *syscall, const char *inject, char **err,
                          ...) G_GNUC_NULL_TERMINATED;
static int docqa_injected(const char *path, const char *syscall, const char *inject, char **err,
                          ...) {
    char *docqa = dq_test_docqa_path();
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    const char *fixed[] = {"strace", "-f", "-qq", "-o", "/dev/null", "-e"};
    for (size_t i = 0; i < G_N_ELEMENTS(fixed); i++)
        g_ptr_array_add(argv, g_strdup(fixed[i]));
    g_ptr_array_add(argv, g_strconcat("trace=", syscall, NULL));
    g_ptr_array_add(argv, g_strdup("-P"));
    g_ptr_array_add(argv, g_strdup(path));
    g_ptr_array_add(argv, g_strdup("-e"));
    g_ptr_array_add(argv, g_strconcat("inject=", syscall, ":error=", inject, NULL));
    g_ptr_array_add(argv, docqa);
    va_list ap;
    va_start(ap, err);
    for (const char *a = va_arg(ap, const char *); a != NULL; a = va_arg(ap, const char *))
        g_ptr_array_add(argv, g_strdup(a));
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    int status = -1;
    GError *e = NULL;
    char **env = traced_env();
    g_assert_true(g_spawn_sync(NULL, (char **)argv->pdata, env,
                               G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
                               err, &status, &e));
    dq_assert_no_error(e);
    g_strfreev(env);
    g_ptr_array_free(argv, TRUE);
    g_assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* A database of an older schema that SQLite could open only for reading, though it may be
 * written (the open for writing failed: an I/O error, injected by strace on the database's
 * path): migrate, the command that upgrades it, does not tell the user to run a command that
 * writes, and says why it could not write. */
static void test_old_schema_open_refused(void) {
    if (!strace_works()) {
        g_test_skip("strace cannot trace here: the failed open is not injected");
        return;
    }
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "v5.db", NULL);
    GError *e = NULL;
    char *other = g_build_filename(dir, "new.db", NULL);
    DqStore *s = dq_store_open_at(other, 0, &e); /* the newest schema, for the message */
    dq_assert_no_error(e);
    int newest = dq_store_schema_version(s);
    dq_store_close(s);
    g_free(other);
    s = dq_store_open_at(db, 5, &e);
    dq_assert_no_error(e);
    dq_store_close(s);
    char *from = g_strconcat("sqlite:", db, NULL);
    char *err = NULL;
    g_assert_cmpint(
        docqa_injected(db, "openat", "EIO:when=1", &err, "migrate", "--from", from, NULL), ==, 2);
    char *want = g_strdup_printf(
        "docqa: migrate: %s: schema version 5 needs upgrading to %d (docqa may write the file "
        "and its folder, but SQLite could open it or its -wal or -shm only for reading: the "
        "system refused to open them for writing)\n",
        db, newest);
    g_assert_cmpstr(err, ==, want);
    g_free(want);
    g_free(err);
    /* left as it was: migrate without the fault upgrades it, and says to which version */
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa(&out, &err, "migrate", "--from", from, NULL), ==, 0);
    want = g_strdup_printf("%s: schema version %d; ", db, newest);
    if (!g_str_has_prefix(out, want))
        g_error("migrate --from %s said '%s', not '%s...'", from, out, want);
    g_free(want);
    g_free(out);
    g_free(err);
    s = dq_store_open_at(db, 0, &e);
    dq_assert_no_error(e);
    g_assert_cmpint(dq_store_schema_version(s), ==, newest);
    dq_store_close(s);
    g_free(from);
    g_free(db);
    g_free(dir);
}

/* An upgrade whose reads of the database fail (a bad sector), wherever they fall, says which
 * file could not be read and why: SQLite's "database disk image is malformed" alone, from the
 * check of foreign keys or of the schema, read as a corrupt database. */
static void test_old_schema_read_fails(void) {
    if (!strace_works()) {
        g_test_skip("strace cannot trace here: the failed reads are not injected");
        return;
    }
    char *dir = dq_test_tmpdir();
    char *v5 = g_build_filename(dir, "v5.db", NULL);
    GError *e = NULL;
    DqStore *s = dq_store_open_at(v5, 5, &e);
    dq_assert_no_error(e);
    dq_store_close(s);
    char *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(v5, &bytes, &len, NULL));
    for (int n = 1; n <= 60; n++) {
        char *name = g_strdup_printf("v5-%d.db", n);
        char *db = g_build_filename(dir, name, NULL);
        g_assert_true(g_file_set_contents(db, bytes, (gssize)len, NULL));
        char *from = g_strconcat("sqlite:", db, NULL);
        char *when = g_strdup_printf("EIO:when=%d", n);
        char *err = NULL;
        int rc = docqa_injected(db, "pread64", when, &err, "migrate", "--from", from, NULL);
        char *want = g_strdup_printf("read %s: %s", db, g_strerror(EIO));
        if (rc != 0 && (rc != 2 || strstr(err, want) == NULL))
            g_error("migrate, read %d failed: exit %d, said %s", n, rc, err);
        g_free(want);
        g_free(err);
        g_free(when);
        g_free(from);
        g_free(db);
        g_free(name);
    }
    g_free(bytes);
    g_free(v5);
    g_free(dir);
}

/* A database of an older schema (5) read where it cannot be written: the reason given is the
 * schema, and what to do, not the folder's permissions. Where it can be written, status
 * upgrades it, saying so on stderr once. */
static void test_old_schema_reader(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "v5.db", NULL);
    GError *e = NULL;
    DqStore *s = dq_store_open_at(db, 5, &e);
    dq_assert_no_error(e);
    dq_store_close(s);
    char *out = NULL, *err = NULL;
    int rc = docqa_read_only(dir, db, "status", &out, &err);
    if (rc == -1) {
        g_test_skip("no read-only folder here: root, and no read-only bind mount allowed");
    } else {
        g_test_message("%s", err);
        g_assert_cmpint(rc, ==, 2);
        g_assert_nonnull(strstr(err, "schema version 5 needs upgrading to "));
        g_assert_nonnull(strstr(err, "open it once with write access (any docqa command)"));
        g_assert_nonnull(strstr(err, db));
    }
    g_free(out);
    g_free(err);
    g_assert_cmpint(dq_test_docqa(&out, &err, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(err, "upgraded the schema from version 5 to "));
    g_free(out);
    g_free(err);
    g_assert_cmpint(dq_test_docqa(&out, &err, "status", "--db", db, NULL), ==, 0);
    g_assert_null(strstr(err, "upgraded"));
    g_free(out);
    g_free(err);
    g_free(db);
    g_free(dir);
}

/* Workers killed as a whole (kill -9 of the process group, a lost machine): long after their
 * leases ran out their jobs are still 'running'. status says they are stalled, not running, and
 * gives no ETA from them; v_progress counts them apart. */
static void test_status_stalled(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    GError *e = NULL;
    DqStore *s = dq_store_open(db, &e);
    dq_assert_no_error(e);
    GPtrArray *c = store_jobs_claim(s, "dead-worker", "m", 3, dq_wall_ms(), 1, NULL, &e);
    dq_assert_no_error(e);
    g_assert_cmpint(c->len, ==, 3);
    g_ptr_array_free(c, TRUE);
    g_usleep(20000);
    c = store_jobs_claim(s, "live-worker", "other-model", 1, dq_wall_ms(), 3600000, NULL, &e);
    g_ptr_array_free(c, TRUE);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(s),
                                       "SELECT sum(running), sum(stalled), sum(queued) FROM "
                                       "v_progress",
                                       -1, &st, NULL),
                    ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    g_assert_cmpint(sqlite3_column_int(st, 0), ==, 0);
    g_assert_cmpint(sqlite3_column_int(st, 1), ==, 3);
    g_assert_cmpint(sqlite3_column_int(st, 2), ==, 1);
    sqlite3_finalize(st);
    dq_store_close(s);
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, "1 queued (0 retrying), 0 running, 3 stalled"));
    g_assert_nonnull(strstr(out, "3 stalled: their worker stopped"));
    g_assert_nonnull(strstr(out, "ETA unknown"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\"running\" : 0"));
    g_assert_nonnull(strstr(out, "\"stalled\" : 3"));
    g_assert_nonnull(strstr(out, "\"eta_seconds\" : null"));
    g_free(out);
    g_free(db);
    g_free(dir);
}

/* status's text has v_progress's rows: per question and model the same numbers as --json, a
 * long question cut on a character (not a byte) with an ellipsis, and at most 20 rows, then how
 * many more --json has. */
static void test_status_progress_table(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    const char *longq = "Quelle est la somme à payer, TVA comprise, en € ou en ¥ — 合計はいくら?";
    GPtrArray *args = g_ptr_array_new_with_free_func(g_free);
    for (const char *a[] = {"ask", "--db", db, "-m", "m"}, **p = a; p < a + 5; p++)
        g_ptr_array_add(args, g_strdup(*p));
    g_ptr_array_add(args, g_strdup(longq));
    /* the second exactly as wide as its column: shown whole, not cut */
    g_ptr_array_add(args, g_strdup("What is the total due, in EUR?"));
    for (int i = 3; i <= 23; i++)
        g_ptr_array_add(args, g_strdup_printf("Question %d?", i));
    g_ptr_array_add(args, NULL);
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa_in(NULL, NULL, (const char *const *)args->pdata, &out, NULL), ==,
                    0);
    g_free(out);
    g_ptr_array_free(args, TRUE);
    /* one job running, one done, one failed: the first rows differ from the rest */
    GError *e = NULL;
    DqStore *s = dq_store_open(db, &e);
    dq_assert_no_error(e);
    GPtrArray *c = store_jobs_claim(s, "w", "m", 3, dq_wall_ms(), 3600000, NULL, &e);
    dq_assert_no_error(e);
    g_assert_cmpint(c->len, ==, 3);
    DqJobAnswer a = {.job_id = ((const DqClaimedJob *)g_ptr_array_index(c, 0))->job_id,
                     .text = "x",
                     .started_at = "2026-01-01T00:00:00.000Z",
                     .finished_at = "2026-01-01T00:00:01.000Z",
                     .device = "cpu",
                     .weights = "stored",
                     .exact = 1};
    int written = 0;
    g_assert_true(store_jobs_complete(s, "w", &a, 1, &written, &e));
    DqJobState st = DQ_JOB_N_STATES;
    g_assert_true(store_jobs_fail(s, "w", ((const DqClaimedJob *)g_ptr_array_index(c, 1))->job_id,
                                  "model", "boom", FALSE, dq_wall_ms(), 1000, &st, &e));
    dq_assert_no_error(e);
    g_assert_cmpint(st, ==, DQ_JOB_FAILED);
    g_ptr_array_free(c, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);

    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_test_message("%s", out);
    g_assert_true(g_utf8_validate(out, -1, NULL));
    char *json = NULL;
    g_assert_cmpint(dq_test_docqa(&json, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    JsonParser *jp = json_parser_new();
    g_assert_true(json_parser_load_from_data(jp, json, -1, NULL));
    JsonArray *rows =
        json_object_get_array_member(json_node_get_object(json_parser_get_root(jp)), "progress");
    g_assert_cmpint(json_array_get_length(rows), ==, 23);

    char **lines = g_strsplit(out, "\n", -1);
    guint head = 0;
    while (lines[head] && !g_str_has_prefix(lines[head], "per question"))
        head++;
    g_assert_nonnull(lines[head]);
    g_assert_true(g_str_has_prefix(lines[head + 1], "  question "));
    /* the long question: its first 29 characters, then the ellipsis, in 30 columns */
    char *start = g_utf8_substring(longq, 0, 29);
    char *cut = g_strconcat("  ", start, "\u2026  m ", NULL);
    g_assert_true(g_str_has_prefix(lines[head + 2], cut));
    g_free(start);
    g_free(cut);
    for (guint i = 0; i < 20; i++) {
        JsonObject *r = json_array_get_object_element(rows, i);
        const char *line = lines[head + 2 + i];
        g_assert_nonnull(line);
        if (i > 0) {
            const char *q = json_object_get_string_member(r, "question");
            g_assert_true(g_str_has_prefix(line + 2, q));
        }
        /* none of a row's jobs cancelled: a percentage, 0.0 where nothing is done yet */
        g_assert_false(json_object_get_null_member(r, "percent_done"));
        /* the numbers are the line's last six fields */
        char **f = g_strsplit_set(line, " ", -1);
        GPtrArray *words = g_ptr_array_new();
        for (char **w = f; *w; w++)
            if (**w)
                g_ptr_array_add(words, *w);
        g_assert_cmpuint(words->len, >=, 6);
        const char **last = (const char **)words->pdata + words->len - 6;
        char *want = g_strdup_printf("%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT,
                                     json_object_get_int_member(r, "done"),
                                     json_object_get_int_member(r, "total"));
        g_assert_cmpstr(last[0], ==, want);
        g_free(want);
        want = g_strdup_printf("%.1f", json_object_get_double_member(r, "percent_done"));
        g_assert_cmpstr(last[1], ==, want);
        g_free(want);
        const char *keys[] = {"running", "stalled", "failed", "dead"};
        for (int k = 0; k < 4; k++)
            g_assert_cmpint(g_ascii_strtoll(last[2 + k], NULL, 10), ==,
                            json_object_get_int_member(r, keys[k]));
        g_ptr_array_free(words, TRUE);
        g_strfreev(f);
    }
    /* the answer is the first question's */
    g_assert_nonnull(strstr(lines[head + 2], " 1/2 "));
    g_assert_cmpstr(lines[head + 22], ==, "  ... 3 more (status --json has them all)");
    g_strfreev(lines);
    g_object_unref(jp);
    g_free(json);
    g_free(out);

    /* v_progress dropped: the rest is shown, and stderr says why the table is not */
    sqlite3 *h = NULL;
    g_assert_cmpint(sqlite3_open(db, &h), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(h, "DROP VIEW v_progress", NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(h);
    char *err = NULL;
    g_assert_cmpint(dq_test_docqa(&out, &err, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "jobs: 46 total"));
    g_assert_null(strstr(out, "per question"));
    g_assert_nonnull(strstr(err, "v_progress is missing (dropped?): no progress per question"));
    g_free(out);
    g_free(err);
    g_free(db);
    g_free(dir);
}

/* status --json writes its numbers as the text and v_progress show them: 2 of 3 jobs done is
 * percent_done 66.7 (json-glib alone wrote 66.700000000000003), answers/s with at most 2
 * decimals, the ETA in whole seconds. */
static void test_status_json_numbers(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 3);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 3);
    GError *e = NULL;
    DqStore *s = dq_store_open(db, &e);
    dq_assert_no_error(e);
    GPtrArray *c = store_jobs_claim(s, "w", "m", 2, dq_wall_ms(), 3600000, NULL, &e);
    dq_assert_no_error(e);
    g_assert_cmpint(c->len, ==, 2);
    for (guint i = 0; i < c->len; i++) {
        GDateTime *t = g_date_time_new_now_utc();
        char *now = g_date_time_format(t, "%Y-%m-%dT%H:%M:%S.000Z");
        g_date_time_unref(t);
        DqJobAnswer a = {.job_id = ((const DqClaimedJob *)g_ptr_array_index(c, i))->job_id,
                         .text = "x",
                         .started_at = now,
                         .finished_at = now,
                         .exact = 1};
        int written = 0;
        g_assert_true(store_jobs_complete(s, "w", &a, 1, &written, &e));
        dq_assert_no_error(e);
        g_free(now);
    }
    g_ptr_array_free(c, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, "\"percent_done\" : 66.7,\n"));
    GRegex *re = g_regex_new("\"answers_per_second\" : [0-9]+\\.[0-9]{1,2},\n", 0, 0, NULL);
    g_assert_true(g_regex_match(re, out, 0, NULL));
    g_regex_unref(re);
    re = g_regex_new("\"eta_seconds\" : ([0-9]+\\.0|null),\n", 0, 0, NULL);
    g_assert_true(g_regex_match(re, out, 0, NULL));
    g_regex_unref(re);
    g_free(out);
    g_free(db);
    g_free(dir);
}

/* The page store gone from beside the database (moved without it): status says so, naming the
 * folder it looked at, while jobs wait for it. DOCQA_PAGES set for an SQLite database is ignored,
 * and ingest says so, naming the page store it uses. */
static void test_page_store_notes(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 1);
    char *pages = g_strconcat(db, ".pages", NULL), *away = g_strconcat(db, ".away", NULL);
    char *out = NULL, *err = NULL;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_null(strstr(out, "page store"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "m", "Now?", NULL), ==, 0);
    g_assert_null(strstr(err, "warning"));
    g_free(err);
    g_assert_cmpint(g_rename(pages, away), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_test_message("%s", out);
    char *line = g_strdup_printf("page store: %s: the page store is missing or empty", pages);
    g_assert_nonnull(strstr(out, line));
    g_free(line);
    g_free(out);
    /* ask queues the jobs all the same, and says that workers will stop on them. */
    g_assert_cmpint(dq_test_docqa(&out, &err, "ask", "--db", db, "-m", "m", "Later?", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "1 new job"));
    line = g_strdup_printf("docqa: ask: warning: %s: the page store is missing or empty", pages);
    g_assert_nonnull(strstr(err, line));
    g_assert_nonnull(strstr(err, "`docqa run` stops on them until the page store is there"));
    g_free(line);
    g_free(out);
    g_free(err);
    /* no page asked about: nothing a worker would stop on, no warning */
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "m", "--n-res", "64", "Later?", NULL),
        ==, 0);
    g_assert_nonnull(strstr(err, "no ingested pages match"));
    g_assert_null(strstr(err, "warning"));
    g_free(err);
    g_assert_cmpint(g_rename(away, pages), ==, 0);
    char *empty = g_build_filename(dir, "empty", NULL);
    g_assert_cmpint(g_mkdir(empty, 0755), ==, 0);
    char *env = g_strdup_printf("DOCQA_PAGES=%s", away);
    const char *envs[] = {env, NULL};
    const char *args[] = {"ingest", "--db", db, "--tile", "64", empty, NULL};
    g_assert_cmpint(docqa_with(envs, NULL, &out, &err, args), ==, 0);
    char *note = g_strdup_printf("docqa: ingest: DOCQA_PAGES (%s) is ignored: an SQLite database "
                                 "keeps its page images beside its file, in %s",
                                 away, pages);
    g_assert_nonnull(strstr(err, note));
    g_free(note);
    g_free(out);
    g_free(err);
    g_free(env);
    g_free(empty);
    g_free(pages);
    g_free(away);
    g_free(db);
    g_free(dir);
}

static char *views_sql(const char *db) {
    sqlite3 *h = NULL;
    g_assert_cmpint(sqlite3_open(db, &h), ==, SQLITE_OK);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(h,
                                       "SELECT group_concat(sql, ';') FROM (SELECT sql FROM "
                                       "sqlite_schema WHERE type = 'view' ORDER BY name)",
                                       -1, &st, NULL),
                    ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    char *sql = g_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(h);
    return sql;
}

/* Views dropped by hand (they are derived): export says which and how to restore it, without a
 * header first; `docqa migrate --from DB` makes them again, as the migrations made them. */
static void test_dropped_views(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 1);
    g_assert_cmpint(jt_drain(db, 1), ==, 0);
    char *want = views_sql(db);
    sqlite3 *h = NULL;
    g_assert_cmpint(sqlite3_open(db, &h), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(h,
                                 "DROP VIEW v_answers; DROP VIEW v_progress; DROP VIEW "
                                 "documents_current",
                                 NULL, NULL, NULL),
                    ==, SQLITE_OK);
    sqlite3_close(h);
    char *out = NULL, *err = NULL;
    g_assert_cmpint(dq_test_docqa(&out, &err, "export", "--db", db, NULL), ==, 2);
    g_assert_cmpstr(out, ==, "");
    g_assert_nonnull(strstr(err, "the view v_answers is missing"));
    g_assert_nonnull(strstr(err, "docqa migrate --from"));
    g_free(out);
    g_free(err);
    /* --current reads v_current_answers over documents_current: the one missing is named */
    g_assert_cmpint(dq_test_docqa(&out, &err, "export", "--db", db, "--current", NULL), ==, 2);
    g_assert_cmpstr(out, ==, "");
    g_assert_nonnull(strstr(err, "the view documents_current is missing"));
    g_assert_nonnull(strstr(err, "docqa migrate --from"));
    g_free(out);
    g_free(err);
    g_assert_cmpint(dq_test_docqa(&out, &err, "migrate", "--from", db, NULL), ==, 0);
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, "views made again: documents_current, v_answers, v_progress"));
    g_free(out);
    g_free(err);
    char *got = views_sql(db);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\r\n"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "migrate", "--from", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "docqa's views are all there"));
    g_free(out);
    /* v_current_answers alone: export --current names it, a plain export does not need it */
    g_assert_cmpint(sqlite3_open(db, &h), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(h, "DROP VIEW v_current_answers", NULL, NULL, NULL), ==,
                    SQLITE_OK);
    sqlite3_close(h);
    g_assert_cmpint(dq_test_docqa(&out, &err, "export", "--db", db, "--current", NULL), ==, 2);
    g_assert_cmpstr(out, ==, "");
    g_assert_nonnull(strstr(err, "the view v_current_answers is missing"));
    g_assert_nonnull(strstr(err, "docqa migrate --from"));
    g_free(out);
    g_free(err);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\r\n"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "migrate", "--from", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "views made again: v_current_answers"));
    g_free(out);
    got = views_sql(db);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
    g_free(want);
    g_free(db);
    g_free(dir);
}

/* A copy of db (its last changes still in its -wal, as a running writer leaves them) in a
 * folder of its own, with its -wal as it was or emptied, and no -shm: a database copied, or
 * mounted read-only, without it. Returns the copy's path. */
static char *copy_without_shm(const char *db, const char *to_dir, gboolean empty_wal) {
    sqlite3 *c = NULL;
    g_assert_cmpint(sqlite3_open(db, &c), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(c,
                                 "PRAGMA wal_autocheckpoint = 0; UPDATE jobs SET state = 'dead', "
                                 "finished_at = NULL WHERE id = 1; DELETE FROM answers WHERE "
                                 "job_id = 1",
                                 NULL, NULL, NULL),
                    ==, SQLITE_OK);
    char *copy = g_build_filename(to_dir, "copy.db", NULL);
    char *wal = g_strconcat(db, "-wal", NULL), *copy_wal = g_strconcat(copy, "-wal", NULL);
    const char *from[] = {db, wal}, *to[] = {copy, copy_wal};
    for (int i = 0; i < 2; i++) {
        char *bytes = NULL;
        gsize n = 0;
        g_assert_true(g_file_get_contents(from[i], &bytes, &n, NULL));
        g_assert_cmpuint(n, >, i == 0 ? 0 : 32);
        g_assert_true(g_file_set_contents(to[i], bytes, i == 1 && empty_wal ? 0 : (gssize)n, NULL));
        g_free(bytes);
    }
    sqlite3_close(c);
    g_free(wal);
    g_free(copy_wal);
    return copy;
}

/* A read-only database with a -wal and no -shm: SQLite reads the -wal's transactions only
 * through a -shm it cannot make there. status and export refuse it, naming it and saying what
 * to do, rather than read the database file without them (immutable: job 1 answered, when its
 * -wal says it is dead); an empty -wal holds nothing and is read past. */
static void test_read_only_database_wal_without_shm(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 2);
    g_assert_cmpint(jt_drain(db, 1), ==, 0);
    char *ro = g_build_filename(dir, "ro", NULL);
    g_assert_cmpint(g_mkdir(ro, 0755), ==, 0);
    char *copy = copy_without_shm(db, ro, FALSE);
    char *out = NULL, *errout = NULL;
    int rc = docqa_read_only(ro, copy, "status", &out, &errout);
    if (rc == -1) {
        g_test_skip("no read-only folder here: root, and no read-only bind mount allowed");
        goto out;
    }
    g_test_message("%s", errout);
    g_assert_cmpint(rc, ==, 2);
    g_assert_null(strstr(out, "2 done"));
    g_assert_nonnull(strstr(errout, copy));
    g_assert_nonnull(strstr(errout, "-wal holds transactions not yet in it"));
    g_assert_nonnull(strstr(errout, "copy"));
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&errout, g_free);
    g_assert_cmpint(docqa_read_only(ro, copy, "export", &out, &errout), ==, 2);
    g_assert_nonnull(strstr(errout, "-wal holds transactions not yet in it"));
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&errout, g_free);
    /* Copied to a folder it may write, it reads with its last change: job 1 dead. */
    char *rw = g_build_filename(dir, "copy.db", NULL);
    char *rw_wal = g_strconcat(rw, "-wal", NULL), *ro_wal = g_strconcat(copy, "-wal", NULL);
    char *bytes = NULL;
    gsize n = 0;
    g_assert_true(g_file_get_contents(copy, &bytes, &n, NULL));
    g_assert_true(g_file_set_contents(rw, bytes, (gssize)n, NULL));
    g_free(bytes);
    g_assert_true(g_file_get_contents(ro_wal, &bytes, &n, NULL));
    g_assert_true(g_file_set_contents(rw_wal, bytes, (gssize)n, NULL));
    g_free(bytes);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", rw, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "1 done"));
    g_assert_nonnull(strstr(out, "1 dead"));
    g_clear_pointer(&out, g_free);
    g_free(rw);
    g_free(rw_wal);
    g_free(ro_wal);
    g_free(copy);
    /* An empty -wal: nothing left out, read as the database file says. */
    char *ro2 = g_build_filename(dir, "ro2", NULL);
    g_assert_cmpint(g_mkdir(ro2, 0755), ==, 0);
    copy = copy_without_shm(db, ro2, TRUE);
    g_assert_cmpint(docqa_read_only(ro2, copy, "status", &out, &errout), ==, 0);
    g_assert_nonnull(strstr(out, "jobs: 2 total:"));
    g_free(ro2);
out:
    g_free(out);
    g_free(errout);
    g_free(copy);
    g_free(ro);
    g_free(db);
    g_free(dir);
}

/* In a forked child: a tmpfs of 4 MB of its own at mnt (a mount namespace), a database there
 * with 2 documents x 10 pages and 10 x 3 questions for model_id, and a file filling the disk up
 * to `leave` bytes. Exits the child with 77 when it may not mount (no CAP_SYS_ADMIN), 3 or 4
 * when it could not set the disk up. */
static char *small_disk_db(const char *mnt, const char *model_id, guint64 leave) {
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", mnt, "tmpfs", 0, "size=4m") != 0)
        _exit(77);
    char *db = jt_make_db(mnt, 2, 10);
    if (jt_ask(db, 10, model_id, 3) != 200)
        _exit(3);
    char *filler = g_build_filename(mnt, "filler", NULL);
    FILE *f = fopen(filler, "w");
    struct statvfs fs;
    if (f == NULL || statvfs(mnt, &fs) != 0)
        _exit(4);
    guint64 room = (guint64)fs.f_bavail * fs.f_frsize;
    static char block[4096];
    for (guint64 n = 0; n + leave < room; n += sizeof block)
        if (fwrite(block, 1, sizeof block, f) != sizeof block)
            break;
    (void)fclose(f); /* may fail: the disk is (nearly) full, as wanted */
    g_free(filler);
    return db;
}

/* The disk fills while a worker answers (a database on a small file system): the worker stops
 * with the store's error, and gives back the jobs it holds without using an attempt, rather
 * than leaving them leased (each episode then cost an attempt, and they ended dead). However
 * little room is left: with 140 KB the worker claimed and answered, and then the release found
 * no room either (its checkpoint must grow the database file), so its 4 jobs stayed leased. Needs a
 * tmpfs of its own: a mount namespace, so root with CAP_SYS_ADMIN; skipped otherwise. */
static void test_disk_full_gives_back(void) {
    char *dir = dq_test_tmpdir();
    char *mnt = g_build_filename(dir, "small", NULL);
    g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
    /* KB left free: less than the worker sets aside (it does not start), then as little
     * beyond it (it claims, and the disk fills at once), and room for some answers */
    guint64 reserve = DQ_WORKER_RESERVE_BYTES(4) >> 10;
    guint64 leaves[64];
    gsize n_leaves = 0;
    for (guint64 kb = 0; kb <= 140; kb += 20)
        leaves[n_leaves++] = kb;
    for (guint64 kb = reserve; kb <= reserve + 140; kb += 8)
        leaves[n_leaves++] = kb;
    leaves[n_leaves++] = 1024;
    for (gsize i = 0; i < n_leaves; i++) {
        gboolean must_answer = i == n_leaves - 1;
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
            char *db = small_disk_db(mnt, "tiny", leaves[i] * 1024);
            DqAnswerer *a = jt_answerer_new(NULL);
            DqWorkerOptions opt = {
                .db_path = db, .model_id = "tiny", .batch = 4, .until_empty = TRUE};
            volatile sig_atomic_t stop = 0;
            DqWorkerStats stats;
            GError *err = NULL;
            gboolean ok = queue_worker_run(&opt, a, &stop, &stats, &err);
            dq_answerer_free(a);
            /* With nothing left even the open fails ("disk I/O error": no room for the -shm) */
            if (ok || err == NULL || (must_answer && strstr(err->message, "full") == NULL)) {
                fprintf(stderr, "%" G_GUINT64_FORMAT " KB left: %s\n", leaves[i],
                        err != NULL ? err->message : "no error");
                _exit(5); /* the disk did not fill: the test proves nothing */
            }
            /* room for reading, which needs the -shm (as a user makes room before looking) */
            char *filler = g_build_filename(mnt, "filler", NULL);
            g_unlink(filler);
            gint64 running = jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'running'");
            gint64 used = jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'queued' "
                                           "AND attempts > 0");
            gint64 done = jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'");
            fprintf(stderr,
                    "disk full, %" G_GUINT64_FORMAT " KB left: %" G_GINT64_FORMAT
                    " done, %" G_GINT64_FORMAT " running, %" G_GINT64_FORMAT
                    " queued with an attempt used (%s)\n",
                    leaves[i], done, running, used, err->message);
            _exit(running == 0 && used == 0 && (done > 0 || !must_answer) ? 0 : 6);
        }
        if (!dq_test_tmpfs_child_passed(pid))
            break;
    }
    g_rmdir(mnt);
    g_free(mnt);
    g_free(dir);
}

/* Results a user did not get must not look delivered: every command that writes to stdout
 * exits 2 naming it when the write fails (a full disk: /dev/full). */
static void test_stdout_write_errors(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *tiff = g_build_filename(dq_test_source_dir(), "tests", "ingest", "corpus", "tiff",
                                  "imagetiff-minisblack-1c-8b.tiff", NULL);
    char *db2 = g_build_filename(dir, "ingest.db", NULL);
    /* answers enough to fill stdio's buffer: export's rows meet the error, not its last flush */
    char *dir3 = dq_test_tmpdir();
    char *answered = jt_make_db(dir3, 1, 1);
    g_assert_cmpint(jt_ask(answered, 60, "m", 3), ==, 60);
    g_assert_cmpint(jt_drain(answered, 4), ==, 0);
    const char *cmds[][12] = {
        {"generate", "-m", model, "-p", "hi", "--max-new-tokens", "2", NULL},
        {"export", "--db", answered, NULL},
        {"ask", "--db", db, "-m", "tiny", "--json", "Total?", NULL},
        {"requeue", "--db", db, "--failed", "--json", NULL},
        {"cancel", "--db", db, "--question", "Total?", "--dry-run", "--json", NULL},
        {"run", "--db", db, "--model", model, "--model-id", "tiny", "--until-empty", "-q", "--json",
         NULL},
        {"generate", "-m", model, "-p", "hi", "--max-new-tokens", "2", "--json", NULL},
        {"ask", "--db", db, "-m", "tiny", "Total?", NULL},
        {"status", "--db", db, NULL},
        {"status", "--db", db, "--json", NULL},
        {"export", "--db", db, "--format", "csv", NULL},
        {"requeue", "--db", db, "--failed", NULL},
        {"cancel", "--db", db, "--question", "Total?", "--dry-run", NULL},
        {"cancel", "--db", db, "--question", "Total?", NULL},
        {"ingest", "--db", db2, "--json", tiff, NULL},
        /* jobs only for another model id: the summary is flushed before that is said */
        {"ask", "--db", db, "-m", "other", "Other?", NULL},
        {"run", "--db", db, "--model", model, "--until-empty", "-q", NULL},
        {"version", NULL},
        {"help", NULL},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
        char *err = NULL;
        int rc = docqa_with(NULL, "/dev/full", NULL, &err, cmds[i]);
        char *want =
            g_strdup_printf("docqa: %s: standard output: %s\n", cmds[i][0], g_strerror(ENOSPC));
        if (rc != 2 || !g_str_has_suffix(err, want))
            g_error("%s %s: exit %d, said '%s'", cmds[i][0], cmds[i][1] ? cmds[i][1] : "", rc, err);
        g_free(want);
        g_free(err);
    }
    g_free(db2);
    g_free(answered);
    g_free(dir3);
    g_free(tiff);
    g_free(db);
    g_free(dir);
    g_free(model);
}

/* A copy that migrate committed but could not report (stdout full) says it was made, and a run
 * again into it says the copy is complete, not only that the database is not empty; one that
 * differs from the source in a table is refused as before. */
static void test_migrate_copy_reported_unwritable(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    char *copy = g_build_filename(dir, "copy.db", NULL), *err = NULL;
    const char *args[] = {"migrate", "--from", db, "--to", copy, NULL};
    g_assert_cmpint(docqa_with(NULL, "/dev/full", NULL, &err, args), ==, 2);
    char *want = g_strdup_printf("docqa: migrate: standard output: %s (the copy was made all the "
                                 "same: %s holds the ",
                                 g_strerror(ENOSPC), copy);
    g_assert_true(g_str_has_prefix(err, want));
    g_free(want);
    want = g_strdup_printf(" rows of %s, committed)\n", db);
    g_assert_true(g_str_has_suffix(err, want));
    g_free(want);
    g_free(err);
    g_assert_cmpint(jt_query_int(copy, "SELECT count(*) FROM pages"), ==, 2);
    /* the same copy where stdout takes the report: rows, plural */
    char *copy2 = g_build_filename(dir, "copy2.db", NULL), *out = NULL;
    const char *args2[] = {"migrate", "--from", db, "--to", copy2, NULL};
    g_assert_cmpint(docqa_with(NULL, NULL, &out, NULL, args2), ==, 0);
    want = g_strdup_printf(" rows from %s to %s\n", db, copy2);
    if (!g_str_has_prefix(out, "migrated ") || !g_str_has_suffix(out, want))
        g_error("migrate said '%s'", out);
    g_free(want);
    g_free(out);
    g_free(copy2);
    g_assert_cmpint(docqa_with(NULL, NULL, NULL, &err, args), ==, 2);
    want = g_strdup_printf("docqa: %s: already holds 1 row in documents, and as many rows in "
                           "every table as %s: the copy is complete (an earlier migrate made "
                           "it); nothing copied\n",
                           copy, db);
    g_assert_cmpstr(err, ==, want);
    g_free(want);
    g_free(err);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 2);
    g_assert_cmpint(docqa_with(NULL, NULL, NULL, &err, args), ==, 2);
    want = g_strdup_printf("docqa: %s: already holds 1 row in documents: migrate into an empty "
                           "database (nothing is merged)\n",
                           copy);
    g_assert_cmpstr(err, ==, want);
    g_free(want);
    g_free(err);
    g_free(copy);
    g_free(db);
    g_free(dir);
}

/* Every command's --help (and `docqa help COMMAND`) goes through the same check of stdout: GLib's
 * own --help printed and exited 0 whatever became of the text. */
static void test_help_write_errors(void) {
    const char *commands[] = {"version", "ingest",  "ask",      "run",     "status",
                              "export",  "requeue", "generate", "migrate", "cancel"};
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        char *want =
            g_strdup_printf("docqa: %s: standard output: %s\n", commands[i], g_strerror(ENOSPC));
        const char *as_option[] = {commands[i], "--help", NULL};
        const char *as_command[] = {"help", commands[i], NULL};
        const char *const *forms[] = {as_option, as_command};
        for (size_t f = 0; f < G_N_ELEMENTS(forms); f++) {
            char *err = NULL;
            int rc = docqa_with(NULL, "/dev/full", NULL, &err, forms[f]);
            if (rc != 2 || !g_str_has_suffix(err, want))
                g_error("%s %s: exit %d, said '%s'", forms[f][0], forms[f][1], rc, err);
            g_free(err);
            char *out = NULL;
            g_assert_cmpint(docqa_with(NULL, NULL, &out, NULL, forms[f]), ==, 0);
            char *usage = g_strdup_printf("docqa %s [OPTION", commands[i]);
            if (strstr(out, usage) == NULL)
                g_error("%s %s: no '%s' in '%s'", forms[f][0], forms[f][1], usage, out);
            g_free(usage);
            g_free(out);
        }
        g_free(want);
    }
    char *out = NULL, *err = NULL;
    const char *run_help[] = {"run", "--help", NULL};
    g_assert_cmpint(docqa_with(NULL, NULL, &out, NULL, run_help), ==, 0);
    g_assert_nonnull(strstr(out, "cpu-ref (the float32 reference"));
    g_free(out);
    const char *help_nosuch[] = {"help", "nosuch", NULL};
    g_assert_cmpint(docqa_with(NULL, NULL, NULL, &err, help_nosuch), ==, 2);
    g_assert_nonnull(strstr(err, "docqa: help: unknown command 'nosuch'"));
    g_free(err);
    const char *help_help[] = {"help", "help", NULL};
    g_assert_cmpint(docqa_with(NULL, NULL, &out, NULL, help_help), ==, 0);
    g_assert_nonnull(strstr(out, "usage: docqa COMMAND [OPTIONS]"));
    /* The list says what requeue's own --help says: answered jobs come back too (--approximate,
     * --stale, --done), not only dead, failed and cancelled ones. */
    g_assert_nonnull(
        strstr(out, "requeue    queue dead, failed, cancelled or answered jobs again"));
    g_free(out);
}

/* What a new user gets wrong, answered by name before any work: a database path that is a
 * folder or lies in none, a model path that is a file, an option value the workers would refuse,
 * a document that never ingested. */
static void test_user_errors(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *snapshot = make_snapshot(dir, "tiny");
    char *config = g_build_filename(snapshot, "config.json", NULL);
    char *nodir_db = g_build_filename(dir, "nodir", "x.db", NULL);
    char *nodir = g_build_filename(dir, "nodir", NULL);
    char *doc = g_build_filename(dq_test_source_dir(), "examples", "docs", "receipt.pdf", NULL);
    char *out = NULL, *err = NULL;

    /* --db: a folder, or a file in a folder that does not exist; each message names the
     * command, as its others do. */
    const char *on_dir[][8] = {
        {"status", "--db", dir, NULL},
        {"export", "--db", dir, NULL},
        {"ingest", "--db", dir, doc, NULL},
        {"ask", "--db", dir, "-m", "tiny", "Q?", NULL},
        {"requeue", "--db", dir, "--failed", NULL},
        {"cancel", "--db", dir, "--model", "tiny", NULL},
        {"run", "--db", dir, "--model", snapshot, "--until-empty", NULL},
        {"migrate", "--from", dir, "--to", nodir_db, NULL},
        {"migrate", "--from", db, "--to", dir, NULL},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(on_dir); i++) {
        int rc = docqa_with(NULL, NULL, NULL, &err, on_dir[i]);
        char *is_dir = g_strdup_printf("docqa: %s: %s: is a directory, not a database file\n",
                                       on_dir[i][0], dir);
        if (rc != 2 || strcmp(err, is_dir) != 0)
            g_error("%s --db DIR: exit %d, said '%s'", on_dir[i][0], rc, err);
        g_free(is_dir);
        g_free(err);
    }
    char *none = g_build_filename(dir, "none.db", NULL);
    const char *on_none[][8] = {
        {"status", "--db", none, NULL},
        {"status", "--json", "--db", none, NULL},
        {"export", "--db", none, NULL},
        {"ask", "--db", none, "-m", "tiny", "Q?", NULL},
        {"requeue", "--db", none, "--failed", NULL},
        {"cancel", "--db", none, "--model", "tiny", NULL},
        {"run", "--db", none, "--model", snapshot, "--until-empty", NULL},
        {"migrate", "--from", none, NULL},
        {"migrate", "--from", none, "--to", nodir_db, NULL},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(on_none); i++) {
        int rc = docqa_with(NULL, NULL, NULL, &err, on_none[i]);
        char *said = g_strdup_printf("docqa: %s: %s: no such database (docqa ingest creates it)\n",
                                     on_none[i][0], none);
        if (rc != 2 || strcmp(err, said) != 0)
            g_error("%s --db NONE: exit %d, said '%s'", on_none[i][0], rc, err);
        g_free(said);
        g_free(err);
    }
    g_assert_false(g_file_test(none, G_FILE_TEST_EXISTS));
    g_free(none);
    const char *in_nodir[][8] = {
        {"ingest", "--db", nodir_db, doc, NULL},
        {"migrate", "--from", db, "--to", nodir_db, NULL},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(in_nodir); i++) {
        int rc = docqa_with(NULL, NULL, NULL, &err, in_nodir[i]);
        char *no_folder =
            g_strdup_printf("docqa: %s: %s: the folder %s does not exist (create it first)\n",
                            in_nodir[i][0], nodir_db, nodir);
        if (rc != 2 || strcmp(err, no_folder) != 0)
            g_error("%s into a missing folder: exit %d, said '%s'", in_nodir[i][0], rc, err);
        g_free(no_folder);
        g_free(err);
    }
    g_assert_false(g_file_test(nodir, G_FILE_TEST_EXISTS));

    /* --model: a file gets one message from every command. */
    const char *file_model[][10] = {
        {"ingest", "--db", db, "--model", config, doc, NULL},
        {"generate", "--model", config, "--prompt", "Date?", NULL},
        {"run", "--db", db, "--model", config, "--until-empty", NULL},
        {"ask", "--db", db, "--model", config, "Date?", NULL},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(file_model); i++) {
        char *want = g_strdup_printf("docqa: %s: --model %s: not a directory (expected a SmolVLM "
                                     "snapshot directory)\n",
                                     file_model[i][0], config);
        int rc = docqa_with(NULL, NULL, NULL, &err, file_model[i]);
        if (rc != 2 || strcmp(err, want) != 0)
            g_error("%s --model FILE: exit %d, said '%s'", file_model[i][0], rc, err);
        g_free(err);
        g_free(want);
    }

    /* run: a bad option value is refused before the queue is looked at (no "nothing queued"). */
    g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", snapshot, "--weights",
                                  "int4", "--until-empty", NULL),
                    ==, 2);
    g_assert_cmpstr(err, ==,
                    "docqa: run: --weights int4: unknown (expected stored, int8 or bf16)\n");
    g_free(err);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "run", "--db", db, "--model", snapshot, "--draft",
                                  "int4", "--until-empty", NULL),
                    ==, 2);
    g_assert_cmpstr(err, ==, "docqa: run: --draft int4: unknown (expected none or int8)\n");
    g_free(err);

    /* ask --prompt: the templates are built in; an unknown name lists them. */
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "--prompt", "nope", "Q?", NULL),
        ==, 2);
    g_assert_nonnull(strstr(err, "prompt 'nope': no such prompt template (built in: docvqa)"));
    g_free(err);

    /* ask -d: a document that failed to ingest says so, and why. */
    char *missing = g_build_filename(dir, "nosuch.pdf", NULL);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ingest", "-q", "--db", db, missing, NULL), ==, 1);
    g_free(out);
    gint64 id = jt_query_int(db, "SELECT max(id) FROM documents");
    char *id_text = g_strdup_printf("%" G_GINT64_FORMAT, id);
    g_assert_cmpint(
        dq_test_docqa(&out, &err, "ask", "--db", db, "-m", "tiny", "-d", id_text, "Q?", NULL), ==,
        2);
    char *want =
        g_strdup_printf("document %s (%s) failed to ingest (unreadable: ", id_text, missing);
    if (strstr(err, want) == NULL || strstr(err, "run `docqa ingest` first") != NULL)
        g_error("ask -d FAILED: said '%s'", err);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 0);
    g_free(want);
    g_free(out);
    g_free(err);
    g_free(id_text);
    g_free(missing);

    g_free(doc);
    g_free(nodir);
    g_free(nodir_db);
    g_free(config);
    g_free(snapshot);
    g_free(db);
    g_free(dir);
}

/* --max-new-tokens takes 1 to INT_MAX: past the model's positions generation stops at the last
 * one, said on stderr and in the JSON (transformers does not refuse such a request either);
 * a prompt that leaves no room is refused. */
static void test_generate_length(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *snap = dq_test_snapshot_with_positions(model, 16);
    const char *counts[] = {"8", "2147483647"}; /* the prompt "hi" is 9 tokens */
    for (size_t i = 0; i < G_N_ELEMENTS(counts); i++) {
        char *out = NULL, *err = NULL;
        const char *args[] = {"generate",         "-m",      snap,           "-p",     "hi",
                              "--max-new-tokens", counts[i], "--ignore-eos", "--json", NULL};
        g_assert_cmpint(docqa_with(NULL, NULL, &out, &err, args), ==, 0);
        char *note = g_strdup_printf("docqa: generate: note: stopped after 7 new tokens: the "
                                     "sequence reached the model's 16 positions "
                                     "(--max-new-tokens %s)\n",
                                     counts[i]);
        g_assert_cmpstr(err, ==, note);
        JsonParser *p = json_parser_new();
        g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        g_assert_cmpstr(json_object_get_string_member(o, "finish_reason"), ==, "positions");
        g_assert_cmpint(json_array_get_length(json_object_get_array_member(o, "output_ids")), ==,
                        7);
        g_object_unref(p);
        g_free(note);
        g_free(out);
        g_free(err);
    }
    /* One token comes from the prefill alone: no decode step, a decode rate of 0 (not 0 / 0). */
    const char *one[] = {"generate",         "-m", snap,           "-p",     "hi",
                         "--max-new-tokens", "1",  "--ignore-eos", "--json", NULL};
    char *out = NULL, *one_err = NULL;
    g_assert_cmpint(docqa_with(NULL, NULL, &out, &one_err, one), ==, 0);
    g_assert_cmpstr(one_err, ==, "");
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    g_assert_cmpstr(json_object_get_string_member(o, "finish_reason"), ==, "length");
    g_assert_cmpint(json_array_get_length(json_object_get_array_member(o, "output_ids")), ==, 1);
    JsonNode *rate = json_object_get_member(o, "decode_tokens_per_s");
    g_assert_true(JSON_NODE_HOLDS_VALUE(rate)); /* a number, not null */
    g_assert_cmpfloat(json_node_get_double(rate), ==, 0.0);
    g_object_unref(p);
    g_free(out);
    g_free(one_err);
    char *err = NULL;
    const char *full[] = {
        "generate", "-m", snap, "-p", "one two three four five six seven eight nine ten", NULL};
    g_assert_cmpint(docqa_with(NULL, NULL, NULL, &err, full), ==, 2);
    /* transformers would run it: the refusal names the key that decides */
    g_assert_nonnull(strstr(err, "the model takes 16 positions (config.json's "
                                 "text_config.max_position_embeddings): no room for a new token"));
    g_free(err);
    g_free(snap);
    g_free(model);
}

/* --dump-logits is checked before any model work (here the model folder holds no snapshot), and
 * a run that fails leaves an existing file as it was. */
static void test_generate_dump_logits(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *err = NULL;
    const char *nowhere[] = {"generate",           "-m", dir, "-p", "hi", "--dump-logits",
                             "/nonexistent/x.bin", NULL};
    g_assert_cmpint(docqa_with(NULL, NULL, NULL, &err, nowhere), ==, 2);
    g_assert_cmpstr(
        err, ==,
        "docqa: generate: --dump-logits /nonexistent/x.bin: cannot create: No such file or "
        "directory\n");
    g_free(err);
    char *dump = g_build_filename(dir, "x.bin", NULL);
    char *bad_image = g_build_filename(dir, "bad.png", NULL);
    g_assert_true(g_file_set_contents(dump, "old", -1, NULL));
    g_assert_true(g_file_set_contents(bad_image, "not an image", -1, NULL));
    const char *failing[] = {"generate", "-m",      model,           "-p", "hi",
                             "-i",       bad_image, "--dump-logits", dump, NULL};
    g_assert_cmpint(docqa_with(NULL, NULL, NULL, NULL, failing), ==, 2);
    size_t len = 0;
    char *kept = dq_test_read_file(dump, &len);
    g_assert_cmpstr(kept, ==, "old");
    g_free(kept);
    const char *ok[] = {"generate",         "-m", model,           "-p", "hi",
                        "--max-new-tokens", "1",  "--dump-logits", dump, NULL};
    g_assert_cmpint(docqa_with(NULL, NULL, NULL, NULL, ok), ==, 0);
    g_free(dq_test_read_file(dump, &len));
    g_assert_cmpint(len, ==, 49280 * 4); /* the tiny model's vocabulary, float32 */
    GDir *d = g_dir_open(dir, 0, NULL);
    int files = 0;
    while (g_dir_read_name(d) != NULL)
        files++;
    g_dir_close(d);
    g_assert_cmpint(files, ==, 2); /* no temporary left beside it */
    g_free(bad_image);
    g_free(dump);
    g_free(dir);
    g_free(model);
}

static void fsize_limited(gpointer data) {
    (void)data;
    /* a write past the limit then fails with EFBIG instead of killing the process */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit r = {4096, 4096};
    setrlimit(RLIMIT_FSIZE, &r);
}

/* docqa run under `prefix` (NULL: as is) and `setup`: its exit status and its stderr. */
static int dump_run(const char *const *prefix, GSpawnChildSetupFunc setup, const char *model,
                    const char *dump, char **errout) {
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    for (const char *const *a = prefix; a && *a; a++)
        g_ptr_array_add(argv, g_strdup(*a));
    const char *args[] = {"generate",         "-m", model,           "-p", "hi",
                          "--max-new-tokens", "1",  "--dump-logits", dump, NULL};
    g_ptr_array_add(argv, dq_test_docqa_path());
    for (const char *const *a = args; *a; a++)
        g_ptr_array_add(argv, g_strdup(*a));
    g_ptr_array_add(argv, NULL);
    /* LeakSanitizer cannot run under ptrace (strace): in a sanitizer build it would fail the
     * traced process at exit */
    char **env = g_get_environ();
    if (prefix != NULL) {
        const char *asan = g_environ_getenv(env, "ASAN_OPTIONS");
        char *off = g_strconcat(asan ? asan : "", asan ? ":" : "", "detect_leaks=0", NULL);
        env = g_environ_setenv(env, "ASAN_OPTIONS", off, TRUE);
        g_free(off);
    }
    int status = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv->pdata, env,
                               G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, setup, NULL, NULL,
                               errout, &status, &err));
    dq_assert_no_error(err);
    g_strfreev(env);
    g_ptr_array_free(argv, TRUE);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Exactly `want` in `dir`, by name: no temporary left beside the dump. */
static void assert_dir_holds(const char *dir, const char *want) {
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL)
        if (strcmp(name, want) != 0)
            g_error("%s: %s left beside %s", dir, name, want);
    g_dir_close(d);
}

/* --dump-logits whose write fails (a full device, a file-size limit, an fsync refused, its
 * folder's fsync refused) exits 2 naming the file, and the final name holds either what it held
 * before or the whole dump, never part of it. The fsyncs are refused by strace's fault
 * injection, skipped where strace cannot trace. */
static void test_generate_dump_logits_write_failed(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *dump = g_build_filename(dir, "x.bin", NULL);
    char *err = NULL;
    g_assert_cmpint(dump_run(NULL, NULL, model, "/dev/full", &err), ==, 2);
    g_assert_cmpstr(
        err, ==,
        "docqa: generate: --dump-logits /dev/full: write failed: No space left on device\n");
    g_free(err);

    g_assert_true(g_file_set_contents(dump, "old", -1, NULL));
    g_assert_cmpint(dump_run(NULL, fsize_limited, model, dump, &err), ==, 2);
    char *want = g_strdup_printf("docqa: generate: --dump-logits %s: write failed: %s\n", dump,
                                 g_strerror(EFBIG));
    g_assert_cmpstr(err, ==, want);
    g_free(want);
    g_free(err);
    size_t len = 0;
    char *kept = dq_test_read_file(dump, &len);
    g_assert_cmpstr(kept, ==, "old");
    g_free(kept);
    assert_dir_holds(dir, "x.bin");

    if (!strace_works()) {
        g_test_skip("strace cannot trace here: the fsync failures are not tried");
    } else {
        /* the first fsync is the file's, the second its folder's */
        const char *file_fails[] = {"strace",      "-f",        "-qq",
                                    "-o",          "/dev/null", "-e",
                                    "trace=fsync", "-e",        "inject=fsync:error=EIO:when=1",
                                    NULL};
        g_assert_cmpint(dump_run(file_fails, NULL, model, dump, &err), ==, 2);
        want = g_strdup_printf("docqa: generate: --dump-logits %s: write failed: %s\n", dump,
                               g_strerror(EIO));
        g_assert_cmpstr(err, ==, want);
        g_free(want);
        g_free(err);
        kept = dq_test_read_file(dump, &len);
        g_assert_cmpstr(kept, ==, "old");
        g_free(kept);
        assert_dir_holds(dir, "x.bin");

        const char *dir_fails[] = {"strace",      "-f",        "-qq",
                                   "-o",          "/dev/null", "-e",
                                   "trace=fsync", "-e",        "inject=fsync:error=EIO:when=2",
                                   NULL};
        g_assert_cmpint(dump_run(dir_fails, NULL, model, dump, &err), ==, 2);
        want = g_strdup_printf(
            "docqa: generate: --dump-logits %s: written, but its folder cannot be synced "
            "(a crash may lose it): %s\n",
            dump, g_strerror(EIO));
        g_assert_cmpstr(err, ==, want);
        g_free(want);
        g_free(err);
        g_free(dq_test_read_file(dump, &len));
        g_assert_cmpint(len, ==, 49280 * 4);
        assert_dir_holds(dir, "x.bin");
    }
    g_free(dump);
    g_free(dir);
    g_free(model);
}

/* An SQLite failure says the system's reason too: SQLite's "disk I/O error" is the same words
 * for a full disk, an mmap refused and a failing device. Each is injected by strace into the
 * first call of its kind on the database's -shm or -wal (found by path, so no count moves with
 * the code), which every command that may write makes when it opens the database or commits. */
static void test_sqlite_failure_says_why(void) {
    if (!strace_works()) {
        g_test_skip("strace cannot trace here: the failures are not injected");
        return;
    }
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *shm = g_strconcat(db, "-shm", NULL);
    const char *faults[][3] = {
        {"pwrite64", "ENOSPC:when=1", "sizing the -shm"},
        {"mmap", "ENOMEM:when=1", "mapping the -shm"},
        {"ftruncate", "EIO:when=1", "opening the -shm"},
    };
    const int errnos[] = {ENOSPC, ENOMEM, EIO};
    char *err = NULL;
    for (size_t i = 0; i < G_N_ELEMENTS(faults); i++) {
        g_assert_cmpint(docqa_injected(shm, faults[i][0], faults[i][1], &err, "cancel", "--db", db,
                                       "--question", "Q?", NULL),
                        ==, 2);
        char *want = g_strdup_printf("docqa: cancel: %s: cannot read the database: disk I/O "
                                     "error (%s: %s)\n",
                                     db, faults[i][2], g_strerror(errnos[i]));
        g_assert_cmpstr(err, ==, want);
        g_free(want);
        g_free(err);
    }
    /* A sync of the -wal that fails at COMMIT (SQLite keeps no errno there: its log has it),
     * and a -wal that cannot be made (SQLite's errno is that of its second try, to read) */
    char *wal = g_strconcat(db, "-wal", NULL);
    const char *more[] = {"fdatasync", "openat"};
    char *more_want[] = {
        g_strdup_printf("docqa: %s: COMMIT: disk I/O error (syncing a file of the database to "
                        "disk: fsync %s: %s)\n",
                        db, wal, g_strerror(EIO)),
        g_strdup_printf("docqa: ask: %s: cannot read the database: unable to open database "
                        "file (open %s: %s)\n",
                        db, wal, g_strerror(EIO)),
    };
    for (size_t i = 0; i < G_N_ELEMENTS(more); i++) {
        g_assert_cmpint(docqa_injected(wal, more[i], "EIO:when=1", &err, "ask", "--db", db, "-m",
                                       "tiny", "Q?", NULL),
                        ==, 2);
        g_assert_cmpstr(err, ==, more_want[i]);
        g_free(err);
        g_free(more_want[i]);
    }
    /* A write of the -wal refused at COMMIT, for want of room or by the device: SQLite keeps
     * neither the file nor (for a full disk) the errno */
    const char *writes[][2] = {{"ENOSPC:when=1", "database or disk is full ("},
                               {"EIO:when=1", "disk I/O error (writing a file of the database: "}};
    const int write_errnos[] = {ENOSPC, EIO};
    for (size_t i = 0; i < G_N_ELEMENTS(writes); i++) {
        g_assert_cmpint(docqa_injected(wal, "pwrite64", writes[i][0], &err, "ask", "--db", db, "-m",
                                       "tiny", "Q?", NULL),
                        ==, 2);
        char *want = g_strdup_printf("docqa: %s: COMMIT: %swrite %s: %s)", db, writes[i][1], wal,
                                     g_strerror(write_errnos[i]));
        g_assert_true(g_str_has_prefix(err, want));
        g_free(want);
        g_free(err);
    }
    g_free(wal);
    /* A read of the database's file that fails (a bad sector), wherever it falls: SQLite says
     * "disk I/O error", or "database disk image is malformed" for a page it could not read; each
     * says which file could not be read, and why */
    char *read_failed = g_strdup_printf("read %s: %s", db, g_strerror(EIO));
    for (int n = 1; n <= 8; n++) {
        char *when = g_strdup_printf("EIO:when=%d", n);
        int rc =
            docqa_injected(db, "pread64", when, &err, "ask", "--db", db, "-m", "tiny", "Q?", NULL);
        if (rc != 0) {
            g_assert_cmpint(rc, ==, 2);
            g_assert_nonnull(strstr(err, read_failed));
        }
        g_free(when);
        g_free(err);
    }
    /* and as migrate --to copies it, table by table, into a new file each time */
    for (int n = 1; n <= 24; n++) {
        char *when = g_strdup_printf("EIO:when=%d", n);
        char *name = g_strdup_printf("copy%d.db", n);
        char *copy = g_build_filename(dir, name, NULL);
        int rc =
            docqa_injected(db, "pread64", when, &err, "migrate", "--from", db, "--to", copy, NULL);
        if (rc != 0) {
            g_assert_cmpint(rc, ==, 2);
            if (strstr(err, read_failed) == NULL)
                g_error("migrate, read %d failed: %s", n, err);
        }
        g_free(copy);
        g_free(name);
        g_free(when);
        g_free(err);
    }
    g_free(read_failed);
    /* SQLite opens read-only, saying nothing, a database it could not open for writing: the
     * first open of the database's own file fails, and the write after it is refused */
    g_assert_cmpint(docqa_injected(db, "openat", "EIO:when=1", &err, "ask", "--db", db, "-m",
                                   "tiny", "Q?", NULL),
                    ==, 2);
    char *want = g_strdup_printf(
        "docqa: %s: adding a question: attempt to write a readonly database (docqa may write the "
        "file and its folder, but SQLite could open it or its -wal or -shm only for reading: the "
        "system refused to open them for writing)\n",
        db);
    g_assert_cmpstr(err, ==, want);
    g_free(want);
    g_free(err);
    /* the database is as it was: a later command runs */
    g_assert_cmpint(dq_test_docqa(NULL, &err, "status", "--db", db, NULL), ==, 0);
    g_assert_cmpstr(err, ==, "");
    g_free(err);
    g_free(shm);
    g_free(db);
    g_free(dir);
}

/* Free-text options are UTF-8 whatever the locale, and bytes that are not are refused by the
 * option's name; an option GLib converts from the locale is named when the conversion fails. */
static void test_options_utf8(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    const char *bad[][9] = {
        {"generate", "-m", model, "-p", "\xff", NULL},
        {"generate", "-m", model, "--raw-prompt", "ok\xc3", NULL},
        {"export", "--db", db, "--question", "Qu\xe9?", NULL},
        {"ask", "--db", db, "-m", "tiny", "--where", "path LIKE '%\xe9%'", "Q?", NULL},
        {"run", "--db", db, "-m", model, "--model-id", "t\xff", NULL},
    };
    const char *want[] = {
        "docqa: generate: --prompt is not valid UTF-8 (byte 0xff at offset 0)\n",
        "docqa: generate: --raw-prompt is not valid UTF-8 (byte 0xc3 at offset 2)\n",
        "docqa: export: --question is not valid UTF-8 (byte 0xe9 at offset 2)\n",
        "docqa: ask: --where is not valid UTF-8 (byte 0xe9 at offset 12)\n",
        "docqa: run: --model-id is not valid UTF-8 (byte 0xff at offset 1)\n",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *err = NULL;
        g_assert_cmpint(docqa_with(NULL, NULL, NULL, &err, bad[i]), ==, 2);
        g_assert_cmpstr(err, ==, want[i]);
        g_free(err);
    }
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 0);
    /* UTF-8 text under the C locale (cron's) */
    const char *c_locale[] = {"LC_ALL=C", NULL};
    const char *accented[] = {"generate",         "-m", model, "-p", "Qu\xc3\xa9?",
                              "--max-new-tokens", "1",  NULL};
    g_assert_cmpint(docqa_with(c_locale, NULL, NULL, NULL, accented), ==, 0);
    const char *question[] = {"export", "--db", db, "--question", "Qu\xc3\xa9?", NULL};
    g_assert_cmpint(docqa_with(c_locale, NULL, NULL, NULL, question), ==, 0);
    char *err = NULL;
    const char *device[] = {"generate", "-m", model, "-p", "hi", "--device", "\xff", NULL};
    g_assert_cmpint(docqa_with(c_locale, NULL, NULL, &err, device), ==, 2);
    g_assert_true(
        g_str_has_prefix(err, "docqa: generate: --device '\\377': not text in the locale's"));
    g_free(err);
    /* A file name and a prompt GLib leaves as bytes, not text in C's charset, are passed over:
     * the value named is the one GLib could not convert. */
    const char *after_bytes[] = {
        "generate", "-m",          model,      "-i",   "/nonexistent/caf\xc3\xa9.png",
        "-p",       "Qu\xc3\xa9?", "--device", "\xff", NULL};
    g_assert_cmpint(docqa_with(c_locale, NULL, NULL, &err, after_bytes), ==, 2);
    g_assert_true(
        g_str_has_prefix(err, "docqa: generate: --device '\\377': not text in the locale's"));
    g_free(err);
    /* An unknown device is named with its option, before the model is loaded. */
    const char *gpu[] = {"generate", "-m", model, "-p", "hi", "--device", "gpu", NULL};
    g_assert_cmpint(docqa_with(NULL, NULL, NULL, &err, gpu), ==, 2);
    g_assert_true(g_str_has_prefix(err, "docqa: generate: --device: unknown device 'gpu'"));
    g_free(err);
    g_free(db);
    g_free(dir);
    g_free(model);
}

/* More OpenMP threads than CPUs are capped at the CPUs, with a note: each thread has its
 * scratch (1000 threads took 8.2 GB and 25 s for the tiny model on 2 CPUs). */
static void test_threads_capped(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    cpu_set_t set;
    g_assert_cmpint(sched_getaffinity(0, sizeof set, &set), ==, 0);
    int cpus = CPU_COUNT(&set);
    if (cpus >= 256) {
        g_test_skip("256 CPUs or more: 256 threads are no oversubscription");
        g_free(model);
        return;
    }
    const char *env[] = {"OMP_NUM_THREADS=256", NULL};
    const char *args[] = {"generate",         "-m", model,    "-p", "hi",
                          "--max-new-tokens", "1",  "--json", NULL};
    char *out = NULL, *err = NULL;
    g_assert_cmpint(docqa_with(env, NULL, &out, &err, args), ==, 0);
    char *note = g_strdup_printf("docqa: note: OMP_NUM_THREADS asks for 256 threads, this process "
                                 "may run on %d CPU%s: using %d",
                                 cpus, cpus == 1 ? "" : "s", cpus);
    g_assert_true(g_str_has_prefix(err, note));
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    double rss =
        json_object_get_double_member(json_node_get_object(json_parser_get_root(p)), "peak_rss_mb");
    g_assert_cmpfloat(rss, <, 512); /* 256 threads' scratch: about 2 GB */
    g_object_unref(p);
    g_free(note);
    g_free(out);
    g_free(err);
    g_free(model);
}

/* --top-p 0 keeps only the most likely token, as transformers' top-p filter does, so sampling
 * gives the greedy text whatever the seed; --top-p 1 samples (the random model's distributions
 * are flat enough that some seed leaves the greedy path). */
static void test_generate_top_p_zero(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    const char *greedy_args[] = {"generate",         "-m", model,          "-p", "hi",
                                 "--max-new-tokens", "6",  "--ignore-eos", NULL};
    char *greedy = NULL;
    g_assert_cmpint(docqa_with(NULL, NULL, &greedy, NULL, greedy_args), ==, 0);
    gboolean sampled_differs = FALSE;
    for (int seed = 1; seed <= 4; seed++) {
        char seed_text[16];
        g_snprintf(seed_text, sizeof seed_text, "%d", seed);
        for (int p = 0; p < 2; p++) {
            const char *args[] = {"generate",
                                  "-m",
                                  model,
                                  "-p",
                                  "hi",
                                  "--max-new-tokens",
                                  "6",
                                  "--ignore-eos",
                                  "--sample",
                                  "--seed",
                                  seed_text,
                                  "--top-p",
                                  p == 0 ? "0" : "1",
                                  NULL};
            char *out = NULL;
            g_assert_cmpint(docqa_with(NULL, NULL, &out, NULL, args), ==, 0);
            if (p == 0)
                g_assert_cmpstr(out, ==, greedy);
            else if (strcmp(out, greedy) != 0)
                sampled_differs = TRUE;
            g_free(out);
        }
    }
    g_assert_true(sampled_differs);
    g_free(greedy);
    g_free(model);
}

/* --ignore-eos generates past the end of sequence token: here a snapshot whose eos is the first
 * token greedy decoding gives. */
static void test_generate_ignore_eos(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    const char *first_args[] = {"generate",         "-m", model,    "-p", "hi",
                                "--max-new-tokens", "1",  "--json", NULL};
    char *out = NULL;
    g_assert_cmpint(docqa_with(NULL, NULL, &out, NULL, first_args), ==, 0);
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonArray *ids =
        json_object_get_array_member(json_node_get_object(json_parser_get_root(p)), "output_ids");
    gint64 first = json_array_get_int_element(ids, 0);
    g_object_unref(p);
    g_free(out);
    char *snap = dq_test_tmpdir();
    GDir *d = g_dir_open(model, 0, NULL);
    g_assert_nonnull(d);
    for (const char *name; (name = g_dir_read_name(d)) != NULL;) {
        char *from = g_build_filename(model, name, NULL), *to = g_build_filename(snap, name, NULL);
        if (strcmp(name, "generation_config.json") != 0)
            g_assert_cmpint(symlink(from, to), ==, 0);
        g_free(from);
        g_free(to);
    }
    g_dir_close(d);
    char *gen = g_build_filename(snap, "generation_config.json", NULL);
    char *text = g_strdup_printf("{\"bos_token_id\": 0, \"eos_token_id\": %" G_GINT64_FORMAT
                                 ", \"pad_token_id\": 2}\n",
                                 first);
    g_assert_true(g_file_set_contents(gen, text, -1, NULL));
    const char *want[] = {"eos", "length"};
    const int n_ids[] = {1, 3};
    for (int ignore = 0; ignore < 2; ignore++) {
        const char *args[] = {"generate", "-m",     snap,
                              "-p",       "hi",     "--max-new-tokens",
                              "3",        "--json", ignore ? "--ignore-eos" : NULL,
                              NULL};
        g_assert_cmpint(docqa_with(NULL, NULL, &out, NULL, args), ==, 0);
        p = json_parser_new();
        g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        g_assert_cmpstr(json_object_get_string_member(o, "finish_reason"), ==, want[ignore]);
        g_assert_cmpint(json_array_get_length(json_object_get_array_member(o, "output_ids")), ==,
                        n_ids[ignore]);
        g_object_unref(p);
        g_free(out);
    }
    g_free(text);
    g_free(gen);
    g_free(snap);
    g_free(model);
}

/* --top-k 0 turns the top-k filter off, as in transformers, rather than leaving the snapshot's
 * (generation_config.json's, else transformers' default 50): over the random model's flat
 * distributions sampling from every token leaves the 50 most likely for some seed. */
static void test_generate_top_k_zero(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    gboolean differs = FALSE;
    for (int seed = 1; seed <= 4 && !differs; seed++) {
        char seed_text[16];
        g_snprintf(seed_text, sizeof seed_text, "%d", seed);
        char *out[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) {
            const char *args[] = {"generate",
                                  "-m",
                                  model,
                                  "-p",
                                  "hi",
                                  "--max-new-tokens",
                                  "6",
                                  "--ignore-eos",
                                  "--sample",
                                  "--seed",
                                  seed_text,
                                  "--top-k",
                                  k == 0 ? "0" : "50",
                                  NULL};
            g_assert_cmpint(docqa_with(NULL, NULL, &out[k], NULL, args), ==, 0);
        }
        differs = strcmp(out[0], out[1]) != 0;
        g_free(out[0]);
        g_free(out[1]);
    }
    g_assert_true(differs);
    g_free(model);
}

/* `--model ""` meant the current folder (generate read ./config.json, ingest
 * ./preprocessor_config.json); every command refuses it. A questions file nested deep enough to
 * overflow json-glib's recursion is refused as JSON that is not a list. */
static void test_empty_model_and_deep_questions(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *err = NULL;
    g_assert_cmpint(dq_test_docqa(NULL, &err, "generate", "--model", "", "-p", "hi", NULL), ==, 2);
    g_assert_cmpstr(err, ==, "docqa: generate: --model '': an empty folder name (see --help)\n");
    g_free(err);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "ask", "--db", db, "--model", "", "Q?", NULL), ==, 2);
    g_assert_true(g_str_has_prefix(err, "docqa: ask: --model '': an empty name"));
    g_free(err);
    g_assert_cmpint(dq_test_docqa(NULL, &err, "ingest", "--db", db, "--model", "", dir, NULL), ==,
                    2);
    g_assert_cmpstr(err, ==, "docqa: ingest: --model '': an empty folder name\n");
    g_free(err);
    char *qfile = g_build_filename(dir, "questions.json", NULL);
    GString *deep = g_string_new(NULL);
    for (int i = 0; i < 1000000; i++)
        g_string_append_c(deep, '[');
    g_assert_true(g_file_set_contents(qfile, deep->str, (gssize)deep->len, NULL));
    g_string_free(deep, TRUE);
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "--questions", qfile, NULL), ==,
        2);
    char *want =
        g_strdup_printf("docqa: ask: %s: not a JSON list of strings: JSON nested deeper than "
                        "128 levels (at byte 128)\n",
                        qfile);
    g_assert_cmpstr(err, ==, want);
    g_free(want);
    g_free(err);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 0);
    g_free(qfile);
    g_free(db);
    g_free(dir);
}

/* ---- what a document is: its bytes, wherever they are ---- */

static void copy_file(const char *from, const char *to) {
    char *data = NULL;
    gsize len = 0;
    GError *err = NULL;
    g_assert_true(g_file_get_contents(from, &data, &len, &err));
    g_assert_true(g_file_set_contents(to, data, (gssize)len, &err));
    dq_assert_no_error(err);
    g_free(data);
}

/* Copies examples/docs/<name> into `folder` as `as` (NULL: the same name); returns its path. */
static char *add_example(const char *folder, const char *name, const char *as) {
    char *from = g_build_filename(dq_test_source_dir(), "examples", "docs", name, NULL);
    char *to = g_build_filename(folder, as ? as : name, NULL);
    g_assert_cmpint(g_mkdir_with_parents(folder, 0755), ==, 0);
    copy_file(from, to);
    g_free(from);
    return to;
}

/* docqa ingest at --n-res n_res (64 px tiles: small pages); returns its exit status, stdout in
 * *out (may be NULL). */
static int ingest_at(char **out, const char *db, int n_res, const char *path) {
    char n[16];
    g_snprintf(n, sizeof n, "%d", n_res);
    return dq_test_docqa(out, NULL, "ingest", "--db", db, "--n-res", n, "--tile", "64", "--jobs",
                         "1", "--quiet", "--hidden", path, NULL);
}

/* jt_query_int of SQL formatted by sqlite3_mprintf (%Q quotes a text). */
static gint64 query_intf(const char *db, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    gint64 v = jt_query_int(db, sql);
    sqlite3_free(sql);
    return v;
}

static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    char **lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++)
        n += strstr(*l, needle) != NULL;
    g_strfreev(lines);
    return n;
}

/* Jobs are made for content (the job key hashes the document's bytes): an archive moved, a second
 * copy, an edit undone (bytes A, B, A) are not asked again, and their answers show under the
 * paths and versions that hold the bytes now (v_current_answers, export --current). ask counts
 * a page of the same content once. */
static void test_answers_follow_the_bytes(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *archives = g_build_filename(dir, "archives", NULL);
    char *old = g_build_filename(archives, "old", NULL);
    char *moved = g_build_filename(archives, "new", NULL);
    const char *names[] = {"invoice.pdf", "letter.pdf", "receipt.pdf"}; /* 1 + 2 + 1 pages */
    for (int i = 0; i < 3; i++)
        g_free(add_example(old, names[i], NULL));
    char *out = NULL, *err = NULL;
    g_assert_cmpint(ingest_at(NULL, db, 1, archives), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "Total?", NULL), ==,
                    0);
    g_assert_nonnull(strstr(out, "1 question x 4 pages: 4 new jobs"));
    g_free(out);
    jt_run_worker(db, "tiny");

    /* Moved: the same bytes at new paths. */
    g_assert_cmpint(g_rename(old, moved), ==, 0);
    g_assert_cmpint(ingest_at(&out, db, 1, moved), ==, 0);
    g_assert_nonnull(strstr(out, "3 ok"));
    g_free(out);
    g_assert_cmpint(
        dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "Total?", "Signed?", NULL), ==,
        0);
    g_assert_nonnull(strstr(out, "2 questions x 4 pages: 4 new jobs, 4 already asked"));
    g_assert_nonnull(strstr(out, "4 more pages hold the same bytes as pages above"));
    g_free(out);
    jt_run_worker(db, "tiny");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 8);
    /* Both questions' answers under the new paths, also the one asked before the move; the
     * old paths show them too while their files are not known to be gone. */
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_current_answers WHERE "
                                     "document_path LIKE '%/archives/new/%'"),
                    ==, 8);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_current_answers WHERE "
                                     "document_path LIKE '%/archives/new/%' AND asked_path LIKE "
                                     "'%/archives/old/%' AND question = 'Total?'"),
                    ==, 4);
    /* An ingest of the folder above finds the old files gone: they leave documents_current,
     * and with it v_current_answers; v_answers keeps every answer where it was given. */
    g_assert_cmpint(ingest_at(&out, db, 1, archives), ==, 0);
    g_assert_nonnull(strstr(out, "3 files gone since the last ingest"));
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_current_answers"), ==, 8);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_current_answers WHERE "
                                     "document_path LIKE '%/archives/old/%'"),
                    ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers WHERE document_path LIKE "
                                     "'%/archives/old/%'"),
                    ==, 4);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, "--current", NULL), ==, 0);
    g_assert_cmpint(count_lines_with(out, "/archives/new/"), ==, 8);
    /* the old path only as asked_path (the last column): the document the job was made for */
    g_assert_cmpint(count_lines_with(out, "/archives/old/"), ==,
                    jt_query_int(db, "SELECT count(*) FROM v_current_answers WHERE asked_path "
                                     "LIKE '%/archives/old/%'"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, NULL), ==, 0);
    g_assert_cmpint(count_lines_with(out, "/archives/old/"), ==, 4); /* as it always was */
    g_free(out);

    /* A second copy: asked once, answered under both paths without a worker. */
    char *copy = add_example(moved, "invoice.pdf", "invoice copy.pdf");
    g_assert_cmpint(ingest_at(NULL, db, 1, archives), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "Total?", NULL), ==,
                    0);
    g_assert_nonnull(strstr(out, "1 question x 4 pages: 0 new jobs, 4 already asked"));
    g_assert_nonnull(strstr(out, "1 more page holds the same bytes"));
    g_free(out);
    g_assert_cmpint(
        query_intf(db, "SELECT count(*) FROM v_current_answers WHERE document_path = %Q", copy), ==,
        2);

    /* An edit undone: bytes A, B, A. The third version holds A again and shows A's answers,
     * not B's. */
    char *receipt = g_build_filename(moved, "receipt.pdf", NULL);
    char *a_bytes = NULL;
    gsize a_len = 0;
    g_assert_true(g_file_get_contents(receipt, &a_bytes, &a_len, NULL));
    char *b_bytes = g_strconcat(a_bytes, "\n%B\n", NULL);
    g_assert_true(g_file_set_contents(receipt, b_bytes, (gssize)(a_len + 4), NULL));
    g_assert_cmpint(ingest_at(NULL, db, 1, archives), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "Total?", NULL), ==,
                    0);
    g_assert_nonnull(strstr(out, "1 new job,"));
    g_free(out);
    jt_run_worker(db, "tiny");
    g_assert_true(g_file_set_contents(receipt, a_bytes, (gssize)a_len, NULL));
    g_assert_cmpint(ingest_at(NULL, db, 1, archives), ==, 0);
    g_assert_cmpint(
        query_intf(db, "SELECT version FROM documents_current WHERE path = %Q", receipt), ==, 3);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "Total?", NULL), ==,
                    0);
    g_assert_nonnull(strstr(out, "0 new jobs"));
    g_free(out);
    g_assert_cmpint(query_intf(db,
                               "SELECT count(*) FROM v_current_answers v JOIN documents_current d "
                               "ON d.id = v.document_id WHERE d.path = %Q AND d.version = 3",
                               receipt),
                    ==, 2);
    g_assert_cmpint(query_intf(db,
                               "SELECT count(*) FROM v_current_answers WHERE document_path = %Q "
                               "AND document_sha256 <> (SELECT sha256 FROM documents WHERE path "
                               "= %Q AND version = 1)",
                               receipt, receipt),
                    ==, 0);
    g_free(err);
    g_free(a_bytes);
    g_free(b_bytes);
    g_free(receipt);
    g_free(copy);
    g_free(moved);
    g_free(old);
    g_free(archives);
    g_free(db);
    g_free(dir);
}

/* A file deleted from disk: the next ingest of its folder lists it as gone and marks it
 * (documents.missing_since); it leaves documents_current, ask asks nothing new about it and
 * says so, its answers stay. A file the walk leaves out but that is there (hidden) is not gone;
 * a non-UTF-8 name is found as such. A file that comes back is current again. */
static void test_gone_files(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *archive = g_build_filename(dir, "archive", NULL);
    g_free(add_example(archive, "invoice.pdf", NULL));
    g_free(add_example(archive, "letter.pdf", ".hidden-letter.pdf"));
    char *receipt = add_example(archive, "receipt.pdf", NULL);
    char *latin1 = add_example(archive, "scanned-letter.tif", "re\xe7u.tif");
    char *out = NULL;
    g_assert_cmpint(ingest_at(NULL, db, 1, archive), ==, 0);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "tiny", "Total?", NULL), ==,
                    0);
    jt_run_worker(db, "tiny");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 5);

    g_assert_cmpint(g_unlink(receipt), ==, 0);
    g_assert_cmpint(g_unlink(latin1), ==, 0);
    /* Without --hidden: .hidden-letter.pdf is not walked, and not gone either. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ingest", "--db", db, "--n-res", "1", "--tile", "64",
                                  "--quiet", archive, NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "2 files gone since the last ingest"));
    char *line = g_strdup_printf("gone    missing_since      %s: no longer there", receipt);
    g_assert_nonnull(strstr(out, line));
    g_free(line);
    g_assert_nonnull(strstr(out, "/re\\xE7u.tif: no longer there"));
    g_assert_null(strstr(out, "hidden"));
    g_free(out);
    g_assert_cmpint(query_intf(db,
                               "SELECT count(*) FROM documents WHERE path = %Q AND "
                               "missing_since LIKE '____-__-__T__:__:__.___Z'",
                               receipt),
                    ==, 1);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM documents_current"), ==, 2);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(
        strstr(out, "\n2 documents gone from disk since ingest (their answers kept: v_answers "
                    "shows them, v_current_answers does not)\n"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\"documents_gone\" : 2"));
    g_free(out);
    g_assert_cmpint(
        query_intf(db, "SELECT count(*) FROM documents_current WHERE path = %Q", receipt), ==, 0);
    /* Said once: the next ingest lists nothing, and no version is added. */
    g_assert_cmpint(ingest_at(&out, db, 1, archive), ==, 0);
    g_assert_null(strstr(out, "gone"));
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM documents"), ==, 4);

    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "New?", NULL), ==,
                    0);
    g_assert_nonnull(strstr(out, "1 question x 3 pages: 3 new jobs"));
    g_assert_nonnull(strstr(out, "2 documents left out: their files are gone"));
    g_free(out);
    /* Named by id or matched by --where, gone is gone. */
    gint64 id = query_intf(db, "SELECT id FROM documents WHERE path = %Q", receipt);
    char *ids = g_strdup_printf("%" G_GINT64_FORMAT, id);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "--document", ids,
                                  "--where", "path LIKE '%receipt%'", "New?", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "1 question x 0 pages"));
    g_assert_nonnull(strstr(out, "1 document left out: its file is gone"));
    g_free(out);
    g_free(ids);
    g_assert_cmpint(query_intf(db,
                               "SELECT count(*) FROM jobs j JOIN questions q ON q.id = "
                               "j.question_id JOIN pages p ON p.id = j.page_id WHERE q.text = "
                               "'New?' AND p.document_id = %" G_GINT64_FORMAT,
                               id),
                    ==, 0);
    g_assert_cmpint(
        query_intf(db, "SELECT count(*) FROM v_answers WHERE document_path = %Q", receipt), ==, 1);

    /* Back with the same bytes: current again, nothing rendered, asked about again. */
    g_free(add_example(archive, "receipt.pdf", NULL));
    g_assert_cmpint(ingest_at(&out, db, 1, archive), ==, 0);
    g_assert_null(strstr(out, "gone"));
    g_free(out);
    g_assert_cmpint(
        query_intf(db, "SELECT count(*) FROM documents_current WHERE path = %Q", receipt), ==, 1);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM documents WHERE missing_since IS NOT "
                                     "NULL"),
                    ==, 1); /* the Latin-1 one */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\n1 document gone from disk since ingest"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "New?", NULL), ==,
                    0);
    g_assert_nonnull(strstr(out, "1 new job,"));
    g_assert_nonnull(strstr(out, "1 document left out"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ingest", "--db", db, "--json", "--n-res", "1",
                                  "--tile", "64", "--quiet", archive, NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "\"gone\" : 0"));
    g_free(out);
    g_free(latin1);
    g_free(receipt);
    g_free(archive);
    g_free(db);
    g_free(dir);
}

/* A document ingested at two --n-res: ask takes each document's most recent rendering (one job
 * per page and question, not one per rendering) and says what it left out; --n-res picks. */
static void test_ask_one_rendering(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *archive = g_build_filename(dir, "archive", NULL);
    g_free(add_example(archive, "invoice.pdf", NULL));
    g_free(add_example(archive, "letter.pdf", NULL));
    g_assert_cmpint(ingest_at(NULL, db, 1, archive), ==, 0);
    g_assert_cmpint(ingest_at(NULL, db, 2, archive), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM pages"), ==, 6);
    char *out = NULL, *err = NULL;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "Q?", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "1 question x 3 pages: 3 new jobs"));
    g_assert_nonnull(strstr(out, "3 pages of other renderings left out (n_res 1): each "
                                 "document's most recent rendering is asked"));
    g_free(out);
    const char *at_n_res = "SELECT count(*) FROM jobs j JOIN pages p ON p.id = j.page_id WHERE "
                           "p.render_settings LIKE '%%\"n_res\":%d,%%'";
    g_assert_cmpint(query_intf(db, at_n_res, 2), ==, 3);
    g_assert_cmpint(
        dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "tiny", "--n-res", "1", "Q?", NULL), ==,
        0);
    g_assert_nonnull(strstr(out, "1 question x 3 pages: 3 new jobs"));
    g_free(out);
    g_assert_cmpint(query_intf(db, at_n_res, 1), ==, 3);
    g_assert_cmpint(
        dq_test_docqa(&out, &err, "ask", "--db", db, "-m", "tiny", "--n-res", "3", "Q?", NULL), ==,
        0);
    g_assert_nonnull(strstr(out, "1 question x 0 pages"));
    g_assert_nonnull(
        strstr(out, "2 documents have no pages at --n-res 3 (rendered at n_res 1, 2)"));
    g_assert_nonnull(strstr(err, "no ingested pages match"));
    g_free(out);
    g_free(err);
    g_assert_cmpint(
        dq_test_docqa(NULL, &err, "ask", "--db", db, "-m", "tiny", "--n-res", "0", "Q?", NULL), ==,
        2);
    g_assert_cmpstr(err, ==, "docqa: ask: --n-res 0: must be 1 to 64, as ingest's\n");
    g_free(err);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 6);
    g_free(archive);
    g_free(db);
    g_free(dir);
}

/* Asks about db's 6 pages "Wrong question?" and "Total?" for model tiny and "Total?" for model
 * other, through docqa ask: 18 queued jobs, for cancel and requeue to pick from. */
static void ask_two_models(const char *db) {
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "tiny", "Wrong question?",
                                  "Total?", NULL),
                    ==, 0);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "ask", "--db", db, "-m", "other", "Total?", NULL), ==,
                    0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 18);
}

/* A question row without jobs, as an `ask` of an older version left it when interrupted between
 * storing the question and its jobs: export --question, cancel and requeue take it for a question
 * never asked (they found nothing in silence), with the same message and exit code. */
static void test_orphan_question(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 1, "tiny", 3), ==, 2);
    GError *e = NULL;
    DqStore *s = dq_store_open(db, &e);
    dq_assert_no_error(e);
    g_assert_true(dq_store_exec(s, "INSERT INTO questions (text) VALUES ('Orphan?')", &e));
    dq_assert_no_error(e);
    dq_store_close(s);
    const char *const commands[][3] = {
        {"export", NULL},        {"export", "--after", "0"}, {"cancel", NULL},
        {"cancel", "--dry-run"}, {"requeue", "--cancelled"}, {"requeue", "--failed", "--dead"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        char *out[2], *err[2];
        int rc[2];
        const char *questions[2] = {"Orphan?", "Never asked?"};
        for (int k = 0; k < 2; k++) {
            const char *args[10] = {commands[i][0], "--db", db, "--question", questions[k]};
            int n = 5;
            for (int a = 1; a < 3 && commands[i][a] != NULL; a++)
                args[n++] = commands[i][a];
            rc[k] = docqa_with(NULL, NULL, &out[k], &err[k], args);
        }
        g_test_message("%s: %d '%s'", commands[i][0], rc[0], err[0]);
        char *as_never = g_strdup(err[0]);
        GString *g = g_string_new(as_never);
        g_string_replace(g, "Orphan?", "Never asked?", 0);
        g_assert_cmpint(rc[0], ==, rc[1]);
        g_assert_cmpstr(g->str, ==, err[1]);
        g_assert_cmpstr(out[0], ==, out[1]);
        g_assert_nonnull(strstr(err[0], "\"Orphan?\": no such question was asked"));
        g_string_free(g, TRUE);
        g_free(as_never);
        for (int k = 0; k < 2; k++) {
            g_free(out[k]);
            g_free(err[k]);
        }
    }
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 2);
    g_free(db);
    g_free(dir);
}

/* docqa cancel as a user runs it: the selectors (a question as ask normalizes it, --where,
 * --model, --state) narrow one another; a selector that names nothing is an error, as is none;
 * --dry-run changes nothing; cancelled jobs are left alone by workers and counted apart by
 * status and v_progress, the other questions' and models' jobs are untouched and answered;
 * a running job is cancelled only by name, and an answer its worker finished before hearing of
 * it is kept; requeue --cancelled brings them back. */
static void test_cancel(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 3, 2);
    char *out = NULL;
    ask_two_models(db);

    /* Refused, naming what is wrong; nothing changes. */
    const Refusal refused[] = {
        {{NULL}, "say which jobs: --question, --document, --where or --model"},
        {{"--state", "queued", NULL}, "say which jobs"},
        {{"-m", "tiny", "--state", "done", NULL}, "an answered job is not cancelled"},
        {{"-m", "tiny", "--state", "paused", NULL}, "expected queued, failed, dead or running"},
        /* dq_job_state_name's word for a state out of range is no state either */
        {{"-m", "tiny", "--state", "unknown", NULL},
         "--state 'unknown': expected queued, failed, dead or running\n"},
        {{"-m", "tiny", "--state", "cancelled", NULL}, "(those jobs are cancelled already)"},
        {{"--question", "Never asked?", NULL}, "--question \"Never asked?\": no such question"},
        {{"--question", "  ", NULL}, "--question"},
        {{"--document", "99", NULL}, "cancel: --document 99: no document with id 99 in "},
        {{"--document", "x", NULL}, "--document 'x': expected a whole number"},
        {{"--model", "nobody", NULL}, "no job was asked for the model id 'nobody'"},
        {{"--where", "id IN (SELECT page_id FROM jobs)", NULL}, "--where"},
        {{"--where", "1) OR (1", NULL}, "--where"},
        {{"-m", "tiny", "stray", NULL}, "unexpected argument 'stray'"},
    };
    assert_refused("cancel", db, refused, G_N_ELEMENTS(refused));
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 18);

    /* --dry-run: what would go, with the question trimmed as ask stores it. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "cancel", "--db", db, "--dry-run", "--question",
                                  " Wrong question?\t", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "cancel: would cancel 6 jobs (--dry-run: nothing was changed)"));
    g_assert_nonnull(strstr(out, "\"Wrong question?\" (model tiny): 6 queued"));
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==, 0);

    /* The selectors narrow one another: one document's jobs first, then the rest. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "cancel", "--db", db, "--question", "Wrong question?",
                                  "-m", "tiny", "--where", "path LIKE '%/2024/%'", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "cancel: 2 jobs cancelled"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "cancel", "--db", db, "--question", "Wrong question?",
                                  "-m", "tiny", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "cancel: 4 jobs cancelled"));
    g_assert_null(strstr(out, "an answer already")); /* none had one */
    g_free(out);
    g_assert_cmpint(
        dq_test_docqa(&out, NULL, "cancel", "--db", db, "--question", "Wrong question?", NULL), ==,
        0);
    g_assert_nonnull(strstr(out, "no queued, failed or dead job matches: nothing to cancel"));
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs j JOIN questions q ON q.id = "
                                     "j.question_id WHERE q.text = 'Wrong question?' AND j.state = "
                                     "'cancelled' AND j.finished_at IS NOT NULL"),
                    ==, 6);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs j JOIN questions q ON q.id = "
                                     "j.question_id WHERE q.text = 'Total?' AND j.state = 'queued' "
                                     "AND j.attempts = 0"),
                    ==, 12);

    /* Workers leave them alone and answer the rest. */
    jt_run_worker(db, "tiny");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 6);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==, 6);
    g_assert_cmpint(jt_query_int(db,
                                 "SELECT count(*) FROM v_progress WHERE question = "
                                 "'Wrong question?' AND total = 6 AND cancelled = 6 AND queued = 0 "
                                 "AND percent_done IS NULL"),
                    ==, 1);
    g_assert_cmpint(jt_query_int(db,
                                 "SELECT count(*) FROM v_progress WHERE question = 'Total?' AND "
                                 "model = 'tiny' AND cancelled = 0 AND percent_done = 100.0"),
                    ==, 1);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "jobs: 18 total: 6 done, 6 queued (0 retrying), 0 running, 0 "
                                 "stalled, 0 failed, 0 dead, 6 cancelled"));
    g_assert_null(strstr(out, "why jobs are failed")); /* cancelled is no failure */
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\"cancelled\" : 6"));
    g_free(out);

    /* A running job: only by name; an answer its worker finished before its next heartbeat
     * (here it has none: W is no worker) is kept. */
    GError *e = NULL;
    DqStore *s = dq_store_open(db, &e);
    dq_assert_no_error(e);
    GPtrArray *claimed = store_jobs_claim(s, "W", "other", 1, dq_wall_ms(), 3600000, NULL, &e);
    g_assert_cmpint(claimed->len, ==, 1);
    gint64 running = ((DqClaimedJob *)g_ptr_array_index(claimed, 0))->job_id;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "cancel", "--db", db, "-m", "other", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "cancel: 5 jobs cancelled"));
    g_assert_null(strstr(out, "running"));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "cancel", "--db", db, "-m", "other", "--state",
                                  "running", "--state", "queued", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "cancel: 1 job cancelled"));
    g_assert_nonnull(strstr(out, "\"Total?\" (model other): 1 running"));
    g_assert_nonnull(strstr(out, "1 of them was running: its worker drops it at its next "
                                 "heartbeat (a third of a lease) and stores nothing for it; an "
                                 "answer finished before then is kept"));
    g_free(out);
    DqJobAnswer late = {.job_id = running,
                        .text = "late but kept",
                        .started_at = "2026-01-01T00:00:00.000Z",
                        .finished_at = "2026-01-01T00:00:01.000Z",
                        .exact = -1};
    int written = 0;
    g_assert_true(store_jobs_complete(s, "W", &late, 1, &written, &e));
    dq_assert_no_error(e);
    g_assert_cmpint(written, ==, 1);
    g_ptr_array_free(claimed, TRUE);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_assert_cmpint(query_intf(db,
                               "SELECT count(*) FROM jobs j JOIN answers a ON a.job_id = j.id "
                               "WHERE j.id = %lld AND j.state = 'done' AND a.text = "
                               "'late but kept'",
                               (long long)running),
                    ==, 1);

    /* requeue --cancelled: every cancelled job back, then answered. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--cancelled", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "11 jobs back"));
    g_free(out);
    jt_run_worker(db, "tiny");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'queued' AND "
                                     "model_id = 'other'"),
                    ==, 5); /* jt_run_worker answers model tiny only */
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers WHERE model = 'tiny'"), ==,
                    12);
    g_free(db);
    g_free(dir);
}

/* docqa requeue with cancel's selectors, as a user runs it: they narrow one another as cancel's
 * do, a selector that names nothing is an error and one that matches no job in the states asked
 * says so; --dry-run changes nothing; only the jobs picked come back, and a worker answers them
 * while the others stay as they were. */
static void test_requeue_selected(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 3, 2);
    char *out = NULL;
    ask_two_models(db);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "cancel", "--db", db, "-m", "tiny", NULL), ==, 0);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "cancel", "--db", db, "-m", "other", NULL), ==, 0);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==,
                    18);

    /* Refused, naming what is wrong; nothing changes. */
    const Refusal refused[] = {
        {{"--question", "Total?", NULL}, "say which jobs: --dead, --failed"},
        {{"--cancelled", "--question", "Never asked?", NULL},
         "requeue: --question \"Never asked?\": no such question"},
        {{"--cancelled", "--document", "99", NULL},
         "requeue: --document 99: no document with id 99 in "},
        {{"--cancelled", "--document", "x", NULL}, "--document 'x': expected a whole number"},
        {{"--cancelled", "--model", "nobody", NULL},
         "requeue: --model nobody: no job was asked for the model id 'nobody'"},
        {{"--cancelled", "--where", "1) OR (1", NULL}, "--where"},
    };
    assert_refused("requeue", db, refused, G_N_ELEMENTS(refused));
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==,
                    18);

    /* --dry-run: what would come back, in cancel's shape. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--cancelled", "--dry-run",
                                  "--question", " Wrong question?\t", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out,
                            "requeue: would queue 6 jobs again (--dry-run: nothing was changed)\n"
                            "  \"Wrong question?\" (model tiny): 6 cancelled\n"));
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==,
                    18);

    /* One question, model and document (by --where): its two jobs only. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--cancelled", "-q", "Total?",
                                  "-m", "tiny", "--where", "path LIKE '%/2024/%'", NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==,
                    "requeue: 2 jobs back in the queue\n  \"Total?\" (model tiny): 2 cancelled\n");
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs j JOIN pages p ON p.id = j.page_id "
                                     "JOIN documents d ON d.id = p.document_id JOIN questions q ON "
                                     "q.id = j.question_id WHERE j.state = 'queued' AND j.attempts "
                                     "= 0 AND j.model_id = 'tiny' AND q.text = 'Total?' AND d.path "
                                     "LIKE '%/2024/%'"),
                    ==, 2);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 2);

    /* --document, twice: model other's jobs on two documents. */
    gint64 first = jt_query_int(db, "SELECT min(id) FROM documents");
    gint64 last = jt_query_int(db, "SELECT max(id) FROM documents");
    char *d1 = g_strdup_printf("%" G_GINT64_FORMAT, first);
    char *d2 = g_strdup_printf("%" G_GINT64_FORMAT, last);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--cancelled", "-m", "other",
                                  "--document", d1, "--document", d2, NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "requeue: 4 jobs back in the queue\n"
                                 "  \"Total?\" (model other): 4 cancelled\n"));
    g_free(out);
    g_assert_cmpint(query_intf(db,
                               "SELECT count(*) FROM jobs j JOIN pages p ON p.id = j.page_id "
                               "WHERE j.state = 'queued' AND j.model_id = 'other' AND "
                               "p.document_id IN (%lld, %lld)",
                               (long long)first, (long long)last),
                    ==, 4);

    /* Known selectors, but no job of theirs in the states asked: said, nothing done. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--failed", "--dead", "-q",
                                  "Wrong question?", NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==, "requeue: no failed or dead job matches: nothing to requeue\n");
    g_free(out);

    /* The others are as they were; a worker answers the two requeued tiny jobs only. */
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 6);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==,
                    12);
    jt_run_worker(db, "tiny");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers WHERE model = 'tiny' AND "
                                     "question = 'Total?' AND document_path LIKE '%/2024/%'"),
                    ==, 2);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 2);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==,
                    12);
    g_free(d1);
    g_free(d2);
    g_free(db);
    g_free(dir);
}

/* requeue --stale, --fingerprint-not and --done: answered jobs back in the queue, their answers
 * kept until answered again (then in answers_superseded). Stale: answered by another snapshot
 * than the model folder's current one, or by one not recorded; said of one model id, so --model
 * is needed (a folder for --stale, whose fingerprint is computed as a worker's load would). */
static void test_requeue_done_stale(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 2);
    const char *id = "tiny-smolvlm-b512";
    g_assert_cmpint(jt_ask(db, 1, id, 3), ==, 4);
    g_assert_cmpint(jt_ask(db, 1, "other", 3), ==, 4);
    jt_run_worker(db, id);
    jt_run_worker(db, "other");
    GError *gerr = NULL;
    /* The snapshot as it is now answered two; one came from the snapshot it replaced; one is
     * from before fingerprints were recorded. The other model's answers are none of this. */
    const char *shared = dq_test_shared_dir(); /* without the model: --fingerprint-not only */
    char *model = shared ? g_build_filename(shared, "models", id, NULL) : NULL;
    if (model != NULL && !g_file_test(model, G_FILE_TEST_IS_DIR))
        g_clear_pointer(&model, g_free);
    if (model == NULL)
        g_test_message("../shared/models/%s not found: --stale with a folder not tried", id);
    char *fp = model ? smolvlm_snapshot_fingerprint(model, &gerr)
                     : g_strdup("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    dq_assert_no_error(gerr);
    g_assert_cmpint(strlen(fp), ==, 64);
    char *sql = g_strdup_printf(
        "UPDATE answers SET model_fingerprint = CASE WHEN id IN (SELECT min(id) FROM answers "
        "WHERE model_id = '%s') THEN 'f%s' WHEN id IN (SELECT max(id) FROM answers WHERE "
        "model_id = '%s') THEN NULL ELSE '%s' END",
        id, fp + 1, id, fp);
    sqlite3 *w = NULL;
    g_assert_cmpint(sqlite3_open(db, &w), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(w, sql, NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(w);
    g_free(sql);
    g_assert_cmpint(
        jt_query_int(db, "SELECT count(*) FROM answers WHERE model_fingerprint IS NULL"), ==, 1);
    /* status names the model id whose answers came from two snapshots, not the other's one. */
    char *status = NULL;
    g_assert_cmpint(dq_test_docqa(&status, NULL, "status", "--db", db, NULL), ==, 0);
    g_assert_nonnull(strstr(status, "model 'tiny-smolvlm-b512': answers from 2 snapshots: "));
    g_assert_null(strstr(status, "model 'other'"));
    g_free(status);

    /* Refused, naming what is wrong; nothing changes. */
    char fp12[13];
    g_strlcpy(fp12, fp, sizeof fp12);
    const Refusal refused[] = {
        {{"--stale"}, "requeue: --stale needs --model DIR: the snapshot folder whose answers"},
        {{"--fingerprint-not", fp12}, "requeue: --fingerprint-not needs --model DIR"},
        {{"--stale", "--model", id},
         "--stale: --model tiny-smolvlm-b512 is no snapshot folder "
         "here: give the folder, or its fingerprint with "
         "--fingerprint-not HEX"},
        {{"--fingerprint-not", "abc", "--model", id},
         "--fingerprint-not abc: expected a "
         "snapshot fingerprint, 12 to 64 hex"},
        {{"--fingerprint-not", "0123456789xy", "--model", id}, "expected a snapshot fingerprint"},
        {{"--fingerprint-not", "0123456789a", "--model", id}, "expected a snapshot fingerprint"},
        {{"--fingerprint-not", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
          "--model", id},
         "expected a snapshot fingerprint"},
    };
    char *out = NULL;
    assert_refused("requeue", db, refused, G_N_ELEMENTS(refused));
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 8);

    /* By the fingerprint's first 12 digits (upper case too), as run and status print it. */
    char *upper = g_ascii_strup(fp12, -1);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--fingerprint-not", upper,
                                  "-m", id, "--dry-run", NULL),
                    ==, 0);
    g_free(upper);
    char *want = g_strdup_printf("requeue: would queue 2 jobs again (--dry-run: nothing was "
                                 "changed)\n  \"question 1\" (model %s): 2 stale\n",
                                 id);
    g_assert_cmpstr(out, ==, want);
    g_free(out);
    if (model != NULL) {
        g_assert_cmpint(
            dq_test_docqa(&out, NULL, "requeue", "--db", db, "--stale", "--model", model, NULL), ==,
            0);
        g_assert_cmpstr(out, ==,
                        "requeue: 2 jobs back in the queue\n  \"question 1\" (model "
                        "tiny-smolvlm-b512): 2 stale\n");
        g_free(out);
    } else {
        g_assert_cmpint(dq_test_docqa(NULL, NULL, "requeue", "--db", db, "--fingerprint-not", fp,
                                      "-m", id, NULL),
                        ==, 0);
    }
    g_free(want);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 2);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 8); /* kept */
    g_assert_cmpint(
        dq_test_docqa(&out, NULL, "requeue", "--db", db, "--fingerprint-not", fp, "-m", id, NULL),
        ==, 0);
    g_assert_cmpstr(out, ==, "requeue: no stale job matches: nothing to requeue\n");
    g_free(out);

    /* --done with a selector: every answered job of that question and model, none other. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--done", "-m", "other", NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==,
                    "requeue: 4 jobs back in the queue\n  \"question 1\" (model other): "
                    "4 answered\n");
    g_free(out);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'queued'"), ==, 6);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 2);
    /* Answered again: the old answers move to answers_superseded, nothing is lost. */
    jt_run_worker(db, "other");
    jt_run_worker(db, id);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_answers"), ==, 8);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM answers_superseded"), ==, 6);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 8);
    g_free(fp);
    g_free(model);
    g_free(db);
    g_free(dir);
}

static JsonObject *array_object(JsonObject *o, const char *member, guint i) {
    JsonArray *a = json_object_get_array_member(o, member);
    g_assert_cmpuint(json_array_get_length(a), >, i);
    return json_array_get_object_element(a, i);
}

/* --json on ask, cancel, requeue and status: one JSON object on stdout holding what the text
 * says, for wrappers that would otherwise parse prose. */
static void test_json_outputs(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    char *out = NULL;
    JsonParser *p = json_parser_new();

    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "m", "--json", "Total?",
                                  "Date?", "Total?", NULL),
                    ==, 0);
    JsonObject *o = jt_json_object(p, out);
    g_assert_cmpstr(json_object_get_string_member(o, "model_id"), ==, "m");
    g_assert_cmpint(json_object_get_int_member(o, "questions"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(o, "duplicates"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "pages"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(o, "jobs_added"), ==, 4);
    g_assert_cmpint(json_object_get_int_member(o, "jobs_existing"), ==, 0);
    g_assert_true(json_object_get_null_member(o, "n_res"));
    g_free(out);
    g_assert_cmpint(jt_drain(db, 1), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "ask", "--db", db, "-m", "m", "--json", "Total?",
                                  "Signed?", NULL),
                    ==, 0);
    o = jt_json_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "jobs_added"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(o, "jobs_existing"), ==, 2);
    g_free(out);

    g_assert_cmpint(
        dq_test_docqa(&out, NULL, "cancel", "--db", db, "--question", "Signed?", "--json", NULL),
        ==, 0);
    o = jt_json_object(p, out);
    g_assert_false(json_object_get_boolean_member(o, "dry_run"));
    g_assert_cmpint(json_object_get_int_member(o, "cancelled"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(o, "back_to_done"), ==, 0);
    JsonObject *g = array_object(o, "groups", 0);
    g_assert_cmpstr(json_object_get_string_member(g, "question"), ==, "Signed?");
    g_assert_cmpstr(json_object_get_string_member(g, "model"), ==, "m");
    g_assert_cmpint(json_object_get_int_member(g, "jobs"), ==, 2);
    g_assert_cmpint(
        json_object_get_int_member(json_object_get_object_member(g, "by_state"), "queued"), ==, 2);
    g_free(out);

    g_assert_cmpint(dq_test_docqa(&out, NULL, "requeue", "--db", db, "--cancelled", "--dry-run",
                                  "--json", NULL),
                    ==, 0);
    o = jt_json_object(p, out);
    g_assert_true(json_object_get_boolean_member(o, "dry_run"));
    g_assert_cmpint(json_object_get_int_member(o, "jobs"), ==, 2);
    JsonArray *states = json_object_get_array_member(o, "states");
    g_assert_cmpuint(json_array_get_length(states), ==, 1);
    g_assert_cmpstr(json_array_get_string_element(states, 0), ==, "cancelled");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"), ==, 2);
    g_free(out);

    char *version = NULL;
    g_assert_cmpint(dq_test_docqa(&version, NULL, "version", NULL), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", db, "--json", NULL), ==, 0);
    o = jt_json_object(p, out);
    char *want = g_strdup_printf("docqa %s\n", json_object_get_string_member(o, "version"));
    g_assert_true(g_str_has_prefix(version, want));
    g_free(want);
    g_free(version);
    JsonArray *progress = json_object_get_array_member(o, "progress");
    g_assert_cmpuint(json_array_get_length(progress), ==, 3); /* in the order first asked */
    const char *questions[] = {"Total?", "Date?", "Signed?"};
    for (guint i = 0; i < 3; i++) {
        JsonObject *row = json_array_get_object_element(progress, i);
        g_assert_cmpstr(json_object_get_string_member(row, "question"), ==, questions[i]);
        g_assert_cmpstr(json_object_get_string_member(row, "model"), ==, "m");
        g_assert_cmpint(json_object_get_int_member(row, "total"), ==, 2);
        g_assert_cmpint(json_object_get_int_member(row, "done"), ==, i < 2 ? 2 : 0);
        g_assert_cmpint(json_object_get_int_member(row, "cancelled"), ==, i < 2 ? 0 : 2);
        if (i < 2) {
            g_assert_cmpfloat(json_object_get_double_member(row, "percent_done"), ==, 100.0);
            g_assert_nonnull(json_object_get_string_member(row, "last_finished_at"));
        } else { /* all cancelled: percent_done is of the jobs not cancelled */
            g_assert_true(json_object_get_null_member(row, "percent_done"));
        }
    }
    g_free(out);
    g_object_unref(p);
    g_free(db);
    g_free(dir);
}

/* run --json: the summary's counts, read from the database's side too. */
static void test_run_json(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "run", "--db", db, "--model", model, "--model-id",
                                  "m", "--until-empty", "-q", "--json", NULL),
                    ==, 0);
    JsonParser *p = json_parser_new();
    JsonObject *o = jt_json_object(p, out);
    g_assert_cmpstr(json_object_get_string_member(o, "model_id"), ==, "m");
    g_assert_cmpint(json_object_get_int_member(o, "workers"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "claimed"), ==, 4);
    g_assert_cmpint(json_object_get_int_member(o, "answered"), ==, 4);
    g_assert_cmpint(json_object_get_int_member(o, "failed"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "given_back"), ==, 0);
    g_assert_false(json_object_get_boolean_member(o, "interrupted"));
    g_assert_true(json_object_get_null_member(o, "error"));
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM answers"), ==, 4);
    g_object_unref(p);
    g_free(out);
    g_free(db);
    g_free(dir);
    g_free(model);
}

/* status and export when the nightly job has filled the disk (0 bytes free): SQLite cannot make
 * the -shm it reads a WAL database through. They read the database file alone (the last writer
 * emptied its -wal into it), saying so once on stderr, and write nothing to it; before, both
 * exited 2 with "disk I/O error". Needs a tmpfs of its own, as test_disk_full_gives_back. */
static void test_status_export_on_full_disk(void) {
    char *dir = dq_test_tmpdir();
    char *mnt = g_build_filename(dir, "small", NULL);
    g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        char *db = small_disk_db(mnt, "m", 4 * 1024 * 1024);
        if (jt_drain(db, 8) != 0)
            _exit(3);
        /* the rest of the disk filled */
        char *filler = g_build_filename(mnt, "filler2", NULL);
        FILE *f = fopen(filler, "w");
        static char block[4096];
        while (f != NULL && fwrite(block, 1, sizeof block, f) == sizeof block)
            ;
        if (f != NULL)
            (void)fclose(f); /* fails: the disk is full, as wanted */
        struct statvfs fs;
        if (statvfs(mnt, &fs) != 0 || fs.f_bavail != 0)
            _exit(4);
        char *before = NULL, *after = NULL;
        gsize n_before = 0, n_after = 0;
        if (!g_file_get_contents(db, &before, &n_before, NULL))
            _exit(4);
        char *bin = dq_test_docqa_path();
        const char *status[] = {bin, "status", "--db", db, NULL};
        const char *export[] = {bin, "export", "--db", db, "--format", "jsonl", NULL};
        char *out = NULL, *err = NULL, *xout = NULL, *xerr = NULL;
        int st = 0, xst = 0;
        if (!g_spawn_sync(NULL, (char **)status, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &st,
                          NULL) ||
            !g_spawn_sync(NULL, (char **)export, NULL, G_SPAWN_DEFAULT, NULL, NULL, &xout, &xerr,
                          &xst, NULL))
            _exit(8);
        fprintf(stderr, "status on a full disk: %d\n%s%s\nexport: %d\n%s\n", st, out, err, xst,
                xerr);
        int lines = 0;
        for (const char *p = xout; (p = strchr(p, '\n')) != NULL; p++)
            lines++;
        /* the file as it was: nothing written */
        gboolean same = g_file_get_contents(db, &after, &n_after, NULL) && n_after == n_before &&
                        memcmp(before, after, n_before) == 0;
        _exit(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(out, "jobs: 200 total: 200 done") &&
                      g_strstr_len(err, -1, "the disk is full") && strstr(err, db) &&
                      strchr(err, '\n') == err + strlen(err) - 1 && WIFEXITED(xst) &&
                      WEXITSTATUS(xst) == 0 && lines == 200 && strstr(xerr, "the disk is full") &&
                      same
                  ? 0
                  : 5);
    }
    dq_test_tmpfs_child_passed(pid);
    g_rmdir(mnt);
    g_free(mnt);
    g_free(dir);
}

/* A run that stops on an error after answering some jobs (the database's disk full) still says
 * what it did: the error on stderr, then the summary (here its JSON, with the error), exit 2.
 * It printed nothing, so a wrapper could not tell how many were answered. Needs a tmpfs of its
 * own, as test_disk_full_gives_back. */
static void test_run_summary_after_error(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *mnt = g_build_filename(dir, "small", NULL);
    g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        /* ~400 KB left: the worker's claims and heartbeats write to the -wal too, before and
         * between its answers */
        char *db = small_disk_db(mnt, "m", 400 * 1024);
        /* g_spawn_sync, not GSubprocess: this forked child has none of GLib's worker threads,
         * which GSubprocess waits on */
        char *bin = dq_test_docqa_path();
        const char *argv[] = {bin,       "run",        "--db",   db,   "--model",
                              model,     "--model-id", "m",      "-q", "--until-empty",
                              "--batch", "4",          "--json", NULL};
        char **envp = g_environ_setenv(g_get_environ(), "DOCQA_CACHE_DIR", "off", TRUE);
        char *out = NULL, *err = NULL;
        int status = 0;
        if (!g_spawn_sync(NULL, (char **)argv, envp, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                          &status, NULL))
            _exit(8);
        int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        gint64 done = jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'");
        fprintf(stderr, "run on a full disk: exit %d, %" G_GINT64_FORMAT " done\nsaid: %s\n%s\n",
                rc, done, err, out);
        if (rc != 2 || done == 0 || strstr(err, "full") == NULL)
            _exit(5); /* the disk did not fill after some answers: the test proves nothing */
        JsonParser *p = json_parser_new();
        if (!json_parser_load_from_data(p, out, -1, NULL))
            _exit(6);
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        const char *error = json_object_get_string_member_with_default(o, "error", NULL);
        _exit(json_object_get_int_member(o, "answered") == done && error != NULL &&
                      strstr(error, "full") != NULL
                  ? 0
                  : 7);
    }
    dq_test_tmpfs_child_passed(pid);
    g_rmdir(mnt);
    g_free(mnt);
    g_free(dir);
    g_free(model);
}

/* export's sort of many answers spills into a temporary file, which SQLite makes in $TMPDIR:
 * where it cannot (TMPDIR=/proc, which lets root pass access() and refuses every file), the
 * message names TMPDIR and the folder, not "unable to open database file" about the database
 * that export reads well. Root only: access() stops anyone else from choosing such a folder. */
static void test_temp_store_message(void) {
    if (geteuid() != 0) {
        g_test_skip("needs root (a folder that access() calls writable and that refuses files)");
        return;
    }
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    int n = 12000;
    g_assert_cmpint(jt_ask(db, n, "m", 3), ==, n);
    g_assert_cmpint(jt_drain(db, 500), ==, 0);
    const char *args[] = {"export", "--db", db, NULL};
    const char *env[] = {"TMPDIR=/proc", NULL};
    char *out = NULL, *err = NULL;
    int rc = docqa_with(env, NULL, &out, &err, args);
    g_assert_cmpint(rc, ==, 2);
    if (strstr(err, "SQLite could not make a temporary file in /proc, named by $TMPDIR") == NULL)
        g_error("export with TMPDIR=/proc said: %s", err);
    g_free(out), g_free(err);
    /* A usable TMPDIR: the same export works. */
    const char *env_ok[] = {"TMPDIR=/tmp", NULL};
    g_assert_cmpint(docqa_with(env_ok, NULL, &out, NULL, args), ==, 0);
    char **lines = g_strsplit(out, "\r\n", -1);
    g_assert_cmpuint(g_strv_length(lines), ==, (guint)n + 2); /* header, rows, the empty tail */
    g_strfreev(lines);
    g_free(out);
    g_free(db);
    g_free(dir);
}

/* An option no command knows: the message names the command it was given to, as every other
 * message of a command does ("docqa: Unknown option --bogus" did not). */
static void test_unknown_option_names_command(void) {
    const char *commands[] = {"version", "ingest",  "ask",      "run",     "status",
                              "export",  "requeue", "generate", "migrate", "cancel"};
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        char *err = NULL;
        g_assert_cmpint(dq_test_docqa(NULL, &err, commands[i], "--bogus", NULL), ==, 2);
        char *want =
            g_strdup_printf("docqa: %s: Unknown option --bogus (see --help)\n", commands[i]);
        g_assert_cmpstr(err, ==, want);
        g_free(want);
        g_free(err);
    }
}

static void become_nobody(gpointer data) {
    (void)data;
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
        _exit(99);
}

/* Another user's database, which this user may read but not write: the message says whose it is
 * and its mode, and what to do, not only SQLite's "attempt to write a readonly database". Root
 * makes the database and runs docqa as nobody; skipped where the test is not root. */
static void test_read_only_owner(void) {
    if (geteuid() != 0) {
        g_test_skip("needs root, to run docqa as another user than the database's owner");
        return;
    }
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(g_chmod(dir, 0777), ==, 0); /* the folder is not what stops the writes */
    g_assert_cmpint(g_chmod(db, 0644), ==, 0);
    char *bin = dq_test_docqa_path();
    const char *argv[] = {bin, "ask", "--db", db, "-m", "m", "Total?", NULL};
    int status = 0;
    char *err = NULL;
    GError *e = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, become_nobody, NULL,
                               NULL, &err, &status, &e));
    dq_assert_no_error(e);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 2);
    char *want = g_strdup_printf("%s belongs to root (uid 0), mode 0644, and this docqa runs as "
                                 "nobody (uid 65534), who may not write it: run docqa as its "
                                 "owner, or have the owner give you write access",
                                 db);
    if (strstr(err, "attempt to write a readonly database") == NULL || strstr(err, want) == NULL)
        g_error("ask on root's database as nobody said: %s", err);
    g_free(want);
    g_free(err);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 0);
    g_free(bin);
    g_free(db);
    g_free(dir);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    char *bin = dq_test_docqa_path();
    if (!g_file_test(bin, G_FILE_TEST_IS_EXECUTABLE))
        g_error("%s not built", bin);
    g_free(bin);
    g_test_add_func("/cli-jobs/ask-status-export-requeue", test_ask_status_export_requeue);
    g_test_add_func("/cli-jobs/generate-names-file-kind", test_generate_names_file_kind);
    g_test_add_func("/cli-jobs/export-spreadsheet-safe", test_export_spreadsheet_safe);
    g_test_add_func("/cli-jobs/json-unit-separator", test_json_unit_separator);
    g_test_add_func("/cli-jobs/status-one-snapshot", test_status_one_snapshot);
    g_test_add_func("/cli-jobs/run-nothing-queued-note", test_run_nothing_queued_note);
    g_test_add_func("/cli-jobs/read-only-database", test_read_only_database);
    g_test_add_func("/cli-jobs/status-json-numbers", test_status_json_numbers);
    g_test_add_func("/cli-jobs/old-schema-reader", test_old_schema_reader);
    g_test_add_func("/cli-jobs/status-stalled", test_status_stalled);
    g_test_add_func("/cli-jobs/status-progress-table", test_status_progress_table);
    g_test_add_func("/cli-jobs/page-store-notes", test_page_store_notes);
    g_test_add_func("/cli-jobs/dropped-views", test_dropped_views);
    g_test_add_func("/cli-jobs/read-only-database-wal-without-shm",
                    test_read_only_database_wal_without_shm);
    g_test_add_func("/cli-jobs/disk-full-gives-back", test_disk_full_gives_back);
    g_test_add_func("/cli-jobs/run-refuses-clearly", test_run_refuses_clearly);
    g_test_add_func("/cli-jobs/ask-checks-model", test_ask_checks_model);
    g_test_add_func("/cli-jobs/ask-normalizes-questions", test_ask_normalizes_questions);
    g_test_add_func("/cli-jobs/ask-refuses-a-file-name", test_ask_refuses_a_file_name);
    g_test_add_func("/cli-jobs/ask-questions-from-stdin", test_ask_questions_from_stdin);
    g_test_add_func("/cli/stdout-write-errors", test_stdout_write_errors);
    g_test_add_func("/cli/help-write-errors", test_help_write_errors);
    g_test_add_func("/cli-jobs/user-errors", test_user_errors);
    g_test_add_func("/cli/generate-length", test_generate_length);
    g_test_add_func("/cli/generate-top-k-zero", test_generate_top_k_zero);
    g_test_add_func("/cli/generate-ignore-eos", test_generate_ignore_eos);
    g_test_add_func("/cli/generate-dump-logits", test_generate_dump_logits);
    g_test_add_func("/cli/sqlite-failure-says-why", test_sqlite_failure_says_why);
    g_test_add_func("/cli/old-schema-read-fails", test_old_schema_read_fails);
    g_test_add_func("/cli/migrate-copy-reported-unwritable", test_migrate_copy_reported_unwritable);
    g_test_add_func("/cli/old-schema-open-refused", test_old_schema_open_refused);
    g_test_add_func("/cli/generate-dump-logits-write-failed",
                    test_generate_dump_logits_write_failed);
    g_test_add_func("/cli/options-utf8", test_options_utf8);
    g_test_add_func("/cli/threads-capped", test_threads_capped);
    g_test_add_func("/cli/generate-top-p-zero", test_generate_top_p_zero);
    g_test_add_func("/cli-jobs/numbers-refused-by-name", test_numbers_refused_by_name);
    g_test_add_func("/cli-jobs/numbers-in-decimal", test_numbers_in_decimal);
    g_test_add_func("/cli-jobs/stray-arguments", test_commands_refuse_stray_arguments);
    g_test_add_func("/cli-jobs/empty-model-deep-questions", test_empty_model_and_deep_questions);
    g_test_add_func("/cli-jobs/answers-follow-the-bytes", test_answers_follow_the_bytes);
    g_test_add_func("/cli-jobs/gone-files", test_gone_files);
    g_test_add_func("/cli-jobs/ask-one-rendering", test_ask_one_rendering);
    g_test_add_func("/cli-jobs/cancel", test_cancel);
    g_test_add_func("/cli-jobs/orphan-question", test_orphan_question);
    g_test_add_func("/cli-jobs/requeue-selected", test_requeue_selected);
    g_test_add_func("/cli-jobs/requeue-done-stale", test_requeue_done_stale);
    g_test_add_func("/cli-jobs/json-outputs", test_json_outputs);
    g_test_add_func("/cli-jobs/temp-store-message", test_temp_store_message);
    g_test_add_func("/cli-jobs/read-only-owner", test_read_only_owner);
    g_test_add_func("/cli/unknown-option-names-command", test_unknown_option_names_command);
    g_test_add_func("/cli-jobs/run-json", test_run_json);
    g_test_add_func("/cli-jobs/run-summary-after-error", test_run_summary_after_error);
    g_test_add_func("/cli-jobs/status-export-on-full-disk", test_status_export_on_full_disk);
    return g_test_run();
}
