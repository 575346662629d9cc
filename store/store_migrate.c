/* dq_store_copy: table by table in foreign-key order, rows read in id order a page at a time
 * (keyset pagination, so a million-row table never sits in memory at once) and written through
 * prepared statements. Values travel as text: SQLite's STRICT columns and PostgreSQL's types
 * both convert exact decimal text back losslessly (doubles are printed with 17 digits). The
 * table and column names below are the only SQL text built here; they are constants. */
#include "store_migrate.h"

#include "dq_error.h"
#include "resources.h"
#include "store_internal.h"
#include "store_jobs.h"
#ifdef DOCQA_HAVE_POSTGRES
#include "store_pg.h"
#endif

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    const char *columns; /* the first is the key: an integer the rows are read in order of */
} Table;

static const Table tables[] = {
    {"documents", "id, path, version, sha256, bytes, mtime, kind, page_count, status, error_code, "
                  "error_message, ingested_at, missing_since"},
    /* The stamps too: on the same machine, the copy's first ingest need not read every file. */
    {"document_stamps", "document_id, dev, inode, bytes, mtime_ns, ctime_ns"},
    {"pages", "id, document_id, page_number, width, height, source_width, source_height, "
              "render_settings, image_sha256, status, error_code, error_message"},
    {"questions", "id, text, created_at"},
    {"jobs", "id, page_id, question_id, model_id, generation_settings, job_key, state, attempts, "
             "max_attempts, not_before_ms, lease_owner, lease_expires_ms, last_error, created_at, "
             "finished_at"},
    {"job_errors", "id, job_id, attempt, worker, kind, message, at"},
    {"answers", "id, job_id, text, prompt_tokens, generated_tokens, model_id, generation_settings, "
                "worker, started_at, finished_at, ms_image, ms_vision, ms_prefill, ms_decode, "
                "ms_total, device, weights, exact, model_fingerprint, commit_seq"},
    {"answers_superseded",
     "id, answer_id, job_id, text, prompt_tokens, generated_tokens, model_id, "
     "generation_settings, worker, started_at, finished_at, ms_image, ms_vision, ms_prefill, "
     "ms_decode, ms_total, device, weights, exact, superseded_at, model_fingerprint"},
};

#define PAGE_ROWS 2000

static int n_columns(const char *columns) {
    int n = 1;
    for (const char *c = columns; *c; c++)
        n += *c == ',';
    return n;
}

/* Rows hold NULLs (SQL NULL) between values, so g_strfreev would stop early. */
static void rows_free(GPtrArray *rows, int n) {
    for (guint i = 0; i < rows->len; i++) {
        char **row = g_ptr_array_index(rows, i);
        for (int c = 0; c < n; c++)
            g_free(row[c]);
        g_free(row);
    }
    g_ptr_array_free(rows, TRUE);
}

/* Up to PAGE_ROWS rows of `t` with id > after, in id order; each row a char** of n columns
 * (NULL entries are SQL NULL, so the vector is freed column by column). */
