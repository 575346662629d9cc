/* The content-addressed page store: <db>.pages/ab/cd/<sha256>.png (see ingest.h for why). */
#include "ingest_internal.h"
#include "mapped_file.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* The layout has one home, store.h (the workers read what ingest writes). */
char *dq_ingest_page_store_dir(const char *db_path) {
    return dq_store_page_dir_for(db_path, NULL);
}

char *dq_ingest_page_path(const char *store_dir, const char *image_sha256) {
    return dq_store_page_path(store_dir, image_sha256);
}

static gboolean write_all(int fd, const uint8_t *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FALSE;
        data += n;
        len -= (size_t)n;
    }
    return TRUE;
}

static int (*dir_fsync)(int fd) = fsync;

void page_store_set_dir_fsync_for_test(int (*fn)(int fd)) {
    dir_fsync = fn != NULL ? fn : fsync;
}

/* A page's name survives a crash only once the folder holding it is on disk; the database row
 * naming the PNG commits right after, so a folder that cannot be synced fails the page. */
static gboolean sync_dir(const char *dir, GError **err) {
    int e = dq_sync_folder(dir, dir_fsync);
    if (e != 0)
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_STORE_FAILED,
                    "%s: cannot sync the folder (the page may not survive a crash): %s", dir,
                    g_strerror(e));
    return e == 0;
}

/* Whether len more bytes fit in dir's file system with min_free_mb MiB left, and twice len (the
 * database's rows and its journal need room too); FALSE with an error naming the folder. */
static gboolean room_for(const char *dir, gsize len, gint64 min_free_mb, GError **err) {
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0)
        return TRUE; /* unknown: the write itself will tell */
    guint64 avail = (guint64)vfs.f_bavail * (guint64)vfs.f_frsize;
    guint64 keep = (guint64)MAX(min_free_mb, 0) << 20;
    if (avail >= 2 * (guint64)len && avail - len >= keep)
        return TRUE;
    /* Each rule said as it is: with --min-free 0, "less than the 0 MiB kept free" was no
     * reason at all. */
    if (avail < 2 * (guint64)len)
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_STORE_FAILED,
                    "%s: %" G_GUINT64_FORMAT " KiB free: a page of %" G_GSIZE_FORMAT
                    " KiB needs twice its size free (room for the database's rows and journal "
                    "too, whatever --min-free says); not written",
                    dir, avail >> 10, (len + 1023) / 1024);
    else
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_STORE_FAILED,
                    "%s: %" G_GUINT64_FORMAT " MiB free: a page of %" G_GSIZE_FORMAT
                    " KiB would leave less than the %" G_GINT64_FORMAT
                    " MiB kept free (--min-free); not written",
                    dir, avail >> 20, (len + 1023) / 1024, MAX(min_free_mb, 0));
    return FALSE;
}

/* The same page stored before under path; a file of other bytes under its name (truncated,
 * emptied, overwritten: ingest --verify renders such pages again) is not that page and is
 * replaced. Reading it back costs less than the encoding just done. */
static gboolean already_stored(const char *path, const uint8_t *data, gsize len) {
    GStatBuf st;
    /* Touched first: a docqa prune that has not removed it by now takes it for new until this
     * page's row commits (page_store_touch); one that removed it leaves it to be written. */
    if (page_store_touch(path) != 0 || g_stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
        (gsize)st.st_size != len)
        return FALSE;
    char *old = NULL;
    gsize old_len = 0;
    gboolean same = g_file_get_contents(path, &old, &old_len, NULL) && old_len == len &&
                    memcmp(old, data, len) == 0;
    g_free(old);
    return same;
}

/* git gc's rule, the one docqa prune keeps (README: Reclaiming space): a page file that a row
 * about to commit names, while it is not named by one yet, is kept by prune only as long as it is
 * newer than prune's grace period. Ingest refreshes its modification time when it finds the file
 * stored already and again just before the row commits; prune, for its part, removes only files
 * older than the grace period as of the moment it read which pages are live. UTIME_NOW is the file
 * system's clock (the server's on NFS), the one prune measures the store's age by. A file this
 * process may not touch (another user's that it may not write, in a shared store) keeps its
 * time: only whether it is there can be told then. */
int page_store_touch(const char *path) {
    if (utimensat(AT_FDCWD, path, NULL, 0) == 0)
        return 0;
    int e = errno;
    GStatBuf st;
    if (e == EPERM || e == EACCES || e == EROFS)
        return g_stat(path, &st) == 0 ? 0 : errno;
    return e;
}

