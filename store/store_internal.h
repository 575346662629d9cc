/* What the store's own modules share (never included outside store/). */
#ifndef DQ_STORE_INTERNAL_H
#define DQ_STORE_INTERNAL_H

#include "store.h"
#include "store_jobs.h"

struct DqStore {
    DqStoreKind kind;
    sqlite3 *db;               /* SQLite: the connection; its statement cache is the list
                                * sqlite3_next_stmt walks (store_jobs.c) */
    PGconn *pg;                /* PostgreSQL: the connection */
    GHashTable *pg_statements; /* PostgreSQL: SQL text -> name of the statement prepared on pg */
    gint64
        pg_clock_offset_ms;  /* PostgreSQL: the server's clock minus this machine's (store_pg.c) */
    gint64 pg_clock_read_at; /* PostgreSQL: when it was measured (g_get_monotonic_time; 0: never) */
    char *path;              /* file path, or the location without its password */
    guint64 dev, ino;        /* SQLite: the file opened, to notice it replaced or deleted */
    gboolean file_gone;      /* SQLite: dq_store_check_file found it replaced or deleted */
    int schema_version;      /* SQLite: user_version once opened and migrated */
    gboolean immutable;      /* SQLite: opened as immutable (dq_store_open_reader, read-only
                              * media without -shm): other connections must be too */
    gboolean read_past_full_disk; /* SQLite: opened as immutable because the disk was full
                                   * (dq_store_open_reader); size, mtime_ns and ctime_ns are
                                   * the file's then, for dq_store_check_unchanged */
    gint64 size, mtime_ns, ctime_ns;
    volatile sig_atomic_t *stop; /* dq_store_set_stop's flag, or NULL */
    gint64 stop_seen_us;         /* when a statement's wait for a lock first saw *stop set (0:
                                  * not yet; store_jobs.c busy_wait, store_pg.c exec_stoppable) */
    gboolean busy_stopped;       /* the last such wait ended because *stop was set */
    gboolean lock_waited;        /* SQLite: busy_wait ran since begin_timed cleared it
                                  * (store_jobs.c) */
    gboolean has_reserve;        /* SQLite: reserve_fd holds dq_store_keep_reserve's room */
    int reserve_fd;              /* an unlinked file on the database's file system */
};

/* Sets the v_progress row of (question, model_id) in `rows` (DqProgressRow) to `running` jobs
 * with a live lease and `stalled` ones (store_jobs_progress_at). */
void store_jobs_progress_set_leases(GPtrArray *rows, const char *question, const char *model_id,
                                    gint64 running, gint64 stalled);

/* SQLite: the URI that opens `path` as immutable (file:...?immutable=1, ? and # escaped), or
 * NULL where it has none. g_free. */
char *store_sqlite_immutable_uri(const char *path);

/* answers' columns past id, in the order answers and answers_superseded share (schema 0005;
 * model_fingerprint: 0008). */
#define DQ_ANSWER_COLUMNS                                                                          \
    "job_id, text, prompt_tokens, generated_tokens, model_id, generation_settings, worker, "       \
    "started_at, finished_at, ms_image, ms_vision, ms_prefill, ms_decode, ms_total, device, "      \
    "weights, exact, model_fingerprint"

/* The columns both stores read: v_progress's (DqProgressRow), and v_answers' and
 * v_current_answers' (DqAnswerRow), in the order their readers take them. */
#define DQ_PROGRESS_SQL                                                                            \
    "SELECT question, model, total, queued, running, done, failed, dead, retrying, stalled, "      \
    "cancelled, percent_done, asked_at, last_finished_at FROM v_progress"
#define DQ_ANSWER_ROW_COLUMNS                                                                      \
    "document_path, page, question, answer, model, finished_at, document_id, document_sha256, "    \
    "job_id, device, weights, exact, n_res, tile, longest_edge, prompt, max_new_tokens, "          \
    "do_sample, model_fingerprint, page_id, generated_tokens, ms_total"
/* then v_current_answers' own two; a reader of v_answers selects two NULLs in their place */
#define DQ_ANSWER_ROW_ASKED_COLUMNS "asked_document_id, asked_path"

/* A job leaving running for good (failed, or dead after its last attempt) that already has an
 * answer goes back to 'done' instead: `docqa requeue --approximate` put it back, and its
 * approximate answer still stands (a failed job beside a current answer would say two things at
 * once). Its errors stay in job_errors and last_error. The test, as SQL over `jobs`. */
#define DQ_SQL_HAS_ANSWER "EXISTS (SELECT 1 FROM answers a WHERE a.job_id = jobs.id)"
/* Such a job's finished_at is its answer's, as it was before the requeue: it still says when the
 * answer that stands was made (v_answers, status's last answer, export --since), not when an
 * attempt that answered nothing gave up. NULL without an answer. */
