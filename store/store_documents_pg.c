/* PostgreSQL implementation of store_documents.h (the SQLite twin: store_documents.c). */
#include "store_jobs_pg.h"

#include "dq_error.h"
#include "store_pg.h"

#include <string.h>

gboolean pgdocs_find(DqStore *s, const char *path, const char *sha256, const char *render_settings,
                     DqDocumentLookup *found, GError **err) {
    memset(found, 0, sizeof *found);
    PgParams p = {0};
    pg_text(&p, path);
    pg_text(&p, sha256);
    /* The newest version only, NULL matching NULL: see store_documents.c. */
    PGresult *r = pg_run(s,
                         "SELECT id, version, status, error_code FROM documents WHERE path = $1 "
                         "AND sha256 IS NOT DISTINCT FROM $2 AND version = (SELECT max(version) "
                         "FROM documents WHERE path = $1)",
                         &p, "looking up a document", err);
    if (r == NULL)
        return FALSE;
    if (PQntuples(r) > 0) {
        found->id = pg_get_i64(r, 0, 0);
        found->version = (int)pg_get_i64(r, 0, 1);
        found->status = pg_get_dup(r, 0, 2);
        found->error_code = pg_get_dup(r, 0, 3);
    }
    PQclear(r);
    if (found->id == 0)
        return TRUE;
    pg_i64(&p, found->id);
    pg_text(&p, render_settings);
    r = pg_run(s,
               "SELECT count(*) FILTER (WHERE render_settings = $2), count(*) FILTER (WHERE "
               "render_settings = $2 AND status <> 'ok'), count(*), string_agg(DISTINCT CASE "
               "WHEN render_settings = $2 AND status = 'failed' THEN error_code END, ',') "
               "FROM pages WHERE document_id = $1",
               &p, "counting pages", err);
    if (r == NULL)
        return FALSE;
    found->pages_with_settings = (int)pg_get_i64(r, 0, 0);
    found->pages_not_ok = (int)pg_get_i64(r, 0, 1);
    found->pages_any_settings = (int)pg_get_i64(r, 0, 2);
    char *codes = pg_get_dup(r, 0, 3);
    found->failed_codes = g_strsplit(codes ? codes : "", ",", -1);
    g_free(codes);
    PQclear(r);
    return TRUE;
}

GPtrArray *pgdocs_stored_pages(DqStore *s, gint64 id, const char *render_settings, const char *sql,
                               GError **err) {
    PgParams p = {0};
    pg_i64(&p, id);
    pg_text(&p, render_settings);
    PGresult *r = pg_run(s, sql, &p, "listing the pages stored", err);
    if (r == NULL)
        return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)dq_stored_page_free);
    for (int i = 0; i < PQntuples(r); i++) {
        DqStoredPage *pg = g_new0(DqStoredPage, 1);
        pg->page_number = (int)pg_get_i64(r, i, 0);
        pg->width = (int)pg_get_i64(r, i, 1);
        pg->height = (int)pg_get_i64(r, i, 2);
        pg->source_width = g_ascii_strtod(PQgetvalue(r, i, 3), NULL);
        pg->source_height = g_ascii_strtod(PQgetvalue(r, i, 4), NULL);
        pg->image_sha256 = pg_get_dup(r, i, 5);
        pg->status = pg_get_dup(r, i, 6);
        pg->error_code = pg_get_dup(r, i, 7);
        pg->error_message = pg_get_dup(r, i, 8);
        g_ptr_array_add(out, pg);
    }
    PQclear(r);
    return out;
}

static void doc_params(PgParams *p, const DqDocumentRow *doc) {
    pg_text(p, doc->path);
    pg_text(p, doc->sha256);
    pg_i64(p, doc->bytes);
    pg_i64(p, doc->mtime);
    pg_text(p, doc->kind);
    if (doc->page_count >= 0)
        pg_i64(p, doc->page_count);
    else
        pg_text(p, NULL);
    pg_text(p, doc->status);
    pg_text(p, doc->error_code);
    pg_text(p, doc->error_message);
}

