#include "dq_error.h"
#include "store.h"
#include "store_jobs.h"
#include "store_migrate.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int count_rows(DqStore *s, const char *sql) {
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(dq_store_sqlite(s), sql, -1, &st, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static int deny_user_version(void *arg, int action, const char *a, const char *b, const char *c,
                             const char *d) {
    (void)arg, (void)b, (void)c, (void)d;
    return action == SQLITE_PRAGMA && g_ascii_strcasecmp(a, "user_version") == 0 ? SQLITE_DENY
                                                                                 : SQLITE_OK;
}

/* The schema version shown to a user (docqa migrate prints it) is the database's, or an error
 * naming it: a read that fails is no "version 0". SQLite's authorizer makes it fail. */
static void test_schema_version_read_fails(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "docqa.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    int v = -1;
    g_assert_true(dq_store_read_schema_version(s, &v, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(v, ==, dq_store_schema_version(s));
    g_assert_cmpint(v, >=, 13);
    sqlite3_set_authorizer(dq_store_sqlite(s), deny_user_version, NULL);
    g_assert_false(dq_store_read_schema_version(s, &v, &err));
    g_assert_nonnull(err);
    char *want = g_strdup_printf("%s: reading the schema version: ", path);
    if (!g_str_has_prefix(err->message, want))
        g_error("said: %s", err->message);
    g_free(want);
    g_clear_error(&err);
    sqlite3_set_authorizer(dq_store_sqlite(s), NULL, NULL);
    dq_store_close(s);
    g_free(path);
    g_free(dir);
}

/* The reads SQLite makes of files whose path starts with this fail with EIO, found by the file
 * the fd names: SQLite's own hook for its system calls (the unix VFS's xSetSystemCall), set
 * before the store's first use in the process so that docqa's recorder of failures wraps it. */
static char *failing_reads_of;
static sqlite3_syscall_ptr passing_pread;

static ssize_t pread_failing_there(int fd, void *buf, size_t n, off_t at) {
    char link[64], target[4096];
    g_snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (failing_reads_of != NULL && len > 0) {
        target[len] = '\0';
        if (g_str_has_prefix(target, failing_reads_of)) {
            errno = EIO;
            return -1;
        }
    }
    return ((ssize_t(*)(int, void *, size_t, off_t))passing_pread)(fd, buf, n, at);
}

/* A read of the schema version that fails (the -wal's page could not be read) says which file
 * and why, as SQLite's other failures do: "database disk image is malformed" alone reads as a
 * corrupt database. In a subprocess, so that the hook is set before SQLite's first use. */
static void test_schema_version_read_io_error(void) {
    if (!g_test_subprocess()) {
        g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_passed();
        return;
    }
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix");
    const char *name = vfs->xGetSystemCall(vfs, "pread64") != NULL ? "pread64" : "pread";
    passing_pread = vfs->xGetSystemCall(vfs, name);
    g_assert_cmpint(vfs->xSetSystemCall(vfs, name, (sqlite3_syscall_ptr)pread_failing_there), ==,
                    SQLITE_OK);
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "docqa.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    /* another connection commits: the store's cached page 1 is stale, read again from the -wal */
    sqlite3 *other = NULL;
    g_assert_cmpint(sqlite3_open(path, &other), ==, SQLITE_OK);
    char *sql = g_strdup_printf("PRAGMA user_version = %d", dq_store_schema_version(s));
    g_assert_cmpint(sqlite3_exec(other, sql, NULL, NULL, NULL), ==, SQLITE_OK);
    g_free(sql);
    char *real = realpath(path, NULL);
    failing_reads_of = real;
    int version = 0;
    g_assert_false(dq_store_read_schema_version(s, &version, &err));
    failing_reads_of = NULL;
    g_assert_nonnull(err);
    char *want = g_strdup_printf("(read %s", real);
    if (strstr(err->message, want) == NULL || strstr(err->message, g_strerror(EIO)) == NULL)
        g_error("no '%s ...: %s' in: %s", want, g_strerror(EIO), err->message);
    g_free(want);
    g_clear_error(&err);
    free(real);
    sqlite3_close(other);
    dq_store_close(s);
    g_free(path);
    g_free(dir);
}

static void test_open_migrates_and_reopens(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "docqa.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    int v = dq_store_schema_version(s);
    g_assert_cmpint(v, >=, 1);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM schema_migrations"), ==, v);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM sqlite_schema WHERE name='documents' "
                                  "AND sql LIKE '%STRICT'"),
                    ==, 1);
    g_assert_cmpint(count_rows(s, "SELECT journal_mode='wal' FROM pragma_journal_mode"), ==, 1);
    g_assert_cmpint(count_rows(s, "SELECT foreign_keys FROM pragma_foreign_keys"), ==, 1);
    dq_store_close(s);

    /* Reopening applies nothing twice. */
    s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, v);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM schema_migrations"), ==, v);
    dq_store_close(s);
    g_free(path);
    g_free(dir);
}

