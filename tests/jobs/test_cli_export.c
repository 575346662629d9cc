/* docqa export in a chain of incremental exports (--after, --checkpoint-file), as a nightly job
 * runs it: every answer in exactly one export, whatever its finished_at says and however the
 * workers' commits interleave; and the checkpoint's own rules. Answers are stored through the
 * store, or by a worker with the hash answerer (a test double). */
#include "clock.h"
#include "jobs_testlib.h"
#include "queue.h"
#include "store.h"
#include "store_jobs.h"
#include "testutil.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#ifdef DQ_TEST_POSTGRES
#include "pg_testlib.h"
static PgtServer *server;
static char *server_why_not;
#endif

static int compare_strings(gconstpointer a, gconstpointer b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One incremental export (JSON lines) with the checkpoint kept in `cp`: adds each row's job id
 * to `seen` (counting), returns the rows as "job_id:answer:finished_at" lines, sorted. */
static char *export_since(const char *db, const char *cp, GHashTable *seen, char **errout) {
    char *out = NULL, *err = NULL;
    g_assert_cmpint(dq_test_docqa(&out, &err, "export", "--db", db, "--format", "jsonl",
                                  "--checkpoint-file", cp, NULL),
                    ==, 0);
    g_test_message("export: %s", err);
    GPtrArray *rows = g_ptr_array_new_with_free_func(g_free);
    char **lines = g_strsplit(out, "\n", -1);
    for (char **l = lines; *l && **l; l++) {
        JsonParser *p = json_parser_new();
        g_assert_true(json_parser_load_from_data(p, *l, -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        gint64 job = json_object_get_int_member(o, "job_id");
        g_ptr_array_add(rows, g_strdup_printf("%" G_GINT64_FORMAT ":%s:%s", job,
                                              json_object_get_string_member(o, "answer"),
                                              json_object_get_string_member(o, "finished_at")));
        gpointer key = GINT_TO_POINTER((int)job);
        g_hash_table_insert(seen, key,
                            GINT_TO_POINTER(GPOINTER_TO_INT(g_hash_table_lookup(seen, key)) + 1));
        g_object_unref(p);
    }
    g_strfreev(lines);
    g_free(out);
    g_ptr_array_sort(rows, compare_strings);
    g_ptr_array_add(rows, NULL);
    char *joined = g_strjoinv("\n", (char **)rows->pdata);
    g_ptr_array_free(rows, TRUE);
    if (errout)
        *errout = err;
    else
        g_free(err);
    return joined;
}

static DqJobAnswer answer(gint64 job_id, const char *text, const char *finished_at) {
    return (DqJobAnswer){.job_id = job_id,
                         .text = text,
                         .prompt_tokens = 10,
                         .generated_tokens = 2,
                         .started_at = "2026-03-01T00:00:00.000Z",
                         .finished_at = finished_at,
                         .device = "cpu",
                         .weights = "stored",
                         .exact = 1};
}

typedef struct {
    const char *db;
    DqJobAnswer answer;
    gboolean ok;
    int written;
} LateCommit;

/* A worker whose answer is finished (finished_at stamped) and whose commit then waits for the
 * write lock. */
static gpointer commit_late(gpointer data) {
    LateCommit *lc = data;
    GError *err = NULL;
    DqStore *s = dq_store_open(lc->db, &err);
    dq_assert_no_error(err);
    lc->ok = store_jobs_complete(s, "w", &lc->answer, 1, &lc->written, &err);
    dq_assert_no_error(err);
    store_jobs_finalize(s);
    dq_store_close(s);
    return NULL;
}

/* The tester's reproducer, made deterministic: answer B is finished before answer A but its
 * commit waits on a write lock another connection holds (an sqlite3 shell, a long write); an
 * export runs while it waits (readers are not blocked) and sees A alone. B then commits with a
 * finished_at older than A's, so "finished_at > the last export's newest" would never export it:
 * the next export in the chain does, and every answer is exported exactly once. */
static void test_export_lock_delayed_commit(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 2);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 4);
    char *cp = g_build_filename(dir, "nightly.checkpoint", NULL);
    GHashTable *seen = g_hash_table_new(NULL, NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(db, &err);
    dq_assert_no_error(err);
    GPtrArray *jobs = store_jobs_claim(s, "w", "m", 4, dq_wall_ms(), 600000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(jobs->len, ==, 4);
    gint64 id[4];
    for (int i = 0; i < 4; i++)
        id[i] = ((DqClaimedJob *)g_ptr_array_index(jobs, i))->job_id;

    /* Night 1: two answers, the first export of the chain (no checkpoint file yet). */
    DqJobAnswer first[2] = {answer(id[0], "one", "2026-03-01T00:00:01.000Z"),
                            answer(id[1], "two", "2026-03-01T00:00:02.000Z")};
    int written = 0;
    g_assert_true(store_jobs_complete(s, "w", first, 2, &written, &err));
    g_assert_cmpint(written, ==, 2);
    char *said = NULL;
    char *rows = export_since(db, cp, seen, &said);
    char *want = g_strdup_printf("%" G_GINT64_FORMAT ":one:2026-03-01T00:00:01.000Z\n"
                                 "%" G_GINT64_FORMAT ":two:2026-03-01T00:00:02.000Z",
                                 id[0], id[1]);
    g_assert_cmpstr(rows, ==, want);
    g_free(want);
    g_assert_nonnull(strstr(said, "does not exist yet: exporting every answer"));
    g_assert_nonnull(strstr(said, "2 rows of the answers committed after checkpoint 0; "
                                  "checkpoint now 2, kept in "));
    g_free(said);
    g_free(rows);
    char *kept = NULL;
    g_assert_true(g_file_get_contents(cp, &kept, NULL, NULL));
    g_assert_cmpstr(kept, ==, "2\n");
    g_free(kept);

    /* Night 2: B is finished first (04 s), A after it (05 s). A commits; then another
     * connection holds the write lock, and B's commit waits for it. */
    DqJobAnswer a = answer(id[3], "A", "2026-03-01T00:00:05.000Z");
    LateCommit b = {.db = db, .answer = answer(id[2], "B", "2026-03-01T00:00:04.000Z")};
    g_assert_true(store_jobs_complete(s, "w", &a, 1, &written, &err));
    sqlite3 *shell = NULL;
    g_assert_cmpint(sqlite3_open(db, &shell), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(shell, "BEGIN IMMEDIATE", NULL, NULL, NULL), ==, SQLITE_OK);
    GThread *t = g_thread_new("late commit", commit_late, &b);
    rows = export_since(db, cp, seen, NULL); /* the lock is held: B cannot have committed */
    want = g_strdup_printf("%" G_GINT64_FORMAT ":A:2026-03-01T00:00:05.000Z", id[3]);
    g_assert_cmpstr(rows, ==, want);
    g_free(want);
    g_free(rows);
    g_assert_cmpint(sqlite3_exec(shell, "COMMIT", NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(shell);
    g_thread_join(t);
    g_assert_true(b.ok);
    g_assert_cmpint(b.written, ==, 1);

    /* B is visible now, stamped before the newest answer the last export gave: a chain by
     * finished_at would skip it for good. This one gives it, and only it. */
    g_assert_cmpint(strcmp(b.answer.finished_at, a.finished_at), <, 0);
    rows = export_since(db, cp, seen, NULL);
    want = g_strdup_printf("%" G_GINT64_FORMAT ":B:2026-03-01T00:00:04.000Z", id[2]);
    g_assert_cmpstr(rows, ==, want);
    g_free(want);
    g_free(rows);
    rows = export_since(db, cp, seen, &said); /* nothing new: nothing again */
    g_assert_cmpstr(rows, ==, "");
    g_assert_nonnull(strstr(said, "0 rows of the answers committed after checkpoint 4; "
                                  "checkpoint now 4"));
    g_free(said);
    g_free(rows);
    /* Every answer, each exactly once. */
    g_assert_cmpint(g_hash_table_size(seen), ==, 4);
    for (int i = 0; i < 4; i++)
        g_assert_cmpint(GPOINTER_TO_INT(g_hash_table_lookup(seen, GINT_TO_POINTER((int)id[i]))), ==,
                        1);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_ptr_array_free(jobs, TRUE);
    g_hash_table_destroy(seen);
    g_free(cp);
    g_free(db);
    g_free(dir);
}

/* The index of the first line of `lines` equal to `want` (or, with prefix, starting with it);
 * -1 when none is. */
static int line_index(char **lines, const char *want, gboolean prefix) {
    for (int i = 0; lines[i] != NULL; i++)
        if (prefix ? g_str_has_prefix(lines[i], want) : strcmp(lines[i], want) == 0)
            return i;
    return -1;
}

/* Answers a power loss could roll back are never handed on. With synchronous=NORMAL the -wal
 * is synced only at checkpoints, and nobody's close checkpoints while another connection holds
 * the database (a worker service beside the nightly export): the answers just committed live in
 * the page cache. An export that wrote them out and moved its checkpoint past them, then a power
 * loss, left rows of answers the database no longer held; run again, the jobs were answered
 * under the same commit numbers, which the next export skipped (scripts/crash-sweep.py,
 * run-export). The export now syncs the -wal, and the folder of the file it writes (made by the
 * shell: its name would be lost), before its checkpoint file is written: the order of the
 * fsyncs it runs (a preloaded logger) says so. */
static void test_export_answers_synced_first(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 2);
    GError *err = NULL;
    DqStore *s = dq_store_open(db, &err); /* the worker's connection, open throughout */
    dq_assert_no_error(err);
    GPtrArray *jobs = store_jobs_claim(s, "w", "m", 2, dq_wall_ms(), 600000, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(jobs->len, ==, 2);
    DqJobAnswer two[2] = {answer(((DqClaimedJob *)g_ptr_array_index(jobs, 0))->job_id, "one",
                                 "2026-03-01T00:00:01.000Z"),
                          answer(((DqClaimedJob *)g_ptr_array_index(jobs, 1))->job_id, "two",
                                 "2026-03-01T00:00:02.000Z")};
    int written = 0;
    g_assert_true(store_jobs_complete(s, "w", two, 2, &written, &err));
    g_assert_cmpint(written, ==, 2);

    char *real = realpath(dir, NULL); /* what /proc/self/fd shows */
    g_assert_nonnull(real);
    char *out_dir = g_build_filename(real, "out", NULL);
    g_assert_cmpint(g_mkdir(out_dir, 0755), ==, 0);
    char *out = g_build_filename(out_dir, "answers.csv", NULL);
    char *cp = g_build_filename(real, "nightly.checkpoint", NULL);
    char *log = g_build_filename(real, "sync.log", NULL);
    char *log_env = g_strconcat("DQ_TEST_SYNC_LOG=", log, NULL);
    /* a sanitized docqa refuses a library loaded before its runtime unless told not to look */
    const char *asan = g_getenv("ASAN_OPTIONS");
    char *asan_env = g_strdup_printf("ASAN_OPTIONS=%s%sverify_asan_link_order=0", asan ? asan : "",
                                     asan && *asan ? ":" : "");
    const char *env[] = {"LD_PRELOAD=" DQ_SYNC_LOG_PRELOAD, log_env, asan_env, NULL};
    DqTestRun how = {.env = env, .stdout_path = out};
    const char *args[] = {"export", "--db", db, "--format", "csv", "--checkpoint-file", cp, NULL};
    char *said = NULL;
    g_assert_cmpint(dq_test_docqa_run(&how, args, NULL, &said), ==, 0);
    g_assert_nonnull(strstr(said, "2 rows of the answers committed after checkpoint 0"));

    char *text = NULL;
    g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
    g_test_message("fsyncs:\n%s", text);
    char **lines = g_strsplit(text, "\n", -1);
    char *wal = g_strconcat(real, "/docqa.db-wal", NULL);
    char *cp_tmp = g_strconcat(cp, ".", NULL); /* g_file_set_contents' temporary, synced */
    int at_wal = line_index(lines, wal, FALSE), at_out = line_index(lines, out, FALSE),
        at_folder = line_index(lines, out_dir, FALSE), at_cp = line_index(lines, cp_tmp, TRUE);
    g_assert_cmpint(at_out, >=, 0);
    g_assert_cmpint(at_cp, >, at_out);
    g_assert_cmpint(at_wal, >=, 0);
    g_assert_cmpint(at_wal, <, at_cp);
    g_assert_cmpint(at_folder, >=, 0);
    g_assert_cmpint(at_folder, <, at_cp);

    g_free(cp_tmp);
    g_free(wal);
    g_strfreev(lines);
    g_free(text);
    g_free(said);
    g_free(asan_env);
    g_free(log_env);
    g_free(log);
    g_free(cp);
    g_free(out);
    g_free(out_dir);
    free(real);
    store_jobs_finalize(s);
    dq_store_close(s);
    g_ptr_array_free(jobs, TRUE);
    g_free(db);
    g_free(dir);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static char *file_text(const char *path) {
    char *t = NULL;
    g_assert_true(g_file_get_contents(path, &t, NULL, NULL));
    return t;
}

/* The checkpoint's rules: one way to give it, a number, never past the database's newest (a
 * checkpoint of another database, or of a backup's past); a mistyped question moves nothing. An
 * answer that replaces another (requeue) comes again in the next export, under the same job, and
 * does so although SQLite gives it the replaced answer's id; the filters (--question, --current,
 * CSV) work within a range as without. */
static void test_export_checkpoint_rules(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 2);
    g_assert_cmpint(jt_ask(db, 2, "tiny", 3), ==, 8);
    jt_run_worker(db, "tiny");
    char *out = NULL, *err = NULL;
    g_assert_cmpint(
        dq_test_docqa(&out, &err, "export", "--db", db, "--format", "jsonl", "--after", "0", NULL),
        ==, 0);
    g_assert_cmpint(count_lines(out), ==, 8);
    g_assert_cmpstr(err, ==,
                    "docqa: export: 8 rows of the answers committed after checkpoint 0; "
                    "checkpoint now 8 (next: --after 8)\n");
    g_free(out);
    g_free(err);
    static const char *header =
        "document_path,page,question,answer,model,finished_at,document_id,document_sha256,"
        "job_id,device,weights,exact,n_res,tile,longest_edge,prompt,max_new_tokens,do_sample,"
        "model_fingerprint,page_id,generated_tokens,ms_total\r\n";
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, "--after", "8", NULL), ==, 0);
    g_assert_cmpstr(out, ==, header);
    g_free(out);

    /* Refused before anything is written. */
    char *cp = g_build_filename(dir, "cp", NULL);
    char long_name[251];
    memset(long_name, 'c', 250);
    long_name[250] = '\0';
    char *long_cp = g_build_filename(dir, long_name, NULL);
    struct {
        const char *args[5];
        const char *file; /* the checkpoint file's text first, or NULL: none */
        const char *says;
    } refused[] = {
        {{"--after", "9"}, NULL, "checkpoint 9 is past the newest answer of "},
        {{"--after", "-1"}, NULL, "--after -1: must be at least 0"},
        {{"--after", "x"}, NULL, "--after 'x': expected a whole number"},
        {{"--after", "0", "--checkpoint-file", cp},
         NULL,
         "--after and --checkpoint-file: give one"},
        {{"--checkpoint-file", cp}, "last night\n", "not an export checkpoint"},
        {{"--checkpoint-file", cp}, "", "not an export checkpoint"},
        {{"--checkpoint-file", cp}, "12", "checkpoint 12 is past the newest answer of "},
        /* Its name fits, not its temporary's (FILE.XXXXXX): refused before any row, as a folder
         * that cannot be written is (which root, running this, can write). */
        {{"--checkpoint-file", long_cp}, NULL, "no file can be made beside it in its folder "},
        {{"--checkpoint-file", cp, "--question", "Never asked?"},
         "3\n",
         "no such question was asked (v_progress lists those that were); the checkpoint was "
         "not moved"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(refused); i++) {
        g_remove(cp);
        if (refused[i].file)
            g_assert_true(g_file_set_contents(cp, refused[i].file, -1, NULL));
        const char **a = refused[i].args;
        g_assert_cmpint(
            dq_test_docqa(&out, &err, "export", "--db", db, a[0], a[1], a[2], a[3], NULL), ==, 2);
        g_test_message("%s", err);
        g_assert_nonnull(strstr(err, refused[i].says));
        g_assert_cmpstr(out, ==, "");
        g_free(out);
        g_free(err);
        if (refused[i].file) { /* left as it was */
            char *t = file_text(cp);
            g_assert_cmpstr(t, ==, refused[i].file);
            g_free(t);
        }
    }
    g_assert_false(g_file_test(long_cp, G_FILE_TEST_EXISTS));
    g_free(long_cp);

    /* The newest answer, approximate, answered again: the new answer is in the next export,
     * under its job. On SQLite it takes the replaced answer's id (max(id) + 1 after the DELETE):
     * `id > 8` would miss it. */
    g_assert_true(g_file_set_contents(cp, "8\n", -1, NULL));
    gint64 job = jt_query_int(db, "SELECT job_id FROM answers ORDER BY id DESC LIMIT 1");
    gint64 answer_id = jt_query_int(db, "SELECT max(id) FROM answers");
    sqlite3 *w = NULL;
    g_assert_cmpint(sqlite3_open(db, &w), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(w,
                                 "UPDATE answers SET device = 'cuda:0', exact = 0 WHERE id = "
                                 "(SELECT max(id) FROM answers)",
                                 NULL, NULL, NULL),
                    ==, SQLITE_OK);
    sqlite3_close(w);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "requeue", "--db", db, "--approximate", NULL), ==, 0);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, "--checkpoint-file", cp, NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==, header); /* requeueing stores no answer */
    g_free(out);
    jt_run_worker(db, "tiny");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM answers_superseded"), ==, 1);
    char *sql = g_strdup_printf("SELECT id FROM answers WHERE job_id = %" G_GINT64_FORMAT, job);
    g_assert_cmpint(jt_query_int(db, sql), ==, answer_id);
    g_free(sql);
    /* CSV, the checkpoint kept in the file: the header and one row, of that job, computed on
     * the CPU this time. */
    g_assert_cmpint(dq_test_docqa(&out, &err, "export", "--db", db, "--checkpoint-file", cp, NULL),
                    ==, 0);
    g_assert_cmpint(count_lines(out), ==, 2);
    char **lines = g_strsplit(out, "\r\n", -1);
    char **cells = g_strsplit(lines[1], ",", -1);
    g_assert_cmpint(g_ascii_strtoll(cells[8], NULL, 10), ==, job);
    g_assert_cmpstr(cells[9], !=, "cuda:0");
    g_strfreev(cells);
    g_strfreev(lines);
    g_assert_nonnull(strstr(err, "checkpoint now 9"));
    g_free(out);
    g_free(err);
    char *t = file_text(cp);
    g_assert_cmpstr(t, ==, "9\n");
    g_free(t);

    /* Filters within a range: one question's answers; the current view. */
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, "--format", "jsonl", "--after",
                                  "0", "--question", " question 1 ", NULL),
                    ==, 0);
    g_assert_cmpint(count_lines(out), ==, 4);
    g_assert_null(strstr(out, "\"question 2\""));
    g_free(out);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, "--format", "jsonl",
                                  "--current", "--after", "8", NULL),
                    ==, 0);
    g_assert_cmpint(count_lines(out), ==, 1);
    char *job_member = g_strdup_printf("\"job_id\":%" G_GINT64_FORMAT ",", job);
    g_assert_nonnull(strstr(out, job_member));
    g_free(job_member);
    g_free(out);
    g_free(cp);
    g_free(db);
    g_free(dir);
}

