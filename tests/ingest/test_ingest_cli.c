/* `docqa ingest` exit statuses and summaries: 0 all fine, 1 some inputs failed (recorded),
 * 2 could not run. Drives the built binary. */
#include "testutil.h"

#include <cairo-pdf.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string.h>

#ifdef DQ_TEST_POSTGRES
#include "pg_testlib.h"

static PgtServer *server; /* NULL: the PostgreSQL cases are skipped */
static char *server_why_not;
#endif

/* uid/gid the child takes before exec, when > 0 (root ignores permissions: to see a folder it
 * cannot read, the test runs docqa as nobody). */
static uid_t child_uid;
static gid_t child_gid;

static void drop_privileges(gpointer data) {
    (void)data;
    if (child_uid > 0 &&
        (setgroups(0, NULL) != 0 || setgid(child_gid) != 0 || setuid(child_uid) != 0))
        _exit(99);
}

/* Runs docqa in folder cwd (NULL: this one) with args, as the test's unprivileged user when
 * there is one; returns its exit status. */
static int run_docqa_va(const char *cwd, char **out, char **errout, va_list ap) {
    GPtrArray *args = g_ptr_array_new();
    /* clang-analyzer loses run_docqa_in's va_start across the call (run_docqa's it keeps) */
    // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized)
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        g_ptr_array_add(args, (gpointer)a);
    g_ptr_array_add(args, NULL);
    int rc = dq_test_docqa_in(cwd, drop_privileges, (const char *const *)args->pdata, out, errout);
    g_ptr_array_free(args, TRUE);
    g_assert_cmpint(rc, >=, 0); /* not ended by a signal */
    return rc;
}

/* Runs docqa with args (NULL-terminated); returns its exit status. */
static int run_docqa(char **out, char **errout, ...) {
    va_list ap;
    va_start(ap, errout);
    int rc = run_docqa_va(NULL, out, errout, ap);
    va_end(ap);
    return rc;
}

static int run_docqa_in(const char *cwd, char **out, char **errout, ...) {
    va_list ap;
    va_start(ap, errout);
    int rc = run_docqa_va(cwd, out, errout, ap);
    va_end(ap);
    return rc;
}

static void write_pdf(const char *path) {
    cairo_surface_t *s = cairo_pdf_surface_create(path, 200, 100);
    cairo_t *cr = cairo_create(s);
    cairo_rectangle(cr, 10, 10, 20, 20);
    cairo_fill(cr);
    cairo_show_page(cr);
    cairo_destroy(cr);
    cairo_surface_destroy(s);
}

/* The database inside the folder it ingests (`docqa ingest --db archive/docqa.db archive`): its
 * own page store, database file and -wal/-shm are not walked, so its page PNGs are not counted as
 * other files skipped, whether named by the same path or through a symbolic link. */
static void test_walk_skips_own_database(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *pdf = g_build_filename(dir, "a.pdf", NULL);
    write_pdf(pdf);
    char *out = NULL;
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", dir, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "1 file: 1 ok"));
    g_assert_nonnull(strstr(out, "(0 other files skipped)"));
    g_free(out);
    /* Again: the page store now holds a PNG, the database its files. */
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", dir, NULL), ==, 0);
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, "1 unchanged"));
    g_assert_nonnull(strstr(out, "(0 other files skipped)"));
    g_free(out);
    /* Through a link to the database, from a folder that holds both. */
    char *link = g_build_filename(dir, "link.db", NULL);
    g_assert_cmpint(symlink("docqa.db", link), ==, 0);
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", link, "--tile", "64", dir, NULL), ==,
                    0);
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, "1 unchanged"));
    g_assert_nonnull(strstr(out, "(0 other files skipped)"));
    g_free(out);
    g_free(link);
    g_free(pdf);
    g_free(db);
    g_free(dir);
}

/* Symbolic links the walk does not follow are said, one line each with where they lead, and
 * counted in the summary and --json: an archive's folder linked from another disk is not
 * ingested, and the user must learn it. They fail nothing (exit 0). */
static void test_links_not_followed(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *archive = g_build_filename(dir, "archive", NULL);
    char *other = g_build_filename(dir, "other-disk", NULL);
    g_mkdir(archive, 0755);
    g_mkdir(other, 0755);
    char *pdf = g_build_filename(archive, "a.pdf", NULL),
         *far = g_build_filename(other, "b.pdf", NULL);
    write_pdf(pdf);
    write_pdf(far);
    char *year = g_build_filename(archive, "2023", NULL),
         *moved = g_build_filename(archive, "c.pdf", NULL);
    g_assert_cmpint(symlink(other, year), ==, 0);
    g_assert_cmpint(symlink("nowhere/c.pdf", moved), ==, 0);
    char *out = NULL;
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", archive, NULL), ==,
                    0);
    g_test_message("%s", out);
    char *want_far =
        g_strdup_printf("skipped link_outside       %s: a symbolic link to %s, outside the "
                        "folders being ingested: not followed (name that folder or "
                        "file to ingest it)\n",
                        year, other);
    char *want_broken = g_strdup_printf("skipped link_broken        %s: a symbolic link to "
                                        "nowhere/c.pdf, which cannot be reached: %s\n",
                                        moved, g_strerror(ENOENT));
    g_assert_nonnull(strstr(out, want_far));
    g_assert_nonnull(strstr(out, want_broken));
    g_assert_nonnull(strstr(out, "1 file: 1 ok, 0 partial, 0 failed, 0 unchanged (0 other files "
                                 "skipped, 2 links not followed)"));
    g_free(out);
    g_assert_cmpint(
        run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", "--json", archive, NULL), ==,
        0);
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonArray *links = json_object_get_array_member(json_node_get_object(json_parser_get_root(p)),
                                                    "links_not_followed");
    g_assert_cmpint(json_array_get_length(links), ==, 2);
    GString *got = g_string_new(NULL);
    for (guint i = 0; i < 2; i++) {
        JsonObject *l = json_array_get_object_element(links, i);
        g_string_append_printf(got, "%s %s;", json_object_get_string_member(l, "code"),
                               json_object_get_string_member(l, "path"));
    }
    char *want = g_strdup_printf("link_outside %s;link_broken %s;", year, moved); /* name order */
    g_assert_cmpstr(got->str, ==, want);
    g_free(want);
    g_string_free(got, TRUE);
    g_object_unref(p);
    g_free(out);
    g_free(want_far), g_free(want_broken), g_free(year), g_free(moved), g_free(pdf), g_free(far);
    g_free(other), g_free(archive), g_free(db), g_free(dir);
}

/* ingest's integer options read decimal only (cli.h, dq_cli_add_options): "064" is 64, where
 * GLib's parser read 52 (octal), and "0x10" is refused naming the option, where it read 16. */
static void test_numbers_in_decimal(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *good = g_build_filename(dir, "good.pdf", NULL);
    write_pdf(good);
    char *out = NULL, *err = NULL;
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "064", "--n-res", "010",
                              "--json", good, NULL),
                    ==, 0);
    JsonParser *p = json_parser_new();
    GError *jerr = NULL;
    g_assert_true(json_parser_load_from_data(p, out, -1, &jerr));
    dq_assert_no_error(jerr);
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    g_assert_cmpint(json_object_get_int_member(o, "tile"), ==, 64);
    g_assert_cmpint(json_object_get_int_member(o, "n_res"), ==, 10);
    g_object_unref(p);
    g_free(out);
    const char *bad[][2] = {{"--max-pixels", "0x10"}, {"--jobs", "010o"}, {"-j", "0x2"},
                            {"--timeout", "1e3"},     {"--min-free", ""}, {"--tile", "+"}};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_assert_cmpint(
            run_docqa(NULL, &err, "ingest", "--db", db, bad[i][0], bad[i][1], good, NULL), ==, 2);
        char *want = g_strdup_printf("docqa: ingest: %s '%s': expected a whole number in decimal "
                                     "(see --help)\n",
                                     bad[i][0], bad[i][1]);
        g_assert_cmpstr(err, ==, want);
        g_free(want);
        g_free(err);
    }
    g_assert_cmpint(run_docqa(NULL, &err, "ingest", "--db", db, "--max-doc-bytes",
                              "99999999999999999999", good, NULL),
                    ==, 2);
    g_assert_cmpstr(err, ==,
                    "docqa: ingest: --max-doc-bytes 99999999999999999999: out of range (see "
                    "--help)\n");
    g_free(err);
    g_free(good);
    g_free(db);
    g_free(dir);
}

static void test_exit_statuses(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *good = g_build_filename(dir, "good.pdf", NULL);
    char *txt = g_build_filename(dir, "notes.txt", NULL);
    char *only_txt = g_build_filename(dir, "texts", NULL);
    char *txt2 = g_build_filename(only_txt, "more.txt", NULL);
    write_pdf(good);
    g_assert_true(g_file_set_contents(txt, "text", -1, NULL));
    g_mkdir(only_txt, 0755);
    g_assert_true(g_file_set_contents(txt2, "text", -1, NULL));
    char *out = NULL, *err = NULL;

    /* All fine. */
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", good, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "1 file: 1 ok"));
    g_free(out);
    /* Again: unchanged, still fine. */
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", good, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "1 unchanged"));
    g_free(out);
    /* A folder holding no documents: nothing to do, fine. */
    g_assert_cmpint(run_docqa(NULL, NULL, "ingest", "--db", db, only_txt, NULL), ==, 0);

    /* A named text file fails (recorded), the PDF beside it is fine: status 1, JSON summary. */
    g_assert_cmpint(
        run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", "--json", good, txt, NULL), ==,
        1);
    JsonParser *p = json_parser_new();
    GError *jerr = NULL;
    g_assert_true(json_parser_load_from_data(p, out, -1, &jerr));
    dq_assert_no_error(jerr);
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    g_assert_cmpint(json_object_get_int_member(o, "files"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(o, "unchanged"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "documents_failed"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "n_res"), ==, 5);
    JsonArray *fails = json_object_get_array_member(o, "failures");
    g_assert_cmpint(json_array_get_length(fails), ==, 1);
    JsonObject *f0 = json_array_get_object_element(fails, 0);
    g_assert_cmpstr(json_object_get_string_member(f0, "code"), ==, "not_a_document");
    g_assert_cmpstr(json_object_get_string_member(f0, "path"), ==, txt);
    g_object_unref(p);
    g_free(out);

    /* Again: nothing new, but an input is still failed (recorded earlier): still 1. */
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, txt, NULL), ==, 1);
    g_assert_nonnull(strstr(out, "1 unchanged, 1 of them failed or partial"));
    g_free(out);

    /* Could not run: no paths, bad numbers, a database that cannot be created, a bad model. */
    g_assert_cmpint(run_docqa(NULL, NULL, "ingest", "--db", db, NULL), ==, 2);
    /* an empty path (an unset shell variable) is not the current folder */
    g_assert_cmpint(run_docqa(NULL, &err, "ingest", "--db", db, good, "", NULL), ==, 2);
    g_assert_nonnull(strstr(err, "path 2 of 2 is empty"));
    g_free(err);
    g_assert_cmpint(run_docqa(NULL, NULL, "ingest", "--db", db, "--n-res", "0", good, NULL), ==, 2);
    g_assert_cmpint(run_docqa(NULL, NULL, "ingest", "--db", db, "--bogus", good, NULL), ==, 2);
    char *nodir = g_build_filename(dir, "no", "such", "dir", "x.db", NULL);
    g_assert_cmpint(run_docqa(NULL, &err, "ingest", "--db", nodir, good, NULL), ==, 2);
    g_assert_nonnull(strstr(err, "x.db"));
    g_free(err);
    g_assert_cmpint(run_docqa(NULL, &err, "ingest", "--db", db, "--model", dir, good, NULL), ==, 2);
    g_assert_nonnull(strstr(err, "preprocessor_config.json"));
    g_free(err);
    g_free(nodir);
    g_free(db);
    g_free(good);
    g_free(txt);
    g_free(txt2);
    g_free(only_txt);
    g_free(dir);
}

/* "--" ends the options and is no path; an option given an invalid value is an error that names
 * it, in one line, never quietly the default. */
