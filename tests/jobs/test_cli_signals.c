/* SIGINT, SIGTERM and SIGHUP end every queue command with exit status 130 (the README's
 * "interrupted"), and what a command changes is stored whole or not at all. Each case holds a real
 * docqa process at a named point (DOCQA_TEST_PAUSE_AT, common/test_point.h), sends it the signal
 * there and looks at its exit status, its output and the database. */
#include "jobs_testlib.h"
#include "testutil.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* `docqa ARGS...` held at `point`, sent `sig`; its exit status (-1: it died of a signal). */
static int docqa_signalled(const char *point, int sig, char **out, char **errout, ...) {
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, dq_test_docqa_path());
    va_list ap;
    va_start(ap, errout);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        g_ptr_array_add(argv, g_strdup(a));
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    const char *env[] = {"DOCQA_CACHE_DIR=off", NULL};
    int status =
        dq_test_run_signalled((const char *const *)argv->pdata, env, point, sig, out, errout);
    g_ptr_array_free(argv, TRUE);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void assert_contains(const char *text, const char *part) {
    if (strstr(text, part) == NULL)
        g_error("expected '%s' in:\n%s", part, text);
}

static gint64 jobs_in(const char *db, const char *state) {
    char *sql = g_strdup_printf("SELECT count(*) FROM jobs WHERE state = '%s'", state);
    gint64 n = jt_query_int(db, sql);
    g_free(sql);
    return n;
}

/* A signal inside the transaction's commit: exit 130, nothing of it stored. Once it is
 * committed: the report printed whole, exit 130, all of it stored. */
static void test_ask_cancel_requeue(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 1, "m", 3), ==, 2);
    char *out = NULL, *err = NULL;

    g_assert_cmpint(docqa_signalled("commit", SIGTERM, &out, &err, "ask", "--db", db, "--model",
                                    "m", "New?", NULL),
                    ==, 130);
    assert_contains(err, "docqa: ask: interrupted (SIGTERM) before it finished");
    g_assert_cmpstr(out, ==, "");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 2);
    /* nor its question: export, cancel and requeue would take it for one that was asked */
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM questions WHERE text = 'New?'"), ==, 0);
    g_free(out), g_free(err);

    g_assert_cmpint(docqa_signalled("ask:stored", SIGHUP, &out, &err, "ask", "--db", db, "--model",
                                    "m", "New?", NULL),
                    ==, 130);
    assert_contains(out, "ask: 1 question x 2 pages: 2 new jobs, 0 already asked (model m)");
    assert_contains(err, "docqa: ask: interrupted (SIGHUP) as it finished");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 4);
    g_free(out), g_free(err);

    g_assert_cmpint(docqa_signalled("commit", SIGINT, &out, &err, "cancel", "--db", db,
                                    "--question", "New?", NULL),
                    ==, 130);
    assert_contains(err, "docqa: cancel: interrupted (SIGINT) before it finished");
    g_assert_cmpint(jobs_in(db, "cancelled"), ==, 0);
    g_free(out), g_free(err);

    g_assert_cmpint(docqa_signalled("cancel:stored", SIGTERM, &out, &err, "cancel", "--db", db,
                                    "--question", "New?", NULL),
                    ==, 130);
    assert_contains(out, "cancel: 2 jobs cancelled");
    g_assert_cmpint(jobs_in(db, "cancelled"), ==, 2);
    g_free(out), g_free(err);

    g_assert_cmpint(
        docqa_signalled("commit", SIGHUP, &out, &err, "requeue", "--db", db, "--cancelled", NULL),
        ==, 130);
    assert_contains(err, "docqa: requeue: interrupted (SIGHUP) before it finished");
    g_assert_cmpint(jobs_in(db, "cancelled"), ==, 2);
    g_free(out), g_free(err);

    g_assert_cmpint(docqa_signalled("requeue:stored", SIGINT, &out, &err, "requeue", "--db", db,
                                    "--cancelled", NULL),
                    ==, 130);
    assert_contains(out, "requeue: 2 jobs back in the queue");
    g_assert_cmpint(jobs_in(db, "cancelled"), ==, 0);
    g_assert_cmpint(jobs_in(db, "queued"), ==, 4);
    g_free(out), g_free(err);
    g_free(db);
    g_free(dir);
}