/* A checkpoint file that is a symbolic link (one shared checkpoint, linked from each job's
 * folder): the checkpoint goes where the link points, through a chain of links and a dangling
 * one; the links stay links. */
static void test_export_checkpoint_symlink(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 1, "tiny", 2), ==, 2);
    jt_run_worker(db, "tiny");
    char *shared = g_build_filename(dir, "shared", NULL);
    g_assert_cmpint(g_mkdir(shared, 0755), ==, 0);
    char *target = g_build_filename(shared, "cp", NULL);
    char *hop = g_build_filename(dir, "hop", NULL);
    char *link = g_build_filename(dir, "cp-link", NULL);
    g_assert_cmpint(symlink("shared/cp", hop), ==, 0); /* relative, dangling until written */
    g_assert_cmpint(symlink(hop, link), ==, 0);
    char *out = NULL;
    g_assert_cmpint(
        dq_test_docqa(&out, NULL, "export", "--db", db, "--checkpoint-file", link, NULL), ==, 0);
    g_assert_cmpint(count_lines(out), ==, 3); /* the header and both answers */
    g_free(out);
    char *t = file_text(target);
    g_assert_cmpstr(t, ==, "2\n");
    g_free(t);
    g_assert_true(g_file_test(link, G_FILE_TEST_IS_SYMLINK));
    g_assert_true(g_file_test(hop, G_FILE_TEST_IS_SYMLINK));
    /* The next export through the link starts there: nothing new. */
    g_assert_cmpint(
        dq_test_docqa(&out, NULL, "export", "--db", db, "--checkpoint-file", link, NULL), ==, 0);
    g_assert_cmpint(count_lines(out), ==, 1);
    g_free(out);
    g_free(link), g_free(hop), g_free(target), g_free(shared), g_free(db), g_free(dir);
}

