#include "store_documents.h"

#include "dq_error.h"
#include "store_internal.h"
#include "store_jobs_pg.h"
#include "text.h"

#include <sqlite3.h>
#include <string.h>

static gboolean db_fail(DqStore *store, GError **err, const char *what) {
    dq_fail(err, DQ_ERR_DB, "%s: %s: %s", dq_store_path(store), what,
            sqlite3_errmsg(dq_store_sqlite(store)));
    store_sqlite_explain(store, err);
    return FALSE;
}

static sqlite3_stmt *prepare(DqStore *store, const char *sql, GError **err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(dq_store_sqlite(store), sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(store, err, "prepare");
        return NULL;
    }
    return st;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s) {
    if (s != NULL)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static char *column_dup(sqlite3_stmt *st, int i) {
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? g_strdup((const char *)s) : NULL;
}

void dq_document_lookup_clear(DqDocumentLookup *found) {
    g_clear_pointer(&found->status, g_free);
    g_clear_pointer(&found->error_code, g_free);
    g_clear_pointer(&found->failed_codes, g_strfreev);
    found->id = 0;
}

static gboolean find_document(DqStore *store, const char *path, const char *sha256,
                              const char *render_settings, DqDocumentLookup *found, GError **err) {
    PG_DISPATCH(store, return pgdocs_find(store, path, sha256, render_settings, found, err));
    memset(found, 0, sizeof *found);
    /* Only the newest version counts: bytes that went back to an older version's are a change
     * (the file no longer holds what the newest version recorded). `IS` matches NULL to NULL,
     * so re-running over a file that stays unreadable does not add a row each time. */
    const char *sql = "SELECT id, version, status, error_code FROM documents WHERE path = ?1 "
                      "AND sha256 IS ?2 AND version = (SELECT max(version) FROM documents "
                      "WHERE path = ?1)";
    sqlite3_stmt *st = prepare(store, sql, err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 2, sha256);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        found->id = sqlite3_column_int64(st, 0);
        found->version = sqlite3_column_int(st, 1);
        found->status = column_dup(st, 2);
        found->error_code = column_dup(st, 3);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_fail(store, err, "looking up a document");
    if (found->id == 0)
        return TRUE;
    st = prepare(store,
                 "SELECT count(*) FILTER (WHERE render_settings = ?2), count(*) FILTER (WHERE "
                 "render_settings = ?2 AND status <> 'ok'), count(*), group_concat(DISTINCT "
                 "CASE WHEN render_settings = ?2 AND status = 'failed' THEN error_code END) "
                 "FROM pages WHERE document_id = ?1",
                 err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, found->id);
    sqlite3_bind_text(st, 2, render_settings, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        found->pages_with_settings = sqlite3_column_int(st, 0);
        found->pages_not_ok = sqlite3_column_int(st, 1);
        found->pages_any_settings = sqlite3_column_int(st, 2);
        const char *codes = (const char *)sqlite3_column_text(st, 3);
        found->failed_codes = g_strsplit(codes ? codes : "", ",", -1);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return db_fail(store, err, "counting pages");
    return TRUE;
}

void dq_stored_page_free(DqStoredPage *p) {
    if (p == NULL)
        return;
    g_free(p->image_sha256);
    g_free(p->status);
    g_free(p->error_code);
    g_free(p->error_message);
    g_free(p);
}

#define STORED_PAGES_SQL(A, B)                                                                     \
    "SELECT page_number, coalesce(width, 0), coalesce(height, 0), coalesce(source_width, 0), "     \
    "coalesce(source_height, 0), image_sha256, status, error_code, error_message FROM pages "      \
    "WHERE document_id = " A " AND render_settings = " B " AND image_sha256 IS NOT NULL "          \
    "ORDER BY page_number"

static GPtrArray *stored_pages(DqStore *store, gint64 id, const char *render_settings,
                               GError **err) {
    PG_DISPATCH(store, return pgdocs_stored_pages(store, id, render_settings,
                                                  STORED_PAGES_SQL("$1", "$2"), err));
    sqlite3_stmt *st = prepare(store, STORED_PAGES_SQL("?1", "?2"), err);
    if (st == NULL)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, render_settings, -1, SQLITE_TRANSIENT);
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)dq_stored_page_free);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        DqStoredPage *p = g_new0(DqStoredPage, 1);
        p->page_number = sqlite3_column_int(st, 0);
        p->width = sqlite3_column_int(st, 1);
        p->height = sqlite3_column_int(st, 2);
        p->source_width = sqlite3_column_double(st, 3);
        p->source_height = sqlite3_column_double(st, 4);
        p->image_sha256 = column_dup(st, 5);
        p->status = column_dup(st, 6);
        p->error_code = column_dup(st, 7);
        p->error_message = column_dup(st, 8);
        g_ptr_array_add(out, p);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        g_ptr_array_free(out, TRUE);
        db_fail(store, err, "listing the pages stored");
        return NULL;
    }
    return out;
}