static GPtrArray *read_rows(DqStore *s, const Table *t, int n, gint64 after, GError **err) {
    GPtrArray *rows = g_ptr_array_new();
    const char *key = t->columns;
    int key_len = (int)strcspn(key, ",");
    char *sql = g_strdup_printf("SELECT %s FROM %s WHERE %.*s > %s ORDER BY %.*s LIMIT %d",
                                t->columns, t->name, key_len, key,
                                s->kind == DQ_STORE_SQLITE ? "?1" : "$1", key_len, key, PAGE_ROWS);
#ifdef DOCQA_HAVE_POSTGRES
    if (s->kind == DQ_STORE_POSTGRES) {
        PgParams p = {0};
        pg_i64(&p, after);
        PGresult *r = pg_run(s, sql, &p, "reading rows to copy", err);
        g_free(sql);
        if (r == NULL) {
            rows_free(rows, n);
            return NULL;
        }
        for (int i = 0; i < PQntuples(r); i++) {
            char **row = g_new0(char *, n + 1);
            for (int c = 0; c < n; c++)
                row[c] = pg_get_dup(r, i, c);
            g_ptr_array_add(rows, row);
        }
        PQclear(r);
        return rows;
    }
#endif
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        dq_fail(err, DQ_ERR_DB, "%s: reading %s: %s", s->path, t->name, sqlite3_errmsg(s->db));
        store_sqlite_explain(s, err);
        g_free(sql);
        rows_free(rows, n);
        return NULL;
    }
    g_free(sql);
    sqlite3_bind_int64(st, 1, after);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char **row = g_new0(char *, n + 1);
        for (int c = 0; c < n; c++) {
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_NULL:
                break;
            case SQLITE_FLOAT:
                row[c] = g_strdup_printf("%.17g", sqlite3_column_double(st, c));
                break;
            default:
                row[c] = g_strdup((const char *)sqlite3_column_text(st, c));
            }
        }
        g_ptr_array_add(rows, row);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        dq_fail(err, DQ_ERR_DB, "%s: reading %s: %s", s->path, t->name, sqlite3_errmsg(s->db));
        store_sqlite_explain(s, err);
        rows_free(rows, n);
        return NULL;
    }
    return rows;
}

static gboolean write_rows(DqStore *s, const Table *t, int n, GPtrArray *rows, GError **err) {
    GString *sql = g_string_new(NULL);
    g_string_printf(sql, "INSERT INTO %s (%s) VALUES (", t->name, t->columns);
    for (int c = 0; c < n; c++)
        g_string_append_printf(sql, "%s%s%d", c ? ", " : "", s->kind == DQ_STORE_SQLITE ? "?" : "$",
                               c + 1);
    g_string_append(sql, ")");
    gboolean ok = TRUE;
#ifdef DOCQA_HAVE_POSTGRES
    if (s->kind == DQ_STORE_POSTGRES) {
        for (guint i = 0; ok && i < rows->len; i++) {
            char **row = g_ptr_array_index(rows, i);
            PgParams p = {0};
            for (int c = 0; c < n; c++)
                pg_text(&p, row[c]);
            ok = pg_do(s, sql->str, &p, "writing copied rows", NULL, err);
        }
        g_string_free(sql, TRUE);
        return ok;
    }
#endif
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql->str, -1, &st, NULL) != SQLITE_OK) {
        ok = dq_fail(err, DQ_ERR_DB, "%s: writing %s: %s", s->path, t->name, sqlite3_errmsg(s->db));
        store_sqlite_explain(s, err);
    }
    for (guint i = 0; ok && i < rows->len; i++) {
        char **row = g_ptr_array_index(rows, i);
        sqlite3_reset(st);
        for (int c = 0; c < n; c++) {
            if (row[c] == NULL)
                sqlite3_bind_null(st, c + 1);
            else
                sqlite3_bind_text(st, c + 1, row[c], -1, SQLITE_TRANSIENT);
        }
        if (sqlite3_step(st) != SQLITE_DONE) {
            ok = dq_fail(err, DQ_ERR_DB, "%s: writing %s: %s", s->path, t->name,
                         sqlite3_errmsg(s->db));
            store_sqlite_explain(s, err);
        }
    }
    sqlite3_finalize(st);
    g_string_free(sql, TRUE);
    return ok;
}

static gboolean count_rows(DqStore *s, const char *table, gint64 *n, GError **err) {
    char *sql = g_strdup_printf("SELECT count(*) FROM %s", table);
    gboolean ok = FALSE;
#ifdef DOCQA_HAVE_POSTGRES
    if (s->kind == DQ_STORE_POSTGRES) {
        PGresult *r = pg_run(s, sql, NULL, "counting rows", err);
        if (r != NULL) {
            *n = pg_get_i64(r, 0, 0);
            PQclear(r);
            ok = TRUE;
        }
        g_free(sql);
        return ok;
    }
#endif
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        *n = sqlite3_column_int64(st, 0);
        ok = TRUE;
    } else {
        dq_fail(err, DQ_ERR_DB, "%s: counting %s: %s", s->path, table, sqlite3_errmsg(s->db));
        store_sqlite_explain(s, err);
    }
    sqlite3_finalize(st);
    g_free(sql);
    return ok;
}