/* The rows of one export (JSON lines) as sorted "document_path page question" lines; the
 * export must exit 0. */
static char *export_rows(const char *db, const char *const *args, char **errout) {
    const char *argv[16] = {"export", "--db", db, "--format", "jsonl"};
    int n = 5;
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa_in(NULL, NULL, argv, &out, errout), ==, 0);
    GPtrArray *rows = g_ptr_array_new_with_free_func(g_free);
    char **lines = g_strsplit(out, "\n", -1);
    for (char **l = lines; *l && **l; l++) {
        JsonParser *p = json_parser_new();
        g_assert_true(json_parser_load_from_data(p, *l, -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        g_ptr_array_add(rows, g_strdup_printf("%s %" G_GINT64_FORMAT " %s",
                                              json_object_get_string_member(o, "document_path"),
                                              json_object_get_int_member(o, "page"),
                                              json_object_get_string_member(o, "question")));
        g_object_unref(p);
    }
    g_strfreev(lines);
    g_free(out);
    g_ptr_array_sort(rows, compare_strings);
    g_ptr_array_add(rows, NULL);
    char *joined = g_strjoinv("\n", (char **)rows->pdata);
    g_ptr_array_free(rows, TRUE);
    return joined;
}

static void exec_sql(const char *db, const char *sql) {
    sqlite3 *h = NULL;
    g_assert_cmpint(sqlite3_open(db, &h), ==, SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(h, sql, NULL, NULL, &msg) != SQLITE_OK)
        g_error("%s: %s", sql, msg);
    sqlite3_close(h);
}

/* export --where: only the answers about the documents the expression matches, with ask's
 * checker and ask's words for what it refuses. Without --current a row is selected by the
 * document it was asked for, with --current by the path it is listed under (a copy of a file
 * gets its original's answers there, and only there); several --where are any of them; in a
 * chain of exports (--checkpoint-file) only the new answers about the matching documents. */
static void test_export_where(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 3, 2); /* doc-0000 and doc-0002 in 2023/, doc-0001 in 2024/ */
    g_assert_cmpint(jt_ask(db, 1, "tiny", 3), ==, 6);
    jt_run_worker(db, "tiny");
    /* A copy of doc-0001 that appeared after it was answered: the same bytes, nothing asked. */
    exec_sql(db, "INSERT INTO documents (path, sha256, bytes, mtime, kind, page_count, status) "
                 "SELECT '/archive/copies/doc-0001.pdf', sha256, bytes, mtime, kind, page_count, "
                 "status FROM documents WHERE path = '/archive/2024/doc-0001.pdf';"
                 "INSERT INTO pages (document_id, page_number, width, height, render_settings, "
                 "image_sha256, status) SELECT (SELECT id FROM documents WHERE path LIKE "
                 "'/archive/copies/%'), page_number, width, height, render_settings, "
                 "image_sha256, status FROM pages WHERE document_id = (SELECT id FROM documents "
                 "WHERE path = '/archive/2024/doc-0001.pdf')");
    char *rows = export_rows(db, (const char *[]){"--where", "path LIKE '%/2024/%'", NULL}, NULL);
    g_assert_cmpstr(rows, ==,
                    "/archive/2024/doc-0001.pdf 1 question 1\n"
                    "/archive/2024/doc-0001.pdf 2 question 1");
    g_free(rows);
    /* Any of several; CSV the same rows. */
    char *out = NULL, *err = NULL;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "export", "--db", db, "--where",
                                  "path LIKE '%doc-0000%'", "-w", "bytes = 1002", NULL),
                    ==, 0);
    g_assert_cmpint(count_lines(out), ==, 1 + 4);
    g_assert_nonnull(strstr(out, "\r\n/archive/2023/doc-0000.pdf,1,question 1,"));
    g_assert_nonnull(strstr(out, "\r\n/archive/2023/doc-0002.pdf,2,question 1,"));
    g_assert_null(strstr(out, "2024"));
    g_free(out);
    /* The copy: listed under it only with --current, and there under its own path. */
    rows =
        export_rows(db, (const char *[]){"--where", "path LIKE '/archive/copies/%'", NULL}, &err);
    g_assert_cmpstr(rows, ==, "");
    g_assert_cmpstr(err, ==, "");
    g_free(rows);
    g_free(err);
    rows = export_rows(
        db, (const char *[]){"--current", "--where", "path LIKE '/archive/copies/%'", NULL}, NULL);
    g_assert_cmpstr(rows, ==,
                    "/archive/copies/doc-0001.pdf 1 question 1\n"
                    "/archive/copies/doc-0001.pdf 2 question 1");
    g_free(rows);
    rows = export_rows(db, (const char *[]){"--current", "--where", "path LIKE '%/2024/%'", NULL},
                       NULL);
    g_assert_cmpstr(rows, ==,
                    "/archive/2024/doc-0001.pdf 1 question 1\n"
                    "/archive/2024/doc-0001.pdf 2 question 1");
    g_free(rows);
    /* Nothing matches: no rows, said on stderr, exit 0. */
    rows = export_rows(db, (const char *[]){"--where", "path = 'nowhere'", NULL}, &err);
    g_assert_cmpstr(rows, ==, "");
    g_assert_cmpstr(err, ==,
                    "docqa: export: --where matches no document, so no answer was written\n");
    g_free(rows);
    g_free(err);

    /* A filtered chain: the second export gives only the new answers about 2024's document.
     * --current: question 2's jobs for its pages are made for the copy, ingested last. */
    char *cp = g_build_filename(dir, "2024.checkpoint", NULL);
    rows = export_rows(db,
                       (const char *[]){"--checkpoint-file", cp, "--current", "--where",
                                        "path LIKE '%/2024/%'", NULL},
                       NULL);
    g_assert_cmpint(count_lines(rows), ==, 1);
    g_free(rows);
    g_assert_cmpint(jt_ask(db, 2, "tiny", 3), ==, 6); /* question 2 */
    jt_run_worker(db, "tiny");
    rows = export_rows(db,
                       (const char *[]){"--checkpoint-file", cp, "--current", "--where",
                                        "path LIKE '%/2024/%'", NULL},
                       NULL);
    g_assert_cmpstr(rows, ==,
                    "/archive/2024/doc-0001.pdf 1 question 2\n"
                    "/archive/2024/doc-0001.pdf 2 question 2");
    g_free(rows);
    char *t = file_text(cp);
    g_assert_cmpstr(t, ==, "12\n");
    g_free(t);

    /* Refused as ask refuses it, in ask's words, before anything is written; as cancel and
     * requeue refuse it, each naming itself as for its other options. */
    const char *bad[] = {
        "path = 'a'; DELETE FROM answers",
        "id IN (SELECT document_id FROM pages)",
        "path = 'a') OR (1",
        "no_such_column = 1",
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *ask_err = NULL;
        g_assert_cmpint(dq_test_docqa(NULL, &ask_err, "ask", "--db", db, "--model", "tiny",
                                      "--where", bad[i], "question 1", NULL),
                        ==, 2);
        g_assert_cmpint(dq_test_docqa(&out, &err, "export", "--db", db, "--where", bad[i], NULL),
                        ==, 2);
        g_test_message("%s", err);
        g_assert_cmpstr(out, ==, "");
        g_assert_true(g_str_has_prefix(err, "docqa: export: --where '"));
        const char *why = err + strlen("docqa: export: ");
        g_assert_true(g_str_has_prefix(ask_err, "docqa: ask: "));
        g_assert_cmpstr(ask_err + strlen("docqa: ask: "), ==, why);
        for (guint c = 0; c < 2; c++) {
            const char *cmd = c == 0 ? "cancel" : "requeue";
            char *cmd_err = NULL;
            g_assert_cmpint(dq_test_docqa(NULL, &cmd_err, cmd, "--db", db, "--where", bad[i],
                                          c == 0 ? NULL : "--done", NULL),
                            ==, 2);
            char *prefix = g_strdup_printf("docqa: %s: ", cmd);
            g_assert_true(g_str_has_prefix(cmd_err, prefix));
            g_assert_cmpstr(cmd_err + strlen(prefix), ==, why);
            g_free(prefix);
            g_free(cmd_err);
        }
        g_free(out);
        g_free(err);
        g_free(ask_err);
    }
    g_assert_cmpint(
        dq_test_docqa(&out, &err, "export", "--db", db, "--where", "path = '\xff'", NULL), ==, 2);
    g_assert_nonnull(strstr(err, "export: --where"));
    g_free(out);
    g_free(err);
    t = file_text(cp);
    g_assert_cmpstr(t, ==, "12\n");
    g_free(t);
    g_free(cp);
    g_free(db);
    g_free(dir);
}

