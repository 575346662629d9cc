/* libFuzzer target: `docqa ask --where`, the one SQL text docqa takes from its users. The store
 * wraps it in parentheses (store_jobs_where_sql) to keep only each path's newest document
 * version, and queue_check_where refuses texts that would close those parentheses early or
 * comment out the rest. The oracle is SQLite itself: a text the check accepts, run in the
 * wrapper over a table holding an old and a new version of one path, must never return the old
 * version. A difference between how the check and SQLite's tokenizer read a text (quotes,
 * brackets, variables such as @a(...)) shows up as an old version let through. Every refusal
 * names --where. */
#include "queue.h"
#include "store_jobs.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OLD_VERSION_ID 1

static sqlite3 *db;

static int stop_long_queries(void *steps) {
    return ++*(int *)steps > 200; /* a progress call every 1000 instructions */
}

static void open_db(void) {
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        abort();
    /* A runaway expression (zeroblob(1e9), a recursive CTE) is cut short, not followed. */
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 1 << 20);
    sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, 1 << 16);
    if (sqlite3_exec(db,
                     "CREATE TABLE documents (id INTEGER PRIMARY KEY, path TEXT NOT NULL, "
                     "version INTEGER NOT NULL, sha256 TEXT, bytes INTEGER, kind TEXT);"
                     "INSERT INTO documents VALUES (1, '/a.pdf', 1, 'aa', 10, 'pdf'), "
                     "(2, '/a.pdf', 2, 'bb', 20, 'pdf'), (3, '/b.tiff', 1, 'cc', 30, 'tiff');",
                     NULL, NULL, NULL) != SQLITE_OK)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096)
        return 0;
    if (db == NULL)
        open_db();
    char *where = g_strndup((const char *)data, size); /* up to a NUL, as argv would hold it */
    GError *err = NULL;
    if (!queue_check_where(where, &err)) {
        if (err == NULL || strstr(err->message, "--where") == NULL)
            abort();
        g_clear_error(&err);
        g_free(where);
        return 0;
    }
    char *sql = store_jobs_where_sql(where, TRUE);
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int steps = 0;
    sqlite3_progress_handler(db, 1000, stop_long_queries, &steps);
    /* The store refuses what does not compile or leaves text behind; the rest runs. */
    if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) == SQLITE_OK && st != NULL &&
        *g_strchug((char *)tail) == '\0' && sqlite3_stmt_readonly(st)) {
        while (sqlite3_step(st) == SQLITE_ROW)
            if (sqlite3_column_int64(st, 0) == OLD_VERSION_ID) {
                fprintf(stderr, "--where '%s' let an old version through: %s\n", where, sql);
                abort();
            }
    }
    sqlite3_finalize(st);
    g_free(sql);
    g_free(where);
    return 0;
}
