/* Text that is going into the database or an export. */
#ifndef DQ_TEXT_H
#define DQ_TEXT_H

#include <glib.h>

/* `s` as valid UTF-8: a copy when it is, else each byte that is not part of a UTF-8 character
 * written as \xNN (as Python's "backslashreplace"), so that the same bytes always give the same
 * text. NULL for NULL. Linux paths are bytes (a Latin-1 name from an old archive); the database
 * holds text (PostgreSQL refuses invalid UTF-8, JSON exports must be valid). */
char *dq_utf8_escape_invalid(const char *s);

#endif