/* --question given more than once: the answers to any of them (GLib kept only the last, and the
 * export looked complete); one never asked is named on stderr, and refused in a chain. */
static void test_export_questions(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 3, "tiny", 3), ==, 6);
    jt_run_worker(db, "tiny");
    char *err = NULL;
    char *rows = export_rows(
        db, (const char *[]){"--question", "question 1", "--question", " question 3 ", NULL}, &err);
    g_assert_cmpstr(rows, ==,
                    "/archive/2023/doc-0000.pdf 1 question 1\n"
                    "/archive/2023/doc-0000.pdf 1 question 3\n"
                    "/archive/2023/doc-0000.pdf 2 question 1\n"
                    "/archive/2023/doc-0000.pdf 2 question 3");
    g_assert_cmpstr(err, ==, "");
    g_free(rows);
    g_free(err);
    rows = export_rows(
        db, (const char *[]){"--question", "Never asked?", "--question", "question 2", NULL}, &err);
    g_assert_cmpstr(rows, ==,
                    "/archive/2023/doc-0000.pdf 1 question 2\n"
                    "/archive/2023/doc-0000.pdf 2 question 2");
    g_assert_cmpstr(err, ==,
                    "docqa: export: no answers to the question \"Never asked?\": no such "
                    "question was asked (v_progress lists those that were)\n");
    g_free(rows);
    g_free(err);
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa(&out, &err, "export", "--db", db, "--after", "0", "--question",
                                  "question 2", "--question", "Never asked?", NULL),
                    ==, 2);
    g_assert_cmpstr(out, ==, "");
    g_assert_nonnull(strstr(err, "\"Never asked?\": no such question was asked (v_progress lists "
                                 "those that were); the checkpoint was not moved"));
    g_free(out);
    g_free(err);
    g_free(db);
    g_free(dir);
}

