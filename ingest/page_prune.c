/* docqa prune: the page files no live page needs removed (page_prune.h says why it is safe). */
#include "page_prune.h"

#include "dq_error.h"
#include "ingest_internal.h"
#include "store_documents.h"
#include "test_point.h"
#include "text.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static gint64 mtime_ns(const struct stat *st) {
    return (gint64)st->st_mtim.tv_sec * G_GINT64_CONSTANT(1000000000) + st->st_mtim.tv_nsec;
}

/* "Now" by the page store's clock: the modification time of a file made in its .tmp folder
 * (ingest's touches are stamped by that clock too; on a share it is the server's). FALSE when
 * nothing can be written there. */
static gboolean store_clock_ns(const char *store_dir, gint64 *now_ns, GError **err) {
    char *tmp_dir = g_build_filename(store_dir, PAGE_STORE_TMP, NULL);
    char *path = g_build_filename(tmp_dir, "prune-clock-XXXXXX", NULL);
    gboolean ok = FALSE;
    int e = 0;
    if (g_mkdir(tmp_dir, 0755) != 0 && errno != EEXIST) {
        e = errno;
        dq_fail(err, DQ_ERR_IO, "%s: cannot write in the page store: %s", tmp_dir, g_strerror(e));
        goto out;
    }
    int fd = g_mkstemp_full(path, O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        e = errno;
        dq_fail(err, DQ_ERR_IO, "%s: cannot write in the page store: %s", tmp_dir, g_strerror(e));
        goto out;
    }
    struct stat st;
    ok = fstat(fd, &st) == 0;
    if (ok)
        *now_ns = mtime_ns(&st);
    else
        dq_fail(err, DQ_ERR_IO, "%s: cannot stat: %s", path, g_strerror(errno));
    close(fd);
    g_unlink(path);
out:
    g_free(path);
    g_free(tmp_dir);
    return ok;
}

static gboolean is_hex(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!g_ascii_isxdigit(s[i]) || g_ascii_isupper(s[i]))
            return FALSE;
    return TRUE;
}

/* The names of a folder's entries that are two lower-case hex digits, sorted (a folder's
 * order is the file system's; sorted, a dry run and the run after it see the same order). */
static GPtrArray *hex_folders(const char *dir, GError **err) {
    GDir *d = g_dir_open(dir, 0, err);
    if (d == NULL)
        return NULL;
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL)
        if (strlen(name) == 2 && is_hex(name, 2))
            g_ptr_array_add(names, g_strdup(name));
    g_dir_close(d);
    g_ptr_array_sort(names, (GCompareFunc)g_strcmp0);
    return names;
}

typedef struct {
    const DqPruneOptions *opt;
    DqPruneSummary *sum;
    const char *store_dir;
    GHashTable *live, *retired;
    gint64 cutoff_ns; /* files modified before this may go */
    int pid;
} Prune;

/* Removes the page file at path unless it was touched since it was looked at: renamed aside
 * first (an ingest's touch after that finds no file and writes it again), looked at again there
 * (touched before the rename: put back), then unlinked. TRUE when it went. */
static gboolean remove_page_file(const Prune *p, const char *path, const char *name) {
    char *aside_name = g_strdup_printf("prune-%d-%s", p->pid, name);
    char *aside = g_build_filename(p->store_dir, PAGE_STORE_TMP, aside_name, NULL);
    g_free(aside_name);
    gboolean gone = FALSE;
    struct stat st;
    if (g_rename(path, aside) != 0) {
        if (errno != ENOENT) {
            dq_print_line(stderr, "docqa: prune: %s: cannot remove: %s", path, g_strerror(errno));
            p->sum->files_not_removed++;
        }
        goto out;
    }
    int stat_err = lstat(aside, &st) == 0 ? 0 : errno;
    if (stat_err != 0 || mtime_ns(&st) >= p->cutoff_ns) {
        /* Touched as it went aside: an ingest is committing a row that names it (or its time
         * cannot be read, so it may have been). The same bytes as any file written under its
         * name since, so the rename back may replace that one. */
        if (stat_err != 0) {
            dq_print_line(stderr, "docqa: prune: %s: cannot stat: %s; put back", aside,
                          g_strerror(stat_err));
            p->sum->files_not_removed++;
        } else {
            p->sum->files_kept_recent++;
        }
        if (g_rename(aside, path) != 0)
            dq_print_line(stderr, "docqa: prune: %s: cannot put back %s: %s", path, aside,
                          g_strerror(errno));
    } else if (g_unlink(aside) != 0) {
        dq_print_line(stderr, "docqa: prune: %s: cannot remove: %s", aside, g_strerror(errno));
        p->sum->files_not_removed++;
    } else {
        gone = TRUE;
    }
out:
    g_free(aside);
    return gone;
}

