#include "store_internal.h"

#include "dq_error.h"
#include "resources.h"
#include "text.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

gint64 store_busy_limit_ms(void) {
    static gsize limit;
    if (g_once_init_enter(&limit)) {
        const char *t = g_getenv("DOCQA_TEST_BUSY_LIMIT_MS");
        gint64 v = t ? g_ascii_strtoll(t, NULL, 10) : 0;
        g_once_init_leave(&limit, (gsize)(v > 0 ? v : 60000));
    }
    return (gint64)limit;
}

gint64 dq_store_outage_limit_ms(void) {
    return 10 * store_busy_limit_ms();
}

const char *dq_store_default_location(void) {
    const char *env = g_getenv("DOCQA_DB");
    return env != NULL && *env != '\0' ? env : "docqa.db";
}

gboolean dq_store_location_is_postgres(const char *location) {
    return location != NULL && (g_ascii_strncasecmp(location, "postgresql:", 11) == 0 ||
                                g_ascii_strncasecmp(location, "postgres:", 9) == 0);
}

char *dq_store_location_pasteable(const char *location, gboolean *password_hidden) {
    char *shown = g_strdup(location);
#ifdef DOCQA_HAVE_POSTGRES
    if (dq_store_location_is_postgres(location)) {
        g_free(shown);
        shown = store_pg_hide_passwords(location);
    }
#endif
    *password_hidden = strcmp(shown, location) != 0;
    /* a URI's query holds '?' and '&', a file name may hold a space */
    if (*shown == '\0' || shown[strspn(shown, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                              "0123456789@%+=:,./_-")] != '\0') {
        char *quoted = g_shell_quote(shown);
        g_free(shown);
        shown = quoted;
    }
    return shown;
}

/* "host=db password=secret": libpq's key=value form, which docqa does not take (one location
 * syntax, whose password messages can hide). Taken as a file name it would become a SQLite
 * database named after the password: refused, without repeating it, whichever of libpq's
 * keywords comes first. */
static gboolean looks_like_conninfo(const char *location) {
    GRegex *re = g_regex_new("^\\s*([a-z_]+)\\s*=", G_REGEX_CASELESS, 0, NULL);
    GMatchInfo *m = NULL;
    gboolean found = FALSE;
    if (g_regex_match(re, location, 0, &m)) {
        char *word = g_match_info_fetch(m, 1);
#ifdef DOCQA_HAVE_POSTGRES
        found = store_pg_is_conninfo_keyword(word);
#else
        /* no libpq to ask: the keywords such a string usually starts with */
        found = g_regex_match_simple("^(host|hostaddr|port|dbname|user|password|passfile|"
                                     "service|sslmode|connect_timeout|application_name|options)$",
                                     word, G_REGEX_CASELESS, 0);
#endif
        g_free(word);
    }
    g_match_info_free(m);
    g_regex_unref(re);
    return found;
}

static gboolean refuse_conninfo(const char *location, GError **err) {
    if (location == NULL || !looks_like_conninfo(location))
        return TRUE;
    dq_fail(err, DQ_ERR_ARGS,
            "the database location looks like a libpq connection string (key=value; not shown, "
            "as it may hold a password); use a postgresql:// URI, e.g. "
            "postgresql://user@host/database, with the password in ~/.pgpass");
    return FALSE;
}

static char *same_file(const char *given, char *real) {
    /* No link on the way: the name as given (relative stays relative, as messages showed it) */
    char *lexical = g_canonicalize_filename(given, NULL);
    gboolean same = strcmp(lexical, real) == 0;
    g_free(lexical);
    if (!same)
        return real;
    g_free(real);
    return g_strdup(given);
}

char *dq_store_page_dir_for(const char *location, GError **err) {
    if (!refuse_conninfo(location, err))
        return NULL;
    if (dq_store_location_is_postgres(location)) {
        const char *dir = g_getenv("DOCQA_PAGES");
        if (dir == NULL || *dir == '\0') {
            dq_fail(err, DQ_ERR_ARGS,
                    "%s: a PostgreSQL store keeps page images in a directory every worker "
                    "mounts: set DOCQA_PAGES to it",
                    location);
            return NULL;
        }
        return g_strdup(dir);
    }
    if (g_str_has_prefix(location, "sqlite:"))
        location += strlen("sqlite:");
    char *file = dq_store_real_file(location);
    char *dir = g_strconcat(file, ".pages", NULL);
    g_free(file);
    return dir;
}

char *dq_store_real_file(const char *path) {
    /* SQLite opens the file a symbolic link points to (unixFullPathname follows every link on
     * the way), and creates a link's missing target: the page store goes beside that file, or
     * the same database reached by two names would have two page stores. */
    char *cur = g_strdup(path);
    for (int hops = 0; hops < 40; hops++) {
        char *real = realpath(cur, NULL);
        if (real != NULL) {
            char *out = g_strdup(real);
            free(real);
            g_free(cur);
            return same_file(path, out);
        }
        char *target = g_file_read_link(cur, NULL); /* a link whose target is not made yet */
        if (target == NULL)
            break;
        char *dir = g_path_get_dirname(cur);
        g_free(cur);
        cur = g_path_is_absolute(target) ? g_strdup(target) : g_build_filename(dir, target, NULL);
        g_free(dir);
        g_free(target);
    }
    /* A file not made yet: beside it in its folder, whatever links lead there */
    char *dir = g_path_get_dirname(cur), *base = g_path_get_basename(cur);
    char *real_dir = realpath(dir, NULL);
    char *out = real_dir ? g_build_filename(real_dir, base, NULL) : g_strdup(cur);
    free(real_dir);
    g_free(dir);
    g_free(base);
    g_free(cur);
    return same_file(path, out);
}

char *dq_store_pages_env_ignored(const char *location) {
    const char *env = g_getenv("DOCQA_PAGES");
    if (dq_store_location_is_postgres(location) || env == NULL || *env == '\0')
        return NULL;
    char *dir = dq_store_page_dir_for(location, NULL);
    if (dir == NULL) /* a location refused: opening it says why */
        return NULL;
    char *a = g_canonicalize_filename(dir, NULL), *b = g_canonicalize_filename(env, NULL);
    char *note = strcmp(a, b) == 0 ? NULL
                                   : g_strdup_printf("DOCQA_PAGES (%s) is ignored: an SQLite "
                                                     "database keeps its page images beside "
                                                     "its file, in %s",
                                                     env, dir);
    g_free(a);
    g_free(b);
    g_free(dir);
    return note;
}

char *dq_store_page_path(const char *page_dir, const char *image_sha256) {
    if (image_sha256 == NULL || strlen(image_sha256) < 4)
        return NULL;
    char a[3] = {image_sha256[0], image_sha256[1], 0};
    char b[3] = {image_sha256[2], image_sha256[3], 0};
    char *name = g_strconcat(image_sha256, ".png", NULL);
    char *path = g_build_filename(page_dir, a, b, name, NULL);
    g_free(name);
    return path;
}

DqStoreKind dq_store_kind(DqStore *store) {
    return store->kind;
}

PGconn *dq_store_pg(DqStore *store) {
    return store->pg;
}

/* Under this much room left, a failed write is put down to it. */
#define LOW_ROOM_BYTES ((guint64)16 << 20)

static void append_to_message(GError *err, char *text) {
    char *msg = g_strconcat(err->message, text, NULL);
    g_free(err->message);
    err->message = msg;
    g_free(text);
}

/* A user's name for a message: "alice (uid 1000)", or "uid 1000" without a passwd entry. */
static char *user_text(uid_t uid) {
    /* getpwuid_r: a worker's heartbeat thread explains its own store's errors (store_jobs.c)
     * while the main thread may explain another's; getpwuid's one static entry is shared. */
    struct passwd entry, *pw = NULL;
    char buf[4096];
    if (getpwuid_r(uid, &entry, buf, sizeof buf, &pw) != 0)
        pw = NULL;
    return pw != NULL ? g_strdup_printf("%s (uid %u)", pw->pw_name, (unsigned)uid)
                      : g_strdup_printf("uid %u", (unsigned)uid);
}

/* The database's file, or its -wal or -shm, that this process may not write (another user's,
 * read-only for the rest): " (<file> belongs to ..., mode 0644: ...)"; NULL when they all may
 * be written. */
