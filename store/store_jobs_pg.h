/* The PostgreSQL halves of store_jobs.h and store_documents.h (store_jobs.c and
 * store_documents.c dispatch here). Same contracts as the public functions. */
#ifndef DQ_STORE_JOBS_PG_H
#define DQ_STORE_JOBS_PG_H

#include "store_documents.h"
#include "store_jobs.h"

GPtrArray *pgjobs_select_pages(DqStore *s, const gint64 *document_ids, int n_ids,
                               const char *const *where_sql, int n_where, int *n_failed_pages,
                               GError **err);
gboolean pgjobs_question_id(DqStore *s, const char *text, gint64 *id, GError **err);
gboolean pgjobs_enqueue(DqStore *s, const DqNewJob *jobs, int n, int *added, GError **err);
GPtrArray *pgjobs_claim(DqStore *s, const char *owner, const char *model_id, int limit,
                        gint64 now_ms, gint64 lease_ms, GArray *buried_ids, GError **err);
gboolean pgjobs_heartbeat(DqStore *s, const char *owner, gint64 now_ms, gint64 lease_ms, int *held,
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
gboolean pgjobs_counts(DqStore *s, const char *model_id, DqJobCounts *c, GError **err);
gboolean pgjobs_recent_rate(DqStore *s, int window_s, gint64 *answers, double *span_s,
                            GError **err);
GPtrArray *pgjobs_top_errors(DqStore *s, int limit, GError **err);
GPtrArray *pgjobs_answer_engines(DqStore *s, GError **err);
GPtrArray *pgjobs_model_snapshots(DqStore *s, const char *model_id, GError **err);
gboolean pgjobs_each_answer(DqStore *s, const char *question, DqAnswerRowFn fn, void *user,
                            GError **err);
gboolean pgjobs_has_pending(DqStore *s, const char *model_id, gboolean *pending, GError **err);
gboolean pgjobs_requeue(DqStore *s, DqRequeueWhat what, gint64 *requeued, GError **err);

gboolean pgdocs_find(DqStore *s, const char *path, const char *sha256, const char *render_settings,
                     DqDocumentLookup *found, GError **err);
gboolean pgdocs_record(DqStore *s, const DqDocumentRow *doc, gint64 existing_id, gboolean replace,
                       const char *render_settings, const DqPageRow *pages, int n_pages,
                       gint64 *out_id, int *out_version, GError **err);

#endif