/* dir and the folders above it that are not there yet, each one made synced into its parent:
 * syncing a page's own folder puts the page's name on disk, but a power loss forgets a new
 * folder whose parent was never synced, and the page with it, while the row naming the page
 * commits (scripts/crash-sweep.py found rows naming files in such lost folders). A folder that
 * another ingest made first is that ingest's to sync (it does so before its rows commit). */
static gboolean make_folder(const char *dir, GError **err) {
    if (g_file_test(dir, G_FILE_TEST_IS_DIR))
        return TRUE;
    char *parent = g_path_get_dirname(dir);
    gboolean ok = strcmp(parent, dir) == 0 || make_folder(parent, err);
    if (ok) {
        int e = g_mkdir(dir, 0755) == 0 ? 0 : errno;
        if (e == 0) {
            ok = sync_dir(parent, err);
            /* unmade, so that the next put makes it again and syncs it (if another put has
             * filled it meanwhile, it stays: rmdir refuses) */
            if (!ok)
                g_rmdir(dir);
        } else if (e != EEXIST || !g_file_test(dir, G_FILE_TEST_IS_DIR)) {
            g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_STORE_FAILED, "%s: cannot create: %s", dir,
                        g_strerror(e));
            ok = FALSE;
        }
    }
    g_free(parent);
    return ok;
}

gboolean page_store_make(const char *store_dir, GError **err) {
    return make_folder(store_dir, err);
}

/* The page's bytes in a new file of tmp_dir named after sha256, synced: its path, or NULL (and
 * no file left) when it cannot be made or written. */
static char *write_temporary(const char *tmp_dir, const char *sha256, const uint8_t *data,
                             gsize len, GError **err) {
    char *tmp_name = g_strdup_printf("%s-XXXXXX", sha256);
    char *tmp = g_build_filename(tmp_dir, tmp_name, NULL);
    g_free(tmp_name);
    /* 0666 less the umask, as any file a plain open creates: whoever may read the database
     * may read its pages, and nobody else (g_mkstemp's 0600 widened to a fixed 0644 exposed the
     * pages of a database kept private with umask 077). */
    int fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0666);
    if (fd < 0) {
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_STORE_FAILED, "%s: cannot create: %s", tmp,
                    g_strerror(errno));
        g_free(tmp);
        return NULL;
    }
    gboolean wrote = write_all(fd, data, len) && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    if (!wrote) {
        g_unlink(tmp);
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_STORE_FAILED, "%s: cannot write: %s", tmp,
                    g_strerror(saved));
        g_free(tmp);
        return NULL;
    }
    return tmp;
}

/* The temporary file renamed to path, or removed when it cannot be. */
static gboolean rename_into_place(const char *tmp, const char *path, GError **err) {
    if (g_rename(tmp, path) == 0)
        return TRUE;
    int saved = errno;
    g_unlink(tmp);
    g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_STORE_FAILED, "%s: cannot rename into place: %s",
                path, g_strerror(saved));
    return FALSE;
}

gboolean page_store_put(const char *store_dir, GBytes *png, gint64 min_free_mb, char sha256_out[65],
                        GError **err) {
    gsize len = 0;
    const uint8_t *data = g_bytes_get_data(png, &len);
    char *hex = g_compute_checksum_for_data(G_CHECKSUM_SHA256, data, len);
    memcpy(sha256_out, hex, 65);
    g_free(hex);
    char *path = dq_ingest_page_path(store_dir, sha256_out);
    char *dir = g_path_get_dirname(path);
    /* Temporary file, fsync, rename: a reader (or a crash) never sees half a PNG under its
     * final name. The temporary files live in one folder of the store (the same file system,
     * so rename works) where page_store_sweep finds those a killed worker left. */
    char *tmp_dir = g_build_filename(store_dir, PAGE_STORE_TMP, NULL);
    char *tmp = NULL;
    gboolean ok = FALSE;
    if (already_stored(path, data, len)) {
        /* synced again: the put that renamed it may have failed at its folder's sync */
        ok = sync_dir(dir, err);
        goto out;
    }
    if (!make_folder(dir, err) || !make_folder(tmp_dir, err) ||
        !room_for(store_dir, len, min_free_mb, err))
        goto out;
    tmp = write_temporary(tmp_dir, sha256_out, data, len, err);
    ok = tmp != NULL && rename_into_place(tmp, path, err) && sync_dir(dir, err);
out:
    g_free(tmp);
    g_free(tmp_dir);
    g_free(dir);
    g_free(path);
    return ok;
}