static char *not_writable_text(const char *path, const char *dir) {
    char *files[] = {g_strdup(path), g_strconcat(path, "-wal", NULL),
                     g_strconcat(path, "-shm", NULL)};
    char *text = NULL;
    for (size_t i = 0; i < G_N_ELEMENTS(files) && text == NULL; i++) {
        GStatBuf st;
        if (g_stat(files[i], &st) != 0 || access(files[i], W_OK) == 0)
            continue;
        char *owner = user_text(st.st_uid), *me = user_text(geteuid());
        /* the folder too, said as store_sqlite_explain says it alone */
        char *folder = access(dir, W_OK) != 0
                           ? g_strdup_printf("; the folder %s must be writable too: SQLite keeps "
                                             "the database's -wal and -shm files there",
                                             dir)
                           : g_strdup("");
        text = g_strdup_printf(" (%s belongs to %s, mode %04o, and this docqa runs as %s, who may "
                               "not write it: run docqa as its owner, or have the owner give you "
                               "write access to the database, its -wal and -shm files and their "
                               "folder, e.g. through a group you share%s)",
                               files[i], owner, (unsigned)(st.st_mode & 07777), me, folder);
        g_free(folder);
        g_free(owner);
        g_free(me);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(files); i++)
        g_free(files[i]);
    return text;
}

/* SQLite's folder for temporary files (a sort too big for memory, a temporary table), as its
 * unix VFS picks it: the first of $SQLITE_TMPDIR, $TMPDIR, /var/tmp, /usr/tmp, /tmp and "." that
 * is a folder it may write and search. When files cannot be made there after all (TMPDIR=/proc
 * for root, whom access() lets write anywhere), " (SQLite could not make a temporary file in
 * ...)"; NULL otherwise. */
static char *temp_dir_text(void) {
    const char *vars[] = {"SQLITE_TMPDIR", "TMPDIR"};
    const char *dirs[] = {
        g_getenv(vars[0]), g_getenv(vars[1]), "/var/tmp", "/usr/tmp", "/tmp", "."};
    for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++) {
        GStatBuf st;
        if (dirs[i] == NULL || g_stat(dirs[i], &st) != 0 || !S_ISDIR(st.st_mode) ||
            access(dirs[i], W_OK | X_OK) != 0)
            continue;
        char *probe = g_build_filename(dirs[i], "docqa-probe-XXXXXX", NULL);
        int fd = g_mkstemp(probe);
        int e = errno;
        if (fd >= 0) {
            close(fd);
            g_unlink(probe);
        }
        g_free(probe);
        if (fd >= 0)
            return NULL;
        const char *var = i < G_N_ELEMENTS(vars) ? vars[i] : NULL;
        return g_strdup_printf(" (SQLite could not make a temporary file in %s%s%s: %s; set "
                               "TMPDIR to a folder docqa may write)",
                               dirs[i], var ? ", named by $" : "", var ? var : "", g_strerror(e));
    }
    return NULL;
}

/* g_format_size puts a no-break space (UTF-8 C2 A0) before the unit: a plain one for logs. */
static char *plain_size(guint64 bytes) {
    char *size = g_format_size(bytes);
    for (char *p = strstr(size, "\xc2\xa0"); p != NULL; p = strstr(p, "\xc2\xa0")) {
        *p = ' ';
        memmove(p + 1, p + 2, strlen(p + 2) + 1);
    }
    return size;
}

/* The system's reason for SQLite's last failed system call in this thread, as SQLite's unix
 * VFS logs it ("os_unix.c:N: (5) open(/a/docqa.db-shm) - Input/output error"): the call, the file
 * and errno's text. sqlite3_system_errno reads errno only when the error reaches the connection,
 * after later calls (an access() finding no -journal) may have changed it, and not at all for a
 * failed COMMIT: the log is written at the failed call itself. */
static GPrivate last_os_error = G_PRIVATE_INIT(g_free);

static void sqlite_log(void *unused, int code, const char *msg) {
    (void)unused;
    int primary = code & 0xff;
    if ((primary != SQLITE_IOERR && primary != SQLITE_CANTOPEN) || msg == NULL ||
        !g_str_has_prefix(msg, "os_unix.c:"))
        return;
    /* errno's text is left empty by a thread-safe SQLite without strerror_r: its number is
     * there */
    const char *at = strstr(msg, ": (");
    char *end = NULL;
    long e = at != NULL ? strtol(at + 3, &end, 10) : 0;
    if (e <= 0 || end == NULL || !g_str_has_prefix(end, ") "))
        return;
    const char *call = end + 2;
    const char *open_paren = strchr(call, '(');
    const char *close = strstr(call, ") - ");
    if (open_paren == NULL || close == NULL || close < open_paren)
        return;
    char *name = g_strndup(call, (gsize)(open_paren - call));
    int path_len = (int)(close - open_paren - 1);
    /* SQLite's own name for its fsync wrapper */
    const char *shown = strcmp(name, "full_fsync") == 0 ? "fsync" : name;
    /* A file that could not be opened to write is tried again to read, without O_CREAT: the
     * errno logged is that second try's ENOENT for a -wal or -shm not made, not the reason. */
    if (primary == SQLITE_CANTOPEN && e == ENOENT)
        g_private_replace(&last_os_error,
                          g_strdup_printf("%s %.*s failed", shown, path_len, open_paren + 1));
    else
        g_private_replace(&last_os_error, g_strdup_printf("%s %.*s: %s", shown, path_len,
                                                          open_paren + 1, g_strerror((int)e)));
    g_free(name);
}

/* The last read, write or open that failed under SQLite in this thread, as "write
 * /a/docqa.db-wal: No space left on device": what SQLite itself keeps nowhere. A failed write is
 * not logged, and its errno is gone (SQLite stores none for ENOSPC, and sqlite3_system_errno reads
 * errno after later calls); a failed read of the database says "database disk image is
 * malformed" (EIO is taken for a corrupt file system); a -wal or -shm that could not be opened to
 * write is tried again to read, and that second try's ENOENT is what SQLite logs. The unix VFS
 * lets its system calls be replaced (xSetSystemCall): these record the failure where it happens. */
static GPrivate last_failed_call = G_PRIVATE_INIT(g_free);

static void record_failed_call(const char *call, int fd, const char *path, int e) {
    char link[64], target[4096];
    if (path == NULL) {
        g_snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            return;
        target[n] = '\0';
        path = target;
    }
    g_private_replace(&last_failed_call, g_strdup_printf("%s %s: %s", call, path, g_strerror(e)));
    errno = e;
}

typedef int (*OpenFn)(const char *, int, int);
typedef ssize_t (*ReadFn)(int, void *, size_t);
typedef ssize_t (*PreadFn)(int, void *, size_t, off_t);
typedef ssize_t (*WriteFn)(int, const void *, size_t);
typedef ssize_t (*PwriteFn)(int, const void *, size_t, off_t);
static OpenFn real_open;
static ReadFn real_read;
static PreadFn real_pread, real_pread64;
static WriteFn real_write;
static PwriteFn real_pwrite, real_pwrite64;

/* Only a try to write: the read-only retry's failure is not the reason. */
static int recording_open(const char *path, int flags, int mode) {
    int fd = real_open(path, flags, mode);
    if (fd < 0 && (flags & O_ACCMODE) != O_RDONLY)
        record_failed_call("open", -1, path, errno);
    return fd;
}

static ssize_t recording_read(int fd, void *buf, size_t n) {
    ssize_t r = real_read(fd, buf, n);
    if (r < 0)
        record_failed_call("read", fd, NULL, errno);
    return r;
}

static ssize_t recording_pread(int fd, void *buf, size_t n, off_t at) {
    ssize_t r = real_pread(fd, buf, n, at);
    if (r < 0)
        record_failed_call("read", fd, NULL, errno);
    return r;
}

static ssize_t recording_pread64(int fd, void *buf, size_t n, off_t at) {
    ssize_t r = real_pread64(fd, buf, n, at);
    if (r < 0)
        record_failed_call("read", fd, NULL, errno);
    return r;
}

static ssize_t recording_write(int fd, const void *buf, size_t n) {
    ssize_t r = real_write(fd, buf, n);
    if (r < 0)
        record_failed_call("write", fd, NULL, errno);
    return r;
}