/* The page file `name` names, when it is one: "prune-<pid>-<sha256>.png" as remove_page_file
 * sets a file aside. */
static char *set_aside_target(const char *store_dir, const char *name) {
    if (!g_str_has_prefix(name, "prune-"))
        return NULL;
    const char *p = name + strlen("prune-");
    while (g_ascii_isdigit(*p))
        p++;
    if (p == name + strlen("prune-") || *p != '-' || strlen(p + 1) != 68 ||
        !g_str_has_suffix(p + 1, ".png") || !is_hex(p + 1, 64))
        return NULL;
    char *sha = g_strndup(p + 1, 64);
    char *target = dq_ingest_page_path(store_dir, sha);
    g_free(sha);
    return target;
}

/* Puts back the files an earlier prune set aside and never removed or put back (killed, or the
 * power lost, between its two steps). One touched as it went aside was about to be named by a
 * row that has committed since: its page is live and its file must be where the row says. The
 * others are judged again by the walk after this. Linked, not renamed, back: a file written
 * under the name since stays, and a prune running now that set this one aside still finds it
 * there (the page is in place either way). */
static void restore_set_aside(Prune *p) {
    char *tmp_dir = g_build_filename(p->store_dir, PAGE_STORE_TMP, NULL);
    GDir *d = g_dir_open(tmp_dir, 0, NULL);
    for (const char *name; d != NULL && (name = g_dir_read_name(d)) != NULL;) {
        if (g_str_has_prefix(name, "prune-clock-")) {
            /* one a prune could not remove (a prune reading its clock now has it open still) */
            char *clock = g_build_filename(tmp_dir, name, NULL);
            g_unlink(clock);
            g_free(clock);
            continue;
        }
        char *target = set_aside_target(p->store_dir, name);
        if (target == NULL)
            continue;
        char *aside = g_build_filename(tmp_dir, name, NULL);
        int e = link(aside, target) == 0 ? 0 : errno;
        if (e != 0 && e != EEXIST && e != ENOENT && g_rename(aside, target) == 0)
            e = 0; /* a file system without hard links */
        if (e == 0 || e == EEXIST) {
            if (g_unlink(aside) != 0 && errno != ENOENT)
                dq_print_line(stderr, "docqa: prune: %s: cannot remove: %s", aside,
                              g_strerror(errno));
        } else if (e != ENOENT || g_file_test(aside, G_FILE_TEST_EXISTS)) {
            dq_print_line(stderr, "docqa: prune: %s: cannot put back to %s: %s", aside, target,
                          g_strerror(e));
            p->sum->files_not_removed++;
        }
        g_free(aside);
        g_free(target);
    }
    if (d != NULL)
        g_dir_close(d);
    g_free(tmp_dir);
}

static void prune_file(Prune *p, const char *dir, const char *name) {
    /* <sha256>.png, as dq_store_page_path names it; anything else is not ours to judge */
    if (strlen(name) != 68 || !g_str_has_suffix(name, ".png") || !is_hex(name, 64))
        return;
    char *path = g_build_filename(dir, name, NULL);
    char *sha = g_strndup(name, 64);
    struct stat st;
    DqPruneSummary *s = p->sum;
    if (lstat(path, &st) != 0) {
        /* gone meanwhile (another prune), or unreadable: then it is kept, and said */
        if (errno != ENOENT) {
            dq_print_line(stderr, "docqa: prune: %s: cannot stat: %s; kept", path,
                          g_strerror(errno));
            s->files_not_removed++;
        }
        goto out;
    }
    if (!S_ISREG(st.st_mode))
        goto out;
    s->files++;
    if (g_hash_table_contains(p->live, sha)) {
        s->files_kept_live++;
        if (g_hash_table_contains(p->retired, sha))
            s->files_kept_shared++;
        s->bytes_kept += st.st_size;
    } else if (mtime_ns(&st) >= p->cutoff_ns) {
        s->files_kept_recent++;
        s->bytes_kept += st.st_size;
    } else if (p->opt->dry_run ||
               (dq_test_point("prune:remove"), remove_page_file(p, path, name))) {
        s->files_removed++;
        s->bytes_removed += st.st_size;
        if (!g_hash_table_contains(p->retired, sha))
            s->orphans_removed++;
    } else {
        s->bytes_kept += st.st_size;
    }
out:
    g_free(sha);
    g_free(path);
}

