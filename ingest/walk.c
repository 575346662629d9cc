/* Expanding the command line's files and folders into documents. */
#include "file_kind.h"
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

/* Whether the whole file (len bytes, fewer than the magic's) is the start of the magic: a
 * document cut short, which is damaged rather than something else. */
static gboolean is_prefix_of(const uint8_t *head, size_t len, const char *magic, size_t n) {
    return len > 0 && len < n && memcmp(head, magic, len) == 0;
}

static gboolean tiff_magic(const uint8_t *head, size_t len, gboolean whole_file) {
    static const char *const magics[] = {"II*\0", "II+\0", "MM\0*", "MM\0+"};
    for (size_t i = 0; i < G_N_ELEMENTS(magics); i++)
        if ((len >= 4 && memcmp(head, magics[i], 4) == 0) ||
            (whole_file && is_prefix_of(head, len, magics[i], 4)))
            return TRUE;
    return FALSE;
}

DocKind doc_kind_sniff(const uint8_t *head, size_t len, const char *name, gboolean *by_name) {
    if (by_name)
        *by_name = FALSE;
    if (tiff_magic(head, len, FALSE))
        return DOC_KIND_TIFF;
    /* poppler finds the header anywhere in the first 1024 bytes (junk before %PDF is common). */
    size_t n = len < 1024 ? len : 1024;
    for (size_t i = 0; i + 5 <= n; i++)
        if (memcmp(head + i, "%PDF-", 5) == 0)
            return DOC_KIND_PDF;
    DocKind kind = name ? kind_from_name(name) : DOC_KIND_UNKNOWN;
    /* A file shorter than its magic that begins it is that kind, cut short (len < 1024: the
     * head is the whole file). */
    gboolean cut_short = len < 1024 && (kind == DOC_KIND_TIFF  ? tiff_magic(head, len, TRUE)
                                        : kind == DOC_KIND_PDF ? is_prefix_of(head, len, "%PDF-", 5)
                                                               : FALSE);
    if (by_name && kind != DOC_KIND_UNKNOWN && !cut_short)
        *by_name = TRUE;
    return kind;
}

void walk_entry_free(WalkEntry *e) {
    if (e == NULL)
        return;
    g_free(e->path);
    g_free(e);
}

/* The same bytes under two names are two documents, as a copy would be: a hard link is a name
 * like any other. A symlink is not: it adds nothing when the walk takes its target under the
 * target's own name, which is why links are followed only once everything else is walked (in
 * name order, a link could come before its target and take its place). */
typedef struct {
    gboolean hidden;
    char **real_roots;   /* realpath of each root folder: symlinks may point inside these */
    GHashTable *folders; /* "dev:ino" of folders walked: a loop or a second way in ends there */
    GHashTable *files;   /* "dev:ino" of files taken: a symlink to one adds nothing */
    GHashTable *paths;   /* paths taken: a file named twice, or in a named folder too, is one */
    GPtrArray *links;    /* char*: symlinks found in folders, followed after the rest */
    GPtrArray *out;
    GPtrArray *unreadable;   /* WalkEntry* of folders that cannot be listed */
    GPtrArray *not_followed; /* WalkEntry* of links left: outside the roots, or broken */
    GHashTable *excluded;    /* "dev:ino" of the database's own files and page store */
    int skipped;
} Walk;

static gboolean is_excluded(Walk *w, const struct stat *st) {
    char *key = g_strdup_printf("%ju:%ju", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
    gboolean yes = g_hash_table_contains(w->excluded, key);
    g_free(key);
    return yes;
}

/* Whether st's file is in `seen`; adds it. */
static gboolean seen_before(GHashTable *seen, const struct stat *st) {
    char *key = g_strdup_printf("%ju:%ju", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
    if (g_hash_table_contains(seen, key)) {
        g_free(key);
        return TRUE;
    }
    g_hash_table_add(seen, key);
    // cppcheck-suppress memleak -- the table owns key now
    return FALSE;
}

gboolean ingest_path_inside(const char *real, char *const *real_roots) {
    gboolean in = FALSE;
    for (char *const *r = real_roots; *r && !in; r++) {
        size_t n = strlen(*r);
        in = strncmp(real, *r, n) == 0 && (real[n] == '/' || real[n] == '\0' || n == 1);
    }
    return in;
}

static gboolean inside_roots(Walk *w, const char *path) {
    char *real = realpath(path, NULL);
    if (real == NULL)
        return FALSE;
    gboolean in = ingest_path_inside(real, w->real_roots);
    free(real);
    return in;
}

char **ingest_real_roots(const char *const *roots) {
    GPtrArray *real = g_ptr_array_new();
    for (const char *const *r = roots; *r; r++) {
        char *rp = realpath(*r, NULL);
        if (rp != NULL) {
            g_ptr_array_add(real, g_strdup(rp));
            free(rp);
        }
    }
    g_ptr_array_add(real, NULL);
    return (char **)g_ptr_array_free(real, FALSE);
}

/* Stats and sniffs one file; explicit files are always returned. */
static void add_file(Walk *w, const char *path, const struct stat *st, gboolean explicit,
                     gboolean through_link) {
    if (g_hash_table_contains(w->paths, path))
        return;
    if (st != NULL && seen_before(w->files, st) && through_link)
        return;
    WalkEntry *e = g_new0(WalkEntry, 1);
    e->path = g_strdup(path);
    e->explicit = explicit;
    e->is_link = through_link;
    if (st != NULL) {
        e->bytes = st->st_size;
        e->mtime = st->st_mtime;
        e->regular = S_ISREG(st->st_mode);
    }
    uint8_t head[1024];
    ssize_t n = 0;
    int fd =
        open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (explicit || through_link ? 0 : O_NOFOLLOW));
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
    e->kind = doc_kind_sniff(head, (size_t)n, path, &e->kind_by_name);
    if (e->kind == DOC_KIND_UNKNOWN || e->kind_by_name)
        e->content = dq_file_kind_name(head, (size_t)n, &e->content_conclusive);
    if (!explicit && e->kind == DOC_KIND_UNKNOWN) {
        /* Folders hold all sorts of files: only documents concern us. */
        w->skipped++;
        walk_entry_free(e);
        return;
    }
    g_hash_table_add(w->paths, g_strdup(path));
    g_ptr_array_add(w->out, e);
}

static int compare_names(gconstpointer a, gconstpointer b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* `follow`: dir is a root or a link the walk checked; any other folder is opened only if it is
 * still a folder, not a link put in its place since lstat saw it. */
static void walk_dir(Walk *w, const char *dir, gboolean follow) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (d == NULL && dfd >= 0) {
        int saved = errno;
        close(dfd);
        errno = saved;
    }
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
        struct stat lst;
        if (lstat(child, &lst) != 0) {
            g_free(child);
            continue;
        }
        if (S_ISLNK(lst.st_mode)) {
            g_ptr_array_add(w->links, child);
            continue;
        }
        if (is_excluded(w, &lst)) {
            g_free(child);
            continue;
        }
        if (S_ISDIR(lst.st_mode)) {
            if (!seen_before(w->folders, &lst))
                walk_dir(w, child, FALSE);
        } else if (S_ISREG(lst.st_mode)) {
            add_file(w, child, &lst, FALSE, FALSE);
        } else {
            /* A FIFO, socket or device: never opened (a read could block or consume), but
             * counted with the other files skipped, so that nothing in a folder goes unsaid. */
            w->skipped++;
        }
        g_free(child);
    }
    g_ptr_array_free(names, TRUE);
}