static ssize_t recording_pwrite(int fd, const void *buf, size_t n, off_t at) {
    ssize_t r = real_pwrite(fd, buf, n, at);
    if (r < 0)
        record_failed_call("write", fd, NULL, errno);
    return r;
}

static ssize_t recording_pwrite64(int fd, const void *buf, size_t n, off_t at) {
    ssize_t r = real_pwrite64(fd, buf, n, at);
    if (r < 0)
        record_failed_call("write", fd, NULL, errno);
    return r;
}

/* Replaces SQLite's call `name` by `mine`, keeping the real one in *real; a call this SQLite
 * was built without (pread64 where it uses pread) is left alone. */
static void replace_call(sqlite3_vfs *vfs, const char *name, void (**real)(void),
                         void (*mine)(void)) {
    sqlite3_syscall_ptr old = vfs->xGetSystemCall(vfs, name);
    if (old != NULL && vfs->xSetSystemCall(vfs, name, (sqlite3_syscall_ptr)mine) == SQLITE_OK)
        *real = (void (*)(void))old;
}

static void install_call_recorders(void) {
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix");
    if (vfs == NULL || vfs->iVersion < 3 || vfs->xGetSystemCall == NULL)
        return;
    /* The casts go through void (*)(void), as sqlite3_syscall_ptr does: each function is
     * called back with the type SQLite gave that call. */
    replace_call(vfs, "open", (void (**)(void)) & real_open, (void (*)(void))recording_open);
    replace_call(vfs, "read", (void (**)(void)) & real_read, (void (*)(void))recording_read);
    replace_call(vfs, "pread", (void (**)(void)) & real_pread, (void (*)(void))recording_pread);
    replace_call(vfs, "pread64", (void (**)(void)) & real_pread64,
                 (void (*)(void))recording_pread64);
    replace_call(vfs, "write", (void (**)(void)) & real_write, (void (*)(void))recording_write);
    replace_call(vfs, "pwrite", (void (**)(void)) & real_pwrite, (void (*)(void))recording_pwrite);
    replace_call(vfs, "pwrite64", (void (**)(void)) & real_pwrite64,
                 (void (*)(void))recording_pwrite64);
}

/* The recorded failure of `call` ("open", "read", "write") on `path` or a file beside it (its
 * -wal, -shm, -journal), taken; NULL when the last one recorded was another. */
static char *take_failed_call(const char *call, const char *path) {
    const char *last = g_private_get(&last_failed_call);
    /* a read or write is recorded by its fd's path, which the kernel gives resolved */
    char *real = realpath(path, NULL);
    char *prefix = g_strdup_printf("%s %s", call, path);
    char *real_prefix = real != NULL ? g_strdup_printf("%s %s", call, real) : NULL;
    char *text = last != NULL && (g_str_has_prefix(last, prefix) ||
                                  (real_prefix != NULL && g_str_has_prefix(last, real_prefix)))
                     ? g_strdup(last)
                     : NULL;
    free(real);
    g_free(real_prefix);
    g_free(prefix);
    g_private_replace(&last_failed_call, NULL);
    return text;
}

/* Before SQLite's first use in the process: SQLITE_CONFIG_LOG is refused after it (then the
 * reasons are only those sqlite3_system_errno keeps), and the system calls are replaced before
 * any file is open. */
static void install_sqlite_log(void) {
    static gsize done = 0;
    if (g_once_init_enter(&done)) {
        sqlite3_config(SQLITE_CONFIG_LOG, sqlite_log, NULL);
        install_call_recorders();
        g_once_init_leave(&done, 1);
    }
}

/* The logged failure, as "open /a/docqa.db-shm: Input/output error"; NULL when none was
 * logged. Taken: a later error does not repeat it. */
static char *take_os_error(void) {
    char *logged = g_strdup(g_private_get(&last_os_error));
    g_private_replace(&last_os_error, NULL);
    return logged;
}

/* SQLite opens read-only, silently, a file it could not open for writing for any reason (an I/O
 * error, too many files): said when the file and its folder are writable as far as access()
 * knows, so that it is not taken for a matter of permissions. */
#define REFUSED_OPEN_TEXT                                                                          \
    " (docqa may write the file and its folder, but SQLite could open it or its -wal or -shm "     \
    "only for reading: the system refused to open them for writing)"

/* What SQLite was doing when it said "disk I/O error", from its extended code; NULL when the
 * code says no more. */
static const char *ioerr_operation(int extended) {
    switch (extended) {
    case SQLITE_IOERR_READ:
    case SQLITE_IOERR_SHORT_READ:
    case SQLITE_IOERR_CORRUPTFS:
        return "reading a file of the database";
    case SQLITE_IOERR_WRITE:
        return "writing a file of the database";
    case SQLITE_IOERR_FSYNC:
        return "syncing a file of the database to disk";
    case SQLITE_IOERR_DIR_FSYNC:
        return "syncing the database's folder to disk";
    case SQLITE_IOERR_TRUNCATE:
        return "truncating a file of the database";
    case SQLITE_IOERR_FSTAT:
        return "reading a file's size";
    case SQLITE_IOERR_DELETE:
    case SQLITE_IOERR_DELETE_NOENT:
        return "deleting a file of the database";
    case SQLITE_IOERR_SHMOPEN:
        return "opening the -shm";
    case SQLITE_IOERR_SHMSIZE:
        return "sizing the -shm";
    case SQLITE_IOERR_SHMMAP:
        return "mapping the -shm";
    case SQLITE_IOERR_MMAP:
        return "mapping the database";
    case SQLITE_IOERR_LOCK:
    case SQLITE_IOERR_RDLOCK:
    case SQLITE_IOERR_UNLOCK:
    case SQLITE_IOERR_SHMLOCK:
    case SQLITE_IOERR_CHECKRESERVEDLOCK:
        return "locking";
    case SQLITE_IOERR_CLOSE:
        return "closing a file of the database";
    default:
        return NULL;
    }
}

/* For a lock held past the busy limit, who may hold it (or that docqa was told to stop while it
 * waited). TRUE when the error was that. */
static gboolean explain_busy(DqStore *s, int rc, GError *err) {
    if (rc != SQLITE_BUSY)
        return FALSE;
    if (s->busy_stopped)
        append_to_message(err, g_strdup_printf(" (another connection holds its write lock; "
                                               "told to stop, docqa waited %d s more for it, "
                                               "then gave up)",
                                               DQ_STORE_STOP_GRACE_MS / 1000));
    else
        append_to_message(err, g_strdup_printf(" (another connection held its write lock for "
                                               "%d s: an sqlite3 shell or a program with a "
                                               "transaction left open?)",
                                               (int)(store_busy_limit_ms() / 1000)));
    return TRUE;
}

/* SQLite's words name its own class of failure: "disk I/O error" for a full disk when the -shm
 * is sized, an mmap refused and a failed fsync alike. The operation (SQLite's extended code) and
 * the system's reason, when SQLite kept it, say which. Permissions and missing files are
 * explained by explain_not_writable, by whose and which folder. */
