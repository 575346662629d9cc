/* Read-only memory mapping of a whole file.
 *
 * Model weights are used straight from the page cache where the dtype allows, so a worker's
 * resident memory is shared with every other worker that maps the same snapshot.
 */
#ifndef DQ_MAPPED_FILE_H
#define DQ_MAPPED_FILE_H

#include <glib.h>
#include <sys/stat.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *path;
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
} DqMappedFile;

/* Refuses what is not a regular file (a FIFO is refused, not waited on), naming what it is. */
DqMappedFile *dq_mapped_file_open(const char *path, GError **err);
void dq_mapped_file_free(DqMappedFile *mf);

/* A file descriptor for reading a regular file, *st its fstat; -1 with an error naming the path
 * and what it is instead ("a FIFO", "a device", ...). Never blocks on a FIFO. */
int dq_open_regular(const char *path, struct stat *st, GError **err);

/* Faults [p, p + n) of a mapping in now (reading it from disk where the page cache lacks it), so
 * that the first forward pass does not wait on the disk page by page: a model's load time then
 * includes reading its weights, as transformers' does. */
void dq_mapped_populate(const void *p, size_t n);

/* Drops the whole pages inside [p, p + n) of a read-only mapping from this process's resident
 * set (the page cache keeps them; a later read maps them again): for weights the backend has
 * copied (converted, quantized, uploaded to a GPU), whose mapped bytes would otherwise count
 * twice. */
void dq_mapped_release(const void *p, size_t n);

/* Makes the names in folder `dir` durable (after a rename into it): 0, or the errno of the open
 * or of `sync` (fsync when NULL; tests pass a failing one). EINVAL counts as done: the file
 * system has no folder sync at all, so there is nothing to wait for. */
int dq_sync_folder(const char *dir, int (*sync)(int fd));

#endif