/* A link the walk does not follow: what it leads to (documents, often: an archive's year folder
 * linked from another disk) would be missing from the ingest without a word. */
static void not_followed(Walk *w, const char *link, int open_errno) {
    if (w->not_followed == NULL)
        return;
    WalkEntry *e = g_new0(WalkEntry, 1);
    e->path = g_strdup(link);
    e->is_link = TRUE;
    e->open_errno = open_errno;
    g_ptr_array_add(w->not_followed, e);
}

GPtrArray *ingest_walk(const char *const *roots, gboolean hidden, const char *const *exclude,
                       int *skipped, GPtrArray *unreadable, GPtrArray *links_not_followed) {
    Walk w = {.hidden = hidden, .unreadable = unreadable, .not_followed = links_not_followed};
    w.excluded = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (const char *const *x = exclude; x && *x; x++) {
        struct stat st;
        if (stat(*x, &st) == 0)
            seen_before(w.excluded, &st);
    }
    w.folders = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    w.files = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    w.paths = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    w.links = g_ptr_array_new_with_free_func(g_free);
    w.out = g_ptr_array_new_with_free_func((GDestroyNotify)walk_entry_free);
    w.real_roots = ingest_real_roots(roots);
    char *cwd = g_get_current_dir();
    for (const char *const *r = roots; *r; r++) {
        /* "" names no file (g_canonicalize_filename would make it the current folder) */
        char *abs = **r != '\0' ? g_canonicalize_filename(*r, cwd) : g_strdup("");
        struct stat st;
        if (stat(abs, &st) != 0) {
            if (!g_hash_table_add(w.paths, g_strdup(abs))) {
                g_free(abs);
                continue;
            }
            WalkEntry *e = g_new0(WalkEntry, 1);
            e->path = g_strdup(abs);
            e->explicit = TRUE;
            e->open_errno = errno;
            e->kind = kind_from_name(abs);
            g_ptr_array_add(w.out, e);
        } else if (S_ISDIR(st.st_mode)) {
            if (!seen_before(w.folders, &st))
                walk_dir(&w, abs, TRUE);
        } else {
            add_file(&w, abs, &st, TRUE, FALSE);
        }
        g_free(abs);
    }
    /* Links last (walking a linked folder may find more: the array grows as it is read). Never
     * leave the roots through a link (and never loop: folders are visited once). */
    for (guint i = 0; i < w.links->len; i++) {
        const char *link = g_ptr_array_index(w.links, i);
        struct stat st;
        if (stat(link, &st) != 0) {
            not_followed(&w, link, errno);
            continue;
        }
        if (is_excluded(&w, &st))
            continue;
        if (!inside_roots(&w, link)) {
            not_followed(&w, link, 0);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (!seen_before(w.folders, &st))
                walk_dir(&w, link, TRUE);
        } else if (S_ISREG(st.st_mode)) {
            add_file(&w, link, &st, FALSE, TRUE);
        } else {
            w.skipped++; /* a link to a FIFO, socket or device: as one found in a folder */
        }
    }
    g_free(cwd);
    g_strfreev(w.real_roots);
    g_hash_table_destroy(w.folders);
    g_hash_table_destroy(w.files);
    g_hash_table_destroy(w.paths);
    g_hash_table_destroy(w.excluded);
    g_ptr_array_free(w.links, TRUE);
    if (skipped)
        *skipped = w.skipped;
    return w.out;
}