static void append_io_reason(DqStore *s, int rc, GError *err) {
    int sys = sqlite3_system_errno(s->db);
    gboolean sys_known = sys > 0 && sys != EACCES && sys != EPERM && sys != EROFS && sys != ENOENT;
    int extended = sqlite3_extended_errcode(s->db);
    const char *op = rc == SQLITE_IOERR ? ioerr_operation(extended) : NULL;
    char *logged = rc == SQLITE_IOERR || rc == SQLITE_CANTOPEN ? take_os_error() : NULL;
    /* The log's last entry is this error's only where SQLite logs that kind of failure (a
     * failed write is not logged: an older entry would be shown as its reason). */
    const char *call = rc == SQLITE_CANTOPEN ? "open "
                       : extended == SQLITE_IOERR_FSYNC || extended == SQLITE_IOERR_DIR_FSYNC
                           ? "fsync "
                       : extended == SQLITE_IOERR_DELETE ? "unlink "
                                                         : NULL;
    if (logged != NULL && (call == NULL || !g_str_has_prefix(logged, call)))
        g_clear_pointer(&logged, g_free);
    /* What SQLite keeps nowhere (last_failed_call): the file and reason of a failed write or
     * read, and why a file could not be opened where its log says only that it was not. */
    const char *seen =
        rc == SQLITE_FULL || extended == SQLITE_IOERR_WRITE ? "write"
        : rc == SQLITE_CORRUPT || extended == SQLITE_IOERR_READ ||
                extended == SQLITE_IOERR_SHORT_READ || extended == SQLITE_IOERR_CORRUPTFS
            ? "read"
        : rc == SQLITE_CANTOPEN && (logged == NULL || g_str_has_suffix(logged, " failed")) ? "open"
                                                                                           : NULL;
    char *failed = seen != NULL ? take_failed_call(seen, s->path) : NULL;
    if (failed != NULL) {
        g_free(logged);
        logged = failed;
        sys_known = FALSE;
    }
    if (op != NULL && sys_known)
        append_to_message(err, g_strdup_printf(" (%s: %s)", op, g_strerror(sys)));
    else if (op != NULL && logged != NULL)
        append_to_message(err, g_strdup_printf(" (%s: %s)", op, logged));
    else if (op != NULL)
        append_to_message(err, g_strdup_printf(" (%s)", op));
    else if ((rc == SQLITE_CANTOPEN || rc == SQLITE_FULL) && logged != NULL)
        append_to_message(err, g_strdup_printf(" (%s)", logged));
    else if (rc == SQLITE_CORRUPT && logged != NULL)
        append_to_message(err, g_strdup_printf(" (%s: SQLite takes a file it cannot read for a "
                                               "malformed one)",
                                               logged));
    else if ((rc == SQLITE_FULL || rc == SQLITE_CANTOPEN) && sys_known)
        append_to_message(err, g_strdup_printf(" (%s)", g_strerror(sys)));
    g_free(logged);
}

/* For a database that cannot be written, whose it is and its mode, or that the system refused
 * to open it for writing; for a temporary file SQLite could not make, where it tried; for a
 * folder that cannot be written, that it must be. TRUE when one of these was said: the room
 * left is then beside the point. */
static gboolean explain_not_writable(DqStore *s, int rc, const char *dir, GError *err) {
    char *whose = rc == SQLITE_READONLY ? not_writable_text(s->path, dir) : NULL;
    if (whose != NULL) {
        append_to_message(err, whose);
        return TRUE;
    }
    if (rc == SQLITE_READONLY && !s->immutable && access(s->path, W_OK) == 0 &&
        access(dir, W_OK) == 0) {
        append_to_message(err, g_strdup(REFUSED_OPEN_TEXT));
        return TRUE;
    }
    /* The database is open and readable: a file SQLite could not open is a temporary one. */
    char *temp = rc == SQLITE_CANTOPEN && g_access(s->path, R_OK) == 0 ? temp_dir_text() : NULL;
    if (temp != NULL) {
        append_to_message(err, temp);
        return TRUE;
    }
    if ((rc == SQLITE_READONLY || rc == SQLITE_CANTOPEN) && access(dir, W_OK) != 0) {
        /* "attempt to write a readonly database": WAL needs its -wal and -shm files beside the
         * database, even to read. */
        append_to_message(err, g_strdup_printf(" (the folder %s must be writable too: SQLite "
                                               "keeps the database's -wal and -shm files there)",
                                               dir));
        return TRUE;
    }
    return FALSE;
}

/* For a full disk, or a failed write while the file system holding the database has little room
 * left, how little: SQLite's "disk I/O error" alone sends one looking for a broken disk. */
static void append_room_left(DqStore *s, int rc, const char *dir, GError *err) {
    if (rc != SQLITE_FULL && rc != SQLITE_IOERR && rc != SQLITE_CANTOPEN)
        return;
    struct statvfs fs;
    if (statvfs(dir, &fs) != 0)
        return;
    guint64 room = (guint64)fs.f_bavail * fs.f_frsize;
    if (rc != SQLITE_FULL && room >= LOW_ROOM_BYTES)
        return;
    char *size = plain_size(room);
    append_to_message(err,
                      g_strdup_printf(" (the file system holding %s has %s free)", s->path, size));
    g_free(size);
}

void store_sqlite_explain(DqStore *s, GError **err) {
    if (err == NULL || *err == NULL || s->db == NULL)
        return;
    int rc = sqlite3_extended_errcode(s->db) & 0xff;
    if (explain_busy(s, rc, *err))
        return;
    append_io_reason(s, rc, *err);
    char *dir = g_path_get_dirname(s->path);
    if (!explain_not_writable(s, rc, dir, *err))
        append_room_left(s, rc, dir, *err);
    g_free(dir);
}

