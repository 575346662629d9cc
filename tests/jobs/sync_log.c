/* Preloaded into docqa by test_cli_export: each fsync and fdatasync, the path its descriptor
 * names appended as a line to $DQ_TEST_SYNC_LOG before the call, so that a test can tell what
 * was put on disk before what (a power loss keeps only that). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void note(int fd) {
    const char *log = getenv("DQ_TEST_SYNC_LOG");
    if (log == NULL)
        return;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return;
    path[n++] = '\n';
    /* one write of a whole line to a file opened O_APPEND: lines of several processes stay
     * whole */
    int out = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out < 0)
        return;
    if (write(out, path, (size_t)n) != n)
        fprintf(stderr, "sync_log: %s: short write\n", log);
    close(out);
}

int fsync(int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    note(fd);
    return real(fd);
}

int fdatasync(int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    note(fd);
    return real(fd);
}
