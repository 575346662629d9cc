#include "mapped_file.h"

#include "dq_error.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *file_kind(unsigned mode) {
    if (S_ISDIR(mode))
        return "a folder";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode) || S_ISBLK(mode))
        return "a device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "something else";
}

int dq_open_regular(const char *path, struct stat *st, GError **err) {
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; it
     * changes nothing for a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        dq_fail(err, DQ_ERR_IO, "%s: cannot open: %s", path, g_strerror(errno));
        return -1;
    }
    if (fstat(fd, st) != 0) {
        dq_fail(err, DQ_ERR_IO, "%s: cannot stat: %s", path, g_strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        dq_fail(err, DQ_ERR_IO, "%s: %s, not a regular file", path, file_kind(st->st_mode));
        close(fd);
        return -1;
    }
    return fd;
}

DqMappedFile *dq_mapped_file_open(const char *path, GError **err) {
    struct stat st;
    int fd = dq_open_regular(path, &st, err);
    if (fd < 0)
        return NULL;
    DqMappedFile *mf = g_new0(DqMappedFile, 1);
    mf->path = g_strdup(path);
    mf->size = (size_t)st.st_size;
    if (mf->size > 0) {
        void *p = mmap(NULL, mf->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            dq_fail(err, DQ_ERR_IO, "%s: cannot map %zu bytes: %s", path, mf->size,
                    g_strerror(errno));
            close(fd);
            g_free(mf->path);
            g_free(mf);
            return NULL;
        }
        mf->data = p;
    }
    close(fd); /* the mapping keeps the file alive */
    return mf;
}

void dq_mapped_file_free(DqMappedFile *mf) {
    if (mf == NULL)
        return;
    if (mf->data != NULL)
        munmap((void *)mf->data, mf->size);
    g_free(mf->path);
    g_free(mf);
}

static long page_size(void) {
    static long size;
    if (size == 0)
        size = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
    return size;
}

void dq_mapped_populate(const void *p, size_t n) {
    if (p == NULL || n == 0)
        return;
    uintptr_t ps = (uintptr_t)page_size(), lo = (uintptr_t)p & ~(ps - 1);
#ifdef MADV_POPULATE_READ
    if (madvise((void *)lo, (uintptr_t)p + n - lo, MADV_POPULATE_READ) == 0)
        return;
#endif
    /* older kernels: one read a page */
    volatile uint8_t sink = 0;
    for (uintptr_t a = lo < (uintptr_t)p ? lo + ps : lo; a < (uintptr_t)p + n; a += ps)
        sink ^= *(const volatile uint8_t *)a;
    sink ^= *(const volatile uint8_t *)p;
    (void)sink;
}

void dq_mapped_release(const void *p, size_t n) {
    uintptr_t ps = (uintptr_t)page_size();
    uintptr_t lo = ((uintptr_t)p + ps - 1) & ~(ps - 1), hi = ((uintptr_t)p + n) & ~(ps - 1);
    if (p != NULL && hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: a failure changes nothing */
}

int dq_sync_folder(const char *dir, int (*sync)(int fd)) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno;
    int e = (sync != NULL ? sync : fsync)(dfd) != 0 && errno != EINVAL ? errno : 0;
    close(dfd);
    return e;
}