static void test_arguments(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *dash = g_build_filename(dir, "-dash.pdf", NULL);
    write_pdf(dash);
    char *out = NULL, *err = NULL;
    g_assert_cmpint(run_docqa_in(dir, &out, &err, "ingest", "--db", db, "--tile", "64", "--",
                                 "-dash.pdf", NULL),
                    ==, 0);
    if (strstr(out, "1 file: 1 ok") == NULL)
        g_error("docqa ingest -- -dash.pdf: %s", out);
    /* no progress line where stderr is no terminal, --quiet or not */
    g_assert_cmpstr(err, ==, "");
    g_free(out);
    g_free(err);
    static const char *const bad[][2] = {
        {"--jobs", "0"},       {"--timeout", "0"}, {"--max-pages", "0"}, {"--max-pixels", "0"},
        {"--mem-limit", "-5"}, {"--tile", "0"},    {"--n-res", "0"},     {"--n-res", "65"},
        {"--tile", "8193"},    {"--jobs", "-1"},   {"--timeout", "-3"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        int rc = run_docqa(&out, &err, "ingest", "--db", db, bad[i][0], bad[i][1], dash, NULL);
        /* one line naming the option and the value given, as the other commands' do */
        char *said = g_strdup_printf("docqa: ingest: %s %s: must be ", bad[i][0], bad[i][1]);
        if (rc != 2 || !g_str_has_prefix(err, said) || strchr(err, '\n') != strrchr(err, '\n'))
            g_error("%s %s: exit %d, stderr: %s", bad[i][0], bad[i][1], rc, err);
        g_free(said);
        g_free(out);
        g_free(err);
    }
    /* The ends of each range are taken (the folder given is empty: nothing is rendered). */
    char *none = g_build_filename(dir, "none", NULL);
    g_assert_cmpint(g_mkdir(none, 0755), ==, 0);
    static const char *const edge[][2] = {
        {"--n-res", "1"},      {"--n-res", "64"},    {"--tile", "16"},   {"--tile", "8192"},
        {"--max-pixels", "1"}, {"--max-pages", "1"}, {"--timeout", "1"}, {"--jobs", "1"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(edge); i++) {
        int rc = run_docqa(&out, &err, "ingest", "--db", db, edge[i][0], edge[i][1], none, NULL);
        if (rc != 0 || *err != '\0')
            g_error("%s %s: exit %d, stderr: %s", edge[i][0], edge[i][1], rc, err);
        g_free(out);
        g_free(err);
    }
    g_free(none);
    /* 0 is documented for --mem-limit: no limit. */
    g_assert_cmpint(run_docqa(NULL, NULL, "ingest", "--db", db, "--mem-limit", "0", dash, NULL), ==,
                    0);
    g_free(dash);
    g_free(db);
    g_free(dir);
}

/* --verify reaches the ingest: a page file damaged in place is taken as it is by a plain run and
 * rendered again with --verify. */
static void test_verify_option(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *pdf = g_build_filename(dir, "good.pdf", NULL);
    write_pdf(pdf);
    char *out = NULL;
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", pdf, NULL), ==, 0);
    g_free(out);
    sqlite3 *s = NULL;
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_prepare_v2(s, "SELECT image_sha256 FROM pages", -1, &st, NULL), ==,
                    SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    char *sha = g_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(s);
    char *png = g_strdup_printf("%s.pages/%.2s/%.2s/%s.png", db, sha, sha + 2, sha);
    char *good = NULL, *now = NULL;
    gsize len = 0, now_len = 0;
    g_assert_true(g_file_get_contents(png, &good, &len, NULL));
    g_assert_true(g_file_set_contents(png, good, (gssize)(len / 2), NULL));
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", pdf, NULL), ==, 0);
    if (strstr(out, "1 file: 0 ok, 0 partial, 0 failed, 1 unchanged") == NULL)
        g_error("ingest without --verify: %s", out);
    g_free(out);
    g_assert_cmpint(
        run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", "--verify", pdf, NULL), ==, 0);
    if (strstr(out, "1 file: 1 ok") == NULL)
        g_error("ingest --verify: %s", out);
    g_free(out);
    g_assert_true(g_file_get_contents(png, &now, &now_len, NULL));
    g_assert_true(now_len == len && memcmp(now, good, len) == 0);
    g_free(now);
    g_free(good);
    g_free(png);
    g_free(sha);
    g_free(pdf);
    g_free(db);
    g_free(dir);
}

/* Every failure line names its document, also where the reason is about something else (here the
 * page store, every folder of it blocked by a file). */
static void test_failure_lines_name_the_document(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *pdf = g_build_filename(dir, "good.pdf", NULL);
    write_pdf(pdf);
    char *store = g_strconcat(db, ".pages", NULL);
    g_assert_cmpint(g_mkdir_with_parents(store, 0755), ==, 0);
    for (int i = 0; i < 256; i++) {
        char name[3];
        snprintf(name, sizeof name, "%02x", i);
        char *blocker = g_build_filename(store, name, NULL);
        g_assert_true(g_file_set_contents(blocker, "not a folder", -1, NULL));
        g_free(blocker);
    }
    char *out = NULL;
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", pdf, NULL), ==, 1);
    char **lines = g_strsplit(out, "\n", -1);
    g_assert_true(g_str_has_prefix(lines[0], "failed  store_failed"));
    if (strstr(lines[0], pdf) == NULL)
        g_error("the failure line does not name %s: %s", pdf, lines[0]);
    g_strfreev(lines);
    g_free(out);
    g_free(store);
    g_free(pdf);
    g_free(db);
    g_free(dir);
}

/* A file rewritten during ingest: reported as changed, exit status 1, nothing recorded. */
static void test_changed_during_ingest(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *pdf = g_build_filename(dir, "moving.pdf", NULL);
    write_pdf(pdf);
    char *out = NULL;
    g_setenv("DOCQA_INGEST_TEST_FAULT", "rewrite:moving.pdf:1", TRUE);
    int rc = run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", "-j", "1", pdf, NULL);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_cmpint(rc, ==, 1);
    g_assert_nonnull(strstr(out, "changed "));
    g_assert_nonnull(strstr(out, "ingest it again"));
    g_assert_nonnull(
        strstr(out, "0 ok, 0 partial, 0 failed, 0 unchanged, 1 changed during ingest"));
    g_free(out);
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", pdf, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "1 file: 1 ok"));
    g_free(out);
    g_free(pdf);
    g_free(db);
    g_free(dir);
}

static void file_size_limited(gpointer data) {
    (void)data;
    /* SIGXFSZ as a shell leaves it (its default ends the process): docqa itself ignores it */
    struct rlimit r = {1 << 20, 1 << 20};
    if (setrlimit(RLIMIT_FSIZE, &r) != 0)
        _exit(99);
}

/* A page image past the file size limit (`ulimit -f`, systemd's LimitFSIZE=) fails as
 * store_failed naming the file, and the next ingest without the limit renders it by itself:
 * SIGXFSZ used to kill the render worker, which was recorded as the document's render_crashed
 * (a failure of the file's, never rendered again without --retry-failed). */
static void test_file_size_limit(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *pdf = g_build_filename(dir, "noise.pdf", NULL);
    /* noise, so that its page's PNG at 2560 px is several MiB */
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1024, 512);
    guint32 *px = (guint32 *)cairo_image_surface_get_data(img);
    GRand *rand = g_rand_new_with_seed(7);
    for (int i = 0; i < 1024 * 512; i++)
        px[i] = g_rand_int(rand) & 0xffffff;
    g_rand_free(rand);
    cairo_surface_mark_dirty(img);
    cairo_surface_t *s = cairo_pdf_surface_create(pdf, 200, 100);
    cairo_t *cr = cairo_create(s);
    cairo_scale(cr, 200.0 / 1024, 100.0 / 512);
    cairo_set_source_surface(cr, img, 0, 0);
    cairo_paint(cr);
    cairo_show_page(cr);
    cairo_destroy(cr);
    cairo_surface_destroy(s);
    cairo_surface_destroy(img);
    char *out = NULL, *err = NULL;
    const char *args[] = {"ingest", "--db", db, "-j", "1", pdf, NULL};
    int rc = dq_test_docqa_in(NULL, file_size_limited, args, &out, &err);
    if (rc != 1 || !g_str_has_prefix(out, "failed  store_failed") ||
        strstr(out, g_strerror(EFBIG)) == NULL)
        g_error("ingest under a 1 MiB file size limit: status %d, stdout: %s, stderr: %s", rc, out,
                err);
    g_free(out);
    g_free(err);
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, pdf, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "1 file: 1 ok"));
    g_assert_nonnull(strstr(out, "1 resumed"));
    g_free(out);
    g_free(pdf);
    g_free(db);
    g_free(dir);
}

/* Under ASan a render worker's leak is reported and fails the ingest. Workers leave by _exit,
 * which skips LeakSanitizer's check at exit, with their stderr on /dev/null: the corpus test and
 * every ingest under ASan passed whatever the renderers leaked. */
static void test_sanitizer_sees_worker_leak(void) {
#ifndef __SANITIZE_ADDRESS__
    g_test_skip("not an ASan build (-DDOCQA_SANITIZE=ON): there is no leak check to see");
#else
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *pdf = g_build_filename(dir, "leaky.pdf", NULL);
    write_pdf(pdf);
    char *out = NULL, *err = NULL;
    g_setenv("DOCQA_INGEST_TEST_FAULT", "leak:leaky.pdf:1", TRUE);
    const char *args[] = {"ingest", "--db", db, "--tile", "64", "-j", "1", pdf, NULL};
    int rc = dq_test_docqa_in(NULL, drop_privileges, args, &out, &err);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_test_message("exit %d, stderr:\n%s", rc, err);
    g_assert_cmpint(rc, !=, 0);
    g_assert_cmpint(rc, !=, 1); /* not "some inputs failed": the page itself rendered */
    g_assert_nonnull(strstr(err, "ERROR: LeakSanitizer"));
    g_assert_nonnull(strstr(err, "4000 byte(s)"));
    g_assert_nonnull(strstr(err, "in worker_main"));
    g_assert_nonnull(strstr(err, "leaky.pdf failed at its exit (a sanitizer report)"));
    g_free(out);
    g_free(err);
    g_free(pdf);
    g_free(db);
    g_free(dir);
#endif
}

/* Folders that cannot be listed, the one named and one inside: each named on a line with the
 * error, counted, exit status 1; the readable rest is ingested. */
static void test_unreadable_folders(void) {
    char *dir = dq_test_tmpdir();
    if (geteuid() == 0) {
        // cppcheck-suppress getpwnamCalled -- one thread here
        const struct passwd *pw = getpwnam("nobody");
        if (pw == NULL) {
            g_test_skip("running as root and there is no user nobody to lose permissions to");
            g_free(dir);
            return;
        }
        child_uid = pw->pw_uid;
        child_gid = pw->pw_gid;
        g_assert_cmpint(g_chmod(dir, 0777), ==, 0);
    }
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *locked = g_build_filename(dir, "locked", NULL);
    char *tree = g_build_filename(dir, "tree", NULL);
    char *inner = g_build_filename(tree, "inner", NULL);
    char *good = g_build_filename(tree, "good.pdf", NULL);
    char *hidden = g_build_filename(inner, "hidden.pdf", NULL);
    g_assert_cmpint(g_mkdir(locked, 0755), ==, 0);
    g_assert_cmpint(g_mkdir_with_parents(inner, 0755), ==, 0);
    write_pdf(good);
    write_pdf(hidden);
    g_assert_cmpint(g_chmod(good, 0644), ==, 0);
    g_assert_cmpint(g_chmod(locked, 0), ==, 0);
    g_assert_cmpint(g_chmod(inner, 0), ==, 0);
    char *out = NULL;
    int rc = run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", locked, tree, NULL);
    child_uid = 0;
    g_chmod(locked, 0755);
    g_chmod(inner, 0755);
    g_assert_cmpint(rc, ==, 1);
    char *want_locked = g_strdup_printf("%s: cannot list the folder: Permission denied", locked);
    char *want_inner = g_strdup_printf("%s: cannot list the folder: Permission denied", inner);
    g_assert_nonnull(strstr(out, want_locked));
    g_assert_nonnull(strstr(out, want_inner));
    g_assert_nonnull(strstr(out, "1 file: 1 ok"));
    g_assert_nonnull(strstr(out, "2 folders could not be read"));
    g_free(want_locked);
    g_free(want_inner);
    g_free(out);
    g_free(hidden);
    g_free(good);
    g_free(inner);
    g_free(tree);
    g_free(locked);
    g_free(db);
    g_free(dir);
}

/* A file name that is not UTF-8 (Latin-1, from an old archive): --json stays valid JSON and
 * names it as the database does, each such byte as \xNN. */