/* The rows of a CSV (RFC 4180: a quoted field may hold commas, CR LF and "" for a quote), each a
 * NULL-terminated array of its fields. */
static GPtrArray *csv_rows(const char *text) {
    GPtrArray *rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    GPtrArray *fields = g_ptr_array_new();
    GString *field = g_string_new(NULL);
    gboolean quoted = FALSE;
    for (const char *p = text; *p; p++) {
        if (quoted && *p == '"' && p[1] == '"') {
            g_string_append_c(field, '"');
            p++;
        } else if (*p == '"') {
            quoted = !quoted;
        } else if (!quoted && (*p == ',' || (*p == '\r' && p[1] == '\n'))) {
            g_ptr_array_add(fields, g_strdup(field->str));
            g_string_truncate(field, 0);
            if (*p == '\r') {
                p++;
                g_ptr_array_add(fields, NULL);
                g_ptr_array_add(rows, g_ptr_array_free(fields, FALSE));
                fields = g_ptr_array_new();
            }
        } else {
            g_string_append_c(field, *p);
        }
    }
    g_assert_cmpuint(fields->len, ==, 0); /* the last row ends with CR LF */
    g_ptr_array_free(fields, TRUE);
    g_string_free(field, TRUE);
    return rows;
}

/* A double as text that tells any two apart ("NULL" for none): 17 significant digits. */
static char *exact_number(gboolean known, double v) {
    return known ? g_strdup_printf("%.17g", v) : g_strdup("NULL");
}

/* The columns export added after model_fingerprint, per row in the export's order, as lines
 * "job_id document_id | page_id generated_tokens ms_total | asked_document_id asked_path" (the
 * asked ones "-" without --current), read from the view itself. */
