/* The command line against hostile input: text that would drive a terminal (file names, stored
 * answers) is escaped in messages, and in data only when the data goes to a terminal; ask's
 * --questions is capped and takes no device; `--` ends ask's options. */
#include "jobs_testlib.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <pty.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* docqa with stdin empty (a pipe), stdout and stderr through pipes. */
static const DqTestRun piped = {.in = ""};

/* Runs docqa with its stdout and stderr on a pseudo-terminal, as a user at a terminal sees it
 * (newlines come back as \r\n); returns the exit status and everything it printed. */
static int docqa_pty(const char *const *args, char **out) {
    char *bin = dq_test_docqa_path();
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, bin);
    for (const char *const *a = args; *a; a++)
        g_ptr_array_add(argv, (gpointer)*a);
    g_ptr_array_add(argv, NULL);
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, STDIN_FILENO);
        execv(bin, (char **)argv->pdata);
        _exit(127);
    }
    GString *got = g_string_new(NULL);
    char buf[4096];
    for (;;) {
        ssize_t n = read(master, buf, sizeof buf);
        if (n > 0)
            g_string_append_len(got, buf, n);
        else if (n < 0 && errno == EINTR)
            continue;
        else
            break; /* EIO: the child closed the terminal */
    }
    close(master);
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_ptr_array_free(argv, TRUE);
    g_free(bin);
    *out = g_string_free(got, FALSE);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A file whose name retitles, clears and recolours a terminal: ingest's summary line names it
 * with the escapes shown, not sent, whether stdout is a pipe or a terminal. */
static void test_file_name_escaped(void) {
    char *dir = dq_test_tmpdir();
    char *docs = g_build_filename(dir, "docs", NULL);
    g_assert_cmpint(g_mkdir(docs, 0755), ==, 0);
    char *bad = g_build_filename(docs, "x\033]0;PWNED\007\033[2J\033[31mred\x9b.pdf", NULL);
    g_assert_true(g_file_set_contents(bad, "junk", -1, NULL));
    char *db = g_build_filename(dir, "t.db", NULL);
    const char *args[] = {"ingest", "--db", db, "-q", docs, NULL};
    char *out, *err;
    g_assert_cmpint(dq_test_docqa_run(&piped, args, &out, &err), ==, 1);
    g_assert_null(strchr(out, '\033'));
    g_assert_null(strchr(out, '\007'));
    g_assert_nonnull(strstr(out, "x\\u001b]0;PWNED\\u0007\\u001b[2J\\u001b[31mred\\x9B.pdf"));
    g_free(out);
    g_free(err);
    char *db2 = g_build_filename(dir, "t2.db", NULL); /* a file failed once is not listed again */
    args[2] = db2;
    g_assert_cmpint(docqa_pty(args, &out), ==, 1);
    g_assert_null(strchr(out, '\033'));
    g_assert_nonnull(strstr(out, "x\\u001b]0;PWNED\\u0007"));
    g_free(out);
    /* the same name in an error message (a file named on the command line that is not there) */
    char *gone = g_build_filename(dir, "nothing\033[2J.pdf", NULL);
    const char *args2[] = {"status", "--db", gone, NULL};
    g_assert_cmpint(dq_test_docqa_run(&piped, args2, &out, &err), ==, 2);
    g_assert_cmpstr(out, ==, ""); /* the one line is on stderr */
    g_assert_null(strchr(err, '\033'));
    g_assert_nonnull(strstr(err, "nothing\\u001b[2J.pdf"));
    g_free(out);
    g_free(err);
    g_free(gone);
    g_free(db2);
    g_free(db);
    g_free(bad);
    g_free(docs);
    g_free(dir);
}

/* An answer holding control characters: export writes its exact bytes into a pipe (they are
 * data), and escapes them, tab and newline aside, on a terminal. */