static void test_non_utf8_name(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *bad = g_build_filename(dir,
                                 "d\xe9"
                                 "fect.pdf",
                                 NULL);
    g_assert_true(g_file_set_contents(bad, "%PDF-1.4 not really", -1, NULL));
    char *out = NULL;
    g_assert_cmpint(
        run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", "--json", bad, NULL), ==, 1);
    JsonParser *p = json_parser_new();
    GError *jerr = NULL;
    g_assert_true(json_parser_load_from_data(p, out, -1, &jerr));
    dq_assert_no_error(jerr);
    JsonArray *failures =
        json_object_get_array_member(json_node_get_object(json_parser_get_root(p)), "failures");
    g_assert_cmpint(json_array_get_length(failures), ==, 1);
    char *want = g_build_filename(dir, "d\\xE9fect.pdf", NULL);
    g_assert_cmpstr(
        json_object_get_string_member(json_array_get_object_element(failures, 0), "path"), ==,
        want);
    g_object_unref(p);
    g_free(want);
    g_free(out);
    g_free(bad);
    g_free(db);
    g_free(dir);
}

static void write_two_page_pdf(const char *path) {
    cairo_surface_t *s = cairo_pdf_surface_create(path, 200, 100);
    cairo_t *cr = cairo_create(s);
    for (int i = 0; i < 2; i++) {
        cairo_rectangle(cr, 10 + 50 * i, 10, 20, 20);
        cairo_fill(cr);
        cairo_show_page(cr);
    }
    cairo_destroy(cr);
    cairo_surface_destroy(s);
}

static JsonObject *parse_object(JsonParser *p, const char *text) {
    GError *err = NULL;
    g_assert_true(json_parser_load_from_data(p, text, -1, &err));
    dq_assert_no_error(err);
    return json_node_get_object(json_parser_get_root(p));
}

/* Every way a document can end is counted, in the text summary and in --json: ok, partial and
 * failed with their codes, and the pages that failed. */
static void test_summary_counts(void) {
    char *tmp = dq_test_tmpdir();
    char *db = g_build_filename(tmp, "docqa.db", NULL);
    char *dir = g_build_filename(tmp, "docs", NULL);
    g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
    char *good = g_build_filename(dir, "good.pdf", NULL);
    char *crash = g_build_filename(dir, "crash.pdf", NULL);
    char *photo = g_build_filename(dir, "photo.tif", NULL);
    char *html = g_build_filename(dir, "page.pdf", NULL);
    char *damaged = g_build_filename(dir, "damaged.pdf", NULL);
    write_pdf(good);
    write_two_page_pdf(crash);
    /* JPEG's first bytes are enough to tell it from a TIFF. */
    g_assert_true(g_file_set_contents(photo, "\xff\xd8\xff\xe0\0\x10JFIF\0", 11, NULL));
    g_assert_true(g_file_set_contents(html, "<html><body>moved</body></html>\n", -1, NULL));
    g_assert_true(g_file_set_contents(damaged, "%PDF-1.4\n1 0 obj << /Type /Cat", -1, NULL));
    char *out = NULL;
    g_setenv("DOCQA_INGEST_TEST_FAULT", "crash:crash.pdf:2", TRUE);
    int rc = run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", dir, NULL);
    g_assert_cmpint(rc, ==, 1);
    const char *want = "5 files: 1 ok, 1 partial (1 render_crashed), 3 failed (1 damaged, 2 "
                       "not_a_document), 0 unchanged (0 other files skipped); 2 pages (and 1 "
                       "failed) in";
    if (strstr(out, want) == NULL)
        g_error("want \"%s\" in: %s", want, out);
    g_free(out);
    char *db2 = g_build_filename(tmp, "again.db", NULL);
    rc = run_docqa(&out, NULL, "ingest", "--db", db2, "--tile", "64", "--json", dir, NULL);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_cmpint(rc, ==, 1);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "documents_partial"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "documents_failed"), ==, 3);
    g_assert_cmpint(json_object_get_int_member(o, "pages_failed"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "not_done"), ==, 0);
    JsonObject *failed = json_object_get_object_member(o, "failed_by_code");
    g_assert_cmpint(json_object_get_size(failed), ==, 2);
    g_assert_cmpint(json_object_get_int_member(failed, "damaged"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(failed, "not_a_document"), ==, 2);
    JsonObject *partial = json_object_get_object_member(o, "partial_by_code");
    g_assert_cmpint(json_object_get_size(partial), ==, 1);
    g_assert_cmpint(json_object_get_int_member(partial, "render_crashed"), ==, 1);
    g_object_unref(p);
    g_free(out);
    const char *all[] = {good, crash, photo, html, damaged, db2, db, dir, tmp};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        g_free((char *)all[i]);
}

/* Ctrl-C (SIGINT to docqa) once the first of three files is recorded, with the second hanging
 * in its worker: exit status 130, and the summary counts the file done and the two not done. */
static int run_interrupted(const char *db, const char *const *files, gboolean json, char **out) {
    char *exe = dq_test_docqa_path();
    const char *argv[] = {exe,  "ingest", "--db",   db,       "--tile", "64",
                          "-j", "1",      files[0], files[1], files[2], json ? "--json" : NULL,
                          NULL};
    GPid pid = 0;
    int out_fd = -1;
    GError *err = NULL;
    g_setenv("DOCQA_INGEST_TEST_FAULT", "hang:b.pdf:1", TRUE);
    g_assert_true(g_spawn_async_with_pipes(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                           NULL, NULL, &pid, NULL, &out_fd, NULL, &err));
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    dq_assert_no_error(err);
    /* Wait for a.pdf's row: then b.pdf's worker hangs and c.pdf waits for it. */
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    gint64 rows = 0;
    while (rows < 1 && g_get_monotonic_time() < deadline) {
        sqlite3 *s = NULL;
        if (g_file_test(db, G_FILE_TEST_EXISTS) &&
            sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
            sqlite3_busy_timeout(s, 1000);
            sqlite3_stmt *st = NULL;
            if (sqlite3_prepare_v2(s, "SELECT count(*) FROM documents", -1, &st, NULL) ==
                    SQLITE_OK &&
                sqlite3_step(st) == SQLITE_ROW)
                rows = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
        sqlite3_close(s);
        if (rows < 1)
            g_usleep(50 * 1000);
    }
    g_assert_cmpint(rows, ==, 1);
    g_assert_cmpint(kill(pid, SIGINT), ==, 0);
    GString *text = g_string_new(NULL);
    char buf[4096];
    ssize_t n;
    while ((n = read(out_fd, buf, sizeof buf)) > 0)
        g_string_append_len(text, buf, n);
    close(out_fd);
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_spawn_close_pid(pid);
    g_free(exe);
    g_assert_true(WIFEXITED(status));
    *out = g_string_free(text, FALSE);
    return WEXITSTATUS(status);
}

static void test_interrupted(void) {
    char *dir = dq_test_tmpdir();
    char *a = g_build_filename(dir, "a.pdf", NULL);
    char *b = g_build_filename(dir, "b.pdf", NULL);
    char *c = g_build_filename(dir, "c.pdf", NULL);
    write_pdf(a);
    write_two_page_pdf(b);
    write_pdf(c);
    const char *files[] = {a, b, c};
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *out = NULL;
    g_assert_cmpint(run_interrupted(db, files, FALSE, &out), ==, 130);
    if (strstr(out, "3 files: 1 ok, 0 partial, 0 failed, 0 unchanged") == NULL ||
        strstr(out, "; interrupted, 2 files not done") == NULL)
        g_error("summary: %s", out);
    g_free(out);
    char *db2 = g_build_filename(dir, "json.db", NULL);
    g_assert_cmpint(run_interrupted(db2, files, TRUE, &out), ==, 130);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_true(json_object_get_boolean_member(o, "interrupted"));
    g_assert_cmpint(json_object_get_int_member(o, "files"), ==, 3);
    g_assert_cmpint(json_object_get_int_member(o, "documents_ok"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "not_done"), ==, 2);
    g_object_unref(p);
    g_free(out);
    /* Nothing of b.pdf was recorded; the next run ingests b and c and is fine. */
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", a, b, c, NULL), ==,
                    0);
    g_assert_nonnull(strstr(out, "3 files: 2 ok, 0 partial, 0 failed, 1 unchanged"));
    g_free(out);
    const char *all[] = {a, b, c, db, db2, dir};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        g_free((char *)all[i]);
}

/* ---- --retry-failed's summary */

/* A retry of a partial document says how many pages it rendered and how many were stored. */
static void test_retry_summary(void) {
    char *dir = dq_test_tmpdir();
    char *pdf = g_build_filename(dir, "r.pdf", NULL), *db = g_build_filename(dir, "docqa.db", NULL);
    write_two_page_pdf(pdf);
    char *out = NULL;
    g_setenv("DOCQA_INGEST_TEST_FAULT", "crash:r.pdf:2", TRUE);
    g_assert_cmpint(
        run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", "-j", "1", pdf, NULL), ==, 1);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_free(out);
    g_assert_cmpint(
        run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", "--retry-failed", pdf, NULL),
        ==, 0);
    if (strstr(out, "1 file: 1 ok") == NULL ||
        strstr(out, "; 1 page rendered, 1 already stored, in ") == NULL)
        g_error("summary: %s", out);
    g_free(out);
    g_assert_cmpint(run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", "--retry-failed",
                              "--json", pdf, NULL),
                    ==, 0);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "unchanged"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "pages_already_stored"), ==, 0);
    g_object_unref(p);
    g_free(out);
    g_free(pdf);
    g_free(db);
    g_free(dir);
}

/* ---- two ingests of one folder at once */

typedef struct {
    char *dir;
    char *archive; /* the folder both ingest: x.pdf (3 pages), then y.pdf (1 page) */
    char *x, *y;
    char *loc;   /* the database */
    char *pages; /* its page store */
    char **env;  /* every docqa's environment (DOCQA_PAGES for PostgreSQL) */
} Twin;

static void write_pages_pdf(const char *path, int n) {
    cairo_surface_t *s = cairo_pdf_surface_create(path, 200, 100);
    cairo_t *cr = cairo_create(s);
    for (int i = 0; i < n; i++) {
        cairo_rectangle(cr, 10 + 40 * i, 10, 20, 20);
        cairo_fill(cr);
        cairo_show_page(cr);
    }
    cairo_destroy(cr);
    cairo_surface_destroy(s);
}

/* FALSE when `kind` cannot be had here (no PostgreSQL server). */
static gboolean twin_init(Twin *t, const char *kind) {
    memset(t, 0, sizeof *t);
    t->env = g_get_environ();
    t->env = g_environ_unsetenv(t->env, "DOCQA_INGEST_TEST_FAULT");
    t->env = g_environ_unsetenv(t->env, "DOCQA_INGEST_TEST_FAULT_MARK");
    t->env = g_environ_unsetenv(t->env, "DOCQA_PAGES");
    t->dir = dq_test_tmpdir();
    if (strcmp(kind, "sqlite") == 0) {
        t->loc = g_build_filename(t->dir, "docqa.db", NULL);
        t->pages = g_strconcat(t->loc, ".pages", NULL);
    } else {
#ifdef DQ_TEST_POSTGRES
        if (server == NULL) {
            g_test_skip(server_why_not);
            g_strfreev(t->env);
            g_free(t->dir);
            return FALSE;
        }
        static int n_databases;
        char *name = g_strdup_printf("twin_%d", ++n_databases);
        t->loc = pgt_new_database(server, name);
        g_free(name);
        t->pages = g_build_filename(t->dir, "pages", NULL);
        t->env = g_environ_setenv(t->env, "DOCQA_PAGES", t->pages, TRUE);
#else
        g_test_skip("docqa is built without PostgreSQL");
        g_strfreev(t->env);
        g_free(t->dir);
        return FALSE;
#endif
    }
    t->archive = g_build_filename(t->dir, "archive", NULL);
    g_assert_cmpint(g_mkdir(t->archive, 0755), ==, 0);
    t->x = g_build_filename(t->archive, "x.pdf", NULL);
    t->y = g_build_filename(t->archive, "y.pdf", NULL);
    write_pages_pdf(t->x, 3);
    write_pages_pdf(t->y, 1);
    return TRUE;
}

static void twin_clear(Twin *t) {
    g_strfreev(t->env);
    g_free(t->dir);
    g_free(t->archive);
    g_free(t->x);
    g_free(t->y);
    g_free(t->loc);
    g_free(t->pages);
}

/* A docqa the test starts in the background dies with the test: one that outlived a failed
 * assertion would hang on, stopped inside a page, holding its claim. */
static void die_with_test(gpointer data) {
    (void)data;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* Starts `docqa ingest` of the archive, its worker stopped for good before page PAGE of NAME
 * (fault "hang:NAME:PAGE"), creating `mark` when it gets there. */
static GPid twin_start(Twin *t, const char *fault, const char *mark, const char *jobs,
                       int *out_fd) {
    char *exe = dq_test_docqa_path();
    const char *argv[] = {exe,  "ingest",    "--db", t->loc,   "--tile", "64",       "-j",
                          jobs, "--timeout", "600",  "--json", "-q",     t->archive, NULL};
    char **env = g_strdupv(t->env);
    env = g_environ_setenv(env, "DOCQA_INGEST_TEST_FAULT", fault, TRUE);
    env = g_environ_setenv(env, "DOCQA_INGEST_TEST_FAULT_MARK", mark, TRUE);
    GPid pid = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_async_with_pipes(NULL, (char **)argv, env, G_SPAWN_DO_NOT_REAP_CHILD,
                                           die_with_test, NULL, &pid, NULL, out_fd, NULL, &err));
    dq_assert_no_error(err);
    g_strfreev(env);
    g_free(exe);
    return pid;
}

/* A plain `docqa ingest --json` of the archive (with `option`, may be NULL), to its end. */
static int twin_run(Twin *t, const char *option, char **out) {
    char *exe = dq_test_docqa_path();
    const char *argv[] = {exe, "ingest", "--db", t->loc, "--tile", "64", "-j",
                          "1", "--json", "-q",   option, NULL,     NULL};
    argv[option != NULL ? 11 : 10] = t->archive;
    int status = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, t->env, G_SPAWN_DEFAULT, NULL, NULL, out, NULL,
                               &status, &err));
    dq_assert_no_error(err);
    g_free(exe);
    g_assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Waits (a minute at most: a test that hangs should fail, not stall) until `ready` says yes. */
static void wait_until(gboolean (*ready)(Twin *, const char *), Twin *t, const char *arg) {
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    while (!ready(t, arg) && g_get_monotonic_time() < deadline)
        g_usleep(20 * 1000);
    g_assert_true(ready(t, arg));
}

static gboolean file_there(Twin *t, const char *path) {
    (void)t;
    return g_file_test(path, G_FILE_TEST_EXISTS);
}