static void test_newer_schema_refused(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "future.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_exec(s, "PRAGMA user_version = 9999", &err));
    dq_store_close(s);
    g_assert_null(dq_store_open(path, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "newer"));
    g_assert_nonnull(strstr(err->message, path));
    g_error_free(err);
    g_free(path);
    g_free(dir);
}

static void test_garbage_file_refused(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "not-a.db", NULL);
    g_assert_true(g_file_set_contents(path,
                                      "this is not an SQLite database, just text.\n"
                                      "it is long enough to have a header......\n",
                                      -1, NULL));
    GError *err = NULL;
    g_assert_null(dq_store_open(path, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, path));
    g_error_free(err);
    /* The user's file is left as it was. */
    char *after = dq_test_read_file(path, NULL);
    g_assert_true(g_str_has_prefix(after, "this is not an SQLite database"));
    g_free(after);
    g_free(path);
    g_free(dir);
}

/* A database file one may write in a folder one may not: SQLite says "attempt to write a readonly
 * database", of a file that is not; the message names the folder. Run as nobody when the tests
 * run as root (root may write anywhere). */
static void test_folder_not_writable(void) {
    char *dir = dq_test_tmpdir();
    char *sub = g_build_filename(dir, "ro", NULL);
    g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
    g_assert_cmpint(g_mkdir(sub, 0755), ==, 0);
    char *path = g_build_filename(sub, "a.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    dq_store_close(s); /* the last connection: -wal and -shm are removed */
    g_assert_cmpint(g_chmod(sub, 0555), ==, 0);
    /* The file writable, and not: the folder is what stops SQLite either way. */
    for (int mode = 0666; mode != 0; mode = mode == 0666 ? 0444 : 0) {
        g_assert_cmpint(g_chmod(path, mode), ==, 0);
        fflush(NULL);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
            if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
                _exit(3);
            DqStore *r = dq_store_open_existing(path, &err);
            if (r == NULL)
                g_test_message("as uid %d: %s", (int)geteuid(), err->message);
            _exit(r == NULL && strstr(err->message, "must be writable too") != NULL &&
                          strstr(err->message, sub) != NULL &&
                          strstr(err->message, "a.db: cannot write the database: ") != NULL
                      ? 0
                      : 1);
        }
        int status = 0;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    }
    g_assert_cmpint(g_chmod(sub, 0755), ==, 0);
    g_free(path);
    g_free(sub);
    g_free(dir);
}

/* A database still being made by another process (two `docqa ingest` started together on a new
 * file): the open waits for it, as for any lock, instead of failing with "database is locked".
 * Turning an empty file to WAL means upgrading a read to a write, which SQLite refuses at once
 * while another process holds the write lock, rather than wait (a deadlock it cannot rule out).
 * Here the other process is the test's, holding the write lock on the empty file for 300 ms. */