static gboolean stopped(const Prune *p) {
    return p->opt->stop != NULL && *p->opt->stop != 0;
}

/* Every <store>/ab/cd/<sha256>.png in name order, until a signal stops it. */
static gboolean walk_store(Prune *p, GError **err) {
    GPtrArray *top = hex_folders(p->store_dir, err);
    if (top == NULL)
        return FALSE;
    for (guint i = 0; i < top->len && !stopped(p); i++) {
        char *dir1 = g_build_filename(p->store_dir, g_ptr_array_index(top, i), NULL);
        GError *e1 = NULL;
        GPtrArray *mid = hex_folders(dir1, &e1);
        if (mid == NULL) {
            /* its files are not looked at: counted as not removed, so the exit status says so */
            dq_print_line(stderr, "docqa: prune: %s", e1->message);
            g_error_free(e1);
            p->sum->files_not_removed++;
        }
        for (guint j = 0; mid != NULL && j < mid->len && !stopped(p); j++) {
            char *dir2 = g_build_filename(dir1, g_ptr_array_index(mid, j), NULL);
            GError *e = NULL;
            GDir *d = g_dir_open(dir2, 0, &e);
            if (d == NULL) {
                dq_print_line(stderr, "docqa: prune: %s", e->message);
                g_error_free(e);
                p->sum->files_not_removed++;
            }
            GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
            for (const char *n; d != NULL && (n = g_dir_read_name(d)) != NULL;)
                g_ptr_array_add(names, g_strdup(n));
            if (d != NULL)
                g_dir_close(d);
            g_ptr_array_sort(names, (GCompareFunc)g_strcmp0);
            for (guint k = 0; k < names->len && !stopped(p); k++)
                prune_file(p, dir2, g_ptr_array_index(names, k));
            g_ptr_array_free(names, TRUE);
            g_free(dir2);
        }
        if (mid != NULL)
            g_ptr_array_free(mid, TRUE);
        g_free(dir1);
    }
    g_ptr_array_free(top, TRUE);
    p->sum->interrupted = stopped(p);
    return TRUE;
}

gboolean dq_page_store_prune(DqStore *store, const DqPruneOptions *opt, DqPruneSummary *sum,
                             GError **err) {
    memset(sum, 0, sizeof *sum);
    Prune p = {.opt = opt, .sum = sum, .pid = (int)getpid()};
    char *store_dir = dq_store_page_dir_for(dq_store_path(store), err);
    gboolean ok = FALSE;
    if (store_dir == NULL)
        return FALSE;
    p.store_dir = store_dir;
    if (!g_file_test(store_dir, G_FILE_TEST_IS_DIR)) {
        dq_fail(err, DQ_ERR_IO, "%s: no page store there (%s)", store_dir,
                g_file_test(store_dir, G_FILE_TEST_EXISTS) ? "not a folder"
                                                           : "nothing ingested, or moved?");
        goto out;
    }
    /* The clock read before the live pages are: a row committed after that read was touched
     * after cutoff_ns whenever the grace period exceeds the time between its touch and its
     * commit. A dry run of a store it may not write uses this machine's clock. */
    if (!opt->dry_run)
        restore_set_aside(&p);
    gint64 now_ns = 0;
    GError *clock_err = NULL;
    if (!store_clock_ns(store_dir, &now_ns, &clock_err)) {
        if (!opt->dry_run) {
            g_propagate_error(err, clock_err);
            goto out;
        }
        g_error_free(clock_err);
        now_ns = g_get_real_time() * 1000;
    }
    p.cutoff_ns = now_ns - opt->grace_s * G_GINT64_CONSTANT(1000000000);
    if (!dq_store_page_images(store, &p.live, &p.retired, err))
        goto out;
    ok = walk_store(&p, err);
out:
    if (p.live != NULL)
        g_hash_table_unref(p.live);
    if (p.retired != NULL)
        g_hash_table_unref(p.retired);
    g_free(store_dir);
    return ok;
}