GPtrArray *dq_store_document_stored_pages(DqStore *store, gint64 id, const char *render_settings,
                                          GError **err) {
    GPtrArray *out = stored_pages(store, id, render_settings, err);
    /* Messages go back as ingest made them: recorded again (in a document's message) they would
     * otherwise be escaped twice. */
    for (guint i = 0; out != NULL && i < out->len; i++) {
        DqStoredPage *p = g_ptr_array_index(out, i);
        char *raw = p->error_message ? dq_utf8_unescape(p->error_message) : NULL;
        g_free(p->error_message);
        p->error_message = raw;
    }
    return out;
}

static gboolean insert_document(DqStore *store, const DqDocumentRow *doc, gint64 *id, int *version,
                                GError **err) {
    /* Inside the (IMMEDIATE) transaction, so two ingests of the same path cannot both take
     * version n + 1, and one that recorded these bytes as the newest version meanwhile is
     * found and its row reused. */
    sqlite3_stmt *st = prepare(store,
                               "SELECT id, version, sha256 IS ?2 FROM documents WHERE path = ?1 "
                               "ORDER BY version DESC LIMIT 1",
                               err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_text(st, 1, doc->path, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 2, doc->sha256);
    int rc = sqlite3_step(st);
    int newest = 0;
    if (rc == SQLITE_ROW) {
        newest = sqlite3_column_int(st, 1);
        if (sqlite3_column_int(st, 2)) {
            *id = sqlite3_column_int64(st, 0);
            *version = newest;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_fail(store, err, "looking up the newest version");
    if (*id != 0)
        return TRUE;
    st = prepare(store,
                 "INSERT INTO documents (path, version, sha256, bytes, mtime, kind, page_count, "
                 "status, error_code, error_message) VALUES (?1, ?10, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
                 "?9) RETURNING id",
                 err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_text(st, 1, doc->path, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 2, doc->sha256);
    sqlite3_bind_int64(st, 3, doc->bytes);
    sqlite3_bind_int64(st, 4, doc->mtime);
    sqlite3_bind_text(st, 5, doc->kind, -1, SQLITE_TRANSIENT);
    if (doc->page_count >= 0)
        sqlite3_bind_int(st, 6, doc->page_count);
    else
        sqlite3_bind_null(st, 6);
    sqlite3_bind_text(st, 7, doc->status, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 8, doc->error_code);
    bind_text_or_null(st, 9, doc->error_message);
    sqlite3_bind_int(st, 10, newest + 1);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        *version = newest + 1;
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE || *id == 0)
        return db_fail(store, err, "inserting a document");
    return TRUE;
}

/* With `replace`, a page already there takes the new rendering in place: its row, and so the
 * jobs asked about it and their answers (foreign keys that cascade), stay. */
static gboolean insert_pages(DqStore *store, gint64 doc_id, const char *render_settings,
                             const DqPageRow *pages, int n_pages, gboolean replace, GError **err) {
    sqlite3_stmt *st = prepare(
        store,
        replace ? "INSERT INTO pages (document_id, page_number, width, height, source_width, "
                  "source_height, render_settings, image_sha256, status, error_code, "
                  "error_message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
                  "ON CONFLICT (document_id, page_number, render_settings) DO UPDATE SET "
                  "width = excluded.width, height = excluded.height, "
                  "source_width = excluded.source_width, source_height = excluded.source_height, "
                  "image_sha256 = excluded.image_sha256, status = excluded.status, "
                  "error_code = excluded.error_code, error_message = excluded.error_message"
                : "INSERT INTO pages (document_id, page_number, width, height, source_width, "
                  "source_height, render_settings, image_sha256, status, error_code, "
                  "error_message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
                  "ON CONFLICT (document_id, page_number, render_settings) DO NOTHING",
        err);
    if (st == NULL)
        return FALSE;
    for (int i = 0; i < n_pages; i++) {
        const DqPageRow *p = &pages[i];
        if (p->stored)
            continue;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        sqlite3_bind_int64(st, 1, doc_id);
        sqlite3_bind_int(st, 2, p->page_number);
        if (p->image_sha256 != NULL) {
            sqlite3_bind_int(st, 3, p->width);
            sqlite3_bind_int(st, 4, p->height);
        }
        if (p->source_width > 0 && p->source_height > 0) {
            sqlite3_bind_double(st, 5, p->source_width);
            sqlite3_bind_double(st, 6, p->source_height);
        }
        sqlite3_bind_text(st, 7, render_settings, -1, SQLITE_TRANSIENT);
        bind_text_or_null(st, 8, p->image_sha256);
        sqlite3_bind_text(st, 9, p->status, -1, SQLITE_TRANSIENT);
        bind_text_or_null(st, 10, p->error_code);
        bind_text_or_null(st, 11, p->error_message);
        if (sqlite3_step(st) != SQLITE_DONE) {
            sqlite3_finalize(st);
            return db_fail(store, err, "inserting a page");
        }
    }
    sqlite3_finalize(st);
    return TRUE;
}

static gboolean replace_outcome(DqStore *store, gint64 id, const DqDocumentRow *doc,
                                const char *render_settings, int last_page, GError **err) {
    sqlite3_stmt *st = prepare(
        store,
        "UPDATE documents SET page_count = coalesce(?2, page_count), status = ?3, error_code = "
        "?4, error_message = ?5, kind = ?6, ingested_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
        "WHERE id = ?1",
        err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, id);
    if (doc->page_count >= 0)
        sqlite3_bind_int(st, 2, doc->page_count);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_text(st, 3, doc->status, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 4, doc->error_code);
    bind_text_or_null(st, 5, doc->error_message);
    sqlite3_bind_text(st, 6, doc->kind, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(store, err, "updating a document");
    /* Pages the new rendering does not have go, unless a job was asked about them: deleting
     * the row would take the jobs and their answers with it (ON DELETE CASCADE). The pages it
     * has are updated in place by insert_pages. */
    st = prepare(store,
                 "DELETE FROM pages WHERE document_id = ?1 AND render_settings = ?2 "
                 "AND page_number > ?3 AND NOT EXISTS (SELECT 1 FROM jobs WHERE page_id = "
                 "pages.id)",
                 err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, render_settings, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, last_page);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(store, err, "replacing pages");
    return TRUE;
}

static gboolean record_document(DqStore *store, const DqDocumentRow *doc, gint64 existing_id,
                                gboolean replace, const char *render_settings,
                                const DqPageRow *pages, int n_pages, gint64 *out_id,
                                int *out_version, GError **err) {
    PG_DISPATCH(store, return pgdocs_record(store, doc, existing_id, replace, render_settings,
                                            pages, n_pages, out_id, out_version, err));
    gint64 id = existing_id;
    int version = 0;
    if (!dq_store_exec(store, "BEGIN IMMEDIATE", err))
        return FALSE;
    if (existing_id <= 0 && !insert_document(store, doc, &id, &version, err))
        goto fail;
    gboolean replacing = existing_id > 0 && replace;
    int last_page = 0;
    for (int i = 0; i < n_pages; i++)
        last_page = MAX(last_page, pages[i].page_number);
    if (replacing && !replace_outcome(store, existing_id, doc, render_settings, last_page, err))
        goto fail;
    if (!insert_pages(store, id, render_settings, pages, n_pages, replacing, err))
        goto fail;
    if (!dq_store_exec(store, "COMMIT", err))
        goto fail;
    if (out_id)
        *out_id = id;
    if (out_version)
        *out_version = version;
    return TRUE;
fail:
    dq_error_prefix(err, "%s", doc->path);
    dq_store_exec(store, "ROLLBACK", NULL);
    return FALSE;
}

/* Both stores hold paths and messages as text: a path that is not UTF-8 goes in escaped
 * (text.h), the same way for lookups as for rows, so it is found again. */

gboolean dq_store_document_find(DqStore *store, const char *path, const char *sha256,
                                const char *render_settings, DqDocumentLookup *found,
                                GError **err) {
    char *text = dq_utf8_escape_invalid(path);
    gboolean ok = find_document(store, text, sha256, render_settings, found, err);
    g_free(text);
    return ok;
}

gboolean dq_store_document_record(DqStore *store, const DqDocumentRow *doc, gint64 existing_id,
                                  gboolean replace, const char *render_settings,
                                  const DqPageRow *pages, int n_pages, gint64 *out_id,
                                  int *out_version, GError **err) {
    DqDocumentRow d = *doc;
    char *path = dq_utf8_escape_invalid(doc->path);
    char *message = dq_utf8_escape_invalid(doc->error_message);
    d.path = path;
    d.error_message = message;
    DqPageRow *p = g_memdup2(pages, sizeof *pages * (gsize)MAX(n_pages, 0));
    char **messages = g_new0(char *, MAX(n_pages, 1));
    for (int i = 0; i < n_pages; i++)
        p[i].error_message = messages[i] = dq_utf8_escape_invalid(pages[i].error_message);
    gboolean ok = record_document(store, &d, existing_id, replace, render_settings, p, n_pages,
                                  out_id, out_version, err);
    for (int i = 0; i < n_pages; i++)
        g_free(messages[i]);
    g_free(messages);
    g_free(p);
    g_free(message);
    g_free(path);
    return ok;
}

/* ---- files gone from disk ---- */

void dq_known_path_free(DqKnownPath *k) {
    if (k == NULL)
        return;
    g_free(k->path);
    g_free(k);
}

/* substr and length count characters on both engines, so this is a prefix test on both; LIKE
 * would need its wildcards escaped and ignores ASCII case in SQLite. */
#define PATHS_UNDER_SQL(P)                                                                         \
    "SELECT path, max(CASE WHEN missing_since IS NULL THEN 0 ELSE 1 END) FROM documents "          \
    "WHERE substr(path, 1, length(" P ")) = " P " GROUP BY path"

static GPtrArray *paths_under(DqStore *store, const char *prefix, GError **err) {
    PG_DISPATCH(store, return pgdocs_paths_under(store, prefix, PATHS_UNDER_SQL("$1"), err));
    sqlite3_stmt *st = prepare(store, PATHS_UNDER_SQL("?1"), err);
    if (st == NULL)
        return NULL;
    sqlite3_bind_text(st, 1, prefix, -1, SQLITE_TRANSIENT);
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)dq_known_path_free);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        DqKnownPath *k = g_new0(DqKnownPath, 1);
        k->path = column_dup(st, 0);
        k->missing = sqlite3_column_int(st, 1) != 0;
        g_ptr_array_add(out, k);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        g_ptr_array_free(out, TRUE);
        db_fail(store, err, "listing the documents of a folder");
        return NULL;
    }
    return out;
}

GPtrArray *dq_store_document_paths_under(DqStore *store, const char *folder, GError **err) {
    char *text = dq_utf8_escape_invalid(folder);
    char *prefix = g_str_has_suffix(text, "/") ? g_strdup(text) : g_strconcat(text, "/", NULL);
    GPtrArray *out = paths_under(store, prefix, err);
    g_free(prefix);
    g_free(text);
    for (guint i = 0; out != NULL && i < out->len; i++) {
        DqKnownPath *k = g_ptr_array_index(out, i);
        char *raw = dq_utf8_unescape(k->path);
        g_free(k->path);
        k->path = raw;
    }
    return out;
}

#define PATHS_GONE_SQL "SELECT DISTINCT path FROM documents WHERE missing_since IS NOT NULL"

GPtrArray *dq_store_document_paths_gone(DqStore *store, GError **err) {
    GPtrArray *out = NULL;
#ifdef DOCQA_HAVE_POSTGRES
    if (store->kind == DQ_STORE_POSTGRES)
        out = pgdocs_paths_gone(store, PATHS_GONE_SQL, err);
    else
#endif
    {
        sqlite3_stmt *st = prepare(store, PATHS_GONE_SQL, err);
        if (st == NULL)
            return NULL;
        out = g_ptr_array_new_with_free_func(g_free);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            g_ptr_array_add(out, column_dup(st, 0));
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            g_ptr_array_free(out, TRUE);
            db_fail(store, err, "listing the documents gone");
            return NULL;
        }
    }
    for (guint i = 0; out != NULL && i < out->len; i++) {
        char *raw = dq_utf8_unescape(g_ptr_array_index(out, i));
        g_free(g_ptr_array_index(out, i));
        out->pdata[i] = raw;
    }
    return out;
}

