/* The docqa database: every SQL statement of the project lives behind this interface.
 *
 * Two backends stand behind it. SQLite is the embedded default (a file path or "sqlite:PATH").
 * PostgreSQL ("postgresql://..." or "postgres://...", through libpq; store_pg.c) is for many
 * workers on many machines sharing one queue; its migrations are schema/postgres/. Each store_*.c
 * function dispatches on dq_store_kind(); the PostgreSQL halves live in store_*_pg.c.
 *
 * SQLite: opening a store applies the
 * migrations compiled in from schema/sqlite/ in order, all in one transaction (a failure leaves
 * the version the database had), and records them in `schema_migrations`; PRAGMA user_version
 * mirrors the latest. A migration that rebuilds a table keeps the users' own indexes and
 * triggers on it. An upgrade is said on stderr, once; a read-only connection that would need one
 * fails, saying so. A database written by a newer docqa (a migration this binary does not know)
 * is refused rather than guessed at.
 *
 * Connection settings, and why:
 *   journal_mode=WAL     readers (docqa status, users' sqlite3 shells) never block workers;
 *   busy_timeout         concurrent writers wait for each other instead of failing SQLITE_BUSY;
 *   foreign_keys=ON      pages cannot outlive documents, answers cannot outlive jobs;
 *   synchronous=NORMAL   with WAL, a committed transaction survives a process crash; a power
 *                        loss may roll back the transactions committed since the last
 *                        checkpoint (the -wal is synced only there) but never corrupts the file.
 *                        A job rolled back is run again. What leaves the database for good
 *                        (export's rows) is synced first (dq_store_sync_committed): FULL would
 *                        sync every commit, costing the queue (DEVELOPERS.md has the numbers).
 */
#ifndef DQ_STORE_H
#define DQ_STORE_H

#include <glib.h>
#include <signal.h>
#include <sqlite3.h>

typedef struct DqStore DqStore;
typedef struct pg_conn PGconn; /* libpq's connection, declared here so callers need no libpq */

typedef enum { DQ_STORE_SQLITE = 0, DQ_STORE_POSTGRES } DqStoreKind;

/* The location when none is given: $DOCQA_DB, else "docqa.db". */
const char *dq_store_default_location(void);

/* TRUE for "postgresql:..." and "postgres:..." locations (any case; opening one that lacks the
 * "//" fails with the form to write). */
gboolean dq_store_location_is_postgres(const char *location);

/* `location` as an argument to paste into a command (advice such as `docqa migrate --from X`):
 * as given, in single quotes where a shell would read more than a word in it; not the display
 * form (dq_store_path), which keeps only a PostgreSQL location's user, host, port and database
 * and cannot say a socket folder's host=. One that holds a password has it hidden ("***"), and
 * *password_hidden is set. g_free. */
char *dq_store_location_pasteable(const char *location, gboolean *password_hidden);

/* The content-addressed page store, one home for ingest (which writes it) and the workers (which
 * read it): <dir>/<sha[0:2]>/<sha[2:4]>/<sha>.png. For SQLite <dir> is "<database file>.pages";
 * for PostgreSQL it is $DOCQA_PAGES, a directory every worker machine mounts (NULL and an error
 * when unset). Why a shared directory and not bytea: see schema/postgres/0001_documents_pages.sql.
 */
char *dq_store_page_dir_for(const char *location, GError **err);
/* For an SQLite location while DOCQA_PAGES is set (to another folder than its page store): a
 * note saying that it is ignored and where the page store is (g_free); NULL otherwise. The
 * symbolic links of an SQLite location are followed, as SQLite follows them: the page store is
 * beside the database's real file. */
char *dq_store_pages_env_ignored(const char *location);
char *dq_store_page_path(const char *page_dir, const char *image_sha256);
/* The file SQLite opens for the database file `path`, every symbolic link on the way followed
 * (then absolute); `path` itself when no link leads elsewhere. Its -wal and -shm are beside it. */
char *dq_store_real_file(const char *path);

/* Opens (creating if needed) and migrates the database at `location`. Every open refuses a
 * database that holds other tables and none of docqa's (another program's, named by mistake). */
DqStore *dq_store_open(const char *location, GError **err);
/* The same, applying the built-in migrations only up to `max_version` (<= 0: all): for tests
 * that upgrade a database made by an older docqa. */
DqStore *dq_store_open_at(const char *location, int max_version, GError **err);
/* Opens an existing docqa database, migrating it when a newer docqa added tables since: for the
 * commands that read or change what is there (status, export, requeue, migrate's source). Fails,
 * naming it, when the SQLite file does not exist or the database holds no docqa tables; an
 * up-to-date PostgreSQL database is opened without DDL, so a role that may only read can. */
DqStore *dq_store_open_existing(const char *location, GError **err);
/* dq_store_open_existing for the commands that only read (status, export): an SQLite file
 * that this process may not write, or in a folder it may not write, is opened read-only (no
 * migration: one that needs it fails, naming the folder). On a full disk, where SQLite cannot
 * make the -shm a WAL database is read through, one whose -wal holds nothing more is read as
 * immutable, saying so on stderr (dq_store_check_unchanged); one whose -wal holds transactions
 * fails, saying the disk is full and what to free. */