static void test_open_while_created(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "new.db", NULL);
    /* The child is forked before this process touches the file: SQLite's locks and a forked
     * process's copy of another connection do not mix. It opens once the lock is held, and says
     * so; the lock is let go 300 ms later, a file `released` made first. */
    char *released = g_build_filename(dir, "released", NULL);
    int go[2], opening[2];
    g_assert_cmpint(pipe(go), ==, 0);
    g_assert_cmpint(pipe(opening), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        char byte;
        close(go[1]);
        close(opening[0]);
        if (read(go[0], &byte, 1) != 1 || write(opening[1], "o", 1) != 1)
            _exit(3);
        GError *err = NULL;
        DqStore *s = dq_store_open(path, &err);
        if (s == NULL) {
            fprintf(stderr, "open: %s\n", err->message);
            _exit(1);
        }
        gint64 id = 0;
        gboolean ok = store_jobs_question_id(s, "What is the total?", &id, &err);
        dq_store_close(s);
        /* it waited for the other process to let go, and did not give up early: an order, not
         * a time (a time measured here ran short when this process came late to the open) */
        _exit(ok && g_file_test(released, G_FILE_TEST_EXISTS) ? 0 : 2);
    }
    close(go[0]);
    close(opening[1]);
    sqlite3 *other = NULL;
    g_assert_cmpint(sqlite3_open(path, &other), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), ==, SQLITE_OK);
    g_assert_cmpint(write(go[1], "x", 1), ==, 1);
    close(go[1]);
    char byte;
    g_assert_cmpint(read(opening[0], &byte, 1), ==, 1);
    close(opening[0]);
    g_usleep(300000); /* the child into its open, waiting for the lock */
    g_assert_true(g_file_set_contents(released, "", 0, NULL));
    g_assert_cmpint(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(other);
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM questions"), ==, 1);
    dq_store_close(s);
    g_free(released);
    g_free(path);
    g_free(dir);
}

/* ---- a full disk, made by an SQLite VFS whose writes fail with SQLITE_FULL once armed: the
 * default VFS with xWrite and xTruncate refused, every other method passed through. */

typedef struct {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, in the memory right after this struct */
} FullFile;

static sqlite3_vfs *full_real_vfs;
static gboolean full_armed;
/* The -shm refused its room, as the unix VFS does on a full disk: SQLITE_IOERR_SHMSIZE, errno
 * ENOSPC (sqlite3_system_errno asks the VFS's xGetLastError). */
static gboolean shm_full_armed;

static sqlite3_file *real_of(sqlite3_file *f) {
    return ((FullFile *)f)->real;
}

static int ff_close(sqlite3_file *f) {
    return real_of(f)->pMethods->xClose(real_of(f));
}
static int ff_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) {
    return real_of(f)->pMethods->xRead(real_of(f), b, n, o);
}
static int ff_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) {
    return full_armed ? SQLITE_FULL : real_of(f)->pMethods->xWrite(real_of(f), b, n, o);
}
static int ff_truncate(sqlite3_file *f, sqlite3_int64 size) {
    return full_armed ? SQLITE_FULL : real_of(f)->pMethods->xTruncate(real_of(f), size);
}
static int ff_sync(sqlite3_file *f, int flags) {
    return real_of(f)->pMethods->xSync(real_of(f), flags);
}
static int ff_file_size(sqlite3_file *f, sqlite3_int64 *size) {
    return real_of(f)->pMethods->xFileSize(real_of(f), size);
}
static int ff_lock(sqlite3_file *f, int l) {
    return real_of(f)->pMethods->xLock(real_of(f), l);
}
static int ff_unlock(sqlite3_file *f, int l) {
    return real_of(f)->pMethods->xUnlock(real_of(f), l);
}
static int ff_check_reserved(sqlite3_file *f, int *out) {
    return real_of(f)->pMethods->xCheckReservedLock(real_of(f), out);
}
static int ff_file_control(sqlite3_file *f, int op, void *arg) {
    return real_of(f)->pMethods->xFileControl(real_of(f), op, arg);
}
static int ff_sector_size(sqlite3_file *f) {
    return real_of(f)->pMethods->xSectorSize(real_of(f));
}
static int ff_device(sqlite3_file *f) {
    return real_of(f)->pMethods->xDeviceCharacteristics(real_of(f));
}
static int ff_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **p) {
    if (shm_full_armed) {
        errno = ENOSPC;
        return SQLITE_IOERR_SHMSIZE;
    }
    return real_of(f)->pMethods->xShmMap(real_of(f), region, size, extend, p);
}
static int ff_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
    return real_of(f)->pMethods->xShmLock(real_of(f), offset, n, flags);
}
static void ff_shm_barrier(sqlite3_file *f) {
    real_of(f)->pMethods->xShmBarrier(real_of(f));
}
static int ff_shm_unmap(sqlite3_file *f, int delete_flag) {
    return real_of(f)->pMethods->xShmUnmap(real_of(f), delete_flag);
}
static int ff_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p) {
    return real_of(f)->pMethods->xFetch(real_of(f), o, n, p);
}
static int ff_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) {
    return real_of(f)->pMethods->xUnfetch(real_of(f), o, p);
}