/* The readers stop where they are; migrate's destination gets all of the copy or none. */
static void test_status_export_migrate(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    g_assert_cmpint(jt_drain(db, 1), ==, 0);
    char *out = NULL, *err = NULL;

    g_assert_cmpint(docqa_signalled("status:read", SIGTERM, &out, &err, "status", "--db", db, NULL),
                    ==, 130);
    assert_contains(err, "docqa: status: interrupted (SIGTERM) before it finished");
    g_free(out), g_free(err);

    g_assert_cmpint(docqa_signalled("export:row", SIGHUP, &out, &err, "export", "--db", db, NULL),
                    ==, 130);
    assert_contains(err, "docqa: export: interrupted (SIGHUP) before it finished");
    g_free(out), g_free(err);

    char *to = g_build_filename(dir, "copy.db", NULL);
    g_assert_cmpint(docqa_signalled("migrate:copied:jobs", SIGINT, &out, &err, "migrate", "--from",
                                    db, "--to", to, NULL),
                    ==, 130);
    assert_contains(err, "docqa: migrate: interrupted (SIGINT) before it finished");
    g_assert_cmpint(jt_query_int(to, "SELECT count(*) FROM jobs"), ==, 0);
    g_assert_cmpint(jt_query_int(to, "SELECT count(*) FROM documents"), ==, 0);
    g_free(out), g_free(err);

    char *to2 = g_build_filename(dir, "copy2.db", NULL);
    g_assert_cmpint(docqa_signalled("migrate:stored", SIGTERM, &out, &err, "migrate", "--from", db,
                                    "--to", to2, NULL),
                    ==, 130);
    assert_contains(out, "migrated ");
    assert_contains(err, "docqa: migrate: interrupted (SIGTERM) as it finished");
    g_assert_cmpint(jt_query_int(to2, "SELECT count(*) FROM answers"), ==, 4);
    g_free(out), g_free(err);
    /* in place too: upgraded and the views made, the line saying so is printed whole */
    g_assert_cmpint(
        docqa_signalled("migrate:restored", SIGTERM, &out, &err, "migrate", "--from", db, NULL), ==,
        130);
    assert_contains(out, ": schema version ");
    assert_contains(err, "docqa: migrate: interrupted (SIGTERM) as it finished");
    g_free(out), g_free(err);
    g_free(to2);
    g_free(to);
    g_free(db);
    g_free(dir);
}

/* export --checkpoint-file: exit 0 exactly when the checkpoint moved past the rows written. A
 * signal before it moves leaves it (130: the next export gives the rows again); one after it
 * moved changes nothing (0). A wrapper keeping the rows only on 0 so never loses any. */
static void test_export_checkpoint(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    g_assert_cmpint(jt_drain(db, 1), ==, 0);
    char *cp = g_build_filename(dir, "answers.checkpoint", NULL);
    char *out = NULL, *err = NULL;
    g_assert_cmpint(docqa_signalled("export:checkpoint", SIGTERM, &out, &err, "export", "--db", db,
                                    "--checkpoint-file", cp, NULL),
                    ==, 130);
    assert_contains(err, "docqa: export: interrupted (SIGTERM) before the checkpoint moved: it "
                         "stays at 0 in");
    g_assert_false(g_file_test(cp, G_FILE_TEST_EXISTS));
    g_free(out), g_free(err);
    g_assert_cmpint(docqa_signalled("export:checkpoint-kept", SIGHUP, &out, &err, "export", "--db",
                                    db, "--checkpoint-file", cp, NULL),
                    ==, 0);
    char **lines = g_strsplit(out, "\r\n", -1);
    g_assert_cmpuint(g_strv_length(lines), ==, 4 + 2); /* header, the 4 rows, the empty tail */
    g_strfreev(lines);
    char *kept = dq_test_read_file(cp, NULL);
    g_assert_cmpint(g_ascii_strtoll(kept, NULL, 10), >, 0);
    g_free(kept);
    g_free(out), g_free(err);
    g_free(cp);
    g_free(db);
    g_free(dir);
}

