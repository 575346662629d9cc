/* The worker process: opens one document and renders the pages it claims.
 *
 * Protocol (one line per event on the pipe to the parent, fields separated by tabs; messages
 * have tabs and newlines replaced by spaces):
 *   count  N  WARNING          the document opened with N pages (WARNING may be empty)
 *   fail   REASON  MESSAGE     the document cannot be rendered at all
 *   begin  P                   starting page P: if the process dies now, page P is the culprit
 *   page   P  STATUS  W  H  SOURCE_W  SOURCE_H  SHA256|-  REASON|-  MESSAGE
 *   done
 * The parent enforces the time limit per line; the address-space limit is set here.
 */
#include "ingest_internal.h"
#include "sanitizer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef DQ_UNDER_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

/* What poppler, libtiff and our page code leak on real documents is reported (ingest.c,
 * reap_child, fails the ingest under ASan). */
static G_NORETURN void worker_exit(int code) {
    dq_sanitizer_check_leaks();
    _exit(code);
}

static void send_line(int fd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void send_line(int fd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    /* Lines are never cut (a cut broke long paths, and UTF-8 with them): the pipe is this
     * process's alone and the parent joins what it reads up to the newline, so a line longer
     * than PIPE_BUF arriving in pieces is fine. */
    size_t len = strlen(s);
    const char *p = s;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0)
            _exit(3); /* the parent is gone */
        p += n;
        len -= (size_t)n;
    }
    g_free(s);
}

static char *clean(const char *msg) {
    char *s = g_strdup(msg ? msg : "");
    for (char *c = s; *c; c++)
        if (*c == '\t' || *c == '\n' || *c == '\r')
            *c = ' ';
    return s;
}

/* Test hook: DOCQA_INGEST_TEST_FAULT="crash:NAME:PAGE" or "hang:NAME:PAGE" makes the worker die
 * (SIGSEGV) or stall before rendering page PAGE of a file whose base name is NAME, so that the
 * tests can show a crash or a hang costs one page and nothing else; "interrupt:NAME:PAGE"
 * stalls there after sending the ingest SIGINT, as a user's Ctrl-C while that page renders
 * ("terminate" and "hangup" alike with SIGTERM, as kill or systemctl stop sends, and SIGHUP);
 * "rewrite:NAME:PAGE" appends a line to the file there, as someone saving it during ingest
 * would change it. With DOCQA_INGEST_TEST_FAULT_MARK set, the worker first creates the file it
 * names: a test driving docqa from outside knows the ingest is there now (holding the
 * document's claim, its earlier pages stored). */
static void maybe_inject_fault(const char *path, int page) {
    const char *spec = g_getenv("DOCQA_INGEST_TEST_FAULT");
    if (spec == NULL)
        return;
    char **f = g_strsplit(spec, ":", 3);
    char *base = g_path_get_basename(path);
    gboolean hit = g_strv_length(f) == 3 && strcmp(f[1], base) == 0 && atoi(f[2]) == page;
    gboolean crash = hit && strcmp(f[0], "crash") == 0, hang = hit && strcmp(f[0], "hang") == 0;
    const char *mark = g_getenv("DOCQA_INGEST_TEST_FAULT_MARK");
    if (hit && mark != NULL && *mark != '\0') {
        int fd = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0)
            close(fd);
    }
    int stop = !hit                             ? 0
               : strcmp(f[0], "interrupt") == 0 ? SIGINT
               : strcmp(f[0], "terminate") == 0 ? SIGTERM
               : strcmp(f[0], "hangup") == 0    ? SIGHUP
                                                : 0;
    if (stop != 0) {
        kill(getppid(), stop);
        hang = TRUE;
    }
    /* Lost at once: what the sanitizer runs must catch in a renderer (clang-tidy reports it on
     * the next line, where the pointer is gone). */
    // NOLINTBEGIN(clang-analyzer-unix.Malloc)
    if (hit && strcmp(f[0], "leak") == 0)
        // cppcheck-suppress leakReturnValNotUsed -- the leak is the point
        (void)g_malloc(4000);
    if (hit && strcmp(f[0], "rewrite") == 0) {
        // NOLINTEND(clang-analyzer-unix.Malloc)
        int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "% rewritten\n", 12) != 12)
                crash = TRUE; /* the test would wait for a change that never came */
            close(fd);
        }
    }
    g_free(base);
    g_strfreev(f);
    if (crash)
        raise(SIGSEGV);
    if (hang)
        for (;;)
            pause(); /* until the parent's clock kills this worker */
}