static gboolean paths_mark(DqStore *store, char **gone, int n_gone, char **back, int n_back,
                           GError **err) {
    PG_DISPATCH(store, return pgdocs_paths_mark(store, gone, n_gone, back, n_back, err));
    if (!dq_store_exec(store, "BEGIN IMMEDIATE", err))
        return FALSE;
    sqlite3_stmt *mark = prepare(store,
                                 "UPDATE documents SET missing_since = "
                                 "strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE path = ?1 AND "
                                 "missing_since IS NULL",
                                 err);
    sqlite3_stmt *clear = mark ? prepare(store,
                                         "UPDATE documents SET missing_since = NULL WHERE path = "
                                         "?1 AND missing_since IS NOT NULL",
                                         err)
                               : NULL;
    gboolean ok = clear != NULL;
    for (int i = 0; ok && i < n_gone + n_back; i++) {
        sqlite3_stmt *st = i < n_gone ? mark : clear;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, i < n_gone ? gone[i] : back[i - n_gone], -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            ok = db_fail(store, err, "marking documents gone");
    }
    sqlite3_finalize(mark);
    sqlite3_finalize(clear);
    if (ok && dq_store_exec(store, "COMMIT", err))
        return TRUE;
    dq_store_exec(store, "ROLLBACK", NULL);
    return FALSE;
}