/* A closed terminal (SIGHUP) or systemctl stop (SIGTERM) while a worker holds jobs: the worker
 * gives them back, run prints its summary (here its JSON) and exits 130; no job is left leased
 * or has an attempt spent. SIGHUP ended run at once (129), its jobs leased until they expired. */
static void test_run(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    const int sigs[] = {SIGHUP, SIGTERM};
    for (size_t i = 0; i < G_N_ELEMENTS(sigs); i++) {
        char *dir = dq_test_tmpdir();
        char *db = jt_make_db(dir, 1, 2);
        g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
        char *out = NULL, *err = NULL;
        int rc = docqa_signalled("worker:claimed", sigs[i], &out, &err, "run", "--db", db,
                                 "--model", model, "--model-id", "m", "--json", "-q", NULL);
        if (rc != 130)
            g_error("run: exit %d, said %s", rc, err);
        JsonParser *p = json_parser_new();
        JsonObject *o = jt_json_object(p, out);
        g_assert_true(json_object_get_boolean_member(o, "interrupted"));
        gint64 answered = json_object_get_int_member(o, "answered");
        gint64 given_back = json_object_get_int_member(o, "given_back");
        g_assert_cmpint(given_back, >=, 1);
        g_assert_cmpint(answered + given_back, ==, json_object_get_int_member(o, "claimed"));
        g_assert_true(json_object_get_null_member(o, "error"));
        g_assert_cmpint(jobs_in(db, "running"), ==, 0);
        g_assert_cmpint(jobs_in(db, "done"), ==, answered);
        g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE attempts > 0"), ==, 0);
        g_object_unref(p);
        g_free(out), g_free(err);
        g_free(db);
        g_free(dir);
    }
    g_free(model);
}

static void hold_write_lock(void *user) {
    sqlite3 *db = user;
    char *msg = NULL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
        g_error("BEGIN IMMEDIATE: %s", msg);
}

/* Stopped while another connection (an sqlite3 shell) holds the write lock: a worker gives up
 * waiting for it within seconds of the signal (DQ_STORE_STOP_GRACE_MS), exit 130, saying why
 * its jobs stay leased; not after the busy limit (here 10 min, as the minute it is otherwise),
 * which systemd's stop timeout would end with SIGKILL. */
static void test_run_stopped_while_locked(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    sqlite3 *holder = NULL;
    g_assert_cmpint(sqlite3_open(db, &holder), ==, SQLITE_OK);
    char *docqa = dq_test_docqa_path();
    const char *argv[] = {docqa,        "run", "--db",   db,   "--model",       model,
                          "--model-id", "m",   "--json", "-q", "--until-empty", NULL};
    const char *env[] = {"DOCQA_CACHE_DIR=off", "DOCQA_TEST_BUSY_LIMIT_MS=600000", NULL};
    char *out = NULL, *err = NULL;
    int status = dq_test_run_signalled_after(argv, env, "worker:claimed", hold_write_lock, holder,
                                             SIGTERM, &out, &err);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 130)
        g_error("run: wait status %d, said %s", status, err);
    assert_contains(err, "told to stop, docqa waited 5 s more for it, then gave up");
    assert_contains(err, "they come back when their lease expires");
    JsonParser *p = json_parser_new();
    JsonObject *o = jt_json_object(p, out);
    g_assert_true(json_object_get_boolean_member(o, "interrupted"));
    gint64 claimed = json_object_get_int_member(o, "claimed");
    g_assert_cmpint(claimed, >=, 1);
    /* Nothing could be written: the claimed jobs keep their leases, the rest stay queued. */
    g_assert_cmpint(jobs_in(db, "running"), ==, claimed);
    g_assert_cmpint(jobs_in(db, "queued"), ==, 4 - claimed);
    g_assert_cmpint(sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(holder);
    g_object_unref(p);
    g_free(out), g_free(err);
    g_free(docqa);
    g_free(db);
    g_free(dir);
    g_free(model);
}

