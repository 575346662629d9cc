/* Read-only memory mapping of a whole file.
 *
 * Model weights are used straight from the page cache where the dtype allows, so a worker's
 * resident memory is shared with every other worker that maps the same snapshot.
 */
#ifndef DQ_MAPPED_FILE_H
#define DQ_MAPPED_FILE_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *path;
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
} DqMappedFile;

DqMappedFile *dq_mapped_file_open(const char *path, GError **err);
void dq_mapped_file_free(DqMappedFile *mf);

#endif