static char *view_extra_columns(const char *db, gboolean current) {
    sqlite3 *h = NULL;
    g_assert_cmpint(sqlite3_open(db, &h), ==, SQLITE_OK);
    char *sql = g_strdup_printf(
        "SELECT job_id, document_id, page_id, generated_tokens, ms_total, %s FROM %s ORDER BY "
        "document_path, document_id, page, question, job_id",
        current ? "asked_document_id, asked_path" : "'-', '-'",
        current ? "v_current_answers" : "v_answers");
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(h, sql, -1, &st, NULL), ==, SQLITE_OK);
    GString *out = g_string_new(NULL);
    while (sqlite3_step(st) == SQLITE_ROW) {
        char *ms =
            exact_number(sqlite3_column_type(st, 4) != SQLITE_NULL, sqlite3_column_double(st, 4));
        g_string_append_printf(
            out, "%lld %lld | %lld %d %s | %s %s\n", (long long)sqlite3_column_int64(st, 0),
            (long long)sqlite3_column_int64(st, 1), (long long)sqlite3_column_int64(st, 2),
            sqlite3_column_int(st, 3), ms, (const char *)sqlite3_column_text(st, 5),
            (const char *)sqlite3_column_text(st, 6));
        g_free(ms);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    g_free(sql);
    return g_string_free(out, FALSE);
}

/* The same lines from an export's CSV, whose header must be `header`. */
static char *csv_extra_columns(const char *csv, const char *header, gboolean current) {
    GPtrArray *rows = csv_rows(csv);
    g_assert_cmpuint(rows->len, >=, 1);
    char *got_header = g_strjoinv(",", g_ptr_array_index(rows, 0));
    g_assert_cmpstr(got_header, ==, header);
    g_free(got_header);
    GString *out = g_string_new(NULL);
    for (guint i = 1; i < rows->len; i++) {
        char **f = g_ptr_array_index(rows, i);
        g_assert_cmpuint(g_strv_length(f), ==, current ? 24 : 22);
        char *ms = exact_number(*f[21] != '\0', g_ascii_strtod(f[21], NULL));
        g_string_append_printf(out, "%s %s | %s %s %s | %s %s\n", f[8], f[6], f[19], f[20], ms,
                               current ? f[22] : "-", current ? f[23] : "-");
        g_free(ms);
    }
    g_ptr_array_free(rows, TRUE);
    return g_string_free(out, FALSE);
}

/* The same lines from an export's JSON lines. */
static char *jsonl_extra_columns(const char *jsonl, gboolean current) {
    GString *out = g_string_new(NULL);
    char **lines = g_strsplit(jsonl, "\n", -1);
    for (char **l = lines; *l && **l; l++) {
        JsonParser *p = json_parser_new();
        g_assert_true(json_parser_load_from_data(p, *l, -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        g_assert_cmpuint(json_object_get_size(o), ==, current ? 24 : 22);
        g_assert_cmpint(json_object_has_member(o, "asked_path"), ==, current);
        JsonNode *ms_node = json_object_get_member(o, "ms_total");
        g_assert_nonnull(ms_node);
        gboolean known = !JSON_NODE_HOLDS_NULL(ms_node);
        char *ms = exact_number(known, known ? json_node_get_double(ms_node) : 0);
        char *asked = current ? g_strdup_printf("%" G_GINT64_FORMAT " %s",
                                                json_object_get_int_member(o, "asked_document_id"),
                                                json_object_get_string_member(o, "asked_path"))
                              : g_strdup("- -");
        g_string_append_printf(out,
                               "%" G_GINT64_FORMAT " %" G_GINT64_FORMAT " | %" G_GINT64_FORMAT
                               " %" G_GINT64_FORMAT " %s | %s\n",
                               json_object_get_int_member(o, "job_id"),
                               json_object_get_int_member(o, "document_id"),
                               json_object_get_int_member(o, "page_id"),
                               json_object_get_int_member(o, "generated_tokens"), ms, asked);
        g_free(ms);
        g_free(asked);
        g_object_unref(p);
    }
    g_strfreev(lines);
    return g_string_free(out, FALSE);
}

#define OLD_HEADER                                                                                 \
    "document_path,page,question,answer,model,finished_at,document_id,document_sha256,job_id,"     \
    "device,weights,exact,n_res,tile,longest_edge,prompt,max_new_tokens,do_sample,"                \
    "model_fingerprint"

/* export writes v_answers' page_id, generated_tokens and ms_total (the stored double exactly, or
 * empty / null where not recorded), and with --current v_current_answers' asked_document_id and
 * asked_path, after the columns it wrote before (scripts read a CSV by position): the values
 * read back are the view's, in CSV and JSON lines, from SQLite and from PostgreSQL alike. */
static void test_export_columns(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 2);
    g_assert_cmpint(jt_ask(db, 1, "tiny", 3), ==, 4);
    jt_run_worker(db, "tiny");
    /* A copy of doc-0001 after it was answered: listed under it with --current, asked_path the
     * original's. Times that are no short decimals, one not recorded; token counts apart. */
    exec_sql(db, "INSERT INTO documents (path, sha256, bytes, mtime, kind, page_count, status) "
                 "SELECT '/archive/copies/doc-0001.pdf', sha256, bytes, mtime, kind, page_count, "
                 "status FROM documents WHERE path = '/archive/2024/doc-0001.pdf';"
                 "INSERT INTO pages (document_id, page_number, width, height, render_settings, "
                 "image_sha256, status) SELECT (SELECT id FROM documents WHERE path LIKE "
                 "'/archive/copies/%'), page_number, width, height, render_settings, "
                 "image_sha256, status FROM pages WHERE document_id = (SELECT id FROM documents "
                 "WHERE path = '/archive/2024/doc-0001.pdf');"
                 "UPDATE answers SET ms_total = job_id * 1000.0 / 3, generated_tokens = 7 * job_id;"
                 "UPDATE answers SET ms_total = 1250.0 WHERE job_id = 2;"
                 "UPDATE answers SET ms_total = NULL WHERE job_id = 3");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM v_current_answers WHERE asked_path <> "
                                     "document_path"),
                    ==, 2);
    char *outputs[2][2] = {{NULL}}; /* [current][jsonl] */
    for (int current = 0; current < 2; current++) {
        char *want = view_extra_columns(db, current);
        g_assert_cmpint(count_lines(want), ==, current ? 6 : 4);
        for (int jsonl = 0; jsonl < 2; jsonl++) {
            char *err = NULL;
            const char *args[] = {"export",
                                  "--db",
                                  db,
                                  "--format",
                                  jsonl ? "jsonl" : "csv",
                                  current ? "--current" : NULL,
                                  NULL};
            g_assert_cmpint(dq_test_docqa_in(NULL, NULL, args, &outputs[current][jsonl], &err), ==,
                            0);
            g_assert_cmpstr(err, ==, "");
            g_free(err);
            const char *out = outputs[current][jsonl];
            char *got =
                jsonl ? jsonl_extra_columns(out, current)
                      : csv_extra_columns(out,
                                          current ? OLD_HEADER ",page_id,generated_tokens,ms_total,"
                                                               "asked_document_id,asked_path"
                                                  : OLD_HEADER ",page_id,generated_tokens,ms_total",
                                          current);
            g_assert_cmpstr(got, ==, want);
            g_free(got);
        }
        g_free(want);
    }
    /* the stored double in the fewest digits that read it back; none recorded: empty, null */
    g_assert_nonnull(strstr(outputs[0][0], ",1250.0\r\n"));
    g_assert_nonnull(strstr(outputs[0][0], ",333.3333333333333\r\n"));
    g_assert_nonnull(strstr(outputs[0][0], ",21,\r\n"));
    g_assert_nonnull(strstr(outputs[0][1], "\"ms_total\":null"));
    g_assert_nonnull(strstr(outputs[0][1], "\"ms_total\":333.3333333333333"));