/* One document being recorded: its store, its row and its pages' render settings, and the id
 * and version it comes to. */
typedef struct {
    DqStore *s;
    const DqDocumentRow *doc;
    const char *render_settings;
    gint64 id;
    int version;
} PgDocRecord;

/* Two ingests of one path on two machines must not both take version n + 1: the path's advisory
 * lock (held to the end of the transaction) puts them one after the other. */
static gboolean lock_path(PgDocRecord *rec, GError **err) {
    PgParams p = {0};
    pg_text(&p, rec->doc->path);
    return pg_do(rec->s, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &p,
                 "locking a document path", NULL, err);
}

/* Under the path's lock: the newest version (0 when none), and its id and version taken when it
 * holds these bytes (another ingest recorded them meanwhile). */
static gboolean find_newest(PgDocRecord *rec, int *newest, GError **err) {
    PgParams p = {0};
    pg_text(&p, rec->doc->path);
    pg_text(&p, rec->doc->sha256);
    PGresult *r = pg_run(rec->s,
                         "SELECT id, version, sha256 IS NOT DISTINCT FROM $2 FROM documents "
                         "WHERE path = $1 ORDER BY version DESC LIMIT 1",
                         &p, "looking up the newest version", err);
    if (r == NULL)
        return FALSE;
    *newest = 0;
    if (PQntuples(r) == 1) {
        *newest = (int)pg_get_i64(r, 0, 1);
        if (strcmp(PQgetvalue(r, 0, 2), "t") == 0) {
            rec->id = pg_get_i64(r, 0, 0);
            rec->version = *newest;
        }
    }
    PQclear(r);
    return TRUE;
}

/* The document as the version after `newest`. */
static gboolean insert_document(PgDocRecord *rec, int newest, GError **err) {
    PgParams p = {0};
    doc_params(&p, rec->doc);
    pg_i64(&p, newest + 1);
    PGresult *r = pg_run(rec->s,
                         "INSERT INTO documents (path, version, sha256, bytes, mtime, kind, "
                         "page_count, status, error_code, error_message) VALUES ($1, $10, $2, $3, "
                         "$4, $5, $6, $7, $8, $9) RETURNING id",
                         &p, "inserting a document", err);
    if (r == NULL)
        return FALSE;
    if (PQntuples(r) == 1) {
        rec->id = pg_get_i64(r, 0, 0);
        rec->version = newest + 1;
    }
    PQclear(r);
    if (rec->id <= 0)
        return dq_fail(err, DQ_ERR_DB, "%s: inserting a document: no row", dq_store_path(rec->s));
    return TRUE;
}

/* A new document: the newest version when it holds these bytes, else the next one. */
static gboolean take_version(PgDocRecord *rec, GError **err) {
    int newest = 0;
    if (!find_newest(rec, &newest, err))
        return FALSE;
    return rec->id > 0 || insert_document(rec, newest, err);
}

/* A document ingested again: its outcome updated, and the pages the new rendering lacks gone. */
static gboolean replace_outcome(PgDocRecord *rec, const DqPageRow *pages, int n_pages,
                                GError **err) {
    const DqDocumentRow *doc = rec->doc;
    PgParams p = {0};
    pg_i64(&p, rec->id);
    if (doc->page_count >= 0)
        pg_i64(&p, doc->page_count);
    else
        pg_text(&p, NULL);
    pg_text(&p, doc->status);
    pg_text(&p, doc->error_code);
    pg_text(&p, doc->error_message);
    pg_text(&p, doc->kind);
    if (!pg_do(rec->s,
               "UPDATE documents SET page_count = coalesce($2, page_count), status = $3, "
               "error_code = $4, error_message = $5, kind = $6, ingested_at = docqa_now_iso() "
               "WHERE id = $1",
               &p, "updating a document", NULL, err))
        return FALSE;
    /* As on SQLite (store_documents.c, replace_outcome): pages the new rendering lacks go
     * unless a job was asked about them; the others are updated in place below. */
    int last_page = 0;
    for (int i = 0; i < n_pages; i++)
        last_page = MAX(last_page, pages[i].page_number);
    pg_i64(&p, rec->id);
    pg_text(&p, rec->render_settings);
    pg_i64(&p, last_page);
    return pg_do(rec->s,
                 "DELETE FROM pages WHERE document_id = $1 AND render_settings = $2 "
                 "AND page_number > $3 AND NOT EXISTS (SELECT 1 FROM jobs WHERE page_id = "
                 "pages.id)",
                 &p, "replacing pages", NULL, err);
}