/* Test hook: DOCQA_INGEST_TEST_FAULT="stored:NAME:PAGE" holds the worker once page PAGE of NAME
 * is in the page store (written, or found stored already) and before the ingest records its row:
 * it creates the file DOCQA_INGEST_TEST_FAULT_MARK names and waits until that file is removed,
 * so that a test can run docqa prune in that gap (README: Reclaiming space). */
static void maybe_hold_after_store(const char *path, int page) {
    const char *spec = g_getenv("DOCQA_INGEST_TEST_FAULT");
    const char *mark = g_getenv("DOCQA_INGEST_TEST_FAULT_MARK");
    if (spec == NULL || mark == NULL || *mark == '\0' || !g_str_has_prefix(spec, "stored:"))
        return;
    char **f = g_strsplit(spec, ":", 3);
    char *base = g_path_get_basename(path);
    gboolean hit = g_strv_length(f) == 3 && strcmp(f[1], base) == 0 && atoi(f[2]) == page;
    g_free(base);
    g_strfreev(f);
    if (!hit)
        return;
    int fd = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    close(fd);
    while (access(mark, F_OK) == 0)
        g_usleep(10000);
}

#ifndef DQ_UNDER_ASAN
/* Bytes of address space mapped now (VmSize), 0 when unknown. */
static guint64 mapped_bytes(void) {
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long page = sysconf(_SC_PAGESIZE);
    return g_ascii_strtoull(buf, NULL, 10) * (guint64)(page > 0 ? page : 4096);
}
#endif

/* Telling out of memory from a crash. A decoder that cannot allocate under RLIMIT_AS rarely
 * says so: GLib and C++ abort, openjpeg and poppler go on with a NULL and crash. When the worker
 * dies of a signal, a handler looks at its memory: an allocation just failed (errno ENOMEM),
 * or too little address space is left under the limit for a slice of it to be mapped. Then it
 * tells the parent ("oom" line) before dying of the signal as it would have. */
#ifndef DQ_UNDER_ASAN /* no memory limit under ASan (limit_memory): nothing to tell */
static int oom_fd = -1;
static size_t oom_probe_bytes; /* 0: no memory limit, nothing to tell */