/* Rows recorded for `path` (-1 while the database cannot be read yet). */
static gint64 twin_rows(Twin *t, const char *path) {
    char *sql = g_strdup_printf("SELECT count(*) FROM documents WHERE path = '%s'", path);
    gint64 n = -1;
#ifdef DQ_TEST_POSTGRES
    if (g_str_has_prefix(t->loc, "postgresql:")) {
        n = pgt_query_int(t->loc, sql);
        g_free(sql);
        return n;
    }
#endif
    sqlite3 *s = NULL;
    sqlite3_stmt *st = NULL;
    if (g_file_test(t->loc, G_FILE_TEST_EXISTS) &&
        sqlite3_open_v2(t->loc, &s, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(s, 1000);
        if (sqlite3_prepare_v2(s, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(s);
    g_free(sql);
    return n;
}

static int reap(GPid pid) {
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_spawn_close_pid(pid);
    return status;
}

static char *read_all(int fd) {
    GString *text = g_string_new(NULL);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        g_string_append_len(text, buf, n);
    close(fd);
    return g_string_free(text, FALSE);
}

/* Files in the page store's claims folder (ingest_internal.h). */
static guint claim_files(Twin *t) {
    char *dir = g_build_filename(t->pages, ".claims", NULL);
    GDir *d = g_dir_open(dir, 0, NULL);
    guint n = 0;
    while (d != NULL && g_dir_read_name(d) != NULL)
        n++;
    if (d != NULL)
        g_dir_close(d);
    g_free(dir);
    return n;
}

/* While one ingest renders x.pdf (stopped inside it), a second of the same folder renders only
 * y.pdf and leaves x.pdf to the first, saying so; once the first is killed (-9: no chance to let
 * go), its claim is gone with it and the next ingest renders x.pdf. */
static void test_concurrent_left_to_other(gconstpointer kind) {
    Twin t;
    if (!twin_init(&t, kind))
        return;
    char *mark = g_build_filename(t.dir, "first.mark", NULL);
    int first_out = -1;
    GPid first = twin_start(&t, "hang:x.pdf:2", mark, "1", &first_out);
    wait_until(file_there, &t, mark); /* x.pdf claimed, page 1 stored, page 2 never */
    char *out = NULL;
    g_assert_cmpint(twin_run(&t, NULL, &out), ==, 0);
    g_test_message("second: %s", out);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "files"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(o, "documents_ok"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "in_progress_elsewhere"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "not_done"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pages_ok"), ==, 1); /* y.pdf's only */
    JsonArray *busy = json_object_get_array_member(o, "elsewhere");
    g_assert_cmpint(json_array_get_length(busy), ==, 1);
    JsonObject *b = json_array_get_object_element(busy, 0);
    g_assert_cmpstr(json_object_get_string_member(b, "path"), ==, t.x);
    char *who = g_strdup_printf("(pid %d on ", (int)first);
    g_assert_nonnull(strstr(json_object_get_string_member(b, "message"), who));
    g_free(who);
    g_object_unref(p);
    g_free(out);
    g_assert_cmpint(twin_rows(&t, t.x), ==, 0);
    g_assert_cmpint(twin_rows(&t, t.y), ==, 1);
    /* The first dies holding its claim. */
    g_assert_cmpint(kill(first, SIGKILL), ==, 0);
    int status = reap(first);
    g_assert_true(WIFSIGNALED(status));
    g_free(read_all(first_out));
    g_assert_cmpint(twin_run(&t, NULL, &out), ==, 0);
    g_test_message("third: %s", out);
    p = json_parser_new();
    o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "documents_ok"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "unchanged"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "in_progress_elsewhere"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pages_ok"), ==, 3);
    g_object_unref(p);
    g_free(out);
    g_assert_cmpint(twin_rows(&t, t.x), ==, 1);
    g_assert_cmpuint(claim_files(&t), ==, 0); /* the dead one's file is gone too */
    g_free(mark);
    twin_clear(&t);
}

/* The one process of `pid` (a worker of a docqa ingest run with -j 1). */
static pid_t only_child(GPid pid) {
    char *path = g_strdup_printf("/proc/%d/task/%d/children", (int)pid, (int)pid);
    char *text = NULL;
    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    char **pids = g_strsplit(g_strstrip(text), " ", -1);
    g_assert_cmpuint(g_strv_length(pids), ==, 1);
    pid_t child = (pid_t)atoi(pids[0]);
    g_strfreev(pids);
    g_free(text);
    g_free(path);
    return child;
}

/* The second ingest comes to x.pdf while the first renders it and puts it off; y.pdf holds it
 * (its worker stopped for good until the test kills it). The first, interrupted, records x.pdf
 * partial and lets go; the second, y.pdf done, takes x.pdf up, looks it up again and finds it
 * recorded partial, interrupted: a failure of the first run, not of the file, so it renders the
 * two pages the first did not (resumed), not page 1. --retry-failed then renders y.pdf, whose
 * crash is the file's own. */
static void test_concurrent_put_off_then_taken(gconstpointer kind) {
    Twin t;
    if (!twin_init(&t, kind))
        return;
    char *mark1 = g_build_filename(t.dir, "first.mark", NULL);
    char *mark2 = g_build_filename(t.dir, "second.mark", NULL);
    int out1 = -1, out2 = -1;
    GPid first = twin_start(&t, "hang:x.pdf:2", mark1, "1", &out1);
    wait_until(file_there, &t, mark1);
    GPid second = twin_start(&t, "hang:y.pdf:1", mark2, "1", &out2);
    wait_until(file_there, &t, mark2); /* x.pdf put off, y.pdf's worker stopped */
    g_assert_cmpint(twin_rows(&t, t.x), ==, 0);
    g_assert_cmpint(kill(first, SIGINT), ==, 0);
    char *out = read_all(out1);
    int status = reap(first);
    g_test_message("first: %s", out);
    g_free(out);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 130);
    g_assert_cmpint(twin_rows(&t, t.x), ==, 1);                /* partial: page 1 */
    g_assert_cmpint(kill(only_child(second), SIGKILL), ==, 0); /* y.pdf: render_crashed */
    out = read_all(out2);
    status = reap(second);
    g_test_message("second: %s", out);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 1);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "documents_failed"), ==, 1); /* y.pdf */
    g_assert_cmpint(json_object_get_int_member(o, "documents_ok"), ==, 1);     /* x.pdf */
    g_assert_cmpint(json_object_get_int_member(o, "resumed"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "unchanged"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "in_progress_elsewhere"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "not_done"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pages_ok"), ==, 2); /* x.pdf's 2 and 3 */
    g_assert_cmpint(json_object_get_int_member(o, "pages_already_stored"), ==, 1);
    g_object_unref(p);
    g_free(out);
    g_assert_cmpuint(claim_files(&t), ==, 0);
    g_assert_cmpint(twin_run(&t, "--retry-failed", &out), ==, 0);
    g_test_message("third: %s", out);
    p = json_parser_new();
    o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "documents_ok"), ==, 1); /* y.pdf */
    g_assert_cmpint(json_object_get_int_member(o, "unchanged"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "pages_ok"), ==, 1);
    g_object_unref(p);
    g_free(out);
    g_free(mark1);
    g_free(mark2);
    twin_clear(&t);
}

/* SIGHUP (a closed terminal) and SIGTERM (kill, systemctl stop) as the second page of a document
 * renders: handled as Ctrl-C is, page 1 kept (the document partial, page 2 `interrupted`), the
 * summary or its JSON printed, exit status 130. SIGHUP ended the ingest at once (129), with no
 * summary and the document abandoned. */
static void test_hangup_and_term(void) {
    char *dir = dq_test_tmpdir();
    char *pdf = g_build_filename(dir, "long.pdf", NULL);
    write_two_page_pdf(pdf);
    char *db = g_build_filename(dir, "hup.db", NULL);
    char *out = NULL;
    g_setenv("DOCQA_INGEST_TEST_FAULT", "hangup:long.pdf:2", TRUE);
    int rc =
        run_docqa(&out, NULL, "ingest", "--db", db, "--tile", "64", "-j", "1", "--json", pdf, NULL);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_cmpint(rc, ==, 130);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_true(json_object_get_boolean_member(o, "interrupted"));
    g_assert_cmpint(json_object_get_int_member(o, "documents_partial"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "pages_ok"), ==, 1);
    JsonObject *partial = json_object_get_object_member(o, "partial_by_code");
    g_assert_cmpint(json_object_get_int_member(partial, "interrupted"), ==, 1);
    g_object_unref(p);
    g_free(out);
    char *db2 = g_build_filename(dir, "term.db", NULL);
    g_setenv("DOCQA_INGEST_TEST_FAULT", "terminate:long.pdf:2", TRUE);
    rc = run_docqa(&out, NULL, "ingest", "--db", db2, "--tile", "64", "-j", "1", pdf, NULL);
    g_unsetenv("DOCQA_INGEST_TEST_FAULT");
    g_assert_cmpint(rc, ==, 130);
    if (strstr(out, "1 file: 0 ok, 1 partial (1 interrupted)") == NULL ||
        strstr(out, "; interrupted, 0 files not done") == NULL)
        g_error("summary: %s", out);
    g_free(out);
    g_free(db2);
    g_free(db);
    g_free(pdf);
    g_free(dir);
}

/* A signal while the folders are walked: the walk ends, nothing is rendered, the summary (JSON)
 * says so with exit status 130, and a file missing since the last ingest is not marked gone on
 * the strength of a walk whose ingest was stopped. */
static void test_signal_during_walk(void) {
    char *dir = dq_test_tmpdir();
    char *docs = g_build_filename(dir, "docs", NULL);
    g_assert_cmpint(g_mkdir(docs, 0755), ==, 0);
    char *a = g_build_filename(docs, "a.pdf", NULL), *b = g_build_filename(docs, "b.pdf", NULL);
    write_pdf(a);
    char *db = g_build_filename(dir, "docqa.db", NULL);
    g_assert_cmpint(run_docqa(NULL, NULL, "ingest", "--db", db, "--tile", "64", docs, NULL), ==, 0);
    g_assert_cmpint(g_unlink(a), ==, 0);
    write_pdf(b);
    char *exe = dq_test_docqa_path();
    const char *argv[] = {exe, "ingest", "--db", db, "--tile", "64", "--json", docs, NULL};
    char *out = NULL;
    int status = dq_test_run_signalled(argv, NULL, "ingest:walked", SIGHUP, &out, NULL);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 130);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_true(json_object_get_boolean_member(o, "interrupted"));
    g_assert_cmpint(json_object_get_int_member(o, "files"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "not_done"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "gone"), ==, 0);
    g_object_unref(p);
    g_free(out);
    sqlite3 *s = NULL;
    g_assert_cmpint(sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(s,
                                       "SELECT count(*) FROM documents WHERE missing_since IS "
                                       "NOT NULL",
                                       -1, &st, NULL),
                    ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    g_assert_cmpint(sqlite3_column_int(st, 0), ==, 0);
    sqlite3_finalize(st);
    sqlite3_close(s);
    g_free(exe);
    g_free(db);
    g_free(a), g_free(b);
    g_free(docs);
    g_free(dir);
}

/* Another connection holding the database's write lock past the busy limit (an sqlite3 shell
 * left in a transaction): ingest says who may hold it, as the queue's commands do, not only
 * "database is locked". The limit is shortened for the test (DOCQA_TEST_BUSY_LIMIT_MS). */
static void test_locked_database(void) {
    char *dir = dq_test_tmpdir();
    char *db = g_build_filename(dir, "docqa.db", NULL);
    char *a = g_build_filename(dir, "a.pdf", NULL), *b = g_build_filename(dir, "b.pdf", NULL);
    write_pdf(a);
    g_assert_cmpint(run_docqa(NULL, NULL, "ingest", "--db", db, "--tile", "64", a, NULL), ==, 0);
    write_two_page_pdf(b);
    sqlite3 *s = NULL;
    g_assert_cmpint(sqlite3_open(db, &s), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(s, "BEGIN IMMEDIATE", NULL, NULL, NULL), ==, SQLITE_OK);
    g_setenv("DOCQA_TEST_BUSY_LIMIT_MS", "1000", TRUE);
    char *err = NULL;
    int rc = run_docqa(NULL, &err, "ingest", "--db", db, "--tile", "64", b, NULL);
    g_unsetenv("DOCQA_TEST_BUSY_LIMIT_MS");
    sqlite3_exec(s, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(s);
    g_assert_cmpint(rc, ==, 2);
    if (strstr(err, "database is locked (another connection held its write lock for 1 s: an "
                    "sqlite3 shell or a program with a transaction left open?)") == NULL)
        g_error("ingest on a locked database said: %s", err);
    g_free(err);
    g_free(a), g_free(b);
    g_free(db);
    g_free(dir);
}

/* One integer from the database (SQLite) a test ingested into. */
static gint64 db_int(const char *db, const char *sql) {
    sqlite3 *s = NULL;
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_prepare_v2(s, sql, -1, &st, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    gint64 v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(s);
    return v;
}

/* An archive of two folders: big/ (a.pdf, b.pdf, 2019/c.pdf) and other/ (d.pdf), ingested. */
typedef struct {
    char *tmp, *db, *big, *other;
} Archive;

static void archive_init(Archive *a) {
    a->tmp = dq_test_tmpdir();
    a->db = g_build_filename(a->tmp, "docqa.db", NULL);
    a->big = g_build_filename(a->tmp, "big", NULL);
    a->other = g_build_filename(a->tmp, "other", NULL);
    char *y2019 = g_build_filename(a->big, "2019", NULL);
    g_assert_cmpint(g_mkdir_with_parents(y2019, 0755), ==, 0);
    g_assert_cmpint(g_mkdir(a->other, 0755), ==, 0);
    const char *files[][2] = {
        {a->big, "a.pdf"}, {a->big, "b.pdf"}, {y2019, "c.pdf"}, {a->other, "d.pdf"}};
    for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
        char *f = g_build_filename(files[i][0], files[i][1], NULL);
        write_pdf(f);
        g_free(f);
    }
    g_free(y2019);
    g_assert_cmpint(run_docqa(NULL, NULL, "ingest", "--db", a->db, "--tile", "64", "-j", "2",
                              a->big, a->other, NULL),
                    ==, 0);
}

static void archive_clear(Archive *a) {
    g_free(a->tmp), g_free(a->db), g_free(a->big), g_free(a->other);
}

/* big/ "unmounted": moved aside and an empty folder in its place; a new file in other/. */
static void archive_unmount(Archive *a) {
    char *off = g_strconcat(a->big, ".off", NULL);
    g_assert_cmpint(g_rename(a->big, off), ==, 0);
    g_assert_cmpint(g_mkdir(a->big, 0755), ==, 0);
    char *e = g_build_filename(a->other, "e.pdf", NULL);
    write_pdf(e);
    g_free(e);
    g_free(off);
}

/* An ingest of big/ and other/ (--json) that held big/ back: exit 1, the line on stderr saying
 * why (`says`: "holds no document" or "is not there"), nothing gone, other/d.pdf unchanged, and
 * big/'s entry in empty_roots. Returns the summary (p owns it). */
static JsonObject *ingest_held_back(const Archive *a, JsonParser *p, const char *says,
                                    gboolean missing, char **out) {
    char *err = NULL;
    int rc = run_docqa(out, &err, "ingest", "--db", a->db, "--tile", "64", "-j", "2", "--json",
                       a->big, a->other, NULL);
    g_test_message("stdout: %s\nstderr: %s", *out, err);
    g_assert_cmpint(rc, ==, 1);
    char *want = g_strdup_printf("docqa: ingest: %s: %s, but 3 documents recorded under it would "
                                 "be marked gone",
                                 a->big, says);
    g_assert_nonnull(strstr(err, want));
    g_free(want);
    g_free(err);
    JsonObject *o = parse_object(p, *out);
    g_assert_cmpint(json_object_get_int_member(o, "gone"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "unchanged"), ==, 1); /* other/d.pdf */
    JsonArray *empty = json_object_get_array_member(o, "empty_roots");
    g_assert_nonnull(empty);
    g_assert_cmpint(json_array_get_length(empty), ==, 1);
    JsonObject *e0 = json_array_get_object_element(empty, 0);
    g_assert_cmpstr(json_object_get_string_member(e0, "root"), ==, a->big);
    g_assert_cmpint(json_object_get_int_member(e0, "would_be_gone"), ==, 3);
    g_assert_cmpint(json_object_get_boolean_member(e0, "missing"), ==, missing);
    g_assert_cmpint(db_int(a->db, "SELECT count(*) FROM documents WHERE missing_since IS NOT "
                                  "NULL"),
                    ==, 0);
    return o;
}

/* The mount point of an archive share that failed to mount is an empty folder: ingest must not
 * mark the whole archive gone for that. It says so on stderr, marks nothing under it, still
 * ingests the other folder, and exits 1. */
static void test_empty_root_guard(void) {
    Archive a;
    archive_init(&a);
    archive_unmount(&a);
    char *out = NULL, *err = NULL;
    JsonParser *p = json_parser_new();
    JsonObject *o = ingest_held_back(&a, p, "holds no document", FALSE, &out);
    g_assert_cmpint(json_object_get_int_member(o, "documents_ok"), ==, 1); /* other/e.pdf */
    g_object_unref(p);
    g_free(out);
    g_assert_cmpint(db_int(a.db, "SELECT count(*) FROM documents_current"), ==, 5);
    int rc;
    /* The text summary says it too, and again on the next run: nothing was concluded. */
    rc = run_docqa(&out, &err, "ingest", "--db", a.db, "--tile", "64", a.big, NULL);
    g_assert_cmpint(rc, ==, 1);
    g_assert_nonnull(strstr(err, "nothing under it was marked gone (--allow-empty-root marks"));
    g_assert_nonnull(strstr(out, "; 1 folder held no document (nothing marked gone there)"));
    g_free(out), g_free(err);
    archive_clear(&a);
}

/* A share whose mount point is not there at all (never made, or removed with the share) is held
 * back as an empty one, beside its `unreadable` failure. */
static void test_empty_root_missing(void) {
    Archive a;
    archive_init(&a);
    char *off = g_strconcat(a.big, ".off", NULL);
    g_assert_cmpint(g_rename(a.big, off), ==, 0);
    char *out = NULL, *err = NULL;
    JsonParser *p = json_parser_new();
    JsonObject *o = ingest_held_back(&a, p, "is not there", TRUE, &out);
    /* A folder that cannot be listed, not a document: no row would say what it is. */
    g_assert_cmpint(json_object_get_int_member(o, "files"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "documents_failed"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "folders_unreadable"), ==, 1);
    JsonObject *f0 = json_array_get_object_element(json_object_get_array_member(o, "failures"), 0);
    g_assert_cmpstr(json_object_get_string_member(f0, "path"), ==, a.big);
    g_assert_cmpstr(json_object_get_string_member(f0, "code"), ==, "unreadable");
    g_object_unref(p);
    g_free(out);
    g_assert_cmpint(db_int(a.db, "SELECT count(*) FROM documents"), ==, 4);
    int rc;
    /* The text summary; and --allow-empty-root marks them gone. */
    rc = run_docqa(&out, &err, "ingest", "--db", a.db, "--tile", "64", a.big, NULL);
    g_assert_cmpint(rc, ==, 1);
    g_assert_nonnull(strstr(out, "; 1 folder was not there (nothing marked gone there)"));
    g_free(out), g_free(err);
    rc = run_docqa(&out, &err, "ingest", "--db", a.db, "--tile", "64", "--allow-empty-root", a.big,
                   NULL);
    g_test_message("stdout: %s\nstderr: %s", out, err);
    g_assert_cmpint(rc, ==, 1); /* still: a folder given could not be listed */
    g_assert_null(strstr(err, "is not there, but"));
    g_free(out), g_free(err);
    g_assert_cmpint(db_int(a.db, "SELECT count(*) FROM documents WHERE missing_since IS NOT NULL"),
                    ==, 3);
    g_free(off);
    archive_clear(&a);
}

/* A path given that is not there, with nothing recorded under it (a typo, a file not made yet),
 * is recorded as an unreadable document. Once a folder is there, that row names no file: it is
 * marked gone, and the folder's documents are ingested. */
static void test_unreadable_path_becomes_folder(void) {
    Archive a;
    archive_init(&a);
    char *later = g_build_filename(a.tmp, "later", NULL);
    char *out = NULL, *err = NULL;
    int rc = run_docqa(&out, &err, "ingest", "--db", a.db, "--tile", "64", later, NULL);
    g_assert_cmpint(rc, ==, 1);
    g_free(out), g_free(err);
    char *q = g_strdup_printf("SELECT count(*) FROM documents_current WHERE path = '%s' AND "
                              "error_code = 'unreadable'",
                              later);
    g_assert_cmpint(db_int(a.db, q), ==, 1);
    g_assert_cmpint(g_mkdir(later, 0755), ==, 0);
    char *f = g_build_filename(later, "f.pdf", NULL);
    write_pdf(f);
    rc = run_docqa(&out, &err, "ingest", "--db", a.db, "--tile", "64", "--json", later, NULL);
    g_test_message("stdout: %s\nstderr: %s", out, err);
    g_assert_cmpint(rc, ==, 0);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "documents_ok"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "gone"), ==, 1);
    g_assert_cmpstr(json_array_get_string_element(json_object_get_array_member(o, "gone_paths"), 0),
                    ==, later);
    g_object_unref(p);
    g_free(out), g_free(err);
    g_assert_cmpint(db_int(a.db, q), ==, 0);
    /* Said once: the next ingest marks nothing more. */
    rc = run_docqa(&out, &err, "ingest", "--db", a.db, "--tile", "64", "--json", later, NULL);
    g_assert_cmpint(rc, ==, 0);
    p = json_parser_new();
    o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "gone"), ==, 0);
    g_object_unref(p);
    g_free(out), g_free(err);
    g_free(q), g_free(f), g_free(later);
    archive_clear(&a);
}