/* One page row, new or (when `overwrite`) updated in place. */
static gboolean insert_page(PgDocRecord *rec, const DqPageRow *pg, gboolean overwrite,
                            GError **err) {
    PgParams p = {0};
    pg_i64(&p, rec->id);
    pg_i64(&p, pg->page_number);
    if (pg->image_sha256 != NULL) {
        pg_i64(&p, pg->width);
        pg_i64(&p, pg->height);
    } else {
        pg_text(&p, NULL);
        pg_text(&p, NULL);
    }
    if (pg->source_width > 0 && pg->source_height > 0) {
        pg_dbl(&p, pg->source_width);
        pg_dbl(&p, pg->source_height);
    } else {
        pg_text(&p, NULL);
        pg_text(&p, NULL);
    }
    pg_text(&p, rec->render_settings);
    pg_text(&p, pg->image_sha256);
    pg_text(&p, pg->status);
    pg_text(&p, pg->error_code);
    pg_text(&p, pg->error_message);
    pg_bool(&p, overwrite);
    return pg_do(rec->s,
                 "INSERT INTO pages (document_id, page_number, width, height, source_width, "
                 "source_height, render_settings, image_sha256, status, error_code, "
                 "error_message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                 "ON CONFLICT (document_id, page_number, render_settings) DO UPDATE SET "
                 "width = excluded.width, height = excluded.height, "
                 "source_width = excluded.source_width, "
                 "source_height = excluded.source_height, "
                 "image_sha256 = excluded.image_sha256, status = excluded.status, "
                 "error_code = excluded.error_code, error_message = excluded.error_message "
                 "WHERE $12",
                 &p, "inserting a page", NULL, err);
}

gboolean pgdocs_record(DqStore *s, const DqDocumentRow *doc, gint64 existing_id, gboolean replace,
                       const char *render_settings, const DqPageRow *pages, int n_pages,
                       gint64 *out_id, int *out_version, GError **err) {
    PgDocRecord rec = {s, doc, render_settings, existing_id, 0};
    gboolean replacing = existing_id > 0 && replace;
    if (!pg_begin(s, err))
        return FALSE;
    if (!lock_path(&rec, err))
        goto fail;
    if (existing_id <= 0 && !take_version(&rec, err))
        goto fail;
    if (replacing && !replace_outcome(&rec, pages, n_pages, err))
        goto fail;
    for (int i = 0; i < n_pages; i++)
        if (!pages[i].stored && !insert_page(&rec, &pages[i], replacing, err))
            goto fail;
    if (!pg_commit(s, err))
        goto fail;
    if (out_id)
        *out_id = rec.id;
    if (out_version)
        *out_version = rec.version;
    return TRUE;
fail:
    dq_error_prefix(err, "%s", doc->path);
    pg_rollback(s);
    return FALSE;
}

/* ---- files gone from disk (store_documents.c has the SQL both engines share) ---- */

GPtrArray *pgdocs_paths_under(DqStore *s, const char *prefix, const char *sql, GError **err) {
    PgParams p = {0};
    pg_text(&p, prefix);
    PGresult *r = pg_run(s, sql, &p, "listing the documents of a folder", err);
    if (r == NULL)
        return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)dq_known_path_free);
    for (int i = 0; i < PQntuples(r); i++) {
        DqKnownPath *k = g_new0(DqKnownPath, 1);
        k->path = pg_get_dup(r, i, 0);
        k->missing = pg_get_i64(r, i, 1) != 0;
        g_ptr_array_add(out, k);
    }
    PQclear(r);
    return out;
}