static void test_export_data_and_terminal(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "tiny", 3), ==, 1);
    jt_run_worker(db, "tiny");
    sqlite3 *s;
    g_assert_cmpint(sqlite3_open(db, &s), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(s,
                                 "UPDATE answers SET text = 'a' || char(27) || ']0;PWNED' || "
                                 "char(7) || 'b' || char(9) || 'c' || char(155) || 'd'",
                                 NULL, NULL, NULL),
                    ==, SQLITE_OK);
    sqlite3_close(s);
    const char *raw = "a\033]0;PWNED\007b\tc\xc2\x9b"
                      "d";
    for (int jsonl = 0; jsonl < 2; jsonl++) {
        const char *args[] = {"export", "--db", db, "--format", jsonl ? "jsonl" : "csv", NULL};
        char *out, *err;
        g_assert_cmpint(dq_test_docqa_run(&piped, args, &out, &err), ==, 0);
        if (jsonl) /* JSON escapes C0 itself; DEL and C1 it may leave raw */
            g_assert_nonnull(strstr(out, "a\\u001b]0;PWNED\\u0007b\\tc"));
        else
            g_assert_nonnull(strstr(out, raw));
        g_free(out);
        g_free(err);
        g_assert_cmpint(docqa_pty(args, &out), ==, 0);
        g_assert_null(strchr(out, '\033'));
        g_assert_null(strstr(out, "\xc2\x9b"));
        if (jsonl)
            g_assert_nonnull(strstr(out, "a\\u001b]0;PWNED\\u0007b\\tc\\u009bd"));
        else
            g_assert_nonnull(strstr(out, "a\\u001b]0;PWNED\\u0007b\tc\\u009bd"));
        g_free(out);
    }
    g_free(db);
    g_free(dir);
}

/* `--` ends ask's options: what follows is a question even when it starts with '-', and `--`
 * itself is none. */
static void test_ask_dash_dash(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    const char *args[] = {"ask", "--db", db, "-m", "tiny", "--", "-2+3", NULL};
    char *out, *err;
    g_assert_cmpint(dq_test_docqa_run(&piped, args, &out, &err), ==, 0);
    g_assert_nonnull(strstr(out, "ask: 1 question x 1 page: 1 new job"));
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM questions"), ==, 1);
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM questions WHERE text = '-2+3'"), ==, 1);
    g_free(out);
    g_free(err);
    g_free(db);
    g_free(dir);
}

/* --questions: a device or a FIFO is refused without being read, a file or standard input past
 * 64 MiB is refused (no 3 GB allocation), and nothing is asked. */
static void test_ask_questions_capped(void) {
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    char *fifo = g_build_filename(dir, "fifo", NULL);
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    char *big = g_build_filename(dir, "big.txt", NULL);
    FILE *f = fopen(big, "w");
    g_assert_nonnull(f);
    fputs("What is the total?\n", f);
    g_assert_cmpint(fclose(f), ==, 0);
    g_assert_cmpint(truncate(big, (64 << 20) + 1), ==, 0);
    struct {
        const char *file, *want;
    } cases[] = {
        {"/dev/zero", "docqa: ask: /dev/zero: a device, not a regular file\n"},
        {fifo, "a FIFO, not a regular file\n"},
        {big, "bytes, more than the 64 MiB allowed\n"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const char *args[] = {"ask", "--db", db, "-m", "tiny", "-f", cases[i].file, NULL};
        char *out, *err;
        g_assert_cmpint(dq_test_docqa_run(&piped, args, &out, &err), ==, 2);
        g_assert_true(g_str_has_suffix(err, cases[i].want));
        g_free(out);
        g_free(err);
    }
    /* standard input: read up to the cap, then refused */
    char *bin = dq_test_docqa_path();
    char *cmd = g_strdup_printf("'%s' ask --db '%s' -m tiny -f - < '%s'", bin, db, big);
    char *out, *err;
    int status;
    GError *e = NULL;
    g_assert_true(g_spawn_sync(NULL, (char *[]){"/bin/sh", "-c", cmd, NULL}, NULL, G_SPAWN_DEFAULT,
                               NULL, NULL, &out, &err, &status, &e));
    dq_assert_no_error(e);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 2);
    g_assert_cmpstr(err, ==,
                    "docqa: ask: standard input: more than the 64 MiB allowed for questions\n");
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM questions"), ==, 0);
    g_free(out);
    g_free(err);
    g_free(cmd);
    g_free(bin);
    g_free(big);
    g_free(fifo);
    g_free(db);
    g_free(dir);
}

