#include "dq_error.h"
#include "store.h"
#include "testutil.h"

#include <string.h>

static int count_rows(DqStore *s, const char *sql) {
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(s), sql, -1, &st, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void test_open_migrates_and_reopens(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "docqa.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    int v = dq_store_schema_version(s);
    g_assert_cmpint(v, >=, 1);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM schema_migrations"), ==, v);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM sqlite_schema WHERE name='documents' "
                                  "AND sql LIKE '%STRICT'"),
                    ==, 1);
    g_assert_cmpint(count_rows(s, "SELECT journal_mode='wal' FROM pragma_journal_mode"), ==, 1);
    g_assert_cmpint(count_rows(s, "SELECT foreign_keys FROM pragma_foreign_keys"), ==, 1);
    dq_store_close(s);

    /* Reopening applies nothing twice. */
    s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, v);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM schema_migrations"), ==, v);
    dq_store_close(s);
    g_free(path);
    g_free(dir);
}

static void test_newer_schema_refused(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "future.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_exec(s, "PRAGMA user_version = 9999", &err));
    dq_store_close(s);
    g_assert_null(dq_store_open(path, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "newer"));
    g_assert_nonnull(strstr(err->message, path));
    g_error_free(err);
    g_free(path);
    g_free(dir);
}

static void test_garbage_file_refused(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "not-a.db", NULL);
    g_assert_true(g_file_set_contents(path,
                                      "this is not an SQLite database, just text.\n"
                                      "it is long enough to have a header......\n",
                                      -1, NULL));
    GError *err = NULL;
    g_assert_null(dq_store_open(path, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, path));
    g_error_free(err);
    /* The user's file is left as it was. */
    char *after = dq_test_read_file(path, NULL);
    g_assert_true(g_str_has_prefix(after, "this is not an SQLite database"));
    g_free(after);
    g_free(path);
    g_free(dir);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/store/open/migrates_and_reopens", test_open_migrates_and_reopens);
    g_test_add_func("/store/open/newer_schema_refused", test_newer_schema_refused);
    g_test_add_func("/store/open/garbage_file_refused", test_garbage_file_refused);
    return g_test_run();
}