#ifdef DQ_TEST_POSTGRES
    /* PostgreSQL: the same database copied there (ids kept) exports the same bytes. */
    if (server == NULL) {
        g_test_message("PostgreSQL part skipped: %s", server_why_not);
    } else {
        char *pg = pgt_new_database(server, "export_columns");
        char *from = g_strconcat("sqlite:", db, NULL);
        char *err = NULL;
        g_assert_cmpint(dq_test_docqa(NULL, &err, "migrate", "--from", from, "--to", pg, NULL), ==,
                        0);
        g_test_message("%s", err);
        g_free(err);
        g_assert_cmpint(pgt_query_int(pg, "SELECT count(*) FROM v_current_answers WHERE "
                                          "asked_path <> document_path"),
                        ==, 2);
        g_assert_cmpint(pgt_query_int(pg, "SELECT count(*) FROM v_answers WHERE ms_total IS NULL"),
                        ==, 1);
        for (int current = 0; current < 2; current++)
            for (int jsonl = 0; jsonl < 2; jsonl++) {
                char *out = NULL;
                const char *args[] = {"export",
                                      "--db",
                                      pg,
                                      "--format",
                                      jsonl ? "jsonl" : "csv",
                                      current ? "--current" : NULL,
                                      NULL};
                g_assert_cmpint(dq_test_docqa_in(NULL, NULL, args, &out, NULL), ==, 0);
                g_assert_cmpstr(out, ==, outputs[current][jsonl]);
                g_free(out);
            }
        g_free(from);
        g_free(pg);
    }
#endif
    for (int i = 0; i < 4; i++)
        g_free(outputs[i / 2][i % 2]);
    g_free(db);
    g_free(dir);
}

/* export to a full disk (/dev/full) exits 2 with the errno of the write that failed, in both
 * formats, wherever the failure comes: in the first row (answers of 6000 bytes, past stdio's
 * 4 KB buffer), in a later one, or in the last flush. Held at export:row, after the first row's
 * failed write, and sent SIGHUP, which it started with ignored: the pause's sleep returns EINTR,
 * and an export that took errno only once the row was done said "Interrupted system call". */
static void test_export_full_disk(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 2, 2);
    g_assert_cmpint(jt_ask(db, 20, "tiny", 3), ==, 80);
    jt_run_worker(db, "tiny");
    char *docqa = dq_test_docqa_path();
    char *want = g_strdup_printf("docqa: export: standard output: %s\n", g_strerror(ENOSPC));
    const char *formats[] = {"csv", "jsonl"};
    for (int long_first = 0; long_first < 2; long_first++) {
        if (long_first)
            exec_sql(db, "UPDATE answers SET text = replace(hex(zeroblob(3000)), '0', 'x')");
        for (gsize f = 0; f < G_N_ELEMENTS(formats); f++) {
            const char *limits[][3] = {
                {NULL}, {"--question", "question 1", NULL}, {"--after", "0"}};
            for (gsize l = 0; l < G_N_ELEMENTS(limits); l++) {
                const char *argv[] = {"/bin/sh",
                                      "-c",
                                      "exec \"$0\" export --db \"$1\" --format \"$2\" "
                                      "${3:+\"$3\" \"$4\"} >/dev/full",
                                      docqa,
                                      db,
                                      formats[f],
                                      limits[l][0],
                                      limits[l][1],
                                      NULL};
                char *out = NULL, *err = NULL;
                int status = 0;
                if (long_first && l == 0)
                    status = dq_test_run_paused(argv, NULL, "export:row", NULL, NULL, &out, &err);
                else
                    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL,
                                               NULL, &out, &err, &status, NULL));
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 2 || !g_str_has_suffix(err, want))
                    g_error("export --format %s %s%s: status %d, said '%s'", formats[f],
                            limits[l][0] ? limits[l][0] : "", long_first ? " (long first row)" : "",
                            status, err);
                g_assert_cmpstr(out, ==, "");
                g_free(out);
                g_free(err);
            }
        }
    }
    g_free(want);
    g_free(docqa);
    g_free(db);
    g_free(dir);
}

/* The checkpoint file --checkpoint-file makes is an ordinary file: read-write as the umask
 * allows (0666 less the umask, as any file a program creates), nothing executable or sticky. */
static void test_export_checkpoint_mode(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "tiny", 3), ==, 1);
    jt_run_worker(db, "tiny");
    char *cp = g_build_filename(dir, "cp", NULL);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "export", "--db", db, "--checkpoint-file", cp, NULL),
                    ==, 0);
    mode_t mask = umask(0);
    umask(mask);
    GStatBuf st;
    g_assert_cmpint(g_stat(cp, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 07777, ==, 0666 & ~mask);
    g_free(cp);
    g_free(db);
    g_free(dir);
}

#ifdef DQ_TEST_POSTGRES
/* A PostgreSQL database `name` on the test server holding one queued job (a SQLite database in
 * dir, *db, migrated to it): its location. g_free both. */
static char *migrated_one_job(const char *dir, const char *name, char **db) {
    *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(*db, 1, "tiny", 3), ==, 1);
    char *pg = pgt_new_database(server, name);
    char *from = g_strconcat("sqlite:", *db, NULL);
    g_assert_cmpint(dq_test_docqa(NULL, NULL, "migrate", "--from", from, "--to", pg, NULL), ==, 0);
    g_free(from);
    return pg;
}
#endif

/* Messages name a PostgreSQL database as the store shows it, its password hidden (README:
 * messages never repeat one), not as it was given: cancel's and requeue's --document naming no
 * document (said with the command and the option, as their other selectors are), and status's
 * and export's advice to `docqa migrate --from DB` when a view was dropped. */
