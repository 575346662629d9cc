/* Moving a database between stores (`docqa migrate`): SQLite -> PostgreSQL when an archive
 * outgrows one machine, PostgreSQL -> SQLite for small exports. */
#ifndef DQ_STORE_MIGRATE_H
#define DQ_STORE_MIGRATE_H

#include "store.h"

/* Copies documents, pages, questions, jobs, job_errors and answers from `from` to `to` (either
 * kind, both opened and so migrated to this docqa's schema), every column and id as stored, in
 * one transaction on `to`: a failure leaves `to` as it was. `to` must hold no documents,
 * questions or jobs yet (nothing is merged). *rows (may be NULL) counts the rows copied. */
gboolean dq_store_copy(DqStore *from, DqStore *to, gint64 *rows, GError **err);

/* docqa's views (v_answers, v_progress, documents_current) are derived from its tables: a user
 * may drop one, and nothing stored is lost with it. Their definitions are the newest ones in the
 * built-in migrations of the store's kind. */

/* The names of docqa's views that the database lacks (NULL-terminated, g_strfreev; empty when
 * none is missing), or NULL with err. */
char **dq_store_missing_views(DqStore *s, GError **err);

/* Creates the views dq_store_missing_views names, in one transaction; *made (may be NULL)
 * receives their names (g_strfreev). */
gboolean dq_store_restore_views(DqStore *s, char ***made, GError **err);

#endif