#define DQ_SQL_ANSWER_FINISHED_AT "(SELECT a.finished_at FROM answers a WHERE a.job_id = jobs.id)"

/* A job_errors row e that ended its job j for good (store_jobs_errors_after): the job's newest
 * error, and the job failed or dead, or done again with the answer it had before the error (a
 * done job answered after the error, on a later attempt, is not). SQL over job_errors e, jobs j. */
#define DQ_SQL_ENDED_BY_ERROR                                                                      \
    "NOT EXISTS (SELECT 1 FROM job_errors n WHERE n.job_id = e.job_id AND n.id > e.id) AND "       \
    "(j.state IN ('failed', 'dead') OR (j.state = 'done' AND j.finished_at < e.at))"

/* What a claim records of a job whose lease ran out (its holder died or hung): job_errors' kind
 * and message, and jobs.last_error ("kind: message"), as SQL literals. */
#define DQ_SQL_LEASE_EXPIRED_KIND    "'lease_expired'"
#define DQ_SQL_LEASE_EXPIRED_MESSAGE "'lease expired: the worker died or hung'"
#define DQ_SQL_LEASE_EXPIRED_ERROR   "'lease_expired: lease expired: the worker died or hung'"

/* docqa cancel's and requeue's UPDATE of the jobs `filter` (each store's JOB_FILTER_SQL over
 * `jobs j`) takes; `now` is the store's SQL for the time as ISO-8601 text. A cancelled job that
 * has an answer goes back to done with it (DQ_SQL_HAS_ANSWER's reason). */
#define DQ_SQL_CANCEL(now, filter)                                                                 \
    "UPDATE jobs SET state = CASE WHEN " DQ_SQL_HAS_ANSWER " THEN 'done' "                         \
    "ELSE 'cancelled' END, finished_at = CASE WHEN " DQ_SQL_HAS_ANSWER                             \
    " THEN " DQ_SQL_ANSWER_FINISHED_AT " "                                                         \
    "ELSE " now " END, lease_owner = NULL, lease_expires_ms = NULL, "                              \
    "not_before_ms = 0 WHERE id IN (SELECT j.id " filter ")"
#define DQ_SQL_REQUEUE(filter)                                                                     \
    "UPDATE jobs SET state = 'queued', attempts = 0, not_before_ms = 0, "                          \
    "finished_at = NULL WHERE id IN (SELECT j.id " filter ")"

/* Fails, with err naming the store, for a database whose answer_commit_seq row is gone. */
gboolean store_jobs_checkpoint_lost(DqStore *s, GError **err);

/* A failure's cause without the paths that make each message of it different: docqa's messages
 * name their file first ("FILE: what is wrong") and put other files in parentheses ("(DOCUMENT,
 * page N)"), so the leading "FILE: " when it holds a '/' (or a job's "job N: "), and everything
 * from a "(" whose first
 * word holds a '/' to the message's last ")" (a file name may hold parentheses itself), are
 * replaced by "...". `docqa status` groups failures by kind and this, so that eleven pages whose
 * image is missing are one line. The same regular expressions run in SQLite (GRegex, as the
 * function docqa_error_reason(message), store_sqlite.c) and PostgreSQL (regexp_replace): PCRE and
 * PostgreSQL's ARE read them alike. */
#define DQ_REASON_FILE_RE  "^([^:]*/[^:]*|job [0-9]+): "
#define DQ_REASON_FILE_BY  "...: "
#define DQ_REASON_PAREN_RE "\\([^() ]*/.*\\)"
#define DQ_REASON_PAREN_BY "(...)"

/* The state a job was left in by this owner's failure with this kind and message, when that is
 * its newest attempt's error and the owner no longer leases it: a store_jobs_fail run again after
 * its COMMIT went through unheard (a lost PostgreSQL connection) reports what the first try did.
 * No row otherwise. Parameters: job id, owner, kind, message. */
#define SQL_FAILED_BEFORE(id, owner, kind, message)                                                \
    "SELECT state FROM jobs WHERE id = " id " AND state <> 'running' AND EXISTS (SELECT 1 FROM "   \
    "job_errors e WHERE e.job_id = jobs.id AND e.attempt = jobs.attempts AND e.worker = " owner    \
    " AND e.kind = " kind " AND e.message = " message ")"

/* store_jobs.c, for the store's other modules: the crash-test hook (NULL-safe), and "1,2,3"
 * between `open` and `close`, an id list as one parameter (JSON for SQLite, '{...}' for
 * PostgreSQL). */