/* --allow-empty-root: the folder really was emptied, and its documents are marked gone. */
static void test_empty_root_allowed(void) {
    Archive a;
    archive_init(&a);
    archive_unmount(&a);
    char *out = NULL, *err = NULL;
    int rc = run_docqa(&out, &err, "ingest", "--db", a.db, "--tile", "64", "-j", "2", "--json",
                       "--allow-empty-root", a.big, a.other, NULL);
    g_test_message("stdout: %s\nstderr: %s", out, err);
    g_assert_cmpint(rc, ==, 0);
    g_assert_null(strstr(err, "holds no document"));
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "gone"), ==, 3);
    g_assert_cmpint(json_array_get_length(json_object_get_array_member(o, "empty_roots")), ==, 0);
    g_object_unref(p);
    g_free(out), g_free(err);
    g_assert_cmpint(db_int(a.db, "SELECT count(*) FROM documents WHERE missing_since IS NOT NULL"),
                    ==, 3);
    archive_clear(&a);
}

/* A folder that merely holds fewer documents (a subfolder emptied, a file deleted) is no
 * unmounted share: those are marked gone as before, exit 0. */
static void test_empty_root_smaller(void) {
    Archive a;
    archive_init(&a);
    char *c = g_build_filename(a.big, "2019", "c.pdf", NULL);
    char *b = g_build_filename(a.big, "b.pdf", NULL);
    g_assert_cmpint(g_unlink(c), ==, 0);
    g_assert_cmpint(g_unlink(b), ==, 0);
    char *out = NULL, *err = NULL;
    int rc = run_docqa(&out, &err, "ingest", "--db", a.db, "--tile", "64", "--json", a.big, NULL);
    g_test_message("stdout: %s\nstderr: %s", out, err);
    g_assert_cmpint(rc, ==, 0);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "gone"), ==, 2);
    JsonArray *gone = json_object_get_array_member(o, "gone_paths");
    g_assert_cmpstr(json_array_get_string_element(gone, 0), ==, c);
    g_assert_cmpstr(json_array_get_string_element(gone, 1), ==, b);
    g_assert_nonnull(json_object_get_array_member(o, "empty_roots"));
    g_assert_cmpint(json_array_get_length(json_object_get_array_member(o, "empty_roots")), ==, 0);
    g_object_unref(p);
    g_free(out), g_free(err);
    g_assert_cmpint(db_int(a.db, "SELECT count(*) FROM documents WHERE missing_since IS NOT NULL"),
                    ==, 2);
    g_free(c), g_free(b);
    archive_clear(&a);
}

/* Runs `docqa ingest --json` over `dir` (with `extra`, or NULL); returns the summary (unref). */
static JsonParser *ingest_json(const char *db, const char *dir, const char *extra, int want_rc) {
    char *out = NULL, *err = NULL;
    int rc = extra ? run_docqa(&out, &err, "ingest", "--db", db, "--tile", "64", "-j", "2",
                               "--json", extra, dir, NULL)
                   : run_docqa(&out, &err, "ingest", "--db", db, "--tile", "64", "-j", "2",
                               "--json", dir, NULL);
    g_test_message("stdout: %s\nstderr: %s", out, err);
    g_assert_cmpint(rc, ==, want_rc);
    JsonParser *p = json_parser_new();
    parse_object(p, out);
    g_free(out), g_free(err);
    return p;
}

static gint64 summary_int(JsonParser *p, const char *name) {
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    if (!json_object_has_member(o, name))
        g_error("no \"%s\" in the summary", name);
    return json_object_get_int_member(o, name);
}

/* Overwrites one byte of the binary comment cairo writes on a PDF's second line (a valid PDF
 * still, of the same size, other bytes) and sets its times back to what they were: a tool that
 * restores the mtime. The ctime moves all the same. */
static void rewrite_keeping_mtime(const char *path) {
    struct stat before, after;
    g_assert_cmpint(stat(path, &before), ==, 0);
    int fd = open(path, O_WRONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pwrite(fd, "X", 1, 10), ==, 1);
    g_assert_cmpint(close(fd), ==, 0);
    const struct timespec times[2] = {before.st_atim, before.st_mtim};
    g_assert_cmpint(utimensat(AT_FDCWD, path, times, 0), ==, 0);
    g_assert_cmpint(stat(path, &after), ==, 0);
    g_assert_cmpint(after.st_size, ==, before.st_size);
    g_assert_cmpint(after.st_mtim.tv_sec, ==, before.st_mtim.tv_sec);
    g_assert_cmpint(after.st_mtim.tv_nsec, ==, before.st_mtim.tv_nsec);
    // cppcheck-suppress resourceLeak -- closed in the g_assert
}

/* An unchanged file is not read again: its stamp (device, inode, size, mtime and ctime in ns)
 * is its newest version's. A normal edit, and an edit whose mtime was set back (same size), are
 * still found without --rehash: the ctime moved. The stamps are stored at once here
 * (DOCQA_TEST_STAMP_RACY_MS=0: the test does not wait for the clock to pass the files' ctime). */
