/* The docqa database: every SQL statement of the project lives behind this interface.
 *
 * SQLite is the embedded store (a file path or "sqlite:PATH"). Opening a store applies the
 * migrations compiled in from schema/sqlite/ in order, each in its own transaction, and records
 * them in `schema_migrations`; PRAGMA user_version mirrors the latest. A database written by a
 * newer docqa (a migration this binary does not know) is refused rather than guessed at.
 *
 * Connection settings, and why:
 *   journal_mode=WAL     readers (docqa status, users' sqlite3 shells) never block workers;
 *   busy_timeout         concurrent writers wait for each other instead of failing SQLITE_BUSY;
 *   foreign_keys=ON      pages cannot outlive documents, answers cannot outlive jobs;
 *   synchronous=NORMAL   with WAL, a committed transaction survives a process crash (the only
 *                        crash the queue must survive without loss; power loss may drop the last
 *                        transactions but never corrupts the file).
 */
#ifndef DQ_STORE_H
#define DQ_STORE_H

#include <glib.h>
#include <sqlite3.h>

typedef struct DqStore DqStore;

/* Opens (creating if needed) and migrates the database at `location`. */
DqStore *dq_store_open(const char *location, GError **err);
void dq_store_close(DqStore *store);

/* Number of the newest migration applied (0 for none). */
int dq_store_schema_version(DqStore *store);

/* Path of the database file (for the page store that sits beside it). */
const char *dq_store_path(DqStore *store);

/* Low-level access for the store's own modules (store_*.c). Nothing outside store/ uses it. */
sqlite3 *dq_store_sqlite(DqStore *store);

/* Runs `sql` (no results) or fails with the database's message. */
gboolean dq_store_exec(DqStore *store, const char *sql, GError **err);

#endif