static const sqlite3_io_methods full_io = {
    3,
    ff_close,
    ff_read,
    ff_write,
    ff_truncate,
    ff_sync,
    ff_file_size,
    ff_lock,
    ff_unlock,
    ff_check_reserved,
    ff_file_control,
    ff_sector_size,
    ff_device,
    ff_shm_map,
    ff_shm_lock,
    ff_shm_barrier,
    ff_shm_unmap,
    ff_fetch,
    ff_unfetch,
};

static int full_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out) {
    (void)vfs;
    FullFile *ff = (FullFile *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    int rc = full_real_vfs->xOpen(full_real_vfs, name, ff->real, flags, out);
    /* xClose is called after a failed xOpen only when pMethods is set */
    ff->base.pMethods = rc == SQLITE_OK ? &full_io : NULL;
    return rc;
}

static int full_last_error(sqlite3_vfs *vfs, int n, char *buf) {
    (void)vfs;
    return shm_full_armed ? ENOSPC : full_real_vfs->xGetLastError(full_real_vfs, n, buf);
}

/* Makes the full-disk VFS the default one; sqlite3_vfs_unregister(the result) puts it back. */
static sqlite3_vfs *full_vfs_register(void) {
    full_real_vfs = sqlite3_vfs_find(NULL);
    static sqlite3_vfs vfs;
    vfs = *full_real_vfs;
    vfs.zName = "docqa-test-full";
    vfs.szOsFile = (int)sizeof(FullFile) + full_real_vfs->szOsFile;
    vfs.xOpen = full_open;
    vfs.xGetLastError = full_last_error;
    g_assert_cmpint(sqlite3_vfs_register(&vfs, 1), ==, SQLITE_OK);
    return &vfs;
}

/* A full disk: the database the store opens, then every write refused. The error names the
 * database, says the disk is full, and how much room the file system holding it has (here,
 * where the refusal is only the VFS's, whatever it really has). */
static void test_full_disk(void) {
    sqlite3_vfs *vfs = full_vfs_register();

    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "full.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    gint64 id = 0;
    g_assert_true(store_jobs_question_id(s, "What is the total?", &id, &err));
    dq_assert_no_error(err);

    full_armed = TRUE;
    g_assert_false(store_jobs_question_id(s, "Who signed it?", &id, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_test_message("%s", err->message);
    g_assert_nonnull(strstr(err->message, path));
    g_assert_nonnull(strstr(err->message, "disk is full"));
    g_assert_nonnull(strstr(err->message, "free)"));
    g_assert_null(strstr(err->message, "\xc2\xa0")); /* plain spaces, for logs */
    g_clear_error(&err);
    g_assert_false(dq_store_exec(s, "INSERT INTO questions (text) VALUES ('Why?')", &err));
    g_assert_nonnull(strstr(err->message, "free)"));
    g_clear_error(&err);
    full_armed = FALSE;

    /* Nothing stored is lost, and the store works again once there is room. */
    g_assert_true(store_jobs_question_id(s, "Who signed it?", &id, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM questions"), ==, 2);
    dq_store_close(s);
    sqlite3_vfs_unregister(vfs);
    g_free(path);
    g_free(dir);
}

static int count_on(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    sqlite3_stmt *st = NULL;
    g_assert_cmpint(sqlite3_prepare_v2(db, sql, -1, &st, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void exec_on(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(db, sql, NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(db);
}

/* A database made by a docqa of schema 5 with the user's own index and trigger on documents:
 * migration 0006 rebuilds that table, and DROP TABLE took them with it. They are there after
 * the upgrade, docqa's own index too, and the trigger still fires. */
static void test_upgrade_keeps_user_objects(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "v5.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open_at(path, 5, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), ==, 5);
    dq_store_close(s);
    exec_on(path, "CREATE TABLE my_log (path TEXT);"
                  "CREATE INDEX my_idx ON documents (ingested_at);"
                  "CREATE TRIGGER my_trig AFTER DELETE ON documents BEGIN "
                  "INSERT INTO my_log VALUES (old.path); END;");
    s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(dq_store_schema_version(s), >, 6);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM sqlite_schema WHERE name IN "
                                  "('my_idx', 'my_trig', 'documents_sha256')"),
                    ==, 3);
    g_assert_true(dq_store_exec(s,
                                "INSERT INTO documents (path, bytes, mtime, kind, status) "
                                "VALUES ('/a.pdf', 1, 1, 'pdf', 'ok');"
                                "DELETE FROM documents WHERE path = '/a.pdf'",
                                &err));
    dq_assert_no_error(err);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM my_log WHERE path = '/a.pdf'"), ==, 1);
    dq_store_close(s);
    g_free(path);
    g_free(dir);
}

/* A user dropped one of docqa's views (they are derived): the migrations that make it again
 * do so, rather than stop at "no such view". */
static void test_upgrade_without_view(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "v6.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open_at(path, 6, &err);
    dq_assert_no_error(err);
    dq_store_close(s);
    exec_on(path, "DROP VIEW v_progress; DROP VIEW v_answers");
    s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(count_rows(s, "SELECT count(*) FROM sqlite_schema WHERE type = 'view' AND "
                                  "name IN ('v_progress', 'v_answers')"),
                    ==, 2);
    dq_store_close(s);
    g_free(path);
    g_free(dir);
}

/* A migration that fails (here 0008, whose index name a user's view took) leaves the database
 * at the version it had, whole: not at 7, which the docqa that made it refuses. */
static void test_failed_upgrade_leaves_version(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "v5.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open_at(path, 5, &err);
    dq_assert_no_error(err);
    dq_store_close(s);
    exec_on(path, "CREATE VIEW answers_model_fingerprint AS SELECT 1 AS one;"
                  "CREATE INDEX my_idx ON documents (ingested_at)");
    g_assert_null(dq_store_open(path, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_test_message("%s", err->message);
    g_assert_nonnull(strstr(err->message, "0008"));
    g_assert_nonnull(strstr(err->message, "from version 5"));
    g_assert_nonnull(strstr(err->message, path));
    g_clear_error(&err);
    g_assert_cmpint(count_on(path, "PRAGMA user_version"), ==, 5);
    g_assert_cmpint(count_on(path, "SELECT max(version) FROM schema_migrations"), ==, 5);
    /* 0006's rebuild of documents was undone with the rest: the old UNIQUE (path, sha256) */
    g_assert_cmpint(count_on(path, "SELECT count(*) FROM sqlite_schema WHERE name = "
                                   "'documents' AND sql LIKE '%UNIQUE (path, sha256)%'"),
                    ==, 1);
    g_assert_cmpint(count_on(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'my_idx'"), ==,
                    1);
    g_free(path);
    g_free(dir);
}

/* A worker's connection sees the schema upgraded under it by a newer docqa: it stops at its
 * next check, saying so, rather than write rows the new schema does not expect. */
static void test_schema_changed_under_worker(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "w.db", NULL);
    GError *err = NULL;
    DqStore *old = dq_store_open_at(path, 7, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_check_file(old, &err));
    DqStore *newer = dq_store_open(path, &err);
    dq_assert_no_error(err);
    dq_store_close(newer);
    g_assert_false(dq_store_check_file(old, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_test_message("%s", err->message);
    g_assert_nonnull(strstr(err->message, path));
    g_assert_nonnull(strstr(err->message, "from version 7"));
    g_clear_error(&err);
    dq_store_close(old);
    g_free(path);
    g_free(dir);
}

/* A database renamed under a worker (`mv docqa.db old.db`) is not said to be deleted: the user
 * who moved it would take its answers for lost. */
static void test_file_moved_under_worker(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "w.db", NULL);
    char *moved = g_build_filename(dir, "moved.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_check_file(s, &err));
    g_assert_cmpint(g_rename(path, moved), ==, 0);
    g_assert_false(dq_store_check_file(s, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    char *want = g_strdup_printf("%s: the database file was deleted or moved away while docqa "
                                 "used it",
                                 path);
    if (!g_str_has_prefix(err->message, want))
        g_error("said: %s", err->message);
    g_free(want);
    g_clear_error(&err);
    dq_store_close(s);
    g_free(moved);
    g_free(path);
    g_free(dir);
}

/* status and export on a completely full disk, where SQLite cannot give the -shm it reads a WAL
 * database through its 32 KB. With no -wal holding more than the file, the reader reads the file
 * alone as immutable: every row, nothing written (before: "disk I/O error", nothing read). Should
 * the file change while it is read that way (a writer found room and checkpointed), the reader
 * hears so at the end. With a -wal holding transactions, it refuses, naming the database, the
 * full disk and what to free, rather than answer without them; they are all there once there is
 * room. */
static void test_reader_on_full_disk(void) {
    sqlite3_vfs *vfs = full_vfs_register();
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "full.db", NULL);
    char *wal = g_strconcat(path, "-wal", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    gint64 id = 0;
    g_assert_true(store_jobs_question_id(s, "What is the total?", &id, &err));
    g_assert_true(store_jobs_question_id(s, "Who signed it?", &id, &err));
    dq_assert_no_error(err);
    dq_store_close(s); /* the last connection: the -wal is emptied into the file and removed */
    g_assert_false(g_file_test(wal, G_FILE_TEST_EXISTS));

    shm_full_armed = TRUE;
    DqStore *r = dq_store_open_reader(path, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(count_rows(r, "SELECT count(*) FROM questions"), ==, 2);
    g_assert_true(dq_store_check_unchanged(r, &err));
    dq_assert_no_error(err);
    /* read-only: nothing may be written */
    g_assert_false(dq_store_exec(r, "INSERT INTO questions (text) VALUES ('Why?')", &err));
    g_clear_error(&err);
    /* a writer finds room and changes the file while it is read */
    shm_full_armed = FALSE;
    exec_on(path, "INSERT INTO questions (text) VALUES ('When?')");
    g_assert_false(dq_store_check_unchanged(r, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_test_message("%s", err->message);
    g_assert_nonnull(strstr(err->message, path));
    g_assert_nonnull(strstr(err->message, "changed while it was read"));
    g_clear_error(&err);
    dq_store_close(r);

    /* A -wal holding a transaction not yet in the file (its writer still has it open). */
    sqlite3 *writer = NULL;
    g_assert_cmpint(sqlite3_open(path, &writer), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(writer,
                                 "PRAGMA wal_autocheckpoint=0;"
                                 "INSERT INTO questions (text) VALUES ('Where?')",
                                 NULL, NULL, NULL),
                    ==, SQLITE_OK);
    GStatBuf st;
    g_assert_cmpint(g_stat(wal, &st), ==, 0);
    g_assert_cmpint(st.st_size, >, 32);
    shm_full_armed = TRUE;
    g_assert_null(dq_store_open_reader(path, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_test_message("%s", err->message);
    g_assert_nonnull(strstr(err->message, path));
    g_assert_nonnull(strstr(err->message, "the disk is full"));
    g_assert_nonnull(strstr(err->message, wal));
    g_assert_nonnull(strstr(err->message, "free at least 32 KB"));
    g_clear_error(&err);
    shm_full_armed = FALSE;
    sqlite3_close(writer);
    /* nothing lost: with room, every row is read */
    r = dq_store_open_reader(path, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(count_rows(r, "SELECT count(*) FROM questions"), ==, 4);
    dq_store_close(r);

    sqlite3_vfs_unregister(vfs);
    g_free(wal);
    g_free(path);
    g_free(dir);
}

/* A database reached through a link to a folder that does not exist cannot be opened; its own
 * folder may be written, so the message names no folder to make writable (SQLite's
 * CANTOPEN with a writable folder is not the -wal/-shm case). */
static void test_dangling_link_message(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "link.db", NULL);
    char *target = g_build_filename(dir, "missing", "real.db", NULL);
    g_assert_cmpint(symlink(target, path), ==, 0);
    GError *err = NULL;
    g_assert_null(dq_store_open(path, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_test_message("%s", err->message);
    g_assert_nonnull(strstr(err->message, "cannot open database"));
    g_assert_null(strstr(err->message, "must be writable too"));
    g_clear_error(&err);
    g_free(target);
    g_free(path);
    g_free(dir);
}

/* The page store's layout (README: <db>.pages/ab/cd/<sha256>.png), which every worker sharing a
 * DOCQA_PAGES folder reads; a name too short for its two folders has no path. */
static void test_page_path(void) {
    char *p = dq_store_page_path("/pages", "abcdef0123");
    g_assert_cmpstr(p, ==, "/pages/ab/cd/abcdef0123.png");
    g_free(p);
    p = dq_store_page_path("rel", "0123");
    g_assert_cmpstr(p, ==, "rel/01/23/0123.png");
    g_free(p);
    g_assert_null(dq_store_page_path("/pages", "abc"));
    g_assert_null(dq_store_page_path("/pages", NULL));
}

/* Another program's SQLite file is refused, counting its tables ("1 other table", "2 other
 * tables"), and left as it was. */
static void test_other_programs_database(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "notes.db", NULL);
    exec_on(path, "CREATE TABLE notes (id INTEGER)");
    GError *err = NULL;
    g_assert_null(dq_store_open(path, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_DB);
    g_assert_nonnull(strstr(err->message, "notes.db: not a docqa database: it holds 1 other "
                                          "table and no schema_migrations"));
    g_clear_error(&err);
    exec_on(path, "CREATE TABLE tags (id INTEGER)");
    g_assert_null(dq_store_open(path, &err));
    g_assert_nonnull(strstr(err->message, "it holds 2 other tables and no schema_migrations"));
    g_clear_error(&err);
    g_assert_cmpint(count_on(path, "SELECT count(*) FROM sqlite_master"), ==, 2);
    g_free(path);
    g_free(dir);
}

/* How many of this process's open files are a reserve of `db` (unlinked: "(deleted)"). */
static int reserves_held(const char *db) {
    char *want = g_strconcat(db, "-reserve.", NULL);
    GDir *d = g_dir_open("/proc/self/fd", 0, NULL);
    g_assert_nonnull(d);
    int n = 0;
    for (const char *name; (name = g_dir_read_name(d)) != NULL;) {
        char *link = g_build_filename("/proc/self/fd", name, NULL);
        char *target = g_file_read_link(link, NULL);
        if (target != NULL && g_str_has_prefix(target, want) &&
            g_str_has_suffix(target, " (deleted)"))
            n++;
        g_free(target);
        g_free(link);
    }
    g_dir_close(d);
    g_free(want);
    return n;
}

/* The room dq_store_keep_reserve sets aside is a file unlinked at once and held open until
 * dropped: nothing is left beside the database for anyone to see or clean up, the room stays
 * taken until it is dropped or the store closed, and dropping it twice says there is none. */
static void test_reserve_leaves_no_file(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "r.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_keep_reserve(s, 64 * 1024, &err));
    dq_assert_no_error(err);
    GDir *d = g_dir_open(dir, 0, NULL);
    g_assert_nonnull(d);
    for (const char *name; (name = g_dir_read_name(d)) != NULL;)
        if (strstr(name, "reserve") != NULL)
            g_error("%s left beside the database", name);
    g_dir_close(d);
    g_assert_cmpint(reserves_held(path), ==, 1);
    g_assert_true(dq_store_drop_reserve(s));
    g_assert_cmpint(reserves_held(path), ==, 0);
    g_assert_false(dq_store_drop_reserve(s));
    /* closing the store gives the room back too */
    g_assert_true(dq_store_keep_reserve(s, 64 * 1024, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(reserves_held(path), ==, 1);
    dq_store_close(s);
    g_assert_cmpint(reserves_held(path), ==, 0);
    g_free(path);
    g_free(dir);
}

/* dq_store_copy into SQLite keeps each id as it was, also where rows were deleted (an INTEGER
 * PRIMARY KEY left unbound would be numbered afresh: 1, 2), so that the rows pointing at them
 * still do. */
static void test_copy_keeps_sparse_ids(void) {
    char *dir = dq_test_tmpdir();
    char *from_path = g_build_filename(dir, "from.db", NULL);
    char *to_path = g_build_filename(dir, "to.db", NULL);
    GError *err = NULL;
    DqStore *from = dq_store_open(from_path, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_exec(from,
                                "INSERT INTO questions (id, text) VALUES (3, 'a?'), (7, 'b?'), "
                                "(8, 'c?'); DELETE FROM questions WHERE id = 8",
                                &err));
    dq_assert_no_error(err);
    DqStore *to = dq_store_open(to_path, &err);
    dq_assert_no_error(err);
    gint64 rows = 0;
    g_assert_true(dq_store_copy(from, to, &rows, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(rows, ==, 2);
    g_assert_cmpint(count_rows(to, "SELECT count(*) FROM questions"), ==, 2);
    g_assert_cmpint(count_rows(to, "SELECT count(*) FROM questions WHERE (id = 3 AND text = 'a?') "
                                   "OR (id = 7 AND text = 'b?')"),
                    ==, 2);
    dq_store_close(to);
    dq_store_close(from);
    g_free(to_path);
    g_free(from_path);
    g_free(dir);
}

/* A caller that does not want the names of the views made passes NULL: they are made all the
 * same (and the list is freed: ASan). */
static void test_restore_views_without_names(void) {
    char *dir = dq_test_tmpdir();
    char *path = g_build_filename(dir, "views.db", NULL);
    GError *err = NULL;
    DqStore *s = dq_store_open(path, &err);
    dq_assert_no_error(err);
    g_assert_true(dq_store_exec(s, "DROP VIEW v_progress", &err));
    dq_assert_no_error(err);
    g_assert_true(dq_store_restore_views(s, NULL, &err));
    dq_assert_no_error(err);
    g_assert_cmpint(
        count_rows(
            s, "SELECT count(*) FROM sqlite_schema WHERE type = 'view' AND name = 'v_progress'"),
        ==, 1);
    char **missing = dq_store_missing_views(s, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(g_strv_length(missing), ==, 0);
    g_strfreev(missing);
    dq_store_close(s);
    g_free(path);
    g_free(dir);
}

/* Opens `path` with stderr going to a file; returns what was said there. */
static char *open_saying(const char *path, int max_version) {
    char *log = g_strconcat(path, ".stderr", NULL);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(dup2(fd, 2), ==, 2);
    close(fd);
    GError *err = NULL;
    DqStore *s =
        max_version > 0 ? dq_store_open_at(path, max_version, &err) : dq_store_open(path, &err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    dq_assert_no_error(err);
    dq_store_close(s);
    char *text = NULL;
    g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
    g_free(log);
    return text;
}

/* Creating a database is no upgrade: nothing is said. An upgrade, from any older version (1
 * too), is said once. */
static void test_upgrade_said_once(void) {
    char *dir = dq_test_tmpdir();
    char *fresh = g_build_filename(dir, "fresh.db", NULL);
    char *text = open_saying(fresh, 0);
    g_assert_cmpstr(text, ==, "");
    g_free(text);
    char *old = g_build_filename(dir, "v1.db", NULL);
    text = open_saying(old, 1);
    g_assert_cmpstr(text, ==, "");
    g_free(text);
    g_assert_cmpint(count_on(old, "PRAGMA user_version"), ==, 1);
    text = open_saying(old, 0);
    g_assert_nonnull(strstr(text, "upgraded the schema from version 1 to "));
    g_free(text);
    text = open_saying(old, 0);
    g_assert_cmpstr(text, ==, "");
    g_free(text);
    g_free(old);
    g_free(fresh);
    g_free(dir);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/store/open/migrates_and_reopens", test_open_migrates_and_reopens);
    g_test_add_func("/store/schema-version-read-fails", test_schema_version_read_fails);
    g_test_add_func("/store/open/newer_schema_refused", test_newer_schema_refused);
    g_test_add_func("/store/open/garbage_file_refused", test_garbage_file_refused);
    g_test_add_func("/store/full-disk", test_full_disk);
    g_test_add_func("/store/full-disk/reader", test_reader_on_full_disk);
    g_test_add_func("/store/file-moved-under-worker", test_file_moved_under_worker);
    g_test_add_func("/store/open/while-created", test_open_while_created);
    g_test_add_func("/store/open/folder-not-writable", test_folder_not_writable);
    g_test_add_func("/store/upgrade/keeps-user-objects", test_upgrade_keeps_user_objects);
    g_test_add_func("/store/upgrade/without-view", test_upgrade_without_view);
    g_test_add_func("/store/upgrade/failed-leaves-version", test_failed_upgrade_leaves_version);
    g_test_add_func("/store/copy/keeps-sparse-ids", test_copy_keeps_sparse_ids);
    g_test_add_func("/store/views/restore-without-names", test_restore_views_without_names);
    g_test_add_func("/store/upgrade/said-once", test_upgrade_said_once);
    g_test_add_func("/store/upgrade/schema-changed-under-worker", test_schema_changed_under_worker);
    g_test_add_func("/store/open/dangling-link-message", test_dangling_link_message);
    g_test_add_func("/store/page-path", test_page_path);
    g_test_add_func("/store/open/other-programs-database", test_other_programs_database);
    g_test_add_func("/store/reserve-leaves-no-file", test_reserve_leaves_no_file);
    g_test_add_func("/store/schema-version-read-io-error", test_schema_version_read_io_error);
    return g_test_run();
}