/* Runs docqa in folder `cwd` with DOCQA_DB set to db_env (NULL: unset); returns the exit
 * status and stderr. */
static int docqa_in(const char *cwd, const char *db_env, const char *const *args, char **errout) {
    char *db = db_env != NULL ? g_strconcat("DOCQA_DB=", db_env, NULL) : g_strdup("DOCQA_DB");
    const char *env[] = {db, NULL};
    int rc = dq_test_docqa_run(&(DqTestRun){.cwd = cwd, .env = env}, args, NULL, errout);
    g_free(db);
    return rc;
}

/* A libpq key=value location is refused, without repeating it (it holds a password) and
 * without a SQLite file or page store named after it; "postgresql:user:secret@host" (no //) is
 * refused without repeating it. */
static void test_conninfo_refused(void) {
    char *dir = dq_test_tmpdir();
    char *docs = g_build_filename(dir, "docs", NULL);
    char *cwd = g_build_filename(dir, "cwd", NULL);
    g_assert_cmpint(g_mkdir(docs, 0755), ==, 0);
    g_assert_cmpint(g_mkdir(cwd, 0755), ==, 0);
    const char *conninfo = "host=localhost dbname=docqa password=hunter2";
    const char *ingest[] = {"ingest", "--db", conninfo, docs, NULL};
    const char *status[] = {"status", NULL};
    const char *ask[] = {"ask", "--db", conninfo, "Total?", NULL};
    const char *const *cases[] = {ingest, status, ask};
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *err;
        g_assert_cmpint(docqa_in(cwd, cases[i] == status ? conninfo : NULL, cases[i], &err), ==, 2);
        g_assert_nonnull(strstr(err, "looks like a libpq connection string"));
        g_assert_nonnull(strstr(err, "use a postgresql:// URI"));
        g_assert_null(strstr(err, "hunter2"));
        g_free(err);
        GDir *d = g_dir_open(cwd, 0, NULL);
        g_assert_null(g_dir_read_name(d)); /* nothing created */
        g_dir_close(d);
    }
    /* Whatever libpq keyword comes first, not only the common ones; without libpq docqa knows
     * only those (it has no libpq to ask), and says the same of them. */
    const char *first[] = {
        "hostaddr=127.0.0.1 dbname=docqa password=hunter2",
        "service=nightly password=hunter2",
        "  PORT = 5432 password=hunter2",
#ifdef DOCQA_HAVE_POSTGRES
        "target_session_attrs=read-write host=db password=hunter2",
        "gssencmode=disable host=db password=hunter2",
        "sslrootcert=/etc/ca.pem host=db password=hunter2",
        "keepalives=0 host=db password=hunter2",
        "channel_binding=require host=db password=hunter2",
        "requirepeer=postgres host=/run/postgresql password=hunter2",
        "krbsrvname=postgres host=db password=hunter2",
#endif
    };
    for (size_t i = 0; i < G_N_ELEMENTS(first); i++) {
        const char *args[] = {"ingest", "--db", first[i], docs, NULL};
        char *err;
        int rc = docqa_in(cwd, NULL, args, &err);
        if (strstr(err, "looks like a libpq connection string") == NULL)
            g_error("%s: not taken for a libpq string (exit status %d): %s", first[i], rc, err);
        g_assert_cmpint(rc, ==, 2);
        g_assert_null(strstr(err, "hunter2"));
        g_free(err);
        GDir *d = g_dir_open(cwd, 0, NULL);
        const char *made = g_dir_read_name(d);
        if (made != NULL) /* a SQLite database named after the string */
            g_error("%s: made '%s' in the working directory", first[i], made);
        g_dir_close(d);
    }
    const char *no_slashes[] = {"status", "--db", "postgresql:alice:hunter2@dbhost/docqa", NULL};
    char *err;
    g_assert_cmpint(docqa_in(cwd, NULL, no_slashes, &err), ==, 2);
    g_assert_null(strstr(err, "hunter2"));
    g_assert_nonnull(strstr(err, "postgresql://"));
    g_free(err);
    g_free(cwd);
    g_free(docs);
    g_free(dir);
}

