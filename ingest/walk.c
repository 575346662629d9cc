/* Expanding the command line's files and folders into documents. */
#include "ingest_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *doc_kind_name(DocKind kind) {
    return kind == DOC_KIND_PDF ? "pdf" : kind == DOC_KIND_TIFF ? "tiff" : "unknown";
}

static gboolean name_has_ext(const char *name, const char *const *exts) {
    const char *dot = strrchr(name, '.');
    if (dot == NULL)
        return FALSE;
    for (const char *const *e = exts; *e; e++)
        if (g_ascii_strcasecmp(dot + 1, *e) == 0)
            return TRUE;
    return FALSE;
}

static DocKind kind_from_name(const char *name) {
    static const char *const pdf[] = {"pdf", NULL};
    static const char *const tiff[] = {"tif", "tiff", NULL};
    return name_has_ext(name, pdf)    ? DOC_KIND_PDF
           : name_has_ext(name, tiff) ? DOC_KIND_TIFF
                                      : DOC_KIND_UNKNOWN;
}

DocKind doc_kind_sniff(const uint8_t *head, size_t len, const char *name) {
    if (len >= 4 &&
        ((memcmp(head, "II", 2) == 0 && (head[2] == 42 || head[2] == 43) && head[3] == 0) ||
         (memcmp(head, "MM", 2) == 0 && head[2] == 0 && (head[3] == 42 || head[3] == 43))))
        return DOC_KIND_TIFF;
    /* poppler finds the header anywhere in the first 1024 bytes (junk before %PDF is common). */
    size_t n = len < 1024 ? len : 1024;
    for (size_t i = 0; i + 5 <= n; i++)
        if (memcmp(head + i, "%PDF-", 5) == 0)
            return DOC_KIND_PDF;
    return name ? kind_from_name(name) : DOC_KIND_UNKNOWN;
}

void walk_entry_free(WalkEntry *e) {
    if (e == NULL)
        return;
    g_free(e->path);
    g_free(e);
}

typedef struct {
    gboolean hidden;
    char **real_roots; /* realpath of each root folder: symlinks may point inside these */
    GHashTable *seen;  /* "dev:ino" of folders and files already taken: loops, duplicates */
    GPtrArray *out;
    GPtrArray *unreadable; /* WalkEntry* of folders that cannot be listed */
    int skipped;
} Walk;

static gboolean seen_before(Walk *w, const struct stat *st) {
    char *key = g_strdup_printf("%ju:%ju", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
    if (g_hash_table_contains(w->seen, key)) {
        g_free(key);
        return TRUE;
    }
    g_hash_table_add(w->seen, key);
    return FALSE;
}

static gboolean inside_roots(Walk *w, const char *path) {
    char *real = realpath(path, NULL);
    if (real == NULL)
        return FALSE;
    gboolean in = FALSE;
    for (char **r = w->real_roots; *r && !in; r++) {
        size_t n = strlen(*r);
        in = strncmp(real, *r, n) == 0 && (real[n] == '/' || real[n] == '\0' || n == 1);
    }
    free(real);
    return in;
}

/* Stats and sniffs one file; explicit files are always returned. */
static void add_file(Walk *w, const char *path, const struct stat *st, gboolean explicit) {
    if (st != NULL && seen_before(w, st))
        return;
    WalkEntry *e = g_new0(WalkEntry, 1);
    e->path = g_strdup(path);
    e->explicit = explicit;
    if (st != NULL) {
        e->bytes = st->st_size;
        e->mtime = st->st_mtime;
        e->regular = S_ISREG(st->st_mode);
    }
    uint8_t head[1024];
    ssize_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        e->open_errno = errno;
    } else {
        n = read(fd, head, sizeof head);
        if (n < 0) {
            e->open_errno = errno;
            n = 0;
        }
        close(fd);
    }
    e->kind = doc_kind_sniff(head, (size_t)n, path);
    if (!explicit && e->kind == DOC_KIND_UNKNOWN) {
        /* Folders hold all sorts of files: only documents concern us. */
        w->skipped++;
        walk_entry_free(e);
        return;
    }
    g_ptr_array_add(w->out, e);
}

static int compare_names(gconstpointer a, gconstpointer b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk_dir(Walk *w, const char *dir) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        /* Whatever it holds is missing from the ingest: say so, never as if it were empty. */
        WalkEntry *e = g_new0(WalkEntry, 1);
        e->path = g_strdup(dir);
        e->explicit = TRUE;
        e->open_errno = errno;
        g_ptr_array_add(w->unreadable, e);
        return;
    }
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
            (w->hidden || de->d_name[0] != '.'))
            g_ptr_array_add(names, g_strdup(de->d_name));
    closedir(d);
    g_ptr_array_sort(names, compare_names);
    for (guint i = 0; i < names->len; i++) {
        char *child = g_build_filename(dir, g_ptr_array_index(names, i), NULL);
        struct stat lst, st;
        if (lstat(child, &lst) != 0) {
            g_free(child);
            continue;
        }
        if (S_ISLNK(lst.st_mode)) {
            /* Never leave the roots through a link (and never loop: folders are visited once). */
            if (stat(child, &st) != 0 || !inside_roots(w, child)) {
                g_free(child);
                continue;
            }
        } else {
            st = lst;
        }
        if (S_ISDIR(st.st_mode)) {
            if (!seen_before(w, &st))
                walk_dir(w, child);
        } else if (S_ISREG(st.st_mode)) {
            add_file(w, child, &st, FALSE);
        }
        g_free(child);
    }
    g_ptr_array_free(names, TRUE);
}

GPtrArray *ingest_walk(const char *const *roots, gboolean hidden, int *skipped,
                       GPtrArray *unreadable) {
    Walk w = {.hidden = hidden, .unreadable = unreadable};
    w.seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    w.out = g_ptr_array_new_with_free_func((GDestroyNotify)walk_entry_free);
    GPtrArray *real = g_ptr_array_new();
    for (const char *const *r = roots; *r; r++) {
        char *rp = realpath(*r, NULL);
        if (rp != NULL) {
            g_ptr_array_add(real, g_strdup(rp));
            free(rp);
        }
    }
    g_ptr_array_add(real, NULL);
    w.real_roots = (char **)g_ptr_array_free(real, FALSE);
    char *cwd = g_get_current_dir();
    for (const char *const *r = roots; *r; r++) {
        /* "" names no file (g_canonicalize_filename would make it the current folder) */
        char *abs = **r != '\0' ? g_canonicalize_filename(*r, cwd) : g_strdup("");
        struct stat st;
        if (stat(abs, &st) != 0) {
            WalkEntry *e = g_new0(WalkEntry, 1);
            e->path = g_strdup(abs);
            e->explicit = TRUE;
            e->open_errno = errno;
            e->kind = kind_from_name(abs);
            g_ptr_array_add(w.out, e);
        } else if (S_ISDIR(st.st_mode)) {
            if (!seen_before(&w, &st))
                walk_dir(&w, abs);
        } else {
            add_file(&w, abs, &st, TRUE);
        }
        g_free(abs);
    }
    g_free(cwd);
    g_strfreev(w.real_roots);
    g_hash_table_destroy(w.seen);
    if (skipped)
        *skipped = w.skipped;
    return w.out;
}
