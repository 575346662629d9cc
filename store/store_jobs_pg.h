/* The PostgreSQL halves of store_jobs.h and store_documents.h (store_jobs.c and
 * store_documents.c dispatch here). Same contracts as the public functions. */
#ifndef DQ_STORE_JOBS_PG_H
#define DQ_STORE_JOBS_PG_H

#include "store_documents.h"
#include "store_jobs.h"

GPtrArray *pgjobs_select_pages(DqStore *s, const gint64 *document_ids, int n_ids,
                               const char *const *where_sql, int n_where, GError **err);
gboolean pgjobs_question_id(DqStore *s, const char *text, gint64 *id, GError **err);
gboolean pgjobs_enqueue(DqStore *s, const DqNewJob *jobs, int n, int *added, GError **err);
GPtrArray *pgjobs_claim(DqStore *s, const char *owner, const char *model_id, int limit,
                        gint64 now_ms, gint64 lease_ms, GArray *buried_ids, GError **err);
gboolean pgjobs_heartbeat(DqStore *s, const char *owner, gint64 now_ms, gint64 lease_ms,
                          const gint64 *in_flight, int n_in_flight, GArray *gone, int *held,
                          GError **err);
gboolean pgjobs_complete(DqStore *s, const char *owner, const DqJobAnswer *answers, int n,
                         int *written, GError **err);
gboolean pgjobs_fail(DqStore *s, const char *owner, gint64 job_id, const char *kind,
                     const char *message, gboolean retryable, gint64 now_ms, gint64 backoff_ms,
                     DqJobState *new_state, GError **err);
gboolean pgjobs_release_except(DqStore *s, const char *owner, const gint64 *keep, int n_keep,
                               int *released, GError **err);
gboolean pgjobs_count_in_state(DqStore *s, const gint64 *ids, int n, DqJobState state,
                               gint64 *count, GError **err);
gboolean pgjobs_counts(DqStore *s, const char *model_id, gint64 now_ms, DqJobCounts *c,
                       GError **err);
gboolean pgjobs_recent_rate(DqStore *s, const char *since, gint64 *answers, double *span_s,
                            GError **err);
GPtrArray *pgjobs_top_errors(DqStore *s, int limit, GError **err);
gboolean pgjobs_last_error_id(DqStore *s, gint64 *id, GError **err);
GPtrArray *pgjobs_errors_after(DqStore *s, const char *model_id, gint64 after_id,
                               const char *worker_tag, const gint64 *buried, int n_buried,
                               int limit, GError **err);
GPtrArray *pgjobs_answer_engines(DqStore *s, GError **err);
GPtrArray *pgjobs_model_snapshots(DqStore *s, const char *model_id, GError **err);
GPtrArray *pgjobs_progress(DqStore *s, GError **err);
gboolean pgjobs_progress_leases(DqStore *s, gint64 now_ms, GPtrArray *rows, GError **err);
gboolean pgjobs_each_answer(DqStore *s, const GArray *question_ids, gboolean current,
                            const DqAnswerRange *range, const GArray *document_ids,
                            DqAnswerRowFn fn, void *user, GError **err);
gboolean pgjobs_commit_checkpoint(DqStore *s, gint64 *checkpoint, GError **err);
gboolean pgjobs_has_pending(DqStore *s, const char *model_id, gboolean *pending, GError **err);
GPtrArray *pgjobs_pending_models(DqStore *s, const char *except, int limit, GError **err);
GPtrArray *pgjobs_requeue(DqStore *s, const DqJobFilter *filter, gboolean dry_run, GError **err);
GPtrArray *pgjobs_cancel(DqStore *s, const DqJobFilter *filter, gboolean dry_run, GError **err);
gboolean pgjobs_where_documents(DqStore *s, const char *where, GArray *ids, GError **err);
gboolean pgjobs_document_exists(DqStore *s, gint64 id, gboolean *exists, GError **err);
gboolean pgjobs_find_question(DqStore *s, const char *text, gint64 *id, GError **err);
gboolean pgjobs_model_known(DqStore *s, const char *model_id, gboolean *known, GError **err);

gboolean pgdocs_find(DqStore *s, const char *path, const char *sha256, const char *render_settings,
                     DqDocumentLookup *found, GError **err);
gboolean pgdocs_record(DqStore *s, const DqDocumentRow *doc, gint64 existing_id, gboolean replace,
                       const char *render_settings, const DqPageRow *pages, int n_pages,
                       gint64 *out_id, int *out_version, GError **err);
GPtrArray *pgdocs_stored_pages(DqStore *s, gint64 id, const char *render_settings, const char *sql,
                               GError **err);
GPtrArray *pgdocs_paths_under(DqStore *s, const char *prefix, const char *sql, GError **err);
GPtrArray *pgdocs_paths_gone(DqStore *s, const char *sql, GError **err);
gboolean pgdocs_paths_mark(DqStore *s, char **gone, int n_gone, char **back, int n_back,
                           GError **err);
gboolean pgdocs_stamp_find(DqStore *s, const char *path, const char *sql, gint64 *id, char **sha256,
                           DqDocumentStamp *stamp, GError **err);
gboolean pgdocs_stamp_set(DqStore *s, const char *sql, gint64 id, const DqDocumentStamp *stamp,
                          GError **err);
GHashTable *pgdocs_image_set(DqStore *s, const char *sql, GError **err);
gboolean pgdocs_page_document_state(DqStore *s, const char *sql, gint64 page_id, int *version,
                                    int *newest, char **missing_since, GError **err);

#endif