static void test_stamp_skips_unchanged(void) {
    char *tmp = dq_test_tmpdir();
    char *db = g_build_filename(tmp, "docqa.db", NULL);
    char *dir = g_build_filename(tmp, "docs", NULL);
    g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
    char *a = g_build_filename(dir, "a.pdf", NULL), *b = g_build_filename(dir, "b.pdf", NULL);
    char *c = g_build_filename(dir, "c.pdf", NULL);
    write_pdf(a), write_pdf(b), write_pdf(c);
    g_setenv("DOCQA_TEST_STAMP_RACY_MS", "0", TRUE);
    JsonParser *p = ingest_json(db, dir, NULL, 0);
    g_assert_cmpint(summary_int(p, "documents_ok"), ==, 3);
    g_assert_cmpint(summary_int(p, "not_hashed"), ==, 0);
    g_object_unref(p);
    g_assert_cmpint(db_int(db, "SELECT count(*) FROM document_stamps"), ==, 3);
    /* Unchanged: nothing read. */
    p = ingest_json(db, dir, NULL, 0);
    g_assert_cmpint(summary_int(p, "unchanged"), ==, 3);
    g_assert_cmpint(summary_int(p, "not_hashed"), ==, 3);
    g_object_unref(p);
    /* --rehash reads them all: still unchanged. */
    p = ingest_json(db, dir, "--rehash", 0);
    g_assert_cmpint(summary_int(p, "unchanged"), ==, 3);
    g_assert_cmpint(summary_int(p, "not_hashed"), ==, 0);
    g_object_unref(p);
    /* A normal edit (other size, new mtime), and one that keeps size and mtime. */
    write_two_page_pdf(a);
    rewrite_keeping_mtime(b);
    p = ingest_json(db, dir, NULL, 0);
    g_assert_cmpint(summary_int(p, "documents_ok"), ==, 2);
    g_assert_cmpint(summary_int(p, "unchanged"), ==, 1);
    g_assert_cmpint(summary_int(p, "not_hashed"), ==, 1); /* c.pdf */
    g_object_unref(p);
    g_assert_cmpint(db_int(db, "SELECT count(*) FROM documents WHERE version = 2"), ==, 2);
    /* The new versions were stamped: nothing is read the next time. */
    p = ingest_json(db, dir, NULL, 0);
    g_assert_cmpint(summary_int(p, "unchanged"), ==, 3);
    g_assert_cmpint(summary_int(p, "not_hashed"), ==, 3);
    g_object_unref(p);
    g_unsetenv("DOCQA_TEST_STAMP_RACY_MS");
    g_free(a), g_free(b), g_free(c);
    g_free(dir), g_free(db), g_free(tmp);
}

/* What the skip costs: bytes that differ from the newest version's under the same stamp are
 * taken for that version's. No user can rewrite a file and keep its ctime, so the database is
 * made to disagree instead (the newest version's SHA-256 changed): without --rehash the file is
 * unchanged, with it its bytes are read and a new version is recorded. */
static void test_stamp_rehash(void) {
    char *tmp = dq_test_tmpdir();
    char *db = g_build_filename(tmp, "docqa.db", NULL);
    char *dir = g_build_filename(tmp, "docs", NULL);
    g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
    char *a = g_build_filename(dir, "a.pdf", NULL);
    write_pdf(a);
    g_setenv("DOCQA_TEST_STAMP_RACY_MS", "0", TRUE);
    JsonParser *p = ingest_json(db, dir, NULL, 0);
    g_object_unref(p);
    sqlite3 *s = NULL;
    g_assert_cmpint(sqlite3_open(db, &s), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(s, "UPDATE documents SET sha256 = 'feed' || substr(sha256, 5)",
                                 NULL, NULL, NULL),
                    ==, SQLITE_OK);
    sqlite3_close(s);
    p = ingest_json(db, dir, NULL, 0);
    g_assert_cmpint(summary_int(p, "unchanged"), ==, 1);
    g_assert_cmpint(summary_int(p, "not_hashed"), ==, 1);
    g_object_unref(p);
    p = ingest_json(db, dir, "--rehash", 0);
    g_assert_cmpint(summary_int(p, "documents_ok"), ==, 1);
    g_assert_cmpint(summary_int(p, "not_hashed"), ==, 0);
    g_object_unref(p);
    g_assert_cmpint(db_int(db, "SELECT max(version) FROM documents"), ==, 2);
    g_unsetenv("DOCQA_TEST_STAMP_RACY_MS");
    g_free(a), g_free(dir), g_free(db), g_free(tmp);
}

/* A stamp whose ctime is too recent for the file system's timestamp ticks to tell a later write
 * from it is not stored, so the file is read the next time. The window is widened to an hour
 * so that the files written just now are in it however slow the machine is. */
static void test_stamp_racy(void) {
    char *tmp = dq_test_tmpdir();
    char *db = g_build_filename(tmp, "docqa.db", NULL);
    char *dir = g_build_filename(tmp, "docs", NULL);
    g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
    char *a = g_build_filename(dir, "a.pdf", NULL);
    write_pdf(a);
    g_setenv("DOCQA_TEST_STAMP_RACY_MS", "3600000", TRUE);
    JsonParser *p = ingest_json(db, dir, NULL, 0);
    g_object_unref(p);
    p = ingest_json(db, dir, NULL, 0);
    g_assert_cmpint(summary_int(p, "unchanged"), ==, 1);
    g_assert_cmpint(summary_int(p, "not_hashed"), ==, 0);
    g_object_unref(p);
    g_assert_cmpint(db_int(db, "SELECT count(*) FROM document_stamps"), ==, 0);
    g_unsetenv("DOCQA_TEST_STAMP_RACY_MS");
    g_free(a), g_free(dir), g_free(db), g_free(tmp);
}

/* ---- docqa prune: the page store's files no live page needs (README: Reclaiming space) */

/* docqa with the twin's environment (DOCQA_PAGES for PostgreSQL), the arguments up to a NULL. */
static int twin_docqa(Twin *t, char **out, char **errout, ...) {
    GPtrArray *args = g_ptr_array_new();
    va_list ap;
    va_start(ap, errout);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        g_ptr_array_add(args, (gpointer)a);
    va_end(ap);
    g_ptr_array_add(args, NULL);
    DqTestRun how = {.env = (const char *const *)t->env};
    char *o = NULL, *e = NULL;
    int rc = dq_test_docqa_run(&how, (const char *const *)args->pdata, &o, &e);
    g_test_message("docqa %s: %d\n%s%s", (const char *)args->pdata[0], rc, o, e);
    g_ptr_array_free(args, TRUE);
    if (out != NULL)
        *out = o;
    else
        g_free(o);
    if (errout != NULL)
        *errout = e;
    else
        g_free(e);
    return rc;
}