/* What a user sees of text a terminal would act on: no ESC, BEL or C1 byte, nothing that is not
 * UTF-8, and the hostile name written out as escapes where `want` says. */
static void assert_shown(const char *what, const char *text, const char *want) {
    const char *bad = NULL;
    if (strpbrk(text, "\033\007") != NULL || strstr(text, "\xc2\x9b") != NULL ||
        !g_utf8_validate(text, -1, &bad))
        g_error("%s: raw control characters or bytes reach the terminal: %s", what,
                // cppcheck-suppress leakNoVarFunctionCall -- g_error aborts
                g_strescape(text, NULL));
    if (want != NULL && strstr(text, want) == NULL)
        g_error("%s: expected '%s' in: %s", what, want, text);
}

/* Every message that repeats a command, an option's value, a folder, a database's name, a model
 * id or DOCQA_PAGES shows its terminal escapes and its bytes that are not UTF-8 as text, on
 * stderr and in migrate's summary lines alike: none of them is sent to the terminal. */
static void test_messages_escaped(void) {
    /* text options take UTF-8 (GLib converts them from the locale's charset); names and
     * folders are bytes */
    const char *evil = "x\033]0;PWNED\007\033[2J\xc2\x9b";
    const char *evil_bytes = "x\033]0;PWNED\007\033[2J\xc2\x9b\xff";
    const char *shown = "x\\u001b]0;PWNED\\u0007\\u001b[2J\\u009b";
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 1);
    g_assert_cmpint(jt_ask(db, 1, "tiny", 3), ==, 1);
    char *missing = g_build_filename(dir, "gone", evil, NULL);
    char *model = g_build_filename(dir, evil, NULL);
    g_assert_cmpint(g_mkdir(model, 0755), ==, 0);
    char *pages = g_build_filename(dir, "pages", evil_bytes, NULL);
    char *evil_db = g_strconcat(db, evil_bytes, NULL);
    char *evil_copy = g_strconcat(db, evil_bytes, ".copy", NULL);
    gchar *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(db, &bytes, &len, NULL));
    g_assert_true(g_file_set_contents(evil_db, bytes, len, NULL));
    g_free(bytes);
    struct {
        const char *const *args;
        int rc;
        gboolean on_stdout; /* where the name shows */
    } cases[] = {
        {(const char *[]){evil_bytes, NULL}, 2, FALSE},
        {(const char *[]){"help", evil_bytes, NULL}, 2, FALSE},
        {(const char *[]){"ingest", "--db", db, "--model", missing, dir, NULL}, 2, FALSE},
        {(const char *[]){"run", "--db", db, "--model", missing, NULL}, 2, FALSE},
        {(const char *[]){"ask", "--db", db, "--model", missing, "Total?", NULL}, 2, FALSE},
        {(const char *[]){"run", "--db", db, "--model", model, "--weights", evil, NULL}, 2, FALSE},
        {(const char *[]){"run", "--db", db, "--model", model, "--draft", evil, NULL}, 2, FALSE},
        {(const char *[]){"run", "--db", db, "--model", model, "--workers", evil, NULL}, 2, FALSE},
        {(const char *[]){"status", "--db", db, "--", evil_bytes, NULL}, 2, FALSE},
        {(const char *[]){"export", "--db", db, "--format", evil, NULL}, 2, FALSE},
        {(const char *[]){"cancel", "--db", db, "--state", evil, "--model", "tiny", NULL}, 2,
         FALSE},
        /* the jobs are for "tiny": run says so, naming the model and its folder */
        {(const char *[]){"run", "--db", db, "--model", model, "--until-empty", "-q", NULL}, -1,
         FALSE},
        {(const char *[]){"migrate", "--from", evil_db, NULL}, 0, TRUE},
        {(const char *[]){"migrate", "--from", evil_db, "--to", evil_copy, NULL}, 0, TRUE},
    };
    /* DOCQA_PAGES is ignored for SQLite, with a note repeating it */
    char *pages_env = g_strconcat("DOCQA_PAGES=", pages, NULL);
    const DqTestRun with_env = {.env = (const char *const[]){pages_env, "DOCQA_DB", NULL}};
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *out, *err;
        int rc = dq_test_docqa_run(&with_env, cases[i].args, &out, &err);
        char *what = g_strdup_printf("case %zu (%s)", i, cases[i].args[0]);
        if (cases[i].rc >= 0 && rc != cases[i].rc)
            g_error("%s: exit status %d, expected %d; stderr: %s", what, rc, cases[i].rc, err);
        assert_shown(what, out, cases[i].on_stdout ? shown : NULL);
        assert_shown(what, err, cases[i].on_stdout ? NULL : shown);
        g_free(what);
        g_free(out);
        g_free(err);
    }
    /* ingest's note on DOCQA_PAGES, with the name shown */
    const char *ingest[] = {"ingest", "--db", db, "-q", dir, NULL};
    char *out, *err;
    dq_test_docqa_run(&with_env, ingest, &out, &err);
    assert_shown("ingest", err, "DOCQA_PAGES (");
    assert_shown("ingest", err, shown);
    assert_shown("ingest", out, NULL);
    g_free(out);
    g_free(err);
    g_free(evil_copy);
    g_free(evil_db);
    g_free(pages);
    g_free(pages_env);
    g_free(model);
    g_free(missing);
    g_free(db);
    g_free(dir);
}