GPtrArray *pgdocs_paths_gone(DqStore *s, const char *sql, GError **err) {
    PGresult *r = pg_run(s, sql, NULL, "listing the documents gone", err);
    if (r == NULL)
        return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    for (int i = 0; i < PQntuples(r); i++)
        g_ptr_array_add(out, pg_get_dup(r, i, 0));
    PQclear(r);
    return out;
}

gboolean pgdocs_paths_mark(DqStore *s, char **gone, int n_gone, char **back, int n_back,
                           GError **err) {
    if (!pg_begin(s, err))
        return FALSE;
    for (int i = 0; i < n_gone + n_back; i++) {
        PgParams p = {0};
        pg_text(&p, i < n_gone ? gone[i] : back[i - n_gone]);
        if (!pg_do(s,
                   i < n_gone ? "UPDATE documents SET missing_since = docqa_now_iso() WHERE "
                                "path = $1 AND missing_since IS NULL"
                              : "UPDATE documents SET missing_since = NULL WHERE path = $1 AND "
                                "missing_since IS NOT NULL",
                   &p, "marking documents gone", NULL, err)) {
            pg_rollback(s);
            return FALSE;
        }
    }
    if (pg_commit(s, err))
        return TRUE;
    pg_rollback(s);
    return FALSE;
}

/* ---- file stamps (store_documents.c has the SQL) ---- */

gboolean pgdocs_stamp_find(DqStore *s, const char *path, const char *sql, gint64 *id, char **sha256,
                           DqDocumentStamp *stamp, GError **err) {
    PgParams p = {0};
    pg_text(&p, path);
    PGresult *r = pg_run(s, sql, &p, "looking up a file's stamp", err);
    if (r == NULL)
        return FALSE;
    if (PQntuples(r) > 0) {
        *id = pg_get_i64(r, 0, 0);
        *sha256 = pg_get_dup(r, 0, 1);
        stamp->dev = pg_get_i64(r, 0, 2);
        stamp->inode = pg_get_i64(r, 0, 3);
        stamp->bytes = pg_get_i64(r, 0, 4);
        stamp->mtime_ns = pg_get_i64(r, 0, 5);
        stamp->ctime_ns = pg_get_i64(r, 0, 6);
    }
    PQclear(r);
    return TRUE;
}

gboolean pgdocs_stamp_set(DqStore *s, const char *sql, gint64 id, const DqDocumentStamp *stamp,
                          GError **err) {
    PgParams p = {0};
    pg_i64(&p, id);
    pg_i64(&p, stamp->dev);
    pg_i64(&p, stamp->inode);
    pg_i64(&p, stamp->bytes);
    pg_i64(&p, stamp->mtime_ns);
    pg_i64(&p, stamp->ctime_ns);
    return pg_do(s, sql, &p, "storing a file's stamp", NULL, err);
}

/* ---- the page store's files (store_documents.c has the SQL) ---- */

GHashTable *pgdocs_image_set(DqStore *s, const char *sql, GError **err) {
    PGresult *r = pg_run(s, sql, NULL, "listing the page images", err);
    if (r == NULL)
        return NULL;
    GHashTable *set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (int i = 0; i < PQntuples(r); i++)
        g_hash_table_add(set, pg_get_dup(r, i, 0));
    PQclear(r);
    return set;
}

gboolean pgdocs_page_document_state(DqStore *s, const char *sql, gint64 page_id, int *version,
                                    int *newest, char **missing_since, GError **err) {
    PgParams p = {0};
    pg_i64(&p, page_id);
    PGresult *r = pg_run(s, sql, &p, "looking up a page's document", err);
    if (r == NULL)
        return FALSE;
    if (PQntuples(r) > 0) {
        *version = (int)pg_get_i64(r, 0, 0);
        *newest = (int)pg_get_i64(r, 0, 1);
        *missing_since = pg_get_dup(r, 0, 2);
    }
    PQclear(r);
    return TRUE;
}