/* run sent SIGTERM while a worker it has just forked still runs with run's own handlers, which
 * it inherited: the worker stops all the same (exit 130, nothing claimed). The forwarded
 * signal only marked run's flag in the worker's copy, and the worker answered on (until the
 * queue was empty here; for good without --until-empty, run waiting for it). */
static void test_run_signalled_as_worker_starts(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    char *out = NULL, *err = NULL;
    int rc = docqa_signalled("run:forked", SIGTERM, &out, &err, "run", "--db", db, "--model", model,
                             "--model-id", "m", "--json", "-q", "--until-empty", NULL);
    if (rc != 130)
        g_error("run: exit %d, said %s", rc, err);
    JsonParser *p = json_parser_new();
    JsonObject *o = jt_json_object(p, out);
    g_assert_true(json_object_get_boolean_member(o, "interrupted"));
    g_assert_cmpint(json_object_get_int_member(o, "claimed"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "answered"), ==, 0);
    g_assert_cmpint(jobs_in(db, "queued"), ==, 4);
    g_object_unref(p);
    g_free(out), g_free(err);
    g_free(db);
    g_free(dir);
    g_free(model);
}

/* generate stopped while the model works: exit 130, and --dump-logits leaves the file as it
 * was, without its temporary beside it. */
static void test_generate(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *dump = g_build_filename(dir, "logits.bin", NULL);
    g_assert_true(g_file_set_contents(dump, "old", -1, NULL));
    char *out = NULL, *err = NULL;
    g_assert_cmpint(docqa_signalled("generate:prepared", SIGTERM, &out, &err, "generate", "-m",
                                    model, "-p", "hi", "--dump-logits", dump, NULL),
                    ==, 130);
    assert_contains(err, "docqa: generate: interrupted (SIGTERM) before it finished");
    char *text = dq_test_read_file(dump, NULL);
    g_assert_cmpstr(text, ==, "old");
    GDir *d = g_dir_open(dir, 0, NULL);
    int files = 0;
    while (g_dir_read_name(d) != NULL)
        files++;
    g_dir_close(d);
    g_assert_cmpint(files, ==, 1);
    g_free(text);
    g_free(out), g_free(err);
    g_free(dump);
    g_free(dir);
    g_free(model);
}

/* `docqa ARGS...` started with SIGHUP ignored, as nohup starts it, held at `point` and sent
 * SIGHUP there; its exit status. */
static int docqa_nohup(const char *point, char **out, ...) {
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, g_strdup("/bin/sh"));
    g_ptr_array_add(argv, g_strdup("-c"));
    g_ptr_array_add(argv, g_strdup("trap '' HUP; exec \"$0\" \"$@\""));
    g_ptr_array_add(argv, dq_test_docqa_path());
    va_list ap;
    va_start(ap, out);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        g_ptr_array_add(argv, g_strdup(a));
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    int status =
        dq_test_run_signalled((const char *const *)argv->pdata, NULL, point, SIGHUP, out, NULL);
    g_ptr_array_free(argv, TRUE);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A nightly job started under nohup (SIGHUP ignored) goes on when its terminal closes: docqa's
 * handlers leave an ignored signal ignored, in ask as in ingest. */
static void test_nohup(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    char *out = NULL;
    g_assert_cmpint(docqa_nohup("commit", &out, "ask", "--db", db, "--model", "m", "Total?", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(out, "2 new jobs"));
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs"), ==, 2);
    g_free(out);
    char *docs = g_build_filename(dir, "docs", NULL);
    g_assert_cmpint(g_mkdir(docs, 0755), ==, 0);
    char *src = g_build_filename(dq_test_source_dir(), "examples", "docs", "letter.pdf", NULL);
    char *pdf = g_build_filename(docs, "letter.pdf", NULL);
    char *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(src, &bytes, &len, NULL));
    g_assert_true(g_file_set_contents(pdf, bytes, (gssize)len, NULL));
    char *db2 = g_build_filename(dir, "ingest.db", NULL);
    g_assert_cmpint(
        docqa_nohup("ingest:walked", &out, "ingest", "--db", db2, "--n-res", "1", "-q", docs, NULL),
        ==, 0);
    g_assert_nonnull(strstr(out, "1 file: 1 ok"));
    g_free(out);
    g_free(db2), g_free(pdf), g_free(src), g_free(docs), g_free(bytes);
    g_free(db);
    g_free(dir);
}