void store_jobs_hook(const char *point);
char *store_jobs_missing(gboolean page, gboolean document, gboolean question);
char *store_jobs_id_list(const gint64 *ids, int n, char open, char close);
/* The names of the states whose bit (1 << DqJobState) is set: a JSON list for SQLite, an array
 * literal ('{queued,failed}') for PostgreSQL. */
char *store_jobs_state_list(guint states, gboolean json);
/* The state named `name` (dq_job_state_name's words); DQ_JOB_N_STATES for NULL or another word. */
DqJobState store_jobs_state_from_name(const char *name);
/* Orders gint64 ids ascending, for g_array_sort. */
gint store_jobs_cmp_id(gconstpointer a, gconstpointer b);

/* After an SQLite error on s has been put in *err, adds what SQLite's words leave out: for a
 * full disk, or a failed write while the file system holding the database has little room left,
 * how little (SQLite's "disk I/O error" alone sends one looking for a broken disk); for a lock
 * held past the busy limit, who may hold it; for a database that cannot be written, whose it is
 * and its mode (or that its folder cannot be written); for a temporary file SQLite could not
 * make (a big sort), the folder it tried and the variable that named it (TMPDIR). */
void store_sqlite_explain(DqStore *s, GError **err);

/* How long an SQLite connection waits for another's write lock before SQLITE_BUSY, in ms: a
 * minute; DOCQA_TEST_BUSY_LIMIT_MS shortens it, for tests of what comes after. */
gint64 store_busy_limit_ms(void);

/* For `ask --document ID`, from its row in documents: TRUE when it can be asked about; FALSE,
 * with err saying why, when it does not `exist` or it `failed` to ingest (its path, error code
 * and message) and has no pages. Shared by the SQLite and PostgreSQL page selection, so both say
 * it alike. */
gboolean store_jobs_document_askable(DqStore *s, gint64 id, gboolean exists, const char *path,
                                     gboolean failed, const char *code, const char *message,
                                     GError **err);

/* The id of a new job's question: its question_id, or, when 0, that of the question whose text
 * it carries, stored when new (store_jobs_question_id) inside the enqueue's transaction, so that
 * an enqueue rolled back leaves no question behind; `known` (text -> id, freed values) looks each
 * text up once. Shared by the SQLite and PostgreSQL enqueue. */
gboolean store_new_job_question(DqStore *s, const DqNewJob *job, GHashTable *known, gint64 *id,
                                GError **err);

/* The built-in migrations (store_migrate.c), for both stores' upgrades. */
/* "0003_jobs.sql" -> 3; 0 when the name does not start with a positive number and '_', or does
 * not end in ".sql". */
int store_migration_number(const char *name);
/* The names in resource folder `folder` ("schema/sqlite", "schema/postgres") in order
 * (g_strfreev), *newest their last one's number; NULL, with err, when a name is malformed or the
 * numbers do not run 1, 2, 3 ... (a gap or a duplicate). */
char **store_migration_names(const char *folder, int *newest, GError **err);
/* FALSE, with err saying so, for a database whose schema version `current` is newer than the
 * `newest` this docqa knows. */
gboolean store_schema_too_new(DqStore *s, int current, int newest, GError **err);

#ifdef DOCQA_HAVE_POSTGRES
/* store_pg.c */
DqStore *store_pg_open(const char *location, int max_version, gboolean must_exist, GError **err);
gboolean store_pg_reconnect(DqStore *s, GError **err);
void store_pg_close(DqStore *s);
gboolean store_pg_exec(DqStore *s, const char *sql, GError **err);
int store_pg_schema_version(DqStore *s);
gboolean store_pg_read_schema_version(DqStore *s, int *version, GError **err);
/* TRUE when `word` (its case aside) is a connection keyword of the libpq docqa runs with. */
gboolean store_pg_is_conninfo_keyword(const char *word);
/* A postgresql:// location as messages show it: user, host, port and database, never the
 * password (nor any other option); where libpq cannot parse it, the text with passwords hidden. */
char *store_pg_display_location(const char *location);
/* A postgresql:// location as written, its passwords ("user:secret@", "password=secret") hidden
 * as "***". */
char *store_pg_hide_passwords(const char *location);
/* Calls a PostgreSQL half when the store is PostgreSQL: `PG_DISPATCH(s, return f(...));`. */
#define PG_DISPATCH(s, stmt)                                                                       \
    do {                                                                                           \
        if ((s)->kind == DQ_STORE_POSTGRES) {                                                      \
            stmt;                                                                                  \
        }                                                                                          \
    } while (0)
#else
#define PG_DISPATCH(s, stmt)                                                                       \
    do {                                                                                           \
    } while (0)
#endif

#endif