/* run's progress line on a terminal: each bar drawn is filled in proportion to the jobs done,
 * 30 cells for all of them. Stopped by --max-jobs with a job left, the last one is not full. */
static void test_run_progress_bar(void) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    char *dir = dq_test_tmpdir();
    char *db = jt_make_db(dir, 1, 2);
    g_assert_cmpint(jt_ask(db, 2, "m", 3), ==, 4);
    const char *args[] = {"run", "--db",       db,  "--model", model, "--model-id",
                          "m",   "--max-jobs", "1", NULL,      NULL};
    char *out = NULL, *err = NULL;
    g_assert_cmpint(dq_test_docqa_run(&piped, args, &out, &err), ==, 0);
    g_assert_null(strchr(err, '\r'));
    g_free(out), g_free(err);
    args[9] = "-q";
    g_assert_cmpint(docqa_pty(args, &out), ==, 0);
    g_assert_null(strstr(out, "\r["));
    g_free(out);
    args[9] = NULL;
    int rc = docqa_pty(args, &out);
    if (rc != 0)
        g_error("run: exit %d, said %s", rc, out);
    int bars = 0, last_done = -1;
    for (const char *at = strstr(out, "\r["); at != NULL; at = strstr(at + 1, "\r[")) {
        const char *end = strchr(at, ']');
        g_assert_nonnull(end);
        g_assert_cmpint(end - at - 2, ==, 30);
        int filled = 0, done = -1, total = -1;
        for (const char *c = at + 2; c < end; c++)
            filled += *c == '#';
        g_assert_cmpint(sscanf(end, "] %d/%d job", &done, &total), ==, 2);
        g_assert_cmpint(total, ==, 4);
        g_assert_cmpint(filled, ==, 30 * done / total);
        last_done = done;
        bars++;
    }
    g_assert_cmpint(bars, >=, 1);
    g_assert_cmpint(last_done, ==, 3); /* 22 cells of 30 */
    g_assert_cmpint(jt_query_int(db, "SELECT count(*) FROM jobs WHERE state = 'done'"), ==, 3);
    g_free(out);
    g_free(db);
    g_free(dir);
    g_free(model);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/cli-hardening/file-name-escaped", test_file_name_escaped);
    g_test_add_func("/cli-hardening/export-data-and-terminal", test_export_data_and_terminal);
    g_test_add_func("/cli-hardening/ask-dash-dash", test_ask_dash_dash);
    g_test_add_func("/cli-hardening/ask-questions-capped", test_ask_questions_capped);
    g_test_add_func("/cli-hardening/conninfo-refused", test_conninfo_refused);
    g_test_add_func("/cli-hardening/messages-escaped", test_messages_escaped);
    g_test_add_func("/cli-hardening/run-progress-bar", test_run_progress_bar);
    return g_test_run();
}