/* The parent of process `pid` (/proc), or 0. */
static pid_t parent_of(pid_t pid) {
    char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
    char *stat = NULL;
    int ppid = 0;
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses */
    if (g_file_get_contents(path, &stat, NULL, NULL) && strrchr(stat, ')') != NULL)
        sscanf(strrchr(stat, ')') + 1, " %*c %d", &ppid);
    g_free(stat);
    g_free(path);
    return (pid_t)ppid;
}

/* at_pause for test_nohup_run: SIGHUP to the worker that paused, the test's grandchild (the
 * terminal closing signals the whole process group, not only run); run gets its SIGHUP next. */
static void hup_worker(void *unused) {
    (void)unused;
    GDir *proc = g_dir_open("/proc", 0, NULL);
    g_assert_nonnull(proc);
    int sent = 0;
    for (const char *name; (name = g_dir_read_name(proc)) != NULL;) {
        pid_t pid = (pid_t)g_ascii_strtoll(name, NULL, 10);
        if (pid > 0 && parent_of(pid) != 0 && parent_of(parent_of(pid)) == getpid()) {
            g_assert_cmpint(kill(pid, SIGHUP), ==, 0);
            sent++;
        }
    }
    g_dir_close(proc);
    g_assert_cmpint(sent, ==, 1);
}

/* run started under nohup (SIGHUP ignored) goes on when its terminal closes, its workers too:
 * all its jobs answered, exit 0. Neither takes SIGHUP for a stop. */
static void test_nohup_run(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    char *docqa = dq_test_docqa_path();
    const char *argv[] = {"/bin/sh",
                          "-c",
                          "trap '' HUP; exec \"$0\" \"$@\"",
                          docqa,
                          "run",
                          "--db",
                          db,
                          "--model",
                          model,
                          "--model-id",
                          "m",
                          "--json",
                          "-q",
                          "--until-empty",
                          NULL};
    const char *env[] = {"DOCQA_CACHE_DIR=off", NULL};
    char *out = NULL, *err = NULL;
    int status = dq_test_run_signalled_after(argv, env, "worker:claimed", hup_worker, NULL, SIGHUP,
                                             &out, &err);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        g_error("run: wait status %d, said %s", status, err);
    JsonParser *p = json_parser_new();
    JsonObject *o = jt_json_object(p, out);
    g_assert_false(json_object_get_boolean_member(o, "interrupted"));
    g_assert_cmpint(json_object_get_int_member(o, "answered"), ==, 4);
    g_assert_cmpint(jobs_in(db, "done"), ==, 4);
    g_object_unref(p);
    g_free(out), g_free(err);
    g_free(docqa);
    g_free(db);
    g_free(dir);
    g_free(model);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/cli-signals/ask-cancel-requeue", test_ask_cancel_requeue);
    g_test_add_func("/cli-signals/status-export-migrate", test_status_export_migrate);
    g_test_add_func("/cli-signals/run", test_run);
    g_test_add_func("/cli-signals/run-stopped-while-locked", test_run_stopped_while_locked);
    g_test_add_func("/cli-signals/run-signalled-as-worker-starts",
                    test_run_signalled_as_worker_starts);
    g_test_add_func("/cli-signals/generate", test_generate);
    g_test_add_func("/cli-signals/nohup", test_nohup);
    g_test_add_func("/cli-signals/nohup-run", test_nohup_run);
    g_test_add_func("/cli-signals/export-checkpoint", test_export_checkpoint);
    return g_test_run();
}