/* Removes the regular files in `dir` older than max_age_s; with `only_mkstemp_names`, only those
 * named exactly as g_mkstemp made ".tmp-XXXXXX" (in a page folder nothing else is touched). */
static void sweep_dir(const char *dir, gboolean only_mkstemp_names, gint64 max_age_s) {
    GDir *d = g_dir_open(dir, 0, NULL);
    if (d == NULL)
        return;
    const char *name;
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    while ((name = g_dir_read_name(d)) != NULL) {
        if (only_mkstemp_names &&
            (!g_str_has_prefix(name, ".tmp-") || strlen(name) != strlen(".tmp-XXXXXX")))
            continue;
        /* A file docqa prune set aside keeps its page file's time, not that of its move, and
         * may be a live page's (prune killed before it put it back): the next prune puts it
         * back, none is removed here. */
        if (g_str_has_prefix(name, "prune-") && !g_str_has_prefix(name, "prune-clock-"))
            continue;
        char *path = g_build_filename(dir, name, NULL);
        GStatBuf st;
        if (g_lstat(path, &st) == 0 && S_ISREG(st.st_mode) && now - st.st_mtime > max_age_s)
            g_unlink(path);
        g_free(path);
    }
    g_dir_close(d);
}

void page_store_sweep(const char *store_dir, gint64 max_age_s) {
    char *tmp_dir = g_build_filename(store_dir, PAGE_STORE_TMP, NULL);
    sweep_dir(tmp_dir, FALSE, max_age_s);
    g_free(tmp_dir);
}

void page_store_sweep_folder(const char *folder, gint64 max_age_s) {
    sweep_dir(folder, TRUE, max_age_s);
}

/* ---- claims (ingest_internal.h) */

/* Whether `path` still names the file open at fd: a holder removes the file as it lets go. */
static gboolean names_open_file(const char *path, int fd) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

static char *read_holder(int fd) {
    char buf[256];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return buf[0] != '\0' ? g_strdup(buf) : NULL;
}

ClaimResult page_store_claim(const char *store_dir, const char *key, Claim *claim, char **holder) {
    claim->fd = -1;
    claim->path = NULL;
    *holder = NULL;
    char *dir = g_build_filename(store_dir, PAGE_STORE_CLAIMS, NULL);
    char *name = g_strconcat(key, ".lock", NULL);
    char *path = g_build_filename(dir, name, NULL);
    g_free(name);
    ClaimResult result = CLAIM_UNAVAILABLE;
    /* Each turn round the loop follows a holder who let go between our open and our lock: a
     * few turns at most, unless the file system keeps moving names under us. */
    for (int turn = 0; turn < 64 && g_mkdir_with_parents(dir, 0755) == 0; turn++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
        if (fd < 0)
            break;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno == EWOULDBLOCK) {
                *holder = read_holder(fd);
                result = CLAIM_BUSY;
            }
            close(fd);
            break;
        }
        if (!names_open_file(path, fd)) {
            close(fd);
            continue;
        }
        /* For the one told it is busy, and for a person looking at the folder. */
        char *who = g_strdup_printf("pid %d on %s\n", (int)getpid(), g_get_host_name());
        gboolean wrote =
            ftruncate(fd, 0) == 0 && pwrite(fd, who, strlen(who), 0) == (ssize_t)strlen(who);
        (void)wrote; /* the lock is what counts; the words only help */
        g_free(who);
        claim->fd = fd;
        claim->path = g_steal_pointer(&path);
        result = CLAIM_TAKEN;
        break;
    }
    g_free(path);
    g_free(dir);
    return result;
}

void page_store_release(Claim *claim) {
    if (claim->fd < 0)
        return;
    /* Removed while still locked: whoever locks it after this sees it is no longer the file the
     * name leads to. */
    g_unlink(claim->path);
    close(claim->fd);
    claim->fd = -1;
    g_clear_pointer(&claim->path, g_free);
}

void page_store_sweep_claims(const char *store_dir) {
    char *dir = g_build_filename(store_dir, PAGE_STORE_CLAIMS, NULL);
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;
    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
        if (!g_str_has_suffix(name, ".lock"))
            continue;
        Claim c = {.fd = -1, .path = g_build_filename(dir, name, NULL)};
        c.fd = open(c.path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (c.fd >= 0 && flock(c.fd, LOCK_EX | LOCK_NB) == 0 && names_open_file(c.path, c.fd)) {
            page_store_release(&c);
            continue;
        }
        if (c.fd >= 0)
            close(c.fd);
        g_free(c.path);
    }
    if (d != NULL)
        g_dir_close(d);
    g_free(dir);
}
