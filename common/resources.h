/* Files compiled into the binary: schema/ migrations and configs/ (prompts, defaults).
 * Paths are relative to the source root, e.g. "configs/prompts/docvqa.txt". */
#ifndef DQ_RESOURCES_H
#define DQ_RESOURCES_H

#include <glib.h>

/* The file's bytes (NUL-terminated); g_bytes_unref when done. */
GBytes *dq_resource_get(const char *path, GError **err);

/* Names of the files directly inside `dir` (e.g. "schema/sqlite"), sorted; g_strfreev. */
char **dq_resource_list(const char *dir, GError **err);

#endif