/* Whether `to` holds as many rows in every table as `from`: a copy made before, whole (a migrate
 * that committed and then failed to say so, run again). */
static gboolean same_counts(DqStore *from, DqStore *to) {
    for (guint i = 0; i < G_N_ELEMENTS(tables); i++) {
        gint64 a = 0, b = 0;
        if (!count_rows(from, tables[i].name, &a, NULL) ||
            !count_rows(to, tables[i].name, &b, NULL) || a != b)
            return FALSE;
    }
    return TRUE;
}

/* The copy goes only into an empty database: nothing is merged. A target already as full as the
 * source is said to be the complete copy it is. */
static gboolean target_empty(DqStore *from, DqStore *to, GError **err) {
    for (guint i = 0; i < G_N_ELEMENTS(tables); i++) {
        gint64 n = 0;
        if (!count_rows(to, tables[i].name, &n, err))
            return FALSE;
        if (n > 0 && same_counts(from, to))
            return dq_fail(err, DQ_ERR_ARGS,
                           "%s: already holds %" G_GINT64_FORMAT " row%s in %s, and as many rows "
                           "in every table as %s: the copy is complete (an earlier migrate made "
                           "it); nothing copied",
                           dq_store_path(to), n, n == 1 ? "" : "s", tables[i].name,
                           dq_store_path(from));
        if (n > 0)
            return dq_fail(err, DQ_ERR_ARGS,
                           "%s: already holds %" G_GINT64_FORMAT " row%s in %s: migrate into an "
                           "empty database (nothing is merged)",
                           dq_store_path(to), n, n == 1 ? "" : "s", tables[i].name);
    }
    return TRUE;
}

/* One table's rows, a page at a time in id order, added to *total. */
static gboolean copy_table(DqStore *from, DqStore *to, const Table *t, gint64 *total,
                           GError **err) {
    int n = n_columns(t->columns);
    gint64 after = G_MININT64;
    for (;;) {
        GPtrArray *page = read_rows(from, t, n, after, err);
        if (page == NULL)
            return FALSE;
        gboolean ok = write_rows(to, t, n, page, err);
        guint len = page->len;
        if (ok && len > 0)
            after = g_ascii_strtoll(((char **)g_ptr_array_index(page, len - 1))[0], NULL, 10);
        *total += len;
        rows_free(page, n);
        if (!ok) {
            dq_error_prefix(err, "copying %s", t->name);
            return FALSE;
        }
        if (len < PAGE_ROWS)
            break;
    }
    if (to->kind == DQ_STORE_POSTGRES && g_str_has_prefix(t->columns, "id,")) {
        /* Ids were copied as they were: move each identity past the largest. */
        char *sql = g_strdup_printf("SELECT setval(pg_get_serial_sequence('%s', 'id'), "
                                    "coalesce((SELECT max(id) FROM %s), 0) + 1, false)",
                                    t->name, t->name);
        gboolean ok = dq_store_exec(to, sql, err);
        g_free(sql);
        if (!ok)
            return FALSE;
    }
    char *point = g_strconcat("migrate:copied:", t->name, NULL);
    store_jobs_hook(point);
    g_free(point);
    return TRUE;
}

/* The answers keep their commit_seq (the target's trigger numbers only rows without one), and
 * the counter goes with them: an export checkpoint taken on the source goes on working on the
 * copy, and no number the source handed out is handed out again. */