gboolean dq_store_document_paths_mark(DqStore *store, const char *const *gone, int n_gone,
                                      const char *const *back, int n_back, GError **err) {
    if (n_gone + n_back == 0)
        return TRUE;
    char **g = g_new0(char *, n_gone + 1), **b = g_new0(char *, n_back + 1);
    for (int i = 0; i < n_gone; i++)
        g[i] = dq_utf8_escape_invalid(gone[i]);
    for (int i = 0; i < n_back; i++)
        b[i] = dq_utf8_escape_invalid(back[i]);
    gboolean ok = paths_mark(store, g, n_gone, b, n_back, err);
    /* clang-analyzer does not know that g_strfreev frees the arrays */
    // NOLINTBEGIN(clang-analyzer-unix.Malloc)
    g_strfreev(g);
    g_strfreev(b);
    return ok;
    // NOLINTEND(clang-analyzer-unix.Malloc)
}

/* ---- file stamps ---- */

#define STAMP_FIND_SQL(P)                                                                          \
    "SELECT d.id, d.sha256, s.dev, s.inode, s.bytes, s.mtime_ns, s.ctime_ns FROM documents d "     \
    "JOIN document_stamps s ON s.document_id = d.id WHERE d.path = " P " AND d.version = "         \
    "(SELECT max(version) FROM documents WHERE path = " P ")"