DqStore *dq_store_open_reader(const char *location, GError **err);
/* After dq_store_open_reader read an SQLite database past a full disk (as immutable, the file
 * alone, saying so on stderr): FALSE, saying so, when the file has changed since (a writer that
 * found room checkpointed into it), as what was read may then mix two moments. TRUE otherwise,
 * and for every other store. Readers call it once they have read everything. */
gboolean dq_store_check_unchanged(DqStore *store, GError **err);
/* Every transaction committed so far, by any connection, on disk for good: a power loss can no
 * longer roll it back. SQLite runs synchronous=NORMAL, which syncs the -wal only at checkpoints,
 * so the newest commits live in the page cache until then; this syncs the -wal (and, the first
 * time, its folder, which holds its name) through the connection's own handle. What a reader
 * hands on (export's rows, before its checkpoint moves past them) must not be rolled back
 * afterwards: the answers it gave would be made again with the same commit numbers, and the
 * chain would skip those. PostgreSQL: nothing to do (a commit is flushed to its WAL). */
gboolean dq_store_sync_committed(DqStore *store, GError **err);
/* After an error with code DQ_ERR_DB_LOST (a PostgreSQL server restarted, an idle session
 * dropped): connects again, forgetting the statements prepared on the old connection. Fails,
 * again with DQ_ERR_DB_LOST, while the server cannot be reached. SQLite: nothing to do. */
gboolean dq_store_reconnect(DqStore *store, GError **err);

/* How long a worker waits out a database that stays locked by another connection (SQLite) or
 * out of reach (PostgreSQL) before it gives up: ten busy limits, 10 minutes
 * (DOCQA_TEST_BUSY_LIMIT_MS, which shortens the busy limit for tests, shortens this too). */
gint64 dq_store_outage_limit_ms(void);

/* SQLite: fails, saying which, when the database file was deleted or replaced by another since
 * it was opened (writes would go on into the unlinked or old file and be lost), or its schema
 * was upgraded by another docqa since. PostgreSQL: TRUE. */
gboolean dq_store_check_file(DqStore *store, GError **err);

/* SQLite: sets `bytes` of the database's file system aside for giving jobs back should the disk
 * fill (store_jobs_release_except frees them when its write finds the disk full: the write, and
 * a checkpoint that grows the database file, need room that is gone by then). Held as a file
 * beside the database that is unlinked at once, so only this process sees it and a crash frees
 * it too. Fails, saying how much is free, when the disk has not that much room; a folder where
 * it cannot be made for another reason (read-only) goes without. PostgreSQL: TRUE, nothing
 * done (the server's disk is its own). */
gboolean dq_store_keep_reserve(DqStore *store, guint64 bytes, GError **err);
/* Frees the room dq_store_keep_reserve set aside; FALSE when there was none. */
gboolean dq_store_drop_reserve(DqStore *store);

/* Closes the connection after finalizing every statement the store's modules cached on it. */
void dq_store_close(DqStore *store);

/* How long a connection told to stop still waits for a lock another connection holds. */
#define DQ_STORE_STOP_GRACE_SECONDS 5
#define DQ_STORE_STOP_GRACE_MS      (DQ_STORE_STOP_GRACE_SECONDS * 1000)

/* Once *stop is set (a worker told to stop by SIGINT, SIGTERM or SIGHUP), a statement that waits
 * for another connection (SQLite: its write lock, instead of the busy limit, a minute;
 * PostgreSQL: a lock, or a server that does not answer: the statement is cancelled) gives up
 * DQ_STORE_STOP_GRACE_MS after the first wait that saw it set: a worker stopped while an sqlite3
 * shell or a psql session holds a lock stops within seconds rather than when the lock is given
 * up, leaving what it could not write to the leases. NULL: no such limit. */
void dq_store_set_stop(DqStore *store, volatile sig_atomic_t *stop);

DqStoreKind dq_store_kind(DqStore *store);

/* Number of the newest migration applied (0 for none). 0 too when it cannot be read: what is
 * shown to a user reads it with dq_store_read_schema_version. */
int dq_store_schema_version(DqStore *store);

/* Number of the newest migration applied (0 for none) into *version; FALSE and an error naming
 * the database when it cannot be read. */
gboolean dq_store_read_schema_version(DqStore *store, int *version, GError **err);

/* Path of the database file, or the PostgreSQL location with any password removed (for
 * messages and for dq_store_page_dir_for). */
const char *dq_store_path(DqStore *store);

/* Low-level access for the store's own modules (store_*.c) and tests. NULL for the other kind. */
sqlite3 *dq_store_sqlite(DqStore *store);
PGconn *dq_store_pg(DqStore *store);

/* Runs `sql` (no results, no parameters: fixed text only) or fails with the database's message. */
gboolean dq_store_exec(DqStore *store, const char *sql, GError **err);

/* Starts a read-only transaction whose reads all see the database as it was at its first one
 * (SQLite's deferred BEGIN; PostgreSQL's REPEATABLE READ), so that several queries agree with one
 * another while workers commit; end it with dq_store_exec(store, "COMMIT", ...). */
gboolean dq_store_begin_snapshot(DqStore *store, GError **err);

#endif