static gboolean copy_commit_counter(DqStore *from, DqStore *to, GError **err) {
    gint64 checkpoint = 0;
    if (!store_jobs_commit_checkpoint(from, &checkpoint, err))
        return FALSE;
    char *sql = g_strdup_printf(
        "UPDATE answer_commit_seq SET last = %" G_GINT64_FORMAT " WHERE id = 1", checkpoint);
    gboolean ok = dq_store_exec(to, sql, err);
    g_free(sql);
    return ok;
}

gboolean dq_store_copy(DqStore *from, DqStore *to, gint64 *rows, GError **err) {
    if (!target_empty(from, to, err))
        return FALSE;
    /* The source is read as one snapshot: workers answering while it is copied would otherwise
     * leave the copy with answers of jobs it holds as queued, or the reverse. */
    if (!dq_store_begin_snapshot(from, err))
        return FALSE;
    if (!dq_store_exec(to, to->kind == DQ_STORE_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN", err)) {
        dq_store_exec(from, "ROLLBACK", NULL);
        return FALSE;
    }
    gint64 total = 0;
    gboolean ok = TRUE;
    for (guint i = 0; ok && i < G_N_ELEMENTS(tables); i++)
        ok = copy_table(from, to, &tables[i], &total, err);
    if (ok && copy_commit_counter(from, to, err) && dq_store_exec(to, "COMMIT", err)) {
        dq_store_exec(from, "COMMIT", NULL);
        if (rows)
            *rows = total;
        return TRUE;
    }
    dq_store_exec(to, "ROLLBACK", NULL);
    dq_store_exec(from, "ROLLBACK", NULL);
    return FALSE;
}

/* ---- the built-in migrations ---- */

int store_migration_number(const char *name) {
    char *end = NULL;
    long n = strtol(name, &end, 10);
    if (end == name || *end != '_' || n <= 0 || n > 100000 || !g_str_has_suffix(name, ".sql"))
        return 0;
    return (int)n;
}

char **store_migration_names(const char *folder, int *newest, GError **err) {
    char **names = dq_resource_list(folder, err);
    if (names == NULL)
        return NULL;
    *newest = 0;
    for (char **n = names; *n; n++) {
        int num = store_migration_number(*n);
        if (num == 0)
            dq_fail(err, DQ_ERR_FORMAT, "built-in migration %s/%s: name must be NNNN_name.sql",
                    folder, *n);
        else if (num != *newest + 1)
            dq_fail(err, DQ_ERR_FORMAT, "built-in migrations: %s/%s follows %d (gap or duplicate)",
                    folder, *n, *newest);
        if (num != *newest + 1) {
            g_strfreev(names);
            return NULL;
        }
        *newest = num;
    }
    return names;
}

gboolean store_schema_too_new(DqStore *s, int current, int newest, GError **err) {
    return dq_fail(err, DQ_ERR_DB,
                   "%s: schema version %d is newer than this docqa knows (%d); use a newer docqa",
                   dq_store_path(s), current, newest);
}

/* ---- docqa's views ---- */

/* name -> its newest CREATE statement, from the built-in migrations in order (each migration
 * that changes a view creates it whole: CREATE VIEW after DROP VIEW on SQLite, CREATE OR
 * REPLACE VIEW on PostgreSQL). A view's text holds no ';' (none of docqa's does): the statement
 * ends at the first one. */
static GHashTable *view_definitions(DqStore *s, GError **err) {
    const char *folder =
        dq_store_kind(s) == DQ_STORE_POSTGRES ? "schema/postgres" : "schema/sqlite";
    char **names = dq_resource_list(folder, err);
    if (names == NULL)
        return NULL;
    GRegex *re = g_regex_new("CREATE\\s+(?:OR\\s+REPLACE\\s+)?VIEW\\s+(\\w+)\\s+AS\\s[^;]*;",
                             G_REGEX_CASELESS, 0, NULL);
    GHashTable *views = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    for (char **n = names; *n; n++) {
        char *rpath = g_strconcat(folder, "/", *n, NULL);
        GBytes *b = dq_resource_get(rpath, NULL);
        g_free(rpath);
        if (b == NULL)
            continue;
        char *text = g_strndup(g_bytes_get_data(b, NULL), g_bytes_get_size(b));
        g_bytes_unref(b);
        GMatchInfo *mi = NULL;
        for (g_regex_match(re, text, 0, &mi); g_match_info_matches(mi); g_match_info_next(mi, NULL))
            g_hash_table_insert(views, g_match_info_fetch(mi, 1), g_match_info_fetch(mi, 0));
        g_match_info_free(mi);
        g_free(text);
    }
    g_regex_unref(re);
    g_strfreev(names);
    return views;
}

static int compare_strings(gconstpointer a, gconstpointer b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static gboolean view_exists(DqStore *s, const char *name, gboolean *exists, GError **err) {
#ifdef DOCQA_HAVE_POSTGRES
    if (dq_store_kind(s) == DQ_STORE_POSTGRES) {
        PgParams p = {0};
        pg_text(&p, name);
        PGresult *r =
            pg_run(s, "SELECT to_regclass($1) IS NOT NULL", &p, "looking for a view", err);
        if (r == NULL)
            return FALSE;
        *exists = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        return TRUE;
    }
#endif
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(dq_store_sqlite(s),
                                "SELECT count(*) FROM sqlite_schema WHERE type = 'view' AND "
                                "name = ?1",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW)
        *exists = sqlite3_column_int(st, 0) > 0;
    else {
        dq_fail(err, DQ_ERR_DB, "%s: looking for the view %s: %s", dq_store_path(s), name,
                sqlite3_errmsg(dq_store_sqlite(s)));
        store_sqlite_explain(s, err);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW;
}

/* The missing views' names, sorted, into `out`; their definitions stay in *defs (NULL: freed). */
static gboolean missing_views(DqStore *s, GPtrArray *out, GHashTable **defs, GError **err) {
    GHashTable *views = view_definitions(s, err);
    if (views == NULL)
        return FALSE;
    GHashTableIter it;
    gpointer name;
    gboolean ok = TRUE;
    g_hash_table_iter_init(&it, views);
    while (ok && g_hash_table_iter_next(&it, &name, NULL)) {
        gboolean exists = TRUE;
        ok = view_exists(s, name, &exists, err);
        if (ok && !exists)
            g_ptr_array_add(out, g_strdup(name));
    }
    g_ptr_array_sort(out, compare_strings);
    if (defs != NULL && ok)
        *defs = views;
    else
        g_hash_table_destroy(views);
    return ok;
}

char **dq_store_missing_views(DqStore *s, GError **err) {
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    if (!missing_views(s, out, NULL, err)) {
        g_ptr_array_free(out, TRUE);
        return NULL;
    }
    g_ptr_array_add(out, NULL);
    return (char **)g_ptr_array_free(out, FALSE);
}

gboolean dq_store_restore_views(DqStore *s, char ***made, GError **err) {
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    GHashTable *defs = NULL;
    gboolean ok = missing_views(s, out, &defs, err);
    /* v_answers and v_progress read tables only, documents_current too: any order will do. */
    if (ok && out->len > 0) {
        ok = dq_store_exec(s, dq_store_kind(s) == DQ_STORE_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN",
                           err);
        for (guint i = 0; ok && i < out->len; i++)
            ok = dq_store_exec(s, g_hash_table_lookup(defs, g_ptr_array_index(out, i)), err);
        if (ok)
            ok = dq_store_exec(s, "COMMIT", err);
        else
            dq_store_exec(s, "ROLLBACK", NULL);
    }
    if (defs != NULL)
        g_hash_table_destroy(defs);
    g_ptr_array_add(out, NULL);
    char **names = (char **)g_ptr_array_free(out, FALSE);
    if (ok && made != NULL)
        *made = names;
    else
        g_strfreev(names);
    return ok;
}