/* One text value a query returns (NULL for NULL), from either database. */
static char *twin_text(Twin *t, const char *sql) {
#ifdef DQ_TEST_POSTGRES
    if (g_str_has_prefix(t->loc, "postgresql:"))
        return pgt_query_text(t->loc, sql);
#endif
    sqlite3 *s = NULL;
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_open_v2(t->loc, &s, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_prepare_v2(s, sql, -1, &st, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    const unsigned char *v = sqlite3_column_text(st, 0);
    char *text = v != NULL ? g_strdup((const char *)v) : NULL;
    sqlite3_finalize(st);
    sqlite3_close(s);
    return text;
}

/* sql run on either database. */
static void twin_exec(Twin *t, const char *sql) {
#ifdef DQ_TEST_POSTGRES
    if (g_str_has_prefix(t->loc, "postgresql:")) {
        pgt_exec(t->loc, sql);
        return;
    }
#endif
    sqlite3 *s = NULL;
    g_assert_cmpint(sqlite3_open(t->loc, &s), ==, SQLITE_OK);
    if (sqlite3_exec(s, sql, NULL, NULL, NULL) != SQLITE_OK)
        g_error("%s: %s", sql, sqlite3_errmsg(s));
    sqlite3_close(s);
}

/* The page file of `page` of version `version` of the archive's file `name` (NULL: no image). */
static char *twin_page_file(Twin *t, const char *name, int version, int page) {
    char *sql = g_strdup_printf("SELECT p.image_sha256 FROM pages p JOIN documents d ON d.id = "
                                "p.document_id WHERE d.path LIKE '%%/%s' AND d.version = %d AND "
                                "p.page_number = %d",
                                name, version, page);
    char *sha = twin_text(t, sql);
    g_free(sql);
    if (sha == NULL)
        return NULL;
    char *path = g_strdup_printf("%s/%.2s/%.2s/%s.png", t->pages, sha, sha + 2, sha);
    g_free(sha);
    return path;
}

/* Every file under dir (the page store) made `age_s` seconds old. */
static void age_files(const char *dir, int age_s) {
    GDir *d = g_dir_open(dir, 0, NULL);
    g_assert_nonnull(d);
    for (const char *n; (n = g_dir_read_name(d)) != NULL;) {
        char *path = g_build_filename(dir, n, NULL);
        if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
            age_files(path, age_s);
        } else {
            struct timespec ts[2];
            clock_gettime(CLOCK_REALTIME, &ts[0]);
            ts[0].tv_sec -= age_s;
            ts[1] = ts[0];
            g_assert_cmpint(utimensat(AT_FDCWD, path, ts, 0), ==, 0);
        }
        g_free(path);
    }
    g_dir_close(d);
}

/* A one-page PDF of its own: a box at x = `at`. */
static void write_box_pdf(const char *path, int at) {
    cairo_surface_t *s = cairo_pdf_surface_create(path, 200, 100);
    cairo_t *cr = cairo_create(s);
    cairo_rectangle(cr, at, 50, 30, 30);
    cairo_fill(cr);
    cairo_show_page(cr);
    cairo_destroy(cr);
    cairo_surface_destroy(s);
}

/* docqa prune --json with the options given (up to a NULL): its object's integer `key`. */
static JsonParser *prune_json(Twin *t, int want_rc, ...) {
    GPtrArray *args = g_ptr_array_new();
    g_ptr_array_add(args, "prune");
    g_ptr_array_add(args, "--db");
    g_ptr_array_add(args, t->loc);
    g_ptr_array_add(args, "--json");
    va_list ap;
    va_start(ap, want_rc);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        g_ptr_array_add(args, (gpointer)a);
    va_end(ap);
    g_ptr_array_add(args, NULL);
    DqTestRun how = {.env = (const char *const *)t->env};
    char *out = NULL, *err = NULL;
    int rc = dq_test_docqa_run(&how, (const char *const *)args->pdata, &out, &err);
    g_test_message("prune: %d\n%s%s", rc, out, err);
    g_assert_cmpint(rc, ==, want_rc);
    g_ptr_array_free(args, TRUE);
    JsonParser *p = json_parser_new();
    parse_object(p, out);
    g_free(out);
    g_free(err);
    return p;
}

static gint64 member(JsonParser *p, const char *key) {
    return json_object_get_int_member(json_node_get_object(json_parser_get_root(p)), key);
}

static void assert_there(const char *path, gboolean there) {
    if (g_file_test(path, G_FILE_TEST_EXISTS) != there)
        g_error("%s: expected %s", path, there ? "there" : "removed");
}

/* An old version's pages and a gone file's go; the current version's, shared with the old one,
 * stay, and so does a gone file's page with a job queued about it; files no page names go once
 * older than the grace period. --dry-run reports the same numbers and removes nothing. */
static void test_prune_store(gconstpointer kind) {
    Twin t;
    if (!twin_init(&t, kind))
        return;
    char *z = g_build_filename(t.archive, "z.pdf", NULL);
    char *w = g_build_filename(t.archive, "w.pdf", NULL);
    char *v = g_build_filename(t.archive, "v.pdf", NULL);
    char *u = g_build_filename(t.archive, "u.pdf", NULL);
    char *f = g_build_filename(t.archive, "f.pdf", NULL);
    write_box_pdf(t.y, 120); /* not x.pdf's first page */
    write_box_pdf(z, 100);
    write_box_pdf(w, 150);
    write_box_pdf(v, 130); /* live and shared by none: not as many live files as shared ones */
    write_box_pdf(u, 170);
    write_box_pdf(f, 190);
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    g_assert_cmpint(twin_docqa(&t, NULL, NULL, "ask", "--db", t.loc, "-m", "tiny", "--where",
                               "path LIKE '%/w.pdf' OR path LIKE '%/u.pdf'", "What?", NULL),
                    ==, 0);
    /* u.pdf's job a worker has claimed */
    twin_exec(&t, "UPDATE jobs SET state = 'running', lease_owner = 'elsewhere:1:0', "
                  "lease_expires_ms = 0 WHERE page_id IN (SELECT p.id FROM pages p "
                  "JOIN documents d ON d.id = p.document_id WHERE d.path LIKE '%/u.pdf')");
    char *x3 = twin_page_file(&t, "x.pdf", 1, 3), *x1 = twin_page_file(&t, "x.pdf", 1, 1);
    char *zf = twin_page_file(&t, "z.pdf", 1, 1), *wf = twin_page_file(&t, "w.pdf", 1, 1);
    char *yf = twin_page_file(&t, "y.pdf", 1, 1), *vf = twin_page_file(&t, "v.pdf", 1, 1);
    char *uf = twin_page_file(&t, "u.pdf", 1, 1);
    char *ff = twin_page_file(&t, "f.pdf", 1, 1);
    /* x.pdf loses its last page (version 2 shares pages 1 and 2); z.pdf and w.pdf go */
    write_pages_pdf(t.x, 2);
    g_assert_cmpint(g_unlink(z), ==, 0);
    g_assert_cmpint(g_unlink(w), ==, 0);
    g_assert_cmpint(g_unlink(u), ==, 0);
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    char *x2_1 = twin_page_file(&t, "x.pdf", 2, 1);
    g_assert_cmpstr(x2_1, ==, x1);
    /* a current page with no image (as one that failed has none): its file is named by none */
    twin_exec(&t, "UPDATE pages SET image_sha256 = NULL WHERE document_id IN (SELECT id FROM "
                  "documents WHERE path LIKE '%/f.pdf')");
    /* files no page names: one old, one an ingest may be committing now */
    char *old_orphan = g_strdup_printf("%s/ab/cd/abcd%060d.png", t.pages, 1);
    char *new_orphan = g_strdup_printf("%s/ab/cd/abcd%060d.png", t.pages, 2);
    char *folder = g_path_get_dirname(old_orphan);
    g_assert_cmpint(g_mkdir_with_parents(folder, 0755), ==, 0);
    g_assert_true(g_file_set_contents(old_orphan, "old", 3, NULL));
    /* names the store does not give its files (upper case, not hex, an upper-case folder), a
     * link and a folder named as a page: not prune's to judge, however old */
    char *foreign[] = {
        g_strdup_printf("%s/ab/cd/ABCD%060d.png", t.pages, 3),
        g_strdup_printf("%s/ab/cd/abcg%060d.png", t.pages, 4),
        g_strdup_printf("%s/AB/cd/abcd%060d.png", t.pages, 5),
        g_strdup_printf("%s/ab/cd/abcd%060d.png", t.pages, 6),
        g_strdup_printf("%s/ab/cd/abcd%060d.png", t.pages, 7),
    };
    for (size_t i = 0; i < 3; i++) {
        char *parent = g_path_get_dirname(foreign[i]);
        g_assert_cmpint(g_mkdir_with_parents(parent, 0755), ==, 0);
        g_assert_true(g_file_set_contents(foreign[i], "not ours", 8, NULL));
        g_free(parent);
    }
    g_assert_cmpint(symlink(old_orphan, foreign[3]), ==, 0);
    g_assert_cmpint(g_mkdir(foreign[4], 0755), ==, 0);
    age_files(t.pages, 7200);
    g_assert_true(g_file_set_contents(new_orphan, "new", 3, NULL));

    for (int dry = 1; dry >= 0; dry--) {
        JsonParser *p = dry ? prune_json(&t, 0, "--grace", "3600", "--dry-run", NULL)
                            : prune_json(&t, 0, "--grace", "3600", NULL);
        g_assert_cmpint(member(p, "files"), ==, 11);
        /* x v1 p3, z, f's and the old orphan: the last two named by no page */
        g_assert_cmpint(member(p, "files_removed"), ==, 4);
        g_assert_cmpint(member(p, "orphans_removed"), ==, 2);
        /* x p1, p2, y, v, w (queued), u (running) */
        g_assert_cmpint(member(p, "files_kept_live"), ==, 6);
        g_assert_cmpint(member(p, "files_kept_shared"), ==, 2); /* x p1, p2 */
        g_assert_cmpint(member(p, "files_kept_recent"), ==, 1); /* the new orphan */
        g_assert_cmpint(member(p, "bytes_removed"), >, 3);
        g_object_unref(p);
        assert_there(x3, dry);
        assert_there(zf, dry);
        assert_there(old_orphan, dry);
        assert_there(ff, dry);
        assert_there(x1, TRUE);
        assert_there(wf, TRUE);
        assert_there(yf, TRUE);
        assert_there(vf, TRUE);
        assert_there(uf, TRUE);
        assert_there(new_orphan, TRUE);
        GStatBuf st;
        for (size_t i = 0; i < G_N_ELEMENTS(foreign); i++)
            if (g_lstat(foreign[i], &st) != 0)
                g_error("%s: removed", foreign[i]);
    }
    /* Nothing in the database went. */
    g_assert_cmpint(twin_rows(&t, z), ==, 1);
    g_assert_cmpint(twin_rows(&t, t.x), ==, 2);
    /* Again: nothing more to do. */
    JsonParser *p = prune_json(&t, 0, "--grace", "3600", NULL);
    g_assert_cmpint(member(p, "files_removed"), ==, 0);
    g_object_unref(p);
    char *text = NULL;
    g_assert_cmpint(twin_docqa(&t, &text, NULL, "prune", "--db", t.loc, "--grace", "3600", NULL),
                    ==, 0);
    g_assert_nonnull(strstr(text, "prune: 0 page images (0 bytes) removed, 0 of them named by no "
                                  "page; kept 7 ("));
    g_assert_nonnull(strstr(text, "): 6 needed by current documents or unfinished jobs (2 of "
                                  "them shared with old versions or gone files), 1 newer than the "
                                  "grace period (3600 s)\n"));
    g_free(text);
    g_free(folder), g_free(old_orphan), g_free(new_orphan), g_free(x2_1);
    g_free(x3), g_free(x1), g_free(zf), g_free(wf), g_free(yf), g_free(z), g_free(w);
    g_free(v), g_free(vf), g_free(u), g_free(uf), g_free(f), g_free(ff);
    for (size_t i = 0; i < G_N_ELEMENTS(foreign); i++)
        g_free(foreign[i]);
    twin_clear(&t);
}

/* Ingest finds a page stored already (an old version's, which no live page names) and prune runs
 * before the row naming it commits: the file stays (ingest touched it: it is within the grace
 * period), and the row names a whole file. With no grace at all prune removes it: the row is not
 * recorded as stored but fails as store_failed, and the next ingest renders it again. */
static void test_prune_race(gconstpointer data) {
    const char *kind = ((const char *const *)data)[0];
    gboolean no_grace = strcmp(((const char *const *)data)[1], "no-grace") == 0;
    Twin t;
    if (!twin_init(&t, kind))
        return;
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    char *p3 = twin_page_file(&t, "x.pdf", 1, 3);
    write_pages_pdf(t.x, 2);
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    age_files(t.pages, 7200);
    /* x.pdf holds three pages again: its page 3 is version 1's image, found stored */
    g_assert_cmpint(g_unlink(t.x), ==, 0);
    write_pages_pdf(t.x, 3);
    char *mark = g_build_filename(t.dir, "stored.mark", NULL);
    int ingest_out = -1;
    GPid ingest = twin_start(&t, "stored:x.pdf:3", mark, "1", &ingest_out);
    wait_until(file_there, &t, mark);
    JsonParser *p = prune_json(&t, 0, "--grace", no_grace ? "0" : "3600", NULL);
    g_assert_cmpint(member(p, "files_removed"), ==, no_grace ? 1 : 0);
    g_object_unref(p);
    assert_there(p3, !no_grace);
    g_assert_cmpint(g_unlink(mark), ==, 0);
    char *out = read_all(ingest_out);
    int status = reap(ingest);
    g_test_message("ingest: %s", out);
    g_free(out);
    g_assert_true(WIFEXITED(status));
    char *now3 = twin_page_file(&t, "x.pdf", 3, 3);
    if (no_grace) {
        g_assert_cmpint(WEXITSTATUS(status), ==, 1); /* x.pdf partial */
        g_assert_null(now3);
        char *code = twin_text(&t, "SELECT p.error_code FROM pages p JOIN documents d ON d.id = "
                                   "p.document_id WHERE d.version = 3 AND p.page_number = 3");
        g_assert_cmpstr(code, ==, "store_failed");
        g_free(code);
        char *msg = twin_text(&t, "SELECT p.error_message FROM pages p JOIN documents d ON d.id = "
                                  "p.document_id WHERE d.version = 3 AND p.page_number = 3");
        g_assert_nonnull(strstr(msg, "x.pdf: page 3: its image "));
        g_assert_nonnull(strstr(msg, " was removed before its row was stored"));
        g_free(msg);
        g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0); /* resumed: page 3 rendered again */
        now3 = twin_page_file(&t, "x.pdf", 3, 3);
    } else {
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    }
    g_assert_cmpstr(now3, ==, p3);
    assert_there(p3, TRUE);
    g_free(now3), g_free(p3), g_free(mark);
    twin_clear(&t);
}

/* A job answered about a page whose image was pruned, queued again: it fails saying why (an old
 * version, a file gone) and how to get the image back, not a bare "page image missing". */
static void test_prune_requeue_message(gconstpointer kind) {
    char *model = dq_test_tiny_model();
    if (model == NULL)
        return;
    Twin t;
    if (!twin_init(&t, kind)) {
        g_free(model);
        return;
    }
    write_box_pdf(t.y, 120); /* not x.pdf's first page */
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    g_assert_cmpint(
        twin_docqa(&t, NULL, NULL, "ask", "--db", t.loc, "--model", model, "What?", NULL), ==, 0);
    g_assert_cmpint(
        twin_docqa(&t, NULL, NULL, "run", "--db", t.loc, "--model", model, "--until-empty", NULL),
        ==, 0);
    write_pages_pdf(t.x, 2);
    g_assert_cmpint(g_unlink(t.y), ==, 0);
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    JsonParser *p = prune_json(&t, 0, "--grace", "0", NULL);
    g_assert_cmpint(member(p, "files_removed"), ==, 2); /* x v1 p3, y */
    g_object_unref(p);
    g_assert_cmpint(
        twin_docqa(&t, NULL, NULL, "requeue", "--db", t.loc, "--done", "-q", "What?", NULL), ==, 0);
    g_assert_cmpint(
        twin_docqa(&t, NULL, NULL, "run", "--db", t.loc, "--model", model, "--until-empty", NULL),
        ==, 1);
    char *old = twin_text(&t, "SELECT j.last_error FROM jobs j JOIN pages p ON p.id = j.page_id "
                              "WHERE p.page_number = 3");
    char *gone = twin_text(&t, "SELECT j.last_error FROM jobs j JOIN pages p ON p.id = j.page_id "
                               "JOIN documents d ON d.id = p.document_id WHERE d.path LIKE "
                               "'%/y.pdf'");
    g_assert_nonnull(strstr(old, "pruned by docqa prune"));
    g_assert_nonnull(strstr(old, "x.pdf (page 3) is version 1 of its path, no longer the current "
                                 "one (2)"));
    g_assert_nonnull(strstr(old, "ingest it"));
    g_assert_nonnull(strstr(gone, "pruned by docqa prune"));
    g_assert_nonnull(strstr(gone, "y.pdf (page 1) is gone from disk"));
    g_assert_nonnull(strstr(gone, "put the file back, ingest it"));
    /* Their answers stay. */
    g_assert_cmpint(twin_rows(&t, t.y), ==, 1);
    char *answers = twin_text(&t, "SELECT count(*) FROM answers");
    g_assert_cmpstr(answers, ==, "4");
    g_free(answers), g_free(old), g_free(gone), g_free(model);
    twin_clear(&t);
}

/* A page store that is not there, or cannot be written, is said, naming it; a dry run of one
 * it may only read works. */
static void test_prune_unusable_store(void) {
    Twin t;
    g_assert_true(twin_init(&t, "sqlite"));
    char *err = NULL;
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    char *moved = g_strconcat(t.pages, ".away", NULL);
    g_assert_cmpint(g_rename(t.pages, moved), ==, 0);
    g_assert_cmpint(twin_docqa(&t, NULL, &err, "prune", "--db", t.loc, NULL), ==, 2);
    g_assert_nonnull(strstr(err, t.pages));
    g_assert_nonnull(strstr(err, "no page store there"));
    g_free(err);
    g_assert_cmpint(g_rename(moved, t.pages), ==, 0);
    if (geteuid() != 0) { /* root writes anywhere */
        char *tmp = g_build_filename(t.pages, ".tmp", NULL);
        g_assert_cmpint(chmod(tmp, 0555), ==, 0);
        g_assert_cmpint(twin_docqa(&t, NULL, &err, "prune", "--db", t.loc, NULL), ==, 2);
        g_assert_nonnull(strstr(err, tmp));
        g_assert_nonnull(strstr(err, "cannot write in the page store"));
        g_free(err);
        g_assert_cmpint(twin_docqa(&t, NULL, NULL, "prune", "--db", t.loc, "-n", NULL), ==, 0);
        g_assert_cmpint(chmod(tmp, 0755), ==, 0);
        g_free(tmp);
    }
    /* .tmp a file: nothing can be made in it, by root either */
    char *tmp = g_build_filename(t.pages, ".tmp", NULL);
    char *tmp_away = g_strconcat(tmp, ".away", NULL);
    g_assert_cmpint(g_rename(tmp, tmp_away), ==, 0);
    g_assert_true(g_file_set_contents(tmp, "", 0, NULL));
    g_assert_cmpint(twin_docqa(&t, NULL, &err, "prune", "--db", t.loc, NULL), ==, 2);
    g_assert_nonnull(strstr(err, "cannot write in the page store"));
    g_free(err);
    g_assert_cmpint(twin_docqa(&t, NULL, NULL, "prune", "--db", t.loc, "-n", NULL), ==, 0);
    g_assert_cmpint(g_unlink(tmp), ==, 0);
    g_assert_cmpint(g_rename(tmp_away, tmp), ==, 0);
    g_free(tmp), g_free(tmp_away);
    /* DOCQA_PAGES is PostgreSQL's: with SQLite said to be ignored, and nothing said otherwise */
    g_assert_cmpint(twin_docqa(&t, NULL, &err, "prune", "--db", t.loc, "-n", NULL), ==, 0);
    g_assert_cmpstr(err, ==, "");
    g_free(err);
    char *elsewhere = g_build_filename(t.dir, "elsewhere", NULL);
    t.env = g_environ_setenv(t.env, "DOCQA_PAGES", elsewhere, TRUE);
    g_assert_cmpint(twin_docqa(&t, NULL, &err, "prune", "--db", t.loc, "-n", NULL), ==, 0);
    g_assert_nonnull(strstr(err, "DOCQA_PAGES"));
    g_assert_nonnull(strstr(err, "is ignored"));
    g_free(err), g_free(elsewhere);
    t.env = g_environ_unsetenv(t.env, "DOCQA_PAGES");
    g_assert_cmpint(twin_docqa(&t, NULL, &err, "prune", "--db", t.loc, "--grace", "-1", NULL), ==,
                    2);
    g_assert_nonnull(strstr(err, "--grace"));
    g_free(err);
    g_free(moved);
    twin_clear(&t);
}