gboolean dq_store_exec(DqStore *store, const char *sql, GError **err) {
    PG_DISPATCH(store, return store_pg_exec(store, sql, err));
    char *msg = NULL;
    if (sqlite3_exec(store->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        dq_fail(err, DQ_ERR_DB, "%s: %s", store->path, msg ? msg : "unknown SQLite error");
        sqlite3_free(msg);
        store_sqlite_explain(store, err);
        return FALSE;
    }
    return TRUE;
}

gboolean dq_store_begin_snapshot(DqStore *store, GError **err) {
    return dq_store_exec(store,
                         store->kind == DQ_STORE_SQLITE
                             ? "BEGIN"
                             : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                         err);
}

sqlite3 *dq_store_sqlite(DqStore *store) {
    return store->db;
}

const char *dq_store_path(DqStore *store) {
    return store->path;
}

int dq_store_schema_version(DqStore *store) {
    PG_DISPATCH(store, return store_pg_schema_version(store));
    sqlite3_stmt *st = NULL;
    int v = 0;
    if (sqlite3_prepare_v2(store->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

void dq_store_set_stop(DqStore *store, volatile sig_atomic_t *stop) {
    if (store != NULL)
        store->stop = stop;
}

/* dq_store_exec of statements that may be re-run whole (pragmas, IF NOT EXISTS), again while
 * the database is busy, up to the busy timeout. A database that another process is still
 * making (two commands started together on a new file) is an empty file to this one, and
 * turning it to WAL upgrades this connection's read to a write: SQLite refuses that at once,
 * without the busy handler, while the other holds the write lock (it cannot rule out a
 * deadlock), and the other's migrations hold it for a while. */
static gboolean exec_waiting(DqStore *store, const char *sql, GError **err) {
    gint64 until = g_get_monotonic_time() + store_busy_limit_ms() * 1000;
    for (gulong pause = 1000;; pause = MIN(pause * 2, 50000)) {
        GError *busy = NULL;
        if (dq_store_exec(store, sql, &busy))
            return TRUE;
        if ((sqlite3_extended_errcode(store->db) & 0xff) != SQLITE_BUSY ||
            g_get_monotonic_time() + (gint64)pause > until) {
            g_propagate_error(err, busy);
            return FALSE;
        }
        g_error_free(busy);
        g_usleep(pause);
    }
}

/* FALSE (err names the first row) when a row references a missing parent. */
static gboolean foreign_keys_hold(DqStore *store, GError **err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store->db, "PRAGMA foreign_key_check", -1, &st, NULL) != SQLITE_OK) {
        dq_fail(err, DQ_ERR_DB, "%s: foreign_key_check: %s", store->path,
                sqlite3_errmsg(store->db));
        store_sqlite_explain(store, err);
        return FALSE;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        dq_fail(err, DQ_ERR_DB, "%s: row %lld of %s references a missing row of %s", store->path,
                (long long)sqlite3_column_int64(st, 1), sqlite3_column_text(st, 0),
                sqlite3_column_text(st, 2));
    else if (rc != SQLITE_DONE) {
        dq_fail(err, DQ_ERR_DB, "%s: foreign_key_check: %s", store->path,
                sqlite3_errmsg(store->db));
        store_sqlite_explain(store, err);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE;
}

/* An index or trigger as sqlite_schema records it. */
typedef struct {
    char *type, *name, *table, *sql;
} SchemaObject;

static void schema_object_free(gpointer p) {
    SchemaObject *o = p;
    g_free(o->type);
    g_free(o->name);
    g_free(o->table);
    g_free(o->sql);
    g_free(o);
}

/* Every index and trigger with SQL of its own (not the automatic indexes of UNIQUE), users'
 * included; NULL and err on a database error. */
static GPtrArray *schema_objects(DqStore *store, GError **err) {
    sqlite3_stmt *st = NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func(schema_object_free);
    int rc = sqlite3_prepare_v2(store->db,
                                "SELECT type, name, tbl_name, sql FROM sqlite_schema "
                                "WHERE type IN ('index', 'trigger') AND sql IS NOT NULL",
                                -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        SchemaObject *o = g_new0(SchemaObject, 1);
        o->type = g_strdup((const char *)sqlite3_column_text(st, 0));
        o->name = g_strdup((const char *)sqlite3_column_text(st, 1));
        o->table = g_strdup((const char *)sqlite3_column_text(st, 2));
        o->sql = g_strdup((const char *)sqlite3_column_text(st, 3));
        g_ptr_array_add(out, o);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_OK) {
        dq_fail(err, DQ_ERR_DB, "%s: reading sqlite_schema: %s", store->path,
                sqlite3_errmsg(store->db));
        store_sqlite_explain(store, err);
        g_ptr_array_free(out, TRUE);
        return NULL;
    }
    return out;
}

/* Whether sqlite_schema holds the `type` named `name`; FALSE and err when it cannot be read. A
 * failed read is no answer: taken for "not there", a user's index whose table could not be looked
 * up was left out of restore_user_objects, and the upgrade went on without it. */
static gboolean schema_has(DqStore *store, const char *type, const char *name, gboolean *has,
                           GError **err) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        store->db, "SELECT 1 FROM sqlite_schema WHERE type = ?1 AND name = ?2", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    *has = rc == SQLITE_ROW;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        dq_fail(err, DQ_ERR_DB, "%s: reading sqlite_schema for the %s %s: %s", store->path, type,
                name, sqlite3_errmsg(store->db));
        store_sqlite_explain(store, err);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE;
}

/* Whether the migration's text names `name` as a word: an object it drops or creates itself. */
static gboolean migration_names_object(const char *sql, const char *name) {
    char *quoted = g_regex_escape_string(name, -1);
    char *pattern = g_strdup_printf("(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])", quoted);
    gboolean named = g_regex_match_simple(pattern, sql, G_REGEX_CASELESS, 0);
    g_free(pattern);
    g_free(quoted);
    return named;
}

/* SQLite cannot drop a table constraint, so a migration rebuilds the table (SQLite's 12-step
 * procedure: new table, copy, DROP, rename), and DROP TABLE takes the table's indexes and
 * triggers with it, the user's own among them (PostgreSQL's ALTER TABLE keeps them). Those
 * that were there before the migration, are gone after it, whose table is still there and
 * that the migration does not name (it drops or makes again what it names on purpose) are
 * created again from their SQL. One that cannot be (it names a column the migration took
 * away) fails the migration, naming it: the database stays as it was. */
static gboolean restore_user_objects(DqStore *store, const GPtrArray *before,
                                     const char *migration_sql, GError **err) {
    for (guint i = 0; i < before->len; i++) {
        const SchemaObject *o = g_ptr_array_index(before, i);
        gboolean still_there = FALSE, table_there = FALSE;
        if (!schema_has(store, o->type, o->name, &still_there, err) ||
            (!still_there && !schema_has(store, "table", o->table, &table_there, err)))
            return FALSE;
        if (still_there || !table_there || migration_names_object(migration_sql, o->name))
            continue;
        char *msg = NULL;
        if (sqlite3_exec(store->db, o->sql, NULL, NULL, &msg) != SQLITE_OK) {
            dq_fail(err, DQ_ERR_DB,
                    "%s: the %s %s on %s, not docqa's, cannot be made again after the table "
                    "was rebuilt: %s (drop it, open the database with this docqa, then create "
                    "it anew)",
                    store->path, o->type, o->name, o->table, msg ? msg : "unknown SQLite error");
            sqlite3_free(msg);
            return FALSE;
        }
    }
    return TRUE;
}

/* The schema version for deciding which migrations to apply: a read that fails is an error,
 * not version 0 (that would run every migration again on a database that has them). */
static gboolean read_schema_version(DqStore *store, int *version, GError **err) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(store->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) {
        dq_fail(err, DQ_ERR_DB, "%s: reading the schema version: %s", store->path,
                sqlite3_errstr(rc));
        store_sqlite_explain(store, err);
        return FALSE;
    }
    return TRUE;
}

gboolean dq_store_read_schema_version(DqStore *store, int *version, GError **err) {
    PG_DISPATCH(store, return store_pg_read_schema_version(store, version, err));
    *version = 0;
    return read_schema_version(store, version, err);
}

/* One upgrade of a SQLite database: the migrations there are, the version to reach, and the
 * version found once the write lock is held. */
typedef struct {
    DqStore *store;
    char **names; /* the migrations' file names, in order */
    int target;   /* the version to reach */
    int start;    /* the version found in the transaction: another process may have upgraded */
} Upgrade;

/* A read-only connection (status or export on read-only media) cannot upgrade: say that, rather
 * than the "attempt to write a readonly database" the first write would give. TRUE when it can. */
static gboolean may_upgrade(DqStore *store, int current, int target, gboolean wanted_write,
                            GError **err) {
    if (sqlite3_db_readonly(store->db, "main") != 1)
        return TRUE;
    if (!wanted_write)
        return dq_fail(err, DQ_ERR_DB,
                       "%s: schema version %d needs upgrading to %d: open it once with write "
                       "access (any docqa command)",
                       store->path, current, target);
    /* Opened to write, and SQLite could only read it: a command that writes is what the
     * advice above would have the user run, so say why it could not. */
    dq_fail(err, DQ_ERR_DB, "%s: schema version %d needs upgrading to %d", store->path, current,
            target);
    char *dir = g_path_get_dirname(store->path);
    char *why = not_writable_text(store->path, dir);
    if (why == NULL && access(dir, W_OK) != 0)
        why = g_strdup_printf(" (the folder %s must be writable: SQLite keeps the "
                              "database's -wal and -shm files there)",
                              dir);
    append_to_message(*err, why != NULL ? why : g_strdup(REFUSED_OPEN_TEXT));
    g_free(dir);
    return FALSE;
}

/* Migration `name` (number num), applied and recorded, the user's indexes and triggers that a
 * rebuilt table took with it made again, its foreign keys checked. */
static gboolean apply_migration(Upgrade *u, const char *name, int num, GError **err) {
    char *rpath = g_strconcat("schema/sqlite/", name, NULL);
    GBytes *sql = dq_resource_get(rpath, err);
    g_free(rpath);
    if (sql == NULL)
        return FALSE;
    char *text = g_strndup(g_bytes_get_data(sql, NULL), g_bytes_get_size(sql));
    g_bytes_unref(sql);
    char *record = g_strdup_printf("INSERT INTO schema_migrations(version, name) VALUES (%d, '%s');"
                                   "PRAGMA user_version = %d;",
                                   num, name, num);
    GPtrArray *objects = NULL;
    gboolean ok = (objects = schema_objects(u->store, err)) != NULL &&
                  dq_store_exec(u->store, text, err) &&
                  restore_user_objects(u->store, objects, text, err) &&
                  foreign_keys_hold(u->store, err) && dq_store_exec(u->store, record, err);
    g_free(record);
    g_free(text);
    g_clear_pointer(&objects, g_ptr_array_unref);
    if (!ok) {
        dq_error_prefix(err, "migration %s", name);
        if (u->start > 0)
            dq_error_prefix(err, "upgrading the schema from version %d to %d (left at %d)",
                            u->start, u->target, u->start);
    }
    return ok;
}

/* One transaction for the whole upgrade: a migration that fails (or a crash) leaves the database
 * at the version it had, which the docqa that made it still opens, not halfway at a version
 * neither docqa can use. BEGIN IMMEDIATE so two processes opening a fresh database do not both
 * migrate. */
static gboolean upgrade_in_transaction(Upgrade *u, GError **err) {
    if (!dq_store_exec(u->store, "BEGIN IMMEDIATE", err))
        return FALSE;
    if (!read_schema_version(u->store, &u->start, err))
        goto fail;
    for (char **n = u->names; *n; n++) {
        int num = store_migration_number(*n);
        if (num <= u->start || num > u->target)
            continue;
        if (!apply_migration(u, *n, num, err))
            goto fail;
    }
    if (!dq_store_exec(u->store, "COMMIT", err))
        goto fail;
    /* An upgrade is for good (an older docqa refuses the database after it): said once, by the
     * process that made it. */
    if (u->start > 0 && u->start < u->target)
        dq_print_line(stderr, "docqa: %s: upgraded the schema from version %d to %d",
                      u->store->path, u->start, u->target);
    return TRUE;
fail:
    dq_store_exec(u->store, "ROLLBACK", NULL);
    return FALSE;
}

/* Foreign keys off while migrating, as SQLite's procedure for changing a table asks (the pragma
 * is a no-op inside a transaction, so it is set around it): rebuilding a table then neither
 * cascades its DROP into the rows that reference it nor leaves them dangling, and each migration
 * is checked with foreign_key_check before it commits. */
static gboolean upgrade(Upgrade *u, GError **err) {
    if (!dq_store_exec(u->store, "PRAGMA foreign_keys=OFF", err))
        return FALSE;
    gboolean ok = upgrade_in_transaction(u, err);
    if (!dq_store_exec(u->store, "PRAGMA foreign_keys=ON", ok ? err : NULL))
        ok = FALSE;
    return ok;
}

/* The database brought to max_version (0: the newest this docqa knows), refused when it is newer
 * than this docqa or cannot be written. */
static gboolean apply_migrations(DqStore *store, int max_version, gboolean wanted_write,
                                 GError **err) {
    int current = 0, newest_known = 0;
    if (!read_schema_version(store, &current, err))
        return FALSE;
    Upgrade u = {.store = store};
    u.names = store_migration_names("schema/sqlite", &newest_known, err);
    if (u.names == NULL)
        return FALSE;
    u.target = max_version > 0 ? MIN(max_version, newest_known) : newest_known;
    gboolean ok = FALSE;
    if (current > newest_known)
        store_schema_too_new(store, current, newest_known, err);
    else
        ok = current >= u.target ||
             (may_upgrade(store, current, u.target, wanted_write, err) && upgrade(&u, err));
    g_strfreev(u.names);
    return ok;
}

/* A database with tables of its own and none of docqa's belongs to another program: say so
 * rather than add docqa's tables to it. */
static gboolean check_docqa_database(DqStore *store, gboolean must_exist, GError **err) {
    sqlite3_stmt *st = NULL;
    gint64 ours = 0, tables = 0;
    int rc = sqlite3_prepare_v2(store->db,
                                "SELECT coalesce(sum(name = 'schema_migrations'), 0), count(*) "
                                "FROM sqlite_master WHERE type = 'table'",
                                -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        ours = sqlite3_column_int64(st, 0);
        tables = sqlite3_column_int64(st, 1);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) {
        /* A WAL database read by a connection that may write starts by making its -shm: where
         * that is refused, SQLite's "attempt to write a readonly database" is about writing. */
        dq_fail(err, DQ_ERR_DB, "%s: cannot %s the database: %s", store->path,
                (rc & 0xff) == SQLITE_READONLY ? "write" : "read", sqlite3_errmsg(store->db));
        store_sqlite_explain(store, err);
        return FALSE;
    }
    if (ours > 0)
        return TRUE;
    if (tables > 0)
        return dq_fail(err, DQ_ERR_DB,
                       "%s: not a docqa database: it holds %" G_GINT64_FORMAT
                       " other table%s and no schema_migrations",
                       store->path, tables, tables == 1 ? "" : "s");
    if (must_exist)
        return dq_fail(err, DQ_ERR_DB, "%s: holds no docqa tables (docqa ingest creates it)",
                       store->path);
    return TRUE;
}

/* docqa_error_reason(message): the message without its paths (DQ_REASON_* in
 * store_internal.h), for store_jobs_top_errors. */
static void error_reason_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    static GRegex *file_re, *paren_re; /* immutable once made: safe from any thread */
    if (g_once_init_enter(&paren_re)) {
        file_re = g_regex_new(DQ_REASON_FILE_RE, G_REGEX_OPTIMIZE, 0, NULL);
        // cppcheck-suppress leakNoVarFunctionCall -- kept in paren_re for the process's life
        g_once_init_leave(&paren_re, g_regex_new(DQ_REASON_PAREN_RE, G_REGEX_OPTIMIZE, 0, NULL));
    }
    const char *message = (const char *)sqlite3_value_text(argv[0]);
    if (message == NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    char *a = g_regex_replace_literal(file_re, message, -1, 0, DQ_REASON_FILE_BY, 0, NULL);
    char *b = a ? g_regex_replace_literal(paren_re, a, -1, 0, DQ_REASON_PAREN_BY, 0, NULL) : NULL;
    if (b != NULL)
        sqlite3_result_text(ctx, b, -1, g_free);
    else /* not UTF-8: GRegex refuses it, and it is its own reason */
        sqlite3_result_text(ctx, message, -1, SQLITE_TRANSIENT);
    g_free(a);
}

typedef enum {
    OPEN_READ_WRITE,
    OPEN_READ_ONLY,
    OPEN_IMMUTABLE, /* read-only, and no other process writes it: no -shm, no locks */
} OpenMode;

/* Whether the last failure on `db` was for want of room: SQLite says SQLITE_FULL when a write of
 * its own finds none, but "disk I/O error" (SQLITE_IOERR_SHMSIZE) when the -shm it makes to read
 * a WAL database cannot be given its 32 KB; the errno behind it tells. */
static gboolean failed_for_room(sqlite3 *db) {
    if (db == NULL)
        return FALSE;
    int rc = sqlite3_extended_errcode(db) & 0xff, e = sqlite3_system_errno(db);
    return rc == SQLITE_FULL ||
           ((rc == SQLITE_IOERR || rc == SQLITE_CANTOPEN) && (e == ENOSPC || e == EDQUOT));
}

/* The file a location names, refused where SQLite would say only "unable to open database
 * file": a folder, a file that must exist and does not, a folder that is not there. */
static gboolean check_database_path(const char *path, gboolean must_exist, GError **err) {
    if (g_file_test(path, G_FILE_TEST_IS_DIR))
        return dq_fail(err, DQ_ERR_DB, "%s: is a directory, not a database file", path);
    if (must_exist && !g_file_test(path, G_FILE_TEST_EXISTS))
        return dq_fail(err, DQ_ERR_DB, "%s: no such database (docqa ingest creates it)", path);
    char *folder = g_path_get_dirname(path);
    const char *folder_wrong = !g_file_test(folder, G_FILE_TEST_EXISTS)
                                   ? "does not exist (create it first)"
                               : !g_file_test(folder, G_FILE_TEST_IS_DIR) ? "is not a directory"
                                                                          : NULL;
    if (folder_wrong != NULL)
        dq_fail(err, DQ_ERR_DB, "%s: the folder %s %s", path, folder, folder_wrong);
    g_free(folder);
    return folder_wrong == NULL;
}

/* The SQLite connection, set up as every store's is (busy handling, extended codes, the
 * docqa_error_reason function), and the file's identity (dq_store_check_file). */
static DqStore *open_connection(const char *path, OpenMode mode, gboolean *no_room, GError **err) {
    install_sqlite_log();
    DqStore *store = g_new0(DqStore, 1);
    store->path = g_strdup(path);
    char *uri = mode == OPEN_IMMUTABLE ? store_sqlite_immutable_uri(path) : NULL;
    store->immutable = uri != NULL;
    int rc =
        sqlite3_open_v2(uri ? uri : path, &store->db,
                        (mode != OPEN_READ_WRITE ? SQLITE_OPEN_READONLY
                                                 : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                            SQLITE_OPEN_NOMUTEX | (uri ? SQLITE_OPEN_URI : 0),
                        NULL);
    g_free(uri);
    if (rc != SQLITE_OK) {
        dq_fail(err, DQ_ERR_DB, "%s: cannot open database: %s", path,
                store->db ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
        store_sqlite_explain(store, err);
        if (no_room != NULL)
            *no_room = failed_for_room(store->db);
        dq_store_close(store);
        return NULL;
    }
    /* SQLITE_OK: sqlite3_open_v2 set store->db */
    // NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker)
    sqlite3_busy_timeout(store->db, (int)store_busy_limit_ms());
    sqlite3_extended_result_codes(store->db, 1);
    sqlite3_create_function_v2(store->db, "docqa_error_reason", 1,
                               SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY, NULL,
                               error_reason_fn, NULL, NULL, NULL);
    GStatBuf st;
    if (g_stat(path, &st) == 0) {
        store->dev = st.st_dev;
        store->ino = st.st_ino;
    }
    return store;
}

/* A docqa database, brought to max_version (0: the newest) and its version read (the version
 * dq_store_check_file compares with: a failed read is no version). Read-only: what is there is
 * read as it is (no WAL switch, no migration: an older database fails in apply_migrations' first
 * write, naming the folder). */
static gboolean ready_schema(DqStore *store, int max_version, gboolean must_exist,
                             gboolean read_only, GError **err) {
    const char *setup = read_only ? "PRAGMA query_only=ON; PRAGMA foreign_keys=ON;"
                                  : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                                    "PRAGMA foreign_keys=ON;"
                                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                    "  version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                                    "  applied_at TEXT NOT NULL DEFAULT "
                                    "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))"
                                    ") STRICT;";
    return check_docqa_database(store, must_exist, err) && exec_waiting(store, setup, err) &&
           apply_migrations(store, max_version, !read_only, err) &&
           read_schema_version(store, &store->schema_version, err);
}

static DqStore *open_store(const char *location, int max_version, gboolean must_exist,
                           OpenMode mode, gboolean *no_room, GError **err) {
    g_assert(location != NULL);
    const char *path = location;
    if (g_str_has_prefix(path, "sqlite:"))
        path += strlen("sqlite:");
    else if (!refuse_conninfo(location, err))
        return NULL;
    if (dq_store_location_is_postgres(location)) {
#ifdef DOCQA_HAVE_POSTGRES
        return store_pg_open(location, max_version, must_exist, err);
#else
        dq_fail(err, DQ_ERR_UNSUPPORTED,
                "a PostgreSQL location needs a docqa built with PostgreSQL support (this one "
                "was built without)");
        return NULL;
#endif
    }
    if (!check_database_path(path, must_exist, err))
        return NULL;
    DqStore *store = open_connection(path, mode, no_room, err);
    if (store == NULL)
        return NULL;
    if (!ready_schema(store, max_version, must_exist, mode != OPEN_READ_WRITE, err)) {
        if (no_room != NULL)
            *no_room = failed_for_room(store->db);
        dq_store_close(store);
        return NULL;
    }
    return store;
}

char *store_sqlite_immutable_uri(const char *path) {
    char *abs = g_canonicalize_filename(path, NULL);
    char *file_uri = g_filename_to_uri(abs, NULL, NULL); /* percent-escapes ?, # and % */
    char *uri = file_uri ? g_strconcat(file_uri, "?immutable=1", NULL) : NULL;
    g_free(file_uri);
    g_free(abs);
    return uri;
}

DqStore *dq_store_open(const char *location, GError **err) {
    return open_store(location, 0, FALSE, OPEN_READ_WRITE, NULL, err);
}

DqStore *dq_store_open_at(const char *location, int max_version, GError **err) {
    return open_store(location, max_version, FALSE, OPEN_READ_WRITE, NULL, err);
}

DqStore *dq_store_open_existing(const char *location, GError **err) {
    return open_store(location, 0, TRUE, OPEN_READ_WRITE, NULL, err);
}

/* The free room of the file system holding `dir`, for messages ("12 KB"). g_free. */
static char *room_text(const char *dir) {
    struct statvfs fs;
    return plain_size(statvfs(dir, &fs) == 0 ? (guint64)fs.f_bavail * fs.f_frsize : 0);
}

/* A full disk where status or export reads (the nightly job that filled it is when an operator
 * looks): SQLite cannot give the -shm it makes to read a WAL database its 32 KB. Read as
 * immutable, the database file alone, when the -wal holds nothing beyond it: everything
 * committed is then in the file. A -wal with transactions can be read only through a -shm, and
 * read past, it would leave its answers out unsaid: an error saying what to free. NULL and err
 * then. Nothing is written either way. */
static DqStore *open_past_full_disk(const char *path, GError *rw_err, GError **err) {
    char *wal = g_strconcat(path, "-wal", NULL);
    char *dir = g_path_get_dirname(path);
    GStatBuf wst, before;
    DqStore *store = NULL;
    if (g_stat(wal, &wst) == 0 && wst.st_size > 32) {
        char *room = room_text(dir);
        dq_fail(err, DQ_ERR_DB,
                "%s: cannot be read: the disk is full (the file system holding %s has %s free), "
                "and %s holds transactions not yet in the database, which SQLite reads only "
                "through %s-shm, a file it cannot make without room; free at least 32 KB there "
                "(32 KB more for each 4096 pages the -wal holds) and run again",
                path, dir, room, wal, path);
        g_free(room);
        goto out;
    }
    /* What the file is now: dq_store_check_unchanged compares, as nothing locks it for us. */
    if (g_stat(path, &before) != 0) {
        g_propagate_error(err, g_steal_pointer(&rw_err));
        goto out;
    }
    if ((store = open_store(path, 0, TRUE, OPEN_IMMUTABLE, NULL, err)) == NULL)
        goto out;
    store->read_past_full_disk = TRUE;
    store->size = before.st_size;
    store->mtime_ns =
        (gint64)before.st_mtim.tv_sec * G_GINT64_CONSTANT(1000000000) + before.st_mtim.tv_nsec;
    store->ctime_ns =
        (gint64)before.st_ctim.tv_sec * G_GINT64_CONSTANT(1000000000) + before.st_ctim.tv_nsec;
    dq_print_line(stderr,
                  "docqa: %s: the disk is full: SQLite cannot make %s-shm, which reading a WAL "
                  "database needs, so the database file is read alone, read-only: it holds "
                  "everything committed (no -wal holds more), but what another process commits "
                  "while this reads is not seen; make room in %s",
                  path, path, dir);
out:
    if (rw_err != NULL)
        g_error_free(rw_err);
    g_free(wal);
    g_free(dir);
    return store;
}

DqStore *dq_store_open_reader(const char *location, GError **err) {
    const char *path =
        g_str_has_prefix(location, "sqlite:") ? location + strlen("sqlite:") : location;
    if (dq_store_location_is_postgres(location) || !g_file_test(path, G_FILE_TEST_EXISTS))
        return open_store(location, 0, TRUE, OPEN_READ_WRITE, NULL, err);
    /* A database on read-only media (a read-only mount, a folder of someone else's): WAL's
     * -shm and -wal cannot be made beside it, so a read-write open fails. SQLite reads a WAL
     * database read-only when its -shm (and -wal) are there; without them it reads it only as
     * immutable. That is safe while there is no -wal: every commit is then in the file itself
     * (the last writer checkpointed and removed it), and nobody may write where it lies. */
    char *dir = g_path_get_dirname(path);
    gboolean writable = access(path, W_OK) == 0 && access(dir, W_OK) == 0;
    g_free(dir);
    if (writable) {
        GError *rw_err = NULL;
        gboolean no_room = FALSE;
        DqStore *store = open_store(location, 0, TRUE, OPEN_READ_WRITE, &no_room, &rw_err);
        if (store != NULL || !no_room) {
            if (rw_err != NULL)
                g_propagate_error(err, rw_err);
            return store;
        }
        return open_past_full_disk(path, rw_err, err);
    }
    GError *ro_err = NULL;
    DqStore *store = open_store(location, 0, TRUE, OPEN_READ_ONLY, NULL, &ro_err);
    if (store != NULL)
        return store;
    char *wal = g_strconcat(path, "-wal", NULL);
    char *shm = g_strconcat(path, "-shm", NULL);
    GStatBuf wst;
    gboolean has_wal = g_stat(wal, &wst) == 0;
    gboolean has_shm = g_file_test(shm, G_FILE_TEST_EXISTS);
    /* A -wal without a -shm (a copy that left the -shm behind, a writer that crashed and whose
     * -shm was removed): SQLite reads the -wal's transactions only through a -shm, which it
     * cannot make here, and an immutable open would read the database file without them: the
     * answers last stored would be missing, silently. One that holds no transaction (no more
     * than its 32-byte header: emptied by a checkpoint, or never written) leaves nothing out. */
    if (has_wal && !has_shm && wst.st_size <= 32) {
        has_wal = FALSE;
    } else if (has_wal && !has_shm) {
        char *folder = g_path_get_dirname(path);
        g_clear_error(&ro_err);
        dq_fail(&ro_err, DQ_ERR_DB,
                "%s: cannot be read where it is: %s holds transactions not yet in it, which "
                "SQLite reads only through a -shm file it must create beside them, and %s cannot "
                "be written; copy %s and %s together to a folder you may write and give the copy "
                "to --db (or open it once where it may be written, which moves them into the "
                "database)",
                path, wal, folder, path, wal);
        g_free(folder);
    }
    g_free(wal);
    g_free(shm);
    if (has_wal) {
        g_propagate_error(err, ro_err);
        return NULL;
    }
    g_error_free(ro_err);
    return open_store(path, 0, TRUE, OPEN_IMMUTABLE, NULL, err);
}

gboolean dq_store_check_unchanged(DqStore *store, GError **err) {
    if (store->kind != DQ_STORE_SQLITE || !store->read_past_full_disk)
        return TRUE;
    GStatBuf st;
    /* A writer that found room checkpointed its -wal into the file while it was read as
     * immutable (SQLite then trusts its pages never to change): rows read before and after may
     * belong to different moments. */
    if (g_stat(store->path, &st) == 0 && (guint64)st.st_dev == store->dev &&
        (guint64)st.st_ino == store->ino && st.st_size == store->size &&
        (gint64)st.st_mtim.tv_sec * G_GINT64_CONSTANT(1000000000) + st.st_mtim.tv_nsec ==
            store->mtime_ns &&
        (gint64)st.st_ctim.tv_sec * G_GINT64_CONSTANT(1000000000) + st.st_ctim.tv_nsec ==
            store->ctime_ns)
        return TRUE;
    return dq_fail(err, DQ_ERR_DB,
                   "%s: the database file changed while it was read past the full disk (another "
                   "process wrote to it): what was read may not be one moment's; run again",
                   store->path);
}

gboolean dq_store_sync_committed(DqStore *store, GError **err) {
    if (store->kind != DQ_STORE_SQLITE || store->read_past_full_disk)
        return TRUE; /* immutable: the file alone was read, synced by the checkpoint that filled it
                      */
    sqlite3_file *wal = NULL;
    int rc = sqlite3_file_control(store->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    /* No -wal open: not in WAL mode (a rollback journal syncs at each commit) or nothing read. */
    if (rc != SQLITE_OK || wal == NULL || wal->pMethods == NULL)
        return TRUE;
    /* SQLite's own handle of the -wal, not a descriptor of ours: closing any descriptor of the
     * database's files would drop this process's POSIX locks on them. Its first sync also syncs
     * the folder, as SQLite does for every journal it opens. */
    errno = 0;
    rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
    int e = errno; /* fsync's: SQLite's words for it say only "disk I/O error" */
    if (rc != SQLITE_OK)
        return dq_fail(err, DQ_ERR_DB,
                       "%s-wal: cannot sync (what was read could be rolled back by a power "
                       "loss): %s",
                       store->path, e != 0 ? g_strerror(e) : sqlite3_errstr(rc));
    return TRUE;
}

gboolean dq_store_check_file(DqStore *store, GError **err) {
    if (store->kind != DQ_STORE_SQLITE)
        return TRUE;
    GStatBuf st;
    store->file_gone = TRUE;
    if (g_stat(store->path, &st) != 0)
        return dq_fail(err, DQ_ERR_DB,
                       "%s: the database file was deleted or moved away while docqa used it "
                       "(what was written since went with it)",
                       store->path);
    if ((guint64)st.st_dev != store->dev || (guint64)st.st_ino != store->ino)
        return dq_fail(err, DQ_ERR_DB,
                       "%s: the database file was replaced while docqa used it (what was written "
                       "since went to the old file)",
                       store->path);
    store->file_gone = FALSE;
    /* A newer docqa upgraded the schema while this process ran (any command upgrades): what
     * this one writes next may not be what the new schema expects. PRAGMA user_version reads
     * the header only. One that fails is an error: taken for version 0, it skipped this check,
     * and the worker stored its answers into whatever schema was there. */
    int now = 0;
    if (!read_schema_version(store, &now, err))
        return FALSE;
    if (now != store->schema_version)
        return dq_fail(err, DQ_ERR_DB,
                       "%s: the schema was changed from version %d to %d while docqa used it "
                       "(by a newer docqa?): stopping; go on with the docqa that upgraded it",
                       store->path, store->schema_version, now);
    return TRUE;
}

gboolean dq_store_reconnect(DqStore *store, GError **err) {
    PG_DISPATCH(store, return store_pg_reconnect(store, err));
    (void)err; /* an SQLite connection is a file: never lost */
    return TRUE;
}

gboolean dq_store_keep_reserve(DqStore *store, guint64 bytes, GError **err) {
    if (store->kind != DQ_STORE_SQLITE || store->has_reserve)
        return TRUE;
    char *tmpl = g_strconcat(store->path, "-reserve.XXXXXX", NULL);
    int fd = g_mkstemp_full(tmpl, O_RDWR | O_CLOEXEC, 0600);
    int e = fd < 0 ? errno : 0;
    if (fd >= 0) {
        /* Gone from the folder at once: nobody else sees it or has to clean it up, and the
         * kernel frees its room when this process ends, however it ends. */
        g_unlink(tmpl);
        /* Written, not fallocate'd: not every file system can preallocate. Not zeros, which a
         * compressing file system would store in no room at all. */
        char block[8192];
        for (gsize i = 0; i < sizeof block; i++)
            block[i] = (char)g_random_int();
        for (guint64 done = 0; done < bytes && e == 0;) {
            ssize_t w = write(fd, block, (size_t)MIN(bytes - done, sizeof block));
            if (w < 0 && errno != EINTR)
                e = errno;
            else if (w > 0)
                done += (guint64)w;
        }
        if (e == 0 && fsync(fd) != 0)
            e = errno;
        if (e != 0)
            close(fd);
    }
    g_free(tmpl);
    if (e != 0 && e != ENOSPC && e != EDQUOT)
        return TRUE; /* a read-only folder, say: a write there fails before it needs room */
    if (e != 0) {
        char *dir = g_path_get_dirname(store->path);
        struct statvfs fs;
        char *room = plain_size(statvfs(dir, &fs) == 0 ? (guint64)fs.f_bavail * fs.f_frsize : 0);
        char *want = plain_size(bytes);
        dq_fail(err, DQ_ERR_DB,
                "%s: the disk is full: docqa keeps %s free beside the database to give jobs "
                "back should the disk fill while it answers, and the file system holding it has "
                "%s free; make room there",
                store->path, want, room);
        g_free(dir);
        g_free(room);
        g_free(want);
        return FALSE;
    }
    store->reserve_fd = fd;
    store->has_reserve = TRUE;
    return TRUE;
}

gboolean dq_store_drop_reserve(DqStore *store) {
    if (!store->has_reserve)
        return FALSE;
    close(store->reserve_fd);
    store->has_reserve = FALSE;
    return TRUE;
}

void dq_store_close(DqStore *store) {
    if (store == NULL)
        return;
    dq_store_drop_reserve(store);
#ifdef DOCQA_HAVE_POSTGRES
    if (store->kind == DQ_STORE_POSTGRES) {
        store_pg_close(store);
        return;
    }
#endif
    if (store->db != NULL) {
        /* The store owns the statements its modules cached (store_jobs.c prepares them
         * persistent): finalize them so the connection really closes now, not at exit. */
        sqlite3_stmt *st;
        while ((st = sqlite3_next_stmt(store->db, NULL)) != NULL)
            sqlite3_finalize(st);
        /* The -wal beside the path is the old file's, and would be replayed into the file that
         * replaced it (corrupting it): emptied into the old file instead. */
        if (store->file_gone)
            sqlite3_exec(store->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
        sqlite3_close_v2(store->db);
    }
    g_free(store->path);
    g_free(store);
}