static gboolean stamp_find(DqStore *store, const char *path, gint64 *id, char **sha256,
                           DqDocumentStamp *stamp, GError **err) {
    PG_DISPATCH(
        store, return pgdocs_stamp_find(store, path, STAMP_FIND_SQL("$1"), id, sha256, stamp, err));
    sqlite3_stmt *st = prepare(store, STAMP_FIND_SQL("?1"), err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        *sha256 = column_dup(st, 1);
        stamp->dev = sqlite3_column_int64(st, 2);
        stamp->inode = sqlite3_column_int64(st, 3);
        stamp->bytes = sqlite3_column_int64(st, 4);
        stamp->mtime_ns = sqlite3_column_int64(st, 5);
        stamp->ctime_ns = sqlite3_column_int64(st, 6);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_fail(store, err, "looking up a file's stamp");
    return TRUE;
}

gboolean dq_store_document_stamp_find(DqStore *store, const char *path, gint64 *id, char **sha256,
                                      DqDocumentStamp *stamp, GError **err) {
    *id = 0;
    *sha256 = NULL;
    memset(stamp, 0, sizeof *stamp);
    char *text = dq_utf8_escape_invalid(path);
    gboolean ok = stamp_find(store, text, id, sha256, stamp, err);
    g_free(text);
    return ok;
}

#define STAMP_SET_SQL(P1, P2, P3, P4, P5, P6)                                                      \
    "INSERT INTO document_stamps (document_id, dev, inode, bytes, mtime_ns, ctime_ns) VALUES "     \
    "(" P1 ", " P2 ", " P3 ", " P4 ", " P5 ", " P6 ") ON CONFLICT (document_id) DO UPDATE SET "    \
    "dev = excluded.dev, inode = excluded.inode, bytes = excluded.bytes, mtime_ns = "              \
    "excluded.mtime_ns, ctime_ns = excluded.ctime_ns"

gboolean dq_store_document_stamp_set(DqStore *store, gint64 id, const DqDocumentStamp *stamp,
                                     GError **err) {
    PG_DISPATCH(store,
                return pgdocs_stamp_set(store, STAMP_SET_SQL("$1", "$2", "$3", "$4", "$5", "$6"),
                                        id, stamp, err));
    sqlite3_stmt *st = prepare(store, STAMP_SET_SQL("?1", "?2", "?3", "?4", "?5", "?6"), err);
    if (st == NULL)
        return FALSE;
    const gint64 v[] = {id,           stamp->dev,      stamp->inode,
                        stamp->bytes, stamp->mtime_ns, stamp->ctime_ns};
    for (int i = 0; i < 6; i++)
        sqlite3_bind_int64(st, i + 1, v[i]);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(store, err, "storing a file's stamp");
    return TRUE;
}

/* ---- the page store's files (docqa prune) ---- */

/* The images of live pages (store_documents.h); a job 'queued' includes one waiting to retry. */
#define LIVE_IMAGES_SQL                                                                            \
    "SELECT DISTINCT p.image_sha256 FROM pages p WHERE p.image_sha256 IS NOT NULL AND "            \
    "(p.document_id IN (SELECT id FROM documents_current) OR EXISTS (SELECT 1 FROM jobs j "        \
    "WHERE j.page_id = p.id AND j.state IN ('queued', 'running')))"
/* Those of the other pages: an image in both is shared by a live page and a retired one. */
#define RETIRED_IMAGES_SQL                                                                         \
    "SELECT DISTINCT p.image_sha256 FROM pages p WHERE p.image_sha256 IS NOT NULL AND NOT "        \
    "(p.document_id IN (SELECT id FROM documents_current) OR EXISTS (SELECT 1 FROM jobs j "        \
    "WHERE j.page_id = p.id AND j.state IN ('queued', 'running')))"

static GHashTable *image_set(DqStore *store, const char *sql, GError **err) {
#ifdef DOCQA_HAVE_POSTGRES
    if (store->kind == DQ_STORE_POSTGRES)
        return pgdocs_image_set(store, sql, err);
#endif
    sqlite3_stmt *st = prepare(store, sql, err);
    if (st == NULL)
        return NULL;
    GHashTable *set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        g_hash_table_add(set, column_dup(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        g_hash_table_unref(set);
        db_fail(store, err, "listing the page images");
        return NULL;
    }
    return set;
}

gboolean dq_store_page_images(DqStore *store, GHashTable **live, GHashTable **retired,
                              GError **err) {
    *live = *retired = NULL;
    /* One snapshot: the two reads agree on which pages are live. */
    if (!dq_store_begin_snapshot(store, err))
        return FALSE;
    *live = image_set(store, LIVE_IMAGES_SQL, err);
    if (*live != NULL)
        *retired = image_set(store, RETIRED_IMAGES_SQL, err);
    if (*retired != NULL && dq_store_exec(store, "COMMIT", err))
        return TRUE;
    if (*retired == NULL)
        dq_store_exec(store, "ROLLBACK", NULL);
    g_clear_pointer(live, g_hash_table_unref);
    g_clear_pointer(retired, g_hash_table_unref);
    return FALSE;
}

#define PAGE_DOCUMENT_STATE_SQL(p)                                                                 \
    "SELECT d.version, (SELECT max(version) FROM documents d2 WHERE d2.path = d.path), "           \
    "d.missing_since FROM pages p JOIN documents d ON d.id = p.document_id WHERE p.id = " p

gboolean dq_store_page_document_state(DqStore *store, gint64 page_id, int *version, int *newest,
                                      char **missing_since, GError **err) {
    *version = *newest = 0;
    *missing_since = NULL;
    PG_DISPATCH(store,
                return pgdocs_page_document_state(store, PAGE_DOCUMENT_STATE_SQL("$1"), page_id,
                                                  version, newest, missing_since, err));
    sqlite3_stmt *st = prepare(store, PAGE_DOCUMENT_STATE_SQL("?1"), err);
    if (st == NULL)
        return FALSE;
    sqlite3_bind_int64(st, 1, page_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int(st, 0);
        *newest = sqlite3_column_int(st, 1);
        *missing_since = column_dup(st, 2);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_fail(store, err, "looking up a page's document");
    return TRUE;
}