/* No file a prune set aside is left in the page store's .tmp (each one removed or put back). */
static void assert_nothing_set_aside(const char *pages) {
    char *tmp = g_build_filename(pages, ".tmp", NULL);
    GDir *d = g_dir_open(tmp, 0, NULL);
    g_assert_nonnull(d);
    for (const char *n; (n = g_dir_read_name(d)) != NULL;)
        g_assert_false(g_str_has_prefix(n, "prune-"));
    g_dir_close(d);
    g_free(tmp);
}

/* A signal stops prune between files: the file in hand is removed whole (none is left set
 * aside in .tmp), the others stay, and the summary says it was interrupted (exit 130). */
static void test_prune_signal(void) {
    Twin t;
    g_assert_true(twin_init(&t, "sqlite"));
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    g_assert_cmpint(g_unlink(t.x), ==, 0);
    g_assert_cmpint(g_unlink(t.y), ==, 0);
    char *empty = g_build_filename(t.archive, "e.pdf", NULL);
    write_box_pdf(empty, 120); /* so that the archive is not taken for an unmounted share */
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    char *exe = dq_test_docqa_path();
    const char *argv[] = {exe, "prune", "--db", t.loc, "--grace", "0", "--json", NULL};
    char *out = NULL;
    int status = dq_test_run_signalled(argv, NULL, "prune:remove", SIGTERM, &out, NULL);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 130);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_true(json_object_get_boolean_member(o, "interrupted"));
    g_assert_cmpint(json_object_get_int_member(o, "files_removed"), ==, 1);
    g_object_unref(p);
    g_free(out);
    assert_nothing_set_aside(t.pages);
    /* x.pdf's three pages and y.pdf's one (x's first) are three files: one went */
    p = prune_json(&t, 0, "--grace", "0", NULL);
    g_assert_cmpint(member(p, "files_removed"), ==, 2);
    g_object_unref(p);
    g_free(exe), g_free(empty);
    twin_clear(&t);
}

/* A prune killed (or the power lost) after it set a file aside and before it removed it or put
 * it back leaves it in .tmp; the file may be a live page's (touched as it went aside, its row
 * committed since). The next prune puts it back where its row says before judging it, and an
 * ingest's sweep of .tmp an hour later does not remove it (the file keeps its page's time). */
static void test_prune_set_aside_restored(void) {
    Twin t;
    g_assert_true(twin_init(&t, "sqlite"));
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    char *live = twin_page_file(&t, "x.pdf", 1, 1);
    char *base = g_path_get_basename(live);
    char *aside_name = g_strdup_printf("prune-99999-%s", base);
    char *aside = g_build_filename(t.pages, ".tmp", aside_name, NULL);
    age_files(t.pages, 7200);
    g_assert_cmpint(g_rename(live, aside), ==, 0);
    JsonParser *p = prune_json(&t, 0, "--grace", "3600", NULL);
    g_assert_cmpint(member(p, "files_removed"), ==, 0);
    g_assert_cmpint(member(p, "files_kept_live"), ==, 3);
    g_object_unref(p);
    assert_there(live, TRUE);
    assert_there(aside, FALSE);
    /* Again, an ingest first: it renders the missing page again and leaves the file aside. */
    g_assert_cmpint(g_rename(live, aside), ==, 0);
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    assert_there(aside, TRUE);
    assert_there(live, TRUE);
    p = prune_json(&t, 0, "--grace", "3600", NULL);
    g_assert_cmpint(member(p, "files_removed"), ==, 0);
    g_object_unref(p);
    assert_there(live, TRUE);
    assert_there(aside, FALSE);
    g_free(aside), g_free(aside_name), g_free(base), g_free(live);
    twin_clear(&t);
}

/* A file marked gone comes back with the same bytes: its pages, still stored, are kept (not
 * rendered again) and touched, so that a prune that read the live pages while the file was gone
 * takes them for new. */
static void test_prune_came_back(void) {
    Twin t;
    g_assert_true(twin_init(&t, "sqlite"));
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    char *x3 = twin_page_file(&t, "x.pdf", 1, 3);
    char *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(t.x, &bytes, &len, NULL));
    g_assert_cmpint(g_unlink(t.x), ==, 0);
    g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
    char *gone = twin_text(&t, "SELECT missing_since FROM documents WHERE path LIKE '%/x.pdf'");
    g_assert_nonnull(gone);
    g_free(gone);
    g_assert_true(g_file_set_contents(t.x, bytes, (gssize)len, NULL));
    age_files(t.pages, 7200);
    char *out = NULL;
    g_assert_cmpint(twin_run(&t, NULL, &out), ==, 0);
    JsonParser *p = json_parser_new();
    JsonObject *o = parse_object(p, out);
    g_assert_cmpint(json_object_get_int_member(o, "documents_ok"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pages_ok"), ==, 0);
    g_object_unref(p);
    GStatBuf st;
    g_assert_cmpint(g_stat(x3, &st), ==, 0);
    g_assert_cmpint(st.st_mtime, >, time(NULL) - 600);
    g_free(out), g_free(bytes), g_free(x3);
    twin_clear(&t);
}

/* Every page file under dir (the page store) touched (now) or, with remove, removed. */
static void touch_or_remove_pages(const char *dir, gboolean remove) {
    GDir *d = g_dir_open(dir, 0, NULL);
    g_assert_nonnull(d);
    for (const char *n; (n = g_dir_read_name(d)) != NULL;) {
        char *path = g_build_filename(dir, n, NULL);
        if (g_file_test(path, G_FILE_TEST_IS_DIR))
            touch_or_remove_pages(path, remove);
        else if (g_str_has_suffix(n, ".png"))
            g_assert_cmpint(remove ? g_unlink(path) : utimensat(AT_FDCWD, path, NULL, 0), ==, 0);
        g_free(path);
    }
    g_dir_close(d);
}

typedef struct {
    const char *pages;
    gboolean remove;
} HeldPrune;

static void at_prune_remove(void *user) {
    const HeldPrune *h = user;
    touch_or_remove_pages(h->pages, h->remove);
}

/* Prune held before it sets the first file aside. A file an ingest touched meanwhile is put back
 * and counted as kept (and none stays in .tmp); one another prune removed meanwhile is neither
 * removed nor failed to be: exit 0, nothing said. */
static void test_prune_held(void) {
    for (int remove = 0; remove <= 1; remove++) {
        Twin t;
        g_assert_true(twin_init(&t, "sqlite"));
        g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
        g_assert_cmpint(g_unlink(t.x), ==, 0);
        g_assert_cmpint(g_unlink(t.y), ==, 0);
        char *other = g_build_filename(t.archive, "e.pdf", NULL);
        write_box_pdf(other, 120); /* so that the archive is not taken for an unmounted share */
        g_assert_cmpint(twin_run(&t, NULL, NULL), ==, 0);
        age_files(t.pages, 60);
        char *exe = dq_test_docqa_path();
        const char *argv[] = {exe, "prune", "--db", t.loc, "--grace", "30", "--json", NULL};
        HeldPrune h = {.pages = t.pages, .remove = remove};
        char *out = NULL, *err = NULL;
        int status =
            dq_test_run_paused(argv, NULL, "prune:remove", at_prune_remove, &h, &out, &err);
        g_test_message("prune: %d\n%s%s", status, out, err);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        JsonParser *p = json_parser_new();
        JsonObject *o = parse_object(p, out);
        /* x.pdf's three pages (y.pdf's, x's first, among them) and e.pdf's live one; removed,
         * those after the held one are not seen */
        gint64 files = json_object_get_int_member(o, "files");
        gint64 live = json_object_get_int_member(o, "files_kept_live");
        g_assert_cmpint(remove ? files - live : files, ==, remove ? 1 : 4);
        g_assert_cmpint(json_object_get_int_member(o, "files_removed"), ==, 0);
        g_assert_cmpint(json_object_get_int_member(o, "files_not_removed"), ==, 0);
        g_assert_cmpint(json_object_get_int_member(o, "files_kept_recent"), ==, remove ? 0 : 3);
        g_assert_null(strstr(err, "cannot"));
        g_object_unref(p);
        assert_nothing_set_aside(t.pages);
        g_free(out), g_free(err), g_free(exe), g_free(other);
        twin_clear(&t);
    }
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
#ifdef DQ_TEST_POSTGRES
    server = pgt_start(&server_why_not);
#endif
    g_test_add_func("/ingest/cli/retry_summary", test_retry_summary);
    g_test_add_func("/ingest/cli/sanitizer_sees_worker_leak", test_sanitizer_sees_worker_leak);
    g_test_add_data_func("/ingest/cli/concurrent/sqlite/left_to_other", "sqlite",
                         test_concurrent_left_to_other);
    g_test_add_data_func("/ingest/cli/concurrent/sqlite/put_off_then_taken", "sqlite",
                         test_concurrent_put_off_then_taken);
    g_test_add_data_func("/ingest/cli/concurrent/postgres/left_to_other", "postgres",
                         test_concurrent_left_to_other);
    g_test_add_data_func("/ingest/cli/concurrent/postgres/put_off_then_taken", "postgres",
                         test_concurrent_put_off_then_taken);
    g_test_add_func("/ingest/cli/walk_skips_own_database", test_walk_skips_own_database);
    g_test_add_func("/ingest/cli/exit_statuses", test_exit_statuses);
    g_test_add_func("/ingest/cli/numbers_in_decimal", test_numbers_in_decimal);
    g_test_add_func("/ingest/cli/links_not_followed", test_links_not_followed);
    g_test_add_func("/ingest/cli/arguments", test_arguments);
    g_test_add_func("/ingest/cli/verify_option", test_verify_option);
    g_test_add_func("/ingest/cli/failure_lines_name_the_document",
                    test_failure_lines_name_the_document);
    g_test_add_func("/ingest/cli/changed_during_ingest", test_changed_during_ingest);
    g_test_add_func("/ingest/cli/file_size_limit", test_file_size_limit);
    g_test_add_func("/ingest/cli/unreadable_folders", test_unreadable_folders);
    g_test_add_func("/ingest/cli/non_utf8_name", test_non_utf8_name);
    g_test_add_func("/ingest/cli/summary_counts", test_summary_counts);
    g_test_add_func("/ingest/cli/interrupted", test_interrupted);
    g_test_add_func("/ingest/cli/hangup_and_term", test_hangup_and_term);
    g_test_add_func("/ingest/cli/signal_during_walk", test_signal_during_walk);
    g_test_add_func("/ingest/cli/locked_database", test_locked_database);
    g_test_add_func("/ingest/cli/empty_root/guard", test_empty_root_guard);
    g_test_add_func("/ingest/cli/empty_root/allowed", test_empty_root_allowed);
    g_test_add_func("/ingest/cli/empty_root/smaller", test_empty_root_smaller);
    g_test_add_func("/ingest/cli/empty_root/missing", test_empty_root_missing);
    g_test_add_func("/ingest/cli/unreadable_path_becomes_folder",
                    test_unreadable_path_becomes_folder);
    g_test_add_func("/ingest/cli/stamp/skips_unchanged", test_stamp_skips_unchanged);
    g_test_add_func("/ingest/cli/stamp/rehash", test_stamp_rehash);
    g_test_add_func("/ingest/cli/stamp/racy", test_stamp_racy);
    g_test_add_data_func("/ingest/cli/prune/sqlite/store", "sqlite", test_prune_store);
    g_test_add_data_func("/ingest/cli/prune/postgres/store", "postgres", test_prune_store);
    static const char *const race[][2] = {{"sqlite", "grace"},
                                          {"sqlite", "no-grace"},
                                          {"postgres", "grace"},
                                          {"postgres", "no-grace"}};
    for (size_t i = 0; i < G_N_ELEMENTS(race); i++) {
        char *name = g_strdup_printf("/ingest/cli/prune/%s/race/%s", race[i][0], race[i][1]);
        g_test_add_data_func(name, race[i], test_prune_race);
        g_free(name);
    }
    g_test_add_data_func("/ingest/cli/prune/sqlite/requeue_message", "sqlite",
                         test_prune_requeue_message);
    g_test_add_data_func("/ingest/cli/prune/postgres/requeue_message", "postgres",
                         test_prune_requeue_message);
    g_test_add_func("/ingest/cli/prune/unusable_store", test_prune_unusable_store);
    g_test_add_func("/ingest/cli/prune/signal", test_prune_signal);
    g_test_add_func("/ingest/cli/prune/set_aside_restored", test_prune_set_aside_restored);
    g_test_add_func("/ingest/cli/prune/held", test_prune_held);
    g_test_add_func("/ingest/cli/prune/came_back", test_prune_came_back);
    int rc = g_test_run();
#ifdef DQ_TEST_POSTGRES
    pgt_stop(server);
    g_free(server_why_not);
#endif
    return rc;
}
