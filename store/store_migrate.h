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

#endif