static void on_fatal_signal(int sig) {
    int saved = errno;
    if (oom_probe_bytes > 0) {
        gboolean oom = saved == ENOMEM;
        if (!oom) {
            void *p = mmap(NULL, oom_probe_bytes, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED)
                oom = TRUE;
            else
                munmap(p, oom_probe_bytes);
        }
        if (oom && oom_fd >= 0) {
            static const char line[] = "oom\n";
            ssize_t n = write(oom_fd, line, sizeof line - 1);
            (void)n;
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}
#endif

static void watch_for_oom(int fd, gint64 mem_limit_mb) {
#ifdef DQ_UNDER_ASAN
    (void)fd;
    (void)mem_limit_mb;
#else
    if (mem_limit_mb <= 0)
        return;
    oom_fd = fd;
    /* An eighth of the limit, at least 16 MiB: a page that failed for want of memory has
     * used nearly all of it; a crash elsewhere leaves most of it free. */
    oom_probe_bytes = (size_t)MAX((gint64)16, mem_limit_mb / 8) << 20;
    /* Its own stack: a crash may be a stack that ran out. */
    stack_t ss = {.ss_sp = g_malloc(1 << 16), .ss_size = 1 << 16, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP};
    for (size_t i = 0; i < G_N_ELEMENTS(sigs); i++)
        sigaction(sigs[i], &sa, NULL);
#endif
}

static void limit_memory(gint64 mem_limit_mb) {
#ifndef DQ_UNDER_ASAN
    /* ASan reserves terabytes of address space: an RLIMIT_AS would only break it. */
    if (mem_limit_mb > 0) {
        /* The limit is what rendering may add. What the process has mapped before it renders
         * anything (shared libraries; about 1 GB of them in the CUDA build, OpenBLAS's buffers
         * per core) is no page's doing and differs between builds and machines: counted in, it
         * left a 256 MiB limit no room at all and 4096 about 3 GB. */
        guint64 add = (guint64)MIN(mem_limit_mb, G_MAXINT64 / (1024 * 1024)) * 1024 * 1024;
        guint64 total = mapped_bytes() + add;
        struct rlimit rl;
        rl.rlim_cur = rl.rlim_max = total >= (guint64)RLIM_INFINITY ? RLIM_INFINITY : (rlim_t)total;
        setrlimit(RLIMIT_AS, &rl);
    }
#endif
}

/* The parent kills a worker that makes no progress for page_timeout_s, but only while it runs:
 * killed (SIGKILL cannot be caught), stopped or stuck, it sends nothing. The death signal ends
 * the worker with its parent; this CPU limit ends one spinning inside poppler whatever becomes
 * of the parent: page_timeout_s + slack from now (SIGXCPU), and never more in all than the
 * document's budget allows (the hard limit, SIGKILL). Called before the open and each page. */
static void limit_cpu(const WorkerTask *task, gboolean first) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_CPU, &rl) != 0)
        return;
    if (first && task->doc_timeout_s > 0) {
        rlim_t cap =
            (rlim_t)task->doc_timeout_s + (rlim_t)task->page_timeout_s + 2 * WORKER_CPU_SLACK_S;
        if (rl.rlim_max == RLIM_INFINITY || cap < rl.rlim_max)
            rl.rlim_max = cap;
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return;
    /* Whole seconds used so far, rounded up: the limit counts them so. */
    rlim_t used = (rlim_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1;
    rlim_t soft = used + (rlim_t)task->page_timeout_s + WORKER_CPU_SLACK_S;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && soft > rl.rlim_max ? rl.rlim_max : soft;
    setrlimit(RLIMIT_CPU, &rl);
}

static gboolean over_budget(const WorkerTask *task, int page, GError **err) {
    gint64 used = __atomic_load_n(&task->shared->png_bytes, __ATOMIC_SEQ_CST);
    if (task->max_doc_bytes <= 0 || used < task->max_doc_bytes)
        return FALSE;
    g_set_error(
        err, DQ_INGEST_ERROR, DQ_INGEST_OUTPUT_TOO_LARGE,
        "%s: page %d: not rendered: the document's page images already take %" G_GINT64_FORMAT
        " bytes, the limit is %" G_GINT64_FORMAT " (--max-doc-bytes)",
        task->path, page, used, task->max_doc_bytes);
    return TRUE;
}

/* Encodes and stores one page, counting its PNG against the document's budget first. */
static gboolean store_page(const WorkerTask *task, int page, const DqImage *img, char sha[65],
                           GError **err) {
    GBytes *png = dq_image_encode_png(img, err);
    if (png == NULL)
        return FALSE;
    gint64 len = (gint64)g_bytes_get_size(png);
    gint64 total = __atomic_add_fetch(&task->shared->png_bytes, len, __ATOMIC_SEQ_CST);
    gboolean ok = FALSE;
    if (task->max_doc_bytes > 0 && total > task->max_doc_bytes)
        g_set_error(err, DQ_INGEST_ERROR, DQ_INGEST_OUTPUT_TOO_LARGE,
                    "%s: page %d: its image of %" G_GINT64_FORMAT
                    " bytes would take the document's page images past %" G_GINT64_FORMAT
                    " bytes (--max-doc-bytes)",
                    task->path, page, len, task->max_doc_bytes);
    else
        ok = page_store_put(task->store_dir, png, task->min_free_mb, sha, err);
    g_bytes_unref(png);
    return ok;
}

/* The file ingest hashed, with an offset of its own: the parent's descriptor, and its offset, is
 * shared by every worker on the document. Reopened through /proc, which names that very file
 * whatever its path leads to now; without /proc, the path again, taken only if it is still the
 * same file. */
static int own_descriptor(const WorkerTask *task) {
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", task->fd);
    int fd = open(proc, O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        return fd;
    fd = open(task->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat a, b;
    if (fd >= 0 && fstat(fd, &a) == 0 && fstat(task->fd, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        return fd;
    if (fd >= 0)
        close(fd);
    errno = ESTALE;
    return -1;
}

static int compare_ints(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* poppler and libtiff print their complaints on stderr (or via g_log on stdout); they reach the
 * database as reasons instead, and must not garble the progress line. DOCQA_INGEST_DEBUG keeps
 * them. */
static void silence_output(void) {
    if (g_getenv("DOCQA_INGEST_DEBUG") != NULL)
        return;
    int devnull = open("/dev/null", O_WRONLY);
#ifdef DQ_UNDER_ASAN
    /* ...but not the sanitizers' reports: they go to the stderr the worker was given. */
    int report = devnull >= 0 ? fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3) : -1;
    if (report >= 0)
        __sanitizer_set_report_fd((void *)(intptr_t)report);
#endif
    if (devnull >= 0) {
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
        close(devnull);
    }
}

/* The document, opened on a descriptor of the worker's own; when it cannot be, its failure is
 * told ("fail" line) and the worker leaves. */
static RenderDoc *open_or_leave(const WorkerTask *task, int fd) {
    GError *err = NULL;
    int own = own_descriptor(task);
    RenderDoc *doc = own < 0 ? NULL : render_doc_open(task->path, own, task->kind, &err);
    if (own < 0)
        g_set_error(&err, DQ_INGEST_ERROR, DQ_INGEST_UNREADABLE, "%s: cannot open it again: %s",
                    task->path, g_strerror(errno));
    if (doc == NULL) {
        char *m = clean(err->message);
        send_line(fd, "fail\t%s\t%s\n", dq_ingest_reason_name(err->code), m);
        worker_exit(0);
    }
    return doc;
}

/* The document's page count, told ("count" line) with what opening it warned and noted; over
 * the task's max_pages, the refusal is told and the worker leaves. */
static int tell_page_count(const WorkerTask *task, RenderDoc *doc, int fd) {
    int n = render_doc_page_count(doc);
    char *warn = clean(render_doc_warning(doc));
    char *note = clean(render_doc_note(doc));
    send_line(fd, "count\t%d\t%s\t%s\n", n, warn, note);
    g_free(warn);
    g_free(note);
    if (n > task->max_pages) {
        send_line(fd, "fail\t%s\t%s: %d pages is over the limit of %d\n",
                  dq_ingest_reason_name(DQ_INGEST_TOO_MANY_PAGES), task->path, n, task->max_pages);
        worker_exit(0);
    }
    return n;
}

/* Its image and row are stored already (ingest.c, stored pages). */
static gboolean page_is_stored(const WorkerTask *task, int page) {
    return task->n_stored > 0 && bsearch(&page, task->stored, (size_t)task->n_stored,
                                         sizeof *task->stored, compare_ints) != NULL;
}

/* Page `page` rendered, stored and told: "begin" first, so that a worker dying on it names it,
 * then its "page" line, rendered (in part or whole) or failed. */
static void render_page(const WorkerTask *task, RenderDoc *doc, int fd, int page) {
    send_line(fd, "begin\t%d\n", page);
    limit_cpu(task, FALSE);
    maybe_inject_fault(task->path, page);
    GError *err = NULL;
    double sw = 0, sh = 0;
    gboolean incomplete = FALSE;
    char *imsg = NULL;
    /* Past the document's output budget nothing more is rendered: a page bomb's pages each a
     * different 15 MB of noise would fill the disk. */
    DqImage *img = over_budget(task, page, &err)
                       ? NULL
                       : render_doc_page(doc, page, task->longest_edge, task->max_pixels, &sw, &sh,
                                         &incomplete, &imsg, &err);
    char sha[65] = "-";
    if (img != NULL && !store_page(task, page, img, sha, &err)) {
        dq_image_free(img);
        img = NULL;
    }
    if (img != NULL)
        maybe_hold_after_store(task->path, page);
    if (img != NULL) {
        char *m = clean(imsg);
        send_line(fd, "page\t%d\t%s\t%d\t%d\t%.17g\t%.17g\t%s\t%s\t%s\n", page,
                  incomplete ? "partial" : "ok", img->width, img->height, sw, sh, sha,
                  incomplete ? dq_ingest_reason_name(DQ_INGEST_DAMAGED) : "-", m);
        g_free(m);
        dq_image_free(img);
    } else {
        char *m = clean(err->message);
        send_line(
            fd, "page\t%d\tfailed\t0\t0\t%.17g\t%.17g\t-\t%s\t%s\n", page, sw, sh,
            err->domain == DQ_INGEST_ERROR ? dq_ingest_reason_name(err->code) : "store_failed", m);
        g_free(m);
        g_clear_error(&err);
    }
    g_free(imsg);
}

void worker_main(const WorkerTask *task, int fd) {
    watch_for_oom(fd, task->mem_limit_mb);
    limit_memory(task->mem_limit_mb);
    limit_cpu(task, TRUE);
    silence_output();
    RenderDoc *doc = open_or_leave(task, fd);
    int n = tell_page_count(task, doc, fd);
    /* The workers on a document share its page counter: each takes the next page not taken. */
    for (;;) {
        int page = __atomic_add_fetch(&task->shared->next_page, 1, __ATOMIC_SEQ_CST);
        if (page > n)
            break;
        if (!page_is_stored(task, page))
            render_page(task, doc, fd, page);
    }
    send_line(fd, "done\n");
    render_doc_close(doc);
    worker_exit(0);
}