static void test_messages_hide_password(void) {
#ifdef DQ_TEST_POSTGRES
    if (server == NULL) {
        g_test_skip(server_why_not);
        return;
    }
    char *dir = dq_test_tmpdir();
    char *db = NULL;
    char *pg = migrated_one_job(dir, "selector_document", &db);
    /* the test server trusts every connection: the password is only carried */
    char *with_password = g_strconcat(pg, "&password=hunter2", NULL);
    const char *const commands[] = {"cancel", "requeue"};
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        char *err = NULL;
        const char *args[] = {commands[i], "--db",        with_password, "--document",
                              "99",        "--cancelled", NULL};
        if (i == 0)
            args[5] = NULL; /* cancel: --document alone */
        g_assert_cmpint(dq_test_docqa_in(NULL, NULL, args, NULL, &err), ==, 2);
        g_test_message("%s", err);
        char *want =
            g_strdup_printf("docqa: %s: --document 99: no document with id 99 in ", commands[i]);
        g_assert_null(strstr(err, "hunter2"));
        g_assert_nonnull(strstr(err, want));
        g_free(want);
        g_free(err);
    }
    const char *const readers[][2] = {{"status", "v_progress"}, {"export", "v_answers"}};
    for (size_t i = 0; i < G_N_ELEMENTS(readers); i++) {
        pgt_exec(pg, "DROP VIEW v_progress; DROP VIEW v_current_answers; DROP VIEW v_answers");
        char *err = NULL;
        const char *args[] = {readers[i][0], "--db", with_password, NULL};
        dq_test_docqa_in(NULL, NULL, args, NULL, &err);
        g_test_message("%s", err);
        g_assert_null(strstr(err, "hunter2"));
        g_assert_nonnull(strstr(err, readers[i][1]));
        /* the location as given (the socket folder's host= too), the password hidden */
        char *want = g_strdup_printf("`docqa migrate --from '%s&password=***'` makes docqa's "
                                     "views again (with the password where it shows ***)",
                                     pg);
        g_assert_nonnull(strstr(err, want));
        g_free(want);
        g_free(err);
        /* without a password: the advice pasted as it is makes the views again */
        const char *plain[] = {readers[i][0], "--db", pg, NULL};
        dq_test_docqa_in(NULL, NULL, plain, NULL, &err);
        g_test_message("%s", err);
        const char *cmd = strstr(err, "`docqa migrate --from ");
        g_assert_nonnull(cmd);
        const char *end = strchr(cmd + 1, '`');
        g_assert_nonnull(end);
        g_assert_true(g_str_has_prefix(end, "` makes docqa's views again\n"));
        char *line = g_strndup(cmd + 1, (gsize)(end - cmd - 1));
        int argc = 0;
        char **pasted = NULL;
        g_assert_true(g_shell_parse_argv(line, &argc, &pasted, NULL));
        g_assert_cmpint(argc, ==, 4);
        g_assert_cmpstr(pasted[3], ==, pg);
        g_free(pasted[0]);
        pasted[0] = dq_test_docqa_path();
        char *out = NULL;
        g_assert_true(
            g_spawn_sync(NULL, pasted, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, NULL, NULL, NULL));
        g_assert_nonnull(strstr(out, "views made again"));
        g_free(out);
        g_strfreev(pasted);
        g_free(line);
        g_free(err);
    }
    g_free(with_password);
    g_free(pg);
    g_free(db);
    g_free(dir);
#else
    g_test_skip("docqa built without PostgreSQL");
#endif
}

/* Status on PostgreSQL while jobs wait: with DOCQA_PAGES unset it says that it did not check
 * the page store and why, rather than nothing; set, it checks the folder named, as on SQLite. */
static void test_status_page_store_postgres(void) {
#ifdef DQ_TEST_POSTGRES
    if (server == NULL) {
        g_test_skip(server_why_not);
        return;
    }
    char *dir = dq_test_tmpdir();
    char *db = NULL;
    char *pg = migrated_one_job(dir, "status_page_store", &db);
    char *pages = g_strconcat(db, ".pages", NULL), *away = g_build_filename(dir, "away", NULL);
    char *was = g_strdup(g_getenv("DOCQA_PAGES"));
    const char *const unset[] = {NULL, ""};
    for (size_t i = 0; i < G_N_ELEMENTS(unset); i++) {
        if (unset[i] == NULL)
            g_unsetenv("DOCQA_PAGES");
        else
            g_setenv("DOCQA_PAGES", unset[i], TRUE);
        char *out = NULL;
        g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", pg, NULL), ==, 0);
        g_test_message("%s", out);
        g_assert_nonnull(strstr(out, "page store: not checked: DOCQA_PAGES is unset here (a "
                                     "PostgreSQL database's page images are in the folder it "
                                     "names, shared by the machines that ingest and run, which "
                                     "refuse to start without it)\n"));
        g_free(out);
    }
    g_setenv("DOCQA_PAGES", pages, TRUE);
    char *out = NULL;
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", pg, NULL), ==, 0);
    g_assert_null(strstr(out, "page store"));
    g_free(out);
    g_setenv("DOCQA_PAGES", away, TRUE);
    g_assert_cmpint(dq_test_docqa(&out, NULL, "status", "--db", pg, NULL), ==, 0);
    char *line = g_strdup_printf("page store: %s: the page store is missing or empty", away);
    g_assert_nonnull(strstr(out, line));
    g_free(line);
    g_free(out);
    if (was != NULL)
        g_setenv("DOCQA_PAGES", was, TRUE);
    else
        g_unsetenv("DOCQA_PAGES");
    g_free(was);
    g_free(away);
    g_free(pages);
    g_free(pg);
    g_free(db);
    g_free(dir);
#else
    g_test_skip("docqa built without PostgreSQL");
#endif
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
#ifdef DQ_TEST_POSTGRES
    server = pgt_start(&server_why_not);
#endif
    char *bin = dq_test_docqa_path();
    if (!g_file_test(bin, G_FILE_TEST_IS_EXECUTABLE))
        g_error("%s not built", bin);
    g_free(bin);
    g_test_add_func("/cli-export/lock-delayed-commit", test_export_lock_delayed_commit);
    g_test_add_func("/cli-export/answers-synced-first", test_export_answers_synced_first);
    g_test_add_func("/cli-export/checkpoint-rules", test_export_checkpoint_rules);
    g_test_add_func("/cli-export/checkpoint-symlink", test_export_checkpoint_symlink);
    g_test_add_func("/cli-export/where", test_export_where);
    g_test_add_func("/cli-export/questions", test_export_questions);
    g_test_add_func("/cli-export/columns", test_export_columns);
    g_test_add_func("/cli-export/full-disk", test_export_full_disk);
    g_test_add_func("/cli-export/checkpoint-mode", test_export_checkpoint_mode);
    g_test_add_func("/cli-export/messages-hide-password", test_messages_hide_password);
    g_test_add_func("/cli-export/status-page-store-postgres", test_status_page_store_postgres);
    int rc = g_test_run();
#ifdef DQ_TEST_POSTGRES
    pgt_stop(server);
    g_free(server_why_not);
#endif
    return rc;
}
